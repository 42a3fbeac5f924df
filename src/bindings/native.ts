// Loads the compiled addon (build/ or prebuilds/, found by node-gyp-build; missing: ERR_NATIVE_ADDON_MISSING)
// and types its surface (native/addon.cc, native/api/model-wrap.cc).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { NativeAddonError } from '../errors.js';
import type { NativeAction } from '../hooks/edits.js';

/** Shape entries: a number, or 'batch' / 'pos' / 'key_pos' for the run's dimensions. */
export type SymbolicDim = number | 'batch' | 'pos' | 'key_pos';

export interface NativeHookInfo {
  name: string;
  layer: number;
  shape: SymbolicDim[];
}

export interface NativeConfig {
  family: 'gpt2' | 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gpt_neox' | 'gemma2' | 'gemma3';
  architecture: string;
  nLayers: number;
  dModel: number;
  nHeads: number;
  nKvHeads: number;
  dHead: number;
  dMlp: number;
  dVocab: number;
  nCtx: number;
  normEps: number;
  normalization: 'LN' | 'RMS';
  act: string;
  gatedMlp: boolean;
  positionalEmbedding: 'standard' | 'rotary';
  tiedEmbeddings: boolean;
  slidingWindow: number[];
  /** Rotary settings (rotaryDim: dims turned per head, less than dHead for GPT-NeoX's partial rotary). */
  rope?: { type: string; theta: number; factor: number; rotaryDim: number };
  /** GPT-NeoX: attention and MLP both read resid_pre (no hook_resid_mid). */
  parallelResidual: boolean;
  /** Gemma 2/3: post-attention and post-feedforward norms (ln1_post, ln2_post). */
  sandwichNorms: boolean;
  /** Gemma 3, Qwen3: RMSNorm of q and k per head (attn.q_norm, attn.k_norm). */
  qkNorm: boolean;
  /** Gemma 2 soft-capping of attention scores and final logits (0 = none). */
  attnSoftcap: number;
  finalSoftcap: number;
  threads: number;
  /** Backend the model runs on. */
  device: 'cpu' | 'cuda';
  /** The device's name (e.g. the GPU model). */
  deviceName: string;
  /** Weight dtype on the device. */
  dtype: 'f32' | 'f16' | 'bf16';
  /** What GEMM inputs are rounded to (the compute mode). */
  compute: 'f32' | 'f16' | 'bf16';
}

/** A KV cache made by NativeModel.createCache. */
export interface NativeKvCache {
  readonly length: number;
  readonly capacity: number;
  readonly batch: number;
  /** A copy of each row's left padding. */
  readonly pads: number[];
}

/** An SAE as the addon takes it: float32 tensors in SAELens's layout. */
export interface NativeSae {
  architecture: 'standard' | 'jumprelu' | 'topk' | 'gated';
  normalization: 'none' | 'scale' | 'constant_norm_rescale' | 'layer_norm';
  dIn: number;
  dSae: number;
  k?: number;
  /** TopK: rank and decode by ‖W_dec[i]‖ (SAELens rescale_acts_by_decoder_norm). */
  rescaleActsByDecoderNorm?: boolean;
  applyBDecToInput: boolean;
  normScale?: number;
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  threshold?: Float32Array;
  r_mag?: Float32Array;
  b_mag?: Float32Array;
}

