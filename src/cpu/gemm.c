/*
 * gemm.c — single-precision matrix multiply: cache-blocked, packed, with a register-tiled
 * micro-kernel (AVX-512 when the compiler targets it, plain C otherwise).
 *
 * What it is for: every dense product of the model (linear layers forward and backward, the
 * tied output head, attention's blocks) goes through fm_k_gemm. The structure is the classic
 * one (Goto, BLIS):
 *
 *   for each NC-wide block of C's columns:
 *     for each group of slices of the inner dimension (K cut into equal slices of at most KC;
 *     a group holds up to B_GROUP floats of B):
 *       pack B (kc x NC per slice) into NR-column panels, all threads together; one barrier
 *       split the rows between the threads; in each thread's share, for each MC rows:
 *         for each slice: pack A (MC x kc) into MR-row panels    (stays in L2)
 *           for each NR panel of B (in L1), for each MR panel of A:
 *             micro-kernel: an MR x NR tile of C held in registers over kc rank-1 updates
 *
 * Packing absorbs the transposes (NN, NT, TN, TT all become the same packed panels), pads the
 * edges with zeros, and lays the data out in the order the micro-kernel reads it. Two extras
 * ride along for free (fm_k_gemm_fused): a bias added in the micro-kernel's store, and column
 * sums of B taken while B is packed (a bias gradient). And a band (fm_k_gemm_band, attention's
 * causal blocks): register tiles of C wholly above a diagonal are skipped, or each tile's depth
 * loop is cut to the k where A's rows are not known to be zero; the packing is unchanged.
 *
 * The order of each element's sum (every path follows it): K is cut into equal slices of at
 * most KC (kc depends on K alone); each slice is summed in one accumulator, one multiply-add
 * per k ascending, starting from zero; the first slice's sum gets the bias added and is then
 * stored to C (added to C's value when accumulating), and each later slice's sum is added to
 * C in turn. Nothing in that order depends on M, N, the thread count or the path, so:
 *   - results are bitwise independent of the number of threads (threads only decide who
 *     computes which tile; tests/test_train.c checks it);
 *   - row i of C is bitwise the same whatever the number of rows of the product: a batch of
 *     decoded sequences gets, row by row, what decoding each alone gets (tests/test_kernels.c).
 *
 * A weight gradient with fewer rows than columns (C = A^T B, M < N) is built as its transpose
 * in a scratch matrix and copied back (transposed_if_wider): the wide operand is then packed
 * per thread in L2-sized blocks instead of into one shared buffer larger than L2.
 *
 * Float32 products with few rows (M < GEMV_ROWS: decoding) skip the packing and stream the
 * weights once (gemv_*), in the same order per element. When the packing buffers cannot be
 * allocated, the product runs tile by tile with one A and one B panel on the stack
 * (gemm_tiles), again in the same order. Not for: anything but float32 row-major matrices.
 * Rows of C that start on a cache line (the model's buffers do, see src/core/memory.c) are
 * stored in whole lines.
 *
 * bfloat16 products (fm_k_gemm_set_bf16(1), what PyTorch calls matmul precision "medium"): the
 * packed panels are rounded to bfloat16 (nearest even) as they are packed, pairs of k side by
 * side in 32 bits, and the micro-kernel multiplies two k at once (AVX512_BF16's dot product,
 * twice the FMA rate on CPUs that have it), accumulating in float32. Inputs and outputs stay
 * float32; the summation order is the same fixed one, so thread counts still change nothing.
 * Every bfloat16 product takes the packed path, whatever its rows, so rows stay independent
 * of M in bfloat16 too. A thread can force float32 for the products it starts
 * (fm_k_gemm_force_fp32: inference sessions decode in float32 whatever the process-wide
 * setting); the precision is read once, on the calling thread, into the product's job.
 *
 * Experiments that were measured and not kept: docs/kernels.md.
 */
#include "cpu/isa.h" /* first: this copy's kernel names */

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "core/alloc.h"
#include "core/team.h"
#include "cpu/kernels.h"

/* Micro-tile and cache blocks. A's panel (MR x kc) streams from L2, B's (kc x NR) from L1/L2. */
#ifndef KC
#define KC 384   /* largest depth of one packed slice; K is cut into equal slices up to this */
#endif
#ifndef MC
#define MC 96    /* rows of A kept in L2 while a thread sweeps its columns (multiple of MR) */
#endif
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define AVX2_TILE 1 /* the AVX2 copy: 16 ymm registers hold a 6 x 16 tile (12) and its operands */
#define MR 6     /* rows of the register tile */
#define NR 16    /* columns of the register tile: two 8-float vectors */
#else
#define MR 12    /* rows of the register tile */
#define NR 32    /* columns of the register tile: two 16-float vectors */
#endif
#define NC 3072  /* columns of B packed at once (multiple of NR) */
#define B_GROUP ((size_t)3 << 20) /* floats of B packed at once (12 MiB): several KC slices */
#define GEMV_ROWS (FM_K_FEW_ROWS + 1) /* up to 8 rows (8 decoding streams) take the unpacked path */
/* CALL(m) with m the constant equal to M (1 to GEMV_ROWS - 1 = 8), so that an always-inline
 * kernel taking the row count keeps its per-row sums in registers. */
#define GEMV_WITH_ROWS(M, CALL)                                                                     \
    switch (M) {                                                                                    \
    case 1: CALL(1); break;                                                                         \
    case 2: CALL(2); break;                                                                         \
    case 3: CALL(3); break;                                                                         \
    case 4: CALL(4); break;                                                                         \
    case 5: CALL(5); break;                                                                         \
    case 6: CALL(6); break;                                                                         \
    case 7: CALL(7); break;                                                                         \
    default: CALL(8); break;                                                                        \
    }
#define GEMV_SERIAL 65536.0 /* below this many multiply-adds a small-M product runs in one thread */

/* ------------------------------------------------------------ workspace */

/* Packed panels live in a per-calling-thread workspace that only grows (first call of a given
 * size allocates; later steps reuse it), so a training step allocates nothing. A thread that
 * ends frees its workspace (a thread-specific key's destructor runs in the ending thread). */
static _Thread_local float *ws_a, *ws_b, *ws_c;
static _Thread_local size_t ws_a_len, ws_b_len, ws_c_len;
static pthread_key_t ws_key;
static pthread_once_t ws_key_once = PTHREAD_ONCE_INIT;

static void ws_release(void *unused) {
    (void)unused;
    fm_free(ws_a), fm_free(ws_b), fm_free(ws_c);
    ws_a = ws_b = ws_c = NULL;
    ws_a_len = ws_b_len = ws_c_len = 0;
}

static void ws_key_create(void) { pthread_key_create(&ws_key, ws_release); }

static float *grow(float **buf, size_t *len, size_t want) {
    if (*len >= want) return *buf;
    fm_free(*buf);
    *buf = fm_aligned_alloc(64, want * sizeof(float));
    *len = *buf ? want : 0;
    if (*buf && pthread_once(&ws_key_once, ws_key_create) == 0) pthread_setspecific(ws_key, &ws_key);
    return *buf;
}

/* ------------------------------------------------------------ precision */

/* The switches (fm_k_gemm_set_bf16, fm_k_gemm_force_fp32) and fm_k_bf16_round are shared by
 * every copy of this file: dispatch.c. */

/* x rounded to bfloat16, nearest even, as the top 16 bits of a float's bits (low bits zero);
 * NaN stays a (quiet) NaN. */
static inline uint32_t bf16_round_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u | 0x00400000u) & 0xFFFF0000u;
    return (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
}

#ifdef __AVX512F__
/* bf16_round_bits on 16 floats' bits at once: the rounded value in the high half of each dword. */
static inline __m512i bf16_round_vec(__m512i u) {
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                            _mm512_set1_epi32(0x7F800000));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i v = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
    return _mm512_mask_or_epi32(v, nan, u, _mm512_set1_epi32(0x00400000));
}
#endif

/* dst (w words) = bf16(r0[j]) | bf16(r1[j]) << 16 for j < n, zero for n <= j < w; r1 NULL reads
 * as zeros. Every value is read before any word is stored, so dst may overlay r0. */
static inline void bf16_pairs_row(uint32_t *dst, const float *r0, const float *r1, int n, int w) {
#ifdef __AVX512F__
    __m512i words[4]; /* w <= 64 */
    for (int j = 0; j < w; j += 16) {
        int left = n - j;
        __mmask16 m = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        __m512i v0 = bf16_round_vec(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r0 + j)));
        __m512i v1 = r1 ? bf16_round_vec(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, r1 + j))) : _mm512_setzero_si512();
        words[j / 16] = _mm512_or_si512(_mm512_srli_epi32(v0, 16), _mm512_slli_epi32(_mm512_srli_epi32(v1, 16), 16));
    }
    for (int j = 0; j < w; j += 16) {
        __mmask16 keep = w - j >= 16 ? 0xFFFF : (__mmask16)((1u << (w - j)) - 1);
        _mm512_mask_storeu_epi32(dst + j, keep, words[j / 16]);
    }
#else
    uint32_t words[64];
    for (int j = 0; j < w; j++)
        words[j] = j < n ? (bf16_round_bits(r0[j]) >> 16) | (r1 ? bf16_round_bits(r1[j]) : 0u) : 0u;
    memcpy(dst, words, sizeof(uint32_t) * (size_t)w);
#endif
}

/* A packed panel (kc x w floats, w values per k) rewritten in place as ceil(kc / 2) x w words,
 * word (p, j) = bf16(v[2p][j]) | bf16(v[2p+1][j]) << 16 (an odd kc's last partner is zero).
 * Word row p lies over float row p, which pair p / 2 <= p has already read. */
