/*
 * test_kernels.c — every layer kernel: finite-difference gradient checks of the reference
 * (double) kernels, then the fast (float) kernels against the reference ones.
 *
 * Gradient checks: L = sum(dy * f(x)) for a random dy; each input element is moved by +-h,
 * h = 1e-5, and the central difference is compared with the reference backward. In double
 * the difference's truncation error is ~h^2 |f'''| ~ 1e-10 and its rounding ~1e-16 / h ~
 * 1e-11, so a tolerance of 1e-6 of the gradient's largest magnitude leaves a wide margin while
 * any wrong or missing term (an O(1) error) fails by orders of magnitude.
 * Fast vs reference: float sums of a few hundred terms agree with double to ~1e-6 relative;
 * the tolerance is 1e-5 of the largest magnitude of each output.
 * Shapes are deliberately odd (head size 12 and 24, widths not multiples of 16, M not a
 * multiple of the GEMM's 4-row tiles, N past its 512-column tiles).
 */
#include "test_util.h"

#include <float.h>
#include <math.h>

#include <pthread.h>

#include "core/alloc.h"
#include "cpu/kernels.h"

/* ------------------------------------------------------------ helpers */

static fm_rng rng;

static double *rand_d(size_t n, double scale) {
    double *x = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = scale * fm_rng_normal(&rng);
    return x;
}

static double *zeros_d(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static float *to_f(const double *x, size_t n) {
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Relative error of got vs want, against want's largest magnitude. */
static void assert_close_d(const char *what, const double *got, const double *want, size_t n, double tol) {
    double max_ref = 0, max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
        double e = fabs(got[i] - want[i]);
        if (!(e <= max_err)) max_err = e, worst = i;
    }
    double rel = max_ref > 0 ? max_err / max_ref : max_err;
    if (!(rel <= tol))
        fail_msg("%s: relative error %.3g (tolerance %.0e), worst at %zu: %.9g vs %.9g", what, rel, tol,
                 worst, got[worst], want[worst]);
}

static void assert_close_f(const char *what, const float *got, const double *want, size_t n, double tol) {
    double *g = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) g[i] = got[i];
    assert_close_d(what, g, want, n, tol);
    free(g);
}

/* A kernel under test as a scalar function of its inputs: L = sum(dy * f(x)). */
typedef double (*scalar_fn)(void *ctx);

#define FD_STEP 1e-5
#define FD_TOL 1e-6

/* Central differences of fn with respect to every element of x (n), against grad. */
static void check_fd(const char *what, scalar_fn fn, void *ctx, double *x, size_t n, const double *grad) {
    double *numeric = zeros_d(n);
    for (size_t i = 0; i < n; i++) {
        double saved = x[i];
        x[i] = saved + FD_STEP;
        double up = fn(ctx);
        x[i] = saved - FD_STEP;
        double down = fn(ctx);
        x[i] = saved;
        numeric[i] = (up - down) / (2 * FD_STEP);
    }
    assert_close_d(what, grad, numeric, n, FD_TOL);
    free(numeric);
}

/* ------------------------------------------------------------ gradient checks (reference) */

typedef struct {
    int B, T, C, V, H, N, IC, OC;
    double *x, *w, *b, *wte, *wpe, *dy, *y, *mean, *rstd, *att;
    int *tokens, *targets;
    double *mask;
} kctx;

static double encoder_L(void *p) {
    kctx *k = p;
    fm_ref_encoder_forward(k->y, k->tokens, k->wte, k->wpe, k->B, k->T, k->C);
    return dot_d(k->dy, k->y, (size_t)k->B * k->T * k->C);
}

static void test_fd_encoder(void **state) {
    (void)state;
    kctx k = {.B = 2, .T = 5, .C = 7, .V = 6};
    size_t n = (size_t)k.B * k.T * k.C;
    int tokens[10] = {0, 3, 3, 5, 1, 2, 3, 0, 0, 4}; /* repeated tokens accumulate */
    k.tokens = tokens;
    k.wte = rand_d((size_t)k.V * k.C, 1);
    k.wpe = rand_d((size_t)8 * k.C, 1);
    k.dy = rand_d(n, 1);
    k.y = zeros_d(n);
    double *dwte = zeros_d((size_t)k.V * k.C), *dwpe = zeros_d((size_t)8 * k.C);
    fm_ref_encoder_backward(dwte, dwpe, k.dy, k.tokens, k.B, k.T, k.C);
    check_fd("encoder dwte", encoder_L, &k, k.wte, (size_t)k.V * k.C, dwte);
    check_fd("encoder dwpe", encoder_L, &k, k.wpe, (size_t)8 * k.C, dwpe);
    free(k.wte), free(k.wpe), free(k.dy), free(k.y), free(dwte), free(dwpe);
}

static double layernorm_L(void *p) {
    kctx *k = p;
    fm_ref_layernorm_forward(k->y, k->mean, k->rstd, k->x, k->w, k->b, k->N, k->C, 1e-5);
    return dot_d(k->dy, k->y, (size_t)k->N * k->C);
}

static void test_fd_layernorm(void **state) {
    (void)state;
    kctx k = {.N = 6, .C = 11};
    size_t n = (size_t)k.N * k.C;
    k.x = rand_d(n, 2);
    k.w = rand_d(k.C, 1);
    k.b = rand_d(k.C, 1);
    k.dy = rand_d(n, 1);
    k.y = zeros_d(n);
    k.mean = zeros_d(k.N);
    k.rstd = zeros_d(k.N);
    double *dx = zeros_d(n), *dw = zeros_d(k.C), *db = zeros_d(k.C);
    layernorm_L(&k);
    fm_ref_layernorm_backward(dx, dw, db, k.dy, k.x, k.w, k.mean, k.rstd, k.N, k.C);
    check_fd("layernorm dx", layernorm_L, &k, k.x, n, dx);
    check_fd("layernorm dw", layernorm_L, &k, k.w, k.C, dw);
    check_fd("layernorm db", layernorm_L, &k, k.b, k.C, db);
    free(k.x), free(k.w), free(k.b), free(k.dy), free(k.y), free(k.mean), free(k.rstd);
    free(dx), free(dw), free(db);
}

static double linear_L(void *p) {
    kctx *k = p;
    fm_ref_linear_forward(k->y, k->x, k->w, k->b, k->N, k->IC, k->OC);
    return dot_d(k->dy, k->y, (size_t)k->N * k->OC);
}

static void test_fd_linear(void **state) {
    (void)state;
    kctx k = {.N = 5, .IC = 7, .OC = 9};
    k.x = rand_d((size_t)k.N * k.IC, 1);
    k.w = rand_d((size_t)k.IC * k.OC, 1);
    k.b = rand_d(k.OC, 1);
    k.dy = rand_d((size_t)k.N * k.OC, 1);
    k.y = zeros_d((size_t)k.N * k.OC);
    double *dx = zeros_d((size_t)k.N * k.IC), *dw = zeros_d((size_t)k.IC * k.OC), *db = zeros_d(k.OC);
    fm_ref_linear_backward(dx, dw, db, k.dy, k.x, k.w, k.N, k.IC, k.OC);
    check_fd("linear dx", linear_L, &k, k.x, (size_t)k.N * k.IC, dx);
    check_fd("linear dw", linear_L, &k, k.w, (size_t)k.IC * k.OC, dw);
    check_fd("linear dbias", linear_L, &k, k.b, k.OC, db);
    free(k.x), free(k.w), free(k.b), free(k.dy), free(k.y), free(dx), free(dw), free(db);
}

