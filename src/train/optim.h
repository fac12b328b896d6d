/*
 * optim.h — the inside of fm_optimizer, shared by optim.c and checkpoint.c (which saves and
 * restores the moments and the step for exact resume).
 */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include "fm.h"

#define FM_NORM_CHUNK 16384 /* elements per partial sum of the gradient norm */

struct fm_optimizer {
    fm_adamw_config cfg;
    size_t n;          /* parameters */
    float *m, *v;      /* (n) first and second moments */
    int64_t step;      /* updates done */
    size_t n_chunks;
    double *partial;   /* (n_chunks) partial sums of the gradient norm */
    int n_tensors;
    int *tensor_decay; /* per tensor: 1 when weight decay applies */
    size_t *tensor_offset, *tensor_numel;
};

#endif /* FM_OPTIM_H */
