// Steering vectors and their files: safetensors (one 1-D tensor per TL hook) and llama.cpp control
// vectors (GGUF, `direction.N` per layer). Tests: test/steering-files.test.ts, against gguf-py.
import { InvalidInputError, ModelLoadError } from '../errors.js';
import { readSafetensorsFile, writeSafetensors } from '../io/safetensors.js';
import { GgufType, readGguf, writeGguf, type GgufMetadataEntry, type GgufValue } from './gguf.js';

/** Directions to add to the residual stream, keyed by TransformerLens hook name. */
export interface SteeringVector {
  /** Hook name (e.g. `blocks.3.hook_resid_post`) → direction, [d_model]. */
  directions: Map<string, Float32Array>;
  /** Free-form string metadata (safetensors `__metadata__`, or GGUF key/values). */
  metadata: Record<string, string>;
}

const FLOATS = new Set(['F32', 'F16', 'BF16', 'F64']);

const badFile = (path: string, why: string) => new ModelLoadError('ERR_STEERING_FILE_INVALID', `steering file ${path}: ${why}`);
const badArg = (why: string) => new InvalidInputError('ERR_INVALID_INPUT', why);

function firstNonFinite(v: Float32Array): number {
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i]!)) return i;
  return -1;
}

/**
 * Reads a steering safetensors file with the validating safetensors reader (a malformed file is
 * ERR_STEERING_FILE_INVALID), then checks that every tensor is a non-empty 1-D float vector of
 * finite values and that there is at least one.
 */
function readSteeringTensors(path: string): { tensors: Map<string, Float32Array>; metadata: Record<string, string> } {
  const file = readSafetensorsFile(path, 'ERR_STEERING_FILE_INVALID', 'steering file');
  const tensors = new Map<string, Float32Array>();
  for (const [name, { dtype, shape, data }] of file.tensors) {
    if (!FLOATS.has(dtype)) throw badFile(path, `tensor '${name}' has dtype ${dtype}; a steering vector must be float (F32, F16, BF16 or F64)`);
    if (shape.length !== 1) throw badFile(path, `tensor '${name}' has shape ${JSON.stringify(shape)}; a steering vector must be 1-D`);
    if (shape[0] === 0) throw badFile(path, `tensor '${name}' has shape ${JSON.stringify(shape)}; it must be non-empty`);
    const v = data as Float32Array;
    const bad = firstNonFinite(v);
    if (bad >= 0) throw badFile(path, `tensor '${name}' holds a non-finite value (${v[bad]}) at index ${bad}`);
    tensors.set(name, v);
  }
  if (tensors.size === 0) throw badFile(path, 'holds no tensors');
  return { tensors, metadata: file.metadata };
}

/** Checks that a steering vector has at least one direction and each is a non-empty finite vector. */
function checkDirections(sv: SteeringVector, what: string): void {
  if (!(sv.directions instanceof Map) || sv.directions.size === 0) throw badArg(`${what}: the steering vector has no directions`);
  for (const [hook, v] of sv.directions) {
    if (hook === '' || hook === '__metadata__') throw badArg(`${what}: '${hook}' is not a hook name`);
    if (!(v instanceof Float32Array) || v.length === 0) throw badArg(`${what}: direction '${hook}' must be a non-empty Float32Array`);
    const bad = firstNonFinite(v);
    if (bad >= 0) throw badArg(`${what}: direction '${hook}' holds a non-finite value (${v[bad]}) at index ${bad}`);
  }
  for (const [k, v] of Object.entries(sv.metadata ?? {})) {
    if (typeof v !== 'string') throw badArg(`${what}: metadata '${k}' must be a string`);
  }
}

/**
 * Writes a steering vector as safetensors: one 1-D F32 tensor per hook, named by the hook
 * (`blocks.3.hook_resid_post`), with `metadata` as `__metadata__`. Written atomically.
 */
export function saveSteeringSafetensors(path: string, sv: SteeringVector): void {
  checkDirections(sv, 'saveSteeringSafetensors');
  const tensors = new Map([...sv.directions].map(([hook, v]) => [hook, { shape: [v.length], data: v }] as const));
  writeSafetensors(path, tensors, sv.metadata ?? {});
}

