// SAEs attached to a model: the native SAE against a float64 TypeScript transcription of the
// SAELens math (docs in src/sae/Sae.ts), the error-term identities, feature edits, files on
// disk, the CLI, and bad input. (HF/numpy fixture references: test/fixtures/generate_sae.py.)
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, featureHooks, loadModel, loadSae, Sae, Tensor, writeSafetensors, type Model, type SaeArchitecture, type SaeNormalization } from '../src/index.js';
import { fixtureDir, randomFloats } from './helpers.js';

const HOOK = 'blocks.0.hook_resid_post';
// Our float32 SAE against the float64 transcription on the same input, relative to each row's
// largest value: worst seen 4.7e-7 (acts_post 4.4e-7, output 4.7e-7), so 2x that. With the error
// term, the output against x (or x plus an edit's exact change): worst 7.6e-8, float rounding of
// x - clean + recons; the logits downstream: worst 2.6e-7.
const TOL_SAE = 1e-6, TOL_ERROR_TERM_OUTPUT = 2e-7, TOL_ERROR_TERM_LOGITS = 5e-7;
const D = 64, S = 128;
const TOKENS = [[5, 17, 3, 99, 250, 8, 41], [7, 7, 300, 12, 1, 0, 64]];

function makeSae(arch: SaeArchitecture, norm: SaeNormalization = 'none', seed = 1, hook = HOOK, dIn = D): Sae {
  const W_enc = randomFloats(dIn * S, seed, 1 / Math.sqrt(dIn));
  const b_enc = randomFloats(S, seed + 1, 0.3).map((v) => v - 0.4);
  const W_dec = randomFloats(S * dIn, seed + 2, 1 / Math.sqrt(dIn));
  const b_dec = randomFloats(dIn, seed + 3, 0.2);
  const threshold = arch === 'jumprelu' ? randomFloats(S, seed + 4, 0.2).map((v) => Math.abs(v) + 0.05) : undefined;
  const r_mag = arch === 'gated' ? randomFloats(S, seed + 5, 0.3) : undefined;
  const b_mag = arch === 'gated' ? randomFloats(S, seed + 6, 0.3) : undefined;
  return new Sae(
    { architecture: arch, dIn, dSae: S, ...(arch === 'topk' ? { k: 6 } : {}), hookName: hook, applyBDecToInput: arch !== 'jumprelu', normalizeActivations: norm, reshapeActivations: 'none', dtype: 'f32', format: 'saelens' },
    W_enc, b_enc, W_dec, b_dec, threshold, r_mag, b_mag,
  );
}

