/* The checked entry points of the convolution and its eligibility; the kernels are in conv-impl.h. */
#include "training/conv/conv.h"

#include <string.h>

#include "training/conv/kinds.h"
#include "training/window.h"

int64_t training_conv2d_out_h(const struct training_conv2d* s) {
  return window_out(s->h, s->kh, s->stride_h, s->pad_h, s->dil_h);
}
int64_t training_conv2d_out_w(const struct training_conv2d* s) {
  return window_out(s->w, s->kw, s->stride_w, s->pad_w, s->dil_w);
}

int training_conv2d_check(const struct training_conv2d* s) {
  DCX_REQUIRE(s, DCX_EINVAL_PTR);
  DCX_REQUIRE(s->n >= 0 && s->c_in >= 1 && s->h >= 1 && s->w >= 1 && s->c_out >= 1 && s->groups >= 1,
              DCX_EINVAL_SHAPE);
  DCX_REQUIRE(s->c_in % s->groups == 0 && s->c_out % s->groups == 0, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(training_conv2d_out_h(s) >= 1 && training_conv2d_out_w(s) >= 1, DCX_EINVAL_SHAPE);
  return DCX_OK;
}

int training_conv2d_kernel(const struct training_conv2d* s, int backward) {
  if (training_conv2d_check(s) != DCX_OK) return TRAINING_CONV2D_NONE;
  if (is_dw3x3(s)) return TRAINING_CONV2D_DEPTHWISE3X3; /* the order of conv_forward and conv_backward */
  if (!backward && is_stem3x3(s)) return TRAINING_CONV2D_STEM3X3;
  if (is_depthwise(s)) return TRAINING_CONV2D_DEPTHWISE;
  if (is_pointwise(s)) return TRAINING_CONV2D_POINTWISE;
  return TRAINING_CONV2D_GENERAL;
}

int training_conv2d_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                            int relu, float* y) {
  int rc = training_conv2d_check(s);
  if (rc) return rc;
  if (s->n == 0) return DCX_OK;
  DCX_REQUIRE(x && w && y, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_conv_isa)->forward(s, x, w, bias, relu != 0, y);
}

int training_conv2d_backward(const struct training_conv2d* s, const float* grad_y, const float* x, const float* w,
                             const float* relu_out, float* gx, float* gw, float* gb) {
  int rc = training_conv2d_check(s);
  if (rc) return rc;
  if (s->n == 0) {
    if (gw) memset(gw, 0, sizeof(float) * (size_t)(s->c_out * (s->c_in / s->groups) * s->kh * s->kw));
    if (gb) memset(gb, 0, sizeof(float) * (size_t)s->c_out);
    return DCX_OK;
  }
  DCX_REQUIRE(grad_y && (!gx || w) && (!gw || x), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_conv_isa)->backward(s, grad_y, x, w, relu_out, gx, gw, gb);
}
