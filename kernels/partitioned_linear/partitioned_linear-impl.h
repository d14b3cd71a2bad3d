/*
 * The shuffled partitioned linear kernels, written once and compiled once per ISA (base/isa_build.c):
 * portable (baseline flags), x86_64_v3 (-march=x86-64-v3) and, on aarch64, neon (NEON micro-kernels,
 * DCX_USE_NEON). Arguments were checked by partitioned_linear.c.
 *
 * Three register tiles:
 *  - panel tile (6 rows x 16 columns): C[M x 16] = A[M x K] * B[K x 16] (+ bias). B is a 16-column
 *    panel of packed weights (forward), of weight rows (backward input) or of x (backward weight);
 *    A is broadcast. Used for P = 1, the unshuffled forward and all backward products. For the
 *    shuffled forward with P = 2 or 4 the 16 lanes are 16 consecutive *shuffled* outputs (j, p)
 *    and A is x in [k][p] order, broadcast in groups of P: the shuffle is free, stores stay
 *    contiguous. The transposed forward (X1T) swaps the roles: A = weight rows read in place,
 *    B = x packed into 16-row panels, and the tile is scattered into y.
 *  - j-tile (2 rows x 6 outputs j x 8 partitions in the lanes): the shuffled forward for P a
 *    multiple of 8. Lane l of a vector is partition 8g + l, so the 8 results for one (n, j) are
 *    8 consecutive shuffled outputs; one x load feeds 6 FMAs.
 *  - dot tile (forward with N < 4): dot products along k of x rows and weight rows, no packing.
 */
#include <stdlib.h>
#include <string.h>

#include "base/scratch.h"
#include "base/vec.h"
#include "partitioned_linear/partitioned_linear.h"

#if defined(DCX_USE_NEON)
#include <arm_neon.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define MR 6  /* rows of the register tile */
#define NR 16 /* columns of a panel */

/* How A fills the 16 lanes: broadcast 1, 2 or 4 floats. X1T is X1 with a transposed store:
 * lane l of row r goes to c[l*c_ls + r*c_rs] and init holds one value per row. */
enum { X1, X2, X4, X1T };

typedef float v4f __attribute__((vector_size(16)));

DCX_INLINE v8f bc1(const float* p) {
  const float s = *p;
  return (v8f){s, s, s, s, s, s, s, s};
}
/* Broadcasts of 2 and 4 floats: single load-broadcast instructions on AVX (vbroadcastsd,
 * vbroadcastf128 run on the load ports, not on the FMA pipes); elsewhere a double broadcast. */
DCX_INLINE v8f bc2(const float* p) {
#if defined(__AVX__)
  return (v8f)_mm256_broadcast_sd((const double*)(const void*)p);
#else
  typedef double v4d __attribute__((vector_size(32)));
  double d;
  memcpy(&d, p, sizeof d);
  return (v8f)(v4d){d, d, d, d};
#endif
}
DCX_INLINE v8f bc4(const float* p) {
#if defined(__AVX__)
  return (v8f)_mm256_broadcast_ps((const __m128*)(const void*)p);
#else
  v4f q;
  memcpy(&q, p, sizeof q);
  return __builtin_shufflevector(q, q, 0, 1, 2, 3, 0, 1, 2, 3);
#endif
}

/* ------------------------------------------------------------------------------------------
 * 8 x 8 transpose and the packing helpers built on it. */

