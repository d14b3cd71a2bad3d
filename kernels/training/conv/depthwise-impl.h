/* Depthwise convolutions of any shape, eight channels per vector (one build per ISA; see conv-impl.h).
 *
 * A depthwise convolution (but the MobileNet 3 x 3 of depthwise3x3-impl.h) runs on blocks of eight
 * channels held channels-last: one vector is one pixel of the eight channels, so every tap of every output
 * pixel is one full-width FMA, for any plane size and stride, and the block's weights are one vector per
 * tap (lanes past c_in are zero and never stored). Per image and block: the input goes into a zero-bordered
 * [hp][wp][8] buffer (8 x 8 transposes), the taps run, and the result comes back to NCHW through the output
 * stage; backward, the gradient is fetched plane by plane (grad_row), transposed, and one pass over the
 * output pixels adds into the weight-gradient vectors and scatters into the padded input gradient. */

/* c8[q*8 + l] = src[l][q] for q < n (src[l] NULL: zero) */
static void to_c8(const float* const src[8], int64_t n, float* c8) {
  static const float zeros[8] = {0};
  v8f r[8];
  int64_t q = 0;
  for (; q + 8 <= n; q += 8) {
    for (int l = 0; l < 8; l++) r[l] = src[l] ? ld8(src[l] + q) : splat8(0.0f);
    transpose8(r);
    for (int l = 0; l < 8; l++) st8(c8 + (q + l) * 8, r[l]);
  }
  if (q < n) {
    float tmp[8][8];
    for (int l = 0; l < 8; l++) {
      for (int i = 0; i < 8; i++) tmp[l][i] = src[l] && q + i < n ? src[l][q + i] : zeros[i];
      r[l] = ld8(tmp[l]);
    }
    transpose8(r);
    for (int64_t i = 0; q + i < n; i++) st8(c8 + (q + i) * 8, r[i]);
  }
}

/* dst[l][q] = c8[q*8 + l] for q < n and dst[l] not NULL */
static void from_c8(const float* c8, int64_t n, float* const dst[8]) {
  v8f r[8];
  int64_t q = 0;
  for (; q + 8 <= n; q += 8) {
    for (int l = 0; l < 8; l++) r[l] = ld8(c8 + (q + l) * 8);
    transpose8(r);
    for (int l = 0; l < 8; l++)
      if (dst[l]) st8(dst[l] + q, r[l]);
  }
  if (q < n) {
    for (int l = 0; l < 8; l++) r[l] = q + l < n ? ld8(c8 + (q + l) * 8) : splat8(0.0f);
    transpose8(r);
    float tmp[8];
    for (int l = 0; l < 8; l++)
      if (dst[l]) {
        st8(tmp, r[l]);
        for (int64_t i = 0; q + i < n; i++) dst[l][q + i] = tmp[i];
      }
  }
}

struct dw_geom {
  int64_t oh, ow, p, hp, wp, taps;
};

static struct dw_geom dw_geom(const struct training_conv2d* s) {
  struct dw_geom g;
  g.oh = training_conv2d_out_h(s);
  g.ow = training_conv2d_out_w(s);
  g.p = g.oh * g.ow;
  g.hp = max64(s->h + s->pad_h, (g.oh - 1) * s->stride_h + (s->kh - 1) * s->dil_h + 1);
  g.wp = max64(s->w + s->pad_w, (g.ow - 1) * s->stride_w + (s->kw - 1) * s->dil_w + 1);
  g.taps = s->kh * s->kw;
  return g;
}

/* The planes of channels c0 .. c0+7 of image b of t (NULL past c_in), each plane_len floats. */
static void block_planes(const float* t, int64_t b, int64_t c, int64_t c0, int64_t plane_len, const float* out[8]) {
  for (int l = 0; l < 8; l++) out[l] = c0 + l < c ? t + (b * c + c0 + l) * plane_len : NULL;
}

/* xp = the zero-bordered [hp][wp][8] image of the 8 planes (transposed whole into tmp [h*w][8]) */
static void pad_c8(const struct training_conv2d* s, const struct dw_geom* g, const float* const planes[8], float* tmp,
                   float* xp) {
  to_c8(planes, s->h * s->w, tmp);
  memset(xp, 0, sizeof(float) * 8 * (size_t)(g->hp * g->wp));
  for (int64_t ih = 0; ih < s->h; ih++)
    memcpy(xp + ((ih + s->pad_h) * g->wp + s->pad_w) * 8, tmp + ih * s->w * 8, sizeof(float) * 8 * (size_t)s->w);
}

