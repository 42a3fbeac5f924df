// The TypeScript safetensors reader validates as strictly as native/io/safetensors.cc: every
// malformed header is a coded error (ERR_SAFETENSORS_INVALID, or the caller's code), never a
// SyntaxError, RangeError or TypeError. Also the strict JSON parser it uses (src/io/json.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { ModelLoadError, readSafetensors } from '../src/index.js';
import { parseJsonStrict } from '../src/io/json.js';
import { readSafetensorsFile } from '../src/io/safetensors.js';

const tmp = mkdtempSync(join(tmpdir(), 'neurotap-st-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A safetensors file with `header` (an object, or raw header text/bytes) and `data`. */
function file(header: unknown, data: Buffer = Buffer.alloc(0)): string {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const path = join(tmp, `f${n++}.safetensors`);
  writeFileSync(path, Buffer.concat([len, json, data]));
  return path;
}

function expectInvalid(path: string, message: RegExp, code = 'ERR_SAFETENSORS_INVALID'): void {
  let err: unknown;
  try {
    readSafetensorsFile(path, code as 'ERR_SAFETENSORS_INVALID');
  } catch (e) {
    err = e;
  }
  expect(err, `${message}`).toBeInstanceOf(ModelLoadError);
  expect((err as ModelLoadError).code).toBe(code);
  expect((err as Error).message).toMatch(message);
}

const f32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

describe('readSafetensors validates the header before reading', () => {
  it('reads every dtype, zero-sized tensors and the metadata', () => {
    const data = Buffer.alloc(8 + 4 + 3 + 4);
    data.writeBigInt64LE(-5n, 0);
    data.writeInt16LE(-300, 8);
    data.writeInt16LE(7, 10);
    data.writeInt8(-2, 12);
    data.writeUInt8(200, 13);
    data.writeUInt8(1, 14);
    data.writeFloatLE(1.5, 15);
    const path = file({
      __metadata__: { format: 'pt' },
      a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] },
      b: { dtype: 'I16', shape: [2], data_offsets: [8, 12] },
      c: { dtype: 'I8', shape: [1], data_offsets: [12, 13] },
      d: { dtype: 'U8', shape: [1], data_offsets: [13, 14] },
      e: { dtype: 'BOOL', shape: [1], data_offsets: [14, 15] },
      f: f32([1, 1], 15, 19),
      empty: f32([0, 3], 19, 19),
    }, data);
    const { tensors, metadata } = readSafetensorsFile(path);
    expect(metadata).toEqual({ format: 'pt' });
    expect(Array.from(tensors.get('a')!.data as BigInt64Array)).toEqual([-5n]);
    expect(Array.from(tensors.get('b')!.data as Int32Array)).toEqual([-300, 7]);
    expect([tensors.get('c')!.data[0], tensors.get('d')!.data[0], tensors.get('e')!.data[0]]).toEqual([-2, 200, 1]);
    expect(tensors.get('f')).toEqual({ dtype: 'F32', shape: [1, 1], data: new Float32Array([1.5]) });
    expect(tensors.get('empty')!.data.length).toBe(0);
  });

  it('refuses bad lengths, encodings, JSON and header shapes', () => {
    const short = join(tmp, 'short.safetensors');
    writeFileSync(short, Buffer.alloc(5));
    expectInvalid(short, /too short/);
    const past = Buffer.alloc(16);
    past.writeBigUInt64LE(2n ** 64n - 1n);
    writeFileSync(short, past);
    expectInvalid(short, /header length 18446744073709551615 runs past the end/);
    expectInvalid(file(Buffer.from([0x7b, 0xff, 0x7d])), /not valid UTF-8/);
    expectInvalid(file('{"a": '), /not valid JSON/);
    expectInvalid(file('{"a": NaN}'), /not valid JSON/);
    expectInvalid(file(`${'['.repeat(200)}${']'.repeat(200)}`), /nesting too deep/);
    expectInvalid(file(`{"a":${JSON.stringify(f32([1], 0, 4))},"a":${JSON.stringify(f32([1], 4, 8))}}`, Buffer.alloc(8)), /key "a" appears twice/);
    expectInvalid(file('[]'), /not a JSON object/);
    expectInvalid(file({ __metadata__: ['x'] }), /__metadata__ is not an object/);
    expectInvalid(file({ __metadata__: { n: 5 } }), /__metadata__\['n'\] is not a string/);
    expectInvalid(file({ a: null }), /tensor 'a' entry is not an object/);
    expectInvalid(file({ a: [] }), /tensor 'a' entry is not an object/);
  });

  it('refuses bad dtypes, shapes, offsets, sizes and overlaps', () => {
    const data = Buffer.alloc(32);
    expectInvalid(file({ a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, data), /unknown dtype "F8_E4M3"/);
    expectInvalid(file({ a: { dtype: null, shape: [1], data_offsets: [0, 4] } }, data), /unknown dtype null/);
    expectInvalid(file({ a: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } }, data), /unknown dtype/);
    for (const shape of [null, 'x', [-1], [1.5], ['4'], [null], [2 ** 53]]) expectInvalid(file({ a: { ...f32([1], 0, 4), shape } }, data), /shape .* non-negative integers/);
    for (const off of [null, [0], [4, 0], [-4, 0], [0.5, 4.5], ['0', 4], [0, 4, 8]]) expectInvalid(file({ a: { ...f32([1], 0, 4), data_offsets: off } }, data), /invalid data_offsets/);
    expectInvalid(file({ a: f32([16], 0, 64) }, data), /data_offsets \[0,64\] outside the 32-byte data section/);
    expectInvalid(file({ a: f32([2, 3], 0, 16) }, data), /has 16 bytes of data; \[2, 3\] F32 needs 24/);
    expectInvalid(file({ a: f32([2 ** 30, 2 ** 30, 2 ** 30], 0, 16) }, data), /needs more/);
    expectInvalid(file({ a: f32([4], 0, 16), b: f32([4], 8, 24) }, data), /tensors 'a' and 'b' overlap/);
    // Empty tensors may share an offset with anything.
    expect(readSafetensors(file({ a: f32([4], 0, 16), b: f32([0], 8, 8) }, data)).size).toBe(2);
  });

  it('reports a malformed file with the caller\'s code and an unreadable one as a file error', () => {
    expectInvalid(file('{oops'), /SAE weights|safetensors file .*not valid JSON/, 'ERR_SAE_INVALID');
    expectInvalid(file({ a: f32([4], 0, 16), b: f32([4], 8, 24) }, Buffer.alloc(32)), /overlap/, 'ERR_STEERING_FILE_INVALID');
    expect(() => readSafetensors(join(tmp, 'missing.safetensors'))).toThrow(expect.objectContaining({ code: 'ERR_FILE_NOT_FOUND' }));
    expect(() => readSafetensors(tmp)).toThrow(expect.objectContaining({ code: 'ERR_FILE_READ' }));
  });
});

