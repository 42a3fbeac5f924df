// Steering vectors from a model: contrastive-pair training (CAA mean difference, or the first
// principal component of the differences) and turning a vector into hook edits.
// Math: src/steering/train-math.ts; tests: test/steering.test.ts.
import { InvalidInputError } from '../errors.js';
import { edits, type Edit } from '../hooks/edits.js';
import type { Family } from '../hooks/names.js';
import type { HookMap, Model } from '../model/Model.js';
import { firstPrincipalComponent, meanDifference } from './train-math.js';
import type { SteeringVector } from './vectors.js';

/** One contrastive example: text (or token ids) showing the behaviour and its opposite. */
export interface ContrastivePair {
  positive: string | readonly number[];
  negative: string | readonly number[];
}

/** Options for {@link trainSteeringVector}. */
export interface TrainSteeringOptions {
  /** Layers whose `blocks.N.hook_resid_post` gets a direction. */
  layers: readonly number[];
  /** `'mean'`: mean of the differences (CAA). `'pca'`: their first principal component, unit norm, uncentered as llama.cpp's cvector-generator. Defaults to `'mean'`. */
  method?: 'mean' | 'pca';
  /** Add the tokenizer's special tokens to text. Defaults to true. */
  addSpecialTokens?: boolean;
}

/**
 * Builds a steering vector from contrastive pairs: for each pair, the residual stream after
 * each chosen layer at the last token of the positive prompt minus that of the negative one,
 * then the mean (CAA) or first principal component of those differences per layer.
 */
export async function trainSteeringVector<F extends Family>(model: Model<F>, pairs: readonly ContrastivePair[], options: TrainSteeringOptions): Promise<SteeringVector> {
  if (pairs.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'trainSteeringVector needs at least one contrastive pair');
  const layers = [...new Set(options.layers)];
  if (layers.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'trainSteeringVector needs at least one layer');
  for (const l of layers)
    if (!Number.isInteger(l) || l < 0 || l >= model.config.nLayers)
      throw new InvalidInputError('ERR_INVALID_INPUT', `layer ${l} is outside [0, ${model.config.nLayers})`);
  const method = options.method ?? 'mean';
  if (method !== 'mean' && method !== 'pca') throw new InvalidInputError('ERR_INVALID_INPUT', `unknown method '${String(method)}' (mean, pca)`);
  const hooks = layers.map((l) => `blocks.${l}.hook_resid_post`);
  const d = model.config.dModel;

  const lastToken = async (input: string | readonly number[]): Promise<Float32Array[]> => {
    const tokens = typeof input === 'string' ? model.tokenize(input, options.addSpecialTokens ?? true) : [Array.from(input)];
    const { cache } = await model.run(tokens, { capture: hooks, returnLogits: false });
    const T = tokens[0]!.length;
    return hooks.map((h) => cache.get(h).data.slice((T - 1) * d, T * d));
  };

  const diffs: Float32Array[][] = layers.map(() => []);
  for (const pair of pairs) {
    const pos = await lastToken(pair.positive);
    const neg = await lastToken(pair.negative);
    layers.forEach((_, i) => diffs[i]!.push(pos[i]!.map((x, j) => x - neg[i]![j]!)));
  }
  const directions = new Map<string, Float32Array>();
  layers.forEach((_, i) => directions.set(hooks[i]!, method === 'mean' ? meanDifference(diffs[i]!) : firstPrincipalComponent(diffs[i]!)));
  return {
    directions,
    metadata: { method, layers: layers.join(','), pairs: String(pairs.length), model: model.dir, family: model.config.family },
  };
}

/** Edits that add `scale` × each direction at its hook, at every position. */
export function steeringHooks<F extends Family = Family>(sv: SteeringVector, scale = 1): HookMap<F> {
  const hooks: Record<string, Edit[]> = {};
  for (const [hook, v] of sv.directions) (hooks[hook] ??= []).push(edits.add(v, { scale }));
  return hooks as HookMap<F>;
}

/** Merges hook maps: edits at the same hook run in argument order. */
export function mergeHooks<F extends Family = Family>(...maps: HookMap<F>[]): HookMap<F> {
  const out: Record<string, unknown[]> = {};
  for (const m of maps)
    for (const [hook, spec] of Object.entries(m)) {
      if (spec === undefined) continue;
      (out[hook] ??= []).push(...(Array.isArray(spec) ? spec : [spec]));
    }
  return out as HookMap<F>;
}
