/*
 * kernels.c — the fast forms of the layer kernels: float, OpenMP, AVX-512 where it pays.
 *
 * What it is for: everything the model computes per step besides the matrix products (gemm.c):
 * embeddings, LayerNorm, attention (flash-style, no T x T matrix kept), GELU, residuals, one row
 * of softmax cross-entropy, the AdamW update and gradient norm, and int8 (Q8_0) products for
 * generation. Each output element is computed by exactly one thread in a fixed order
 * (reductions are split by output or in fixed chunks, never by thread; vector tails are masked
 * so every element takes the same path), so results are bitwise the same for any thread count.
 * Reference forms: kernels_ref.c and the tests' double-precision loops.
 * Not for: objectives, the optimizer's bookkeeping, or anything with file or error handling.
 */
#include "cpu/isa.h" /* first: this copy's kernel names */

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/team.h"
#include "cpu/dispatch.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

/* ------------------------------------------------------------ per-thread scratch */

/* LayerNorm's partial sums and attention's blocks live in per-thread scratch that only grows
 * (a training step allocates nothing); a thread that ends frees its own (a thread-specific key's
 * destructor runs in the ending thread). scratch() returns *buf grown to want floats, or NULL
 * without memory. */
static _Thread_local float *ln_partials;
static _Thread_local size_t ln_partials_len;
static _Thread_local float *att_scratch;
static _Thread_local size_t att_scratch_len;

static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;

static void scratch_release(void *unused) {
    (void)unused;
    fm_free(ln_partials), fm_free(att_scratch);
    ln_partials = att_scratch = NULL;
    ln_partials_len = att_scratch_len = 0;
}

static void scratch_key_create(void) { pthread_key_create(&scratch_key, scratch_release); }

static float *scratch(float **buf, size_t *len, size_t want) {
    if (*len >= want) return *buf;
    fm_free(*buf);
    *buf = fm_aligned_alloc(64, sizeof(float) * want); /* rows on cache lines */
    *len = *buf ? want : 0;
    if (*buf && pthread_once(&scratch_key_once, scratch_key_create) == 0) pthread_setspecific(scratch_key, &scratch_key);
    return *buf;
}

/* ------------------------------------------------------------ embeddings */

/* Forward row and pointwise kernels below this many elements run in the calling thread: an
 * OpenMP team costs more than the work (decoding's few rows), and its threads, left spinning,
 * would hold the cores the decoding team (src/core/team.c) needs next. */
#define SERIAL_ELEMS 32768

void fm_k_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                          int B, int T, int C) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * C > SERIAL_ELEMS)
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
            if (dwte && dwpe) {
                float *e = dwte + (size_t)tokens[bt] * C, *p = dwpe + (size_t)(bt % T) * C;
                for (int c = c0; c < c1; c++) {
                    e[c] += d[c];
                    p[c] += d[c];
                }
            } else if (dwte || dwpe) {
                float *e = dwte ? dwte + (size_t)tokens[bt] * C : dwpe + (size_t)(bt % T) * C;
                for (int c = c0; c < c1; c++) e[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------ layernorm */

/* Row reductions in 16 lanes (tails masked), then the lanes in a fixed order: vector speed,
 * and a value never depends on which thread took the row. */
#ifdef __AVX512F__
static inline __mmask16 lanes(int C, int c) { return C - c >= FM_V16 ? 0xFFFF : fm_tail_mask(C - c); }
#endif

void fm_k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)N * C > SERIAL_ELEMS)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
#ifdef __AVX512F__
        __m512 acc = _mm512_setzero_ps();
        for (int c = 0; c < C; c += FM_V16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(lanes(C, c), x + c));
        float m = _mm512_reduce_add_ps(acc) / C;
        __m512 vm = _mm512_set1_ps(m);
        acc = _mm512_setzero_ps();
        for (int c = 0; c < C; c += FM_V16) {
            __mmask16 k = lanes(C, c);
            __m512 xm = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vm);
            acc = _mm512_fmadd_ps(xm, xm, acc);
        }
        float s = 1.0f / sqrtf(_mm512_reduce_add_ps(acc) / C + eps);
        __m512 vs = _mm512_set1_ps(s);
        for (int c = 0; c < C; c += FM_V16) {
            __mmask16 k = lanes(C, c);
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vs);
            _mm512_mask_storeu_ps(o + c, k, _mm512_fmadd_ps(xhat, _mm512_maskz_loadu_ps(k, w + c),
                                                            _mm512_maskz_loadu_ps(k, b + c)));
        }
#elif defined(FM_AVX2)
        __m256 acc = _mm256_setzero_ps();
        for (int c = 0; c < C; c += FM_V8) acc = _mm256_add_ps(acc, fm_load8(x + c, C - c));
        float m = fm_hsum8(acc) / C;
        __m256 vm = _mm256_set1_ps(m);
        acc = _mm256_setzero_ps();
        for (int c = 0; c < C; c += FM_V8) {
            __m256 xm = _mm256_sub_ps(fm_load8(x + c, C - c), vm);
            if (C - c < FM_V8) xm = _mm256_and_ps(xm, _mm256_castsi256_ps(fm_lanes8(C - c)));
            acc = _mm256_fmadd_ps(xm, xm, acc);
        }
        float s = 1.0f / sqrtf(fm_hsum8(acc) / C + eps);
        __m256 vs = _mm256_set1_ps(s);
        for (int c = 0; c < C; c += FM_V8) {
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(fm_load8(x + c, C - c), vm), vs);
            fm_store8(o + c, C - c, _mm256_fmadd_ps(xhat, fm_load8(w + c, C - c), fm_load8(b + c, C - c)));
        }
#else
        float m = 0.0f, v = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(v / C + eps);
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
#endif
        mean[n] = m;
        rstd[n] = s;
    }
}

/* Layer norm's backward runs over blocks of LN_ROWS rows; each block also sums its rows' dw
 * and db terms into its own partial sums (so inp and dout are read once), and the partials are
 * added in block order: the same sums whatever the thread count. */
#define LN_ROWS 32

