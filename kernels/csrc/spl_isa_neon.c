/* aarch64: NEON intrinsics micro-kernels (fmla by element / by vector); NEON is baseline on aarch64. */
#if !defined(__aarch64__) || !defined(__ARM_NEON)
#error "spl_isa_neon.c is for aarch64 with NEON"
#endif
#define SPL_USE_NEON 1
#define SPL_IMPL_VTABLE spl_impl_neon
#include "spl_kernel_impl.h"
