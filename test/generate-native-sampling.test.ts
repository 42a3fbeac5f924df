// Sampling in the engine (native/engine/sampling.cc) against the TypeScript sampler
// (src/generate/sampling.ts): for a seed, generate yields token for token what the former JS loop
// (logits copied every step, sampleToken) yields, over greedy, temperature, top-k and top-p,
// batches whose rows finish at different steps, and crafted logits with ties, signed zeros and
// -Infinity; hooks at unembed.hook_out act before the draw; bad settings are coded errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, Rng, sampleToken, type GenerateOptions, type HookFunction, type Model } from '../src/index.js';
import { fixtureDir } from './helpers.js';

type Settings = Pick<GenerateOptions, 'temperature' | 'topK' | 'topP'>;

// The generation loop as it ran before sampling moved into the engine: every step's last-position
// logits come to JS and sampleToken draws from them, row by row, skipping finished rows.
async function jsGenerate(model: Model, prompts: number[][], opts: Settings & { maxNewTokens: number; seed: number; stopTokens?: number[]; hooks?: GenerateOptions['hooks'] }) {
  const rng = new Rng(opts.seed);
  const B = prompts.length;
  const P = Math.max(...prompts.map((p) => p.length));
  const pad = prompts.map((p) => P - p.length);
  const padded = Int32Array.from(prompts.flatMap((p, b) => [...Array<number>(pad[b]!).fill(p[0]!), ...p]));
  const V = model.config.dVocab;
  const cache = model.createCache(B, P + opts.maxNewTokens);
  const common = { capture: [], ...(opts.hooks ? { hooks: opts.hooks as Record<string, never> } : {}), maxPositions: P + opts.maxNewTokens, logits: 'last' as const, cache };
  const stop = new Set(opts.stopTokens ?? []);
  const newTokens: number[][] = prompts.map(() => []);
  const finished = prompts.map(() => false);
  let out = await model.forward({ ...common, tokens: padded, batch: B, pos: P, pad: Int32Array.from(pad) });
  for (let step = 0; step < opts.maxNewTokens; step++) {
    const chosen = prompts.map((p, b) => {
      if (finished[b]) return newTokens[b]!.at(-1)!;
      const t = sampleToken(out.logits!.data.subarray(b * V, (b + 1) * V), opts, rng);
      newTokens[b]!.push(t);
      if (stop.has(t) || newTokens[b]!.length >= opts.maxNewTokens) finished[b] = true;
      return t;
    });
    if (finished.every(Boolean)) break;
    out = await model.forward({ ...common, tokens: Int32Array.from(chosen), batch: B, pos: 1 });
  }
  return newTokens;
}

const SETTINGS: Settings[] = [
  { temperature: 0 },
  { temperature: 0.7 },
  { temperature: 1.5, topK: 5 },
  { temperature: 1, topP: 0.9 },
  { temperature: 2, topK: 50, topP: 0.8 },
  { temperature: 1, topK: 1 },
  { temperature: 0.3, topP: 0.3 },
  { temperature: 1.2, topK: 384 },
  { temperature: 1.2, topK: 5000, topP: 0.999 },
];

