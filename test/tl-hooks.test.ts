// TransformerLens's optional hooks (hook_attn_in, hook_q/k/v_input, attn.hook_result,
// hook_mlp_in, unembed.hook_in/out) and LayerNorm's hook_normalized, when edited: each flows on
// the way TransformerLens defines it, checked by identities between runs of the same model.
// Their captured values are checked against HF references in test/fidelity.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, readSafetensors, type Model, type Tensor } from '../src/index.js';
import { compare, fixtureDir } from './helpers.js';

const TOL = 1e-5;  // float32: another summation order (per-head GEMMs, sum over heads) than the fused path

function fixtureTokens(name: string): number[][] {
  const ids = readSafetensors(`${fixtureDir(name)}/reference.safetensors`).get('input_ids')!;
  const [B, T] = ids.shape as [number, number];
  return Array.from({ length: B }, (_, b) => Array.from(ids.data as Int32Array).slice(b * T, (b + 1) * T).map(Number));
}

/** One head of a [batch, pos, head, width] activation, as [batch * pos, width] rows. */
function head(t: Tensor, h: number): Float32Array {
  const [B, P, H, W] = t.shape as [number, number, number, number];
  const out = new Float32Array(B * P * W);
  for (let r = 0; r < B * P; r++) out.set(t.data.subarray((r * H + h) * W, (r * H + h + 1) * W), r * W);
  return out;
}

function expectClose(ours: Float32Array, ref: Float32Array, label: string, tol = TOL): void {
  const c = compare(ours, ref, tol);
  expect(c.relError, `${label}: rel error ${c.relError.toExponential(2)}; ${c.firstMismatches.join('; ')}`).toBeLessThanOrEqual(tol);
}

function bytesEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** A seeded O(1) vector. */
function vector(n: number, seed: number): Float32Array {
  const v = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    v[i] = (s / 2147483648) * 2 - 1;
  }
  return v;
}

const FIXTURES = ['gpt2', 'llama-gqa', 'pythia-parallel', 'gemma2'] as const;
const models = new Map<string, Model>();
beforeAll(async () => {
  for (const name of FIXTURES) models.set(name, await loadModel(fixtureDir(name), { threads: 2 }));
});
afterAll(() => models.forEach((m) => m.dispose()));

describe('hook list', () => {
  it('has the split inputs, hook_result, hook_mlp_in and unembed hooks; hook_attn_in only without grouped queries', () => {
    const gpt2 = models.get('gpt2')!, llama = models.get('llama-gqa')!, pythia = models.get('pythia-parallel')!;
    const c = gpt2.config, l = llama.config;
    expect(gpt2.hookShape('blocks.0.hook_attn_in', 2, 3, 3)).toEqual([2, 3, c.nHeads, c.dModel]);
    expect(gpt2.hookShape('blocks.0.attn.hook_result', 2, 3, 3)).toEqual([2, 3, c.nHeads, c.dModel]);
    expect(gpt2.hookShape('unembed.hook_out', 2, 3, 3)).toEqual([2, 3, c.dVocab]);
    expect(llama.hookShape('blocks.1.hook_k_input', 2, 3, 3)).toEqual([2, 3, l.nKvHeads, l.dModel]);
    expect(llama.hookShape('blocks.1.hook_q_input', 2, 3, 3)).toEqual([2, 3, l.nHeads, l.dModel]);
    expect(llama.hookNames).not.toContain('blocks.0.hook_attn_in');
    expect(pythia.hookNames).toContain('blocks.0.hook_mlp_in');
    expect(pythia.hookNames).not.toContain('blocks.0.hook_resid_mid');
    // TransformerLens's order within a block and after the last one.
    const names = gpt2.hookNames as readonly string[];
    const at = (n: string) => names.indexOf(n);
    expect(at('blocks.0.hook_resid_pre')).toBeLessThan(at('blocks.0.hook_attn_in'));
    expect(at('blocks.0.hook_v_input')).toBeLessThan(at('blocks.0.ln1.hook_scale'));
    expect(at('blocks.0.attn.hook_z')).toBeLessThan(at('blocks.0.attn.hook_result'));
    expect(at('blocks.0.hook_resid_mid')).toBeLessThan(at('blocks.0.hook_mlp_in'));
    expect(names.slice(-2)).toEqual(['unembed.hook_in', 'unembed.hook_out']);
  });
});

