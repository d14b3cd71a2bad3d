/* Convolution + frozen batch norm + clamp (one build per ISA; see training-impl.h): the norm folded into a
 * per-channel scale and shift of the output stage, and, backward, into the gradient the convolution
 * backward fetches.
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
  const struct grad_src src = {gy, y, lo, hi, scale, want ? sum_g : NULL, sum_gx, from_y ? y : conv_out, centre};
  const int rc = conv_backward(s, &src, x, w, gx, gw, gb);
  for (int64_t i = 0; i < c; i++) {
    if (g_bn_w) g_bn_w[i] = from_y ? sum_gx[i] / bn->weight[i] : sum_gx[i] / sqrtf(bn->var[i] + bn->eps);
    if (g_bn_b) g_bn_b[i] = sum_g[i];
  }
  free(scale);
  return rc;
}

const struct training_conv_bn_isa DCX_ISA_TABLE(training_conv_bn_isa) = {impl_conv2d_bn_forward, impl_conv2d_bn_backward};
