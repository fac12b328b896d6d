/*
 * safetensors.c — reading and writing the safetensors file format.
 *
 * What it is for: the on-disk tensor container used for model weights and training state.
 * A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value", ...}}            (metadata optional)
 * and then the data buffer; offsets count from the start of the data buffer.
 * fm_st_open maps the file read-only and checks everything before handing out a tensor, so the
 * rest of libfm can trust shapes and offsets; fm_st_write writes a file atomically.
 * What it is not for: knowing which tensors a model has (model save/load code does that).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "core/internal.h"

/* Tensor data is stored little-endian and copied with memcpy; this host must match. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors.c assumes a little-endian host");

#define MAX_HEADER_BYTES 100000000ull /* the limit of the reference implementation */
#define MAX_JSON_INT 9007199254740992.0 /* 2^53: larger JSON numbers are not exact doubles */
#define METADATA_KEY "__metadata__"

/* ---------------------------------------------------------------- dtypes and conversions */

static const struct {
    fm_dtype dtype;
    const char *name;
    size_t size;
} dtype_table[] = {
    {FM_DTYPE_F32, "F32", 4}, {FM_DTYPE_F16, "F16", 2}, {FM_DTYPE_BF16, "BF16", 2},
    {FM_DTYPE_F64, "F64", 8}, {FM_DTYPE_I64, "I64", 8}, {FM_DTYPE_I32, "I32", 4},
    {FM_DTYPE_U8, "U8", 1},
};
#define N_DTYPES ((int)(sizeof dtype_table / sizeof dtype_table[0]))

static int dtype_valid(fm_dtype dtype) { return (int)dtype >= 0 && (int)dtype < N_DTYPES; }

size_t fm_dtype_size(fm_dtype dtype) { return dtype_valid(dtype) ? dtype_table[dtype].size : 0; }

const char *fm_dtype_name(fm_dtype dtype) { return dtype_valid(dtype) ? dtype_table[dtype].name : "?"; }

/* The dtype called name; returns 0 when it is not one we support. */
static int dtype_from_name(const char *name, fm_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = dtype_table[i].dtype;
            return 1;
        }
    }
    return 0;
}

static float f32_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float fm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) /* infinity or NaN (payload kept) */
        return f32_from_bits(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) { /* zero or subnormal: mantissa * 2^-24, exact in float */
        float magnitude = (float)mantissa * (1.0f / 16777216.0f);
        return sign ? -magnitude : magnitude;
    }
    return f32_from_bits(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

float fm_bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

/* ---------------------------------------------------------------- small helpers */

/* "[2, 3]" into buf (truncated if it does not fit). */
static const char *format_shape(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

/* numel and nbytes of a shape; returns 0 on size_t overflow. */
static int shape_size(const int64_t *shape, int ndim, fm_dtype dtype, size_t *numel, size_t *nbytes) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d > SIZE_MAX) return 0;
        if (d != 0 && n > SIZE_MAX / d) return 0;
        n *= (size_t)d;
    }
    size_t elem = fm_dtype_size(dtype);
    if (n > SIZE_MAX / elem) return 0;
    *numel = n;
    *nbytes = n * elem;
    return 1;
}

/* A JSON number that is a non-negative integer exactly representable as a double. */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 0.0 && v <= MAX_JSON_INT)) return 0; /* also rejects NaN */
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return 0;
    *out = u;
    return 1;
}

/* Offset of the first byte that is not valid UTF-8 (or is NUL), or -1 when all are valid. */
static long long invalid_utf8_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp;
        if (c == 0) return (long long)i;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return (long long)i;
        if (n - i < len) return (long long)i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return (long long)i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return (long long)i;
        i += len;
    }
    return -1;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice among names[0..n), or NULL. Sorts a copy. */
static const char *find_duplicate(const char *const *names, int n, fm_status *nomem) {
    *nomem = FM_OK;
    if (n < 2) return NULL;
    const char **sorted = fm_malloc((size_t)n * sizeof *sorted);
    if (!sorted) {
        *nomem = FM_ERR_NOMEM;
        return NULL;
    }
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_strings);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    fm_free(sorted);
    return dup;
}