for (const name of FIXTURES) {
  describe(`TransformerLens hooks flow on: ${name}`, () => {
    const tokens = fixtureTokens(name);
    const m = () => models.get(name)!;
    const flowing = () => {
      const names = m().hookNames as readonly string[];
      return ['blocks.1.hook_attn_in', 'blocks.1.hook_q_input', 'blocks.1.hook_k_input', 'blocks.1.hook_v_input', 'blocks.1.attn.hook_result',
        'blocks.1.hook_mlp_in', 'unembed.hook_in', 'unembed.hook_out'].filter((h) => names.includes(h));
    };

    it('capturing them keeps the fused path: the same logits, bit for bit', async () => {
      const plain = await m().run(tokens);
      const captured = await m().run(tokens, { capture: flowing() });
      expect(bytesEqual(captured.logits!.data, plain.logits!.data)).toBe(true);
    });

    it('a JS function at each of them (so the values flow through) gives the plain logits', async () => {
      const plain = await m().run(tokens);
      for (const hook of flowing()) {
        const r = await m().run(tokens, { hooks: { [hook]: () => {} } });
        expectClose(r.logits!.data, plain.logits!.data, hook);
      }
      const all = await m().run(tokens, { hooks: Object.fromEntries(flowing().map((h) => [h, () => {}])) });
      expectClose(all.logits!.data, plain.logits!.data, 'all at once');
    });

    it("zeroing a head's attn.hook_result equals zeroing its attn.hook_z", async () => {
      const viaResult = await m().run(tokens, { hooks: { 'blocks.1.attn.hook_result': edits.zero({ heads: [1] }) } });
      const viaZ = await m().run(tokens, { hooks: { 'blocks.1.attn.hook_z': edits.zero({ heads: [1] }) } });
      const plain = await m().run(tokens);
      expectClose(viaResult.logits!.data, viaZ.logits!.data, 'logits');
      expect(compare(viaResult.logits!.data, plain.logits!.data, TOL).relError).toBeGreaterThan(1e-3);
    });

    it('hook_result sums over heads to hook_attn_out less a bias that is the same at every position', async (ctx) => {
      if ((m().hookNames as readonly string[]).includes('blocks.0.ln1_post.hook_scale')) {
        console.warn(`skipping ${name}: hook_attn_out is after ln1_post here, so it is not the sum of the results`);
        return ctx.skip();
      }
      const r = await m().run(tokens, { capture: ['blocks.0.attn.hook_result', 'blocks.0.hook_attn_out'] });
      const result = r.cache.get('blocks.0.attn.hook_result'), out = r.cache.get('blocks.0.hook_attn_out').data;
      const [B, P, H, d] = result.shape as [number, number, number, number];
      expect(H).toBe(m().config.nHeads);
      // out - sum over heads = b_O at every position (0 without a bias).
      const bias = new Float32Array(B * P * d);
      for (let row = 0; row < B * P; row++)
        for (let i = 0; i < d; i++) {
          let sum = 0;
          for (let h = 0; h < H; h++) sum += result.data[(row * H + h) * d + i]!;
          bias[row * d + i] = out[row * d + i]! - sum;
        }
      const scale = out.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      for (let row = 1; row < B * P; row++)
        for (let i = 0; i < d; i++) expect(Math.abs(bias[row * d + i]! - bias[i]!) / scale).toBeLessThan(TOL);
      // Zeroing every head leaves that bias (relative to attn_out's scale: b_O may be 0).
      const zeroed = (await m().run(tokens, { hooks: { 'blocks.0.attn.hook_result': edits.zero() }, capture: ['blocks.0.hook_attn_out'] })).cache.get('blocks.0.hook_attn_out').data;
      for (let i = 0; i < zeroed.length; i++) expect(Math.abs(zeroed[i]! - bias[i]!) / scale).toBeLessThan(TOL);
    });

    it("an edit at one head's hook_attn_in equals the same edit at that head's q, k and v inputs", async (ctx) => {
      if (!(m().hookNames as readonly string[]).includes('blocks.1.hook_attn_in')) {
        console.warn(`skipping ${name}: no hook_attn_in with grouped-query attention (as TransformerLens)`);
        return ctx.skip();
      }
      const u = vector(m().config.dModel, 13), e = edits.add(u, { heads: [2] });
      const viaAttnIn = await m().run(tokens, { hooks: { 'blocks.1.hook_attn_in': e } });
      const viaSplit = await m().run(tokens, { hooks: { 'blocks.1.hook_q_input': e, 'blocks.1.hook_k_input': e, 'blocks.1.hook_v_input': e } });
      expectClose(viaAttnIn.logits!.data, viaSplit.logits!.data, 'logits');
      expect(compare(viaAttnIn.logits!.data, (await m().run(tokens)).logits!.data, TOL).relError).toBeGreaterThan(1e-3);
    });

    it('edits at split inputs and hook_result carry through KV-cache generation (= cache-free re-runs)', async () => {
      const u = vector(m().config.dModel, 17);
      const hooks = { 'blocks.1.hook_q_input': edits.add(u, { heads: [1] }), 'blocks.0.attn.hook_result': edits.zero({ heads: [0] }), 'blocks.0.hook_mlp_in': edits.add(u) };
      const prompt = tokens[0]!.slice(0, 5);
      const out = await m().generate([prompt], { maxNewTokens: 4, temperature: 0, hooks });
      const seq = [...prompt];
      for (let step = 0; step < 4; step++) {
        const r = await m().run([seq], { hooks, returnLogits: 'last' });
        const l = r.logits!.data;
        seq.push(l.indexOf(l.reduce((a, v) => Math.max(a, v), -Infinity)));
      }
      expect(out.tokens[0]).toEqual(seq);
    });

    it("an edit at one head's hook_q_input changes only that head's queries, as the same edit at hook_resid_pre does", async () => {
      const c = m().config, u = vector(c.dModel, 7);
      const capture = ['blocks.1.attn.hook_q', 'blocks.1.attn.hook_k', 'blocks.1.attn.hook_v', 'blocks.1.hook_resid_pre'];
      const plain = (await m().run(tokens, { capture })).cache;
      const split = (await m().run(tokens, { hooks: { 'blocks.1.hook_q_input': edits.add(u, { heads: [1] }) }, capture })).cache;
      const resid = (await m().run(tokens, { hooks: { 'blocks.1.hook_resid_pre': edits.add(u) }, capture })).cache;
      const q = 'blocks.1.attn.hook_q';
      expectClose(head(split.get(q), 1), head(resid.get(q), 1), 'edited head');
      expect(compare(head(split.get(q), 1), head(plain.get(q), 1), TOL).relError).toBeGreaterThan(1e-3);
      for (let h = 0; h < c.nHeads; h++) if (h !== 1) expectClose(head(split.get(q), h), head(plain.get(q), h), `head ${h}`, 1e-6);
      for (const k of ['blocks.1.attn.hook_k', 'blocks.1.attn.hook_v', 'blocks.1.hook_resid_pre']) expect(bytesEqual(split.get(k).data, plain.get(k).data)).toBe(true);
    });

    it("edits at hook_k_input / hook_v_input reach only that key/value head's keys or values", async () => {
      const c = m().config, u = vector(c.dModel, 11);
      const capture = ['blocks.1.attn.hook_q', 'blocks.1.attn.hook_k', 'blocks.1.attn.hook_v'];
      const plain = (await m().run(tokens, { capture })).cache;
      const resid = (await m().run(tokens, { hooks: { 'blocks.1.hook_resid_pre': edits.add(u) }, capture })).cache;
      const g = c.nKvHeads - 1;
      for (const [input, act] of [['hook_k_input', 'attn.hook_k'], ['hook_v_input', 'attn.hook_v']] as const) {
        const r = (await m().run(tokens, { hooks: { [`blocks.1.${input}`]: edits.add(u, { heads: [g] }) }, capture })).cache;
        expectClose(head(r.get(`blocks.1.${act}`), g), head(resid.get(`blocks.1.${act}`), g), input);
        for (let h = 0; h < g; h++) expectClose(head(r.get(`blocks.1.${act}`), h), head(plain.get(`blocks.1.${act}`), h), `${input} head ${h}`, 1e-6);
        expect(bytesEqual(r.get('blocks.1.attn.hook_q').data, plain.get('blocks.1.attn.hook_q').data)).toBe(true);
      }
    });

    it("hook_mlp_in is a copy of ln2's input: an edit reaches the MLP, not the residual stream", async () => {
      const c = m().config, u = vector(c.dModel, 5);
      const parallel = !(m().hookNames as readonly string[]).includes('blocks.0.hook_resid_mid');
      const capture = ['blocks.0.hook_attn_out', 'blocks.0.hook_mlp_out', 'blocks.0.hook_resid_post'];
      const plain = (await m().run(tokens, { capture })).cache;
      const viaIn = (await m().run(tokens, { hooks: { 'blocks.0.hook_mlp_in': edits.add(u) }, capture })).cache;
      // The same vector added to what ln2 reads: resid_mid, or resid_pre with a parallel residual.
      const viaResid = (await m().run(tokens, { hooks: { [parallel ? 'blocks.0.hook_resid_pre' : 'blocks.0.hook_resid_mid']: edits.add(u) }, capture })).cache;
      expectClose(viaIn.get('blocks.0.hook_mlp_out').data, viaResid.get('blocks.0.hook_mlp_out').data, 'mlp_out');
      expect(bytesEqual(viaIn.get('blocks.0.hook_attn_out').data, plain.get('blocks.0.hook_attn_out').data)).toBe(true);
      // resid_post = resid_post(plain) - mlp_out(plain) + mlp_out(edited): u itself is not added.
      const expected = plain.get('blocks.0.hook_resid_post').data.map((v, i) => v - plain.get('blocks.0.hook_mlp_out').data[i]! + viaIn.get('blocks.0.hook_mlp_out').data[i]!);
      expectClose(viaIn.get('blocks.0.hook_resid_post').data, expected, 'resid_post');
    });

    it("patching unembed.hook_in with another input's gives that input's logits", async () => {
      const other = [...tokens].reverse();
      const donor = await m().run(other, { capture: ['unembed.hook_in'] });
      const patched = await m().run(tokens, { hooks: { 'unembed.hook_in': edits.patch(donor.cache.get('unembed.hook_in')) } });
      expectClose(patched.logits!.data, donor.logits!.data, 'logits');
    });

    it('unembed.hook_out is the logits before the final soft-cap, and edits there reach the logits', async () => {
      const cap = m().config.finalSoftcap;
      const r = await m().run(tokens, { capture: ['unembed.hook_out'] });
      const out = r.cache.get('unembed.hook_out').data;
      const capped = (x: number) => (cap > 0 ? cap * Math.tanh(x / cap) : x);
      expectClose(r.logits!.data, out.map(capped), 'soft-capped hook_out');
      const halved = await m().run(tokens, { hooks: { 'unembed.hook_out': edits.scale(0.5) }, returnLogits: 'last' });
      const V = m().config.dVocab, T = tokens[0]!.length;
      const lastHalf = new Float32Array(tokens.length * V);
      for (let b = 0; b < tokens.length; b++) lastHalf.set(out.subarray((b * T + T - 1) * V, (b * T + T) * V).map((x) => capped(0.5 * x)), b * V);
      expectClose(halved.logits!.data, lastHalf, "returnLogits 'last'");
    });
  });
}

