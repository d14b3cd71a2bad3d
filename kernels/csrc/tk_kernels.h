/*
 * dcx training kernels: the forward and backward ops that dominate on-device training programs,
 * as pure C (no PyTorch or ExecuTorch dependency). float32, contiguous, NCHW for images.
 *
 * Every function is single-threaded and thread-safe (per-thread scratch, shared with the fused
 * partitioned linear of spl_kernel.h) and returns TK_OK or a TK_E* code; it never aborts.
 * The implementation (portable vector extensions, x86-64-v3 build, aarch64 NEON micro-kernels)
 * is the one spl_kernel.h selected: spl_set_isa switches both libraries.
 *
 * The products all run on one GEMM (6 x 16 register tile) that reads its B rows in place where
 * they are contiguous, plus a dot-product form for long reductions. Convolutions are implicit
 * GEMMs over shifted views of the input's stride-phase planes: no column matrix is built, for the
 * forward or for either gradient. Depthwise convolutions (groups == channels) have a direct kernel.
 * Gradient outputs are overwritten, never accumulated into.
 */
#ifndef DCX_TK_KERNELS_H
#define DCX_TK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TK_OK 0
#define TK_EINVAL_SHAPE 1 /* a size < 1, or sizes that do not fit together */
#define TK_EINVAL_PTR 2   /* a required pointer is NULL */
#define TK_ENOMEM 3       /* scratch allocation failed */
#define TK_EINDEX 4       /* an index (class, embedding row) out of range */

const char* tk_strerror(int code);

/* ---------------------------------------------------------------- GEMM
 * C[m, n] = sum_k A(m, k) B(k, n) (+ C when accumulate) (+ bias_m[m]) (+ bias_n[n]), ReLU when
 * relu; A(m, k) = a[m*a_rs + k*a_cs], B(k, n) = b[k*b_rs + n*b_cs], C row-major with row stride
 * c_rs. Any strides: packing reads transposed operands in place. */
int tk_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
            const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate,
            const float* bias_m, const float* bias_n, int relu);

/* ---------------------------------------------------------------- linear
 * y [n, out] = x [n, in] W^T + bias (W [out, in]); ReLU applied when relu. */
int tk_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in,
                      int64_t out, int relu, float* y);

/* From grad_y [n, out]; with relu_out (the ReLU output y of a fused forward) the gradient is
 * first masked: g = grad_y * (relu_out > 0). gx [n, in], gw [out, in], gb [out]; each may be
 * NULL (not computed). */
int tk_linear_backward(const float* grad_y, const float* x, const float* w, const float* relu_out,
                       int64_t n, int64_t in, int64_t out, float* gx, float* gw, float* gb);

/* ---------------------------------------------------------------- 2-D convolution */
struct tk_conv2d {
  int64_t n, c_in, h, w;         /* input [n, c_in, h, w] */
  int64_t c_out, kh, kw;         /* weight [c_out, c_in / groups, kh, kw] */
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
};
/* Output height and width (< 1 when the shape is invalid). */
int64_t tk_conv2d_out_h(const struct tk_conv2d* s);
int64_t tk_conv2d_out_w(const struct tk_conv2d* s);
int tk_conv2d_check(const struct tk_conv2d* s);

int tk_conv2d_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                      int relu, float* y);
/* gx [n, c_in, h, w], gw like w, gb [c_out]; each may be NULL. relu_out masks grad_y as in
 * tk_linear_backward. */
int tk_conv2d_backward(const struct tk_conv2d* s, const float* grad_y, const float* x,
                       const float* w, const float* relu_out, float* gx, float* gw, float* gb);

/* ---------------------------------------------------------------- convolution + frozen batch norm
 * The layer of a MobileNet-style network on the device: a convolution, a batch norm in eval mode
 * (running statistics; the affine weight and bias may train) and a clamp, as one kernel:
 *   conv_out = conv2d(x, w) + bias,  y = clamp((conv_out - mean) * rsqrt(var + eps) * weight + bias_bn, lo, hi)
 * with lo = -inf, hi = +inf for no activation, 0 and +inf for ReLU, 0 and 6 for ReLU6. */
struct tk_bn {
  const float* weight; /* [c_out] or NULL (1) */
  const float* bias;   /* [c_out] or NULL (0) */
  const float* mean;   /* [c_out] */
  const float* var;    /* [c_out] */
  float eps;
};
/* conv_out may be NULL (not kept: a frozen layer needs no backward); bias may be NULL. With
 * lazy_conv_out (conv_out is read by tk_conv2d_bn_backward alone), conv_out is written only where
 * that backward cannot recover what it needs from y (a norm without weight, a weight of 0, or a
 * bias or mean far above the weight or the deviation: see tk_kernel_impl.h), else left as it was. */
