/*
 * comm.h — the backends behind fm_comm (fm.h): a table of operations, one per backend
 * (comm_single.c: one process; comm_mpi.c: MPI, only in builds with FM_MPI). A new backend
 * (NCCL, with its own launcher) fills the same table; the trainer sees only fm_comm_*.
 */
#ifndef FM_DIST_COMM_H
#define FM_DIST_COMM_H

#include <stddef.h>

#include "fm.h"

typedef struct {
    const char *name;
    /* in-place element-wise sums; the same bits on every rank */
    fm_status (*allreduce_f32)(fm_comm *c, float *x, size_t n);
    fm_status (*allreduce_f64)(fm_comm *c, double *x, size_t n);
    fm_status (*bcast)(fm_comm *c, void *bytes, size_t n, int root);
    /* ZeRO-1. In place: rank r's counts[r] floats at x + offsets[r] copied to every rank's x. */
    fm_status (*allgather_f32)(fm_comm *c, float *x, const int *counts, const int *offsets);
    /* rank r's counts[r] floats (mine) into root's all + offsets[r]; all is root's alone */
    fm_status (*gather_f32)(fm_comm *c, const float *mine, float *all, const int *counts, const int *offsets,
                            int root);
    /* Overlap: starts an in-place sum that completes by wait_all (x untouched meanwhile);
     * progress lets started sums advance (MPI moves them only inside its calls) */
    fm_status (*iallreduce_f32)(fm_comm *c, float *x, size_t n);
    fm_status (*progress)(fm_comm *c);
    fm_status (*wait_all)(fm_comm *c);
    fm_status (*barrier)(fm_comm *c);
    void (*abort)(fm_comm *c, int code); /* does not return */
    void (*finalize)(fm_comm *c);
} fm_comm_ops;

struct fm_comm {
    const fm_comm_ops *ops;
    int rank, size, local_size;
    void *impl; /* the backend's */
};

/* The ZeRO-1 collectives of the table above (fm_comm_size 1: plain copies). counts and offsets:
 * one per rank, each count below INT_MAX (callers cut larger stretches into pieces). */
fm_status fm_comm_allgather_f32(fm_comm *c, float *x, const int *counts, const int *offsets);
fm_status fm_comm_gather_f32(fm_comm *c, const float *mine, float *all, const int *counts, const int *offsets,
                             int root);

/* The overlap's calls of the table above; no-ops for one process. Every rank starts the same
 * sums in the same order. */
fm_status fm_comm_iallreduce_sum_f32(fm_comm *c, float *x, size_t n);
fm_status fm_comm_progress(fm_comm *c);
fm_status fm_comm_wait_all(fm_comm *c);

/* Fills c as one process (rank 0 of 1). */
void fm_comm_single_init(fm_comm *c);
#ifdef FM_MPI
/* Initialises MPI and fills c with MPI's world; MPI's own errors end the job. */
fm_status fm_comm_mpi_init(fm_comm *c);
#endif

#endif
