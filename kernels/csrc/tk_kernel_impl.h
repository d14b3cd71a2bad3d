/*
 * The training kernels, written once and compiled once per ISA: tk_isa_portable.c (baseline
 * flags), tk_isa_x86v3.c (-march=x86-64-v3) and tk_isa_neon.c (aarch64 NEON micro-kernels). The
 * including file defines TK_IMPL_VTABLE and, for aarch64, TK_USE_NEON. Arguments were validated
 * by tk_kernels.c.
 *
 * GEMM (BLIS-style): C = A B with A packed into 6-row panels [k][6] and B read in 16-column
 * panels; a 6 x 16 register tile (12 eight-lane accumulators; 24 q registers on NEON, fed by fmla
 * by lane). B rows are read in place when contiguous (a strided operand with unit column stride,
 * or a table of row pointers: the shifted views of a convolution), else packed; C rows may also
 * be a table of row pointers (the input gradient of a convolution, added straight into its phase
 * planes). A dot-product form serves long contiguous reductions (linear layers, weight gradients).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tk_internal.h"
#include "tk_kernels.h"

#if defined(TK_USE_NEON)
#include <arm_neon.h>
#endif

#define TK_INLINE static inline __attribute__((always_inline))
#include "dcx_vec.h"
#define MR 6
#define NR 16
#define KC 256
#define MC 96  /* multiple of MR: a 96 x 256 block of A (96 KB) stays in L2 */
#define NC 512 /* multiple of NR: the packed B block (512 KB at most) */
#define ROWS_OUTER_MAX_B (32 * 1024) /* floats of a B block (128 KB) read row panel by row panel from L2 */

typedef int32_t v8i __attribute__((vector_size(32)));

