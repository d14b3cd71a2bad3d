/* 2-D convolution, forward and backward (pure C, float32, NCHW).
 *
 * Convolutions are implicit GEMMs over shifted views of the input's stride-phase planes: no column
 * matrix is built, for the forward or for either gradient. Kinds with their own kernel: pointwise
 * (plain GEMMs per image), depthwise 3 x 3 (the MobileNet layer, on NCHW planes), other depthwise
 * (eight channels per vector), and a stem (3 x 3 over a few input channels, row by row);
 * training_conv2d_kernel says which one takes a geometry. Gradient outputs are overwritten. */
#ifndef DCX_TRAINING_CONV_H
#define DCX_TRAINING_CONV_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

struct training_conv2d {
  int64_t n, c_in, h, w; /* input [n, c_in, h, w] */
  int64_t c_out, kh, kw; /* weight [c_out, c_in / groups, kh, kw] */
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
};

/* Output height and width (< 1 when the shape is invalid). */
int64_t training_conv2d_out_h(const struct training_conv2d* s);
int64_t training_conv2d_out_w(const struct training_conv2d* s);
int training_conv2d_check(const struct training_conv2d* s);

int training_conv2d_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                            int relu, float* y);
/* gx [n, c_in, h, w], gw like w, gb [c_out]; each may be NULL. relu_out (the ReLU output y of a fused
 * forward) masks grad_y first: g = grad_y * (relu_out > 0). */
int training_conv2d_backward(const struct training_conv2d* s, const float* grad_y, const float* x, const float* w,
                             const float* relu_out, float* gx, float* gw, float* gb);

/* Eligibility: the kernel that runs a convolution of geometry s (the forward when !backward; a stem's
 * backward runs on the general kernel), or TRAINING_CONV2D_NONE when no kernel takes it. */
enum training_conv2d_kernel {
  TRAINING_CONV2D_NONE = 0,
  TRAINING_CONV2D_GENERAL = 1,
  TRAINING_CONV2D_POINTWISE = 2,
  TRAINING_CONV2D_DEPTHWISE3X3 = 3,
  TRAINING_CONV2D_DEPTHWISE = 4,
  TRAINING_CONV2D_STEM3X3 = 5,
};
DCX_API int training_conv2d_kernel(const struct training_conv2d* s, int backward);

/* The function table each ISA build of conv-impl.h defines (the entry points above, after their checks). */
struct training_conv_isa {
  int (*forward)(const struct training_conv2d* s, const float* x, const float* w, const float* bias, int relu,
                 float* y);
  int (*backward)(const struct training_conv2d* s, const float* grad_y, const float* x, const float* w,
                  const float* relu_out, float* gx, float* gw, float* gb);
};
DCX_ISA_TABLES(struct training_conv_isa, training_conv_isa);

#ifdef __cplusplus
}
#endif

#endif