describe('LayerNorm hook_normalized is (x - mean) / scale, before the weight and bias', () => {
  it("zeroing ln_final.hook_normalized leaves ln_final's bias in unembed.hook_in", async () => {
    for (const [name, bias] of [['gpt2', 'ln_f.bias'], ['pythia-parallel', 'gpt_neox.final_layer_norm.bias']] as const) {
      const m = models.get(name)!, tokens = fixtureTokens(name);
      const b = readSafetensors(`${fixtureDir(name)}/model.safetensors`).get(bias)!.data as Float32Array;
      const r = await m.run(tokens, { hooks: { 'ln_final.hook_normalized': edits.zero() }, capture: ['unembed.hook_in'] });
      const h = r.cache.get('unembed.hook_in').data, d = m.config.dModel;
      for (let row = 0; row < h.length / d; row++) expect(Array.from(h.subarray(row * d, (row + 1) * d))).toEqual(Array.from(b));
    }
  });

  it('has zero mean and mean square 1 - eps / scale^2 per row', async () => {
    const m = models.get('gpt2')!;
    const r = await m.run(fixtureTokens('gpt2'), { capture: ['blocks.0.ln2.hook_normalized', 'blocks.0.ln2.hook_scale'] });
    const n = r.cache.get('blocks.0.ln2.hook_normalized').data, s = r.cache.get('blocks.0.ln2.hook_scale').data, d = m.config.dModel;
    for (let row = 0; row < s.length; row++) {
      const x = n.subarray(row * d, (row + 1) * d);
      const mean = x.reduce((a, v) => a + v, 0) / d, ms = x.reduce((a, v) => a + v * v, 0) / d;
      expect(Math.abs(mean)).toBeLessThan(1e-5);
      expect(Math.abs(ms - (1 - m.config.normEps / (s[row]! * s[row]!)))).toBeLessThan(1e-4);
    }
  });
});

