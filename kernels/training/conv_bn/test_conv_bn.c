/* Native test of the fused convolution + batch norm + clamp layer against its definition (the
 * convolution reference of conv/conv_reference.h, then the norm and the clamp in double precision),
 * forward and backward, for every ISA this build and CPU have (base/native_test.h). Frozen statistics:
 * with ReLU6 and with no clamp, keeping conv_out and leaving it to the backward (where the backward
 * recovers it from y, and where one channel's bias makes it write conv_out). Batch statistics: every
 * geometry with ReLU6, ReLU and no clamp, with and without the norm's affine weight, one channel, one
 * image, and a mean far from zero (a convolution bias of 300 over deviations of about 1). */
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

/* The batch-statistics layer: its forward's y, conv_out, mean and variance, its backward's five
 * gradients, against the definition in double (the clamp's mask read on the kernel's y). */
static void test_conv_bn_batch(struct training_conv2d s, float lo, float hi, int affine, float offset) {
  const int64_t p = training_conv2d_out_h(&s) * training_conv2d_out_w(&s), co = s.c_out;
  const int64_t nx = s.n * s.c_in * s.h * s.w, nw = co * (s.c_in / s.groups) * s.kh * s.kw, ny = s.n * co * p;
  const double m = (double)(s.n * p), eps = 1e-5;
  float* x = rand_buf(nx);
  float* w = rand_buf(nw);
  float* b = rand_buf(co);
  float* bn_w = rand_buf(co);
  float* bn_b = rand_buf(co);
  for (int64_t c = 0; c < co; c++) b[c] += offset, bn_w[c] = 0.5f + 0.5f * (bn_w[c] + 1.0f), bn_b[c] *= 2.0f;
  if (!affine) bn_w = (free(bn_w), NULL), bn_b = (free(bn_b), NULL);
  float *conv = zeros(ny), *y = zeros(ny), *mean = zeros(co), *var = zeros(co), *gy = rand_buf(ny);
  float *gx = zeros(nx), *gw = zeros(nw), *gb = zeros(co), *gbw = zeros(co), *gbb = zeros(co);
  double *wconv = malloc(sizeof(double) * ny), *wy = malloc(sizeof(double) * ny), *g = malloc(sizeof(double) * ny);
  double *wmean = calloc(co, sizeof(double)), *wvar = calloc(co, sizeof(double)), *wrstd = calloc(co, sizeof(double));
  double *wgx = malloc(sizeof(double) * nx), *wgw = malloc(sizeof(double) * nw), *wgb = malloc(sizeof(double) * co);
  double *wgbw = calloc(co, sizeof(double)), *wgbb = calloc(co, sizeof(double));
  ref_conv2d(&s, x, w, b, wconv);
  for (int64_t i = 0; i < ny; i++) wmean[i / p % co] += wconv[i] / m;
  for (int64_t i = 0; i < ny; i++) wvar[i / p % co] += (wconv[i] - wmean[i / p % co]) * (wconv[i] - wmean[i / p % co]) / m;
  for (int64_t c = 0; c < co; c++) wrstd[c] = 1.0 / sqrt(wvar[c] + eps);
  for (int64_t i = 0; i < ny; i++) {
    const int64_t c = i / p % co;
    const double v = (wconv[i] - wmean[c]) * wrstd[c] * (affine ? bn_w[c] : 1.0) + (affine ? bn_b[c] : 0.0);
    wy[i] = v < lo ? lo : v > hi ? hi : v;
  }
  char what[200];
  conv2d_name(&s, what, sizeof what);
  snprintf(what + strlen(what), sizeof what - strlen(what), " batch clamp=%g,%g affine=%d offset=%g", lo, hi, affine,
           offset);
  expect_rc(what, training_conv2d_bn_batch_forward(&s, x, w, b, bn_w, bn_b, (float)eps, lo, hi, conv, y, mean, var),
            DCX_OK);
  const double fan = sqrt((double)(s.c_in / s.groups) * s.kh * s.kw);
  double spread = 0.0; /* the largest standard deviation over the mean: the norm's magnification of conv_out's error */
  for (int64_t c = 0; c < co; c++) spread = fmax(spread, (fabs(wmean[c]) + 1.0) * wrstd[c]);
  expect_close(what, y, wy, ny, 4e-5 * fan * spread);
  expect_close("conv_bn batch conv_out", conv, wconv, ny, 2e-5 * fan);
  expect_close("conv_bn batch mean", mean, wmean, co, 2e-5 * fan);
  /* the variance relative to the one of the kernel's conv_out in double (the statistics alone, without the
   * convolution's rounding, which a mean of 300 makes large against deviations of 1): var / want - 1 against 0
   * (var itself where want is 0: one value per channel) */
  double *fmean = calloc(co, sizeof(double)), *fvar = calloc(co, sizeof(double)), *zero = calloc(co, sizeof(double));
  for (int64_t i = 0; i < ny; i++) fmean[i / p % co] += conv[i] / m;
  for (int64_t i = 0; i < ny; i++) fvar[i / p % co] += (conv[i] - fmean[i / p % co]) * (conv[i] - fmean[i / p % co]) / m;
  float* var_rel = zeros(co);
  for (int64_t c = 0; c < co; c++) var_rel[c] = fvar[c] > 0.0 ? (float)(var[c] / fvar[c] - 1.0) : var[c];
  expect_close("conv_bn batch var", var_rel, zero, co, 1e-6);
  expect_close("conv_bn batch var (definition)", var, wvar, co, 1e-4 * fan * (fabs(offset) + 1.0));
  for (int64_t c = 0; c < co; c++) { /* the clamp's mask on the kernel's y; the norm's sums */
    for (int64_t bi = 0; bi < s.n; bi++)
      for (int64_t j = 0; j < p; j++) {
        const int64_t i = (bi * co + c) * p + j;
        const double gi = y[i] > lo && y[i] < hi ? gy[i] : 0.0;
        wgbb[c] += gi;
        wgbw[c] += gi * (wconv[i] - wmean[c]) * wrstd[c];
      }
    const double k = (affine ? bn_w[c] : 1.0) * wrstd[c];
    for (int64_t bi = 0; bi < s.n; bi++)
      for (int64_t j = 0; j < p; j++) {
        const int64_t i = (bi * co + c) * p + j;
        const double gi = y[i] > lo && y[i] < hi ? gy[i] : 0.0;
        g[i] = k * (gi - wgbb[c] / m - (wconv[i] - wmean[c]) * wrstd[c] * wgbw[c] / m);
      }
  }
  ref_conv2d_backward(&s, g, x, w, wgx, wgw, wgb);
  expect_rc(what, training_conv2d_bn_batch_backward(&s, gy, y, conv, x, w,
                                                    &(struct training_bn){bn_w, NULL, mean, var, (float)eps}, lo, hi,
                                                    gx, gw, gb, gbw, gbb),
            DCX_OK);
  const double red = sqrt(m), k = spread;
  expect_close("conv_bn batch gx", gx, wgx, nx, 4e-5 * k * red * sqrt((double)(co / s.groups) * s.kh * s.kw));
  expect_close("conv_bn batch gw", gw, wgw, nw, 4e-5 * k * red * fan);
  expect_close("conv_bn batch gb", gb, wgb, co, 4e-5 * k * red * fan);
  expect_close("conv_bn batch g_bn_w", gbw, wgbw, co, 4e-5 * red * spread);
  expect_close("conv_bn batch g_bn_b", gbb, wgbb, co, 4e-5 * red);
  free(x); free(w); free(b); free(bn_w); free(bn_b); free(conv); free(y); free(mean); free(var); free(gy);
  free(gx); free(gw); free(gb); free(gbw); free(gbb); free(var_rel); free(fmean); free(fvar); free(zero);
  free(wconv); free(wy); free(g); free(wmean); free(wvar); free(wrstd);
  free(wgx); free(wgw); free(wgb); free(wgbw); free(wgbb);
}

