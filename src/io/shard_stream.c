/*
 * shard_stream.c — token shards written as a stream: numbered shards of a fixed number of
 * tokens, each filled by appends and finished when full, in constant memory.
 *
 * What it is for: `fm data prepare --shard-tokens` (cli/data_stream.c), corpora larger than
 * memory. The files are data.c's shard format (header in fm.h), byte for byte what
 * fm_shard_write would write for the same tokens, so fm_shard_open and everything that reads
 * shards read them unchanged. Each shard is written to NAME.tmp, its header filled in at the end,
 * synced and renamed: a shard that exists is whole. Not for: reading (data.c), tokenizing or
 * choosing the held-out share (the caller).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"

/* data.c's format (version 2): a 64-byte header, then the tokens as 2- or 4-byte integers */
#define SHARD_MAGIC "FMTOKENS"
#define SHARD_VERSION 2
#define SHARD_HEADER 64
#define SHARD_HEADER_SUMMED 56
#define FNV_START 0xcbf29ce484222325ull
#define OUT_BUFFER (1 << 20) /* bytes of tokens gathered before a write */

struct fm_shard_series {
    char *dir, *prefix;
    size_t shard_tokens;   /* tokens per shard; the last one may hold fewer */
    int vocab_size, width;
    uint64_t fingerprint;
    int fd;                /* the shard being written (its .tmp), -1 between shards */
    int index;             /* its number */
    size_t n;              /* its tokens so far */
    uint64_t bytes;        /* its source bytes so far */
    uint64_t hash;         /* FNV-1a of its token bytes so far */
    unsigned char *buf;    /* (OUT_BUFFER) token bytes not yet written */
    size_t buf_used;
    char path[4096], tmp[4100];
    int shards_done;
    size_t tokens_done;
    const fm_tokenizer *tok; /* fm_shard_series_count_bytes's, or NULL */
};

static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); } /* host is little-endian */
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

static fm_status write_all(int fd, const void *p, size_t n, off_t at, const char *path) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, c, n, at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return fm_fail(FM_ERR_IO, "%s: cannot write: %s", path, w < 0 ? strerror(errno) : "no space");
        c += w, n -= (size_t)w, at += w;
    }
    return FM_OK;
}

static fm_status flush_buf(fm_shard_series *s) {
    if (!s->buf_used) return FM_OK;
    off_t at = SHARD_HEADER + (off_t)(s->n * s->width - s->buf_used);
    fm_status st = write_all(s->fd, s->buf, s->buf_used, at, s->tmp);
    s->buf_used = 0;
    return st;
}

static fm_status begin_shard(fm_shard_series *s) {
    snprintf(s->path, sizeof s->path, "%s/%s-%05d.bin", s->dir, s->prefix, s->index);
    snprintf(s->tmp, sizeof s->tmp, "%s.tmp", s->path);
    s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) return fm_fail(FM_ERR_IO, "%s: cannot create: %s", s->tmp, strerror(errno));
    s->n = 0, s->bytes = 0, s->hash = FNV_START, s->buf_used = 0;
    return FM_OK;
}

/* The header written over the placeholder, the file synced and renamed into place. */
static fm_status end_shard(fm_shard_series *s) {
    fm_status st = flush_buf(s);
    unsigned char h[SHARD_HEADER] = {0};
    memcpy(h, SHARD_MAGIC, 8);
    put_u32(h + 8, SHARD_VERSION);
    put_u32(h + 12, (uint32_t)s->width);
    put_u64(h + 16, s->n);
    put_u64(h + 24, s->hash);
    put_u32(h + 32, (uint32_t)s->vocab_size);
    put_u64(h + 40, s->bytes);
    put_u64(h + 48, s->fingerprint);
    uint64_t hh = FNV_START;
    for (int i = 0; i < SHARD_HEADER_SUMMED; i++) hh = (hh ^ h[i]) * 0x100000001b3ull;
    put_u64(h + SHARD_HEADER_SUMMED, hh);
    if (!st) st = write_all(s->fd, h, sizeof h, 0, s->tmp);
    if (!st && fsync(s->fd) != 0) st = fm_fail(FM_ERR_IO, "%s: cannot sync: %s", s->tmp, strerror(errno));
    if (close(s->fd) != 0 && !st) st = fm_fail(FM_ERR_IO, "%s: cannot close: %s", s->tmp, strerror(errno));
    s->fd = -1;
    if (!st && rename(s->tmp, s->path) != 0)
        st = fm_fail(FM_ERR_IO, "%s: cannot rename into place: %s", s->path, strerror(errno));
    if (st) {
        unlink(s->tmp);
        return st;
    }
    s->shards_done++, s->tokens_done += s->n, s->index++;
    return FM_OK;
}

