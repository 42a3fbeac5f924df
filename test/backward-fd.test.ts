// Gradients at TransformerLens's per-head inputs (hook_attn_in, hook_q/k/v_input), at
// attn.hook_result and hook_mlp_in, and through forward edits whose VJP is not the identity
// (projectionCap, scale), checked against central finite differences of the metric: the
// derivative along a random unit direction, taken by adding ±eps of it at the hook with a
// native edit, equals <grad, direction> at that unit. The torch-autograd references of the other
// hooks are in test/backward.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, type Model } from '../src/index.js';
import { fixtureDir } from './helpers.js';

// Central differences in float32, Richardson-extrapolated: (4 D(eps/2) - D(eps)) / 3 has
// truncation O(eps^4); rounding is ~1e-7 |metric| / eps (|metric| ~ 40 on gpt2), so eps = 0.1
// keeps truncation near 1e-4 of the derivative; rounding leaves an absolute floor of about
// 40 * 1.2e-7 / 0.05 = 1e-4 (ABS, doubled).
const EPS = 0.1;
const TOL = 2e-3;
const ABS = 2e-4;

function unit(n: number, seed: number): Float32Array {
  const v = new Float32Array(n);
  let s = seed >>> 0;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = s / 2 ** 32 - 0.5;
    v[i] = x;
    norm += x * x;
  }
  for (let i = 0; i < n; i++) v[i] = v[i]! / Math.sqrt(norm);
  return v;
}

const TOKENS = [
  [3, 17, 5, 9, 22, 4, 12],
  [8, 1, 30, 2, 11, 6, 19],
];
const METRIC = { logitDiff: { position: 'last' as const, correct: 7, wrong: 13 } };

interface Probe {
  hook: string;
  row: number;
  pos: number;
  head?: number;
}

async function checkProbe(model: Model, p: Probe, extra: Record<string, unknown> = {}): Promise<void> {
  const r = await model.backward(TOKENS, { metric: METRIC, grads: [p.hook], hooks: extra } as never);
  const g = r.grads.get(p.hook)!;
  // Blocks recomputed from their saved inputs (not kept from the forward) give the same gradient.
  const again = (await model.backward(TOKENS, { metric: METRIC, grads: [p.hook], hooks: extra, keepActivationBytes: 0 } as never)).grads.get(p.hook)!;
  let big = 0;
  let diff = 0;
  for (let i = 0; i < g.data.length; i++) {
    big = Math.max(big, Math.abs(g.data[i]!));
    diff = Math.max(diff, Math.abs(g.data[i]! - again.data[i]!));
  }
  expect(diff, `${p.hook}: recomputed blocks`).toBeLessThanOrEqual(1e-6 * big);
  const shape = g.shape as number[];
  const width = shape[shape.length - 1]!;
  const dir = unit(width, 1234 + p.pos * 7 + (p.head ?? 0));
  // The unit's offset in the gradient: [b, p, w] or [b, p, h, w].
  const unitIndex = shape.length === 4 ? (p.row * shape[1]! + p.pos) * shape[2]! + (p.head ?? 0) : p.row * shape[1]! + p.pos;
  let analytic = 0;
  for (let i = 0; i < width; i++) analytic += g.data[unitIndex * width + i]! * dir[i]!;
  const metricAt = async (eps: number): Promise<number> => {
    const sel = { rows: [p.row], positions: [p.pos], ...(p.head === undefined ? {} : { heads: [p.head] }), scale: eps };
    const hooks = { ...extra } as Record<string, unknown>;
    const prior = hooks[p.hook];
    const add = edits.add(dir, sel);
    hooks[p.hook] = prior === undefined ? add : [...(Array.isArray(prior) ? prior : [prior]), add];
    const out = await model.backward(TOKENS, { metric: METRIC, hooks } as never);
    return out.metric!;
  };
  const central = async (eps: number): Promise<number> => ((await metricAt(eps)) - (await metricAt(-eps))) / (2 * eps);
  const numeric = (4 * (await central(EPS / 2)) - (await central(EPS))) / 3;
  // A probe whose derivative is ~0 (a position the metric does not read) would pass trivially.
  expect(Math.abs(numeric), `${p.hook}: the metric must depend on the probed unit`).toBeGreaterThan(20 * ABS);
  expect(Math.abs(analytic - numeric) - ABS, `${p.hook} row ${p.row} pos ${p.pos} head ${p.head}: analytic ${analytic}, numeric ${numeric}`).toBeLessThan(TOL * Math.abs(numeric));
}

