/*
 * Fused shuffled partitioned linear (ICIIA): pure C kernels, no PyTorch or ExecuTorch dependency.
 *
 *   x [N, d_in], w [P, d_out/P, d_in/P] (row-major, contiguous), bias [d_out] or NULL
 *   z = blockdiag(W_1..W_P) x + b          (z[n, p*bo + j] = sum_k W[p, j, k] x[n, p*bi + k] + b[p*bo + j])
 *   y = shuffle(z)                          (y[n, j*P + p] = z[n, p*bo + j]); with shuffle = 0, y = z
 *
 * with bi = d_in / P and bo = d_out / P. One pass: the bias and the shuffle are applied when the
 * output tile leaves the registers. The backward kernels give dL/dx, dL/dW and dL/db from dL/dy.
 *
 * Forward paths (partitioned_linear-impl.h): N < 4 reads the weight rows directly (dot products;
 * packing would cost more than the product). Otherwise the weights are packed for the inner loop, per
 * call as BLAS does, or once ahead with partitioned_linear_pack_weight + partitioned_linear_forward_packed
 * when they are constant: 16-lane panels whose lanes are 16 consecutive shuffled outputs (shuffle,
 * P = 2, 4), 8-partition lanes x 6 outputs (shuffle, P a multiple of 8), or 16-column panels per
 * partition (P = 1, unshuffled, other P). Without pre-packing, that last layout with blocks of >= 256
 * uses the transposed product instead (x packed into 16-row panels, weight rows read in place).
 *
 * Single-threaded and thread-safe (the base's per-thread scratch); the build that runs (portable,
 * x86-64-v3, NEON) is the library's one ISA choice (base/isa.h). Return DCX_OK or a DCX_E* code
 * (DCX_EINVAL_SHAPE: d_in or d_out not divisible by P, or a size < 1).
 */
#ifndef DCX_PARTITIONED_LINEAR_H
#define DCX_PARTITIONED_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#include "base/isa.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y [N, d_out] = shuffle(blockdiag(W) x + b). */
int partitioned_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t d_in,
                               int64_t d_out, int64_t p, int shuffle, float* y);

/* grad_x [N, d_in] from grad_y [N, d_out] (shuffled layout when shuffle != 0). */
int partitioned_linear_backward_input(const float* grad_y, const float* w, int64_t n, int64_t d_in, int64_t d_out,
                                      int64_t p, int shuffle, float* grad_x);

/* grad_w [P, d_out/P, d_in/P] (overwritten) from grad_y and x. */
int partitioned_linear_backward_weight(const float* grad_y, const float* x, int64_t n, int64_t d_in, int64_t d_out,
                                       int64_t p, int shuffle, float* grad_w);

/* grad_b [d_out] (overwritten): column sums of grad_y, unshuffled. */
int partitioned_linear_backward_bias(const float* grad_y, int64_t n, int64_t d_out, int64_t p, int shuffle,
                                     float* grad_b);

/* Pre-packing for constant weights: number of floats of the packed form, the packing, and the
 * forward that reads it (bias is still passed separately, in its natural [d_out] order). */
size_t partitioned_linear_packed_size(int64_t d_in, int64_t d_out, int64_t p, int shuffle);
int partitioned_linear_pack_weight(const float* w, int64_t d_in, int64_t d_out, int64_t p, int shuffle,
                                   float* packed);
int partitioned_linear_forward_packed(const float* x, const float* packed, const float* bias, int64_t n,
                                      int64_t d_in, int64_t d_out, int64_t p, int shuffle, float* y);

/* The function table each ISA build of partitioned_linear-impl.h defines (the entry points above, after
 * their checks; forward takes w or packed). */
struct partitioned_linear_isa {
  int (*forward)(const float* x, const float* w, const float* packed, const float* bias, int64_t n, int64_t d_in,
                 int64_t d_out, int64_t p, int shuffle, float* y);
  size_t (*packed_size)(int64_t d_in, int64_t d_out, int64_t p, int shuffle);
  void (*pack_weight)(const float* w, int64_t d_in, int64_t d_out, int64_t p, int shuffle, float* packed);
  int (*backward_input)(const float* gy, const float* w, int64_t n, int64_t d_in, int64_t d_out, int64_t p,
                        int shuffle, float* gx);
  int (*backward_weight)(const float* gy, const float* x, int64_t n, int64_t d_in, int64_t d_out, int64_t p,
                         int shuffle, float* gw);
  int (*backward_bias)(const float* gy, int64_t n, int64_t d_out, int64_t p, int shuffle, float* gb);
};
DCX_ISA_TABLES(struct partitioned_linear_isa, partitioned_linear_isa);

#ifdef __cplusplus
}
#endif

#endif
