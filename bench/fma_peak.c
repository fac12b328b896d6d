/*
 * fma_peak.c — the machine's FP32 fused multiply-add peak, measured: each thread runs 12
 * independent chains of 16-lane FMAs (enough to cover the FMA latency), nothing else.
 *
 * What it is for: the denominator of "% of peak" in bench/compare.sh, measured instead of taken
 * from a data sheet (a VM's clock and the width of its FMA units are not always what they seem).
 * Where the compiler targets AVX512_BF16 it also measures the bfloat16 dot-product peak (12
 * chains of vdpbf16ps, 32 multiply-adds each), the ceiling of fm's --precision bf16 products.
 * Build: gcc -O2 -march=native -fopenmp bench/fma_peak.c -o build/fma_peak
 * Not for: anything in libfm.
 */
#include <omp.h>
#include <stdio.h>
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

#define CHAINS 12
#define LANES 16

int main(void) {
    long iters = 200000000 / omp_get_max_threads();
    double best = 0.0;
    float sink = 0.0f;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            float acc[CHAINS][LANES];
            for (int c = 0; c < CHAINS; c++)
                for (int l = 0; l < LANES; l++) acc[c][l] = 0.001f * (float)(c * LANES + l);
            const float mul = 0.9999f, add = 0.0001f;
            for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
                for (int c = 0; c < CHAINS; c++)
#pragma omp simd
                    for (int l = 0; l < LANES; l++) acc[c][l] = acc[c][l] * mul + add; /* one FMA each */
            for (int c = 0; c < CHAINS; c++)
                for (int l = 0; l < LANES; l++) sink += acc[c][l];
        }
        double gflops = 2.0 * CHAINS * LANES * (double)iters * omp_get_max_threads() / (omp_get_wtime() - t0) / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("fma_peak gflops=%.1f threads=%d (checksum %g)\n", best, omp_get_max_threads(), (double)sink);
#ifdef __AVX512BF16__
    best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            __m512 acc[CHAINS];
            for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps(0.001f * (float)c);
            __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.9999f), _mm512_set1_ps(0.9999f));
            __m512bh y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(1e-4f));
            for (long it = 0; it < iters / 2; it++)
#pragma GCC unroll 12
                for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], x, y); /* 32 multiply-adds */
            for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_ps(acc[c]);
        }
        double gflops = 4.0 * CHAINS * LANES * (double)(iters / 2) * omp_get_max_threads() / (omp_get_wtime() - t0) / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("bf16_dot_peak gflops=%.1f threads=%d (checksum %g)\n", best, omp_get_max_threads(), (double)sink);
#endif
    return 0;
}
