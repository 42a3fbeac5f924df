// SAELens cfg.json (v6 layout and the older flat one) to an SaeConfig, with SAELens 6.18's
// defaults. Every key that changes the math is either implemented or refused with
// ERR_UNSUPPORTED_SAE; wrong types are ERR_SAE_INVALID. Key review: docs/SAE-MATH.md.
// Tests: test/sae-config.test.ts.
import { ModelLoadError, UnsupportedModelError } from '../errors.js';
import { isObject } from '../io/json.js';

export type SaeArchitecture = 'standard' | 'jumprelu' | 'topk' | 'gated';
export type SaeNormalization = 'none' | 'expected_average_only_in' | 'constant_norm_rescale' | 'layer_norm';

/** An SAE's configuration, normalized from whichever format it was stored in. */
export interface SaeConfig {
  architecture: SaeArchitecture;
  dIn: number;
  dSae: number;
  /** Features kept per token (TopK only). */
  k?: number;
  /**
   * TopK only: rank `acts_pre * ‖W_dec[i]‖` and divide the kept activations by ‖W_dec[i]‖ before
   * decoding (SAELens `rescale_acts_by_decoder_norm`); acts_post is the rescaled activation.
   */
  rescaleActsByDecoderNorm?: boolean;
  /** The hook the SAE was trained on, or null when the file does not say (Gemma Scope). */
  hookName: string | null;
  applyBDecToInput: boolean;
  normalizeActivations: SaeNormalization;
  /** 'hook_z': the SAE reads attn.hook_z with its heads flattened. */
  reshapeActivations: 'none' | 'hook_z';
  /** Storage dtype of the weights (they are held as float32). */
  dtype: 'f32' | 'f16' | 'bf16' | 'f64';
  format: 'saelens' | 'saelens-flat' | 'gemma-scope';
}

type Json = Record<string, unknown>;

const ARCHITECTURES = ['standard', 'jumprelu', 'topk', 'gated'];
const NORMALIZATIONS = ['none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'];
const DTYPES: Record<string, SaeConfig['dtype']> = { float32: 'f32', float64: 'f64', float16: 'f16', bfloat16: 'bf16' };

export function saeInvalid(path: string, why: string): ModelLoadError {
  return new ModelLoadError('ERR_SAE_INVALID', `SAE at ${path}: ${why}`);
}

export function saeUnsupported(path: string, why: string): UnsupportedModelError {
  return new UnsupportedModelError('ERR_UNSUPPORTED_SAE', `SAE at ${path}: ${why}`);
}

const show = (v: unknown) => JSON.stringify(v) ?? String(v);

/** cfg[key] when it is absent (undefined) or of type `type`; otherwise ERR_SAE_INVALID. */
function optional<T>(cfg: Json, key: string, type: 'string' | 'boolean' | 'object', path: string): T | undefined {
  const v = cfg[key];
  if (v === undefined) return undefined;
  if (type === 'object' ? !isObject(v) : typeof v !== type) throw saeInvalid(path, `cfg.json field ${key} must be ${type === 'object' ? 'an object' : `a ${type}`}, got ${show(v)}`);
  return v as T;
}

function positive(v: unknown, key: string, path: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw saeInvalid(path, `cfg.json field ${key} must be a positive integer, got ${show(v)}`);
  return v as number;
}

/**
 * SAELens cfg.json to a SaeConfig. The v6 layout has a `metadata` object (hook_name etc.); the
 * pre-6 flat layout keeps everything at the top level with older spellings (hook_point,
 * activation_fn_str, boolean normalize_activations, topk as activation_fn + kwargs.k).
 * Training-only keys (losses, coefficients, initialisation, sparsity and dataset settings) are
 * ignored, as SAELens's inference classes ignore them.
 */