int tk_conv2d_bn_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                         const struct tk_bn* bn, float lo, float hi, float* conv_out, float* y, int lazy_conv_out);
/* From grad_y and the forward's y and conv_out: g = grad_y * (lo < y < hi) (the clamp's mask, read
 * on its output), grad_bn_weight = sum(g * (conv_out - mean)) * rsqrt(var + eps), grad_bn_bias =
 * sum(g) (over all but the channel dim), and the convolution's gradients (as tk_conv2d_backward)
 * for the output gradient g * weight * rsqrt(var + eps). gx, gw, gb, g_bn_w, g_bn_b may each be
 * NULL (not computed); conv_out, as the forward left it, is read for g_bn_w only where the forward
 * wrote it; bn must be the forward's, bias included. */
int tk_conv2d_bn_backward(const struct tk_conv2d* s, const float* grad_y, const float* y, const float* conv_out,
                          const float* x, const float* w, const struct tk_bn* bn, float lo, float hi, float* gx,
                          float* gw, float* gb, float* g_bn_w, float* g_bn_b);

/* ---------------------------------------------------------------- pooling (NCHW, floor mode) */
struct tk_pool2d {
  int64_t n, c, h, w;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w;
  int count_include_pad; /* average pooling: divide by the full window (1) or the in-bounds part */
};
int64_t tk_pool2d_out_h(const struct tk_pool2d* s);
int64_t tk_pool2d_out_w(const struct tk_pool2d* s);
int tk_pool2d_check(const struct tk_pool2d* s);
/* indices: flat h*w position of the maximum within its plane, as PyTorch returns them. */
int tk_max_pool2d_forward(const struct tk_pool2d* s, const float* x, float* y, int64_t* indices);
int tk_max_pool2d_backward(const struct tk_pool2d* s, const float* grad_y, const int64_t* indices,
                           float* gx);
int tk_avg_pool2d_forward(const struct tk_pool2d* s, const float* x, float* y);
int tk_avg_pool2d_backward(const struct tk_pool2d* s, const float* grad_y, float* gx);

/* ---------------------------------------------------------------- activations
 * gx = grad_y where lo < x < hi, else 0 (ReLU: lo = 0, hi = +inf; ReLU6: lo = 0, hi = 6). */
int tk_threshold_backward(const float* grad_y, const float* x, int64_t numel, float lo, float hi,
                          float* gx);
/* Along the last dim of [rows, cols]: softmax backward gx = y * (gy - sum(gy * y)), or, with
 * log_softmax != 0 and y = log_softmax(x), gx = gy - exp(y) * sum(gy). */
int tk_softmax_backward(const float* grad_y, const float* y, int64_t rows, int64_t cols,
                        int log_softmax, float* gx);

/* ---------------------------------------------------------------- losses (mean reduction)
 * Cross entropy of logits [n, c] against class targets (rows with target == ignore_index do not
 * count): loss (one float) and its gradient dloss/dlogits [n, c], in one pass. */
int tk_cross_entropy(const float* logits, const int64_t* target, int64_t n, int64_t c,
                     int64_t ignore_index, float* loss, float* grad);
/* Binary cross entropy with logits z [n] against targets t [n]: loss and dloss/dz [n]. */
int tk_bce_with_logits(const float* z, const float* t, int64_t n, float* loss, float* grad);

/* ---------------------------------------------------------------- normalization backward
 * Layer norm over the last `cols` of [rows, cols] with saved mean/rstd [rows]; w, gx, gw, gb may
 * be NULL (no affine / not wanted). */
int tk_layer_norm_backward(const float* grad_y, const float* x, const float* mean,
                           const float* rstd, const float* w, int64_t rows, int64_t cols,
                           float* gx, float* gw, float* gb);
/* Batch norm with frozen statistics (eval mode) on [n, c, hw]: y = (x - mean) * rsqrt(var + eps)
 * * w + b. w may be NULL; gx, gw, gb may be NULL. */
int tk_batch_norm_frozen_backward(const float* grad_y, const float* x, const float* w,
                                  const float* mean, const float* var, float eps, int64_t n,
                                  int64_t c, int64_t hw, float* gx, float* gw, float* gb);

/* ---------------------------------------------------------------- embedding, SGD
 * Dense gradient of an embedding table [num_weights, dim] from grad_y [n, dim] and the n row
 * indices (int32 when index_is_int32, else int64); rows equal to padding_idx get none
 * (padding_idx < 0: none). */
int tk_embedding_backward(const float* grad_y, const void* indices, int index_is_int32, int64_t n,
                          int64_t num_weights, int64_t dim, int64_t padding_idx, float* gw);
/* In place: p -= lr * g. */
int tk_sgd_update(float* p, const float* g, int64_t numel, float lr);

#ifdef __cplusplus
}
#endif

#endif /* DCX_TK_KERNELS_H */
