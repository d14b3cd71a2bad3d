/* Native benchmark and callgrind target of the partitioned linear (base/native_bench.h):
 *
 *   bench_partitioned_linear_native forward|packed|backward|forward_unshuffled N D_IN D_OUT P  [--reps R] [--isa NAME]
 *
 * packed: the forward from weights packed ahead; backward: the input and weight gradients;
 * forward_unshuffled: the forward without the shuffle. FLOPs: 2 N D_IN D_OUT / P per forward. Under
 * `valgrind --tool=callgrind --toggle-collect=partitioned_linear_forward` use --reps 1. */
#include "base/native_bench.h"
#include "partitioned_linear/partitioned_linear.h"

struct args {
  int op; /* 0 forward, 1 packed, 2 backward, 3 forward_unshuffled */
  long n, di, dout, p;
  float *x, *w, *b, *y, *gx, *gw, *packed;
};

static int call(void* ctx) {
  const struct args* a = ctx;
  switch (a->op) {
    case 1: return partitioned_linear_forward_packed(a->x, a->packed, a->b, a->n, a->di, a->dout, a->p, 1, a->y);
    case 2: {
      const int rc = partitioned_linear_backward_input(a->y, a->w, a->n, a->di, a->dout, a->p, 1, a->gx);
      return rc ? rc : partitioned_linear_backward_weight(a->y, a->x, a->n, a->di, a->dout, a->p, 1, a->gw);
    }
    default: return partitioned_linear_forward(a->x, a->w, a->b, a->n, a->di, a->dout, a->p, a->op != 3, a->y);
  }
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"forward", "packed", "backward", "forward_unshuffled"};
  struct args a = {bench_op(argc, argv, ops, 4)};
  long v[4], reps;
  if (bench_args(argc, argv, a.op, 4, v, &reps, "forward|packed|backward|forward_unshuffled N D_IN D_OUT P")) return 2;
  a.n = v[0], a.di = v[1], a.dout = v[2], a.p = v[3];
  if (a.p < 1 || a.di % a.p || a.dout % a.p) {
    fprintf(stderr, "%s\n", dcx_strerror(DCX_EINVAL_SHAPE));
    return 2;
  }
  a.x = bench_filled(a.n * a.di, 1), a.w = bench_filled(a.di / a.p * a.dout, 2), a.b = bench_filled(a.dout, 3);
  a.y = bench_filled(a.n * a.dout, 4), a.gx = bench_filled(a.n * a.di, 5), a.gw = bench_filled(a.di / a.p * a.dout, 6);
  a.packed = malloc(sizeof(float) * partitioned_linear_packed_size(a.di, a.dout, a.p, 1));
  partitioned_linear_pack_weight(a.w, a.di, a.dout, a.p, 1, a.packed);
  const double flops = 2.0 * a.n * a.di * a.dout / a.p * (a.op == 2 ? 2 : 1);
  const int rc = bench_run(argv, 4, flops, reps, call, &a);
  free(a.x); free(a.w); free(a.b); free(a.y); free(a.gx); free(a.gw); free(a.packed);
  return rc;
}
