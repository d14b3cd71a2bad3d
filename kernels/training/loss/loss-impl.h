/* The losses with their gradient, in one pass (one build per ISA; see training-impl.h). */

static int impl_cross_entropy(const float* z, const int64_t* t, int64_t n, int64_t c, int64_t ignore,
                              float* loss, float* grad) {
  int64_t count = 0;
  for (int64_t r = 0; r < n; r++) {
    if (t[r] == ignore) continue;
    if (t[r] < 0 || t[r] >= c) return DCX_EINDEX;
    count++;
  }
  const float scale = count ? 1.0f / (float)count : 0.0f; /* PyTorch: 0/0 = nan when all rows ignored */
  double total = 0.0;
  for (int64_t r = 0; r < n; r++) {
    const float* zr = z + r * c;
    float* gr = grad + r * c;
    if (t[r] == ignore) {
      memset(gr, 0, sizeof(float) * (size_t)c);
      continue;
    }
    float mx = zr[0];
    for (int64_t j = 1; j < c; j++) mx = zr[j] > mx ? zr[j] : mx;
    float s = 0.0f;
    for (int64_t j = 0; j < c; j++) {
      gr[j] = expf(zr[j] - mx);
      s += gr[j];
    }
    const float lse = mx + logf(s), inv = scale / s;
    total += lse - zr[t[r]];
    for (int64_t j = 0; j < c; j++) gr[j] *= inv;
    gr[t[r]] -= scale;
  }
  *loss = count ? (float)(total / (double)count) : NAN;
  return DCX_OK;
}

static int impl_bce_with_logits(const float* z, const float* t, int64_t n, float* loss, float* grad) {
  const float scale = 1.0f / (float)n;
  double total = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const float zi = z[i], e = expf(-fabsf(zi));
    total += (zi > 0.0f ? zi : 0.0f) - zi * t[i] + log1pf(e);
    const float sig = zi >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    grad[i] = (sig - t[i]) * scale;
  }
  *loss = (float)(total / (double)n);
  return DCX_OK;
}

const struct training_loss_isa DCX_ISA_TABLE(training_loss_isa) = {impl_cross_entropy, impl_bce_with_logits};
