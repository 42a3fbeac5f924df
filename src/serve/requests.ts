// Request bodies of `neurotap serve`, checked field by field: an unknown field, a wrong type or
// range is an InvalidInputError naming the field (HTTP 400 with its code). The `neurotap`
// extension object turns into native edits (steering, edits, SAE feature edits) and captures.
import { InvalidInputError } from '../errors.js';
import { edits, type Edit, type PositionSelector } from '../hooks/edits.js';
import { isObject } from '../io/json.js';
import type { AttachedSae, Model } from '../model/Model.js';
import { featureHooks } from '../sae/features.js';
import type { SteeringVector } from '../steering/vectors.js';

export function bad(why: string, code = 'ERR_INVALID_INPUT'): never {
  throw new InvalidInputError(code, why);
}

/** `v` as an object whose keys are all in `allowed`. */
export function fields(v: unknown, where: string, allowed: readonly string[]): Record<string, unknown> {
  if (!isObject(v)) bad(`${where} must be a JSON object`);
  for (const k of Object.keys(v)) if (!allowed.includes(k)) bad(`${where}: unknown field '${k}' (known: ${allowed.join(', ')})`);
  return v;
}

export function optNumber(v: unknown, name: string, lo: number, hi: number, integer = false): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v)))
    bad(`${name} must be ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v;
}

export function optBoolean(v: unknown, name: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') bad(`${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function stringList(v: unknown, name: string): string[] {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) bad(`${name} must be a string or an array of strings`);
  return v as string[];
}

function numberList(v: unknown, name: string): number[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) bad(`${name} must be an array of finite numbers`);
  return v as number[];
}

/** Token ids or a text, as `prompt` / `tokens` / `text` give them. */
export function promptTokens(model: Model, v: unknown, name: string): number[] {
  if (typeof v === 'string') {
    if (!model.tokenizer) bad(`${name} is text but the model folder has no tokenizer.json; send token ids`, 'ERR_NO_TOKENIZER');
    return model.tokenize(v)[0]!;
  }
  if (Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t))) {
    const V = model.config.dVocab;
    (v as number[]).forEach((t, i) => {
      if (t < 0 || t >= V) bad(`${name}[${i}] = ${t} is not a token id in [0, ${V})`, 'ERR_TOKEN_OUT_OF_RANGE');
    });
    return v as number[];
  }
  bad(`${name} must be a string or a non-empty array of token ids`);
}

/** What a server makes available to requests by name. */
export interface ServeContext {
  model: Model;
  /** Steering vectors loaded at start-up, by name. */
  vectors: ReadonlyMap<string, SteeringVector>;
}

/** The `neurotap` object of a request, as native edits and capture patterns. */
export interface Interventions {
  hooks: Record<string, Edit[]>;
  capture: string[];
}

function positionsOf(v: unknown, name: string): PositionSelector | undefined {
  if (v === undefined) return undefined;
  if (v === 'all' || v === 'last' || v === 'prompt' || v === 'generated') return v;
  if (Array.isArray(v) && v.every((p) => Number.isInteger(p) && p >= 0)) return v as number[];
  bad(`${name} must be 'all', 'last', 'prompt', 'generated' or an array of positions`);
}

const EDIT_OPS = ['add', 'set', 'zero', 'meanAblate', 'scale', 'projectOut', 'projectionCap'];

