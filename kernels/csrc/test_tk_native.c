/* Native test of the training kernels against definitional references (plain loops, double
 * accumulation), for every implementation this build and CPU have (portable, x86-64-v3, neon):
 *
 *   test_tk_native [--quick]
 *
 * Prints one line per ISA and "N failures"; exit status 1 on any failure. --quick (for qemu)
 * runs a smaller sweep. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spl_kernel.h"
#include "tk_kernels.h"

static int failures = 0, checks = 0;
static unsigned long long rng = 88172645463325252ull;

static float frand(void) { /* xorshift, uniform in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float* rand_buf(size_t n) {
  float* p = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) p[i] = frand();
  return p;
}
static float* zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* |got - want| <= tol * (1 + |want|) everywhere */
static void expect_close(const char* what, const float* got, const double* want, size_t n, double tol) {
  checks++;
  for (size_t i = 0; i < n; i++) {
    const double err = fabs((double)got[i] - want[i]);
    if (!(err <= tol * (1.0 + fabs(want[i])))) {
      failures++;
      printf("FAIL %s: element %zu: got %.7g want %.7g\n", what, i, got[i], want[i]);
      return;
    }
  }
}
static void expect_rc(const char* what, int rc, int want) {
  checks++;
  if (rc != want) {
    failures++;
    printf("FAIL %s: rc %d (%s), want %d\n", what, rc, tk_strerror(rc), want);
  }
}

/* ------------------------------------------------------------------ GEMM and linear */

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
  expect_rc("gemm rc", tk_gemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, acc, bias ? bm : NULL,
                               bias ? bn : NULL, relu), TK_OK);
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
  expect_rc("linear fwd rc", tk_linear_forward(x, w, b, n, in, out, relu, y), TK_OK);
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
  expect_rc("linear bwd rc", tk_linear_backward(gy, x, w, relu ? y : NULL, n, in, out, gx, gw, gb), TK_OK);
  snprintf(what, sizeof what, "linear gx n=%ld in=%ld out=%ld", (long)n, (long)in, (long)out);
  expect_close(what, gx, wgx, n * in, 2e-5 * sqrt((double)out));
  snprintf(what, sizeof what, "linear gw n=%ld in=%ld out=%ld", (long)n, (long)in, (long)out);
  expect_close(what, gw, wgw, out * in, 2e-5 * sqrt((double)n));
  expect_close("linear gb", gb, wgb, out, 2e-5 * sqrt((double)n));
  free(x); free(w); free(b); free(y); free(gy); free(gx); free(gw); free(gb);
  free(wy); free(wgx); free(wgw); free(wgb);
}

/* ------------------------------------------------------------------ convolution */