/* the offsets (in floats) of the taps in the padded buffer, and the weights of the block by tap */
static void dw_block_taps(const struct training_conv2d* s, const struct dw_geom* g, const float* w, int64_t c0,
                          int64_t* off, float* wv) {
  for (int64_t i = 0; i < s->kh; i++)
    for (int64_t j = 0; j < s->kw; j++) {
      const int64_t t = i * s->kw + j;
      off[t] = (i * s->dil_h * g->wp + j * s->dil_w) * 8;
      for (int l = 0; l < 8; l++) wv[t * 8 + l] = c0 + l < s->c_in ? w[(c0 + l) * g->taps + t] : 0.0f;
    }
}

/* The scratch of a depthwise call, carved: padded input (and, backward, input gradient) [hp][wp][8],
 * one image [h*w][8], output pixels [p][8], 8 output planes, the block's weights and weight-gradient
 * sums by tap, the tap offsets. */
struct dw_bufs {
  float *xp, *gxp, *xc, *pix, *planes, *wv, *acc;
  int64_t* off;
};

static int dw_bufs(const struct training_conv2d* s, const struct dw_geom* g, int backward, struct dw_bufs* b) {
  const size_t pad = 8 * (size_t)(g->hp * g->wp), out = 8 * (size_t)g->p, img = 8 * (size_t)(s->h * s->w);
  const size_t taps = (size_t)g->taps;
  float* ws = dcx_scratch((backward ? 2 : 1) * pad + img + 2 * out + 18 * taps);
  if (!ws) return DCX_ENOMEM;
  b->xp = ws;
  b->gxp = backward ? ws + pad : NULL;
  b->xc = ws + (backward ? 2 : 1) * pad;
  b->pix = b->xc + img;
  b->planes = b->pix + out;
  b->wv = b->planes + out;
  b->acc = b->wv + 8 * taps;
  b->off = (int64_t*)(void*)(b->acc + 8 * taps);
  return DCX_OK;
}

static int depthwise_forward(const struct training_conv2d* s, const float* x, const float* w, const struct gemm_out* o,
                             float* raw, float* y) {
  const struct dw_geom g = dw_geom(s);
  struct dw_bufs bf;
  if (dw_bufs(s, &g, 0, &bf)) return DCX_ENOMEM;
  float *xp = bf.xp, *xc = bf.xc, *yc = bf.pix, *planes = bf.planes, *wv = bf.wv;
  int64_t* off = bf.off;
  const int64_t step = s->stride_w * 8, row_step = s->stride_h * g.wp * 8;
  for (int64_t c0 = 0; c0 < s->c_in; c0 += 8) {
    dw_block_taps(s, &g, w, c0, off, wv);
    for (int64_t b = 0; b < s->n; b++) {
      const float* src[8];
      block_planes(x, b, s->c_in, c0, s->h * s->w, src);
      pad_c8(s, &g, src, xc, xp);
      for (int64_t oh = 0; oh < g.oh; oh++) {
        const float* xr = xp + oh * row_step;
        float* yr = yc + oh * g.ow * 8;
        int64_t ow = 0;
        for (; ow + 4 <= g.ow; ow += 4) {
          v8f a0 = splat8(0.0f), a1 = a0, a2 = a0, a3 = a0;
          const float* xq = xr + ow * step;
          for (int64_t t = 0; t < g.taps; t++) {
            const v8f wt = ld8(wv + t * 8);
            const float* xt = xq + off[t];
            a0 += wt * ld8(xt);
            a1 += wt * ld8(xt + step);
            a2 += wt * ld8(xt + 2 * step);
            a3 += wt * ld8(xt + 3 * step);
          }
          st8(yr + ow * 8, a0);
          st8(yr + ow * 8 + 8, a1);
          st8(yr + ow * 8 + 16, a2);
          st8(yr + ow * 8 + 24, a3);
        }
        for (; ow < g.ow; ow++) {
          v8f a = splat8(0.0f);
          for (int64_t t = 0; t < g.taps; t++) a += ld8(wv + t * 8) * ld8(xr + ow * step + off[t]);
          st8(yr + ow * 8, a);
        }
      }
      float* dst[8];
      for (int l = 0; l < 8; l++) dst[l] = c0 + l < s->c_in ? planes + l * g.p : NULL;
      from_c8(yc, g.p, dst);
      for (int l = 0; l < 8 && c0 + l < s->c_in; l++) {
        const int64_t at = (b * s->c_out + c0 + l) * g.p;
        out_row(planes + l * g.p, g.p, c0 + l, o, raw ? raw + at : NULL, y + at);
      }
    }
  }
  return DCX_OK;
}

