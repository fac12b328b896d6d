/*
 * threads.c — the process-wide compute settings: the thread count every kernel uses (OpenMP)
 * and the precision of the matrix products.
 *
 * Kernels split work by output element, so the thread count changes speed, never results.
 * The precision does change results (bfloat16 factors), which is why it is a setting a run
 * records (fm pretrain keeps it in run.json) rather than something chosen per call.
 */
#include <omp.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/internal.h"

void fm_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
}

int fm_get_threads(void) { return omp_get_max_threads(); }

void fm_omp_release_idle(void) {
/* OpenMP 5.0's pause (GCC 9's libgomp has it before claiming 5.0); nothing to release in a
 * build without OpenMP (the ThreadSanitizer build compiles the pragmas out) */
#if defined(_OPENMP) && (_OPENMP >= 201811 || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9))
    if (!omp_in_parallel()) omp_pause_resource_all(omp_pause_soft);
#endif
}

void fm_set_matmul_precision(fm_matmul_precision precision) { fm_k_gemm_set_bf16(precision == FM_MATMUL_BF16); }

fm_matmul_precision fm_get_matmul_precision(void) { return fm_k_gemm_bf16() ? FM_MATMUL_BF16 : FM_MATMUL_FP32; }

const char *fm_matmul_precision_name(fm_matmul_precision precision) {
    return precision == FM_MATMUL_BF16 ? "bf16" : "fp32";
}

fm_status fm_matmul_precision_parse(const char *name, fm_matmul_precision *out) {
    if (name && strcmp(name, "fp32") == 0) *out = FM_MATMUL_FP32;
    else if (name && strcmp(name, "bf16") == 0) *out = FM_MATMUL_BF16;
    else return fm_fail(FM_ERR_ARG, "unknown matmul precision '%s' (expected fp32 or bf16)", name ? name : "(null)");
    return FM_OK;
}
