/* The portable training kernels built with -march=x86-64-v3 (AVX2 + FMA); chosen at run time when the CPU has it. */
#if !defined(__AVX2__) || !defined(__FMA__)
#error "tk_isa_x86v3.c must be compiled with -march=x86-64-v3"
#endif
#define TK_IMPL_VTABLE tk_impl_x86_64_v3
#include "tk_kernel_impl.h"