/** Parses `neurotap: { steering, edits, features, capture }` (each optional). */
export function interventions(ctx: ServeContext, v: unknown): Interventions {
  const out: Interventions = { hooks: {}, capture: [] };
  if (v === undefined || v === null) return out;
  const o = fields(v, 'neurotap', ['steering', 'edits', 'features', 'capture']);
  const push = (hook: string, e: Edit) => (out.hooks[hook] ??= []).push(e);

  if (o.steering !== undefined) {
    if (!Array.isArray(o.steering)) bad('neurotap.steering must be an array');
    o.steering.forEach((s, i) => {
      const where = `neurotap.steering[${i}]`;
      const f = fields(s, where, ['hook', 'vector', 'name', 'scale', 'positions']);
      const scale = optNumber(f.scale, `${where}.scale`, -1e6, 1e6) ?? 1;
      const positions = positionsOf(f.positions, `${where}.positions`);
      const sel = positions !== undefined ? { positions } : {};
      if ((f.vector === undefined) === (f.name === undefined)) bad(`${where} needs exactly one of 'vector' and 'name'`);
      if (f.vector !== undefined) {
        if (typeof f.hook !== 'string') bad(`${where}.hook must be a hook name`);
        push(f.hook, edits.add(Float32Array.from(numberList(f.vector, `${where}.vector`)), { ...sel, scale }));
        return;
      }
      const sv = typeof f.name === 'string' ? ctx.vectors.get(f.name) : undefined;
      if (!sv) bad(`${where}.name: no steering vector '${String(f.name)}' is loaded (loaded: ${[...ctx.vectors.keys()].join(', ') || 'none'})`, 'ERR_UNKNOWN_VECTOR');
      if (f.hook !== undefined && (typeof f.hook !== 'string' || !sv.directions.has(f.hook)))
        bad(`${where}.hook: vector '${String(f.name)}' has no direction at ${JSON.stringify(f.hook)} (it has ${[...sv.directions.keys()].join(', ')})`);
      for (const [hook, dir] of sv.directions) if (f.hook === undefined || f.hook === hook) push(hook, edits.add(dir, { ...sel, scale }));
    });
  }

  if (o.edits !== undefined) {
    if (!isObject(o.edits)) bad('neurotap.edits must be an object of hook name -> edit or array of edits');
    for (const [hook, spec] of Object.entries(o.edits))
      for (const [j, e] of ([spec].flat() as unknown[]).entries()) {
        const where = `neurotap.edits['${hook}'][${j}]`;
        const f = fields(e, where, ['op', 'vector', 'scale', 'value', 'mean', 'factor', 'direction', 'min', 'max', 'positions', 'heads']);
        if (typeof f.op !== 'string' || !EDIT_OPS.includes(f.op)) bad(`${where}.op must be one of ${EDIT_OPS.join(', ')}`);
        const edit: Record<string, unknown> = { ...f };
        for (const k of ['vector', 'value', 'mean', 'direction']) if (f[k] !== undefined) edit[k] = Float32Array.from(numberList(f[k], `${where}.${k}`));
        if (f.positions !== undefined) edit.positions = positionsOf(f.positions, `${where}.positions`);
        push(hook, edit as unknown as Edit);
      }
  }

  if (o.features !== undefined) {
    if (!Array.isArray(o.features)) bad('neurotap.features must be an array');
    const attached = [...ctx.model.saes.values()] as AttachedSae[];
    if (o.features.length > 0 && attached.length === 0) bad('neurotap.features needs an SAE (start the server with --sae DIR)', 'ERR_NO_SAE');
    o.features.forEach((x, i) => {
      const where = `neurotap.features[${i}]`;
      const f = fields(x, where, ['index', 'op', 'value', 'sae', 'positions']);
      const sae = f.sae === undefined && attached.length === 1 ? attached[0]! : attached.find((a) => a.hook === f.sae);
      if (!sae) bad(`${where}.sae must name the hook of an attached SAE (${attached.map((a) => a.hook).join(', ')})`);
      const index = optNumber(f.index, `${where}.index`, 0, Number.MAX_SAFE_INTEGER, true);
      if (index === undefined) bad(`${where}.index is required`);
      const value = optNumber(f.value, `${where}.value`, -1e6, 1e6);
      const positions = positionsOf(f.positions, `${where}.positions`);
      const select = positions !== undefined ? { positions } : {};
      let map: Record<string, Edit[]>;
      if (f.op === 'clamp' || f.op === 'steer') {
        if (value === undefined) bad(`${where}.value is required for op '${f.op}'`);
        map = featureHooks(sae, { [f.op]: new Map([[index, value]]), select });
      } else if (f.op === 'zero') {
        map = featureHooks(sae, { zero: [index], select });
      } else {
        bad(`${where}.op must be 'clamp', 'steer' or 'zero'`);
      }
      for (const [hook, list] of Object.entries(map)) for (const e of list) push(hook, e);
    });
  }

  if (o.capture !== undefined) out.capture = stringList(o.capture, 'neurotap.capture');
  return out;
}
