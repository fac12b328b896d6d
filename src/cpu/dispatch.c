/*
 * dispatch.c — runtime choice of the kernels' code path, and the kernels' shared switches.
 *
 * What it is for: one build runs on any x86-64. gemm.c and kernels.c are compiled once per
 * path (isa.h; the Makefile's FM_CPU_PATHS) and this file picks one copy's table the first time
 * a kernel is called: the best path the CPU supports (cpuid through __builtin_cpu_supports,
 * which also checks that the OS saves the vector registers), or the lower one the environment
 * variable FM_CPU names. Every fm_k_* of kernels.h is a one-line forward through that table.
 * It also holds the state every copy shares: the process-wide bfloat16 switch, the per-thread
 * float32 override, and fm_k_bf16_round.
 * Not for: the arithmetic (gemm.c, kernels.c) or printing (the CLI says which path runs).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "cpu/dispatch.h"

/* ------------------------------------------------------------ the paths */

typedef struct {
    const fm_cpu_table *table;
    int (*supported)(void);
} cpu_path;

static int always(void) { return 1; }

#ifdef FM_CPU_X86
static int has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
static int has_avx512(void) {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
static int has_avx512bf16(void) {
    return has_avx512() && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
}
#endif

/* Best first. */
static const cpu_path paths[] = {
#ifdef FM_CPU_X86
    {&fm_cpu_table_avx512bf16, has_avx512bf16},
    {&fm_cpu_table_avx512, has_avx512},
    {&fm_cpu_table_avx2, has_avx2},
#endif
    {&fm_cpu_table_generic, always},
};
#define N_PATHS (int)(sizeof paths / sizeof paths[0])

static _Atomic(const fm_cpu_table *) active;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static int best_supported(void) {
    for (int i = 0; i < N_PATHS; i++)
        if (paths[i].supported()) return i;
    return N_PATHS - 1;
}

/* Index of the path named, -1 if this build lacks it. */
static int find_path(const char *name) {
    for (int i = 0; i < N_PATHS; i++)
        if (strcmp(paths[i].table->name, name) == 0) return i;
    return -1;
}

/* The default: FM_CPU when it names a path this build has and this CPU runs, else the best. */
static void choose_default(void) {
    const char *want = getenv("FM_CPU");
    int i = want && *want ? find_path(want) : -1;
    if (i < 0 || !paths[i].supported()) i = best_supported();
    const fm_cpu_table *expected = NULL; /* fm_cpu_select may have chosen first */
    atomic_compare_exchange_strong(&active, &expected, paths[i].table);
}

static inline const fm_cpu_table *K(void) {
    const fm_cpu_table *t = atomic_load_explicit(&active, memory_order_acquire);
    if (__builtin_expect(t != NULL, 1)) return t;
    pthread_once(&default_once, choose_default);
    return atomic_load_explicit(&active, memory_order_acquire);
}

const char *fm_cpu_path(void) { return K()->name; }

static char supported_list[64];
static pthread_once_t supported_once = PTHREAD_ONCE_INIT;

static void list_supported(void) {
    for (int i = 0; i < N_PATHS; i++)
        if (paths[i].supported()) {
            if (supported_list[0]) strcat(supported_list, " ");
            strcat(supported_list, paths[i].table->name);
        }
}

const char *fm_cpu_paths_supported(void) {
    pthread_once(&supported_once, list_supported);
    return supported_list;
}

fm_status fm_cpu_select(const char *path) {
    int i = !path || !*path || strcmp(path, "auto") == 0 ? best_supported() : find_path(path);
    if (i < 0 || !paths[i].supported())
        return fm_fail(FM_ERR_ARG, "CPU path '%s' %s; this CPU runs: %s (or auto)", path,
                       i < 0 ? "is not one of this build's paths" : "needs instructions this CPU lacks",
                       fm_cpu_paths_supported());
    atomic_store_explicit(&active, paths[i].table, memory_order_release);
    return FM_OK;
}

/* ------------------------------------------------------------ shared switches */

static _Atomic int gemm_bf16;             /* process-wide: products in bfloat16 */
static _Thread_local int gemm_force_fp32; /* this thread's products stay float32 regardless */

void fm_k_gemm_set_bf16(int on) { atomic_store_explicit(&gemm_bf16, on != 0, memory_order_relaxed); }
int fm_k_gemm_bf16(void) { return atomic_load_explicit(&gemm_bf16, memory_order_relaxed); }
void fm_k_gemm_force_fp32(int on) { gemm_force_fp32 = on != 0; }
int fm_k_gemm_fp32_forced(void) { return gemm_force_fp32; }

/* x rounded to bfloat16, nearest even (NaN stays a quiet NaN): gemm.c's packing rounding. */
float fm_k_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) u = (u | 0x00400000u) & 0xFFFF0000u;
    else u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* ------------------------------------------------------------ the forwards */

