// --steer HOOK=FILE.safetensors[:SCALE] and --control-vector FILE.gguf[:SCALE] -> hook edits.
import type { HookMap, Model } from '../model/Model.js';
import { resolveHooks } from '../hooks/names.js';
import { mergeHooks, steeringHooks } from '../steering/steer.js';
import { loadControlVector, loadSingleVector } from '../steering/vectors.js';
import { UsageError } from './args.js';

/** Splits `FILE[:SCALE]`; the scale is the part after the last ':' when it is a number. */
export function splitScale(spec: string, flag: string): { file: string; scale: number } {
  const i = spec.lastIndexOf(':');
  if (i > 0) {
    const tail = spec.slice(i + 1);
    if (tail !== '' && !Number.isNaN(Number(tail))) {
      const scale = Number(tail);
      if (!Number.isFinite(scale)) throw new UsageError(`${flag}: scale '${tail}' is not a finite number`);
      return { file: spec.slice(0, i), scale };
    }
  }
  return { file: spec, scale: 1 };
}

/** Hook edits for every --steer and --control-vector flag, in the order given. */
export function steeringFromFlags(model: Model, steer: readonly string[], controlVectors: readonly string[]): HookMap {
  const maps: HookMap[] = [];
  for (const s of steer) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new UsageError(`--steer expects HOOK=FILE.safetensors[:SCALE], got '${s}'`);
    const hook = s.slice(0, eq);
    resolveHooks([hook], model.hookNames);  // unknown hook: coded error with suggestions
    const { file, scale } = splitScale(s.slice(eq + 1), '--steer');
    maps.push(steeringHooks({ directions: new Map([[hook, loadSingleVector(file)]]), metadata: {} }, scale));
  }
  for (const c of controlVectors) {
    const { file, scale } = splitScale(c, '--control-vector');
    const sv = loadControlVector(file);
    for (const hook of sv.directions.keys()) resolveHooks([hook], model.hookNames);
    maps.push(steeringHooks(sv, scale));
  }
  return mergeHooks(...maps);
}
