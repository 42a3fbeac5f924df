// accumulatedResid, logitLens, decomposeResid, stackHeadResults and applyLnToStack against
// TransformerLens's definitions computed on the HF models (test/fixtures/generate_analysis.py).
// Tolerance (f32): 1e-5 x max |reference|, the forward's own tolerance (test/fidelity.test.ts):
// the stacks are the captured activations (within 1e-6 of the reference) moved, centred and
// divided; the logit lens adds the engine's final norm and unembedding.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { accumulatedResid, applyLnToStack, decomposeResid, InvalidInputError, loadModel, logitLens, readSafetensors, stackHeadResults, Tensor, type Model, type RunResult } from '../src/index.js';
import { compare, fixtureDir, ROOT } from './helpers.js';

const TOL = 1e-5;
const DIR = join(ROOT, 'test', 'fixtures', 'analysis');
const MODELS = ['gpt2', 'llama-gqa', 'pythia-parallel', 'gemma2'];

interface Case {
  name: string;
  options: Record<string, unknown>;
  labels?: string[];
}

/** Which helper produced each reference case (by name prefix). */
function helperOf(name: string): 'accumulated' | 'lens' | 'decompose' | 'heads' | null {
  for (const p of ['accumulated', 'lens', 'decompose', 'heads'] as const) if (name === p || name.startsWith(`${p}_`)) return p;
  return null;
}

function expectClose(label: string, ours: Tensor, ref: { shape: readonly number[]; data: unknown }): void {
  expect(ours.shape, `${label}: shape`).toEqual([...ref.shape]);
  const c = compare(ours.data, ref.data as Float32Array, TOL);
  expect(c.relError, `${label}: rel error ${c.relError.toExponential(2)}; ${c.firstMismatches.join('; ')}`).toBeLessThanOrEqual(TOL);
}

for (const name of MODELS) {
  describe(`analysis helpers: ${name}`, () => {
    const ref = readSafetensors(join(DIR, `${name}.safetensors`));
    const meta = JSON.parse(readFileSync(join(DIR, `${name}.json`), 'utf8')) as { cases: Case[]; batch: number; pos: number };
    const ids = Array.from(ref.get('input_ids')!.data as Int32Array, Number);
    const tokens = Array.from({ length: meta.batch }, (_, b) => ids.slice(b * meta.pos, (b + 1) * meta.pos));
    let model: Model;
    let run: RunResult;

    beforeAll(async () => {
      model = await loadModel(fixtureDir(name), { threads: 2 });
      run = await model.run(tokens, {
        capture: ['hook_embed', 'hook_pos_embed', 'blocks.*.hook_resid_*', 'blocks.*.hook_attn_out', 'blocks.*.hook_mlp_out', 'blocks.*.attn.hook_result', 'blocks.*.ln?.hook_scale', 'ln_final.hook_scale', 'unembed.hook_out'].filter(
          (p) => p !== 'hook_pos_embed' || model.hookNames.includes('hook_pos_embed'),
        ),
      });
    });
    afterAll(() => model.dispose());

    for (const c of meta.cases) {
      const helper = helperOf(c.name);
      if (!helper) continue;
      it(`${c.name} ${JSON.stringify(c.options)}`, async () => {
        const r = ref.get(c.name)!;
        if (helper === 'lens') {
          const { logits, labels } = await logitLens(model, run.cache, c.options);
          expect(labels).toEqual(c.labels);
          expectClose(c.name, logits, r);
          return;
        }
        const out = helper === 'accumulated' ? await accumulatedResid(model, run.cache, c.options) : helper === 'decompose' ? decomposeResid(model, run.cache, c.options) : stackHeadResults(model, run.cache, c.options);
        expect(out.labels).toEqual(c.labels);
        expectClose(c.name, out.stack, r);
      });
    }

    it('decomposeResid and stackHeadResults (with the remainder) sum to the final resid_post', () => {
      const last = run.cache.get(`blocks.${model.config.nLayers - 1}.hook_resid_post`);
      for (const { stack } of [decomposeResid(model, run.cache), stackHeadResults(model, run.cache, { inclRemainder: true })]) {
        const [C] = stack.shape as [number];
        const sum = new Float32Array(last.size);
        for (let c = 0; c < C; c++) for (let i = 0; i < last.size; i++) sum[i]! += stack.data[c * last.size + i]!;
        expect(compare(sum, last.data, 1e-5).relError).toBeLessThanOrEqual(1e-5);
      }
    });

    it("the logit lens's final component is the run's unembed.hook_out, and applyLnToStack is the cached-scale norm", async () => {
      const { logits } = await logitLens(model, run.cache);
      const V = model.config.dVocab;
      const final = logits.data.subarray(logits.size - run.cache.get('unembed.hook_out').size);
      expect(compare(final, run.cache.get('unembed.hook_out').data, 1e-5).relError).toBeLessThanOrEqual(1e-5);
      expect(logits.shape).toEqual([model.config.nLayers + 1, ...tokensShape(tokens), V]);
      const { stack } = await accumulatedResid(model, run.cache);
      expectClose('applyLnToStack', applyLnToStack(model, run.cache, stack), ref.get('accumulated_ln_cached')!);
    });

    it('says what to capture when the cache lacks a hook, and refuses what TL cannot do', async () => {
      const bare = await model.run(tokens, { capture: 'blocks.0.hook_resid_pre', returnLogits: false });
      await expect(accumulatedResid(model, bare.cache)).rejects.toThrow(/capture 'blocks\.\*\.hook_resid_pre'/);
      expect(() => stackHeadResults(model, bare.cache)).toThrow(/capture 'blocks\.\*\.attn\.hook_result'/);
      await expect(accumulatedResid(model, run.cache, { layer: 1, applyLn: true, recomputeLn: true })).rejects.toThrow(InvalidInputError);
      await expect(accumulatedResid(model, run.cache, { layer: model.config.nLayers + 1 })).rejects.toThrow(/layer must be an integer/);
      if (model.config.parallelResidual) await expect(accumulatedResid(model, run.cache, { inclMid: true })).rejects.toThrow(/parallel residual/);
      expect(() => decomposeResid(model, run.cache, { posSlice: 99 })).toThrow(/posSlice/);
      // The model is still usable.
      expect((await model.run(tokens, { returnLogits: 'last' })).logits!.shape).toEqual([tokens.length, model.config.dVocab]);
    });
  });
}

function tokensShape(rows: number[][]): number[] {
  return [rows.length, rows[0]!.length];
}

describe('analysis helpers: stackHeadResults at layer 0', () => {
  it('is an empty stack shaped like the embeddings', async () => {
    const model = await loadModel(fixtureDir('gpt2'), { threads: 2 });
    try {
      const r = await model.run([[1, 2, 3]], { capture: ['hook_embed'], returnLogits: false });
      const { stack, labels } = stackHeadResults(model, r.cache, { layer: 0 });
      expect(stack.shape).toEqual([0, 1, 3, model.config.dModel]);
      expect(labels).toEqual([]);
    } finally {
      model.dispose();
    }
  });
});
