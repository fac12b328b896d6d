/*
 * readbw.c — the machine's memory read bandwidth, measured the same way every time: one buffer
 * of at least 1 GiB (default 1 GiB), first touched by the threads that later read it, read by all
 * OpenMP threads (each its own contiguous share) with the widest vector loads this CPU has, the
 * loaded words summed so the reads cannot be dropped; best of 5 passes; printed as GB/s (1e9 B/s).
 *
 * What it is for: the ceiling that batch-1 decoding is held against (bench/decode_bandwidth.sh):
 * decoding streams every weight once per token, so bytes of weights per token x tokens/s over
 * this figure, measured in the same run, is the share of the read bandwidth it reaches.
 * Build: gcc -O2 -fopenmp bench/readbw.c -o build/readbw (no -march needed: the AVX-512 and
 * AVX2 loops are compiled by target attributes and chosen by cpuid).
 * Usage: readbw [MiB], MiB >= 1024. Prints
 *   readbw threads=T mib=M isa=avx512|avx2|generic read_gb_s=X.X best_s=S sum=N
 * Not for: write or copy bandwidth (membw.c is the STREAM triad), or anything in libfm.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PASSES 5
#define MIN_MIB 1024

/* Sum of the 64-bit words p[0..n), n a multiple of 64 (512 bytes). Eight independent
 * accumulators (one per 64-byte load) keep enough loads in flight; integer adds keep the sum
 * exact whatever the order. */
__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint64_t *p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n; i += 64) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 8)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 16)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 24)));
        a4 = _mm512_add_epi64(a4, _mm512_load_si512((const void *)(p + i + 32)));
        a5 = _mm512_add_epi64(a5, _mm512_load_si512((const void *)(p + i + 40)));
        a6 = _mm512_add_epi64(a6, _mm512_load_si512((const void *)(p + i + 48)));
        a7 = _mm512_add_epi64(a7, _mm512_load_si512((const void *)(p + i + 56)));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                 _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
    return (uint64_t)_mm512_reduce_add_epi64(s);
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < n; i += 32) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
        a4 = _mm256_add_epi64(a4, _mm256_load_si256((const __m256i *)(p + i + 16)));
        a5 = _mm256_add_epi64(a5, _mm256_load_si256((const __m256i *)(p + i + 20)));
        a6 = _mm256_add_epi64(a6, _mm256_load_si256((const __m256i *)(p + i + 24)));
        a7 = _mm256_add_epi64(a7, _mm256_load_si256((const __m256i *)(p + i + 28)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)),
                                 _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7)));
    uint64_t w[4];
    _mm256_storeu_si256((__m256i *)w, s);
    return w[0] + w[1] + w[2] + w[3];
}

static uint64_t sum_generic(const uint64_t *p, size_t n) {
    uint64_t a[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += p[i + j];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

int main(int argc, char **argv) {
    long mib = MIN_MIB;
    if (argc > 1) {
        char *end;
        mib = strtol(argv[1], &end, 10);
        if (*end || mib < MIN_MIB || mib > (1L << 20)) {
            fprintf(stderr, "readbw: MiB '%s' must be a whole number from %d to %ld\n", argv[1], MIN_MIB, 1L << 20);
            return 2;
        }
    }
    __builtin_cpu_init();
    uint64_t (*sum)(const uint64_t *, size_t) = sum_generic;
    const char *isa = "generic";
    if (__builtin_cpu_supports("avx512f")) sum = sum_avx512, isa = "avx512";
    else if (__builtin_cpu_supports("avx2")) sum = sum_avx2, isa = "avx2";

    size_t words = (size_t)mib << 17; /* 8-byte words: a multiple of 64 per thread share below */
    uint64_t *buf = aligned_alloc(4096, words * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "readbw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    int threads = omp_get_max_threads();
    /* each thread's share: contiguous, 512-byte aligned, the last takes the remainder */
    size_t share = words / threads / 64 * 64;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        size_t lo = (size_t)t * share, hi = t == threads - 1 ? words : lo + share;
        for (size_t i = lo; i < hi; i++) buf[i] = i & 0xff; /* first touch: pages near their reader */
    }
    double best = 1e30;
    uint64_t check = 0;
    for (int pass = 0; pass < PASSES; pass++) {
        uint64_t total = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            int t = omp_get_thread_num();
            size_t lo = (size_t)t * share, hi = t == threads - 1 ? words : lo + share;
            total += sum(buf + lo, hi - lo);
        }
        double dt = omp_get_wtime() - t0;
        if (dt < best) best = dt;
        check = total;
    }
    uint64_t expect = 0;
    for (size_t v = 0; v < 256; v++) expect += v * (words / 256);
    if (check != expect) {
        fprintf(stderr, "readbw: sum %llu, expected %llu\n", (unsigned long long)check, (unsigned long long)expect);
        return 1;
    }
    printf("readbw threads=%d mib=%ld isa=%s read_gb_s=%.1f best_s=%.4f sum=%llu\n", threads, mib, isa,
           (double)words * sizeof *buf / best / 1e9, best, (unsigned long long)check);
    free(buf);
    return 0;
}