export interface NativeRunOptions {
  tokens: Int32Array;
  batch: number;
  pos: number;
  /** Left padding per row. */
  pad?: Int32Array;
  /** Trailing padding per row (no cache, no left padding): last-only logits read each row's last real position. */
  rightPad?: Int32Array;
  /** Cancels the forward between blocks (ERR_ABORTED). */
  control?: NativeTaskControl;
  cache?: NativeKvCache;
  /** Hooks to capture: into `buffer` when given (filled when the run settles), else into a new array. */
  captures?: { index: number; buffer?: Float32Array }[];
  /** A buffer to fill, true for a new array, null for no logits. */
  logits?: Float32Array | true | null;
  logitsLastOnly?: boolean;
  /** Run blocks [0, stopAtLayer) only. */
  stopAtLayer?: number;
  /** Pick each row's next token from the last-position logits once the head's hooks have run (needs logitsLastOnly; engine/sampling.h). `rng` (xoshiro128** state) is advanced in place when the run settles; rows with `rows[b] == 0` are skipped (token -1, no draw). */
  sample?: NativeSampleOptions;
  actions?: NativeAction[];
  /** Read-outs of the SAE attached at hook `index`: top-k acts_post [batch * pos, k] (k > 0), firing counts per feature added into `counts` [d_sae] over rows with `rows[r] != 0` (all rows without `rows`). */
  saeFeatures?: { index: number; k?: number; indices?: Int32Array; values?: Float32Array; counts?: Uint32Array; rows?: Uint8Array }[];
  dispatcher?: (id: number, data: Float32Array, shape: number[], ctx: { step: number; pos0: number; promptLength: number; hookIndex: number }) => void;
}

/** Sampling settings of one run: temperature 0 is greedy (no draw). */
export interface NativeSampleOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  rng?: Uint32Array;
  rows?: Uint8Array;
}

/** What NativeModel.run resolves to: the capture arrays in request order, the logits, and the sampled ids (with `sample`). */
export interface NativeRunResult {
  captures: Float32Array[];
  logits: Float32Array | null;
  sampled?: Int32Array | null;
}

/** One term of a metric on the final logits (engine MetricTerm): kind 0 = weight * logit[a], 1 = weight * (logit[a] - logit[b]), 2 = weight * log_softmax[a], at padded row `row`, position `pos`. */
export interface NativeMetricTerm {
  kind: 0 | 1 | 2;
  row: number;
  pos: number;
  a: number;
  b?: number;
  weight?: number;
}

/** Options of NativeModel.backward: a forward (no cache, every position's logits) and the backward pass. Exactly one of terms, dlogits, metricCallbackId and seeds. */
export interface NativeBackwardOptions extends Omit<NativeRunOptions, 'cache' | 'logitsLastOnly'> {
  terms?: NativeMetricTerm[];
  /** d metric / d logits, [batch, pos, vocab]. */
  dlogits?: Float32Array;
  /** The dispatcher is called with this id and the logits [batch, pos, vocab] (hookIndex -1); it overwrites them with d metric / d logits. */
  metricCallbackId?: number;
  /** Gradients at hook outputs where the backward pass starts, each [replicas, ...hook shape]. */
  seeds?: { index: number; data: Float32Array }[];
  /** The seeds' leading axis S. Defaults to 1. */
  replicas?: number;
  /** Stop-gradient masks per layer. */
  detach?: { pattern?: boolean; normScale?: boolean; mlpAct?: boolean }[];
  /** ln_final's scale is a constant in the backward pass. */
  finalNormScaleDetached?: boolean;
  /** Gradients to capture, each [replicas, ...hook shape]. */
  gradCaptures?: { index: number }[];
  /** Edits and JS functions on gradients, in the format of `actions`. */
  gradActions?: NativeAction[];
  /** Bytes of block internals kept from the forward so those blocks are not recomputed (0: the top block only). */
  keepBytes?: number;
}

/** What NativeModel.backward resolves to. */
export interface NativeBackwardResult extends NativeRunResult {
  /** In gradCaptures order. */
  grads: Float32Array[];
  /** The metric's value per batch row (terms only), else null. */
  metricRows: Float32Array | null;
}

