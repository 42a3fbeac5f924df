// GGUF reader (v2 and v3) and writer (v3), little-endian, F32/F16 tensors: the llama.cpp container
// that control vectors use. Spec: ggml's docs/gguf.md; test/steering-files.test.ts checks it against gguf-py.
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';

import { InvalidInputError, ModelLoadError, NeurotapError } from '../errors.js';
import { readRegularFile } from '../io/files.js';
import { f16ToF32 } from '../io/safetensors.js';

/** GGUF metadata value types (ggml's `gguf_type`). */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufType)[keyof typeof GgufType];

/** The ggml tensor types that readGguf decodes; writeGguf writes F32 only. */
export const GgmlType = { F32: 0, F16: 1 } as const;

const TYPE_NAMES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64'];
const typeName = (t: number): string => TYPE_NAMES[t] ?? `type ${t}`;

/** A metadata scalar: integers up to 32 bits and floats are numbers, (u)int64 bigints. */
export type GgufScalar = number | bigint | boolean | string;

/** A typed metadata scalar, as read. */
export interface GgufScalarValue {
  type: Exclude<GgufValueType, 9>;
  value: GgufScalar;
}

/**
 * A typed metadata array. `value` holds scalars for a scalar `itemType` and nested arrays
 * (each with its own item type, as in the file) when `itemType` is ARRAY.
 */
export interface GgufArrayValue {
  type: 9;
  itemType: GgufValueType;
  value: GgufScalar[] | GgufArrayValue[];
}

/** A typed metadata value, as read; writeGguf writes it back with the same types. */
export type GgufValue = GgufScalarValue | GgufArrayValue;

/** A tensor read from a GGUF file. */
export interface GgufTensor {
  /** ggml type of the stored data: 0 (F32) or 1 (F16). */
  type: number;
  /**
   * Row-major shape, outermost first, as numpy and gguf-py's `tensor.data.shape` give it. The
   * file stores ggml's `ne`, fastest-varying dimension first, i.e. this shape reversed.
   */
  shape: number[];
  /** The elements in row-major order, upcast to float32. */
  data: Float32Array;
}

/** The contents of a GGUF file. */
export interface GgufFile {
  version: number;
  /** Data alignment in bytes (`general.alignment`, default 32). */
  alignment: number;
  /** Metadata in file order. */
  metadata: Map<string, GgufValue>;
  /** Tensors in file order. */
  tensors: Map<string, GgufTensor>;
}

