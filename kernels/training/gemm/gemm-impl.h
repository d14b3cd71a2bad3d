/* The GEMM every product of the training kernels runs on, and the linear layer built on it (one build
 * per ISA; see training-impl.h).
 *
 * BLIS-style: C = A B with A packed into 6-row panels [k][6] and B read in 16-column panels; a 6 x 16
 * register tile (12 eight-lane accumulators; 24 q registers on NEON, fed by fmla by lane). B rows are
 * read in place when contiguous (a strided operand with unit column stride, or a table of row pointers:
 * the shifted views of a convolution), else packed; C rows may also be a table of row pointers (the
 * input gradient of a convolution, added straight into its phase planes). A dot-product form serves
 * long contiguous reductions (linear layers, weight gradients). */

#define MR 6
#define NR 16
#define KC 256
#define MC 96  /* multiple of MR: a 96 x 256 block of A (96 KB) stays in L2 */
#define NC 512 /* multiple of NR: the packed B block (512 KB at most) */
#define ROWS_OUTER_MAX_B (32 * 1024) /* floats of a B block (128 KB) read row panel by row panel from L2 */

/* ==========================================================================================
 * Packers. A pack fills dst[kk*MR + r] (A: rows i0 + r < i0 + ni) or dst[kk*NR + l] (B: columns
 * j0 + l) for kk < kc, zero beyond ni. */

typedef void (*pack_fn)(const void* ctx, int64_t k0, int64_t kc, int64_t i0, int64_t ni, float* dst);

struct strided {
  const float* p;
  int64_t rs, cs; /* element (i, k) of A or (k, j) of B: A: p[i*rs + k*cs], B: p[k*rs + j*cs] */
};

/* dst[kk*width + l] = rows[l][kk] for kk < kc and l < width (width <= NR; rows[l] NULL: zero):
 * eight lanes by eight k at a time through a register transpose. */
static void pack_rows(const float* const* rows, int64_t kc, int width, float* dst) {
  for (int l0 = 0; l0 < width; l0 += 8) {
    const int lanes = width - l0 < 8 ? width - l0 : 8;
    int64_t kk = 0;
    for (; kk + 8 <= kc; kk += 8) {
      v8f r[8];
      for (int l = 0; l < 8; l++) r[l] = l < lanes && rows[l0 + l] ? ld8(rows[l0 + l] + kk) : splat8(0.0f);
      transpose8(r);
      for (int q = 0; q < 8; q++) {
        if (lanes == 8)
          st8(dst + (kk + q) * width + l0, r[q]);
        else
          memcpy(dst + (kk + q) * width + l0, &r[q], sizeof(float) * (size_t)lanes);
      }
    }
    for (; kk < kc; kk++)
      for (int l = 0; l < lanes; l++) dst[kk * width + l0 + l] = rows[l0 + l] ? rows[l0 + l][kk] : 0.0f;
  }
}

static void pack_strided(const float* p, int64_t lane_stride, int64_t k_stride, int64_t k0,
                         int64_t kc, int64_t i0, int64_t ni, int width, float* dst) {
  const float* base = p + k0 * k_stride + i0 * lane_stride;
  if (lane_stride == 1 && ni == width) {
    for (int64_t kk = 0; kk < kc; kk++) memcpy(dst + kk * width, base + kk * k_stride, sizeof(float) * width);
    return;
  }
  if (lane_stride == 1) {
    for (int64_t kk = 0; kk < kc; kk++) {
      const float* s = base + kk * k_stride;
      float* d = dst + kk * width;
      int l = 0;
      for (; l < ni; l++) d[l] = s[l];
      for (; l < width; l++) d[l] = 0.0f;
    }
    return;
  }
  if (k_stride == 1) { /* lanes are rows, each contiguous along k: a transpose */
    const float* rows[NR];
    for (int l = 0; l < width; l++) rows[l] = l < ni ? base + l * lane_stride : NULL;
    pack_rows(rows, kc, width, dst);
    return;
  }
  /* lanes far apart, k strided: element by element */
  for (int l = 0; l < width; l++) {
    float* d = dst + l;
    if (l >= ni) {
      for (int64_t kk = 0; kk < kc; kk++) d[kk * width] = 0.0f;
      continue;
    }
    const float* s = base + l * lane_stride;
    for (int64_t kk = 0; kk < kc; kk++) d[kk * width] = s[kk * k_stride];
  }
}

