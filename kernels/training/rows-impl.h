/* The vector helpers and row reductions every training kernel family shares (one build per ISA,
 * included by training-impl.h before the families). */

/* r[i][j] <- r[j][i]: an 8 x 8 block of floats transposed in registers */
DCX_INLINE void transpose8(v8f r[8]) {
  v8f t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; j++) {
      u[i + j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + j + 2] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  /* u[0..3]: pixels 0/4, 2/6, 1/5, 3/7 of channels 0-3; u[4..7] the same of channels 4-7 */
  static const int order[4] = {0, 2, 1, 3};
  for (int i = 0; i < 4; i++) {
    r[order[i]] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[order[i] + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
/* g * (lo < x < hi): a comparison mask ANDed into the bits of g. */
static void threshold_mask(const float* g, const float* x, int64_t n, float lo, float hi, float* out) {
  const v8f vlo = splat8(lo), vhi = splat8(hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f xv = ld8(x + i);
    const v8i keep = (xv > vlo) & (xv < vhi);
    st8(out + i, (v8f)((v8i)ld8(g + i) & keep));
  }
  for (; i < n; i++) out[i] = (x[i] > lo && x[i] < hi) ? g[i] : 0.0f;
}
static float sum_row(const float* a, int64_t n) {
  v8f acc = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += ld8(a + i);
  float s = hsum8(acc);
  for (; i < n; i++) s += a[i];
  return s;
}

static float dot_row(const float* a, const float* b, int64_t n) {
  v8f acc = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += ld8(a + i) * ld8(b + i);
  float s = hsum8(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* acc[j] += a[j] for j < n */
static void add_row(float* acc, const float* a, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) st8(acc + i, ld8(acc + i) + ld8(a + i));
  for (; i < n; i++) acc[i] += a[i];
}

/* column sums of g [rows, cols] into out [cols] (overwritten) */
static void column_sums(const float* g, int64_t rows, int64_t cols, float* out) {
  memset(out, 0, sizeof(float) * (size_t)cols);
  for (int64_t r = 0; r < rows; r++) add_row(out, g + r * cols, cols);
}