describe('an edited hook_scale divides the normalized values, as in TransformerLens', () => {
  it('doubling ln_final.hook_scale halves ln_final.hook_normalized and changes the logits', async () => {
    for (const name of ['gpt2', 'llama-gqa']) {
      const m = models.get(name)!, tokens = fixtureTokens(name);
      const plain = await m.run(tokens, { capture: ['ln_final.hook_normalized'] });
      const doubled = await m.run(tokens, { hooks: { 'ln_final.hook_scale': edits.scale(2) }, capture: ['ln_final.hook_normalized'] });
      expectClose(doubled.cache.get('ln_final.hook_normalized').data, plain.cache.get('ln_final.hook_normalized').data.map((v) => v / 2), name, 1e-6);
      expect(compare(doubled.logits!.data, plain.logits!.data, TOL).relError).toBeGreaterThan(1e-3);
    }
  });

  it('a scale set to 1 by a JS function leaves x - mean (LayerNorm) or x (RMSNorm)', async () => {
    for (const [name, center] of [['gpt2', true], ['llama-gqa', false]] as const) {
      const m = models.get(name)!, tokens = fixtureTokens(name), d = m.config.dModel;
      const r = await m.run(tokens, { hooks: { 'blocks.0.ln1.hook_scale': (act) => void act.data.fill(1) }, capture: ['blocks.0.hook_resid_pre', 'blocks.0.ln1.hook_normalized'] });
      const x = r.cache.get('blocks.0.hook_resid_pre').data, expected = new Float32Array(x.length);
      for (let row = 0; row < x.length / d; row++) {
        const xs = x.subarray(row * d, (row + 1) * d), mean = center ? xs.reduce((a, v) => a + v, 0) / d : 0;
        for (let i = 0; i < d; i++) expected[row * d + i] = xs[i]! - mean;
      }
      expectClose(r.cache.get('blocks.0.ln1.hook_normalized').data, expected, name, 1e-6);
    }
  });
});

