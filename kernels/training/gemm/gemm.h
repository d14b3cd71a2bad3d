/* The training kernels' GEMM and the linear layer on it (pure C, float32, row-major).
 *
 * One GEMM (6 x 16 register tile) that reads its B rows in place where they are contiguous, plus a
 * dot-product form for long reductions; every product of the training kernels runs on it. */
#ifndef DCX_TRAINING_GEMM_H
#define DCX_TRAINING_GEMM_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C[m, n] = sum_k A(m, k) B(k, n) (+ C when accumulate) (+ bias_m[m]) (+ bias_n[n]), ReLU when
 * relu; A(m, k) = a[m*a_rs + k*a_cs], B(k, n) = b[k*b_rs + n*b_cs], C row-major with row stride
 * c_rs. Any strides: packing reads transposed operands in place. */
int training_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                  int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate, const float* bias_m,
                  const float* bias_n, int relu);

/* y [n, out] = x [n, in] W^T + bias (W [out, in]); ReLU applied when relu. */
int training_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in, int64_t out,
                            int relu, float* y);

/* From grad_y [n, out]; with relu_out (the ReLU output y of a fused forward) the gradient is
 * first masked: g = grad_y * (relu_out > 0). gx [n, in], gw [out, in], gb [out]; each may be
 * NULL (not computed). */
int training_linear_backward(const float* grad_y, const float* x, const float* w, const float* relu_out, int64_t n,
                             int64_t in, int64_t out, float* gx, float* gw, float* gb);

/* The function table each ISA build of gemm-impl.h defines (the entry points above, after their checks). */
struct training_gemm_isa {
  int (*gemm)(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate, const float* bias_m,
              const float* bias_n, int relu);
  int (*linear_forward)(const float* x, const float* w, const float* bias, int64_t n, int64_t in, int64_t out,
                        int relu, float* y);
  int (*linear_backward)(const float* grad_y, const float* x, const float* w, const float* relu_out, int64_t n,
                         int64_t in, int64_t out, float* gx, float* gw, float* gb);
};
DCX_ISA_TABLES(struct training_gemm_isa, training_gemm_isa);

#ifdef __cplusplus
}
#endif

#endif
