/* The checked entry points of the losses; the kernels are in loss-impl.h. */
#include "training/loss/loss.h"

int training_cross_entropy(const float* logits, const int64_t* target, int64_t n, int64_t c, int64_t ignore_index,
                           float* loss, float* grad) {
  DCX_REQUIRE(n >= 1 && c >= 1, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(logits && target && loss && grad, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_loss_isa)->cross_entropy(logits, target, n, c, ignore_index, loss, grad);
}

int training_bce_with_logits(const float* z, const float* t, int64_t n, float* loss, float* grad) {
  DCX_REQUIRE(n >= 1, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(z && t && loss && grad, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_loss_isa)->bce_with_logits(z, t, n, loss, grad);
}
