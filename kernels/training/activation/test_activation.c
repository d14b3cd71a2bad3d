/* Native test of the activations' backward (softmax and log-softmax, a clamp's mask) against
 * definitional references (double precision), for every ISA this build and CPU have
 * (base/native_test.h). */
#include "base/native_test.h"
#include "training/activation/activation.h"

static void test_activations(int64_t n, int64_t c) {
  float* grad = zeros(n * c);
  double* wg = calloc(n * c, sizeof(double));
  float* y = rand_buf(n * c);
  float* gy = rand_buf(n * c);
  for (int log_sm = 0; log_sm < 2; log_sm++) {
    for (int64_t r = 0; r < n; r++) {
      double s = 0;
      for (int64_t j = 0; j < c; j++) s += log_sm ? gy[r * c + j] : (double)gy[r * c + j] * y[r * c + j];
      for (int64_t j = 0; j < c; j++)
        wg[r * c + j] = log_sm ? gy[r * c + j] - exp(y[r * c + j]) * s : y[r * c + j] * (gy[r * c + j] - s);
    }
    expect_rc("softmax bwd rc", training_softmax_backward(gy, y, n, c, log_sm, grad), DCX_OK);
    expect_close(log_sm ? "log_softmax bwd" : "softmax bwd", grad, wg, n * c, 1e-5 * sqrt((double)c));
  }
  for (int64_t i = 0; i < n * c; i++) wg[i] = (y[i] > -0.5f && y[i] < 0.25f) ? gy[i] : 0.0;
  expect_rc("threshold rc", training_threshold_backward(gy, y, n * c, -0.5f, 0.25f, grad), DCX_OK);
  expect_close("threshold bwd", grad, wg, n * c, 0);
  free(grad); free(wg); free(y); free(gy);
}

int main(int argc, char** argv) { return native_rows_test_main(argc, argv, test_activations); }