static double attention_L(void *p) {
    kctx *k = p;
    fm_ref_attention_forward(k->y, k->att, k->x, k->B, k->T, k->C, k->H);
    return dot_d(k->dy, k->y, (size_t)k->B * k->T * k->C);
}

static void fd_attention(int B, int T, int C, int H) {
    kctx k = {.B = B, .T = T, .C = C, .H = H};
    size_t n = (size_t)B * T * C;
    k.x = rand_d(3 * n, 1);
    k.dy = rand_d(n, 1);
    k.y = zeros_d(n);
    k.att = zeros_d((size_t)B * H * T * T);
    double *dqkv = zeros_d(3 * n);
    attention_L(&k);
    fm_ref_attention_backward(dqkv, k.dy, k.x, k.att, B, T, C, H);
    check_fd("attention dqkv", attention_L, &k, k.x, 3 * n, dqkv);
    free(k.x), free(k.dy), free(k.y), free(k.att), free(dqkv);
}

static void test_fd_attention(void **state) {
    (void)state;
    fd_attention(2, 4, 6, 2); /* head size 3 */
    fd_attention(1, 5, 24, 1); /* head size 24 */
}

static double gelu_L(void *p) {
    kctx *k = p;
    fm_ref_gelu_forward(k->y, k->x, k->N);
    return dot_d(k->dy, k->y, k->N);
}

static void test_fd_gelu(void **state) {
    (void)state;
    kctx k = {.N = 41};
    k.x = rand_d(k.N, 3);
    k.dy = rand_d(k.N, 1);
    k.y = zeros_d(k.N);
    double *dx = zeros_d(k.N);
    fm_ref_gelu_backward(dx, k.x, k.dy, k.N);
    check_fd("gelu dx", gelu_L, &k, k.x, k.N, dx);
    free(k.x), free(k.dy), free(k.y), free(dx);
}

static double ce_L(void *p) {
    kctx *k = p;
    return fm_ref_cross_entropy(k->x, k->targets, k->mask, k->N, k->V, NULL);
}

static void test_fd_cross_entropy(void **state) {
    (void)state;
    int targets[6] = {0, 4, 4, 2, 6, 1};
    double mask[6] = {1, 0, 1, 0.5, 1, 2};
    kctx k = {.N = 6, .V = 7, .targets = targets, .mask = mask};
    k.x = rand_d((size_t)k.N * k.V, 2);
    double *dx = zeros_d((size_t)k.N * k.V);
    fm_ref_cross_entropy(k.x, targets, mask, k.N, k.V, dx);
    check_fd("cross-entropy dlogits", ce_L, &k, k.x, (size_t)k.N * k.V, dx);
    free(k.x), free(dx);
}

/* ------------------------------------------------------------ fast vs reference */

#define FAST_TOL 1e-5

/* bf16: the product as fm_k_gemm computes it in bfloat16 mode (factors rounded, C not). */
static void gemm_case_p(int transA, int transB, int M, int N, int K, int accumulate, int bf16) {
    double *A = rand_d((size_t)M * K, 1), *B = rand_d((size_t)K * N, 1), *C0 = rand_d((size_t)M * N, 1);
    double *want = zeros_d((size_t)M * N);
    float *Af = to_f(A, (size_t)M * K), *Bf = to_f(B, (size_t)K * N), *Cf = to_f(C0, (size_t)M * N);
    if (bf16) { /* the reference sees the rounded factors, the kernel the float ones */
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = fm_k_bf16_round(Af[i]);
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = fm_k_bf16_round(Bf[i]);
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = accumulate ? C0[(size_t)i * N + j] : 0;
            for (int k = 0; k < K; k++) {
                double a = transA ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
                double b = transB ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                s += a * b;
            }
            want[(size_t)i * N + j] = s;
        }
    fm_k_gemm_set_bf16(bf16);
    fm_k_gemm(transA, transB, M, N, K, Af, transA ? M : K, Bf, transB ? K : N, Cf, N, accumulate);
    fm_k_gemm_set_bf16(0);
    char what[64];
    snprintf(what, sizeof what, "gemm%s %c%c %dx%dx%d%s", bf16 ? " bf16" : "", transA ? 'T' : 'N',
             transB ? 'T' : 'N', M, N, K, accumulate ? " accumulate" : "");
    assert_close_f(what, Cf, want, (size_t)M * N, FAST_TOL);
    free(A), free(B), free(C0), free(want), free(Af), free(Bf), free(Cf);
}

static void gemm_case(int transA, int transB, int M, int N, int K, int accumulate) {
    gemm_case_p(transA, transB, M, N, K, accumulate, 0);
}

static void test_fast_gemm(void **state) {
    (void)state;
    /* M < 9 takes the unpacked path (K 769: three slices, split among the threads); 9 and 13 rows
     * give too few row panels for 2 threads, which then split the columns; K 300 spans two packed
     * slices, N 3100 two column blocks. */
    int shapes[][3] = {{1, 1, 1}, {3, 70, 41}, {7, 531, 37}, {8, 16, 64}, {13, 5, 100}, {4, 1030, 3},
                       {100, 3100, 20}, {61, 45, 300}, {8, 1100, 769}, {9, 300, 70}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], acc);
    gemm_case(0, 1, 100, 2100, 2100, 1); /* B larger than one packed group (16 MiB): several groups */
}

/* bfloat16 products: exactly the float32 sums of the rounded factors' products, for odd depths
 * (a zero partner pads the last pair), edges of the register tile, several slices; products
 * with fewer than 4 rows are bfloat16 too (the packed path, whatever the rows). */
static void test_fast_gemm_bf16(void **state) {
    (void)state;
    int shapes[][3] = {{1, 70, 41}, {3, 531, 37}, {4, 1, 1}, {7, 531, 37}, {8, 16, 64}, {13, 5, 101}, {4, 1030, 3},
                       {100, 3100, 21}, {61, 45, 301}, {130, 70, 769}, {2, 70, 769}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) gemm_case_p(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], acc, 1);
}

/* ------------------------------------------------------------ rows independent of M */

/* The product of the first M rows of A (M, K) with B, in one of the transpose cases decoding
 * uses: NN (B (K, N)), NN with a fused bias, NT (B stored (N, K), the tied head). C starts as
 * C0 (accumulate) or NaN. */
enum { ROWS_NN, ROWS_NN_BIAS, ROWS_NT, ROWS_VARIANTS };
static const char *rows_variant_name[] = {"NN", "NN+bias", "NT"};

