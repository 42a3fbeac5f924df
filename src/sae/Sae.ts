// Sparse autoencoders on disk: SAELens directories (cfg.json + sae_weights.safetensors, the v6
// layout and the older flat one) and Gemma Scope params.npz, validated and held as float32.
// Semantics: docs/SAE-MATH.md. Tests: test/sae.test.ts, test/sae-files.test.ts.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

import type { NativeSae } from '../bindings/native.js';
import { InvalidInputError, ModelLoadError, UnsupportedModelError } from '../errors.js';
import { readRegularFile } from '../io/files.js';
import { readNpz } from '../io/npz.js';
import { readSafetensors } from '../io/safetensors.js';

export type SaeArchitecture = 'standard' | 'jumprelu' | 'topk' | 'gated';
export type SaeNormalization = 'none' | 'expected_average_only_in' | 'constant_norm_rescale' | 'layer_norm';

/** An SAE's configuration, normalized from whichever format it was stored in. */
export interface SaeConfig {
  architecture: SaeArchitecture;
  dIn: number;
  dSae: number;
  /** Features kept per token (TopK only). */
  k?: number;
  /** The hook the SAE was trained on, or null when the file does not say (Gemma Scope). */
  hookName: string | null;
  applyBDecToInput: boolean;
  normalizeActivations: SaeNormalization;
  /** 'hook_z': the SAE reads attn.hook_z with its heads flattened. */
  reshapeActivations: 'none' | 'hook_z';
  /** Storage dtype of the weights (they are held as float32). */
  dtype: 'f32' | 'f16' | 'bf16';
  format: 'saelens' | 'saelens-flat' | 'gemma-scope';
}

/** Options for {@link loadSae}. */
export interface LoadSaeOptions {
  /** Hook name when the files do not give one (Gemma Scope). Defaults to the SAE's own hook_name. */
  hook?: string;
}

/** A loaded SAE: its config and float32 weights in SAELens's layout. */
export class Sae {
  constructor(
    readonly cfg: SaeConfig,
    /** [d_in, d_sae] */ readonly W_enc: Float32Array,
    /** [d_sae] (Gated: b_gate) */ readonly b_enc: Float32Array,
    /** [d_sae, d_in] */ readonly W_dec: Float32Array,
    /** [d_in] */ readonly b_dec: Float32Array,
    /** [d_sae] JumpReLU thresholds */ readonly threshold?: Float32Array,
    /** [d_sae] Gated magnitude path */ readonly r_mag?: Float32Array,
    readonly b_mag?: Float32Array,
    /** expected_average_only_in: the input is multiplied by this (1 when the file stores none). */
    readonly normScale = 1,
  ) {}

  /** Feature i's decoder direction W_dec[i] (a copy), length d_in. */
  decoderDirection(i: number): Float32Array {
    if (!Number.isInteger(i) || i < 0 || i >= this.cfg.dSae) throw new InvalidInputError('ERR_FEATURE_OUT_OF_RANGE', `feature ${i} is outside [0, ${this.cfg.dSae})`);
    return this.W_dec.slice(i * this.cfg.dIn, (i + 1) * this.cfg.dIn);
  }

  /** @internal The addon's view of this SAE. */
  toNative(): NativeSae {
    const c = this.cfg;
    const norm = c.normalizeActivations === 'expected_average_only_in' ? (this.normScale === 1 ? 'none' : 'scale') : c.normalizeActivations;
    return {
      architecture: c.architecture,
      normalization: norm,
      dIn: c.dIn,
      dSae: c.dSae,
      ...(c.k !== undefined ? { k: c.k } : {}),
      applyBDecToInput: c.applyBDecToInput,
      normScale: this.normScale,
      W_enc: this.W_enc,
      b_enc: this.b_enc,
      W_dec: this.W_dec,
      b_dec: this.b_dec,
      ...(this.threshold ? { threshold: this.threshold } : {}),
      ...(this.r_mag ? { r_mag: this.r_mag } : {}),
      ...(this.b_mag ? { b_mag: this.b_mag } : {}),
    };
  }
}

type Json = Record<string, unknown>;

function invalid(path: string, why: string): ModelLoadError {
  return new ModelLoadError('ERR_SAE_INVALID', `SAE at ${path}: ${why}`);
}

