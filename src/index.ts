// Public exports of neurotap.
export { loadModel, Model, ActivationCache } from './model/Model.js';
export type { LoadModelOptions, ModelInput, RunOptions, RunResult, HookInfo, ModelConfig } from './model/Model.js';
export { Tensor } from './tensor.js';
export type { DType } from './tensor.js';
export { Tokenizer } from './tokenizer.js';
export type { EncodeOptions } from './tokenizer.js';
export { BLOCK_HOOKS, MODEL_HOOKS, blockHook, resolveHooks } from './hooks/names.js';
export type { HookName, HookPattern, BlockHookSuffix, ModelHookName } from './hooks/names.js';
export {
  NeurotapError,
  ModelLoadError,
  UnsupportedModelError,
  UnknownHookError,
  InvalidInputError,
  DisposedError,
  DeviceError,
} from './errors.js';
export { readSafetensors, writeSafetensors } from './io/safetensors.js';