void fm_k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *mean,
                             const float *rstd, int N, int C) {
    int tasks = (N + LN_ROWS - 1) / LN_ROWS;
    /* (tasks, 2, C): dw then db terms of each block; NULL: none */
    int want = dw || db; /* NULL for a frozen gain or bias */
    float *partials = want ? scratch(&ln_partials, &ln_partials_len, (size_t)tasks * 2 * C) : NULL;
    /* dinp: by rows. dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w */
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int task = 0; task < tasks; task++) {
        int n0 = task * LN_ROWS, n1 = n0 + LN_ROWS < N ? n0 + LN_ROWS : N;
        float *pw = partials ? partials + (size_t)task * 2 * C : NULL, *pb = pw ? pw + C : NULL;
        if (pw) memset(pw, 0, sizeof(float) * 2 * C);
        for (int n = n0; n < n1; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float m = mean[n], s = rstd[n];
#ifdef __AVX512F__
            __m512 vm = _mm512_set1_ps(m), vs = _mm512_set1_ps(s), sg = _mm512_setzero_ps(), sgx = sg;
            for (int c = 0; c < C; c += FM_V16) {
                __mmask16 k = lanes(C, c);
                __m512 dv = _mm512_maskz_loadu_ps(k, d + c);
                __m512 g = _mm512_mul_ps(dv, _mm512_maskz_loadu_ps(k, w + c));
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vs);
                sg = _mm512_add_ps(sg, g);
                sgx = _mm512_fmadd_ps(g, xhat, sgx);
                if (pw) {
                    _mm512_mask_storeu_ps(pw + c, k, _mm512_fmadd_ps(dv, xhat, _mm512_maskz_loadu_ps(k, pw + c)));
                    _mm512_mask_storeu_ps(pb + c, k, _mm512_add_ps(dv, _mm512_maskz_loadu_ps(k, pb + c)));
                }
            }
            __m512 g_mean = _mm512_set1_ps(_mm512_reduce_add_ps(sg) / C);
            __m512 gx_mean = _mm512_set1_ps(_mm512_reduce_add_ps(sgx) / C);
            for (int c = 0; c < C; c += FM_V16) {
                __mmask16 k = lanes(C, c);
                __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, d + c), _mm512_maskz_loadu_ps(k, w + c));
                __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vs);
                __m512 t = _mm512_fnmadd_ps(xhat, gx_mean, _mm512_sub_ps(g, g_mean));
                _mm512_mask_storeu_ps(dx + c, k, _mm512_fmadd_ps(vs, t, _mm512_maskz_loadu_ps(k, dx + c)));
            }
#elif defined(FM_AVX2)
            __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s), sg = _mm256_setzero_ps(), sgx = sg;
            for (int c = 0; c < C; c += FM_V8) { /* masked lanes load as 0: g = 0 there */
                int left = C - c;
                __m256 dv = fm_load8(d + c, left);
                __m256 g = _mm256_mul_ps(dv, fm_load8(w + c, left));
                __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(fm_load8(x + c, left), vm), vs);
                sg = _mm256_add_ps(sg, g);
                sgx = _mm256_fmadd_ps(g, xhat, sgx);
                if (pw) {
                    fm_store8(pw + c, left, _mm256_fmadd_ps(dv, xhat, fm_load8(pw + c, left)));
                    fm_store8(pb + c, left, _mm256_add_ps(dv, fm_load8(pb + c, left)));
                }
            }
            __m256 g_mean = _mm256_set1_ps(fm_hsum8(sg) / C);
            __m256 gx_mean = _mm256_set1_ps(fm_hsum8(sgx) / C);
            for (int c = 0; c < C; c += FM_V8) {
                int left = C - c;
                __m256 g = _mm256_mul_ps(fm_load8(d + c, left), fm_load8(w + c, left));
                __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(fm_load8(x + c, left), vm), vs);
                __m256 t = _mm256_fnmadd_ps(xhat, gx_mean, _mm256_sub_ps(g, g_mean));
                fm_store8(dx + c, left, _mm256_fmadd_ps(vs, t, fm_load8(dx + c, left)));
            }
#else
            float g_mean = 0.0f, gx_mean = 0.0f;
            for (int c = 0; c < C; c++) {
                float g = d[c] * w[c], xhat = (x[c] - m) * s;
                g_mean += g;
                gx_mean += g * xhat;
                if (pw) {
                    pw[c] += d[c] * xhat;
                    pb[c] += d[c];
                }
            }
            g_mean /= C;
            gx_mean /= C;
            for (int c = 0; c < C; c++)
                dx[c] += s * (d[c] * w[c] - g_mean - (x[c] - m) * s * gx_mean);
#endif
        }
    }
    /* dw, db: the blocks' partial sums in block order (no memory for them: the rows in order),
     * split by channel blocks. */
    if (!want) return;
    int blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < blocks; cb++) {
        int c0 = cb * CHANNEL_BLOCK, c1 = c0 + CHANNEL_BLOCK < C ? c0 + CHANNEL_BLOCK : C;
        if (partials) {
            for (int task = 0; task < tasks; task++) {
                const float *pw = partials + (size_t)task * 2 * C, *pb = pw + C;
                if (dw)
                    for (int c = c0; c < c1; c++) dw[c] += pw[c];
                if (db)
                    for (int c = c0; c < c1; c++) db[c] += pb[c];
            }
            continue;
        }
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            if (dw)
                for (int c = c0; c < c1; c++) dw[c] += d[c] * (x[c] - m) * s;
            if (db)
                for (int c = c0; c < c1; c++) db[c] += d[c];
        }
    }
}

/* ------------------------------------------------------------ linear (HF Conv1D layout) */

void fm_k_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                         int N, int IC, int OC) {
    fm_k_gemm_fused(0, 0, N, OC, IC, inp, IC, w, OC, out, OC, 0, bias, NULL); /* bias in the GEMM's store */
}

void fm_k_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, int N, int IC, int OC) {
    if (dinp) fm_k_gemm(0, 1, N, IC, OC, dout, OC, w, OC, dinp, IC, 0); /* dout @ w^T */
    /* dw += inp^T @ dout; dbias += column sums of dout, taken while dout is packed */
    fm_k_gemm_fused(1, 0, IC, OC, N, inp, IC, dout, OC, dw, OC, 1, NULL, dbias);
}

/* ------------------------------------------------------------ attention */

/* Causal attention without a stored T x T matrix (flash-style): each (batch, head) task walks
 * blocks of ATT_ROWS queries; a block's scores against keys 0..t (ATT_ROWS x T) live in a
 * per-thread scratch, the forward keeps only each row's log-sum-exp, and the backward
 * recomputes the probabilities from it. The products are fm_k_gemm_band calls, which run in
 * the calling thread inside this parallel loop and skip the tiles and depth steps the causal
 * mask zeroes (scores above the diagonal are never computed, and are zero in P and dS, which
 * the band relies on); each (b, h) is one task, so every output element is summed in a fixed
 * order by one thread. */
#define ATT_ROWS 128

/* Two (ATT_ROWS x T) blocks of this thread's scratch. */
static float *att_blocks(int T) { return scratch(&att_scratch, &att_scratch_len, 2 * (size_t)ATT_ROWS * T); }

/* Reductions over one row of a block, n > 0 values, in a fixed order. */
static float row_max(const float *s, int n) {
#ifdef __AVX512F__
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int u = 0; u < n; u += FM_V16) {
        __mmask16 k = lanes(n, u);
        m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, s + u));
    }
    return _mm512_reduce_max_ps(m);
#elif defined(FM_AVX2)
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (int u = 0; u < n; u += FM_V8) {
        __m256 x = fm_load8(s + u, n - u);
        if (n - u < FM_V8) /* masked lanes: -inf, not the 0 the load gives */
            x = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, _mm256_castsi256_ps(fm_lanes8(n - u)));
        m = _mm256_max_ps(m, x);
    }
    return fm_hmax8(m);