const DEFAULT_ALIGNMENT = 32;
const MAX_DIMS = 4;
/** Nested metadata arrays deeper than this are refused (bounds recursion on hostile files). */
const MAX_ARRAY_DEPTH = 8;
const SCALAR_BYTES: Partial<Record<number, number>> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
/** The fewest bytes one value of a type takes: a string is a u64 length, an array a u32 type and a u64 count. */
const minBytes = (t: number): number => SCALAR_BYTES[t] ?? (t === GgufType.STRING ? 8 : 12);
const MIN_KV_BYTES = 8 + 1 + 4 + 1;  // key length, a 1-byte key, value type, a 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 4 + 8;  // name length, a 1-byte name, n_dims, type, offset

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A bounds-checked read position; every failure is an ERR_GGUF_INVALID naming the byte offset. */
class Cursor {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly source: string,
  ) {}

  fail(what: string, at = this.pos): ModelLoadError {
    return new ModelLoadError('ERR_GGUF_INVALID', `GGUF file ${this.source}: ${what} (at byte ${at})`);
  }

  get left(): number {
    return this.buf.length - this.pos;
  }

  need(n: number, what: string): void {
    if (n > this.left) throw this.fail(`${what} runs past the end of the file (needs ${n} bytes, ${this.left} left)`);
  }

  /** Fails unless `count` items of at least `itemBytes` each fit in the rest of the file. */
  needCount(count: bigint, itemBytes: number, what: string, at: number): number {
    if (count * BigInt(itemBytes) > BigInt(this.left)) {
      throw this.fail(`${what} ${count} cannot fit in the ${this.left} bytes left (each takes at least ${itemBytes})`, at);
    }
    return Number(count);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buf.readUInt8(this.pos++);
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64Big(what: string): bigint {
    this.need(8, what);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A u64 that must fit in a JS safe integer. */
  u64(what: string): number {
    const at = this.pos;
    const v = this.u64Big(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`${what} ${v} is too large`, at);
    return Number(v);
  }

  str(what: string): string {
    const at = this.pos;
    const len = this.u64(`${what} length`);
    this.need(len, what);
    const bytes = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    try {
      return utf8.decode(bytes);
    } catch {
      throw this.fail(`${what} is not valid UTF-8`, at);
    }
  }
}

function readValue(c: Cursor, type: number, what: string, depth: number): GgufScalar | GgufArrayValue {
  const at = c.pos;
  const b = c.buf;
  const take = (n: number, read: (p: number) => GgufScalar): GgufScalar => {
    c.need(n, what);
    const v = read(c.pos);
    c.pos += n;
    return v;
  };
  switch (type) {
    case GgufType.UINT8: return take(1, (p) => b.readUInt8(p));
    case GgufType.INT8: return take(1, (p) => b.readInt8(p));
    case GgufType.UINT16: return take(2, (p) => b.readUInt16LE(p));
    case GgufType.INT16: return take(2, (p) => b.readInt16LE(p));
    case GgufType.UINT32: return take(4, (p) => b.readUInt32LE(p));
    case GgufType.INT32: return take(4, (p) => b.readInt32LE(p));
    case GgufType.FLOAT32: return take(4, (p) => b.readFloatLE(p));
    case GgufType.UINT64: return take(8, (p) => b.readBigUInt64LE(p));
    case GgufType.INT64: return take(8, (p) => b.readBigInt64LE(p));
    case GgufType.FLOAT64: return take(8, (p) => b.readDoubleLE(p));
    case GgufType.BOOL: {
      const v = c.u8(what);
      if (v > 1) throw c.fail(`${what} is a bool of value ${v} (must be 0 or 1)`, at);
      return v === 1;
    }
    case GgufType.STRING: return c.str(what);
    case GgufType.ARRAY: {
      if (depth >= MAX_ARRAY_DEPTH) throw c.fail(`${what} nests arrays deeper than ${MAX_ARRAY_DEPTH}`, at);
      const itemType = c.u32(`${what} item type`);
      if (itemType > GgufType.FLOAT64) throw c.fail(`${what} has unknown item type ${itemType}`, at);
      const n = c.needCount(c.u64Big(`${what} count`), minBytes(itemType), `${what}: array count`, at + 4);
      const items: (GgufScalar | GgufArrayValue)[] = new Array(n);
      for (let i = 0; i < n; i++) items[i] = readValue(c, itemType, `${what}[${i}]`, depth + 1);
      return { type: GgufType.ARRAY, itemType: itemType as GgufValueType, value: items as GgufScalar[] | GgufArrayValue[] };
    }
    default:
      throw c.fail(`${what} has unknown value type ${type}`, at);
  }
}

interface TensorInfo {
  name: string;
  type: number;
  ne: number[];
  count: number;
  offset: number;
  at: number;
}

function decodeTensor(buf: Buffer, start: number, info: TensorInfo): Float32Array {
  const out = new Float32Array(info.count);
  if (info.type === GgmlType.F32) {
    if (endianness() === 'LE') new Uint8Array(out.buffer).set(buf.subarray(start, start + info.count * 4));
    else for (let i = 0; i < info.count; i++) out[i] = buf.readFloatLE(start + i * 4);
  } else {
    for (let i = 0; i < info.count; i++) out[i] = f16ToF32(buf.readUInt16LE(start + i * 2));
  }
  return out;
}

/**
 * Reads a whole GGUF file (v2 or v3, little-endian) with F32 or F16 tensors into memory (meant
 * for small files such as control vectors, not multi-GB model weights). The file is
 * untrusted: any malformation (bad magic or version, counts or lengths past the end, more than 4
 * dims, zero or overflowing dims, misaligned, out-of-file or overlapping tensor data, unknown
 * types) is a ModelLoadError with code ERR_GGUF_INVALID that says what is wrong and at which byte.
 */
export function readGguf(file: string | Buffer): GgufFile {
  const source = typeof file === 'string' ? file : '<buffer>';
  const buf = typeof file === 'string' ? readRegularFile(file, 'GGUF file') : file;
  const c = new Cursor(buf, source);
  try {
    return parse(c);
  } catch (err) {
    if (err instanceof NeurotapError) throw err;
    // Every read is bounds-checked first; this only turns an unforeseen bug into the coded error.
    throw c.fail(`cannot be parsed: ${(err as Error).message}`);
  }
}

function parse(c: Cursor): GgufFile {
  c.need(4, 'the GGUF magic');
  if (c.buf.toString('latin1', 0, 4) !== 'GGUF') throw c.fail(`bad magic 0x${c.buf.subarray(0, 4).toString('hex')} (expected "GGUF")`);
  c.pos = 4;
  const version = c.u32('version');
  if (version !== 2 && version !== 3) {
    const swapped = c.buf.readUInt32BE(4);
    const hint = swapped === 2 || swapped === 3 ? ' (a big-endian file; only little-endian is read)' : ' (only 2 and 3 are read)';
    throw c.fail(`unsupported version ${version}${hint}`, 4);
  }
  const tensorCountBig = c.u64Big('tensor count');
  const kvCountBig = c.u64Big('metadata count');
  const kvCount = c.needCount(kvCountBig, MIN_KV_BYTES, 'metadata count', 16);
  c.needCount(tensorCountBig, MIN_TENSOR_INFO_BYTES, 'tensor count', 8);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const at = c.pos;
    const key = c.str(`metadata key #${i}`);
    if (key === '') throw c.fail(`metadata key #${i} is empty`, at);
    if (metadata.has(key)) throw c.fail(`metadata key '${key}' appears twice`, at);
    const type = c.u32(`type of '${key}'`);
    const v = readValue(c, type, `value of '${key}'`, 0);
    metadata.set(key, typeof v === 'object' ? v : ({ type: type as Exclude<GgufValueType, 9>, value: v }));
  }

  let alignment = DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== GgufType.UINT32 || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
      throw c.fail(`general.alignment must be a uint32 power of two, got ${typeName(al.type)} ${String(al.value)}`, 0);
    }
    alignment = al.value;
  }

  const tensorCount = c.needCount(tensorCountBig, MIN_TENSOR_INFO_BYTES, 'tensor count', 8);
  const infos: TensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const at = c.pos;
    const name = c.str(`tensor #${i} name`);
    if (name === '') throw c.fail(`tensor #${i} has an empty name`, at);
    if (names.has(name)) throw c.fail(`tensor '${name}' appears twice`, at);
    names.add(name);
    const nDims = c.u32(`tensor '${name}' n_dims`);
    if (nDims > MAX_DIMS) throw c.fail(`tensor '${name}' has ${nDims} dims (at most ${MAX_DIMS})`, c.pos - 4);
    const ne: number[] = [];
    let count = 1;
    for (let d = 0; d < nDims; d++) {
      const dim = c.u64(`tensor '${name}' dim ${d}`);
      if (dim === 0) throw c.fail(`tensor '${name}' dim ${d} is 0`, c.pos - 8);
      if (count * dim > Number.MAX_SAFE_INTEGER / 4) throw c.fail(`tensor '${name}' has too many elements`, c.pos - 8);
      count *= dim;
      ne.push(dim);
    }
    const type = c.u32(`tensor '${name}' type`);
    if (type !== GgmlType.F32 && type !== GgmlType.F16) {
      throw c.fail(`tensor '${name}': unsupported tensor type ${type} (only F32 = 0 and F16 = 1 are read)`, c.pos - 4);
    }
    const offset = c.u64(`tensor '${name}' offset`);
    if (offset % alignment !== 0) throw c.fail(`tensor '${name}' offset ${offset} is not a multiple of the alignment ${alignment}`, c.pos - 8);
    infos.push({ name, type, ne, count, offset, at });
  }

  // The data section starts at the first multiple of the alignment after the tensor infos.
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  const byOffset = [...infos].sort((a, b) => a.offset - b.offset);
  let prev: { name: string; end: number } | undefined;
  for (const t of byOffset) {
    const start = dataStart + t.offset;
    const end = start + t.count * (t.type === GgmlType.F32 ? 4 : 2);
    if (end > c.buf.length) throw c.fail(`tensor '${t.name}' data [${start}, ${end}) runs past the end of the file (${c.buf.length} bytes)`, t.at);
    if (prev && start < prev.end) throw c.fail(`tensor '${t.name}' data starting at byte ${start} overlaps tensor '${prev.name}' (ends at byte ${prev.end})`, t.at);
    prev = { name: t.name, end };
  }

  const tensors = new Map<string, GgufTensor>();
  for (const t of infos) {
    tensors.set(t.name, { type: t.type, shape: [...t.ne].reverse(), data: decodeTensor(c.buf, dataStart + t.offset, t) });
  }
  return { version, alignment, metadata, tensors };
}

