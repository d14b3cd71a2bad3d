/* Native benchmark of the SGD update (base/native_bench.h):
 *
 *   bench_sgd_native sgd NUMEL  [--reps R] [--isa NAME] */
#include "base/native_bench.h"
#include "training/sgd/sgd.h"

struct args {
  long numel;
  float *p, *g;
};

static int call(void* p) {
  const struct args* a = p;
  return training_sgd_update(a->p, a->g, a->numel, 1e-6f);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"sgd"};
  struct args a = {0};
  long reps;
  if (bench_args(argc, argv, bench_op(argc, argv, ops, 1), 1, &a.numel, &reps, "sgd NUMEL")) return 2;
  a.p = bench_filled(a.numel, 1), a.g = bench_filled(a.numel, 2);
  const int rc = bench_run(argv, 1, 0, reps, call, &a);
  free(a.p); free(a.g);
  return rc;
}
