/* Native test of the GEMM and the linear layer against definitional references (plain loops, double
 * accumulation), for every ISA this build and CPU have (base/native_test.h). */
#include "base/native_test.h"
#include "training/gemm/gemm.h"

static void test_gemm(int64_t m, int64_t n, int64_t k, int ta, int tb, int acc, int bias, int relu) {
  float* a = rand_buf(m * k);
  float* b = rand_buf(k * n);
  float* bm = rand_buf(m);
  float* bn = rand_buf(n);
  const int64_t c_rs = n + 3;
  float* c = rand_buf(m * c_rs);
  double* want = malloc(sizeof(double) * m * c_rs);
  const int64_t a_rs = ta ? 1 : k, a_cs = ta ? m : 1, b_rs = tb ? 1 : n, b_cs = tb ? k : 1;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < c_rs; j++) {
      double s = j < n && acc ? c[i * c_rs + j] : 0.0;
      if (j >= n) { want[i * c_rs + j] = c[i * c_rs + j]; continue; }
      for (int64_t q = 0; q < k; q++) s += (double)a[i * a_rs + q * a_cs] * b[q * b_rs + j * b_cs];
      if (bias) s += (double)bm[i] + bn[j];
      want[i * c_rs + j] = relu && s < 0 ? 0.0 : s;
    }
  expect_rc("gemm rc", training_gemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, acc, bias ? bm : NULL,
                               bias ? bn : NULL, relu), DCX_OK);
  char what[96];
  snprintf(what, sizeof what, "gemm m=%ld n=%ld k=%ld ta=%d tb=%d acc=%d", (long)m, (long)n, (long)k, ta, tb, acc);
  expect_close(what, c, want, m * c_rs, 2e-5 * sqrt((double)k + 1));
  free(a); free(b); free(bm); free(bn); free(c); free(want);
}

static void test_linear(int64_t n, int64_t in, int64_t out, int relu) {
  float* x = rand_buf(n * in);
  float* w = rand_buf(out * in);
  float* b = rand_buf(out);
  float* y = zeros(n * out);
  float* gy = rand_buf(n * out);
  float* gx = zeros(n * in);
  float* gw = zeros(out * in);
  float* gb = zeros(out);
  double* wy = malloc(sizeof(double) * n * out);
  double* wgx = calloc(n * in, sizeof(double));
  double* wgw = calloc(out * in, sizeof(double));
  double* wgb = calloc(out, sizeof(double));
  for (int64_t r = 0; r < n; r++)
    for (int64_t o = 0; o < out; o++) {
      double s = b[o];
      for (int64_t i = 0; i < in; i++) s += (double)x[r * in + i] * w[o * in + i];
      wy[r * out + o] = relu && s < 0 ? 0.0 : s;
    }
  expect_rc("linear fwd rc", training_linear_forward(x, w, b, n, in, out, relu, y), DCX_OK);
  char what[96];
  snprintf(what, sizeof what, "linear fwd n=%ld in=%ld out=%ld relu=%d", (long)n, (long)in, (long)out, relu);
  expect_close(what, y, wy, n * out, 2e-5 * sqrt((double)in));
  for (int64_t r = 0; r < n; r++)
    for (int64_t o = 0; o < out; o++) {
      const double g = relu && !(y[r * out + o] > 0) ? 0.0 : gy[r * out + o];
      wgb[o] += g;
      for (int64_t i = 0; i < in; i++) {
        wgx[r * in + i] += g * w[o * in + i];
        wgw[o * in + i] += g * x[r * in + i];
      }
    }
  expect_rc("linear bwd rc", training_linear_backward(gy, x, w, relu ? y : NULL, n, in, out, gx, gw, gb), DCX_OK);
  snprintf(what, sizeof what, "linear gx n=%ld in=%ld out=%ld", (long)n, (long)in, (long)out);
  expect_close(what, gx, wgx, n * in, 2e-5 * sqrt((double)out));
  snprintf(what, sizeof what, "linear gw n=%ld in=%ld out=%ld", (long)n, (long)in, (long)out);
  expect_close(what, gw, wgw, out * in, 2e-5 * sqrt((double)n));
  expect_close("linear gb", gb, wgb, out, 2e-5 * sqrt((double)n));
  free(x); free(w); free(b); free(y); free(gy); free(gx); free(gw); free(gb);
  free(wy); free(wgx); free(wgw); free(wgb);
}

/* ------------------------------------------------------------------ convolution */

static void run(int quick) {
  const int64_t dims[] = {1, 5, 16, 17, 36, 61};
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (size_t i = 0; i < 6; i++)
        for (size_t j = quick ? 3 : 0; j < 6; j++)
          test_gemm(dims[i], dims[j], dims[(i + j) % 6], ta, tb, (int)((i + j) & 1), (int)(j & 1), (int)(i & 1));
  test_gemm(7, 600, 300, 0, 1, 0, 1, 1); /* several K and N blocks */
  test_gemm(130, 33, 520, 1, 0, 1, 0, 0); /* several M blocks */
  test_gemm(8, 40, 19, 0, 0, 0, 1, 1);    /* a last tile of 2 rows: the 2-row body */
  test_gemm(3, 21, 9, 1, 1, 1, 0, 1);     /* 3 rows: the 4-row body */
  test_gemm(14, 9, 300, 0, 1, 1, 1, 0);   /* 6 + 6 + 2 rows, two K blocks */
  const int64_t ns[] = {1, 3, 32, 65}, ins[] = {1, 7, 36, 300}, outs[] = {1, 10, 16, 33};
  for (size_t a = 0; a < 4; a++)
    for (size_t b = 0; b < 4; b++)
      for (size_t c = quick ? 2 : 0; c < 4; c++) test_linear(ns[a], ins[b], outs[c], (int)((a + b + c) & 1));
  float buf[4] = {0};
  expect_rc("linear null", training_linear_forward(NULL, buf, NULL, 1, 2, 2, 0, buf), DCX_EINVAL_PTR);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
