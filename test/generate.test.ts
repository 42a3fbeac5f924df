// Generation: greedy output equals HF `generate` (with and without a steering vector), a
// left-padded batch yields exactly what each prompt yields alone, seeded sampling reproduces,
// streaming, stop tokens, per-step captures and AbortSignal.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, InvalidInputError, loadModel, readSafetensors, type Model } from '../src/index.js';
import { compare, fixtureDir, ROOT } from './helpers.js';

interface GenRef {
  prompts: number[][];
  max_new_tokens: number;
  greedy: number[][];
  padded_batch_equal: boolean;
  steer?: { hook: string; scale: number; vector: number[]; greedy: number[][] };
}

const REF_PATH = join(ROOT, 'test', 'fixtures', 'interventions', 'generate.json');
const refs = existsSync(REF_PATH) ? (JSON.parse(readFileSync(REF_PATH, 'utf8')) as Record<string, GenRef>) : {};

describe('generation against HF generate', () => {
  it('has reference fixtures', () => expect(Object.keys(refs).length).toBeGreaterThanOrEqual(5));
  for (const [name, ref] of Object.entries(refs)) {
    it(`${name}: greedy tokens equal HF, alone and left-padded in one batch`, async () => {
      const model = await loadModel(fixtureDir(name), { threads: 2 });
      try {
        const alone = [];
        for (const p of ref.prompts) alone.push((await model.generate([p], { maxNewTokens: ref.max_new_tokens })).tokens[0]);
        expect(alone).toEqual(ref.greedy);
        const batched = await model.generate(ref.prompts, { maxNewTokens: ref.max_new_tokens });
        expect(batched.tokens).toEqual(ref.greedy);
        expect(batched.pad).toEqual(ref.prompts.map((p) => Math.max(...ref.prompts.map((q) => q.length)) - p.length));
        if (ref.steer) {
          const steered = [];
          const hooks = { [ref.steer.hook]: edits.add(ref.steer.vector, { scale: ref.steer.scale }) };
          for (const p of ref.prompts) steered.push((await model.generate([p], { maxNewTokens: ref.max_new_tokens, hooks })).tokens[0]);
          expect(steered).toEqual(ref.steer.greedy);
          expect((await model.generate(ref.prompts, { maxNewTokens: ref.max_new_tokens, hooks })).tokens).toEqual(ref.steer.greedy);
        }
      } finally {
        model.dispose();
      }
    });
  }

  it('per-step logits of the KV-cache path match HF at 1e-5', async () => {
    const steps = readSafetensors(join(ROOT, 'test', 'fixtures', 'interventions', 'generate.safetensors'));
    for (const [name, ref] of Object.entries(refs)) {
      const expected = steps.get(`${name}.step_logits`)!;
      const model = await loadModel(fixtureDir(name), { threads: 2 });
      try {
        const V = model.config.dVocab;
        const got = new Float32Array(ref.max_new_tokens * V);
        let i = 0;
        // Re-run the forwards generation runs and read their last-position logits.
        const cache = model.createCache(1, ref.prompts[0]!.length + ref.max_new_tokens);
        let next = Int32Array.from(ref.prompts[0]!);
        for (let s = 0; s < ref.max_new_tokens; s++) {
          const out = await model.forward({ tokens: next, batch: 1, pos: next.length, cache, capture: [], logits: 'last', maxPositions: 64 });
          got.set(out.logits!.data, i * V);
          i++;
          next = Int32Array.of(ref.greedy[0]![ref.prompts[0]!.length + s]!);
        }
        const c = compare(got, expected.data as Float32Array, 1e-5);
        expect(c.relError, `${name}: ${c.firstMismatches.join('; ')}`).toBeLessThanOrEqual(1e-5);
      } finally {
        model.dispose();
      }
    }
  });
});

