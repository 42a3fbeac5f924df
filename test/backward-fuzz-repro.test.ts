// Reproducers of defects the backward fuzz cases (test/fuzz/backward-calls.ts) found, each
// reduced to one call on the GPT-2 fixture: the call must fail with a coded error (or succeed
// with finite values) and leave the model usable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, Tensor, type Model, type NeurotapError } from '../src/index.js';
import { fixtureDir } from './helpers.js';

let model: Model;
beforeAll(async () => {
  model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
});
afterAll(() => model.dispose());

async function rejection(p: Promise<unknown>): Promise<NeurotapError> {
  try {
    await p;
  } catch (err) {
    return err as NeurotapError;
  }
  throw new Error('expected a rejection');
}

/** A good backward pass after the failed one: finite, and the model still runs. */
async function expectUsable(): Promise<void> {
  const r = await model.backward([[1, 2, 3]], { metric: { logit: { token: 1 } }, grads: ['blocks.0.hook_resid_pre'] });
  expect(Number.isFinite(r.metric)).toBe(true);
  expect(r.grads.get('blocks.0.hook_resid_pre').data.every(Number.isFinite)).toBe(true);
}

describe('backward fuzz reproducers', () => {
  // backward:676 (gemma2), backward:769 (gpt2): a custom metric given as a Tensor refuses
  // non-finite values, but a custom metric function's non-finite grad flowed into every gradient.
  it('a custom metric function returning a non-finite grad or value is refused, as a custom Tensor is', async () => {
    const rows = [[5, 6, 7, 8, 9], [9, 10, 11, 12]];
    const nanGrad = (l: Tensor) => ({ value: 1, grad: new Tensor(l.shape, new Float32Array(l.data.length).fill(NaN)) });
    const err = await rejection(model.backward(rows, { metric: { custom: nanGrad }, grads: ['blocks.1.hook_resid_post'] }));
    expect(err.code, err.message).toBe('ERR_HOOK_RETURN');
    expect(err.message).toMatch(/non-finite/);
    await expectUsable();
    const infValue = (l: Tensor) => ({ value: Infinity, grad: new Tensor(l.shape, new Float32Array(l.data.length)) });
    const err2 = await rejection(model.backward(rows, { metric: { custom: infValue } }));
    expect(err2.code, err2.message).toBe('ERR_HOOK_RETURN');
    await expectUsable();
  });
});
