/* Convolution + batch norm + clamp (one build per ISA; see training-impl.h). Frozen statistics: the norm
 * folded into a per-channel scale and shift of the output stage, and, backward, into the gradient the
 * convolution backward fetches. Batch statistics (below): the convolution, the statistics and the norm
 * as passes over the output; backward, the norm's sums in one pass, the rest of its gradient folded into
 * the fetch.
 *
 * The norm's weight gradient needs xhat = (conv_out - mean) * rsqrt(var + eps) where the clamp passes the
 * gradient, and there y = weight * xhat + bias exactly but for rounding: xhat = (y - bias) / weight, with
 * an error of about eps_float * (|bias / weight| + |mean| * rsqrt(var + eps) + |xhat|). Where every channel
 * bounds the first two terms by 32 (a few 1e-6 at most, against the 1e-7 of conv_out - mean), the backward
 * takes xhat from y, and a forward whose conv_out only this backward reads (lazy_conv_out) does not write
 * it: one output tensor less written, and read, per layer. Both sides decide with this one test on the same
 * parameters. */
#define BN_RECOVER_BOUND 32.0f

static int bn_recovers_from_y(const struct training_bn* bn, int64_t c) {
  if (!bn->weight) return 0;
  for (int64_t i = 0; i < c; i++) {
    const float w = fabsf(bn->weight[i]), b = bn->bias ? fabsf(bn->bias[i]) : 0.0f;
    const float m = fabsf(bn->mean[i]) / sqrtf(bn->var[i] + bn->eps);
    if (!(w > 0.0f && b <= BN_RECOVER_BOUND * w && m <= BN_RECOVER_BOUND)) return 0; /* NaN fails too */
  }
  return 1;
}

static int impl_conv2d_bn_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                                  const struct training_bn* bn, float lo, float hi, float* conv_out, float* y,
                                  int lazy_conv_out) {
  float* ss = (float*)malloc(sizeof(float) * 2 * (size_t)s->c_out);
  if (!ss) return DCX_ENOMEM;
  for (int64_t c = 0; c < s->c_out; c++) { /* y = (v - mean) * rstd * w + b = v * scale + shift */
    const float scale = (bn->weight ? bn->weight[c] : 1.0f) / sqrtf(bn->var[c] + bn->eps);
    ss[c] = scale;
    ss[s->c_out + c] = (bn->bias ? bn->bias[c] : 0.0f) - bn->mean[c] * scale;
  }
  if (lazy_conv_out && bn_recovers_from_y(bn, s->c_out)) conv_out = NULL;
  const struct gemm_out o = {bias, NULL, ss, ss + s->c_out, lo, hi, 1, 0};
  const int rc = conv_forward(s, x, w, &o, conv_out, y);
  free(ss);
  return rc;
}

static int impl_conv2d_bn_backward(const struct training_conv2d* s, const float* gy, const float* y, const float* conv_out,
                                   const float* x, const float* w, const struct training_bn* bn, float lo, float hi, float* gx,
                                   float* gw, float* gb, float* g_bn_w, float* g_bn_b) {
  const int64_t c = s->c_out;
  float* scale = (float*)malloc(sizeof(float) * 4 * (size_t)c);
  if (!scale) return DCX_ENOMEM;
  float* sum_g = scale + c;
  float* sum_gx = sum_g + c;
  float* centre = sum_gx + c;
  const int from_y = bn_recovers_from_y(bn, c);
  for (int64_t i = 0; i < c; i++) {
    scale[i] = (bn->weight ? bn->weight[i] : 1.0f) / sqrtf(bn->var[i] + bn->eps);
    sum_g[i] = sum_gx[i] = 0.0f;
    centre[i] = from_y ? (bn->bias ? bn->bias[i] : 0.0f) : bn->mean[i];
  }
  const int want = g_bn_w || g_bn_b;
  const struct grad_src src = {gy, y, lo, hi, scale, want ? sum_g : NULL, sum_gx, from_y ? y : conv_out, centre,
                               NULL, NULL};
  const int rc = conv_backward(s, &src, x, w, gx, gw, gb);
  for (int64_t i = 0; i < c; i++) {
    if (g_bn_w) g_bn_w[i] = from_y ? sum_gx[i] / bn->weight[i] : sum_gx[i] / sqrtf(bn->var[i] + bn->eps);
    if (g_bn_b) g_bn_b[i] = sum_g[i];
  }
  free(scale);
  return rc;
}

/* ------------------------------------------------------------------ batch statistics */

/* The float sums of d = v[i] - mu and of d^2 over a row, into *sum_d and *sum_d2 */
static void deviations(const float* v, int64_t n, float mu, float* sum_d, float* sum_d2) {
  const v8f m = splat8(mu);
  v8f acc = splat8(0.0f), acc2 = splat8(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f d = ld8(v + i) - m;
    acc += d;
    acc2 += d * d;
  }
  float s1 = hsum8(acc), s2 = hsum8(acc2);
  for (; i < n; i++) {
    const float d = v[i] - mu;
    s1 += d;
    s2 += d * d;
  }
  *sum_d = s1;
  *sum_d2 = s2;
}