fm_status fm_shard_series_open(fm_shard_series **out, const char *dir, const char *prefix, size_t shard_tokens,
                               int vocab_size, uint64_t tokenizer_fingerprint) {
    *out = NULL;
    if (vocab_size < 1) return fm_fail(FM_ERR_ARG, "%s/%s: vocabulary size %d", dir, prefix, vocab_size);
    if (shard_tokens < 1) return fm_fail(FM_ERR_ARG, "%s/%s: shards of %zu tokens", dir, prefix, shard_tokens);
    if (strlen(dir) + strlen(prefix) + 32 > 4096) return fm_fail(FM_ERR_ARG, "%s/%s: path too long", dir, prefix);
    fm_shard_series *s = fm_calloc(1, sizeof *s);
    if (s) s->dir = fm_strdup(dir), s->prefix = fm_strdup(prefix), s->buf = fm_malloc(OUT_BUFFER);
    if (!s || !s->dir || !s->prefix || !s->buf) {
        if (s) fm_free(s->dir), fm_free(s->prefix), fm_free(s->buf);
        fm_free(s);
        return fm_fail(FM_ERR_NOMEM, "%s/%s: out of memory", dir, prefix);
    }
    s->shard_tokens = shard_tokens, s->vocab_size = vocab_size, s->width = vocab_size <= 65536 ? 2 : 4;
    s->fingerprint = tokenizer_fingerprint, s->fd = -1;
    *out = s;
    return FM_OK;
}

fm_status fm_shard_series_append(fm_shard_series *s, const int *tokens, size_t n, uint64_t source_bytes) {
    size_t total = n;
    uint64_t bytes_left = source_bytes;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->vocab_size)
            return fm_fail(FM_ERR_ARG, "%s/%s: token %d is outside the vocabulary [0, %d)", s->dir, s->prefix,
                           tokens[i], s->vocab_size);
    while (n > 0) {
        fm_status st;
        if (s->fd < 0 && (st = begin_shard(s))) return st;
        size_t room = s->shard_tokens - s->n, take = n < room ? n : room;
        /* the source bytes shared out in proportion to the tokens (the rest with the last part) */
        uint64_t bytes = take == n ? bytes_left : (uint64_t)((double)source_bytes * take / total);
        if (bytes > bytes_left) bytes = bytes_left;
        if (s->tok) { /* each token's own bytes: the same split however the appends were cut */
            bytes = 0;
            for (size_t i = 0; i < take; i++) {
                size_t len = 0;
                fm_tokenizer_token_bytes(s->tok, tokens[i], &len);
                bytes += len;
            }
        }
        for (size_t i = 0; i < take; i++) {
            unsigned char *p = s->buf + s->buf_used;
            if (s->width == 2) {
                uint16_t t = (uint16_t)tokens[i];
                memcpy(p, &t, 2);
            } else {
                uint32_t t = (uint32_t)tokens[i];
                memcpy(p, &t, 4);
            }
            for (int k = 0; k < s->width; k++) s->hash = (s->hash ^ p[k]) * 0x100000001b3ull;
            s->buf_used += s->width;
            s->n++;
            if (s->buf_used + 4 > OUT_BUFFER && (st = flush_buf(s))) return st;
        }
        s->bytes += bytes, bytes_left -= bytes < bytes_left ? bytes : bytes_left;
        tokens += take, n -= take;
        if (s->n == s->shard_tokens && (st = end_shard(s))) return st;
    }
    return FM_OK;
}

void fm_shard_series_count_bytes(fm_shard_series *s, const fm_tokenizer *tok) { s->tok = tok; }

fm_status fm_shard_series_finish(fm_shard_series *s, int *shards, size_t *tokens) {
    fm_status st = s->fd >= 0 ? end_shard(s) : FM_OK;
    if (shards) *shards = s->shards_done;
    if (tokens) *tokens = s->tokens_done;
    fm_shard_series_free(s);
    return st;
}

void fm_shard_series_free(fm_shard_series *s) {
    if (!s) return;
    if (s->fd >= 0) { /* unfinished: the partial shard is removed */
        close(s->fd);
        unlink(s->tmp);
    }
    fm_free(s->dir), fm_free(s->prefix), fm_free(s->buf);
    fm_free(s);
}
