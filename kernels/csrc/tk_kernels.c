/* Public entry points of the training kernels: argument checks, then the implementation that
 * spl_kernel.c chose for this CPU (one ISA choice for every dcx kernel). The kernels themselves
 * are in tk_kernel_impl.h (one build per ISA). */
#include "tk_kernels.h"

#include <string.h>

#include "spl_kernel.h"
#include "tk_internal.h"

static const struct tk_impl* impl(void) {
  switch (spl_active_isa()) {
#if defined(__x86_64__)
    case SPL_ISA_X86_64_V3: return &tk_impl_x86_64_v3;
#endif
#if defined(__aarch64__)
    case SPL_ISA_NEON: return &tk_impl_neon;
#endif
    default: return &tk_impl_portable;
  }
}

const char* tk_strerror(int code) {
  switch (code) {
    case TK_OK: return "ok";
    case TK_EINVAL_SHAPE: return "sizes must be positive and fit together";
    case TK_EINVAL_PTR: return "a required data pointer is NULL";
    case TK_ENOMEM: return "out of memory for the kernel's scratch buffer";
    case TK_EINDEX: return "an index (class target, embedding row or pooling index) is out of range";
    default: return "unknown error";
  }
}

#define REQUIRE(cond, code) \
  do {                      \
    if (!(cond)) return code; \
  } while (0)

int tk_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
            const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate,
            const float* bias_m, const float* bias_n, int relu) {
  REQUIRE(m >= 0 && n >= 0 && k >= 0 && c_rs >= n, TK_EINVAL_SHAPE);
  if (m == 0 || n == 0) return TK_OK;
  REQUIRE(c && (k == 0 || (a && b)), TK_EINVAL_PTR);
  return impl()->gemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, accumulate, bias_m, bias_n, relu);
}

/* ---------------------------------------------------------------- linear */

int tk_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in,
                      int64_t out, int relu, float* y) {
  REQUIRE(n >= 0 && in >= 1 && out >= 1, TK_EINVAL_SHAPE);
  if (n == 0) return TK_OK;
  REQUIRE(x && w && y, TK_EINVAL_PTR);
  return impl()->linear_forward(x, w, bias, n, in, out, relu != 0, y);
}

int tk_linear_backward(const float* grad_y, const float* x, const float* w, const float* relu_out,
                       int64_t n, int64_t in, int64_t out, float* gx, float* gw, float* gb) {
  REQUIRE(n >= 0 && in >= 1 && out >= 1, TK_EINVAL_SHAPE);
  if (n == 0) {
    if (gw) memset(gw, 0, sizeof(float) * (size_t)(out * in));
    if (gb) memset(gb, 0, sizeof(float) * (size_t)out);
    return TK_OK;
  }
  REQUIRE(grad_y && (!gx || w) && (!gw || x), TK_EINVAL_PTR);
  return impl()->linear_backward(grad_y, x, w, relu_out, n, in, out, gx, gw, gb);
}

/* ---------------------------------------------------------------- convolution */

static int64_t conv_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  if (stride < 1 || dil < 1 || pad < 0 || k < 1) return 0;
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

int64_t tk_conv2d_out_h(const struct tk_conv2d* s) { return conv_out(s->h, s->kh, s->stride_h, s->pad_h, s->dil_h); }
int64_t tk_conv2d_out_w(const struct tk_conv2d* s) { return conv_out(s->w, s->kw, s->stride_w, s->pad_w, s->dil_w); }

int tk_conv2d_check(const struct tk_conv2d* s) {
  REQUIRE(s, TK_EINVAL_PTR);
  REQUIRE(s->n >= 0 && s->c_in >= 1 && s->h >= 1 && s->w >= 1 && s->c_out >= 1 && s->groups >= 1, TK_EINVAL_SHAPE);
  REQUIRE(s->c_in % s->groups == 0 && s->c_out % s->groups == 0, TK_EINVAL_SHAPE);
  REQUIRE(tk_conv2d_out_h(s) >= 1 && tk_conv2d_out_w(s) >= 1, TK_EINVAL_SHAPE);
  return TK_OK;
}

int tk_conv2d_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                      int relu, float* y) {
  int rc = tk_conv2d_check(s);
  if (rc) return rc;
  if (s->n == 0) return TK_OK;
  REQUIRE(x && w && y, TK_EINVAL_PTR);
  return impl()->conv2d_forward(s, x, w, bias, relu != 0, y);
}

