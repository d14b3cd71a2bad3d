/* Native micro-benchmark and callgrind target for one shape.
 *
 *   bench_spl_native N D_IN D_OUT P [--op forward|packed|backward] [--reps R] [--no-shuffle] [--isa NAME]
 *
 * Prints one line: op, shape, isa, median seconds per call over 7 timed batches of R calls, and
 * GFLOP/s (2 * N * D_IN * D_OUT / P flops per forward). Under `valgrind --tool=callgrind` use
 * --reps 1: the instruction count of the kernel is then read from the callgrind output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spl_kernel.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s N D_IN D_OUT P [--op forward|packed|backward] [--reps R] [--no-shuffle] [--isa NAME]\n", argv[0]);
    return 2;
  }
  const long n = atol(argv[1]), di = atol(argv[2]), dout = atol(argv[3]), P = atol(argv[4]);
  const char* op = "forward";
  long reps = 0;
  int shuffle = 1;
  for (int i = 5; i < argc; i++) {
    if (!strcmp(argv[i], "--op") && i + 1 < argc) op = argv[++i];
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atol(argv[++i]);
    else if (!strcmp(argv[i], "--no-shuffle")) shuffle = 0;
    else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
      const int isa = spl_isa_from_name(argv[i + 1]);
      if (isa < 0 || spl_set_isa(isa) != SPL_OK) { fprintf(stderr, "isa %s not available\n", argv[i + 1]); return 2; }
      i++;
    }
  }
  if (P < 1 || di % P || dout % P) { fprintf(stderr, "%s\n", spl_strerror(SPL_EINVAL_SHAPE)); return 2; }
  float* x = malloc(sizeof(float) * n * di);
  float* w = malloc(sizeof(float) * di / P * dout);
  float* b = malloc(sizeof(float) * dout);
  float* y = malloc(sizeof(float) * n * dout);
  float* gx = malloc(sizeof(float) * n * di);
  float* gw = malloc(sizeof(float) * di / P * dout);
  float* packed = malloc(sizeof(float) * spl_packed_size(di, dout, P, shuffle));
  for (long i = 0; i < n * di; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
  for (long i = 0; i < di / P * dout; i++) w[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
  for (long i = 0; i < dout; i++) b[i] = 0.01f * (float)(i % 17);
  for (long i = 0; i < n * dout; i++) y[i] = 0.001f * (float)(i % 13);
  spl_pack_weight(w, di, dout, P, shuffle, packed);
  double flops = 2.0 * n * di * dout / P;
  int mode = !strcmp(op, "packed") ? 1 : !strcmp(op, "backward") ? 2 : 0;
  if (mode == 2) flops *= 2;
  if (reps <= 0) { /* about 20 ms per batch */
    reps = (long)(20e-3 * 30e9 / (flops + 2e4)) + 1;
  }
  double t[7];
  for (int it = -1; it < 7; it++) {
    const double t0 = now();
    for (long r = 0; r < reps; r++) {
      if (mode == 0) spl_forward(x, w, b, n, di, dout, P, shuffle, y);
      else if (mode == 1) spl_forward_packed(x, packed, b, n, di, dout, P, shuffle, y);
      else {
        spl_backward_input(y, w, n, di, dout, P, shuffle, gx);
        spl_backward_weight(y, x, n, di, dout, P, shuffle, gw);
      }
    }
    if (it >= 0) t[it] = (now() - t0) / reps;
  }
  qsort(t, 7, sizeof *t, cmp_double);
  printf("%s n=%ld d_in=%ld d_out=%ld P=%ld shuffle=%d isa=%s median_s=%.4e gflops=%.2f\n", op, n, di,
         dout, P, shuffle, spl_isa_name(spl_active_isa()), t[3], flops / t[3] / 1e9);
  free(x); free(w); free(b); free(y); free(gx); free(gw); free(packed);
  return 0;
}
