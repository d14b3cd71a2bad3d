/* The MobileNet depthwise layer (3 x 3, padding 1, stride 1 or 2; one build per ISA, see conv-impl.h) runs
 * on the NCHW planes as they are, eight output columns per vector: each plane is copied once into a
 * zero-bordered buffer that stays in L2 (for stride 2, split into its even and odd columns), and each output
 * vector is nine FMAs over shifted loads. Backward, the plane's output gradient is fetched (grad_row) into
 * a bordered buffer; the weight gradient is nine accumulators over it, and the input gradient is gathered
 * row by row (for stride 2 as its odd and even columns, then interleaved): no transposes and no scatter.
 * Other depthwise shapes, and stride 2 onto short rows (kinds.h), take the channels-last blocks of
 * depthwise-impl.h. */
#define DW3_AT 8 /* a stride-1 padded row's first input column: whole-vector stores, the zero pad before it */

/* padded row strides, each with room for the shifted loads of a row's last vector: rs (input),
 * ers = rs / 2 (a row's even or odd columns), grs (output gradient) */
struct dw3 {
  int64_t h, w, oh, ow, stride, rs, ers, grs;
};

static struct dw3 dw3_geom(const struct training_conv2d* s) {
  struct dw3 g = {s->h, s->w, training_conv2d_out_h(s), training_conv2d_out_w(s), s->stride_h, 0, 0, 0};
  g.rs = ceil_div(g.w + DW3_AT + 1, 16) * 16 + 16;
  g.ers = g.rs / 2;
  g.grs = ceil_div(g.ow + 2, 8) * 8 + 16;
  return g;
}

/* floats of scratch: padded plane (stride 1) or its even and odd columns (stride 2), the gradient
 * plane, one row, one output plane (and a vector past its end) */
static size_t dw3_scratch(const struct dw3* g) {
  return (size_t)((g->h + 2) * 2 * g->rs + (g->oh + 2) * g->grs + 2 * g->rs + g->oh * g->ow + 8);
}

/* dst[0 .. n) = src[0 .. n): whole vectors, the last one overlapping the one before (n >= 8) */
DCX_INLINE void copy_row(float* dst, const float* src, int64_t n) {
  if (n < 8) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
    return;
  }
  for (int64_t i = 0; i + 8 < n; i += 8) st8(dst + i, ld8(src + i));
  st8(dst + n - 8, ld8(src + n - 8));
}

/* One padded row of a plane, from its input row src (NULL: a border row, all zeros). Stride 1:
 * p[DW3_AT - 1 + c] = src[c - 1], 0 outside the plane. Stride 2: that padded row's even and odd
 * columns instead, e[t] = src[2t - 1] and o[t] = src[2t], split straight from src. A row from src
 * writes only the columns src reaches: the buffers are zeroed once (dw3_zero), and every row built
 * in them after writes the same columns, so the rest stays zero. */
static void dw3_pad_row(const struct dw3* g, const float* src, float* p, float* e, float* o) {
  if (!src) {
    memset(g->stride == 2 ? e : p, 0, sizeof(float) * (size_t)(g->stride == 2 ? g->ers : g->rs));
    if (g->stride == 2) memset(o, 0, sizeof(float) * (size_t)g->ers);
    return;
  }
  if (g->stride == 1) {
    copy_row(p + DW3_AT, src, g->w);
    return;
  }
  int64_t i = 0;
  for (; i + 16 <= g->w; i += 16) { /* 16 inputs: 8 even to o, 8 odd to e one column on */
    const v8f lo = ld8(src + i), hi = ld8(src + i + 8);
    st8(o + i / 2, __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14));
    st8(e + i / 2 + 1, __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15));
  }
  for (; i < g->w; i++) {
    if (i % 2)
      e[(i + 1) / 2] = src[i];
    else
      o[i / 2] = src[i];
  }
}