export function parseSaelensConfig(cfg: Json, path: string): SaeConfig {
  if ('metadata' in cfg && !isObject(cfg.metadata)) throw saeInvalid(path, `cfg.json field metadata must be an object, got ${show(cfg.metadata)}`);
  const flat = !isObject(cfg.metadata);
  const meta = flat ? cfg : (cfg.metadata as Json);
  const hook = meta.hook_name ?? cfg.hook_name ?? meta.hook_point ?? cfg.hook_point ?? null;
  if (hook !== null && typeof hook !== 'string') throw saeInvalid(path, `hook_name must be a string, got ${show(hook)}`);
  // An SAE on one attention head's slice reads [.., d_head] of hook_z; neurotap attaches SAEs to whole hooks.
  const head = meta.hook_head_index ?? cfg.hook_head_index ?? cfg.hook_point_head_index ?? null;
  if (head !== null) throw saeUnsupported(path, `hook_head_index ${show(head)} (an SAE on one attention head) is not supported`);

  let arch = optional<string>(cfg, 'architecture', 'string', path) ?? 'standard';
  const actFn = optional<string>(cfg, 'activation_fn_str', 'string', path) ?? optional<string>(cfg, 'activation_fn', 'string', path) ?? 'relu';
  if (cfg.activation_fn !== undefined && cfg.activation_fn !== actFn) throw saeInvalid(path, `cfg.json has activation_fn_str ${show(actFn)} and activation_fn ${show(cfg.activation_fn)}`);
  const kwargs = cfg.activation_fn_kwargs === null ? {} : (optional<Json>(cfg, 'activation_fn_kwargs', 'object', path) ?? {});
  if (arch === 'standard' && actFn === 'topk') arch = 'topk';
  if (!ARCHITECTURES.includes(arch)) throw saeUnsupported(path, `architecture '${arch}' is not supported (standard, jumprelu, topk, gated)`);
  if (actFn !== 'relu' && !(arch === 'topk' && actFn === 'topk'))
    throw saeUnsupported(path, `activation function '${actFn}' is not supported for a ${arch} SAE (relu; topk for TopK)`);
  const dIn = positive(cfg.d_in, 'd_in', path);
  const dSae = positive(cfg.d_sae, 'd_sae', path);

  let k: number | undefined;
  let rescale: boolean | undefined;
  if (arch === 'topk') {
    k = (cfg.k ?? kwargs.k) as number;
    if (!Number.isSafeInteger(k) || k < 1 || k > dSae) throw saeInvalid(path, `a TopK SAE needs an integer k in [1, d_sae = ${dSae}], got ${show(k)}`);
    rescale = optional<boolean>(cfg, 'rescale_acts_by_decoder_norm', 'boolean', path) ?? false;
  }

  // Pre-6 configs spell the normalization as a boolean: true = expected_average_only_in.
  const normRaw = cfg.normalize_activations;
  if (normRaw !== undefined && normRaw !== null && typeof normRaw !== 'boolean' && typeof normRaw !== 'string')
    throw saeInvalid(path, `cfg.json field normalize_activations must be a string, got ${show(normRaw)}`);
  const norm = normRaw === true ? 'expected_average_only_in' : normRaw === false || normRaw === null || normRaw === undefined ? 'none' : normRaw;
  if (!NORMALIZATIONS.includes(norm)) throw saeUnsupported(path, `normalize_activations '${norm}' is not supported (${NORMALIZATIONS.join(', ')})`);

  // Pre-6 configs default reshape_activations to hook_z when the hook is an attention hook_z.
  const reshape = optional<string>(cfg, 'reshape_activations', 'string', path) ?? (typeof hook === 'string' && hook.endsWith('hook_z') ? 'hook_z' : 'none');
  if (reshape !== 'none' && reshape !== 'hook_z') throw saeUnsupported(path, `reshape_activations '${reshape}' is not supported (none, hook_z)`);

  const dtypeName = optional<string>(cfg, 'dtype', 'string', path) ?? 'float32';
  const dtype = DTYPES[dtypeName.replace(/^torch\./, '')];
  if (!dtype) throw saeInvalid(path, `cfg.json dtype '${dtypeName}' is not a float dtype (float32, float64, float16, bfloat16)`);

  return {
    architecture: arch as SaeArchitecture,
    dIn,
    dSae,
    ...(k !== undefined ? { k, rescaleActsByDecoderNorm: rescale! } : {}),
    hookName: hook,
    applyBDecToInput: optional<boolean>(cfg, 'apply_b_dec_to_input', 'boolean', path) ?? true,
    normalizeActivations: norm as SaeNormalization,
    reshapeActivations: reshape,
    dtype,
    format: flat ? 'saelens-flat' : 'saelens',
  };
}