/* ---------------------------------------------------------------- reading */

/* Where a tensor's bytes lie in the data buffer, kept while checking for overlaps. */
typedef struct {
    uint64_t begin, end;
    int index;
} span;

static int compare_spans(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Checks one tensor entry of the header and fills t (except name and data) and s. */
static fm_status parse_tensor(const char *path, const char *name, const cJSON *entry,
                              uint64_t data_size, fm_st_tensor *t, span *s) {
    char shape_text[256];
    if (!cJSON_IsObject(entry))
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!dtype)
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': missing dtype", path, name);
    if (!cJSON_IsString(dtype))
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", path, name);
    if (!dtype_from_name(dtype->valuestring, &t->dtype))
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': unsupported dtype %s", path, name,
                       dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': shape is missing or not an array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > FM_ST_MAX_DIMS)
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': shape has %d dimensions, at most %d supported",
                       path, name, ndim, FM_ST_MAX_DIMS);
    t->ndim = ndim;
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t d;
        if (!json_uint(dim, &d))
            return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': shape must be an array of non-negative integers",
                           path, name);
        t->shape[i++] = (int64_t)d;
    }
    format_shape(shape_text, sizeof shape_text, t->shape, ndim);
    const char *dtype_name = fm_dtype_name(t->dtype);
    if (!shape_size(t->shape, ndim, t->dtype, &t->numel, &t->nbytes))
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': shape %s of %s overflows the size", path, name,
                       shape_text, dtype_name);

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    uint64_t begin = 0, end = 0;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !json_uint(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &end))
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': data_offsets must be two non-negative integers [begin, end]",
                       path, name);
    if (begin > end)
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                       path, name, begin, end);
    if (end - begin != (uint64_t)t->nbytes)
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match shape %s of %s (%zu bytes)",
                       path, name, begin, end, shape_text, dtype_name, t->nbytes);
    if (end > data_size)
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': truncated: file has %" PRIu64 " bytes of data, tensor needs up to %" PRIu64,
                       path, name, data_size, end);
    s->begin = begin;
    s->end = end;
    return FM_OK;
}

/* Reads "__metadata__": an object whose values are all strings. */
static fm_status parse_metadata(fm_safetensors *st, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return fm_fail(FM_ERR_FORMAT, "%s: " METADATA_KEY " is not an object", st->path);
    int n = cJSON_GetArraySize(meta);
    if (n == 0) return FM_OK;
    st->meta_keys = fm_calloc((size_t)n, sizeof *st->meta_keys);
    st->meta_values = fm_calloc((size_t)n, sizeof *st->meta_values);
    if (!st->meta_keys || !st->meta_values)
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the metadata", st->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta) {
        if (!cJSON_IsString(item))
            return fm_fail(FM_ERR_FORMAT, "%s: " METADATA_KEY " value of '%s' is not a string",
                           st->path, item->string);
        int k = st->n_meta;
        st->meta_keys[k] = fm_strdup(item->string);
        st->meta_values[k] = fm_strdup(item->valuestring);
        st->n_meta++;
        if (!st->meta_keys[k] || !st->meta_values[k])
            return fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the metadata", st->path);
    }
    const char *dup = NULL;
    fm_status status;
    dup = find_duplicate((const char *const *)st->meta_keys, st->n_meta, &status);
    if (status != FM_OK) return fm_fail(status, "%s: out of memory reading the metadata", st->path);
    if (dup) return fm_fail(FM_ERR_FORMAT, "%s: duplicate " METADATA_KEY " key '%s'", st->path, dup);
    return FM_OK;
}

