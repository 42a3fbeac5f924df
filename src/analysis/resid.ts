// TransformerLens's ActivationCache views of the residual stream over a neurotap run's cache:
// accumulated_resid (and the logit lens on it), decompose_resid, stack_head_results and
// apply_ln_to_stack. Definitions: TL's ActivationCache.py; reference:
// test/fixtures/generate_analysis.py; tests: test/analysis-resid.test.ts.
import type { ActivationCache, Model } from '../model/Model.js';
import { checkBoolean, checkObject, invalid } from '../model/validate.js';
import { Tensor } from '../tensor.js';
import { finalHead } from './lens.js';
import { batchPos, cached, layerOption, lnCached, resolvePosSlice, slicePositions, stackOf, type Positions, type PosSlice, type ResidStack } from './stack.js';

/** Options for {@link accumulatedResid}. */
export interface AccumulatedResidOptions {
  /** Components up to the input of this block: `resid_pre` of blocks 0 .. layer; n_layers (or -1) adds the final `resid_post`. Defaults to n_layers. */
  layer?: number;
  /** Add each earlier block's `resid_mid` after its `resid_pre`. Defaults to false. */
  inclMid?: boolean;
  /** Add block `layer`'s `resid_mid` (the MLP's input rather than attention's). Defaults to false. */
  mlpInput?: boolean;
  /**
   * Normalize each component. At the final layer this applies `ln_final` with statistics
   * recomputed per component, weight and bias included (TL's `accumulated_resid(apply_ln=True)`);
   * otherwise (or with `recomputeLn: false`) it centres (LayerNorm) and divides by the cached
   * scale of the norm at the input of `layer`, without weights (TL's `apply_ln_to_stack`).
   * Defaults to false.
   */
  applyLn?: boolean;
  /** With `applyLn` at the final layer: recompute the norm per component (true) or use the cached `ln_final.hook_scale` (false). Defaults to true at the final layer, as TL; only the final layer can recompute. */
  recomputeLn?: boolean;
  /** Positions to keep. Defaults to all. */
  posSlice?: PosSlice;
}

/** Options for {@link logitLens}. */
export type LogitLensOptions = Pick<AccumulatedResidOptions, 'layer' | 'inclMid' | 'posSlice'> & {
  /** Recompute ln_final's statistics per component (true), or divide each by the final residual stream's cached `ln_final.hook_scale` (false). Defaults to true. */
  recomputeLn?: boolean;
};

/** Options for {@link decomposeResid}. */
export interface DecomposeResidOptions {
  /** Decompose the input of this block (n_layers or -1: the final residual stream). Defaults to n_layers. */
  layer?: number;
  /** Decompose block `layer`'s MLP input: add its attention output. Defaults to false. */
  mlpInput?: boolean;
  /** Which layer outputs: `'all'`, `'attn'` or `'mlp'`. Defaults to `'all'`. */
  mode?: 'all' | 'attn' | 'mlp';
  /** Centre and divide by the cached scale of the norm at that input (TL's `apply_ln_to_stack`). Defaults to false. */
  applyLn?: boolean;
  /** Positions to keep. Defaults to all. */
  posSlice?: PosSlice;
  /** Start with `hook_embed` (and `hook_pos_embed` for learned positions). Defaults to true. */
  inclEmbeds?: boolean;
}

/** Options for {@link stackHeadResults}. */
export interface StackHeadResultsOptions {
  /** Heads of the blocks before this one (n_layers or -1: all). Defaults to n_layers. */
  layer?: number;
  /** Add `'remainder'`: block `layer - 1`'s `resid_post` minus the heads' sum. Defaults to false. */
  inclRemainder?: boolean;
  /** Centre and divide by the cached scale of the norm at the input of `layer`. Defaults to false. */
  applyLn?: boolean;
  /** Positions to keep. Defaults to all. */
  posSlice?: PosSlice;
}

