/* 8-lane float vectors (GCC/Clang vector extensions) shared by the dcx kernels.
 *
 * Loads and stores go through memcpy, so any float pointer will do (no alignment needed); the
 * compiler turns them into the vector moves of the ISA each translation unit is built for. */
#ifndef DCX_VEC_H
#define DCX_VEC_H

#include <string.h>

#define DCX_INLINE static inline __attribute__((always_inline))

typedef float v8f __attribute__((vector_size(32)));

DCX_INLINE v8f ld8(const float* p) {
  v8f v;
  memcpy(&v, p, sizeof v);
  return v;
}
DCX_INLINE void st8(float* p, v8f v) { memcpy(p, &v, sizeof v); }

#endif
