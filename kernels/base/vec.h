/* 8-lane float vectors and their int32 masks (GCC/Clang vector extensions) and the scalar helpers every
 * kernel family uses.
 *
 * Loads and stores go through memcpy, so any float pointer will do (no alignment needed); the compiler
 * turns them into the vector moves of the ISA each build is compiled for. */
#ifndef DCX_BASE_VEC_H
#define DCX_BASE_VEC_H

#include <stdint.h>
#include <string.h>

#define DCX_INLINE static inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

DCX_INLINE v8f ld8(const float* p) {
  v8f v;
  memcpy(&v, p, sizeof v);
  return v;
}
DCX_INLINE void st8(float* p, v8f v) { memcpy(p, &v, sizeof v); }
DCX_INLINE v8f splat8(float s) { return (v8f){s, s, s, s, s, s, s, s}; }
/* the sum of the 8 lanes, always in this order (so that every kernel's dot products round alike) */
DCX_INLINE float hsum8(v8f v) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/* x (a float, double or v8f) rounded to its type here: keeps -ffp-contract=fast from fusing a product
 * into the addition after it, where the arithmetic a kernel matches (PyTorch's separate ops) rounds it. */
#define DCX_ROUNDED(x) __extension__({ __typeof__(x) r_ = (x); __asm__("" : "+m"(r_)); r_; })

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The dot-product tile of the GEMMs for short outputs and long reductions: out[r][j] = sum_q a[r*a_rs + q]
 * * bj[j][q] for r < mr <= 3, j < nr <= 4, as 3 x 4 tiles of 8-lane partial sums reduced once at the end.
 * Callers pass constant mr and nr, so that each inlined copy keeps its tile in registers. */
DCX_INLINE void dot_tile(const int mr, const int nr, int64_t k, const float* a, int64_t a_rs, const float* const bj[4],
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

#endif
