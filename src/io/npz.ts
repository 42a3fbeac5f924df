// NumPy .npz reader (a zip of .npy arrays, stored or deflated, zip64 aware) for Gemma Scope
// SAE weights. Untrusted input: every offset, size and header is checked before use.
// Tests: test/sae-fixtures.test.ts (a file written by numpy), test/sae-fuzz.test.ts.
import { kMaxLength } from 'node:buffer';
import { inflateRawSync } from 'node:zlib';

import { ModelLoadError } from '../errors.js';
import { readRegularFile } from './files.js';
import { f16ToF32 } from './safetensors.js';

/** One array of an .npz file; floating dtypes (f2, f4, f8) arrive as Float32Array. */
export interface NpyArray {
  dtype: string;
  shape: number[];
  data: Float32Array | Int32Array;
}

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);  // \x93NUMPY

/** Reads every array of an .npz file, keyed by name without `.npy`. */
export function readNpz(path: string): Map<string, NpyArray> {
  const buf = readRegularFile(path, 'npz file');
  const bad = (why: string) => new ModelLoadError('ERR_SAE_INVALID', `npz file ${path}: ${why}`);
  // End of central directory: 22 bytes + comment (<= 65535), searched from the end.
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad('not a zip archive (no end of central directory)');
  let count = buf.readUInt16LE(eocd + 10);
  let cdOffset = buf.readUInt32LE(eocd + 16);
  if (cdOffset === 0xffffffff || count === 0xffff) {
    // Zip64: the locator sits just before the EOCD and points at the zip64 EOCD record.
    const loc = eocd - 20;
    if (loc < 0 || buf.readUInt32LE(loc) !== 0x07064b50) throw bad('zip64 locator missing');
    const rec = Number(buf.readBigUInt64LE(loc + 8));
    if (rec + 56 > buf.length || buf.readUInt32LE(rec) !== 0x06064b50) throw bad('zip64 end of central directory missing');
    count = Number(buf.readBigUInt64LE(rec + 32));
    cdOffset = Number(buf.readBigUInt64LE(rec + 48));
  }
  const out = new Map<string, NpyArray>();
  let p = cdOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > buf.length || buf.readUInt32LE(p) !== 0x02014b50) throw bad(`central directory entry ${n} is damaged`);
    const method = buf.readUInt16LE(p + 10);
    let compressed = buf.readUInt32LE(p + 20);
    let size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28), extraLen = buf.readUInt16LE(p + 30), commentLen = buf.readUInt16LE(p + 32);
    let local = buf.readUInt32LE(p + 42);
    if (p + 46 + nameLen + extraLen > buf.length) throw bad(`central directory entry ${n} is truncated`);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    // Zip64 extra field (id 1): the 0xffffffff fields, in order size, compressed, offset.
    const extraEnd = p + 46 + nameLen + extraLen;
    for (let e = p + 46 + nameLen; e + 4 <= extraEnd; ) {
      const id = buf.readUInt16LE(e), len = buf.readUInt16LE(e + 2);
      if (id === 1) {
        let f = e + 4;
        const next = () => {
          if (f + 8 > Math.min(e + 4 + len, extraEnd)) throw bad(`zip64 field of ${name} is short`);
          const v = Number(buf.readBigUInt64LE(f));
          f += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressed === 0xffffffff) compressed = next();
        if (local === 0xffffffff) local = next();
      }
      e += 4 + len;
    }
    p += 46 + nameLen + extraLen + commentLen;
    if (local + 30 > buf.length || buf.readUInt32LE(local) !== 0x04034b50) throw bad(`local header of ${name} is damaged`);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    if (start + compressed > buf.length) throw bad(`${name} runs past the end of the file`);
    const raw = buf.subarray(start, start + compressed);
    let data: Buffer;
    if (method === 0) data = raw;
    else if (method === 8) {
      try {
        // Never inflate past the size the directory promises (a zip bomb stops there).
        data = inflateRawSync(raw, { maxOutputLength: Math.max(1, Math.min(size, kMaxLength)) });
      } catch (err) {
        throw bad(`${name} does not inflate: ${(err as Error).message}`);
      }
    } else throw bad(`${name} uses zip compression method ${method} (only stored and deflate are read)`);
    if (data.length !== size) throw bad(`${name} holds ${data.length} bytes, the directory says ${size}`);
    if (!name.endsWith('.npy')) continue;
    if (out.has(name.slice(0, -4))) throw bad(`${name} appears twice`);
    out.set(name.slice(0, -4), parseNpy(data, (why) => bad(`${name}: ${why}`)));
  }
  return out;
}

function parseNpy(b: Buffer, bad: (why: string) => Error): NpyArray {
  if (b.length < 10 || !b.subarray(0, 6).equals(NPY_MAGIC)) throw bad('not an .npy array');
  const major = b[6]!;
  if (major < 1 || major > 3) throw bad(`.npy format version ${major} is not 1, 2 or 3`);
  const lenBytes = major === 1 ? 2 : 4;
  if (b.length < 8 + lenBytes) throw bad('header length is truncated');
  const headerLen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const offset = 8 + lenBytes + headerLen;
  if (offset > b.length) throw bad('header runs past the data');
  const header = b.toString(major === 3 ? 'utf8' : 'latin1', 8 + lenBytes, offset);
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw bad(`unreadable header ${JSON.stringify(header)}`);
  if (fortran === 'True') throw bad('Fortran-order arrays are not supported');
  // A Python tuple of ints: (), (n,), (n, m) or (n, m,).
  if (!/^\s*(?:\d+\s*(?:,\s*\d+\s*)*,?\s*)?$/.test(shapeText) || /^\s*\d+\s*$/.test(shapeText)) throw bad(`bad shape (${shapeText})`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  const numel = shape.reduce((a, d) => a * d, 1);
  const kinds: Record<string, number> = { '<f4': 4, '<f2': 2, '<f8': 8, '<i4': 4 };
  const size = kinds[descr];
  if (size === undefined) throw bad(`dtype ${descr} is not supported (little-endian f2, f4, f8, i4)`);
  if (!Number.isSafeInteger(numel) || offset + numel * size !== b.length)
    throw bad(`shape [${shape}] of ${descr} needs ${numel * size} bytes, the array has ${b.length - offset}`);
  const body = b.subarray(offset);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  if (descr === '<i4') {
    const d = new Int32Array(numel);
    for (let i = 0; i < numel; i++) d[i] = view.getInt32(i * 4, true);
    return { dtype: descr, shape, data: d };
  }
  const d = new Float32Array(numel);
  if (descr === '<f4') for (let i = 0; i < numel; i++) d[i] = view.getFloat32(i * 4, true);
  else if (descr === '<f8') for (let i = 0; i < numel; i++) d[i] = view.getFloat64(i * 8, true);
  else for (let i = 0; i < numel; i++) d[i] = f16ToF32(view.getUint16(i * 2, true));
  return { dtype: descr, shape, data: d };
}