static int depthwise_backward(const struct training_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                              float* gx, float* gw, float* gb) {
  const struct dw_geom g = dw_geom(s);
  struct dw_bufs bf;
  if (dw_bufs(s, &g, 1, &bf)) return DCX_ENOMEM;
  const size_t pad = 8 * (size_t)(g.hp * g.wp);
  float *xp = bf.xp, *gxp = bf.gxp, *xc = bf.xc, *gc = bf.pix, *planes = bf.planes, *wv = bf.wv, *acc = bf.acc;
  int64_t* off = bf.off;
  const int64_t step = s->stride_w * 8, row_step = s->stride_h * g.wp * 8;
  if (gb) memset(gb, 0, sizeof(float) * (size_t)s->c_out);
  for (int64_t c0 = 0; c0 < s->c_in; c0 += 8) {
    dw_block_taps(s, &g, w, c0, off, wv);
    memset(acc, 0, sizeof(float) * 8 * (size_t)g.taps);
    for (int64_t b = 0; b < s->n; b++) {
      const float* gp[8];
      for (int l = 0; l < 8; l++) {
        gp[l] = c0 + l < s->c_in ? planes + l * g.p : NULL;
        if (!gp[l]) continue;
        grad_row(src, (b * s->c_out + c0 + l) * g.p, g.p, c0 + l, planes + l * g.p);
        if (gb) gb[c0 + l] += sum_row(planes + l * g.p, g.p);
      }
      to_c8(gp, g.p, gc);
      if (gw) {
        const float* xs[8];
        block_planes(x, b, s->c_in, c0, s->h * s->w, xs);
        pad_c8(s, &g, xs, xc, xp);
      }
      if (gx) memset(gxp, 0, sizeof(float) * pad);
      for (int64_t t = 0; t < g.taps; t++) /* tap by tap: two accumulators, or one scatter, per pass */
        for (int64_t oh = 0; oh < g.oh; oh++) {
          const float* gr = gc + oh * g.ow * 8;
          const int64_t at = oh * row_step + off[t];
          if (gw) {
            const float* xr = xp + at;
            v8f a0 = ld8(acc + t * 8), a1 = splat8(0.0f);
            int64_t ow = 0;
            for (; ow + 2 <= g.ow; ow += 2) {
              a0 += ld8(gr + ow * 8) * ld8(xr + ow * step);
              a1 += ld8(gr + ow * 8 + 8) * ld8(xr + (ow + 1) * step);
            }
            if (ow < g.ow) a0 += ld8(gr + ow * 8) * ld8(xr + ow * step);
            st8(acc + t * 8, a0 + a1);
          }
          if (gx) {
            float* xr = gxp + at;
            const v8f wt = ld8(wv + t * 8);
            for (int64_t ow = 0; ow < g.ow; ow++) st8(xr + ow * step, ld8(xr + ow * step) + wt * ld8(gr + ow * 8));
          }
        }
      if (gx) {
        float* dst[8];
        for (int l = 0; l < 8; l++) dst[l] = c0 + l < s->c_in ? gx + (b * s->c_in + c0 + l) * s->h * s->w : NULL;
        for (int64_t ih = 0; ih < s->h; ih++)
          memcpy(xc + ih * s->w * 8, gxp + ((ih + s->pad_h) * g.wp + s->pad_w) * 8, sizeof(float) * 8 * (size_t)s->w);
        from_c8(xc, s->h * s->w, dst);
      }
    }
    if (gw)
      for (int l = 0; l < 8 && c0 + l < s->c_in; l++)
        for (int64_t t = 0; t < g.taps; t++) gw[(c0 + l) * g.taps + t] = acc[t * 8 + l];
  }
  return DCX_OK;
}