static void panel_to_bf16_pairs(float *panel, int kc, int w) {
    for (int p = 0; p < (kc + 1) / 2; p++) {
        const float *r0 = panel + (size_t)(2 * p) * w, *r1 = 2 * p + 1 < kc ? r0 + w : NULL;
        bf16_pairs_row((uint32_t *)panel + (size_t)p * w, r0, r1, w, w);
    }
}

/* ------------------------------------------------------------ packing */

/* The packing loops read strided runs (rows of A, rows of B) that the hardware prefetchers pick
 * up too late, so their loads would miss (docs/kernels.md has the cost). Each loop asks for the
 * data it will read a little later: PACK_AHEAD floats further along a row, or PACK_ROWS_AHEAD
 * rows further down. */
#define PACK_AHEAD 64
#define PACK_ROWS_AHEAD 4

static inline void prefetch_ahead(const float *p) {
#ifdef __AVX512F__
    _mm_prefetch((const char *)p, _MM_HINT_T0);
#else
    __builtin_prefetch(p);
#endif
}

#ifdef __AVX512F__
/* r (16 rows of 16) transposed in place: afterwards r[c] holds column c. 4 x 4 transposes inside
 * each 128-bit lane (unpack, shuffle), then a 4 x 4 transpose of the lanes. */
static inline void transpose16_regs(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);     /* per lane: a0 b0 a1 b1 */
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]); /* per lane: a2 b2 a3 b3 */
    }
    for (int i = 0; i < 16; i += 4) { /* r[i + c], lane L: column 4L + c of rows i..i+3 */
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) { /* column 4L + c = lane L of r[c], r[4 + c], r[8 + c], r[12 + c] */
        __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
        __m512 u2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44), u3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
}

/* dst (16 x ncols, leading dim ldd) = transpose of src (nrows x 16, leading dim lds), rows of src
 * past nrows read as zero; ncols <= 16 columns of dst are written. */
static inline void transpose16(float *dst, size_t ldd, const float *src, size_t lds, int nrows, int ncols) {
    __m512 r[16];
    __mmask16 keep = (__mmask16)((1u << ncols) - 1);
    for (int i = 0; i < 16; i++) r[i] = i < nrows ? _mm512_loadu_ps(src + (size_t)i * lds) : _mm512_setzero_ps();
    transpose16_regs(r);
    for (int c = 0; c < 16; c++) _mm512_mask_storeu_ps(dst + (size_t)c * ldd, keep, r[c]);
}
#endif

#ifdef AVX2_TILE
/* dst (8 x ncols, leading dim ldd) = transpose of src (nrows x 8, leading dim lds), rows of src
 * past nrows read as zero; ncols <= 8 columns of dst are written (ncols == 8: whole vectors). */
/* r (8 rows of 8) transposed: afterwards r[c] holds column c. */
static inline void transpose8_regs(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) { /* column c: low lanes of r[c] (rows 0-3) and r[4 + c] (rows 4-7) */
        t[c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x20);
        t[4 + c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x31);
    }
    for (int c = 0; c < 8; c++) r[c] = t[c];
}

static inline void transpose8(float *dst, size_t ldd, const float *src, size_t lds, int nrows, int ncols) {
    __m256 t[8];
    for (int i = 0; i < 8; i++) t[i] = i < nrows ? _mm256_loadu_ps(src + (size_t)i * lds) : _mm256_setzero_ps();
    transpose8_regs(t);
    __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int c = 0; c < 8; c++) {
        if (ncols == 8) _mm256_storeu_ps(dst + (size_t)c * ldd, t[c]);
        else _mm256_maskstore_ps(dst + (size_t)c * ldd, keep, t[c]);
    }
}
#endif

/* A panel: MR rows [i0, i0+mr) x depth [k0, k0+kc) of op(A) as kc x MR (for each k the MR row
 * values, rows past mr zero). a(i, k) = A[i*sa_i + k*sa_k]. Transposed so that the micro-kernel
 * broadcasts from one stream, not from MR row streams. */
static void pack_a_panel(float *dst, const float *A, size_t sa_i, size_t sa_k, int i0, int mr, int k0, int kc) {
    if (sa_k == 1) { /* rows contiguous in k: read MR rows side by side */
        int k = 0;
#ifdef __AVX512F__
        for (; k + 16 <= kc; k += 16) { /* MR rows x 16 k -> 16 k x MR (rows past mr zero) */
            const float *src = A + (size_t)i0 * sa_i + k0 + k;
            for (int r = 0; r < mr; r++) prefetch_ahead(src + (size_t)r * sa_i + PACK_AHEAD);
            transpose16(dst + (size_t)k * MR, MR, src, sa_i, mr, MR);
        }
#elif defined(AVX2_TILE)
        for (; k + 8 <= kc; k += 8) { /* MR (6) rows x 8 k -> 8 k x MR (rows past mr zero) */
            const float *src = A + (size_t)i0 * sa_i + k0 + k;
            for (int r = 0; r < mr; r++) prefetch_ahead(src + (size_t)r * sa_i + PACK_AHEAD);
            transpose8(dst + (size_t)k * MR, MR, src, sa_i, mr, MR);
        }
#endif
        for (; k < kc; k++) {
            int r = 0;
            for (; r < mr; r++) dst[(size_t)k * MR + r] = A[(size_t)(i0 + r) * sa_i + k0 + k];
            for (; r < MR; r++) dst[(size_t)k * MR + r] = 0.0f;
        }
    } else { /* A stored transposed: each k's MR values are contiguous */
        for (int k = 0; k < kc; k++) {
            const float *src = A + (size_t)(k0 + k) * sa_k + (size_t)i0 * sa_i;
            int r = 0;
#ifdef __AVX512F__
            if (sa_i == 1) {
                __mmask16 m = (__mmask16)((1u << mr) - 1);
                _mm512_mask_storeu_ps(dst + (size_t)k * MR, (__mmask16)((1u << MR) - 1), _mm512_maskz_loadu_ps(m, src));
                continue;
            }
#endif
            if (sa_i == 1)
                for (; r < mr; r++) dst[(size_t)k * MR + r] = src[r];
            else
                for (; r < mr; r++) dst[(size_t)k * MR + r] = src[(size_t)r * sa_i];
            for (; r < MR; r++) dst[(size_t)k * MR + r] = 0.0f;
        }
    }
}

/* B panel, B stored transposed (N x K): depth [k0, k0+kc) x columns [j0, j0+nr) of op(B) as
 * kc x NR (columns past nr zero), b(k, j) = B[k*sb_k + j*sb_j]: a transpose, in 16 x 16 blocks
 * where possible. */
static void pack_b_panel_t(float *dst, const float *B, size_t sb_k, size_t sb_j, int k0, int kc, int j0, int nr) {
    int j = 0;
#ifdef __AVX512F__
    if (sb_k == 1)
        for (; j + 16 <= nr; j += 16) {
            int k = 0;
            for (; k + 16 <= kc; k += 16) {
                const float *src = B + (size_t)(j0 + j) * sb_j + k0 + k;
                for (int r = 0; r < 16; r++) prefetch_ahead(src + (size_t)r * sb_j + PACK_AHEAD);
                transpose16(dst + (size_t)k * NR + j, NR, src, sb_j, 16, 16);
            }
            for (; k < kc; k++)
                for (int jj = j; jj < j + 16; jj++) dst[(size_t)k * NR + jj] = B[(size_t)(j0 + jj) * sb_j + k0 + k];
        }
#elif defined(AVX2_TILE)
    if (sb_k == 1)
        for (; j + 8 <= nr; j += 8) {
            int k = 0;
            for (; k + 8 <= kc; k += 8) {
                const float *src = B + (size_t)(j0 + j) * sb_j + k0 + k;
                for (int r = 0; r < 8; r++) prefetch_ahead(src + (size_t)r * sb_j + PACK_AHEAD);
                transpose8(dst + (size_t)k * NR + j, NR, src, sb_j, 8, 8);
            }
            for (; k < kc; k++)
                for (int jj = j; jj < j + 8; jj++) dst[(size_t)k * NR + jj] = B[(size_t)(j0 + jj) * sb_j + k0 + k];
        }
#endif
    for (; j < nr; j++)
        for (int k = 0; k < kc; k++) dst[(size_t)k * NR + j] = B[(size_t)(k0 + k) * sb_k + (size_t)(j0 + j) * sb_j];
    for (; j < NR; j++)
        for (int k = 0; k < kc; k++) dst[(size_t)k * NR + j] = 0.0f;
}

/* Panels [p0, p1) of a B slice (depth [k0, k0+kc), columns from j0, nc in all) into slice
 * (panel p at p * NR * kcs). Row-major B is read row by row, each row's run of the panels
 * in one contiguous read (column by column, rows a power-of-two apart would fight over the
 * same cache sets); colsum (or NULL) gets the column sums, k ascending. */
static void pack_b_slice(float *slice, const float *B, size_t sb_k, size_t sb_j, int k0, int kc, int kcs, int j0,
                         int nc, int p0, int p1, float *colsum) {
    if (sb_j != 1) {
        for (int p = p0; p < p1; p++) {
            int nr = nc - p * NR < NR ? nc - p * NR : NR;
            pack_b_panel_t(slice + (size_t)p * NR * kcs, B, sb_k, sb_j, k0, kc, j0 + p * NR, nr);
        }
        return;
    }
    int c0 = p0 * NR, c1 = p1 * NR < nc ? p1 * NR : nc; /* columns of this share */
    for (int k = 0; k < kc; k++) {
        const float *src = B + (size_t)(k0 + k) * sb_k + j0;
        for (int p = p0; p < p1; p++) {
            int j = p * NR, nr = nc - j < NR ? nc - j : NR;
            float *d = slice + (size_t)p * NR * kcs + (size_t)k * NR;
            if (nr == NR) { /* a constant size: two vector moves */
                memcpy(d, src + j, sizeof(float) * NR);
            } else {
                memcpy(d, src + j, sizeof(float) * nr);
                memset(d + nr, 0, sizeof(float) * (NR - nr));
            }
        }
        if (colsum)
            for (int j = c0; j < c1; j++) colsum[j0 + j] += src[j];
    }
}