describe('gradients at per-head inputs, by finite differences', () => {
  let gpt2: Model;
  let llama: Model;
  beforeAll(async () => {
    gpt2 = await loadModel(fixtureDir('gpt2'));
    llama = await loadModel(fixtureDir('llama-gqa'));
  });
  afterAll(() => {
    gpt2.dispose();
    llama.dispose();
  });

  it('gpt2: hook_attn_in, hook_q/k/v_input, attn.hook_result, hook_mlp_in', async () => {
    for (const hook of ['blocks.0.hook_attn_in', 'blocks.0.hook_k_input', 'blocks.0.hook_v_input', 'blocks.0.attn.hook_result'])
      await checkProbe(gpt2, { hook, row: 1, pos: 3, head: 1 });
    await checkProbe(gpt2, { hook: 'blocks.1.hook_q_input', row: 1, pos: 6, head: 1 });  // queries of the last block matter at the metric's position only
    await checkProbe(gpt2, { hook: 'blocks.0.hook_mlp_in', row: 0, pos: 4 });
    await checkProbe(gpt2, { hook: 'blocks.1.hook_mlp_in', row: 1, pos: 6 });
  });

  it('llama (grouped queries): hook_q_input and hook_k_input per kv head', async () => {
    const info = llama.config;
    await checkProbe(llama, { hook: 'blocks.0.hook_q_input', row: 0, pos: 6, head: info.nHeads - 1 });
    await checkProbe(llama, { hook: 'blocks.0.hook_k_input', row: 1, pos: 2, head: 0 });
  });

  it('with forward edits at the same hooks: the gradient flows through their VJP', async () => {
    const d = gpt2.config.dModel;
    const extra = {
      'blocks.0.hook_resid_mid': edits.projectionCap(unit(d, 9), { min: -0.2, max: 0.2 }),
      'blocks.1.hook_q_input': edits.scale(0.5, { heads: [0, 1] }),
      'blocks.0.attn.hook_z': edits.zero({ heads: [2] }),
    };
    await checkProbe(gpt2, { hook: 'blocks.0.hook_resid_mid', row: 1, pos: 4 }, extra);
    await checkProbe(gpt2, { hook: 'blocks.1.hook_q_input', row: 0, pos: 6, head: 1 }, extra);
    await checkProbe(gpt2, { hook: 'blocks.0.hook_resid_pre', row: 1, pos: 6 }, extra);
  });

  it('capturing a per-head input leaves the other gradients as they were', async () => {
    const plain = await gpt2.backward(TOKENS, { metric: METRIC, grads: ['blocks.*.hook_resid_pre'] } as never);
    const split = await gpt2.backward(TOKENS, { metric: METRIC, grads: ['blocks.*.hook_resid_pre', 'blocks.*.hook_attn_in'] } as never);
    for (const name of ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']) {
      const a = plain.grads.get(name)!.data;
      const b = split.grads.get(name)!.data;
      let mx = 0;
      let err = 0;
      for (let i = 0; i < a.length; i++) {
        mx = Math.max(mx, Math.abs(a[i]!));
        err = Math.max(err, Math.abs(a[i]! - b[i]!));
      }
      expect(err / mx, name).toBeLessThan(1e-5);
    }
  });
});