/* No two tensors share a byte (tensors without bytes never overlap anything). */
static fm_status check_overlaps(const fm_safetensors *st, span *spans) {
    qsort(spans, (size_t)st->n_tensors, sizeof *spans, compare_spans);
    const span *widest = NULL; /* the non-empty span seen so far that reaches furthest */
    for (int i = 0; i < st->n_tensors; i++) {
        const span *s = &spans[i];
        if (s->begin == s->end) continue;
        if (widest && s->begin < widest->end)
            return fm_fail(FM_ERR_FORMAT, "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 "] and '%s' [%" PRIu64 ", %" PRIu64 "] overlap",
                           st->path, st->tensors[widest->index].name, widest->begin, widest->end,
                           st->tensors[s->index].name, s->begin, s->end);
        if (!widest || s->end > widest->end) widest = s;
    }
    return FM_OK;
}

/* Checks the parsed header and fills st's tensors and metadata. */
static fm_status parse_header(fm_safetensors *st, const cJSON *root, const unsigned char *data,
                              uint64_t data_size) {
    if (!cJSON_IsObject(root))
        return fm_fail(FM_ERR_FORMAT, "%s: header is not a JSON object", st->path);

    int n_items = cJSON_GetArraySize(root);
    const char **names = fm_malloc(((size_t)n_items + 1) * sizeof *names);
    span *spans = fm_malloc(((size_t)n_items + 1) * sizeof *spans);
    st->tensors = fm_calloc((size_t)n_items + 1, sizeof *st->tensors);
    fm_status status = FM_OK;
    if (!names || !spans || !st->tensors) {
        status = fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the header", st->path);
        goto done;
    }

    int n_names = 0, seen_metadata = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        names[n_names++] = item->string;
        if (strcmp(item->string, METADATA_KEY) == 0) {
            if (!seen_metadata) status = parse_metadata(st, item); /* a second one is a duplicate */
            seen_metadata = 1;
            if (status != FM_OK) goto done;
            continue;
        }
        int k = st->n_tensors;
        fm_st_tensor *t = &st->tensors[k];
        status = parse_tensor(st->path, item->string, item, data_size, t, &spans[k]);
        if (status != FM_OK) goto done;
        t->name = fm_strdup(item->string);
        if (!t->name) {
            status = fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the header", st->path);
            goto done;
        }
        t->data = data + spans[k].begin;
        spans[k].index = k;
        st->n_tensors++;
    }

    const char *dup = find_duplicate(names, n_names, &status);
    if (status != FM_OK) {
        status = fm_fail(status, "%s: out of memory reading the header", st->path);
        goto done;
    }
    if (dup) {
        status = fm_fail(FM_ERR_FORMAT, "%s: duplicate name '%s' in the header", st->path, dup);
        goto done;
    }
    status = check_overlaps(st, spans);
done:
    fm_free(names);
    fm_free(spans);
    return status;
}

