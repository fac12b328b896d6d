/*
 * gguf.c — writing GGUF, the file format of llama.cpp and ggml (version 3).
 *
 * What it is for: a file made of, in order and all little-endian,
 *   "GGUF", u32 version 3, u64 tensor count, u64 metadata count,
 *   metadata: per key a string (u64 length + bytes), u32 value type, the value (arrays: u32 element
 *     type, u64 count, the elements),
 *   tensor infos: per tensor its name (string), u32 dimensions, u64 ne[0..n), u32 ggml type, u64
 *     offset of its data from the start of the data section (a multiple of the alignment),
 *   zero padding to the alignment, then the data section: each tensor's bytes, padded to the
 *     alignment, in the order of the infos.
 * Metadata is serialised as it is added; tensor data is produced by a callback per tensor while
 * the file is written, one tensor at a time, so a model is never held twice in memory. The file
 * goes through fm_atomic_* (temporary file, fsync, rename). Also the element conversions GGUF
 * tensors need: float16 and ggml's Q8_0 blocks.
 * What it is not for: which keys and tensors a model needs (gguf_export.c), reading GGUF.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "io/gguf.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf.c assumes a little-endian host");

/* GGUF's metadata value types (gguf_type in ggml's gguf.h). */
enum { T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7, T_STRING = 8, T_ARRAY = 9 };

#define MAX_DIMS 4
#define MAX_NAME 64 /* GGML_MAX_NAME: names must be shorter */

typedef struct {
    char *name;
    fm_gguf_type type;
    int ndim;
    int64_t ne[MAX_DIMS];
    size_t nbytes; /* unpadded */
    fm_gguf_fill fill;
    void *user;
} tensor;

struct fm_gguf {
    uint32_t alignment;
    fm_text kv;        /* the serialised metadata */
    uint64_t n_kv;
    char **keys;       /* (n_kv) for the duplicate check */
    tensor *tensors;   /* (n_tensors) */
    int n_tensors, cap_tensors;
    fm_status error;   /* the first failure of an add, reported again by fm_gguf_write */
    char message[512]; /* its message */
};

/* ---------------------------------------------------------------- element conversions */

uint16_t fm_gguf_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xFFu, man = x & 0x7FFFFFu;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00u | (man ? 0x200u : 0)); /* inf, NaN */
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00u); /* too large: infinity */
    if (e <= 0) { /* a subnormal half, or zero */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        int shift = 14 - e; /* 14..24 */
        uint32_t half = man >> shift, rest = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)e << 10 | man >> 13, rest = man & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) half++; /* a carry may reach infinity: right */
    return (uint16_t)(sign | half);
}

void fm_gguf_quantize_q8_0(const float *x, int64_t n, uint8_t *out) {
    for (int64_t b = 0; b < n / FM_GGUF_Q8_BLOCK; b++) {
        const float *v = x + b * FM_GGUF_Q8_BLOCK;
        uint8_t *blk = out + b * FM_GGUF_Q8_BYTES;
        float amax = 0.0f;
        for (int i = 0; i < FM_GGUF_Q8_BLOCK; i++) amax = fmaxf(amax, fabsf(v[i]));
        /* the scale as stored (float16) divides, so that |w - d q| <= d / 2 (ggml divides by the
         * scale before rounding it, up to 0.56 d); |q| <= 127 still, the rounding being 2^-11 */
        uint16_t h = fm_gguf_f16(amax / 127.0f);
        float d = fm_f16_to_f32(h), id = d != 0.0f ? 1.0f / d : 0.0f;
        memcpy(blk, &h, 2);
        for (int i = 0; i < FM_GGUF_Q8_BLOCK; i++) {
            float q = roundf(v[i] * id);
            blk[2 + i] = (uint8_t)(int8_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
        }
    }
}

size_t fm_gguf_row_bytes(fm_gguf_type type, int64_t n) {
    switch (type) {
    case FM_GGUF_F32: return (size_t)n * 4;
    case FM_GGUF_F16: return (size_t)n * 2;
    case FM_GGUF_Q8_0: return (size_t)(n / FM_GGUF_Q8_BLOCK) * FM_GGUF_Q8_BYTES;
    }
    return 0;
}

/* ---------------------------------------------------------------- building */

fm_status fm_gguf_new(fm_gguf **out, uint32_t alignment) {
    *out = NULL;
    if (alignment == 0 || (alignment & (alignment - 1)))
        return fm_fail(FM_ERR_ARG, "GGUF: alignment %u is not a power of two", alignment);
    fm_gguf *g = fm_calloc(1, sizeof *g);
    if (!g) return fm_fail(FM_ERR_NOMEM, "GGUF: out of memory");
    g->alignment = alignment;
    *out = g;
    return FM_OK;
}

void fm_gguf_free(fm_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; i < g->n_kv; i++) fm_free(g->keys[i]);
    for (int i = 0; i < g->n_tensors; i++) fm_free(g->tensors[i].name);
    fm_free(g->keys);
    fm_free(g->tensors);
    fm_free(g->kv.data);
    fm_free(g);
}