/* the padded plane buffers (xp; xe and xo follow it), all zeros: its border rows and columns stay so */
static void dw3_zero(const struct dw3* g, float* xp) {
  memset(xp, 0, sizeof(float) * (size_t)((g->h + 2) * 2 * g->rs));
}

/* Rows 1 .. h of the padded plane of x (row r: input row r - 1): xp (stride 1), or its even and odd
 * columns xe and xo (stride 2); rows 0 and h + 1 are left zero since dw3_zero. */
static void dw3_pad(const struct dw3* g, const float* x, float* xp, float* xe, float* xo) {
  for (int64_t r = 1; r <= g->h; r++) dw3_pad_row(g, x + (r - 1) * g->w, xp + r * g->rs, xe + r * g->ers, xo + r * g->ers);
}

/* The 3 x 3 taps of output columns ow .. ow + 7 of the row whose padded input rows start at
 * p0, p1, p2 (stride 1: columns ow + j; stride 2: even/odd columns e_i, o_i). */
DCX_INLINE v8f dw3_taps_s1(const float* const p[3], int64_t ow, const v8f wt[9]) {
  v8f a[3];
  for (int i = 0; i < 3; i++)
    a[i] = wt[3 * i] * ld8(p[i] + ow) + wt[3 * i + 1] * ld8(p[i] + ow + 1) + wt[3 * i + 2] * ld8(p[i] + ow + 2);
  return a[0] + a[1] + a[2];
}
DCX_INLINE v8f dw3_taps_s2(const float* const e[3], const float* const o[3], int64_t ow, const v8f wt[9]) {
  v8f a[3];
  for (int i = 0; i < 3; i++)
    a[i] = wt[3 * i] * ld8(e[i] + ow) + wt[3 * i + 1] * ld8(o[i] + ow) + wt[3 * i + 2] * ld8(e[i] + ow + 1);
  return a[0] + a[1] + a[2];
}

/* the padded input rows of output row oh: p[i] (stride 1), e[i] and o[i] (stride 2) */
static void dw3_rows(const struct dw3* g, const float* xp, const float* xe, const float* xo, int64_t oh,
                     const float* p[3], const float* e[3], const float* o[3]) {
  for (int i = 0; i < 3; i++) {
    const int64_t r = oh * g->stride + i;
    p[i] = xp + r * g->rs + DW3_AT - 1;
    e[i] = xe + r * g->ers;
    o[i] = xo + r * g->ers;
  }
}

static int dw3x3_forward(const struct training_conv2d* s, const float* x, const float* w, const struct gemm_out* out,
                         float* raw, float* y) {
  const struct dw3 g = dw3_geom(s);
  float* xp = dcx_scratch(dw3_scratch(&g));
  if (!xp) return DCX_ENOMEM;
  float *xe = xp + (g.h + 2) * g.rs, *xo = xe + (g.h + 2) * g.ers;
  float* plane = xo + (g.h + 2) * g.ers + (g.oh + 2) * g.grs + 2 * g.rs;
  const int64_t p = g.oh * g.ow;
  const int by_row = g.ow % 8 == 0;
  dw3_zero(&g, xp);
  for (int64_t c = 0; c < s->c_in; c++) {
    v8f wt[9];
    for (int t = 0; t < 9; t++) wt[t] = splat8(w[c * 9 + t]);
    for (int64_t b = 0; b < s->n; b++) {
      dw3_pad(&g, x + (b * s->c_in + c) * g.h * g.w, xp, xe, xo);
      const int64_t at = (b * s->c_out + c) * p;
      for (int64_t oh = 0; oh < g.oh; oh++) { /* a row's last vector spills into the next row, rewritten next */
        const float *pr[3], *er[3], *orow[3];
        dw3_rows(&g, xp, xe, xo, oh, pr, er, orow);
        for (int64_t ow = 0; ow < g.ow; ow += 8)
          st8(plane + oh * g.ow + ow, g.stride == 1 ? dw3_taps_s1(pr, ow, wt) : dw3_taps_s2(er, orow, ow, wt));
        if (by_row) /* the output stage on the row while it is in L1 */
          out_row(plane + oh * g.ow, g.ow, c, out, raw ? raw + at + oh * g.ow : NULL, y + at + oh * g.ow);
      }
      if (!by_row) /* rows of a tail each: the output stage once over the plane, in whole vectors */
        out_row(plane, p, c, out, raw ? raw + at : NULL, y + at);
    }
  }
  return DCX_OK;
}

