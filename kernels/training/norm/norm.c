/* The checked entry points of the norms' backward; the kernels are in norm-impl.h. */
#include "training/norm/norm.h"

int training_layer_norm_backward(const float* grad_y, const float* x, const float* mean, const float* rstd,
                                 const float* w, int64_t rows, int64_t cols, float* gx, float* gw, float* gb) {
  DCX_REQUIRE(rows >= 0 && cols >= 1, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(grad_y || rows == 0, DCX_EINVAL_PTR);
  DCX_REQUIRE(rows == 0 || ((!gx && !gw) || (x && mean && rstd)), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_norm_isa)->layer_norm_backward(grad_y, x, mean, rstd, w, rows, cols, gx, gw, gb);
}

int training_batch_norm_frozen_backward(const float* grad_y, const float* x, const float* w, const float* mean,
                                        const float* var, float eps, int64_t n, int64_t c, int64_t hw, float* gx,
                                        float* gw, float* gb) {
  DCX_REQUIRE(n >= 0 && c >= 1 && hw >= 1, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(var && (grad_y || n == 0) && (!gw || (x && mean)), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_norm_isa)
      ->batch_norm_frozen_backward(grad_y, x, w, mean, var, eps, n, c, hw, gx, gw, gb);
}