/* Records the first failure (status and message) so that fm_gguf_write reports it too. */
static fm_status remember(fm_gguf *g, fm_status st) {
    if (st && !g->error) {
        g->error = st;
        snprintf(g->message, sizeof g->message, "%s", fm_last_error());
    }
    return st;
}

static void put_u32(fm_text *t, uint32_t v) { fm_text_append(t, &v, 4); }
static void put_u64(fm_text *t, uint64_t v) { fm_text_append(t, &v, 8); }
static void put_str(fm_text *t, const char *s, size_t len) {
    put_u64(t, len);
    fm_text_append(t, s, len);
}

/* Starts a key: checks it is new, remembers it, writes it and its value type. */
static fm_status begin_kv(fm_gguf *g, const char *key, uint32_t type) {
    if (g->error) return g->error;
    if (!key || !key[0]) return remember(g, fm_fail(FM_ERR_ARG, "GGUF: an empty metadata key"));
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->keys[i], key) == 0) return remember(g, fm_fail(FM_ERR_ARG, "GGUF: metadata key %s twice", key));
    char **keys = fm_realloc(g->keys, sizeof(char *) * (size_t)(g->n_kv + 1));
    if (!keys) return remember(g, fm_fail(FM_ERR_NOMEM, "GGUF: out of memory"));
    g->keys = keys;
    if (!(g->keys[g->n_kv] = fm_strdup(key))) return remember(g, fm_fail(FM_ERR_NOMEM, "GGUF: out of memory"));
    g->n_kv++;
    put_str(&g->kv, key, strlen(key));
    put_u32(&g->kv, type);
    return FM_OK;
}

/* Ends a key: an allocation that failed while appending is reported here. */
static fm_status end_kv(fm_gguf *g, const char *key) {
    if (g->kv.failed) return remember(g, fm_fail(FM_ERR_NOMEM, "GGUF: out of memory adding %s", key));
    return FM_OK;
}

fm_status fm_gguf_kv_u32(fm_gguf *g, const char *key, uint32_t v) {
    fm_status st = begin_kv(g, key, T_U32);
    if (st) return st;
    put_u32(&g->kv, v);
    return end_kv(g, key);
}

fm_status fm_gguf_kv_f32(fm_gguf *g, const char *key, float v) {
    fm_status st = begin_kv(g, key, T_F32);
    if (st) return st;
    fm_text_append(&g->kv, &v, 4);
    return end_kv(g, key);
}

fm_status fm_gguf_kv_bool(fm_gguf *g, const char *key, int v) {
    fm_status st = begin_kv(g, key, T_BOOL);
    if (st) return st;
    uint8_t b = v ? 1 : 0;
    fm_text_append(&g->kv, &b, 1);
    return end_kv(g, key);
}

fm_status fm_gguf_kv_str(fm_gguf *g, const char *key, const char *s, size_t len) {
    fm_status st = begin_kv(g, key, T_STRING);
    if (st) return st;
    put_str(&g->kv, s, len);
    return end_kv(g, key);
}

fm_status fm_gguf_kv_strs(fm_gguf *g, const char *key, const char *const *strs, const size_t *lens, size_t n) {
    fm_status st = begin_kv(g, key, T_ARRAY);
    if (st) return st;
    put_u32(&g->kv, T_STRING);
    put_u64(&g->kv, n);
    for (size_t i = 0; i < n; i++) put_str(&g->kv, strs[i], lens[i]);
    return end_kv(g, key);
}

fm_status fm_gguf_kv_i32s(fm_gguf *g, const char *key, const int32_t *v, size_t n) {
    fm_status st = begin_kv(g, key, T_ARRAY);
    if (st) return st;
    put_u32(&g->kv, T_I32);
    put_u64(&g->kv, n);
    fm_text_append(&g->kv, v, n * 4);
    return end_kv(g, key);
}