/* acc[3i + j] += the products of the gradient plane gp with tap (i, j) of the padded input plane.
 * Its own function (as dw3_input_grad): the nine accumulators then stay in registers. */
static __attribute__((noinline)) void dw3_weight_grad(const struct dw3* g, const float* xp, const float* xe,
                                                      const float* xo, const float* gp, v8f acc_io[9]) {
  v8f acc[9];
  for (int t = 0; t < 9; t++) acc[t] = acc_io[t];
  for (int64_t oh = 0; oh < g->oh; oh++) {
    const float *pr[3], *er[3], *orow[3], *gr = gp + (oh + 1) * g->grs + 1;
    dw3_rows(g, xp, xe, xo, oh, pr, er, orow);
    for (int64_t ow = 0; ow < g->ow; ow += 8) { /* zeros past ow in gr: the last vector adds nothing extra */
      const v8f gv = ld8(gr + ow);
      for (int i = 0; i < 3; i++)
        if (g->stride == 1) {
          acc[3 * i] += gv * ld8(pr[i] + ow);
          acc[3 * i + 1] += gv * ld8(pr[i] + ow + 1);
          acc[3 * i + 2] += gv * ld8(pr[i] + ow + 2);
        } else {
          acc[3 * i] += gv * ld8(er[i] + ow);
          acc[3 * i + 1] += gv * ld8(orow[i] + ow);
          acc[3 * i + 2] += gv * ld8(er[i] + ow + 1);
        }
    }
  }
  for (int t = 0; t < 9; t++) acc_io[t] = acc[t];
}

/* eight input-gradient columns of a stride-1 row: the taps of rows r0, r1, r2 of the padded gradient */
DCX_INLINE v8f dw3_transposed_taps(const v8f wt[9], const float* r0, const float* r1, const float* r2) {
  return wt[0] * ld8(r0 + 2) + wt[1] * ld8(r0 + 1) + wt[2] * ld8(r0) + wt[3] * ld8(r1 + 2) + wt[4] * ld8(r1 + 1) +
         wt[5] * ld8(r1) + wt[6] * ld8(r2 + 2) + wt[7] * ld8(r2 + 1) + wt[8] * ld8(r2);
}

/* gxp (one input plane) = the 3 x 3 weights w9 applied transposed to the gradient plane gp; row: a
 * row of scratch for what does not fill whole vectors in place */
