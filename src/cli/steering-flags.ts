// --steer [HOOK=]FILE.safetensors[#TENSOR][:SCALE] and --control-vector FILE.gguf[:SCALE] -> hook
// edits. Tests: test/steering.test.ts, test/cli-steer.test.ts.
import { existsSync } from 'node:fs';

import { UnknownHookError } from '../errors.js';
import type { HookMap, Model } from '../model/Model.js';
import { resolveHooks } from '../hooks/names.js';
import { mergeHooks, steeringHooks } from '../steering/steer.js';
import { loadControlVector, loadSingleVector, loadSteeringSafetensors } from '../steering/vectors.js';
import { UsageError } from './args.js';

const STEER_FORMS = 'HOOK=FILE.safetensors[#TENSOR][:SCALE] or FILE.safetensors[#TENSOR][:SCALE]';

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

/** One --steer value: the hook (HOOK= form), the file, the tensor (#TENSOR) and the scale. */
export interface SteerSpec {
  hook?: string;
  file: string;
  tensor?: string;
  scale: number;
}

/**
 * Parses a --steer value. `HOOK=` is the part before the first '=' when that part holds no '/'
 * (so a path such as `runs/lr=0.1/v.safetensors` is a file); `#TENSOR` is the part after the last
 * '#' unless the whole name is an existing file. Without `HOOK=` or `#TENSOR`, the file must
 * exist or end in `.safetensors`: anything else is a usage error naming both forms.
 */
export function parseSteerSpec(spec: string): SteerSpec {
  const eq = spec.indexOf('=');
  const hook = eq > 0 && !spec.slice(0, eq).includes('/') ? spec.slice(0, eq) : undefined;
  const { file: target, scale } = splitScale(hook !== undefined ? spec.slice(eq + 1) : spec, '--steer');
  let file = target;
  let tensor: string | undefined;
  const hash = target.lastIndexOf('#');
  if (hash >= 0 && !existsSync(target)) {
    file = target.slice(0, hash);
    tensor = target.slice(hash + 1);
    if (tensor === '') throw new UsageError(`--steer: nothing after '#' in '${spec}' (expected ${STEER_FORMS})`);
  }
  if (file === '' || (hook === undefined && tensor === undefined && !existsSync(file) && !file.endsWith('.safetensors')))
    throw new UsageError(`--steer expects ${STEER_FORMS}, got '${spec}'`);
  return { ...(hook !== undefined ? { hook } : {}), file, ...(tensor !== undefined ? { tensor } : {}), scale };
}

/** Checks that a tensor name of `file` is a hook of the model, saying how to apply it elsewhere. */
function checkTensorHook(model: Model, name: string, file: string): void {
  try {
    resolveHooks([name], model.hookNames);
  } catch (err) {
    if (!(err instanceof UnknownHookError)) throw err;
    throw new UnknownHookError(err.code, `steering file ${file}: tensor '${name}' is not a hook of this model (${err.message}); add it at a hook with --steer HOOK=${file}#${name}`, err.suggestions);
  }
}

/** Usage errors in --steer and --control-vector values, before the model loads. */
export function checkSteeringFlags(steer: readonly string[], controlVectors: readonly string[]): void {
  for (const s of steer) parseSteerSpec(s);
  for (const c of controlVectors) splitScale(c, '--control-vector');
}

/** Hook edits for every --steer and --control-vector flag, in the order given. */
export function steeringFromFlags(model: Model, steer: readonly string[], controlVectors: readonly string[]): HookMap {
  const maps: HookMap[] = [];
  for (const s of steer) {
    const { hook, file, tensor, scale } = parseSteerSpec(s);
    if (hook !== undefined) {
      resolveHooks([hook], model.hookNames);  // unknown hook: coded error with suggestions
      maps.push(steeringHooks({ directions: new Map([[hook, loadSingleVector(file, tensor)]]), metadata: {} }, scale));
    } else if (tensor !== undefined) {
      const v = loadSingleVector(file, tensor);
      checkTensorHook(model, tensor, file);
      maps.push(steeringHooks({ directions: new Map([[tensor, v]]), metadata: {} }, scale));
    } else {
      const sv = loadSteeringSafetensors(file);
      for (const name of sv.directions.keys()) checkTensorHook(model, name, file);
      maps.push(steeringHooks(sv, scale));
    }
  }
  for (const c of controlVectors) {
    const { file, scale } = splitScale(c, '--control-vector');
    const sv = loadControlVector(file);
    for (const hook of sv.directions.keys()) resolveHooks([hook], model.hookNames);
    maps.push(steeringHooks(sv, scale));
  }
  return mergeHooks(...maps);
}
