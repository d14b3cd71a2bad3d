/* What every native benchmark driver shares: one op at one shape per run, a warm-up batch and 7 timed
 * batches of R calls, the median per call:
 *
 *   bench_<family>_native OP ARGS... [--reps R] [--isa NAME]
 *
 * prints "OP ARGS isa=NAME median_s=T flops=F gflops=G" (FLOPs: useful multiply-adds x 2, 0 for ops
 * that are not products). R defaults to about 20 ms a batch, from the time of one call. Under callgrind
 * or the qemu instruction counter use --reps 1: the count is then 8 calls plus the set-up. */
#ifndef DCX_BASE_NATIVE_BENCH_H
#define DCX_BASE_NATIVE_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/isa.h"

static inline double bench_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static inline int bench_cmp(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
/* n floats in [-0.5, 0.5), a fixed pattern per seed */
static inline float* bench_filled(size_t n, unsigned seed) {
  float* p = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) p[i] = (float)(((i + seed) * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return p;
}

/* The index of the op argv[1] names among ops[0 .. n), or -1. */
static inline int bench_op(int argc, char** argv, const char* const* ops, int n) {
  for (int i = 0; argc > 1 && i < n; i++)
    if (!strcmp(argv[1], ops[i])) return i;
  return -1;
}

/* argv = OP ARGS[nargs] options, op = bench_op's answer: the numeric ARGS into v, --reps into *reps,
 * --isa applied; 0, or 2 after printing usage. */
static inline int bench_args(int argc, char** argv, int op, int nargs, long* v, long* reps, const char* usage) {
  if (op < 0 || argc < 2 + nargs) {
    fprintf(stderr, "usage: %s %s [--reps R] [--isa NAME]\n", argv[0], usage);
    return 2;
  }
  for (int i = 0; i < nargs; i++) v[i] = atol(argv[2 + i]);
  *reps = 0;
  for (int i = 2 + nargs; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      *reps = atol(argv[++i]);
    } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
      const int isa = dcx_isa_from_name(argv[++i]);
      if (isa < 0 || dcx_set_isa(isa) != DCX_OK) {
        fprintf(stderr, "isa %s not available\n", argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "usage: %s %s [--reps R] [--isa NAME]\n", argv[0], usage);
      return 2;
    }
  }
  return 0;
}

/* Times call(ctx) (a kernel's status) and prints the line; exit status 1 when a call failed. */
static inline int bench_run(char** argv, int nargs, double flops, long reps, int (*call)(void*), void* ctx) {
  int rc = 0;
  if (reps <= 0) {
    const double t0 = bench_now();
    rc = call(ctx);
    reps = (long)(20e-3 / (bench_now() - t0 + 1e-9)) + 1;
  }
  double t[7];
  for (int it = -1; it < 7 && !rc; it++) {
    const double t0 = bench_now();
    for (long r = 0; r < reps && !rc; r++) rc = call(ctx);
    if (it >= 0) t[it] = (bench_now() - t0) / reps;
  }
  if (rc) {
    fprintf(stderr, "%s failed: %s\n", argv[1], dcx_strerror(rc));
    return 1;
  }
  qsort(t, 7, sizeof *t, bench_cmp);
  printf("%s", argv[1]);
  for (int i = 0; i < nargs; i++) printf(" %s", argv[2 + i]);
  printf(" isa=%s median_s=%.4e flops=%.0f gflops=%.2f\n", dcx_isa_name(dcx_active_isa()), t[3], flops,
         flops / t[3] / 1e9);
  return 0;
}

#endif
