// Whole-model fidelity: logits and every TransformerLens hook against HF transformers
// references (test/fixtures/generate.py), at 1e-5 relative error (f32 compute; f16/bf16 files
// are upcast exactly, so the same tolerance holds for them).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, readSafetensors, type Model } from '../src/index.js';
import { compare, fixtureDir, fixtureNames } from './helpers.js';

const TOL = 1e-5;

for (const name of fixtureNames()) {
  describe(`fidelity: ${name}`, () => {
    const ref = readSafetensors(`${fixtureDir(name)}/reference.safetensors`);
    const ids = ref.get('input_ids')!;
    const [B, T] = ids.shape as [number, number];
    const tokens = Array.from({ length: B }, (_, b) => Array.from(ids.data as Int32Array).slice(b * T, (b + 1) * T).map(Number));
    const refHooks = [...ref.keys()].filter((k) => k !== 'input_ids' && k !== 'logits');
    let model: Model;

    beforeAll(async () => {
      model = await loadModel(fixtureDir(name), { threads: 2 });
    });
    afterAll(() => model.dispose());

    it('has exactly the hooks HF/TransformerLens has for this family', () => {
      expect([...model.hookNames].sort()).toEqual([...refHooks].sort());
    });

    it('matches HF logits and every hook', async () => {
      const r = await model.run(tokens, { capture: model.hookNames });
      const failures: string[] = [];
      const check = (label: string, ours: Float32Array, theirs: Float32Array, shapeOurs: readonly number[], shapeRef: readonly number[]) => {
        if (shapeOurs.join() !== shapeRef.join()) {
          failures.push(`${label}: shape [${shapeOurs}] vs reference [${shapeRef}]`);
          return;
        }
        const c = compare(ours, theirs, TOL);
        if (!(c.relError <= TOL)) failures.push(`${label}: rel error ${c.relError.toExponential(2)} (max abs ${c.maxAbsError.toExponential(2)}); first mismatches ${c.firstMismatches.join('; ')}`);
      };
      const logits = ref.get('logits')!;
      check('logits', r.logits!.data, logits.data as Float32Array, r.logits!.shape, logits.shape);
      for (const h of refHooks) {
        const e = ref.get(h)!;
        const t = r.cache.get(h);
        check(h, t.data, e.data as Float32Array, t.shape, e.shape);
      }
      expect(failures, failures.join('\n')).toEqual([]);
    });

    it('gives the same logits with and without captures (hooks do not perturb the forward)', async () => {
      const plain = await model.run(tokens);
      // Captures that keep the fused path change nothing, bit for bit.
      const same = await model.run(tokens, { capture: ['blocks.*.hook_resid_post', 'blocks.*.ln1.hook_normalized', 'blocks.*.attn.hook_z'] });
      expect(Buffer.compare(Buffer.from(plain.logits!.data.buffer), Buffer.from(same.logits!.data.buffer))).toBe(0);
      // Capturing the pattern switches attention to the instrumented path (materialized
      // softmax): the same math in another summation order, so equal up to float rounding.
      const hooked = await model.run(tokens, { capture: ['blocks.*.attn.hook_pattern'] });
      expect(compare(hooked.logits!.data, plain.logits!.data, 1e-6).relError).toBeLessThanOrEqual(1e-6);
    });
  });
}
