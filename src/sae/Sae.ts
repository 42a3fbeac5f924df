// Sparse autoencoders on disk: SAELens directories (cfg.json + sae_weights.safetensors, the v6
// layout and the older flat one) and Gemma Scope params.npz, validated and held as float32.
// Semantics: docs/SAE-MATH.md. Tests: test/sae.test.ts, test/sae-config.test.ts, test/sae-fuzz.test.ts.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

import type { NativeSae } from '../bindings/native.js';
import { InvalidInputError, ModelLoadError } from '../errors.js';
import type { Family, HookKeyFor } from '../hooks/names.js';
import { readRegularFile } from '../io/files.js';
import { parseJsonStrict } from '../io/json.js';
import { readNpz } from '../io/npz.js';
import { readSafetensorsFile } from '../io/safetensors.js';
import { parseSaelensConfig, saeInvalid as invalid, saeUnsupported as unsupported, type SaeConfig } from './config.js';

export type { SaeArchitecture, SaeConfig, SaeNormalization } from './config.js';

/** Options for {@link loadSae}. */
export interface LoadSaeOptions {
  /** Hook name when the files do not give one (Gemma Scope). Defaults to the SAE's own hook_name. */
  hook?: HookKeyFor<Family>;
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
      ...(c.rescaleActsByDecoderNorm ? { rescaleActsByDecoderNorm: true } : {}),
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

type Tensors = ReadonlyMap<string, { shape: number[]; data: ArrayLike<unknown> }>;

/** Tensors each architecture reads; SAELens's strict load_state_dict refuses any other. */
const TENSORS: Record<SaeConfig['architecture'], string[]> = {
  standard: ['W_enc', 'b_enc', 'W_dec', 'b_dec'],
  topk: ['W_enc', 'b_enc', 'W_dec', 'b_dec'],
  jumprelu: ['W_enc', 'b_enc', 'W_dec', 'b_dec', 'threshold'],
  gated: ['W_enc', 'b_gate', 'r_mag', 'b_mag', 'W_dec', 'b_dec'],
};

/** Tensor `name` as float32, of exactly `shape`; ERR_SAE_INVALID when missing, misshapen or not float. */
function tensor(t: Tensors, name: string, shape: number[], file: string): Float32Array {
  const x = t.get(name);
  if (!x) throw invalid(file, `tensor ${name} is missing`);
  if (x.shape.join() !== shape.join()) throw invalid(file, `tensor ${name} has shape [${x.shape}], expected [${shape}]`);
  if (!(x.data instanceof Float32Array)) throw invalid(file, `tensor ${name} is not a float tensor`);
  return x.data;
}

/**
 * Checks the tensor names against the architecture's (gated may call b_gate b_enc) and the
 * finetuning `scaling_factor`: all ones is dropped, as SAELens does; any other is refused.
 * Returns the name of the encoder bias.
 */
function checkTensorNames(t: Tensors, cfg: SaeConfig, file: string): string {
  const known = [...TENSORS[cfg.architecture]];
  if (cfg.architecture === 'gated' && !t.has('b_gate') && t.has('b_enc')) known[1] = 'b_enc';
  for (const name of t.keys()) {
    if (name === 'scaling_factor') continue;
    if (!known.includes(name)) throw unsupported(file, `tensor ${name} is not part of a ${cfg.architecture} SAE (${known.join(', ')})`);
  }
  const finetune = t.get('scaling_factor');
  if (finetune) {
    if (!(finetune.data instanceof Float32Array)) throw invalid(file, 'tensor scaling_factor is not a float tensor');
    if (finetune.data.some((v) => v !== 1)) throw unsupported(file, 'a finetuning scaling_factor other than all ones is not supported');
  }
  return known[1]!;
}

/** The SAE's tensors, checked against its config. */
function build(cfg: SaeConfig, t: Tensors, file: string): Sae {
  const { dIn, dSae } = cfg;
  const bias = checkTensorNames(t, cfg, file);
  const W_dec = tensor(t, 'W_dec', [dSae, dIn], file);
  if (cfg.rescaleActsByDecoderNorm) {
    // SAELens divides by ‖W_dec[i]‖: a row of norm 0 (or NaN) makes every output NaN.
    for (let i = 0; i < dSae; i++) {
      let ss = 0;
      for (let j = i * dIn; j < (i + 1) * dIn; j++) ss += W_dec[j]! * W_dec[j]!;
      if (!(ss > 0)) throw invalid(file, `rescale_acts_by_decoder_norm needs every W_dec row to have a positive norm; row ${i} has norm ${Math.sqrt(ss)}`);
    }
  }
  const gated = cfg.architecture === 'gated';
  return new Sae(
    cfg,
    tensor(t, 'W_enc', [dIn, dSae], file),
    tensor(t, bias, [dSae], file),
    W_dec,
    tensor(t, 'b_dec', [dIn], file),
    cfg.architecture === 'jumprelu' ? tensor(t, 'threshold', [dSae], file) : undefined,
    gated ? tensor(t, 'r_mag', [dSae], file) : undefined,
    gated ? tensor(t, 'b_mag', [dSae], file) : undefined,
  );
}

/** Gemma Scope params.npz: a JumpReLU SAE with fixed settings; d_in, d_sae from w_enc's shape. */
function loadGemmaScope(npz: string, options: LoadSaeOptions): Sae {
  const arrays = new Map<string, { shape: number[]; data: ArrayLike<unknown> }>();
  for (const [key, a] of readNpz(npz)) {
    const name = key.startsWith('w_') ? `W_${key.slice(2)}` : key;  // as SAELens's loader renames them
    if (arrays.has(name)) throw invalid(npz, `arrays ${key} and ${name} both give ${name}`);
    arrays.set(name, a);
  }
  const wEnc = arrays.get('W_enc');
  if (!wEnc || wEnc.shape.length !== 2 || wEnc.shape[0]! < 1 || wEnc.shape[1]! < 1)
    throw invalid(npz, `array w_enc [d_in, d_sae] is ${wEnc ? `[${wEnc.shape}]` : 'missing'}`);
  const [dIn, dSae] = wEnc.shape as [number, number];
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
  return build(cfg, arrays, npz);
}

function readConfig(path: string): Record<string, unknown> {
  const cfgPath = join(path, 'cfg.json');
  if (!existsSync(cfgPath)) throw invalid(path, 'cfg.json is missing');
  const bytes = readRegularFile(cfgPath, 'SAE config');  // a FIFO or directory: ERR_FILE_READ, never a hang
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw invalid(path, 'cfg.json is not valid UTF-8');
  }
  // Python's json (which writes SAELens configs) spells non-finite floats NaN and Infinity.
  const raw = parseJsonStrict(text, (why) => invalid(path, `cfg.json is not valid JSON: ${why}`), { nonFinite: true });
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(path, 'cfg.json must hold an object');
  return raw as Record<string, unknown>;
}

