/*
 * comm_mpi.c — fm_comm over MPI (OpenMPI from Debian; make MPI=1 compiles it with FM_MPI and
 * mpicc's flags, other builds compile nothing here). MPI_COMM_WORLD with its default error
 * handler, MPI_ERRORS_ARE_FATAL: a failed collective ends the whole job rather than leaving a
 * rank waiting. Counts above INT_MAX go in pieces. The calls come from the thread that
 * initialised MPI only (MPI_THREAD_FUNNELED; OpenMP threads never call it).
 */
#ifdef FM_MPI
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "dist/comm.h"

/* The largest piece one MPI call moves (a whole number of doubles). */
#define PIECE ((size_t)1 << 30)

static fm_status mpi_allreduce(void *x, size_t n, size_t elem, MPI_Datatype type) {
    char *p = x;
    size_t per = PIECE / elem;
    for (size_t i = 0; i < n; i += per) {
        size_t m = n - i < per ? n - i : per;
        if (MPI_Allreduce(MPI_IN_PLACE, p + i * elem, (int)m, type, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return fm_fail(FM_ERR_IO, "MPI_Allreduce of %zu values failed", m);
    }
    return FM_OK;
}

static fm_status mpi_allreduce_f32(fm_comm *c, float *x, size_t n) {
    (void)c;
    return mpi_allreduce(x, n, sizeof(float), MPI_FLOAT);
}

static fm_status mpi_allreduce_f64(fm_comm *c, double *x, size_t n) {
    (void)c;
    return mpi_allreduce(x, n, sizeof(double), MPI_DOUBLE);
}

static fm_status mpi_bcast(fm_comm *c, void *bytes, size_t n, int root) {
    (void)c;
    char *p = bytes;
    for (size_t i = 0; i < n; i += PIECE) {
        size_t m = n - i < PIECE ? n - i : PIECE;
        if (MPI_Bcast(p + i, (int)m, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
            return fm_fail(FM_ERR_IO, "MPI_Bcast of %zu bytes failed", m);
    }
    return FM_OK;
}

static fm_status mpi_allgather_f32(fm_comm *c, float *x, const int *counts, const int *offsets) {
    (void)c;
    if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, offsets, MPI_FLOAT, MPI_COMM_WORLD) != MPI_SUCCESS)
        return fm_fail(FM_ERR_IO, "MPI_Allgatherv failed");
    return FM_OK;
}

static fm_status mpi_gather_f32(fm_comm *c, const float *mine, float *all, const int *counts, const int *offsets,
                                int root) {
    int ok;
    if (c->rank == root) {
        if (counts[root] > 0 && all + offsets[root] != mine)
            memmove(all + offsets[root], mine, sizeof(float) * (size_t)counts[root]);
        ok = MPI_Gatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, counts, offsets, MPI_FLOAT, root, MPI_COMM_WORLD);
    } else {
        ok = MPI_Gatherv(mine, counts[c->rank], MPI_FLOAT, NULL, NULL, NULL, MPI_FLOAT, root, MPI_COMM_WORLD);
    }
    return ok == MPI_SUCCESS ? FM_OK : fm_fail(FM_ERR_IO, "MPI_Gatherv failed");
}

/* The started sums' requests (c->impl). */
typedef struct {
    MPI_Request *reqs;
    int n, cap;
} pending;

static fm_status mpi_iallreduce_f32(fm_comm *c, float *x, size_t n) {
    pending *p = c->impl;
    for (size_t i = 0; i < n; i += PIECE / sizeof(float)) {
        size_t m = n - i < PIECE / sizeof(float) ? n - i : PIECE / sizeof(float);
        if (p->n == p->cap) {
            int cap = p->cap ? 2 * p->cap : 64;
            MPI_Request *r = fm_realloc(p->reqs, sizeof *r * (size_t)cap);
            if (!r) return fm_fail(FM_ERR_NOMEM, "out of memory for MPI requests");
            p->reqs = r, p->cap = cap;
        }
        if (MPI_Iallreduce(MPI_IN_PLACE, x + i, (int)m, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &p->reqs[p->n]) !=
            MPI_SUCCESS)
            return fm_fail(FM_ERR_IO, "MPI_Iallreduce of %zu values failed", m);
        p->n++;
    }
    return FM_OK;
}

static fm_status mpi_progress(fm_comm *c) {
    pending *p = c->impl;
    int done = 0;
    if (p->n && MPI_Testall(p->n, p->reqs, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
        return fm_fail(FM_ERR_IO, "MPI_Testall failed");
    if (done) p->n = 0;
    return FM_OK;
}

static fm_status mpi_wait_all(fm_comm *c) {
    pending *p = c->impl;
    if (p->n && MPI_Waitall(p->n, p->reqs, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
        return fm_fail(FM_ERR_IO, "MPI_Waitall failed");
    p->n = 0;
    return FM_OK;
}

static fm_status mpi_barrier(fm_comm *c) {
    (void)c;
    return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? FM_OK : fm_fail(FM_ERR_IO, "MPI_Barrier failed");
}

static _Noreturn void mpi_abort(fm_comm *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
    _Exit(code); /* MPI_Abort does not return; should it, the process ends anyway */
}

static void mpi_finalize(fm_comm *c) {
    pending *p = c->impl;
    if (p) fm_free(p->reqs);
    fm_free(p);
    c->impl = NULL;
    MPI_Finalize();
}

static const fm_comm_ops mpi_ops = {"mpi", mpi_allreduce_f32, mpi_allreduce_f64, mpi_bcast,
                                    mpi_allgather_f32, mpi_gather_f32, mpi_iallreduce_f32, mpi_progress,
                                    mpi_wait_all, mpi_barrier, mpi_abort,
                                    mpi_finalize};

fm_status fm_comm_mpi_init(fm_comm *c) {
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return fm_fail(FM_ERR_IO, "MPI_Init_thread failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    MPI_Comm local;
    c->local_size = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_size(local, &c->local_size);
        MPI_Comm_free(&local);
    }
    c->ops = &mpi_ops;
    c->impl = fm_calloc(1, sizeof(pending));
    if (!c->impl) {
        MPI_Finalize();
        return fm_fail(FM_ERR_NOMEM, "out of memory for the communicator");
    }
    return FM_OK;
}
#else
typedef int fm_comm_mpi_absent; /* ISO C wants a translation unit to hold something */
#endif