DCX_INLINE void transpose8(v8f r[8]) {
  v8f t0 = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
  v8f t1 = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
  v8f t2 = __builtin_shufflevector(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
  v8f t3 = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
  v8f t4 = __builtin_shufflevector(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13);
  v8f t5 = __builtin_shufflevector(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15);
  v8f t6 = __builtin_shufflevector(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13);
  v8f t7 = __builtin_shufflevector(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15);
  v8f u0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
  v8f u1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
  v8f u2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
  v8f u3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
  v8f u4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
  v8f u5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
  v8f u6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
  v8f u7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
  r[0] = __builtin_shufflevector(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
  r[1] = __builtin_shufflevector(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
  r[2] = __builtin_shufflevector(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
  r[3] = __builtin_shufflevector(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
  r[4] = __builtin_shufflevector(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
  r[5] = __builtin_shufflevector(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
  r[6] = __builtin_shufflevector(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
  r[7] = __builtin_shufflevector(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* Load an 8 x 8 block (row i at rows[i]) transposed: out[c][i] = rows[i][c]. On AVX the 128-bit
 * halves are paired by load + insert (load ports) and only the in-lane 4 x 4 steps shuffle:
 * 16 shuffles instead of 24, the shuffle port being what bounds packing. */
DCX_INLINE void load_transposed8(const float* const rows[8], v8f out[8]) {
#if defined(__AVX__)
  __m256 t[8];
  for (int i = 0; i < 4; i++) {
    t[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[i])), _mm_loadu_ps(rows[i + 4]), 1);
    t[i + 4] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[i] + 4)),
                                    _mm_loadu_ps(rows[i + 4] + 4), 1);
  }
  for (int h = 0; h < 8; h += 4) { /* t[h..h+3]: columns h..h+3 of rows 0-3 | rows 4-7 */
    const __m256 u0 = _mm256_unpacklo_ps(t[h], t[h + 1]), u1 = _mm256_unpackhi_ps(t[h], t[h + 1]);
    const __m256 u2 = _mm256_unpacklo_ps(t[h + 2], t[h + 3]), u3 = _mm256_unpackhi_ps(t[h + 2], t[h + 3]);
    out[h] = (v8f)_mm256_shuffle_ps(u0, u2, 0x44);
    out[h + 1] = (v8f)_mm256_shuffle_ps(u0, u2, 0xEE);
    out[h + 2] = (v8f)_mm256_shuffle_ps(u1, u3, 0x44);
    out[h + 3] = (v8f)_mm256_shuffle_ps(u1, u3, 0xEE);
  }
#else
  for (int i = 0; i < 8; i++) out[i] = ld8(rows[i]);
  transpose8(out);
#endif
}

/* dst[c * dst_rs + r] = src[r * src_rs + c] for r < rows, c < cols. */
static void transpose(const float* src, int64_t src_rs, int64_t rows, int64_t cols, float* dst,
                      int64_t dst_rs) {
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) {
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      v8f v[8];
      const float* rows8[8];
      for (int i = 0; i < 8; i++) rows8[i] = src + (r + i) * src_rs + c;
      load_transposed8(rows8, v);
      for (int i = 0; i < 8; i++) st8(dst + (c + i) * dst_rs + r, v[i]);
    }
    for (; c < cols; c++)
      for (int i = 0; i < 8; i++) dst[c * dst_rs + r + i] = src[(r + i) * src_rs + c];
  }
  for (; r + 4 <= rows; r += 4) { /* 4 x 4 blocks (x for P = 4) */
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      v4f r0, r1, r2, r3;
      memcpy(&r0, src + r * src_rs + c, 16);
      memcpy(&r1, src + (r + 1) * src_rs + c, 16);
      memcpy(&r2, src + (r + 2) * src_rs + c, 16);
      memcpy(&r3, src + (r + 3) * src_rs + c, 16);
      const v4f t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
      const v4f t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5), t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
      const v4f c0 = __builtin_shufflevector(t0, t2, 0, 1, 4, 5), c1 = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
      const v4f c2 = __builtin_shufflevector(t1, t3, 0, 1, 4, 5), c3 = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
      memcpy(dst + c * dst_rs + r, &c0, 16);
      memcpy(dst + (c + 1) * dst_rs + r, &c1, 16);
      memcpy(dst + (c + 2) * dst_rs + r, &c2, 16);
      memcpy(dst + (c + 3) * dst_rs + r, &c3, 16);
    }
    for (; c < cols; c++)
      for (int i = 0; i < 4; i++) dst[c * dst_rs + r + i] = src[(r + i) * src_rs + c];
  }
  for (; r + 2 <= rows; r += 2) { /* pairs (x for P = 2) */
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      v4f r0, r1;
      memcpy(&r0, src + r * src_rs + c, 16);
      memcpy(&r1, src + (r + 1) * src_rs + c, 16);
      const v4f lo = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), hi = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
      float* d0 = dst + c * dst_rs + r;
      memcpy(d0, &lo, 8);
      memcpy(d0 + dst_rs, (const float*)&lo + 2, 8);
      memcpy(d0 + 2 * dst_rs, &hi, 8);
      memcpy(d0 + 3 * dst_rs, (const float*)&hi + 2, 8);
    }
    for (; c < cols; c++)
      for (int i = 0; i < 2; i++) dst[c * dst_rs + r + i] = src[(r + i) * src_rs + c];
  }
  for (; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) dst[c * dst_rs + r] = src[r * src_rs + c];
}

/* Pack rows into [K][dst_rs] lanes: dst[k*dst_rs + l] = rows[l][k] for l < nrows (nrows a
 * multiple of 8; rows[l] == NULL gives a zero lane). 8 x 8 transposes where a group is full. */
static void pack_rows(const float* const* rows, int nrows, int64_t K, float* dst, int64_t dst_rs) {
  for (int g = 0; g < nrows; g += 8) {
    int full = 1;
    for (int l = 0; l < 8; l++) full &= rows[g + l] != NULL;
    int64_t k = 0;
    if (full) {
      for (; k + 8 <= K; k += 8) {
        v8f v[8];
        const float* rows8[8];
        for (int i = 0; i < 8; i++) rows8[i] = rows[g + i] + k;
        load_transposed8(rows8, v);
        for (int i = 0; i < 8; i++) st8(dst + (k + i) * dst_rs + g, v[i]);
      }
    }
    for (; k < K; k++)
      for (int l = 0; l < 8; l++) dst[k * dst_rs + g + l] = rows[g + l] ? rows[g + l][k] : 0.0f;
  }
}

/* ------------------------------------------------------------------------------------------
 * Forward layouts. */

enum { FWD_BLOCKED, FWD_LANES16, FWD_JTILE };
#define JT 6 /* outputs j per j-tile */
#define JL 8 /* partitions per j-tile (lanes) */

static int forward_mode(int64_t P, int shuffle) {
  if (!shuffle || P == 1) return FWD_BLOCKED;
  if (P == 2 || P == 4) return FWD_LANES16;
  if (P % JL == 0) return FWD_JTILE;
  return FWD_BLOCKED; /* other P: blocked into a temporary, then one transpose */
}

/* Number of weight blocks and floats per block of the packed layout (K = d_in / P rows each). */
static void forward_blocks(int64_t d_out, int64_t P, int mode, int64_t* nblocks, int64_t* width) {
  const int64_t bo = d_out / P;
  if (mode == FWD_JTILE) {
    *nblocks = (P / JL) * ((bo + JT - 1) / JT);
    *width = JT * JL;
  } else if (mode == FWD_LANES16) {
    *nblocks = (d_out + NR - 1) / NR;
    *width = NR;
  } else {
    *nblocks = P * ((bo + NR - 1) / NR);
    *width = NR;
  }
}

