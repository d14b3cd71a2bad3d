/* Native benchmark of the GEMM and the linear layer (base/native_bench.h):
 *
 *   bench_gemm_native gemm M N K | linear_fwd|linear_bwd N IN OUT  [--reps R] [--isa NAME]
 *
 * A backward counts its input and weight gradients. */
#include "base/native_bench.h"
#include "training/gemm/gemm.h"

struct args {
  int op; /* 0 gemm, 1 linear_fwd, 2 linear_bwd */
  long v[3];
  float *a, *b, *c, *d, *e, *f;
};

static int call(void* p) {
  const struct args* s = p;
  const long m = s->v[0], n = s->v[1], k = s->v[2];
  if (s->op == 0) return training_gemm(m, n, k, s->a, k, 1, s->b, n, 1, s->e, n, 0, NULL, NULL, 0);
  if (s->op == 1) return training_linear_forward(s->a, s->b, s->d, m, n, k, 1, s->e);
  return training_linear_backward(s->e, s->a, s->b, NULL, m, n, k, s->c, s->f, s->d);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"gemm", "linear_fwd", "linear_bwd"};
  struct args s = {bench_op(argc, argv, ops, 3)};
  long reps;
  if (bench_args(argc, argv, s.op, 3, s.v, &reps, "gemm M N K | linear_fwd|linear_bwd N IN OUT")) return 2;
  const long m = s.v[0], n = s.v[1], k = s.v[2], wide = n > k ? n : k; /* linear: x [m, n], W [k, n], y [m, k] */
  s.a = bench_filled(m * wide, 1), s.b = bench_filled(k * n, 2), s.c = bench_filled(m * wide, 3);
  s.d = bench_filled(wide, 4), s.e = bench_filled(m * wide, 5), s.f = bench_filled(k * n, 6);
  const int rc = bench_run(argv, 3, 2.0 * m * n * k * (s.op == 2 ? 2 : 1), reps, call, &s);
  free(s.a); free(s.b); free(s.c); free(s.d); free(s.e); free(s.f);
  return rc;
}