/**
 * Loads an SAE: a SAELens directory (cfg.json + sae_weights.safetensors) or a Gemma Scope
 * params.npz (a file, or a directory holding one). Throws ModelLoadError ERR_SAE_INVALID for
 * missing or malformed files, fields and tensors, UnsupportedModelError ERR_UNSUPPORTED_SAE for
 * an architecture, option or tensor neurotap does not run.
 */
export async function loadSae(path: string, options: LoadSaeOptions = {}): Promise<Sae> {
  if (!existsSync(path)) throw new ModelLoadError('ERR_FILE_NOT_FOUND', `no SAE at ${path}`);
  const dir = statSync(path).isDirectory();
  const npz = dir ? join(path, 'params.npz') : path;
  if (!dir || (existsSync(npz) && !existsSync(join(path, 'cfg.json')))) {
    if (!npz.endsWith('.npz') || !existsSync(npz)) throw invalid(path, 'expected a SAELens directory (cfg.json) or a Gemma Scope params.npz');
    return loadGemmaScope(npz, options);
  }
  const cfg = parseSaelensConfig(readConfig(path), path);
  if (options.hook) cfg.hookName = options.hook;
  const weights = join(path, 'sae_weights.safetensors');
  if (!existsSync(weights)) throw invalid(path, 'sae_weights.safetensors is missing');
  return build(cfg, readSafetensorsFile(weights, 'ERR_SAE_INVALID', 'SAE weights file').tensors, weights);
}
