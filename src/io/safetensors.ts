// Safetensors reader (validating, for untrusted SAE and steering files) and writer (the CLI's
// --out files) in TypeScript.
// Python's `safetensors` reads what writeSafetensors writes (test/cli.test.ts checks this).
import { closeSync, openSync, renameSync, writeSync } from 'node:fs';

import { ModelLoadError } from '../errors.js';
import { readRegularFile } from './files.js';
import { isObject, parseJsonStrict } from './json.js';

/** A tensor read from a safetensors file; float dtypes arrive as Float32Array. */
export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data: Float32Array | Int32Array | BigInt64Array;
}

/** A whole safetensors file: its tensors (in header order) and its `__metadata__` strings. */
export interface SafetensorsFile {
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/** The codes a malformed file is reported with: the plain reader's, or the SAE / steering loaders'. */
export type SafetensorsErrorCode = 'ERR_SAFETENSORS_INVALID' | 'ERR_SAE_INVALID' | 'ERR_STEERING_FILE_INVALID';

const SIZES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
// Headers are small (a few MB for the largest hub checkpoints); anything bigger is hostile.
const MAX_HEADER_BYTES = 100 * 2 ** 20;

/** IEEE half-precision bits to a number (exact). */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}


interface HeaderEntry {
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Validates the header of the safetensors bytes `buf` as strictly as native/io/safetensors.cc:
 * header length within the file and under 100 MiB, UTF-8 strict JSON object, `__metadata__` a
 * string map, each tensor an object with a known dtype, a shape of non-negative safe integers
 * and ordered data_offsets inside the data section whose length is the shape's byte size, and
 * no two tensors overlapping. Returns the entries and where the data section starts.
 */
function parseHeader(buf: Buffer, bad: (why: string) => Error): { entries: Map<string, HeaderEntry>; metadata: Record<string, string>; base: number } {
  if (buf.length < 8) throw bad(`too short for a safetensors header (${buf.length} bytes)`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8)) throw bad(`header length ${n} runs past the end of the file (${buf.length} bytes; truncated?)`);
  if (n > BigInt(MAX_HEADER_BYTES)) throw bad(`header length ${n} exceeds the 100 MiB limit`);
  const base = 8 + Number(n);
  const dataLen = buf.length - base;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf.subarray(8, base));
  } catch {
    throw bad('header is not valid UTF-8');
  }
  const header = parseJsonStrict(text, (why) => bad(`header is not valid JSON (${why})`));
  if (!isObject(header)) throw bad('header is not a JSON object');
  const metadata: Record<string, string> = {};
  const entries = new Map<string, HeaderEntry>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(e)) throw bad('__metadata__ is not an object');
      for (const [k, v] of Object.entries(e)) {
        if (typeof v !== 'string') throw bad(`__metadata__['${k}'] is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const t = `tensor '${name}'`;
    if (!isObject(e)) throw bad(`${t} entry is not an object`);
    const { dtype, shape, data_offsets: off } = e;
    if (typeof dtype !== 'string' || !Object.hasOwn(SIZES, dtype)) throw bad(`${t} has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0))
      throw bad(`${t} has shape ${JSON.stringify(shape)}; its entries must be non-negative integers`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) || off[0] > off[1])
      throw bad(`${t} has invalid data_offsets ${JSON.stringify(off)} (two ordered non-negative integers)`);
    const [begin, end] = off as [number, number];
    if (end > dataLen) throw bad(`${t} has data_offsets ${JSON.stringify(off)} outside the ${dataLen}-byte data section (truncated file?)`);
    // The element count cannot exceed the data section unless the offsets disagree with it.
    let numel = 1;
    for (const d of shape as number[]) numel = Math.min(numel * d, Number.MAX_SAFE_INTEGER);
    const need = numel * SIZES[dtype]!;
    if (end - begin !== need)
      throw bad(`${t} has ${end - begin} bytes of data; [${(shape as number[]).join(', ')}] ${dtype} needs ${numel === Number.MAX_SAFE_INTEGER ? 'more' : need}`);
    entries.set(name, { dtype, shape: [...(shape as number[])], begin, end });
  }
  const ranges = [...entries].filter(([, e]) => e.end > e.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < ranges.length; i++)
    if (ranges[i]![1].begin < ranges[i - 1]![1].end) throw bad(`tensors '${ranges[i - 1]![0]}' and '${ranges[i]![0]}' overlap`);
  return { entries, metadata, base };
}

