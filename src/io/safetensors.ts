// Minimal safetensors reader/writer in TypeScript for the CLI's --out files and for tests.
// Python's `safetensors` reads what writeSafetensors writes (test/cli.test.ts checks this).
import { closeSync, openSync, renameSync, writeSync } from 'node:fs';

import { ModelLoadError } from '../errors.js';
import { readRegularFile } from './files.js';

/** A tensor read from a safetensors file; float dtypes arrive as Float32Array. */
export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data: Float32Array | Int32Array | BigInt64Array;
}

const SIZES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4 };

/** IEEE half-precision bits to a number (exact). */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Reads every tensor of a safetensors file into typed arrays (F32/F16/BF16/F64 as Float32Array). */
export function readSafetensors(path: string): Map<string, SafetensorsEntry> {
  const buf = readRegularFile(path, 'safetensors file');
  const bad = (why: string) => new ModelLoadError('ERR_SAFETENSORS_INVALID', `safetensors file ${path}: ${why}`);
  if (buf.length < 8) throw bad('too short');
  const n = Number(buf.readBigUInt64LE(0));
  if (n > buf.length - 8) throw bad('header runs past the end of the file');
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + n;
  const out = new Map<string, SafetensorsEntry>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const size = SIZES[e.dtype];
    if (!size) throw bad(`tensor '${name}' has unsupported dtype ${e.dtype}`);
    const [b, end] = e.data_offsets;
    if (base + end > buf.length) throw bad(`tensor '${name}' runs past the end of the file`);
    const bytes = buf.subarray(base + b, base + end);
    const count = (end - b) / size;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let data: SafetensorsEntry['data'];
    if (e.dtype === 'I64') {
      data = new BigInt64Array(count);
      for (let i = 0; i < count; i++) data[i] = dv.getBigInt64(i * 8, true);
    } else if (e.dtype === 'I32') {
      data = new Int32Array(count);
      for (let i = 0; i < count; i++) data[i] = dv.getInt32(i * 4, true);
    } else {
      const f = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        if (e.dtype === 'F32') f[i] = dv.getFloat32(i * 4, true);
        else if (e.dtype === 'F64') f[i] = dv.getFloat64(i * 8, true);
        else if (e.dtype === 'F16') f[i] = f16ToF32(dv.getUint16(i * 2, true));
        else {
          const tmp = new DataView(new ArrayBuffer(4));
          tmp.setUint32(0, dv.getUint16(i * 2, true) << 16, true);
          f[i] = tmp.getFloat32(0, true);
        }
      }
      data = f;
    }
    out.set(name, { dtype: e.dtype, shape: e.shape, data });
  }
  return out;
}

/** A float32 tensor to write. */
export interface TensorToWrite {
  shape: readonly number[];
  data: Float32Array;
}

/**
 * Writes float32 tensors (in the given order) to a safetensors file, through a temporary
 * file renamed into place so a reader never sees a partial file.
 */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    const bytes = t.data.byteLength;
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);  // align the data section to 8 bytes
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, head);
    writeSync(fd, Buffer.from(json, 'utf8'));
    for (const [, t] of entries) writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