/* Maps path read-only into st->map / st->map_size. */
static fm_status map_file(fm_safetensors *st, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fm_fail(FM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return fm_fail(FM_ERR_IO, "cannot read %s: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fm_fail(FM_ERR_IO, "cannot read %s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return fm_fail(FM_ERR_FORMAT, "%s: empty file", path);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return fm_fail(FM_ERR_IO, "cannot map %s: %s", path, strerror(err));
    st->map = map;
    st->map_size = (size_t)sb.st_size;
    return FM_OK;
}

/* Validates the header length and bytes, parses the JSON and fills st. */
static fm_status read_header(fm_safetensors *st) {
    const unsigned char *bytes = st->map;
    const char *path = st->path;
    if (st->map_size < 8)
        return fm_fail(FM_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                       path, st->map_size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    uint64_t after = (uint64_t)st->map_size - 8;
    if (n == 0) return fm_fail(FM_ERR_FORMAT, "%s: header length is 0", path);
    if (n > MAX_HEADER_BYTES)
        return fm_fail(FM_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes",
                       path, n, MAX_HEADER_BYTES);
    if (n > after)
        return fm_fail(FM_ERR_FORMAT, "%s: header length %" PRIu64 " is beyond the end of the file (%zu bytes)",
                       path, n, st->map_size);

    const unsigned char *header = bytes + 8;
    long long bad = invalid_utf8_at(header, (size_t)n);
    if (bad >= 0)
        return fm_fail(FM_ERR_FORMAT, "%s: header is not valid UTF-8 text (byte %lld of the header)",
                       path, bad);

    /* No string may hold a NUL: a name or dtype is a C string, so "F32\u0000" would read as "F32"
     * and "a\u0000b" as "a". In valid JSON a backslash only begins an escape inside a string, so
     * escapes are read pairwise; a NUL byte itself ends the JSON text early (bytes after it). */
    for (uint64_t i = 0; i + 5 < n; i++) {
        if (header[i] != '\\') continue;
        if (header[i + 1] == 'u' && memcmp(header + i + 2, "0000", 4) == 0)
            return fm_fail(FM_ERR_FORMAT, "%s: header has a string with a NUL character (\\u0000 at byte %" PRIu64
                           " of the header); tensor names, dtypes and metadata cannot hold one", path, i);
        i++;
    }

    /* cJSON wants a terminated string; the header is copied (it is at most 100 MB). */
    char *text = fm_malloc((size_t)n + 1);
    if (!text) return fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the header", path);
    memcpy(text, header, (size_t)n);
    text[n] = '\0';
    const char *end = NULL;
    unsigned long failures = fm_alloc_failures();
    cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
    fm_status status = FM_OK;
    if (!root && fm_alloc_failures() != failures) { /* cJSON ran out of memory, the JSON may be fine */
        status = fm_fail(FM_ERR_NOMEM, "%s: out of memory parsing the header", path);
    } else if (!root) {
        size_t at = end ? (size_t)(end - text) : 0;
        status = fm_fail(FM_ERR_FORMAT, "%s: header is invalid JSON (near byte %zu of the header)", path, at);
    } else {
        size_t at = (size_t)(end - text);
        while (at < n && strchr(" \t\r\n", text[at])) at++; /* padding */
        if (at < n)
            status = fm_fail(FM_ERR_FORMAT, "%s: header has unexpected bytes after the JSON (byte %zu of the header)",
                             path, at);
        else
            status = parse_header(st, root, header + n, after - n);
    }
    cJSON_Delete(root);
    fm_free(text);
    return status;
}

fm_status fm_st_open(fm_safetensors *st, const char *path) {
    if (!st) return fm_fail(FM_ERR_ARG, "fm_st_open: no handle given");
    memset(st, 0, sizeof *st);
    if (!path || !path[0]) return fm_fail(FM_ERR_ARG, "fm_st_open: empty path");
    st->path = fm_strdup(path);
    if (!st->path) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    fm_status status = map_file(st, path);
    if (status == FM_OK) status = read_header(st);
    if (status != FM_OK) fm_st_close(st);
    return status;
}

void fm_st_close(fm_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) fm_free(st->tensors[i].name);
    fm_free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        fm_free(st->meta_keys[i]);
        fm_free(st->meta_values[i]);
    }
    fm_free(st->meta_keys);
    fm_free(st->meta_values);
    if (st->map) munmap(st->map, st->map_size);
    fm_free(st->path);
    memset(st, 0, sizeof *st);
}

const fm_st_tensor *fm_st_find(const fm_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *fm_st_meta(const fm_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

fm_status fm_st_read_f32(const fm_safetensors *st, const fm_st_tensor *t, float *out) {
    if (!st || !t || (!out && t->numel > 0)) return fm_fail(FM_ERR_ARG, "fm_st_read_f32: missing argument");
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case FM_DTYPE_F32:
        if (t->nbytes) memcpy(out, src, t->nbytes);
        return FM_OK;
    case FM_DTYPE_F16:
    case FM_DTYPE_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, sizeof h);
            out[i] = t->dtype == FM_DTYPE_F16 ? fm_f16_to_f32(h) : fm_bf16_to_f32(h);
        }
        return FM_OK;
    case FM_DTYPE_F64:
        for (size_t i = 0; i < t->numel; i++) {
            double d;
            memcpy(&d, src + 8 * i, sizeof d);
            out[i] = (float)d;
        }
        return FM_OK;
    default:
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a floating type",
                       st->path, t->name, fm_dtype_name(t->dtype));
    }
}