// ---------------------------------------------------------------------------------------------
// Writer

/** A float32 tensor to write; `shape` is row-major (outermost first), as GgufTensor.shape. */
export interface GgufTensorToWrite {
  shape: readonly number[];
  data: Float32Array;
}

/** A metadata value in plain JS form: a scalar, or an array of them (nested arrays allowed). */
export type GgufPlainValue = GgufScalar | readonly GgufPlainValue[];

/**
 * A metadata entry `[key, value, type?]`. Without `type` it is inferred as gguf-py does: string,
 * boolean, integer number → INT32 (UINT32 or INT64 when out of range), other number → FLOAT32,
 * bigint → INT64 (UINT64 above the int64 range). For an array value, `type` is the item type
 * (applied at every nesting level); an empty array needs it.
 */
export type GgufMetadataEntry = readonly [key: string, value: GgufPlainValue, type?: GgufValueType];

/** What writeGguf writes. */
export interface GgufContents {
  /** Typed values (as readGguf returns them) or `[key, value, type?]` entries, written in order. Defaults to none. */
  metadata?: ReadonlyMap<string, GgufValue> | readonly GgufMetadataEntry[];
  /** Tensors, written in order. Defaults to none. */
  tensors?: ReadonlyMap<string, GgufTensorToWrite> | readonly (readonly [string, GgufTensorToWrite])[];
}

