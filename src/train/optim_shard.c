/*
 * optim_shard.c — ZeRO-1 for fm's AdamW: the optimizer's moments sharded across the ranks of a
 * data-parallel job (docs/distributed.md).
 *
 * What it is for: memory. Every rank sums the whole gradient as before (all-reduce) and computes
 * the same global norm, but keeps the first and second moments of its own 1/N stretch of the
 * trainable elements only (elements in slot order, cut at multiples of SHARD_ALIGN), updates
 * those elements alone, and the ranks then all-gather the parameters. AdamW reads nothing but
 * the element it writes, so the weights are the bits of the unsharded run. For a checkpoint the
 * moments are gathered whole onto one rank, which writes them as one process would: a
 * checkpoint does not depend on N, and a resume on any number of ranks loads it whole and
 * shards it again. What it is not for: sharding gradients or parameters (ZeRO-2, -3), or
 * deciding when to checkpoint (the trainer does).
 */
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "dist/comm.h"
#include "train/optim.h"

/* Shard boundaries fall on multiples of this many elements (a 64-byte line of floats). */
#define SHARD_ALIGN 16
/* The most elements one collective moves (well below INT_MAX). */
#define PIECE ((size_t)1 << 28)

/* First flat element of rank r's shard (r = size: n). */
static size_t shard_start(size_t n, int r, int size) {
    if (r >= size) return n;
    size_t at = (size_t)((uint64_t)n * (uint64_t)r / (uint64_t)size); /* n < 2^43, r < 2^20 */
    return at / SHARD_ALIGN * SHARD_ALIGN;
}

/* For the flat stretch [lo, lo + len): each rank's part of it, as counts and offsets from lo. */
static void parts_of(const fm_optimizer *o, size_t lo, size_t len, int *counts, int *offsets) {
    int size = fm_comm_size(o->comm);
    for (int r = 0; r < size; r++) {
        size_t a = shard_start(o->n, r, size), b = shard_start(o->n, r + 1, size);
        if (a < lo) a = lo;
        if (b > lo + len) b = lo + len;
        counts[r] = b > a ? (int)(b - a) : 0;
        offsets[r] = b > a ? (int)(a - lo) : 0;
    }
}

fm_status fm_optimizer_shard(fm_optimizer *o, fm_comm *comm, size_t *held, size_t *whole) {
    size_t bytes_whole = 2 * sizeof(float) * o->n;
    if (whole) *whole = bytes_whole;
    if (held) *held = bytes_whole;
    if (fm_comm_size(comm) <= 1) return FM_OK;
    if (o->comm) return fm_fail(FM_ERR_ARG, "the optimizer's moments are sharded already");
    int rank = fm_comm_rank(comm), size = fm_comm_size(comm);
    size_t lo = shard_start(o->n, rank, size), hi = shard_start(o->n, rank + 1, size);
    size_t own = hi - lo;
    float *m = fm_alloc_big(sizeof(float) * (own ? own : 1), 0);
    float *v = fm_alloc_big(sizeof(float) * (own ? own : 1), 0);
    if (!m || !v) {
        fm_free_big(m), fm_free_big(v);
        return fm_fail(FM_ERR_NOMEM, "out of memory for rank %d's shard of the moments (%zu elements)", rank, own);
    }
    memcpy(m, o->m + lo, sizeof(float) * own); /* a loaded checkpoint's moments, or zeros */
    memcpy(v, o->v + lo, sizeof(float) * own);
    fm_free_big(o->m), fm_free_big(o->v);
    fm_optim_point_slots(o, m, v, lo, hi);
    o->comm = comm, o->shard_lo = lo, o->shard_hi = hi;
    if (held) *held = 2 * sizeof(float) * own;
    return FM_OK;
}

fm_status fm_optim_allgather_params(fm_optimizer *o, fm_model *model) {
    int size = fm_comm_size(o->comm);
    int *counts = fm_malloc(2 * sizeof(int) * size);
    if (!counts) return fm_fail(FM_ERR_NOMEM, "out of memory gathering the parameters");
    int *offsets = counts + size;
    fm_status st = FM_OK;
    /* runs of slots whose parameters lie next to each other in memory, one collective per piece */
    for (int k = 0; !st && k < o->n_slots;) {
        float *data = fm_model_tensor(model, o->slots[k].tensor)->data;
        size_t flat = o->slots[k].flat, len = o->slots[k].numel;
        for (k++; k < o->n_slots && fm_model_tensor(model, o->slots[k].tensor)->data == data + len; k++)
            len += o->slots[k].numel;
        for (size_t at = 0; !st && at < len; at += PIECE) {
            size_t piece = len - at < PIECE ? len - at : PIECE;
            parts_of(o, flat + at, piece, counts, offsets);
            st = fm_comm_allgather_f32(o->comm, data + at, counts, offsets);
        }
    }
    fm_free(counts);
    return st;
}

fm_status fm_optim_gather_moments(fm_optimizer *o, int root) {
    if (!o->comm || o->shard_m) return FM_OK;
    int size = fm_comm_size(o->comm), is_root = fm_comm_rank(o->comm) == root;
    /* whether the root found the memory, so that no rank waits in a gather the root skips */
    double missing = 0.0;
    float *all_m = NULL, *all_v = NULL;
    if (is_root) {
        all_m = fm_alloc_big(sizeof(float) * o->n, 0);
        all_v = fm_alloc_big(sizeof(float) * o->n, 0);
        missing = !all_m || !all_v;
    }
    fm_status st = fm_comm_allreduce_sum_f64(o->comm, &missing, 1);
    int *counts = st ? NULL : fm_malloc(2 * sizeof(int) * size);
    double no_counts = !st && !counts;
    if (!st) st = fm_comm_allreduce_sum_f64(o->comm, &no_counts, 1);
    if (!st && (missing > 0.0 || no_counts > 0.0))
        st = fm_fail(FM_ERR_NOMEM, "out of memory gathering AdamW's moments (%zu elements) for a checkpoint", o->n);
    for (size_t at = 0; !st && at < o->n; at += PIECE) {
        size_t piece = o->n - at < PIECE ? o->n - at : PIECE;
        int *offsets = counts + size, rank = fm_comm_rank(o->comm);
        parts_of(o, at, piece, counts, offsets);
        /* this rank's part of the piece, within its shard buffers */
        size_t mine = counts[rank] ? at + (size_t)offsets[rank] - o->shard_lo : 0;
        st = fm_comm_gather_f32(o->comm, o->m + mine, all_m ? all_m + at : NULL, counts, offsets, root);
        if (!st) st = fm_comm_gather_f32(o->comm, o->v + mine, all_v ? all_v + at : NULL, counts, offsets, root);
    }
    fm_free(counts);
    if (st || !is_root) {
        fm_free_big(all_m), fm_free_big(all_v);
        return st;
    }
    o->shard_m = o->m, o->shard_v = o->v;
    fm_optim_point_slots(o, all_m, all_v, 0, o->n);
    return FM_OK;
}

void fm_optim_release_moments(fm_optimizer *o) {
    if (!o->shard_m) return;
    fm_free_big(o->m), fm_free_big(o->v);
    fm_optim_point_slots(o, o->shard_m, o->shard_v, o->shard_lo, o->shard_hi);
    o->shard_m = o->shard_v = NULL;
}
