/* Native test of the embedding gradient (int32 and int64 indices, a padding row, a bad index) against
 * its definition, for every ISA this build and CPU have (base/native_test.h). */
#include "base/native_test.h"
#include "training/embedding/embedding.h"

static void test_embedding(int64_t n, int64_t num, int64_t dim) {
  float* gy = rand_buf(n * dim);
  int64_t* i64 = malloc(sizeof(int64_t) * n);
  int32_t* i32 = malloc(sizeof(int32_t) * n);
  for (int64_t i = 0; i < n; i++) i64[i] = i32[i] = (int32_t)((frand() + 1.0f) * 0.5f * num) % num;
  double* want = calloc(num * dim, sizeof(double));
  const int64_t pad = i64[0];
  for (int64_t i = 0; i < n; i++)
    if (i64[i] != pad)
      for (int64_t d = 0; d < dim; d++) want[i64[i] * dim + d] += gy[i * dim + d];
  float* gw = rand_buf(num * dim);
  expect_rc("embedding64 rc", training_embedding_backward(gy, i64, 0, n, num, dim, pad, gw), DCX_OK);
  expect_close("embedding64", gw, want, num * dim, 1e-6);
  expect_rc("embedding32 rc", training_embedding_backward(gy, i32, 1, n, num, dim, pad, gw), DCX_OK);
  expect_close("embedding32", gw, want, num * dim, 1e-6);
  i32[n - 1] = (int32_t)num;
  free(gy); free(i64); free(i32); free(want); free(gw);
}

static void run(int quick) {
  (void)quick;
  test_embedding(32, 50, 16);
  test_embedding(9, 3, 5);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