describe('TransformerLens hooks: coded errors', () => {
  it('an ln1 edit with an edited split input of the same layer is ERR_INVALID_INPUT; the model stays usable', async () => {
    const m = models.get('gpt2')!, tokens = fixtureTokens('gpt2');
    const before = await m.run(tokens);
    await expect(m.run(tokens, { hooks: { 'blocks.0.ln1.hook_normalized': edits.scale(2), 'blocks.0.hook_q_input': edits.zero({ heads: [0] }) } }))
      .rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    // Other layers, or captures, combine freely.
    await m.run(tokens, { hooks: { 'blocks.1.ln1.hook_normalized': edits.scale(2), 'blocks.0.hook_q_input': edits.zero({ heads: [0] }) }, capture: ['blocks.0.ln1.hook_normalized'] });
    expect(bytesEqual((await m.run(tokens)).logits!.data, before.logits!.data)).toBe(true);
  });

  it('unembed hooks are not reached with stopAtLayer', async () => {
    const m = models.get('gpt2')!;
    await expect(m.run(fixtureTokens('gpt2'), { stopAtLayer: 1, returnLogits: false, capture: ['unembed.hook_in'] })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
  });

  it('head selection at hook_result outside [0, n_heads) is ERR_INVALID_INPUT', async () => {
    const m = models.get('gpt2')!;
    await expect(m.run(fixtureTokens('gpt2'), { hooks: { 'blocks.0.attn.hook_result': edits.zero({ heads: [m.config.nHeads] }) } })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
  });
});

describe('generation through unembed.hook_out', () => {
  it('an edit at unembed.hook_out steers every generated token', async () => {
    const m = models.get('gpt2')!;
    const target = 7;
    const boost = (act: Tensor) => {
      const V = act.shape[2]!;
      for (let r = 0; r < act.data.length / V; r++) act.data[r * V + target] = 1e4;
    };
    const out = await m.generate([fixtureTokens('gpt2')[0]!.slice(0, 4)], { maxNewTokens: 5, temperature: 0, hooks: { 'unembed.hook_out': boost } });
    expect(out.tokens[0]!.slice(4)).toEqual([target, target, target, target, target]);
  });
});