/* ------------------------------------------------------------ micro-kernel */

/* One multiply-add of the plain-C kernels, spelled out so that every kernel rounds alike: fused
 * (one rounding) where the target has FMA, else a product then a sum. Left to the compiler's
 * contraction, two loops computing the same sum could be contracted differently. */
#if defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__ARM_FEATURE_FMA)
#define MADD(a, b, c) fmaf(a, b, c)
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* The plain micro-kernels' end: acc (mr x nr of an MR x NR tile) [+ bias] [+ C] stored to C. */
static inline void store_tile_plain(float acc[MR][NR], float *c, int ldc, int mr, int nr, int load_c,
                                    const float *bias) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            float x = bias ? acc[r][j] + bias[j] : acc[r][j];
            c[(size_t)r * ldc + j] = load_c ? c[(size_t)r * ldc + j] + x : x;
        }
}

/* C tile (mr <= MR rows, nr <= NR columns, leading dim ldc) (+)= ap (kc x MR) . bp (kc x NR).
 * load_c: add to C's values, else overwrite; bias (nr) or NULL: added to every row. */
#ifdef __AVX512F__
/* The end of a micro-kernel: acc (mr x nr of an MR x NR tile) [+ bias] [+ C] stored to C. */
static inline void store_tile(__m512 acc[MR][2], float *c, int ldc, int mr, int nr, int load_c, const float *bias) {
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
        __m512 x0 = acc[r][0], x1 = acc[r][1];
        if (bias) {
            x0 = _mm512_add_ps(x0, bias0);
            x1 = _mm512_add_ps(x1, bias1);
        }
        if (load_c) {
            x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, cr));
            x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, x0);
        _mm512_mask_storeu_ps(cr + 16, m1, x1);
    }
}

/* The register tile shared by the micro-kernels: 24 accumulators (row r: cr0, cr1 for columns
 * 0-15 and 16-31, rows 10 and 11 named a and b), each kernel's ROW(r, x0, x1) applied to the 12
 * rows, and the store. Spelled out as named registers so the compiler keeps all 24 in zmm. */
#define TILE_ACCUMULATORS                                                                        \
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,     \
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, \
           c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, \
           cb0 = c00, cb1 = c00
#define TILE_ROWS                                                                                \
    ROW(0, c00, c01); ROW(1, c10, c11); ROW(2, c20, c21); ROW(3, c30, c31); ROW(4, c40, c41);    \
    ROW(5, c50, c51); ROW(6, c60, c61); ROW(7, c70, c71); ROW(8, c80, c81); ROW(9, c90, c91);    \
    ROW(10, ca0, ca1); ROW(11, cb0, cb1)
#define TILE_STORE                                                                               \
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}, \
                         {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}}; \
    store_tile(acc, c, ldc, mr, nr, load_c, bias)

static inline void prefetch_tile(float *c, int ldc, int mr) {
    for (int r = 0; r < mr; r++) {
        _m_prefetchw(c + (size_t)r * ldc);
        _m_prefetchw(c + (size_t)r * ldc + 16);
    }
}

static void micro_kernel(int kc, const float *restrict ap, const float *restrict bp, float *c, int ldc,
                         int mr, int nr, int load_c, const float *bias) {
    TILE_ACCUMULATORS;
    prefetch_tile(c, ldc, mr); /* fetch the C tile (to add to or overwrite) while the products run */
#define ROW(r, x0, x1)                                   \
    do {                                                 \
        __m512 a_ = _mm512_set1_ps(ap[r]);               \
        x0 = _mm512_fmadd_ps(a_, b0, x0);                \
        x1 = _mm512_fmadd_ps(a_, b1, x1);                \
    } while (0)
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        TILE_ROWS;
        ap += MR;
        bp += NR;
    }
#undef ROW
    TILE_STORE;
}

#ifdef __AVX512BF16__
/* The same tile from bfloat16 pair panels (see panel_to_bf16_pairs): ap (kp x MR words), bp
 * (kp x NR words), kp = ceil(kc / 2); each step adds two k at once. */
static void micro_kernel_bf16(int kc, const uint32_t *restrict ap, const uint32_t *restrict bp, float *c,
                              int ldc, int mr, int nr, int load_c, const float *bias) {
    TILE_ACCUMULATORS;
    prefetch_tile(c, ldc, mr);
#define ROW(r, x0, x1)                                                    \
    do {                                                                  \
        __m512bh a_ = (__m512bh)_mm512_set1_epi32((int)ap[r]);            \
        x0 = _mm512_dpbf16_ps(x0, a_, b0);                                \
        x1 = _mm512_dpbf16_ps(x1, a_, b1);                                \
    } while (0)
    for (int p = 0; p < (kc + 1) / 2; p++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)bp), b1 = (__m512bh)_mm512_load_si512((const void *)(bp + 16));
        TILE_ROWS;
        ap += MR;
        bp += NR;
    }
#undef ROW
    TILE_STORE;
}
#define HAVE_BF16_KERNEL 1
#endif
#elif defined(AVX2_TILE)
/* Lanes [0, n) of an 8-float vector, for the AVX2 masked loads and stores (n <= 0: none). */
static inline __m256i lanes8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* store_tile for the AVX2 tile: acc (mr x nr of MR x NR) [+ bias] [+ C] stored to C, the same
 * order of additions as the other kernels. */
static inline void store_tile(__m256 acc[MR][2], float *c, int ldc, int mr, int nr, int load_c, const float *bias) {
    __m256i m0 = lanes8(nr), m1 = lanes8(nr - 8);
    __m256 bias0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
    __m256 bias1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
        __m256 x0 = acc[r][0], x1 = acc[r][1];
        if (bias) {
            x0 = _mm256_add_ps(x0, bias0);
            x1 = _mm256_add_ps(x1, bias1);
        }
        if (nr == NR) {
            if (load_c) {
                x0 = _mm256_add_ps(x0, _mm256_loadu_ps(cr));
                x1 = _mm256_add_ps(x1, _mm256_loadu_ps(cr + 8));
            }
            _mm256_storeu_ps(cr, x0);
            _mm256_storeu_ps(cr + 8, x1);
        } else {
            if (load_c) {
                x0 = _mm256_add_ps(x0, _mm256_maskload_ps(cr, m0));
                x1 = _mm256_add_ps(x1, _mm256_maskload_ps(cr + 8, m1));
            }
            _mm256_maskstore_ps(cr, m0, x0);
            _mm256_maskstore_ps(cr + 8, m1, x1);
        }
    }
}

/* The 6 x 16 tile in 12 named ymm accumulators over kc rank-1 updates. */
static void micro_kernel(int kc, const float *restrict ap, const float *restrict bp, float *c, int ldc,
                         int mr, int nr, int load_c, const float *bias) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int r = 0; r < mr; r++) _mm_prefetch((const char *)(c + (size_t)r * ldc), _MM_HINT_T0);
#define ROW(r, x0, x1)                                   \
    do {                                                 \
        __m256 a_ = _mm256_broadcast_ss(ap + r);         \
        x0 = _mm256_fmadd_ps(a_, b0, x0);                \
        x1 = _mm256_fmadd_ps(a_, b1, x1);                \
    } while (0)
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        ROW(0, c00, c01); ROW(1, c10, c11); ROW(2, c20, c21); ROW(3, c30, c31); ROW(4, c40, c41); ROW(5, c50, c51);
        ap += MR;
        bp += NR;
    }
#undef ROW
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    store_tile(acc, c, ldc, mr, nr, load_c, bias);
}
#else
static void micro_kernel(int kc, const float *restrict ap, const float *restrict bp, float *c, int ldc,
                         int mr, int nr, int load_c, const float *bias) {
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++) {
            float a = ap[r];
            for (int j = 0; j < NR; j++) acc[r][j] = MADD(a, bp[j], acc[r][j]);
        }
        ap += MR;
        bp += NR;
    }
    store_tile_plain(acc, c, ldc, mr, nr, load_c, bias);
}
#endif

#ifndef HAVE_BF16_KERNEL
static inline float bf16_lo(uint32_t w) {
    uint32_t u = w << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}