int tk_conv2d_backward(const struct tk_conv2d* s, const float* grad_y, const float* x,
                       const float* w, const float* relu_out, float* gx, float* gw, float* gb) {
  int rc = tk_conv2d_check(s);
  if (rc) return rc;
  if (s->n == 0) {
    if (gw) memset(gw, 0, sizeof(float) * (size_t)(s->c_out * (s->c_in / s->groups) * s->kh * s->kw));
    if (gb) memset(gb, 0, sizeof(float) * (size_t)s->c_out);
    return TK_OK;
  }
  REQUIRE(grad_y && (!gx || w) && (!gw || x), TK_EINVAL_PTR);
  return impl()->conv2d_backward(s, grad_y, x, w, relu_out, gx, gw, gb);
}

int tk_conv2d_bn_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                         const struct tk_bn* bn, float lo, float hi, float* conv_out, float* y, int lazy_conv_out) {
  int rc = tk_conv2d_check(s);
  if (rc) return rc;
  REQUIRE(bn && bn->mean && bn->var, TK_EINVAL_PTR);
  if (s->n == 0) return TK_OK;
  REQUIRE(x && w && y, TK_EINVAL_PTR);
  return impl()->conv2d_bn_forward(s, x, w, bias, bn, lo, hi, conv_out, y, lazy_conv_out);
}

int tk_conv2d_bn_backward(const struct tk_conv2d* s, const float* grad_y, const float* y, const float* conv_out,
                          const float* x, const float* w, const struct tk_bn* bn, float lo, float hi, float* gx,
                          float* gw, float* gb, float* g_bn_w, float* g_bn_b) {
  int rc = tk_conv2d_check(s);
  if (rc) return rc;
  REQUIRE(bn && bn->mean && bn->var, TK_EINVAL_PTR);
  if (s->n == 0) { /* nothing to sum: zero gradients */
    if (gw) memset(gw, 0, sizeof(float) * (size_t)(s->c_out * (s->c_in / s->groups) * s->kh * s->kw));
    float* per_channel[3] = {gb, g_bn_w, g_bn_b};
    for (int i = 0; i < 3; i++)
      if (per_channel[i]) memset(per_channel[i], 0, sizeof(float) * (size_t)s->c_out);
    return TK_OK;
  }
  REQUIRE(grad_y && y && (!gx || w) && (!gw || x) && (!g_bn_w || conv_out), TK_EINVAL_PTR);
  return impl()->conv2d_bn_backward(s, grad_y, y, conv_out, x, w, bn, lo, hi, gx, gw, gb, g_bn_w, g_bn_b);
}

/* ---------------------------------------------------------------- pooling */

int64_t tk_pool2d_out_h(const struct tk_pool2d* s) { return conv_out(s->h, s->kh, s->stride_h, s->pad_h, 1); }
int64_t tk_pool2d_out_w(const struct tk_pool2d* s) { return conv_out(s->w, s->kw, s->stride_w, s->pad_w, 1); }

int tk_pool2d_check(const struct tk_pool2d* s) {
  REQUIRE(s, TK_EINVAL_PTR);
  REQUIRE(s->n >= 0 && s->c >= 1 && s->h >= 1 && s->w >= 1, TK_EINVAL_SHAPE);
  /* PyTorch's rule: padding at most half the window */
  REQUIRE(2 * s->pad_h <= s->kh && 2 * s->pad_w <= s->kw, TK_EINVAL_SHAPE);
  REQUIRE(tk_pool2d_out_h(s) >= 1 && tk_pool2d_out_w(s) >= 1, TK_EINVAL_SHAPE);
  return TK_OK;
}

#define POOL_ENTRY(call, ...)      \
  int rc = tk_pool2d_check(s);     \
  if (rc) return rc;               \
  if (s->n == 0) return TK_OK;     \
  REQUIRE(__VA_ARGS__, TK_EINVAL_PTR); \
  return impl()->call

