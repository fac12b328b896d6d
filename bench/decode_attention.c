/*
 * decode_attention.c — decoding's attention alone: one query row against the key/value cache of
 * GPT-2 124M shapes (12 layers x 12 heads of 64, width 768; cache of LEN positions, default 88),
 * fm_k_attend_cached per (layer, head) on one thread, the cache evicted before every token by
 * reading a 256 MiB buffer (as the weights read between two tokens evict it); median of 21
 * tokens; printed as microseconds per token and the GB/s of cache read.
 *
 * What it is for: the attention part of a decoding step without the products
 * (bench/decode_bandwidth.sh measures the whole step): docs/performance.md quotes it, run against
 * this build and an older libfm.a.
 * Build and run: make bench-decode, or build/bench_decode_attention [LEN].
 * Not for: prompts (the blocked attention of src/cpu/kernels.c) or several threads.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu/kernels.h"
#include "fm.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    enum { L = 12, NH = 12, HS = 64, C = NH * HS, TOKENS = 21 };
    int len = argc > 1 ? atoi(argv[1]) : 88;
    if (len < 1 || len > 4096) {
        fprintf(stderr, "usage: decode_attention [LEN 1..4096]\n");
        return 2;
    }
    size_t flush_n = (size_t)64 << 20, cache_n = (size_t)L * 2 * len * C; /* floats */
    float *flush = malloc(sizeof(float) * flush_n), *cache = malloc(sizeof(float) * cache_n);
    float *q = malloc(sizeof(float) * C), *out = malloc(sizeof(float) * C), *s = malloc(sizeof(float) * len);
    if (!flush || !cache || !q || !out || !s) {
        fprintf(stderr, "decode_attention: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < flush_n; i++) flush[i] = 1.0f;
    for (size_t i = 0; i < cache_n; i++) cache[i] = (float)(i * 7919 % 97) * 0.01f - 0.48f;
    for (int i = 0; i < C; i++) q[i] = (float)(i % 13) * 0.05f - 0.3f;
    double t[TOKENS];
    volatile float sink = 0.0f;
    for (int token = 0; token < TOKENS; token++) {
        float sum = 0.0f;
        for (size_t i = 0; i < flush_n; i += 16) sum += flush[i];
        sink += sum;
        double t0 = omp_get_wtime();
        for (int l = 0; l < L; l++) /* layer l: keys (len, C), then values (len, C) */
            for (int h = 0; h < NH; h++) {
                const float *k = cache + (size_t)l * 2 * len * C + h * HS, *v = k + (size_t)len * C;
                fm_k_attend_cached(out + h * HS, s, q + h * HS, k, v, len, C, HS, 0.125f);
            }
        t[token] = omp_get_wtime() - t0;
        sink += out[0];
    }
    qsort(t, TOKENS, sizeof(double), cmp);
    printf("decode_attention len=%d cpu=%s us_per_token=%.1f cache_gb_s=%.1f\n", len, fm_cpu_path(),
           t[TOKENS / 2] * 1e6, sizeof(float) * cache_n / t[TOKENS / 2] / 1e9);
    free(flush), free(cache), free(q), free(out), free(s);
    return 0;
}