static inline float bf16_hi(uint32_t w) {
    uint32_t u = w & 0xFFFF0000u;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* bfloat16 pair panels without AVX512_BF16: the same products, two k per step, in float. */
static void micro_kernel_bf16(int kc, const uint32_t *restrict ap, const uint32_t *restrict bp, float *c,
                              int ldc, int mr, int nr, int load_c, const float *bias) {
    float acc[MR][NR] = {{0}};
    for (int p = 0; p < (kc + 1) / 2; p++) {
        for (int r = 0; r < MR; r++) {
            float a0 = bf16_lo(ap[r]), a1 = bf16_hi(ap[r]);
            for (int j = 0; j < NR; j++) acc[r][j] += a0 * bf16_lo(bp[j]) + a1 * bf16_hi(bp[j]);
        }
        ap += MR;
        bp += NR;
    }
    store_tile_plain(acc, c, ldc, mr, nr, load_c, bias);
}
#endif

/* ------------------------------------------------------------ the product, shared by threads */

typedef struct {
    int M, N, K, accumulate;
    const float *A, *B;
    size_t sa_i, sa_k; /* a(i, k) = A[i*sa_i + k*sa_k] */
    size_t sb_k, sb_j; /* b(k, j) = B[k*sb_k + j*sb_j] */
    float *C;
    int ldc;
    float *ap;         /* A's blocks, MC x KC per thread */
    float *bp;         /* B's packed slices, shared by the team */
    const float *bias; /* (N) added to every row of C, or NULL */
    float *colsum;     /* (N) += column sums of op(B), or NULL (B row-major only) */
    int kc;            /* depth of a slice: K in equal slices of at most KC (fewer passes over C) */
    int kslices;       /* slices of B packed at once */
    int bf16;          /* panels rounded to bfloat16 pairs */
    fm_k_band band;    /* causal structure to skip (see kernels.h), offset band_d */
    int band_d;
    int c_trans;       /* C is stored transposed: element (i, j) at C[j*ldc + i] (transposed_if_wider) */
    float *ct;         /* with c_trans: C's transpose (M x N, leading dim ldct), shared by the team */
    int ldct;
    float *rowsum;     /* (M) += row sums of op(A) over k, or NULL (A stored transposed only) */
} gemm_job;

/* Thread tid of nt: [lo, hi) of n items, in contiguous shares. */
static inline void share(int n, int nt, int tid, int *lo, int *hi) {
    *lo = (int)((long)n * tid / nt);
    *hi = (int)((long)n * (tid + 1) / nt);
}

/* Few rows (decoding, float32): C (M, N) (+)= op(A) (M, K) @ op(B) for M < GEMV_ROWS, streaming
 * B once without packing it; the threads split C's columns. B is read as long contiguous runs so
 * the prefetchers keep DRAM busy.
 *
 * Each element is summed exactly as the packed path sums it (see the top of this file): the
 * same slices of K (g->kc), one multiply-add chain per slice k ascending from zero, the bias
 * added to the first slice's sum, each slice then stored or added to C (gemv_store, the order of
 * the micro-kernel's store). So a row of C does not depend on how many rows the product has.
 *
 * B row-major (K, N): rows of B scaled and added into a block of C's row (kept in L1), GEMV_K
 * rows of B at a time. B stored (N, K): 16 rows of B (16 columns of C) read 16 k at a time and
 * transposed in registers, so each k gives one vector across the 16 columns and every column
 * keeps its own chain. */
#define GEMV_COLS 1024 /* columns of C accumulated at once (M x 4 KiB in L1) */
#define GEMV_K 4       /* rows of B streamed together */
#ifndef GEMV_K_AHEAD
#define GEMV_K_AHEAD 8
#endif

/* The end of one slice: c (n) = sum [+ bias], or c + (sum [+ bias]) with load_c. */
static inline void gemv_store(float *c, const float *sum, const float *bias, int n, int load_c) {
    for (int j = 0; j < n; j++) {
        float x = bias ? sum[j] + bias[j] : sum[j];
        c[j] = load_c ? x + c[j] : x;
    }
}

#define GEMV_TILE_ROWS 2   /* from this many rows the sums stay in registers (gemv_nn_tiles) */
#define GEMV_TILE_AHEAD 32 /* rows of B prefetched ahead by the tiles */

#ifdef __AVX512F__
/* gemv_nn_slice for several rows: the sums of M rows (a constant where inlined) and nv vectors
 * (1 or 2) of columns stay in registers while k runs through the slice, so each element of B
 * read is used M times at once and no partial sum goes through memory. B is read as runs of
 * nv * 64 bytes a row apart, GEMV_TILE_AHEAD rows prefetched ahead. */
static inline __attribute__((always_inline)) void gemv_nn_tile(const gemm_job *g, int M, int k0, int k1,
                                                               const float *b, int nv, float *y, size_t lda) {
    __m512 s[GEMV_ROWS - 1][2];
    for (int i = 0; i < M; i++) s[i][0] = s[i][1] = _mm512_setzero_ps();
    size_t ldb = g->sb_k, sa_i = g->sa_i, sa_k = g->sa_k;
    for (int k = k0; k < k1; k++, b += ldb) {
        if (k + GEMV_TILE_AHEAD < g->K) {
            _mm_prefetch((const char *)(b + GEMV_TILE_AHEAD * ldb), _MM_HINT_T0);
            if (nv == 2) _mm_prefetch((const char *)(b + GEMV_TILE_AHEAD * ldb + 16), _MM_HINT_T0);
        }
        __m512 b0 = _mm512_loadu_ps(b), b1 = nv == 2 ? _mm512_loadu_ps(b + 16) : b0;
        const float *a = g->A + (size_t)k * sa_k;
        for (int i = 0; i < M; i++) {
            __m512 ai = _mm512_set1_ps(a[i * sa_i]);
            s[i][0] = _mm512_fmadd_ps(ai, b0, s[i][0]);
            if (nv == 2) s[i][1] = _mm512_fmadd_ps(ai, b1, s[i][1]);
        }
    }
    for (int i = 0; i < M; i++) {
        _mm512_storeu_ps(y + i * lda, s[i][0]);
        if (nv == 2) _mm512_storeu_ps(y + i * lda + 16, s[i][1]);
    }
}

/* Columns [c0, c0 + n) (n a multiple of 16) of the slice for 2 <= M <= 8 rows, in tiles. */
static void gemv_nn_tiles(const gemm_job *g, int k0, int k1, int c0, int n, float *acc, size_t lda) {
    const float *b = g->B + (size_t)k0 * g->sb_k + c0;
    for (int j = 0; j < n; j += 32) {
        int nv = n - j >= 32 ? 2 : 1;
#define TILE(m) gemv_nn_tile(g, m, k0, k1, b + j, nv, acc + j, lda)
        GEMV_WITH_ROWS(g->M, TILE)
#undef TILE
    }
}
#elif defined(AVX2_TILE)
/* The AVX2 form of gemv_nn_tile: M rows (a constant where inlined) of 8 columns, the sums in
 * registers (8 of the 16 ymm at M = 8) through the slice, one multiply-add per k ascending. */
static inline __attribute__((always_inline)) void gemv_nn_tile8(const gemm_job *g, int M, int k0, int k1,
                                                                const float *b, float *y, size_t lda) {
    __m256 s[GEMV_ROWS - 1];
    for (int i = 0; i < M; i++) s[i] = _mm256_setzero_ps();
    size_t ldb = g->sb_k, sa_i = g->sa_i, sa_k = g->sa_k;
    for (int k = k0; k < k1; k++, b += ldb) {
        if (k + GEMV_TILE_AHEAD < g->K) _mm_prefetch((const char *)(b + GEMV_TILE_AHEAD * ldb), _MM_HINT_T0);
        __m256 bk = _mm256_loadu_ps(b);
        const float *a = g->A + (size_t)k * sa_k;
        for (int i = 0; i < M; i++) s[i] = _mm256_fmadd_ps(_mm256_set1_ps(a[i * sa_i]), bk, s[i]);
    }
    for (int i = 0; i < M; i++) _mm256_storeu_ps(y + i * lda, s[i]);
}

/* Columns [c0, c0 + n) (n a multiple of 8) of the slice for 2 <= M <= 8 rows, in tiles. */
static void gemv_nn_tiles(const gemm_job *g, int k0, int k1, int c0, int n, float *acc, size_t lda) {
    const float *b = g->B + (size_t)k0 * g->sb_k + c0;
    for (int j = 0; j < n; j += 8) {
#define TILE(m) gemv_nn_tile8(g, m, k0, k1, b + j, acc + j, lda)
        GEMV_WITH_ROWS(g->M, TILE)
#undef TILE
    }
}
#endif

/* The line at p in each of 4 rows ldb floats apart, into L1: the rows GEMV_K_AHEAD further down
 * that the unrolled few-row NN loop reads next. */
static inline void prefetch_rows4(const float *p, size_t ldb) {
    for (int r = 0; r < 4; r++) prefetch_ahead(p + r * ldb);
}

/* acc (M rows of n, leading dimension lda) = the slice [k0, k1) of op(A) times the columns
 * [c0, c0 + n) of row-major B, each element one multiply-add chain from zero, k ascending. B's
 * rows are read GEMV_K at a time, each as one run of n floats, and the rows GEMV_K_AHEAD further
 * down are prefetched: runs a row apart start on new pages, where the hardware prefetchers
 * would have to learn the stream again. */
static void gemv_nn_slice(const gemm_job *g, int k0, int k1, int c0, int n, float *acc, size_t lda) {
    int M = g->M, K = g->K;
#ifdef __AVX512F__
    if (M >= GEMV_TILE_ROWS && n % 16 == 0) {
        gemv_nn_tiles(g, k0, k1, c0, n, acc, lda);
        return;
    }
#elif defined(AVX2_TILE)
    if (M >= GEMV_TILE_ROWS && n % 8 == 0) {
        gemv_nn_tiles(g, k0, k1, c0, n, acc, lda);
        return;
    }
#endif
    for (int i = 0; i < M; i++) memset(acc + (size_t)i * lda, 0, sizeof(float) * n);
    for (int k = k0; k < k1; k += GEMV_K) {
        int kn = k1 - k < GEMV_K ? k1 - k : GEMV_K;
        const float *b = g->B + (size_t)k * g->sb_k + c0;
        for (int i = 0; i < M; i++) {
            float a[GEMV_K];
            for (int kk = 0; kk < kn; kk++) a[kk] = g->A[(size_t)i * g->sa_i + (size_t)(k + kk) * g->sa_k];
            float *y = acc + (size_t)i * lda;
#ifdef __AVX512F__
            if (kn == 4 && GEMV_K == 4 && n % 16 == 0) { /* the common case, unrolled */
                size_t ldb = g->sb_k;
                const float *pf = i == 0 && k + GEMV_K_AHEAD + 4 <= K ? b + GEMV_K_AHEAD * ldb : NULL;
                __m512 a0 = _mm512_set1_ps(a[0]), a1 = _mm512_set1_ps(a[1]), a2 = _mm512_set1_ps(a[2]),
                       a3 = _mm512_set1_ps(a[3]);
                for (int j = 0; j < n; j += 16) {
                    if (pf) prefetch_rows4(pf + j, ldb);
                    __m512 v = _mm512_loadu_ps(y + j);
                    v = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b + j), v);
                    v = _mm512_fmadd_ps(a1, _mm512_loadu_ps(b + ldb + j), v);
                    v = _mm512_fmadd_ps(a2, _mm512_loadu_ps(b + 2 * ldb + j), v);
                    v = _mm512_fmadd_ps(a3, _mm512_loadu_ps(b + 3 * ldb + j), v);
                    _mm512_storeu_ps(y + j, v);
                }
                continue;
            }
            for (int j = 0; j < n; j += 16) {
                __mmask16 m = n - j >= 16 ? 0xFFFF : (__mmask16)((1u << (n - j)) - 1);
                if (i == 0 && k + GEMV_K_AHEAD + GEMV_K <= K)
                    for (int kk = 0; kk < GEMV_K; kk++)
                        _mm_prefetch((const char *)(b + (size_t)(GEMV_K_AHEAD + kk) * g->sb_k + j), _MM_HINT_T0);
                __m512 v = _mm512_maskz_loadu_ps(m, y + j);
                for (int kk = 0; kk < kn; kk++)
                    v = _mm512_fmadd_ps(_mm512_set1_ps(a[kk]), _mm512_maskz_loadu_ps(m, b + (size_t)kk * g->sb_k + j), v);
                _mm512_mask_storeu_ps(y + j, m, v);
            }
#else
#if defined(AVX2_TILE)
            /* the common case, unrolled: one pass over y per 4 rows of B, as the AVX-512 copy */
            if (kn == 4 && GEMV_K == 4 && n % 16 == 0) {
                size_t ldb = g->sb_k;
                const float *pf = i == 0 && k + GEMV_K_AHEAD + 4 <= K ? b + GEMV_K_AHEAD * ldb : NULL;
                __m256 a0 = _mm256_set1_ps(a[0]), a1 = _mm256_set1_ps(a[1]), a2 = _mm256_set1_ps(a[2]),
                       a3 = _mm256_set1_ps(a[3]);
                for (int j = 0; j < n; j += 16) {
                    if (pf) prefetch_rows4(pf + j, ldb);
                    __m256 v = _mm256_loadu_ps(y + j), w = _mm256_loadu_ps(y + j + 8);
                    v = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + j), v);
                    w = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + j + 8), w);
                    v = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b + ldb + j), v);
                    w = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b + ldb + j + 8), w);
                    v = _mm256_fmadd_ps(a2, _mm256_loadu_ps(b + 2 * ldb + j), v);
                    w = _mm256_fmadd_ps(a2, _mm256_loadu_ps(b + 2 * ldb + j + 8), w);
                    v = _mm256_fmadd_ps(a3, _mm256_loadu_ps(b + 3 * ldb + j), v);
                    w = _mm256_fmadd_ps(a3, _mm256_loadu_ps(b + 3 * ldb + j + 8), w);
                    _mm256_storeu_ps(y + j, v);
                    _mm256_storeu_ps(y + j + 8, w);
                }
                continue;
            }