fm_status fm_st_read_i32(const fm_safetensors *st, const fm_st_tensor *t, int *out) {
    if (!st || !t || (!out && t->numel > 0)) return fm_fail(FM_ERR_ARG, "fm_st_read_i32: missing argument");
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case FM_DTYPE_I32:
        if (t->nbytes) memcpy(out, src, t->nbytes);
        return FM_OK;
    case FM_DTYPE_U8:
        for (size_t i = 0; i < t->numel; i++) out[i] = src[i];
        return FM_OK;
    case FM_DTYPE_I64:
        for (size_t i = 0; i < t->numel; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, sizeof v);
            if (v < INT_MIN || v > INT_MAX)
                return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s': element %zu value %" PRId64 " does not fit in an int",
                               st->path, t->name, i, v);
            out[i] = (int)v;
        }
        return FM_OK;
    default:
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected an integer type",
                       st->path, t->name, fm_dtype_name(t->dtype));
    }
}

/* ---------------------------------------------------------------- writing */


static void buf_u64(fm_text *b, uint64_t v) {
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRIu64, v);
    fm_text_append(b, num, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control characters escaped, UTF-8 kept. */
static void buf_json_string(fm_text *b, const char *s) {
    fm_text_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            fm_text_append(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            fm_text_append(b, esc, 6);
        } else {
            fm_text_append(b, (const char *)p, 1);
        }
    }
    fm_text_puts(b, "\"");
}

/* Checks the caller's entries and metadata; computes each entry's byte size into nbytes. */
static fm_status check_entries(const char *path, const fm_st_entry *entries, int n_entries,
                               const char *const *meta_keys, const char *const *meta_values,
                               int n_meta, size_t *nbytes) {
    for (int i = 0; i < n_entries; i++) {
        const fm_st_entry *e = &entries[i];
        if (!e->name || !e->name[0])
            return fm_fail(FM_ERR_ARG, "%s: tensor %d has an empty name", path, i);
        if (strcmp(e->name, METADATA_KEY) == 0)
            return fm_fail(FM_ERR_ARG, "%s: a tensor cannot be called " METADATA_KEY, path);
        if (!dtype_valid(e->dtype))
            return fm_fail(FM_ERR_ARG, "%s: tensor '%s' has an invalid dtype %d", path, e->name, (int)e->dtype);
        if (e->ndim < 0 || e->ndim > FM_ST_MAX_DIMS)
            return fm_fail(FM_ERR_ARG, "%s: tensor '%s' has %d dimensions, expected 0 to %d", path,
                           e->name, e->ndim, FM_ST_MAX_DIMS);
        for (int d = 0; d < e->ndim; d++)
            if (e->shape[d] < 0 || (double)e->shape[d] > MAX_JSON_INT)
                return fm_fail(FM_ERR_ARG, "%s: tensor '%s' has invalid dimension %" PRId64, path,
                               e->name, e->shape[d]);
        size_t numel;
        if (!shape_size(e->shape, e->ndim, e->dtype, &numel, &nbytes[i]))
            return fm_fail(FM_ERR_ARG, "%s: tensor '%s' is too large", path, e->name);
        if (nbytes[i] > 0 && !e->data)
            return fm_fail(FM_ERR_ARG, "%s: tensor '%s' has no data", path, e->name);
    }
    for (int i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_values[i])
            return fm_fail(FM_ERR_ARG, "%s: metadata entry %d is missing its key or value", path, i);

    const char **names = fm_malloc(((size_t)n_entries + 1) * sizeof *names);
    if (!names) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n_entries; i++) names[i] = entries[i].name;
    fm_status status;
    const char *dup = find_duplicate(names, n_entries, &status);
    if (!dup && status == FM_OK) dup = find_duplicate(meta_keys, n_meta, &status);
    fm_free(names);
    if (status != FM_OK) return fm_fail(status, "%s: out of memory", path);
    if (dup) return fm_fail(FM_ERR_ARG, "%s: duplicate name '%s'", path, dup);
    return FM_OK;
}