static void rows_product(int variant, int M, int N, int K, const float *A, const float *B, const float *bias,
                         const float *C0, int accumulate, float *C) {
    for (size_t e = 0; e < (size_t)M * N; e++) C[e] = accumulate ? C0[e] : NAN;
    if (variant == ROWS_NT) fm_k_gemm(0, 1, M, N, K, A, K, B, K, C, N, accumulate);
    else fm_k_gemm_fused(0, 0, M, N, K, A, K, B, N, C, N, accumulate, variant == ROWS_NN_BIAS ? bias : NULL, NULL);
}

/* For every M of ms: row i of the M-row product equals, bitwise, the 1-row product of row i
 * (the same A row, B, bias and C row), for each variant and accumulate 0/1. */
static void rows_check(const int *ms, int n_ms, const int *ks, int n_ks, const int *ns, int n_ns, const char *mode) {
    int max_m = 0;
    for (int m = 0; m < n_ms; m++) max_m = ms[m] > max_m ? ms[m] : max_m;
    for (int kk = 0; kk < n_ks; kk++)
        for (int nn = 0; nn < n_ns; nn++) {
            int K = ks[kk], N = ns[nn];
            float *A = malloc(sizeof(float) * max_m * K), *B = malloc(sizeof(float) * K * N);
            float *bias = malloc(sizeof(float) * N), *C0 = malloc(sizeof(float) * max_m * N);
            float *one = malloc(sizeof(float) * max_m * N), *C = malloc(sizeof(float) * max_m * N);
            for (size_t e = 0; e < (size_t)max_m * K; e++) A[e] = (float)fm_rng_normal(&rng);
            for (size_t e = 0; e < (size_t)K * N; e++) B[e] = (float)fm_rng_normal(&rng);
            for (int j = 0; j < N; j++) bias[j] = (float)fm_rng_normal(&rng);
            for (size_t e = 0; e < (size_t)max_m * N; e++) C0[e] = (float)fm_rng_normal(&rng);
            for (int v = 0; v < ROWS_VARIANTS; v++)
                for (int acc = 0; acc < 2; acc++) {
                    for (int i = 0; i < max_m; i++) /* each row alone */
                        rows_product(v, 1, N, K, A + (size_t)i * K, B, bias, C0 + (size_t)i * N, acc,
                                     one + (size_t)i * N);
                    for (int m = 0; m < n_ms; m++) {
                        int M = ms[m];
                        rows_product(v, M, N, K, A, B, bias, C0, acc, C);
                        for (int i = 0; i < M; i++)
                            if (memcmp(C + (size_t)i * N, one + (size_t)i * N, sizeof(float) * N) != 0) {
                                int j = 0;
                                while (memcmp(&C[(size_t)i * N + j], &one[(size_t)i * N + j], sizeof(float)) == 0) j++;
                                fail_msg("%s %s M=%d N=%d K=%d%s: C[%d][%d] = %.9g, the row alone %.9g", mode,
                                         rows_variant_name[v], M, N, K, acc ? " accumulate" : "", i, j,
                                         C[(size_t)i * N + j], one[(size_t)i * N + j]);
                            }
                    }
                }
            free(A), free(B), free(bias), free(C0), free(one), free(C);
        }
}

/* Batched decoding needs each row of a product to be what the row alone gives: the unpacked
 * path (fewer than 9 rows) and the packed path (9 and more) sum every element in the same
 * order. Depths around one packed slice (383-385) and several (769, 1000), widths past one
 * vector, one register tile and one column block of the unpacked path. */
static void test_gemm_rows_independent(void **state) {
    (void)state;
    int ms[42], ks[] = {1, 7, 383, 384, 385, 769, 1000}, ns[] = {1, 17, 100, 3000};
    for (int m = 0; m < 40; m++) ms[m] = m + 1;
    ms[40] = 50, ms[41] = 64; /* more row panels than 4 per thread: the threads split rows */
    rows_check(ms, 42, ks, 7, ns, 4, "fp32");
}

/* The same in bfloat16 mode (every product packed and rounded alike), and with float32 forced
 * on this thread while the process is in bfloat16. */
static void test_gemm_rows_independent_bf16(void **state) {
    (void)state;
    int ms[] = {1, 2, 3, 4, 5, 13, 40}, ks[] = {7, 385, 769}, ns[] = {17, 100, 1000};
    fm_k_gemm_set_bf16(1);
    rows_check(ms, 7, ks, 3, ns, 3, "bf16");
    fm_k_gemm_force_fp32(1);
    rows_check(ms, 7, ks, 3, ns, 3, "bf16 mode, fp32 forced");
    fm_k_gemm_force_fp32(0);
    fm_k_gemm_set_bf16(0);
}

typedef struct {
    int M, N, K;
    const float *A, *B;
    float *C;
} thread_product;

static void *product_thread(void *p) {
    thread_product *t = p;
    fm_k_gemm(0, 1, t->M, t->N, t->K, t->A, t->K, t->B, t->K, t->C, t->N, 0);
    return NULL;
}

/* fm_k_gemm_force_fp32: in bfloat16 mode, this thread's products (packed, shared by 2 threads,
 * or few rows; attention's, run in OpenMP worker threads) are bitwise the float32 ones, while
 * another thread's products stay bfloat16. */
static void test_gemm_force_fp32(void **state) {
    (void)state;
    int shapes[][3] = {{77, 300, 530}, {2, 300, 530}, {13, 45, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        double *A = rand_d((size_t)M * K, 1), *B = rand_d((size_t)K * N, 1);
        float *Af = to_f(A, (size_t)M * K), *Bf = to_f(B, (size_t)K * N);
        float *fp32 = calloc((size_t)M * N, 4), *bf16 = calloc((size_t)M * N, 4), *got = calloc((size_t)M * N, 4);
        fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, fp32, N, 0);
        fm_k_gemm_set_bf16(1);
        fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, bf16, N, 0);
        assert_true(memcmp(fp32, bf16, sizeof(float) * M * N) != 0); /* the modes differ */
        fm_k_gemm_force_fp32(1);
        assert_int_equal(fm_k_gemm_fp32_forced(), 1);
        fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, got, N, 0);
        assert_memory_equal(got, fp32, sizeof(float) * M * N);
        thread_product t = {M, N, K, Af, Bf, got}; /* another thread: not forced */
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, product_thread, &t), 0);
        pthread_join(th, NULL);
        assert_memory_equal(got, bf16, sizeof(float) * M * N);
        fm_k_gemm_force_fp32(0);
        fm_k_gemm_set_bf16(0);
        free(A), free(B), free(Af), free(Bf), free(fp32), free(bf16), free(got);
    }
    /* attention's products run in the team's threads */
    int Bn = 2, T = 70, C = 48, H = 4;
    size_t n = (size_t)Bn * T * 3 * C, nc = (size_t)Bn * T * C, nl = (size_t)Bn * H * T;
    double *qkv = rand_d(n, 1), *dout = rand_d(nc, 1);
    float *qkv_f = to_f(qkv, n), *dout_f = to_f(dout, nc);
    float *out[2], *lse[2], *dqkv[2];
    for (int r = 0; r < 2; r++) { /* r = 0: float32 mode; r = 1: bfloat16 mode, float32 forced */
        out[r] = calloc(nc, 4), lse[r] = calloc(nl, 4), dqkv[r] = calloc(n, 4);
        fm_k_gemm_set_bf16(r);
        fm_k_gemm_force_fp32(r);
        fm_k_attention_forward(out[r], lse[r], qkv_f, Bn, T, C, H);
        fm_k_attention_backward(dqkv[r], dout_f, qkv_f, lse[r], Bn, T, C, H);
        fm_k_gemm_force_fp32(0);
        fm_k_gemm_set_bf16(0);
    }
    assert_memory_equal(out[0], out[1], sizeof(float) * nc);
    assert_memory_equal(lse[0], lse[1], sizeof(float) * nl);
    assert_memory_equal(dqkv[0], dqkv[1], sizeof(float) * n);
    for (int r = 0; r < 2; r++) free(out[r]), free(lse[r]), free(dqkv[r]);
    free(qkv), free(dout), free(qkv_f), free(dout_f);
}

