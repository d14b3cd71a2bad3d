/* What every native test driver shares: a fixed random stream, comparisons against double-precision
 * references, and a main that runs a family's checks once per ISA this build and CPU have, in one
 * process (so that the aarch64 build checks the whole sweep in one qemu-aarch64 run):
 *
 *   test_<family>_native [--quick] [--isa NAME]
 *
 * prints "isa NAME: N failures" per ISA, then "C checks, F failures"; exit status 1 on any failure.
 * --quick (for emulators) runs a smaller sweep. */
#ifndef DCX_BASE_NATIVE_TEST_H
#define DCX_BASE_NATIVE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/isa.h"
#include "base/scratch.h"

static int failures = 0, checks = 0;
static unsigned long long rng = 88172645463325252ull;

static inline float frand(void) { /* xorshift, uniform in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static inline float* rand_buf(size_t n) {
  float* p = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) p[i] = frand();
  return p;
}
static inline float* zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* |got - want| <= tol * (1 + |want|) everywhere */
static inline void expect_close(const char* what, const float* got, const double* want, size_t n, double tol) {
  checks++;
  for (size_t i = 0; i < n; i++) {
    const double err = fabs((double)got[i] - want[i]);
    if (!(err <= tol * (1.0 + fabs(want[i])))) {
      failures++;
      printf("FAIL %s: element %zu: got %.7g want %.7g\n", what, i, got[i], want[i]);
      return;
    }
  }
}
static inline void expect_rc(const char* what, int rc, int want) {
  checks++;
  if (rc != want) {
    failures++;
    printf("FAIL %s: rc %d (%s), want %d\n", what, rc, dcx_strerror(rc), want);
  }
}

static inline int native_test_main(int argc, char** argv, void (*run)(int quick)) {
  int quick = 0;
  const char* only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--isa") && i + 1 < argc) only = argv[++i];
  }
  int tested = 0;
  for (int isa = DCX_ISA_PORTABLE; isa <= DCX_ISA_NEON; isa++) {
    if (!dcx_isa_available(isa) || (only && strcmp(only, dcx_isa_name(isa)))) continue;
    dcx_set_isa(isa);
    const int before = failures;
    run(quick);
    tested++;
    printf("isa %s: %d failures\n", dcx_isa_name(isa), failures - before);
  }
  dcx_set_isa(DCX_ISA_AUTO);
  dcx_release_scratch();
  printf("%d checks, %d failures\n", checks, failures);
  return failures || !tested ? 1 : 0;
}

/* The main of a family whose kernels work on [rows, cols] (activation, loss): its check run on a batch
 * of a few classes, a single column, and sizes past a vector's width that are no multiple of it. */
static void (*native_rows_check)(int64_t rows, int64_t cols);
static inline void native_rows_run(int quick) {
  (void)quick;
  native_rows_check(32, 10);
  native_rows_check(7, 1);
  native_rows_check(64, 37);
}
static inline int native_rows_test_main(int argc, char** argv, void (*check)(int64_t rows, int64_t cols)) {
  native_rows_check = check;
  return native_test_main(argc, argv, native_rows_run);
}

#endif
