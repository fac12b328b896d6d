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
    fm_status (*barrier)(fm_comm *c);
    void (*abort)(fm_comm *c, int code); /* does not return */
    void (*finalize)(fm_comm *c);
} fm_comm_ops;

struct fm_comm {
    const fm_comm_ops *ops;
    int rank, size, local_size;
    void *impl; /* the backend's */
};

/* Fills c as one process (rank 0 of 1). */
void fm_comm_single_init(fm_comm *c);
#ifdef FM_MPI
/* Initialises MPI and fills c with MPI's world; MPI's own errors end the job. */
fm_status fm_comm_mpi_init(fm_comm *c);
#endif

#endif
