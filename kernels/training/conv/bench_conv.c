/* Native benchmark of the convolution kernels (base/native_bench.h):
 *
 *   bench_conv_native conv_fwd|conv_bwd N C H W O K STRIDE PAD GROUPS  [--reps R] [--isa NAME]
 *
 * A square K x K kernel, dilation 1; the kind that runs is the one training_conv2d_kernel names. A
 * backward counts its input and weight gradients. */
#include "training/conv/conv_bench.h"

struct args {
  int backward;
  struct training_conv2d s;
  float *x, *w, *b, *y, *gx, *gw;
};

static int call(void* p) {
  const struct args* a = p;
  if (!a->backward) return training_conv2d_forward(&a->s, a->x, a->w, a->b, 1, a->y);
  return training_conv2d_backward(&a->s, a->y, a->x, a->w, NULL, a->gx, a->gw, a->b);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"conv_fwd", "conv_bwd"};
  struct args a = {bench_op(argc, argv, ops, 2)};
  struct conv_bench b;
  long reps;
  if (conv_bench_args(argc, argv, a.backward, "conv_fwd|conv_bwd N C H W O K STRIDE PAD GROUPS", &reps, &b)) return 2;
  a.s = b.s;
  a.x = bench_filled(b.nx, 1), a.w = bench_filled(b.nw, 2), a.b = bench_filled(b.s.c_out, 3), a.y = bench_filled(b.ny, 4);
  a.gx = bench_filled(b.nx, 5), a.gw = bench_filled(b.nw, 6);
  const int rc = bench_run(argv, 9, b.flops * (a.backward ? 2 : 1), reps, call, &a);
  free(a.x); free(a.w); free(a.b); free(a.y); free(a.gx); free(a.gw);
  return rc;
}
