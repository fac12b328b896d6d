/*
 * comm_single.c — fm_comm of one process: the sums and broadcasts have nothing to do, abort
 * is exit. What every build gives a run without a launcher, so that it is today's single
 * process bit for bit.
 */
#include <stdlib.h>
#include <string.h>

#include "dist/comm.h"

static fm_status single_allreduce_f32(fm_comm *c, float *x, size_t n) {
    (void)c, (void)x, (void)n;
    return FM_OK;
}

static fm_status single_allreduce_f64(fm_comm *c, double *x, size_t n) {
    (void)c, (void)x, (void)n;
    return FM_OK;
}

static fm_status single_bcast(fm_comm *c, void *bytes, size_t n, int root) {
    (void)c, (void)bytes, (void)n, (void)root;
    return FM_OK;
}

static fm_status single_allgather_f32(fm_comm *c, float *x, const int *counts, const int *offsets) {
    (void)c, (void)x, (void)counts, (void)offsets;
    return FM_OK;
}

static fm_status single_gather_f32(fm_comm *c, const float *mine, float *all, const int *counts, const int *offsets,
                                   int root) {
    (void)c, (void)root;
    if (counts[0] > 0 && all + offsets[0] != mine) memmove(all + offsets[0], mine, sizeof(float) * (size_t)counts[0]);
    return FM_OK;
}

static fm_status single_iallreduce_f32(fm_comm *c, float *x, size_t n) {
    (void)c, (void)x, (void)n;
    return FM_OK;
}

static fm_status single_nothing(fm_comm *c) {
    (void)c;
    return FM_OK;
}

static fm_status single_barrier(fm_comm *c) {
    (void)c;
    return FM_OK;
}

static _Noreturn void single_abort(fm_comm *c, int code) {
    (void)c;
    exit(code);
}

static void single_finalize(fm_comm *c) { (void)c; }

static const fm_comm_ops single_ops = {"single", single_allreduce_f32, single_allreduce_f64, single_bcast,
                                       single_allgather_f32, single_gather_f32, single_iallreduce_f32,
                                       single_nothing, single_nothing, single_barrier, single_abort, single_finalize};

void fm_comm_single_init(fm_comm *c) {
    c->ops = &single_ops;
    c->rank = 0, c->size = 1, c->local_size = 1;
    c->impl = NULL;
}
