// The TypeScript API: loading, hook names and globs, captures into preallocated buffers,
// text input, logits options, disposal, and the event loop staying free during a forward.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ActivationCache, DisposedError, loadModel, Tensor, type Model } from '../src/index.js';
import { fixtureDir, writeRandomGpt2 } from './helpers.js';

describe('Model API', () => {
  let gpt2: Model;
  let llama: Model;
  beforeAll(async () => {
    gpt2 = await loadModel(fixtureDir('gpt2'), { threads: 2 });
    llama = await loadModel(fixtureDir('llama-gqa'), { threads: 1 });
  });
  afterAll(() => {
    gpt2.dispose();
    llama.dispose();
  });

  it('exposes the normalized config and the hook table', () => {
    expect(gpt2.config.family).toBe('gpt2');
    expect(gpt2.config.nLayers).toBe(2);
    expect(gpt2.threads).toBe(2);
    expect(gpt2.hookNames[0]).toBe('hook_embed');
    expect(gpt2.hookNames).toContain('hook_pos_embed');
    expect(gpt2.hookNames).not.toContain('blocks.0.attn.hook_rot_q');
    expect(llama.hookNames).toContain('blocks.1.attn.hook_rot_k');
    expect(llama.hookNames).toContain('blocks.1.mlp.hook_pre_linear');
    expect(llama.hookNames).not.toContain('hook_pos_embed');
    expect(llama.hookShape('blocks.0.attn.hook_k', 3, 5)).toEqual([3, 5, llama.config.nKvHeads, llama.config.dHead]);
    expect(llama.hookShape('blocks.0.attn.hook_pattern', 3, 5)).toEqual([3, llama.config.nHeads, 5, 5]);
    expect(llama.hookShape('ln_final.hook_scale', 3, 5)).toEqual([3, 5, 1]);
  });

  it('captures by glob, in model order, with shapes from the hook table', async () => {
    const r = await gpt2.run([[1, 2, 3, 4]], { capture: ['blocks.*.hook_resid_post', 'hook_embed'] });
    expect([...r.cache.keys()]).toEqual(['hook_embed', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']);
    expect(r.cache).toBeInstanceOf(ActivationCache);
    const t = r.cache.get('blocks.1.hook_resid_post');
    expect(t).toBeInstanceOf(Tensor);
    expect(t.shape).toEqual([1, 4, gpt2.config.dModel]);
    expect(r.logits!.shape).toEqual([1, 4, gpt2.config.dVocab]);
    expect(() => r.cache.get('blocks.0.hook_resid_pre')).toThrow(/not captured/);
  });

  it('writes captures and logits into caller-provided buffers', async () => {
    const out = new Float32Array(2 * 3 * gpt2.config.dModel);
    const logits = new Float32Array(2 * 3 * gpt2.config.dVocab);
    const tokens = [[5, 6, 7], [8, 9, 10]];
    const r = await gpt2.run(tokens, { capture: ['blocks.0.hook_mlp_out'], outputs: { 'blocks.0.hook_mlp_out': out }, logitsOutput: logits });
    expect(r.cache.get('blocks.0.hook_mlp_out').data).toBe(out);
    expect(r.logits!.data).toBe(logits);
    const fresh = await gpt2.run(tokens, { capture: ['blocks.0.hook_mlp_out'] });
    expect(Array.from(out)).toEqual(Array.from(fresh.cache.get('blocks.0.hook_mlp_out').data));
    expect(Array.from(logits)).toEqual(Array.from(fresh.logits!.data));
    // A preallocated output alone is enough to capture its hook.
    const implicit = await gpt2.run(tokens, { outputs: { 'blocks.0.hook_mlp_out': out } });
    expect([...implicit.cache.keys()]).toEqual(['blocks.0.hook_mlp_out']);
  });

  it("returnLogits: 'last' computes only the last position's logits", async () => {
    const tokens = [[1, 2, 3], [4, 5, 6]];
    const all = await gpt2.run(tokens);
    const last = await gpt2.run(tokens, { returnLogits: 'last' });
    const V = gpt2.config.dVocab;
    expect(last.logits!.shape).toEqual([2, V]);
    for (let b = 0; b < 2; b++)
      expect(Array.from(last.logits!.data.subarray(b * V, (b + 1) * V))).toEqual(Array.from(all.logits!.data.subarray((b * 3 + 2) * V, (b * 3 + 3) * V)));
  });

  it('skips the LM head when logits are not wanted', async () => {
    const r = await gpt2.run([[1, 2]], { returnLogits: false, capture: ['ln_final.hook_normalized'] });
    expect(r.logits).toBeNull();
    expect(r.cache.get('ln_final.hook_normalized').shape).toEqual([1, 2, gpt2.config.dModel]);
  });

  it('stopAtLayer runs only the first blocks (exclusive, as TransformerLens)', async () => {
    const tokens = [[1, 2, 3, 4]];
    const full = await gpt2.run(tokens, { capture: ['blocks.0.hook_resid_post', 'blocks.0.attn.hook_pattern'] });
    const part = await gpt2.run(tokens, { stopAtLayer: 1, capture: ['blocks.0.hook_resid_post', 'blocks.0.attn.hook_pattern'] });
    expect(part.logits).toBeNull();
    expect(Array.from(part.cache.get('blocks.0.hook_resid_post').data)).toEqual(Array.from(full.cache.get('blocks.0.hook_resid_post').data));
    await expect(gpt2.run(tokens, { stopAtLayer: 1, capture: ['blocks.1.hook_resid_pre'] })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT', message: expect.stringMatching(/not reached/) });
    await expect(gpt2.run(tokens, { stopAtLayer: 1, returnLogits: true })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await expect(gpt2.run(tokens, { stopAtLayer: 9 })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    expect((await gpt2.run(tokens, { stopAtLayer: 2 })).logits).not.toBeNull();
  });

  it('batches: each row equals the same sequence run alone', async () => {
    const a = [3, 1, 4, 1, 5];
    const b = [9, 2, 6, 5, 3];
    const both = await llama.run([a, b]);
    const alone = await llama.run([b]);
    const V = llama.config.dVocab;
    expect(Array.from(both.logits!.data.subarray(5 * V))).toEqual(Array.from(alone.logits!.data));
  });

  it('accepts text when the model has a tokenizer', async () => {
    const text = 'The model reads this sentence.';
    const ids = gpt2.tokenize(text)[0]!;
    expect(ids.length).toBeGreaterThan(0);
    const fromText = await gpt2.run(text);
    const fromIds = await gpt2.run([ids]);
    expect(fromText.tokens).toEqual([ids]);
    expect(Array.from(fromText.logits!.data)).toEqual(Array.from(fromIds.logits!.data));
    expect(gpt2.tokenizer!.decode(ids)).toBe(text);
    expect(llama.tokenizer).toBeNull();
  });

  it('disposes: later runs throw DisposedError, Symbol.asyncDispose works', async () => {
    const m = await loadModel(fixtureDir('qwen2'), { threads: 1 });
    {
      await using scoped = m;
      await scoped.run([[1, 2]]);
    }
    expect(m.disposed).toBe(true);
    await expect(m.run([[1, 2]])).rejects.toBeInstanceOf(DisposedError);
    await expect(m.run([[1, 2]])).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });

  it('finishes a run that was in flight when dispose() was called', async () => {
    const m = await loadModel(fixtureDir('gpt2'), { threads: 1 });
    const pending = m.run([[1, 2, 3]]);
    m.dispose();
    const r = await pending;
    expect(r.logits!.data.every(Number.isFinite)).toBe(true);
  });
});

describe('event loop', () => {
  const dir = mkdtempSync(join(tmpdir(), 'neurotap-big-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps firing timers during a long forward', async () => {
    await writeRandomGpt2(dir, { layers: 4, d: 256, heads: 4, vocab: 2048, ctx: 512 });
    const model = await loadModel(dir, { threads: 1 });
    try {
      const tokens = Array.from({ length: 2 }, (_, b) => Array.from({ length: 512 }, (_, i) => (i * 31 + b * 7) % 2048));
      let ticks = 0;
      const timer = setInterval(() => ticks++, 2);
      const t0 = performance.now();
      const run = model.run(tokens, { capture: ['blocks.*.attn.hook_pattern'] });
      const ticksAtStart = ticks;
      await run;
      const ms = performance.now() - t0;
      clearInterval(timer);
      // The forward takes hundreds of ms on one thread; a blocked loop would tick 0 times.
      expect(ms).toBeGreaterThan(20);
      expect(ticks - ticksAtStart).toBeGreaterThanOrEqual(3);
    } finally {
      model.dispose();
    }
  });
});
