/*
 * threads.c — the thread count every kernel uses (OpenMP).
 *
 * Kernels split work by output element, so the count changes speed, never results.
 */
#include <omp.h>

#include "fm.h"

void fm_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
}

int fm_get_threads(void) { return omp_get_max_threads(); }