#else
    float m = -INFINITY;
    for (int u = 0; u < n; u++) m = s[u] > m ? s[u] : m;
    return m;
#endif
}

/* sum over u < n of a[u] * b[u], or of a[u] when b is NULL */
static float row_dot(const float *a, const float *b, int n) {
#ifdef __AVX512F__
    __m512 acc = _mm512_setzero_ps();
    for (int u = 0; u < n; u += FM_V16) {
        __mmask16 k = lanes(n, u);
        __m512 x = _mm512_maskz_loadu_ps(k, a + u);
        acc = b ? _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(k, b + u), acc) : _mm512_add_ps(acc, x);
    }
    return _mm512_reduce_add_ps(acc);
#elif defined(FM_AVX2)
    __m256 acc = _mm256_setzero_ps();
    for (int u = 0; u < n; u += FM_V8) {
        __m256 x = fm_load8(a + u, n - u);
        acc = b ? _mm256_fmadd_ps(x, fm_load8(b + u, n - u), acc) : _mm256_add_ps(acc, x);
    }
    return fm_hsum8(acc);
#else
    float acc = 0.0f;
    for (int u = 0; u < n; u++) acc += b ? a[u] * b[u] : a[u];
    return acc;
#endif
}

/* Row t of a block: p[u] = exp(s[u] * scale - lse) for u <= t, 0 for t < u < n. */
static void att_probs(float *p, const float *s, int t, int n, float scale, float lse) {
    int u = 0;
#ifdef __AVX512F__
    __m512 vs = _mm512_set1_ps(scale), vl = _mm512_set1_ps(lse);
    for (; u <= t; u += FM_V16) {
        __mmask16 m = t + 1 - u >= FM_V16 ? 0xFFFF : fm_tail_mask(t + 1 - u);
        __m512 x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, s + u), vs, vl);
        _mm512_mask_storeu_ps(p + u, m, fm_exp_v(x));
    }
    u = t + 1;
#elif defined(FM_AVX2)
    __m256 vs = _mm256_set1_ps(scale), vl = _mm256_set1_ps(lse);
    for (; u <= t; u += FM_V8) {
        __m256 x = _mm256_fmsub_ps(fm_load8(s + u, t + 1 - u), vs, vl);
        fm_store8(p + u, t + 1 - u, fm_exp_v8(x));
    }
    u = t + 1;
#else
    for (; u <= t; u++) p[u] = fm_exp_s(s[u] * scale - lse);
#endif
    for (; u < n; u++) p[u] = 0.0f;
}

/* Decoding: one query against positions 0..len-1 of one head's key/value cache (rows ld apart):
 * out (hs) = softmax(q . k_u * scale) over u, weighted sum of v_u; s (len) scratch.
 * The cache was written tokens ago and the weights read since have evicted it, so each
 * position's hs floats (a few cache lines, a whole row of the cache from the next position)
 * come from memory. The keys are read four positions at a time (four independent sums), the
 * keys ATTEND_AHEAD positions ahead and each value row are prefetched during that pass, and the
 * weighted sum keeps up to 64 output floats in registers across all positions, scaled once by
 * 1 / the exponentials' sum at the end. */
#define ATTEND_AHEAD 8

static inline void prefetch_floats(const float *p, int n) {
    for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
}

/* s[u] = q . k_u * scale for u in [0, len), with the prefetches described above. */
static void attend_scores(float *s, const float *q, const float *keys, const float *values, int len, int ld, int hs,
                          float scale) {
    for (int u = 0; u < len && u < ATTEND_AHEAD; u++) prefetch_floats(keys + (size_t)u * ld, hs);
    int u = 0;
    for (; u + 4 <= len; u += 4) {
        for (int w = u + ATTEND_AHEAD; w < u + ATTEND_AHEAD + 4 && w < len; w++) prefetch_floats(keys + (size_t)w * ld, hs);
        for (int w = u; w < u + 4; w++) prefetch_floats(values + (size_t)w * ld, hs);
        const float *k0 = keys + (size_t)u * ld, *k1 = k0 + ld, *k2 = k1 + ld, *k3 = k2 + ld;
#ifdef __AVX512F__
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < hs; i += FM_V16) {
            __mmask16 m = lanes(hs, i);
            __m512 x = _mm512_maskz_loadu_ps(m, q + i);
            a0 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k0 + i), a0);
            a1 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k1 + i), a1);
            a2 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k2 + i), a2);
            a3 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, k3 + i), a3);
        }
        s[u] = _mm512_reduce_add_ps(a0) * scale, s[u + 1] = _mm512_reduce_add_ps(a1) * scale;
        s[u + 2] = _mm512_reduce_add_ps(a2) * scale, s[u + 3] = _mm512_reduce_add_ps(a3) * scale;
#elif defined(FM_AVX2)
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < hs; i += FM_V8) {
            __m256 x = fm_load8(q + i, hs - i);
            a0 = _mm256_fmadd_ps(x, fm_load8(k0 + i, hs - i), a0);
            a1 = _mm256_fmadd_ps(x, fm_load8(k1 + i, hs - i), a1);
            a2 = _mm256_fmadd_ps(x, fm_load8(k2 + i, hs - i), a2);
            a3 = _mm256_fmadd_ps(x, fm_load8(k3 + i, hs - i), a3);
        }
        s[u] = fm_hsum8(a0) * scale, s[u + 1] = fm_hsum8(a1) * scale;
        s[u + 2] = fm_hsum8(a2) * scale, s[u + 3] = fm_hsum8(a3) * scale;
#else
        s[u] = row_dot(q, k0, hs) * scale, s[u + 1] = row_dot(q, k1, hs) * scale;
        s[u + 2] = row_dot(q, k2, hs) * scale, s[u + 3] = row_dot(q, k3, hs) * scale;
#endif
    }
    for (; u < len; u++) {
        prefetch_floats(values + (size_t)u * ld, hs);
        s[u] = row_dot(q, keys + (size_t)u * ld, hs) * scale;
    }
}

