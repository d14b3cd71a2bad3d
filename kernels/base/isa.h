/* Which build of the kernels runs: the portable one (GCC/Clang vector extensions, the target's baseline
 * ISA), the same source built for x86-64-v3 (AVX2 + FMA; no AVX-512, so that it also runs under valgrind),
 * or on aarch64 the NEON micro-kernels. One choice per library, for every kernel family in it: chosen at
 * first use (the best this CPU has, or the one DCX_KERNEL_ISA names, for tests), or set by dcx_set_isa.
 *
 * Each kernel family compiles its <family>-impl.h once per ISA (base/isa_build.c) into a function table,
 * NAME_portable, NAME_x86_64_v3 or NAME_neon (DCX_ISA_TABLE(NAME) where it is defined); its checked entry
 * points call through DCX_ISA_PICK(NAME). */
#ifndef DCX_BASE_ISA_H
#define DCX_BASE_ISA_H

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum dcx_isa {
  DCX_ISA_AUTO = 0,
  DCX_ISA_PORTABLE = 1,
  DCX_ISA_X86_64_V3 = 2,
  DCX_ISA_NEON = 3,
};

/* dcx_set_isa(DCX_ISA_AUTO) restores the best one for this CPU; DCX_EINVAL_ISA when unavailable. */
DCX_API int dcx_set_isa(int isa);
DCX_API int dcx_active_isa(void);
DCX_API int dcx_isa_available(int isa);
/* "auto", "portable", "x86-64-v3", "neon"; dcx_isa_from_name gives -1 for any other name. */
DCX_API const char* dcx_isa_name(int isa);
DCX_API int dcx_isa_from_name(const char* name);

#define DCX_ISA_PASTE_(a, b) a##_##b
#define DCX_ISA_PASTE(a, b) DCX_ISA_PASTE_(a, b)
/* In a family's -impl.h: the name of this ISA build's table (DCX_ISA: portable, x86_64_v3 or neon). */
#define DCX_ISA_TABLE(name) DCX_ISA_PASTE(name, DCX_ISA)

#if defined(__x86_64__)
#define DCX_ISA_TABLES(type, name) extern const type name##_portable, name##_x86_64_v3
#define DCX_ISA_PICK(name) (dcx_active_isa() == DCX_ISA_X86_64_V3 ? &name##_x86_64_v3 : &name##_portable)
#elif defined(__aarch64__)
#define DCX_ISA_TABLES(type, name) extern const type name##_portable, name##_neon
#define DCX_ISA_PICK(name) (dcx_active_isa() == DCX_ISA_NEON ? &name##_neon : &name##_portable)
#else
#define DCX_ISA_TABLES(type, name) extern const type name##_portable
#define DCX_ISA_PICK(name) (&name##_portable)
#endif

#ifdef __cplusplus
}
#endif

#endif