static void test_conv(struct tk_conv2d s, int relu) {
  const int64_t oh = tk_conv2d_out_h(&s), ow = tk_conv2d_out_w(&s), cpg = s.c_in / s.groups,
                opg = s.c_out / s.groups;
  const int64_t nx = s.n * s.c_in * s.h * s.w, nw = s.c_out * cpg * s.kh * s.kw, ny = s.n * s.c_out * oh * ow;
  float* x = rand_buf(nx);
  float* w = rand_buf(nw);
  float* b = rand_buf(s.c_out);
  float* y = zeros(ny);
  float* gy = rand_buf(ny);
  float* gx = rand_buf(nx); /* overwritten by the kernel */
  float* gw = rand_buf(nw);
  float* gb = rand_buf(s.c_out);
  double* wy = malloc(sizeof(double) * ny);
  double* wgx = calloc(nx, sizeof(double));
  double* wgw = calloc(nw, sizeof(double));
  double* wgb = calloc(s.c_out, sizeof(double));
#define XI(bb, c, ih, iw) ((((bb) * s.c_in + (c)) * s.h + (ih)) * s.w + (iw))
#define WI(o, c, i, j) ((((o) * cpg + (c)) * s.kh + (i)) * s.kw + (j))
#define YI(bb, o, r, q) ((((bb) * s.c_out + (o)) * oh + (r)) * ow + (q))
  for (int64_t bb = 0; bb < s.n; bb++)
    for (int64_t o = 0; o < s.c_out; o++)
      for (int64_t r = 0; r < oh; r++)
        for (int64_t q = 0; q < ow; q++) {
          double acc = b[o];
          const int64_t g = o / opg;
          for (int64_t c = 0; c < cpg; c++)
            for (int64_t i = 0; i < s.kh; i++)
              for (int64_t j = 0; j < s.kw; j++) {
                const int64_t ih = r * s.stride_h - s.pad_h + i * s.dil_h, iw = q * s.stride_w - s.pad_w + j * s.dil_w;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                acc += (double)x[XI(bb, g * cpg + c, ih, iw)] * w[WI(o, c, i, j)];
              }
          wy[YI(bb, o, r, q)] = relu && acc < 0 ? 0.0 : acc;
        }
  char what[160];
  snprintf(what, sizeof what, "conv n=%ld c=%ld %ldx%ld o=%ld k=%ldx%ld s=%ld,%ld p=%ld,%ld d=%ld,%ld g=%ld relu=%d",
           (long)s.n, (long)s.c_in, (long)s.h, (long)s.w, (long)s.c_out, (long)s.kh, (long)s.kw, (long)s.stride_h,
           (long)s.stride_w, (long)s.pad_h, (long)s.pad_w, (long)s.dil_h, (long)s.dil_w, (long)s.groups, relu);
  expect_rc(what, tk_conv2d_forward(&s, x, w, b, relu, y), TK_OK);
  expect_close(what, y, wy, ny, 2e-5 * sqrt((double)cpg * s.kh * s.kw));
  for (int64_t bb = 0; bb < s.n; bb++)
    for (int64_t o = 0; o < s.c_out; o++)
      for (int64_t r = 0; r < oh; r++)
        for (int64_t q = 0; q < ow; q++) {
          const double gv = relu && !(y[YI(bb, o, r, q)] > 0) ? 0.0 : gy[YI(bb, o, r, q)];
          const int64_t g = o / opg;
          wgb[o] += gv;
          for (int64_t c = 0; c < cpg; c++)
            for (int64_t i = 0; i < s.kh; i++)
              for (int64_t j = 0; j < s.kw; j++) {
                const int64_t ih = r * s.stride_h - s.pad_h + i * s.dil_h, iw = q * s.stride_w - s.pad_w + j * s.dil_w;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                wgx[XI(bb, g * cpg + c, ih, iw)] += gv * w[WI(o, c, i, j)];
                wgw[WI(o, c, i, j)] += gv * x[XI(bb, g * cpg + c, ih, iw)];
              }
        }
  expect_rc(what, tk_conv2d_backward(&s, gy, x, w, relu ? y : NULL, gx, gw, gb), TK_OK);
  const double red = sqrt((double)s.n * oh * ow);
  expect_close("conv gx", gx, wgx, nx, 2e-5 * sqrt((double)opg * s.kh * s.kw));
  expect_close("conv gw", gw, wgw, nw, 2e-5 * red);
  expect_close("conv gb", gb, wgb, s.c_out, 2e-5 * red);
  free(x); free(w); free(b); free(y); free(gy); free(gx); free(gw); free(gb);
  free(wy); free(wgx); free(wgw); free(wgb);
#undef XI
#undef WI
#undef YI
}

/* ------------------------------------------------------------------ pooling */

static void test_pool(struct tk_pool2d s) {
  const int64_t oh = tk_pool2d_out_h(&s), ow = tk_pool2d_out_w(&s), hw = s.h * s.w, planes = s.n * s.c;
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
  expect_rc("maxpool fwd", tk_max_pool2d_forward(&s, x, y, idx), TK_OK);
  expect_close("maxpool y", y, wy, planes * oh * ow, 1e-6);
  expect_rc("maxpool bwd", tk_max_pool2d_backward(&s, gy, idx, gx), TK_OK);
  expect_close("maxpool gx", gx, wgx, planes * hw, 1e-5);
  expect_rc("avgpool fwd", tk_avg_pool2d_forward(&s, x, y), TK_OK);
  expect_close("avgpool y", y, wa, planes * oh * ow, 1e-5);
  expect_rc("avgpool bwd", tk_avg_pool2d_backward(&s, gy, gx), TK_OK);
  expect_close("avgpool gx", gx, wga, planes * hw, 1e-5);
  free(x); free(y); free(idx); free(gy); free(gx); free(wy); free(wa); free(wgx); free(wga);
}

