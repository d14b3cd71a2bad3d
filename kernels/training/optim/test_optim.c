/* Native test of the optimizer updates against their definitions (optim.h) in double precision, over a
 * few steps that carry their state, for every ISA this build and CPU have (base/native_test.h). */
#include "base/native_test.h"
#include "training/optim/optim.h"

#define STEPS 3

static double* copy_double(const float* x, int64_t n) {
  double* d = malloc(sizeof(double) * (n ? n : 1));
  for (int64_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

static void test_sgd(int64_t numel) {
  float* g = rand_buf(numel);
  float* p = rand_buf(numel);
  double* want = malloc(sizeof(double) * (numel ? numel : 1));
  for (int64_t i = 0; i < numel; i++) want[i] = p[i] - 0.05f * g[i];
  expect_rc("sgd rc", training_sgd_update(p, g, numel, 0.05f), DCX_OK);
  expect_close("sgd", p, want, numel, 1e-6);
  free(g); free(p); free(want);
}

static void test_sgd_momentum(int64_t numel, float momentum, int nesterov, float weight_decay) {
  const float lr = 0.05f;
  float* p = rand_buf(numel);
  float* buf = momentum != 0 ? zeros(numel) : NULL;
  double* wp = copy_double(p, numel);
  double* wb = calloc(numel ? numel : 1, sizeof(double));
  for (int step = 1; step <= STEPS; step++) {
    float* g = rand_buf(numel);
    for (int64_t i = 0; i < numel; i++) {
      double d = g[i] + (double)weight_decay * wp[i];
      if (momentum != 0) {
        wb[i] = step == 1 ? d : momentum * wb[i] + d;
        d = nesterov ? d + momentum * wb[i] : wb[i];
      }
      wp[i] -= lr * d;
    }
    expect_rc("sgd_momentum rc", training_sgd_momentum_update(p, g, buf, numel, lr, momentum, nesterov,
                                                              weight_decay, step == 1), DCX_OK);
    free(g);
  }
  expect_close("sgd_momentum param", p, wp, numel, 1e-6);
  if (buf) expect_close("sgd_momentum buffer", buf, wb, numel, 1e-6);
  free(p); free(buf); free(wp); free(wb);
}

static void test_adam(int64_t numel, double beta1, double weight_decay, int decoupled) {
  const double lr = 1e-2, beta2 = 0.999, eps = 1e-8;
  float* p = rand_buf(numel);
  float *m = zeros(numel), *v = zeros(numel);
  double* wp = copy_double(p, numel);
  double* wm = calloc(numel ? numel : 1, sizeof(double));
  double* wv = calloc(numel ? numel : 1, sizeof(double));
  for (int step = 1; step <= STEPS; step++) {
    float* g = rand_buf(numel);
    const double step_size = lr / (1 - pow(beta1, step)), bc2_sqrt = sqrt(1 - pow(beta2, step));
    for (int64_t i = 0; i < numel; i++) {
      double d = g[i];
      if (decoupled) wp[i] *= 1 - lr * weight_decay;
      else d += weight_decay * wp[i];
      wm[i] += (1 - beta1) * (d - wm[i]);
      wv[i] = beta2 * wv[i] + (1 - beta2) * d * d;
      wp[i] -= step_size * wm[i] / (sqrt(wv[i]) / bc2_sqrt + eps);
    }
    expect_rc("adam rc", training_adam_update(p, g, m, v, numel, lr, beta1, beta2, eps, weight_decay, decoupled, step),
              DCX_OK);
    free(g);
  }
  expect_close("adam param", p, wp, numel, 1e-6);
  expect_close("adam exp_avg", m, wm, numel, 1e-6);
  expect_close("adam exp_avg_sq", v, wv, numel, 1e-6);
  free(p); free(m); free(v); free(wp); free(wm); free(wv);
}

static void test_bad_arguments(void) {
  float x[8] = {0};
  expect_rc("sgd_momentum without its buffer", training_sgd_momentum_update(x, x, NULL, 8, 0.1f, 0.9f, 0, 0, 1),
            DCX_EINVAL_PTR);
  expect_rc("adam at step 0", training_adam_update(x, x, x, x, 8, 1e-3, 0.9, 0.999, 1e-8, 0, 0, 0), DCX_EINVAL_SHAPE);
}

static void run(int quick) {
  (void)quick;
  static const int64_t sizes[] = {512, 45, 3, 0};
  for (int s = 0; s < 4; s++) {
    const int64_t n = sizes[s];
    test_sgd(n);
    test_sgd_momentum(n, 0.9f, 0, 0.0f);
    test_sgd_momentum(n, 0.9f, 1, 1e-2f);
    test_sgd_momentum(n, 0.0f, 0, 1e-2f);  /* weight decay alone: no buffer */
    test_adam(n, 0.9, 0.0, 0);
    test_adam(n, 0.9, 1e-2, 0);
    test_adam(n, 0.9, 1e-2, 1);
    test_adam(n, 0.3, 0.0, 1);  /* 1 - beta1 >= 0.5: the lerp from the gradient's side */
  }
  test_bad_arguments();
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