/* y[i] = clamp((v[i] - mean) * scale + shift, lo, hi) */
static void norm_clamp_row(const float* v, int64_t n, float mean, float scale, float shift, float lo, float hi, float* y) {
  const v8f m = splat8(mean), sc = splat8(scale), sh = splat8(shift), vlo = splat8(lo), vhi = splat8(hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) st8(y + i, clamp8((ld8(v + i) - m) * sc + sh, vlo, vhi));
  for (; i < n; i++) {
    const float t = (v[i] - mean) * scale + shift;
    y[i] = t > lo ? (t < hi ? t : hi) : lo; /* NaN goes to lo, as clamp8 */
  }
}

static float batch_rstd(float var, float eps) { return 1.0f / sqrtf(var + eps); }

static int impl_conv2d_bn_batch_forward(const struct training_conv2d* s, const float* x, const float* w,
                                        const float* bias, const float* bn_w, const float* bn_b, float eps, float lo,
                                        float hi, float* conv_out, float* y, float* mean, float* var) {
  float* raw = conv_out ? conv_out : y;
  const struct gemm_out o = relu_out_stage(bias, NULL, 0);
  const int rc = conv_forward(s, x, w, &o, NULL, raw);
  if (rc) return rc;
  const int64_t co = s->c_out, p = training_conv2d_out_h(s) * training_conv2d_out_w(s);
  for (int64_t c = 0; c < co; c++) {
    double count = 0.0, mu = 0.0, m2 = 0.0; /* the planes so far: their count, mean, sum of squared deviations */
    for (int64_t b = 0; b < s->n; b++) { /* the corrected two-pass algorithm in the plane, the pairwise update across */
      const float* plane = raw + (b * co + c) * p;
      const float rough = sum_row(plane, p) / (float)p;
      float sum_d, sum_d2;
      deviations(plane, p, rough, &sum_d, &sum_d2);
      const double plane_mu = (double)rough + (double)sum_d / (double)p; /* rough's rounding taken back */
      const double plane_m2 = (double)sum_d2 - (double)sum_d * (double)sum_d / (double)p;
      const double delta = plane_mu - mu, total = count + (double)p;
      m2 += plane_m2 + delta * delta * count * (double)p / total;
      mu += delta * (double)p / total;
      count = total;
    }
    mean[c] = (float)mu;
    var[c] = (float)(m2 / count);
  }
  for (int64_t c = 0; c < co; c++) {
    const float scale = (bn_w ? bn_w[c] : 1.0f) * batch_rstd(var[c], eps), shift = bn_b ? bn_b[c] : 0.0f;
    for (int64_t b = 0; b < s->n; b++) {
      const int64_t at = (b * co + c) * p;
      norm_clamp_row(raw + at, p, mean[c], scale, shift, lo, hi, y + at);
    }
  }
  return DCX_OK;
}

static int impl_conv2d_bn_batch_backward(const struct training_conv2d* s, const float* gy, const float* y,
                                         const float* conv_out, const float* x, const float* w,
                                         const struct training_bn* bn, float lo, float hi, float* gx, float* gw,
                                         float* gb, float* g_bn_w, float* g_bn_b) {
  const int64_t co = s->c_out, p = training_conv2d_out_h(s) * training_conv2d_out_w(s);
  const double m = (double)(s->n * p);
  const float* mask = lo == -INFINITY && hi == INFINITY ? NULL : y; /* no clamp: no mask, as the stock graph */
  float* scale = (float*)malloc(sizeof(float) * 3 * (size_t)co);
  if (!scale) return DCX_ENOMEM;
  float* slope = scale + co;
  float* offset = slope + co;
  for (int64_t c = 0; c < co; c++) {
    double sum_g = 0.0, sum_gc = 0.0; /* sum(g), sum(g * (conv_out - mean)): float in a plane, double across */
    for (int64_t b = 0; b < s->n; b++) {
      float one = 0.0f, centred = 0.0f;
      const int64_t at = (b * co + c) * p;
      const struct grad_src src = {gy, mask, lo, hi, NULL, &one, &centred, conv_out, bn->mean + c, NULL, NULL};
      float tmp[256];
      for (int64_t i = 0; i < p; i += 256) /* the plane's g is not kept: fetched in blocks into tmp */
        grad_row(&src, at + i, p - i < 256 ? p - i : 256, 0, tmp);
      sum_g += one;
      sum_gc += centred;
    }
    const float rstd = batch_rstd(bn->var[c], bn->eps), k = (bn->weight ? bn->weight[c] : 1.0f) * rstd;
    const double d_bias = sum_g, d_weight = sum_gc * rstd; /* sum(g), sum(g * xhat) */
    if (g_bn_b) g_bn_b[c] = (float)d_bias;
    if (g_bn_w) g_bn_w[c] = (float)d_weight;
    /* k * (g - d_bias / M - (conv_out - mean) * rstd * d_weight / M) */
    scale[c] = k;
    slope[c] = (float)(-(double)k * rstd * d_weight / m);
    offset[c] = (float)(-(double)k * d_bias / m);
  }
  const struct grad_src src = {gy, mask, lo, hi, scale, NULL, NULL, conv_out, bn->mean, slope, offset};
  const int rc = conv_backward(s, &src, x, w, gx, gw, gb);
  free(scale);
  return rc;
}

const struct training_conv_bn_isa DCX_ISA_TABLE(training_conv_bn_isa) = {
    impl_conv2d_bn_forward, impl_conv2d_bn_backward, impl_conv2d_bn_batch_forward, impl_conv2d_bn_batch_backward};