#endif
            if (i == 0 && k + GEMV_K_AHEAD + GEMV_K <= K)
                for (int kk = 0; kk < GEMV_K; kk++)
                    for (int j = 0; j < n; j += 16) prefetch_ahead(b + (size_t)(GEMV_K_AHEAD + kk) * g->sb_k + j);
            for (int kk = 0; kk < kn; kk++) {
                const float *bk = b + (size_t)kk * g->sb_k;
                for (int j = 0; j < n; j++) y[j] = MADD(a[kk], bk[j], y[j]);
            }
#endif
        }
    }
}

/* Columns [j0, j1) of C, slice after slice, each slice's sums stored or added (gemv_store). */
static void gemv_nn(const gemm_job *g, int j0, int j1) {
    int M = g->M, K = g->K, kcs = g->kc;
    float acc[GEMV_ROWS - 1][GEMV_COLS];
    for (int c0 = j0; c0 < j1; c0 += GEMV_COLS) {
        int n = j1 - c0 < GEMV_COLS ? j1 - c0 : GEMV_COLS;
        for (int k0 = 0; k0 < K; k0 += kcs) {
            int k1 = K - k0 < kcs ? K : k0 + kcs;
            gemv_nn_slice(g, k0, k1, c0, n, acc[0], GEMV_COLS);
            const float *bias = g->bias && k0 == 0 ? g->bias + c0 : NULL;
            for (int i = 0; i < M; i++)
                gemv_store(g->C + (size_t)i * g->ldc + c0, acc[i], bias, n, g->accumulate || k0 > 0);
        }
    }
}

/* The team's form of gemv_nn: threads take whole slices of K (and, with more threads than
 * slices, blocks of columns), so each reads B as one contiguous block of rows, as fast as
 * memory streams (split by columns, every row of B is a short run on a page of its own). Each
 * chunk leaves its slice's sums in part (slices x M x N); the caller then stores the slices in
 * order, so every element is summed exactly as gemv_nn sums it. */
typedef struct {
    const gemm_job *g;
    float *part;     /* (slices, M, N) */
    int blocks, bw;  /* column blocks per slice, of bw columns */
} gemv_split;

static void gemv_split_chunk(void *arg, int lo, int hi) {
    const gemv_split *sp = arg;
    const gemm_job *g = sp->g;
    for (int item = lo; item < hi; item++) {
        int s = item / sp->blocks, c0 = item % sp->blocks * sp->bw;
        int k0 = s * g->kc, k1 = g->K - k0 < g->kc ? g->K : k0 + g->kc;
        int n = g->N - c0 < sp->bw ? g->N - c0 : sp->bw;
        gemv_nn_slice(g, k0, k1, c0, n, sp->part + (size_t)s * g->M * g->N + c0, (size_t)g->N);
    }
}

#ifdef __AVX512F__
/* s[i] (lane t) += the slice [k0, k1) of row i of op(A) times column j + t of op(B) (B stored
 * (N, K): row j + t), t < nj, for i < M (a constant where inlined), one fused multiply-add per k
 * ascending. While these 16 rows are read, the next 16 are prefetched: the hardware prefetchers
 * do not follow 16 short runs a row apart. */
static inline __attribute__((always_inline)) void gemv_nt_slice(__m512 *s, const gemm_job *g, int M, int j, int nj,
                                                                int k0, int k1) {
    const float *b = g->B + (size_t)j * g->sb_j;
    size_t ldb = g->sb_j, sa_i = g->sa_i, sa_k = g->sa_k;
    for (int k = k0; k < k1; k += 16) {
        int nk = k1 - k < 16 ? k1 - k : 16;
        __mmask16 mk = nk == 16 ? 0xFFFF : (__mmask16)((1u << nk) - 1);
        __m512 r[16];
#pragma GCC unroll 16
        for (int t = 0; t < 16; t++) _mm_prefetch((const char *)(b + (size_t)(16 + t) * ldb + k), _MM_HINT_T0);
        if (nj == 16) {
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++) r[t] = _mm512_maskz_loadu_ps(mk, b + (size_t)t * ldb + k);
        } else {
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++) r[t] = t < nj ? _mm512_maskz_loadu_ps(mk, b + (size_t)t * ldb + k) : _mm512_setzero_ps();
        }
        transpose16_regs(r); /* r[kk] lane t = b(k + kk, j + t) */
        const float *a = g->A + (size_t)k * sa_k;
        if (nk == 16) {
#pragma GCC unroll 16
            for (int kk = 0; kk < 16; kk++)
                for (int i = 0; i < M; i++) s[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i * sa_i + kk * sa_k]), r[kk], s[i]);
        } else { /* the slice's last k: through memory, so that r stays in registers above */
            _Alignas(64) float col[16][16];
#pragma GCC unroll 16
            for (int kk = 0; kk < 16; kk++) _mm512_store_ps(col[kk], r[kk]);
            for (int kk = 0; kk < nk; kk++)
                for (int i = 0; i < M; i++)
                    s[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i * sa_i + kk * sa_k]), _mm512_load_ps(col[kk]), s[i]);
        }
    }
}

static void gemv_nt(const gemm_job *g, int j0, int j1) {
    int M = g->M, K = g->K, kcs = g->kc;
    for (int j = j0; j < j1; j += 16) {
        int nj = j1 - j < 16 ? j1 - j : 16;
        __mmask16 mj = nj == 16 ? 0xFFFF : (__mmask16)((1u << nj) - 1);
        for (int k0 = 0; k0 < K; k0 += kcs) {
            int k1 = K - k0 < kcs ? K : k0 + kcs, load_c = g->accumulate || k0 > 0;
            __m512 s[GEMV_ROWS - 1];
            for (int i = 0; i < GEMV_ROWS - 1; i++) s[i] = _mm512_setzero_ps();
#define SLICE(m) gemv_nt_slice(s, g, m, j, nj, k0, k1)
            GEMV_WITH_ROWS(M, SLICE) /* M a constant inside: s stays in registers */
#undef SLICE
            for (int i = 0; i < M; i++) { /* store_tile's order: (sum + bias) + C */
                float *c = g->C + (size_t)i * g->ldc + j;
                __m512 x = s[i];
                if (g->bias && k0 == 0) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mj, g->bias + j));
                if (load_c) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mj, c));
                _mm512_mask_storeu_ps(c, mj, x);
            }
        }
    }
}
#elif defined(AVX2_TILE)
/* The AVX2 form of gemv_nt_slice: 8 rows of B (8 columns of C) read 8 k at a time (masked at the
 * slice's end) and transposed in registers; one fused multiply-add per k ascending per column. */
