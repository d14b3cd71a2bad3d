/* Native benchmark of the optimizer updates (base/native_bench.h):
 *
 *   bench_optim_native sgd|sgd_momentum|adam|adamw NUMEL  [--reps R] [--isa NAME] */
#include "base/native_bench.h"
#include "training/optim/optim.h"

enum { SGD, SGD_MOMENTUM, ADAM, ADAMW };

struct args {
  int op;
  long numel;
  float *p, *g, *s1, *s2;
};

static int call(void* p) {
  const struct args* a = p;
  switch (a->op) {
    case SGD: return training_sgd_update(a->p, a->g, a->numel, 1e-6f);
    case SGD_MOMENTUM: return training_sgd_momentum_update(a->p, a->g, a->s1, a->numel, 1e-6f, 0.9f, 1, 1e-4f, 0);
    default: return training_adam_update(a->p, a->g, a->s1, a->s2, a->numel, 1e-6, 0.9, 0.999, 1e-8, 1e-2, a->op == ADAMW, 10);
  }
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"sgd", "sgd_momentum", "adam", "adamw"};
  struct args a = {0};
  long reps;
  a.op = bench_op(argc, argv, ops, 4);
  if (bench_args(argc, argv, a.op, 1, &a.numel, &reps, "sgd|sgd_momentum|adam|adamw NUMEL")) return 2;
  a.p = bench_filled(a.numel, 1), a.g = bench_filled(a.numel, 2), a.s1 = bench_filled(a.numel, 3);
  a.s2 = bench_filled(a.numel, 4);
  for (long i = 0; i < a.numel; i++) a.s2[i] *= a.s2[i];  /* a second moment is not negative */
  const int rc = bench_run(argv, 1, 0, reps, call, &a);
  free(a.p); free(a.g); free(a.s1); free(a.s2);
  return rc;
}