int tk_max_pool2d_forward(const struct tk_pool2d* s, const float* x, float* y, int64_t* indices) {
  POOL_ENTRY(max_pool2d_forward, x && y && indices)(s, x, y, indices);
}
int tk_max_pool2d_backward(const struct tk_pool2d* s, const float* grad_y, const int64_t* indices, float* gx) {
  POOL_ENTRY(max_pool2d_backward, grad_y && indices && gx)(s, grad_y, indices, gx);
}
int tk_avg_pool2d_forward(const struct tk_pool2d* s, const float* x, float* y) {
  POOL_ENTRY(avg_pool2d_forward, x && y)(s, x, y);
}
int tk_avg_pool2d_backward(const struct tk_pool2d* s, const float* grad_y, float* gx) {
  POOL_ENTRY(avg_pool2d_backward, grad_y && gx)(s, grad_y, gx);
}

/* ---------------------------------------------------------------- activations, losses */

int tk_threshold_backward(const float* grad_y, const float* x, int64_t numel, float lo, float hi, float* gx) {
  REQUIRE(numel >= 0, TK_EINVAL_SHAPE);
  if (numel == 0) return TK_OK;
  REQUIRE(grad_y && x && gx, TK_EINVAL_PTR);
  return impl()->threshold_backward(grad_y, x, numel, lo, hi, gx);
}

int tk_softmax_backward(const float* grad_y, const float* y, int64_t rows, int64_t cols, int log_softmax,
                        float* gx) {
  REQUIRE(rows >= 0 && cols >= 1, TK_EINVAL_SHAPE);
  if (rows == 0) return TK_OK;
  REQUIRE(grad_y && y && gx, TK_EINVAL_PTR);
  return impl()->softmax_backward(grad_y, y, rows, cols, log_softmax != 0, gx);
}

int tk_cross_entropy(const float* logits, const int64_t* target, int64_t n, int64_t c, int64_t ignore_index,
                     float* loss, float* grad) {
  REQUIRE(n >= 1 && c >= 1, TK_EINVAL_SHAPE);
  REQUIRE(logits && target && loss && grad, TK_EINVAL_PTR);
  return impl()->cross_entropy(logits, target, n, c, ignore_index, loss, grad);
}

int tk_bce_with_logits(const float* z, const float* t, int64_t n, float* loss, float* grad) {
  REQUIRE(n >= 1, TK_EINVAL_SHAPE);
  REQUIRE(z && t && loss && grad, TK_EINVAL_PTR);
  return impl()->bce_with_logits(z, t, n, loss, grad);
}

/* ---------------------------------------------------------------- normalization, embedding, SGD */

int tk_layer_norm_backward(const float* grad_y, const float* x, const float* mean, const float* rstd,
                           const float* w, int64_t rows, int64_t cols, float* gx, float* gw, float* gb) {
  REQUIRE(rows >= 0 && cols >= 1, TK_EINVAL_SHAPE);
  REQUIRE(grad_y || rows == 0, TK_EINVAL_PTR);
  REQUIRE(rows == 0 || ((!gx && !gw) || (x && mean && rstd)), TK_EINVAL_PTR);
  return impl()->layer_norm_backward(grad_y, x, mean, rstd, w, rows, cols, gx, gw, gb);
}

int tk_batch_norm_frozen_backward(const float* grad_y, const float* x, const float* w, const float* mean,
                                  const float* var, float eps, int64_t n, int64_t c, int64_t hw, float* gx,
                                  float* gw, float* gb) {
  REQUIRE(n >= 0 && c >= 1 && hw >= 1, TK_EINVAL_SHAPE);
  REQUIRE(var && (grad_y || n == 0) && (!gw || (x && mean)), TK_EINVAL_PTR);
  return impl()->batch_norm_frozen_backward(grad_y, x, w, mean, var, eps, n, c, hw, gx, gw, gb);
}

int tk_embedding_backward(const float* grad_y, const void* indices, int index_is_int32, int64_t n,
                          int64_t num_weights, int64_t dim, int64_t padding_idx, float* gw) {
  REQUIRE(n >= 0 && num_weights >= 1 && dim >= 1, TK_EINVAL_SHAPE);
  REQUIRE(gw && (n == 0 || (grad_y && indices)), TK_EINVAL_PTR);
  return impl()->embedding_backward(grad_y, indices, index_is_int32 != 0, n, num_weights, dim, padding_idx, gw);
}

int tk_sgd_update(float* p, const float* g, int64_t numel, float lr) {
  REQUIRE(numel >= 0, TK_EINVAL_SHAPE);
  if (numel == 0) return TK_OK;
  REQUIRE(p && g, TK_EINVAL_PTR);
  return impl()->sgd_update(p, g, numel, lr);
}
