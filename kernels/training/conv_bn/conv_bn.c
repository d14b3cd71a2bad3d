/* The checked entry points of the fused convolution + batch norm + clamp; the kernels are in conv_bn-impl.h. */
#include "training/conv_bn/conv_bn.h"

#include <math.h>
#include <string.h>

int training_conv2d_bn_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                               const struct training_bn* bn, float lo, float hi, float* conv_out, float* y,
                               int lazy_conv_out) {
  int rc = training_conv2d_check(s);
  if (rc) return rc;
  DCX_REQUIRE(bn && bn->mean && bn->var, DCX_EINVAL_PTR);
  if (s->n == 0) return DCX_OK;
  DCX_REQUIRE(x && w && y, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_conv_bn_isa)->forward(s, x, w, bias, bn, lo, hi, conv_out, y, lazy_conv_out);
}

/* An empty batch: nothing to sum, zero gradients */
static int zero_grads(const struct training_conv2d* s, float* gw, float* gb, float* g_bn_w, float* g_bn_b) {
  if (gw) memset(gw, 0, sizeof(float) * (size_t)(s->c_out * (s->c_in / s->groups) * s->kh * s->kw));
  float* per_channel[3] = {gb, g_bn_w, g_bn_b};
  for (int i = 0; i < 3; i++)
    if (per_channel[i]) memset(per_channel[i], 0, sizeof(float) * (size_t)s->c_out);
  return DCX_OK;
}

int training_conv2d_bn_backward(const struct training_conv2d* s, const float* grad_y, const float* y,
                                const float* conv_out, const float* x, const float* w, const struct training_bn* bn,
                                float lo, float hi, float* gx, float* gw, float* gb, float* g_bn_w, float* g_bn_b) {
  int rc = training_conv2d_check(s);
  if (rc) return rc;
  DCX_REQUIRE(bn && bn->mean && bn->var, DCX_EINVAL_PTR);
  if (s->n == 0) return zero_grads(s, gw, gb, g_bn_w, g_bn_b);
  DCX_REQUIRE(grad_y && y && (!gx || w) && (!gw || x) && (!g_bn_w || conv_out), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_conv_bn_isa)
      ->backward(s, grad_y, y, conv_out, x, w, bn, lo, hi, gx, gw, gb, g_bn_w, g_bn_b);
}

int training_conv2d_bn_batch_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                                     const float* bn_weight, const float* bn_bias, float eps, float lo, float hi,
                                     float* conv_out, float* y, float* mean, float* var) {
  int rc = training_conv2d_check(s);
  if (rc) return rc;
  DCX_REQUIRE(mean && var, DCX_EINVAL_PTR);
  if (s->n == 0) { /* the statistics of no value, as torch's mean of nothing */
    for (int64_t c = 0; c < s->c_out; c++) mean[c] = var[c] = NAN;
    return DCX_OK;
  }
  DCX_REQUIRE(x && w && y, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_conv_bn_isa)
      ->batch_forward(s, x, w, bias, bn_weight, bn_bias, eps, lo, hi, conv_out, y, mean, var);
}

int training_conv2d_bn_batch_backward(const struct training_conv2d* s, const float* grad_y, const float* y,
                                      const float* conv_out, const float* x, const float* w,
                                      const struct training_bn* bn, float lo, float hi, float* gx, float* gw,
                                      float* gb, float* g_bn_w, float* g_bn_b) {
  int rc = training_conv2d_check(s);
  if (rc) return rc;
  DCX_REQUIRE(bn && bn->mean && bn->var, DCX_EINVAL_PTR);
  if (s->n == 0) return zero_grads(s, gw, gb, g_bn_w, g_bn_b);
  DCX_REQUIRE(grad_y && y && conv_out && (!gx || w) && (!gw || x), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_conv_bn_isa)
      ->batch_backward(s, grad_y, y, conv_out, x, w, bn, lo, hi, gx, gw, gb, g_bn_w, g_bn_b);
}