/** ggml's GGML_MAX_NAME is 64 bytes including the NUL; llama.cpp refuses longer tensor names. */
const MAX_TENSOR_NAME_BYTES = 63;

const invalid = (msg: string) => new InvalidInputError('ERR_INVALID_INPUT', `writeGguf: ${msg}`);

const INT_RANGES: Partial<Record<number, [number, number]>> = {
  0: [0, 0xff], 1: [-0x80, 0x7f], 2: [0, 0xffff], 3: [-0x8000, 0x7fff], 4: [0, 0xffffffff], 5: [-0x80000000, 0x7fffffff],
};
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;

function inferType(v: GgufPlainValue, key: string): GgufValueType {
  if (typeof v === 'string') return GgufType.STRING;
  if (typeof v === 'boolean') return GgufType.BOOL;
  if (typeof v === 'bigint') return v > I64_MAX ? GgufType.UINT64 : GgufType.INT64;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) return GgufType.FLOAT32;
    if (v >= -0x80000000 && v <= 0x7fffffff) return GgufType.INT32;
    if (v >= 0 && v <= 0xffffffff) return GgufType.UINT32;
    return GgufType.INT64;
  }
  if (Array.isArray(v)) return GgufType.ARRAY;
  throw invalid(`metadata '${key}': cannot store a value of type ${typeof v}`);
}

