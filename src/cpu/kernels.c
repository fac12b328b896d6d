/*
 * kernels.c — the fast forms of the layer kernels: float, OpenMP, loops shaped to vectorise.
 *
 * What it is for: everything the model computes per step. Each output element is computed by
 * exactly one thread in a fixed order (reductions are split by output, never by thread), so
 * the results are bitwise the same for any thread count. Reference forms: kernels_ref.c.
 * Not for: objectives, the optimizer, or anything with file or error handling.
 */
#include <math.h>
#include <string.h>

#include "cpu/kernels.h"

/* ------------------------------------------------------------ helpers */

/* Dot product with 16 independent partial sums (vectorises without reassociation), then the
 * lanes and the tail are summed in a fixed order. */
static inline float dot16(const float *a, const float *b, int K) {
    float acc[16] = {0};
    int k = 0;
    for (; k + 16 <= K; k += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[k + l] * b[k + l];
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; k < K; k++) s += a[k] * b[k];
    return s;
}

/* ------------------------------------------------------------ GEMM */

#define GEMM_ROWS 4     /* rows of C updated together, sharing each loaded row of B */
#define GEMM_COLS 512   /* columns of C per tile: 4 rows x 512 floats stay in L1 */
#define GEMM_NT_ROWS 16 /* NT tiles: rows of A ... */
#define GEMM_NT_COLS 64 /* ... by rows of B (kept in L2 across the tile) */

/* C (M, N) (+)= op(A) (M, K) @ B (K, N), B row-major; a(i, k) = A[i*sa_i + k*sa_k]. */
static void gemm_rowwise(int M, int N, int K, const float *A, size_t sa_i, size_t sa_k,
                         const float *B, int ldb, float *C, int ldc, int accumulate) {
    int row_blocks = (M + GEMM_ROWS - 1) / GEMM_ROWS;
    int col_blocks = (N + GEMM_COLS - 1) / GEMM_COLS;
#pragma omp parallel for collapse(2) schedule(static)
    for (int rb = 0; rb < row_blocks; rb++)
        for (int cb = 0; cb < col_blocks; cb++) {
            int i0 = rb * GEMM_ROWS, i1 = i0 + GEMM_ROWS < M ? i0 + GEMM_ROWS : M;
            int j0 = cb * GEMM_COLS, j1 = j0 + GEMM_COLS < N ? j0 + GEMM_COLS : N;
            int nj = j1 - j0;
            if (!accumulate)
                for (int i = i0; i < i1; i++) memset(C + (size_t)i * ldc + j0, 0, sizeof(float) * nj);
            if (i1 - i0 == GEMM_ROWS) {
                float *c0 = C + (size_t)i0 * ldc + j0, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
                for (int k = 0; k < K; k++) {
                    const float *a = A + (size_t)i0 * sa_i + (size_t)k * sa_k;
                    float a0 = a[0], a1 = a[sa_i], a2 = a[2 * sa_i], a3 = a[3 * sa_i];
                    const float *b = B + (size_t)k * ldb + j0;
                    for (int j = 0; j < nj; j++) {
                        float bj = b[j];
                        c0[j] += a0 * bj;
                        c1[j] += a1 * bj;
                        c2[j] += a2 * bj;
                        c3[j] += a3 * bj;
                    }
                }
            } else {
                for (int i = i0; i < i1; i++) {
                    float *c = C + (size_t)i * ldc + j0;
                    for (int k = 0; k < K; k++) {
                        float a = A[(size_t)i * sa_i + (size_t)k * sa_k];
                        const float *b = B + (size_t)k * ldb + j0;
                        for (int j = 0; j < nj; j++) c[j] += a * b[j];
                    }
                }
            }
        }
}

/* C (M, N) (+)= A (M, K) @ B^T with B stored (N, K): dot products of rows. */
static void gemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, int accumulate) {
    int row_blocks = (M + GEMM_NT_ROWS - 1) / GEMM_NT_ROWS;
    int col_blocks = (N + GEMM_NT_COLS - 1) / GEMM_NT_COLS;
#pragma omp parallel for collapse(2) schedule(static)
    for (int rb = 0; rb < row_blocks; rb++)
        for (int cb = 0; cb < col_blocks; cb++) {
            int i1 = (rb + 1) * GEMM_NT_ROWS < M ? (rb + 1) * GEMM_NT_ROWS : M;
            int j1 = (cb + 1) * GEMM_NT_COLS < N ? (cb + 1) * GEMM_NT_COLS : N;
            for (int i = rb * GEMM_NT_ROWS; i < i1; i++) {
                const float *a = A + (size_t)i * lda;
                float *c = C + (size_t)i * ldc;
                for (int j = cb * GEMM_NT_COLS; j < j1; j++) {
                    float d = dot16(a, B + (size_t)j * ldb, K);
                    c[j] = accumulate ? c[j] + d : d;
                }
            }
        }
}

void fm_k_gemm(int transA, int transB, int M, int N, int K,
               const float *A, int lda, const float *B, int ldb,
               float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (!transB) {
        /* a(i, k) = A[i*lda + k] (NN) or A[k*lda + i] (TN) */
        if (transA) gemm_rowwise(M, N, K, A, 1, (size_t)lda, B, ldb, C, ldc, accumulate);
        else gemm_rowwise(M, N, K, A, (size_t)lda, 1, B, ldb, C, ldc, accumulate);
    } else if (!transA) {
        gemm_nt(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    } else {
        /* TT: not used by the model; plain loops for completeness. */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float s = 0.0f;
                for (int k = 0; k < K; k++) s += A[(size_t)k * lda + i] * B[(size_t)j * ldb + k];
                C[(size_t)i * ldc + j] = accumulate ? C[(size_t)i * ldc + j] + s : s;
            }
    }
}