/* ------------------------------------------------------------------ losses and the rest */

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
  expect_rc("ce rc", tk_cross_entropy(z, t, n, c, -100, &loss, grad), TK_OK);
  expect_close("ce loss", &loss, &wl, 1, 1e-5);
  expect_close("ce grad", grad, wg, n * c, 1e-5);
  t[0] = c;
  expect_rc("ce bad target", tk_cross_entropy(z, t, n, c, -100, &loss, grad), TK_EINDEX);

  float* tt = rand_buf(n);
  for (int64_t i = 0; i < n; i++) tt[i] = tt[i] > 0 ? 1.0f : 0.0f;
  double bl = 0;
  for (int64_t i = 0; i < n; i++) {
    const double zi = z[i];
    bl += (zi > 0 ? zi : 0) - zi * tt[i] + log1p(exp(-fabs(zi)));
    wg[i] = (1.0 / (1.0 + exp(-zi)) - tt[i]) / n;
  }
  bl /= n;
  expect_rc("bce rc", tk_bce_with_logits(z, tt, n, &loss, grad), TK_OK);
  expect_close("bce loss", &loss, &bl, 1, 1e-5);
  expect_close("bce grad", grad, wg, n, 1e-5);

  /* softmax backward, both forms, and the threshold mask */
  float* y = rand_buf(n * c);
  float* gy = rand_buf(n * c);
  for (int log_sm = 0; log_sm < 2; log_sm++) {
    for (int64_t r = 0; r < n; r++) {
      double s = 0;
      for (int64_t j = 0; j < c; j++) s += log_sm ? gy[r * c + j] : (double)gy[r * c + j] * y[r * c + j];
      for (int64_t j = 0; j < c; j++)
        wg[r * c + j] = log_sm ? gy[r * c + j] - exp(y[r * c + j]) * s : y[r * c + j] * (gy[r * c + j] - s);
    }
    expect_rc("softmax bwd rc", tk_softmax_backward(gy, y, n, c, log_sm, grad), TK_OK);
    expect_close(log_sm ? "log_softmax bwd" : "softmax bwd", grad, wg, n * c, 1e-5 * sqrt((double)c));
  }
  for (int64_t i = 0; i < n * c; i++) wg[i] = (y[i] > -0.5f && y[i] < 0.25f) ? gy[i] : 0.0;
  expect_rc("threshold rc", tk_threshold_backward(gy, y, n * c, -0.5f, 0.25f, grad), TK_OK);
  expect_close("threshold bwd", grad, wg, n * c, 0);
  free(z); free(t); free(grad); free(wg); free(tt); free(y); free(gy);
}

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
  expect_rc("layer norm rc", tk_layer_norm_backward(gy, x, mean, rstd, w, rows, cols, gx, gw, gb), TK_OK);
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
  expect_rc("batch norm rc", tk_batch_norm_frozen_backward(bg, bx, bw, bm, bv, 1e-5f, n, c, hw, ogx, ogw, ogb), TK_OK);
  expect_close("batch norm gx", ogx, wbx, n * c * hw, 1e-5);
  expect_close("batch norm gw", ogw, wbw, c, 1e-5 * sqrt((double)n * hw));
  expect_close("batch norm gb", ogb, wbb, c, 1e-5 * sqrt((double)n * hw));
  free(x); free(gy); free(w); free(mean); free(rstd); free(wgx); free(wgw); free(wgb); free(gx); free(gw); free(gb);
  free(bx); free(bg); free(bw); free(bm); free(bv); free(wbx); free(wbw); free(wbb); free(ogx); free(ogw); free(ogb);
}

static void test_embedding_and_sgd(int64_t n, int64_t num, int64_t dim) {
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
  expect_rc("embedding64 rc", tk_embedding_backward(gy, i64, 0, n, num, dim, pad, gw), TK_OK);
  expect_close("embedding64", gw, want, num * dim, 1e-6);
  expect_rc("embedding32 rc", tk_embedding_backward(gy, i32, 1, n, num, dim, pad, gw), TK_OK);
  expect_close("embedding32", gw, want, num * dim, 1e-6);
  i32[n - 1] = (int32_t)num;
  expect_rc("embedding bad index", tk_embedding_backward(gy, i32, 1, n, num, dim, -1, gw), TK_EINDEX);
  float* p = rand_buf(n * dim);
  double* wp = malloc(sizeof(double) * n * dim);
  for (int64_t i = 0; i < n * dim; i++) wp[i] = p[i] - 0.05f * gy[i];
  expect_rc("sgd rc", tk_sgd_update(p, gy, n * dim, 0.05f), TK_OK);
  expect_close("sgd", p, wp, n * dim, 1e-6);
  free(gy); free(i64); free(i32); free(want); free(gw); free(p); free(wp);
}

static void test_bad_args(void) {
  struct tk_conv2d s = {2, 3, 5, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 2}; /* 3 channels in 2 groups */
  float buf[4] = {0};
  expect_rc("conv groups", tk_conv2d_forward(&s, buf, buf, NULL, 0, buf), TK_EINVAL_SHAPE);
  s.groups = 1;
  s.kh = 7; /* window larger than the input */
  expect_rc("conv window", tk_conv2d_forward(&s, buf, buf, NULL, 0, buf), TK_EINVAL_SHAPE);
  expect_rc("linear null", tk_linear_forward(NULL, buf, NULL, 1, 2, 2, 0, buf), TK_EINVAL_PTR);
  struct tk_pool2d p = {1, 1, 4, 4, 2, 2, 2, 2, 2, 2, 0}; /* padding more than half the window */
  expect_rc("pool padding", tk_max_pool2d_forward(&p, buf, buf, (int64_t*)buf), TK_EINVAL_SHAPE);
}

