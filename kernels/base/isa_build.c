/* One ISA build of a kernel library: CMake compiles this file once per ISA with DCX_ISA (portable,
 * x86_64_v3 or neon: the suffix of the function tables it defines), DCX_KERNELS_IMPL (the library's
 * -impl.h, which includes every family's) and the ISA's flags (-march=x86-64-v3; DCX_USE_NEON on
 * aarch64, where NEON is baseline). Every family of a library is one translation unit per ISA, so the
 * helpers the families share (the GEMM, the row reductions) inline into each of them. */
#if defined(DCX_USE_NEON) && (!defined(__aarch64__) || !defined(__ARM_NEON))
#error "the NEON build is for aarch64 with NEON"
#endif
#include DCX_KERNELS_IMPL
