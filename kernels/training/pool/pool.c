/* The checked entry points of pooling; the kernels are in pool-impl.h. */
#include "training/pool/pool.h"

#include "training/window.h"

int64_t training_pool2d_out_h(const struct training_pool2d* s) {
  return window_out(s->h, s->kh, s->stride_h, s->pad_h, 1);
}
int64_t training_pool2d_out_w(const struct training_pool2d* s) {
  return window_out(s->w, s->kw, s->stride_w, s->pad_w, 1);
}

int training_pool2d_check(const struct training_pool2d* s) {
  DCX_REQUIRE(s, DCX_EINVAL_PTR);
  DCX_REQUIRE(s->n >= 0 && s->c >= 1 && s->h >= 1 && s->w >= 1, DCX_EINVAL_SHAPE);
  /* PyTorch's rule: padding at most half the window */
  DCX_REQUIRE(2 * s->pad_h <= s->kh && 2 * s->pad_w <= s->kw, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(training_pool2d_out_h(s) >= 1 && training_pool2d_out_w(s) >= 1, DCX_EINVAL_SHAPE);
  return DCX_OK;
}

#define POOL_ENTRY(call, ...)              \
  int rc = training_pool2d_check(s);       \
  if (rc) return rc;                       \
  if (s->n == 0) return DCX_OK;            \
  DCX_REQUIRE(__VA_ARGS__, DCX_EINVAL_PTR); \
  return DCX_ISA_PICK(training_pool_isa)->call

int training_max_pool2d_forward(const struct training_pool2d* s, const float* x, float* y, int64_t* indices) {
  POOL_ENTRY(max_forward, x && y && indices)(s, x, y, indices);
}
int training_max_pool2d_backward(const struct training_pool2d* s, const float* grad_y, const int64_t* indices,
                                 float* gx) {
  POOL_ENTRY(max_backward, grad_y && indices && gx)(s, grad_y, indices, gx);
}
int training_avg_pool2d_forward(const struct training_pool2d* s, const float* x, float* y) {
  POOL_ENTRY(avg_forward, x && y)(s, x, y);
}
int training_avg_pool2d_backward(const struct training_pool2d* s, const float* grad_y, float* gx) {
  POOL_ENTRY(avg_backward, grad_y && gx)(s, grad_y, gx);
}
