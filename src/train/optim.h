/*
 * optim.h — the inside of fm_optimizer, shared by optim.c and checkpoint.c (which saves and
 * restores the moments and the step for exact resume), and the ZeRO-1 calls the trainer makes
 * around a checkpoint (optim_shard.c).
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
    size_t flat;       /* index of its first element among all trainable elements (slot order) */
    /* the elements [own_lo, own_hi) this process updates and holds moments of: 0 and numel,
     * except under ZeRO-1 (fm_optimizer_shard), where each rank owns a stretch of the elements */
    size_t own_lo, own_hi;
    float *m, *v;      /* (own_hi - own_lo) first and second moments, views into the optimizer's buffers */
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
    float *m, *v;      /* (view_hi - view_lo) the moments held, slot after slot */
    size_t view_lo, view_hi; /* the flat elements m and v hold: 0 and n, or this rank's shard */
    /* ZeRO-1 (optim_shard.c): the ranks sharing the moments (NULL: this process holds all), this
     * rank's shard [shard_lo, shard_hi), and its buffers while m and v hold the gathered whole */
    struct fm_comm *comm;
    size_t shard_lo, shard_hi;
    float *shard_m, *shard_v;
    int64_t step;      /* updates done */
    int n_slots;
    fm_adam_slot *slots;
    int n_runs;
    fm_grad_run *runs;
    size_t n_chunks;
    double *partial;   /* (n_chunks) partial sums of the gradient norm */
};

/* Points every slot's m, v and own range at buffers holding the flat elements [lo, hi). */
void fm_optim_point_slots(fm_optimizer *o, float *m, float *v, size_t lo, size_t hi);

/* ZeRO-1, after the sharded update: every rank's stretch of the trainable parameters sent to
 * every other rank (an all-gather in place), so all hold the same weights. A collective. */
fm_status fm_optim_allgather_params(fm_optimizer *o, fm_model *model);

/* ZeRO-1, around a checkpoint: the whole moments gathered onto rank `root` (which allocates
 * them for the while; its slots then view them, so fm_checkpoint_save writes them as one
 * process's), and back to the shard after. Collectives; no-ops when the moments are not sharded. */
fm_status fm_optim_gather_moments(fm_optimizer *o, int root);
void fm_optim_release_moments(fm_optimizer *o);

#endif /* FM_OPTIM_H */