fm_status fm_gguf_tensor(fm_gguf *g, const char *name, fm_gguf_type type, int ndim, const int64_t *ne,
                         fm_gguf_fill fill, void *user) {
    if (g->error) return g->error;
    if (!name || !name[0] || strlen(name) >= MAX_NAME)
        return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor name '%s' is empty or 64 bytes or longer",
                                   name ? name : ""));
    if (ndim < 1 || ndim > MAX_DIMS || !fill)
        return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor %s: %d dimensions, or no data", name, ndim));
    if (!fm_gguf_row_bytes(type, FM_GGUF_Q8_BLOCK))
        return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor %s: unknown type %d", name, (int)type));
    for (int i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0)
            return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor %s twice", name));
    size_t rows = 1;
    for (int d = 0; d < ndim; d++) {
        if (ne[d] < 1 || ne[d] > (int64_t)1 << 40)
            return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor %s: dimension %d is %lld", name, d, (long long)ne[d]));
        if (d && (size_t)ne[d] > SIZE_MAX / 64 / rows)
            return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor %s is too large", name));
        if (d) rows *= (size_t)ne[d];
    }
    if (type == FM_GGUF_Q8_0 && ne[0] % FM_GGUF_Q8_BLOCK)
        return remember(g, fm_fail(FM_ERR_ARG, "GGUF: tensor %s: rows of %lld values are not whole Q8_0 blocks of 32",
                                   name, (long long)ne[0]));
    if (g->n_tensors == g->cap_tensors) {
        int cap = g->cap_tensors ? 2 * g->cap_tensors : 64;
        tensor *t = fm_realloc(g->tensors, sizeof(tensor) * (size_t)cap);
        if (!t) return remember(g, fm_fail(FM_ERR_NOMEM, "GGUF: out of memory"));
        g->tensors = t;
        g->cap_tensors = cap;
    }
    tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = fm_strdup(name))) return remember(g, fm_fail(FM_ERR_NOMEM, "GGUF: out of memory"));
    t->type = type;
    t->ndim = ndim;
    memcpy(t->ne, ne, sizeof(int64_t) * (size_t)ndim);
    t->nbytes = fm_gguf_row_bytes(type, ne[0]) * rows;
    t->fill = fill;
    t->user = user;
    g->n_tensors++;
    return FM_OK;
}

/* ---------------------------------------------------------------- writing */

static size_t pad_to(size_t n, size_t alignment) { return (n + alignment - 1) / alignment * alignment; }

fm_status fm_gguf_write(const fm_gguf *g, const char *path, size_t *bytes) {
    if (bytes) *bytes = 0;
    if (g->error) return fm_fail(g->error, "%s: %s", path, g->message);
    /* the header, metadata and tensor infos */
    fm_text head = {0};
    fm_text_append(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)g->n_tensors);
    put_u64(&head, g->n_kv);
    fm_text_append(&head, g->kv.data, g->kv.len);
    size_t offset = 0, largest = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const tensor *t = &g->tensors[i];
        put_str(&head, t->name, strlen(t->name));
        put_u32(&head, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) put_u64(&head, (uint64_t)t->ne[d]);
        put_u32(&head, (uint32_t)t->type);
        put_u64(&head, offset);
        offset += pad_to(t->nbytes, g->alignment);
        if (t->nbytes > largest) largest = t->nbytes;
    }
    size_t head_len = pad_to(head.len, g->alignment);
    void *buf = fm_calloc(largest + g->alignment, 1); /* one tensor's bytes and its padding */
    if (buf) fm_text_append(&head, buf, head_len - head.len); /* zeros up to the data section */
    if (head.failed || !buf) {
        fm_free(head.data);
        fm_free(buf);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }

    fm_atomic_file af;
    fm_status st = fm_atomic_open(&af, path);
    if (!st) {
        fm_atomic_write(&af, head.data, head.len);
        for (int i = 0; !st && i < g->n_tensors; i++) {
            const tensor *t = &g->tensors[i];
            size_t padded = pad_to(t->nbytes, g->alignment);
            memset(buf, 0, padded);
            st = t->fill(t->user, buf, t->nbytes);
            if (st) {
                fm_fail_prefix(st, "%s: tensor %s: ", path, t->name);
                break;
            }
            fm_atomic_write(&af, buf, padded);
        }
        if (st) fm_atomic_abort(&af);
        else st = fm_atomic_commit(&af);
    }
    if (!st && bytes) *bytes = head_len + offset;
    fm_free(head.data);
    fm_free(buf);
    return st;
}
