// Steering files and math: GGUF against llama.cpp's gguf-py (fixtures from
// test/fixtures/generate_steering.py, and our files read back by gguf-py in a subprocess, skipped
// with a message when python3 lacks gguf), safetensors steering files, PCA against numpy's SVD.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { InvalidInputError, ModelLoadError } from '../src/errors.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { encodeGguf, GgufType, readGguf, writeGguf, type GgufValue } from '../src/steering/gguf.js';
import { firstPrincipalComponent, meanDifference } from '../src/steering/train-math.js';
import {
  loadControlVector,
  loadSingleVector,
  loadSteeringSafetensors,
  saveControlVector,
  saveSteeringSafetensors,
  type SteeringVector,
} from '../src/steering/vectors.js';
import { randomFloats, ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'steering');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-steering-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const readJson = <T>(name: string): T => JSON.parse(readFileSync(join(FIX, name), 'utf8')) as T;

/** Runs `fn`, which must throw a NeurotapError of class `Cls` with `code` (and a message matching `message`). */
function expectCoded(fn: () => unknown, Cls: typeof ModelLoadError | typeof InvalidInputError, code: string, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof Cls) || err.code !== code) {
    throw new Error(`expected ${Cls.name} ${code}, got ${err instanceof Error ? `${err.name} ${(err as { code?: string }).code}: ${err.message}` : String(err)}`);
  }
  if (message) expect(err.message).toMatch(message);
}

const ggufError = (fn: () => unknown, message?: RegExp) => expectCoded(fn, ModelLoadError, 'ERR_GGUF_INVALID', message);
const fileError = (fn: () => unknown, message?: RegExp) => expectCoded(fn, ModelLoadError, 'ERR_STEERING_FILE_INVALID', message);
const inputError = (fn: () => unknown, message?: RegExp) => expectCoded(fn, InvalidInputError, 'ERR_INVALID_INPUT', message);

let pythonGguf: boolean | undefined;
function hasPythonGguf(): boolean {
  pythonGguf ??= spawnSync('python3', ['-c', 'import gguf, numpy']).status === 0;
  return pythonGguf;
}

interface PyGguf {
  fields: Record<string, { types: number[]; value: unknown }>;
  tensors: { name: string; type: number; ne: number[]; shape: number[]; data: number[] }[];
}