describe('generation behaviour', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 2 });
  });
  afterAll(() => model.dispose());

  it('seeded sampling reproduces, and different seeds differ', async () => {
    const opts = { maxNewTokens: 12, temperature: 1.5, topK: 50, topP: 0.95 };
    const a = await model.generate([[1, 2, 3]], { ...opts, seed: 7 });
    const b = await model.generate([[1, 2, 3]], { ...opts, seed: 7 });
    const c = await model.generate([[1, 2, 3]], { ...opts, seed: 8 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
  });

  it('streams one step at a time and returns the result', async () => {
    const it = model.generateStream('The cat', { maxNewTokens: 4 });
    const seen: number[] = [];
    let r = await it.next();
    while (!r.done) {
      seen.push(r.value.tokens[0]!);
      r = await it.next();
    }
    const whole = await model.generate('The cat', { maxNewTokens: 4 });
    expect(seen).toEqual(whole.newTokens[0]);
    expect(r.value.text![0]).toBe(whole.text![0]);
    expect(whole.text![0]!.startsWith('The cat')).toBe(true);
  });

  it('stops a sequence at a stop token and keeps it', async () => {
    const free = await model.generate([[5, 6, 7]], { maxNewTokens: 8 });
    const stopAt = free.newTokens[0]![2]!;
    const first = free.newTokens[0]!.indexOf(stopAt);
    const stopped = await model.generate([[5, 6, 7], [9, 9]], { maxNewTokens: 8, stopTokens: [stopAt] });
    expect(stopped.newTokens[0]).toEqual(free.newTokens[0]!.slice(0, first + 1));
    expect(stopped.stopReasons[0]).toBe('stop');
  });

  it('captures every step: the prompt forward, then one position per step', async () => {
    const r = await model.generate([[1, 2], [3, 4, 5]], { maxNewTokens: 3, capture: ['blocks.1.hook_resid_post', 'blocks.0.attn.hook_pattern'] });
    expect(r.steps.length).toBe(3);
    const d = model.config.dModel;
    expect(r.steps[0]!.get('blocks.1.hook_resid_post').shape).toEqual([2, 3, d]);
    expect(r.steps[1]!.get('blocks.1.hook_resid_post').shape).toEqual([2, 1, d]);
    expect(r.steps[2]!.get('blocks.0.attn.hook_pattern').shape).toEqual([2, model.config.nHeads, 1, 5]);
    // Step captures equal a plain run over the full sequence at that position.
    const full = await model.run([r.tokens[1]!.slice(0, 4)], { capture: ['blocks.1.hook_resid_post'] });
    const row = full.cache.get('blocks.1.hook_resid_post').data.subarray(3 * d, 4 * d);
    const step = r.steps[1]!.get('blocks.1.hook_resid_post').data.subarray(d, 2 * d);
    expect(compare(step, row, 1e-5).relError).toBeLessThanOrEqual(1e-5);
  });

  it("edits with positions: 'generated' leave the prompt alone", async () => {
    const v = new Float32Array(model.config.dModel).fill(3);
    const prompt = [[4, 8, 15, 16]];
    const plain = await model.generate(prompt, { maxNewTokens: 3, capture: ['blocks.0.hook_resid_post'] });
    const steered = await model.generate(prompt, { maxNewTokens: 3, capture: ['blocks.0.hook_resid_post'], hooks: { 'blocks.0.hook_resid_post': edits.add(v, { positions: 'generated' }) } });
    expect(Array.from(steered.steps[0]!.get('blocks.0.hook_resid_post').data)).toEqual(Array.from(plain.steps[0]!.get('blocks.0.hook_resid_post').data));
    const a = plain.steps[1]!.get('blocks.0.hook_resid_post').data;
    const b = steered.steps[1]!.get('blocks.0.hook_resid_post').data;
    expect(b[0]! - a[0]!).toBeCloseTo(3, 4);
    // 'prompt' is the complement: the prompt forward changes, the first generated position does not.
    const promptOnly = await model.generate(prompt, { maxNewTokens: 2, capture: ['blocks.0.hook_resid_post'], hooks: { 'blocks.0.hook_resid_post': edits.add(v, { positions: 'prompt' }) } });
    const p0 = plain.steps[0]!.get('blocks.0.hook_resid_post').data;
    expect(promptOnly.steps[0]!.get('blocks.0.hook_resid_post').data[0]! - p0[0]!).toBeCloseTo(3, 4);
    const plain1 = await model.run([[...prompt[0]!, promptOnly.newTokens[0]![0]!]], { capture: ['blocks.0.hook_resid_post'], hooks: { 'blocks.0.hook_resid_post': edits.add(v, { positions: [0, 1, 2, 3] }) } });
    const d = model.config.dModel;
    const gen1 = promptOnly.steps[1]!.get('blocks.0.hook_resid_post').data;
    const ref1 = plain1.cache.get('blocks.0.hook_resid_post').data.subarray(4 * d, 5 * d);
    expect(compare(gen1, ref1, 1e-5).relError).toBeLessThanOrEqual(1e-5);
  });

  it('aborts between steps with the signal reason', async () => {
    const ctl = new AbortController();
    const it = model.generateStream([[1, 2, 3]], { maxNewTokens: 10, signal: ctl.signal });
    await it.next();
    ctl.abort(new Error('stop now'));
    await expect(it.next()).rejects.toThrow('stop now');
    await expect(model.generate([[1]], { maxNewTokens: 2, signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect((await model.generate([[1, 2]], { maxNewTokens: 2 })).newTokens[0]!.length).toBe(2);
  });

  it('rejects bad options before any compute', async () => {
    await expect(model.generate([[1]], { maxNewTokens: 0 })).rejects.toBeInstanceOf(InvalidInputError);
    await expect(model.generate([[1]], { maxNewTokens: 2, temperature: -1 })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(model.generate([[1]], { maxNewTokens: 2, topP: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(model.generate([[1]], { maxNewTokens: 100 })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT', message: expect.stringMatching(/learned positions/) });
  });
});