describe('parseJsonStrict', () => {
  const fail = (why: string) => new Error(why);
  it('parses RFC 8259 JSON as JSON.parse does', () => {
    for (const text of ['{"a":[1,-2.5e3,true,false,null,"x\\u00e9\\n\\"\\\\\\/"]}', ' [ ] ', '0', '"\\ud83d\\ude00"', '{"__proto__": 1, "b": {}}'])
      expect(parseJsonStrict(text, fail)).toEqual(JSON.parse(text));
    expect(Object.getPrototypeOf(parseJsonStrict('{"__proto__": {"x": 1}}', fail))).toBe(Object.prototype);
  });
  it('refuses what JSON.parse refuses, duplicate keys and deep nesting', () => {
    for (const text of ['', '{', '{"a" 1}', '{"a":1,}', '[1,]', '01', '1.', '.5', '+1', '"\\x"', '"a\nb"', "'a'", 'nul', '1 2', '{"a":1,"a":1}', '['.repeat(130) + ']'.repeat(130), 'NaN'])
      expect(() => parseJsonStrict(text, fail), text).toThrow();
    expect(parseJsonStrict('['.repeat(129) + ']'.repeat(129), fail)).toBeTruthy();  // depth 128 below the root, as native
  });
  it('reads NaN and Infinity when asked (Python\'s json writes them)', () => {
    expect(parseJsonStrict('[NaN, Infinity, -Infinity]', fail, { nonFinite: true })).toEqual([NaN, Infinity, -Infinity]);
  });
});
