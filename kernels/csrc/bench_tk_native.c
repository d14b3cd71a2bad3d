/* Native micro-benchmark and instruction-count target of the training kernels, one shape:
 *
 *   bench_tk_native gemm M N K                      [--reps R] [--isa NAME]
 *   bench_tk_native linear_fwd|linear_bwd N IN OUT  [--reps R] [--isa NAME]
 *   bench_tk_native conv_fwd|conv_bwd N C H W O K STRIDE PAD GROUPS [--reps R] [--isa NAME]
 *
 * Prints one line: the op, its shape, the ISA, the median seconds per call over 7 timed batches
 * of R calls (after one warm-up batch), FLOPs per call and GFLOP/s (useful multiply-adds x 2; a
 * backward counts its input and weight gradients). Under callgrind or the qemu instruction counter
 * use --reps 1: the count is then 8 calls plus the set-up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spl_kernel.h"
#include "tk_kernels.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
static float* filled(size_t n, unsigned seed) {
  float* p = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) p[i] = (float)(((i + seed) * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return p;
}
static int usage(const char* argv0) {
  fprintf(stderr,
          "usage: %s gemm M N K | linear_fwd|linear_bwd N IN OUT | conv_fwd|conv_bwd N C H W O K STRIDE PAD GROUPS"
          " [--reps R] [--isa NAME]\n",
          argv0);
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 2) return usage(argv[0]);
  const char* op = argv[1];
  const int conv = !strncmp(op, "conv_", 5), gemm = !strcmp(op, "gemm");
  const int nargs = conv ? 9 : 3;
  if (!conv && !gemm && strcmp(op, "linear_fwd") && strcmp(op, "linear_bwd")) return usage(argv[0]);
  if (argc < 2 + nargs) return usage(argv[0]);
  long v[9];
  for (int i = 0; i < nargs; i++) v[i] = atol(argv[2 + i]);
  long reps = 0;
  for (int i = 2 + nargs; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atol(argv[++i]);
    else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
      const int isa = spl_isa_from_name(argv[i + 1]);
      if (isa < 0 || spl_set_isa(isa) != SPL_OK) { fprintf(stderr, "isa %s not available\n", argv[i + 1]); return 2; }
      i++;
    } else return usage(argv[0]);
  }
  struct tk_conv2d s = {0};
  float *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *f = NULL;
  double flops;
  if (conv) {
    s = (struct tk_conv2d){v[0], v[1], v[2], v[3], v[4], v[5], v[5], v[6], v[6], v[7], v[7], 1, 1, v[8]};
    if (tk_conv2d_check(&s)) { fprintf(stderr, "%s\n", tk_strerror(TK_EINVAL_SHAPE)); return 2; }
    const long p = tk_conv2d_out_h(&s) * tk_conv2d_out_w(&s), nx = s.n * s.c_in * s.h * s.w;
    const long nw = s.c_out * (s.c_in / s.groups) * s.kh * s.kw, ny = s.n * s.c_out * p;
    a = filled(nx, 1), b = filled(nw, 2), c = filled(s.c_out, 3), d = filled(ny, 4), e = filled(nx, 5), f = filled(nw, 6);
    flops = 2.0 * ny * (s.c_in / s.groups) * s.kh * s.kw;
    if (!strcmp(op, "conv_bwd")) flops *= 2;
  } else {
    const long m = v[0], n = v[1], k = v[2];
    const long wide = n > k ? n : k; /* linear: x [m, n], W [k, n], y [m, k] */
    a = filled(m * wide, 1), b = filled(k * n, 2), c = filled(m * wide, 3), d = filled(wide, 4);
    e = filled(m * wide, 5), f = filled(k * n, 6);
    flops = 2.0 * m * n * k;
    if (!strcmp(op, "linear_bwd")) flops *= 2;
  }
  if (reps <= 0) reps = (long)(20e-3 * 20e9 / (flops + 2e4)) + 1; /* ~20 ms per batch */
  double t[7];
  int rc = 0;
  for (int it = -1; it < 7; it++) {
    const double t0 = now();
    for (long r = 0; r < reps && !rc; r++) {
      if (gemm) rc = tk_gemm(v[0], v[1], v[2], a, v[2], 1, b, v[1], 1, e, v[1], 0, NULL, NULL, 0);
      else if (!strcmp(op, "linear_fwd")) rc = tk_linear_forward(a, b, d, v[0], v[1], v[2], 1, e);
      else if (!strcmp(op, "linear_bwd")) rc = tk_linear_backward(e, a, b, NULL, v[0], v[1], v[2], c, f, d);
      else if (!strcmp(op, "conv_fwd")) rc = tk_conv2d_forward(&s, a, b, c, 1, d);
      else rc = tk_conv2d_backward(&s, d, a, b, NULL, e, f, c);
    }
    if (it >= 0) t[it] = (now() - t0) / reps;
  }
  if (rc) { fprintf(stderr, "%s failed: %s\n", op, tk_strerror(rc)); return 1; }
  qsort(t, 7, sizeof *t, cmp_double);
  printf("%s", op);
  for (int i = 0; i < nargs; i++) printf(" %ld", v[i]);
  printf(" isa=%s median_s=%.4e flops=%.0f gflops=%.2f\n", spl_isa_name(spl_active_isa()), t[3], flops,
         flops / t[3] / 1e9);
  free(a); free(b); free(c); free(d); free(e); free(f);
  return 0;
}