static __attribute__((noinline)) void dw3_input_grad(const struct dw3* g, const float* gp, const float* w9, float* gxp,
                                                     float* row) {
  v8f wt[9];
  for (int t = 0; t < 9; t++) wt[t] = splat8(w9[t]);
  for (int64_t ih = 0; ih < g->h; ih++) {
    if (g->stride == 1) { /* gx[ih][iw] = sum w[i][j] g[ih + 1 - i][iw + 1 - j] (gp: row and column + 1) */
      const float* r0 = gp + (ih + 2) * g->grs; /* tap row i reads r_i */
      const float *r1 = r0 - g->grs, *r2 = r1 - g->grs;
      float* out = gxp + ih * g->w;
      int64_t iw = 0;
      for (; iw + 8 <= g->w; iw += 8) st8(out + iw, dw3_transposed_taps(wt, r0 + iw, r1 + iw, r2 + iw));
      if (iw < g->w && g->w >= 8) { /* a ragged last vector overlaps the one before */
        st8(out + g->w - 8, dw3_transposed_taps(wt, r0 + g->w - 8, r1 + g->w - 8, r2 + g->w - 8));
      } else if (iw < g->w) { /* a row shorter than a vector */
        st8(row, dw3_transposed_taps(wt, r0, r1, r2));
        copy_row(out, row, g->w);
      }
    } else { /* padded row r = ih + 1 gets output rows oh with 2 oh + i = r: its column 2u + 1 (input
              * column 2u) from tap j = 1 of output column u, its column 2u + 2 (input 2u + 1) from
              * j = 0 of column u + 1 and j = 2 of column u */
      const int64_t r = ih + 1;
      for (int64_t u = 0; 2 * u < g->w; u += 8) {
        v8f odd = splat8(0.0f), even = splat8(0.0f);
        for (int i = 0; i < 3; i++) {
          const int64_t oh2 = r - i; /* 2 * oh */
          if (oh2 < 0 || oh2 % 2 || oh2 / 2 >= g->oh) continue;
          const float* gr = gp + (oh2 / 2 + 1) * g->grs + 1; /* g[oh][t] = gr[t] */
          odd += wt[3 * i + 1] * ld8(gr + u);
          even += wt[3 * i] * ld8(gr + u + 1) + wt[3 * i + 2] * ld8(gr + u);
        }
        float* d = 2 * u + 16 <= g->w ? gxp + ih * g->w + 2 * u : row + 2 * u;
        st8(d, __builtin_shufflevector(odd, even, 0, 8, 1, 9, 2, 10, 3, 11));
        st8(d + 8, __builtin_shufflevector(odd, even, 4, 12, 5, 13, 6, 14, 7, 15));
      }
      const int64_t done = g->w / 16 * 16; /* columns stored in place; the rest went through row */
      copy_row(gxp + ih * g->w + done, row + done, g->w - done);
    }
  }
}

static int dw3x3_backward(const struct training_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                          float* gx, float* gw, float* gb) {
  const struct dw3 g = dw3_geom(s);
  float* xp = dcx_scratch(dw3_scratch(&g));
  if (!xp) return DCX_ENOMEM;
  float *xe = xp + (g.h + 2) * g.rs, *xo = xe + (g.h + 2) * g.ers, *gp = xo + (g.h + 2) * g.ers;
  float *row = gp + (g.oh + 2) * g.grs, *plane = row + 2 * g.rs;
  const int64_t p = g.oh * g.ow;
  dw3_zero(&g, xp);
  memset(gp, 0, sizeof(float) * (size_t)((g.oh + 2) * g.grs)); /* its rows write columns 1 .. ow alone */
  if (gb) memset(gb, 0, sizeof(float) * (size_t)s->c_out);
  for (int64_t c = 0; c < s->c_in; c++) {
    v8f acc[9];
    for (int t = 0; t < 9; t++) acc[t] = splat8(0.0f);
    for (int64_t b = 0; b < s->n; b++) {
      const int by_rows = g.ow % 8 == 0; /* rows of whole vectors: fetched straight into place */
      if (!by_rows) grad_row(src, (b * s->c_out + c) * p, p, c, plane); /* else the plane at once, then copied */
      for (int64_t oh = 0; oh < g.oh; oh++) { /* gp[r][t] = g[r - 1][t - 1], 0 outside */
        float* d = gp + (oh + 1) * g.grs + 1;
        if (by_rows)
          grad_row(src, (b * s->c_out + c) * p + oh * g.ow, g.ow, c, d);
        else
          copy_row(d, plane + oh * g.ow, g.ow);
        if (gb) gb[c] += sum_row(d, g.ow);
      }
      if (gw) {
        dw3_pad(&g, x + (b * s->c_in + c) * g.h * g.w, xp, xe, xo);
        dw3_weight_grad(&g, xp, xe, xo, gp, acc);
      }
      if (gx) dw3_input_grad(&g, gp, w + c * 9, gx + (b * s->c_in + c) * g.h * g.w, row);
    }
    if (gw)
      for (int t = 0; t < 9; t++) gw[c * 9 + t] = hsum8(acc[t]);
  }
  return DCX_OK;
}
