/* Native benchmark of pooling (base/native_bench.h):
 *
 *   bench_pool_native max_fwd|max_bwd|avg_fwd|avg_bwd N C H W K STRIDE PAD  [--reps R] [--isa NAME]
 *
 * A square K x K window. */
#include "base/native_bench.h"
#include "training/pool/pool.h"

struct args {
  int op; /* 0 max_fwd, 1 max_bwd, 2 avg_fwd, 3 avg_bwd */
  struct training_pool2d s;
  float *x, *y;
  int64_t* indices;
};

static int call(void* p) {
  const struct args* a = p;
  switch (a->op) {
    case 0: return training_max_pool2d_forward(&a->s, a->x, a->y, a->indices);
    case 1: return training_max_pool2d_backward(&a->s, a->y, a->indices, a->x);
    case 2: return training_avg_pool2d_forward(&a->s, a->x, a->y);
    default: return training_avg_pool2d_backward(&a->s, a->y, a->x);
  }
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"max_fwd", "max_bwd", "avg_fwd", "avg_bwd"};
  struct args a = {bench_op(argc, argv, ops, 4)};
  long v[7], reps;
  if (bench_args(argc, argv, a.op, 7, v, &reps, "max_fwd|max_bwd|avg_fwd|avg_bwd N C H W K STRIDE PAD")) return 2;
  a.s = (struct training_pool2d){v[0], v[1], v[2], v[3], v[4], v[4], v[5], v[5], v[6], v[6], 1};
  if (training_pool2d_check(&a.s)) {
    fprintf(stderr, "%s\n", dcx_strerror(DCX_EINVAL_SHAPE));
    return 2;
  }
  const long nx = a.s.n * a.s.c * a.s.h * a.s.w, ny = a.s.n * a.s.c * training_pool2d_out_h(&a.s) * training_pool2d_out_w(&a.s);
  a.x = bench_filled(nx, 1), a.y = bench_filled(ny, 2);
  a.indices = calloc(ny, sizeof(int64_t));
  training_max_pool2d_forward(&a.s, a.x, a.y, a.indices); /* the backward's indices */
  const int rc = bench_run(argv, 7, 0, reps, call, &a);
  free(a.x); free(a.y); free(a.indices);
  return rc;
}
