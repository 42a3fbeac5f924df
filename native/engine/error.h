// Coded engine errors: every failure caused by user input is thrown as an EngineError
// whose stable `code` the N-API layer copies onto the JS Error (see src/errors.ts).
#pragma once

#include <stdexcept>
#include <string>

namespace nt {

// Stable error codes shared with TypeScript (src/errors.ts). Never rename one.
namespace code {
inline constexpr const char *kFileNotFound = "ERR_FILE_NOT_FOUND";
inline constexpr const char *kFileRead = "ERR_FILE_READ";
inline constexpr const char *kSafetensorsInvalid = "ERR_SAFETENSORS_INVALID";
inline constexpr const char *kTensorMissing = "ERR_TENSOR_MISSING";
inline constexpr const char *kTensorShape = "ERR_TENSOR_SHAPE";
inline constexpr const char *kConfigInvalid = "ERR_CONFIG_INVALID";
inline constexpr const char *kUnsupportedArch = "ERR_UNSUPPORTED_ARCHITECTURE";
inline constexpr const char *kUnsupportedConfig = "ERR_UNSUPPORTED_CONFIG";
inline constexpr const char *kUnknownHook = "ERR_UNKNOWN_HOOK";
inline constexpr const char *kTokenOutOfRange = "ERR_TOKEN_OUT_OF_RANGE";
inline constexpr const char *kInvalidInput = "ERR_INVALID_INPUT";
inline constexpr const char *kFeatureOutOfRange = "ERR_FEATURE_OUT_OF_RANGE";
inline constexpr const char *kSaeMismatch = "ERR_SAE_MISMATCH";
inline constexpr const char *kBufferSize = "ERR_BUFFER_SIZE";
inline constexpr const char *kDisposed = "ERR_DISPOSED";
inline constexpr const char *kOutOfMemory = "ERR_OUT_OF_MEMORY";
inline constexpr const char *kHookFailed = "ERR_HOOK_FAILED";
inline constexpr const char *kHookReturn = "ERR_HOOK_RETURN";
inline constexpr const char *kAborted = "ERR_ABORTED";
inline constexpr const char *kDeviceUnavailable = "ERR_DEVICE_UNAVAILABLE";
inline constexpr const char *kBackend = "ERR_BACKEND";
inline constexpr const char *kInternal = "ERR_INTERNAL";
}  // namespace code

class EngineError : public std::runtime_error {
 public:
  EngineError(std::string code, const std::string &message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string &code() const { return code_; }

 private:
  std::string code_;
};

[[noreturn]] inline void fail(const char *code, const std::string &message) {
  throw EngineError(code, message);
}

}  // namespace nt
