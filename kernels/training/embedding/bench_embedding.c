/* Native benchmark of the embedding gradient (base/native_bench.h):
 *
 *   bench_embedding_native embedding N NUM DIM  [--reps R] [--isa NAME]
 *
 * N int64 indices into a table of NUM rows of DIM, no padding row. */
#include "base/native_bench.h"
#include "training/embedding/embedding.h"

struct args {
  long n, num, dim;
  float *gy, *gw;
  int64_t* indices;
};

static int call(void* p) {
  const struct args* a = p;
  return training_embedding_backward(a->gy, a->indices, 0, a->n, a->num, a->dim, -1, a->gw);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"embedding"};
  struct args a = {0};
  long v[3], reps;
  if (bench_args(argc, argv, bench_op(argc, argv, ops, 1), 3, v, &reps, "embedding N NUM DIM")) return 2;
  a.n = v[0], a.num = v[1], a.dim = v[2];
  a.gy = bench_filled(a.n * a.dim, 1), a.gw = bench_filled(a.num * a.dim, 2);
  a.indices = calloc(a.n, sizeof(int64_t));
  for (long i = 0; i < a.n; i++) a.indices[i] = (i * 7919) % a.num;
  const int rc = bench_run(argv, 3, 0, reps, call, &a);
  free(a.gy); free(a.gw); free(a.indices);
  return rc;
}
