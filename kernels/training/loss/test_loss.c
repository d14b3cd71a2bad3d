/* Native test of the losses (cross entropy with ignored rows, binary cross entropy with logits) and
 * their gradients against definitional references (double precision), for every ISA this build and CPU
 * have (base/native_test.h). */
#include "base/native_test.h"
#include "training/loss/loss.h"

static void test_losses(int64_t n, int64_t c) {
  float* z = rand_buf(n * c);
  for (int64_t i = 0; i < n * c; i++) z[i] *= 8.0f;
  int64_t* t = malloc(sizeof(int64_t) * n);
  for (int64_t i = 0; i < n; i++) t[i] = i % 5 == 3 ? -100 : (int64_t)((frand() + 1.0f) * 0.5f * c) % c;
  float loss, *grad = zeros(n * c);
  double* wg = calloc(n * c, sizeof(double));
  double wl = 0;
  int64_t cnt = 0;
  for (int64_t r = 0; r < n; r++) cnt += t[r] != -100;
  for (int64_t r = 0; r < n; r++) {
    if (t[r] == -100) continue;
    double mx = -INFINITY, s = 0;
    for (int64_t j = 0; j < c; j++) mx = z[r * c + j] > mx ? z[r * c + j] : mx;
    for (int64_t j = 0; j < c; j++) s += exp(z[r * c + j] - mx);
    wl += (mx + log(s) - z[r * c + t[r]]) / cnt;
    for (int64_t j = 0; j < c; j++) wg[r * c + j] = (exp(z[r * c + j] - mx) / s - (j == t[r])) / cnt;
  }
  expect_rc("ce rc", training_cross_entropy(z, t, n, c, -100, &loss, grad), DCX_OK);
  expect_close("ce loss", &loss, &wl, 1, 1e-5);
  expect_close("ce grad", grad, wg, n * c, 1e-5);
  t[0] = c;
  expect_rc("ce bad target", training_cross_entropy(z, t, n, c, -100, &loss, grad), DCX_EINDEX);

  float* tt = rand_buf(n);
  for (int64_t i = 0; i < n; i++) tt[i] = tt[i] > 0 ? 1.0f : 0.0f;
  double bl = 0;
  for (int64_t i = 0; i < n; i++) {
    const double zi = z[i];
    bl += (zi > 0 ? zi : 0) - zi * tt[i] + log1p(exp(-fabs(zi)));
    wg[i] = (1.0 / (1.0 + exp(-zi)) - tt[i]) / n;
  }
  bl /= n;
  expect_rc("bce rc", training_bce_with_logits(z, tt, n, &loss, grad), DCX_OK);
  expect_close("bce loss", &loss, &bl, 1, 1e-5);
  expect_close("bce grad", grad, wg, n, 1e-5);

  free(z); free(t); free(grad); free(wg); free(tt);
}

int main(int argc, char** argv) { return native_rows_test_main(argc, argv, test_losses); }