/* Source rows (and bias) of the lanes of forward block c.
 * blocked:  lane l = output j = 16c' + l of partition p (c = p * per_part + c').
 * lanes16:  lane l = shuffled output o = 16c + l = j*P + p.
 * j-tile:   lane jj*8 + l = output j = 6*jb + jj of partition 8g + l (c = g * per_group + jb). */
static void forward_block_rows(const float* w, const float* bias, int64_t bi, int64_t bo, int64_t P,
                               int mode, int64_t c, const float** rows, float* init) {
  const int64_t d_out = bo * P;
  const int lanes = mode == FWD_JTILE ? JT * JL : NR;
  for (int l = 0; l < lanes; l++) {
    int64_t p, j;
    if (mode == FWD_JTILE) {
      const int64_t per_group = (bo + JT - 1) / JT;
      p = (c / per_group) * JL + l % JL;
      j = (c % per_group) * JT + l / JL;
      if (j >= bo) p = -1;
    } else if (mode == FWD_LANES16) {
      const int64_t o = c * NR + l;
      p = o % P;
      j = o / P;
      if (o >= d_out) p = -1;
    } else {
      const int64_t per_part = (bo + NR - 1) / NR;
      p = c / per_part;
      j = (c % per_part) * NR + l;
      if (j >= bo) p = -1;
    }
    if (rows) rows[l] = (p >= 0 && w) ? w + (p * bo + j) * bi : NULL;
    if (init) init[l] = (p >= 0 && bias) ? bias[p * bo + j] : 0.0f;
  }
}

static void pack_forward_block(const float* w, int64_t bi, int64_t bo, int64_t P, int mode,
                               int64_t c, float* dst) {
  const float* rows[JT * JL];
  const int64_t width = mode == FWD_JTILE ? JT * JL : NR;
  forward_block_rows(w, NULL, bi, bo, P, mode, c, rows, NULL);
  pack_rows(rows, (int)width, bi, dst, width);
}

/* ------------------------------------------------------------------------------------------
 * Micro-kernels. Accumulators are named variables, not arrays: GCC keeps arrays of vectors in
 * memory. Rows r >= mr become dead code once mr is a constant.
 *
 * panel tile: c[r][0:ncols] = init + sum_k A(r, k) * b[k*b_rs + 0:16], A(r, k) at
 *             a + r*a_rs + k*a_cs, broadcast to 16 lanes as xm says.
 * j-tile:     c[r][jj*c_js + 0:8] = init[jj*8 + 0:8] + sum_k a[r*a_rs + k*a_cs + 0:8] * b[k*48 + jj*8 + 0:8]
 *             for jj < nj. */

#if defined(DCX_USE_NEON)

#define NEON_X(ap) /* the x operand of one row: 4 lanes */                                   \
  (xm == X2 ? vcombine_f32(vld1_f32(ap), vld1_f32(ap)) : vld1q_f32(ap))
#define PANEL_FMA(r)                                                                         \
  if (mr > r) {                                                                              \
    const float* ap = ak + (r) * a_rs;                                                       \
    if (xm == X1 || xm == X1T) {                                                             \
      const float s = *ap;                                                                   \
      c##r##0 = vfmaq_n_f32(c##r##0, b0, s);                                                 \
      c##r##1 = vfmaq_n_f32(c##r##1, b1, s);                                                 \
      c##r##2 = vfmaq_n_f32(c##r##2, b2, s);                                                 \
      c##r##3 = vfmaq_n_f32(c##r##3, b3, s);                                                 \
    } else {                                                                                 \
      const float32x4_t xv = NEON_X(ap);                                                     \
      c##r##0 = vfmaq_f32(c##r##0, b0, xv);                                                  \
      c##r##1 = vfmaq_f32(c##r##1, b1, xv);                                                  \
      c##r##2 = vfmaq_f32(c##r##2, b2, xv);                                                  \
      c##r##3 = vfmaq_f32(c##r##3, b3, xv);                                                  \
    }                                                                                        \
    __asm__ volatile("" ::: "memory"); /* 24 accumulators + 4 b: load x rows one by one */   \
  }
