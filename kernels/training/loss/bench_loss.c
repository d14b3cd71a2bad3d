/* Native benchmark of the losses with their gradient (base/native_bench.h):
 *
 *   bench_loss_native cross_entropy|bce N C  [--reps R] [--isa NAME]
 *
 * bce takes the N logits of the first column. */
#include "base/native_bench.h"
#include "training/loss/loss.h"

struct args {
  int bce;
  long n, c;
  float *z, *t, *grad, loss;
  int64_t* target;
};

static int call(void* p) {
  struct args* a = p;
  if (a->bce) return training_bce_with_logits(a->z, a->t, a->n, &a->loss, a->grad);
  return training_cross_entropy(a->z, a->target, a->n, a->c, -100, &a->loss, a->grad);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"cross_entropy", "bce"};
  struct args a = {bench_op(argc, argv, ops, 2)};
  long v[2], reps;
  if (bench_args(argc, argv, a.bce, 2, v, &reps, "cross_entropy|bce N C")) return 2;
  a.n = v[0], a.c = v[1];
  a.z = bench_filled(a.n * a.c, 1), a.t = bench_filled(a.n, 2), a.grad = bench_filled(a.n * a.c, 3);
  a.target = calloc(a.n, sizeof(int64_t));
  for (long i = 0; i < a.n; i++) a.target[i] = i % a.c, a.t[i] = (float)(i % 2);
  const int rc = bench_run(argv, 2, 0, reps, call, &a);
  free(a.z); free(a.t); free(a.grad); free(a.target);
  return rc;
}
