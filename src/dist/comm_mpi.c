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
    (void)c;
    MPI_Finalize();
}

static const fm_comm_ops mpi_ops = {"mpi", mpi_allreduce_f32, mpi_allreduce_f64, mpi_bcast, mpi_barrier, mpi_abort,
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
    c->impl = NULL;
    return FM_OK;
}
#else
typedef int fm_comm_mpi_absent; /* ISO C wants a translation unit to hold something */
#endif