static void pack_a_strided(const void* ctx, int64_t k0, int64_t kc, int64_t i0, int64_t ni, float* dst) {
  const struct strided* s = (const struct strided*)ctx;
  pack_strided(s->p, s->rs, s->cs, k0, kc, i0, ni, MR, dst);
}

static void pack_b_strided(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nj, float* dst) {
  const struct strided* s = (const struct strided*)ctx;
  pack_strided(s->p, s->cs, s->rs, k0, kc, j0, nj, NR, dst);
}

/* ==========================================================================================
 * Micro-kernel: the 6 x 16 tile c[r][0:nr] (r < mr) = (load ? c : 0) + ap . B (+ biases, ReLU
 * when finish). ap: [kc][6]. B row k (16 floats): bp + k*b_rs (a packed panel: b_rs = 16), or,
 * indirect, brow[k] + b_rs (rows anywhere: the shifted views of a convolution). C row r: c +
 * r*c_rs, or, with crow, crow[r] + c_rs (rows anywhere, even overlapping: each row is loaded,
 * added to and stored before the next). */

#define GEMM_C_ROW(r) (crow ? crow[r] + c_rs : c + (r) * c_rs)

/* What a GEMM does with C[i, j] after the products, per row i (the output channel of a
 * convolution): v = acc (+ C) + bias_m[i] + bias_n[j]; then, when scale_m, v * scale_m[i] +
 * shift_m[i] (a folded frozen batch norm); then, when clamp, clamped to [lo, hi] (ReLU: [0, inf),
 * NaN to lo). With out_delta (bytes), v before the scale and clamp stays in C and the final value
 * goes out_delta bytes further (a second output of the same layout). */
struct gemm_out {
  const float* bias_m;
  const float* bias_n;
  const float* scale_m;
  const float* shift_m;
  float lo, hi;
  int clamp;
  intptr_t out_delta;
};

static const struct gemm_out plain_out = {NULL, NULL, NULL, NULL, 0.0f, 0.0f, 0, 0};

static struct gemm_out relu_out_stage(const float* bias_m, const float* bias_n, int relu) {
  return (struct gemm_out){bias_m, bias_n, NULL, NULL, 0.0f, INFINITY, relu, 0};
}

/* A tile's output stage, when it is one of the two that nearly every tile ends with (a fresh C, no
 * biases, no second output): then it is straight-line code, with no test of the fields per row. */
enum { TILE_ANY, TILE_STORE, TILE_NORM_CLAMP };

struct tile_epilogue {
  int kind;            /* TILE_STORE: C = the products; TILE_NORM_CLAMP: C = clamp(products * scale_m + shift_m) */
  int load;            /* add the current C */
  int finish;          /* last K block: the output stage */
  const float* bias_m; /* at the tile's first row, or NULL */
  const float* bias_n; /* at the tile's first column, or NULL */
  const float* scale_m; /* at the tile's first row, or NULL */
  const float* shift_m;
  const struct gemm_out* out;
};

DCX_INLINE v8f select8(v8i keep, v8f a, v8f b) { return (v8f)(((v8i)a & keep) | ((v8i)b & ~keep)); }

/* v clamped to [lo, hi]; NaN goes to lo */
DCX_INLINE v8f clamp8(v8f v, v8f lo, v8f hi) {
  v = select8(v > lo, v, lo);
  return select8(v < hi, v, hi);
}

DCX_INLINE v8f finish8(v8f v, float scale, float shift, const struct gemm_out* o) {
  if (o->scale_m) v = v * splat8(scale) + splat8(shift);
  return o->clamp ? clamp8(v, splat8(o->lo), splat8(o->hi)) : v;
}

DCX_INLINE void store_row16(float* c, int nr, v8f lo, v8f hi) {
  if (nr == NR) {
    st8(c, lo);
    st8(c + 8, hi);
  } else {
    float tmp[NR];
    st8(tmp, lo);
    st8(tmp + 8, hi);
    for (int i = 0; i < nr; i++) c[i] = tmp[i];
  }
}

