// Seeded mutations of the committed SAE fixtures (test/fixtures/sae): bit flips, truncations,
// safetensors header-length and header-JSON edits, cfg.json field deletions and type changes,
// zip / .npy header edits of params.npz. Every loadSae outcome is an SAE or a coded SAE error;
// an SAE that loads also attaches and runs or fails with a coded error.
// NEUROTAP_SAE_FUZZ_CASES (default 400) and NEUROTAP_SAE_FUZZ_SEED (default 13) widen the search.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, loadSae, NeurotapError, type Model } from '../src/index.js';
import { ROOT } from './helpers.js';

const SAE_DIR = join(ROOT, 'test', 'fixtures', 'sae');
const CASES = Number(process.env.NEUROTAP_SAE_FUZZ_CASES ?? 400);
const SEED = Number(process.env.NEUROTAP_SAE_FUZZ_SEED ?? 13);
const LOAD_CODES = new Set(['ERR_SAE_INVALID', 'ERR_UNSUPPORTED_SAE']);
const ATTACH_CODES = new Set(['ERR_SAE_MISMATCH', 'ERR_UNKNOWN_HOOK', 'ERR_INVALID_INPUT']);

interface FixtureCase { model: string; hook: string; format: string }
const fixtures = JSON.parse(readFileSync(join(SAE_DIR, 'cases.json'), 'utf8')).cases as Record<string, FixtureCase>;

/** mulberry32: a small seeded generator, [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!;

const WEIRD: unknown[] = [null, -1, 0, 1, 1.5, 1e300, 2 ** 53, 'x', '', true, false, [], {}, [1, 2], 'topk', 'layer_norm', 'hook_z', 'standard', { k: 3 }];

function flipBits(b: Buffer, r: Rand, lo = 0, hi = b.length): Buffer {
  const out = Buffer.from(b);
  for (let i = 0, n = 1 + int(r, 4); i < n && hi > lo; i++) out[lo + int(r, hi - lo)]! ^= 1 << int(r, 8);
  return out;
}

const truncate = (b: Buffer, r: Rand) => b.subarray(0, int(r, b.length));

/** A random key path of a JSON object: [key] or [key, subkey] for nested objects. */
function keyPath(o: Record<string, unknown>, r: Rand): string[] {
  const k = pick(r, Object.keys(o));
  const v = o[k];
  if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length && r() < 0.5) return [k, ...keyPath(v as Record<string, unknown>, r)];
  return [k];
}

function mutateJsonValue(o: Record<string, unknown>, r: Rand, remove: boolean): void {
  const path = keyPath(o, r);
  let parent = o;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string, unknown>;
  const last = path[path.length - 1]!;
  if (remove) delete parent[last];
  else parent[last] = structuredClone(pick(r, WEIRD));
}

function mutateCfg(text: string, r: Rand): { kind: string; bytes: Buffer } {
  const bytes = Buffer.from(text);
  const kind = pick(r, ['cfg-bits', 'cfg-truncate', 'cfg-delete', 'cfg-retype', 'cfg-retype']);
  if (kind === 'cfg-bits') return { kind, bytes: flipBits(bytes, r) };
  if (kind === 'cfg-truncate') return { kind, bytes: truncate(bytes, r) };
  const o = JSON.parse(text) as Record<string, unknown>;
  mutateJsonValue(o, r, kind === 'cfg-delete');
  return { kind, bytes: Buffer.from(JSON.stringify(o)) };
}

