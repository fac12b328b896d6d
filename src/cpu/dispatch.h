/*
 * dispatch.h — the table of one code path's fast kernels, as dispatch.c chooses between them.
 *
 * What it is for: each instruction-set copy of gemm.c + kernels.c (see isa.h) defines one
 * fm_cpu_table_<path>; dispatch.c holds the table of the path chosen at run time and forwards
 * every fm_k_* call of kernels.h through it. Not for: callers of the kernels (they use
 * kernels.h's names) or the choice itself (dispatch.c, fm_cpu_select in fm.h).
 */
#ifndef FM_CPU_DISPATCH_H
#define FM_CPU_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/kernels.h"

typedef struct {
    const char *name; /* the path: "generic", "avx2", "avx512", "avx512bf16" */
    void (*gemm)(int, int, int, int, int, const float *, int, const float *, int, float *, int, int);
    void (*gemm_fused)(int, int, int, int, int, const float *, int, const float *, int, float *, int, int,
                       const float *, float *);
    void (*gemm_band)(int, int, int, int, int, const float *, int, const float *, int, float *, int, int, fm_k_band,
                      int);
    void (*encoder_forward)(float *, const int *, const float *, const float *, int, int, int);
    void (*encoder_backward)(float *, float *, const float *, const int *, int, int, int);
    void (*layernorm_forward)(float *, float *, float *, const float *, const float *, const float *, int, int, float);
    void (*layernorm_backward)(float *, float *, float *, const float *, const float *, const float *, const float *,
                               const float *, int, int);
    void (*linear_forward)(float *, const float *, const float *, const float *, int, int, int);
    void (*linear_backward)(float *, float *, float *, const float *, const float *, const float *, int, int, int);
    void (*attention_forward)(float *, float *, const float *, int, int, int, int);
    void (*attention_backward)(float *, const float *, const float *, const float *, int, int, int, int);
    void (*attend_cached)(float *, float *, const float *, const float *, const float *, int, int, int, float);
    void (*gelu_forward)(float *, const float *, size_t);
    void (*gelu_backward)(float *, const float *, const float *, size_t);
    void (*residual_forward)(float *, const float *, const float *, size_t);
    float (*xent_row)(float *, const float *, int, int, float);
    double (*sumsq)(const float *, size_t);
    void (*adamw)(float *, const float *, float *, float *, size_t, float, float, float, float, float, float, float);
    void (*q8_matmul)(float *, const float *, const int8_t *, const float *, const float *, int, int, int, float *);
} fm_cpu_table;

/* The copies this build has (FM_CPU_X86 set by the Makefile on x86-64: all four; else generic). */
extern const fm_cpu_table fm_cpu_table_generic;
#ifdef FM_CPU_X86
extern const fm_cpu_table fm_cpu_table_avx2, fm_cpu_table_avx512, fm_cpu_table_avx512bf16;
#endif

#endif /* FM_CPU_DISPATCH_H */
