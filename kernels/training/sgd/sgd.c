/* The checked entry point of the SGD update; the kernel is in sgd-impl.h. */
#include "training/sgd/sgd.h"

int training_sgd_update(float* p, const float* g, int64_t numel, float lr) {
  DCX_REQUIRE(numel >= 0, DCX_EINVAL_SHAPE);
  if (numel == 0) return DCX_OK;
  DCX_REQUIRE(p && g, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_sgd_isa)->update(p, g, numel, lr);
}
