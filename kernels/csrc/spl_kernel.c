/* Public entry points of the fused shuffled partitioned linear: argument checks, the choice of
 * implementation for this CPU, and the per-thread scratch buffer. The kernels themselves are in
 * spl_kernel_impl.h (one build per ISA). */
#include "spl_kernel.h"

#include <stdlib.h>
#include <string.h>

#include "spl_kernel_internal.h"

/* ---------------------------------------------------------------- scratch */

static __thread float* tls_scratch = NULL;
static __thread size_t tls_scratch_cap = 0;

float* spl__scratch(size_t nfloats) {
  if (nfloats < 16) nfloats = 16;
  if (nfloats <= tls_scratch_cap) return tls_scratch;
  void* mem = NULL;
  if (posix_memalign(&mem, 64, nfloats * sizeof(float)) != 0) return NULL;
  free(tls_scratch);
  tls_scratch = (float*)mem;
  tls_scratch_cap = nfloats;
  return tls_scratch;
}

void spl_release_scratch(void) {
  free(tls_scratch);
  tls_scratch = NULL;
  tls_scratch_cap = 0;
}

/* ---------------------------------------------------------------- implementation choice */

#if defined(__x86_64__)
static int cpu_has_x86_64_v3(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
         __builtin_cpu_supports("f16c");
}
#endif

int spl_isa_available(int isa) {
  switch (isa) {
    case SPL_ISA_AUTO:
    case SPL_ISA_PORTABLE: return 1;
#if defined(__x86_64__)
    case SPL_ISA_X86_64_V3: return cpu_has_x86_64_v3();
#endif
#if defined(__aarch64__)
    case SPL_ISA_NEON: return 1;
#endif
    default: return 0;
  }
}

int spl_isa_from_name(const char* name) {
  for (int isa = SPL_ISA_PORTABLE; isa <= SPL_ISA_NEON; isa++)
    if (name && strcmp(name, spl_isa_name(isa)) == 0) return isa;
  return -1;
}

static int best_isa(void) {
  const int forced = spl_isa_from_name(getenv("DCX_SPL_ISA")); /* force one for tests */
  if (forced > 0 && spl_isa_available(forced)) return forced;
#if defined(__aarch64__)
  return SPL_ISA_NEON;
#else
  return cpu_has_x86_64_v3() ? SPL_ISA_X86_64_V3 : SPL_ISA_PORTABLE;
#endif
}

static int active_isa = SPL_ISA_AUTO; /* resolved on first use */

static const struct spl_impl* impl(void) {
  int isa = __atomic_load_n(&active_isa, __ATOMIC_RELAXED);
  if (isa == SPL_ISA_AUTO) {
    isa = best_isa();
    __atomic_store_n(&active_isa, isa, __ATOMIC_RELAXED);
  }
  switch (isa) {
#if defined(__x86_64__)
    case SPL_ISA_X86_64_V3: return &spl_impl_x86_64_v3;
#endif
#if defined(__aarch64__)
    case SPL_ISA_NEON: return &spl_impl_neon;
#endif
    default: return &spl_impl_portable;
  }
}

int spl_set_isa(int isa) {
  if (isa == SPL_ISA_AUTO) isa = best_isa();
  if (!spl_isa_available(isa)) return SPL_EINVAL_ISA;
  __atomic_store_n(&active_isa, isa, __ATOMIC_RELAXED);
  return SPL_OK;
}

int spl_active_isa(void) {
  (void)impl();
  return __atomic_load_n(&active_isa, __ATOMIC_RELAXED);
}

const char* spl_isa_name(int isa) {
  switch (isa) {
    case SPL_ISA_AUTO: return "auto";
    case SPL_ISA_PORTABLE: return "portable";
    case SPL_ISA_X86_64_V3: return "x86-64-v3";
    case SPL_ISA_NEON: return "neon";
    default: return "unknown";
  }
}

const char* spl_strerror(int code) {
  switch (code) {
    case SPL_OK: return "ok";
    case SPL_EINVAL_SHAPE:
      return "d_in and d_out must be positive and divisible by the number of partitions P";
    case SPL_EINVAL_PTR: return "a required data pointer is NULL";
    case SPL_ENOMEM: return "out of memory for the kernel's scratch buffer";
    case SPL_EINVAL_ISA: return "that kernel implementation is not available on this build or CPU";
    default: return "unknown error";
  }
}

/* ---------------------------------------------------------------- checked entry points */

static int check_shape(int64_t n, int64_t d_in, int64_t d_out, int64_t p) {
  if (n < 0 || d_in < 1 || d_out < 1 || p < 1 || d_in % p || d_out % p) return SPL_EINVAL_SHAPE;
  return SPL_OK;
}

int spl_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t d_in,
                int64_t d_out, int64_t p, int shuffle, float* y) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (n == 0) return SPL_OK;
  if (!x || !w || !y) return SPL_EINVAL_PTR;
  return impl()->forward(x, w, NULL, bias, n, d_in, d_out, p, shuffle != 0, y);
}

size_t spl_packed_size(int64_t d_in, int64_t d_out, int64_t p, int shuffle) {
  if (check_shape(0, d_in, d_out, p)) return 0;
  return impl()->packed_size(d_in, d_out, p, shuffle != 0);
}

int spl_pack_weight(const float* w, int64_t d_in, int64_t d_out, int64_t p, int shuffle,
                    float* packed) {
  int rc = check_shape(0, d_in, d_out, p);
  if (rc) return rc;
  if (!w || !packed) return SPL_EINVAL_PTR;
  impl()->pack_weight(w, d_in, d_out, p, shuffle != 0, packed);
  return SPL_OK;
}

int spl_forward_packed(const float* x, const float* packed, const float* bias, int64_t n,
                       int64_t d_in, int64_t d_out, int64_t p, int shuffle, float* y) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (n == 0) return SPL_OK;
  if (!x || !packed || !y) return SPL_EINVAL_PTR;
  return impl()->forward(x, NULL, packed, bias, n, d_in, d_out, p, shuffle != 0, y);
}

int spl_backward_input(const float* grad_y, const float* w, int64_t n, int64_t d_in, int64_t d_out,
                       int64_t p, int shuffle, float* grad_x) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (n == 0) return SPL_OK;
  if (!grad_y || !w || !grad_x) return SPL_EINVAL_PTR;
  return impl()->backward_input(grad_y, w, n, d_in, d_out, p, shuffle != 0, grad_x);
}

int spl_backward_weight(const float* grad_y, const float* x, int64_t n, int64_t d_in, int64_t d_out,
                        int64_t p, int shuffle, float* grad_w) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (!grad_w || (n > 0 && (!grad_y || !x))) return SPL_EINVAL_PTR;
  if (n == 0) {
    memset(grad_w, 0, sizeof(float) * (size_t)(d_in / p * d_out));
    return SPL_OK;
  }
  return impl()->backward_weight(grad_y, x, n, d_in, d_out, p, shuffle != 0, grad_w);
}

int spl_backward_bias(const float* grad_y, int64_t n, int64_t d_out, int64_t p, int shuffle,
                      float* grad_b) {
  int rc = check_shape(n, d_out, d_out, p);
  if (rc) return rc;
  if (!grad_b || (n > 0 && !grad_y)) return SPL_EINVAL_PTR;
  return impl()->backward_bias(grad_y, n, d_out, p, shuffle != 0, grad_b);
}
