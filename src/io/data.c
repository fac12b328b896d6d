/*
 * data.c — token shards: the on-disk form of a tokenized corpus (format in fm.h).
 *
 * What it is for: `fm data prepare` writes them, trainers and evaluators read them (mmap).
 * Opening checks everything a damaged or foreign file could get wrong, naming the file.
 * Not for: tokenizing (tokenizer.c) or batching policy (the trainer's).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"

#define SHARD_MAGIC "FMTOKENS"
#define SHARD_VERSION 1
#define SHARD_HEADER 64

struct fm_shard {
    char *path;
    void *map;
    size_t map_size;
    const unsigned char *tokens; /* n * width bytes */
    size_t n;
    int width;
    int vocab_size;
    uint64_t source_bytes;
    uint64_t checksum;
};

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); } /* host is little-endian */
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

fm_status fm_shard_write(const char *path, const int *tokens, size_t n, int vocab_size, uint64_t source_bytes) {
    if (vocab_size < 1) return fm_fail(FM_ERR_ARG, "%s: vocabulary size %d", path, vocab_size);
    int width = vocab_size <= 65536 ? 2 : 4;
    unsigned char *data = fm_malloc(n * width + 1);
    if (!data) return fm_fail(FM_ERR_NOMEM, "%s: out of memory for %zu tokens", path, n);
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= vocab_size) {
            fm_free(data);
            return fm_fail(FM_ERR_ARG, "%s: token %d at %zu is outside the vocabulary [0, %d)", path,
                           tokens[i], i, vocab_size);
        }
        if (width == 2) {
            uint16_t t = (uint16_t)tokens[i];
            memcpy(data + 2 * i, &t, 2);
        } else {
            uint32_t t = (uint32_t)tokens[i];
            memcpy(data + 4 * i, &t, 4);
        }
    }
    unsigned char header[SHARD_HEADER] = {0};
    memcpy(header, SHARD_MAGIC, 8);
    put_u32(header + 8, SHARD_VERSION);
    put_u32(header + 12, (uint32_t)width);
    put_u64(header + 16, n);
    put_u64(header + 24, fnv1a(data, n * width));
    put_u32(header + 32, (uint32_t)vocab_size);
    put_u64(header + 40, source_bytes);
    fm_atomic_file af;
    fm_status st = fm_atomic_open(&af, path);
    if (st == FM_OK) {
        fm_atomic_write(&af, header, sizeof header);
        fm_atomic_write(&af, data, n * width);
        st = fm_atomic_commit(&af);
    }
    fm_free(data);
    return st;
}

static fm_status check_shard(fm_shard *s, const char *path) {
    const unsigned char *h = s->map;
    if (s->map_size < SHARD_HEADER)
        return fm_fail(FM_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header", path,
                       s->map_size, SHARD_HEADER);
    if (memcmp(h, SHARD_MAGIC, 8) != 0) return fm_fail(FM_ERR_FORMAT, "%s: not a token shard (bad magic)", path);
    if (get_u32(h + 8) != SHARD_VERSION)
        return fm_fail(FM_ERR_FORMAT, "%s: shard version %u, this fm reads version %d", path, get_u32(h + 8),
                       SHARD_VERSION);
    s->width = (int)get_u32(h + 12);
    if (s->width != 2 && s->width != 4)
        return fm_fail(FM_ERR_FORMAT, "%s: token width %d bytes (must be 2 or 4)", path, s->width);
    uint64_t n = get_u64(h + 16), vocab = get_u32(h + 32);
    if (vocab < 1 || vocab > (s->width == 2 ? 65536u : 16777216u))
        return fm_fail(FM_ERR_FORMAT, "%s: vocabulary size %llu does not fit the token width", path,
                       (unsigned long long)vocab);
    uint64_t payload = s->map_size - SHARD_HEADER;
    if (n > payload / s->width || n * s->width != payload)
        return fm_fail(FM_ERR_FORMAT, "%s: truncated or padded: the header says %llu tokens (%llu bytes), "
                       "the file holds %llu bytes of tokens", path, (unsigned long long)n,
                       (unsigned long long)(n * s->width), (unsigned long long)payload);
    s->tokens = h + SHARD_HEADER;
    s->n = (size_t)n;
    s->vocab_size = (int)vocab;
    s->source_bytes = get_u64(h + 40);
    s->checksum = get_u64(h + 24);
    if (fnv1a(s->tokens, payload) != s->checksum)
        return fm_fail(FM_ERR_FORMAT, "%s: checksum mismatch: the tokens are corrupt", path);
    for (size_t i = 0; i < s->n; i++) {
        uint32_t t;
        if (s->width == 2) {
            uint16_t t16;
            memcpy(&t16, s->tokens + 2 * i, 2);
            t = t16;
        } else {
            memcpy(&t, s->tokens + 4 * i, 4);
        }
        if (t >= vocab)
            return fm_fail(FM_ERR_FORMAT, "%s: token %u at %zu is outside the vocabulary [0, %llu)", path, t, i,
                           (unsigned long long)vocab);
    }
    return FM_OK;
}

fm_status fm_shard_open(fm_shard **out, const char *path) {
    *out = NULL;
    fm_shard *s = fm_calloc(1, sizeof *s);
    if (!s) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    fm_status st = FM_OK;
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0) {
        st = fm_fail(FM_ERR_IO, "%s: cannot open: %m", path);
    } else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = fm_fail(FM_ERR_IO, "%s: not a regular file", path);
    } else if (sb.st_size == 0) {
        st = fm_fail(FM_ERR_FORMAT, "%s: empty file", path);
    } else {
        s->map_size = (size_t)sb.st_size;
        s->map = mmap(NULL, s->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (s->map == MAP_FAILED) {
            s->map = NULL;
            st = fm_fail(FM_ERR_IO, "%s: cannot map: %m", path);
        } else {
            st = check_shard(s, path);
        }
    }
    if (fd >= 0) close(fd);
    if (st == FM_OK && !(s->path = fm_strdup(path))) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    if (st) {
        fm_shard_close(s);
        return st;
    }
    *out = s;
    return FM_OK;
}

void fm_shard_close(fm_shard *s) {
    if (!s) return;
    if (s->map) munmap(s->map, s->map_size);
    fm_free(s->path);
    fm_free(s);
}

size_t fm_shard_length(const fm_shard *s) { return s->n; }
int fm_shard_vocab_size(const fm_shard *s) { return s->vocab_size; }
uint64_t fm_shard_source_bytes(const fm_shard *s) { return s->source_bytes; }

void fm_shard_read(const fm_shard *s, size_t offset, size_t n, int *out) {
    if (s->width == 2) {
        for (size_t i = 0; i < n; i++) {
            uint16_t t;
            memcpy(&t, s->tokens + 2 * (offset + i), 2);
            out[i] = t;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t t;
            memcpy(&t, s->tokens + 4 * (offset + i), 4);
            out[i] = (int)t;
        }
    }
}

uint64_t fm_shard_checksum(const fm_shard *s) { return s->checksum; }
