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

typedef int32_t v8i __attribute__((vector_size(32)));

TK_INLINE v8f splat8(float s) { return (v8f){s, s, s, s, s, s, s, s}; }
TK_INLINE float hsum8(v8f v) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ==========================================================================================
 * Packers. A pack fills dst[kk*MR + r] (A: rows i0 + r < i0 + ni) or dst[kk*NR + l] (B: columns
 * j0 + l) for kk < kc, zero beyond ni. */

typedef void (*pack_fn)(const void* ctx, int64_t k0, int64_t kc, int64_t i0, int64_t ni, float* dst);

struct strided {
  const float* p;
  int64_t rs, cs; /* element (i, k) of A or (k, j) of B: A: p[i*rs + k*cs], B: p[k*rs + j*cs] */
};

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
  /* lanes far apart: walk each lane along k (contiguous when k_stride == 1) */
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

struct tile_epilogue {
  int load;            /* add the current C */
  int finish;          /* last K block: add the biases, apply ReLU */
  const float* bias_m; /* at the tile's first row, or NULL */
  const float* bias_n; /* at the tile's first column, or NULL */
  int relu;
};

TK_INLINE void tile_store_row(float* c, int nr, v8f lo, v8f hi, const struct tile_epilogue* e,
                              float bm, v8f bn_lo, v8f bn_hi) {
  float tmp[NR];
  if (e->load) {
    if (nr == NR) {
      lo += ld8(c);
      hi += ld8(c + 8);
    } else {
      for (int i = 0; i < NR; i++) tmp[i] = i < nr ? c[i] : 0.0f;
      lo += ld8(tmp);
      hi += ld8(tmp + 8);
    }
  }
  if (e->finish) {
    lo += bn_lo + splat8(bm);
    hi += bn_hi + splat8(bm);
    if (e->relu) {
      const v8f z = splat8(0.0f);
      lo = (v8f)((v8i)lo & (v8i)(lo > z));
      hi = (v8f)((v8i)hi & (v8i)(hi > z));
    }
  }
  if (nr == NR) {
    st8(c, lo);
    st8(c + 8, hi);
  } else {
    st8(tmp, lo);
    st8(tmp + 8, hi);
    for (int i = 0; i < nr; i++) c[i] = tmp[i];
  }
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

#define TK_ROW_FMA4(r, a4, lane)                       \
  c##r##0 = vfmaq_laneq_f32(c##r##0, b0, a4, lane); \
  c##r##1 = vfmaq_laneq_f32(c##r##1, b1, a4, lane); \
  c##r##2 = vfmaq_laneq_f32(c##r##2, b2, a4, lane); \
  c##r##3 = vfmaq_laneq_f32(c##r##3, b3, a4, lane);
#define TK_ROW_FMA2(r, a2, lane)                      \
  c##r##0 = vfmaq_lane_f32(c##r##0, b0, a2, lane); \
  c##r##1 = vfmaq_lane_f32(c##r##1, b1, a2, lane); \
  c##r##2 = vfmaq_lane_f32(c##r##2, b2, a2, lane); \
  c##r##3 = vfmaq_lane_f32(c##r##3, b3, a2, lane);
#define TK_ROW_STORE(r)                                                                          \
  if (mr > r) {                                                                                  \
    float lanes[NR];                                                                             \
    vst1q_f32(lanes, c##r##0);                                                                   \
    vst1q_f32(lanes + 4, c##r##1);                                                               \
    vst1q_f32(lanes + 8, c##r##2);                                                               \
    vst1q_f32(lanes + 12, c##r##3);                                                              \
    tile_store_row(TK_C_ROW(r), nr, ld8(lanes), ld8(lanes + 8), e, e->bias_m ? e->bias_m[r] : 0.0f, \
                   bn_lo, bn_hi);                                                                \
  }

/* NEON: 24 q accumulators, 4 q of B and 6 floats of A (one q + one d) per k: fmla by lane. */
TK_INLINE void micro_body(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e) {
  const float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  float32x4_t c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
  float32x4_t c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
  for (int64_t k = 0; k < kc; k++) {
    const float* b = indirect ? brow[k] + b_rs : bp;
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
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

#define TK_ROW_FMA(r)                \
  {                                  \
    const v8f a = splat8(ap[r]);     \
    c##r##0 += a * b0;               \
    c##r##1 += a * b1;               \
  }
#define TK_ROW_STORE(r)                                                                            \
  if (mr > r)                                                                                      \
    tile_store_row(TK_C_ROW(r), nr, c##r##0, c##r##1, e, e->bias_m ? e->bias_m[r] : 0.0f, bn_lo, \
                   bn_hi);

TK_INLINE void micro_body(const int indirect, int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                          const float* const* brow, float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                          const struct tile_epilogue* e) {
  v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  v8f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  for (int64_t k = 0; k < kc; k++) {
    const float* b = indirect ? brow[k] + b_rs : bp;
    const v8f b0 = ld8(b), b1 = ld8(b + 8);
    TK_ROW_FMA(0) TK_ROW_FMA(1) TK_ROW_FMA(2) TK_ROW_FMA(3) TK_ROW_FMA(4) TK_ROW_FMA(5)
    ap += MR;
    if (!indirect) bp += b_rs;
  }
  v8f bn_lo, bn_hi;
  bias_n_lanes(e, nr, &bn_lo, &bn_hi);
  TK_ROW_STORE(0) TK_ROW_STORE(1) TK_ROW_STORE(2) TK_ROW_STORE(3) TK_ROW_STORE(4) TK_ROW_STORE(5)
}

#endif

/* Out of line: inlined into the drivers, GCC spills the accumulators. */
static __attribute__((noinline)) void micro_tile(int64_t kc, const float* ap, const float* bp, int64_t b_rs,
                                                 float* c, int64_t c_rs, float* const* crow, int mr, int nr,
                                                 const struct tile_epilogue* e) {
  micro_body(0, kc, ap, bp, b_rs, NULL, c, c_rs, crow, mr, nr, e);
}
static __attribute__((noinline)) void micro_tile_rows(int64_t kc, const float* ap, const float* const* brow,
                                                      int64_t col, float* c, int64_t c_rs, int mr, int nr,
                                                      const struct tile_epilogue* e) {
  micro_body(1, kc, ap, NULL, col, brow, c, c_rs, NULL, mr, nr, e);
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

/* C = A B (+ C when accumulate) (+ biases, ReLU). C row i is c + i*c_rs, or, with c_rows, c_rows[i]
 * (rows anywhere, even overlapping: they are read, added to and written one after the other). */
static void gemm_run_rows(int64_t m, int64_t n, int64_t k, struct operand a, const float* a_full, struct operand b,
                          float* c, int64_t c_rs, float* const* c_rows, int accumulate, const float* bias_m,
                          const float* bias_n, int relu, float* ws) {
  if (k == 0) { /* C = (accumulate ? C : 0) + biases */
    for (int64_t i = 0; i < m; i++) {
      float* ci = c_rows ? c_rows[i] : c + i * c_rs;
      for (int64_t j = 0; j < n; j++) {
        float v = (accumulate ? ci[j] : 0.0f) + (bias_m ? bias_m[i] : 0.0f) + (bias_n ? bias_n[j] : 0.0f);
        ci[j] = relu && !(v > 0.0f) ? 0.0f : v;
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
      struct tile_epilogue e = {accumulate || pc > 0, pc + kc >= k, NULL, NULL, relu};
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = min64(MC, m - ic);
        const float* ap;
        if (a_full) {
          ap = a_full + pc * mp + ic * kc;
        } else {
          for (int64_t ir = 0; ir < mc; ir += MR) a.pack(a.ctx, pc, kc, ic + ir, min64(MR, mc - ir), a_blk + ir * kc);
          ap = a_blk;
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = (int)min64(NR, nc - jr);
          e.bias_n = bias_n ? bias_n + jc + jr : NULL;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            e.bias_m = bias_m ? bias_m + ic + ir : NULL;
            const int mr = (int)min64(MR, mc - ir);
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
}

static void gemm_run(int64_t m, int64_t n, int64_t k, struct operand a, const float* a_full,
                     struct operand b, float* c, int64_t c_rs, int accumulate, const float* bias_m,
                     const float* bias_n, int relu, float* ws) {
  gemm_run_rows(m, n, k, a, a_full, b, c, c_rs, NULL, accumulate, bias_m, bias_n, relu, ws);
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
  gemm_run(m, n, k, strided_a(&sa), NULL, strided_b(&sb), c, c_rs, accumulate, bias_m, bias_n, relu, ws);
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

/* Output columns [lo, hi) whose input column ow*sw + off lies inside [0, w). */
static void valid_cols(int64_t ow_n, int64_t w, int64_t sw, int64_t off, int64_t* lo, int64_t* hi) {
  const int64_t a = off >= 0 ? 0 : ceil_div(-off, sw);
  const int64_t b = (w - 1 - off) < 0 ? -1 : (w - 1 - off) / sw;
  *lo = a;
  *hi = min64(ow_n, b + 1);
  if (*hi < *lo) *hi = *lo;
}

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

/* y[o] += wv * x[o*sw] for o in [lo, hi): one tap of a depthwise row. */
static void dw_row_tap(float* y, const float* x, int64_t lo, int64_t hi, int64_t sw, float wv) {
  int64_t o = lo;
  if (sw == 1) {
    const v8f vw = splat8(wv);
    for (; o + 8 <= hi; o += 8) st8(y + o, ld8(y + o) + vw * ld8(x + o));
  }
#if defined(TK_USE_NEON)
  else if (sw == 2) { /* deinterleave: even lanes are the taps */
    const float32x4_t vw = vdupq_n_f32(wv);
    for (; o + 5 <= hi; o += 4) { /* reads x[2o .. 2o+7]: stays below the last tap 2(hi-1) */
      const float32x4x2_t xv = vld2q_f32(x + 2 * o);
      vst1q_f32(y + o, vfmaq_f32(vld1q_f32(y + o), xv.val[0], vw));
    }
  }
#endif
  for (; o < hi; o++) y[o] += wv * x[o * sw];
}

/* The taps of depthwise output row oh that fall inside the input: input row ih, column offset off
 * (input column o*sw + off for output column o), the output columns [lo, hi) they reach, and the
 * weight index. Returns how many (at most kh*kw). */
struct dw_tap {
  int64_t ih, off, lo, hi, widx;
};

static int dw_taps(const struct tk_conv2d* s, const struct conv_dims* d, int64_t oh, struct dw_tap* taps) {
  int n = 0;
  for (int64_t i = 0; i < s->kh; i++) {
    const int64_t ih = oh * s->stride_h - s->pad_h + i * s->dil_h;
    if (ih < 0 || ih >= s->h) continue;
    for (int64_t j = 0; j < s->kw; j++) {
      struct dw_tap* t = &taps[n++];
      t->ih = ih;
      t->off = j * s->dil_w - s->pad_w;
      t->widx = i * s->kw + j;
      valid_cols(d->ow, s->w, s->stride_w, t->off, &t->lo, &t->hi);
    }
  }
  return n;
}

static void depthwise_forward_plane(const struct tk_conv2d* s, const struct conv_dims* d, const float* x,
                                    const float* w, float bias, int relu, float* y) {
  struct dw_tap taps[s->kh * s->kw];
  for (int64_t oh = 0; oh < d->oh; oh++) {
    float* yr = y + oh * d->ow;
    for (int64_t o = 0; o < d->ow; o++) yr[o] = bias;
    const int n = dw_taps(s, d, oh, taps);
    for (int t = 0; t < n; t++)
      dw_row_tap(yr, x + taps[t].ih * s->w + taps[t].off, taps[t].lo, taps[t].hi, s->stride_w, w[taps[t].widx]);
    if (relu)
      for (int64_t o = 0; o < d->ow; o++) yr[o] = yr[o] > 0.0f ? yr[o] : 0.0f;
  }
}

/* gx plane += taps of g (the transpose of depthwise_forward_plane); gw[i, j] += sum g * x. */
static void depthwise_backward_plane(const struct tk_conv2d* s, const struct conv_dims* d, const float* g,
                                     const float* x, const float* w, float* gx, float* gw) {
  struct dw_tap taps[s->kh * s->kw];
  const int64_t sw = s->stride_w;
  for (int64_t oh = 0; oh < d->oh; oh++) {
    const float* gr = g + oh * d->ow;
    const int n = dw_taps(s, d, oh, taps);
    for (int t = 0; t < n; t++) {
      const int64_t lo = taps[t].lo, hi = taps[t].hi, at = taps[t].ih * s->w + taps[t].off;
      if (gw) {
        const float* xr = x + at;
        float acc = 0.0f;
        if (sw == 1) acc = dot_row(gr + lo, xr + lo, hi - lo);
        else
          for (int64_t o = lo; o < hi; o++) acc += gr[o] * xr[o * sw];
        gw[taps[t].widx] += acc;
      }
      if (gx) {
        float* gxr = gx + at;
        const float wv = w[taps[t].widx];
        if (sw == 1) {
          const v8f vw = splat8(wv);
          int64_t o = lo;
          for (; o + 8 <= hi; o += 8) st8(gxr + o, ld8(gxr + o) + vw * ld8(gr + o));
          for (; o < hi; o++) gxr[o] += wv * gr[o];
        } else {
          for (int64_t o = lo; o < hi; o++) gxr[o * sw] += wv * gr[o];
        }
      }
    }
  }
}

static int impl_conv2d_forward(const struct tk_conv2d* s, const float* x, const float* w, const float* bias,
                               int relu, float* y) {
  const struct conv_dims d = conv_dims(s);
  if (is_depthwise(s)) {
    for (int64_t b = 0; b < s->n; b++)
      for (int64_t c = 0; c < s->c_in; c++)
        depthwise_forward_plane(s, &d, x + (b * s->c_in + c) * d.hw, w + c * s->kh * s->kw,
                                bias ? bias[c] : 0.0f, relu, y + (b * s->c_out + c) * d.p);
    return TK_OK;
  }
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
               tmp, len, 0, bias ? bias + g * d.opg : NULL, NULL, relu, gws);
      for (int64_t b = 0; b < nb; b++)
        for (int64_t o = 0; o < d.opg; o++) {
          float* yo = y + ((b0 + b) * s->c_out + g * d.opg + o) * d.p;
          const float* t = tmp + o * len + b * d.grid;
          for (int64_t r = 0; r < d.oh; r++) memcpy(yo + r * d.ow, t + r * d.pc, sizeof(float) * (size_t)d.ow);
        }
    }
  }
  return TK_OK;
}

static int depthwise_backward(const struct tk_conv2d* s, const struct conv_dims* d, const float* gy, const float* x,
                              const float* w, const float* relu_out, float* gx, float* gw, float* gb) {
  float* masked = NULL;
  if (relu_out) {
    masked = tk__scratch((size_t)(s->n * s->c_out * d->p));
    if (!masked) return TK_ENOMEM;
    threshold_mask(gy, relu_out, s->n * s->c_out * d->p, 0.0f, INFINITY, masked);
  }
  const float* g = masked ? masked : gy;
  if (gb)
    for (int64_t c = 0; c < s->c_out; c++) {
      float acc = 0.0f;
      for (int64_t b = 0; b < s->n; b++) acc += sum_row(g + (b * s->c_out + c) * d->p, d->p);
      gb[c] = acc;
    }
  if (gx) memset(gx, 0, sizeof(float) * (size_t)(s->n * s->c_in * d->hw));
  if (gw) memset(gw, 0, sizeof(float) * (size_t)(s->c_out * s->kh * s->kw));
  for (int64_t b = 0; b < s->n; b++)
    for (int64_t c = 0; c < s->c_in; c++) {
      const int64_t plane = b * s->c_in + c;
      depthwise_backward_plane(s, d, g + plane * d->p, x + plane * d->hw, w + c * s->kh * s->kw,
                               gx ? gx + plane * d->hw : NULL, gw ? gw + c * s->kh * s->kw : NULL);
    }
  return TK_OK;
}

static int impl_conv2d_backward(const struct tk_conv2d* s, const float* gy, const float* x, const float* w,
                                const float* relu_out, float* gx, float* gw, float* gb) {
  const struct conv_dims d = conv_dims(s);
  if (is_depthwise(s)) return depthwise_backward(s, &d, gy, x, w, relu_out, gx, gw, gb);
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
        for (int64_t r = 0; r < d.oh; r++) {
          if (relu_out) threshold_mask(gy + at + r * d.ow, relu_out + at + r * d.ow, d.ow, 0.0f, INFINITY, dst + r * d.pc);
          else memcpy(dst + r * d.pc, gy + at + r * d.ow, sizeof(float) * (size_t)d.ow);
        }
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
                      NULL, NULL, 0, gws);
      }
      merge_phases(s, &d, gph, nb, gx + b0 * s->c_in * d.hw);
    }
  }
  return TK_OK;
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