/* s[u] = exp(s[u] - max s) for u in [0, len); returns 1 / their sum. */
static float attend_exp(float *s, int len) {
    float sum = 0.0f;
    int u = 0;
#ifdef __AVX512F__
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (; u < len; u += FM_V16) vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, lanes(len, u), s + u));
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), vsum = _mm512_setzero_ps();
    for (u = 0; u < len; u += FM_V16) {
        __mmask16 m = lanes(len, u);
        __m512 e = _mm512_maskz_mov_ps(m, fm_exp_v(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + u), vm)));
        _mm512_mask_storeu_ps(s + u, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    sum = _mm512_reduce_add_ps(vsum);
#elif defined(FM_AVX2)
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; u + FM_V8 <= len; u += FM_V8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + u));
    float maxv = fm_hmax8(vmax);
    for (; u < len; u++) maxv = s[u] > maxv ? s[u] : maxv;
    __m256 vm = _mm256_set1_ps(maxv), vsum = _mm256_setzero_ps();
    for (u = 0; u + FM_V8 <= len; u += FM_V8) {
        __m256 e = fm_exp_v8(_mm256_sub_ps(_mm256_loadu_ps(s + u), vm));
        _mm256_storeu_ps(s + u, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    sum = fm_hsum8(vsum);
    for (; u < len; u++) {
        s[u] = fm_exp_s(s[u] - maxv);
        sum += s[u];
    }
#else
    float maxv = -INFINITY;
    for (; u < len; u++) maxv = s[u] > maxv ? s[u] : maxv;
    for (u = 0; u < len; u++) {
        s[u] = fm_exp_s(s[u] - maxv);
        sum += s[u];
    }
#endif
    return 1.0f / sum;
}

void fm_k_attend_cached(float *out, float *s, const float *q, const float *keys, const float *values, int len,
                        int ld, int hs, float scale) {
    attend_scores(s, q, keys, values, len, ld, hs, scale);
    float inv = attend_exp(s, len);
#ifdef __AVX512F__
    __m512 vinv = _mm512_set1_ps(inv);
    for (int i = 0; i < hs; i += 4 * FM_V16) { /* out[i, i + 64) in four registers */
        __mmask16 m0 = lanes(hs, i), m1 = i + 16 < hs ? lanes(hs, i + 16) : 0;
        __mmask16 m2 = i + 32 < hs ? lanes(hs, i + 32) : 0, m3 = i + 48 < hs ? lanes(hs, i + 48) : 0;
        __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int u = 0; u < len; u++) {
            const float *v = values + (size_t)u * ld + i;
            __m512 a = _mm512_set1_ps(s[u]);
            o0 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m0, v), o0);
            o1 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m1, v + 16), o1);
            o2 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m2, v + 32), o2);
            o3 = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m3, v + 48), o3);
        }
        _mm512_mask_storeu_ps(out + i, m0, _mm512_mul_ps(o0, vinv));
        _mm512_mask_storeu_ps(out + i + 16, m1, _mm512_mul_ps(o1, vinv));
        _mm512_mask_storeu_ps(out + i + 32, m2, _mm512_mul_ps(o2, vinv));
        _mm512_mask_storeu_ps(out + i + 48, m3, _mm512_mul_ps(o3, vinv));
    }
#elif defined(FM_AVX2)
    __m256 vinv = _mm256_set1_ps(inv);
    for (int i = 0; i < hs; i += 4 * FM_V8) { /* out[i, i + 32) in four registers */
        int n0 = hs - i, n1 = n0 - 8, n2 = n0 - 16, n3 = n0 - 24;
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int u = 0; u < len; u++) {
            const float *v = values + (size_t)u * ld + i;
            __m256 a = _mm256_set1_ps(s[u]);
            o0 = _mm256_fmadd_ps(a, fm_load8(v, n0), o0);
            if (n1 > 0) o1 = _mm256_fmadd_ps(a, fm_load8(v + 8, n1), o1);
            if (n2 > 0) o2 = _mm256_fmadd_ps(a, fm_load8(v + 16, n2), o2);
            if (n3 > 0) o3 = _mm256_fmadd_ps(a, fm_load8(v + 24, n3), o3);
        }
        fm_store8(out + i, n0, _mm256_mul_ps(o0, vinv));
        if (n1 > 0) fm_store8(out + i + 8, n1, _mm256_mul_ps(o1, vinv));
        if (n2 > 0) fm_store8(out + i + 16, n2, _mm256_mul_ps(o2, vinv));
        if (n3 > 0) fm_store8(out + i + 24, n3, _mm256_mul_ps(o3, vinv));
    }
#else
    for (int i = 0; i < hs; i++) out[i] = 0.0f;
    for (int u = 0; u < len; u++) {
        const float *v = values + (size_t)u * ld;
        for (int i = 0; i < hs; i++) out[i] += s[u] * v[i];
    }
    for (int i = 0; i < hs; i++) out[i] *= inv;
#endif
}

/* Query row t without workspace (the fallback when the blocks cannot be allocated): two passes
 * over keys 0..t, the first for the maximum score, the second for the exponentials, their sum
 * and the weighted values. q, k, v point at head h of row t / row 0, rows ld apart; out (hs). */
static void attention_row_forward(float *out, float *lse, const float *q, const float *k, const float *v, int t,
                                  int ld, int hs, float scale) {
    float maxv = -INFINITY, sum = 0.0f;
    for (int u = 0; u <= t; u++) {
        float s = row_dot(q, k + (size_t)u * ld, hs) * scale;
        maxv = s > maxv ? s : maxv;
    }
    for (int i = 0; i < hs; i++) out[i] = 0.0f;
    for (int u = 0; u <= t; u++) {
        float p = expf(row_dot(q, k + (size_t)u * ld, hs) * scale - maxv);
        sum += p;
        for (int i = 0; i < hs; i++) out[i] += p * v[(size_t)u * ld + i];
    }
    for (int i = 0; i < hs; i++) out[i] /= sum;
    *lse = maxv + logf(sum);
}

/* The backward of query row t without workspace: p_u = exp(q.k_u * scale - lse),
 * dp_u = dO.v_u, ds_u = p_u (dp_u - sum_w p_w dp_w) * scale; dq = sum ds_u k_u (written),
 * dk_u += ds_u q and dv_u += p_u dO (accumulated over the rows by the caller). */
static void attention_row_backward(float *dq, float *dk, float *dv, const float *dO, const float *q, const float *k,
                                   const float *v, float lse, int t, int ld, int hs, float scale) {
    float dot = 0.0f;
    for (int u = 0; u <= t; u++)
        dot += expf(row_dot(q, k + (size_t)u * ld, hs) * scale - lse) * row_dot(dO, v + (size_t)u * ld, hs);
    for (int i = 0; i < hs; i++) dq[i] = 0.0f;
    for (int u = 0; u <= t; u++) {
        const float *ku = k + (size_t)u * ld;
        float p = expf(row_dot(q, ku, hs) * scale - lse);
        float ds = p * (row_dot(dO, v + (size_t)u * ld, hs) - dot) * scale;
        for (int i = 0; i < hs; i++) {
            dq[i] += ds * ku[i];
            dk[(size_t)u * ld + i] += ds * q[i];
            dv[(size_t)u * ld + i] += p * dO[i];
        }
    }
}

