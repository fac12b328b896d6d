/*
 * isa.h — the names of one instruction-set copy of the fast kernels.
 *
 * What it is for: gemm.c and kernels.c are compiled once per code path (the Makefile's
 * FM_CPU_PATHS: generic, avx2, avx512, avx512bf16 on x86-64), each time with that path's -m
 * flags and -DFM_ISA=<path>. Included first in those two files (before kernels.h), it renames
 * every fast kernel fm_k_X to fm_k_X_<path>, so the copies link side by side; dispatch.c picks
 * one copy's table (fm_cpu_table_<path>, defined at the end of kernels.c) at run time. Compiled
 * without -DFM_ISA (the fuzz and sanitizer builds that compile src/ directly, other CPUs) the
 * files are the generic copy.
 * Not for: the process-wide precision switches and fm_k_bf16_round, which are one shared
 * definition each (dispatch.c) and keep their names.
 */
#ifndef FM_CPU_ISA_H
#define FM_CPU_ISA_H

#ifndef FM_ISA
#define FM_ISA generic
#endif
#define FM_ISA_PASTE(name, isa) name##_##isa
#define FM_ISA_EXPAND(name, isa) FM_ISA_PASTE(name, isa)
#define FM_ISA_NAME(name) FM_ISA_EXPAND(name, FM_ISA)
#define FM_ISA_STR2(x) #x
#define FM_ISA_STR(x) FM_ISA_STR2(x)

#define fm_k_gemm FM_ISA_NAME(fm_k_gemm)
#define fm_k_gemm_fused FM_ISA_NAME(fm_k_gemm_fused)
#define fm_k_gemm_band FM_ISA_NAME(fm_k_gemm_band)
#define fm_k_encoder_forward FM_ISA_NAME(fm_k_encoder_forward)
#define fm_k_encoder_backward FM_ISA_NAME(fm_k_encoder_backward)
#define fm_k_layernorm_forward FM_ISA_NAME(fm_k_layernorm_forward)
#define fm_k_layernorm_backward FM_ISA_NAME(fm_k_layernorm_backward)
#define fm_k_linear_forward FM_ISA_NAME(fm_k_linear_forward)
#define fm_k_linear_backward FM_ISA_NAME(fm_k_linear_backward)
#define fm_k_attention_forward FM_ISA_NAME(fm_k_attention_forward)
#define fm_k_attention_backward FM_ISA_NAME(fm_k_attention_backward)
#define fm_k_gelu_forward FM_ISA_NAME(fm_k_gelu_forward)
#define fm_k_gelu_backward FM_ISA_NAME(fm_k_gelu_backward)
#define fm_k_residual_forward FM_ISA_NAME(fm_k_residual_forward)
#define fm_k_xent_row FM_ISA_NAME(fm_k_xent_row)
#define fm_k_sumsq FM_ISA_NAME(fm_k_sumsq)
#define fm_k_attend_cached FM_ISA_NAME(fm_k_attend_cached)
#define fm_k_adamw FM_ISA_NAME(fm_k_adamw)
#define fm_k_q8_matmul FM_ISA_NAME(fm_k_q8_matmul)

#endif /* FM_CPU_ISA_H */