function decode(bytes: Buffer, dtype: string, count: number): SafetensorsEntry['data'] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'I64') {
    const d = new BigInt64Array(count);
    for (let i = 0; i < count; i++) d[i] = dv.getBigInt64(i * 8, true);
    return d;
  }
  if (dtype === 'I32' || dtype === 'I16' || dtype === 'I8' || dtype === 'U8' || dtype === 'BOOL') {
    const d = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      if (dtype === 'I32') d[i] = dv.getInt32(i * 4, true);
      else if (dtype === 'I16') d[i] = dv.getInt16(i * 2, true);
      else if (dtype === 'I8') d[i] = dv.getInt8(i);
      else d[i] = dv.getUint8(i);
    }
    return d;
  }
  const f = new Float32Array(count);
  const tmp = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < count; i++) {
    if (dtype === 'F32') f[i] = dv.getFloat32(i * 4, true);
    else if (dtype === 'F64') f[i] = dv.getFloat64(i * 8, true);
    else if (dtype === 'F16') f[i] = f16ToF32(dv.getUint16(i * 2, true));
    else {
      tmp.setUint32(0, dv.getUint16(i * 2, true) << 16, true);
      f[i] = tmp.getFloat32(0, true);
    }
  }
  return f;
}

/**
 * Reads a safetensors file whole (F32/F16/BF16/F64 as Float32Array, I64 as BigInt64Array, the
 * other integer dtypes and BOOL as Int32Array) after validating its header (see parseHeader).
 * A malformed file throws ModelLoadError with `code` (defaults to ERR_SAFETENSORS_INVALID) and
 * a message that begins with `what` and the path; an unreadable one ERR_FILE_NOT_FOUND / ERR_FILE_READ.
 */
export function readSafetensorsFile(path: string, code: SafetensorsErrorCode = 'ERR_SAFETENSORS_INVALID', what = 'safetensors file'): SafetensorsFile {
  const buf = readRegularFile(path, what);
  const { entries, metadata, base } = parseHeader(buf, (why) => new ModelLoadError(code, `${what} ${path}: ${why}`));
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, e] of entries)
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data: decode(buf.subarray(base + e.begin, base + e.end), e.dtype, (e.end - e.begin) / SIZES[e.dtype]!) });
  return { tensors, metadata };
}

/**
 * Reads every tensor of a safetensors file into typed arrays (F32/F16/BF16/F64 as Float32Array).
 * A malformed file throws ModelLoadError ERR_SAFETENSORS_INVALID.
 */
export function readSafetensors(path: string): Map<string, SafetensorsEntry> {
  return readSafetensorsFile(path).tensors;
}

/** A float32 tensor to write. */
export interface TensorToWrite {
  shape: readonly number[];
  data: Float32Array;
}

/** The parts of a safetensors file holding float32 `tensors` (in the given order): 8-byte header length, header, then each tensor's bytes. */
export function encodeSafetensors(tensors: ReadonlyMap<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = {}): Uint8Array[] {
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
  return [head, Buffer.from(json, 'utf8'), ...entries.map(([, t]) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
}

/**
 * Writes float32 tensors (in the given order) to a safetensors file, through a temporary
 * file renamed into place so a reader never sees a partial file.
 */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  const parts = encodeSafetensors(tensors, metadata);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    for (const part of parts) writeSync(fd, part);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
