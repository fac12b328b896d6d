/*
 * membw.c — the machine's memory bandwidth, measured: a STREAM-style triad a[i] = b[i] + s * c[i]
 * over three 64 MiB arrays on every thread, best of 8 passes, counted as 3 arrays moved.
 *
 * What it is for: the bandwidth beside the FMA peak (fma_peak.c) in the same run as a benchmark,
 * so a ratio can be read against what the machine could do at that moment.
 * Build: gcc -O2 -march=native -fopenmp bench/membw.c -o build/membw
 * Not for: anything in libfm.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t n = (size_t)16 << 20; /* floats per array: 64 MiB */
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "membw: out of memory\n");
        return 1;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
    double best = 1e30;
    for (int pass = 0; pass < 8; pass++) {
        double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
        double dt = omp_get_wtime() - t0;
        if (dt < best) best = dt;
    }
    printf("membw threads=%d triad_gb_s=%.1f (check %g)\n", omp_get_max_threads(), 3.0 * n * sizeof(float) / best / 1e9,
           (double)a[n / 2]);
    free(a), free(b), free(c);
    return 0;
}
