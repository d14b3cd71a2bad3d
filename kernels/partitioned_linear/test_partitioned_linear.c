/* Native test of the partitioned linear: every kernel against a plain double-precision reference, for
 * many shapes and for every ISA this build and CPU have (base/native_test.h). --quick skips the shapes
 * above ~4M multiply-adds (for emulators). */
#include "base/native_test.h"
#include "partitioned_linear/partitioned_linear.h"

/* y[n, o(p, j)] with o = j*P + p (shuffle) or p*bo + j. */
static long out_index(long p, long j, long P, long bo, int shuffle) {
  return shuffle ? j * P + p : p * bo + j;
}

static void ref_forward(const float* x, const float* w, const float* b, long n, long di, long dout,
                        long P, int shuffle, double* y) {
  const long bi = di / P, bo = dout / P;
  for (long r = 0; r < n; r++)
    for (long p = 0; p < P; p++)
      for (long j = 0; j < bo; j++) {
        double s = b ? b[p * bo + j] : 0.0;
        for (long k = 0; k < bi; k++) s += (double)w[(p * bo + j) * bi + k] * x[r * di + p * bi + k];
        y[r * dout + out_index(p, j, P, bo, shuffle)] = s;
      }
}

static void ref_backward(const float* gy, const float* x, const float* w, long n, long di, long dout,
                         long P, int shuffle, double* gx, double* gw, double* gb) {
  const long bi = di / P, bo = dout / P;
  memset(gx, 0, sizeof(double) * n * di);
  memset(gw, 0, sizeof(double) * bi * dout);
  memset(gb, 0, sizeof(double) * dout);
  for (long r = 0; r < n; r++)
    for (long p = 0; p < P; p++)
      for (long j = 0; j < bo; j++) {
        const double g = gy[r * dout + out_index(p, j, P, bo, shuffle)];
        gb[p * bo + j] += g;
        for (long k = 0; k < bi; k++) {
          gx[r * di + p * bi + k] += g * w[(p * bo + j) * bi + k];
          gw[(p * bo + j) * bi + k] += g * x[r * di + p * bi + k];
        }
      }
}

static void compare(const char* what, const float* got, const double* want, long count, long K,
                    long n, long di, long dout, long P, int shuffle) {
  checks++;
  const double atol = 1e-5 + 2e-6 * (double)K, rtol = 1e-4;
  for (long i = 0; i < count; i++) {
    const double err = fabs((double)got[i] - want[i]);
    if (!(err <= atol + rtol * fabs(want[i]))) {
      failures++;
      printf("FAIL %-16s isa=%s n=%ld d_in=%ld d_out=%ld P=%ld shuffle=%d at %ld: got %.7g want %.7g\n",
             what, dcx_isa_name(dcx_active_isa()), n, di, dout, P, shuffle, i, got[i], want[i]);
      return;
    }
  }
}

static void check_shape(long n, long di, long dout, long P) {
  float* x = rand_buf(n * di);
  float* w = rand_buf(di / P * dout);
  float* b = rand_buf(dout);
  float* gy = rand_buf(n * dout);
  float* y = (float*)malloc(sizeof(float) * (n * dout + 1));
  float* gx = (float*)malloc(sizeof(float) * (n * di + 1));
  float* gw = (float*)malloc(sizeof(float) * (di / P * dout));
  float* gb = (float*)malloc(sizeof(float) * dout);
  double* ry = (double*)malloc(sizeof(double) * (n * dout + 1));
  double* rgx = (double*)malloc(sizeof(double) * (n * di + 1));
  double* rgw = (double*)malloc(sizeof(double) * (di / P * dout));
  double* rgb = (double*)malloc(sizeof(double) * dout);
  const long bi = di / P, bo = dout / P;
  for (int shuffle = 0; shuffle <= 1; shuffle++) {
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
      const float* bb = with_bias ? b : NULL;
      ref_forward(x, w, bb, n, di, dout, P, shuffle, ry);
      for (long i = 0; i < n * dout; i++) y[i] = NAN;
      int rc = partitioned_linear_forward(x, w, bb, n, di, dout, P, shuffle, y);
      if (rc) { printf("FAIL forward rc=%d (%s)\n", rc, dcx_strerror(rc)); failures++; }
      compare(with_bias ? "forward" : "forward/nobias", y, ry, n * dout, bi, n, di, dout, P, shuffle);

      float* packed = (float*)malloc(sizeof(float) * partitioned_linear_packed_size(di, dout, P, shuffle));
      partitioned_linear_pack_weight(w, di, dout, P, shuffle, packed);
      for (long i = 0; i < n * dout; i++) y[i] = NAN;
      rc = partitioned_linear_forward_packed(x, packed, bb, n, di, dout, P, shuffle, y);
      if (rc) { printf("FAIL forward_packed rc=%d\n", rc); failures++; }
      compare("forward_packed", y, ry, n * dout, bi, n, di, dout, P, shuffle);
      free(packed);
    }
    ref_backward(gy, x, w, n, di, dout, P, shuffle, rgx, rgw, rgb);
    for (long i = 0; i < n * di; i++) gx[i] = NAN;
    for (long i = 0; i < bi * dout; i++) gw[i] = NAN;
    for (long i = 0; i < dout; i++) gb[i] = NAN;
    if (partitioned_linear_backward_input(gy, w, n, di, dout, P, shuffle, gx) ||
        partitioned_linear_backward_weight(gy, x, n, di, dout, P, shuffle, gw) ||
        partitioned_linear_backward_bias(gy, n, dout, P, shuffle, gb)) {
      printf("FAIL backward rc\n");
      failures++;
    }
    compare("backward_input", gx, rgx, n * di, bo, n, di, dout, P, shuffle);
    compare("backward_weight", gw, rgw, bi * dout, n, n, di, dout, P, shuffle);
    compare("backward_bias", gb, rgb, dout, n, n, di, dout, P, shuffle);
  }
  free(x); free(w); free(b); free(gy); free(y); free(gx); free(gw); free(gb);
  free(ry); free(rgx); free(rgw); free(rgb);
}