/* One (batch, head) of the forward: queries in blocks of ATT_ROWS against keys 0..t. */
static void attention_forward_head(float *out, float *lse, const float *qkv, int b, int h, int T, int C, int H) {
    int hs = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *S = att_blocks(T); /* (rows, n) scores, then probabilities */
    const float *q = qkv + (size_t)b * T * ld + h * hs, *k = q + C, *v = q + 2 * C;
    float *l = lse + ((size_t)b * H + h) * T;
    if (!S) { /* no memory for the blocks: the same numbers a row at a time, without workspace */
        for (int t = 0; t < T; t++)
            attention_row_forward(out + ((size_t)b * T + t) * C + h * hs, &l[t], q + (size_t)t * ld, k, v, t, ld,
                                  hs, scale);
        return;
    }
    for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
        int rows = T - t0 < ATT_ROWS ? T - t0 : ATT_ROWS, n = t0 + rows; /* keys 0..n-1 */
        /* Q K^T, only keys u <= t of row t */
        fm_k_gemm_band(0, 1, rows, n, hs, q + (size_t)t0 * ld, ld, k, ld, S, n, 0, FM_BAND_C_LOWER, t0);
        for (int r = 0; r < rows; r++) {
            int t = t0 + r;
            float *s = S + (size_t)r * n, maxv = row_max(s, t + 1) * scale;
            att_probs(s, s, t, n, scale, maxv);
            float sum = row_dot(s, NULL, t + 1), inv = 1.0f / sum;
            for (int u = 0; u <= t; u++) s[u] *= inv;
            l[t] = maxv + logf(sum);
        }
        fm_k_gemm_band(0, 0, rows, hs, n, S, n, v, ld, out + ((size_t)b * T + t0) * C + h * hs, C, 0,
                       FM_BAND_A_LOWER, t0); /* P V; P is zero past the diagonal */
    }
}

/* One (batch, head) of the backward. Query blocks last to first: the last block reaches every
 * key, so it writes dK and dV whole (no zeroing first) and the earlier ones add to them. */
static void attention_backward_head(float *dqkv, const float *dout, const float *qkv, const float *lse, int b, int h,
                                    int T, int C, int H) {
    int hs = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *P = att_blocks(T);
    size_t base = (size_t)b * T * ld + h * hs;
    const float *q = qkv + base, *k = q + C, *v = q + 2 * C, *l = lse + ((size_t)b * H + h) * T;
    const float *dO = dout + (size_t)b * T * C + h * hs;
    float *dq = dqkv + base, *dk = dq + C, *dv = dq + 2 * C;
    if (!P) { /* no memory for the blocks: a row at a time, dK and dV summed over the rows */
        for (int u = 0; u < T; u++)
            for (int i = 0; i < hs; i++) dk[(size_t)u * ld + i] = dv[(size_t)u * ld + i] = 0.0f;
        for (int t = 0; t < T; t++)
            attention_row_backward(dq + (size_t)t * ld, dk, dv, dO + (size_t)t * C, q + (size_t)t * ld, k, v, l[t],
                                   t, ld, hs, scale);
        return;
    }
    float *dS = P + (size_t)ATT_ROWS * T; /* (rows, n) each */
    for (int t0 = (T - 1) / ATT_ROWS * ATT_ROWS; t0 >= 0; t0 -= ATT_ROWS) {
        int rows = T - t0 < ATT_ROWS ? T - t0 : ATT_ROWS, n = t0 + rows, add = n < T;
        /* Q K^T and dP = dO V^T, only keys u <= t of row t */
        fm_k_gemm_band(0, 1, rows, n, hs, q + (size_t)t0 * ld, ld, k, ld, P, n, 0, FM_BAND_C_LOWER, t0);
        fm_k_gemm_band(0, 1, rows, n, hs, dO + (size_t)t0 * C, C, v, ld, dS, n, 0, FM_BAND_C_LOWER, t0);
        for (int r = 0; r < rows; r++) {
            int t = t0 + r;
            float *p = P + (size_t)r * n, *ds = dS + (size_t)r * n;
            att_probs(p, p, t, n, scale, l[t]);
            float dot = row_dot(p, ds, t + 1);
            for (int u = 0; u <= t; u++) ds[u] = p[u] * (ds[u] - dot) * scale; /* d scores */
            for (int u = t + 1; u < n; u++) ds[u] = 0.0f;
        }
        /* dS and P are zero past the diagonal: row t of them reaches keys u <= t only */
        fm_k_gemm_band(0, 0, rows, hs, n, dS, n, k, ld, dq + (size_t)t0 * ld, ld, 0, FM_BAND_A_LOWER, t0); /* dQ = dS K */
        fm_k_gemm_band(1, 0, n, hs, rows, dS, n, q + (size_t)t0 * ld, ld, dk, ld, add, FM_BAND_A_UPPER, -t0); /* dK += dS^T Q */
        fm_k_gemm_band(1, 0, n, hs, rows, P, n, dO + (size_t)t0 * C, C, dv, ld, add, FM_BAND_A_UPPER, -t0);   /* dV += P^T dO */
    }
}

/* The arguments of one attention call, for the per-head workers. */
typedef struct {
    float *out, *lse, *dqkv;    /* forward: out, lse written; backward: dqkv */
    const float *qkv, *dout, *lse_in;
    int T, C, H;
} attention_args;

static void forward_head(const attention_args *a, int b, int h) {
    attention_forward_head(a->out, a->lse, a->qkv, b, h, a->T, a->C, a->H);
}

static void backward_head(const attention_args *a, int b, int h) {
    attention_backward_head(a->dqkv, a->dout, a->qkv, a->lse_in, b, h, a->T, a->C, a->H);
}

/* Runs head(b, h) for every (batch, head) in the team's threads. The per-head products run
 * inside the parallel loop: each thread takes the calling thread's fm_k_gemm_force_fp32 setting
 * for them and restores its own after. */
static void for_each_head(void (*head)(const attention_args *, int, int), const attention_args *a, int B) {
    int fp32 = fm_k_gemm_fp32_forced(), H = a->H;
#pragma omp parallel
    {
        int own = fm_k_gemm_fp32_forced();
        fm_k_gemm_force_fp32(fp32);
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) head(a, b, h);
        fm_k_gemm_force_fp32(own);
    }
}

void fm_k_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int H) {
    attention_args a = {.out = out, .lse = lse, .qkv = qkv, .T = T, .C = C, .H = H};
    for_each_head(forward_head, &a, B);
}

void fm_k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                             int B, int T, int C, int H) {
    attention_args a = {.dqkv = dqkv, .dout = dout, .qkv = qkv, .lse_in = lse, .T = T, .C = C, .H = H};
    for_each_head(backward_head, &a, B);
}

/* ------------------------------------------------------------ pointwise */

/* Elementwise loops run over fixed blocks; with AVX-512 every element (tails masked) takes
 * the same vector path, so a value never depends on the thread split. */
#define ELEM_BLOCK 4096