#define PANEL_STORE(r)                                                                       \
  if (mr > r && xm == X1T) {                                                                 \
    vst1q_f32(tmp, c##r##0);                                                                 \
    vst1q_f32(tmp + 4, c##r##1);                                                             \
    vst1q_f32(tmp + 8, c##r##2);                                                             \
    vst1q_f32(tmp + 12, c##r##3);                                                            \
    const float add = init ? init[r] : 0.0f;                                                 \
    float* cr = c + (r) * c_rs;                                                              \
    for (int i = 0; i < ncols; i++) cr[i * c_ls] = tmp[i] + add;                             \
  } else if (mr > r) {                                                                       \
    float32x4_t v0 = c##r##0, v1 = c##r##1, v2 = c##r##2, v3 = c##r##3;                      \
    if (init) {                                                                              \
      v0 = vaddq_f32(v0, vld1q_f32(init));                                                   \
      v1 = vaddq_f32(v1, vld1q_f32(init + 4));                                               \
      v2 = vaddq_f32(v2, vld1q_f32(init + 8));                                               \
      v3 = vaddq_f32(v3, vld1q_f32(init + 12));                                              \
    }                                                                                        \
    float* cr = c + (r) * c_rs;                                                              \
    float* t = ncols == NR ? cr : tmp;                                                       \
    vst1q_f32(t, v0);                                                                        \
    vst1q_f32(t + 4, v1);                                                                    \
    vst1q_f32(t + 8, v2);                                                                    \
    vst1q_f32(t + 12, v3);                                                                   \
    if (t == tmp)                                                                            \
      for (int i = 0; i < ncols; i++) cr[i] = tmp[i];                                        \
  }

DCX_INLINE void micro(const int mr, const int xm, int64_t K, const float* a, int64_t a_rs,
                      int64_t a_cs, const float* b, int64_t b_rs, float* c, int64_t c_rs,
                      int64_t c_ls, int ncols, const float* init) {
  const float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  float32x4_t c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
  float32x4_t c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
  const float* ak = a;
  for (int64_t k = 0; k < K; k++) {
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8),
                      b3 = vld1q_f32(b + 12);
    b += b_rs;
    PANEL_FMA(0) PANEL_FMA(1) PANEL_FMA(2) PANEL_FMA(3) PANEL_FMA(4) PANEL_FMA(5)
    ak += a_cs;
  }
  float tmp[NR];
  PANEL_STORE(0) PANEL_STORE(1) PANEL_STORE(2) PANEL_STORE(3) PANEL_STORE(4) PANEL_STORE(5)
}

/* Per output j: load its 8 weight lanes once (2 q registers), 4 FMAs (2 rows x 2 halves).
 * The empty asm with a memory clobber stops GCC from hoisting all 12 weight loads of a step
 * ahead (24 accumulators + 4 x registers leave room for 4 more, not 12). */
#define JT_FMA_J(j)                                                                          \
  {                                                                                          \
    const float32x4_t wl = vld1q_f32(bk + (j) * 8), wh = vld1q_f32(bk + (j) * 8 + 4);        \
    c0##j##l = vfmaq_f32(c0##j##l, x0l, wl);                                                 \
    c0##j##h = vfmaq_f32(c0##j##h, x0h, wh);                                                 \
    if (mr > 1) {                                                                            \
      c1##j##l = vfmaq_f32(c1##j##l, x1l, wl);                                               \
      c1##j##h = vfmaq_f32(c1##j##h, x1h, wh);                                               \
    }                                                                                        \
    __asm__ volatile("" ::: "memory");                                                       \
  }
#define JT_STORE_J(r, j)                                                                     \
  if ((j) < nj) {                                                                            \
    float* cj = c + (r) * c_rs + (j) * c_js;                                                 \
    float32x4_t vl = c##r##j##l, vh = c##r##j##h;                                            \
    if (init) {                                                                              \
      vl = vaddq_f32(vl, vld1q_f32(init + (j) * 8));                                         \
      vh = vaddq_f32(vh, vld1q_f32(init + (j) * 8 + 4));                                     \
    }                                                                                        \
    vst1q_f32(cj, vl);                                                                       \
    vst1q_f32(cj + 4, vh);                                                                   \
  }
#define JT_DECL(r)                                                                           \
  float32x4_t c##r##0l = z, c##r##0h = z, c##r##1l = z, c##r##1h = z, c##r##2l = z,          \
              c##r##2h = z, c##r##3l = z, c##r##3h = z, c##r##4l = z, c##r##4h = z,          \
              c##r##5l = z, c##r##5h = z;

DCX_INLINE void micro_jt(const int mr, int64_t K, const float* a, int64_t a_rs, int64_t a_cs,
                         const float* b, float* c, int64_t c_rs, int64_t c_js, int nj,
                         const float* init) {
  const float32x4_t z = vdupq_n_f32(0.0f);
  JT_DECL(0)
  JT_DECL(1)
  const float* ak = a;
  const float* bk = b;
  for (int64_t k = 0; k < K; k++) {
    const float32x4_t x0l = vld1q_f32(ak), x0h = vld1q_f32(ak + 4);
    const float32x4_t x1l = mr > 1 ? vld1q_f32(ak + a_rs) : x0l;
    const float32x4_t x1h = mr > 1 ? vld1q_f32(ak + a_rs + 4) : x0h;
    JT_FMA_J(0) JT_FMA_J(1) JT_FMA_J(2) JT_FMA_J(3) JT_FMA_J(4) JT_FMA_J(5)
    ak += a_cs;
    bk += JT * JL;
  }
  JT_STORE_J(0, 0) JT_STORE_J(0, 1) JT_STORE_J(0, 2) JT_STORE_J(0, 3) JT_STORE_J(0, 4) JT_STORE_J(0, 5)
  if (mr > 1) {
    JT_STORE_J(1, 0) JT_STORE_J(1, 1) JT_STORE_J(1, 2) JT_STORE_J(1, 3) JT_STORE_J(1, 4) JT_STORE_J(1, 5)
  }
}

#else /* portable: vector extensions, 8 lanes */

#define PANEL_FMA(r)                                                                         \
  if (mr > r) {                                                                              \
    const float* ap = ak + (r) * a_rs;                                                       \
    const v8f xv = (xm == X1 || xm == X1T) ? bc1(ap) : xm == X2 ? bc2(ap) : bc4(ap);         \
    c##r##0 += xv * b0;                                                                      \
    c##r##1 += xv * b1;                                                                      \
  }
#define PANEL_STORE(r)                                                                       \
  if (mr > r && xm == X1T) {                                                                 \
    st8(tmp, c##r##0);                                                                       \
    st8(tmp + 8, c##r##1);                                                                   \
    const float add = init ? init[r] : 0.0f;                                                 \
    float* cr = c + (r) * c_rs;                                                              \
    for (int i = 0; i < ncols; i++) cr[i * c_ls] = tmp[i] + add;                             \
  } else if (mr > r) {                                                                       \
    v8f v0 = c##r##0, v1 = c##r##1;                                                          \
    if (init) {                                                                              \
      v0 += ld8(init);                                                                       \
      v1 += ld8(init + 8);                                                                   \
    }                                                                                        \
    float* cr = c + (r) * c_rs;                                                              \
    float* t = ncols == NR ? cr : tmp;                                                       \
    st8(t, v0);                                                                              \
    st8(t + 8, v1);                                                                          \
    if (t == tmp)                                                                            \
      for (int i = 0; i < ncols; i++) cr[i] = tmp[i];                                        \
  }

DCX_INLINE void micro(const int mr, const int xm, int64_t K, const float* a, int64_t a_rs,
                      int64_t a_cs, const float* b, int64_t b_rs, float* c, int64_t c_rs,
                      int64_t c_ls, int ncols, const float* init) {
  v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  v8f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  const float* ak = a;
  for (int64_t k = 0; k < K; k++) {
    const v8f b0 = ld8(b), b1 = ld8(b + 8);
    b += b_rs;
    PANEL_FMA(0) PANEL_FMA(1) PANEL_FMA(2) PANEL_FMA(3) PANEL_FMA(4) PANEL_FMA(5)
    ak += a_cs;
  }
  float tmp[NR];
  PANEL_STORE(0) PANEL_STORE(1) PANEL_STORE(2) PANEL_STORE(3) PANEL_STORE(4) PANEL_STORE(5)
}

/* KEEP_IN_REG: keep a loaded vector in a register, so that GCC does not fold the load into both
 * FMAs (two loads instead of one; the loads, not the FMAs, bound this tile). */
#if defined(__x86_64__) && defined(__AVX__)
#define KEEP_IN_REG(v) __asm__("" : "+x"(v))
#else
#define KEEP_IN_REG(v) (void)0
#endif
#define JT_FMA_J(j)                                                                          \
  {                                                                                          \
    v8f bj = ld8(bk + (j) * 8);                                                              \
    KEEP_IN_REG(bj);                                                                          \
    c0##j += x0 * bj;                                                                        \
    if (mr > 1) c1##j += x1 * bj;                                                            \
  }
#define JT_STORE_J(r, j)                                                                     \
  if ((j) < nj) {                                                                            \
    v8f v = c##r##j;                                                                         \
    if (init) v += ld8(init + (j) * 8);                                                      \
    st8(c + (r) * c_rs + (j) * c_js, v);                                                     \
  }

DCX_INLINE void micro_jt(const int mr, int64_t K, const float* a, int64_t a_rs, int64_t a_cs,
                         const float* b, float* c, int64_t c_rs, int64_t c_js, int nj,
                         const float* init) {
  v8f c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c04 = {0}, c05 = {0};
  v8f c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0}, c14 = {0}, c15 = {0};
  const float* ak = a;
  const float* bk = b;
  for (int64_t k = 0; k < K; k++) {
    const v8f x0 = ld8(ak);
    const v8f x1 = mr > 1 ? ld8(ak + a_rs) : x0;
    JT_FMA_J(0) JT_FMA_J(1) JT_FMA_J(2) JT_FMA_J(3) JT_FMA_J(4) JT_FMA_J(5)
    ak += a_cs;
    bk += JT * JL;
  }
  JT_STORE_J(0, 0) JT_STORE_J(0, 1) JT_STORE_J(0, 2) JT_STORE_J(0, 3) JT_STORE_J(0, 4) JT_STORE_J(0, 5)
  if (mr > 1) {
    JT_STORE_J(1, 0) JT_STORE_J(1, 1) JT_STORE_J(1, 2) JT_STORE_J(1, 3) JT_STORE_J(1, 4) JT_STORE_J(1, 5)
  }
}

#endif

/* Rows [0, M) of one panel: full 6-row tiles, then the remainder. Kept out of line: inlined
 * into the drivers, GCC spills the accumulators. */
#define DEFINE_RUN_PANEL(XM)                                                                       \
  static __attribute__((noinline)) void run_panel_##XM(                                           \
      int64_t M, int64_t K, const float* a, int64_t a_rs, int64_t a_cs, const float* b,            \
      int64_t b_rs, float* c, int64_t c_rs, int64_t c_ls, int ncols, const float* init) {         \
    const int per_row_init = XM == X1T;                                                            \
    int64_t m = 0;                                                                                 \
    for (; m + MR <= M; m += MR)                                                                   \
      micro(MR, XM, K, a + m * a_rs, a_rs, a_cs, b, b_rs, c + m * c_rs, c_rs, c_ls, ncols,         \
            init && per_row_init ? init + m : init);                                               \
    const float* am = a + m * a_rs;                                                                \
    float* cm = c + m * c_rs;                                                                      \
    const float* im = init && per_row_init ? init + m : init;                                      \
    switch (M - m) {                                                                               \
      case 1: micro(1, XM, K, am, a_rs, a_cs, b, b_rs, cm, c_rs, c_ls, ncols, im); break;          \
      case 2: micro(2, XM, K, am, a_rs, a_cs, b, b_rs, cm, c_rs, c_ls, ncols, im); break;          \
      case 3: micro(3, XM, K, am, a_rs, a_cs, b, b_rs, cm, c_rs, c_ls, ncols, im); break;          \
      case 4: micro(4, XM, K, am, a_rs, a_cs, b, b_rs, cm, c_rs, c_ls, ncols, im); break;          \
      case 5: micro(5, XM, K, am, a_rs, a_cs, b, b_rs, cm, c_rs, c_ls, ncols, im); break;          \
      default: break;                                                                              \
    }                                                                                              \
  }
DEFINE_RUN_PANEL(X1)
DEFINE_RUN_PANEL(X2)
DEFINE_RUN_PANEL(X4)
DEFINE_RUN_PANEL(X1T)

static void run_panel(int xm, int64_t M, int64_t K, const float* a, int64_t a_rs, int64_t a_cs,
                      const float* b, int64_t b_rs, float* c, int64_t c_rs, int ncols,
                      const float* init) {
  switch (xm) {
    case X1: run_panel_X1(M, K, a, a_rs, a_cs, b, b_rs, c, c_rs, 1, ncols, init); break;
    case X2: run_panel_X2(M, K, a, a_rs, a_cs, b, b_rs, c, c_rs, 1, ncols, init); break;
    default: run_panel_X4(M, K, a, a_rs, a_cs, b, b_rs, c, c_rs, 1, ncols, init); break;
  }
}

/* All rows of one j-tile weight block (the block stays in L1 while 2-row tiles of x pass). */
static __attribute__((noinline)) void run_jtile(int64_t M, int64_t K, const float* a, int64_t a_rs,
                                                int64_t a_cs, const float* b, float* c,
                                                int64_t c_rs, int64_t c_js, int nj,
                                                const float* init) {
  int64_t m = 0;
  for (; m + 2 <= M; m += 2)
    micro_jt(2, K, a + m * a_rs, a_rs, a_cs, b, c + m * c_rs, c_rs, c_js, nj, init);
  if (m < M) micro_jt(1, K, a + m * a_rs, a_rs, a_cs, b, c + m * c_rs, c_rs, c_js, nj, init);
}

/* Rows per chunk, so that a chunk of A (rows x K floats) stays in L2 while the panels pass. */
static int64_t rows_per_chunk(int64_t K) {
  int64_t mc = (int64_t)(48 * 1024) / (K > 0 ? K : 1);
  mc = mc / MR * MR;
  return mc < 4 * MR ? 4 * MR : mc;
}

/* ------------------------------------------------------------------------------------------
 * Dot kernel for small N: out[r][jj] = sum_k x[r][k] * w[jj][k], nr <= 3 rows, nj <= 4 weight rows
 * (base/vec.h's dot_tile). */

#define DEFINE_DOT_ROWS(NRR)                                                                      \
  static void dot_rows_##NRR(const float* x, const float* w, const float* bias, int64_t d_in,     \
                             int64_t d_out, int64_t P, int shuffle, float* y) {                   \
    const int64_t bi = d_in / P, bo = d_out / P;                                                  \
    float out[3][4];                                                                              \
    for (int64_t p = 0; p < P; p++) {                                                             \
      const float* xp = x + p * bi;                                                               \
      int64_t j = 0;                                                                              \
      for (; j < bo; j += 4) {                                                                    \
        const int nj = (int)min64(4, bo - j);                                                     \
        const float* wj = w + (p * bo + j) * bi;                                                  \
        if (nj == 4) {                                                                            \
          const float* const wr[4] = {wj, wj + bi, wj + 2 * bi, wj + 3 * bi};                    \
          dot_tile(NRR, 4, bi, xp, d_in, wr, out);                                                \
        } else                                                                                    \
          for (int jj = 0; jj < nj; jj++) {                                                       \
            const float* const wr[4] = {wj + jj * bi};                                            \
            float o1[3][4];                                                                       \
            dot_tile(NRR, 1, bi, xp, d_in, wr, o1);                                               \
            for (int r = 0; r < NRR; r++) out[r][jj] = o1[r][0];                                  \
          }                                                                                       \
        for (int jj = 0; jj < nj; jj++) {                                                         \
          const int64_t zo = p * bo + j + jj;                                                     \
          const int64_t yo = shuffle ? (j + jj) * P + p : zo;                                     \
          const float b = bias ? bias[zo] : 0.0f;                                                 \
          for (int r = 0; r < NRR; r++) y[r * d_out + yo] = out[r][jj] + b;                       \
        }                                                                                         \
      }                                                                                           \
    }                                                                                             \
  }
DEFINE_DOT_ROWS(1)
DEFINE_DOT_ROWS(2)
DEFINE_DOT_ROWS(3)

/* ------------------------------------------------------------------------------------------
 * Entry points (validated by partitioned_linear.c). */

static size_t impl_packed_size(int64_t d_in, int64_t d_out, int64_t P, int shuffle) {
  int64_t nblocks, width;
  forward_blocks(d_out, P, forward_mode(P, shuffle), &nblocks, &width);
  return (size_t)(nblocks * width * (d_in / P));
}

static void impl_pack_weight(const float* w, int64_t d_in, int64_t d_out, int64_t P, int shuffle,
                             float* packed) {
  const int64_t bi = d_in / P, bo = d_out / P;
  const int mode = forward_mode(P, shuffle);
  int64_t nblocks, width;
  forward_blocks(d_out, P, mode, &nblocks, &width);
  for (int64_t c = 0; c < nblocks; c++) pack_forward_block(w, bi, bo, P, mode, c, packed + c * width * bi);
}

/* Large blocks (d_in/P >= 256) in the blocked layout (P = 1, unshuffled, or P not 2, 4 or a
 * multiple of 8), weights not pre-packed: the transposed product. Weight rows are
 * the broadcast operand, read in place; x is packed into 16-row panels (n*d_in floats instead of
 * the d_in*d_out/P of the weights: packing W per call costs ~8/n of the product); the 6 x 16
 * (j x n) tile is scattered into y, which makes the shuffle free as well. (For P = 2, 4, 8k the
 * interleaved layouts are faster: their stores stay contiguous.) */
#define T_MIN_BLOCK 256
static int forward_transposed(const float* x, const float* w, const float* bias, int64_t n,
                              int64_t d_in, int64_t d_out, int64_t P, int shuffle, float* y) {
  const int64_t bi = d_in / P, bo = d_out / P;
  const int64_t npx = (n + NR - 1) / NR;
  int64_t chunk = (int64_t)(64 * 1024) / (bi * NR); /* x panels kept in L2: ~256 KB */
  if (chunk < 1) chunk = 1;
  if (chunk > npx) chunk = npx;
  float* buf = dcx_scratch((size_t)(chunk * bi * NR));
  if (!buf) return DCX_ENOMEM;
  const int64_t col_step = shuffle ? P : 1;
  for (int64_t p = 0; p < P; p++) {
    const float* wp = w + p * bo * bi;
    for (int64_t c0 = 0; c0 < npx; c0 += chunk) {
      const int64_t nc = min64(chunk, npx - c0);
      for (int64_t cc = 0; cc < nc; cc++) {
        const float* rows[NR];
        for (int l = 0; l < NR; l++) {
          const int64_t r = (c0 + cc) * NR + l;
          rows[l] = r < n ? x + r * d_in + p * bi : NULL;
        }
        pack_rows(rows, NR, bi, buf + cc * bi * NR, NR);
      }
      for (int64_t j0 = 0; j0 < bo; j0 += MR) { /* 6 weight rows stay in L1 while x panels pass */
        const int64_t mr = min64(MR, bo - j0);
        const int64_t col0 = shuffle ? j0 * P + p : p * bo + j0;
        for (int64_t cc = 0; cc < nc; cc++) {
          const int64_t n0 = (c0 + cc) * NR;
          run_panel_X1T(mr, bi, wp + j0 * bi, bi, 1, buf + cc * bi * NR, NR, y + n0 * d_out + col0,
                        col_step, d_out, (int)min64(NR, n - n0), bias ? bias + p * bo + j0 : NULL);
        }
      }
    }
  }
  return DCX_OK;
}

static int impl_forward(const float* x, const float* w, const float* packed, const float* bias,
                        int64_t n, int64_t d_in, int64_t d_out, int64_t P, int shuffle, float* y) {
  const int64_t bi = d_in / P, bo = d_out / P;
  if (!packed && n >= 4 && bi >= T_MIN_BLOCK && forward_mode(P, shuffle) == FWD_BLOCKED)
    return forward_transposed(x, w, bias, n, d_in, d_out, P, shuffle, y);
  if (!packed && n < 4) {
    for (int64_t r = 0; r < n; r += 3) {
      const int64_t nr = min64(3, n - r);
      const float* xr = x + r * d_in;
      float* yr = y + r * d_out;
      if (nr == 3) dot_rows_3(xr, w, bias, d_in, d_out, P, shuffle, yr);
      else if (nr == 2) dot_rows_2(xr, w, bias, d_in, d_out, P, shuffle, yr);
      else dot_rows_1(xr, w, bias, d_in, d_out, P, shuffle, yr);
    }
    return DCX_OK;
  }
  const int mode = forward_mode(P, shuffle);
  const int interleaved = mode != FWD_BLOCKED;     /* x read in [k][p] order */
  const int unshuffle_tmp = shuffle && P > 1 && !interleaved; /* blocked, then transpose */
  int64_t nblocks, width;
  forward_blocks(d_out, P, mode, &nblocks, &width);
  const int64_t mc = mode == FWD_JTILE ? n : rows_per_chunk(bi);
  const int pack_all = !packed && (n > mc || mode == FWD_JTILE);

  size_t need = 0;
  const size_t off_xs = need;
  if (interleaved) need += (size_t)(n * d_in);
  const size_t off_tmp = need;
  if (unshuffle_tmp) need += (size_t)(n * d_out);
  const size_t off_blocks = need;
  if (!packed) need += (size_t)((pack_all ? nblocks : 1) * width * bi);
  const size_t off_init = need; /* the bias in each block's lane order */
  if (bias) need += (size_t)(nblocks * width);
  float* scratch = need ? dcx_scratch(need) : NULL;
  if (need && !scratch) return DCX_ENOMEM;

  const float* a = x;
  if (mode == FWD_JTILE) {
    /* group-major: xs[n][(g*bi + k)*8 + l] = x[n][(8g + l)*bi + k], so a j-tile streams whole lines */
    float* xs = scratch + off_xs;
    for (int64_t r = 0; r < n; r++)
      for (int64_t g = 0; g < P / JL; g++)
        transpose(x + r * d_in + g * JL * bi, bi, JL, bi, xs + r * d_in + g * bi * JL, JL);
    a = xs;
  } else if (interleaved) {
    float* xs = scratch + off_xs; /* xs[n][k*P + p] = x[n][p*bi + k] */
    for (int64_t r = 0; r < n; r++) transpose(x + r * d_in, bi, P, bi, xs + r * d_in, P);
    a = xs;
  }
  float* out = unshuffle_tmp ? scratch + off_tmp : y;
  float* block_buf = scratch + off_blocks;
  if (pack_all) {
    impl_pack_weight(w, d_in, d_out, P, shuffle, block_buf);
    packed = block_buf;
  }
  float* init_all = bias ? scratch + off_init : NULL;
  if (bias)
    for (int64_t c = 0; c < nblocks; c++)
      forward_block_rows(NULL, bias, bi, bo, P, mode, c, NULL, init_all + c * width);

  if (mode == FWD_JTILE) {
    const int64_t per_group = (bo + JT - 1) / JT;
    for (int64_t c = 0; c < nblocks; c++) {
      const int64_t g = c / per_group, j0 = (c % per_group) * JT;
      run_jtile(n, bi, a + g * bi * JL, d_in, JL, packed + c * width * bi, y + j0 * P + g * JL, d_out, P,
                (int)min64(JT, bo - j0), bias ? init_all + c * width : NULL);
    }
    return DCX_OK;
  }

  const int xm = mode == FWD_BLOCKED ? X1 : P == 2 ? X2 : X4;
  const int64_t per_part = (bo + NR - 1) / NR;
  for (int64_t m0 = 0; m0 < n; m0 += mc) {
    const int64_t mrows = min64(mc, n - m0);
    for (int64_t c = 0; c < nblocks; c++) {
      const float* b;
      if (packed) {
        b = packed + c * bi * NR;
      } else {
        pack_forward_block(w, bi, bo, P, mode, c, block_buf);
        b = block_buf;
      }
      int64_t col0, ncols, a_cs;
      const float* ac;
      if (mode == FWD_LANES16) {
        col0 = c * NR;
        ncols = min64(NR, d_out - col0);
        ac = a;
        a_cs = P;
      } else {
        const int64_t p = c / per_part, j0 = (c % per_part) * NR;
        col0 = p * bo + j0;
        ncols = min64(NR, bo - j0);
        ac = a + p * bi;
        a_cs = 1;
      }
      run_panel(xm, mrows, bi, ac + m0 * d_in, d_in, a_cs, b, NR, out + m0 * d_out + col0, d_out,
                (int)ncols, bias ? init_all + c * NR : NULL);
    }
  }
  if (unshuffle_tmp) /* y[n][j*P + p] = z[n][p*bo + j] */
    for (int64_t r = 0; r < n; r++) transpose(out + r * d_out, bo, P, bo, y + r * d_out, P);
  return DCX_OK;
}

/* grad_x[n, p*bi + k] = sum_j gz[n, p*bo + j] W[p, j, k]; gz read through the shuffle. */
static int impl_backward_input(const float* gy, const float* w, int64_t n, int64_t d_in,
                               int64_t d_out, int64_t P, int shuffle, float* gx) {
  const int64_t bi = d_in / P, bo = d_out / P;
  const int64_t mc = rows_per_chunk(bo);
  float* tail = NULL;
  if (bi % NR) {
    tail = dcx_scratch((size_t)(bo * NR));
    if (!tail) return DCX_ENOMEM;
  }
  for (int64_t m0 = 0; m0 < n; m0 += mc) {
    const int64_t mrows = min64(mc, n - m0);
    for (int64_t p = 0; p < P; p++) {
      const float* wp = w + p * bo * bi;
      const float* a = gy + m0 * d_out + (shuffle ? p : p * bo);
      for (int64_t k0 = 0; k0 < bi; k0 += NR) {
        const int64_t ncols = min64(NR, bi - k0);
        const float* b = wp + k0;
        int64_t b_rs = bi;
        if (ncols < NR) {
          for (int64_t j = 0; j < bo; j++)
            for (int64_t l = 0; l < NR; l++) tail[j * NR + l] = l < ncols ? wp[j * bi + k0 + l] : 0.0f;
          b = tail;
          b_rs = NR;
        }
        run_panel(X1, mrows, bo, a, d_out, shuffle ? P : 1, b, b_rs, gx + m0 * d_in + p * bi + k0,
                  d_in, (int)ncols, NULL);
      }
    }
  }
  return DCX_OK;
}

/* grad_w[p, j, k] = sum_n gz[n, p*bo + j] x[n, p*bi + k]. */
static int impl_backward_weight(const float* gy, const float* x, int64_t n, int64_t d_in,
                                int64_t d_out, int64_t P, int shuffle, float* gw) {
  const int64_t bi = d_in / P, bo = d_out / P;
  float* tail = NULL;
  if (bi % NR) {
    tail = dcx_scratch((size_t)(n * NR));
    if (!tail) return DCX_ENOMEM;
  }
  for (int64_t p = 0; p < P; p++) {
    const float* a = gy + (shuffle ? p : p * bo);
    for (int64_t k0 = 0; k0 < bi; k0 += NR) {
      const int64_t ncols = min64(NR, bi - k0);
      const float* b = x + p * bi + k0;
      int64_t b_rs = d_in;
      if (ncols < NR) {
        for (int64_t r = 0; r < n; r++)
          for (int64_t l = 0; l < NR; l++) tail[r * NR + l] = l < ncols ? b[r * d_in + l] : 0.0f;
        b = tail;
        b_rs = NR;
      }
      run_panel(X1, bo, n, a, shuffle ? P : 1, d_out, b, b_rs, gw + p * bo * bi + k0, bi,
                (int)ncols, NULL);
    }
  }
  return DCX_OK;
}

static int impl_backward_bias(const float* gy, int64_t n, int64_t d_out, int64_t P, int shuffle,
                              float* gb) {
  const int64_t bo = d_out / P;
  float* sums = gb;
  if (shuffle && P > 1) {
    sums = dcx_scratch((size_t)d_out);
    if (!sums) return DCX_ENOMEM;
  }
  memset(sums, 0, sizeof(float) * (size_t)d_out);
  for (int64_t r = 0; r < n; r++) {
    const float* g = gy + r * d_out;
    int64_t o = 0;
    for (; o + 8 <= d_out; o += 8) st8(sums + o, ld8(sums + o) + ld8(g + o));
    for (; o < d_out; o++) sums[o] += g[o];
  }
  if (sums != gb) transpose(sums, P, bo, P, gb, bo); /* gb[p*bo + j] = sums[j*P + p] */
  return DCX_OK;
}

const struct partitioned_linear_isa DCX_ISA_TABLE(partitioned_linear_isa) = {
    impl_forward,        impl_packed_size,     impl_pack_weight,
    impl_backward_input, impl_backward_weight, impl_backward_bias,
};
