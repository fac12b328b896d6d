/*
 * shard_source.c — the pre-training data source: random windows of a training shard, and the
 * held-out shard's windows in order.
 *
 * What it is for: fm pretrain's batches through the trainer's fm_data_source interface. Each
 * training row is T tokens from an offset drawn uniformly from the trainer's rng, with the T
 * tokens after them as targets; the rng and a running token count are the whole position, so
 * the trainer's checkpoint makes a resume exact. With an alignment A > 1 (image data: A tokens
 * per image) windows start only at multiples of A, training and held-out alike, so every row
 * begins at an image's first token. Under data parallelism each rank reads only the windows of
 * its own rows (fm_batch's read range); the offsets of all rows are drawn on every rank alike.
 * Not for: fine-tuning files (their own sources).
 */
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"

typedef struct {
    const fm_shard *train, *val;
    int T;
    size_t align;        /* windows start at multiples of align (1: anywhere) */
    size_t eval_stride;  /* held-out window w starts at w * eval_stride */
    size_t eval_windows; /* held-out windows of T tokens per evaluation */
    int *window;         /* (T + 1) */
} shard_source;

/* Whether row r of b is used by this process (fm_batch's read range). */
static int reads_row(const fm_batch *b, int r) { return b->read_end == 0 || (r >= b->read_first && r < b->read_end); }

static void fill_row(fm_batch *b, int row, const int *window) {
    memcpy(b->tokens + (size_t)row * b->T, window, sizeof(int) * b->T);
    memcpy(b->targets + (size_t)row * b->T, window + 1, sizeof(int) * b->T);
}

static fm_status next(void *ctx, fm_batch *b, fm_rng *rng, uint64_t *position) {
    shard_source *s = ctx;
    size_t n = fm_shard_length(s->train);
    for (int r = 0; r < b->B; r++) { /* every row's offset drawn, only this process's rows read */
        size_t off = fm_rng_u64(rng) % ((n - s->T - 1) / s->align + 1) * s->align;
        if (!reads_row(b, r)) continue;
        fm_shard_read(s->train, off, s->T + 1, s->window);
        fill_row(b, r, s->window);
    }
    b->rows = b->B;
    *position += (uint64_t)b->B * s->T;
    return FM_OK;
}

static fm_status eval_next(void *ctx, fm_batch *b, uint64_t index) {
    shard_source *s = ctx;
    size_t first = (size_t)index * b->B;
    b->rows = 0;
    for (size_t w = first; w < s->eval_windows && b->rows < b->B; w++, b->rows++) {
        if (!reads_row(b, b->rows)) continue;
        fm_shard_read(s->val, w * s->eval_stride, s->T + 1, s->window);
        fill_row(b, b->rows, s->window);
    }
    return FM_OK;
}

fm_status fm_shard_source_init(fm_data_source *out, const fm_shard *train, const fm_shard *val, int T,
                               size_t eval_tokens) {
    return fm_shard_source_init_aligned(out, train, val, T, eval_tokens, 1);
}

fm_status fm_shard_source_init_aligned(fm_data_source *out, const fm_shard *train, const fm_shard *val, int T,
                                       size_t eval_tokens, int align) {
    memset(out, 0, sizeof *out);
    if (align < 1) return fm_fail(FM_ERR_ARG, "data source: alignment %d", align);
    if (T < 1 || fm_shard_length(train) <= (size_t)T + 1 || (val && fm_shard_length(val) <= (size_t)T + 1))
        return fm_fail(FM_ERR_ARG, "the shards hold fewer than seq + 2 = %d tokens", T + 2);
    /* one tokenizer for both: held-out losses of ids from another vocabulary would mean nothing */
    if (val && fm_shard_vocab_size(train) != fm_shard_vocab_size(val))
        return fm_fail(FM_ERR_FORMAT, "the training shard has a %d-token vocabulary, the held-out shard %d",
                       fm_shard_vocab_size(train), fm_shard_vocab_size(val));
    if (val && fm_shard_tokenizer_fingerprint(train) != fm_shard_tokenizer_fingerprint(val))
        return fm_fail(FM_ERR_FORMAT, "the training shard was made by tokenizer %016llx, the held-out shard by "
                       "%016llx", (unsigned long long)fm_shard_tokenizer_fingerprint(train),
                       (unsigned long long)fm_shard_tokenizer_fingerprint(val));
    shard_source *s = fm_calloc(1, sizeof *s);
    int *window = fm_malloc(sizeof(int) * ((size_t)T + 1));
    if (!s || !window) {
        fm_free(s);
        fm_free(window);
        return fm_fail(FM_ERR_NOMEM, "out of memory for the data source");
    }
    s->train = train, s->val = val, s->T = T, s->window = window, s->align = (size_t)align;
    /* held-out windows: every T tokens, or at the first multiple of align from T on */
    s->eval_stride = ((size_t)T + align - 1) / align * align;
    if (val) {
        size_t windows = (fm_shard_length(val) - T - 1) / s->eval_stride + 1, want = (eval_tokens + T - 1) / T;
        s->eval_windows = windows < want ? windows : want;
    }
    out->ctx = s;
    out->next = next;
    out->eval_next = val ? eval_next : NULL;
    return FM_OK;
}

void fm_shard_source_free(fm_data_source *source) {
    shard_source *s = source->ctx;
    if (s) fm_free(s->window);
    fm_free(s);
    source->ctx = NULL;
}
