/*
 * optim.h — the inside of fm_optimizer, shared by optim.c and checkpoint.c (which saves and
 * restores the moments and the step for exact resume).
 */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include "fm.h"

#define FM_NORM_CHUNK 16384 /* elements per partial sum of the gradient norm */

/* The moments of one trainable tensor. */
typedef struct {
    int tensor;        /* index in the model's tensor table */
    size_t numel;
    int decay;         /* 1 when weight decay applies */
    float *m, *v;      /* (numel) first and second moments, views into the optimizer's buffers */
} fm_adam_slot;

/* A stretch of gradients contiguous in memory (adjacent trainable tensors merged), the unit of
 * the gradient norm's fixed chunking. */
typedef struct {
    const float *grad;
    size_t n;
    size_t first_chunk; /* index of its first chunk in partial */
} fm_grad_run;

struct fm_optimizer {
    fm_adamw_config cfg;
    size_t n;          /* trainable parameters */
    float *m, *v;      /* (n) all moments, slot after slot */
    int64_t step;      /* updates done */
    int n_slots;
    fm_adam_slot *slots;
    int n_runs;
    fm_grad_run *runs;
    size_t n_chunks;
    double *partial;   /* (n_chunks) partial sums of the gradient norm */
};

#endif /* FM_OPTIM_H */
