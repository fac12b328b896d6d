/*
 * comm.c — fm_comm (fm.h): which backend a process gets, and the calls that go through its
 * table (comm.h). A process started by an MPI launcher in a build with MPI gets MPI's world;
 * any other gets one process (comm_single.c) and makes no MPI call, so a run without mpirun is
 * today's single process exactly. Not for: choosing what to communicate (the trainer does).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "dist/comm.h"

/* The number of processes an MPI launcher says it started: mpirun / mpiexec of OpenMPI
 * (OMPI_COMM_WORLD_SIZE), MPICH's Hydra and Slurm's PMI (PMI_SIZE); PMIx alone (PMIX_RANK) counts
 * as launched with an unknown size (-1). 0 when nothing says so. */
static int launched_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return getenv("PMIX_RANK") ? -1 : 0;
}

const char *fm_comm_backend(void) {
#ifdef FM_MPI
    return "mpi";
#else
    return "none";
#endif
}

fm_status fm_comm_init(fm_comm **out) {
    *out = NULL;
    fm_comm *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_fail(FM_ERR_NOMEM, "out of memory for the communicator");
    int launched = launched_size();
#ifdef FM_MPI
    if (launched != 0) {
        fm_status st = fm_comm_mpi_init(c);
        if (st) {
            fm_free(c);
            return st;
        }
        *out = c;
        return FM_OK;
    }
#else
    if (launched > 1 || launched < 0) {
        fm_free(c);
        return fm_fail(FM_ERR_CONFIG, "started by an MPI launcher (%s processes) but this fm was built without MPI: "
                       "each process would train alone; build with make MPI=1, or run without mpirun",
                       launched > 1 ? "several" : "an unknown number of");
    }
#endif
    fm_comm_single_init(c);
    *out = c;
    return FM_OK;
}

void fm_comm_free(fm_comm *c) {
    if (!c) return;
    c->ops->finalize(c);
    fm_free(c);
}

int fm_comm_rank(const fm_comm *c) { return c ? c->rank : 0; }
int fm_comm_size(const fm_comm *c) { return c ? c->size : 1; }
int fm_comm_local_size(const fm_comm *c) { return c ? c->local_size : 1; }

fm_status fm_comm_allreduce_sum_f32(fm_comm *c, float *x, size_t n) {
    return c && c->size > 1 && n ? c->ops->allreduce_f32(c, x, n) : FM_OK;
}

fm_status fm_comm_allreduce_sum_f64(fm_comm *c, double *x, size_t n) {
    return c && c->size > 1 && n ? c->ops->allreduce_f64(c, x, n) : FM_OK;
}

fm_status fm_comm_bcast(fm_comm *c, void *bytes, size_t n, int root) {
    if (c && (root < 0 || root >= c->size)) return fm_fail(FM_ERR_ARG, "broadcast from rank %d of %d", root, c->size);
    return c && c->size > 1 && n ? c->ops->bcast(c, bytes, n, root) : FM_OK;
}

fm_status fm_comm_allgather_f32(fm_comm *c, float *x, const int *counts, const int *offsets) {
    return c && c->size > 1 ? c->ops->allgather_f32(c, x, counts, offsets) : FM_OK;
}

fm_status fm_comm_gather_f32(fm_comm *c, const float *mine, float *all, const int *counts, const int *offsets,
                             int root) {
    if (c && (root < 0 || root >= c->size)) return fm_fail(FM_ERR_ARG, "gather onto rank %d of %d", root, c->size);
    if (c && c->size > 1) return c->ops->gather_f32(c, mine, all, counts, offsets, root);
    if (counts[0] > 0 && all + offsets[0] != mine) memmove(all + offsets[0], mine, sizeof(float) * (size_t)counts[0]);
    return FM_OK;
}

fm_status fm_comm_iallreduce_sum_f32(fm_comm *c, float *x, size_t n) {
    return c && c->size > 1 && n ? c->ops->iallreduce_f32(c, x, n) : FM_OK;
}

fm_status fm_comm_progress(fm_comm *c) { return c && c->size > 1 ? c->ops->progress(c) : FM_OK; }

fm_status fm_comm_wait_all(fm_comm *c) { return c && c->size > 1 ? c->ops->wait_all(c) : FM_OK; }

fm_status fm_comm_barrier(fm_comm *c) { return c && c->size > 1 ? c->ops->barrier(c) : FM_OK; }

_Noreturn void fm_comm_abort(fm_comm *c, int code) {
    if (c) c->ops->abort(c, code);
    exit(code);
}