/* ------------------------------------------------------------ out of memory */

typedef struct {
    int transA, transB, M, N, K, accumulate, kind; /* kind: 0 plain, 1 fused (bias, column sums), 2 band */
    fm_k_band band;
    int d;
    const float *A, *B, *bias;
    float *C, *colsum;
    long failed; /* out: allocations made to fail */
} oom_case;

static void oom_run(oom_case *c) {
    int lda = c->transA ? c->M : c->K, ldb = c->transB ? c->K : c->N;
    if (c->kind == 2)
        fm_k_gemm_band(c->transA, c->transB, c->M, c->N, c->K, c->A, lda, c->B, ldb, c->C, c->N, c->accumulate,
                       c->band, c->d);
    else
        fm_k_gemm_fused(c->transA, c->transB, c->M, c->N, c->K, c->A, lda, c->B, ldb, c->C, c->N, c->accumulate,
                        c->kind ? c->bias : NULL, c->kind ? c->colsum : NULL);
}

/* A fresh thread has no workspaces yet: with every allocation failing from the first on, the
 * product must do without them. */
static void *oom_thread(void *p) {
    oom_case *c = p;
    fm_alloc_fail_at(1, 1);
    oom_run(c);
    c->failed = fm_alloc_failed();
    fm_alloc_fail_at(0, 0);
    return NULL;
}

/* When the packing buffers cannot be allocated, every product still gives, bitwise, what it
 * gives with memory: M from 1 (unpacked, up to 8) to past one register tile and one thread's share,
 * every transpose case, plain, fused (bias and column sums) and banded products, float32 and
 * bfloat16, depths of one and of several slices. */
static void test_gemm_out_of_memory(void **state) {
    (void)state;
    int ms[] = {1, 3, 8, 13, 50}, shapes[][2] = {{45, 300}, {100, 769}}; /* N, K */
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (size_t m = 0; m < sizeof ms / sizeof ms[0]; m++)
            for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
                for (int tr = 0; tr < 4; tr++)
                    for (int kind = 0; kind < 5; kind++) { /* plain, fused, and the three bands */
                        int M = ms[m], N = shapes[sh][0], K = shapes[sh][1], acc = (tr + kind) & 1;
                        double *Ad = rand_d((size_t)M * K, 1), *Bd = rand_d((size_t)K * N, 1);
                        double *Cd = rand_d((size_t)M * N, 1), *bd = rand_d(N, 1);
                        float *A = to_f(Ad, (size_t)M * K), *B = to_f(Bd, (size_t)K * N), *bias = to_f(bd, N);
                        float *want = to_f(Cd, (size_t)M * N), *got = to_f(Cd, (size_t)M * N);
                        float *want_sums = calloc(N, sizeof(float)), *got_sums = calloc(N, sizeof(float));
                        oom_case c = {.transA = tr & 1, .transB = tr >> 1, .M = M, .N = N, .K = K, .accumulate = acc,
                                      .kind = kind < 2 ? kind : 2, .band = (fm_k_band)(kind - 1), .d = 5 - M / 2,
                                      .A = A, .B = B, .bias = bias};
                        if (c.kind == 2 && c.band != FM_BAND_C_LOWER) /* the band's zeros in A */
                            for (int i = 0; i < M; i++)
                                for (int k = 0; k < K; k++)
                                    if (c.band == FM_BAND_A_LOWER ? k > i + c.d : k < i + c.d)
                                        A[c.transA ? (size_t)k * M + i : (size_t)i * K + k] = 0.0f;
                        fm_k_gemm_set_bf16(bf16);
                        c.C = want, c.colsum = want_sums;
                        oom_run(&c);
                        c.C = got, c.colsum = got_sums;
                        pthread_t th;
                        assert_int_equal(pthread_create(&th, NULL, oom_thread, &c), 0);
                        pthread_join(th, NULL);
                        fm_k_gemm_set_bf16(0);
                        /* packed (bfloat16, or float32 from 9 rows: gemm.c's GEMV_ROWS): the allocations were
                         * reached; unpacked, the team's slices of K fall back to columns without memory */
                        if (bf16 || M >= 9) assert_true(c.failed);
                        for (int i = 0; i < M; i++)
                            for (int j = 0; j < N; j++) {
                                if (c.kind == 2 && c.band == FM_BAND_C_LOWER && j > i + c.d) continue; /* unwanted */
                                if (memcmp(&want[(size_t)i * N + j], &got[(size_t)i * N + j], sizeof(float)) != 0)
                                    fail_msg("out of memory, %s %c%c kind %d M=%d N=%d K=%d%s: C[%d][%d] = %.9g, with "
                                             "memory %.9g", bf16 ? "bf16" : "fp32", c.transA ? 'T' : 'N',
                                             c.transB ? 'T' : 'N', kind, M, N, K, acc ? " accumulate" : "", i, j,
                                             got[(size_t)i * N + j], want[(size_t)i * N + j]);
                            }
                        assert_memory_equal(want_sums, got_sums, sizeof(float) * N);
                        free(Ad), free(Bd), free(Cd), free(bd), free(A), free(B), free(bias), free(want), free(got);
                        free(want_sums), free(got_sums);
                    }
}

/* Rounding to bfloat16: nearest, ties to even; infinities and NaN kept. */
static void test_bf16_round(void **state) {
    (void)state;
    assert_true(fm_k_bf16_round(1.0f) == 1.0f);
    assert_true(fm_k_bf16_round(1.0f + 0x1p-8f) == 1.0f);                  /* tie: to even (down) */
    assert_true(fm_k_bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);    /* tie: to even (up) */
    assert_true(fm_k_bf16_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f); /* above the tie */
    assert_true(fm_k_bf16_round(-2.5f) == -2.5f);
    assert_true(isinf(fm_k_bf16_round(INFINITY)) && fm_k_bf16_round(-INFINITY) < 0);
    assert_true(isnan(fm_k_bf16_round(NAN)));
    assert_true(isinf(fm_k_bf16_round(FLT_MAX))); /* past the largest bfloat16: rounds up to inf */
}

/* A product with a band (attention's causal blocks) gives bitwise what the plain product gives
 * on every wanted element: the skipped tiles and depth steps held only zeros or unwanted
 * values. A's band zeros are put in; C starts as NaN where the product must write. */