/** The item type of a plain array: the common inferred type, widened across numbers. */
function inferItemType(items: readonly GgufPlainValue[], key: string): GgufValueType {
  if (items.length === 0) throw invalid(`metadata '${key}': an empty array needs an explicit item type`);
  const types = new Set(items.map((v) => inferType(v, key)));
  if (types.size === 1) return [...types][0]!;
  const numeric: number[] = [GgufType.INT32, GgufType.UINT32, GgufType.INT64, GgufType.FLOAT32];
  if (items.every((v) => typeof v === 'number') && [...types].every((t) => numeric.includes(t))) {
    if (types.has(GgufType.FLOAT32)) return GgufType.FLOAT32;
    return types.has(GgufType.INT64) || (types.has(GgufType.UINT32) && items.some((v) => (v as number) < 0)) ? GgufType.INT64 : GgufType.UINT32;
  }
  throw invalid(`metadata '${key}': array items have mixed types (${[...types].map(typeName).join(', ')})`);
}

/** Converts a plain entry into a typed value, checking that the value fits the type. */
export function toGgufValue(value: GgufPlainValue, type: GgufValueType | undefined, key: string): GgufValue {
  if (Array.isArray(value)) {
    const items = value as readonly GgufPlainValue[];
    const arrays = items.filter((v) => Array.isArray(v)).length;
    if (arrays > 0 && arrays < items.length) throw invalid(`metadata '${key}': an array mixes arrays and scalars`);
    if (arrays > 0) return { type: GgufType.ARRAY, itemType: GgufType.ARRAY, value: items.map((v) => toGgufValue(v, type, key) as GgufArrayValue) };
    const itemType = type === undefined || type === GgufType.ARRAY ? inferItemType(items, key) : type;
    return { type: GgufType.ARRAY, itemType, value: items.map((v) => (toGgufValue(v, itemType, key) as GgufScalarValue).value) };
  }
  const t = type ?? inferType(value, key);
  if (t === GgufType.ARRAY) throw invalid(`metadata '${key}': type array needs an array value`);
  return { type: t, value: value as GgufScalar };
}

/** Appends little-endian values to a list of chunks. */
class ByteWriter {
  readonly chunks: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  num(n: number, write: (b: Buffer) => void): void {
    const b = Buffer.alloc(n);
    write(b);
    this.push(b);
  }

  u32(v: number): void {
    this.num(4, (b) => b.writeUInt32LE(v));
  }

  u64(v: number | bigint): void {
    this.num(8, (b) => b.writeBigUInt64LE(BigInt(v)));
  }

  str(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }

  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    if (pad) this.push(Buffer.alloc(pad));
  }
}

function writeScalar(w: ByteWriter, type: number, v: GgufScalar, key: string): void {
  const bad = () => invalid(`metadata '${key}': ${typeof v} ${String(v)} does not fit type ${typeName(type)}`);
  const range = INT_RANGES[type];
  if (range) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < range[0] || v > range[1]) throw bad();
    const size = SCALAR_BYTES[type]!;
    w.num(size, (b) => (type % 2 === 0 ? b.writeUIntLE(v, 0, size) : b.writeIntLE(v, 0, size)));
  } else if (type === GgufType.UINT64 || type === GgufType.INT64) {
    if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isSafeInteger(v))) throw bad();
    const big = BigInt(v);
    if (type === GgufType.UINT64 ? big < 0n || big > U64_MAX : big < I64_MIN || big > I64_MAX) throw bad();
    w.num(8, (b) => (type === GgufType.UINT64 ? b.writeBigUInt64LE(big) : b.writeBigInt64LE(big)));
  } else if (type === GgufType.FLOAT32 || type === GgufType.FLOAT64) {
    if (typeof v !== 'number') throw bad();
    w.num(type === GgufType.FLOAT32 ? 4 : 8, (b) => (type === GgufType.FLOAT32 ? b.writeFloatLE(v) : b.writeDoubleLE(v)));
  } else if (type === GgufType.BOOL) {
    if (typeof v !== 'boolean') throw bad();
    w.num(1, (b) => b.writeUInt8(v ? 1 : 0));
  } else if (type === GgufType.STRING) {
    if (typeof v !== 'string') throw bad();
    w.str(v);
  } else {
    throw invalid(`metadata '${key}': unknown value type ${type}`);
  }
}