/** Edits one entry of a safetensors header (or the header text) and rebuilds the file. */
function mutateHeader(file: Buffer, r: Rand): Buffer {
  const n = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, Record<string, unknown>>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const name = pick(r, names);
  const e = header[name]!;
  let text: string | undefined;
  switch (int(r, 9)) {
    case 0: e.dtype = pick(r, ['F32', 'F16', 'BF16', 'F64', 'I32', 'I64', 'I8', 'U8', 'BOOL', 'F8_E4M3', '', null, 5]); break;
    case 1: (e.shape as unknown[])[int(r, (e.shape as unknown[]).length)] = pick(r, [-1, null, 1.5, '4', 1e20, 2 ** 53, 0, 65, 255]); break;
    case 2: e.shape = pick(r, [null, [], [1], [64, 256, 1], 'x', [[64]]]); break;
    case 3: {
      const [b, en] = e.data_offsets as [number, number];
      e.data_offsets = pick(r, [[en, b], [b - 4, en - 4], [b + 4, en + 4], [b, en + 2 ** 40], [b, 2 ** 60], null, [b], [String(b), en], [-8, en], [b + 0.5, en]]);
      break;
    }
    case 4: header[name] = pick(r, [null, [], 'x', 7, {}]) as Record<string, unknown>; break;
    case 5: delete header[name]; break;
    case 6: (header as Record<string, unknown>).__metadata__ = pick(r, [{ a: 1 }, null, 'x', [], { a: 'b' }, { a: { b: 'c' } }]); break;
    case 7: text = JSON.stringify(header).replace('{', `{"${name}":${JSON.stringify(e)},`); break;  // duplicate key
    default: text = `${'['.repeat(1000 + int(r, 100000))}`; break;  // deep nesting
  }
  const json = Buffer.from(text ?? JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, file.subarray(8 + n)]);
}

function mutateWeights(file: Buffer, r: Rand): { kind: string; bytes: Buffer } {
  const n = Number(file.readBigUInt64LE(0));
  const kind = pick(r, ['st-bits', 'st-header-bits', 'st-truncate', 'st-length', 'st-header', 'st-header']);
  if (kind === 'st-bits') return { kind, bytes: flipBits(file, r) };
  if (kind === 'st-header-bits') return { kind, bytes: flipBits(file, r, 0, 8 + n) };
  if (kind === 'st-truncate') return { kind, bytes: truncate(file, r) };
  if (kind === 'st-length') {
    const b = Buffer.from(file);
    const v = pick(r, [0n, 1n, BigInt(n - 1), BigInt(n + 1), BigInt(n + 8), BigInt(file.length), 2n ** 63n, 2n ** 64n - 1n, BigInt(int(r, 2 ** 31))]);
    b.writeBigUInt64LE(v);
    return { kind, bytes: b };
  }
  return { kind, bytes: mutateHeader(file, r) };
}

function mutateNpz(file: Buffer, r: Rand): { kind: string; bytes: Buffer } {
  const kind = pick(r, ['npz-bits', 'npz-truncate', 'npz-field', 'npz-field', 'npz-npy-header', 'npz-npy-header']);
  if (kind === 'npz-bits') return { kind, bytes: flipBits(file, r) };
  if (kind === 'npz-truncate') return { kind, bytes: truncate(file, r) };
  const b = Buffer.from(file);
  if (kind === 'npz-field') {
    // A field of a zip record: end of central directory, a central directory entry or a local header.
    const sigs = [0x06054b50, 0x02014b50, 0x04034b50];
    const starts: number[] = [];
    for (let i = 0; i + 4 <= b.length; i++) if (sigs.includes(b.readUInt32LE(i))) starts.push(i);
    const at = pick(r, starts) + 4 + 2 * int(r, 20);
    if (at + 4 <= b.length) {
      const v = pick(r, [0, 1, 0xffff, 0xffffffff, 8, 12, int(r, b.length), int(r, 2 ** 32)]);
      if (r() < 0.5) b.writeUInt16LE(v & 0xffff, at);
      else b.writeUInt32LE(v >>> 0, at);
    }
    return { kind, bytes: b };
  }
  // The text of one .npy header: dtype, order or shape.
  const text = b.toString('latin1');
  const heads: number[] = [];
  for (let i = text.indexOf("{'descr'"); i >= 0; i = text.indexOf("{'descr'", i + 1)) heads.push(i);
  const at = pick(r, heads);
  const end = text.indexOf('}', at) + 1;
  const head = text.slice(at, end);
  const edits: [RegExp, string[]][] = [
    [/'<f4'/, ["'<f8'", "'<i4'", "'>f4'", "'|u1'", "'<f2'", "'<c8'", "'O'  "]],
    [/False/, ['True ', 'Fals ']],
    [/\(\d+, \d+\)|\(\d+,\)/, ['(64, 512)', '(0,)', '()', '(-1,)', '(99999999999,)', '(64,,)', '(2, 2, 2)', '(512, 64)', '(65,)']],
  ];
  const [re, subs] = pick(r, edits);
  const changed = head.replace(re, pick(r, subs));
  const out = Buffer.from(text.slice(0, at) + changed + text.slice(end), 'latin1');
  return { kind, bytes: out };
}