DCX_INLINE void tile_store_row(float* c, int nr, v8f lo, v8f hi, const struct tile_epilogue* e, int r, v8f bn_lo,
                              v8f bn_hi, const int kind) {
  if (kind != TILE_ANY && nr == NR) {
    if (kind == TILE_NORM_CLAMP) {
      const v8f sc = splat8(e->scale_m[r]), sh = splat8(e->shift_m[r]);
      const v8f low = splat8(e->out->lo), high = splat8(e->out->hi);
      lo = clamp8(lo * sc + sh, low, high);
      hi = clamp8(hi * sc + sh, low, high);
    }
    st8(c, lo);
    st8(c + 8, hi);
    return;
  }
  if (e->load) {
    if (nr == NR) {
      lo += ld8(c);
      hi += ld8(c + 8);
    } else {
      float tmp[NR];
      for (int i = 0; i < NR; i++) tmp[i] = i < nr ? c[i] : 0.0f;
      lo += ld8(tmp);
      hi += ld8(tmp + 8);
    }
  }
  if (e->finish) {
    const struct gemm_out* o = e->out;
    const v8f bm = splat8(e->bias_m ? e->bias_m[r] : 0.0f);
    lo += bn_lo + bm;
    hi += bn_hi + bm;
    if (o->out_delta) {
      store_row16(c, nr, lo, hi);
      c = (float*)(void*)((char*)c + o->out_delta);
    }
    const float sc = e->scale_m ? e->scale_m[r] : 1.0f, sh = e->shift_m ? e->shift_m[r] : 0.0f;
    lo = finish8(lo, sc, sh, o);
    hi = finish8(hi, sc, sh, o);
  }
  store_row16(c, nr, lo, hi);
}

DCX_INLINE void bias_n_lanes(const struct tile_epilogue* e, int nr, v8f* lo, v8f* hi) {
  *lo = splat8(0.0f);
  *hi = splat8(0.0f);
  if (e->finish && e->bias_n) {
    float t[NR] = {0};
    for (int i = 0; i < nr; i++) t[i] = e->bias_n[i];
    *lo = ld8(t);
    *hi = ld8(t + 8);
  }
}

#if defined(DCX_USE_NEON)

/* row r's accumulators += B times lane `lane` of a (fma: by lane of a q or a d register) */
#define GEMM_ROW_FMA_LANE(fma, r, a, lane)       \
  if (rows > r) {                            \
    c##r##0 = fma(c##r##0, b0, a, lane);     \
    c##r##1 = fma(c##r##1, b1, a, lane);     \
    if (!half) {                             \
      c##r##2 = fma(c##r##2, b2, a, lane);   \
      c##r##3 = fma(c##r##3, b3, a, lane);   \
    }                                        \
  }