void fm_k_gelu_forward(float *out, const float *inp, size_t N) {
    size_t blocks = (N + ELEM_BLOCK - 1) / ELEM_BLOCK;
#pragma omp parallel for schedule(static) if (N > SERIAL_ELEMS)
    for (size_t cb = 0; cb < blocks; cb++) {
        size_t i = cb * ELEM_BLOCK, i1 = i + ELEM_BLOCK < N ? i + ELEM_BLOCK : N;
#ifdef __AVX512F__
        for (; i < i1; i += FM_V16) {
            __mmask16 m = i1 - i >= FM_V16 ? 0xFFFF : fm_tail_mask((int)(i1 - i));
            _mm512_mask_storeu_ps(out + i, m, fm_gelu_v(_mm512_maskz_loadu_ps(m, inp + i)));
        }
#elif defined(FM_AVX2)
        for (; i < i1; i += FM_V8) {
            int left = i1 - i >= FM_V8 ? FM_V8 : (int)(i1 - i);
            fm_store8(out + i, left, fm_gelu_v8(fm_load8(inp + i, left)));
        }
#else
        for (; i < i1; i++) out[i] = fm_gelu_s(inp[i]);
#endif
    }
}

void fm_k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    size_t blocks = (N + ELEM_BLOCK - 1) / ELEM_BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (size_t cb = 0; cb < blocks; cb++) {
        size_t i = cb * ELEM_BLOCK, i1 = i + ELEM_BLOCK < N ? i + ELEM_BLOCK : N;
#ifdef __AVX512F__
        for (; i < i1; i += FM_V16) {
            __mmask16 m = i1 - i >= FM_V16 ? 0xFFFF : fm_tail_mask((int)(i1 - i));
            __m512 g = fm_gelu_grad_v(_mm512_maskz_loadu_ps(m, inp + i));
            _mm512_mask_storeu_ps(dinp + i, m, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, dout + i)));
        }
#elif defined(FM_AVX2)
        for (; i < i1; i += FM_V8) {
            int left = i1 - i >= FM_V8 ? FM_V8 : (int)(i1 - i);
            __m256 g = fm_gelu_grad_v8(fm_load8(inp + i, left));
            fm_store8(dinp + i, left, _mm256_mul_ps(g, fm_load8(dout + i, left)));
        }
#else
        for (; i < i1; i++) dinp[i] = dout[i] * fm_gelu_grad_s(inp[i]);
#endif
    }
}

void fm_k_residual_forward(float *out, const float *a, const float *b, size_t N) {
#pragma omp parallel for schedule(static) if (N > SERIAL_ELEMS)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

/* ------------------------------------------------------------ cross-entropy of one row */

float fm_k_xent_row(float *dz, const float *z, int V, int target, float weight) {
    /* max; then e_v = exp(z_v - max) and their sum (kept in dz when there is one); then
     * dz_v = weight * e_v / sum, dz_target -= weight. Each exp is computed once. */
    float maxv = row_max(z, V), sum = 0.0f, zt = z[target]; /* z may alias dz: z[target] first */
    int v = 0;
#ifdef __AVX512F__
    __m512 vsum = _mm512_setzero_ps(), vm = _mm512_set1_ps(maxv);
    for (v = 0; v < V; v += FM_V16) {
        __mmask16 m = V - v >= FM_V16 ? 0xFFFF : fm_tail_mask(V - v);
        __m512 e = _mm512_maskz_mov_ps(m, fm_exp_v(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, z + v), vm)));
        vsum = _mm512_add_ps(vsum, e);
        if (dz) _mm512_mask_storeu_ps(dz + v, m, e);
    }
    sum = _mm512_reduce_add_ps(vsum);
    if (dz) {
        __m512 scale = _mm512_set1_ps(weight / sum);
        for (v = 0; v < V; v += FM_V16) {
            __mmask16 m = V - v >= FM_V16 ? 0xFFFF : fm_tail_mask(V - v);
            _mm512_mask_storeu_ps(dz + v, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dz + v), scale));
        }
    }
#elif defined(FM_AVX2)
    __m256 vsum = _mm256_setzero_ps(), vm = _mm256_set1_ps(maxv);
    for (v = 0; v < V; v += FM_V8) {
        __m256 e = fm_exp_v8(_mm256_sub_ps(fm_load8(z + v, V - v), vm));
        if (V - v < FM_V8) e = _mm256_and_ps(e, _mm256_castsi256_ps(fm_lanes8(V - v))); /* masked lanes: 0 */
        vsum = _mm256_add_ps(vsum, e);
        if (dz) fm_store8(dz + v, V - v, e);
    }
    sum = fm_hsum8(vsum);
    if (dz) {
        __m256 scale = _mm256_set1_ps(weight / sum);
        for (v = 0; v < V; v += FM_V8) fm_store8(dz + v, V - v, _mm256_mul_ps(fm_load8(dz + v, V - v), scale));
    }
#else
    for (v = 0; v < V; v++) {
        float e = fm_exp_s(z[v] - maxv);
        sum += e;
        if (dz) dz[v] = e;
    }
    if (dz)
        for (v = 0; v < V; v++) dz[v] *= weight / sum;
#endif
    if (dz) dz[target] -= weight;
    return maxv + logf(sum) - zt;
}

/* ------------------------------------------------------------ optimizer */

double fm_k_sumsq(const float *x, size_t n) {
    size_t i = 0;
#ifdef __AVX512F__
    __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    for (; i < n; i += 2 * FM_V16) { /* 32 floats per round, tail masked: 4 lanes of 8 doubles */
        for (int h = 0; h < 2; h++) {
            size_t at = i + (size_t)h * FM_V16;
            __mmask16 m = at >= n ? 0 : n - at >= FM_V16 ? 0xFFFF : fm_tail_mask((int)(n - at));
            __m512 v = _mm512_maskz_loadu_ps(m, x + (m ? at : 0));
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
            acc[2 * h] = _mm512_fmadd_pd(lo, lo, acc[2 * h]);
            acc[2 * h + 1] = _mm512_fmadd_pd(hi, hi, acc[2 * h + 1]);
        }
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3])));
#else
    double acc[8] = {0};
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[i + l] * x[i + l];
    for (; i < n; i++) acc[0] += (double)x[i] * x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
#endif
}

