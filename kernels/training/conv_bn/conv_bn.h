/* The layer of a MobileNet-style network on the device as one kernel (pure C, float32, NCHW): a
 * convolution, a batch norm and a clamp,
 *   conv_out = conv2d(x, w) + bias,  y = clamp((conv_out - mean) * rsqrt(var + eps) * weight + bias_bn, lo, hi)
 * with lo = -inf, hi = +inf for no activation, 0 and +inf for ReLU, 0 and 6 for ReLU6. The norm in eval
 * mode (training_conv2d_bn_*: running statistics; the affine weight and bias may train) or in training
 * mode (training_conv2d_bn_batch_*: the batch's statistics, the gradient through them). It runs on the
 * convolution kernels (conv/), the norm folded into their output stage (eval mode) and their gradient
 * fetch (both). */
#ifndef DCX_TRAINING_CONV_BN_H
#define DCX_TRAINING_CONV_BN_H

#include <stdint.h>

#include "base/isa.h"
#include "training/conv/conv.h"

#ifdef __cplusplus
extern "C" {
#endif

struct training_bn {
  const float* weight; /* [c_out] or NULL (1) */
  const float* bias;   /* [c_out] or NULL (0) */
  const float* mean;   /* [c_out] */
  const float* var;    /* [c_out] */
  float eps;
};

/* conv_out may be NULL (not kept: a frozen layer needs no backward); bias may be NULL. With
 * lazy_conv_out (conv_out is read by training_conv2d_bn_backward alone), conv_out is written only
 * where that backward cannot recover what it needs from y (a norm without weight, a weight of 0, or a
 * bias or mean far above the weight or the deviation: see conv_bn-impl.h), else left as it was. */
int training_conv2d_bn_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                               const struct training_bn* bn, float lo, float hi, float* conv_out, float* y,
                               int lazy_conv_out);
/* From grad_y and the forward's y and conv_out: g = grad_y * (lo < y < hi) (the clamp's mask, read on
 * its output), grad_bn_weight = sum(g * (conv_out - mean)) * rsqrt(var + eps), grad_bn_bias = sum(g)
 * (over all but the channel dim), and the convolution's gradients (as training_conv2d_backward) for
 * the output gradient g * weight * rsqrt(var + eps). gx, gw, gb, g_bn_w, g_bn_b may each be NULL (not
 * computed); conv_out, as the forward left it, is read for g_bn_w only where the forward wrote it; bn
 * must be the forward's, bias included. */
int training_conv2d_bn_backward(const struct training_conv2d* s, const float* grad_y, const float* y,
                                const float* conv_out, const float* x, const float* w, const struct training_bn* bn,
                                float lo, float hi, float* gx, float* gw, float* gb, float* g_bn_w, float* g_bn_b);

/* Training mode: mean and var [c_out] are the batch's, over n, h and w of conv_out (var biased, as the
 * norm divides by; a caller updating running statistics scales it to the unbiased one), written by the
 * forward. Each channel's moments are taken image plane by plane, two passes over a plane while it is
 * in cache (its float mean, then the float sums of the deviations from it and of their squares: the
 * corrected two-pass algorithm), and the planes merged in double (Chan, Golub and LeVeque's pairwise
 * update): no long float sum, and no loss of the variance to a mean far from zero. y = clamp((conv_out - mean) * (rsqrt(var + eps) * weight) + bias_bn, lo, hi), the
 * rsqrt on the float var as the stock graph computes it. bn_weight and bn_bias may be NULL (1 and 0);
 * conv_out may be NULL (not kept: y then holds the convolution until the norm overwrites it). */
int training_conv2d_bn_batch_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                                     const float* bn_weight, const float* bn_bias, float eps, float lo, float hi,
                                     float* conv_out, float* y, float* mean, float* var);
/* From grad_y and the forward's y, conv_out, mean and var (in bn, whose bias is not read): with
 * g = grad_y * (lo < y < hi) (no mask at all when lo = -inf and hi = +inf), xhat = (conv_out - mean) *
 * rstd and M = n * h * w of the output, grad_bn_bias = sum(g) and grad_bn_weight = sum(g * xhat) (per
 * channel, summed in float within an image plane and in double across planes), and the convolution's
 * gradients (as training_conv2d_backward) for the output gradient
 *   weight * rstd * (g - grad_bn_bias / M - xhat * grad_bn_weight / M),
 * applied as the convolution backward fetches g: one pass over grad_y, y and conv_out for the sums, one
 * more inside the convolution backward. gx, gw, gb, g_bn_w, g_bn_b may each be NULL (not computed). */
int training_conv2d_bn_batch_backward(const struct training_conv2d* s, const float* grad_y, const float* y,
                                      const float* conv_out, const float* x, const float* w,
                                      const struct training_bn* bn, float lo, float hi, float* gx, float* gw,
                                      float* gb, float* g_bn_w, float* g_bn_b);

/* The function table each ISA build of conv_bn-impl.h defines (the entry points above, after their checks). */
struct training_conv_bn_isa {
  int (*forward)(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                 const struct training_bn* bn, float lo, float hi, float* conv_out, float* y, int lazy_conv_out);
  int (*backward)(const struct training_conv2d* s, const float* grad_y, const float* y, const float* conv_out,
                  const float* x, const float* w, const struct training_bn* bn, float lo, float hi, float* gx,
                  float* gw, float* gb, float* g_bn_w, float* g_bn_b);
  int (*batch_forward)(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                       const float* bn_weight, const float* bn_bias, float eps, float lo, float hi, float* conv_out,
                       float* y, float* mean, float* var);
  int (*batch_backward)(const struct training_conv2d* s, const float* grad_y, const float* y, const float* conv_out,
                        const float* x, const float* w, const struct training_bn* bn, float lo, float hi, float* gx,
                        float* gw, float* gb, float* g_bn_w, float* g_bn_b);
};
DCX_ISA_TABLES(struct training_conv_bn_isa, training_conv_bn_isa);

#ifdef __cplusplus
}
#endif

#endif
