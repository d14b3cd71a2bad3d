/* The definition of a convolution in plain loops with double accumulation: what the native tests of
 * the convolution kernels and of the fused convolution + batch norm layer compare against. */
#ifndef DCX_TRAINING_CONV_REFERENCE_H
#define DCX_TRAINING_CONV_REFERENCE_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "training/conv/conv.h"

/* Calls tap(ctx, y_index, x_index, w_index) for every (output, input, weight) product of conv s. */
static inline void ref_conv2d_taps(const struct training_conv2d* s, void (*tap)(void*, int64_t, int64_t, int64_t),
                                   void* ctx) {
  const int64_t oh = training_conv2d_out_h(s), ow = training_conv2d_out_w(s), cpg = s->c_in / s->groups;
  const int64_t opg = s->c_out / s->groups;
  for (int64_t b = 0; b < s->n; b++)
    for (int64_t o = 0; o < s->c_out; o++)
      for (int64_t r = 0; r < oh; r++)
        for (int64_t q = 0; q < ow; q++)
          for (int64_t c = 0; c < cpg; c++)
            for (int64_t i = 0; i < s->kh; i++)
              for (int64_t j = 0; j < s->kw; j++) {
                const int64_t ih = r * s->stride_h - s->pad_h + i * s->dil_h;
                const int64_t iw = q * s->stride_w - s->pad_w + j * s->dil_w;
                if (ih < 0 || ih >= s->h || iw < 0 || iw >= s->w) continue;
                tap(ctx, (((b * s->c_out + o) * oh) + r) * ow + q,
                    ((b * s->c_in + o / opg * cpg + c) * s->h + ih) * s->w + iw, ((o * cpg + c) * s->kh + i) * s->kw + j);
              }
}

struct ref_conv2d {
  const float *x, *w;
  const double* g; /* backward: the output gradient */
  double *y, *gx, *gw;
};

static inline void ref_forward_tap(void* ctx, int64_t y, int64_t x, int64_t w) {
  struct ref_conv2d* r = (struct ref_conv2d*)ctx;
  r->y[y] += (double)r->x[x] * r->w[w];
}
static inline void ref_backward_tap(void* ctx, int64_t y, int64_t x, int64_t w) {
  struct ref_conv2d* r = (struct ref_conv2d*)ctx;
  r->gx[x] += r->g[y] * r->w[w];
  r->gw[w] += r->g[y] * r->x[x];
}

/* y [n, c_out, oh, ow] = conv(x, w) + b (b may be NULL) */
static inline void ref_conv2d(const struct training_conv2d* s, const float* x, const float* w, const float* b,
                              double* y) {
  const int64_t p = training_conv2d_out_h(s) * training_conv2d_out_w(s);
  for (int64_t i = 0; i < s->n * s->c_out * p; i++) y[i] = b ? b[i / p % s->c_out] : 0.0;
  struct ref_conv2d r = {x, w, NULL, y, NULL, NULL};
  ref_conv2d_taps(s, ref_forward_tap, &r);
}

/* gx like x, gw like w, gb [c_out] of conv for the output gradient g */
static inline void ref_conv2d_backward(const struct training_conv2d* s, const double* g, const float* x,
                                       const float* w, double* gx, double* gw, double* gb) {
  const int64_t p = training_conv2d_out_h(s) * training_conv2d_out_w(s);
  memset(gx, 0, sizeof(double) * (size_t)(s->n * s->c_in * s->h * s->w));
  memset(gw, 0, sizeof(double) * (size_t)(s->c_out * (s->c_in / s->groups) * s->kh * s->kw));
  memset(gb, 0, sizeof(double) * (size_t)s->c_out);
  for (int64_t i = 0; i < s->n * s->c_out * p; i++) gb[i / p % s->c_out] += g[i];
  struct ref_conv2d r = {x, w, g, NULL, gx, gw};
  ref_conv2d_taps(s, ref_backward_tap, &r);
}