/** Options for {@link applyLnToStack}. */
export interface ApplyLnOptions {
  /** The stack is the input of this block (n_layers or -1: `ln_final`). Defaults to n_layers. */
  layer?: number;
  /** The MLP's input (`ln2`) rather than attention's (`ln1`). Defaults to false. */
  mlpInput?: boolean;
  /** The posSlice the stack was cut with (applied to the cached scale). Defaults to all. */
  posSlice?: PosSlice;
}

function checkOptions(options: object, what: string, booleans: readonly string[]): void {
  checkObject(options, `${what} options`);
  for (const k of booleans) checkBoolean((options as Record<string, unknown>)[k], `${what}: ${k}`);
}

function residMid(model: Model, cache: ActivationCache, l: number, pos: Positions, what: string) {
  if (model.config.parallelResidual) invalid(`${what}: this model has a parallel residual (attention and MLP both read resid_pre): there is no resid_mid`);
  return slicePositions(cached(cache, `blocks.${l}.hook_resid_mid`, what, 'blocks.*.hook_resid_mid'), pos);
}

/** The components and labels of TL's accumulated_resid, before any norm. */
function accumulated(model: Model, cache: ActivationCache, o: AccumulatedResidOptions, what: string): { parts: { data: Float32Array; shape: number[] }[]; labels: string[]; layer: number; pos: Positions } {
  const n = model.config.nLayers;
  const layer = layerOption(model, o.layer, what);
  const first = cached(cache, 'blocks.0.hook_resid_pre', what, 'blocks.*.hook_resid_pre');
  const pos = resolvePosSlice(o.posSlice, batchPos(first).T);
  const parts: { data: Float32Array; shape: number[] }[] = [];
  const labels: string[] = [];
  for (let l = 0; l <= layer; l++) {
    if (l === n) {
      parts.push(slicePositions(cached(cache, `blocks.${n - 1}.hook_resid_post`, what, `blocks.${n - 1}.hook_resid_post`), pos));
      labels.push('final_post');
      continue;
    }
    parts.push(slicePositions(cached(cache, `blocks.${l}.hook_resid_pre`, what, 'blocks.*.hook_resid_pre'), pos));
    labels.push(`${l}_pre`);
    if ((o.inclMid && l < layer) || (o.mlpInput && l === layer)) {
      parts.push(residMid(model, cache, l, pos, what));
      labels.push(`${l}_mid`);
    }
  }
  return { parts, labels, layer, pos };
}

/**
 * The residual stream at each layer, TransformerLens's `ActivationCache.accumulated_resid`:
 * `resid_pre` of blocks 0 .. `layer` (with `resid_mid`s as asked), and at n_layers the final
 * `resid_post`, as `[components, batch, pos, d_model]`. Reads `blocks.*.hook_resid_pre`, the last
 * `hook_resid_post` (and `hook_resid_mid`, the norm's `hook_scale` as `applyLn` needs) from the
 * run's cache; a missing one is ERR_INVALID_INPUT naming what to capture. Async because the
 * recomputed final norm runs in the engine.
 */
export async function accumulatedResid(model: Model, cache: ActivationCache, options: AccumulatedResidOptions = {}): Promise<ResidStack> {
  const what = 'accumulatedResid';
  checkOptions(options, what, ['inclMid', 'mlpInput', 'applyLn', 'recomputeLn']);
  const { parts, labels, layer, pos } = accumulated(model, cache, options, what);
  const stack = stackOf(parts, parts[0]!.shape);
  if (!options.applyLn) return { stack, labels };
  const final = layer === model.config.nLayers;
  const recompute = options.recomputeLn ?? final;
  if (recompute && !final) invalid(`${what}: recomputeLn needs the final layer (layer ${model.config.nLayers}); earlier layers use the cached scale`);
  if (!recompute) return { stack: lnCached(model, cache, stack, layer, options.mlpInput ?? false, pos, what), labels };
  return { stack: new Tensor(stack.shape, await finalHead(model, stack.data, null, 'normalized')), labels };
}

