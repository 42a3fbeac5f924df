// Shared test helpers: fixture paths and comparisons with the tolerance policy of
// test/fixtures/README.md (relative error = max |ours - ref| / max |ref|).
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { edits, type Edit, type Tensor } from '../src/index.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = join(ROOT, 'test', 'fixtures', 'models');

export function fixtureDir(name: string): string {
  return join(FIXTURES, name);
}

export function fixtureNames(): string[] {
  return readdirSync(FIXTURES, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}

export interface Comparison {
  relError: number;
  maxAbsError: number;
  worst: number;
  firstMismatches: string[];
}

/**
 * Compares `ours` with `ref`: -inf must match -inf exactly (masked scores), every other value
 * is compared relative to the largest finite |ref|.
 */
export function compare(ours: Float32Array, ref: Float32Array, tol: number): Comparison {
  if (ours.length !== ref.length) throw new Error(`length ${ours.length} vs reference ${ref.length}`);
  let scale = 0;
  for (const v of ref) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  scale = Math.max(scale, 1e-30);
  let maxAbs = 0;
  let worst = -1;
  const firstMismatches: string[] = [];
  for (let i = 0; i < ref.length; i++) {
    const a = ours[i]!;
    const b = ref[i]!;
    let err: number;
    if (!Number.isFinite(b) || !Number.isFinite(a)) err = Object.is(a, b) ? 0 : Infinity;
    else err = Math.abs(a - b);
    if (err > maxAbs || Number.isNaN(err)) {
      maxAbs = Number.isNaN(err) ? Infinity : err;
      worst = i;
    }
    if (err / scale > tol && firstMismatches.length < 5) firstMismatches.push(`[${i}] ours ${a} ref ${b}`);
  }
  return { relError: maxAbs / scale, maxAbsError: maxAbs, worst, firstMismatches };
}

/** Deterministic pseudo-random floats in [-scale, scale) (mulberry32). */
export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/**
 * Writes a random GPT-2 checkpoint (HF names, Conv1D layouts) into `dir`, for tests that need
 * a model bigger than the fixtures (timing the event loop) or a checkpoint to corrupt.
 */
export async function writeRandomGpt2(dir: string, opts: { layers: number; d: number; heads: number; vocab: number; ctx: number }): Promise<void> {
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const { writeSafetensors } = await import('../src/io/safetensors.js');
  mkdirSync(dir, { recursive: true });
  const { layers, d, heads, vocab, ctx } = opts;
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', n_layer: layers, n_embd: d, n_head: heads, vocab_size: vocab, n_positions: ctx }),
  );
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  let seed = 1;
  const add = (name: string, shape: number[], scale: number) =>
    tensors.set(name, { shape, data: randomFloats(shape.reduce((a, b) => a * b, 1), seed++, scale) });
  add('wte.weight', [vocab, d], 1);
  add('wpe.weight', [ctx, d], 1);
  const w = 1 / Math.sqrt(d);
  for (let l = 0; l < layers; l++) {
    const p = `h.${l}.`;
    add(p + 'ln_1.weight', [d], 1);
    add(p + 'ln_1.bias', [d], 0.1);
    add(p + 'attn.c_attn.weight', [d, 3 * d], w);
    add(p + 'attn.c_attn.bias', [3 * d], 0.1);
    add(p + 'attn.c_proj.weight', [d, d], w);
    add(p + 'attn.c_proj.bias', [d], 0.1);
    add(p + 'ln_2.weight', [d], 1);
    add(p + 'ln_2.bias', [d], 0.1);
    add(p + 'mlp.c_fc.weight', [d, 4 * d], w);
    add(p + 'mlp.c_fc.bias', [4 * d], 0.1);
    add(p + 'mlp.c_proj.weight', [4 * d, d], w / 2);
    add(p + 'mlp.c_proj.bias', [d], 0.1);
  }
  add('ln_f.weight', [d], 1);
  add('ln_f.bias', [d], 0.1);
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
}

/** One edit as test/fixtures/generate_interventions.py records it. */
export interface RefEdit {
  hook: string;
  op: Edit['op'];
  vector?: number[];
  scale?: number;
  value?: number[];
  mean?: number[];
  direction?: number[];
  factor?: number;
  min?: number | null;
  max?: number | null;
  positions?: 'all' | 'last' | number[];
  rows?: number[];
  heads?: number[];
}
/** One reference case: edits and, for patching, the source run's ids. */
export interface RefCase {
  name: string;
  edits: RefEdit[];
  source_ids?: number[][];
}

/** The neurotap edit for a recorded one (`source`: the patch source activation). */
export function toEdit(e: RefEdit, source?: Tensor): Edit {
  const sel = { ...(e.positions ? { positions: e.positions } : {}), ...(e.rows ? { rows: e.rows } : {}), ...(e.heads ? { heads: e.heads } : {}) };
  switch (e.op) {
    case 'add':
      return edits.add(e.vector!, { ...sel, ...(e.scale !== undefined ? { scale: e.scale } : {}) });
    case 'set':
      return edits.set(e.value!, sel);
    case 'zero':
      return edits.zero(sel);
    case 'meanAblate':
      return edits.meanAblate(e.mean!, sel);
    case 'scale':
      return edits.scale(e.factor!, sel);
    case 'projectOut':
      return edits.projectOut(e.direction!, sel);
    case 'projectionCap':
      return edits.projectionCap(e.direction!, { ...sel, min: e.min ?? null, max: e.max ?? null });
    case 'patch':
      return edits.patch(source!, sel);
  }
}