static void band_case(fm_k_band band, int d, int transA, int transB, int M, int N, int K, int accumulate) {
    double *Ad = rand_d((size_t)M * K, 1), *Bd = rand_d((size_t)K * N, 1), *Cd = rand_d((size_t)M * N, 1);
    float *A = to_f(Ad, (size_t)M * K), *B = to_f(Bd, (size_t)K * N), *C0 = to_f(Cd, (size_t)M * N);
    float *want = malloc(sizeof(float) * M * N), *got = malloc(sizeof(float) * M * N);
    int lda = transA ? M : K, ldb = transB ? K : N;
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            int zero = (band == FM_BAND_A_LOWER && k > i + d) || (band == FM_BAND_A_UPPER && k < i + d);
            if (zero) A[transA ? (size_t)k * M + i : (size_t)i * K + k] = 0.0f;
        }
    memcpy(want, C0, sizeof(float) * M * N);
    for (size_t e = 0; e < (size_t)M * N; e++) got[e] = accumulate ? C0[e] : NAN;
    fm_k_gemm(transA, transB, M, N, K, A, lda, B, ldb, want, N, accumulate);
    fm_k_gemm_band(transA, transB, M, N, K, A, lda, B, ldb, got, N, accumulate, band, d);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            if (band == FM_BAND_C_LOWER && j > i + d) continue; /* unwanted */
            if (memcmp(&want[(size_t)i * N + j], &got[(size_t)i * N + j], sizeof(float)) != 0)
                fail_msg("band %d (d %d) %c%c %dx%dx%d%s: C[%d][%d] = %g, plain product %g", band, d,
                         transA ? 'T' : 'N', transB ? 'T' : 'N', M, N, K, accumulate ? " accumulate" : "", i, j,
                         got[(size_t)i * N + j], want[(size_t)i * N + j]);
        }
    free(Ad), free(Bd), free(Cd), free(A), free(B), free(C0), free(want), free(got);
}

static void test_gemm_band(void **state) {
    (void)state;
    /* tile edges (12 x 32), several depth slices (K 500, 800), offsets on both sides */
    int shapes[][3] = {{64, 64, 64}, {37, 70, 53}, {64, 128, 500}, {130, 45, 800}, {5, 9, 7}};
    int offsets[] = {-40, -11, -1, 0, 3, 21, 64}; /* -11, 21: a tile's first column is its last row's last wanted one */
    for (int bf16 = 0; bf16 < 2; bf16++) {
        fm_k_gemm_set_bf16(bf16);
        for (int threads = 1; threads <= 2; threads++) {
            fm_set_threads(threads);
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
                    for (int band = FM_BAND_C_LOWER; band <= FM_BAND_A_UPPER; band++)
                        for (int tr = 0; tr < 8; tr++) /* transA, transB, accumulate */
                            band_case((fm_k_band)band, offsets[o], tr & 1, (tr >> 1) & 1, shapes[s][0], shapes[s][1],
                                      shapes[s][2], tr >> 2);
        }
    }
    fm_k_gemm_set_bf16(0);
}

/* Thread counts only decide who computes which tile: the product is bitwise the same. */
static void test_gemm_thread_invariance(void **state) {
    (void)state;
    int M = 77, N = 300, K = 530;
    double *A = rand_d((size_t)M * K, 1), *B = rand_d((size_t)K * N, 1);
    float *Af = to_f(A, (size_t)M * K), *Bf = to_f(B, (size_t)K * N);
    float *C1 = calloc((size_t)M * N, 4), *C2 = calloc((size_t)M * N, 4);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        fm_k_gemm_set_bf16(bf16);
        fm_set_threads(1);
        fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, C1, N, 0);
        fm_set_threads(2);
        fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, C2, N, 0);
        assert_memory_equal(C1, C2, sizeof(float) * M * N);
    }
    fm_k_gemm_set_bf16(0);
    free(A), free(B), free(Af), free(Bf), free(C1), free(C2);
}

/* Few rows (the threads split the columns) and more columns than one packed block, the last
 * block narrower than the others (the tied head of a short prompt: 13 x 8192): the threads'
 * shares of B's panels differ between blocks, so a thread that runs ahead must not repack
 * panels another still reads. Repeated, with a busy thread to put the team out of step; every
 * result bitwise the one thread's. (Before the barrier between column blocks, 100 of 200
 * repeats came out wrong by up to 5 on a loaded machine.) */
static void test_gemm_column_blocks_race(void **state) {
    (void)state;
    int M = 13, N = 8192 + 77, K = 128;
    double *A = rand_d((size_t)M * K, 1), *B = rand_d((size_t)N * K, 1);
    float *Af = to_f(A, (size_t)M * K), *Bf = to_f(B, (size_t)N * K);
    float *C1 = calloc((size_t)M * N, 4), *C2 = calloc((size_t)M * N, 4);
    fm_set_threads(1);
    fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, C1, N, 0);
    fm_set_threads(2);
    for (int it = 0; it < 200; it++) {
        fm_k_gemm(0, 1, M, N, K, Af, K, Bf, K, C2, N, 0);
        assert_memory_equal(C1, C2, sizeof(float) * M * N);
    }
    free(A), free(B), free(Af), free(Bf), free(C1), free(C2);
}

/* A weight gradient with fewer rows than columns (TN, M < N) is built as its transpose and
 * copied back; B's column sums become the row sums of that product's A. Bitwise, it must be
 * the product with the operands' roles swapped (TN, N > M: the direct path), transposed, and
 * the column sums those of a plain loop, k ascending. Shapes: tile edges, several depth slices,
 * more than one column block of the transpose (M > 3072), too few rows for 2 threads to split
 * (they split columns); 1 and 2 threads, adding to C or not. */
static void test_gemm_transposed_wide(void **state) {
    (void)state;
    int shapes[][3] = {{7, 531, 37}, {13, 100, 700}, {40, 60, 9}, {3080, 3100, 3}};
    for (int threads = 1; threads <= 2; threads++) {
        fm_set_threads(threads);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int acc = 0; acc < 2; acc++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                double *Ad = rand_d((size_t)K * M, 1), *Bd = rand_d((size_t)K * N, 1), *Cd = rand_d((size_t)M * N, 1);
                float *A = to_f(Ad, (size_t)K * M), *B = to_f(Bd, (size_t)K * N), *C = to_f(Cd, (size_t)M * N);
                float *Ct = malloc(sizeof(float) * M * N), *sums = calloc(N, sizeof(float));
                float *want_sums = calloc(N, sizeof(float));
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) Ct[(size_t)j * M + i] = C[(size_t)i * N + j];
                fm_k_gemm_fused(1, 0, M, N, K, A, M, B, N, C, N, acc, NULL, sums); /* C (+)= A^T B */
                fm_k_gemm(1, 0, N, M, K, B, N, A, M, Ct, M, acc);                  /* C^T (+)= B^T A */
                for (int k = 0; k < K; k++)
                    for (int j = 0; j < N; j++) want_sums[j] += B[(size_t)k * N + j];
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++)
                        if (memcmp(&C[(size_t)i * N + j], &Ct[(size_t)j * M + i], sizeof(float)) != 0)
                            fail_msg("TN %dx%dx%d%s, %d threads: C[%d][%d] = %g, swapped product %g", M, N, K,
                                     acc ? " accumulate" : "", threads, i, j, C[(size_t)i * N + j], Ct[(size_t)j * M + i]);
                assert_memory_equal(sums, want_sums, sizeof(float) * N);
                free(Ad), free(Bd), free(Cd), free(A), free(B), free(C), free(Ct), free(sums), free(want_sums);
            }
    }
}

