#include "base/isa.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
static int cpu_has_x86_64_v3(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
}
#endif

int dcx_isa_available(int isa) {
  switch (isa) {
    case DCX_ISA_AUTO:
    case DCX_ISA_PORTABLE: return 1;
#if defined(__x86_64__)
    case DCX_ISA_X86_64_V3: return cpu_has_x86_64_v3();
#endif
#if defined(__aarch64__)
    case DCX_ISA_NEON: return 1;
#endif
    default: return 0;
  }
}

int dcx_isa_from_name(const char* name) {
  for (int isa = DCX_ISA_PORTABLE; isa <= DCX_ISA_NEON; isa++)
    if (name && strcmp(name, dcx_isa_name(isa)) == 0) return isa;
  return -1;
}

static int best_isa(void) {
  const int forced = dcx_isa_from_name(getenv("DCX_KERNEL_ISA")); /* force one for tests */
  if (forced > 0 && dcx_isa_available(forced)) return forced;
#if defined(__aarch64__)
  return DCX_ISA_NEON;
#elif defined(__x86_64__)
  return cpu_has_x86_64_v3() ? DCX_ISA_X86_64_V3 : DCX_ISA_PORTABLE;
#else
  return DCX_ISA_PORTABLE;
#endif
}

static int active_isa = DCX_ISA_AUTO; /* resolved on first use */

int dcx_active_isa(void) {
  int isa = __atomic_load_n(&active_isa, __ATOMIC_RELAXED);
  if (isa == DCX_ISA_AUTO) {
    isa = best_isa();
    __atomic_store_n(&active_isa, isa, __ATOMIC_RELAXED);
  }
  return isa;
}

int dcx_set_isa(int isa) {
  if (isa == DCX_ISA_AUTO) isa = best_isa();
  if (!dcx_isa_available(isa)) return DCX_EINVAL_ISA;
  __atomic_store_n(&active_isa, isa, __ATOMIC_RELAXED);
  return DCX_OK;
}

const char* dcx_isa_name(int isa) {
  switch (isa) {
    case DCX_ISA_AUTO: return "auto";
    case DCX_ISA_PORTABLE: return "portable";
    case DCX_ISA_X86_64_V3: return "x86-64-v3";
    case DCX_ISA_NEON: return "neon";
    default: return "unknown";
  }
}