void fm_k_adamw(float *p, const float *g, float *m, float *v, size_t n, float clip, float shrink,
                float beta1, float beta2, float step_size, float bc2_sqrt, float eps) {
    size_t blocks = (n + ELEM_BLOCK - 1) / ELEM_BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 8)
    for (size_t cb = 0; cb < blocks; cb++) {
        size_t i = cb * ELEM_BLOCK, i1 = i + ELEM_BLOCK < n ? i + ELEM_BLOCK : n;
#ifdef __AVX512F__
        __m512 vclip = _mm512_set1_ps(clip), vshrink = _mm512_set1_ps(shrink), vb1 = _mm512_set1_ps(beta1);
        __m512 vb2 = _mm512_set1_ps(beta2), va1 = _mm512_set1_ps(1.0f - beta1), va2 = _mm512_set1_ps(1.0f - beta2);
        __m512 vstep = _mm512_set1_ps(step_size), vbc2 = _mm512_set1_ps(bc2_sqrt), veps = _mm512_set1_ps(eps);
        for (; i < i1; i += FM_V16) {
            __mmask16 k = i1 - i >= FM_V16 ? 0xFFFF : fm_tail_mask((int)(i1 - i));
            __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, g + i), vclip);
            __m512 pi = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + i), vshrink);
            __m512 mi = _mm512_fmadd_ps(vb1, _mm512_maskz_loadu_ps(k, m + i), _mm512_mul_ps(va1, gi));
            __m512 vi = _mm512_fmadd_ps(vb2, _mm512_maskz_loadu_ps(k, v + i), _mm512_mul_ps(_mm512_mul_ps(va2, gi), gi));
            __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc2), veps);
            pi = _mm512_sub_ps(pi, _mm512_div_ps(_mm512_mul_ps(vstep, mi), denom));
            _mm512_mask_storeu_ps(m + i, k, mi);
            _mm512_mask_storeu_ps(v + i, k, vi);
            _mm512_mask_storeu_ps(p + i, k, pi);
        }
#elif defined(FM_AVX2)
        __m256 vclip = _mm256_set1_ps(clip), vshrink = _mm256_set1_ps(shrink), vb1 = _mm256_set1_ps(beta1);
        __m256 vb2 = _mm256_set1_ps(beta2), va1 = _mm256_set1_ps(1.0f - beta1), va2 = _mm256_set1_ps(1.0f - beta2);
        __m256 vstep = _mm256_set1_ps(step_size), vbc2 = _mm256_set1_ps(bc2_sqrt), veps = _mm256_set1_ps(eps);
        for (; i < i1; i += FM_V8) {
            int k = i1 - i >= FM_V8 ? FM_V8 : (int)(i1 - i);
            __m256 gi = _mm256_mul_ps(fm_load8(g + i, k), vclip);
            __m256 pi = _mm256_mul_ps(fm_load8(p + i, k), vshrink);
            __m256 mi = _mm256_fmadd_ps(vb1, fm_load8(m + i, k), _mm256_mul_ps(va1, gi));
            __m256 vi = _mm256_fmadd_ps(vb2, fm_load8(v + i, k), _mm256_mul_ps(_mm256_mul_ps(va2, gi), gi));
            __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc2), veps);
            pi = _mm256_sub_ps(pi, _mm256_div_ps(_mm256_mul_ps(vstep, mi), denom));
            fm_store8(m + i, k, mi);
            fm_store8(v + i, k, vi);
            fm_store8(p + i, k, pi);
        }
#else
        for (; i < i1; i++) {
            float gi = g[i] * clip;
            m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
            v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
            float denom = sqrtf(v[i]) / bc2_sqrt + eps;
            p[i] = p[i] * shrink - step_size * m[i] / denom;
        }
#endif
    }
}

/* ------------------------------------------------------------ int8 (Q8_0) weights */

/* The inputs are quantized too, as llama.cpp's Q8_0 products do: each block of 32 inputs of a row
 * becomes 32 int8 values xq = round(x * 127 / max|x|) (to nearest, ties to even) and a scale
 * dx = max|x| / 127, the same bits on every path. A block's dot product of int8 weights and int8
 * inputs is then an exact integer isum, and
 *     out[n, o] = sum over blocks b of (d[o, b] * dx[n, b]) * isum[n, o, b]  (+ bias[o])
 * in float. The integer sums use the CPU's int8 dot products, a block (one 256-bit vector) at a
 * time: AVX512-VNNI vpdpbusd where built with it, else AVX2 vpmaddubsw + vpmaddwd (the 512-bit
 * form, two blocks a vector, measured slower). Both multiply unsigned by signed bytes, so
 * each weight's sign moves onto its input (|w| by x sign(w); |-128| = 128 as unsigned, and |xq| <=
 * 127 keeps every pair sum of vpmaddubsw below 2^15). The float sums run in vector lanes, so paths
 * differ in rounding only; a row's output does not depend on N.
 * Each thread reads its rows as Q8_STREAMS streams side by side, each prefetched Q8_AHEAD bytes
 * ahead: one stream of this much work per byte keeps too few lines in flight to reach the
 * memory's bandwidth (two measured 60-63 GB/s where one read 41-46, docs/kernels.md). */
#define Q8_AHEAD 8192
#ifndef Q8_STREAMS
#define Q8_STREAMS 2
#endif

/* xq (blocks * 32, zero-padded) and dx (blocks) of one input row x (cols). */
static void q8_quantize_input(int8_t *xq, float *dx, const float *x, int cols, int blocks) {
    for (int b = 0; b < blocks; b++) {
        int i0 = b * FM_Q8_BLOCK, n = cols - i0 < FM_Q8_BLOCK ? cols - i0 : FM_Q8_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < n; i++) amax = fabsf(x[i0 + i]) > amax ? fabsf(x[i0 + i]) : amax;
        float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        dx[b] = amax / 127.0f;
        for (int i = 0; i < FM_Q8_BLOCK; i++) xq[i0 + i] = i < n ? (int8_t)nearbyintf(x[i0 + i] * inv) : 0;
    }
}

#if defined(__AVX2__)
/* The integer dot product of one block: 32 int8 weights (qb) and 32 int8 inputs (xb), as eight
 * int32 partial sums whose total is the block's isum. */
static inline __m256i q8_block_isums(const int8_t *qb, const int8_t *xb) {
    __m256i w = _mm256_loadu_si256((const __m256i *)qb), x = _mm256_loadu_si256((const __m256i *)xb);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)),
                             _mm256_set1_epi16(1));
#endif
}

/* Eight blocks' partial sums p[0..7] -> one vector of their eight isums, lane k = block k. */
static inline __m256i q8_sum8(const __m256i p[8]) {
    __m256i a01 = _mm256_hadd_epi32(p[0], p[1]), a23 = _mm256_hadd_epi32(p[2], p[3]);
    __m256i a45 = _mm256_hadd_epi32(p[4], p[5]), a67 = _mm256_hadd_epi32(p[6], p[7]);
    __m256i b0 = _mm256_hadd_epi32(a01, a23), b1 = _mm256_hadd_epi32(a45, a67); /* blocks 0-3, 4-7 by half */
    return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20), _mm256_permute2x128_si256(b0, b1, 0x31));
}
#endif

/* R outputs at once: the blocks of the R int8 rows q[r] (scales d[r]) against the quantized input
 * xq (scales dx), into out[r]. Eight blocks at a time: their eight isums gathered into one vector,
 * converted to float once and scaled by d * dx of the eight blocks (contiguous); the blocks past
 * the last eight one at a time. The R rows are R streams through memory read side by side: one
 * core keeps more lines in flight over two streams than over one (docs/kernels.md). R is a
 * constant at every call, so the loops over r unroll. */
