/* The portable path built with -march=x86-64-v3 (AVX2 + FMA); chosen at run time when the CPU has it. */
#if !defined(__AVX2__) || !defined(__FMA__)
#error "spl_isa_x86v3.c must be compiled with -march=x86-64-v3"
#endif
#define SPL_IMPL_VTABLE spl_impl_x86_64_v3
#include "spl_kernel_impl.h"
