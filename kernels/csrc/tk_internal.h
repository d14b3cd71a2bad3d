/* Internal: the function table each ISA build of tk_kernel_impl.h exports (the public entry
 * points of tk_kernels.h after argument checks), and the scratch shared with spl_kernel.c. */
#ifndef DCX_TK_INTERNAL_H
#define DCX_TK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "spl_kernel_internal.h"
#include "tk_kernels.h"

struct tk_impl {
  int (*gemm)(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
              const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate,
              const float* bias_m, const float* bias_n, int relu);
  int (*linear_forward)(const float* x, const float* w, const float* bias, int64_t n, int64_t in,
                        int64_t out, int relu, float* y);
  int (*linear_backward)(const float* grad_y, const float* x, const float* w, const float* relu_out,
                         int64_t n, int64_t in, int64_t out, float* gx, float* gw, float* gb);
  int (*conv2d_forward)(const struct tk_conv2d* s, const float* x, const float* w,
                        const float* bias, int relu, float* y);
  int (*conv2d_backward)(const struct tk_conv2d* s, const float* grad_y, const float* x,
                         const float* w, const float* relu_out, float* gx, float* gw, float* gb);
  int (*conv2d_bn_forward)(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                           const struct tk_bn* bn, float lo, float hi, float* conv_out, float* y, int lazy_conv_out);
  int (*conv2d_bn_backward)(const struct tk_conv2d* s, const float* grad_y, const float* y, const float* conv_out,
                            const float* x, const float* w, const struct tk_bn* bn, float lo, float hi, float* gx,
                            float* gw, float* gb, float* g_bn_w, float* g_bn_b);
  int (*max_pool2d_forward)(const struct tk_pool2d* s, const float* x, float* y, int64_t* indices);
  int (*max_pool2d_backward)(const struct tk_pool2d* s, const float* grad_y,
                             const int64_t* indices, float* gx);
  int (*avg_pool2d_forward)(const struct tk_pool2d* s, const float* x, float* y);
  int (*avg_pool2d_backward)(const struct tk_pool2d* s, const float* grad_y, float* gx);
  int (*threshold_backward)(const float* grad_y, const float* x, int64_t numel, float lo, float hi,
                            float* gx);
  int (*softmax_backward)(const float* grad_y, const float* y, int64_t rows, int64_t cols,
                          int log_softmax, float* gx);
  int (*cross_entropy)(const float* logits, const int64_t* target, int64_t n, int64_t c,
                       int64_t ignore_index, float* loss, float* grad);
  int (*bce_with_logits)(const float* z, const float* t, int64_t n, float* loss, float* grad);
  int (*layer_norm_backward)(const float* grad_y, const float* x, const float* mean,
                             const float* rstd, const float* w, int64_t rows, int64_t cols,
                             float* gx, float* gw, float* gb);
  int (*batch_norm_frozen_backward)(const float* grad_y, const float* x, const float* w,
                                    const float* mean, const float* var, float eps, int64_t n,
                                    int64_t c, int64_t hw, float* gx, float* gw, float* gb);
  int (*embedding_backward)(const float* grad_y, const void* indices, int index_is_int32,
                            int64_t n, int64_t num_weights, int64_t dim, int64_t padding_idx,
                            float* gw);
  int (*sgd_update)(float* p, const float* g, int64_t numel, float lr);
};

extern const struct tk_impl tk_impl_portable;
#if defined(__x86_64__)
extern const struct tk_impl tk_impl_x86_64_v3;
#endif
#if defined(__aarch64__)
extern const struct tk_impl tk_impl_neon;
#endif

/* This thread's scratch (the buffer spl_kernel.c keeps): one call takes it once and carves it. */
#define tk__scratch spl__scratch

#endif