#define GEMM_ROW_FMA4(r, a4, lane) GEMM_ROW_FMA_LANE(vfmaq_laneq_f32, r, a4, lane)
#define GEMM_ROW_FMA2(r, a2, lane) GEMM_ROW_FMA_LANE(vfmaq_lane_f32, r, a2, lane)
#define GEMM_ROW_STORE(r)                                                                          \
  if (mr > r) {                                                                                  \
    float lanes[NR];                                                                             \
    vst1q_f32(lanes, c##r##0);                                                                   \
    vst1q_f32(lanes + 4, c##r##1);                                                               \
    vst1q_f32(lanes + 8, c##r##2);                                                               \
    vst1q_f32(lanes + 12, c##r##3);                                                              \
    tile_store_row(GEMM_C_ROW(r), nr, ld8(lanes), ld8(lanes + 8), e, r, bn_lo, bn_hi, kind);      \
  }

/* NEON: 24 q accumulators, 4 q of B and 6 floats of A (one q + one d) per k: fmla by lane. */
DCX_INLINE void micro_body(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e, const int kind, const int half, const int rows) {
  const float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  float32x4_t c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
  float32x4_t c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
  for (int64_t k = 0; k < kc; k++) {
    const float* b = indirect ? brow[k] + b_rs : bp;
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
    const float32x4_t b2 = half ? z : vld1q_f32(b + 8), b3 = half ? z : vld1q_f32(b + 12);
    const float32x4_t a4 = vld1q_f32(ap);
    const float32x2_t a2 = vld1_f32(ap + 4);
    GEMM_ROW_FMA4(0, a4, 0) GEMM_ROW_FMA4(1, a4, 1) GEMM_ROW_FMA4(2, a4, 2) GEMM_ROW_FMA4(3, a4, 3)
    GEMM_ROW_FMA2(4, a2, 0) GEMM_ROW_FMA2(5, a2, 1)
    ap += MR;
    if (!indirect) bp += b_rs;
  }
  v8f bn_lo, bn_hi;
  bias_n_lanes(e, nr, &bn_lo, &bn_hi);
  GEMM_ROW_STORE(0) GEMM_ROW_STORE(1) GEMM_ROW_STORE(2) GEMM_ROW_STORE(3) GEMM_ROW_STORE(4) GEMM_ROW_STORE(5)
}

#else /* portable vector extensions (SSE2 baseline, AVX2 + FMA in the x86-64-v3 build) */

#define GEMM_ROW_FMA(r)              \
  if (rows > r) {                  \
    const v8f a = splat8(ap[r]);   \
    c##r##0 += a * b0;             \
    if (!half) c##r##1 += a * b1;  \
  }
#define GEMM_ROW_STORE(r)                                                                            \
  if (mr > r)                                                                                      \
    tile_store_row(GEMM_C_ROW(r), nr, c##r##0, c##r##1, e, r, bn_lo, bn_hi, kind);

DCX_INLINE void micro_body(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e, const int kind, const int half, const int rows) {
  v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  v8f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  for (int64_t k = 0; k < kc; k++) {
    const float* b = indirect ? brow[k] + b_rs : bp;
    const v8f b0 = ld8(b), b1 = half ? splat8(0.0f) : ld8(b + 8);
    GEMM_ROW_FMA(0) GEMM_ROW_FMA(1) GEMM_ROW_FMA(2) GEMM_ROW_FMA(3) GEMM_ROW_FMA(4) GEMM_ROW_FMA(5)
    ap += MR;
    if (!indirect) bp += b_rs;
  }
  v8f bn_lo, bn_hi;
  bias_n_lanes(e, nr, &bn_lo, &bn_hi);
  GEMM_ROW_STORE(0) GEMM_ROW_STORE(1) GEMM_ROW_STORE(2) GEMM_ROW_STORE(3) GEMM_ROW_STORE(4) GEMM_ROW_STORE(5)
}

#endif

/* For a tile of at most NR / 2 columns (the ragged last one of a 14 x 14 or 7 x 7 plane), a body
 * that computes only those; for a tile of at most 2 or 4 rows (the last one of 8, 16, 32 ... output
 * channels), one that computes only those rows. */
DCX_INLINE void micro_rows(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e, const int kind, const int half) {
  if (mr <= 2)
    micro_body(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, half, 2);
  else if (mr <= 4)
    micro_body(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, half, 4);
  else
    micro_body(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, half, MR);
}

DCX_INLINE void micro_widths(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                            const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                            const struct tile_epilogue* e, const int kind) {
  if (nr <= NR / 2)
    micro_rows(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, 1);
  else
    micro_rows(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, 0);
}

/* One copy of the body per output-stage kind (and width), so that each ends in its own
 * straight-line code. */
DCX_INLINE void micro_kinds(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                           const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                           const struct tile_epilogue* e) {
  if (e->kind == TILE_NORM_CLAMP)
    micro_widths(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, TILE_NORM_CLAMP);
  else if (e->kind == TILE_STORE)
    micro_widths(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, TILE_STORE);
  else
    micro_widths(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, TILE_ANY);
}

/* Out of line: inlined into the drivers, GCC spills the accumulators. */
static __attribute__((noinline)) void micro_tile(int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                                                 float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                                                 const struct tile_epilogue* e) {
  micro_kinds(0, kc, ap, bp, b_rs, NULL, c, c_rs, crow, mr, nr, e);
}
static __attribute__((noinline)) void micro_tile_rows(int64_t kc, const float* ap, const float* const* brow,
                                                      int64_t col, float* c, int64_t c_rs, int mr, int nr,
                                                      const struct tile_epilogue* e) {
  micro_kinds(1, kc, ap, NULL, col, brow, c, c_rs, NULL, mr, nr, e);
}

/* ==========================================================================================
 * GEMM drivers. The workspace (gemm_workspace floats) holds one packed block of A and one of B.
 * a_full, when given, is all of A packed ahead (pack_a_all): weights reused across a call.
 * B comes as a packer, as contiguous rows (direct: full panels are read in place, a ragged last
 * one is packed), or as a table of row pointers (rows: read in place throughout; each row must
 * stay readable 15 floats past column n - 1). */

struct operand {
  pack_fn pack;
  const void* ctx;
  const float* direct; /* B(k, j) = direct[k*direct_rs + j], or NULL */
  int64_t direct_rs;
  const float* const* rows; /* B(k, j) = rows[k][j], or NULL */
};

static size_t gemm_workspace(int64_t m, int64_t n) {
  return (size_t)(min64(ceil_div(m, MR) * MR, MC) * KC + min64(ceil_div(n, NR) * NR, NC) * KC);
}

static size_t packed_a_size(int64_t m, int64_t k) { return (size_t)(ceil_div(m, MR) * MR * k); }

/* Layout: K blocks of KC, each holding every 6-row panel [kc][6]. */
static void pack_a_all(int64_t m, int64_t k, struct operand a, float* dst) {
  const int64_t mp = ceil_div(m, MR) * MR;
  for (int64_t pc = 0; pc < k; pc += KC) {
    const int64_t kc = min64(KC, k - pc);
    for (int64_t i = 0; i < m; i += MR) a.pack(a.ctx, pc, kc, i, min64(MR, m - i), dst + pc * mp + i * kc);
  }
}

/* C = A B (+ C when accumulate), then the output stage o. C row i is c + i*c_rs, or, with c_rows,
 * c_rows[i] (rows anywhere, even overlapping: they are read, added to and written one after the
 * other). */
static void gemm_run_rows(int64_t m, int64_t n, int64_t k, struct operand a, const float* a_full, struct operand b,
                          float* c, int64_t c_rs, float* const* c_rows, int accumulate, const struct gemm_out* o,
                          float* ws) {
  if (k == 0) { /* C = (accumulate ? C : 0), then the output stage, one column at a time */
    for (int64_t i = 0; i < m; i++) {
      float* ci = c_rows ? c_rows[i] : c + i * c_rs;
      for (int64_t j = 0; j < n; j++) {
        struct tile_epilogue e = {TILE_ANY, accumulate, 1, o->bias_m ? o->bias_m + i : NULL, o->bias_n ? o->bias_n + j : NULL,
                                  o->scale_m ? o->scale_m + i : NULL, o->shift_m ? o->shift_m + i : NULL, o};
        v8f bn_lo, bn_hi;
        bias_n_lanes(&e, 1, &bn_lo, &bn_hi);
        tile_store_row(ci + j, 1, splat8(0.0f), splat8(0.0f), &e, 0, bn_lo, bn_hi, TILE_ANY);
      }
    }
    return;
  }
  const int64_t mp = ceil_div(m, MR) * MR;
  float* a_blk = ws;
  float* b_blk = ws + min64(mp, MC) * KC;
  const float* panel[NC / NR];
  int64_t panel_rs[NC / NR];
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = min64(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = min64(KC, k - pc);
      if (!b.rows)
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = min64(NR, nc - jr);
          if (b.direct && nr == NR) {
            panel[jr / NR] = b.direct + pc * b.direct_rs + jc + jr;
            panel_rs[jr / NR] = b.direct_rs;
          } else {
            b.pack(b.ctx, pc, kc, jc + jr, nr, b_blk + jr * kc);
            panel[jr / NR] = b_blk + jr * kc;
            panel_rs[jr / NR] = NR;
          }
        }
      struct tile_epilogue e = {TILE_ANY, accumulate || pc > 0, pc + kc >= k, NULL, NULL, NULL, NULL, o};
      if (!e.load && e.finish && !o->bias_m && !o->bias_n && !o->out_delta) {
        if (!o->scale_m && !o->clamp) e.kind = TILE_STORE;
        if (o->scale_m && o->shift_m && o->clamp) e.kind = TILE_NORM_CLAMP;
      }
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = min64(MC, m - ic);
        const float* ap;
        if (a_full) {
          ap = a_full + pc * mp + ic * kc;
        } else {
          for (int64_t ir = 0; ir < mc; ir += MR) a.pack(a.ctx, pc, kc, ic + ir, min64(MR, mc - ir), a_blk + ir * kc);
          ap = a_blk;
        }
        /* Tiles row panel by row panel where the block of B fits in L2 (it is then read once per
         * panel from there): only MR rows of C are written at a time, where column by column keeps
         * every row of C open, and C's rows of a convolution's output are whole planes apart. */
        const int64_t tiles_i = ceil_div(mc, MR), tiles_j = ceil_div(nc, NR);
        const int rows_outer = kc * nc <= ROWS_OUTER_MAX_B;
        for (int64_t t = 0; t < tiles_i * tiles_j; t++) {
          const int64_t ir = (rows_outer ? t / tiles_j : t % tiles_i) * MR;
          const int64_t jr = (rows_outer ? t % tiles_j : t / tiles_i) * NR;
          const int nr = (int)min64(NR, nc - jr), mr = (int)min64(MR, mc - ir);
          e.bias_n = o->bias_n ? o->bias_n + jc + jr : NULL;
          e.bias_m = o->bias_m ? o->bias_m + ic + ir : NULL;
          e.scale_m = o->scale_m ? o->scale_m + ic + ir : NULL;
          e.shift_m = o->shift_m ? o->shift_m + ic + ir : NULL;
          if (b.rows) {
            micro_tile_rows(kc, ap + ir * kc, b.rows + pc, jc + jr, c + (ic + ir) * c_rs + jc + jr, c_rs, mr, nr, &e);
          } else if (c_rows) {
            micro_tile(kc, ap + ir * kc, panel[jr / NR], panel_rs[jr / NR], NULL, jc + jr, c_rows + ic + ir, mr, nr, &e);
          } else {
            micro_tile(kc, ap + ir * kc, panel[jr / NR], panel_rs[jr / NR], c + (ic + ir) * c_rs + jc + jr, c_rs, NULL,
                       mr, nr, &e);
          }
        }
      }
    }
  }
}

static void gemm_run(int64_t m, int64_t n, int64_t k, struct operand a, const float* a_full,
                     struct operand b, float* c, int64_t c_rs, int accumulate, const struct gemm_out* o, float* ws) {
  gemm_run_rows(m, n, k, a, a_full, b, c, c_rs, NULL, accumulate, o, ws);
}

static struct operand strided_a(struct strided* s) { return (struct operand){pack_a_strided, s, NULL, 0, NULL}; }
static struct operand strided_b(struct strided* s) {
  return (struct operand){pack_b_strided, s, s->cs == 1 ? s->p : NULL, s->rs, NULL};
}
static struct operand row_table_b(const float* const* rows) { return (struct operand){NULL, NULL, NULL, 0, rows}; }

/* Dot-product GEMM for long contiguous reductions: C[i, j] = sum_q A[i*a_rs + q] B_j[q] (+ C
 * when accumulate, + biases, ReLU) with B_j = brow[j] or b + j*b_rs: no packing at all; a 3 x 4
 * tile of 8-lane partial sums, reduced once at the end. */
#define DOT_MIN_K 64

#define DOT_CASE(MRC, NRC) \
  if (mr == MRC && nr == NRC) dot_tile(MRC, NRC, k, a + i * a_rs, a_rs, bj, out); else

static void gemm_dot(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, const float* b, int64_t b_rs,
                     const float* const* brow, float* c, int64_t c_rs, int accumulate, const float* bias_m,
                     const float* bias_n, int relu) {
  for (int64_t j = 0; j < n; j += 4)
    for (int64_t i = 0; i < m; i += 3) {
      const int mr = (int)min64(3, m - i), nr = (int)min64(4, n - j);
      const float* bj[4];
      for (int jj = 0; jj < 4; jj++) bj[jj] = jj < nr ? (brow ? brow[j + jj] : b + (j + jj) * b_rs) : NULL;
      float out[3][4];
      DOT_CASE(3, 4) DOT_CASE(3, 3) DOT_CASE(3, 2) DOT_CASE(3, 1) DOT_CASE(2, 4) DOT_CASE(2, 3) DOT_CASE(2, 2)
      DOT_CASE(2, 1) DOT_CASE(1, 4) DOT_CASE(1, 3) DOT_CASE(1, 2) dot_tile(1, 1, k, a + i * a_rs, a_rs, bj, out);
      for (int r = 0; r < mr; r++)
        for (int jj = 0; jj < nr; jj++) {
          float v = out[r][jj] + (accumulate ? c[(i + r) * c_rs + j + jj] : 0.0f);
          v += (bias_m ? bias_m[i + r] : 0.0f) + (bias_n ? bias_n[j + jj] : 0.0f);
          c[(i + r) * c_rs + j + jj] = relu && !(v > 0.0f) ? 0.0f : v;
        }
    }
}

/* Any strides: the dot path when both operands run contiguously along a long k, else packed. */
static int gemm_strided(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
                        const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs, int accumulate,
                        const float* bias_m, const float* bias_n, int relu, float* ws) {
  if (a_cs == 1 && b_rs == 1 && k >= DOT_MIN_K) {
    gemm_dot(m, n, k, a, a_rs, b, b_cs, NULL, c, c_rs, accumulate, bias_m, bias_n, relu);
    return DCX_OK;
  }
  if (!ws) ws = dcx_scratch(gemm_workspace(m, n));
  if (!ws) return DCX_ENOMEM;
  struct strided sa = {a, a_rs, a_cs}, sb = {b, b_rs, b_cs};
  const struct gemm_out o = relu_out_stage(bias_m, bias_n, relu);
  gemm_run(m, n, k, strided_a(&sa), NULL, strided_b(&sb), c, c_rs, accumulate, &o, ws);
  return DCX_OK;
}

static int impl_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
                     const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs,
                     int accumulate, const float* bias_m, const float* bias_n, int relu) {
  return gemm_strided(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, accumulate, bias_m, bias_n, relu, NULL);
}

/* ==========================================================================================
 * Linear. */

static int impl_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in,
                               int64_t out, int relu, float* y) {
  /* y [n, out] = x [n, in] . W^T: both run along `in` (the dot path when it is long) */
  return gemm_strided(n, out, in, x, in, 1, w, 1, in, y, out, 0, NULL, bias, relu, NULL);
}

