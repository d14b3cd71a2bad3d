/* Internal: the function table each ISA build of spl_kernel_impl.h exports, and the scratch. */
#ifndef DCX_SPL_KERNEL_INTERNAL_H
#define DCX_SPL_KERNEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

struct spl_impl {
  int (*forward)(const float* x, const float* w, const float* packed, const float* bias, int64_t n,
                 int64_t d_in, int64_t d_out, int64_t p, int shuffle, float* y);
  size_t (*packed_size)(int64_t d_in, int64_t d_out, int64_t p, int shuffle);
  void (*pack_weight)(const float* w, int64_t d_in, int64_t d_out, int64_t p, int shuffle,
                      float* packed);
  int (*backward_input)(const float* gy, const float* w, int64_t n, int64_t d_in, int64_t d_out,
                        int64_t p, int shuffle, float* gx);
  int (*backward_weight)(const float* gy, const float* x, int64_t n, int64_t d_in, int64_t d_out,
                         int64_t p, int shuffle, float* gw);
  int (*backward_bias)(const float* gy, int64_t n, int64_t d_out, int64_t p, int shuffle, float* gb);
};

extern const struct spl_impl spl_impl_portable;
#if defined(__x86_64__)
extern const struct spl_impl spl_impl_x86_64_v3;
#endif
#if defined(__aarch64__)
extern const struct spl_impl spl_impl_neon;
#endif

/* This thread's scratch, at least nfloats long, 64-byte aligned; NULL if allocation fails.
 * One buffer per thread: a call takes it once and carves it. */
float* spl__scratch(size_t nfloats);

#endif