/**
 * Reads a steering safetensors file (see saveSteeringSafetensors). Every tensor must be a
 * non-empty 1-D float vector (F32, F16, BF16 or F64, upcast to float32) of finite values;
 * otherwise, or for a malformed file, throws ModelLoadError ERR_STEERING_FILE_INVALID.
 * Tensor names are taken as hook names unchecked: the model resolves them.
 */
export function loadSteeringSafetensors(path: string): SteeringVector {
  const { tensors, metadata } = readSteeringTensors(path);
  return { directions: tensors, metadata };
}

/**
 * Reads one vector of a safetensors file, for the CLI's `--steer HOOK=FILE.safetensors[#TENSOR][:SCALE]`:
 * the tensor named `tensor`, or without it the file's only tensor (any name). Every tensor must be
 * a non-empty 1-D float vector; otherwise, or when the file holds several tensors and none is
 * named, throws ModelLoadError ERR_STEERING_FILE_INVALID; a `tensor` the file lacks is
 * InvalidInputError ERR_INVALID_INPUT naming those it holds.
 */
export function loadSingleVector(path: string, tensor?: string): Float32Array {
  const { tensors } = readSteeringTensors(path);
  const names = [...tensors.keys()].join(', ');
  if (tensor !== undefined) {
    const v = tensors.get(tensor);
    if (!v) throw badArg(`steering file ${path} holds no tensor '${tensor}' (it holds ${names})`);
    return v;
  }
  if (tensors.size !== 1) {
    throw badFile(
      path,
      `holds ${tensors.size} tensors (${names}); --steer HOOK=FILE needs exactly one 1-D tensor: pick one with --steer HOOK=FILE#TENSOR, ` +
        'or give --steer FILE (no HOOK=) to add each tensor at the hook it is named after',
    );
  }
  return [...tensors.values()][0]!;
}

// ---------------------------------------------------------------------------------------------
// llama.cpp control vectors

/** Options of saveControlVector. */
export interface ControlVectorOptions {
  /**
   * `controlvector.model_hint`, the model family the vector was made for (llama.cpp's
   * cvector-generator writes the model's architecture, repeng the HF `model_type`). Informative
   * only: llama.cpp does not check it. Defaults to `sv.metadata['controlvector.model_hint']`, else `'llama'`.
   */
  modelHint?: string;
}

const RESID_POST = /^blocks\.(0|[1-9][0-9]*)\.hook_resid_post$/;
const DIRECTION = /^direction\.(0|[1-9][0-9]*)$/;
/** Keys saveControlVector writes itself (or that would break the file), so never copied from metadata. */
const RESERVED_KEYS = new Set(['general.architecture', 'general.alignment', 'controlvector.model_hint', 'controlvector.layer_count']);

/**
 * Writes a llama.cpp control vector (GGUF), as llama.cpp's cvector-generator and repeng write it:
 * `general.architecture = "controlvector"`, `controlvector.model_hint`, `controlvector.layer_count`
 * (uint32, the number of direction tensors, as repeng writes it; cvector-generator writes int32
 * and llama.cpp never reads it), and one 1-D F32 tensor `direction.N` [d_model] per layer, in
 * increasing N. The other `sv.metadata` entries are written as string key/values.
 *
 * Mapping (our contract): `direction.N` is added to the output of layer N at every position, i.e.
 * TL hook `blocks.N.hook_resid_post`, so every direction must be such a hook (else
 * InvalidInputError ERR_INVALID_INPUT), all of equal width. Note that llama.cpp's loader refuses a
 * file holding `direction.0` ("invalid (zero) direction tensor layer index") and its layer loop
 * never steers layer 0; steer `blocks.0.hook_resid_post` only in files meant for neurotap.
 */