static inline __attribute__((always_inline)) void q8_rows(float *out, int R, const int8_t *const *q,
                                                          const float *const *d, const int8_t *xq,
                                                          const float *dx, int blocks) {
#if defined(__AVX2__)
    __m256 acc[Q8_STREAMS], tail[Q8_STREAMS];
    for (int r = 0; r < R; r++) acc[r] = tail[r] = _mm256_setzero_ps();
    int b = 0;
    for (; b + 8 <= blocks; b += 8) {
        const int8_t *xb = xq + (size_t)b * FM_Q8_BLOCK;
        __m256 dxb = _mm256_loadu_ps(dx + b);
        for (int r = 0; r < R; r++) {
            const int8_t *qb = q[r] + (size_t)b * FM_Q8_BLOCK;
            for (int line = 0; line < 8 * FM_Q8_BLOCK; line += 64)
                _mm_prefetch((const char *)qb + Q8_AHEAD + line, _MM_HINT_T0);
            __m256i p[8];
            for (int k = 0; k < 8; k++) p[k] = q8_block_isums(qb + k * FM_Q8_BLOCK, xb + k * FM_Q8_BLOCK);
            __m256 scale = _mm256_mul_ps(_mm256_loadu_ps(d[r] + b), dxb);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q8_sum8(p)), scale, acc[r]);
        }
    }
    for (; b < blocks; b++)
        for (int r = 0; r < R; r++) {
            __m256i isum = q8_block_isums(q[r] + (size_t)b * FM_Q8_BLOCK, xq + (size_t)b * FM_Q8_BLOCK);
            tail[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d[r][b] * dx[b]), tail[r]);
        }
    for (int r = 0; r < R; r++) {
        __m256 v = _mm256_add_ps(acc[r], tail[r]);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        out[r] = _mm_cvtss_f32(s);
    }
#else
    for (int r = 0; r < R; r++) {
        float acc = 0.0f;
        for (int b = 0; b < blocks; b++) {
            int32_t isum = 0;
            for (int i = 0; i < FM_Q8_BLOCK; i++)
                isum += (int32_t)q[r][(size_t)b * FM_Q8_BLOCK + i] * xq[(size_t)b * FM_Q8_BLOCK + i];
            acc += d[r][b] * dx[b] * (float)isum;
        }
        out[r] = acc;
    }
#endif
}

typedef struct {
    float *out;
    const int8_t *xq; /* (N, blocks * 32) */
    const float *dx;  /* (N, blocks) */
    const float *d, *bias;
    const int8_t *q;
    int N, rows, blocks;
} q8_job;

/* Outputs o[0..R) of every input row. */
static inline __attribute__((always_inline)) void q8_outputs(const q8_job *j, int R, const int *o) {
    size_t padded = (size_t)j->blocks * FM_Q8_BLOCK;
    const int8_t *q[Q8_STREAMS];
    const float *d[Q8_STREAMS];
    for (int r = 0; r < R; r++) q[r] = j->q + (size_t)o[r] * padded, d[r] = j->d + (size_t)o[r] * j->blocks;
    for (int n = 0; n < j->N; n++) {
        float v[Q8_STREAMS];
        q8_rows(v, R, q, d, j->xq + (size_t)n * padded, j->dx + (size_t)n * j->blocks, j->blocks);
        for (int r = 0; r < R; r++) j->out[(size_t)n * j->rows + o[r]] = v[r] + (j->bias ? j->bias[o[r]] : 0.0f);
    }
}

/* Output rows [lo, hi) of every input row: one chunk of fm_team_for. The chunk is cut into
 * Q8_STREAMS equal runs of rows, walked side by side (row i of every run together); the rows
 * left over at the end of an uneven cut one at a time. */
static void q8_chunk(void *arg, int lo, int hi) {
    const q8_job *j = arg;
    int run = (hi - lo) / Q8_STREAMS;
    for (int i = 0; i < run; i++) {
        int o[Q8_STREAMS];
        for (int r = 0; r < Q8_STREAMS; r++) o[r] = lo + r * run + i;
        q8_outputs(j, Q8_STREAMS, o);
    }
    for (int o = lo + Q8_STREAMS * run; o < hi; o++) q8_outputs(j, 1, &o);
}

/* The rows are shared by the team (src/core/team.h) in Q8_CHUNKS chunks per thread: one long
 * chunk each measured faster than more, shorter ones (docs/kernels.md), and a chunk that a late
 * helper has not taken yet is run by the caller. Below Q8_SERIAL multiply-adds the caller does
 * it all. */
#ifndef Q8_CHUNKS
#define Q8_CHUNKS 1
#endif
#define Q8_SERIAL 65536.0

void fm_k_q8_matmul(float *out, const float *inp, const int8_t *q, const float *d, const float *bias,
                    int N, int rows, int cols, float *xpad) {
    int blocks = (cols + FM_Q8_BLOCK - 1) / FM_Q8_BLOCK, padded = blocks * FM_Q8_BLOCK;
    /* the scratch (N * padded floats) holds xq (N * padded bytes) and then dx (N * blocks) */
    int8_t *xq = (int8_t *)xpad;
    float *dx = xpad + (size_t)N * padded / sizeof(float);
    for (int n = 0; n < N; n++)
        q8_quantize_input(xq + (size_t)n * padded, dx + (size_t)n * blocks, inp + (size_t)n * cols, cols, blocks);
    q8_job job = {out, xq, dx, d, bias, q, N, rows, blocks};
    if ((double)N * rows * padded <= Q8_SERIAL) {
        q8_chunk(&job, 0, rows);
        return;
    }
    int grain = rows / (Q8_CHUNKS * omp_get_max_threads());
    fm_team_for(rows, grain > 16 ? grain : 16, q8_chunk, &job);
}

/* ------------------------------------------------------------ this copy's table (dispatch.c) */

const fm_cpu_table FM_ISA_NAME(fm_cpu_table) = {
    .name = FM_ISA_STR(FM_ISA),
    .gemm = fm_k_gemm,
    .gemm_fused = fm_k_gemm_fused,
    .gemm_band = fm_k_gemm_band,
    .encoder_forward = fm_k_encoder_forward,
    .encoder_backward = fm_k_encoder_backward,
    .layernorm_forward = fm_k_layernorm_forward,
    .layernorm_backward = fm_k_layernorm_backward,
    .linear_forward = fm_k_linear_forward,
    .linear_backward = fm_k_linear_backward,
    .attention_forward = fm_k_attention_forward,
    .attention_backward = fm_k_attention_backward,
    .attend_cached = fm_k_attend_cached,
    .gelu_forward = fm_k_gelu_forward,
    .gelu_backward = fm_k_gelu_backward,
    .residual_forward = fm_k_residual_forward,
    .xent_row = fm_k_xent_row,
    .sumsq = fm_k_sumsq,
    .adamw = fm_k_adamw,
    .q8_matmul = fm_k_q8_matmul,
};
