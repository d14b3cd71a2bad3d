/* A STAND-IN for LiteRT's benchmark_model, cross-compiled (static, aarch64) by the tests.
 *
 * The real tool is the user's own binary and cannot be downloaded here. This one takes the
 * same flags and logs the same line formats to stderr, with numbers it really measures:
 * "inference" is a pass over the bytes of --graph, timed with CLOCK_MONOTONIC; memory is
 * the process's maximum resident set size. A graph file that starts with "garbage" makes
 * it print something else entirely, as a wrong binary would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <math.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double max_rss_mb(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_maxrss / 1024.0;
}

static volatile unsigned long sink;

static double infer_us(const unsigned char *model, long size) {
    double start = now_us();
    unsigned long sum = 0;
    for (int pass = 0; pass < 64; pass++)
        for (long i = 0; i < size; i++) sum = sum * 31 + model[i];
    sink = sum;
    return now_us() - start;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One "count=... first=... curr=... min=... max=... avg=... std=..." line, as the tool's stats print. */
static double report(const double *us, int n, int percentiles) {
    double sum = 0, sq = 0, lo = us[0], hi = us[0];
    for (int i = 0; i < n; i++) {
        sum += us[i];
        sq += us[i] * us[i];
        if (us[i] < lo) lo = us[i];
        if (us[i] > hi) hi = us[i];
    }
    double avg = sum / n, var = sq / n - avg * avg;
    fprintf(stderr, "INFO: count=%d first=%.0f curr=%.0f min=%.0f max=%.0f avg=%g std=%.0f", n, us[0], us[n - 1], lo,
            hi, avg, var > 0 ? sqrt(var) : 0.0);
    if (percentiles) {
        double *sorted = malloc(n * sizeof *sorted);
        memcpy(sorted, us, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, by_value);
        fprintf(stderr, " p5=%.0f median=%.0f p95=%.0f", sorted[n * 5 / 100], sorted[n / 2], sorted[n * 95 / 100]);
        free(sorted);
    }
    fprintf(stderr, "\n\n");
    return avg;
}

int main(int argc, char **argv) {
    const char *graph = NULL;
    int runs = 50, warmups = 1, threads = 1;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--graph=", 8) == 0) graph = argv[i] + 8;
        else if (strncmp(argv[i], "--num_runs=", 11) == 0) runs = atoi(argv[i] + 11);
        else if (strncmp(argv[i], "--warmup_runs=", 14) == 0) warmups = atoi(argv[i] + 14);
        else if (strncmp(argv[i], "--num_threads=", 14) == 0) threads = atoi(argv[i] + 14);
    }
    double rss_start = max_rss_mb(), start = now_us();
    fprintf(stderr, "INFO: STARTING!\nINFO: Log parameter values verbosely: [0]\nINFO: Min num runs: [%d]\n"
                    "INFO: Num threads: [%d]\nINFO: Graph: [%s]\n", runs, threads, graph ? graph : "");
    FILE *f = graph ? fopen(graph, "rb") : NULL;
    if (!f) {
        fprintf(stderr, "ERROR: Could not open '%s'.\nERROR: Benchmarking failed.\n", graph ? graph : "");
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *model = malloc(size + 1);
    size = (long)fread(model, 1, size, f);
    fclose(f);
    if (size >= 7 && memcmp(model, "garbage", 7) == 0) {
        printf("Segmentation of garbage: 3 apples, 4 pears\n");
        return 0;
    }
    fprintf(stderr, "INFO: #threads used for CPU inference: [%d]\nINFO: Loaded model %s\n"
                    "INFO: The input model file size (MB): %g\n", threads, graph, size / 1e6);
    double init_us = now_us() - start, rss_init = max_rss_mb();
    fprintf(stderr, "INFO: Initialized session in %gms.\n", init_us / 1000);

    double *warm = malloc((warmups > 0 ? warmups : 1) * sizeof *warm), *timed = malloc(runs * sizeof *timed);
    fprintf(stderr, "INFO: Running benchmark for at least %d iterations and at least 0.5 seconds but terminate if "
                    "exceeding 150 seconds.\n", warmups);
    for (int i = 0; i < warmups; i++) warm[i] = infer_us(model, size);
    double warm_avg = warmups > 0 ? report(warm, warmups, 0) : 0;
    fprintf(stderr, "INFO: Running benchmark for at least %d iterations and at least 1 seconds but terminate if "
                    "exceeding 150 seconds.\n", runs);
    for (int i = 0; i < runs; i++) timed[i] = infer_us(model, size);
    double avg = report(timed, runs, 1);
    fprintf(stderr, "INFO: Inference timings in us: Init: %.0f, First inference: %.0f, Warmup (avg): %g, "
                    "Inference (avg): %g\n", init_us, warmups > 0 ? warm[0] : timed[0], warm_avg, avg);
    fprintf(stderr, "INFO: Note: as the benchmark tool itself affects memory footprint, the following is only "
                    "APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at "
                    "your discretion.\n");
    fprintf(stderr, "INFO: Memory footprint delta from the start of the tool (MB): init=%g overall=%g\n",
            rss_init - rss_start, max_rss_mb() - rss_start);
    fprintf(stderr, "INFO: Overall peak memory footprint (MB) via periodic monitoring: %g\n", max_rss_mb());
    return 0;
}
