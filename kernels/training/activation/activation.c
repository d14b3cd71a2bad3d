/* The checked entry points of the activations' backward; the kernels are in activation-impl.h. */
#include "training/activation/activation.h"

int training_threshold_backward(const float* grad_y, const float* x, int64_t numel, float lo, float hi, float* gx) {
  DCX_REQUIRE(numel >= 0, DCX_EINVAL_SHAPE);
  if (numel == 0) return DCX_OK;
  DCX_REQUIRE(grad_y && x && gx, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_activation_isa)->threshold_backward(grad_y, x, numel, lo, hi, gx);
}

int training_softmax_backward(const float* grad_y, const float* y, int64_t rows, int64_t cols, int log_softmax,
                              float* gx) {
  DCX_REQUIRE(rows >= 0 && cols >= 1, DCX_EINVAL_SHAPE);
  if (rows == 0) return DCX_OK;
  DCX_REQUIRE(grad_y && y && gx, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_activation_isa)->softmax_backward(grad_y, y, rows, cols, log_softmax != 0, gx);
}
