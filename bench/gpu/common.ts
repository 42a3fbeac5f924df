// Shared helpers of the GPU benchmarks (bench/gpu/extract.ts, bench/gpu/decode.ts): flags,
// statistics, the token ids both engines use, and what a checkpoint weighs.
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';

export function positiveInt(name: string, s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got '${s}'`);
  return n;
}

export function positiveNumber(name: string, s: string): number {
  const n = Number(s);
  if (!(n > 0) || !Number.isFinite(n)) throw new Error(`--${name} must be a positive number, got '${s}'`);
  return n;
}

export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Token id number `i` of a benchmark stream: (i * 2654435761 + 12345) mod 2^32 mod vocab.
 * bench/gpu/hf_extract.py and hf_decode.py use the same formula, so both engines see the same ids.
 */
export function benchToken(i: number, vocab: number): number {
  return ((Math.imul(i, 2654435761) + 12345) >>> 0) % vocab;
}

/** `batch` rows of `seq` benchmark tokens starting at stream index `start`. */
export function benchTokens(start: number, batch: number, seq: number, vocab: number): number[][] {
  return Array.from({ length: batch }, (_, b) => Array.from({ length: seq }, (_, t) => benchToken(start + b * seq + t, vocab)));
}

/** Deterministic floats in [-1, 1) (mulberry32), for steering vectors. */
export function randomVector(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

export interface CheckpointSize {
  /** Bytes of every tensor in the safetensors files. */
  totalBytes: number;
  /** Bytes one decode step must read: every tensor except the input embedding, which is read one row at a time, unless it is also the (tied) LM head. */
  bytesPerDecodeToken: number;
  dtypes: string[];
  tied: boolean;
}

/** Sizes read from the safetensors headers of a checkpoint directory (no tensor data is read). */
export function checkpointSize(dir: string, tied: boolean): CheckpointSize {
  let total = 0;
  let embed = 0;
  const dtypes = new Set<string>();
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.safetensors') && f !== 'reference.safetensors')) {
    const fd = openSync(join(dir, f), 'r');
    try {
      const len = Buffer.alloc(8);
      readSync(fd, len, 0, 8, 0);
      const n = Number(len.readBigUInt64LE(0));
      const buf = Buffer.alloc(n);
      readSync(fd, buf, 0, n, 8);
      const header = JSON.parse(buf.toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
      for (const [name, e] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const bytes = e.data_offsets[1] - e.data_offsets[0];
        total += bytes;
        dtypes.add(e.dtype);
        if (/(^|\.)(wte|embed_tokens)\.weight$/.test(name)) embed += bytes;
      }
    } finally {
      closeSync(fd);
    }
  }
  return { totalBytes: total, bytesPerDecodeToken: tied ? total : total - embed, dtypes: [...dtypes], tied };
}

/** Root mean square of a typed array. */
export function rms(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s / Math.max(1, a.length));
}
