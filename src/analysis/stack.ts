// Shared pieces of the residual-stream helpers: TransformerLens's pos_slice, reading captured
// activations with a helpful error, stacking components and the cached-scale LayerNorm.
// Tests: test/analysis-resid.test.ts.
import { InvalidInputError } from '../errors.js';
import type { ActivationCache, Model } from '../model/Model.js';
import { checkInteger, invalid, isObject } from '../model/validate.js';
import { Tensor } from '../tensor.js';

/**
 * Positions to keep, as TransformerLens's `pos_slice`: one position (negative from the end; the
 * position axis is dropped, as TL's integer slice), a list of positions, or a Python-style slice
 * `{ start, stop, step }`. Defaults to every position.
 */
export type PosSlice = number | readonly number[] | { start?: number; stop?: number; step?: number };

/** A stack of residual-stream components with TransformerLens's labels. */
export interface ResidStack {
  /** `[components, batch, pos, d_model]` (`[components, batch, d_model]` with an integer posSlice). */
  stack: Tensor;
  /** One label per component, as TL's `return_labels` (`'0_pre'`, `'final_post'`, `'embed'`, `'L0H1'`, ...). */
  labels: string[];
}

/** Resolved positions of a slice over T positions, and whether the axis is dropped. */
export interface Positions {
  indices: number[];
  drop: boolean;
}

export function resolvePosSlice(slice: PosSlice | undefined, T: number): Positions {
  if (slice === undefined) return { indices: Array.from({ length: T }, (_, i) => i), drop: false };
  const at = (p: unknown, what: string) => {
    checkInteger(p, what, -T, T - 1);
    return (p as number) < 0 ? T + (p as number) : (p as number);
  };
  if (typeof slice === 'number') return { indices: [at(slice, 'posSlice')], drop: true };
  if (Array.isArray(slice)) return { indices: slice.map((p, i) => at(p, `posSlice[${i}]`)), drop: false };
  if (!isObject(slice)) invalid('posSlice must be a position, a list of positions or { start, stop, step }');
  const { start, stop, step = 1 } = slice as { start?: number; stop?: number; step?: number };
  for (const [k, v] of [['start', start], ['stop', stop]] as const) if (v !== undefined && !Number.isInteger(v)) invalid(`posSlice.${k} must be an integer`);
  if (!Number.isInteger(step) || step === 0) invalid('posSlice.step must be a non-zero integer');
  // Python's slice.indices: clamp into range, negatives from the end.
  const norm = (v: number | undefined, dflt: number, lo: number, hi: number) => (v === undefined ? dflt : Math.min(Math.max(v < 0 ? v + T : v, lo), hi));
  const indices: number[] = [];
  if (step > 0) for (let i = norm(start, 0, 0, T); i < norm(stop, T, 0, T); i += step) indices.push(i);
  else for (let i = norm(start, T - 1, -1, T - 1); i > norm(stop, -1, -1, T - 1); i += step) indices.push(i);
  return { indices, drop: false };
}

/** The activation `name` from `cache`, with an error that says what to capture. */
export function cached(cache: ActivationCache, name: string, what: string, capture: string): Tensor {
  if (!cache || typeof (cache as { has?: unknown }).has !== 'function') invalid(`${what} needs an ActivationCache (a run's result.cache)`);
  if (!cache.has(name)) throw new InvalidInputError('ERR_INVALID_INPUT', `${what} reads '${name}', which this run did not capture: capture '${capture}'`);
  return cache.get(name);
}

/** `[B, T, ...rest]` to `[B, P, ...rest]` (or `[B, ...rest]` when the slice drops the axis). */
export function slicePositions(t: Tensor, pos: Positions): { data: Float32Array; shape: number[] } {
  const [B, T, ...rest] = t.shape as number[];
  const w = rest.reduce((a, b) => a * b, 1);
  const P = pos.indices.length;
  const data = new Float32Array(B! * P * w);
  for (let b = 0; b < B!; b++)
    pos.indices.forEach((p, i) => data.set(t.data.subarray((b * T! + p) * w, (b * T! + p + 1) * w), (b * P + i) * w));
  return { data, shape: pos.drop ? [B!, ...rest] : [B!, P, ...rest] };
}

/** The model's batch and position counts as the cache holds them (from `hook`'s tensor). */
export function batchPos(t: Tensor): { B: number; T: number } {
  return { B: t.shape[0]!, T: t.shape[1]! };
}

/** Stacks equal-shaped components into `[C, ...shape]`. */
export function stackOf(parts: readonly { data: Float32Array; shape: number[] }[], shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(parts.length * n);
  parts.forEach((p, i) => out.set(p.data, i * n));
  return new Tensor([parts.length, ...shape], out);
}

/** `layer` as TL reads it: undefined or -1 is n_layers; otherwise an integer in [0, n_layers]. */
export function layerOption(model: Model, layer: number | undefined, what: string): number {
  if (layer === undefined || layer === -1) return model.config.nLayers;
  checkInteger(layer, `${what}: layer`, 0, model.config.nLayers);
  return layer;
}

/**
 * TransformerLens's `apply_ln_to_stack` with the cached scale (`recompute_ln=False`): each
 * component is centred (LayerNorm models) and divided by the scale the norm at the input of
 * `layer` computed on the full residual stream (`ln_final` for `layer` = n_layers, else
 * `ln1`, or `ln2` with `mlpInput`). No weight or bias is applied, as in TL (which expects
 * them folded into the next matrix).
 */
export function lnCached(model: Model, cache: ActivationCache, stack: Tensor, layer: number, mlpInput: boolean, pos: Positions, what: string): Tensor {
  const key = layer === model.config.nLayers ? 'ln_final.hook_scale' : `blocks.${layer}.ln${mlpInput ? 2 : 1}.hook_scale`;
  const capture = layer === model.config.nLayers ? 'ln_final.hook_scale' : `blocks.*.ln${mlpInput ? 2 : 1}.hook_scale`;
  const scale = cached(cache, key, what, capture);
  if (scale.shape.length !== 3 || scale.shape[2] !== 1) invalid(`${what}: '${key}' has shape [${scale.shape.join(', ')}], not [batch, pos, 1]`);
  const sliced = slicePositions(scale, pos);
  const s = sliced.data;  // one scale per (batch, position)
  const d = stack.shape[stack.shape.length - 1]!;
  const rows = s.length;
  const inner = sliced.shape.slice(0, -1);  // [batch, pos] (or [batch])
  if (stack.shape.length < inner.length + 1 || stack.shape.slice(-1 - inner.length, -1).join() !== inner.join())
    invalid(`${what}: the stack [${stack.shape.join(', ')}] must end in [${inner.join(', ')}, d_model], the positions of '${key}' after posSlice`);
  const center = model.config.normalization === 'LN';
  const out = new Float32Array(stack.size);
  for (let r = 0; r < stack.size / d; r++) {
    const x = stack.data.subarray(r * d, (r + 1) * d);
    let mean = 0;
    if (center) {
      for (const v of x) mean += v;
      mean = Math.fround(mean / d);
    }
    const sc = s[r % rows]!;
    for (let j = 0; j < d; j++) out[r * d + j] = Math.fround(x[j]! - mean) / sc;
  }
  return new Tensor(stack.shape, out);
}
