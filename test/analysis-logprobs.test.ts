// tokenLogProbs, lossPerToken, loss and topKTokens against TransformerLens's
// lm_cross_entropy_loss and torch.topk on the HF logits (test/fixtures/generate_analysis.py),
// and loss against model.backward's 'loss' metric. Tolerance (f32 logits, double sums): 1e-5
// absolute on log-probabilities of magnitude ~1-10 (the reference reduces in float32).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, loss, lossPerToken, readSafetensors, Tensor, tokenLogProbs, topKTokens, toStrTokens, type Model } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const DIR = join(ROOT, 'test', 'fixtures', 'analysis');
const ABS = 1e-5;

function expectNear(label: string, ours: ArrayLike<number>, ref: ArrayLike<number>, tol = ABS): void {
  expect(ours.length, `${label}: length`).toBe(ref.length);
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - ref[i]!));
  expect(worst, `${label}: max abs error`).toBeLessThanOrEqual(tol);
}

for (const name of ['gpt2', 'gemma2']) {
  describe(`loss and log-probs: ${name}`, () => {
    const ref = readSafetensors(join(DIR, `${name}.safetensors`));
    const meta = JSON.parse(readFileSync(join(DIR, `${name}.json`), 'utf8')) as { batch: number; pos: number; mask_pad: number; topk: number };
    const ids = Array.from(ref.get('input_ids')!.data as Int32Array, Number);
    const tokens = Array.from({ length: meta.batch }, (_, b) => ids.slice(b * meta.pos, (b + 1) * meta.pos));
    const logitsRef = ref.get('logits')!;
    const refResult = { logits: new Tensor(logitsRef.shape, logitsRef.data as Float32Array), tokens };
    const f = (k: string) => ref.get(k)!.data as Float32Array;
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(fixtureDir(name), { threads: 2 });
    });
    afterAll(() => model.dispose());

    it("equals TL's loss, loss_per_token and the next-token log-probs on the reference logits", () => {
      expectNear('loss', [loss(refResult)], f('loss'));
      expectNear('lossPerToken', lossPerToken(refResult).data, f('loss_per_token'));
      expect(lossPerToken(refResult).shape).toEqual([meta.batch, meta.pos - 1]);
      expectNear('tokenLogProbs', tokenLogProbs(refResult).data, f('token_log_probs'));
    });

    it("masks padding as TL's attention_mask: a prediction counts from a real token for a real token", () => {
      const mask = tokens.map((row, b) => row.map((_, t) => (b === 0 && t < meta.mask_pad ? 0 : 1)));
      expectNear('loss masked', [loss(refResult, { attentionMask: mask })], f('loss_masked'));
      expectNear('lossPerToken masked', lossPerToken(refResult, { attentionMask: mask }).data, f('loss_per_token_masked'));
      // The same mask from a left-padded result's pad counts (BackwardResult, padded runs).
      const pad = tokens.map((_, b) => (b === 0 ? meta.mask_pad : 0));
      expectNear('loss from pad', [loss({ ...refResult, pad })], f('loss_masked'));
      const right = tokens.map((row, b) => row.map((_, t) => (b === 1 && t >= meta.pos - 3 ? 0 : 1)));
      expectNear('right padding', [loss({ ...refResult, pad: [0, 3], padding: 'right' })], [loss(refResult, { attentionMask: right })], 0);
    });

    it("matches model.run's logits and model.backward's 'loss' metric", async () => {
      const run = await model.run(tokens);
      expectNear('loss of run', [loss(run)], f('loss'));
      const back = await model.backward(tokens, { metric: 'loss', grads: ['blocks.0.hook_resid_pre'] });
      // Both in f32 forwards (backward's own, kept for the backward pass): 1e-6 relative.
      expectNear('backward loss', [loss(run)], [back.metric!], 1e-6 * Math.abs(back.metric!));
    });

    it('gives the top-k next tokens as torch.topk, with probabilities and strings', async () => {
      const ids = Array.from(ref.get('topk_ids')!.data as Int32Array, Number);
      const top = topKTokens(model, refResult, { k: meta.topk });
      const last = await model.run(tokens, { returnLogits: 'last' });
      const fromLast = topKTokens(model, last.logits!, { k: meta.topk });
      top.forEach((row, b) => {
        const slice = (a: ArrayLike<number>) => Array.from(a).slice(b * meta.topk, (b + 1) * meta.topk);
        expect(row.ids).toEqual(slice(ids));
        expect(fromLast[b]!.ids).toEqual(slice(ids));
        expect(row.position).toBe(meta.pos - 1);
        expectNear('top-k logits', row.logits, slice(f('topk_logits')), 0);
        expectNear('top-k probs', row.probs, slice(f('topk_probs')), 1e-6);
        if (model.tokenizer) expect(row.tokens).toEqual(toStrTokens(model, row.ids));
        else expect(row.tokens).toBeNull();
      });
    });
  });
}

describe('loss helpers: bad input', () => {
  const logits = new Tensor([1, 3, 4], new Float32Array(12));
  it('refuses what they cannot compute, with ERR_INVALID_INPUT', () => {
    expect(() => loss({ logits: null, tokens: [[0, 1, 2]] })).toThrow(/returnLogits: true/);
    expect(() => loss({ logits: new Tensor([1, 4], new Float32Array(4)), tokens: [[0]] })).toThrow(/every position/);
    expect(() => loss({ logits, tokens: [[0, 1]] })).toThrow(/1 rows of 3 ids/);
    expect(() => loss({ logits, tokens: [[0, 1, 4]] })).toThrow(/not an id in \[0, 4\)/);
    expect(() => loss({ logits, tokens: [[0, 1, 2]], pad: [3] })).toThrow(/no position counts/);
    expect(() => loss({ logits, tokens: [[0, 1, 2]] }, { attentionMask: [[1, 2, 1]] })).toThrow(/0 or 1/);
    expect(loss({ logits, tokens: [[0, 1, 2]] })).toBeCloseTo(Math.log(4), 12);
  });
  it('topKTokens checks k and position', async () => {
    const model = await loadModel(fixtureDir('gpt2'), { threads: 1 });
    try {
      expect(() => topKTokens(model, logits, { k: 5 })).toThrow(/k must be an integer in \[1, 4\]/);
      expect(() => topKTokens(model, logits, { k: 1, position: 3 })).toThrow(/position/);
      expect(() => topKTokens(model, new Tensor([1, 4], new Float32Array(4)), { k: 1, position: 0 })).toThrow(/last position only/);
      // Ties: lower id first.
      expect(topKTokens(model, logits, { k: 2 })[0]!.ids).toEqual([0, 1]);
    } finally {
      model.dispose();
    }
  });
});