static void check_errors(void) {
  float v[64] = {0};
  checks++;
  if (partitioned_linear_forward(v, v, NULL, 1, 10, 8, 4, 1, v) != DCX_EINVAL_SHAPE) { failures++; puts("FAIL d_in % P"); }
  if (partitioned_linear_forward(v, v, NULL, 1, 8, 10, 4, 1, v) != DCX_EINVAL_SHAPE) { failures++; puts("FAIL d_out % P"); }
  if (partitioned_linear_forward(v, v, NULL, 1, 8, 8, 0, 1, v) != DCX_EINVAL_SHAPE) { failures++; puts("FAIL P = 0"); }
  if (partitioned_linear_forward(NULL, v, NULL, 1, 8, 8, 2, 1, v) != DCX_EINVAL_PTR) { failures++; puts("FAIL NULL x"); }
  if (partitioned_linear_backward_weight(v, v, 1, 8, 8, 3, 1, v) != DCX_EINVAL_SHAPE) { failures++; puts("FAIL bw shape"); }
}

static void run(int quick) {
  static const long ns[] = {1, 2, 3, 7, 64};
  static const long ds[] = {8, 96, 256, 1024};
  static const long ps[] = {1, 2, 4, 16};
  /* D_out != D, odd block sizes, P that neither divides nor is a multiple of 16 (3, 6, 12, 24),
   * P > 16 (32, 48: lanes start mid-group) */
  static const long odd[][3] = {
      {12, 20, 4}, {24, 48, 3}, {36, 60, 6}, {96, 64, 32}, {40, 24, 8}, {5, 7, 1}, {48, 96, 12},
      {96, 144, 48}, {256, 96, 16}, {96, 256, 4}, {1024, 256, 16}, {30, 18, 2}, {72, 48, 24},
      {34, 34, 2}, {17, 33, 1}, {768, 300, 3}, {512, 260, 1}};
  /* large n: several x-panel chunks (transposed mode), row chunks and whole-weight packing */
  static const long large[][4] = {{300, 256, 256, 1}, {300, 768, 300, 3}, {300, 1024, 1024, 4},
                                  {300, 512, 512, 16}, {200, 96, 64, 4}, {290, 1024, 512, 1}};
  for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
    for (size_t b = 0; b < sizeof ds / sizeof *ds; b++)
      for (size_t c = 0; c < sizeof ps / sizeof *ps; c++) {
        const long n = ns[a], d = ds[b], P = ps[c];
        if (d % P) continue;
        if (quick && n * d * d / P > 4L * 1000 * 1000) continue;
        check_shape(n, d, d, P);
      }
  for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
    for (size_t s = 0; s < sizeof odd / sizeof *odd; s++) {
      if (quick && ns[a] * odd[s][0] * odd[s][1] / odd[s][2] > 4L * 1000 * 1000) continue;
      check_shape(ns[a], odd[s][0], odd[s][1], odd[s][2]);
    }
  for (size_t s = 0; !quick && s < sizeof large / sizeof *large; s++)
    check_shape(large[s][0], large[s][1], large[s][2], large[s][3]);
  check_errors();
}

int main(int argc, char** argv) { return native_test_main(argc, argv, run); }
