/* Native benchmark of the activations' backward (base/native_bench.h):
 *
 *   bench_activation_native threshold|softmax|log_softmax ROWS COLS  [--reps R] [--isa NAME] */
#include "base/native_bench.h"
#include "training/activation/activation.h"

struct args {
  int op; /* 0 threshold, 1 softmax, 2 log_softmax */
  long rows, cols;
  float *gy, *y, *gx;
};

static int call(void* p) {
  const struct args* a = p;
  if (a->op == 0) return training_threshold_backward(a->gy, a->y, a->rows * a->cols, 0.0f, 6.0f, a->gx);
  return training_softmax_backward(a->gy, a->y, a->rows, a->cols, a->op == 2, a->gx);
}

int main(int argc, char** argv) {
  static const char* const ops[] = {"threshold", "softmax", "log_softmax"};
  struct args a = {bench_op(argc, argv, ops, 3)};
  long v[2], reps;
  if (bench_args(argc, argv, a.op, 2, v, &reps, "threshold|softmax|log_softmax ROWS COLS")) return 2;
  a.rows = v[0], a.cols = v[1];
  a.gy = bench_filled(a.rows * a.cols, 1), a.y = bench_filled(a.rows * a.cols, 2), a.gx = bench_filled(a.rows * a.cols, 3);
  const int rc = bench_run(argv, 2, 0, reps, call, &a);
  free(a.gy); free(a.y); free(a.gx);
  return rc;
}