/* "n=.. c=.. HxW o=.. k=.. s=.. p=.. d=.. g=..": a geometry in a failure message */
static inline void conv2d_name(const struct training_conv2d* s, char* out, size_t len) {
  snprintf(out, len, "n=%ld c=%ld %ldx%ld o=%ld k=%ldx%ld s=%ld,%ld p=%ld,%ld d=%ld,%ld g=%ld", (long)s->n,
           (long)s->c_in, (long)s->h, (long)s->w, (long)s->c_out, (long)s->kh, (long)s->kw, (long)s->stride_h,
           (long)s->stride_w, (long)s->pad_h, (long)s->pad_w, (long)s->dil_h, (long)s->dil_w, (long)s->groups);
}

/* The geometries both tests sweep: every convolution kind, and the edges of each.
 * n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups */
static const struct training_conv2d ref_conv2d_geometries[] = {
    {2, 1, 28, 28, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1},    /* dcccl conv1 (small): a stem (3x3, pad 1, c_in <= 4), as the next */
    {2, 4, 14, 14, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1},    /* dcccl conv2 (small) */
    {1, 8, 14, 14, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1},   /* dcccl conv2 (mimic) */
    {2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* stride 1, odd sizes */
    {1, 5, 10, 9, 7, 5, 3, 2, 1, 2, 0, 1, 2, 1},     /* rectangular kernel, dilation */
    {2, 6, 8, 8, 4, 3, 3, 1, 2, 0, 1, 1, 1, 2},      /* grouped */
    {2, 6, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},      /* depthwise stride 1 */
    {2, 8, 15, 15, 8, 3, 3, 2, 2, 1, 1, 1, 1, 8},    /* depthwise stride 2 */
    {1, 5, 19, 21, 5, 5, 5, 2, 2, 2, 2, 1, 1, 5},    /* depthwise 5x5 */
    {2, 11, 13, 10, 11, 3, 3, 3, 2, 0, 2, 2, 1, 11}, /* depthwise dilated, stride 3, no row padding */
    {1, 9, 7, 8, 9, 1, 1, 2, 2, 0, 0, 1, 1, 9},      /* depthwise 1x1 stride 2: rows no tap reaches */
    {2, 16, 8, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16},  /* depthwise 3x3, rows of whole vectors */
    {2, 8, 7, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8},      /* depthwise 3x3, rows narrower than a vector */
    {2, 8, 17, 35, 8, 3, 3, 2, 2, 1, 1, 1, 1, 8},    /* depthwise 3x3 stride 2, rows split by vectors and a tail */
    {1, 9, 12, 32, 9, 3, 3, 2, 2, 1, 1, 1, 1, 9},    /* depthwise 3x3 stride 2, even rows of whole vectors */
    {2, 16, 7, 7, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1},    /* pointwise */
    {1, 300, 4, 4, 20, 1, 1, 1, 1, 0, 0, 1, 1, 1},   /* pointwise, K > KC */
    {3, 20, 5, 5, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},    /* pointwise, a small plane: one GEMM over the images */
    {2, 300, 3, 3, 20, 1, 1, 1, 1, 0, 0, 1, 1, 1},   /* the same, K > KC */
    {1, 12, 20, 30, 200, 1, 1, 1, 1, 0, 0, 1, 1, 1}, /* pointwise, a large plane in column blocks */
    {2, 3, 40, 40, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* weight gradient over more than one dot block */
    {1, 3, 6, 6, 2, 6, 6, 1, 1, 0, 0, 1, 1, 1},      /* window = image */
    {2, 3, 31, 37, 9, 3, 3, 2, 2, 1, 1, 1, 1, 1},    /* a stem: odd plane, 16 output columns and 3, 9 channels */
};
#define REF_CONV2D_GEOMETRIES (sizeof ref_conv2d_geometries / sizeof ref_conv2d_geometries[0])

#endif
