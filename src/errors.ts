// Error classes with stable codes. Native failures arrive as Errors with a `code`
// (native/engine/error.h); wrapError() turns them into the subclass for that code.

/** Base class of every error neurotap throws; `code` is stable across versions. */
export class NeurotapError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A model directory, safetensors file or config.json could not be read or is invalid. */
export class ModelLoadError extends NeurotapError {}
/** The model's architecture or a config option is not supported. */
export class UnsupportedModelError extends NeurotapError {}
/** A hook name or pattern matches no hook of the model. `suggestions` lists close names. */
export class UnknownHookError extends NeurotapError {
  readonly suggestions: string[];
  constructor(code: string, message: string, suggestions: string[] = []) {
    super(code, message);
    this.suggestions = suggestions;
  }
}
/** Input tokens, shapes or options are invalid (empty batch, bad id, ...). */
export class InvalidInputError extends NeurotapError {}
/** The model was disposed. */
export class DisposedError extends NeurotapError {}
/** The requested device or dtype is not available in this build or on this machine. */
export class DeviceError extends NeurotapError {}
/** A run, cache or load needs more memory than there is (or than one JS typed array holds); refused before allocating. */
export class OutOfMemoryError extends NeurotapError {}
/** The compiled addon is missing or does not load here: no prebuilt binary for this platform and no source build. */
export class NativeAddonError extends NeurotapError {}

const byCode: Record<string, new (code: string, message: string) => NeurotapError> = {
  ERR_FILE_NOT_FOUND: ModelLoadError,
  ERR_MODEL_NOT_FOUND: ModelLoadError,
  ERR_FILE_READ: ModelLoadError,
  ERR_SAFETENSORS_INVALID: ModelLoadError,
  ERR_TENSOR_MISSING: ModelLoadError,
  ERR_TENSOR_SHAPE: ModelLoadError,
  ERR_CONFIG_INVALID: ModelLoadError,
  ERR_TOKENIZER_INVALID: ModelLoadError,
  ERR_GGUF_INVALID: ModelLoadError,
  ERR_STEERING_FILE_INVALID: ModelLoadError,
  ERR_SAE_INVALID: ModelLoadError,
  ERR_UNSUPPORTED_ARCHITECTURE: UnsupportedModelError,
  ERR_UNSUPPORTED_CONFIG: UnsupportedModelError,
  ERR_FAMILY_MISMATCH: UnsupportedModelError,
  ERR_UNSUPPORTED_SAE: UnsupportedModelError,
  ERR_UNKNOWN_HOOK: UnknownHookError,
  ERR_TOKEN_OUT_OF_RANGE: InvalidInputError,
  ERR_INVALID_INPUT: InvalidInputError,
  ERR_FEATURE_OUT_OF_RANGE: InvalidInputError,
  ERR_SAE_MISMATCH: InvalidInputError,
  ERR_BUFFER_SIZE: InvalidInputError,
  ERR_NO_TOKENIZER: InvalidInputError,
  ERR_HOOK_RETURN: InvalidInputError,
  ERR_DISPOSED: DisposedError,
  ERR_UNSUPPORTED_DEVICE: DeviceError,
  ERR_UNSUPPORTED_DTYPE: DeviceError,
  ERR_DEVICE_UNAVAILABLE: DeviceError,
  ERR_NVCC_NOT_FOUND: DeviceError,
  ERR_CUBLAS_NOT_FOUND: DeviceError,
  ERR_CUDA_BUILD_FAILED: DeviceError,
  ERR_BACKEND: DeviceError,
  ERR_OUT_OF_MEMORY: OutOfMemoryError,
  ERR_NATIVE_ADDON_MISSING: NativeAddonError,
};

/** Converts an error from the addon into the NeurotapError subclass for its code. */
export function wrapError(err: unknown): unknown {
  if (err instanceof NeurotapError) return err;
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') {
    const code = (err as Error & { code: string }).code;
    const Cls = byCode[code] ?? NeurotapError;
    const wrapped = new Cls(code, err.message);
    return wrapped;
  }
  return err;
}