/**
 * The logit lens: each component of {@link accumulatedResid} through `ln_final` and the
 * unembedding, `[components, batch, pos, vocab]`, i.e. TL's
 * `model.unembed(cache.accumulated_resid(apply_ln=True))`. The logits are before any final
 * soft-cap (Gemma 2), as `unembed.hook_out`; the `'final_post'` component equals the run's
 * `unembed.hook_out`. With `recomputeLn: false` every component is divided by the final residual
 * stream's cached scale (`ln_final.hook_scale`, which must be captured) before ln_final's weight
 * and bias, as TL's `apply_ln_to_stack` on a model with the norm folded into the unembedding.
 */
export async function logitLens(model: Model, cache: ActivationCache, options: LogitLensOptions = {}): Promise<{ logits: Tensor; labels: string[] }> {
  const what = 'logitLens';
  checkOptions(options, what, ['inclMid', 'recomputeLn']);
  const { parts, labels, pos } = accumulated(model, cache, options, what);
  const inner = parts[0]!.shape.slice(0, -1);  // [batch, pos] (or [batch])
  const stack = stackOf(parts, parts[0]!.shape);
  let scales: Float32Array | null = null;
  if (options.recomputeLn === false) {
    const s = slicePositions(cached(cache, 'ln_final.hook_scale', what, 'ln_final.hook_scale'), pos).data;
    scales = new Float32Array(parts.length * s.length);
    for (let c = 0; c < parts.length; c++) scales.set(s, c * s.length);
  }
  const logits = await finalHead(model, stack.data, scales, 'logits');
  return { logits: new Tensor([parts.length, ...inner, model.config.dVocab], logits), labels };
}

/**
 * The residual stream as the sum of what wrote to it, TransformerLens's `decompose_resid`: the
 * embeddings (`hook_embed`, and `hook_pos_embed` for learned positions), then each block's
 * `hook_attn_out` and `hook_mlp_out` before `layer` (and block `layer`'s `hook_attn_out` with
 * `mlpInput`), `[components, batch, pos, d_model]`. The components sum to the decomposed
 * residual stream (the final `resid_post` by default).
 */
export function decomposeResid(model: Model, cache: ActivationCache, options: DecomposeResidOptions = {}): ResidStack {
  const what = 'decomposeResid';
  checkOptions(options, what, ['mlpInput', 'applyLn', 'inclEmbeds']);
  const mode = options.mode ?? 'all';
  if (mode !== 'all' && mode !== 'attn' && mode !== 'mlp') invalid(`${what}: mode must be 'all', 'attn' or 'mlp'`);
  const layer = layerOption(model, options.layer, what);
  if (options.mlpInput && model.config.parallelResidual) invalid(`${what}: with a parallel residual the MLP reads resid_pre, not resid_pre + attn_out; decompose with mlpInput false`);
  if (options.mlpInput && layer === model.config.nLayers) invalid(`${what}: mlpInput needs a block's input (layer < ${model.config.nLayers})`);
  const embed = cached(cache, 'hook_embed', what, 'hook_embed');
  const pos = resolvePosSlice(options.posSlice, batchPos(embed).T);
  const parts: { data: Float32Array; shape: number[] }[] = [];
  const labels: string[] = [];
  const add = (name: string, capture: string, label: string) => {
    parts.push(slicePositions(cached(cache, name, what, capture), pos));
    labels.push(label);
  };
  if (options.inclEmbeds ?? true) {
    add('hook_embed', 'hook_embed', 'embed');
    if (model.hookIndex('hook_pos_embed') !== undefined) add('hook_pos_embed', 'hook_pos_embed', 'pos_embed');
  }
  for (let l = 0; l < layer; l++) {
    if (mode !== 'mlp') add(`blocks.${l}.hook_attn_out`, 'blocks.*.hook_attn_out', `${l}_attn_out`);
    if (mode !== 'attn') add(`blocks.${l}.hook_mlp_out`, 'blocks.*.hook_mlp_out', `${l}_mlp_out`);
  }
  if (options.mlpInput && mode !== 'mlp') add(`blocks.${layer}.hook_attn_out`, 'blocks.*.hook_attn_out', `${layer}_attn_out`);
  const shape = slicePositions(embed, pos).shape;
  const stack = stackOf(parts, shape);
  return { stack: options.applyLn ? lnCached(model, cache, stack, layer, options.mlpInput ?? false, pos, what) : stack, labels };
}

