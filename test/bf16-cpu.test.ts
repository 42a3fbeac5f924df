// dtype 'bf16' on the CPU: weight matrices stored in bfloat16, arithmetic in f32. Reference:
// HF transformers in f32 with every 2-D parameter rounded to bf16 (test/fixtures/generate_bf16.py),
// so the same 1e-5 relative tolerance as the f32 fidelity tests holds. Checkpoints already stored
// in bf16 must give bit-identical logits in both dtypes (widening bf16 is exact).
import { describe, expect, it } from 'vitest';

import { loadModel, readSafetensors } from '../src/index.js';
import { compare, fixtureDir, FIXTURES } from './helpers.js';

const TOL = 1e-5;
const ref = readSafetensors(`${FIXTURES}/reference-bf16.safetensors`);

function rows(ids: Int32Array, shape: readonly number[]): number[][] {
  const [B, T] = shape as [number, number];
  return Array.from({ length: B }, (_, b) => Array.from(ids.subarray(b * T, (b + 1) * T)));
}

describe('CPU dtype bf16', () => {
  for (const name of ['gpt2', 'llama-gqa', 'qwen2']) {
    it(`${name}: matches HF with bf16-rounded weight matrices`, async () => {
      const ids = ref.get(`${name}.input_ids`)!;
      const expected = ref.get(`${name}.logits`)!;
      const model = await loadModel(fixtureDir(name), { dtype: 'bf16', threads: 2 });
      try {
        expect(model.dtype).toBe('bf16');
        const r = await model.run(rows(ids.data as Int32Array, ids.shape), { capture: [] });
        const c = compare(r.logits!.data, expected.data as Float32Array, TOL);
        expect(c.relError, `rel error ${c.relError}; first mismatches ${c.firstMismatches.join('; ')}`).toBeLessThanOrEqual(TOL);
        // And it is not just the f32 model: rounding the matrices moves the logits.
        const f32 = await loadModel(fixtureDir(name), { threads: 2 });
        const r32 = await f32.run(rows(ids.data as Int32Array, ids.shape), { capture: [] });
        f32.dispose();
        expect(compare(r32.logits!.data, expected.data as Float32Array, TOL).relError).toBeGreaterThan(10 * TOL);
      } finally {
        model.dispose();
      }
    });
  }

  for (const name of ['gpt2-prefixed-bf16', 'llama3-classic-bf16']) {
    it(`${name}: a bf16 checkpoint gives the same logits in f32 and bf16`, async () => {
      const tokens = [[1, 5, 9, 2, 7, 3, 11, 4, 8, 6]];
      const a = await loadModel(fixtureDir(name), { threads: 2 });
      const b = await loadModel(fixtureDir(name), { dtype: 'bf16', threads: 2 });
      try {
        const ra = await a.run(tokens, { capture: ['blocks.0.hook_resid_post'] });
        const rb = await b.run(tokens, { capture: ['blocks.0.hook_resid_post'] });
        expect(Array.from(rb.logits!.data)).toEqual(Array.from(ra.logits!.data));
        expect(Array.from(rb.cache.get('blocks.0.hook_resid_post').data)).toEqual(Array.from(ra.cache.get('blocks.0.hook_resid_post').data));
      } finally {
        a.dispose();
        b.dispose();
      }
    });
  }
});
