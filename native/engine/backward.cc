// The backward pass: gradients of a metric on the logits (or of seed gradients at hooks) with
// respect to every hook's activation, by recomputing one layer at a time from its saved input.
#include "engine/backward.h"

#include "engine/error.h"

namespace nt {

void Model::backward(const BackwardRequest &req, HookPlan *plan, HookPlan *grad_plan) {
  (void)req;
  (void)plan;
  (void)grad_plan;
  fail(code::kInvalidInput, "backward passes are not available in this build");
}

}  // namespace nt
