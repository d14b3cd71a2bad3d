/* Max and average pooling (floor mode), forward and backward (one build per ISA; see training-impl.h). */

/* Window (oh, ow): its corner in padded coordinates, its rows [hs, he) and columns [ws, we) inside
 * the input, and the divisor of an average (the whole window clipped to the padded input with
 * count_include_pad, else its part inside the input). */
struct pool_window {
  int64_t hs, he, ws, we;
  float divisor;
};

static struct pool_window pool_window(const struct training_pool2d* s, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * s->stride_h - s->pad_h, w0 = ow * s->stride_w - s->pad_w;
  struct pool_window win = {max64(h0, 0), min64(h0 + s->kh, s->h), max64(w0, 0), min64(w0 + s->kw, s->w), 0.0f};
  if (s->count_include_pad)
    win.divisor = (float)((min64(h0 + s->kh, s->h + s->pad_h) - h0) * (min64(w0 + s->kw, s->w + s->pad_w) - w0));
  else
    win.divisor = (float)((win.he - win.hs) * (win.we - win.ws));
  return win;
}

static int impl_max_pool2d_forward(const struct training_pool2d* s, const float* x, float* y, int64_t* idx) {
  const int64_t oh_n = training_pool2d_out_h(s), ow_n = training_pool2d_out_w(s), hw = s->h * s->w;
  for (int64_t pl = 0; pl < s->n * s->c; pl++)
    for (int64_t oh = 0; oh < oh_n; oh++)
      for (int64_t ow = 0; ow < ow_n; ow++) {
        const struct pool_window win = pool_window(s, oh, ow);
        float best = -INFINITY;
        int64_t at = -1;
        for (int64_t ih = win.hs; ih < win.he; ih++)
          for (int64_t iw = win.ws; iw < win.we; iw++) {
            const float v = x[pl * hw + ih * s->w + iw];
            if (v > best || isnan(v) || at < 0) { /* a NaN wins (the last one), as in PyTorch */
              best = v;
              at = ih * s->w + iw;
            }
          }
        y[(pl * oh_n + oh) * ow_n + ow] = best;
        idx[(pl * oh_n + oh) * ow_n + ow] = at;
      }
  return DCX_OK;
}

static int impl_max_pool2d_backward(const struct training_pool2d* s, const float* gy, const int64_t* idx, float* gx) {
  const int64_t per = training_pool2d_out_h(s) * training_pool2d_out_w(s), hw = s->h * s->w;
  memset(gx, 0, sizeof(float) * (size_t)(s->n * s->c * hw));
  for (int64_t pl = 0; pl < s->n * s->c; pl++)
    for (int64_t o = 0; o < per; o++) {
      const int64_t at = idx[pl * per + o];
      if (at < 0 || at >= hw) return DCX_EINDEX;
      gx[pl * hw + at] += gy[pl * per + o];
    }
  return DCX_OK;
}

/* Average pooling forward (y) or backward (gx += gy / divisor over each window). */
static int avg_pool2d(const struct training_pool2d* s, const float* in, float* out, int backward) {
  const int64_t oh_n = training_pool2d_out_h(s), ow_n = training_pool2d_out_w(s), hw = s->h * s->w;
  if (backward) memset(out, 0, sizeof(float) * (size_t)(s->n * s->c * hw));
  for (int64_t pl = 0; pl < s->n * s->c; pl++)
    for (int64_t oh = 0; oh < oh_n; oh++)
      for (int64_t ow = 0; ow < ow_n; ow++) {
        const struct pool_window win = pool_window(s, oh, ow);
        const int64_t o = (pl * oh_n + oh) * ow_n + ow;
        float acc = 0.0f;
        const float share = backward ? in[o] / win.divisor : 0.0f;
        for (int64_t ih = win.hs; ih < win.he; ih++)
          for (int64_t iw = win.ws; iw < win.we; iw++) {
            if (backward) out[pl * hw + ih * s->w + iw] += share;
            else acc += in[pl * hw + ih * s->w + iw];
          }
        if (!backward) out[o] = acc / win.divisor;
      }
  return DCX_OK;
}

static int impl_avg_pool2d_forward(const struct training_pool2d* s, const float* x, float* y) { return avg_pool2d(s, x, y, 0); }
static int impl_avg_pool2d_backward(const struct training_pool2d* s, const float* gy, float* gx) { return avg_pool2d(s, gy, gx, 1); }

const struct training_pool_isa DCX_ISA_TABLE(training_pool_isa) = {impl_max_pool2d_forward, impl_max_pool2d_backward, impl_avg_pool2d_forward, impl_avg_pool2d_backward};
