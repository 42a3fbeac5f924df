// PromiseWorker: C++ failures become (code, message) on the worker thread, a rejection on
// the JS thread.
#include "api/worker.h"

#include <new>

#include "engine/error.h"

namespace nt {

void PromiseWorker::Execute() {
  try {
    work();
    return;
  } catch (const EngineError &e) {
    code_ = e.code();
    message_ = e.what();
  } catch (const std::bad_alloc &) {
    code_ = code::kOutOfMemory;
    message_ = "out of memory";
  } catch (const std::exception &e) {
    code_ = code::kInternal;
    message_ = std::string("internal error: ") + e.what();
  }
  SetError(message_);
}

void PromiseWorker::OnError(const Napi::Error &) {
  Napi::Value thrown = js_error(Env());
  if (!thrown.IsEmpty()) deferred_.Reject(thrown);
  else deferred_.Reject(coded_error(Env(), code_, message_).Value());
}

}  // namespace nt
