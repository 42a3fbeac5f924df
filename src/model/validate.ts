// Checks of what callers pass before any of it reaches native code: token ids, and the types
// and ranges of run, generation and extraction options. Every failure is InvalidInputError
// (ERR_INVALID_INPUT, or ERR_TOKEN_OUT_OF_RANGE for an id outside the vocabulary).
// Tests: test/robustness.test.ts, test/errors.test.ts.
import { InvalidInputError } from '../errors.js';
import { isObject } from '../io/json.js';

export { isObject };

/** Throws InvalidInputError ERR_INVALID_INPUT. */
export function invalid(message: string): never {
  throw new InvalidInputError('ERR_INVALID_INPUT', message);
}

/**
 * Checks one token id: an integer (ERR_INVALID_INPUT otherwise) in [0, vocab)
 * (ERR_TOKEN_OUT_OF_RANGE otherwise). Ids are checked as numbers, before an Int32Array would
 * wrap 2^32 + 1 to 1.
 */
export function checkTokenId(t: unknown, vocab: number, where: string): asserts t is number {
  if (typeof t !== 'number' || !Number.isInteger(t)) invalid(`token at ${where} is not an integer: ${String(t)}`);
  if (t < 0 || t >= vocab) throw new InvalidInputError('ERR_TOKEN_OUT_OF_RANGE', `token id ${t} at ${where} is outside the vocabulary [0, ${vocab})`);
}

/** A copy of `row` as numbers, each id checked with {@link checkTokenId}. */
export function tokenRow(row: ArrayLike<unknown>, vocab: number, where: (p: number) => string): number[] {
  const out = new Array<number>(row.length);
  for (let p = 0; p < row.length; p++) {
    const t = row[p];
    checkTokenId(t, vocab, where(p));
    out[p] = t;
  }
  return out;
}

/** Hook names or globs: one string is one pattern; anything but strings is refused. */
export function patternList(v: unknown, what: string): readonly string[] {
  if (v === undefined) return [];
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || !v.every((p) => typeof p === 'string')) invalid(`${what} must be a hook name or pattern, or an array of them`);
  return v as string[];
}

/** `v` is undefined or an object (not an array). */
export function checkObject(v: unknown, what: string): void {
  if (v !== undefined && !isObject(v)) invalid(`${what} must be an object`);
}

/** `v` is undefined or an integer in [min, max]. */
export function checkInteger(v: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    invalid(`${what} must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? 'inf' : max}], got ${describe(v)}`);
}

/** `v` is undefined or a boolean. */
export function checkBoolean(v: unknown, what: string): void {
  if (v !== undefined && typeof v !== 'boolean') invalid(`${what} must be a boolean, got ${describe(v)}`);
}

/** `v` is undefined or an AbortSignal (or an object that behaves as one). */
export function checkSignal(v: unknown, what: string): void {
  if (v === undefined || v instanceof AbortSignal) return;
  const s = v as { aborted?: unknown; addEventListener?: unknown; throwIfAborted?: unknown };
  if (!isObject(v) || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function' || typeof s.throwIfAborted !== 'function')
    invalid(`${what} must be an AbortSignal, got ${describe(v)}`);
}

function describe(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : typeof v === 'object' && v !== null ? (Array.isArray(v) ? 'an array' : 'an object') : String(v);
}

/** Options of Model.run, checked for type and range (hook names and edits are checked later). */
export function checkRunOptions(o: unknown, nLayers: number): void {
  if (o === undefined) return;
  if (!isObject(o)) invalid('run options must be an object');
  patternList(o.capture, 'capture');
  checkObject(o.hooks, 'hooks');
  checkObject(o.outputs, 'outputs');
  if (isObject(o.outputs))
    for (const [name, buf] of Object.entries(o.outputs)) if (buf !== undefined && !(buf instanceof Float32Array)) invalid(`outputs['${name}'] must be a Float32Array`);
  if (o.returnLogits !== undefined && typeof o.returnLogits !== 'boolean' && o.returnLogits !== 'last') invalid(`returnLogits must be true, false or 'last', got ${describe(o.returnLogits)}`);
  if (o.logitsOutput !== undefined && !(o.logitsOutput instanceof Float32Array)) invalid('logitsOutput must be a Float32Array');
  checkBoolean(o.addSpecialTokens, 'addSpecialTokens');
  checkInteger(o.stopAtLayer, 'stopAtLayer', 0, nLayers);
  checkObject(o.saeFeatures, 'saeFeatures');
  if (isObject(o.saeFeatures) && o.saeFeatures.hooks !== undefined) patternList(o.saeFeatures.hooks, 'saeFeatures.hooks');
  if (o.padding !== undefined && o.padding !== 'left' && o.padding !== 'right') invalid(`padding must be 'left' or 'right', got ${describe(o.padding)}`);
  checkSignal(o.signal, 'signal');
}

/** Options of Model.extract and featureDensity that extraction itself does not check. */
export function checkExtractOptions(o: unknown, nLayers: number): void {
  if (!isObject(o)) invalid('extract options must be an object');
  checkInteger(o.seqLen, 'seqLen', 1);
  checkInteger(o.batchSize, 'batchSize', 1);
  if (o.maxMemory !== undefined && !(typeof o.maxMemory === 'number' && o.maxMemory > 0 && Number.isFinite(o.maxMemory)))
    invalid(`maxMemory must be a positive number of bytes, got ${describe(o.maxMemory)}`);
  checkInteger(o.stopAtLayer, 'stopAtLayer', 0, nLayers);
  checkInteger(o.maxTokens, 'maxTokens', 1);
  checkInteger(o.skipSequences, 'skipSequences', 0);
  checkInteger(o.groupSize, 'groupSize', 1);
  checkInteger(o.queueCapacity, 'queueCapacity', 1);
  checkInteger(o.padId, 'padId', 0);
  checkBoolean(o.pack, 'pack');
  checkBoolean(o.padLast, 'padLast');
  checkBoolean(o.addSpecialTokens, 'addSpecialTokens');
  if (o.shard !== undefined) {
    if (!isObject(o.shard)) invalid('shard must be { index, count }');
    checkInteger(o.shard.count, 'shard.count', 1);
    checkInteger(o.shard.index, 'shard.index', 0, typeof o.shard.count === 'number' ? o.shard.count - 1 : 0);
    if (o.shard.index === undefined || o.shard.count === undefined) invalid('shard must be { index, count }');
  }
  if (o.featureCounts !== undefined && typeof o.featureCounts !== 'boolean') {
    if (!isObject(o.featureCounts)) invalid('featureCounts must be a boolean or { hooks }');
    if (o.featureCounts.hooks !== undefined) patternList(o.featureCounts.hooks, 'featureCounts.hooks');
  }
  if (o.onRead !== undefined && typeof o.onRead !== 'function') invalid('onRead must be a function');
  if (o.onPacked !== undefined && typeof o.onPacked !== 'function') invalid('onPacked must be a function');
  checkSignal(o.signal, 'signal');
}
