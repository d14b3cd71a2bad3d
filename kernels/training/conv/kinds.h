/* Which convolution kernel takes which geometry: the one rule the per-ISA dispatch (conv-impl.h) and the
 * exported eligibility (training_conv2d_kernel, which the export pass asks) both read. */
#ifndef DCX_TRAINING_CONV_KINDS_H
#define DCX_TRAINING_CONV_KINDS_H

#include "training/conv/conv.h"

static inline int is_depthwise(const struct training_conv2d* s) {
  return s->groups == s->c_in && s->c_out == s->c_in && s->groups > 1;
}

/* 3 x 3, padding 1, stride 1 or 2 alike: the geometry of the depthwise 3 x 3 kernel and of the stem's */
static inline int is_3x3_pad1(const struct training_conv2d* s) {
  return s->kh == 3 && s->kw == 3 && s->pad_h == 1 && s->pad_w == 1 && s->dil_h == 1 && s->dil_w == 1 &&
         s->stride_h == s->stride_w && s->stride_h <= 2;
}

/* Stride 2 onto output rows narrower than this stays on the channels-last blocks: split into even and
 * odd columns, such short rows leave most of each vector idle (measured: 28x28 -> 14x14 and 14x14 ->
 * 7x7 about twice as fast there, forward and backward; 56x56 -> 28x28 faster here). */
#define DW3_S2_MIN_OW 16

static inline int is_dw3x3(const struct training_conv2d* s) {
  return is_depthwise(s) && is_3x3_pad1(s) && (s->stride_h == 1 || training_conv2d_out_w(s) >= DW3_S2_MIN_OW);
}

/* A stem: 3 x 3 over at most this many input channels (RGB, or RGB plus one), no groups. */
#define STEM_MAX_CIN 4

static inline int is_stem3x3(const struct training_conv2d* s) {
  return s->groups == 1 && s->c_in <= STEM_MAX_CIN && is_3x3_pad1(s);
}

static inline int is_pointwise(const struct training_conv2d* s) {
  return s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_h == 0 && s->pad_w == 0 &&
         s->groups == 1;
}

#endif