describe('sampling in the engine', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 2 });
  });
  afterAll(() => model.dispose());

  const prompts = [
    [1, 2, 3],
    [5, 6, 7, 8, 9],
    [40, 41],
  ];
  // 40 of the 384 ids stop a row, so rows finish at different steps and later draws skip them.
  const stopTokens = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 384);

  it('draws, seed by seed, the tokens the TypeScript sampler draws', async () => {
    let compared = 0;
    let stoppedEarly = 0;
    for (const s of SETTINGS)
      for (let seed = 0; seed < 12; seed++) {
        const opts = { ...s, seed: seed * 7919 + 3, maxNewTokens: 10, stopTokens };
        const engine = await model.generate(prompts, opts);
        const js = await jsGenerate(model, prompts, opts);
        expect(engine.newTokens, `${JSON.stringify(s)} seed ${opts.seed}`).toEqual(js);
        compared += js.flat().length;
        stoppedEarly += engine.stopReasons.filter((r) => r === 'stop').length;
      }
    expect(compared).toBeGreaterThan(1000);
    expect(stoppedEarly).toBeGreaterThan(20);  // the skip of finished rows was exercised
  });

  it('returns each step\'s logits only when asked, and they are what was drawn from', async () => {
    const opts = { temperature: 1.3, topK: 40, topP: 0.95, seed: 99, maxNewTokens: 6 };
    const plain = model.generateStream(prompts, opts);
    for (let r = await plain.next(); !r.done; r = await plain.next()) expect(r.value.logits).toBeUndefined();
    const withLogits = model.generateStream(prompts, { ...opts, logits: true });
    const rng = new Rng(opts.seed);
    const V = model.config.dVocab;
    const tokens: number[][] = prompts.map(() => []);
    for (let r = await withLogits.next(); !r.done; r = await withLogits.next()) {
      const logits = r.value.logits!;
      expect(logits.shape).toEqual([prompts.length, V]);
      for (let b = 0; b < prompts.length; b++) {
        const t = sampleToken(logits.data.subarray(b * V, (b + 1) * V), opts, rng);
        expect(r.value.tokens[b]).toBe(t);
        tokens[b]!.push(t);
      }
    }
    expect((await model.generate(prompts, opts)).newTokens).toEqual(tokens);
  });

  it('orders ties, signed zeros and -Infinity as the TypeScript sort', async () => {
    const values = [2, 1, 1, 0, -0, -1, -Infinity];
    // The hook overwrites every logit with one of a few values, from a stream reset per generation.
    const crafted = (): HookFunction => {
      let x = 12345;
      return (act) => {
        for (let i = 0; i < act.data.length; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          act.data[i] = values[x % values.length]!;
        }
      };
    };
    for (const s of SETTINGS)
      for (let seed = 0; seed < 4; seed++) {
        const opts = { ...s, seed, maxNewTokens: 5 };
        const engine = await model.generate(prompts, { ...opts, hooks: { 'unembed.hook_out': crafted() } });
        const js = await jsGenerate(model, prompts, { ...opts, hooks: { 'unembed.hook_out': crafted() } });
        expect(engine.newTokens, `${JSON.stringify(s)} seed ${seed}`).toEqual(js);
      }
  });

  it('samples after the edits at unembed.hook_out', async () => {
    const V = model.config.dVocab;
    const favour = new Float32Array(V).fill(-5);
    favour[7] = 5;
    const r = await model.generate(prompts, { maxNewTokens: 4, hooks: { 'unembed.hook_out': edits.set(favour) } });
    expect(r.newTokens).toEqual(prompts.map(() => [7, 7, 7, 7]));
  });

  it('refuses bad settings with coded errors and stays usable', async () => {
    const run = (sample: object, logits: 'last' | 'all' | 'none' = 'none') =>
      model.forward({ tokens: Int32Array.of(1, 2), batch: 1, pos: 2, capture: [], logits, maxPositions: 2, sample: sample as never });
    await expect(run({ temperature: -1 })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(run({ temperature: Number.NaN })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(run({ temperature: 1, topP: 0, rng: new Uint32Array(4) })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(run({ temperature: 1, topK: 1.5, rng: new Uint32Array(4) })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(run({ temperature: 1 })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT', message: expect.stringMatching(/random state/) });
    await expect(run({ temperature: 1, rng: new Uint32Array(3) })).rejects.toMatchObject({ code: 'ERR_BUFFER_SIZE' });
    await expect(run({ rows: new Uint8Array(2) })).rejects.toMatchObject({ code: 'ERR_BUFFER_SIZE' });
    await expect(run({ temperature: 'hot' })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(run({}, 'all')).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT', message: expect.stringMatching(/last position/) });
    await expect(model.generate([[1]], { maxNewTokens: 2, logits: 'yes' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    const ok = await run({ temperature: 1, rng: new Rng(5).state.slice() });
    expect(ok.sampled!.length).toBe(1);
    expect(ok.logits).toBeNull();
  });

  it('advances the random state by one draw per sampled row', async () => {
    const ref = new Rng(2024);
    const state = new Rng(2024).state.slice();
    const out = await model.forward({
      tokens: Int32Array.of(1, 2, 3, 4, 5, 6),
      batch: 3,
      pos: 2,
      capture: [],
      logits: 'last',
      maxPositions: 2,
      sample: { temperature: 1, rng: state, rows: Uint8Array.of(1, 0, 1) },
    });
    const V = model.config.dVocab;
    expect(out.sampled![0]).toBe(sampleToken(out.logits!.data.subarray(0, V), { temperature: 1 }, ref));
    expect(out.sampled![1]).toBe(-1);
    expect(out.sampled![2]).toBe(sampleToken(out.logits!.data.subarray(2 * V, 3 * V), { temperature: 1 }, ref));
    expect(Array.from(state)).toEqual(Array.from(ref.state));
  });
});
