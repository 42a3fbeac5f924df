// Public exports of neurotap.
export { loadModel, Model, ActivationCache, probeDevice } from './model/Model.js';
export type { LoadModelOptions, ModelInput, RunOptions, RunResult, HookInfo, ModelConfig, HookMap, AttachSaeOptions, AttachedSae, SparseFeatures, FeatureDensity } from './model/Model.js';
export type { LoadProgress } from './model/task.js';
export { resolveModelDir, hubCacheDir } from './model/hub.js';
export type { BackwardOptions, BackwardResult, BackwardHookMap, DetachKind, DetachSpec } from './model/backward.js';
export type { Metric, MetricToken, MetricTokens, MetricPositions, MetricFunction } from './model/metric.js';
export { attributionPatching, integratedGradients } from './attribution.js';
export type { AttributionPatchingOptions, AttributionPatchingResult, IntegratedGradientsOptions, IntegratedGradientsResult } from './attribution.js';
export { Sae, loadSae } from './sae/Sae.js';
export type { SaeConfig, SaeArchitecture, SaeNormalization, LoadSaeOptions } from './sae/Sae.js';
export { featureHooks } from './sae/features.js';
export type { FeatureEditOptions } from './sae/features.js';
export { readNpz } from './io/npz.js';
export { edits } from './hooks/edits.js';
export type { Edit, EditSelection, PositionSelector, HookFunction, HookContext, HookSpec } from './hooks/edits.js';
export type { GenerateOptions, GenerateResult, GenerateStep } from './generate/generate.js';
export { Rng, sampleToken, argmax } from './generate/sampling.js';
export type { SamplingOptions } from './generate/sampling.js';
export { Tensor } from './tensor.js';
export type { DType } from './tensor.js';
export { Tokenizer } from './tokenizer.js';
export type { EncodeOptions } from './tokenizer.js';
export { BLOCK_HOOKS, MODEL_HOOKS, SAE_HOOKS, blockHook, resolveHooks } from './hooks/names.js';
export type { HookName, HookPattern, BlockHookSuffix, ModelHookName, SaeHookSuffix, Family, HookNameFor, BlockHookSuffixFor, ModelHookNameFor } from './hooks/names.js';
export type { HookKeyFor, HookPatternFor, HookGlob, HookRecord, CompletedHookRecord, CompletedLayer } from './hooks/names.js';
export {
  NeurotapError,
  ModelLoadError,
  UnsupportedModelError,
  UnknownHookError,
  InvalidInputError,
  DisposedError,
  DeviceError,
  OutOfMemoryError,
  NativeAddonError,
} from './errors.js';
export { readSafetensors, writeSafetensors } from './io/safetensors.js';
export { trainSteeringVector, steeringHooks, mergeHooks } from './steering/steer.js';
export type { ContrastivePair, TrainSteeringOptions } from './steering/steer.js';
export { saveSteeringSafetensors, loadSteeringSafetensors, loadSingleVector, saveControlVector, loadControlVector } from './steering/vectors.js';
export type { SteeringVector, ControlVectorOptions } from './steering/vectors.js';
export { meanDifference, firstPrincipalComponent } from './steering/train-math.js';
export { readGguf, writeGguf } from './steering/gguf.js';
export type { ExtractOptions, ExtractBatch } from './extract/extract.js';
export type { SourceSpec, Document } from './extract/sources.js';
export { toTokens, toStrTokens } from './analysis/tokens.js';
export type { ToTokensOptions } from './analysis/tokens.js';
export { tokenLogProbs, lossPerToken, loss, topKTokens } from './analysis/logprobs.js';
export type { LogitsAndTokens, LossOptions, TopKOptions, TopKTokens } from './analysis/logprobs.js';
export { accumulatedResid, logitLens, decomposeResid, stackHeadResults, applyLnToStack } from './analysis/resid.js';
export type { AccumulatedResidOptions, LogitLensOptions, DecomposeResidOptions, StackHeadResultsOptions, ApplyLnOptions } from './analysis/resid.js';
export type { PosSlice, ResidStack } from './analysis/stack.js';
export { applyChatTemplate } from './analysis/chat.js';
export type { ChatMessage, ChatTemplateOptions } from './analysis/chat.js';
