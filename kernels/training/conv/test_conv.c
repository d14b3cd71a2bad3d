/* Native test of the convolution kernels (every kind: general, pointwise, depthwise 3 x 3, other
 * depthwise, stem) against the definitional reference (conv_reference.h), forward and backward, with
 * and without the ReLU, for every ISA this build and CPU have (base/native_test.h); and of their
 * eligibility. */
#include "base/native_test.h"
#include "training/conv/conv.h"
#include "training/conv/conv_reference.h"

static void test_conv(struct training_conv2d s, int relu) {
  const int64_t p = training_conv2d_out_h(&s) * training_conv2d_out_w(&s), cpg = s.c_in / s.groups;
  const int64_t nx = s.n * s.c_in * s.h * s.w, nw = s.c_out * cpg * s.kh * s.kw, ny = s.n * s.c_out * p;
  float* x = rand_buf(nx);
  float* w = rand_buf(nw);
  float* b = rand_buf(s.c_out);
  float* y = zeros(ny);
  float* gy = rand_buf(ny);
  float* gx = rand_buf(nx); /* overwritten by the kernel */
  float* gw = rand_buf(nw);
  float* gb = rand_buf(s.c_out);
  double* wy = malloc(sizeof(double) * ny);
  double* g = malloc(sizeof(double) * ny);
  double* wgx = malloc(sizeof(double) * nx);
  double* wgw = malloc(sizeof(double) * nw);
  double* wgb = malloc(sizeof(double) * s.c_out);
  ref_conv2d(&s, x, w, b, wy);
  if (relu)
    for (int64_t i = 0; i < ny; i++) wy[i] = wy[i] < 0 ? 0.0 : wy[i];
  char what[160];
  conv2d_name(&s, what, sizeof what);
  snprintf(what + strlen(what), sizeof what - strlen(what), " relu=%d", relu);
  expect_rc(what, training_conv2d_forward(&s, x, w, b, relu, y), DCX_OK);
  expect_close(what, y, wy, ny, 2e-5 * sqrt((double)cpg * s.kh * s.kw));
  for (int64_t i = 0; i < ny; i++) g[i] = relu && !(y[i] > 0) ? 0.0 : gy[i];
  ref_conv2d_backward(&s, g, x, w, wgx, wgw, wgb);
  expect_rc(what, training_conv2d_backward(&s, gy, x, w, relu ? y : NULL, gx, gw, gb), DCX_OK);
  const double red = sqrt((double)s.n * p);
  expect_close("conv gx", gx, wgx, nx, 2e-5 * sqrt((double)(s.c_out / s.groups) * s.kh * s.kw));
  expect_close("conv gw", gw, wgw, nw, 2e-5 * red);
  expect_close("conv gb", gb, wgb, s.c_out, 2e-5 * red);
  free(x); free(w); free(b); free(y); free(gy); free(gx); free(gw); free(gb);
  free(wy); free(g); free(wgx); free(wgw); free(wgb);
}

static void test_eligibility(void) {
  /* n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups; forward kernel, backward kernel */
  const struct {
    struct training_conv2d s;
    int forward, backward;
  } cases[] = {
      {{1, 3, 224, 224, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1}, TRAINING_CONV2D_STEM3X3, TRAINING_CONV2D_GENERAL},
      {{1, 5, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1}, TRAINING_CONV2D_GENERAL, TRAINING_CONV2D_GENERAL},
      {{1, 32, 56, 56, 32, 3, 3, 2, 2, 1, 1, 1, 1, 32}, TRAINING_CONV2D_DEPTHWISE3X3, TRAINING_CONV2D_DEPTHWISE3X3},
      {{1, 32, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1, 32}, TRAINING_CONV2D_DEPTHWISE, TRAINING_CONV2D_DEPTHWISE},
      {{1, 16, 7, 7, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1}, TRAINING_CONV2D_POINTWISE, TRAINING_CONV2D_POINTWISE},
      {{1, 3, 5, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 2}, TRAINING_CONV2D_NONE, TRAINING_CONV2D_NONE}, /* 3 channels, 2 groups */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[160];
    conv2d_name(&cases[i].s, what, sizeof what);
    expect_rc(what, training_conv2d_kernel(&cases[i].s, 0), cases[i].forward);
    expect_rc(what, training_conv2d_kernel(&cases[i].s, 1), cases[i].backward);
  }
}

static void run(int quick) {
  for (size_t i = 0; i < REF_CONV2D_GEOMETRIES; i++) {
    if (quick && i % 2) continue;
    test_conv(ref_conv2d_geometries[i], 0);
    test_conv(ref_conv2d_geometries[i], 1);
  }
  struct training_conv2d s = {2, 3, 5, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 2}; /* 3 channels in 2 groups */
  float buf[4] = {0};
  expect_rc("conv groups", training_conv2d_forward(&s, buf, buf, NULL, 0, buf), DCX_EINVAL_SHAPE);
  s.groups = 1;
  s.kh = 7; /* window larger than the input */
  expect_rc("conv window", training_conv2d_forward(&s, buf, buf, NULL, 0, buf), DCX_EINVAL_SHAPE);
  test_eligibility();
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
