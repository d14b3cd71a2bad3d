/* The checked entry points of the GEMM and the linear layer; the kernels are in gemm-impl.h. */
#include "training/gemm/gemm.h"

#include <string.h>

int training_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                  int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate, const float* bias_m,
                  const float* bias_n, int relu) {
  DCX_REQUIRE(m >= 0 && n >= 0 && k >= 0 && c_rs >= n, DCX_EINVAL_SHAPE);
  if (m == 0 || n == 0) return DCX_OK;
  DCX_REQUIRE(c && (k == 0 || (a && b)), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_gemm_isa)
      ->gemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, accumulate, bias_m, bias_n, relu);
}

int training_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in, int64_t out,
                            int relu, float* y) {
  DCX_REQUIRE(n >= 0 && in >= 1 && out >= 1, DCX_EINVAL_SHAPE);
  if (n == 0) return DCX_OK;
  DCX_REQUIRE(x && w && y, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_gemm_isa)->linear_forward(x, w, bias, n, in, out, relu != 0, y);
}

int training_linear_backward(const float* grad_y, const float* x, const float* w, const float* relu_out, int64_t n,
                             int64_t in, int64_t out, float* gx, float* gw, float* gb) {
  DCX_REQUIRE(n >= 0 && in >= 1 && out >= 1, DCX_EINVAL_SHAPE);
  if (n == 0) {
    if (gw) memset(gw, 0, sizeof(float) * (size_t)(out * in));
    if (gb) memset(gb, 0, sizeof(float) * (size_t)out);
    return DCX_OK;
  }
  DCX_REQUIRE(grad_y && (!gx || w) && (!gw || x), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_gemm_isa)->linear_backward(grad_y, x, w, relu_out, n, in, out, gx, gw, gb);
}