static inline __attribute__((always_inline)) void gemv_nt_slice8(__m256 *s, const gemm_job *g, int M, int j, int nj,
                                                                 int k0, int k1) {
    const float *b = g->B + (size_t)j * g->sb_j;
    size_t ldb = g->sb_j, sa_i = g->sa_i, sa_k = g->sa_k;
    for (int k = k0; k < k1; k += 8) {
        int nk = k1 - k < 8 ? k1 - k : 8;
        __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(nk), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 r[8];
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) _mm_prefetch((const char *)(b + (size_t)(8 + t) * ldb + k), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++)
            r[t] = t >= nj ? _mm256_setzero_ps() : nk == 8 ? _mm256_loadu_ps(b + (size_t)t * ldb + k)
                                                           : _mm256_maskload_ps(b + (size_t)t * ldb + k, mk);
        transpose8_regs(r); /* r[kk] lane t = b(k + kk, j + t) */
        const float *a = g->A + (size_t)k * sa_k;
        if (nk == 8) {
#pragma GCC unroll 8
            for (int kk = 0; kk < 8; kk++)
                for (int i = 0; i < M; i++) s[i] = _mm256_fmadd_ps(_mm256_set1_ps(a[i * sa_i + kk * sa_k]), r[kk], s[i]);
        } else {
            for (int kk = 0; kk < nk; kk++)
                for (int i = 0; i < M; i++) s[i] = _mm256_fmadd_ps(_mm256_set1_ps(a[i * sa_i + kk * sa_k]), r[kk], s[i]);
        }
    }
}

static void gemv_nt(const gemm_job *g, int j0, int j1) {
    int M = g->M, K = g->K, kcs = g->kc;
    for (int j = j0; j < j1; j += 8) {
        int nj = j1 - j < 8 ? j1 - j : 8;
        __m256i mj = _mm256_cmpgt_epi32(_mm256_set1_epi32(nj), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int k0 = 0; k0 < K; k0 += kcs) {
            int k1 = K - k0 < kcs ? K : k0 + kcs, load_c = g->accumulate || k0 > 0;
            __m256 s[GEMV_ROWS - 1];
            for (int i = 0; i < GEMV_ROWS - 1; i++) s[i] = _mm256_setzero_ps();
#define SLICE(m) gemv_nt_slice8(s, g, m, j, nj, k0, k1)
            GEMV_WITH_ROWS(M, SLICE) /* M a constant inside: s stays in registers */
#undef SLICE
            for (int i = 0; i < M; i++) { /* store_tile's order: (sum + bias) + C */
                float *c = g->C + (size_t)i * g->ldc + j;
                __m256 x = s[i];
                if (g->bias && k0 == 0) x = _mm256_add_ps(x, _mm256_maskload_ps(g->bias + j, mj));
                if (load_c) x = _mm256_add_ps(x, _mm256_maskload_ps(c, mj));
                _mm256_maskstore_ps(c, mj, x);
            }
        }
    }
}
#else
#define GEMV_NT_COLS 8 /* columns summed side by side: independent chains */

static void gemv_nt(const gemm_job *g, int j0, int j1) {
    int M = g->M, K = g->K, kcs = g->kc;
    for (int j = j0; j < j1; j += GEMV_NT_COLS) {
        int nj = j1 - j < GEMV_NT_COLS ? j1 - j : GEMV_NT_COLS;
        for (int k0 = 0; k0 < K; k0 += kcs) {
            int k1 = K - k0 < kcs ? K : k0 + kcs;
            float s[GEMV_ROWS - 1][GEMV_NT_COLS] = {{0}};
            for (int k = k0; k < k1; k++)
                for (int i = 0; i < M; i++) {
                    float a = g->A[(size_t)i * g->sa_i + (size_t)k * g->sa_k];
                    for (int t = 0; t < nj; t++) s[i][t] = MADD(a, g->B[(size_t)(j + t) * g->sb_j + k], s[i][t]);
                }
            const float *bias = g->bias && k0 == 0 ? g->bias + j : NULL;
            for (int i = 0; i < M; i++) gemv_store(g->C + (size_t)i * g->ldc + j, s[i], bias, nj, g->accumulate || k0 > 0);
        }
    }
}
#endif

/* Threads split the columns in multiples of 16 (whole vectors, runs starting aligned). */
static void gemv_run(const gemm_job *g, int nt, int tid) {
    int units = (g->N + 15) / 16, j0, j1;
    share(units, nt, tid, &j0, &j1);
    j0 *= 16, j1 = j1 * 16 < g->N ? j1 * 16 : g->N;
    if (j0 >= j1) return;
    if (g->sb_j == 1) gemv_nn(g, j0, j1);
    else gemv_nt(g, j0, j1);
}

/* Units [lo, hi) of 16 columns: one chunk of fm_team_for (gemv_team). */
static void gemv_chunk(void *arg, int lo, int hi) {
    const gemm_job *g = arg;
    int j0 = lo * 16, j1 = hi * 16 < g->N ? hi * 16 : g->N;
    if (g->sb_j == 1) gemv_nn(g, j0, j1);
    else gemv_nt(g, j0, j1);
}

/* The few-rows product shared by the team (src/core/team.h) in chunks of whole 16-column
 * units, about GEMV_CHUNKS per thread so a thread that runs late leaves its share to the others,
 * and at least GEMV_CHUNK_MIN units so row-major B is still read in runs of 512 bytes or more. */
#define GEMV_CHUNKS 4
#define GEMV_SPLIT_MIN 256 /* narrowest column block of gemv_split */
#define GEMV_CHUNK_MIN 8
static void gemv_team(const gemm_job *g, int threads) {
    int slices = (g->K + g->kc - 1) / g->kc;
    if (g->sb_j == 1 && slices > 1) {
        gemv_split sp = {g, grow(&ws_c, &ws_c_len, (size_t)slices * g->M * g->N), 1, g->N};
        if (sp.part) {
            if (slices < threads) { /* blocks of whole vectors, at least GEMV_SPLIT_MIN wide */
                int units = (g->N + 15) / 16, blocks = (threads + slices - 1) / slices;
                int per = (units + blocks - 1) / blocks;
                per = per * 16 < GEMV_SPLIT_MIN ? (GEMV_SPLIT_MIN + 15) / 16 : per;
                sp.bw = per * 16, sp.blocks = (g->N + sp.bw - 1) / sp.bw;
            }
            fm_team_for(slices * sp.blocks, 1, gemv_split_chunk, &sp);
            for (int s = 0; s < slices; s++)
                for (int i = 0; i < g->M; i++)
                    gemv_store(g->C + (size_t)i * g->ldc, sp.part + ((size_t)s * g->M + i) * g->N,
                               s == 0 ? g->bias : NULL, g->N, g->accumulate || s > 0);
            return;
        }
    }
    int units = (g->N + 15) / 16, grain = units / (GEMV_CHUNKS * threads);
    fm_team_for(units, grain > GEMV_CHUNK_MIN ? grain : GEMV_CHUNK_MIN, gemv_chunk, (void *)g);
}

/* A's panels [q0, q1) for depth [k0, k0+kc) into ap (panel q at (q - q0) * MR * kc). When A is
 * stored transposed (TN), each k's rows of the whole block are one contiguous run: read them
 * k by k, one pass over memory, instead of panel by panel. */
static void pack_a_block(float *ap, const gemm_job *g, int q0, int q1, int k0, int kc) {
    int M = g->M;
    if (g->sa_i != 1 || g->sa_k == 1) {
        for (int q = q0; q < q1; q++) {
            int i = q * MR, mr = M - i < MR ? M - i : MR;
            pack_a_panel(ap + (size_t)(q - q0) * MR * kc, g->A, g->sa_i, g->sa_k, i, mr, k0, kc);
        }
        return;
    }
    for (int k = 0; k < kc; k++) {
        const float *src = g->A + (size_t)(k0 + k) * g->sa_k;
        if (k + PACK_ROWS_AHEAD < kc) /* the run this k reads, a few rows down */
            for (int i = q0 * MR; i < q1 * MR && i < M; i += 16) prefetch_ahead(src + PACK_ROWS_AHEAD * g->sa_k + i);
        for (int q = q0; q < q1; q++) {
            int i = q * MR, mr = M - i < MR ? M - i : MR;
            float *d = ap + (size_t)(q - q0) * MR * kc + (size_t)k * MR;
            if (mr == MR) memcpy(d, src + i, sizeof(float) * MR);
            else {
                memcpy(d, src + i, sizeof(float) * mr);
                memset(d + mr, 0, sizeof(float) * (MR - mr));
            }
        }
    }
}

#ifdef __AVX512F__
/* 16 words from 32 consecutive floats x[0..n) (n <= 32, the rest read as zero): word j =
 * bf16(x[2j]) | bf16(x[2j+1]) << 16, the same rounding as bf16_pairs_row. */
static inline __m512i bf16_words32(const float *x, int n) {
    /* 16-bit lane t of the result = the high half of dword t of (v0, v1): 16-bit element 2t + 1 */
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29,
                                         27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    __m512i v0 = bf16_round_vec(_mm512_castps_si512(_mm512_maskz_loadu_ps(m0, x)));
    __m512i v1 = bf16_round_vec(_mm512_castps_si512(_mm512_maskz_loadu_ps(m1, x + 16)));
    return _mm512_permutex2var_epi16(v0, odd, v1);
}

/* An A panel straight to bfloat16 pairs when A's rows are contiguous in k (the forward and
 * input-gradient products): 32 k of each row become 16 words, then one 16 x 16 transpose of
 * words gives 16 pair rows of the panel. */
