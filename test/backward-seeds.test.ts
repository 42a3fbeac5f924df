// Seeds at the head's hooks (unembed.hook_out, unembed.hook_in, ln_final): a backward pass
// seeded with the gradient a metric leaves at a hook reproduces that metric's gradients below
// it, and S seed rows give S independent (linear) backward passes. The metric's own gradients
// are checked against torch autograd in test/backward.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, Tensor, type Model } from '../src/index.js';
import { fixtureDir } from './helpers.js';

const TOL = 1e-5;  // float32: the same ops in the same order, only the rows batched differently

function maxRel(a: Float32Array, b: Float32Array, scale = 1): number {
  let mx = 0;
  let err = 0;
  for (let i = 0; i < b.length; i++) {
    mx = Math.max(mx, Math.abs(b[i]! * scale));
    err = Math.max(err, Math.abs(a[i]! - b[i]! * scale));
  }
  return err / mx;
}

const TOKENS = [
  [3, 17, 5, 9, 22, 4, 12],
  [8, 1, 30, 2, 11, 6, 19],
];
const METRIC = { logitDiff: { position: 'last' as const, correct: 7, wrong: 13 } };

describe.each(['gpt2', 'gemma2'])('seeds at the head hooks of %s', (fixture) => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir(fixture));
  });
  afterAll(() => model.dispose());

  it.each(['unembed.hook_out', 'unembed.hook_in', 'ln_final.hook_normalized'])('a seed at %s equal to the metric\'s gradient there reproduces it, in each of 2 rows', async (hook) => {
    const below = ['blocks.0.hook_resid_pre', `blocks.${model.config.nLayers - 1}.hook_resid_post`, 'blocks.0.attn.hook_pattern'];
    const ref = await model.backward(TOKENS, { metric: METRIC, grads: [hook, ...below] } as never);
    const g = ref.grads.get(hook)!;
    const two = new Float32Array(2 * g.data.length);
    two.set(g.data, 0);
    for (let i = 0; i < g.data.length; i++) two[g.data.length + i] = -3 * g.data[i]!;
    const seeded = await model.backward(TOKENS, { seeds: { [hook]: new Tensor([2, ...g.shape], two) }, grads: below } as never);
    for (const name of below) {
      const want = ref.grads.get(name)!.data;
      const got = seeded.grads.get(name)!;
      expect(got.shape[0]).toBe(2);
      const n = want.length;
      expect(maxRel(got.data.subarray(0, n), want), `${name}, row 0`).toBeLessThan(TOL);
      expect(maxRel(got.data.subarray(n, 2 * n), want, -3), `${name}, row 1`).toBeLessThan(TOL);
    }
  });
});
