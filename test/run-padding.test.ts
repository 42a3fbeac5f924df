// run() over rows of different lengths: left and right padding give each row's real positions
// exactly what running that row alone gives (captures, per-position logits, 'last' logits, edits),
// on families with learned positions, rotary (full and partial), sliding windows and soft-capping.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, InvalidInputError, loadModel, loss, lossPerToken, type Model, type Tensor } from '../src/index.js';
import { compare, fixtureDir } from './helpers.js';

// Rows run alone and rows run in a padded batch differ only in the GEMMs' row blocking.
const TOL = 1e-5;
const FAMILIES = ['gpt2', 'llama-gqa', 'gemma2', 'pythia-parallel'];
const LENGTHS = [5, 9, 1, 7];

function rowsFor(model: Model, seed: number): number[][] {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) >>> 0) % model.config.dVocab);
  return LENGTHS.map((n) => Array.from({ length: n }, next));
}

/** Row b of a [batch, pos, ...] tensor, positions [from, from + n). */
function rowSlice(t: Tensor, b: number, from: number, n: number): Float32Array {
  const inner = t.shape.slice(2).reduce((a, c) => a * c, 1);
  const start = (b * t.shape[1]! + from) * inner;
  return t.data.subarray(start, start + n * inner);
}

/** Row b of a [batch, head, q, k] pattern: queries and keys [from, from + n), as [head, n, n]. */
function patternSlice(t: Tensor, b: number, from: number, n: number): Float32Array {
  const [, H, Q, K] = t.shape as [number, number, number, number];
  const out = new Float32Array(H * n * n);
  for (let h = 0; h < H; h++)
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) out[(h * n + i) * n + j] = t.data[((b * H + h) * Q + from + i) * K + from + j]!;
  return out;
}

function expectClose(ours: Float32Array, ref: Float32Array, what: string): void {
  const c = compare(ours, ref, TOL);
  expect(c.relError, `${what}: ${c.firstMismatches.join('; ')}`).toBeLessThanOrEqual(TOL);
}

describe.each(FAMILIES)('run() with padding: %s', (family) => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir(family), { threads: 2 });
  });
  afterAll(() => model.dispose());

  const capture = ['blocks.*.hook_resid_post', 'blocks.0.attn.hook_pattern', 'ln_final.hook_normalized'];

  it.each(['left', 'right'] as const)('%s padding matches each row run alone', async (padding) => {
    const rows = rowsFor(model, 7);
    const T = Math.max(...LENGTHS);
    const batch = await model.run(rows, { capture, padding, padId: 3 });
    expect(batch.pad).toEqual(LENGTHS.map((n) => T - n));
    batch.tokens.forEach((r, b) => {
      const from = padding === 'left' ? batch.pad[b]! : 0;
      expect(r.length).toBe(T);
      expect(r.slice(from, from + LENGTHS[b]!)).toEqual(rows[b]);
      expect(r.filter((_, p) => p < from || p >= from + LENGTHS[b]!).every((t) => t === 3)).toBe(true);
    });
    for (let b = 0; b < rows.length; b++) {
      const n = LENGTHS[b]!;
      const from = padding === 'left' ? batch.pad[b]! : 0;
      const alone = await model.run([rows[b]!], { capture });
      for (const name of alone.cache.keys()) {
        const t = batch.cache.get(name);
        if (name.endsWith('hook_pattern')) expectClose(patternSlice(t, b, from, n), alone.cache.get(name).data, `${name} row ${b}`);
        else expectClose(rowSlice(t, b, from, n), alone.cache.get(name).data, `${name} row ${b}`);
      }
      expectClose(rowSlice(batch.logits!, b, from, n), alone.logits!.data, `logits row ${b}`);
    }
  });

  it.each(['left', 'right'] as const)("returnLogits 'last' reads each row's last real token (%s)", async (padding) => {
    const rows = rowsFor(model, 11);
    const V = model.config.dVocab;
    const last = await model.run(rows, { padding, returnLogits: 'last' });
    expect(last.logits!.shape).toEqual([rows.length, V]);
    for (let b = 0; b < rows.length; b++) {
      const alone = await model.run([rows[b]!], { returnLogits: 'last' });
      expectClose(last.logits!.data.subarray(b * V, (b + 1) * V), alone.logits!.data, `row ${b}`);
    }
  });

  it('edits name real positions under either padding', async () => {
    const rows = rowsFor(model, 5);
    const hook = 'blocks.0.hook_resid_post';
    const hooks = { [hook]: [edits.scale(3, { positions: [0] }), edits.zero({ positions: [4] })] };
    for (const padding of ['left', 'right'] as const) {
      const batch = await model.run(rows, { padding, hooks, capture: ['blocks.1.hook_resid_post'] });
      for (let b = 0; b < rows.length; b++) {
        const from = padding === 'left' ? batch.pad[b]! : 0;
        const alone = await model.run([rows[b]!], { hooks: { [hook]: [edits.scale(3, { positions: [0] }), ...(LENGTHS[b]! > 4 ? [edits.zero({ positions: [4] })] : [])] }, capture: ['blocks.1.hook_resid_post'] });
        expectClose(rowSlice(batch.cache.get('blocks.1.hook_resid_post'), b, from, LENGTHS[b]!), alone.cache.get('blocks.1.hook_resid_post').data, `${padding} row ${b}`);
        expectClose(rowSlice(batch.logits!, b, from, LENGTHS[b]!), alone.logits!.data, `${padding} logits row ${b}`);
      }
    }
  });
});

