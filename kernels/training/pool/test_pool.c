/* Native test of max and average pooling, forward and backward, against definitional references (plain
 * loops, double accumulation), for every ISA this build and CPU have (base/native_test.h). */
#include "base/native_test.h"
#include "training/pool/pool.h"

static void test_pool(struct training_pool2d s) {
  const int64_t oh = training_pool2d_out_h(&s), ow = training_pool2d_out_w(&s), hw = s.h * s.w, planes = s.n * s.c;
  float* x = rand_buf(planes * hw);
  float* y = zeros(planes * oh * ow);
  int64_t* idx = calloc(planes * oh * ow, sizeof(int64_t));
  float* gy = rand_buf(planes * oh * ow);
  float* gx = rand_buf(planes * hw);
  double* wy = malloc(sizeof(double) * planes * oh * ow);
  double* wa = malloc(sizeof(double) * planes * oh * ow);
  double* wgx = calloc(planes * hw, sizeof(double));
  double* wga = calloc(planes * hw, sizeof(double));
  for (int64_t pl = 0; pl < planes; pl++)
    for (int64_t r = 0; r < oh; r++)
      for (int64_t q = 0; q < ow; q++) {
        const int64_t h0 = r * s.stride_h - s.pad_h, w0 = q * s.stride_w - s.pad_w, o = (pl * oh + r) * ow + q;
        double best = -INFINITY, sum = 0;
        int64_t at = -1, cnt = 0;
        for (int64_t ih = h0; ih < h0 + s.kh; ih++)
          for (int64_t iw = w0; iw < w0 + s.kw; iw++) {
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
            const double v = x[pl * hw + ih * s.w + iw];
            if (at < 0 || v > best) { best = v; at = ih * s.w + iw; }
            sum += v;
            cnt++;
          }
        int64_t div = cnt;
        if (s.count_include_pad) {
          const int64_t he = h0 + s.kh < s.h + s.pad_h ? h0 + s.kh : s.h + s.pad_h;
          const int64_t we = w0 + s.kw < s.w + s.pad_w ? w0 + s.kw : s.w + s.pad_w;
          div = (he - h0) * (we - w0);
        }
        wy[o] = best;
        wa[o] = sum / div;
        wgx[pl * hw + at] += gy[o];
        for (int64_t ih = h0; ih < h0 + s.kh; ih++)
          for (int64_t iw = w0; iw < w0 + s.kw; iw++)
            if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w) wga[pl * hw + ih * s.w + iw] += (double)gy[o] / div;
      }
  expect_rc("maxpool fwd", training_max_pool2d_forward(&s, x, y, idx), DCX_OK);
  expect_close("maxpool y", y, wy, planes * oh * ow, 1e-6);
  expect_rc("maxpool bwd", training_max_pool2d_backward(&s, gy, idx, gx), DCX_OK);
  expect_close("maxpool gx", gx, wgx, planes * hw, 1e-5);
  expect_rc("avgpool fwd", training_avg_pool2d_forward(&s, x, y), DCX_OK);
  expect_close("avgpool y", y, wa, planes * oh * ow, 1e-5);
  expect_rc("avgpool bwd", training_avg_pool2d_backward(&s, gy, gx), DCX_OK);
  expect_close("avgpool gx", gx, wga, planes * hw, 1e-5);
  free(x); free(y); free(idx); free(gy); free(gx); free(wy); free(wa); free(wgx); free(wga);
}


static void run(int quick) {
  (void)quick;
  /* n, c, h, w, kh, kw, sh, sw, ph, pw, count_include_pad */
  const struct training_pool2d pools[] = {
      {2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 1}, {1, 2, 9, 7, 3, 3, 2, 2, 1, 1, 1},
      {1, 2, 9, 7, 3, 3, 2, 2, 1, 1, 0}, {2, 1, 5, 6, 3, 2, 1, 1, 1, 0, 0},
  };
  for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++) test_pool(pools[i]);
  float buf[4] = {0};
  struct training_pool2d p = {1, 1, 4, 4, 2, 2, 2, 2, 2, 2, 0}; /* padding more than half the window */
  expect_rc("pool padding", training_max_pool2d_forward(&p, buf, buf, (int64_t*)buf), DCX_EINVAL_SHAPE);
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