function dimension(cfg: Json, key: string, path: string): number {
  const v = cfg[key];
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw invalid(path, `cfg.json field ${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

function dtypeOf(s: unknown): 'f32' | 'f16' | 'bf16' {
  const t = String(s ?? 'float32').replace(/^torch\./, '');
  return t === 'float16' ? 'f16' : t === 'bfloat16' ? 'bf16' : 'f32';
}

/** SAELens cfg.json, v6 (`architecture` + `metadata`) or the older flat layout, to a SaeConfig. */
function parseSaelensConfig(cfg: Json, path: string): SaeConfig {
  const flat = !('metadata' in cfg) || typeof cfg.metadata !== 'object' || cfg.metadata === null;
  const meta = (flat ? cfg : (cfg.metadata as Json)) as Json;
  const hook = meta.hook_name ?? cfg.hook_name ?? meta.hook_point ?? cfg.hook_point ?? null;
  if (hook !== null && typeof hook !== 'string') throw invalid(path, 'hook_name must be a string');
  let arch = String(cfg.architecture ?? 'standard');
  const actFn = String(cfg.activation_fn_str ?? cfg.activation_fn ?? 'relu');
  const kwargs = (cfg.activation_fn_kwargs ?? {}) as Json;
  let k: number | undefined;
  if (arch === 'standard' && actFn === 'topk') arch = 'topk';
  if (arch === 'topk') {
    k = (cfg.k ?? kwargs.k) as number;
    if (!Number.isSafeInteger(k) || k! < 1) throw invalid(path, `a TopK SAE needs a positive integer k, got ${JSON.stringify(k)}`);
  } else if (actFn !== 'relu' && arch === 'standard') {
    throw new UnsupportedModelError('ERR_UNSUPPORTED_SAE', `SAE at ${path}: activation function '${actFn}' is not supported (relu, topk)`);
  }
  if (!['standard', 'jumprelu', 'topk', 'gated'].includes(arch))
    throw new UnsupportedModelError('ERR_UNSUPPORTED_SAE', `SAE at ${path}: architecture '${arch}' is not supported (standard, jumprelu, topk, gated)`);
  // Pre-6 configs spell the normalization as a boolean: true = expected_average_only_in.
  const normRaw = cfg.normalize_activations;
  const norm = normRaw === true ? 'expected_average_only_in' : normRaw === false || normRaw === null || normRaw === undefined ? 'none' : String(normRaw);
  if (!['none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'].includes(norm))
    throw new UnsupportedModelError('ERR_UNSUPPORTED_SAE', `SAE at ${path}: normalize_activations '${norm}' is not supported`);
  // Pre-6 configs default reshape_activations to hook_z when the hook is an attention hook_z.
  const reshape = String(cfg.reshape_activations ?? (typeof hook === 'string' && hook.endsWith('hook_z') ? 'hook_z' : 'none'));
  if (reshape !== 'none' && reshape !== 'hook_z') throw new UnsupportedModelError('ERR_UNSUPPORTED_SAE', `SAE at ${path}: reshape_activations '${reshape}' is not supported`);
  return {
    architecture: arch as SaeArchitecture,
    dIn: dimension(cfg, 'd_in', path),
    dSae: dimension(cfg, 'd_sae', path),
    ...(k !== undefined ? { k } : {}),
    hookName: hook as string | null,
    applyBDecToInput: cfg.apply_b_dec_to_input === undefined ? true : cfg.apply_b_dec_to_input === true,
    normalizeActivations: norm as SaeNormalization,
    reshapeActivations: reshape as 'none' | 'hook_z',
    dtype: dtypeOf(cfg.dtype),
    format: flat ? 'saelens-flat' : 'saelens',
  };
}

/** A tensor of the expected shape, as float32. */
function tensor(get: (name: string) => { shape: number[]; data: ArrayLike<number> } | undefined, name: string, shape: number[], path: string, required: boolean): Float32Array | undefined {
  const t = get(name);
  if (!t) {
    if (required) throw invalid(path, `tensor ${name} is missing`);
    return undefined;
  }
  if (t.shape.join() !== shape.join()) throw invalid(path, `tensor ${name} has shape [${t.shape}], expected [${shape}]`);
  if (!(t.data instanceof Float32Array)) throw invalid(path, `tensor ${name} is not a float tensor`);
  return t.data;
}

/**
 * Loads an SAE: a SAELens directory (cfg.json + sae_weights.safetensors) or a Gemma Scope
 * params.npz (a file, or a directory holding one). Throws ModelLoadError ERR_SAE_INVALID for
 * missing or malformed files and tensors, UnsupportedModelError ERR_UNSUPPORTED_SAE for an
 * architecture or normalization neurotap does not run.
 */
export async function loadSae(path: string, options: LoadSaeOptions = {}): Promise<Sae> {
  if (!existsSync(path)) throw new ModelLoadError('ERR_FILE_NOT_FOUND', `no SAE at ${path}`);
  const dir = statSync(path).isDirectory();
  const npz = dir ? join(path, 'params.npz') : path;
  if (!dir || (existsSync(npz) && !existsSync(join(path, 'cfg.json')))) {
    if (!npz.endsWith('.npz') || !existsSync(npz)) throw invalid(path, 'expected a SAELens directory (cfg.json) or a Gemma Scope params.npz');
    const arrays = readNpz(npz);
    const wEnc = arrays.get('w_enc') ?? arrays.get('W_enc');
    if (!wEnc || wEnc.shape.length !== 2) throw invalid(npz, 'array w_enc [d_in, d_sae] is missing');
    const [dIn, dSae] = wEnc.shape as [number, number];
    const get = (n: string) => arrays.get(n) ?? arrays.get(n.toLowerCase());
    const cfg: SaeConfig = {
      architecture: 'jumprelu',
      dIn,
      dSae,
      hookName: options.hook ?? null,
      applyBDecToInput: false,
      normalizeActivations: 'none',
      reshapeActivations: 'none',
      dtype: 'f32',
      format: 'gemma-scope',
    };
    return new Sae(
      cfg,
      tensor(get, 'w_enc', [dIn, dSae], npz, true)!,
      tensor(get, 'b_enc', [dSae], npz, true)!,
      tensor(get, 'w_dec', [dSae, dIn], npz, true)!,
      tensor(get, 'b_dec', [dIn], npz, true)!,
      tensor(get, 'threshold', [dSae], npz, true)!,
    );
  }
  const cfgPath = join(path, 'cfg.json');
  if (!existsSync(cfgPath)) throw invalid(path, 'cfg.json is missing');
  const cfgText = readRegularFile(cfgPath, 'SAE config').toString('utf8');
  let raw: unknown;
  try {
    raw = JSON.parse(cfgText);
  } catch (err) {
    throw invalid(path, `cfg.json is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(path, 'cfg.json must hold an object');
  const cfg = parseSaelensConfig(raw as Json, path);
  if (options.hook) cfg.hookName = options.hook;
  const weights = join(path, 'sae_weights.safetensors');
  if (!existsSync(weights)) throw invalid(path, 'sae_weights.safetensors is missing');
  const st = readSafetensors(weights);
  const get = (n: string) => {
    const t = st.get(n);
    return t ? { shape: t.shape, data: t.data as ArrayLike<number> } : undefined;
  };
  const { dIn, dSae } = cfg;
  const gated = cfg.architecture === 'gated';
  // A finetuning scaling factor of all ones is dropped, as SAELens does; any other is refused.
  const finetune = st.get('scaling_factor');
  if (finetune && Array.from(finetune.data as ArrayLike<number>).some((v) => v !== 1))
    throw new UnsupportedModelError('ERR_UNSUPPORTED_SAE', `SAE at ${path}: a finetuning scaling_factor other than all ones is not supported`);

  return new Sae(
    cfg,
    tensor(get, 'W_enc', [dIn, dSae], weights, true)!,
    tensor(get, gated ? (st.has('b_gate') ? 'b_gate' : 'b_enc') : 'b_enc', [dSae], weights, true)!,
    tensor(get, 'W_dec', [dSae, dIn], weights, true)!,
    tensor(get, 'b_dec', [dIn], weights, true)!,
    cfg.architecture === 'jumprelu' ? tensor(get, 'threshold', [dSae], weights, true) : undefined,
    gated ? tensor(get, 'r_mag', [dSae], weights, true) : undefined,
    gated ? tensor(get, 'b_mag', [dSae], weights, true) : undefined,
  );
}
