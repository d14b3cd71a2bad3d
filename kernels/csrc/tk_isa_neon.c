/* aarch64: the training kernels with NEON micro-kernels (GEMM tile by fmla-by-lane, depthwise taps). */
#if !defined(__aarch64__) || !defined(__ARM_NEON)
#error "tk_isa_neon.c is for aarch64 with NEON"
#endif
#define TK_USE_NEON 1
#define TK_IMPL_VTABLE tk_impl_neon
#include "tk_kernel_impl.h"
