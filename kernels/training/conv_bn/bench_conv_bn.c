/* Native benchmark of the fused convolution + batch norm + ReLU6 layer (base/native_bench.h):
 *
 *   bench_conv_bn_native OP N C H W O K STRIDE PAD GROUPS  [--reps R] [--isa NAME]
 *
 * OP: conv_bn_fwd|conv_bn_bwd (frozen statistics), conv_bn_batch_fwd|conv_bn_batch_bwd (batch statistics).
 * As a trained layer runs it: the forward keeps conv_out for its backward (the frozen one for its backward
 * alone), the backward gives every gradient (input, weights, the norm's affine); it counts its input and
 * weight gradients. */
#include "training/conv/conv_bench.h"
#include "training/conv_bn/conv_bn.h"

struct args {
  int backward, batch;
  struct training_conv2d s;
  struct training_bn bn;
  float *x, *w, *conv, *y, *gy, *gx, *gw, *gbw, *gbb;
};

static int call(void* p) {
  const struct args* a = p;
  if (a->batch && !a->backward)
    return training_conv2d_bn_batch_forward(&a->s, a->x, a->w, NULL, a->bn.weight, a->bn.bias, a->bn.eps, 0.0f, 6.0f,
                                            a->conv, a->y, (float*)a->bn.mean, (float*)a->bn.var);
  if (a->batch)
    return training_conv2d_bn_batch_backward(&a->s, a->gy, a->y, a->conv, a->x, a->w, &a->bn, 0.0f, 6.0f, a->gx, a->gw,
                                             NULL, a->gbw, a->gbb);
  if (!a->backward) return training_conv2d_bn_forward(&a->s, a->x, a->w, NULL, &a->bn, 0.0f, 6.0f, a->conv, a->y, 1);
  return training_conv2d_bn_backward(&a->s, a->gy, a->y, a->conv, a->x, a->w, &a->bn, 0.0f, 6.0f, a->gx, a->gw, NULL,
                                     a->gbw, a->gbb);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"conv_bn_fwd", "conv_bn_bwd", "conv_bn_batch_fwd", "conv_bn_batch_bwd"};
  const int op = bench_op(argc, argv, ops, 4);
  struct args a = {op % 2, op / 2};
  struct conv_bench b;
  long reps;
  if (conv_bench_args(argc, argv, op, "conv_bn_fwd|conv_bn_bwd|conv_bn_batch_fwd|conv_bn_batch_bwd N C H W O K STRIDE PAD GROUPS",
                      &reps, &b))
    return 2;
  a.s = b.s;
  const struct training_conv2d* s = &a.s;
  const long nx = b.nx, nw = b.nw, ny = b.ny, co = s->c_out;
  float* stats = bench_filled(4 * co, 7);
  for (long c = 0; c < co; c++) stats[c] += 1.0f, stats[3 * co + c] += 1.0f; /* weights and variances near 1 */
  a.bn = (struct training_bn){stats, stats + co, stats + 2 * co, stats + 3 * co, 1e-5f};
  a.x = bench_filled(nx, 1), a.w = bench_filled(nw, 2), a.conv = bench_filled(ny, 3), a.y = bench_filled(ny, 4);
  a.gy = bench_filled(ny, 5), a.gx = bench_filled(nx, 6), a.gw = bench_filled(nw, 8);
  a.gbw = bench_filled(co, 9), a.gbb = bench_filled(co, 10);
  if (a.backward && !a.batch) training_conv2d_bn_forward(s, a.x, a.w, NULL, &a.bn, 0.0f, 6.0f, a.conv, a.y, 1);
  if (a.backward && a.batch) /* the batch's statistics in place of the running ones */
    training_conv2d_bn_batch_forward(s, a.x, a.w, NULL, a.bn.weight, a.bn.bias, a.bn.eps, 0.0f, 6.0f, a.conv, a.y,
                                     stats + 2 * co, stats + 3 * co);
  const int rc = bench_run(argv, 9, b.flops * (a.backward ? 2 : 1), reps, call, &a);
  free(stats); free(a.x); free(a.w); free(a.conv); free(a.y); free(a.gy); free(a.gx); free(a.gw); free(a.gbw);
  free(a.gbb);
  return rc;
}