/** SAELens forward in float64 on one row: acts_pre (not gated), acts_post, output without error term. */
function reference(sae: Sae, x: Float32Array): { pre: Float64Array; post: Float64Array; out: Float64Array } {
  const { dIn, dSae, architecture: arch, normalizeActivations: norm } = sae.cfg;
  // In: u = (x - b) * a. Out: recons / a + b, except layer_norm: recons * sd + b (no eps on the way out).
  let a = 1, b = 0, sd = 0;
  if (norm === 'constant_norm_rescale') a = Math.sqrt(dIn) / Math.hypot(...x);
  if (norm === 'layer_norm') {
    b = x.reduce((s, v) => s + v, 0) / dIn;
    sd = Math.sqrt(x.reduce((s, v) => s + (v - b) ** 2, 0) / (dIn - 1));
    a = 1 / (sd + 1e-5);
  }
  const u = Array.from(x, (v, i) => (v - b) * a - (sae.cfg.applyBDecToInput ? sae.b_dec[i]! : 0));
  const hidden = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += u[i]! * sae.W_enc[i * dSae + j]!;
    hidden[j] = s;
  }
  const post = new Float64Array(dSae);
  // rescale_acts_by_decoder_norm: pre * |W_dec[j]| is ranked and kept; decode divides it back.
  const decNorm = Array.from({ length: dSae }, (_, j) => (sae.cfg.rescaleActsByDecoderNorm ? Math.hypot(...sae.W_dec.subarray(j * dIn, (j + 1) * dIn)) : 1));
  if (arch === 'topk') {
    const ranked = Array.from(hidden, (h, j) => (h + sae.b_enc[j]!) * decNorm[j]!);
    const order = [...hidden.keys()].sort((p, q) => ranked[q]! - ranked[p]! || p - q);
    for (const j of order.slice(0, sae.cfg.k)) post[j] = Math.max(0, ranked[j]!);
  } else {
    for (let j = 0; j < dSae; j++) {
      if (arch === 'gated') post[j] = hidden[j]! + sae.b_enc[j]! > 0 ? Math.max(0, hidden[j]! * Math.exp(sae.r_mag![j]!) + sae.b_mag![j]!) : 0;
      else {
        const pre = hidden[j]! + sae.b_enc[j]!;
        post[j] = arch === 'jumprelu' ? (pre > sae.threshold![j]! ? Math.max(0, pre) : 0) : Math.max(0, pre);
      }
    }
  }
  const out = new Float64Array(dIn);
  for (let i = 0; i < dIn; i++) {
    let s = sae.b_dec[i]!;
    for (let j = 0; j < dSae; j++) s += (post[j]! / decNorm[j]!) * sae.W_dec[j * dIn + i]!;
    out[i] = norm === 'layer_norm' ? s * sd + b : s / a + b;
  }
  return { pre: hidden.map((h, j) => h + sae.b_enc[j]!), post, out };
}

function relError(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    num = Math.max(num, Math.abs(ours[i]! - ref[i]!));
    den = Math.max(den, Math.abs(ref[i]!));
  }
  return num / (den || 1);
}

