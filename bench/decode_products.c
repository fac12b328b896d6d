/*
 * decode_products.c — the int8 products of one decoded token alone, back to back: GPT-2 124M
 * shapes (12 blocks of c_attn 2304 x 768, attn.c_proj 768 x 768, c_fc 3072 x 768, mlp.c_proj
 * 768 x 3072, then the tied head 50257 x 768), Q8_0 blocks of made-up values, one input row,
 * all threads (OMP_NUM_THREADS), best of 20 tokens, three times; printed as ms per token and the
 * GB/s of int8 weights and scales read.
 *
 * What it is for: separating the products' own streaming speed from the rest of a decoding step
 * (bench/decode_bandwidth.sh measures the whole step against bench/readbw.c): docs/kernels.md and
 * docs/performance.md quote it.
 * Build and run: make bench-decode (with decode_steps.c).
 * Not for: float32 products or the rest of the model (attention, LayerNorm, sampling).
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"
#include "cpu/kernels.h"

typedef struct {
    int rows, cols;
    int8_t *q;
    float *d;
} q8_matrix;

int main(void) {
    enum { L = 12, C = 768, V = 50257, MATS = 4 * L + 1 };
    const int shapes[4][2] = {{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}}; /* rows (outputs), cols */
    q8_matrix m[MATS];
    double bytes = 0;
    for (int l = 0; l < MATS; l++) {
        int rows = l < 4 * L ? shapes[l % 4][0] : V, cols = l < 4 * L ? shapes[l % 4][1] : C;
        size_t blocks = (size_t)(cols + FM_Q8_BLOCK - 1) / FM_Q8_BLOCK;
        m[l] = (q8_matrix){rows, cols, fm_alloc_big((size_t)rows * blocks * FM_Q8_BLOCK, 1),
                           fm_alloc_big((size_t)rows * blocks * sizeof(float), 1)};
        if (!m[l].q || !m[l].d) {
            fprintf(stderr, "decode_products: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < (size_t)rows * blocks * FM_Q8_BLOCK; i++) m[l].q[i] = (int8_t)(i * 7 % 255 - 127);
        for (size_t i = 0; i < (size_t)rows * blocks; i++) m[l].d[i] = 1e-3f;
        bytes += (double)rows * blocks * (FM_Q8_BLOCK + sizeof(float));
    }
    float *x = malloc(sizeof(float) * 4 * C), *out = malloc(sizeof(float) * V), *pad = malloc(sizeof(float) * 4 * C);
    if (!x || !out || !pad) return 1;
    for (int i = 0; i < 4 * C; i++) x[i] = (float)(i % 13) - 6.0f;
    for (int rep = 0; rep < 3; rep++) {
        double best = 1e30;
        for (int token = 0; token < 20; token++) {
            double t = omp_get_wtime();
            for (int l = 0; l < MATS; l++) fm_k_q8_matmul(out, x, m[l].q, m[l].d, NULL, 1, m[l].rows, m[l].cols, pad);
            t = omp_get_wtime() - t;
            best = t < best ? t : best;
        }
        printf("decode_products threads=%d int8_ms_per_token=%.3f read_gb_s=%.1f\n", omp_get_max_threads(), best * 1e3,
               bytes / best / 1e9);
    }
    return 0;
}