void fm_k_gemm(int transA, int transB, int M, int N, int K_, const float *A, int lda, const float *B, int ldb,
               float *C, int ldc, int accumulate) {
    K()->gemm(transA, transB, M, N, K_, A, lda, B, ldb, C, ldc, accumulate);
}
void fm_k_gemm_fused(int transA, int transB, int M, int N, int K_, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc, int accumulate, const float *bias, float *colsum) {
    K()->gemm_fused(transA, transB, M, N, K_, A, lda, B, ldb, C, ldc, accumulate, bias, colsum);
}
void fm_k_gemm_band(int transA, int transB, int M, int N, int K_, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, int accumulate, fm_k_band band, int d) {
    K()->gemm_band(transA, transB, M, N, K_, A, lda, B, ldb, C, ldc, accumulate, band, d);
}
void fm_k_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C) {
    K()->encoder_forward(out, tokens, wte, wpe, B, T, C);
}
void fm_k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T, int C) {
    K()->encoder_backward(dwte, dwpe, dout, tokens, B, T, C);
}
void fm_k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                            int N, int C, float eps) {
    K()->layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
}
void fm_k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                             const float *mean, const float *rstd, int N, int C) {
    K()->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
}
void fm_k_linear_forward(float *out, const float *inp, const float *w, const float *bias, int N, int IC, int OC) {
    K()->linear_forward(out, inp, w, bias, N, IC, OC);
}
void fm_k_linear_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                          int N, int IC, int OC) {
    K()->linear_backward(dinp, dw, dbias, dout, inp, w, N, IC, OC);
}
void fm_k_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int H) {
    K()->attention_forward(out, lse, qkv, B, T, C, H);
}
void fm_k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse, int B, int T, int C,
                             int H) {
    K()->attention_backward(dqkv, dout, qkv, lse, B, T, C, H);
}
void fm_k_gelu_forward(float *out, const float *inp, size_t N) { K()->gelu_forward(out, inp, N); }
void fm_k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    K()->gelu_backward(dinp, inp, dout, N);
}
void fm_k_residual_forward(float *out, const float *a, const float *b, size_t N) { K()->residual_forward(out, a, b, N); }
float fm_k_xent_row(float *dz, const float *z, int V, int target, float weight) {
    return K()->xent_row(dz, z, V, target, weight);
}
double fm_k_sumsq(const float *x, size_t n) { return K()->sumsq(x, n); }
void fm_k_attend_cached(float *out, float *s, const float *q, const float *keys, const float *values, int len, int ld,
                        int hs, float scale) {
    K()->attend_cached(out, s, q, keys, values, len, ld, hs, scale);
}
void fm_k_adamw(float *p, const float *g, float *m, float *v, size_t n, float clip, float shrink, float beta1,
                float beta2, float step_size, float bc2_sqrt, float eps) {
    K()->adamw(p, g, m, v, n, clip, shrink, beta1, beta2, step_size, bc2_sqrt, eps);
}
void fm_k_q8_matmul(float *out, const float *inp, const int8_t *q, const float *d, const float *bias, int N, int rows,
                    int cols, float *xpad) {
    K()->q8_matmul(out, inp, q, d, bias, N, rows, cols, xpad);
}