describe('run() padding: options and errors', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
  });
  afterAll(() => model.dispose());

  it.each(['left', 'right'] as const)('loss helpers read the padding of a %s-padded result', async (padding) => {
    const rows = [[5, 9, 2, 7, 1, 3], [8, 4], [6, 6, 1, 2]];
    const r = await model.run(rows, { padding });
    expect(r.padding).toBe(padding);
    const per = lossPerToken(r);
    const T = r.tokens[0]!.length;
    let sum = 0;
    let n = 0;
    for (let b = 0; b < rows.length; b++) {
      const alone = lossPerToken(await model.run([rows[b]!])).data;
      const from = padding === 'left' ? r.pad[b]! : 0;
      expectClose(per.data.subarray(b * (T - 1) + from, b * (T - 1) + from + alone.length), alone, `row ${b}`);
      for (const v of alone) sum += v;
      n += alone.length;
    }
    expect(Math.abs(loss(r) - sum / n)).toBeLessThanOrEqual(1e-5 * (sum / n));
  });

  it('equal rows are not padded', async () => {
    const r = await model.run([[1, 2, 3], [4, 5, 6]]);
    expect(r.pad).toEqual([0, 0]);
    expect(r.tokens).toEqual([[1, 2, 3], [4, 5, 6]]);
  });

  it("texts of different lengths run padded (left by default)", async () => {
    if (!model.tokenizer) throw new Error('the gpt2 fixture has a tokenizer.json');
    const texts = ['Hello', 'Hello there, how are you'];
    const ids = model.tokenize(texts);
    const r = await model.run(texts);
    expect(r.pad).toEqual([ids[1]!.length - ids[0]!.length, 0]);
    expect(r.tokens[0]!.slice(r.pad[0])).toEqual(ids[0]);
  });

  it("refuses a positions 'last' edit with right padding, and bad padding options", async () => {
    const rows = [[1, 2, 3], [4, 5]];
    await expect(model.run(rows, { padding: 'right', hooks: { 'blocks.0.hook_resid_post': edits.zero({ positions: 'last' }) } })).rejects.toThrow(/positions 'last'.*padding 'right'/);
    // Left padding keeps every row's last token at the last position: allowed.
    await expect(model.run(rows, { hooks: { 'blocks.0.hook_resid_post': edits.zero({ positions: 'last' }) } })).resolves.toBeTruthy();
    await expect(model.run(rows, { padding: 'middle' as 'left' })).rejects.toThrow(InvalidInputError);
    await expect(model.run(rows, { padId: model.config.dVocab })).rejects.toThrow(/padId/);
    await expect(model.run(rows, { padId: -1 })).rejects.toThrow(/padId/);
    const ok = await model.run(rows, { padding: 'right' });
    expect(ok.pad).toEqual([0, 1]);
  });
});