describe('SAEs attached to a model', () => {
  let model: Model;
  let clean: Float32Array;
  let x: Float32Array;
  beforeAll(async () => {
    model = await loadModel(fixtureDir('gpt2'), { threads: 2 });
    const r = await model.run(TOKENS, { capture: [HOOK] });
    clean = r.logits!.data;
    x = r.cache.get(HOOK).data;
  });
  afterAll(() => model.dispose());

  const cases: [SaeArchitecture, SaeNormalization][] = [
    ['standard', 'none'], ['jumprelu', 'none'], ['topk', 'constant_norm_rescale'], ['gated', 'layer_norm'], ['standard', 'layer_norm'],
  ];
  for (const [arch, norm] of cases) {
    it(`${arch} / ${norm}: acts and output match the SAELens math; the error term restores the model`, async () => {
      const sae = makeSae(arch, norm);
      const a = await model.attachSae(sae);
      try {
        const r = await model.run(TOKENS, { capture: [a.hooks.hook_sae_acts_post, a.hooks.hook_sae_output, a.hooks.hook_sae_input] });
        const post = r.cache.get(a.hooks.hook_sae_acts_post).data, out = r.cache.get(a.hooks.hook_sae_output).data;
        expect(Array.from(r.cache.get(a.hooks.hook_sae_input).data)).toEqual(Array.from(x));
        let firing = 0;
        for (let row = 0; row < 14; row++) {
          const ref = reference(sae, x.subarray(row * D, (row + 1) * D));
          expect(relError(post.subarray(row * S, (row + 1) * S), ref.post)).toBeLessThan(TOL_SAE);
          expect(relError(out.subarray(row * D, (row + 1) * D), ref.out)).toBeLessThan(TOL_SAE);
          firing += ref.post.filter((v) => v > 0).length;
        }
        expect(firing / (14 * S)).toBeGreaterThan(0.01);  // the test sees real features
        expect(firing / (14 * S)).toBeLessThan(0.9);
        expect(relError(r.logits!.data, clean)).toBeGreaterThan(1e-3);  // spliced: the model changes
      } finally {
        await model.detachSae(HOOK);
      }
      const b = await model.attachSae(sae, { useErrorTerm: true });
      try {
        const r = await model.run(TOKENS, { capture: [b.hooks.hook_sae_recons, b.hooks.hook_sae_error, b.hooks.hook_sae_output] });
        expect(relError(r.cache.get(b.hooks.hook_sae_output).data, x)).toBeLessThan(TOL_ERROR_TERM_OUTPUT);
        expect(relError(r.logits!.data, clean)).toBeLessThan(TOL_ERROR_TERM_LOGITS);
      } finally {
        await model.detachSae(HOOK);
      }
    });
  }

  it('clamps, zeroes and steers features with the error term, exactly as the math says', async () => {
    const sae = makeSae('standard');
    const a = await model.attachSae(sae, { useErrorTerm: true });
    try {
      const base = await model.run(TOKENS, { capture: [a.hooks.hook_sae_acts_post], saeFeatures: { k: 4 } });
      const post = base.cache.get(a.hooks.hook_sae_acts_post).data;
      // Sparse top-k equals the dense acts sorted.
      const f = base.features.get(HOOK)!;
      for (let row = 0; row < 14; row++) {
        const sorted = [...post.subarray(row * S, (row + 1) * S).keys()].sort((p, q) => post[row * S + q]! - post[row * S + p]! || p - q).slice(0, 4);
        expect(Array.from(f.indices.subarray(row * 4, row * 4 + 4))).toEqual(sorted);
        expect(Array.from(f.values.subarray(row * 4, row * 4 + 4))).toEqual(sorted.map((j) => post[row * S + j]!));
      }
      const feature = f.indices[0]!;
      // Clamp: the SAE output moves by (v - a_i) * W_dec[i] per token; downstream = patching that activation.
      const clamp = await model.run(TOKENS, { hooks: featureHooks(a, { clamp: { [feature]: 5 } }), capture: [a.hooks.hook_sae_output] });
      const target = new Float32Array(x.length);
      for (let row = 0; row < 14; row++)
        for (let i = 0; i < D; i++) target[row * D + i] = x[row * D + i]! + (5 - post[row * S + feature]!) * sae.W_dec[feature * D + i]!;
      expect(relError(clamp.cache.get(a.hooks.hook_sae_output).data, target)).toBeLessThan(TOL_ERROR_TERM_OUTPUT);
      await model.detachSae(HOOK);
      const patched = await model.run(TOKENS, { hooks: { [HOOK]: edits.patch(new Tensor([2, 7, D], target)) } });
      expect(relError(clamp.logits!.data, patched.logits!.data)).toBeLessThan(TOL_ERROR_TERM_LOGITS);
      const b = await model.attachSae(sae, { useErrorTerm: true });
      // Steer = adding strength x W_dec[i] at the hook.
      const steer = await model.run(TOKENS, { hooks: featureHooks(b, { steer: { 3: 2.5 } }) });
      await model.detachSae(HOOK);
      const added = await model.run(TOKENS, { hooks: { [HOOK]: edits.add(sae.decoderDirection(3), { scale: 2.5 }) } });
      expect(relError(steer.logits!.data, added.logits!.data)).toBeLessThan(TOL_ERROR_TERM_LOGITS);
      const c = await model.attachSae(sae, { useErrorTerm: true });
      const zero = await model.run(TOKENS, { hooks: featureHooks(c, { zero: [feature] }), capture: [c.hooks.hook_sae_acts_post] });
      const zpost = zero.cache.get(c.hooks.hook_sae_acts_post).data;
      for (let row = 0; row < 14; row++) expect(zpost[row * S + feature]).toBe(0);
      expect(relError(zero.logits!.data, clean)).toBeGreaterThan(1e-6);
    } finally {
      if (model.saes.has(HOOK)) await model.detachSae(HOOK);
    }
  });

  it('topk rescale_acts_by_decoder_norm: acts_pre unscaled, acts_post ranked and kept rescaled, decoded divided back', async () => {
    const plain = makeSae('topk');
    const W_dec = plain.W_dec.slice();
    const scales = randomFloats(S, 9, 1).map((v) => 1.1 + 0.9 * v);  // row norms spread 4x
    for (let j = 0; j < S; j++) for (let i = 0; i < D; i++) W_dec[j * D + i]! *= scales[j]!;
    const sae = new Sae({ ...plain.cfg, rescaleActsByDecoderNorm: true }, plain.W_enc, plain.b_enc, W_dec, plain.b_dec);
    const unscaled = new Sae(plain.cfg, plain.W_enc, plain.b_enc, W_dec, plain.b_dec);
    const a = await model.attachSae(sae);
    try {
      const r = await model.run(TOKENS, { capture: [a.hooks.hook_sae_acts_pre, a.hooks.hook_sae_acts_post, a.hooks.hook_sae_output] });
      const pre = r.cache.get(a.hooks.hook_sae_acts_pre).data, post = r.cache.get(a.hooks.hook_sae_acts_post).data, out = r.cache.get(a.hooks.hook_sae_output).data;
      let moved = 0;
      for (let row = 0; row < 14; row++) {
        const ref = reference(sae, x.subarray(row * D, (row + 1) * D)), off = reference(unscaled, x.subarray(row * D, (row + 1) * D));
        expect(relError(pre.subarray(row * S, (row + 1) * S), ref.pre)).toBeLessThan(TOL_SAE);  // unscaled
        expect(relError(post.subarray(row * S, (row + 1) * S), ref.post)).toBeLessThan(TOL_SAE);
        expect(relError(out.subarray(row * D, (row + 1) * D), ref.out)).toBeLessThan(TOL_SAE);
        for (let j = 0; j < S; j++) moved += Number(ref.post[j]! > 0 !== off.post[j]! > 0);
      }
      expect(moved).toBeGreaterThan(0);  // the rescale picks other features
      // A hook on acts_pre edits before the rescale: pre 100 at feature 5 keeps 100 * |W_dec[5]|.
      const n5 = Math.fround(Math.hypot(...W_dec.subarray(5 * D, 6 * D)));
      const e = await model.run(TOKENS, {
        hooks: { [a.hooks.hook_sae_acts_pre]: (t: Tensor) => { for (let row = 0; row < 14; row++) t.data[row * S + 5] = 100; } },
        capture: [a.hooks.hook_sae_acts_post],
      });
      const epost = e.cache.get(a.hooks.hook_sae_acts_post).data;
      for (let row = 0; row < 14; row++) expect(epost[row * S + 5]).toBe(Math.fround(100 * n5));
    } finally {
      await model.detachSae(HOOK);
    }
  });

  it('sparse top-k keeps the dense order through ties, negatives and NaN written by a hook (NaN sorts last)', async () => {
    const sae = makeSae('topk');
    const a = await model.attachSae(sae);
    try {
      const k = 9;
      const r = await model.run(TOKENS, {
        hooks: {
          [a.hooks.hook_sae_acts_post]: (t: Tensor) => {
            for (let row = 0; row < 14; row++) {
              const o = row * S;
              for (let j = 40; j < 52; j++) t.data[o + j] = 0.75;  // 12 ties across the k-th place
              t.data[o + 60 + row] = -3;
              t.data[o + 100] = Number.NaN;
            }
          },
        },
        capture: [a.hooks.hook_sae_acts_post],
        saeFeatures: { k },
      });
      const post = r.cache.get(a.hooks.hook_sae_acts_post).data, f = r.features.get(HOOK)!;
      const v = (x: number) => (Number.isNaN(x) ? -Infinity : x);
      for (let row = 0; row < 14; row++) {
        const o = row * S;
        const want = [...Array(S).keys()].sort((p, q) => v(post[o + q]!) - v(post[o + p]!) || p - q).slice(0, k);
        expect(Array.from(f.indices.subarray(row * k, (row + 1) * k))).toEqual(want);
      }
    } finally {
      await model.detachSae(HOOK);
    }
  });

  it('feature density over a corpus through extract counts real tokens only, natively', async () => {
    const sae = makeSae('jumprelu');
    const a = await model.attachSae(sae);
    try {
      // Pre-tokenized documents of different lengths, one sequence each, right-padded to 9.
      const docs = [[5, 17, 3, 99, 250], [7, 7, 300, 12, 1, 0, 64, 9, 11], [42, 42], [100, 200, 300, 301, 302, 303]];
      async function* source() {
        for (const tokens of docs) yield { tokens, file: 'mem', line: 0 };
      }
      const density = await model.featureDensity(source(), { seqLen: 9, pack: false, batchSize: 3, addSpecialTokens: false });
      // Reference: dense acts_post of each document run alone, features > 0 counted.
      const counts = new Float64Array(S);
      for (const d of docs) {
        const r = await model.run([d], { capture: [a.hooks.hook_sae_acts_post] });
        const post = r.cache.get(a.hooks.hook_sae_acts_post).data;
        for (let i = 0; i < post.length; i++) if (post[i]! > 0) counts[i % S]!++;
      }
      const d = density.get(HOOK)!;
      expect(d.tokens).toBe(22);
      expect(Array.from(d.counts)).toEqual(Array.from(counts));
      expect(d.density[0]).toBe(counts[0]! / 22);
      expect(counts.some((c) => c > 0) && counts.some((c) => c < 22)).toBe(true);
    } finally {
      await model.detachSae(HOOK);
    }
  });

  it('stopAtLayer: the hooks of an SAE at hook_embed are reached, features of one after the blocks are refused', async () => {
    const embed = await model.attachSae(makeSae('standard', 'none', 3, 'hook_embed'));
    const final = await model.attachSae(makeSae('standard', 'none', 4, 'unembed.hook_in'));
    try {
      const r = await model.run(TOKENS, { stopAtLayer: 1, returnLogits: false, capture: [embed.hooks.hook_sae_acts_post], saeFeatures: { k: 2, hooks: ['hook_embed'] } });
      expect(r.cache.get(embed.hooks.hook_sae_acts_post).shape).toEqual([2, 7, S]);
      await expect(model.run(TOKENS, { stopAtLayer: 1, returnLogits: false, saeFeatures: { k: 2, hooks: ['unembed.hook_in'] } })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
      await expect(model.run(TOKENS, { stopAtLayer: 1, returnLogits: false, capture: [final.hooks.hook_sae_acts_post] })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    } finally {
      await model.detachSae('hook_embed');
      await model.detachSae('unembed.hook_in');
    }
  });

  it('rejects bad SAEs and feature indices with coded errors; the model keeps working', async () => {
    await expect(model.attachSae(makeSae('standard', 'none', 1, HOOK, 32))).rejects.toMatchObject({ code: 'ERR_SAE_MISMATCH' });
    const a = await model.attachSae(makeSae('standard'));
    await expect(model.attachSae(makeSae('standard'))).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    expect(() => featureHooks(a, { clamp: { [S]: 1 } })).toThrow(expect.objectContaining({ code: 'ERR_FEATURE_OUT_OF_RANGE' }));
    await expect(model.run(TOKENS, { hooks: { [a.hooks.hook_sae_acts_post]: edits.zero({ heads: [S + 3] }) } })).rejects.toMatchObject({ code: 'ERR_FEATURE_OUT_OF_RANGE' });
    await expect(model.run(TOKENS, { capture: [a.hooks.hook_sae_error] })).rejects.toMatchObject({ code: 'ERR_INVALID_INPUT' });
    await model.detachSae(HOOK);
    await expect(model.attachSae(makeSae('standard'), { hook: 'blocks.0.attn.hook_patern' })).rejects.toMatchObject({ code: 'ERR_UNKNOWN_HOOK' });
    const r = await model.run(TOKENS, {});
    expect(Array.from(r.logits!.data)).toEqual(Array.from(clean));
  });
});

describe('SAE files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'neurotap-sae-'));
  const sae = makeSae('jumprelu');
  function write(name: string, cfg: object, drop?: string, extra: Record<string, { shape: number[]; data: Float32Array }> = {}): string {
    const path = join(dir, name);
    mkdirSync(path, { recursive: true });
    writeFileSync(join(path, 'cfg.json'), JSON.stringify(cfg));
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {
      W_enc: { shape: [D, S], data: sae.W_enc },
      b_enc: { shape: [S], data: sae.b_enc },
      W_dec: { shape: [S, D], data: sae.W_dec },
      b_dec: { shape: [D], data: sae.b_dec },
      threshold: { shape: [S], data: sae.threshold! },
    };
    if (drop) delete tensors[drop];
    writeSafetensors(join(path, 'sae_weights.safetensors'), { ...tensors, ...extra });
    return path;
  }

  it('reads the v6 and the flat cfg.json layouts', async () => {
    const v6 = await loadSae(write('v6', { architecture: 'jumprelu', d_in: D, d_sae: S, dtype: 'float32', apply_b_dec_to_input: false, normalize_activations: 'none', metadata: { hook_name: HOOK } }));
    expect(v6.cfg).toMatchObject({ architecture: 'jumprelu', dIn: D, dSae: S, hookName: HOOK, format: 'saelens' });
    expect(Array.from(v6.threshold!)).toEqual(Array.from(sae.threshold!));
    const flat = await loadSae(write('flat', { architecture: 'jumprelu', d_in: D, d_sae: S, hook_point: HOOK, activation_fn_str: 'relu', apply_b_dec_to_input: false }));
    expect(flat.cfg).toMatchObject({ hookName: HOOK, format: 'saelens-flat' });
  });

  it('refuses missing tensors, bad shapes and unknown architectures', async () => {
    await expect(loadSae(write('missing', { architecture: 'jumprelu', d_in: D, d_sae: S, metadata: { hook_name: HOOK } }, 'threshold'))).rejects.toMatchObject({ code: 'ERR_SAE_INVALID' });
    await expect(loadSae(write('shape', { architecture: 'jumprelu', d_in: D, d_sae: S + 1, metadata: { hook_name: HOOK } }))).rejects.toMatchObject({ code: 'ERR_SAE_INVALID' });
    await expect(loadSae(write('arch', { architecture: 'matryoshka', d_in: D, d_sae: S, metadata: { hook_name: HOOK } }))).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_SAE' });
    await expect(loadSae(join(dir, 'nowhere'))).rejects.toMatchObject({ code: 'ERR_FILE_NOT_FOUND' });
    await expect(loadSae(write('norm', { architecture: 'jumprelu', d_in: D, d_sae: S, normalize_activations: 'l2', metadata: { hook_name: HOOK } }))).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_SAE' });
  });

  it('maps the flat layout\'s boolean normalization and hook_z default; drops an all-ones scaling_factor, refuses others', async () => {
    const flatTrue = await loadSae(write('flat-true', { d_in: D, d_sae: S, hook_point: HOOK, normalize_activations: true }, 'threshold'));
    expect(flatTrue.cfg.normalizeActivations).toBe('expected_average_only_in');
    const flatFalse = await loadSae(write('flat-false', { d_in: D, d_sae: S, hook_point: 'blocks.0.attn.hook_z', normalize_activations: false }, 'threshold'));
    expect(flatFalse.cfg).toMatchObject({ normalizeActivations: 'none', reshapeActivations: 'hook_z' });
    const cfg = { architecture: 'jumprelu', d_in: D, d_sae: S, finetuning_scaling_factor: true, metadata: { hook_name: HOOK } };
    const ones = await loadSae(write('ones', cfg, undefined, { scaling_factor: { shape: [S], data: new Float32Array(S).fill(1) } }));
    expect(Array.from(ones.W_dec)).toEqual(Array.from(sae.W_dec));
    const scaled = new Float32Array(S).fill(1);
    scaled[7] = 1.5;
    await expect(loadSae(write('scaled', cfg, undefined, { scaling_factor: { shape: [S], data: scaled } }))).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_SAE' });
  });
});