static void test_fast_encoder_layernorm(void **state) {
    (void)state;
    int B = 3, T = 7, C = 37, V = 11, N = B * T;
    int tokens[21];
    for (int i = 0; i < N; i++) tokens[i] = (int)(fm_rng_u64(&rng) % V);
    double *wte = rand_d((size_t)V * C, 1), *wpe = rand_d((size_t)T * C, 1), *dy = rand_d((size_t)N * C, 1);
    double *y = zeros_d((size_t)N * C), *dwte = zeros_d((size_t)V * C), *dwpe = zeros_d((size_t)T * C);
    float *wte_f = to_f(wte, (size_t)V * C), *wpe_f = to_f(wpe, (size_t)T * C), *dy_f = to_f(dy, (size_t)N * C);
    float *y_f = calloc((size_t)N * C, 4), *dwte_f = calloc((size_t)V * C, 4), *dwpe_f = calloc((size_t)T * C, 4);
    fm_ref_encoder_forward(y, tokens, wte, wpe, B, T, C);
    fm_k_encoder_forward(y_f, tokens, wte_f, wpe_f, B, T, C);
    assert_close_f("encoder forward", y_f, y, (size_t)N * C, FAST_TOL);
    fm_ref_encoder_backward(dwte, dwpe, dy, tokens, B, T, C);
    fm_k_encoder_backward(dwte_f, dwpe_f, dy_f, tokens, B, T, C);
    assert_close_f("encoder dwte", dwte_f, dwte, (size_t)V * C, FAST_TOL);
    assert_close_f("encoder dwpe", dwpe_f, dwpe, (size_t)T * C, FAST_TOL);

    /* layernorm on the encoder's output; backward accumulates into non-zero buffers */
    double *w = rand_d(C, 1), *b = rand_d(C, 1), *mean = zeros_d(N), *rstd = zeros_d(N);
    double *out = zeros_d((size_t)N * C), *dx = rand_d((size_t)N * C, 1), *dw = rand_d(C, 1), *db = rand_d(C, 1);
    float *w_f = to_f(w, C), *b_f = to_f(b, C), *mean_f = calloc(N, 4), *rstd_f = calloc(N, 4);
    float *out_f = calloc((size_t)N * C, 4), *dx_f = to_f(dx, (size_t)N * C), *dw_f = to_f(dw, C), *db_f = to_f(db, C);
    fm_ref_layernorm_forward(out, mean, rstd, y, w, b, N, C, 1e-5);
    fm_k_layernorm_forward(out_f, mean_f, rstd_f, y_f, w_f, b_f, N, C, 1e-5f);
    assert_close_f("layernorm forward", out_f, out, (size_t)N * C, FAST_TOL);
    fm_ref_layernorm_backward(dx, dw, db, dy, y, w, mean, rstd, N, C);
    fm_k_layernorm_backward(dx_f, dw_f, db_f, dy_f, y_f, w_f, mean_f, rstd_f, N, C);
    assert_close_f("layernorm dx", dx_f, dx, (size_t)N * C, FAST_TOL);
    assert_close_f("layernorm dw", dw_f, dw, C, FAST_TOL);
    assert_close_f("layernorm db", db_f, db, C, FAST_TOL);
    free(wte), free(wpe), free(dy), free(y), free(dwte), free(dwpe), free(wte_f), free(wpe_f), free(dy_f);
    free(y_f), free(dwte_f), free(dwpe_f), free(w), free(b), free(mean), free(rstd), free(out), free(dx);
    free(dw), free(db), free(w_f), free(b_f), free(mean_f), free(rstd_f), free(out_f), free(dx_f);
    free(dw_f), free(db_f);
}

/* N = 9 takes the packed GEMM (bias in its store, dbias while dout is packed); N = 2 the
 * small-M path. */
static void fast_linear(int N) {
    int IC = 37, OC = 70;
    double *x = rand_d((size_t)N * IC, 1), *w = rand_d((size_t)IC * OC, 1), *b = rand_d(OC, 1);
    double *dy = rand_d((size_t)N * OC, 1), *y = zeros_d((size_t)N * OC);
    double *dx = zeros_d((size_t)N * IC), *dw = rand_d((size_t)IC * OC, 1), *db = rand_d(OC, 1);
    float *x_f = to_f(x, (size_t)N * IC), *w_f = to_f(w, (size_t)IC * OC), *b_f = to_f(b, OC);
    float *dy_f = to_f(dy, (size_t)N * OC), *y_f = calloc((size_t)N * OC, 4), *dx_f = calloc((size_t)N * IC, 4);
    float *dw_f = to_f(dw, (size_t)IC * OC), *db_f = to_f(db, OC);
    fm_ref_linear_forward(y, x, w, b, N, IC, OC);
    fm_k_linear_forward(y_f, x_f, w_f, b_f, N, IC, OC);
    assert_close_f("linear forward", y_f, y, (size_t)N * OC, FAST_TOL);
    fm_ref_linear_backward(dx, dw, db, dy, x, w, N, IC, OC);
    fm_k_linear_backward(dx_f, dw_f, db_f, dy_f, x_f, w_f, N, IC, OC);
    assert_close_f("linear dx", dx_f, dx, (size_t)N * IC, FAST_TOL);
    assert_close_f("linear dw", dw_f, dw, (size_t)IC * OC, FAST_TOL);
    assert_close_f("linear dbias", db_f, db, OC, FAST_TOL);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(x_f), free(w_f), free(b_f), free(dy_f), free(y_f), free(dx_f), free(dw_f), free(db_f);
}

static void test_fast_linear(void **state) {
    (void)state;
    fast_linear(9);
    fast_linear(2);
}

static void fast_attention(int B, int T, int C, int H) {
    size_t n = (size_t)B * T * C, na = (size_t)B * H * T * T;
    double *qkv = rand_d(3 * n, 1), *dy = rand_d(n, 1), *y = zeros_d(n), *att = zeros_d(na);
    double *dqkv = zeros_d(3 * n);
    float *qkv_f = to_f(qkv, 3 * n), *dy_f = to_f(dy, n), *y_f = calloc(n, 4), *lse_f = calloc((size_t)B * H * T, 4);
    float *dqkv_f = calloc(3 * n, 4);
    for (size_t i = 0; i < 3 * n; i++) dqkv_f[i] = NAN; /* every element must be written */
    fm_ref_attention_forward(y, att, qkv, B, T, C, H);
    fm_k_attention_forward(y_f, lse_f, qkv_f, B, T, C, H);
    assert_close_f("attention forward", y_f, y, n, FAST_TOL);
    fm_ref_attention_backward(dqkv, dy, qkv, att, B, T, C, H);
    fm_k_attention_backward(dqkv_f, dy_f, qkv_f, lse_f, B, T, C, H);
    assert_close_f("attention dqkv", dqkv_f, dqkv, 3 * n, FAST_TOL);
    free(qkv), free(dy), free(y), free(att), free(dqkv), free(qkv_f), free(dy_f), free(y_f), free(lse_f);
    free(dqkv_f);
}