/**
 * Each attention head's contribution to the residual stream, TransformerLens's
 * `stack_head_results`: `blocks.{l}.attn.hook_result` (head output through its slice of W_O,
 * without the output bias b_O) for the blocks before `layer`, as `[layer * n_heads, batch,
 * pos, d_model]` labelled `L{l}H{h}`, plus the remainder with `inclRemainder`. Capture
 * `blocks.*.attn.hook_result` (computed per head only while captured).
 */
export function stackHeadResults(model: Model, cache: ActivationCache, options: StackHeadResultsOptions = {}): ResidStack {
  const what = 'stackHeadResults';
  checkOptions(options, what, ['inclRemainder', 'applyLn']);
  const layer = layerOption(model, options.layer, what);
  const H = model.config.nHeads;
  const parts: { data: Float32Array; shape: number[] }[] = [];
  const labels: string[] = [];
  let pos: Positions | null = null;
  let shape: number[] = [];
  for (let l = 0; l < layer; l++) {
    const r = cached(cache, `blocks.${l}.attn.hook_result`, what, 'blocks.*.attn.hook_result');  // [B, T, H, d]
    pos ??= resolvePosSlice(options.posSlice, batchPos(r).T);
    const s = slicePositions(r, pos);  // [B, P, H, d] or [B, H, d]
    const d = s.shape[s.shape.length - 1]!;
    const rows = s.data.length / (H * d);
    shape = [...s.shape.slice(0, -2), d];
    for (let h = 0; h < H; h++) {
      const data = new Float32Array(rows * d);
      for (let i = 0; i < rows; i++) data.set(s.data.subarray((i * H + h) * d, (i * H + h + 1) * d), i * d);
      parts.push({ data, shape });
      labels.push(`L${l}H${h}`);
    }
  }
  if (options.inclRemainder) {
    const last = layer === 0 ? null : cached(cache, `blocks.${layer - 1}.hook_resid_post`, what, `blocks.${layer - 1}.hook_resid_post`);
    if (!last) invalid(`${what}: layer 0 has no heads before it and no resid_post to take a remainder of`);
    const rest = slicePositions(last, pos!);
    for (const p of parts) for (let i = 0; i < rest.data.length; i++) rest.data[i]! -= p.data[i]!;
    parts.push(rest);
    labels.push('remainder');
  }
  if (parts.length === 0) {
    const e = cached(cache, 'hook_embed', what, 'hook_embed');
    shape = slicePositions(e, resolvePosSlice(options.posSlice, batchPos(e).T)).shape;
    return { stack: new Tensor([0, ...shape], new Float32Array(0)), labels };
  }
  const stack = stackOf(parts, shape);
  return { stack: options.applyLn ? lnCached(model, cache, stack, layer, false, pos!, what) : stack, labels };
}

/**
 * TransformerLens's `apply_ln_to_stack` with its default cached scale: treats `stack` (ending in
 * the cache's `[batch, pos, d_model]`, cut with the same `posSlice`) as the input of block
 * `layer` (or of ln_final) and centres (LayerNorm) and divides it by the scale that norm
 * computed on the full residual stream. No weight or bias is applied.
 */
export function applyLnToStack(model: Model, cache: ActivationCache, stack: Tensor, options: ApplyLnOptions = {}): Tensor {
  const what = 'applyLnToStack';
  checkOptions(options, what, ['mlpInput']);
  if (!(stack instanceof Tensor)) invalid(`${what} takes a Tensor stack`);
  const layer = layerOption(model, options.layer, what);
  const key = layer === model.config.nLayers ? 'ln_final.hook_scale' : `blocks.${layer}.ln${options.mlpInput ? 2 : 1}.hook_scale`;
  const T = cached(cache, key, what, key.replace(/^blocks\.\d+\./, 'blocks.*.')).shape[1]!;
  return lnCached(model, cache, stack, layer, options.mlpInput ?? false, resolvePosSlice(options.posSlice, T), what);
}