export interface NativeModel {
  config(): NativeConfig;
  hooks(): NativeHookInfo[];
  /** Every typed array it reads is copied at the call; outputs are written natively and delivered when it settles. */
  run(options: NativeRunOptions): Promise<NativeRunResult>;
  /** A forward and the backward pass from a metric or seeds (native/api/backward-wrap.cc). */
  backward(options: NativeBackwardOptions): Promise<NativeBackwardResult>;
  createCache(batch: number, capacity: number): NativeKvCache;
  /** Moves every row's cached positions `delta` later (> 0) or earlier (< 0, at most the smallest left padding), with their padding. */
  shiftCache(cache: NativeKvCache, delta: number): Promise<void>;
  /** Copies row `sourceRow` (default 0) of `source` into `row` of `cache`, ending at its length (its padding set to match); null empties the row. */
  admitToCache(cache: NativeKvCache, row: number, source: NativeKvCache | null, sourceRow?: number): Promise<void>;
  attachSae(index: number, sae: NativeSae, useErrorTerm: boolean): Promise<void>;
  detachSae(index: number): Promise<void>;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeLoadOptions {
  threads: number;
  device: 'cpu' | 'cuda';
  dtype: 'f32' | 'f16' | 'bf16';
  /** The GEMMs' numeric policy (omitted: the device's default). */
  compute?: 'f32' | 'bf16';
  /** Where backend libraries (libneurotap_cuda.so) are looked up first. */
  backendDir: string;
  /** More folders for their dependencies (libcublasLt.so.13), tried after the loader's search and before the CUDA toolkit. */
  libraryDirs?: string[];
  /** Cancels the load between tensors (ERR_ABORTED); its progress is the bytes read. */
  control?: NativeTaskControl;
}

/** A load or run in flight, seen from JS: cancel it, or read its progress `[done, total]`. */
export interface NativeTaskControl {
  cancel(): void;
  progress(): [number, number];
}

export interface NativeAddon {
  NativeTaskControl: new () => NativeTaskControl;
  loadModel(dir: string, options: NativeLoadOptions): Promise<NativeModel>;
  probeBackend(name: string, dir: string, libraryDirs?: string[]): { available: boolean; reason: string; device: string };
  cpuFeatures(): { avx2: boolean; avx512f: boolean };
  hookKinds(): { suffix: string; perBlock: boolean; sae: boolean }[];
}

// The package root is two levels above this file in both src/ (tsx, vitest) and dist/.
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);
const gypBuild = require('node-gyp-build') as { path(dir: string): string };

/** Where prebuilt binaries ship (prebuilds/, made by `npm run prebuildify` when the package is packed). */
const PREBUILT_PLATFORMS = 'linux-x64 (glibc 2.34+, libstdc++ of GCC 12+)';

/** This process's platform as prebuilds are matched: e.g. `linux-x64 (glibc 2.36)`, Node version and N-API version. */
function platformName(): string {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  const libc = process.platform !== 'linux' ? '' : header?.glibcVersionRuntime ? ` (glibc ${header.glibcVersionRuntime})` : ' (not glibc)';
  return `${process.platform}-${process.arch}${libc}, Node ${process.versions.node} (N-API ${process.versions.napi})`;
}

function addonMissing(what: string, cause?: unknown): NativeAddonError {
  return new NativeAddonError(
    'ERR_NATIVE_ADDON_MISSING',
    `${what}. Prebuilt binaries ship for ${PREBUILT_PLATFORMS}; elsewhere the addon is compiled when the package ` +
      'installs, which needs python3, make and a C++17 compiler (g++ or clang++): install them and run ' +
      '`npm rebuild neurotap` (an install with --ignore-scripts skips that step)',
    { cause },
  );
}

/** The addon file node-gyp-build picks: build/Release (a source build) first, then the matching prebuild. */
function addonFile(): string {
  try {
    return gypBuild.path(root);
  } catch (err) {
    throw addonMissing(`neurotap's native addon is not installed for ${platformName()}: no build/Release/ and no matching prebuilds/ in ${root}`, err);
  }
}

let addon: NativeAddon | undefined;

/** The addon, loaded on first use; a missing or unloadable binary is ERR_NATIVE_ADDON_MISSING. */
export function native(): NativeAddon {
  if (addon) return addon;
  const file = addonFile();
  try {
    addon = require(file) as NativeAddon;
  } catch (err) {
    throw addonMissing(`neurotap's native addon ${file} does not load on ${platformName()}: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  return addon;
}

/** The folder holding the addon, where backend libraries are looked up first. */
export function addonDir(): string {
  return dirname(addonFile());
}

/** Where backend libraries (libneurotap_cuda.so) are loaded from: NEUROTAP_BACKEND_DIR, else the addon's folder. */
export function backendDir(): string {
  return process.env.NEUROTAP_BACKEND_DIR || addonDir();
}