static int impl_linear_backward(const float* gy, const float* x, const float* w, const float* relu_out,
                                int64_t n, int64_t in, int64_t out, float* gx, float* gw, float* gb) {
  const size_t ws_n = gemm_workspace(max64(n, out), in);
  float* ws = dcx_scratch(ws_n + (relu_out ? (size_t)(n * out) : 0));
  if (!ws) return DCX_ENOMEM;
  const float* g = gy;
  if (relu_out) {
    float* masked = ws + ws_n;
    threshold_mask(gy, relu_out, n * out, 0.0f, INFINITY, masked);
    g = masked;
  }
  if (gb) column_sums(g, n, out, gb);
  int rc = DCX_OK;
  if (gx) /* gx [n, in] = g [n, out] . W [out, in] (W rows read in place) */
    rc = gemm_strided(n, in, out, g, out, 1, w, in, 1, gx, in, 0, NULL, NULL, 0, ws);
  if (gw && !rc) /* gw [out, in] = g^T [out, n] . x [n, in] */
    rc = gemm_strided(out, in, n, g, 1, out, x, in, 1, gw, in, 0, NULL, NULL, 0, ws);
  return rc;
}

const struct training_gemm_isa DCX_ISA_TABLE(training_gemm_isa) = {impl_gemm, impl_linear_forward, impl_linear_backward};