static void pack_a_panel_bf16_rows(uint32_t *dst, const float *A, size_t sa_i, int i0, int mr, int k0, int kc) {
    float block[16 * 16], tail[16 * MR];
    for (int r = mr; r < 16; r++) memset(block + 16 * r, 0, sizeof(float) * 16);
    for (int k = 0; k < kc; k += 32) {
        int n = kc - k < 32 ? kc - k : 32, pairs = (n + 1) / 2;
        for (int r = 0; r < mr; r++)
            _mm512_storeu_si512((void *)(block + 16 * r), bf16_words32(A + (size_t)(i0 + r) * sa_i + k0 + k, n));
        float *out = pairs == 16 ? (float *)dst + (size_t)(k / 2) * MR : tail;
        transpose16(out, MR, block, 16, mr, MR);
        if (pairs < 16) memcpy((float *)dst + (size_t)(k / 2) * MR, tail, sizeof(float) * MR * pairs);
    }
}
#endif

/* pack_a_block straight to bfloat16 pairs: rows contiguous in k (NN, NT) through the transpose
 * above; A stored transposed (TN, the weight gradients): the two k rows of a pair are contiguous
 * runs, so each panel's MR words come from two reads. */
static void pack_a_block_bf16(float *ap, const gemm_job *g, int q0, int q1, int k0, int kc) {
    int M = g->M;
#ifdef __AVX512F__
    if (g->sa_k == 1) {
        for (int q = q0; q < q1; q++) {
            int i = q * MR, mr = M - i < MR ? M - i : MR;
            pack_a_panel_bf16_rows((uint32_t *)(ap + (size_t)(q - q0) * MR * kc), g->A, g->sa_i, i, mr, k0, kc);
        }
        return;
    }
#endif
    if (g->sa_i != 1 || g->sa_k == 1) {
        pack_a_block(ap, g, q0, q1, k0, kc);
        for (int q = q0; q < q1; q++) panel_to_bf16_pairs(ap + (size_t)(q - q0) * MR * kc, kc, MR);
        return;
    }
    for (int p = 0; p < (kc + 1) / 2; p++) {
        const float *r0 = g->A + (size_t)(k0 + 2 * p) * g->sa_k, *r1 = 2 * p + 1 < kc ? r0 + g->sa_k : NULL;
        for (int q = q0; q < q1; q++) {
            int i = q * MR, mr = M - i < MR ? M - i : MR;
            uint32_t *d = (uint32_t *)(ap + (size_t)(q - q0) * MR * kc) + (size_t)p * MR;
            bf16_pairs_row(d, r0 + i, r1 ? r1 + i : NULL, mr, MR);
        }
    }
}

/* The part of a tile's depth slice a band leaves (see kernels.h): tile rows [i, i+mr), columns
 * [j, j+NR), depths [k0, k0+kc) of which [k0+ka, k0+kb) remain (ka even for bfloat16 pairs).
 * Returns 0 when the tile is unwanted altogether (C_LOWER, wholly above the band). */
static inline int band_steps(const gemm_job *g, int i, int mr, int j, int k0, int kc, int *ka, int *kb) {
    int d = g->band_d;
    switch (g->band) {
    case FM_BAND_C_LOWER: return j <= i + mr - 1 + d;
    case FM_BAND_A_LOWER: { /* rows up to i + mr - 1 read k <= i + mr - 1 + d */
        int last = i + mr - 1 + d - k0 + 1;
        *kb = last < 0 ? 0 : last < kc ? last : kc;
        if (g->bf16 && (*kb & 1) && *kb < kc) (*kb)++; /* whole pairs */
        return 1;
    }
    case FM_BAND_A_UPPER: { /* row i reads k >= i + d */
        int first = i + d - k0;
        *ka = first < 0 ? 0 : first < kc ? first : kc;
        if (g->bf16) *ka -= *ka & 1;
        return 1;
    }
    default: return 1;
    }
}

/* Row sums of A stored transposed over depths [k0, k0+kc), rows [i0, i1): k ascending, each
 * row's sum added to rowsum one k at a time (the order pack_b_slice's column sums use). */
static void sum_a_rows(float *rowsum, const gemm_job *g, int i0, int i1, int k0, int kc) {
    for (int k = 0; k < kc; k++) {
        const float *src = g->A + (size_t)(k0 + k) * g->sa_k;
        for (int i = i0; i < i1; i++) rowsum[i] += src[i];
    }
}

/* dst (cols x rows, leading dim ldd) = transpose of src (rows x cols, leading dim lds). */
static void copy_transposed(float *dst, size_t ldd, const float *src, size_t lds, int rows, int cols) {
    for (int i = 0; i < rows; i += 16)
        for (int j = 0; j < cols; j += 16) {
            int nr = rows - i < 16 ? rows - i : 16, nc = cols - j < 16 ? cols - j : 16;
#ifdef __AVX512F__
            if (nc == 16) { /* 16 columns of src become 16 rows of dst, nr values each */
                transpose16(dst + (size_t)j * ldd + i, ldd, src + (size_t)i * lds + j, lds, nr, nr);
                continue;
            }
#endif
            for (int jj = 0; jj < nc; jj++)
                for (int ii = 0; ii < nr; ii++) dst[(size_t)(j + jj) * ldd + i + ii] = src[(size_t)(i + ii) * lds + j + jj];
        }
}

/* The blocked product; thread tid of a team of nt runs this (nt = 1: alone, no barriers).
 * With enough rows the threads split the rows: B's slice is packed by all and shared, and each
 * thread packs its own MC-row blocks of A just before using them (they stay in its L2). With
 * few rows (decoding a short prompt, small batches) they split the columns instead, each
 * packing the few rows of A and its own columns of B. */
static void gemm_run(const gemm_job *g, int nt, int tid) {
    int M = g->M, N = g->N, K = g->K, a_panels = (M + MR - 1) / MR;
    int split_rows = nt == 1 || a_panels >= 4 * nt;
    int kcs = g->kc; /* panel stride: every slice but the last is kc deep */
    float *ap = g->ap + (size_t)tid * MC * KC; /* this thread's A block */
    int pa0 = 0, pa1 = a_panels;
    if (split_rows) share(a_panels, nt, tid, &pa0, &pa1);
    float *C = g->c_trans ? g->ct : g->C; /* c_trans: C's transpose is built in g->ct */
    int ldc = g->c_trans ? g->ldct : g->ldc;
    for (int j0 = 0; j0 < N; j0 += NC) {
        int nc = N - j0 < NC ? N - j0 : NC, b_panels = (nc + NR - 1) / NR, pb0 = 0, pb1 = b_panels, lo, hi;
        if (!split_rows) share(b_panels, nt, tid, &pb0, &pb1);
        /* this thread's part of C in this column block: rows [r0, r1) x columns [c0, c1) */
        int r0 = pa0 * MR < M ? pa0 * MR : M, r1 = pa1 * MR < M ? pa1 * MR : M;
        int c0 = j0 + pb0 * NR < N ? j0 + pb0 * NR : N, c1 = j0 + pb1 * NR < N ? j0 + pb1 * NR : N;
        if (g->c_trans && g->accumulate && r1 > r0 && c1 > c0) /* C's values in, to be added to */
            copy_transposed(C + (size_t)r0 * ldc + c0, ldc, g->C + (size_t)c0 * g->ldc + r0, g->ldc, c1 - c0, r1 - r0);
        size_t slice_len = (size_t)b_panels * NR * kcs; /* one packed slice of B */
        /* Slices are packed g->kslices at a time: one barrier per group, not per slice. */
        for (int g0 = 0; g0 < K; g0 += g->kslices * kcs) {
            int g1 = g0 + g->kslices * kcs < K ? g0 + g->kslices * kcs : K;
            if (split_rows) share(b_panels, nt, tid, &lo, &hi); /* pack B together */
            else lo = pb0, hi = pb1;                           /* pack my columns */
            for (int k0 = g0; k0 < g1; k0 += kcs) {
                int kc = K - k0 < kcs ? K - k0 : kcs;
                float *slice = g->bp + (size_t)((k0 - g0) / kcs) * slice_len;
                pack_b_slice(slice, g->B, g->sb_k, g->sb_j, k0, kc, kcs, j0, nc, lo, hi, g->colsum);
                if (g->bf16)
                    for (int p = lo; p < hi; p++) panel_to_bf16_pairs(slice + (size_t)p * NR * kcs, kc, NR);
            }
            if (split_rows && nt > 1) {
#pragma omp barrier
            }
            for (int pa = pa0; pa < pa1; pa += MC / MR) {
                int pa_end = pa + MC / MR < pa1 ? pa + MC / MR : pa1;
                for (int k0 = g0; k0 < g1; k0 += kcs) {
                    int kc = K - k0 < kcs ? K - k0 : kcs, load_c = g->accumulate || k0 > 0;
                    const float *slice = g->bp + (size_t)((k0 - g0) / kcs) * slice_len;
                    if (g->rowsum && j0 == 0 && (split_rows || tid == 0)) /* each row once */
                        sum_a_rows(g->rowsum, g, pa * MR, pa_end * MR < M ? pa_end * MR : M, k0, kc);
                    if (g->bf16) pack_a_block_bf16(ap, g, pa, pa_end, k0, kc);
                    else pack_a_block(ap, g, pa, pa_end, k0, kc);
                    for (int pb = pb0; pb < pb1; pb++) {
                        int j = j0 + pb * NR, nr = N - j < NR ? N - j : NR;
                        const float *bpp = slice + (size_t)pb * NR * kcs;
                        for (int q = pa; q < pa_end; q++) {
                            int i = q * MR, mr = M - i < MR ? M - i : MR, ka = 0, kb = kc;
                            if (g->band != FM_BAND_NONE && !band_steps(g, i, mr, j, k0, kc, &ka, &kb)) continue;
                            if (kb == ka && load_c) continue; /* nothing to add */
                            float *cij = C + (size_t)i * ldc + j;
                            const float *bias = g->bias && k0 == 0 ? g->bias + j : NULL;
                            const float *app = ap + (size_t)(q - pa) * MR * kc;
                            if (g->bf16) /* ka is even: pair rows */
                                micro_kernel_bf16(kb - ka, (const uint32_t *)app + (size_t)(ka / 2) * MR,
                                                  (const uint32_t *)bpp + (size_t)(ka / 2) * NR, cij, ldc, mr, nr,
                                                  load_c, bias);
                            else
                                micro_kernel(kb - ka, app + (size_t)ka * MR, bpp + (size_t)ka * NR, cij, ldc, mr, nr,
                                             load_c, bias);
                        }
                    }
                }
            }
            /* B's panels are rewritten next: sharing rows, by every thread; sharing columns, by
             * the next column block's shares, which need not be this block's (its width can
             * differ), so a thread that runs ahead would overwrite panels another still reads */
            if (nt > 1 && ((split_rows && g1 < K) || j0 + NC < N)) {
#pragma omp barrier
            }
        }
        if (g->c_trans && r1 > r0 && c1 > c0) /* the finished part back, transposed */
            copy_transposed(g->C + (size_t)c0 * g->ldc + r0, g->ldc, C + (size_t)r0 * ldc + c0, ldc, r1 - r0, c1 - c0);
    }
}

