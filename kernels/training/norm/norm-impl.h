/* The norms' backward: layer norm, and batch norm with frozen statistics (one build per ISA; see
 * training-impl.h). */

static int impl_layer_norm_backward(const float* gy, const float* x, const float* mean, const float* rstd,
                                    const float* w, int64_t rows, int64_t cols, float* gx, float* gw,
                                    float* gb) {
  float* xhat = dcx_scratch((size_t)cols * 2);
  if (!xhat) return DCX_ENOMEM;
  float* gxh = xhat + cols;
  if (gw) memset(gw, 0, sizeof(float) * (size_t)cols);
  if (gb) memset(gb, 0, sizeof(float) * (size_t)cols);
  for (int64_t r = 0; r < rows; r++) {
    const float* g = gy + r * cols;
    const float* xr = x + r * cols;
    const float m = mean[r], s = rstd[r];
    for (int64_t j = 0; j < cols; j++) xhat[j] = (xr[j] - m) * s;
    if (gw)
      for (int64_t j = 0; j < cols; j++) gw[j] += g[j] * xhat[j];
    if (gb) add_row(gb, g, cols);
    if (!gx) continue;
    for (int64_t j = 0; j < cols; j++) gxh[j] = w ? g[j] * w[j] : g[j];
    const float sum_g = sum_row(gxh, cols), sum_gx = dot_row(gxh, xhat, cols);
    const float k = s / (float)cols;
    float* o = gx + r * cols;
    for (int64_t j = 0; j < cols; j++) o[j] = k * ((float)cols * gxh[j] - sum_g - xhat[j] * sum_gx);
  }
  return DCX_OK;
}

static int impl_batch_norm_frozen_backward(const float* gy, const float* x, const float* w, const float* mean,
                                           const float* var, float eps, int64_t n, int64_t c, int64_t hw,
                                           float* gx, float* gw, float* gb) {
  for (int64_t ch = 0; ch < c; ch++) {
    const float rs = 1.0f / sqrtf(var[ch] + eps), scale = rs * (w ? w[ch] : 1.0f), m = mean[ch];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int64_t b = 0; b < n; b++) {
      const float* g = gy + (b * c + ch) * hw;
      const float* xr = x + (b * c + ch) * hw;
      if (gb) sum_g += sum_row(g, hw);
      if (gw)
        for (int64_t i = 0; i < hw; i++) sum_gx += g[i] * (xr[i] - m);
      if (gx) {
        float* o = gx + (b * c + ch) * hw;
        const v8f vs = splat8(scale);
        int64_t i = 0;
        for (; i + 8 <= hw; i += 8) st8(o + i, ld8(g + i) * vs);
        for (; i < hw; i++) o[i] = g[i] * scale;
      }
    }
    if (gb) gb[ch] = sum_g;
    if (gw) gw[ch] = sum_gx * rs;
  }
  return DCX_OK;
}

const struct training_norm_isa DCX_ISA_TABLE(training_norm_isa) = {impl_layer_norm_backward, impl_batch_norm_frozen_backward};
