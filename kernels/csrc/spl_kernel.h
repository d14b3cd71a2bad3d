/*
 * Fused shuffled partitioned linear: pure C kernels, no PyTorch or ExecuTorch dependency.
 *
 *   x [N, d_in], w [P, d_out/P, d_in/P] (row-major, contiguous), bias [d_out] or NULL
 *   z = blockdiag(W_1..W_P) x + b          (z[n, p*bo + j] = sum_k W[p, j, k] x[n, p*bi + k] + b[p*bo + j])
 *   y = shuffle(z)                          (y[n, j*P + p] = z[n, p*bo + j]); with shuffle = 0, y = z
 *
 * with bi = d_in / P and bo = d_out / P. One pass: the bias and the shuffle are applied when the
 * output tile leaves the registers. The backward kernels give dL/dx, dL/dW and dL/db from dL/dy.
 *
 * Implementations (chosen at run time, or forced with spl_set_isa for tests):
 *   portable  - GCC/Clang vector extensions, built for the baseline ISA (x86-64 / armv8-a)
 *   x86-64-v3 - the same source built with AVX2 + FMA, used when the CPU has them
 *   neon      - aarch64: NEON intrinsics micro-kernels (fmla by lane), NEON is baseline there
 *
 * Forward paths (spl_kernel_impl.h): N < 4 reads the weight rows directly (dot products; packing
 * would cost more than the product). Otherwise the weights are packed for the inner loop, per call
 * as BLAS does, or once ahead with spl_pack_weight + spl_forward_packed when they are constant:
 * 16-lane panels whose lanes are 16 consecutive shuffled outputs (shuffle, P = 2, 4), 8-partition
 * lanes x 6 outputs (shuffle, P a multiple of 8), or 16-column panels per partition (P = 1,
 * unshuffled, other P). Without pre-packing, that last layout with blocks of >= 256 uses the
 * transposed product instead (x packed into 16-row panels, weight rows read in place).
 *
 * All functions are single-threaded and thread-safe (per-thread scratch). Return 0 or an SPL_E* code.
 */
#ifndef DCX_SPL_KERNEL_H
#define DCX_SPL_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPL_OK 0
#define SPL_EINVAL_SHAPE 1 /* d_in or d_out not divisible by P, or a size < 1 */
#define SPL_EINVAL_PTR 2   /* a required pointer is NULL */
#define SPL_ENOMEM 3       /* scratch allocation failed */
#define SPL_EINVAL_ISA 4   /* spl_set_isa: implementation not available on this build / CPU */

enum spl_isa {
  SPL_ISA_AUTO = 0,
  SPL_ISA_PORTABLE = 1,
  SPL_ISA_X86_64_V3 = 2,
  SPL_ISA_NEON = 3,
};

/* Human-readable message for a return code. */
const char* spl_strerror(int code);

/* Implementation selection. spl_set_isa(SPL_ISA_AUTO) restores the best one for this CPU. */
int spl_set_isa(int isa);
int spl_active_isa(void);
const char* spl_isa_name(int isa);
int spl_isa_available(int isa);
/* The implementation named name ("portable", "x86-64-v3", "neon"), or -1. */
int spl_isa_from_name(const char* name);

/* y [N, d_out] = shuffle(blockdiag(W) x + b). */
int spl_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t d_in,
                int64_t d_out, int64_t p, int shuffle, float* y);

/* grad_x [N, d_in] from grad_y [N, d_out] (shuffled layout when shuffle != 0). */
int spl_backward_input(const float* grad_y, const float* w, int64_t n, int64_t d_in, int64_t d_out,
                       int64_t p, int shuffle, float* grad_x);

/* grad_w [P, d_out/P, d_in/P] (overwritten) from grad_y and x. */
int spl_backward_weight(const float* grad_y, const float* x, int64_t n, int64_t d_in, int64_t d_out,
                        int64_t p, int shuffle, float* grad_w);

/* grad_b [d_out] (overwritten): column sums of grad_y, unshuffled. */
int spl_backward_bias(const float* grad_y, int64_t n, int64_t d_out, int64_t p, int shuffle,
                      float* grad_b);

/* Pre-packing for constant weights: number of floats of the packed form, the packing, and the
 * forward that reads it (bias is still passed separately, in its natural [d_out] order). */
size_t spl_packed_size(int64_t d_in, int64_t d_out, int64_t p, int shuffle);
int spl_pack_weight(const float* w, int64_t d_in, int64_t d_out, int64_t p, int shuffle,
                    float* packed);
int spl_forward_packed(const float* x, const float* packed, const float* bias, int64_t n,
                       int64_t d_in, int64_t d_out, int64_t p, int shuffle, float* y);

/* Free this thread's scratch buffer (it is reused across calls otherwise). */
void spl_release_scratch(void);

#ifdef __cplusplus
}
#endif

#endif /* DCX_SPL_KERNEL_H */
