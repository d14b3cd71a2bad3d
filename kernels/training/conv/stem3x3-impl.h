/* A network's first convolution (3 x 3 over RGB or up to 4 channels, padding 1, stride 1 or 2; one build
 * per ISA, see conv-impl.h) is too narrow for the GEMM (K = 9 c_in, M = c_out): it runs row by row instead.
 * Output row oh reads c_in x 3 padded input rows (dw3_pad_row: for stride 2 as even and odd columns), each
 * built once per image into a ring of four rows per channel; then per 4 output channels and 16 output
 * columns, each of the 9 c_in taps is two input vectors FMA'd into 8 accumulators with broadcast weights
 * (packed [quad][c][tap][4], zero past c_out). The backward stays on the general path (general-impl.h): its
 * dot-product weight gradient over the whole grid measured faster than row-wise accumulators here. */

/* The ring of padded input rows: ring[(c * 4 + r % 4) * rs ...] holds padded row r (input row r - 1)
 * of channel c (stride 2: its even columns, then its odd ones ers further). Output row oh reads
 * rows oh * stride + 0 .. 2; those not built yet (*built and on) are built here, so each row is
 * built once per image. */
static void stem_rows(const struct dw3* g, int64_t c_in, const float* x, int64_t oh, int64_t* built, float* ring) {
  for (; *built <= oh * g->stride + 2; (*built)++) {
    const int64_t r = *built;
    for (int64_t c = 0; c < c_in; c++) {
      float* d = ring + (c * 4 + r % 4) * g->rs;
      dw3_pad_row(g, r == 0 || r > g->h ? NULL : x + (c * g->h + r - 1) * g->w, d, d, d + g->ers);
    }
  }
}

/* rp[c * 3 + i]: the padded row tap row i of output row oh reads in channel c */
static void stem_row_table(const struct dw3* g, int64_t c_in, const float* ring, int64_t oh, const float** rp) {
  for (int64_t c = 0; c < c_in; c++)
    for (int i = 0; i < 3; i++)
      rp[c * 3 + i] = ring + (c * 4 + (oh * g->stride + i) % 4) * g->rs + (g->stride == 1 ? DW3_AT - 1 : 0);
}

/* the 3 taps of padded row r at output columns ow .. ow + 7 */
DCX_INLINE void stem_taps(const struct dw3* g, const float* r, int64_t ow, v8f t[3]) {
  if (g->stride == 1) {
    t[0] = ld8(r + ow), t[1] = ld8(r + ow + 1), t[2] = ld8(r + ow + 2);
  } else {
    t[0] = ld8(r + ow), t[1] = ld8(r + g->ers + ow), t[2] = ld8(r + ow + 1);
  }
}

static int stem3x3_forward(const struct training_conv2d* s, const float* x, const float* w, const struct gemm_out* out,
                           float* raw, float* y) {
  const struct dw3 g = dw3_geom(s);
  const int64_t quads = ceil_div(s->c_out, 4), taps = s->c_in * 9, ors = ceil_div(g.ow, 16) * 16;
  float* rows = dcx_scratch((size_t)(s->c_in * 4 * g.rs + 16 + quads * taps * 4 + 4 * ors));
  if (!rows) return DCX_ENOMEM;
  float *wp = rows + s->c_in * 4 * g.rs + 16, *acc_rows = wp + quads * taps * 4; /* 16: the last loads' slack */
  for (int64_t q = 0; q < quads; q++)
    for (int64_t t = 0; t < taps; t++)
      for (int k = 0; k < 4; k++) {
        const int64_t o = q * 4 + k;
        wp[(q * taps + t) * 4 + k] = o < s->c_out ? w[o * taps + t] : 0.0f;
      }
  memset(rows, 0, sizeof(float) * (size_t)(s->c_in * 4 * g.rs)); /* see dw3_pad_row */
  for (int64_t b = 0; b < s->n; b++)
    for (int64_t oh = 0, built = 0; oh < g.oh; oh++) {
      stem_rows(&g, s->c_in, x + b * s->c_in * g.h * g.w, oh, &built, rows);
      const float* rp[STEM_MAX_CIN * 3];
      stem_row_table(&g, s->c_in, rows, oh, rp);
      for (int64_t q = 0; q < quads; q++) {
        const float* wq = wp + q * taps * 4;
        for (int64_t ow = 0; ow < g.ow; ow += 16) { /* 4 channels x 16 columns: 8 accumulators */
          v8f acc[4][2];
          for (int k = 0; k < 4; k++) acc[k][0] = acc[k][1] = splat8(0.0f);
          for (int64_t c = 0; c < s->c_in; c++)
            for (int i = 0; i < 3; i++) {
              v8f t0[3], t1[3];
              stem_taps(&g, rp[c * 3 + i], ow, t0);
              stem_taps(&g, rp[c * 3 + i], ow + 8, t1);
              const float* wt = wq + (c * 9 + i * 3) * 4;
              for (int j = 0; j < 3; j++)
                for (int k = 0; k < 4; k++) {
                  const v8f wv = splat8(wt[j * 4 + k]);
                  acc[k][0] += wv * t0[j];
                  acc[k][1] += wv * t1[j];
                }
            }
          for (int k = 0; k < 4; k++) {
            st8(acc_rows + k * ors + ow, acc[k][0]);
            st8(acc_rows + k * ors + ow + 8, acc[k][1]);
          }
        }
        for (int64_t k = 0; k < 4 && q * 4 + k < s->c_out; k++) {
          const int64_t ch = q * 4 + k, at = ((b * s->c_out + ch) * g.oh + oh) * g.ow;
          out_row(acc_rows + k * ors, g.ow, ch, out, raw ? raw + at : NULL, y + at);
        }
      }
    }
  return DCX_OK;
}
