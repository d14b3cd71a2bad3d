/* Native benchmark of the norms' backward (base/native_bench.h):
 *
 *   bench_norm_native layer_norm ROWS COLS | batch_norm N C HW  [--reps R] [--isa NAME]
 *
 * Every gradient (input, weight, bias). */
#include "base/native_bench.h"
#include "training/norm/norm.h"

struct args {
  int batch;
  long v[3];
  float *gy, *x, *w, *stats, *gx, *gw, *gb;
};

static int call(void* p) {
  const struct args* a = p;
  if (!a->batch)
    return training_layer_norm_backward(a->gy, a->x, a->stats, a->stats + a->v[0], a->w, a->v[0], a->v[1], a->gx,
                                        a->gw, a->gb);
  return training_batch_norm_frozen_backward(a->gy, a->x, a->w, a->stats, a->stats + a->v[1], 1e-5f, a->v[0], a->v[1],
                                             a->v[2], a->gx, a->gw, a->gb);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"layer_norm", "batch_norm"};
  struct args a = {bench_op(argc, argv, ops, 2)};
  long reps;
  if (bench_args(argc, argv, a.batch, a.batch == 1 ? 3 : 2, a.v, &reps, "layer_norm ROWS COLS | batch_norm N C HW"))
    return 2;
  const long numel = a.batch ? a.v[0] * a.v[1] * a.v[2] : a.v[0] * a.v[1], width = a.v[1];
  const long stats = 2 * (a.batch ? a.v[1] : a.v[0]); /* mean and rstd per row, or mean and var per channel */
  a.gy = bench_filled(numel, 1), a.x = bench_filled(numel, 2), a.gx = bench_filled(numel, 3);
  a.w = bench_filled(width, 4), a.gw = bench_filled(width, 5), a.gb = bench_filled(width, 6);
  a.stats = bench_filled(stats, 7);
  for (long i = stats / 2; i < stats; i++) a.stats[i] += 1.0f; /* positive rstd / var */
  const int rc = bench_run(argv, a.batch ? 3 : 2, 0, reps, call, &a);
  free(a.gy); free(a.x); free(a.gx); free(a.w); free(a.gw); free(a.gb); free(a.stats);
  return rc;
}
