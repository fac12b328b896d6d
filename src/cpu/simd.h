/*
 * simd.h — vector maths for the CPU kernels: exp, and the GELU built on it.
 *
 * What it is for: the elementwise parts of the kernels (softmax, GELU) at vector speed. With
 * AVX-512 (16 floats) or AVX2 + FMA (8 floats, tails through maskload / maskstore) every
 * element, tail included (masked), goes through the same vector code, so a value never depends
 * on where a thread's share of a loop starts; in the generic copy the scalar forms below are
 * used for every element. Either way results do not depend on the thread count.
 * Accuracy: exp within ~2 ulp of expf over [-87, 88]; below -103.9 it returns 0 (so exp(-inf)
 * is exactly 0, as a causal mask needs).
 * Not for: anything outside src/cpu/ (this is the one place with ISA #ifdefs, with gemm.c).
 */
#ifndef FM_SIMD_H
#define FM_SIMD_H

#include <math.h>

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define FM_AVX2 1 /* the AVX2 + FMA copy of the kernels (src/cpu/isa.h): 8-float vectors */
#endif
#if defined(__AVX512F__) || defined(FM_AVX2)
#include <immintrin.h>
#endif

#define FM_LOG2E 1.44269504088896341f
#define FM_LN2_HI 0.693145751953125f        /* ln 2 split in two: n * LN2_HI is exact */
#define FM_LN2_LO 1.428606765330187045e-06f
#define FM_EXP_MIN -103.9f                  /* exp below this is under half the smallest denormal */
#define FM_EXP_MAX 88.7f                    /* exp above this overflows to inf */
#define FM_GELU_SCALE 0.7978845608f         /* sqrt(2 / pi) */
#define FM_GELU_CUBE 0.044715f

/* exp(r) for |r| <= ln2 / 2: Taylor series to degree 6 (truncation < 1.2e-7 relative). */
#define FM_EXP_POLY(r, fma, c)                                                            \
    fma(fma(fma(fma(fma(fma(c(1.0f / 720.0f), r, c(1.0f / 120.0f)), r, c(1.0f / 24.0f)), r, \
                    c(1.0f / 6.0f)), r, c(0.5f)), r, c(1.0f)), r, c(1.0f))

static inline float fm_fma_s(float a, float b, float c) { return fmaf(a, b, c); }
static inline float fm_id_s(float x) { return x; }

/* exp(x), scalar form of the vector code below. */
static inline float fm_exp_s(float x) {
    x = x < FM_EXP_MIN ? FM_EXP_MIN : x > FM_EXP_MAX ? FM_EXP_MAX : x;
    float n = rintf(x * FM_LOG2E);
    float r = fmaf(-n, FM_LN2_HI, x);
    r = fmaf(-n, FM_LN2_LO, r);
    float p = FM_EXP_POLY(r, fm_fma_s, fm_id_s);
    return ldexpf(p, (int)n);
}

/* GELU (tanh form) written as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the same
 * function as 0.5 x (1 + tanh u), without tanh's cancellation near 0. */
static inline float fm_gelu_s(float x) {
    float u = FM_GELU_SCALE * fmaf(FM_GELU_CUBE * x, x * x, x);
    return x / (1.0f + fm_exp_s(-2.0f * u));
}

/* d gelu / dx = s + x s (1 - s) 2 u', s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2). */
static inline float fm_gelu_grad_s(float x) {
    float x2 = x * x;
    float u = FM_GELU_SCALE * fmaf(FM_GELU_CUBE * x, x2, x);
    float s = 1.0f / (1.0f + fm_exp_s(-2.0f * u));
    float du = 2.0f * FM_GELU_SCALE * fmaf(3.0f * FM_GELU_CUBE, x2, 1.0f);
    return fmaf(x * s * (1.0f - s), du, s);
}

#ifdef __AVX512F__
#define FM_V16 16 /* floats per vector */

static inline __m512 fm_exp_v(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(FM_EXP_MIN)), _mm512_set1_ps(FM_EXP_MAX));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(FM_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FM_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FM_LN2_LO), r);
    __m512 p = FM_EXP_POLY(r, _mm512_fmadd_ps, _mm512_set1_ps);
    return _mm512_scalef_ps(p, n);
}

static inline __m512 fm_gelu_v(__m512 x) {
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(FM_GELU_SCALE),
                             _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(FM_GELU_CUBE), x), _mm512_mul_ps(x, x), x));
    __m512 e = fm_exp_v(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline __m512 fm_gelu_grad_v(__m512 x) {
    __m512 x2 = _mm512_mul_ps(x, x), one = _mm512_set1_ps(1.0f);
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(FM_GELU_SCALE),
                             _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(FM_GELU_CUBE), x), x2, x));
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, fm_exp_v(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u))));
    __m512 du = _mm512_mul_ps(_mm512_set1_ps(2.0f * FM_GELU_SCALE),
                              _mm512_fmadd_ps(_mm512_set1_ps(3.0f * FM_GELU_CUBE), x2, one));
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(x, s), _mm512_sub_ps(one, s)), du, s);
}

/* Mask of the first n (< 16) lanes, for loop tails. */
static inline __mmask16 fm_tail_mask(int n) { return (__mmask16)((1u << n) - 1); }
#endif

#ifdef FM_AVX2
#define FM_V8 8 /* floats per vector */

/* Lanes [0, n) of a vector as a mask for _mm256_maskload_ps / _mm256_maskstore_ps (all for n >= 8,
 * none for n <= 0): AVX2's stand-in for AVX-512's tail masks, so tails take the vector code too. */
static inline __m256i fm_lanes8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256 fm_load8(const float *p, int n) {
    return n >= FM_V8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, fm_lanes8(n));
}
static inline void fm_store8(float *p, int n, __m256 x) {
    if (n >= FM_V8) _mm256_storeu_ps(p, x);
    else _mm256_maskstore_ps(p, fm_lanes8(n), x);
}

/* Sum and maximum of the 8 lanes, in a fixed order (halves, then pairs, then the last two). */
static inline float fm_hsum8(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}
static inline float fm_hmax8(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
}

/* exp on 8 floats, the arithmetic of fm_exp_s; p * 2^n as two exact power-of-two factors
 * 2^(n/2) 2^(n - n/2) (n in [-150, 128]), so one rounding, as ldexpf and scalef give. */
static inline __m256 fm_exp_v8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(FM_EXP_MIN)), _mm256_set1_ps(FM_EXP_MAX));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(FM_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FM_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FM_LN2_LO), r);
    __m256 p = FM_EXP_POLY(r, _mm256_fmadd_ps, _mm256_set1_ps);
    __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1), l = _mm256_sub_epi32(ni, h);
    __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(l, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

static inline __m256 fm_gelu_v8(__m256 x) {
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(FM_GELU_SCALE),
                             _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(FM_GELU_CUBE), x), _mm256_mul_ps(x, x), x));
    __m256 e = fm_exp_v8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 fm_gelu_grad_v8(__m256 x) {
    __m256 x2 = _mm256_mul_ps(x, x), one = _mm256_set1_ps(1.0f);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(FM_GELU_SCALE),
                             _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(FM_GELU_CUBE), x), x2, x));
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, fm_exp_v8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u))));
    __m256 du = _mm256_mul_ps(_mm256_set1_ps(2.0f * FM_GELU_SCALE),
                              _mm256_fmadd_ps(_mm256_set1_ps(3.0f * FM_GELU_CUBE), x2, one));
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_sub_ps(one, s)), du, s);
}
#endif

#endif /* FM_SIMD_H */