describe('loadSae on mutated SAE files', () => {
  let tmp: string;
  const models = new Map<string, Model>();
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'neurotap-sae-fuzz-'));
    for (const f of Object.values(fixtures)) if (!models.has(f.model)) models.set(f.model, await loadModel(join(ROOT, f.model), { threads: 1 }));
  });
  afterAll(() => {
    for (const m of models.values()) m.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it(`${CASES} seeded mutations (seed ${SEED}): each loads, or fails with ERR_SAE_INVALID / ERR_UNSUPPORTED_SAE`, async () => {
    const r = rng(SEED);
    const names = Object.keys(fixtures).sort();
    const outcomes = new Map<string, number>();
    const failures: string[] = [];
    const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    for (let c = 0; c < CASES; c++) {
      const name = pick(r, names);
      const f = fixtures[name]!;
      const src = join(SAE_DIR, name);
      const dir = join(tmp, `case-${c}`);
      mkdirSync(dir);
      for (const file of readdirSync(src)) copyFileSync(join(src, file), join(dir, file));
      let m: { kind: string; bytes: Buffer };
      let target: string;
      if (f.format === 'gemma-scope-npz') {
        target = 'params.npz';
        m = mutateNpz(readFileSync(join(src, target)), r);
      } else if (r() < 0.4) {
        target = 'cfg.json';
        m = mutateCfg(readFileSync(join(src, target), 'utf8'), r);
      } else {
        target = 'sae_weights.safetensors';
        m = mutateWeights(readFileSync(join(src, target)), r);
      }
      writeFileSync(join(dir, target), m.bytes);
      const what = `case ${c} (${name}, ${m.kind})`;
      const hookOption = f.format === 'gemma-scope-npz' ? { hook: f.hook } : {};
      let sae;
      try {
        sae = await loadSae(dir, hookOption);
      } catch (err) {
        const code = err instanceof NeurotapError ? err.code : undefined;
        if (code && LOAD_CODES.has(code)) count(`${m.kind}: ${code}`);
        else failures.push(`${what}: loadSae threw ${(err as Error)?.constructor?.name} ${code ?? ''} ${(err as Error)?.message ?? String(err)}`);
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      count(`${m.kind}: loaded`);
      const model = models.get(f.model)!;
      try {
        const a = await model.attachSae(sae, { useErrorTerm: true });
        try {
          await model.run([[1, 2, 3]], { capture: [a.hooks.hook_sae_acts_post] });
        } finally {
          await model.detachSae(a.hook);
        }
      } catch (err) {
        const code = err instanceof NeurotapError ? err.code : undefined;
        if (!code || !ATTACH_CODES.has(code)) failures.push(`${what}: attach/run threw ${(err as Error)?.constructor?.name} ${code ?? ''} ${(err as Error)?.message ?? String(err)}`);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    console.log(`SAE fuzz, ${CASES} cases, seed ${SEED}:\n  ${[...outcomes].sort().map(([k, v]) => `${k} x${v}`).join('\n  ')}`);
    expect(failures.slice(0, 20), `${failures.length} of ${CASES} cases ended badly`).toEqual([]);
    // The models still run after every case.
    for (const model of models.values()) expect((await model.run([[1, 2, 3]], {})).logits!.data.every(Number.isFinite)).toBe(true);
  });
});
