/* The command line both convolution benchmarks take, and the sizes they allocate:
 *
 *   OP N C H W O K STRIDE PAD GROUPS   (a square K x K kernel, dilation 1)
 *
 * flops: the useful multiply-adds x 2 of a forward. */
#ifndef DCX_TRAINING_CONV_BENCH_H
#define DCX_TRAINING_CONV_BENCH_H

#include "base/native_bench.h"
#include "training/conv/conv.h"

struct conv_bench {
  struct training_conv2d s;
  long nx, nw, ny;
  double flops;
};

/* 0, or 2 after printing usage or a bad geometry */
static inline int conv_bench_args(int argc, char** argv, int op, const char* usage, long* reps, struct conv_bench* b) {
  long v[9];
  if (bench_args(argc, argv, op, 9, v, reps, usage)) return 2;
  b->s = (struct training_conv2d){v[0], v[1], v[2], v[3], v[4], v[5], v[5], v[6], v[6], v[7], v[7], 1, 1, v[8]};
  const struct training_conv2d* s = &b->s;
  if (training_conv2d_check(s)) {
    fprintf(stderr, "%s\n", dcx_strerror(DCX_EINVAL_SHAPE));
    return 2;
  }
  b->nx = s->n * s->c_in * s->h * s->w;
  b->nw = s->c_out * (s->c_in / s->groups) * s->kh * s->kw;
  b->ny = s->n * s->c_out * training_conv2d_out_h(s) * training_conv2d_out_w(s);
  b->flops = 2.0 * b->ny * (s->c_in / s->groups) * s->kh * s->kw;
  return 0;
}

#endif
