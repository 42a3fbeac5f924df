// The memory one run reads and writes, owned natively from the call to the settlement: inputs
// are copied in, outputs are written natively and handed to JS when the run succeeds. JS code
// that runs meanwhile (a hook, a timer) may detach or transfer any typed array it passed; the
// engine never sees JS memory, so that can neither redirect its writes nor free its inputs.
#pragma once

#include <napi.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace nt {

class RunBuffers {
 public:
  // A copy of the typed array `a` (of `type`, `count` elements): tokens, padding, patch
  // sources, counted rows. Throws a coded error on the wrong type or size.
  const void *input(Napi::Env env, Napi::Value a, napi_typedarray_type type, const char *what);
  // Native memory for an output of `count` elements of `type`, zeroed (or, with `copy_in`,
  // holding `target`'s contents, for outputs the engine adds to; with `overwritten`, unspecified:
  // for outputs the engine writes in full, the logits, a large one may reuse an earlier run's
  // released block). `target` is the JS typed array to fill when the run settles, or undefined
  // for a new array made then.
  void *output(Napi::Env env, const std::string &what, napi_typedarray_type type, size_t count, Napi::Value target, bool copy_in = false,
               bool overwritten = false);
  // JS thread, once the run has succeeded: fills each output's target (checked again: one
  // detached or transferred meanwhile is ERR_BUFFER_SIZE and nothing is filled) or hands the
  // native memory to a new JS typed array; returns them in the order of output().
  std::vector<Napi::Value> deliver(Napi::Env env);
  // Outputs so far (the next output's position in deliver()).
  size_t outputs() const { return outputs_.size(); }

 private:
  // Frees a block: malloc'ed, or a mapping of `mapped` bytes (kept for reuse, see run-buffers.cc).
  struct Free {
    Free() : mapped(0) {}
    explicit Free(size_t m) : mapped(m) {}
    size_t mapped;
    void operator()(void *p) const;
  };
  using Block = std::unique_ptr<void, Free>;
  struct Output {
    std::string what;
    napi_typedarray_type type;
    size_t count = 0, bytes = 0;
    Block data;
    Napi::Reference<Napi::Value> target;  // empty: a new array
  };
  static Block allocate(Napi::Env env, size_t bytes, const std::string &what, bool overwritten = false);
  std::vector<Block> inputs_;
  std::vector<Output> outputs_;
};

}  // namespace nt
