// Continuous batching (src/serve/batcher.ts): every request's tokens and step logits equal
// Model.generate run on it alone (itself checked against HF in generate.test.ts), whatever else
// shares its forwards: mixed steering, prompt lengths and sampling settings, requests arriving
// mid-generation, a cache small enough that rows must wait and the cache must move. Also the
// native cache row operations it rests on, and their coded errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, type Model, type NeurotapError } from '../src/index.js';
import { Batcher, logprobsOf, type BatchRequest, type BatchResult } from '../src/serve/batcher.js';
import { fixtureDir, randomFloats } from './helpers.js';

// Logits of the same forward math with other rows in the batch: the GEMMs' row panels and the
// attention rows sum in the same order, so they agree to f32 rounding at most.
const TOL = 1e-5;

function prompt(len: number, seed: number, vocab: number): number[] {
  return Array.from({ length: len }, (_, i) => (seed * 7919 + i * 104729) % vocab);
}

async function alone(model: Model, req: BatchRequest): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  const opts = {
    maxNewTokens: req.maxNewTokens,
    logits: true,
    ...(req.hooks ? { hooks: req.hooks as never } : {}),
    ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
    ...(req.topK !== undefined ? { topK: req.topK } : {}),
    ...(req.topP !== undefined ? { topP: req.topP } : {}),
    ...(req.seed !== undefined ? { seed: req.seed } : {}),
    ...(req.stopTokens ? { stopTokens: req.stopTokens } : {}),
  };
  for await (const step of model.generateStream([[...req.prompt]], opts)) {
    tokens.push(step.tokens[0]!); // one row: every step is a new token
    logits.push(step.logits!.data.slice());
  }
  return { tokens, logits };
}

function expectSame(label: string, got: BatchResult, want: { tokens: number[]; logits: Float32Array[] }): void {
  expect(got.tokens.map((t) => t.token), label).toEqual(want.tokens);
  got.tokens.forEach((t, i) => {
    let worst = 0;
    const w = want.logits[i]!;
    for (let j = 0; j < w.length; j++) worst = Math.max(worst, Math.abs(t.logits![j]! - w[j]!));
    expect(worst, `${label} step ${i}`).toBeLessThanOrEqual(TOL);
  });
}

for (const name of ['gpt2', 'llama-gqa']) {
  describe(`continuous batching (${name})`, () => {
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(fixtureDir(name), { threads: 2 });
    });
    afterAll(() => model.dispose());

    it('each request equals running it alone: mixed steering, lengths, sampling and arrival times', async () => {
      const V = model.config.dVocab;
      const d = model.config.dModel;
      const steer = (seed: number, scale: number) => ({ 'blocks.0.hook_resid_post': edits.add(randomFloats(d, seed), { scale }) });
      const reqs: BatchRequest[] = [
        { prompt: prompt(5, 1, V), maxNewTokens: 9, returnLogits: true },
        { prompt: prompt(12, 2, V), maxNewTokens: 6, returnLogits: true, hooks: steer(3, 2) },
        { prompt: prompt(3, 4, V), maxNewTokens: 11, returnLogits: true, hooks: steer(5, -1.5), temperature: 0.8, topP: 0.9, seed: 11 },
        { prompt: prompt(20, 6, V), maxNewTokens: 4, returnLogits: true, hooks: { 'blocks.1.attn.hook_z': edits.zero({ heads: [1] }) } },
        { prompt: prompt(7, 7, V), maxNewTokens: 8, returnLogits: true, temperature: 1.3, topK: 20, seed: 5, hooks: steer(8, 1) },
        { prompt: prompt(2, 9, V), maxNewTokens: 12, returnLogits: true, hooks: steer(10, 0.5) },
      ];
      const expected: Awaited<ReturnType<typeof alone>>[] = [];
      for (const r of reqs) expected.push(await alone(model, r));

      const batcher = new Batcher(model, { maxBatch: 4, capacity: 40 });
      // Three now; the rest join once the first has produced tokens (mid-generation).
      let started!: () => void;
      const midway = new Promise<void>((resolve) => (started = resolve));
      const first = batcher.submit({ ...reqs[0]!, onToken: () => (batcher.stats.generatedTokens >= 6 ? started() : undefined) });
      const results: Promise<BatchResult>[] = [first, batcher.submit(reqs[1]!), batcher.submit(reqs[2]!)];
      await midway;
      results.push(...reqs.slice(3).map((r) => batcher.submit(r)));
      const got = await Promise.all(results);
      got.forEach((g, i) => expectSame(`request ${i}`, g, expected[i]!));
      // Rows joined mid-run and shared steps, and prompts shared forwards.
      expect(batcher.stats.steps).toBeLessThan(batcher.stats.rowSteps);
      expect(batcher.stats.prefills).toBeLessThan(batcher.stats.prompts);
      expect(batcher.active).toBe(0);
      await batcher.close();
    });

    it('a small cache makes requests wait and moves the cache; results are unchanged', async () => {
      const V = model.config.dVocab;
      const reqs: BatchRequest[] = [10, 3, 8, 14, 1, 6].map((len, i) => ({ prompt: prompt(len, 20 + i, V), maxNewTokens: 16 - len, returnLogits: true }));
      const expected: Awaited<ReturnType<typeof alone>>[] = [];
      for (const r of reqs) expected.push(await alone(model, r));
      const batcher = new Batcher(model, { maxBatch: 3, capacity: 16 });
      const got = await Promise.all(reqs.map((r) => batcher.submit(r)));
      got.forEach((g, i) => expectSame(`request ${i}`, g, expected[i]!));
      await batcher.close();
    });

    it('stop tokens, logprobs and aborts', async () => {
      const V = model.config.dVocab;
      const base = { prompt: prompt(6, 40, V), maxNewTokens: 8, returnLogits: true };
      const ref = await alone(model, base);
      const batcher = new Batcher(model, { maxBatch: 2, capacity: 32 });
      const stop = ref.tokens[2]!;
      const firstStop = ref.tokens.indexOf(stop);
      const stopped = await batcher.submit({ ...base, stopTokens: [stop], logprobs: 3 });
      expect(stopped.stopReason).toBe('stop');
      expect(stopped.tokens.map((t) => t.token)).toEqual(ref.tokens.slice(0, firstStop + 1));
      const lp = logprobsOf(ref.logits[0]!, ref.tokens[0]!, 3);
      expect(stopped.tokens[0]!.logprob).toBeCloseTo(lp.logprob, 5);
      expect(stopped.tokens[0]!.top!.map((t) => t.token)[0]).toBe(ref.tokens[0]); // greedy: the top token
      const controller = new AbortController();
      const aborted = batcher.submit({ ...base, maxNewTokens: 20, signal: controller.signal, onToken: () => controller.abort(new Error('client went away')) });
      const other = batcher.submit(base);
      await expect(aborted).rejects.toThrow('client went away');
      expectSame('the request beside an aborted one', await other, ref);
      await batcher.close();
    });
  });
}