/* The packed path's arithmetic without its workspaces, for when they cannot be allocated: one
 * register tile at a time, its A panel and B panel packed on the stack (MR x KC and KC x NR
 * floats), then the same micro-kernels with the same slices, band steps, bias and adding to C
 * as gemm_run. Every element is the packed path's sum in the packed path's order, so the
 * result is bitwise what the product gives with memory. Threads split B's panels. */
static void gemm_tiles(const gemm_job *g, int nt, int tid) {
    _Alignas(64) float ap[MR * KC], bp[KC * NR];
    int M = g->M, N = g->N, K = g->K, kcs = g->kc, p0, p1;
    share((N + NR - 1) / NR, nt, tid, &p0, &p1);
    for (int p = p0; p < p1; p++) {
        int j = p * NR, nr = N - j < NR ? N - j : NR;
        for (int k0 = 0; k0 < K; k0 += kcs) {
            int kc = K - k0 < kcs ? K - k0 : kcs, load_c = g->accumulate || k0 > 0;
            pack_b_slice(bp, g->B, g->sb_k, g->sb_j, k0, kc, kc, j, nr, 0, 1, NULL);
            if (g->bf16) panel_to_bf16_pairs(bp, kc, NR);
            for (int i = 0; i < M; i += MR) {
                int mr = M - i < MR ? M - i : MR, ka = 0, kb = kc;
                if (g->band != FM_BAND_NONE && !band_steps(g, i, mr, j, k0, kc, &ka, &kb)) continue;
                if (kb == ka && load_c) continue; /* nothing to add */
                float *cij = g->C + (size_t)i * g->ldc + j;
                const float *bias = g->bias && k0 == 0 ? g->bias + j : NULL;
                pack_a_panel(ap, g->A, g->sa_i, g->sa_k, i, mr, k0, kc);
                if (g->bf16) {
                    panel_to_bf16_pairs(ap, kc, MR);
                    micro_kernel_bf16(kb - ka, (const uint32_t *)ap + (size_t)(ka / 2) * MR,
                                      (const uint32_t *)bp + (size_t)(ka / 2) * NR, cij, g->ldc, mr, nr, load_c, bias);
                } else {
                    micro_kernel(kb - ka, ap + (size_t)ka * MR, bp + (size_t)ka * NR, cij, g->ldc, mr, nr, load_c, bias);
                }
            }
        }
    }
}

/* ------------------------------------------------------------ entry point */

static void gemm_start(gemm_job g);

void fm_k_gemm(int transA, int transB, int M, int N, int K,
               const float *A, int lda, const float *B, int ldb,
               float *C, int ldc, int accumulate) {
    fm_k_gemm_fused(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate, NULL, NULL);
}

/* Column sums of op(B) outside the packing: k ascending for each column, pack_b_slice's order. */
static void colsum_unpacked(gemm_job *g) {
    if (!g->colsum) return;
    for (int k = 0; k < g->K; k++)
        for (int j = 0; j < g->N; j++) g->colsum[j] += g->B[(size_t)k * g->sb_k + (size_t)j * g->sb_j];
    g->colsum = NULL;
}

/* The job of a product as the public entry points describe it (no extras, no band), with the
 * precision in effect on the calling thread. */
static gemm_job describe(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B,
                         int ldb, float *C, int ldc, int accumulate) {
    return (gemm_job){.M = M, .N = N, .K = K, .accumulate = accumulate, .A = A, .B = B, .C = C, .ldc = ldc,
                      .sa_i = transA ? 1 : (size_t)lda, .sa_k = transA ? (size_t)lda : 1,
                      .sb_k = transB ? 1 : (size_t)ldb, .sb_j = transB ? (size_t)ldb : 1,
                      .bf16 = fm_k_gemm_bf16() && !fm_k_gemm_fp32_forced()};
}

void fm_k_gemm_fused(int transA, int transB, int M, int N, int K,
                     const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc, int accumulate, const float *bias, float *colsum) {
    gemm_job g = describe(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    g.bias = bias, g.colsum = colsum;
    gemm_start(g);
}

void fm_k_gemm_band(int transA, int transB, int M, int N, int K,
                    const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, int accumulate, fm_k_band band, int d) {
    gemm_job g = describe(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    g.band = band, g.band_d = d;
    gemm_start(g);
}

/* A weight gradient with fewer rows than columns, C (M, N) = A^T B with A (K, M) and B (K, N)
 * both stored k-major and M < N, is computed as C^T = B^T A into a scratch matrix (C's values
 * copied in first when adding to them), then copied back transposed. The packing is the same
 * amount either way, (M + N) x K floats, but the wide operand then becomes A, packed by each
 * thread in L2-sized blocks, instead of B, packed into one shared buffer of K x N floats that
 * outgrows L2 (docs/performance.md, "Weight gradients built transposed"). Each element is the
 * same sum in the same order, so the result is bitwise the direct one; B's column sums become
 * A's row sums. */
static gemm_job transposed_if_wider(gemm_job g) {
    int a_transposed = g.sa_i == 1 && g.sa_k != 1, b_row_major = g.sb_j == 1 && g.sb_k != 1;
    if (!a_transposed || !b_row_major || g.M >= g.N || g.bias || g.band != FM_BAND_NONE) return g;
    gemm_job t = g;
    t.M = g.N, t.N = g.M;
    t.A = g.B, t.sa_k = g.sb_k; /* a'(j, k) = B[k * ldb + j] */
    t.B = g.A, t.sb_k = g.sa_k; /* b'(k, i) = A[k * lda + i] */
    t.rowsum = g.colsum, t.colsum = NULL;
    t.c_trans = 1;
    return t;
}

/* Picks the path for a described product and runs it, alone or shared by the team: float32
 * with few rows unpacked (gemv_run); else packed (gemm_run), or tile by tile from the stack when
 * the packing buffers cannot be allocated (gemm_tiles). All three sum each element in the same
 * order. The band only skips work, so the unpacked path may ignore it. */
static void gemm_start(gemm_job g) {
    int M = g.M, N = g.N, K = g.K;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = [C +] bias, or left as it is */
        for (int i = 0; i < M; i++) {
            float *c = g.C + (size_t)i * g.ldc;
            if (!g.accumulate) memset(c, 0, sizeof(float) * N);
            if (g.bias)
                for (int j = 0; j < N; j++) c[j] += g.bias[j];
        }
        return;
    }
    /* Inside a parallel region (e.g. attention's per-head tasks) the calling thread works alone. */
    int alone = omp_in_parallel() || omp_get_max_threads() == 1, team = alone ? 1 : omp_get_max_threads();
    int slices = (K + KC - 1) / KC;
    g.kc = (K + slices - 1) / slices;
    void (*run)(const gemm_job *, int, int) = gemv_run;
    if (g.bf16 || M >= GEMV_ROWS) {
        gemm_job asked = g;
        g = transposed_if_wider(g);
        if (g.c_trans) { /* rows of the transpose on cache lines, but not 4 KiB apart */
            g.ldct = (g.N + 15) / 16 * 16;
            if (g.ldct % 1024 == 0) g.ldct += 16;
            g.ct = grow(&ws_c, &ws_c_len, (size_t)g.M * g.ldct);
        }
        int nc = g.N < NC ? g.N : NC;
        size_t slice_len = (size_t)((nc + NR - 1) / NR) * NR * g.kc;
        g.kslices = slice_len * slices <= B_GROUP ? slices : (int)(B_GROUP / slice_len > 1 ? B_GROUP / slice_len : 1);
        g.ap = grow(&ws_a, &ws_a_len, (size_t)team * MC * KC);
        g.bp = grow(&ws_b, &ws_b_len, slice_len * g.kslices);
        if (g.ap && g.bp && (!g.c_trans || g.ct)) run = gemm_run;
        else g = asked, run = gemm_tiles; /* no memory for the panels */
    }
    if (run != gemm_run || g.sb_j != 1) colsum_unpacked(&g); /* column sums ride on row-major packing only */
    if (alone || (M < GEMV_ROWS && (double)M * N * K < GEMV_SERIAL)) { /* too small to share */
        run(&g, 1, 0);
        return;
    }
    if (run == gemv_run) {
        gemv_team(&g, team);
        return;
    }
#pragma omp parallel
    run(&g, omp_get_num_threads(), omp_get_thread_num());
}