TK_INLINE v8f splat8(float s) { return (v8f){s, s, s, s, s, s, s, s}; }
TK_INLINE float hsum8(v8f v) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* r[i][j] <- r[j][i]: an 8 x 8 block of floats transposed in registers */
TK_INLINE void transpose8(v8f r[8]) {
  v8f t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; j++) {
      u[i + j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + j + 2] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  /* u[0..3]: pixels 0/4, 2/6, 1/5, 3/7 of channels 0-3; u[4..7] the same of channels 4-7 */
  static const int order[4] = {0, 2, 1, 3};
  for (int i = 0; i < 4; i++) {
    r[order[i]] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[order[i] + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

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

#define TK_C_ROW(r) (crow ? crow[r] + c_rs : c + (r) * c_rs)

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

TK_INLINE v8f select8(v8i keep, v8f a, v8f b) { return (v8f)(((v8i)a & keep) | ((v8i)b & ~keep)); }

/* v clamped to [lo, hi]; NaN goes to lo */
TK_INLINE v8f clamp8(v8f v, v8f lo, v8f hi) {
  v = select8(v > lo, v, lo);
  return select8(v < hi, v, hi);
}

TK_INLINE v8f finish8(v8f v, float scale, float shift, const struct gemm_out* o) {
  if (o->scale_m) v = v * splat8(scale) + splat8(shift);
  return o->clamp ? clamp8(v, splat8(o->lo), splat8(o->hi)) : v;
}

TK_INLINE void store_row16(float* c, int nr, v8f lo, v8f hi) {
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

TK_INLINE void tile_store_row(float* c, int nr, v8f lo, v8f hi, const struct tile_epilogue* e, int r, v8f bn_lo,
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

TK_INLINE void bias_n_lanes(const struct tile_epilogue* e, int nr, v8f* lo, v8f* hi) {
  *lo = splat8(0.0f);
  *hi = splat8(0.0f);
  if (e->finish && e->bias_n) {
    float t[NR] = {0};
    for (int i = 0; i < nr; i++) t[i] = e->bias_n[i];
    *lo = ld8(t);
    *hi = ld8(t + 8);
  }
}

#if defined(TK_USE_NEON)

/* row r's accumulators += B times lane `lane` of a (fma: by lane of a q or a d register) */
#define TK_ROW_FMA_LANE(fma, r, a, lane)       \
  if (rows > r) {                            \
    c##r##0 = fma(c##r##0, b0, a, lane);     \
    c##r##1 = fma(c##r##1, b1, a, lane);     \
    if (!half) {                             \
      c##r##2 = fma(c##r##2, b2, a, lane);   \
      c##r##3 = fma(c##r##3, b3, a, lane);   \
    }                                        \
  }
#define TK_ROW_FMA4(r, a4, lane) TK_ROW_FMA_LANE(vfmaq_laneq_f32, r, a4, lane)
#define TK_ROW_FMA2(r, a2, lane) TK_ROW_FMA_LANE(vfmaq_lane_f32, r, a2, lane)
#define TK_ROW_STORE(r)                                                                          \
  if (mr > r) {                                                                                  \
    float lanes[NR];                                                                             \
    vst1q_f32(lanes, c##r##0);                                                                   \
    vst1q_f32(lanes + 4, c##r##1);                                                               \
    vst1q_f32(lanes + 8, c##r##2);                                                               \
    vst1q_f32(lanes + 12, c##r##3);                                                              \
    tile_store_row(TK_C_ROW(r), nr, ld8(lanes), ld8(lanes + 8), e, r, bn_lo, bn_hi, kind);      \
  }

/* NEON: 24 q accumulators, 4 q of B and 6 floats of A (one q + one d) per k: fmla by lane. */
TK_INLINE void micro_body(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
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
    TK_ROW_FMA4(0, a4, 0) TK_ROW_FMA4(1, a4, 1) TK_ROW_FMA4(2, a4, 2) TK_ROW_FMA4(3, a4, 3)
    TK_ROW_FMA2(4, a2, 0) TK_ROW_FMA2(5, a2, 1)
    ap += MR;
    if (!indirect) bp += b_rs;
  }
  v8f bn_lo, bn_hi;
  bias_n_lanes(e, nr, &bn_lo, &bn_hi);
  TK_ROW_STORE(0) TK_ROW_STORE(1) TK_ROW_STORE(2) TK_ROW_STORE(3) TK_ROW_STORE(4) TK_ROW_STORE(5)
}

#else /* portable vector extensions (SSE2 baseline, AVX2 + FMA in the x86-64-v3 build) */

#define TK_ROW_FMA(r)              \
  if (rows > r) {                  \
    const v8f a = splat8(ap[r]);   \
    c##r##0 += a * b0;             \
    if (!half) c##r##1 += a * b1;  \
  }
#define TK_ROW_STORE(r)                                                                            \
  if (mr > r)                                                                                      \
    tile_store_row(TK_C_ROW(r), nr, c##r##0, c##r##1, e, r, bn_lo, bn_hi, kind);

TK_INLINE void micro_body(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e, const int kind, const int half, const int rows) {
  v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  v8f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  for (int64_t k = 0; k < kc; k++) {
    const float* b = indirect ? brow[k] + b_rs : bp;
    const v8f b0 = ld8(b), b1 = half ? splat8(0.0f) : ld8(b + 8);
    TK_ROW_FMA(0) TK_ROW_FMA(1) TK_ROW_FMA(2) TK_ROW_FMA(3) TK_ROW_FMA(4) TK_ROW_FMA(5)
    ap += MR;
    if (!indirect) bp += b_rs;
  }
  v8f bn_lo, bn_hi;
  bias_n_lanes(e, nr, &bn_lo, &bn_hi);
  TK_ROW_STORE(0) TK_ROW_STORE(1) TK_ROW_STORE(2) TK_ROW_STORE(3) TK_ROW_STORE(4) TK_ROW_STORE(5)
}

#endif

/* For a tile of at most NR / 2 columns (the ragged last one of a 14 x 14 or 7 x 7 plane), a body
 * that computes only those; for a tile of at most 2 or 4 rows (the last one of 8, 16, 32 ... output
 * channels), one that computes only those rows. */
TK_INLINE void micro_rows(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e, const int kind, const int half) {
  if (mr <= 2)
    micro_body(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, half, 2);
  else if (mr <= 4)
    micro_body(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, half, 4);
  else
    micro_body(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, half, MR);
}

TK_INLINE void micro_widths(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                            const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                            const struct tile_epilogue* e, const int kind) {
  if (nr <= NR / 2)
    micro_rows(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, 1);
  else
    micro_rows(indirect, kc, ap, bp, b_rs, brow, c, c_rs, crow, mr, nr, e, kind, 0);
}

/* One copy of the body per output-stage kind (and width), so that each ends in its own
 * straight-line code. */
TK_INLINE void micro_kinds(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
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

TK_INLINE void dot_tile(const int mr, const int nr, int64_t k, const float* a, int64_t a_rs, const float* const bj[4],
                        float out[3][4]) {
  v8f acc[3][4];
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) acc[r][j] = splat8(0.0f);
  int64_t q = 0;
  for (; q + 8 <= k; q += 8) {
    v8f bv[4];
    for (int j = 0; j < nr; j++) bv[j] = ld8(bj[j] + q);
    for (int r = 0; r < mr; r++) {
      const v8f av = ld8(a + r * a_rs + q);
      for (int j = 0; j < nr; j++) acc[r][j] += av * bv[j];
    }
  }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) {
      float t = hsum8(acc[r][j]);
      for (int64_t qq = q; qq < k; qq++) t += a[r * a_rs + qq] * bj[j][qq];
      out[r][j] = t;
    }
}

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
    return TK_OK;
  }
  if (!ws) ws = tk__scratch(gemm_workspace(m, n));
  if (!ws) return TK_ENOMEM;
  struct strided sa = {a, a_rs, a_cs}, sb = {b, b_rs, b_cs};
  const struct gemm_out o = relu_out_stage(bias_m, bias_n, relu);
  gemm_run(m, n, k, strided_a(&sa), NULL, strided_b(&sb), c, c_rs, accumulate, &o, ws);
  return TK_OK;
}

static int impl_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
                     const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t c_rs,
                     int accumulate, const float* bias_m, const float* bias_n, int relu) {
  return gemm_strided(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, accumulate, bias_m, bias_n, relu, NULL);
}

/* ==========================================================================================
 * Elementwise and reductions. */

/* g * (lo < x < hi): a comparison mask ANDed into the bits of g. */
static void threshold_mask(const float* g, const float* x, int64_t n, float lo, float hi, float* out) {
  const v8f vlo = splat8(lo), vhi = splat8(hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f xv = ld8(x + i);
    const v8i keep = (xv > vlo) & (xv < vhi);
    st8(out + i, (v8f)((v8i)ld8(g + i) & keep));
  }
  for (; i < n; i++) out[i] = (x[i] > lo && x[i] < hi) ? g[i] : 0.0f;
}

static int impl_threshold_backward(const float* gy, const float* x, int64_t n, float lo, float hi, float* gx) {
  threshold_mask(gy, x, n, lo, hi, gx);
  return TK_OK;
}

static int impl_sgd_update(float* p, const float* g, int64_t n, float lr) {
  const v8f vlr = splat8(lr);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) st8(p + i, ld8(p + i) - vlr * ld8(g + i));
  for (; i < n; i++) p[i] -= lr * g[i];
  return TK_OK;
}

static float sum_row(const float* a, int64_t n) {
  v8f acc = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += ld8(a + i);
  float s = hsum8(acc);
  for (; i < n; i++) s += a[i];
  return s;
}

static float dot_row(const float* a, const float* b, int64_t n) {
  v8f acc = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += ld8(a + i) * ld8(b + i);
  float s = hsum8(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* acc[j] += a[j] for j < n */
static void add_row(float* acc, const float* a, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) st8(acc + i, ld8(acc + i) + ld8(a + i));
  for (; i < n; i++) acc[i] += a[i];
}

/* column sums of g [rows, cols] into out [cols] (overwritten) */
static void column_sums(const float* g, int64_t rows, int64_t cols, float* out) {
  memset(out, 0, sizeof(float) * (size_t)cols);
  for (int64_t r = 0; r < rows; r++) add_row(out, g + r * cols, cols);
}

static int impl_softmax_backward(const float* gy, const float* y, int64_t rows, int64_t cols, int log_sm,
                                 float* gx) {
  for (int64_t r = 0; r < rows; r++) {
    const float* g = gy + r * cols;
    const float* yr = y + r * cols;
    float* o = gx + r * cols;
    if (log_sm) {
      const float s = sum_row(g, cols);
      for (int64_t j = 0; j < cols; j++) o[j] = g[j] - expf(yr[j]) * s;
    } else {
      const float s = dot_row(g, yr, cols);
      for (int64_t j = 0; j < cols; j++) o[j] = yr[j] * (g[j] - s);
    }
  }
  return TK_OK;
}

static int impl_cross_entropy(const float* z, const int64_t* t, int64_t n, int64_t c, int64_t ignore,
                              float* loss, float* grad) {
  int64_t count = 0;
  for (int64_t r = 0; r < n; r++) {
    if (t[r] == ignore) continue;
    if (t[r] < 0 || t[r] >= c) return TK_EINDEX;
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
  return TK_OK;
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
  return TK_OK;
}

static int impl_layer_norm_backward(const float* gy, const float* x, const float* mean, const float* rstd,
                                    const float* w, int64_t rows, int64_t cols, float* gx, float* gw,
                                    float* gb) {
  float* xhat = tk__scratch((size_t)cols * 2);
  if (!xhat) return TK_ENOMEM;
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
  return TK_OK;
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
  return TK_OK;
}

static int impl_embedding_backward(const float* gy, const void* idx, int is32, int64_t n, int64_t num, int64_t dim,
                                   int64_t padding_idx, float* gw) {
  for (int64_t i = 0; i < n; i++) {
    const int64_t row = is32 ? ((const int32_t*)idx)[i] : ((const int64_t*)idx)[i];
    if (row < 0 || row >= num) return TK_EINDEX;
  }
  memset(gw, 0, sizeof(float) * (size_t)(num * dim));
  for (int64_t i = 0; i < n; i++) {
    const int64_t row = is32 ? ((const int32_t*)idx)[i] : ((const int64_t*)idx)[i];
    if (row != padding_idx) add_row(gw + row * dim, gy + i * dim, dim);
  }
  return TK_OK;
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
  float* ws = tk__scratch(ws_n + (relu_out ? (size_t)(n * out) : 0));
  if (!ws) return TK_ENOMEM;
  const float* g = gy;
  if (relu_out) {
    float* masked = ws + ws_n;
    threshold_mask(gy, relu_out, n * out, 0.0f, INFINITY, masked);
    g = masked;
  }
  if (gb) column_sums(g, n, out, gb);
  int rc = TK_OK;
  if (gx) /* gx [n, in] = g [n, out] . W [out, in] (W rows read in place) */
    rc = gemm_strided(n, in, out, g, out, 1, w, in, 1, gx, in, 0, NULL, NULL, 0, ws);
  if (gw && !rc) /* gw [out, in] = g^T [out, n] . x [n, in] */
    rc = gemm_strided(out, in, n, g, 1, out, x, in, 1, gw, in, 0, NULL, NULL, 0, ws);
  return rc;
}

/* ==========================================================================================
 * Convolution as an implicit GEMM over shifted views. The zero-padded input of a chunk of images
 * is split into its stride phases: plane (c, a, b) holds padded rows a, a + sh, ... and columns
 * b, b + sw, ... of channel c, pr x pc per image. On the grid q = (image, r, s) of pr x pc points
 * per image, tap (i, j) of channel c is then one contiguous run of that phase plane, shifted by
 * (i*dh/sh, j*dw/sw): the GEMM reads B row k = (c, i, j) in place through a table of row
 * pointers, and no column matrix is built. Outputs at grid points r >= oh or s >= ow are
 * computed and dropped (pr*pc is a little more than oh*ow). The backward runs on the same grid:
 * the output gradient is spread on it with zeros at the dropped points, the weight gradient is a
 * dot-product GEMM of its rows with the shifted views, and the input gradient is W^T g on the
 * grid, added back into phase planes along the same views and interleaved into the input. */

struct conv_dims {
  int64_t oh, ow, p, hw, cpg, opg, kg; /* output plane, channels per group in and out, K per group */
  int64_t pr, pc, grid, nph;           /* phase plane rows and columns, grid points per image, phases */
  int64_t chunk, len, planes, slack;   /* images per chunk, grid points per chunk, phase planes */
};

static struct conv_dims conv_dims(const struct tk_conv2d* s) {
  struct conv_dims d;
  d.oh = tk_conv2d_out_h(s);
  d.ow = tk_conv2d_out_w(s);
  d.p = d.oh * d.ow;
  d.hw = s->h * s->w;
  d.cpg = s->c_in / s->groups;
  d.opg = s->c_out / s->groups;
  d.kg = d.cpg * s->kh * s->kw;
  d.pr = d.oh + (s->kh - 1) * s->dil_h / s->stride_h;
  d.pc = d.ow + (s->kw - 1) * s->dil_w / s->stride_w;
  d.grid = d.pr * d.pc;
  d.nph = s->stride_h * s->stride_w;
  d.chunk = max64(1, min64(s->n, (128 * 1024) / (max64(d.kg, s->c_in * d.nph) * d.grid)));
  d.len = d.chunk * d.grid;
  d.planes = s->c_in * d.nph;
  d.slack = (d.pr - d.oh) * d.pc + (d.pc - d.ow) + NR; /* the largest shift, plus a ragged panel */
  return d;
}

static size_t phase_floats(const struct conv_dims* d) { return (size_t)(d->planes * d->len + d->slack); }

static int is_depthwise(const struct tk_conv2d* s) { return s->groups == s->c_in && s->c_out == s->c_in && s->groups > 1; }

/* Where input column iw lands: phase column b = (iw + pw) % sw at q = (iw + pw) / sw. Per phase
 * column b, the first input column iw0[b] and its q0[b] (then iw += sw, q += 1): no division in
 * the loops. */
static void phase_columns(const struct tk_conv2d* s, int64_t* iw0, int64_t* q0) {
  for (int64_t b = 0; b < s->stride_w; b++) {
    iw0[b] = ((b - s->pad_w) % s->stride_w + s->stride_w) % s->stride_w;
    q0[b] = (iw0[b] + s->pad_w) / s->stride_w;
  }
}

/* Where input row ih of channel c of image img lands in phase planes of plane_len floats: the row
 * of its phase (ih + ph) % sh, at r = (ih + ph) / sh, in the planes of phase column 0 (phase column
 * b is b planes further), or NULL when no tap reaches that row. */
static float* phase_row(const struct tk_conv2d* s, const struct conv_dims* d, float* ph, int64_t plane_len,
                        int64_t img, int64_t c, int64_t ih) {
  const int64_t pr = ih + s->pad_h, r = pr / s->stride_h;
  if (r >= d->pr) return NULL;
  const int64_t plane = (c * s->stride_h + pr % s->stride_h) * s->stride_w;
  return ph + plane * plane_len + img * d->grid + r * d->pc;
}

/* The phase planes of a chunk (all c_in channels): ph[(c*sh + a)*sw + b][img][r][s] = padded
 * x[img][c][r*sh + a][s*sw + b], zero outside the input; the slack after the last plane is zeroed.
 * Zero everything, then deal each input row out to its phase rows. */
static void split_phases(const struct tk_conv2d* s, const struct conv_dims* d, const float* x, int64_t nb, float* ph) {
  const int64_t plane_len = nb * d->grid, sw = s->stride_w;
  int64_t iw0[sw], q0[sw];
  phase_columns(s, iw0, q0);
  memset(ph, 0, sizeof(float) * (size_t)(d->planes * plane_len + d->slack));
  for (int64_t img = 0; img < nb; img++)
    for (int64_t c = 0; c < s->c_in; c++)
      for (int64_t ih = 0; ih < s->h; ih++) {
        float* base = phase_row(s, d, ph, plane_len, img, c, ih);
        if (!base) continue;
        const float* src = x + (img * s->c_in + c) * d->hw + ih * s->w;
        if (sw == 1) {
          memcpy(base + s->pad_w, src, sizeof(float) * (size_t)min64(s->w, d->pc - s->pad_w));
        } else if (sw == 2) { /* iw = 2t + r lands in phase column (r + pw) % 2 at q = t + (r + pw) / 2 */
          float* even = base + (s->pad_w % 2) * plane_len + s->pad_w / 2;
          float* odd = base + ((1 + s->pad_w) % 2) * plane_len + (1 + s->pad_w) / 2;
          const int64_t n_even = min64((s->w + 1) / 2, d->pc - s->pad_w / 2);
          const int64_t n_odd = min64(s->w / 2, d->pc - (1 + s->pad_w) / 2);
          int64_t t = 0;
          for (; t + 8 <= n_odd && t + 8 <= n_even; t += 8) { /* 16 inputs: 8 even, 8 odd */
            const v8f lo = ld8(src + 2 * t), hi = ld8(src + 2 * t + 8);
            st8(even + t, __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14));
            st8(odd + t, __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15));
          }
          for (int64_t u = t; u < n_even; u++) even[u] = src[2 * u];
          for (int64_t u = t; u < n_odd; u++) odd[u] = src[2 * u + 1];
        } else {
          for (int64_t b = 0; b < sw; b++) { /* phase column b: iw = iw0, iw0 + sw, ... */
            float* dst = base + b * plane_len;
            for (int64_t iw = iw0[b], q = q0[b]; iw < s->w && q < d->pc; iw += sw, q++) dst[q] = src[iw];
          }
        }
      }
}

/* gx[img][c] = the gradient phase planes at the padded-input positions inside the input (0 where
 * no tap reaches): split_phases backwards. */
static void merge_phases(const struct tk_conv2d* s, const struct conv_dims* d, float* gph, int64_t nb, float* gx) {
  const int64_t plane_len = nb * d->grid, sw = s->stride_w;
  int64_t iw0[sw], q0[sw];
  phase_columns(s, iw0, q0);
  for (int64_t img = 0; img < nb; img++)
    for (int64_t c = 0; c < s->c_in; c++)
      for (int64_t ih = 0; ih < s->h; ih++) {
        float* dst = gx + (img * s->c_in + c) * d->hw + ih * s->w;
        const float* base = phase_row(s, d, gph, plane_len, img, c, ih);
        if (!base) {
          memset(dst, 0, sizeof(float) * (size_t)s->w);
          continue;
        }
        for (int64_t b = 0; b < sw; b++) {
          const float* src = base + b * plane_len;
          for (int64_t iw = iw0[b], q = q0[b]; iw < s->w; iw += sw, q++) dst[iw] = q < d->pc ? src[q] : 0.0f;
        }
      }
}

/* rows[(c*kh + i)*kw + j] = the shifted view of tap (i, j) of channel c in the planes at ph. */
static void tap_rows(const struct tk_conv2d* s, const struct conv_dims* d, int64_t nb, float* ph, float** rows) {
  for (int64_t c = 0; c < s->c_in; c++)
    for (int64_t i = 0; i < s->kh; i++)
      for (int64_t j = 0; j < s->kw; j++) {
        const int64_t dy = i * s->dil_h, dx = j * s->dil_w;
        const int64_t plane = (c * s->stride_h + dy % s->stride_h) * s->stride_w + dx % s->stride_w;
        rows[(c * s->kh + i) * s->kw + j] = ph + plane * nb * d->grid + (dy / s->stride_h) * d->pc + dx / s->stride_w;
      }
}

/* ------------------------------------------------------------------ the output stage, the gradient in */

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
 * on the mean, or y centred on the norm's bias), once every row is fetched exactly once. */
struct grad_src {
  const float* gy;
  const float* y;
  float lo, hi;
  const float* scale;
  float* sum_g;
  float* sum_gx;
  const float* norm_in;
  const float* centre;
};

/* dst[i] = g at flat index at + i, channel ch */
static void grad_row(const struct grad_src* src, int64_t at, int64_t n, int64_t ch, float* dst) {
  const float* gy = src->gy + at;
  const float* y = src->y ? src->y + at : NULL;
  const float* cx = src->sum_g ? src->norm_in + at : NULL;
  const v8f vlo = splat8(src->lo), vhi = splat8(src->hi), sc = splat8(src->scale ? src->scale[ch] : 1.0f);
  const v8f mean = splat8(cx ? src->centre[ch] : 0.0f);
  v8f acc_g = splat8(0.0f), acc_gx = splat8(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f g = ld8(gy + i);
    if (y) {
      const v8f yv = ld8(y + i);
      g = (v8f)((v8i)g & ((yv > vlo) & (yv < vhi)));
    }
    if (cx) {
      acc_g += g;
      acc_gx += g * (ld8(cx + i) - mean);
    }
    st8(dst + i, src->scale ? g * sc : g);
  }
  float sg = hsum8(acc_g), sgx = hsum8(acc_gx);
  for (; i < n; i++) {
    float g = gy[i];
    if (y && !(y[i] > src->lo && y[i] < src->hi)) g = 0.0f;
    if (cx) {
      sg += g;
      sgx += g * (cx[i] - mean[0]);
    }
    dst[i] = src->scale ? g * sc[0] : g;
  }
  if (cx) {
    src->sum_g[ch] += sg;
    src->sum_gx[ch] += sgx;
  }
}

/* ------------------------------------------------------------------ depthwise: eight channels per vector */

/* A depthwise convolution (but the MobileNet 3 x 3, below) runs on blocks of eight channels held
 * channels-last: one vector is one pixel of the eight channels, so every tap of every output pixel
 * is one full-width FMA, for any plane size and stride, and the block's weights are one vector per
 * tap (lanes past c_in are zero and never stored). Per image and block: the input goes into a
 * zero-bordered [hp][wp][8] buffer (8 x 8 transposes), the taps run, and the result comes back to
 * NCHW through the output stage; backward, the gradient is fetched plane by plane (grad_row),
 * transposed, and one pass over the output pixels adds into the weight-gradient vectors and
 * scatters into the padded input gradient. */

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

static struct dw_geom dw_geom(const struct tk_conv2d* s) {
  struct dw_geom g;
  g.oh = tk_conv2d_out_h(s);
  g.ow = tk_conv2d_out_w(s);
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
static void pad_c8(const struct tk_conv2d* s, const struct dw_geom* g, const float* const planes[8], float* tmp,
                   float* xp) {
  to_c8(planes, s->h * s->w, tmp);
  memset(xp, 0, sizeof(float) * 8 * (size_t)(g->hp * g->wp));
  for (int64_t ih = 0; ih < s->h; ih++)
    memcpy(xp + ((ih + s->pad_h) * g->wp + s->pad_w) * 8, tmp + ih * s->w * 8, sizeof(float) * 8 * (size_t)s->w);
}

/* the offsets (in floats) of the taps in the padded buffer, and the weights of the block by tap */
static void dw_block_taps(const struct tk_conv2d* s, const struct dw_geom* g, const float* w, int64_t c0,
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

static int dw_bufs(const struct tk_conv2d* s, const struct dw_geom* g, int backward, struct dw_bufs* b) {
  const size_t pad = 8 * (size_t)(g->hp * g->wp), out = 8 * (size_t)g->p, img = 8 * (size_t)(s->h * s->w);
  const size_t taps = (size_t)g->taps;
  float* ws = tk__scratch((backward ? 2 : 1) * pad + img + 2 * out + 18 * taps);
  if (!ws) return TK_ENOMEM;
  b->xp = ws;
  b->gxp = backward ? ws + pad : NULL;
  b->xc = ws + (backward ? 2 : 1) * pad;
  b->pix = b->xc + img;
  b->planes = b->pix + out;
  b->wv = b->planes + out;
  b->acc = b->wv + 8 * taps;
  b->off = (int64_t*)(void*)(b->acc + 8 * taps);
  return TK_OK;
}

static int depthwise_forward(const struct tk_conv2d* s, const float* x, const float* w, const struct gemm_out* o,
                             float* raw, float* y) {
  const struct dw_geom g = dw_geom(s);
  struct dw_bufs bf;
  if (dw_bufs(s, &g, 0, &bf)) return TK_ENOMEM;
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
  return TK_OK;
}

static int depthwise_backward(const struct tk_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                              float* gx, float* gw, float* gb) {
  const struct dw_geom g = dw_geom(s);
  struct dw_bufs bf;
  if (dw_bufs(s, &g, 1, &bf)) return TK_ENOMEM;
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
  return TK_OK;
}

/* ------------------------------------------------------------------ depthwise 3 x 3: plane by plane */

/* The MobileNet depthwise layer (3 x 3, padding 1, stride 1 or 2) runs on the NCHW planes as they
 * are, eight output columns per vector: each plane is copied once into a zero-bordered buffer that
 * stays in L2 (for stride 2, split into its even and odd columns), and each output vector is nine
 * FMAs over shifted loads. Backward, the plane's output gradient is fetched (grad_row) into a
 * bordered buffer; the weight gradient is nine accumulators over it, and the input gradient is
 * gathered row by row (for stride 2 as its odd and even columns, then interleaved): no transposes
 * and no scatter. Other depthwise shapes, and stride 2 onto short rows, take the channels-last
 * blocks above. */

/* 3 x 3, padding 1, stride 1 or 2 alike: the geometry of these kernels and of the stem's below */
static int is_3x3_pad1(const struct tk_conv2d* s) {
  return s->kh == 3 && s->kw == 3 && s->pad_h == 1 && s->pad_w == 1 && s->dil_h == 1 && s->dil_w == 1 &&
         s->stride_h == s->stride_w && s->stride_h <= 2;
}

/* Stride 2 onto output rows narrower than this stays on the channels-last blocks: split into even and
 * odd columns, such short rows leave most of each vector idle (measured: 28x28 -> 14x14 and 14x14 ->
 * 7x7 about twice as fast there, forward and backward; 56x56 -> 28x28 faster here). */
#define DW3_S2_MIN_OW 16

static int is_dw3x3(const struct tk_conv2d* s) {
  return is_depthwise(s) && is_3x3_pad1(s) && (s->stride_h == 1 || tk_conv2d_out_w(s) >= DW3_S2_MIN_OW);
}

#define DW3_AT 8 /* a stride-1 padded row's first input column: whole-vector stores, the zero pad before it */

/* padded row strides, each with room for the shifted loads of a row's last vector: rs (input),
 * ers = rs / 2 (a row's even or odd columns), grs (output gradient) */
struct dw3 {
  int64_t h, w, oh, ow, stride, rs, ers, grs;
};

static struct dw3 dw3_geom(const struct tk_conv2d* s) {
  struct dw3 g = {s->h, s->w, tk_conv2d_out_h(s), tk_conv2d_out_w(s), s->stride_h, 0, 0, 0};
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
TK_INLINE void copy_row(float* dst, const float* src, int64_t n) {
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
TK_INLINE v8f dw3_taps_s1(const float* const p[3], int64_t ow, const v8f wt[9]) {
  v8f a[3];
  for (int i = 0; i < 3; i++)
    a[i] = wt[3 * i] * ld8(p[i] + ow) + wt[3 * i + 1] * ld8(p[i] + ow + 1) + wt[3 * i + 2] * ld8(p[i] + ow + 2);
  return a[0] + a[1] + a[2];
}
TK_INLINE v8f dw3_taps_s2(const float* const e[3], const float* const o[3], int64_t ow, const v8f wt[9]) {
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

static int dw3x3_forward(const struct tk_conv2d* s, const float* x, const float* w, const struct gemm_out* out,
                         float* raw, float* y) {
  const struct dw3 g = dw3_geom(s);
  float* xp = tk__scratch(dw3_scratch(&g));
  if (!xp) return TK_ENOMEM;
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
  return TK_OK;
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
TK_INLINE v8f dw3_transposed_taps(const v8f wt[9], const float* r0, const float* r1, const float* r2) {
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

static int dw3x3_backward(const struct tk_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                          float* gx, float* gw, float* gb) {
  const struct dw3 g = dw3_geom(s);
  float* xp = tk__scratch(dw3_scratch(&g));
  if (!xp) return TK_ENOMEM;
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
  return TK_OK;
}

/* ------------------------------------------------------------------ a stem: 3 x 3 over a few input channels */

/* A network's first convolution (3 x 3 over RGB or up to 4 channels, padding 1, stride 1 or 2) is
 * too narrow for the GEMM (K = 9 c_in, M = c_out): it runs row by row instead. Output row oh reads
 * c_in x 3 padded input rows (dw3_pad_row: for stride 2 as even and odd columns), each built once
 * per image into a ring of four rows per channel; then per 4 output channels and 16 output
 * columns, each of the 9 c_in taps is two input vectors FMA'd into 8 accumulators with broadcast
 * weights (packed [quad][c][tap][4], zero past c_out). The backward stays on the general path
 * below: its dot-product weight gradient over the whole grid measured faster than row-wise
 * accumulators here. */
#define STEM_MAX_CIN 4

static int is_stem3x3(const struct tk_conv2d* s) { return s->groups == 1 && s->c_in <= STEM_MAX_CIN && is_3x3_pad1(s); }

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
TK_INLINE void stem_taps(const struct dw3* g, const float* r, int64_t ow, v8f t[3]) {
  if (g->stride == 1) {
    t[0] = ld8(r + ow), t[1] = ld8(r + ow + 1), t[2] = ld8(r + ow + 2);
  } else {
    t[0] = ld8(r + ow), t[1] = ld8(r + g->ers + ow), t[2] = ld8(r + ow + 1);
  }
}

static int stem3x3_forward(const struct tk_conv2d* s, const float* x, const float* w, const struct gemm_out* out,
                           float* raw, float* y) {
  const struct dw3 g = dw3_geom(s);
  const int64_t quads = ceil_div(s->c_out, 4), taps = s->c_in * 9, ors = ceil_div(g.ow, 16) * 16;
  float* rows = tk__scratch((size_t)(s->c_in * 4 * g.rs + 16 + quads * taps * 4 + 4 * ors));
  if (!rows) return TK_ENOMEM;
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
  return TK_OK;
}

/* ------------------------------------------------------------------ pointwise: plain GEMMs per image */

static int is_pointwise(const struct tk_conv2d* s) {
  return s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_h == 0 && s->pad_w == 0 &&
         s->groups == 1;
}

/* A batch in NCHW seen as [c][n * hw]: channel c of pixel q of image b is p[b * img + c * hw + q],
 * column b * hw + q. */
struct images {
  const float* p;
  int64_t hw, img;
};

/* The view summed over: element (i, k) of A, or (k, j) of B, is channel i or j at column k. */
static void pack_images(const struct images* s, int64_t k0, int64_t kc, int64_t i0, int64_t ni, int width,
                        float* dst) {
  for (int64_t kk = 0, q = k0 % s->hw, img = k0 / s->hw; kk < kc; q = 0, img++) { /* image by image */
    const int64_t len = min64(s->hw - q, kc - kk);
    const float* rows[NR];
    for (int l = 0; l < width; l++) rows[l] = l < ni ? s->p + img * s->img + (i0 + l) * s->hw + q : NULL;
    pack_rows(rows, len, width, dst + kk * width);
    kk += len;
  }
}

static void pack_a_images(const void* ctx, int64_t k0, int64_t kc, int64_t i0, int64_t ni, float* dst) {
  pack_images((const struct images*)ctx, k0, kc, i0, ni, MR, dst);
}

static void pack_b_images(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nj, float* dst) {
  pack_images((const struct images*)ctx, k0, kc, j0, nj, NR, dst);
}

/* The view as it is, as B: element (k, j) is channel k at column j (the pixels of every image). */
static void pack_b_pixels(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nj, float* dst) {
  const struct images* s = (const struct images*)ctx;
  for (int64_t l = 0; l < nj;) { /* the panel's columns image by image */
    const int64_t q = (j0 + l) % s->hw, len = min64(s->hw - q, nj - l);
    const float* src = s->p + (j0 + l) / s->hw * s->img + k0 * s->hw + q;
    for (int64_t kk = 0; kk < kc; kk++) memcpy(dst + kk * NR + l, src + kk * s->hw, sizeof(float) * (size_t)len);
    l += len;
  }
  for (int64_t kk = 0; kk < kc; kk++)
    for (int64_t l = nj; l < NR; l++) dst[kk * NR + l] = 0.0f;
}

static struct operand pixels_b(struct images* s) { return (struct operand){pack_b_pixels, s, NULL, 0, NULL}; }

/* y [n][c][hw] = the output stage o of t [c][n * hw] (raw too, when given): a GEMM over every
 * image's pixels back to NCHW */
static void pixels_to_images(const float* t, int64_t n, int64_t c, int64_t hw, const struct gemm_out* o, float* raw,
                             float* y) {
  for (int64_t b = 0; b < n; b++)
    for (int64_t ch = 0; ch < c; ch++) {
      const int64_t at = (b * c + ch) * hw;
      out_row(t + (ch * n + b) * hw, hw, ch, o, raw ? raw + at : NULL, y + at);
    }
}

/* Planes smaller than this run as one GEMM over the pixels of every image: per image, a plane
 * of 7 x 7 is three column panels and a ragged one of a single column (measured: the 7 x 7 layers
 * of the mobile-scale program faster as one GEMM; 14 x 14 planes no faster). */
#define BATCHED_PW_MAX_HW 64

/* y_b [c_out, hw] = W [c_out, c_in] x_b [c_in, hw]: x rows read in place, the output stage in the
 * tiles; for small planes, one GEMM over every image into scratch, the output stage row by row. */
static int pointwise_forward(const struct tk_conv2d* s, const float* x, const float* w, const struct gemm_out* o,
                             float* raw, float* y) {
  const int64_t hw = s->h * s->w, co = s->c_out;
  const int batched = s->n > 1 && hw < BATCHED_PW_MAX_HW;
  const int64_t cols = batched ? s->n * hw : hw;
  const size_t pa = packed_a_size(co, s->c_in), ws_n = gemm_workspace(co, cols);
  float* ws = tk__scratch(pa + ws_n + (batched ? (size_t)(co * cols) : 0));
  if (!ws) return TK_ENOMEM;
  struct strided sw = {w, s->c_in, 1};
  pack_a_all(co, s->c_in, strided_a(&sw), ws);
  if (batched) {
    struct images bx = {x, hw, s->c_in * hw};
    float* t = ws + pa + ws_n;
    gemm_run(co, cols, s->c_in, (struct operand){0}, ws, pixels_b(&bx), t, cols, 0, &plain_out, ws + pa);
    pixels_to_images(t, s->n, co, hw, o, raw, y);
    return TK_OK;
  }
  struct gemm_out ob = *o;
  ob.out_delta = raw ? (intptr_t)((char*)y - (char*)raw) : 0; /* the two outputs have the same layout */
  for (int64_t b = 0; b < s->n; b++) {
    struct strided sx = {x + b * s->c_in * hw, hw, 1};
    float* c = (raw ? raw : y) + b * co * hw;
    gemm_run(co, hw, s->c_in, (struct operand){0}, ws, strided_b(&sx), c, hw, 0, &ob, ws + pa);
  }
  return TK_OK;
}

#define DOT_K_BLOCK 2048 /* weight gradient: hw in blocks whose rows of g and x stay in L2 */
#define BATCHED_GW_MAX_HW 256 /* below this plane size the weight gradient is one GEMM over every image */

/* g [n][c_out][hw] fetched once (gb += its row sums); gw = sum over images of g_b x_b^T: dot products
 * over hw per image for large planes, one packed GEMM with k = n * hw over every image for small ones
 * (where a dot product per image is too short); gx_b = W^T g_b (W^T packed once, g rows read in place),
 * or for the smallest planes gx = W^T g as one GEMM over every image's pixels, then copied out. */
static int pointwise_backward(const struct tk_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                              float* gx, float* gw, float* gb) {
  const int64_t hw = s->h * s->w, ci = s->c_in, co = s->c_out, cols = s->n * hw;
  const int plain = !src->y && !src->scale && !src->sum_g, batched = gw && hw < BATCHED_GW_MAX_HW;
  const int batched_gx = gx && s->n > 1 && hw < BATCHED_PW_MAX_HW;
  const int64_t images_held = batched || batched_gx ? s->n : 1; /* g of every image, or of one at a time */
  const size_t pa = gx ? packed_a_size(ci, co) : 0;
  const size_t ws_n = (size_t)max64(gx ? (int64_t)gemm_workspace(ci, batched_gx ? cols : hw) : 0,
                                    batched ? (int64_t)gemm_workspace(co, ci) : 0);
  float* ws = tk__scratch(pa + ws_n + (plain ? 0 : (size_t)(images_held * co * hw)) + (batched_gx ? (size_t)(ci * cols) : 0));
  if (!ws) return TK_ENOMEM;
  float* held = ws + pa + ws_n;
  if (gx) {
    struct strided swt = {w, 1, ci};
    pack_a_all(ci, co, strided_a(&swt), ws);
  }
  if (gb) memset(gb, 0, sizeof(float) * (size_t)co);
  for (int64_t b = 0; b < s->n; b++) {
    float* g = plain ? (float*)src->gy + b * co * hw : held + (images_held > 1 ? b * co * hw : 0);
    if (!plain)
      for (int64_t o = 0; o < co; o++) grad_row(src, (b * co + o) * hw, hw, o, g + o * hw);
    if (gb)
      for (int64_t o = 0; o < co; o++) gb[o] += sum_row(g + o * hw, hw);
    if (gw && !batched)
      for (int64_t k0 = 0; k0 < hw; k0 += DOT_K_BLOCK)
        gemm_dot(co, ci, min64(DOT_K_BLOCK, hw - k0), g + k0, hw, x + b * ci * hw + k0, hw, NULL, gw, ci,
                 b > 0 || k0 > 0, NULL, NULL, 0);
    if (gx && !batched_gx) {
      struct strided sg = {g, hw, 1};
      gemm_run(ci, hw, co, (struct operand){0}, ws, strided_b(&sg), gx + b * ci * hw, hw, 0, &plain_out, ws + pa);
    }
  }
  struct images all_g = {plain ? src->gy : held, hw, co * hw};
  if (batched) {
    struct images bx = {x, hw, ci * hw};
    gemm_run(co, ci, cols, (struct operand){pack_a_images, &all_g, NULL, 0, NULL}, NULL,
             (struct operand){pack_b_images, &bx, NULL, 0, NULL}, gw, ci, 0, &plain_out, ws + pa);
  }
  if (batched_gx) {
    float* t = held + (plain ? 0 : images_held * co * hw); /* [ci][n * hw] */
    gemm_run(ci, cols, co, (struct operand){0}, ws, pixels_b(&all_g), t, cols, 0, &plain_out, ws + pa);
    pixels_to_images(t, s->n, ci, hw, &plain_out, NULL, gx);
  }
  return TK_OK;
}

/* ------------------------------------------------------------------ any convolution */

/* y = the output stage o of conv(x, w) (o->bias_m: the convolution's bias), raw = conv + bias when
 * raw is given (o->out_delta is set here). */
static int conv_forward(const struct tk_conv2d* s, const float* x, const float* w, const struct gemm_out* o, float* raw,
                        float* y) {
  if (is_dw3x3(s)) return dw3x3_forward(s, x, w, o, raw, y);
  if (is_stem3x3(s)) return stem3x3_forward(s, x, w, o, raw, y);
  if (is_depthwise(s)) return depthwise_forward(s, x, w, o, raw, y);
  if (is_pointwise(s)) return pointwise_forward(s, x, w, o, raw, y);
  const struct conv_dims d = conv_dims(s);
  const size_t pa = packed_a_size(d.opg, d.kg), ws_n = gemm_workspace(d.opg, d.len);
  const size_t ntab = (size_t)(s->groups * d.kg);
  float* ws = tk__scratch(2 * ntab + ws_n + pa * (size_t)s->groups + phase_floats(&d) + (size_t)(d.opg * d.len));
  if (!ws) return TK_ENOMEM;
  float** rows = (float**)(void*)ws; /* the scratch is 64-byte aligned */
  float* gws = ws + 2 * ntab;
  float* a_full = gws + ws_n;
  float* ph = a_full + pa * (size_t)s->groups;
  float* tmp = ph + phase_floats(&d);
  for (int64_t g = 0; g < s->groups; g++) { /* weights packed once, reused by every chunk */
    struct strided sw = {w + g * d.opg * d.kg, d.kg, 1};
    pack_a_all(d.opg, d.kg, strided_a(&sw), a_full + g * pa);
  }
  for (int64_t b0 = 0; b0 < s->n; b0 += d.chunk) {
    const int64_t nb = min64(d.chunk, s->n - b0), len = nb * d.grid;
    split_phases(s, &d, x + b0 * s->c_in * d.hw, nb, ph);
    tap_rows(s, &d, nb, ph, rows);
    for (int64_t g = 0; g < s->groups; g++) {
      gemm_run(d.opg, len, d.kg, (struct operand){0}, a_full + g * pa, row_table_b((const float* const*)rows + g * d.kg),
               tmp, len, 0, &plain_out, gws);
      for (int64_t b = 0; b < nb; b++)
        for (int64_t oc = 0; oc < d.opg; oc++) {
          const int64_t ch = g * d.opg + oc, at = ((b0 + b) * s->c_out + ch) * d.p;
          const float* t = tmp + oc * len + b * d.grid;
          for (int64_t r = 0; r < d.oh; r++)
            out_row(t + r * d.pc, d.ow, ch, o, raw ? raw + at + r * d.ow : NULL, y + at + r * d.ow);
        }
    }
  }
  return TK_OK;
}

static int impl_conv2d_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                               int relu, float* y) {
  const struct gemm_out o = relu_out_stage(bias, NULL, relu);
  return conv_forward(s, x, w, &o, NULL, y);
}

static int conv_backward(const struct tk_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                         float* gx, float* gw, float* gb) {
  if (is_dw3x3(s)) return dw3x3_backward(s, src, x, w, gx, gw, gb);
  if (is_depthwise(s)) return depthwise_backward(s, src, x, w, gx, gw, gb);
  if (is_pointwise(s)) return pointwise_backward(s, src, x, w, gx, gw, gb);
  const struct conv_dims d = conv_dims(s);
  const size_t ntab = (size_t)(s->groups * d.kg);
  const size_t ws_n = gx ? gemm_workspace(d.kg, d.len) : 0, pa = gx ? packed_a_size(d.kg, d.opg) : 0;
  float* ws = tk__scratch(2 * ntab + ws_n + pa * (size_t)s->groups + 2 * phase_floats(&d) + (size_t)(s->c_out * d.len));
  if (!ws) return TK_ENOMEM;
  float** rows = (float**)(void*)ws;
  float* gws = ws + 2 * ntab;
  float* wt = gws + ws_n;
  float* ph = wt + pa * (size_t)s->groups;  /* input phases (weight gradient) */
  float* gph = ph + phase_floats(&d);       /* gradient phases (input gradient) */
  float* gg = gph + phase_floats(&d);       /* the output gradient on the grid */
  if (gb) memset(gb, 0, sizeof(float) * (size_t)s->c_out);
  if (gx)
    for (int64_t g = 0; g < s->groups; g++) { /* A(k, o) = W[o, k]: the weights transposed, packed once */
      struct strided sw = {w + g * d.opg * d.kg, 1, d.kg};
      pack_a_all(d.kg, d.opg, strided_a(&sw), wt + g * pa);
    }
  for (int64_t b0 = 0; b0 < s->n; b0 += d.chunk) {
    const int64_t nb = min64(d.chunk, s->n - b0), len = nb * d.grid;
    memset(gg, 0, sizeof(float) * (size_t)(s->c_out * len));
    for (int64_t b = 0; b < nb; b++)
      for (int64_t o = 0; o < s->c_out; o++) {
        const int64_t at = ((b0 + b) * s->c_out + o) * d.p;
        float* dst = gg + o * len + b * d.grid;
        for (int64_t r = 0; r < d.oh; r++) grad_row(src, at + r * d.ow, d.ow, o, dst + r * d.pc);
      }
    if (gb)
      for (int64_t o = 0; o < s->c_out; o++) gb[o] += sum_row(gg + o * len, len);
    if (gw) {
      split_phases(s, &d, x + b0 * s->c_in * d.hw, nb, ph);
      tap_rows(s, &d, nb, ph, rows);
      for (int64_t g = 0; g < s->groups; g++) /* gw [opg, kg] += gg [opg, len] . views^T */
        gemm_dot(d.opg, d.kg, len, gg + g * d.opg * len, len, NULL, 0, (const float* const*)rows + g * d.kg,
                 gw + g * d.opg * d.kg, d.kg, b0 > 0, NULL, NULL, 0);
    }
    if (gx) {
      memset(gph, 0, sizeof(float) * phase_floats(&d));
      tap_rows(s, &d, nb, gph, rows);
      for (int64_t g = 0; g < s->groups; g++) { /* gph views += W^T gg: the GEMM adds straight into them */
        struct strided sg = {gg + g * d.opg * len, len, 1};
        gemm_run_rows(d.kg, len, d.opg, (struct operand){0}, wt + g * pa, strided_b(&sg), NULL, 0, rows + g * d.kg, 1,
                      &plain_out, gws);
      }
      merge_phases(s, &d, gph, nb, gx + b0 * s->c_in * d.hw);
    }
  }
  return TK_OK;
}

static int impl_conv2d_backward(const struct tk_conv2d* s, const float* gy, const float* x, const float* w,
                                const float* relu_out, float* gx, float* gw, float* gb) {
  const struct grad_src src = {gy, relu_out, 0.0f, INFINITY, NULL, NULL, NULL, NULL, NULL};
  return conv_backward(s, &src, x, w, gx, gw, gb);
}

/* Convolution + frozen batch norm + clamp: the norm folded into a per-channel scale and shift of
 * the output stage, and, backward, into the gradient the convolution backward fetches.
 *
 * The norm's weight gradient needs xhat = (conv_out - mean) * rsqrt(var + eps) where the clamp
 * passes the gradient, and there y = weight * xhat + bias exactly but for rounding: xhat = (y -
 * bias) / weight, with an error of about eps_float * (|bias / weight| + |mean| * rsqrt(var + eps)
 * + |xhat|). Where every channel bounds the first two terms by 32 (a few 1e-6 at most, against
 * the 1e-7 of conv_out - mean), the backward takes xhat from y, and a forward whose conv_out only
 * this backward reads (lazy_conv_out) does not write it: one output tensor less written, and read,
 * per layer. Both sides decide with this one test on the same parameters. */
#define BN_RECOVER_BOUND 32.0f

static int bn_recovers_from_y(const struct tk_bn* bn, int64_t c) {
  if (!bn->weight) return 0;
  for (int64_t i = 0; i < c; i++) {
    const float w = fabsf(bn->weight[i]), b = bn->bias ? fabsf(bn->bias[i]) : 0.0f;
    const float m = fabsf(bn->mean[i]) / sqrtf(bn->var[i] + bn->eps);
    if (!(w > 0.0f && b <= BN_RECOVER_BOUND * w && m <= BN_RECOVER_BOUND)) return 0; /* NaN fails too */
  }
  return 1;
}

static int impl_conv2d_bn_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                                  const struct tk_bn* bn, float lo, float hi, float* conv_out, float* y,
                                  int lazy_conv_out) {
  float* ss = (float*)malloc(sizeof(float) * 2 * (size_t)s->c_out);
  if (!ss) return TK_ENOMEM;
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

static int impl_conv2d_bn_backward(const struct tk_conv2d* s, const float* gy, const float* y, const float* conv_out,
                                   const float* x, const float* w, const struct tk_bn* bn, float lo, float hi, float* gx,
                                   float* gw, float* gb, float* g_bn_w, float* g_bn_b) {
  const int64_t c = s->c_out;
  float* scale = (float*)malloc(sizeof(float) * 4 * (size_t)c);
  if (!scale) return TK_ENOMEM;
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

/* ==========================================================================================
 * Pooling (floor mode). */

/* Window (oh, ow): its corner in padded coordinates, its rows [hs, he) and columns [ws, we) inside
 * the input, and the divisor of an average (the whole window clipped to the padded input with
 * count_include_pad, else its part inside the input). */
struct pool_window {
  int64_t hs, he, ws, we;
  float divisor;
};

static struct pool_window pool_window(const struct tk_pool2d* s, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * s->stride_h - s->pad_h, w0 = ow * s->stride_w - s->pad_w;
  struct pool_window win = {max64(h0, 0), min64(h0 + s->kh, s->h), max64(w0, 0), min64(w0 + s->kw, s->w), 0.0f};
  if (s->count_include_pad)
    win.divisor = (float)((min64(h0 + s->kh, s->h + s->pad_h) - h0) * (min64(w0 + s->kw, s->w + s->pad_w) - w0));
  else
    win.divisor = (float)((win.he - win.hs) * (win.we - win.ws));
  return win;
}

static int impl_max_pool2d_forward(const struct tk_pool2d* s, const float* x, float* y, int64_t* idx) {
  const int64_t oh_n = tk_pool2d_out_h(s), ow_n = tk_pool2d_out_w(s), hw = s->h * s->w;
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
  return TK_OK;
}

static int impl_max_pool2d_backward(const struct tk_pool2d* s, const float* gy, const int64_t* idx, float* gx) {
  const int64_t per = tk_pool2d_out_h(s) * tk_pool2d_out_w(s), hw = s->h * s->w;
  memset(gx, 0, sizeof(float) * (size_t)(s->n * s->c * hw));
  for (int64_t pl = 0; pl < s->n * s->c; pl++)
    for (int64_t o = 0; o < per; o++) {
      const int64_t at = idx[pl * per + o];
      if (at < 0 || at >= hw) return TK_EINDEX;
      gx[pl * hw + at] += gy[pl * per + o];
    }
  return TK_OK;
}

/* Average pooling forward (y) or backward (gx += gy / divisor over each window). */
static int avg_pool2d(const struct tk_pool2d* s, const float* in, float* out, int backward) {
  const int64_t oh_n = tk_pool2d_out_h(s), ow_n = tk_pool2d_out_w(s), hw = s->h * s->w;
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
  return TK_OK;
}

static int impl_avg_pool2d_forward(const struct tk_pool2d* s, const float* x, float* y) { return avg_pool2d(s, x, y, 0); }
static int impl_avg_pool2d_backward(const struct tk_pool2d* s, const float* gy, float* gx) { return avg_pool2d(s, gy, gx, 1); }

const struct tk_impl TK_IMPL_VTABLE = {
    impl_gemm,
    impl_linear_forward,
    impl_linear_backward,
    impl_conv2d_forward,
    impl_conv2d_backward,
    impl_conv2d_bn_forward,
    impl_conv2d_bn_backward,
    impl_max_pool2d_forward,
    impl_max_pool2d_backward,
    impl_avg_pool2d_forward,
    impl_avg_pool2d_backward,
    impl_threshold_backward,
    impl_softmax_backward,
    impl_cross_entropy,
    impl_bce_with_logits,
    impl_layer_norm_backward,
    impl_batch_norm_frozen_backward,
    impl_embedding_backward,
    impl_sgd_update,
};