/* The JSON header for the entries, padded with spaces so that 8 + length is a multiple of 8. */
static void build_header(fm_text *b, const fm_st_entry *entries, int n_entries, const size_t *nbytes,
                         const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    fm_text_puts(b, "{");
    if (n_meta > 0) {
        fm_text_puts(b, "\"" METADATA_KEY "\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) fm_text_puts(b, ",");
            buf_json_string(b, meta_keys[i]);
            fm_text_puts(b, ":");
            buf_json_string(b, meta_values[i]);
        }
        fm_text_puts(b, "}");
    }
    uint64_t offset = 0;
    for (int i = 0; i < n_entries; i++) {
        const fm_st_entry *e = &entries[i];
        if (i || n_meta > 0) fm_text_puts(b, ",");
        buf_json_string(b, e->name);
        fm_text_puts(b, ":{\"dtype\":\"");
        fm_text_puts(b, fm_dtype_name(e->dtype));
        fm_text_puts(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) fm_text_puts(b, ",");
            buf_u64(b, (uint64_t)e->shape[d]);
        }
        fm_text_puts(b, "],\"data_offsets\":[");
        buf_u64(b, offset);
        fm_text_puts(b, ",");
        offset += nbytes[i];
        buf_u64(b, offset);
        fm_text_puts(b, "]}");
    }
    fm_text_puts(b, "}");
    while (!b->failed && (8 + b->len) % 8 != 0) fm_text_puts(b, " "); /* a failed text never grows */
}

fm_status fm_st_write_finished(fm_atomic_file *af, const char *path, const fm_st_entry *entries, int n_entries,
                               const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    memset(af, 0, sizeof *af);
    if (!path || !path[0]) return fm_fail(FM_ERR_ARG, "fm_st_write: empty path");
    if (n_entries < 0 || n_meta < 0 || (n_entries > 0 && !entries) ||
        (n_meta > 0 && (!meta_keys || !meta_values)))
        return fm_fail(FM_ERR_ARG, "%s: invalid tensor or metadata list", path);

    size_t *nbytes = fm_calloc((size_t)n_entries + 1, sizeof *nbytes);
    if (!nbytes) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    fm_status status = check_entries(path, entries, n_entries, meta_keys, meta_values, n_meta, nbytes);
    if (status != FM_OK) {
        fm_free(nbytes);
        return status;
    }
    uint64_t total = 0;
    for (int i = 0; i < n_entries; i++) {
        if (nbytes[i] > UINT64_MAX - total || total + nbytes[i] > (uint64_t)MAX_JSON_INT) {
            fm_free(nbytes);
            return fm_fail(FM_ERR_ARG, "%s: the tensors are too large for one file", path);
        }
        total += nbytes[i];
    }

    fm_text header = {0};
    build_header(&header, entries, n_entries, nbytes, meta_keys, meta_values, n_meta);
    if (header.failed || header.len > MAX_HEADER_BYTES) {
        status = header.failed ? fm_fail(FM_ERR_NOMEM, "%s: out of memory building the header", path)
                               : fm_fail(FM_ERR_ARG, "%s: header of %zu bytes is too large", path, header.len);
        fm_free(header.data);
        fm_free(nbytes);
        return status;
    }

    status = fm_atomic_open(af, path);
    if (status == FM_OK) {
        unsigned char len_bytes[8];
        for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header.len >> (8 * i));
        fm_atomic_write(af, len_bytes, sizeof len_bytes);
        fm_atomic_write(af, header.data, header.len);
        for (int i = 0; i < n_entries; i++) fm_atomic_write(af, entries[i].data, nbytes[i]);
        status = fm_atomic_finish(af);
    }
    fm_free(header.data);
    fm_free(nbytes);
    return status;
}

fm_status fm_st_write(const char *path, const fm_st_entry *entries, int n_entries,
                      const char *const *meta_keys, const char *const *meta_values, int n_meta) {
    fm_atomic_file af;
    fm_status status = fm_st_write_finished(&af, path, entries, n_entries, meta_keys, meta_values, n_meta);
    return status == FM_OK ? fm_atomic_commit(&af) : status;
}
