// Loads the compiled addon (prebuilds/ or build/) with node-gyp-build and types its surface
// (native/addon.cc, native/api/model-wrap.cc).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Shape entries: a number, or 'batch' / 'pos' for the run's dimensions. */
export type SymbolicDim = number | 'batch' | 'pos';

export interface NativeHookInfo {
  name: string;
  layer: number;
  shape: SymbolicDim[];
}

export interface NativeConfig {
  family: 'gpt2' | 'llama' | 'mistral' | 'qwen2';
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
  rope?: { type: string; theta: number; factor: number };
  threads: number;
}

export interface NativeModel {
  config(): NativeConfig;
  hooks(): NativeHookInfo[];
  run(
    tokens: Int32Array,
    batch: number,
    pos: number,
    hookIndices: Int32Array,
    buffers: Float32Array[],
    logits: Float32Array | null,
  ): Promise<void>;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeAddon {
  loadModel(dir: string, threads: number): Promise<NativeModel>;
  cpuFeatures(): { avx2: boolean; avx512f: boolean };
  hookKinds(): { suffix: string; perBlock: boolean }[];
}

// The package root is two levels above this file in both src/ (tsx, vitest) and dist/.
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);
const load = require('node-gyp-build') as (dir: string) => unknown;

let addon: NativeAddon | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  addon ??= load(root) as NativeAddon;
  return addon;
}
