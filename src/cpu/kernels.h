/*
 * kernels.h — the transformer's layer kernels, each in two forms.
 *
 * fm_k_*   : the fast form (float, OpenMP, AVX-512 with a plain-C fallback), used by the model;
 *            the GEMM is in gemm.c, the rest in kernels.c.
 * fm_ref_* : the plain reference form (double, single-threaded, the most direct loops), the
 *            oracle of the tests: finite differences check the reference backward, and the
 *            fast kernels are compared with the reference ones.
 * Every fast kernel computes each output element in one thread in a fixed order, so results
 * do not depend on the thread count at all (stronger than the "within float rounding" needed).
 *
 * Backward conventions: "dX +=" kernels accumulate into X's gradient; "dX =" overwrite it.
 * Shapes: N rows (= B*T), C width, OC/IC out/in features, H heads, hs = C/H head size.
 * Not for: objectives (src/train/loss.c) or the optimizer's bookkeeping (src/train/optim.c),
 * which call the row and update kernels at the end of this file.
 */
#ifndef FM_KERNELS_H
#define FM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ fast kernels (float) */

/* C (M, N) = [C +] op(A) op(B), op(A) (M, K), op(B) (K, N); row-major with leading dims.
 * transA: A is stored (K, M); transB: B is stored (N, K). accumulate: add into C.
 * Products of at most FM_K_FEW_ROWS rows (decoding) are not packed and run on the decoding team
 * (src/core/team.h); larger ones run in OpenMP regions. */
#define FM_K_FEW_ROWS 8
void fm_k_gemm(int transA, int transB, int M, int N, int K,
               const float *A, int lda, const float *B, int ldb,
               float *C, int ldc, int accumulate);
/* fm_k_gemm with two fused extras, either may be NULL: bias (N) added to every row of C, and
 * colsum (N) += the column sums of op(B) summed over k in order (a bias gradient computed while
 * its weight gradient's B = dout is packed). */
void fm_k_gemm_fused(int transA, int transB, int M, int N, int K,
                     const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc, int accumulate, const float *bias, float *colsum);
/* Causal structure a product may exploit (attention's blocks), band offset d:
 *   FM_BAND_C_LOWER: only C[i][j] with j <= i + d are wanted; the rest of C is left unspecified.
 *   FM_BAND_A_LOWER: op(A)[i][k] == 0 for k > i + d (the caller guarantees the zeros).
 *   FM_BAND_A_UPPER: op(A)[i][k] == 0 for k < i + d.
 * The product skips the register tiles, and the depth steps of a tile, that the band makes
 * zero or unwanted; every wanted element comes out as fm_k_gemm would give it, up to the
 * order of adding exact zeros. */
typedef enum { FM_BAND_NONE, FM_BAND_C_LOWER, FM_BAND_A_LOWER, FM_BAND_A_UPPER } fm_k_band;
void fm_k_gemm_band(int transA, int transB, int M, int N, int K,
                    const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, int accumulate, fm_k_band band, int d);
/* Every product above sums each element of C in one fixed order that depends on K alone (see
 * gemm.c): results do not depend on the thread count, and row i of C is bitwise the same for a
 * product of M rows as for the product of row i alone (NN, NT, TN, TT; with or without bias;
 * adding to C or not; in float32 and in bfloat16), so batched decoding matches decoding alone. */
/* Process-wide GEMM precision: 0 = float32 products (the default), 1 = inputs rounded to
 * bfloat16 (nearest even) and products accumulated in float32, for every product. */
void fm_k_gemm_set_bf16(int on);
int fm_k_gemm_bf16(void);
/* Per thread: on = 1 makes the products this thread starts float32 whatever fm_k_gemm_set_bf16
 * says (inference sessions decode in float32); 0 (each thread's initial value) follows it. A
 * product reads it once, on the calling thread, so its OpenMP workers follow the caller; the
 * attention kernels pass the caller's value to the threads that run their per-head products. */
void fm_k_gemm_force_fp32(int on);
int fm_k_gemm_fp32_forced(void);
/* x rounded to the nearest bfloat16 (ties to even), as a float: the tests' model of bf16 GEMMs. */
float fm_k_bf16_round(float x);

/* out (B, T, C) = wte[tokens] + wpe[t]; tokens (B, T), wte (V, C), wpe (maxT, C). */
void fm_k_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                          int B, int T, int C);
/* dwte (V, C) +=, dwpe (maxT, C) += from dout (B, T, C); either may be NULL (a frozen table). */
void fm_k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                           int B, int T, int C);

/* out (N, C) = (inp - mean) * rstd * w + b; mean, rstd (N) saved for backward. */
void fm_k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int N, int C, float eps);
/* dinp (N, C) +=, dw (C) +=, db (C) += from dout (N, C); dw or db NULL: not computed (frozen). */
void fm_k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *mean,
                             const float *rstd, int N, int C);

