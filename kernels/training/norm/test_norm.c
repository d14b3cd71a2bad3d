/* Native test of the norms' backward (layer norm; batch norm with frozen statistics) against
 * definitional references (double precision), for every ISA this build and CPU have
 * (base/native_test.h). */
#include "base/native_test.h"
#include "training/norm/norm.h"

static void test_norms(int64_t rows, int64_t cols) {
  float* x = rand_buf(rows * cols);
  float* gy = rand_buf(rows * cols);
  float* w = rand_buf(cols);
  float* mean = zeros(rows);
  float* rstd = zeros(rows);
  for (int64_t r = 0; r < rows; r++) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < cols; j++) m += x[r * cols + j];
    m /= cols;
    for (int64_t j = 0; j < cols; j++) v += (x[r * cols + j] - m) * (x[r * cols + j] - m);
    mean[r] = (float)m;
    rstd[r] = (float)(1.0 / sqrt(v / cols + 1e-5));
  }
  double* wgx = calloc(rows * cols, sizeof(double));
  double* wgw = calloc(cols, sizeof(double));
  double* wgb = calloc(cols, sizeof(double));
  for (int64_t r = 0; r < rows; r++) {
    double sg = 0, sgx = 0;
    for (int64_t j = 0; j < cols; j++) {
      const double xh = (x[r * cols + j] - mean[r]) * rstd[r], g = (double)gy[r * cols + j] * w[j];
      sg += g;
      sgx += g * xh;
      wgw[j] += gy[r * cols + j] * xh;
      wgb[j] += gy[r * cols + j];
    }
    for (int64_t j = 0; j < cols; j++) {
      const double xh = (x[r * cols + j] - mean[r]) * rstd[r], g = (double)gy[r * cols + j] * w[j];
      wgx[r * cols + j] = rstd[r] / cols * (cols * g - sg - xh * sgx);
    }
  }
  float* gx = zeros(rows * cols);
  float* gw = zeros(cols);
  float* gb = zeros(cols);
  expect_rc("layer norm rc", training_layer_norm_backward(gy, x, mean, rstd, w, rows, cols, gx, gw, gb), DCX_OK);
  expect_close("layer norm gx", gx, wgx, rows * cols, 1e-4);
  expect_close("layer norm gw", gw, wgw, cols, 1e-5 * sqrt((double)rows));
  expect_close("layer norm gb", gb, wgb, cols, 1e-5 * sqrt((double)rows));
  /* batch norm, frozen statistics: [rows/2 images, 2 channels... ] use n = rows, c = 3, hw = cols */
  const int64_t n = rows, c = 3, hw = cols;
  float* bx = rand_buf(n * c * hw);
  float* bg = rand_buf(n * c * hw);
  float* bw = rand_buf(c);
  float* bm = rand_buf(c);
  float* bv = rand_buf(c);
  for (int64_t i = 0; i < c; i++) bv[i] = bv[i] * bv[i] + 0.1f;
  double* wbx = calloc(n * c * hw, sizeof(double));
  double* wbw = calloc(c, sizeof(double));
  double* wbb = calloc(c, sizeof(double));
  for (int64_t b = 0; b < n; b++)
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t i = 0; i < hw; i++) {
        const int64_t at = (b * c + ch) * hw + i;
        const double rs = 1.0 / sqrt((double)bv[ch] + 1e-5);
        wbx[at] = bg[at] * bw[ch] * rs;
        wbw[ch] += bg[at] * (bx[at] - bm[ch]) * rs;
        wbb[ch] += bg[at];
      }
  float* ogx = zeros(n * c * hw);
  float* ogw = zeros(c);
  float* ogb = zeros(c);
  expect_rc("batch norm rc", training_batch_norm_frozen_backward(bg, bx, bw, bm, bv, 1e-5f, n, c, hw, ogx, ogw, ogb), DCX_OK);
  expect_close("batch norm gx", ogx, wbx, n * c * hw, 1e-5);
  expect_close("batch norm gw", ogw, wbw, c, 1e-5 * sqrt((double)n * hw));
  expect_close("batch norm gb", ogb, wbb, c, 1e-5 * sqrt((double)n * hw));
  free(x); free(gy); free(w); free(mean); free(rstd); free(wgx); free(wgw); free(wgb); free(gx); free(gw); free(gb);
  free(bx); free(bg); free(bw); free(bm); free(bv); free(wbx); free(wbw); free(wbb); free(ogx); free(ogw); free(ogb);
}

static void run(int quick) {
  (void)quick;
  test_norms(6, 8);
  test_norms(5, 67);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
