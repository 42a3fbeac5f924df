// Feature edits on an attached SAE, as hook maps for run/generate: clamp (set feature i's
// activation, Golden-Gate style), zero-ablate, and steer (add strength x W_dec[i] to the SAE's
// output). Keep the SAE's error term on to change nothing but the edited features.
import { InvalidInputError } from '../errors.js';
import { edits, type Edit, type EditSelection } from '../hooks/edits.js';
import type { AttachedSae } from '../model/Model.js';

/** Feature edits for {@link featureHooks}. */
export interface FeatureEditOptions {
  /**
   * Feature index -> value its activation is set to (in acts_post's scale: for a TopK SAE with
   * rescale_acts_by_decoder_norm, activation × ‖W_dec[i]‖).
   */
  clamp?: ReadonlyMap<number, number> | Readonly<Record<number, number>>;
  /** Feature index -> strength: adds strength x W_dec[i] to the SAE's output. */
  steer?: ReadonlyMap<number, number> | Readonly<Record<number, number>>;
  /** Features whose activation is set to 0. */
  zero?: readonly number[];
  /** Which positions and rows (as for any edit). Defaults to every position. */
  select?: Pick<EditSelection, 'positions' | 'rows'>;
}

function entries(m: FeatureEditOptions['clamp']): [number, number][] {
  if (!m) return [];
  return m instanceof Map ? [...m] : Object.entries(m).map(([k, v]) => [Number(k), v as number]);
}

/**
 * Hook map with the edits at `<hook>.hook_sae_acts_post` (clamp, zero) and
 * `<hook>.hook_sae_output` (steer); merge it with others via mergeHooks.
 */
export function featureHooks(attached: AttachedSae, options: FeatureEditOptions): Record<string, Edit[]> {
  const { dSae } = attached.sae.cfg;
  const check = (i: number) => {
    if (!Number.isInteger(i) || i < 0 || i >= dSae) throw new InvalidInputError('ERR_FEATURE_OUT_OF_RANGE', `feature ${i} is outside [0, ${dSae}) of the SAE at '${attached.hook}'`);
  };
  const sel = options.select ?? {};
  const acts: Edit[] = [];
  for (const [i, v] of entries(options.clamp)) {
    check(i);
    if (!Number.isFinite(v)) throw new InvalidInputError('ERR_INVALID_INPUT', `clamp value for feature ${i} must be finite`);
    acts.push(edits.set([v], { ...sel, heads: [i] }));
  }
  const zero = options.zero ?? [];
  zero.forEach(check);
  if (zero.length) acts.push(edits.zero({ ...sel, heads: [...zero] }));
  const out: Edit[] = [];
  for (const [i, s] of entries(options.steer)) {
    check(i);
    if (!Number.isFinite(s)) throw new InvalidInputError('ERR_INVALID_INPUT', `steering strength for feature ${i} must be finite`);
    out.push(edits.add(attached.sae.decoderDirection(i), { ...sel, scale: s }));
  }
  const hooks: Record<string, Edit[]> = {};
  if (acts.length) hooks[attached.hooks.hook_sae_acts_post] = acts;
  if (out.length) hooks[attached.hooks.hook_sae_output] = out;
  return hooks;
}