/* out (N, OC) = inp (N, IC) @ w (IC, OC) + bias (OC); bias may be NULL. */
void fm_k_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                         int N, int IC, int OC);
/* dinp (N, IC) = dout @ w^T (skipped if dinp is NULL); dw (IC, OC) += inp^T @ dout;
 * dbias (OC) += column sums of dout (skipped if NULL). */
void fm_k_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, int N, int IC, int OC);

/* Causal multi-head attention. qkv (B, T, 3C) holds q, k, v in that order, each split into H
 * heads of hs = C/H. out (B, T, C); lse (B, H, T) the log-sum-exp of each query's scaled
 * scores, all backward needs besides qkv: no (T, T) matrix is stored (flash-style). */
void fm_k_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int H);
/* dqkv (B, T, 3C) = gradient from dout (B, T, C), recomputing the probabilities from lse. */
void fm_k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                             int B, int T, int C, int H);

/* Decoding, one head of one row: out (hs) = sum over u < len of softmax_u(q . k_u * scale) v_u,
 * k_u = keys + u * ld, v_u = values + u * ld (the cache's rows, ld floats apart); s: (len) scratch. */
void fm_k_attend_cached(float *out, float *s, const float *q, const float *keys, const float *values, int len,
                        int ld, int hs, float scale);

/* GELU, tanh approximation: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). (N) */
void fm_k_gelu_forward(float *out, const float *inp, size_t N);
/* dinp (N) = dout * gelu'(inp). */
void fm_k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t N);

/* out (N) = a + b. */
void fm_k_residual_forward(float *out, const float *a, const float *b, size_t N);

/* Softmax cross-entropy of one row of logits z (V): returns logsumexp(z) - z[target]; when dz
 * (V) is not NULL it receives weight * (softmax(z) - onehot(target)). dz may alias z. */
float fm_k_xent_row(float *dz, const float *z, int V, int target, float weight);

/* Sum of squares of x (n) in double, in an order fixed by n alone (for the gradient norm). */
double fm_k_sumsq(const float *x, size_t n);
/* One AdamW update of n parameters p with gradients g * clip and moments m, v (PyTorch's rule):
 * p *= shrink; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= step_size m / (sqrt(v)/bc2_sqrt + eps). */
void fm_k_adamw(float *p, const float *g, float *m, float *v, size_t n, float clip, float shrink,
                float beta1, float beta2, float step_size, float bc2_sqrt, float eps);

/* Int8 weights, Q8_0: each row of a (rows, cols) matrix in blocks of FM_Q8_BLOCK weights
 * q (int8) with one scale d; w = d * q. out (N, rows) = inp (N, cols) @ W^T + bias (rows, or
 * NULL), with the inputs quantized too: each block of 32 inputs of a row to int8 values
 * round(x * 127 / max|x|) with scale max|x| / 127, so each block's dot product is an exact
 * integer (int8 dot products). q (rows, blocks * 32), d (rows, blocks), blocks = ceil(cols / 32);
 * xpad: scratch of N * blocks * 32 floats. Row n of out depends only on row n of inp. */
#define FM_Q8_BLOCK 32
void fm_k_q8_matmul(float *out, const float *inp, const int8_t *q, const float *d, const float *bias,
                    int N, int rows, int cols, float *xpad);

/* ------------------------------------------------------------ reference kernels (double) */

void fm_ref_encoder_forward(double *out, const int *tokens, const double *wte,
                            const double *wpe, int B, int T, int C);
void fm_ref_encoder_backward(double *dwte, double *dwpe, const double *dout, const int *tokens,
                             int B, int T, int C);
void fm_ref_layernorm_forward(double *out, double *mean, double *rstd, const double *inp,
                              const double *w, const double *b, int N, int C, double eps);
void fm_ref_layernorm_backward(double *dinp, double *dw, double *db, const double *dout,
                               const double *inp, const double *w, const double *mean,
                               const double *rstd, int N, int C);
void fm_ref_linear_forward(double *out, const double *inp, const double *w, const double *bias,
                           int N, int IC, int OC);
void fm_ref_linear_backward(double *dinp, double *dw, double *dbias, const double *dout,
                            const double *inp, const double *w, int N, int IC, int OC);
void fm_ref_attention_forward(double *out, double *att, const double *qkv, int B, int T, int C,
                              int H);
void fm_ref_attention_backward(double *dqkv, const double *dout, const double *qkv,
                               const double *att, int B, int T, int C, int H);
void fm_ref_gelu_forward(double *out, const double *inp, size_t N);
void fm_ref_gelu_backward(double *dinp, const double *inp, const double *dout, size_t N);
/* Masked mean cross-entropy over logits (N, V); dlogits (N, V) may be NULL. Returns the loss. */
double fm_ref_cross_entropy(const double *logits, const int *targets, const double *mask,
                            int N, int V, double *dlogits);

#endif /* FM_KERNELS_H */