function writeValue(w: ByteWriter, v: GgufValue, key: string, depth: number): void {
  if (v.type !== GgufType.ARRAY) return writeScalar(w, v.type, v.value, key);
  if (depth >= MAX_ARRAY_DEPTH) throw invalid(`metadata '${key}': arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
  if (!Array.isArray(v.value)) throw invalid(`metadata '${key}': an array value must hold an array`);
  w.u32(v.itemType);
  w.u64(v.value.length);
  for (const item of v.value) {
    if (v.itemType === GgufType.ARRAY) {
      if (typeof item !== 'object' || item === null) throw invalid(`metadata '${key}': items of an array of arrays must be arrays`);
      writeValue(w, item as GgufArrayValue, key, depth + 1);
    } else {
      writeScalar(w, v.itemType, item as GgufScalar, key);
    }
  }
}

function leBytes(data: Float32Array): Buffer {
  if (endianness() === 'LE') return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const b = Buffer.alloc(data.length * 4);
  data.forEach((x, i) => b.writeFloatLE(x, i * 4));
  return b;
}

/**
 * Encodes a GGUF v3 little-endian file: metadata, then F32 tensors. The data alignment is 32
 * bytes unless the metadata sets `general.alignment` (uint32 power of two). Bad input is an
 * InvalidInputError with code ERR_INVALID_INPUT.
 */
export function encodeGguf(contents: GgufContents): Buffer {
  const metadata = new Map<string, GgufValue>();
  const m = contents.metadata ?? [];
  if (m instanceof Map) for (const [k, v] of m) metadata.set(k, v);
  else {
    for (const [k, v, t] of m as readonly GgufMetadataEntry[]) {
      if (metadata.has(k)) throw invalid(`metadata key '${k}' given twice`);
      metadata.set(k, toGgufValue(v, t, k));
    }
  }
  let alignment = DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== GgufType.UINT32 || typeof al.value !== 'number' || al.value <= 0 || (al.value & (al.value - 1)) !== 0) {
      throw invalid(`general.alignment must be a uint32 power of two`);
    }
    alignment = al.value;
  }
  const t0 = contents.tensors ?? [];
  const tensors: (readonly [string, GgufTensorToWrite])[] = t0 instanceof Map ? [...(t0 as ReadonlyMap<string, GgufTensorToWrite>).entries()] : [...(t0 as readonly (readonly [string, GgufTensorToWrite])[])];

  const w = new ByteWriter();
  w.push(Buffer.from('GGUF', 'latin1'));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(metadata.size);
  for (const [key, v] of metadata) {
    if (key === '') throw invalid('a metadata key is empty');
    w.str(key);
    w.u32(v.type);
    writeValue(w, v, key, 0);
  }
  const names = new Set<string>();
  let offset = 0;
  for (const [name, t] of tensors) {
    const nameBytes = Buffer.byteLength(name, 'utf8');
    if (nameBytes === 0 || nameBytes > MAX_TENSOR_NAME_BYTES) throw invalid(`tensor name '${name}' must be 1 to ${MAX_TENSOR_NAME_BYTES} bytes`);
    if (names.has(name)) throw invalid(`tensor '${name}' given twice`);
    names.add(name);
    const { shape, data } = t;
    if (shape.length < 1 || shape.length > MAX_DIMS || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw invalid(`tensor '${name}' shape [${shape.join(', ')}] must have 1 to ${MAX_DIMS} positive dims`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (!(data instanceof Float32Array) || count !== data.length) throw invalid(`tensor '${name}' shape [${shape.join(', ')}] needs ${count} float32 values, got ${data?.length}`);
    w.str(name);
    w.u32(shape.length);
    for (let d = shape.length - 1; d >= 0; d--) w.u64(shape[d]!);  // ne[0] is the fastest dim
    w.u32(GgmlType.F32);
    w.u64(offset);
    offset += Math.ceil(data.byteLength / alignment) * alignment;
  }
  w.padTo(alignment);
  for (const [, t] of tensors) {
    w.push(leBytes(t.data));
    w.padTo(alignment);
  }
  return Buffer.concat(w.chunks, w.length);
}

/**
 * Writes a GGUF v3 file (see encodeGguf) through a temporary file renamed into place, so a reader
 * never sees a partial file.
 */
export function writeGguf(path: string, contents: GgufContents): void {
  const bytes = encodeGguf(contents);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, bytes);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
