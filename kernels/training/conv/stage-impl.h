/* What every convolution kind shares: the output stage a forward ends with, and the gradient a
 * backward fetches (one build per ISA; see conv-impl.h). */

/* y[i] = the output stage o of v[i] + bias (channel ch); raw[i] = v[i] + bias too when raw. */
static void out_row(const float* v, int64_t n, int64_t ch, const struct gemm_out* o, float* raw, float* y) {
  const float bias = o->bias_m ? o->bias_m[ch] : 0.0f;
  const float sc = o->scale_m ? o->scale_m[ch] : 1.0f, sh = o->shift_m ? o->shift_m[ch] : 0.0f;
  const v8f vb = splat8(bias);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f t = ld8(v + i) + vb;
    if (raw) st8(raw + i, t);
    st8(y + i, finish8(t, sc, sh, o));
  }
  if (i < n) {
    float tv[8] = {0}, tr[8];
    for (int64_t j = i; j < n; j++) tv[j - i] = v[j];
    const v8f t = ld8(tv) + vb;
    st8(tr, t);
    st8(tv, finish8(t, sc, sh, o));
    for (int64_t j = i; j < n; j++) {
      if (raw) raw[j] = tr[j - i];
      y[j] = tv[j - i];
    }
  }
}

/* The output gradient a convolution backward reads, g = grad_y * (lo < y < hi) (when y: the mask
 * of a clamp, ReLU: lo 0, hi inf) * scale[c] (when scale: a frozen batch norm's). With sum_g,
 * each row fetched also adds sum(g') and sum(g' * (norm_in - centre[c])) (g' before the scale)
 * into sum_g[c] and sum_gx[c]: the batch norm's parameter gradients (norm_in: conv_out centred
 * on the mean, or y centred on the norm's bias), once every row is fetched exactly once. With
 * slope (and offset), g + (norm_in - centre[c]) * slope[c] + offset[c]: a batch norm in training
 * mode, whose gradient also flows through the batch's mean and variance. */
struct grad_src {
  const float* gy;
  const float* y;
  float lo, hi;
  const float* scale;
  float* sum_g;
  float* sum_gx;
  const float* norm_in;
  const float* centre;
  const float* slope;
  const float* offset;
};

/* dst[i] = g at flat index at + i, channel ch */
static void grad_row(const struct grad_src* src, int64_t at, int64_t n, int64_t ch, float* dst) {
  const float* gy = src->gy + at;
  const float* y = src->y ? src->y + at : NULL;
  const float* cx = src->sum_g || src->slope ? src->norm_in + at : NULL;
  const v8f vlo = splat8(src->lo), vhi = splat8(src->hi), sc = splat8(src->scale ? src->scale[ch] : 1.0f);
  const v8f mean = splat8(cx ? src->centre[ch] : 0.0f);
  const v8f slope = splat8(src->slope ? src->slope[ch] : 0.0f), offset = splat8(src->slope ? src->offset[ch] : 0.0f);
  v8f acc_g = splat8(0.0f), acc_gx = splat8(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f g = ld8(gy + i);
    if (y) {
      const v8f yv = ld8(y + i);
      g = (v8f)((v8i)g & ((yv > vlo) & (yv < vhi)));
    }
    if (src->sum_g) {
      acc_g += g;
      acc_gx += g * (ld8(cx + i) - mean);
    }
    if (src->scale) g *= sc;
    if (src->slope) g += (ld8(cx + i) - mean) * slope + offset;
    st8(dst + i, g);
  }
  float sg = hsum8(acc_g), sgx = hsum8(acc_gx);
  for (; i < n; i++) {
    float g = gy[i];
    if (y && !(y[i] > src->lo && y[i] < src->hi)) g = 0.0f;
    if (src->sum_g) {
      sg += g;
      sgx += g * (cx[i] - mean[0]);
    }
    if (src->scale) g *= sc[0];
    if (src->slope) g += (cx[i] - mean[0]) * slope[0] + offset[0];
    dst[i] = g;
  }
  if (src->sum_g) {
    src->sum_g[ch] += sg;
    src->sum_gx[ch] += sgx;
  }
}