/** Reads a GGUF file with gguf-py's GGUFReader; integers come back as strings (64-bit safe). */
function readWithGgufPy(path: string): PyGguf {
  const script = `
import json, sys
import numpy as np
from gguf import GGUFReader, GGUFValueType
def plain(v):
    if isinstance(v, np.generic): v = v.item()
    if isinstance(v, bool): return v
    if isinstance(v, int): return str(v)
    if isinstance(v, list): return [plain(x) for x in v]
    return v
r = GGUFReader(sys.argv[1])
out = {"fields": {}, "tensors": []}
for name, f in r.fields.items():
    if name.startswith("GGUF."): continue
    types = [int(t) for t in f.types]
    nested = len(types) > 2  # gguf-py flattens nested arrays
    out["fields"][name] = {"types": types, "value": None if nested else plain(f.contents())}
for t in r.tensors:
    out["tensors"].append({"name": t.name, "type": int(t.tensor_type), "ne": [int(x) for x in t.shape],
                           "shape": [int(x) for x in t.data.shape], "data": [float(x) for x in np.asarray(t.data, dtype=np.float64).reshape(-1)]})
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script, path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gguf-py failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as PyGguf;
}

/** Little-endian byte builder for hand-made (often broken) GGUF files, independent of our writer. */
class Bytes {
  private parts: Buffer[] = [];
  raw(b: Buffer | number[]): this {
    this.parts.push(Buffer.isBuffer(b) ? b : Buffer.from(b));
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return this.raw(b);
  }
  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return this.raw(b);
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    return this.u64(b.length).raw(b);
  }
  get length(): number {
    return this.parts.reduce((a, p) => a + p.length, 0);
  }
  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

interface RawTensor {
  name: string;
  ne: (number | bigint)[];
  type?: number;
  offset?: number | bigint;
}

function rawGguf(o: { version?: number; kvCount?: number; kv?: (b: Bytes) => void; tensors?: RawTensor[]; dataBytes?: number }): Buffer {
  const b = new Bytes().raw(Buffer.from('GGUF', 'latin1')).u32(o.version ?? 3).u64(o.tensors?.length ?? 0).u64(o.kvCount ?? 0);
  o.kv?.(b);
  for (const t of o.tensors ?? []) {
    b.str(t.name).u32(t.ne.length);
    for (const d of t.ne) b.u64(d);
    b.u32(t.type ?? 0).u64(t.offset ?? 0);
  }
  b.raw(Buffer.alloc((32 - (b.length % 32)) % 32));
  return b.raw(Buffer.alloc(o.dataBytes ?? 0)).build();
}

function smallControlVector(): SteeringVector {
  return {
    directions: new Map([
      ['blocks.2.hook_resid_post', randomFloats(8, 1)],
      ['blocks.1.hook_resid_post', randomFloats(8, 2)],
    ]),
    metadata: { method: 'pca' },
  };
}

describe('GGUF reader and writer', () => {
  it('reads gguf-py control vector output exactly', () => {
    const ref = readJson<{ model_hint: string; layer_count: number; directions: Record<string, number[]> }>('control-vector.json');
    const g = readGguf(join(FIX, 'control-vector.gguf'));
    expect(g.version).toBe(3);
    expect(g.alignment).toBe(32);
    expect(g.metadata.get('general.architecture')).toEqual({ type: GgufType.STRING, value: 'controlvector' });
    expect(g.metadata.get('controlvector.model_hint')).toEqual({ type: GgufType.STRING, value: 'llama' });
    expect(g.metadata.get('controlvector.layer_count')).toEqual({ type: GgufType.UINT32, value: 3 });
    expect([...g.tensors.keys()]).toEqual(['direction.0', 'direction.1', 'direction.5']);
    for (const [n, values] of Object.entries(ref.directions)) {
      const t = g.tensors.get(`direction.${n}`)!;
      expect(t.type).toBe(0);
      expect(t.shape).toEqual([16]);
      expect(Array.from(t.data)).toEqual(values);
    }
  });

  it('reads every metadata type, F16 data and row-major shapes as gguf-py wrote them', () => {
    const ref = readJson<{ metadata: Record<string, [string, unknown]>; tensors: Record<string, { type: number; shape: number[]; data: number[] }> }>('kv-types.json');
    const g = readGguf(readFileSync(join(FIX, 'kv-types.gguf')));
    const names = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64'];
    const plain = (v: GgufValue): unknown => (v.type === GgufType.ARRAY ? v.value.map((x) => (typeof x === 'object' ? plain(x) : x)) : typeof v.value === 'bigint' ? String(v.value) : v.value);
    expect([...g.metadata.keys()].sort()).toEqual(Object.keys(ref.metadata).sort());
    for (const [key, [type, value]] of Object.entries(ref.metadata)) {
      const v = g.metadata.get(key)!;
      expect(names[v.type], key).toBe(type);
      expect(plain(v), key).toEqual(value);
    }
    expect(g.metadata.get('t.arr_str')).toMatchObject({ itemType: GgufType.STRING });
    expect(g.metadata.get('t.arr_i16')).toMatchObject({ itemType: GgufType.INT16 });
    expect(g.metadata.get('t.arr_nested')).toMatchObject({ itemType: GgufType.ARRAY, value: [{ itemType: GgufType.INT32 }, { itemType: GgufType.INT32 }] });
    for (const [name, t] of Object.entries(ref.tensors)) {
      const ours = g.tensors.get(name)!;
      expect(ours.type, name).toBe(t.type);
      expect(ours.shape, name).toEqual(t.shape);
      expect(Array.from(ours.data), name).toEqual(t.data);
    }
  });

  it('round-trips every value type, nested arrays and a 4-D tensor through writeGguf', () => {
    const metadata = readGguf(join(FIX, 'kv-types.gguf')).metadata;
    const t4 = randomFloats(2 * 3 * 1 * 5, 7);
    const path = join(tmp, 'roundtrip.gguf');
    writeGguf(path, { metadata, tensors: [['t4', { shape: [2, 3, 1, 5], data: t4 }]] });
    const back = readGguf(path);
    expect(back.metadata).toEqual(metadata);
    expect(back.tensors.get('t4')!.shape).toEqual([2, 3, 1, 5]);
    expect(Array.from(back.tensors.get('t4')!.data)).toEqual(Array.from(t4));
  });

  it('infers metadata types from plain values as gguf-py does', () => {
    const buf = encodeGguf({
      metadata: [
        ['a', 'text'], ['b', true], ['c', 7], ['d', 1.5], ['e', 2 ** 40], ['f', 3n], ['g', [1, 2]], ['h', [1, 2.5]],
        ['i', [[1], [2, 3]]], ['j', [5, 6], GgufType.UINT8], ['k', [], GgufType.STRING], ['l', 9, GgufType.UINT64],
      ],
    });
    const m = readGguf(buf).metadata;
    expect(Object.fromEntries([...m].map(([k, v]) => [k, v.type]))).toEqual({ a: 8, b: 7, c: 5, d: 6, e: 11, f: 11, g: 9, h: 9, i: 9, j: 9, k: 9, l: 10 });
    expect(m.get('h')).toEqual({ type: 9, itemType: GgufType.FLOAT32, value: [1, 2.5] });
    expect(m.get('j')).toEqual({ type: 9, itemType: GgufType.UINT8, value: [5, 6] });
    expect(m.get('l')).toEqual({ type: 10, value: 9n });
    inputError(() => encodeGguf({ metadata: [['x', 300, GgufType.UINT8]] }), /does not fit/);
    inputError(() => encodeGguf({ metadata: [['x', []]] }), /explicit item type/);
    inputError(() => encodeGguf({ metadata: [['x', ['a', 1]]] }), /mixed types/);
    inputError(() => encodeGguf({ tensors: [['t', { shape: [3], data: new Float32Array(4) }]] }), /needs 3/);
    inputError(() => encodeGguf({ tensors: [['t'.repeat(64), { shape: [1], data: new Float32Array(1) }]] }), /1 to 63 bytes/);
  });

  it('writes files that gguf-py reads: types, ne order, row-major data, alignment', (ctx) => {
    if (!hasPythonGguf()) {
      console.warn('skipping: python3 with the gguf package (pip install gguf) and numpy is not available');
      ctx.skip();
    }
    const path = join(tmp, 'for-python.gguf');
    const mat = randomFloats(6, 3);
    writeGguf(path, {
      metadata: [['general.architecture', 'test'], ['t.u64', 2n ** 63n + 5n], ['t.f64', 0.1, GgufType.FLOAT64], ['t.strs', ['x', 'yz']], ['t.b', false]],
      tensors: [['odd', { shape: [3], data: new Float32Array([1, 2, 3]) }], ['mat', { shape: [2, 3], data: mat }]],
    });
    const py = readWithGgufPy(path);
    expect(py.fields['general.architecture']).toEqual({ types: [GgufType.STRING], value: 'test' });
    expect(py.fields['t.u64']).toEqual({ types: [GgufType.UINT64], value: String(2n ** 63n + 5n) });
    expect(py.fields['t.f64']).toEqual({ types: [GgufType.FLOAT64], value: 0.1 });
    expect(py.fields['t.strs']).toEqual({ types: [GgufType.ARRAY, GgufType.STRING], value: ['x', 'yz'] });
    expect(py.fields['t.b']).toEqual({ types: [GgufType.BOOL], value: false });
    const odd = py.tensors.find((t) => t.name === 'odd')!;
    expect(odd).toMatchObject({ type: 0, ne: [3], shape: [3], data: [1, 2, 3] });
    const m = py.tensors.find((t) => t.name === 'mat')!;
    expect(m.ne).toEqual([3, 2]);  // GGUF stores ne: fastest dim first
    expect(m.shape).toEqual([2, 3]);  // gguf-py's numpy view is row-major, like ours
    expect(m.data).toEqual(Array.from(mat));
  });

  it('reads a v2 file and a hand-made file', () => {
    const buf = rawGguf({ version: 2, tensors: [{ name: 'v', ne: [4] }], dataBytes: 16 });
    buf.writeFloatLE(1.5, buf.length - 16);
    const g = readGguf(buf);
    expect(g.version).toBe(2);
    expect(Array.from(g.tensors.get('v')!.data)).toEqual([1.5, 0, 0, 0]);
  });

  it('throws ERR_GGUF_INVALID for every truncation of a valid file', () => {
    const path = join(tmp, 'small.gguf');
    saveControlVector(path, smallControlVector());
    const full = readFileSync(path);
    expect(full.length % 32).toBe(0);  // 8 floats = 32 bytes: the last tensor ends the file with no padding
    readGguf(full);
    for (let n = 0; n < full.length; n++) ggufError(() => readGguf(full.subarray(0, n)));
  });

  it('never throws anything but ERR_GGUF_INVALID on corrupted bytes', () => {
    const full = encodeGguf({
      metadata: [['general.architecture', 'controlvector'], ['a', ['x', 'y']], ['n', [[1, 2], [3]]], ['f', 2.5]],
      tensors: [['direction.1', { shape: [8], data: randomFloats(8, 4) }], ['m', { shape: [2, 4], data: randomFloats(8, 5) }]],
    });
    const rand = randomFloats(3 * 4000, 11);
    let parsed = 0;
    for (let k = 0; k < 4000; k++) {
      const bad = Buffer.from(full);
      const pos = Math.floor(Math.abs(rand[3 * k]!) * full.length);
      const mode = Math.abs(rand[3 * k + 1]!);
      bad[pos] = mode < 0.3 ? 0xff : mode < 0.6 ? 0 : Math.floor(Math.abs(rand[3 * k + 2]!) * 256);
      try {
        readGguf(bad);
        parsed++;
      } catch (err) {
        if (!(err instanceof ModelLoadError) || err.code !== 'ERR_GGUF_INVALID') throw err;
      }
    }
    expect(parsed).toBeGreaterThan(0);  // flips inside tensor data still parse
  });

  it('rejects malformed headers with a message saying what and where', () => {
    const valid = rawGguf({ kvCount: 1, kv: (b) => b.str('k').u32(GgufType.UINT8).raw([1]), tensors: [{ name: 'v', ne: [4] }], dataBytes: 16 });
    readGguf(valid);
    const patched = (at: number, write: (b: Buffer) => void) => {
      const b = Buffer.from(valid);
      write(b.subarray(at));
      return b;
    };
    ggufError(() => readGguf(patched(0, (b) => b.write('GGUX', 'latin1'))), /bad magic 0x47475558 \(expected "GGUF"\) \(at byte 0\)/);
    ggufError(() => readGguf(patched(4, (b) => b.writeUInt32LE(1))), /unsupported version 1/);
    ggufError(() => readGguf(patched(4, (b) => b.writeUInt32BE(3))), /big-endian/);
    ggufError(() => readGguf(patched(8, (b) => b.writeBigUInt64LE(2n ** 60n))), /tensor count 1152921504606846976 cannot fit in the \d+ bytes left .*\(at byte 8\)/);
    ggufError(() => readGguf(patched(16, (b) => b.writeBigUInt64LE(2n ** 60n))), /metadata count 1152921504606846976 cannot fit.*\(at byte 16\)/);
    ggufError(() => readGguf(patched(24, (b) => b.writeBigUInt64LE(1000n))), /metadata key #0 runs past the end of the file \(needs 1000 bytes.*\(at byte 32\)/);
    ggufError(() => readGguf(patched(24, (b) => b.writeBigUInt64LE(2n ** 63n))), /metadata key #0 length 9223372036854775808 is too large \(at byte 24\)/);
    ggufError(() => readGguf(patched(33, (b) => b.writeUInt32LE(13))), /value of 'k' has unknown value type 13/);
    ggufError(() => readGguf(rawGguf({ kvCount: 1, kv: (b) => b.str('k').u32(GgufType.ARRAY).u32(GgufType.UINT8).u64(2n ** 60n) })), /array count 1152921504606846976 cannot fit/);
    ggufError(() => readGguf(rawGguf({ kvCount: 1, kv: (b) => b.str('k').u32(GgufType.STRING).u64(20).raw([1, 2]) })), /value of 'k' runs past the end/);
    ggufError(() => readGguf(rawGguf({ kvCount: 1, kv: (b) => b.str('k').u32(GgufType.STRING).u64(2).raw([0xc3, 0x28]) })), /not valid UTF-8/);
    ggufError(() => readGguf(rawGguf({ kvCount: 1, kv: (b) => b.str('k').u32(GgufType.BOOL).raw([2]) })), /bool of value 2/);
    ggufError(() => readGguf(rawGguf({ kvCount: 2, kv: (b) => b.str('k').u32(GgufType.UINT8).raw([1]).str('k').u32(GgufType.UINT8).raw([1]) })), /'k' appears twice/);
    const deep = (b: Bytes) => {
      b.str('k').u32(GgufType.ARRAY);
      for (let i = 0; i < 20; i++) b.u32(GgufType.ARRAY).u64(1);
    };
    ggufError(() => readGguf(rawGguf({ kvCount: 1, kv: deep })), /nests arrays deeper than 8/);
    ggufError(() => readGguf(rawGguf({ kvCount: 1, kv: (b) => b.str('general.alignment').u32(GgufType.UINT32).u32(24) })), /power of two/);
  });

  it('rejects bad tensor infos and data ranges', () => {
    const t = (tensors: RawTensor[], dataBytes = 64) => () => readGguf(rawGguf({ tensors, dataBytes }));
    ggufError(t([{ name: 'q', ne: [32], type: 2 }]), /tensor 'q': unsupported tensor type 2/);
    ggufError(t([{ name: 'a', ne: [8] }, { name: 'b', ne: [8], offset: 0 }]), /tensor 'b' data starting at byte \d+ overlaps tensor 'a'/);
    ggufError(t([{ name: 'a', ne: [16] }, { name: 'b', ne: [8], offset: 32 }]), /overlaps tensor 'a'/);
    ggufError(t([{ name: 'a', ne: [4], offset: 4 }]), /offset 4 is not a multiple of the alignment 32/);
    ggufError(t([{ name: 'a', ne: [1, 1, 1, 1, 1] }]), /5 dims \(at most 4\)/);
    ggufError(t([{ name: 'a', ne: [4, 0] }]), /dim 1 is 0/);
    ggufError(t([{ name: 'a', ne: [2 ** 30, 2 ** 30] }]), /too many elements/);
    ggufError(t([{ name: 'a', ne: [2n ** 62n] }]), /dim 0 4611686018427387904 is too large/);
    ggufError(t([{ name: 'a', ne: [17] }]), /data \[\d+, \d+\) runs past the end of the file/);
    ggufError(t([{ name: 'a', ne: [4], offset: 2n ** 60n }]), /offset 1152921504606846976 is too large/);
    ggufError(t([{ name: 'a', ne: [4] }, { name: 'a', ne: [4], offset: 32 }]), /'a' appears twice/);
    ggufError(t([{ name: '', ne: [4] }]), /empty name/);
    expectCoded(() => readGguf(join(tmp, 'missing.gguf')), ModelLoadError, 'ERR_FILE_NOT_FOUND');
  });
});

describe('llama.cpp control vectors', () => {
  it('loads the gguf-py fixture as blocks.N.hook_resid_post directions', () => {
    const ref = readJson<{ directions: Record<string, number[]> }>('control-vector.json');
    const sv = loadControlVector(join(FIX, 'control-vector.gguf'));
    expect([...sv.directions.keys()]).toEqual(['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post', 'blocks.5.hook_resid_post']);
    for (const [n, values] of Object.entries(ref.directions)) expect(Array.from(sv.directions.get(`blocks.${n}.hook_resid_post`)!)).toEqual(values);
    expect(sv.metadata).toEqual({ 'general.architecture': 'controlvector', 'controlvector.model_hint': 'llama', 'controlvector.layer_count': '3' });
  });

  it('saving the loaded fixture gives back gguf-py\'s bytes', () => {
    const path = join(tmp, 'resaved.gguf');
    saveControlVector(path, loadControlVector(join(FIX, 'control-vector.gguf')));
    expect(readFileSync(path).equals(readFileSync(join(FIX, 'control-vector.gguf')))).toBe(true);
  });

  it('round-trips save/load exactly, sorted by layer, with metadata', () => {
    const sv = smallControlVector();
    const path = join(tmp, 'cv.gguf');
    saveControlVector(path, sv, { modelHint: 'gpt2' });
    const back = loadControlVector(path);
    expect([...back.directions.keys()]).toEqual(['blocks.1.hook_resid_post', 'blocks.2.hook_resid_post']);
    for (const [hook, v] of sv.directions) expect(Array.from(back.directions.get(hook)!)).toEqual(Array.from(v));
    expect(back.metadata).toEqual({ 'general.architecture': 'controlvector', 'controlvector.model_hint': 'gpt2', 'controlvector.layer_count': '2', method: 'pca' });
    const g = readGguf(path);
    expect(g.metadata.get('controlvector.layer_count')).toEqual({ type: GgufType.UINT32, value: 2 });
    expect([...g.tensors.keys()]).toEqual(['direction.1', 'direction.2']);
  });

  it('writes control vectors that gguf-py reads as llama.cpp expects', (ctx) => {
    if (!hasPythonGguf()) {
      console.warn('skipping: python3 with the gguf package (pip install gguf) and numpy is not available');
      ctx.skip();
    }
    const sv = smallControlVector();
    const path = join(tmp, 'cv-python.gguf');
    saveControlVector(path, sv);
    const py = readWithGgufPy(path);
    expect(py.fields['general.architecture']).toEqual({ types: [GgufType.STRING], value: 'controlvector' });
    expect(py.fields['controlvector.model_hint']).toEqual({ types: [GgufType.STRING], value: 'llama' });
    expect(py.fields['controlvector.layer_count']).toEqual({ types: [GgufType.UINT32], value: '2' });
    expect(py.tensors.map((t) => [t.name, t.type, t.ne])).toEqual([['direction.1', 0, [8]], ['direction.2', 0, [8]]]);
    expect(py.tensors[0]!.data).toEqual(Array.from(sv.directions.get('blocks.1.hook_resid_post')!));
    expect(py.tensors[1]!.data).toEqual(Array.from(sv.directions.get('blocks.2.hook_resid_post')!));
  });

  it('refuses to save hooks other than blocks.N.hook_resid_post, or mixed widths', () => {
    const path = join(tmp, 'never.gguf');
    inputError(() => saveControlVector(path, { directions: new Map([['blocks.0.hook_resid_mid', new Float32Array(4)]]), metadata: {} }), /not a blocks\.N\.hook_resid_post hook/);
    inputError(() => saveControlVector(path, { directions: new Map([['blocks.01.hook_resid_post', new Float32Array(4)]]), metadata: {} }));
    inputError(
      () => saveControlVector(path, { directions: new Map([['blocks.0.hook_resid_post', new Float32Array(4)], ['blocks.1.hook_resid_post', new Float32Array(5)]]), metadata: {} }),
      /width 5, the others 4/,
    );
    inputError(() => saveControlVector(path, { directions: new Map(), metadata: {} }), /no directions/);
  });

  it('rejects files that are not control vectors', () => {
    const write = (name: string, metadata: [string, string][], tensors: [string, number[]][]) => {
      const path = join(tmp, name);
      writeGguf(path, { metadata, tensors: tensors.map(([n, shape]) => [n, { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }]) });
      return path;
    };
    const arch: [string, string][] = [['general.architecture', 'controlvector']];
    ggufError(() => loadControlVector(write('llama.gguf', [['general.architecture', 'llama']], [['direction.1', [4]]])), /general\.architecture is "llama", not "controlvector"/);
    ggufError(() => loadControlVector(write('noarch.gguf', [], [['direction.1', [4]]])), /general\.architecture is missing/);
    ggufError(() => loadControlVector(write('x.gguf', arch, [['direction.x', [4]]])), /tensor 'direction\.x' is not named direction\.<layer>/);
    ggufError(() => loadControlVector(write('neg.gguf', arch, [['direction.-1', [4]]])), /not named direction/);
    ggufError(() => loadControlVector(write('mixed.gguf', arch, [['direction.1', [4]], ['direction.2', [5]]])), /width 5, the previous directions 4/);
    ggufError(() => loadControlVector(write('2d.gguf', arch, [['direction.1', [2, 4]]])), /shape \[2, 4\]; a direction must be 1-D/);
    ggufError(() => loadControlVector(write('empty.gguf', arch, [])), /no direction tensors/);
    const nan = join(tmp, 'nan.gguf');
    writeGguf(nan, { metadata: arch, tensors: [['direction.1', { shape: [2], data: new Float32Array([0, NaN]) }]] });
    ggufError(() => loadControlVector(nan), /non-finite/);
  });
});

describe('steering safetensors', () => {
  const sv = (): SteeringVector => ({
    directions: new Map([
      ['blocks.3.hook_resid_post', randomFloats(12, 21)],
      ['blocks.0.hook_resid_pre', randomFloats(12, 22)],
    ]),
    metadata: { method: 'mean_diff', model: 'gpt2' },
  });

  /** A safetensors file from a header object and raw data, for dtypes our writer does not write. */
  function rawSafetensors(name: string, header: Record<string, unknown>, data: Buffer): string {
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const path = join(tmp, name);
    writeFileSync(path, Buffer.concat([len, json, data]));
    return path;
  }

  it('round-trips exactly with metadata', () => {
    const path = join(tmp, 'sv.safetensors');
    const v = sv();
    saveSteeringSafetensors(path, v);
    const back = loadSteeringSafetensors(path);
    expect([...back.directions.keys()]).toEqual([...v.directions.keys()]);
    for (const [hook, d] of v.directions) expect(Array.from(back.directions.get(hook)!)).toEqual(Array.from(d));
    expect(back.metadata).toEqual(v.metadata);
  });

  it('loadSingleVector reads the one tensor of a file, F32 or F16', () => {
    const path = join(tmp, 'one.safetensors');
    const d = randomFloats(10, 5);
    writeSafetensors(path, { anything: { shape: [10], data: d } });
    expect(Array.from(loadSingleVector(path))).toEqual(Array.from(d));
    const f16 = Buffer.alloc(4);
    f16.writeUInt16LE(0x3c00, 0);  // 1.0
    f16.writeUInt16LE(0xc100, 2);  // -2.5
    const p16 = rawSafetensors('f16.safetensors', { v: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, f16);
    expect(Array.from(loadSingleVector(p16))).toEqual([1, -2.5]);
  });

  it('rejects files that are not steering vectors with ERR_STEERING_FILE_INVALID', () => {
    const twoD = join(tmp, '2d.safetensors');
    writeSafetensors(twoD, { 'blocks.0.hook_resid_post': { shape: [2, 3], data: new Float32Array(6) } });
    fileError(() => loadSteeringSafetensors(twoD), /tensor 'blocks\.0\.hook_resid_post' has shape \[2,3\]; a steering vector must be 1-D/);
    fileError(() => loadSingleVector(twoD), /must be 1-D/);
    const two = join(tmp, 'two.safetensors');
    saveSteeringSafetensors(two, sv());
    fileError(() => loadSingleVector(two), /holds 2 tensors .*exactly one/);
    const int = rawSafetensors('int.safetensors', { v: { dtype: 'I32', shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4));
    fileError(() => loadSteeringSafetensors(int), /dtype I32; a steering vector must be float/);
    fileError(() => loadSteeringSafetensors(rawSafetensors('empty.safetensors', { v: { dtype: 'F32', shape: [0], data_offsets: [0, 0] } }, Buffer.alloc(0))), /non-empty/);
    fileError(() => loadSteeringSafetensors(rawSafetensors('none.safetensors', { __metadata__: { a: 'b' } }, Buffer.alloc(0))), /holds no tensors/);
    fileError(() => loadSteeringSafetensors(rawSafetensors('short.safetensors', { v: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, Buffer.alloc(8))), /outside the 8-byte data section/);
    fileError(() => loadSteeringSafetensors(rawSafetensors('size.safetensors', { v: { dtype: 'F32', shape: [4], data_offsets: [0, 12] } }, Buffer.alloc(16))), /12 bytes of data; \[4\] F32 needs 16/);
    fileError(() => loadSteeringSafetensors(rawSafetensors('meta.safetensors', { __metadata__: { a: 1 }, v: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4))), /__metadata__\['a'\] is not a string/);
    const nan = Buffer.alloc(4);
    nan.writeFloatLE(NaN);
    fileError(() => loadSteeringSafetensors(rawSafetensors('nan.safetensors', { v: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, nan)), /non-finite/);
    const garbage = join(tmp, 'garbage.safetensors');
    writeFileSync(garbage, Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{oops')]));
    fileError(() => loadSteeringSafetensors(garbage), /not valid JSON/);
    writeFileSync(garbage, Buffer.from([255, 255, 255, 255, 255, 255, 255, 255]));
    fileError(() => loadSteeringSafetensors(garbage), /runs past the end/);
    expectCoded(() => loadSteeringSafetensors(join(tmp, 'missing.safetensors')), ModelLoadError, 'ERR_FILE_NOT_FOUND');
  });

  it('refuses to save an empty or malformed steering vector', () => {
    const path = join(tmp, 'never.safetensors');
    inputError(() => saveSteeringSafetensors(path, { directions: new Map(), metadata: {} }), /no directions/);
    inputError(() => saveSteeringSafetensors(path, { directions: new Map([['h', new Float32Array(0)]]), metadata: {} }), /non-empty Float32Array/);
    inputError(() => saveSteeringSafetensors(path, { directions: new Map([['h', new Float32Array([Infinity])]]), metadata: {} }), /non-finite/);
  });
});

describe('steering math', () => {
  const ref = readJson<{ diffs: number[][]; mean: number[]; uncentered: number[]; centered: number[] }>('pca-reference.json');
  const diffs = ref.diffs.map((r) => Float32Array.from(r));

  /** Max |a - b|, printing the worst index on failure through the expect message. */
  function maxAbs(a: Float32Array, b: readonly number[]): number {
    expect(a.length).toBe(b.length);
    return Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i]!)));
  }

  it('meanDifference is the mean row (float64 accumulation)', () => {
    expect(Array.from(meanDifference([new Float32Array([1, 0, -2]), new Float32Array([0, 1, 4]), new Float32Array([2, 2, 1])]))).toEqual([1, 1, 1]);
    // In float32, 2^24 + 1 + 1 - 2^24 would lose both ones; float64 keeps them.
    expect(Array.from(meanDifference([new Float32Array([2 ** 24]), new Float32Array([1]), new Float32Array([1]), new Float32Array([-(2 ** 24)])]))).toEqual([0.5]);
    expect(maxAbs(meanDifference(diffs), ref.mean)).toBeLessThan(1e-6);
  });

  it('firstPrincipalComponent matches numpy SVD, uncentered and centered, within 1e-5', () => {
    for (const [center, expected] of [[false, ref.uncentered], [true, ref.centered]] as const) {
      const v = firstPrincipalComponent(diffs, { center });
      const err = maxAbs(v, expected);
      expect(err, `center=${center}: worst abs error ${err}`).toBeLessThan(1e-5);
      expect(Math.hypot(...v)).toBeCloseTo(1, 6);
      const mean = meanDifference(diffs);
      expect(v.reduce((s, x, i) => s + x * mean[i]!, 0)).toBeGreaterThanOrEqual(0);
    }
    // The two conventions differ on this data (a constant offset off the dominant direction).
    expect(maxAbs(firstPrincipalComponent(diffs), ref.centered)).toBeGreaterThan(0.1);
  });

  it('firstPrincipalComponent on hand cases: one direction, sign, a wide matrix', () => {
    expect(Array.from(firstPrincipalComponent([new Float32Array([0, -3]), new Float32Array([0, -1])]))).toEqual([0, -1]);
    expect(Array.from(firstPrincipalComponent([new Float32Array([2, 0]), new Float32Array([-1, 0])]))).toEqual([1, 0]);
    const d = 4096;
    const u = randomFloats(d, 31);
    const un = Math.hypot(...u);
    const rows = Array.from({ length: 6 }, (_, i) => {
      const noise = randomFloats(d, 40 + i, 0.01);
      return Float32Array.from(u, (x, j) => ((i + 1) * x) / un + noise[j]!);
    });
    const v = firstPrincipalComponent(rows);
    expect(Math.abs(v.reduce((s, x, j) => s + (x * u[j]!) / un, 0))).toBeGreaterThan(0.999);
  });

  it('throws InvalidInputError for empty, ragged, non-finite or all-zero input', () => {
    inputError(() => meanDifference([]), /no difference vectors/);
    inputError(() => meanDifference([new Float32Array(3), new Float32Array(4)]), /row 1 has width 4, row 0 has 3/);
    inputError(() => firstPrincipalComponent([]), /no difference vectors/);
    inputError(() => firstPrincipalComponent([new Float32Array(2), new Float32Array(3)]), /width/);
    inputError(() => firstPrincipalComponent([new Float32Array([1, NaN])]), /non-finite/);
    inputError(() => firstPrincipalComponent([new Float32Array(3)]), /all zero/);
    inputError(() => firstPrincipalComponent([new Float32Array([1, 2])], { center: true }), /all zero after centering/);
    inputError(() => firstPrincipalComponent(diffs, { iterations: 0 }), /iterations/);
  });
});