static void run_all(int quick) {
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
  /* n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups */
  const struct tk_conv2d convs[] = {
      {2, 1, 28, 28, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1},  /* dcccl conv1 (small): a stem (3x3, pad 1, c_in <= 4), as the next */
      {2, 4, 14, 14, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1},  /* dcccl conv2 (small) */
      {1, 8, 14, 14, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1}, /* dcccl conv2 (mimic) */
      {2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* stride 1, odd sizes */
      {1, 5, 10, 9, 7, 5, 3, 2, 1, 2, 0, 1, 2, 1},   /* rectangular kernel, dilation */
      {2, 6, 8, 8, 4, 3, 3, 1, 2, 0, 1, 1, 1, 2},    /* grouped */
      {2, 6, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},    /* depthwise stride 1 */
      {2, 8, 15, 15, 8, 3, 3, 2, 2, 1, 1, 1, 1, 8},  /* depthwise stride 2 */
      {1, 5, 19, 21, 5, 5, 5, 2, 2, 2, 2, 1, 1, 5},  /* depthwise 5x5 */
      {2, 11, 13, 10, 11, 3, 3, 3, 2, 0, 2, 2, 1, 11}, /* depthwise dilated, stride 3, no row padding */
      {1, 9, 7, 8, 9, 1, 1, 2, 2, 0, 0, 1, 1, 9},    /* depthwise 1x1 stride 2: rows no tap reaches */
      {2, 16, 8, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16}, /* depthwise 3x3, rows of whole vectors */
      {2, 8, 7, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8},    /* depthwise 3x3, rows narrower than a vector */
      {2, 8, 17, 35, 8, 3, 3, 2, 2, 1, 1, 1, 1, 8},  /* depthwise 3x3 stride 2, rows split by vectors and a tail */
      {1, 9, 12, 32, 9, 3, 3, 2, 2, 1, 1, 1, 1, 9},  /* depthwise 3x3 stride 2, even rows of whole vectors */
      {2, 16, 7, 7, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1},  /* pointwise */
      {1, 300, 4, 4, 20, 1, 1, 1, 1, 0, 0, 1, 1, 1}, /* pointwise, K > KC */
      {3, 20, 5, 5, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},  /* pointwise, a small plane: one GEMM over the images */
      {2, 300, 3, 3, 20, 1, 1, 1, 1, 0, 0, 1, 1, 1}, /* the same, K > KC */
      {1, 12, 20, 30, 200, 1, 1, 1, 1, 0, 0, 1, 1, 1}, /* pointwise, a large plane in column blocks */
      {2, 3, 40, 40, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* weight gradient over more than one dot block */
      {1, 3, 6, 6, 2, 6, 6, 1, 1, 0, 0, 1, 1, 1},    /* window = image */
      {2, 3, 31, 37, 9, 3, 3, 2, 2, 1, 1, 1, 1, 1},  /* a stem: odd plane, 16 output columns and 3, 9 channels */
  };
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
    if (quick && i % 2) continue;
    test_conv(convs[i], 0);
    test_conv(convs[i], 1);
  }
  /* n, c, h, w, kh, kw, sh, sw, ph, pw, count_include_pad */
  const struct tk_pool2d pools[] = {
      {2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 1}, {1, 2, 9, 7, 3, 3, 2, 2, 1, 1, 1},
      {1, 2, 9, 7, 3, 3, 2, 2, 1, 1, 0}, {2, 1, 5, 6, 3, 2, 1, 1, 1, 0, 0},
  };
  for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++) test_pool(pools[i]);
  test_losses(32, 10);
  test_losses(7, 1);
  test_losses(64, 37);
  test_norms(6, 8);
  test_norms(5, 67);
  test_embedding_and_sgd(32, 50, 16);
  test_embedding_and_sgd(9, 3, 5);
  test_bad_args();
}

int main(int argc, char** argv) {
  const int quick = argc > 1 && !strcmp(argv[1], "--quick");
  for (int isa = SPL_ISA_PORTABLE; isa <= SPL_ISA_NEON; isa++) {
    if (!spl_isa_available(isa)) continue;
    spl_set_isa(isa);
    const int before = failures;
    run_all(quick);
    printf("isa %s: %d failures\n", spl_isa_name(isa), failures - before);
  }
  printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
