// The model's own final norm and unembedding applied to residual-stream vectors, by the engine:
// each vector becomes the last block's output of a one-token row (a patch edit at
// blocks.{n-1}.hook_resid_post), optionally with a given ln_final scale, and the run reads
// unembed.hook_in (ln_final's output) or unembed.hook_out. Tests: test/analysis-resid.test.ts.
import { edits } from '../hooks/edits.js';
import type { HookSpec } from '../hooks/edits.js';
import type { Model } from '../model/Model.js';
import { Tensor } from '../tensor.js';

/** Floats a chunk of rows may produce: bounds each forward's output and workspace. */
const CHUNK_FLOATS = 1 << 24;

/**
 * For each of the `rows` vectors of width d_model in `x`: ln_final(x) (`'normalized'`,
 * `[rows, d_model]`, weight and bias applied) or the unembedding of it before any final
 * soft-cap (`'logits'`, `[rows, vocab]`). With `scales` (one per row), ln_final divides by that
 * scale instead of computing one (TransformerLens's hooked-scale semantics).
 */
export async function finalHead(model: Model, x: Float32Array, scales: Float32Array | null, output: 'normalized' | 'logits'): Promise<Float32Array> {
  const d = model.config.dModel;
  const width = output === 'logits' ? model.config.dVocab : d;
  const rows = x.length / d;
  const out = new Float32Array(rows * width);
  const hook = output === 'logits' ? 'unembed.hook_out' : 'unembed.hook_in';
  const last = `blocks.${model.config.nLayers - 1}.hook_resid_post`;
  const chunk = Math.max(1, Math.min(4096, Math.floor(CHUNK_FLOATS / Math.max(width, d))));
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const hooks: Record<string, HookSpec> = { [last]: edits.patch(new Tensor([n, 1, d], x.slice(r0 * d, (r0 + n) * d))) };
    if (scales) hooks['ln_final.hook_scale'] = edits.patch(new Tensor([n, 1, 1], scales.slice(r0, r0 + n)));
    // One token per row: the blocks run on a placeholder id whose output the patch replaces.
    const tokens = Array.from({ length: n }, () => [0]);
    const r = await model.run(tokens, { capture: [hook], hooks: hooks as never, returnLogits: false });
    out.set(r.cache.get(hook).data, r0 * width);
  }
  return out;
}