/* ------------------------------------------------------------ embeddings */

void fm_k_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                          int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const float *e = wte + (size_t)tokens[bt] * C, *p = wpe + (size_t)(bt % T) * C;
        float *o = out + (size_t)bt * C;
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

#define CHANNEL_BLOCK 64 /* channels per thread task in column reductions */

void fm_k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                           int B, int T, int C) {
    /* Split by channel blocks: each (token, channel) is summed by one thread, in (b, t) order. */
    int blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < blocks; cb++) {
        int c0 = cb * CHANNEL_BLOCK, c1 = c0 + CHANNEL_BLOCK < C ? c0 + CHANNEL_BLOCK : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float *d = dout + (size_t)bt * C;
            float *e = dwte + (size_t)tokens[bt] * C, *p = dwpe + (size_t)(bt % T) * C;
            for (int c = c0; c < c1; c++) {
                e[c] += d[c];
                p[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------ layernorm */

void fm_k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0.0f, v = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

void fm_k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *mean,
                             const float *rstd, int N, int C) {
    /* dinp: by rows. dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n], g_mean = 0.0f, gx_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float g = d[c] * w[c];
            g_mean += g;
            gx_mean += g * (x[c] - m) * s;
        }
        g_mean /= C;
        gx_mean /= C;
        for (int c = 0; c < C; c++)
            dx[c] += s * (d[c] * w[c] - g_mean - (x[c] - m) * s * gx_mean);
    }
    /* dw, db: column sums, split by channel blocks. */
    int blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < blocks; cb++) {
        int c0 = cb * CHANNEL_BLOCK, c1 = c0 + CHANNEL_BLOCK < C ? c0 + CHANNEL_BLOCK : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            for (int c = c0; c < c1; c++) {
                dw[c] += d[c] * (x[c] - m) * s;
                db[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------ linear (HF Conv1D layout) */

void fm_k_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                         int N, int IC, int OC) {
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, sizeof(float) * OC);
    }
    fm_k_gemm(0, 0, N, OC, IC, inp, IC, w, OC, out, OC, bias != NULL);
}

void fm_k_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, int N, int IC, int OC) {
    if (dinp) fm_k_gemm(0, 1, N, IC, OC, dout, OC, w, OC, dinp, IC, 0); /* dout @ w^T */
    fm_k_gemm(1, 0, IC, OC, N, inp, IC, dout, OC, dw, OC, 1);           /* inp^T @ dout */
    if (dbias) {
        int blocks = (OC + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(static)
        for (int cb = 0; cb < blocks; cb++) {
            int o0 = cb * CHANNEL_BLOCK, o1 = o0 + CHANNEL_BLOCK < OC ? o0 + CHANNEL_BLOCK : OC;
            for (int n = 0; n < N; n++)
                for (int o = o0; o < o1; o++) dbias[o] += dout[(size_t)n * OC + o];
        }
    }
}

/* ------------------------------------------------------------ attention */

void fm_k_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int H) {
    int hs = C / H;
    float scale = 1.0f / sqrtf((float)hs);
    size_t row = 3 * (size_t)C; /* stride between tokens in qkv */
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *base = qkv + (size_t)b * T * row;
                const float *q = base + t * row + h * hs;
                float *a = att + (((size_t)b * H + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int u = 0; u <= t; u++) {
                    a[u] = dot16(q, base + u * row + C + h * hs, hs) * scale;
                    if (a[u] > maxv) maxv = a[u];
                }
                float sum = 0.0f;
                for (int u = 0; u <= t; u++) {
                    a[u] = expf(a[u] - maxv);
                    sum += a[u];
                }
                float inv = 1.0f / sum;
                for (int u = 0; u <= t; u++) a[u] *= inv;
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int u = 0; u <= t; u++) {
                    const float *v = base + u * row + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += a[u] * v[i];
                }
            }
}

void fm_k_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                             const float *att, int B, int T, int C, int H) {
    int hs = C / H;
    float scale = 1.0f / sqrtf((float)hs);
    size_t row = 3 * (size_t)C;
    memset(dqkv, 0, sizeof(float) * (size_t)B * T * row);
    /* One (b, h) per task: it owns head h's slices of dqkv for batch row b. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *base = qkv + (size_t)b * T * row;
            float *dbase = dqkv + (size_t)b * T * row;
            float *datt = scratch + ((size_t)b * H + h) * T;
            for (int t = 0; t < T; t++) {
                const float *a = att + (((size_t)b * H + h) * T + t) * T;
                const float *d = dout + ((size_t)b * T + t) * C + h * hs;
                const float *q = base + t * row + h * hs;
                float *dq = dbase + t * row + h * hs;
                float dot = 0.0f;
                for (int u = 0; u <= t; u++) {
                    float *dv = dbase + u * row + 2 * C + h * hs;
                    datt[u] = dot16(d, base + u * row + 2 * C + h * hs, hs);
                    dot += a[u] * datt[u];
                    for (int i = 0; i < hs; i++) dv[i] += a[u] * d[i];
                }
                for (int u = 0; u <= t; u++) {
                    float dpre = a[u] * (datt[u] - dot) * scale;
                    const float *k = base + u * row + C + h * hs;
                    float *dk = dbase + u * row + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dpre * k[i];
                        dk[i] += dpre * q[i];
                    }
                }
            }
        }
}

/* ------------------------------------------------------------ pointwise */

#define GELU_SCALE 0.7978845608f /* sqrt(2 / pi) */

void fm_k_gelu_forward(float *out, const float *inp, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void fm_k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
    }
}

void fm_k_residual_forward(float *out, const float *a, const float *b, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}
