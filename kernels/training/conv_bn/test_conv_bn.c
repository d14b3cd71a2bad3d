/* Native test of the fused convolution + frozen batch norm + clamp layer against its definition (the
 * convolution reference of conv/conv_reference.h, then the norm and the clamp in double precision),
 * forward and backward, with ReLU6 and with no clamp, keeping conv_out and leaving it to the backward
 * (where the backward recovers it from y, and where one channel's bias makes it write conv_out), for
 * every ISA this build and CPU have (base/native_test.h). */
#include "base/native_test.h"
#include "training/conv/conv_reference.h"
#include "training/conv_bn/conv_bn.h"

static void test_conv_bn(struct training_conv2d s, float lo, float hi, int lazy, int recoverable) {
  const int64_t p = training_conv2d_out_h(&s) * training_conv2d_out_w(&s), co = s.c_out;
  const int64_t nx = s.n * s.c_in * s.h * s.w, nw = co * (s.c_in / s.groups) * s.kh * s.kw, ny = s.n * co * p;
  float* x = rand_buf(nx);
  float* w = rand_buf(nw);
  float* b = rand_buf(co);
  float* bn_w = rand_buf(co);
  float* bn_b = rand_buf(co);
  float* mean = rand_buf(co);
  float* var = rand_buf(co);
  for (int64_t c = 0; c < co; c++) {
    bn_w[c] = 0.5f + 0.5f * (bn_w[c] + 1.0f);
    var[c] = 0.5f + 0.5f * (var[c] + 1.0f);
  }
  if (!recoverable) bn_b[co - 1] = 100.0f * bn_w[co - 1]; /* the bias far above the weight: conv_out is kept */
  const struct training_bn bn = {bn_w, bn_b, mean, var, 1e-5f};
  float* conv = zeros(ny);
  float* y = zeros(ny);
  float* gy = rand_buf(ny);
  float *gx = zeros(nx), *gw = zeros(nw), *gb = zeros(co), *gbw = zeros(co), *gbb = zeros(co);
  double* wconv = malloc(sizeof(double) * ny);
  double* wy = malloc(sizeof(double) * ny);
  double* g = malloc(sizeof(double) * ny);
  double *wgx = malloc(sizeof(double) * nx), *wgw = malloc(sizeof(double) * nw), *wgb = malloc(sizeof(double) * co);
  double *wgbw = calloc(co, sizeof(double)), *wgbb = calloc(co, sizeof(double));
  ref_conv2d(&s, x, w, b, wconv);
  for (int64_t i = 0; i < ny; i++) {
    const int64_t c = i / p % co;
    const double v = (wconv[i] - mean[c]) / sqrt((double)var[c] + 1e-5) * bn_w[c] + bn_b[c];
    wy[i] = v < lo ? lo : v > hi ? hi : v;
  }
  char what[200];
  conv2d_name(&s, what, sizeof what);
  snprintf(what + strlen(what), sizeof what - strlen(what), " clamp=%g,%g lazy=%d recoverable=%d", lo, hi, lazy,
           recoverable);
  for (int64_t i = 0; i < ny; i++) conv[i] = NAN; /* where the forward leaves conv_out, the backward must not read it */
  expect_rc(what, training_conv2d_bn_forward(&s, x, w, b, &bn, lo, hi, conv, y, lazy), DCX_OK);
  const double fan = sqrt((double)(s.c_in / s.groups) * s.kh * s.kw);
  expect_close(what, y, wy, ny, 4e-5 * fan);
  if (!lazy || !recoverable) expect_close("conv_bn conv_out", conv, wconv, ny, 2e-5 * fan);
  for (int64_t i = 0; i < ny; i++) { /* the clamp's mask on the kernel's y, the norm's scale */
    const int64_t c = i / p % co;
    const double m = y[i] > lo && y[i] < hi ? gy[i] : 0.0, rstd = 1.0 / sqrt((double)var[c] + 1e-5);
    g[i] = m * bn_w[c] * rstd;
    wgbw[c] += m * (wconv[i] - mean[c]) * rstd;
    wgbb[c] += m;
  }
  ref_conv2d_backward(&s, g, x, w, wgx, wgw, wgb);
  expect_rc(what, training_conv2d_bn_backward(&s, gy, y, conv, x, w, &bn, lo, hi, gx, gw, gb, gbw, gbb), DCX_OK);
  const double red = sqrt((double)s.n * p);
  expect_close("conv_bn gx", gx, wgx, nx, 4e-5 * sqrt((double)(co / s.groups) * s.kh * s.kw));
  expect_close("conv_bn gw", gw, wgw, nw, 4e-5 * red);
  expect_close("conv_bn gb", gb, wgb, co, 4e-5 * red);
  expect_close("conv_bn g_bn_w", gbw, wgbw, co, 4e-5 * red);
  expect_close("conv_bn g_bn_b", gbb, wgbb, co, 4e-5 * red);
  free(x); free(w); free(b); free(bn_w); free(bn_b); free(mean); free(var); free(conv); free(y); free(gy);
  free(gx); free(gw); free(gb); free(gbw); free(gbb);
  free(wconv); free(wy); free(g); free(wgx); free(wgw); free(wgb); free(wgbw); free(wgbb);
}

static void run(int quick) {
  for (size_t i = 0; i < REF_CONV2D_GEOMETRIES; i++) {
    if (quick && i % 2) continue;
    test_conv_bn(ref_conv2d_geometries[i], 0.0f, 6.0f, 0, 1);
    test_conv_bn(ref_conv2d_geometries[i], -INFINITY, INFINITY, 1, 1);
    test_conv_bn(ref_conv2d_geometries[i], 0.0f, 6.0f, 1, 0);
  }
  const struct training_conv2d s = {1, 2, 4, 4, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1};
  const struct training_bn no_stats = {NULL, NULL, NULL, NULL, 1e-5f};
  float buf[32] = {0};
  expect_rc("conv_bn without statistics", training_conv2d_bn_forward(&s, buf, buf, NULL, &no_stats, 0, 6, NULL, buf, 0),
            DCX_EINVAL_PTR);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