export function saveControlVector(path: string, sv: SteeringVector, options: ControlVectorOptions = {}): void {
  checkDirections(sv, 'saveControlVector');
  const layers: [number, Float32Array][] = [];
  let width = -1;
  for (const [hook, v] of sv.directions) {
    const m = RESID_POST.exec(hook);
    if (!m) throw badArg(`saveControlVector: '${hook}' is not a blocks.N.hook_resid_post hook; a control vector steers layer outputs only`);
    if (width >= 0 && v.length !== width) throw badArg(`saveControlVector: '${hook}' has width ${v.length}, the others ${width}`);
    width = v.length;
    layers.push([Number(m[1]), v]);
  }
  layers.sort((a, b) => a[0] - b[0]);
  const modelHint = options.modelHint ?? sv.metadata?.['controlvector.model_hint'] ?? 'llama';
  if (typeof modelHint !== 'string') throw badArg('saveControlVector: modelHint must be a string');
  const metadata: GgufMetadataEntry[] = [
    ['general.architecture', 'controlvector', GgufType.STRING],
    ['controlvector.model_hint', modelHint, GgufType.STRING],
    ['controlvector.layer_count', layers.length, GgufType.UINT32],
  ];
  for (const [k, v] of Object.entries(sv.metadata ?? {})) if (!RESERVED_KEYS.has(k)) metadata.push([k, v, GgufType.STRING]);
  writeGguf(path, { metadata, tensors: layers.map(([n, v]) => [`direction.${n}`, { shape: [v.length], data: v }] as const) });
}

/** A metadata value as a string: scalars as text, arrays as JSON (64-bit integers as strings). */
function metadataString(v: GgufValue): string {
  if (v.type !== GgufType.ARRAY) return String(v.value);
  const plain = (a: GgufValue): unknown =>
    a.type === GgufType.ARRAY ? a.value.map((x) => (typeof x === 'object' ? plain(x) : typeof x === 'bigint' ? String(x) : x)) : a.value;
  return JSON.stringify(plain(v));
}

/**
 * Reads a llama.cpp control vector (GGUF; see saveControlVector for the format and the layer
 * mapping) into a SteeringVector with hooks `blocks.N.hook_resid_post`, in increasing N, and every
 * GGUF key/value as string metadata. `direction.0` is accepted (llama.cpp would refuse the file).
 * F16 directions are upcast. Throws ModelLoadError ERR_GGUF_INVALID for a malformed GGUF, a
 * `general.architecture` other than "controlvector", a tensor not named `direction.<int>`, a
 * non-1-D tensor, mixed widths, no directions, or non-finite values.
 */
export function loadControlVector(path: string): SteeringVector {
  const g = readGguf(path);
  const bad = (why: string) => new ModelLoadError('ERR_GGUF_INVALID', `control vector ${path}: ${why}`);
  const arch = g.metadata.get('general.architecture');
  if (arch?.type !== GgufType.STRING || arch.value !== 'controlvector') {
    throw bad(`general.architecture is ${arch ? JSON.stringify(metadataString(arch)) : 'missing'}, not "controlvector"`);
  }
  const layers: [number, Float32Array][] = [];
  let width = -1;
  for (const [name, t] of g.tensors) {
    const m = DIRECTION.exec(name);
    if (!m || !Number.isSafeInteger(Number(m[1]))) throw bad(`tensor '${name}' is not named direction.<layer>`);
    if (t.shape.length !== 1) throw bad(`tensor '${name}' has shape [${t.shape.join(', ')}]; a direction must be 1-D`);
    if (width >= 0 && t.data.length !== width) throw bad(`tensor '${name}' has width ${t.data.length}, the previous directions ${width}`);
    width = t.data.length;
    const nonFinite = firstNonFinite(t.data);
    if (nonFinite >= 0) throw bad(`tensor '${name}' holds a non-finite value (${t.data[nonFinite]}) at index ${nonFinite}`);
    layers.push([Number(m[1]), t.data]);
  }
  if (layers.length === 0) throw bad('holds no direction tensors');
  layers.sort((a, b) => a[0] - b[0]);
  const metadata: Record<string, string> = {};
  for (const [k, v] of g.metadata) metadata[k] = metadataString(v);
  return { directions: new Map(layers.map(([n, v]) => [`blocks.${n}.hook_resid_post`, v])), metadata };
}
