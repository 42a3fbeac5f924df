// Turns engine failures into JS Errors carrying a stable `code` (mapped to Error subclasses
// in src/errors.ts).
#pragma once

#include <napi.h>

#include <string>

namespace nt {

inline Napi::Error coded_error(Napi::Env env, const std::string &code, const std::string &message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

}  // namespace nt