static void run(int quick) {
  for (size_t i = 0; i < REF_CONV2D_GEOMETRIES; i++) {
    if (quick && i % 2) continue;
    test_conv_bn(ref_conv2d_geometries[i], 0.0f, 6.0f, 0, 1);
    test_conv_bn(ref_conv2d_geometries[i], -INFINITY, INFINITY, 1, 1);
    test_conv_bn(ref_conv2d_geometries[i], 0.0f, 6.0f, 1, 0);
  }
  for (size_t i = 0; i < REF_CONV2D_GEOMETRIES; i++) {
    if (quick && i % 2) continue;
    test_conv_bn_batch(ref_conv2d_geometries[i], 0.0f, 6.0f, 1, 0.0f);
    test_conv_bn_batch(ref_conv2d_geometries[i], -INFINITY, INFINITY, 0, 0.0f);
  }
  const struct training_conv2d one_channel = {3, 1, 9, 7, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1};
  const struct training_conv2d one_image = {1, 4, 6, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1};
  const struct training_conv2d depthwise = {2, 8, 15, 15, 8, 3, 3, 2, 2, 1, 1, 1, 1, 8};
  test_conv_bn_batch(one_channel, 0.0f, INFINITY, 1, 0.0f);
  test_conv_bn_batch(one_image, 0.0f, 6.0f, 1, 0.0f);
  test_conv_bn_batch(depthwise, 0.0f, 6.0f, 1, 300.0f);
  test_conv_bn_batch(one_image, -INFINITY, INFINITY, 1, 300.0f);
  const struct training_conv2d s = {1, 2, 4, 4, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1};
  const struct training_bn no_stats = {NULL, NULL, NULL, NULL, 1e-5f};
  float buf[32] = {0};
  expect_rc("conv_bn without statistics", training_conv2d_bn_forward(&s, buf, buf, NULL, &no_stats, 0, 6, NULL, buf, 0),
            DCX_EINVAL_PTR);
  expect_rc("conv_bn batch without statistics outputs",
            training_conv2d_bn_batch_forward(&s, buf, buf, NULL, NULL, NULL, 1e-5f, 0, 6, NULL, buf, NULL, NULL),
            DCX_EINVAL_PTR);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