describe('KV cache row operations', () => {
  it('refuse bad rows, moves and foreign caches with coded errors; the model stays usable', async () => {
    const model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
    const other = await loadModel(fixtureDir('gpt2'), { threads: 1 });
    try {
      const h = model.nativeHandle();
      const cache = model.createCache(2, 8);
      const one = model.createCache(1, 4);
      const code = async (f: () => Promise<unknown>) => {
        try {
          await f();
          return 'no error';
        } catch (e) {
          return (e as NeurotapError).code ?? String(e);
        }
      };
      expect(await code(() => h.shiftCache(cache, 9))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.shiftCache(cache, -1))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.shiftCache(cache, 0.5))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.admitToCache(cache, 2, null))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.admitToCache(cache, -1, null))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.admitToCache(cache, 0, cache))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.admitToCache(cache, 0, other.createCache(1, 4)))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.admitToCache(cache, 0, model.createCache(2, 4), 2))).toBe('ERR_INVALID_INPUT'); // no source row 2
      expect(await code(() => h.admitToCache(cache, 0, model.createCache(2, 4), 0.5))).toBe('ERR_INVALID_INPUT');
      expect(await code(() => h.admitToCache({} as never, 0, null))).toBe('ERR_INVALID_INPUT');
      await model.forward({ tokens: Int32Array.from([1, 2, 3]), batch: 1, pos: 3, cache: one, capture: [], logits: 'none', maxPositions: 4 });
      expect(await code(() => h.admitToCache(cache, 0, one))).toBe('ERR_INVALID_INPUT'); // 3 positions before position 0
      await h.shiftCache(cache, 5);
      expect([cache.length, cache.pads]).toEqual([5, [5, 5]]);
      await h.admitToCache(cache, 1, one);
      expect(cache.pads).toEqual([5, 2]);
      await h.shiftCache(cache, -2);
      expect([cache.length, cache.pads]).toEqual([3, [3, 0]]);
      expect((await model.run([[1, 2]])).logits!.shape).toEqual([1, 2, model.config.dVocab]);
      // The one-edit-for-all-rows form the batcher uses: checked like any edit.
      const d = model.config.dModel;
      const index = model.hookIndex('blocks.0.hook_resid_post')!;
      const perRow = (rows: number[], n: number, op = 'add') => () =>
        model.forward({ tokens: Int32Array.from([1, 2, 3]), batch: 3, pos: 1, capture: [], logits: 'none', maxPositions: 4, actions: [{ kind: 'edit', index, op, vector: new Float32Array(n), rows: Int32Array.from(rows), perRow: true } as never] });
      expect(await code(perRow([0, 2], 2 * d))).toBe('no error');
      expect(await code(perRow([0, 2], d))).toBe('ERR_INVALID_INPUT');
      expect(await code(perRow([1, 1], 2 * d))).toBe('ERR_INVALID_INPUT');
      expect(await code(perRow([0], d, 'projectOut'))).toBe('ERR_INVALID_INPUT');
      expect(await code(perRow([], 0))).toBe('ERR_INVALID_INPUT');
    } finally {
      model.dispose();
      other.dispose();
    }
  });
});
