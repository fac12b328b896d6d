/*
 * data.c — token shards: the on-disk form of a tokenized corpus (format in fm.h).
 *
 * What it is for: `fm data prepare` writes them, trainers and evaluators read them (mmap).
 * Opening checks everything a damaged or foreign file could get wrong, naming the file: every
 * header field is under the header's checksum (a flipped bit in the source-bytes count would
 * otherwise change the reported bits per byte silently), the tokens under their own. A shard
 * records the fingerprint of the tokenizer that made it (fm_tokenizer_fingerprint), and
 * fm_shard_check_tokenizer refuses it for a model with another tokenizer, naming both.
 * Not for: tokenizing (tokenizer.c) or batching policy (the trainer's).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"

#define SHARD_MAGIC "FMTOKENS"
#define SHARD_VERSION 2
#define SHARD_HEADER 64
#define SHARD_HEADER_SUMMED 56 /* bytes 0..55 under the header checksum at 56 */

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
    uint64_t tokenizer;         /* the tokenizer's fingerprint, 0 when not recorded */
    /* fm_shard_open_parts: the shards read as one (map NULL), part i's tokens from part_start[i] */
    struct fm_shard **parts;
    size_t *part_start;
    int n_parts;
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

fm_status fm_shard_write_with_fingerprint(const char *path, const int *tokens, size_t n, int vocab_size,
                                          uint64_t source_bytes, uint64_t tokenizer_fingerprint) {
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
    put_u64(header + 48, tokenizer_fingerprint);
    put_u64(header + SHARD_HEADER_SUMMED, fnv1a(header, SHARD_HEADER_SUMMED));
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

fm_status fm_shard_write(const char *path, const int *tokens, size_t n, int vocab_size, uint64_t source_bytes) {
    return fm_shard_write_with_fingerprint(path, tokens, n, vocab_size, source_bytes, 0);
}

static fm_status check_shard(fm_shard *s, const char *path) {
    const unsigned char *h = s->map;
    if (s->map_size < SHARD_HEADER)
        return fm_fail(FM_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header", path,
                       s->map_size, SHARD_HEADER);
    if (memcmp(h, SHARD_MAGIC, 8) != 0) return fm_fail(FM_ERR_FORMAT, "%s: not a token shard (bad magic)", path);
    if (get_u32(h + 8) == 1)
        return fm_fail(FM_ERR_FORMAT, "%s: a version 1 shard, from an older fm: its header is not under a checksum "
                       "and it does not record its tokenizer; make it again with fm data prepare", path);
    if (get_u32(h + 8) != SHARD_VERSION)
        return fm_fail(FM_ERR_FORMAT, "%s: shard version %u, this fm reads version %d", path, get_u32(h + 8),
                       SHARD_VERSION);
    /* before any field is believed: a damaged header is named as such, not as a truncated file */
    if (fnv1a(h, SHARD_HEADER_SUMMED) != get_u64(h + SHARD_HEADER_SUMMED))
        return fm_fail(FM_ERR_FORMAT, "%s: header checksum mismatch: the header is corrupt (its token width, "
                       "count, checksum, vocab_size, source bytes or tokenizer fingerprint is not what was "
                       "written)", path);
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
    s->tokenizer = get_u64(h + 48);
    if (get_u32(h + 36) != 0)
        return fm_fail(FM_ERR_FORMAT, "%s: the header's reserved bytes 36..39 are not zero", path);
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
    for (int i = 0; i < s->n_parts; i++) fm_shard_close(s->parts[i]);
    fm_free(s->parts), fm_free(s->part_start);
    if (s->map) munmap(s->map, s->map_size);
    fm_free(s->path);
    fm_free(s);
}

size_t fm_shard_length(const fm_shard *s) { return s->n; }
int fm_shard_vocab_size(const fm_shard *s) { return s->vocab_size; }
uint64_t fm_shard_source_bytes(const fm_shard *s) { return s->source_bytes; }

void fm_shard_read(const fm_shard *s, size_t offset, size_t n, int *out) {
    if (s->n_parts) { /* the part holding offset (binary search), then on into the next ones */
        int lo = 0, hi = s->n_parts - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (s->part_start[mid] <= offset) lo = mid;
            else hi = mid - 1;
        }
        for (int p = lo; n > 0 && p < s->n_parts; p++) {
            size_t at = offset - s->part_start[p], len = s->parts[p]->n - at, take = n < len ? n : len;
            fm_shard_read(s->parts[p], at, take, out);
            out += take, offset += take, n -= take;
        }
        return;
    }
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
uint64_t fm_shard_tokenizer_fingerprint(const fm_shard *s) { return s->tokenizer; }

fm_status fm_shard_check_tokenizer(const fm_shard *s, const fm_tokenizer *tok, const char *tok_name,
                                   const char *hint) {
    uint64_t want = fm_tokenizer_fingerprint(tok);
    if (s->tokenizer == want) return FM_OK;
    char note[1200] = "";
    fm_tokenizer *other = NULL;
    if (hint && fm_tokenizer_load(&other, hint) == FM_OK) {
        uint64_t fp = fm_tokenizer_fingerprint(other);
        if (fp == s->tokenizer)
            snprintf(note, sizeof note, " (that of %s)", hint);
        else if (fp != want)
            snprintf(note, sizeof note, " (and %s is a third one, %016llx)", hint, (unsigned long long)fp);
        fm_tokenizer_free(other);
    }
    if (!s->tokenizer)
        return fm_fail(FM_ERR_FORMAT, "%s records no tokenizer (written without one, not by fm data prepare), so "
                       "nothing says its ids are those of %s (tokenizer %016llx); make it with fm data prepare "
                       "--tokenizer %s", s->path, tok_name, (unsigned long long)want, tok_name);
    return fm_fail(FM_ERR_FORMAT, "%s was made by tokenizer %016llx%s, but %s is tokenizer %016llx: its ids "
                   "would be read as other text; make the data with fm data prepare --tokenizer %s", s->path,
                   (unsigned long long)s->tokenizer, note, tok_name, (unsigned long long)want, tok_name);
}

fm_status fm_shard_open_parts(fm_shard **out, const char *const *paths, int n) {
    *out = NULL;
    if (n < 1) return fm_fail(FM_ERR_ARG, "no shards to open");
    fm_shard *s = fm_calloc(1, sizeof *s);
    if (s) s->parts = fm_calloc((size_t)n, sizeof *s->parts), s->part_start = fm_calloc((size_t)n, sizeof(size_t));
    if (s) s->path = fm_strdup(paths[0]);
    if (!s || !s->parts || !s->part_start || !s->path) {
        if (s) fm_free(s->parts), fm_free(s->part_start), fm_free(s->path);
        fm_free(s);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", paths[0]);
    }
    fm_status st = FM_OK;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; !st && i < n; i++) {
        if ((st = fm_shard_open(&s->parts[i], paths[i]))) break;
        s->n_parts = i + 1;
        const fm_shard *p = s->parts[i];
        if (i > 0 && (p->vocab_size != s->vocab_size || p->tokenizer != s->tokenizer)) {
            st = fm_fail(FM_ERR_FORMAT, "%s: a %d-token vocabulary of tokenizer %016llx, but %s has %d of %016llx: "
                         "shards of two tokenizers", paths[i], p->vocab_size, (unsigned long long)p->tokenizer,
                         paths[0], s->vocab_size, (unsigned long long)s->tokenizer);
            break;
        }
        s->vocab_size = p->vocab_size, s->tokenizer = p->tokenizer, s->width = p->width;
        s->part_start[i] = s->n;
        s->n += p->n;
        s->source_bytes += p->source_bytes;
        unsigned char c[8];
        put_u64(c, p->checksum);
        for (int k = 0; k < 8; k++) h = (h ^ c[k]) * 0x100000001b3ull;
    }
    s->checksum = h;
    if (st) {
        fm_shard_close(s);
        return st;
    }
    *out = s;
    return FM_OK;
}
