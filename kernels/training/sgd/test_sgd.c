/* Native test of the SGD update against its definition, for every ISA this build and CPU have
 * (base/native_test.h). */
#include "base/native_test.h"
#include "training/sgd/sgd.h"

static void test_sgd(int64_t numel) {
  float* g = rand_buf(numel);
  float* p = rand_buf(numel);
  double* want = malloc(sizeof(double) * (numel ? numel : 1));
  for (int64_t i = 0; i < numel; i++) want[i] = p[i] - 0.05f * g[i];
  expect_rc("sgd rc", training_sgd_update(p, g, numel, 0.05f), DCX_OK);
  expect_close("sgd", p, want, numel, 1e-6);
  free(g); free(p); free(want);
}

static void run(int quick) {
  (void)quick;
  test_sgd(512);
  test_sgd(45);
  test_sgd(0);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
