/*
 * kernels.c — fm's heavy kernels alone, on the shapes one training step of a configuration uses:
 * every matrix product of a layer and of the tied head (forward, input gradient, weight
 * gradient), and attention forward and backward.
 *
 * What it is for: the per-product figures of docs/performance.md ("What makes it fast"), and
 * finding which product of a step is slow. Then the products of decoding (1 and 3 rows: the
 * unpacked path, which streams the weights once) with the weights' read rate. Each figure is the best of repeated runs over about half a second
 * (the machine is shared: the best run is the one least disturbed). Threads: OMP_NUM_THREADS.
 * Not for: whole training steps (fm bench train) or comparisons with PyTorch (compare.sh).
 *
 * Usage: build/bench_kernels [B T C H V]   (default 16 128 256 4 4096, configuration (iii))
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cpu/kernels.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n) {
    float *x = aligned_alloc(64, (sizeof(float) * n + 63) / 64 * 64); /* as the model's buffers (src/core/memory.c) */
    if (!x) {
        fprintf(stderr, "bench_kernels: out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    return x;
}

/* C (M, N) [+]= op(A) op(B) as the model calls it; prints the best GFLOP/s. */
static void product(const char *name, int transA, int transB, int M, int N, int K, int accumulate) {
    float *A = random_floats((size_t)M * K), *B = random_floats((size_t)K * N), *C = random_floats((size_t)M * N);
    double best = 1e30, start = now();
    for (int r = 0; r < 3 || now() - start < 0.5; r++) {
        double t = now();
        fm_k_gemm(transA, transB, M, N, K, A, transA ? M : K, B, transB ? K : N, C, N, accumulate);
        t = now() - t;
        best = t < best ? t : best;
    }
    printf("%-14s %c%c M=%6d N=%6d K=%6d %8.1f GFLOP/s %9.3f ms\n", name, transA ? 'T' : 'N', transB ? 'T' : 'N', M,
           N, K, 2.0 * M * N * K / best * 1e-9, best * 1e3);
    free(A), free(B), free(C);
}

/* A decoding product: M rows of activations times a weight, bias fused for NN; prints the best
 * time and the rate the weight (K x N floats) was read at. */
static void decode_product(const char *name, int transB, int M, int N, int K) {
    float *A = random_floats((size_t)M * K), *B = random_floats((size_t)K * N), *C = random_floats((size_t)M * N);
    float *bias = random_floats((size_t)N);
    double best = 1e30, start = now();
    for (int r = 0; r < 3 || now() - start < 0.5; r++) {
        double t = now();
        fm_k_gemm_fused(0, transB, M, N, K, A, K, B, transB ? K : N, C, N, 0, transB ? NULL : bias, NULL);
        t = now() - t;
        best = t < best ? t : best;
    }
    printf("%-14s %c%c M=%6d N=%6d K=%6d %8.1f GB/s   %9.3f ms\n", name, 'N', transB ? 'T' : 'N', M, N, K,
           4.0 * N * K / best * 1e-9, best * 1e3);
    free(A), free(B), free(C), free(bias);
}

/* Causal attention over qkv (B, T, 3C); GFLOP/s counted on the causal half only. */
static void attention(int B, int T, int C, int H) {
    size_t n = (size_t)B * T * 3 * C, nc = (size_t)B * T * C;
    float *qkv = random_floats(n), *dqkv = random_floats(n), *out = random_floats(nc), *dout = random_floats(nc);
    float *lse = random_floats((size_t)B * H * T);
    double fwd = 1e30, bwd = 1e30, start = now();
    for (int r = 0; r < 3 || now() - start < 0.5; r++) {
        double t0 = now();
        fm_k_attention_forward(out, lse, qkv, B, T, C, H);
        double t1 = now();
        fm_k_attention_backward(dqkv, dout, qkv, lse, B, T, C, H);
        double t2 = now();
        fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
        bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
    }
    double one = (double)B * H * T * (T + 1) / 2 * (C / H) * 2; /* one causal T x T x hs product */
    printf("attention      forward %.3f ms (%.1f GFLOP/s), backward %.3f ms (%.1f GFLOP/s)\n", fwd * 1e3,
           2 * one / fwd * 1e-9, bwd * 1e3, 5 * one / bwd * 1e-9);
    free(qkv), free(dqkv), free(out), free(dout), free(lse);
}

int main(int argc, char **argv) {
    int B = 16, T = 128, C = 256, H = 4, V = 4096;
    if (argc == 6) B = atoi(argv[1]), T = atoi(argv[2]), C = atoi(argv[3]), H = atoi(argv[4]), V = atoi(argv[5]);
    else if (argc != 1) {
        fprintf(stderr, "usage: %s [B T C H V]\n", argv[0]);
        return 2;
    }
    if (B < 1 || T < 1 || C < 1 || H < 1 || C % H || V < 1) {
        fprintf(stderr, "bench_kernels: need positive B T C H V with H dividing C\n");
        return 2;
    }
    int N = B * T;
    printf("shapes of B=%d T=%d C=%d H=%d V=%d\n", B, T, C, H, V);
    product("qkv", 0, 0, N, 3 * C, C, 0);
    product("attn proj", 0, 0, N, C, C, 0);
    product("fc", 0, 0, N, 4 * C, C, 0);
    product("fc proj", 0, 0, N, C, 4 * C, 0);
    product("head", 0, 1, N, V, C, 0);
    product("dx qkv", 0, 1, N, C, 3 * C, 0);
    product("dx fc", 0, 1, N, C, 4 * C, 0);
    product("dx fc proj", 0, 1, N, 4 * C, C, 0);
    product("dw qkv", 1, 0, C, 3 * C, N, 1);
    product("dw fc", 1, 0, C, 4 * C, N, 1);
    product("dw fc proj", 1, 0, 4 * C, C, N, 1);
    product("dx head", 0, 0, N, C, V, 0);
    product("dw head", 1, 0, V, C, N, 1);
    attention(B, T, C, H);
    for (int M = 1; M <= 3; M += 2) {
        decode_product("decode qkv", 0, M, 3 * C, C);
        decode_product("decode proj", 0, M, C, C);
        decode_product("decode fc", 0, M, 4 * C, C);
        decode_product("decode fc proj", 0, M, C, 4 * C);
        decode_product("decode head", 1, M, V, C);
    }
    return 0;
}
