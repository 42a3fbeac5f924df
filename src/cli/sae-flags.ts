// --sae DIR [--sae-hook HOOK] [--sae-error-term] [--feature-clamp I=V]... [--feature-steer I=S]...
// [--feature-zero I]...: attaches the SAE (its hooks can then be captured like any other) and
// turns the feature flags into hook edits.
import type { Model } from '../model/Model.js';
import { featureHooks } from '../sae/features.js';
import { loadSae } from '../sae/Sae.js';
import { UsageError } from './args.js';

function pairs(specs: readonly string[], flag: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of specs) {
    const eq = s.indexOf('=');
    const i = Number(s.slice(0, eq)), v = Number(s.slice(eq + 1));
    if (eq <= 0 || !Number.isInteger(i) || i < 0 || !Number.isFinite(v)) throw new UsageError(`${flag} expects FEATURE=NUMBER, got '${s}'`);
    out.set(i, v);
  }
  return out;
}

/** The feature edits of the flags; usage errors for malformed ones or feature flags without --sae. */
export function featureEditsFromFlags(flags: ReadonlyMap<string, string[]>): { clamp: Map<number, number>; steer: Map<number, number>; zero: number[] } {
  const clamp = pairs(flags.get('feature-clamp') ?? [], '--feature-clamp');
  const steer = pairs(flags.get('feature-steer') ?? [], '--feature-steer');
  const zero = (flags.get('feature-zero') ?? []).map((s) => {
    const i = Number(s);
    if (!Number.isInteger(i) || i < 0) throw new UsageError(`--feature-zero expects a feature index, got '${s}'`);
    return i;
  });
  if (!flags.has('sae') && (clamp.size || steer.size || zero.length || flags.has('sae-error-term') || flags.has('sae-hook')))
    throw new UsageError('--feature-clamp, --feature-steer, --feature-zero, --sae-hook and --sae-error-term need --sae DIR');
  return { clamp, steer, zero };
}

/** Attaches the --sae SAE (if any) and returns the feature edits as a hook map. */
export async function saeFromFlags(model: Model, flags: ReadonlyMap<string, string[]>): Promise<Record<string, unknown[]>> {
  const dir = flags.get('sae')?.[0];
  const { clamp, steer, zero } = featureEditsFromFlags(flags);
  if (!dir) return {};
  const hook = flags.get('sae-hook')?.[0];
  const sae = await loadSae(dir, hook ? { hook } : {});
  const attached = await model.attachSae(sae, { ...(hook ? { hook } : {}), useErrorTerm: flags.has('sae-error-term') });
  return featureHooks(attached, { clamp, steer, zero });
}