static void test_fast_attention(void **state) {
    (void)state;
    fast_attention(2, 9, 48, 2);  /* head size 24 */
    fast_attention(3, 17, 36, 3); /* head size 12 */
    fast_attention(1, 1, 5, 5);   /* head size 1, a single token */
    fast_attention(2, 150, 128, 2); /* head size 64, a query block of 128 rows plus a partial one */
    fast_attention(1, 300, 64, 1);  /* head size 64, two whole query blocks and a partial one */
}

static void test_fast_gelu_and_cross_entropy(void **state) {
    (void)state;
    size_t n = 1000;
    double *x = rand_d(n, 3), *dy = rand_d(n, 1), *y = zeros_d(n), *dx = zeros_d(n);
    float *x_f = to_f(x, n), *dy_f = to_f(dy, n), *y_f = calloc(n, 4), *dx_f = calloc(n, 4);
    fm_ref_gelu_forward(y, x, n);
    fm_k_gelu_forward(y_f, x_f, n);
    assert_close_f("gelu forward", y_f, y, n, FAST_TOL);
    fm_ref_gelu_backward(dx, x, dy, n);
    fm_k_gelu_backward(dx_f, x_f, dy_f, n);
    assert_close_f("gelu backward", dx_f, dx, n, FAST_TOL);

    int N = 20, V = 301, targets[20];
    double mask[20];
    float mask_f[20];
    for (int i = 0; i < N; i++) {
        targets[i] = (int)(fm_rng_u64(&rng) % V);
        mask[i] = mask_f[i] = (float)(i % 3 == 0 ? 0 : 1);
    }
    double *z = rand_d((size_t)N * V, 3), *dz = zeros_d((size_t)N * V);
    float *z_f = to_f(z, (size_t)N * V), *dz_f = calloc((size_t)N * V, 4), loss_f;
    double loss = fm_ref_cross_entropy(z, targets, mask, N, V, dz);
    assert_int_equal(fm_cross_entropy(z_f, targets, mask_f, N, V, &loss_f, dz_f), FM_OK);
    if (!(fabs(loss_f - loss) <= FAST_TOL * fabs(loss))) fail_msg("cross-entropy %.9g vs %.9g", loss_f, loss);
    assert_close_f("cross-entropy dlogits", dz_f, dz, (size_t)N * V, FAST_TOL);
    /* in place: dlogits aliasing the logits */
    assert_int_equal(fm_cross_entropy(z_f, targets, mask_f, N, V, &loss_f, z_f), FM_OK);
    assert_close_f("cross-entropy in place", z_f, dz, (size_t)N * V, FAST_TOL);
    /* a target outside the vocabulary is refused */
    targets[3] = V;
    assert_int_equal(fm_cross_entropy(z_f, targets, NULL, N, V, &loss_f, NULL), FM_ERR_ARG);
    free(x), free(dy), free(y), free(dx), free(x_f), free(dy_f), free(y_f), free(dx_f);
    free(z), free(dz), free(z_f), free(dz_f);
}

/* The optimizer's kernels against double-precision loops of the same rule. */
static void test_fast_sumsq_and_adamw(void **state) {
    (void)state;
    size_t n = 70001; /* past several blocks, with a ragged tail */
    double *g = rand_d(n, 1), *p = rand_d(n, 1), *m = rand_d(n, 0.1), *v = rand_d(n, 0.1);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    double want = 0;
    for (size_t i = 0; i < n; i++) want += g[i] * g[i];
    float *g_f = to_f(g, n), *p_f = to_f(p, n), *m_f = to_f(m, n), *v_f = to_f(v, n);
    double got = fm_k_sumsq(g_f, n);
    if (!(fabs(got - want) <= 1e-6 * want)) fail_msg("sum of squares %.9g vs %.9g", got, want);
    float clip = 0.7f, shrink = 0.999f, b1 = 0.9f, b2 = 0.95f, step = 1e-3f, bc2 = 0.3f, eps = 1e-8f;
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g_f[i] * clip;
        m[i] = b1 * (double)m_f[i] + (1 - (double)b1) * gi;
        v[i] = b2 * (double)v_f[i] + (1 - (double)b2) * gi * gi;
        p[i] = (double)p_f[i] * shrink - step * m[i] / (sqrt(v[i]) / bc2 + eps);
    }
    fm_k_adamw(p_f, g_f, m_f, v_f, n, clip, shrink, b1, b2, step, bc2, eps);
    assert_close_f("adamw m", m_f, m, n, FAST_TOL);
    assert_close_f("adamw v", v_f, v, n, FAST_TOL);
    assert_close_f("adamw p", p_f, p, n, FAST_TOL);
    free(g), free(p), free(m), free(v), free(g_f), free(p_f), free(m_f), free(v_f);
}

/* Decoding's attention of one head against its cache (rows ld apart), against double sums: head
 * sizes 24, 64, 80 and 128 (not whole vectors; one, a part of a second and two groups of the
 * 64 output floats kept in registers), caches of 1, 4, 5 and 37 positions (the keys are read
 * four positions at a time). */
static void test_fast_attend_cached(void **state) {
    (void)state;
    int sizes[4] = {24, 64, 80, 128}, lens[4] = {1, 4, 5, 37};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            int hs = sizes[a], len = lens[b], ld = 3 * hs + 5;
            double *q = rand_d(hs, 1), *k = rand_d((size_t)len * ld, 1), *v = rand_d((size_t)len * ld, 1);
            float *q_f = to_f(q, hs), *k_f = to_f(k, (size_t)len * ld), *v_f = to_f(v, (size_t)len * ld);
            float *out = malloc(sizeof(float) * hs), *s = malloc(sizeof(float) * len);
            double *want = zeros_d(hs), *p = zeros_d(len), scale = 1.0 / sqrt((double)hs), maxv = -INFINITY, sum = 0;
            for (int u = 0; u < len; u++) {
                for (int i = 0; i < hs; i++) p[u] += (double)q_f[i] * k_f[(size_t)u * ld + i];
                p[u] *= scale;
                maxv = fmax(maxv, p[u]);
            }
            for (int u = 0; u < len; u++) sum += p[u] = exp(p[u] - maxv);
            for (int u = 0; u < len; u++)
                for (int i = 0; i < hs; i++) want[i] += p[u] / sum * v_f[(size_t)u * ld + i];
            fm_k_attend_cached(out, s, q_f, k_f, v_f, len, ld, hs, (float)scale);
            assert_close_f("attend cached", out, want, hs, FAST_TOL);
            free(q), free(k), free(v), free(q_f), free(k_f), free(v_f), free(out), free(s), free(want), free(p);
        }
}

/* Int8 blocks: out = inp @ (d q)^T + bias, the inputs quantized per block of 32 (kernels.h):
 * against the exact integer block sums scaled in double, within float rounding; and against the
 * float inputs within the inputs' quantization error (half a step of max|x| / 127 per input).
 * Shapes: 70 inputs pad a third block (no group of eight blocks); 300 inputs are a group of
 * eight blocks, one whole block and a padded one; 301 rows x 770 inputs are shared by the threads
 * (a group of eight three times, then a padded block). The odd row counts leave a row after the
 * kernel's pairs of rows. The weights include -128 (its magnitude does not fit a signed byte). */
static void check_q8_matmul(int rows, int cols) {
    int blocks = (cols + 31) / 32;
    int8_t *q = calloc((size_t)rows * blocks * 32, 1);
    float *d = malloc(sizeof(float) * rows * blocks), *bias = malloc(sizeof(float) * rows);
    for (int o = 0; o < rows; o++) {
        for (int i = 0; i < cols; i++) q[(size_t)o * blocks * 32 + i] = (int8_t)((int)(fm_rng_u64(&rng) % 256) - 128);
        for (int b = 0; b < blocks; b++) d[o * blocks + b] = 1e-3f * (1 + (int)(fm_rng_u64(&rng) % 100));
        bias[o] = fm_rng_normal(&rng);
    }
    q[1] = -128, q[2] = 127;
    for (int N = 1; N <= 3; N++) {
        double *x = rand_d((size_t)N * cols, 1), *want = zeros_d((size_t)N * rows), *loose = zeros_d((size_t)N * rows);
        float *x_f = to_f(x, (size_t)N * cols), *out = calloc((size_t)N * rows, 4), *pad = malloc(4 * N * blocks * 32);
        x_f[0] = 0.0f; /* a zero next to nonzero inputs, and an all-zero block below */
        if (N == 3)
            for (int i = 64; i < cols; i++) x_f[2 * cols + i] = 0.0f;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < rows; o++) {
                double s = bias[o], t = bias[o];
                for (int b = 0; b < blocks; b++) {
                    const float *xb = x_f + (size_t)n * cols + b * 32;
                    int len = cols - b * 32 < 32 ? cols - b * 32 : 32;
                    float amax = 0.0f;
                    for (int i = 0; i < len; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
                    float inv = amax > 0.0f ? 127.0f / amax : 0.0f, dx = amax / 127.0f;
                    long isum = 0;
                    for (int i = 0; i < len; i++) {
                        int w = q[(size_t)o * blocks * 32 + b * 32 + i];
                        isum += (long)w * (long)nearbyintf(xb[i] * inv);
                        t += (double)d[o * blocks + b] * w * xb[i];
                    }
                    s += (double)d[o * blocks + b] * dx * (double)isum;
                }
                want[n * rows + o] = s, loose[n * rows + o] = t;
            }
        fm_k_q8_matmul(out, x_f, q, d, bias, N, rows, cols, pad);
        assert_close_f("q8 matmul", out, want, (size_t)N * rows, FAST_TOL);
        assert_close_f("q8 matmul against float inputs", out, loose, (size_t)N * rows, 2e-2);
        free(x), free(want), free(loose), free(x_f), free(out), free(pad);
    }
    free(q), free(d), free(bias);
}

static void test_fast_q8_matmul(void **state) {
    (void)state;
    check_q8_matmul(37, 70);
    check_q8_matmul(37, 300);
    check_q8_matmul(301, 770);
}

/* Int8 products for batched decoding: row n of an N-row product is bitwise the product of
 * row n alone, for N up to past the threads' split (300 rows x 770 columns: 25 blocks, the last
 * padded), with and without a bias. */
static void test_q8_rows_independent(void **state) {
    (void)state;
    int rows = 300, cols = 770, blocks = 25, max_n = 9;
    int8_t *q = malloc((size_t)rows * blocks * 32);
    float *d = malloc(sizeof(float) * rows * blocks), *bias = malloc(sizeof(float) * rows);
    for (size_t e = 0; e < (size_t)rows * blocks * 32; e++) q[e] = (int8_t)((int)(fm_rng_u64(&rng) % 255) - 127);
    for (int e = 0; e < rows * blocks; e++) d[e] = 1e-3f * (1 + (int)(fm_rng_u64(&rng) % 100));
    for (int o = 0; o < rows; o++) bias[o] = (float)fm_rng_normal(&rng);
    double *x = rand_d((size_t)max_n * cols, 1);
    float *x_f = to_f(x, (size_t)max_n * cols), *pad = malloc(sizeof(float) * max_n * blocks * 32);
    float *one = malloc(sizeof(float) * max_n * rows), *out = malloc(sizeof(float) * max_n * rows);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *b = with_bias ? bias : NULL;
        for (int n = 0; n < max_n; n++)
            fm_k_q8_matmul(one + (size_t)n * rows, x_f + (size_t)n * cols, q, d, b, 1, rows, cols, pad);
        for (int N = 1; N <= max_n; N++) {
            fm_k_q8_matmul(out, x_f, q, d, b, N, rows, cols, pad);
            for (int n = 0; n < N; n++)
                if (memcmp(out + (size_t)n * rows, one + (size_t)n * rows, sizeof(float) * rows) != 0)
                    fail_msg("q8 matmul N=%d%s: row %d differs from the row alone", N, with_bias ? " bias" : "", n);
        }
    }
    free(q), free(d), free(bias), free(x), free(x_f), free(pad), free(one), free(out);
}

/* FM_TEST_SKIP=PATTERN (cmocka's pattern: * and ?) leaves out the tests it names: the cross build's
 * run under emulation (tests/cross/aarch64.sh) skips the largest, which takes over 10 minutes there. */
int main(void) {
    fm_rng_seed(&rng, 42);
    fm_set_threads(2);
    const char *skip = getenv("FM_TEST_SKIP");
    if (skip && *skip) cmocka_set_skip_filter(skip);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_encoder),
        cmocka_unit_test(test_fd_layernorm),
        cmocka_unit_test(test_fd_linear),
        cmocka_unit_test(test_fd_attention),
        cmocka_unit_test(test_fd_gelu),
        cmocka_unit_test(test_fd_cross_entropy),
        cmocka_unit_test(test_fast_gemm),
        cmocka_unit_test(test_fast_gemm_bf16),
        cmocka_unit_test(test_bf16_round),
        cmocka_unit_test(test_gemm_rows_independent),
        cmocka_unit_test(test_gemm_rows_independent_bf16),
        cmocka_unit_test(test_gemm_force_fp32),
        cmocka_unit_test(test_gemm_out_of_memory),
        cmocka_unit_test(test_gemm_thread_invariance),
        cmocka_unit_test(test_gemm_column_blocks_race),
        cmocka_unit_test(test_gemm_transposed_wide),
        cmocka_unit_test(test_gemm_band),
        cmocka_unit_test(test_fast_encoder_layernorm),
        cmocka_unit_test(test_fast_linear),
        cmocka_unit_test(test_fast_attention),
        cmocka_unit_test(test_fast_gelu_and_cross_entropy),
        cmocka_unit_test(test_fast_sumsq_and_adamw),
        cmocka_unit_test(test_fast_attend_cached),
        cmocka_unit_test(test_fast_q8_matmul),
        cmocka_unit_test(test_q8_rows_independent),
    };
    return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
