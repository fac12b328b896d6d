/*
 * image_tokenizer.c — images as token sequences and back: the patch codebook's file, encode, decode.
 *
 * What it is for: an image (rows x cols bytes) is cut into P x P patches in raster order; each
 * patch becomes the id of its nearest codebook centroid; the sequence is <|image|>, the codes,
 * <|/image|>. The codes are special tokens "<|patch_K|>" of a text tokenizer (ids code_base ..
 * code_base + K - 1), so one model's vocabulary holds text and images. The tokenizer lives in
 * DIR/image_tokenizer.json beside DIR/tokenizer.json (format: docs/file-formats.md), which it
 * names by fingerprint: loading refuses a pair that does not belong together.
 * Not for: learning the codebook (image_tokenizer_train.c) or reading IDX files (io/idx.c).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "tokenizer/image_tokenizer_internal.h"

#define IMAGE_TOKENIZER_TYPE "fm-image-patch-codebook"
#define IMAGE_TOKENIZER_VERSION 1

fm_status fm_image_tok_new(fm_image_tokenizer **out, int rows, int cols, int patch, int K) {
    *out = NULL;
    if (patch < 1 || patch > 64) return fm_fail(FM_ERR_ARG, "image tokenizer: patch size %d (1 .. 64)", patch);
    if (rows < 1 || cols < 1 || rows % patch || cols % patch)
        return fm_fail(FM_ERR_ARG, "image tokenizer: %d x %d images do not cut into whole %d x %d patches", rows, cols,
                       patch, patch);
    if (K < 1 || K > 65536) return fm_fail(FM_ERR_ARG, "image tokenizer: codebook size %d (1 .. 65536)", K);
    fm_image_tokenizer *t = fm_calloc(1, sizeof *t);
    float *cb = fm_calloc((size_t)K * patch * patch, sizeof(float));
    if (!t || !cb) {
        fm_free(t), fm_free(cb);
        return fm_fail(FM_ERR_NOMEM, "image tokenizer: out of memory for a %d-entry codebook", K);
    }
    t->rows = rows, t->cols = cols, t->patch = patch, t->K = K, t->codebook = cb;
    t->grid_rows = rows / patch, t->grid_cols = cols / patch, t->n_patches = t->grid_rows * t->grid_cols;
    t->image_id = t->end_id = t->code_base = -1;
    *out = t;
    return FM_OK;
}

void fm_image_tokenizer_free(fm_image_tokenizer *t) {
    if (!t) return;
    fm_free(t->codebook);
    fm_free(t);
}

int fm_image_tokenizer_rows(const fm_image_tokenizer *t) { return t->rows; }
int fm_image_tokenizer_cols(const fm_image_tokenizer *t) { return t->cols; }
int fm_image_tokenizer_sequence_length(const fm_image_tokenizer *t) { return t->n_patches + 2; }
int fm_image_tokenizer_patch(const fm_image_tokenizer *t) { return t->patch; }
int fm_image_tokenizer_codebook_size(const fm_image_tokenizer *t) { return t->K; }
int fm_image_tokenizer_code_base(const fm_image_tokenizer *t) { return t->code_base; }
int fm_image_tokenizer_image_id(const fm_image_tokenizer *t) { return t->image_id; }
int fm_image_tokenizer_end_id(const fm_image_tokenizer *t) { return t->end_id; }

int fm_image_tok_nearest(const float *codebook, int K, int D, const float *x, float *dist) {
    int best = 0;
    float best_d = INFINITY;
    for (int k = 0; k < K; k++) {
        const float *c = codebook + (size_t)k * D;
        float d = 0;
        for (int j = 0; j < D; j++) {
            float e = x[j] - c[j];
            d += e * e;
        }
        if (d < best_d) best_d = d, best = k;
    }
    if (dist) *dist = best_d;
    return best;
}

void fm_image_tok_get_patch(const fm_image_tokenizer *t, const uint8_t *pixels, int p, float *out) {
    int P = t->patch, y0 = (p / t->grid_cols) * P, x0 = (p % t->grid_cols) * P;
    for (int y = 0; y < P; y++)
        for (int x = 0; x < P; x++) out[y * P + x] = pixels[(size_t)(y0 + y) * t->cols + x0 + x];
}

fm_status fm_image_tokenizer_encode(const fm_image_tokenizer *t, const uint8_t *pixels, int *ids) {
    if (!t || !pixels || !ids) return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_encode: NULL argument");
    int D = t->patch * t->patch;
    float patch[64 * 64];
    ids[0] = t->image_id;
    for (int p = 0; p < t->n_patches; p++) {
        fm_image_tok_get_patch(t, pixels, p, patch);
        ids[1 + p] = t->code_base + fm_image_tok_nearest(t->codebook, t->K, D, patch, NULL);
    }
    ids[1 + t->n_patches] = t->end_id;
    return FM_OK;
}

fm_status fm_image_tokenizer_decode(const fm_image_tokenizer *t, const int *ids, int n, uint8_t *pixels) {
    if (!t || (!ids && n > 0) || !pixels) return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_decode: NULL argument");
    int len = t->n_patches + 2;
    if (n < 0 || n > len)
        return fm_fail(FM_ERR_ARG, "image decode: %d ids; an image is at most %d (<|image|>, %d codes, <|/image|>)", n,
                       len, t->n_patches);
    if (n > 0 && ids[0] != t->image_id)
        return fm_fail(FM_ERR_ARG, "image decode: the sequence starts with id %d, not <|image|> (%d)", ids[0],
                       t->image_id);
    for (int i = 1; i < n && i <= t->n_patches; i++)
        if (ids[i] < t->code_base || ids[i] >= t->code_base + t->K)
            return fm_fail(FM_ERR_ARG, "image decode: id %d at position %d is not an image code (%d .. %d)", ids[i], i,
                           t->code_base, t->code_base + t->K - 1);
    if (n == len && ids[len - 1] != t->end_id)
        return fm_fail(FM_ERR_ARG, "image decode: the sequence ends with id %d, not <|/image|> (%d)", ids[len - 1],
                       t->end_id);
    int P = t->patch;
    for (int i = 1; i < n && i <= t->n_patches; i++) {
        int p = i - 1, y0 = (p / t->grid_cols) * P, x0 = (p % t->grid_cols) * P;
        const float *c = t->codebook + (size_t)(ids[i] - t->code_base) * P * P;
        for (int y = 0; y < P; y++)
            for (int x = 0; x < P; x++) {
                float v = roundf(c[y * P + x]);
                pixels[(size_t)(y0 + y) * t->cols + x0 + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
    return FM_OK;
}

fm_status fm_image_tokenizer_error(const fm_image_tokenizer *t, const uint8_t *pixels, int count, double *mse) {
    if (!t || (!pixels && count > 0) || count < 0 || !mse)
        return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_error: bad argument");
    size_t pix = (size_t)t->rows * t->cols;
    int len = t->n_patches + 2;
    double total = 0;
    int failed = 0;
#pragma omp parallel reduction(+ : total, failed)
    {
        int *ids = fm_malloc(sizeof(int) * len);
        uint8_t *back = fm_malloc(pix);
        if (!ids || !back) failed = 1;
#pragma omp for schedule(static)
        for (int i = 0; i < count; i++) {
            if (!ids || !back) continue;
            const uint8_t *img = pixels + (size_t)i * pix;
            fm_image_tokenizer_encode(t, img, ids);
            fm_image_tokenizer_decode(t, ids, len, back);
            double s = 0;
            for (size_t j = 0; j < pix; j++) {
                double e = (double)img[j] - back[j];
                s += e * e;
            }
            total += s;
        }
        fm_free(ids), fm_free(back);
    }
    if (failed) return fm_fail(FM_ERR_NOMEM, "image tokenizer: out of memory measuring the error");
    *mse = count ? total / ((double)count * pix) : 0;
    return FM_OK;
}

/* ---------------------------------------------------------------- the file */

fm_status fm_image_tokenizer_save(const fm_image_tokenizer *t, const char *dir) {
    if (!t || !dir) return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_save: NULL argument");
    fm_text s = {0};
    fm_text_printf(&s,
                   "{\n  \"type\": \"%s\",\n  \"version\": %d,\n  \"rows\": %d,\n  \"cols\": %d,\n  \"patch\": %d,\n"
                   "  \"codebook_size\": %d,\n  \"image_token\": \"<|image|>\",\n  \"image_id\": %d,\n"
                   "  \"end_token\": \"<|/image|>\",\n  \"end_id\": %d,\n  \"code_base\": %d,\n"
                   "  \"vocab_size\": %d,\n  \"tokenizer_fingerprint\": \"%016" PRIx64 "\",\n  \"codebook\": [",
                   IMAGE_TOKENIZER_TYPE, IMAGE_TOKENIZER_VERSION, t->rows, t->cols, t->patch, t->K, t->image_id,
                   t->end_id, t->code_base, t->vocab_size, t->tokenizer_fingerprint);
    int D = t->patch * t->patch;
    for (int k = 0; k < t->K; k++) {
        fm_text_puts(&s, k ? ",\n    [" : "\n    [");
        for (int j = 0; j < D; j++) fm_text_printf(&s, j ? ", %.9g" : "%.9g", t->codebook[(size_t)k * D + j]);
        fm_text_puts(&s, "]");
    }
    fm_text_puts(&s, "\n  ]\n}\n");
    size_t n = strlen(dir) + sizeof FM_IMAGE_TOKENIZER_FILE + 2;
    char *path = fm_malloc(n);
    if (s.failed || !path) {
        fm_free(s.data), fm_free(path);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory writing the image tokenizer", dir);
    }
    snprintf(path, n, "%s/%s", dir, FM_IMAGE_TOKENIZER_FILE);
    fm_atomic_file af;
    fm_status st = fm_atomic_open(&af, path);
    if (st == FM_OK) {
        fm_atomic_write(&af, s.data, s.len);
        st = fm_atomic_commit(&af);
    }
    fm_free(s.data), fm_free(path);
    return st;
}

/* An integer member of o, in [lo, hi]; else an error naming path and key. */
static fm_status get_int(const cJSON *o, const char *key, int lo, int hi, const char *path, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return fm_fail(FM_ERR_FORMAT, "%s: \"%s\" must be an integer in %d .. %d", path, key, lo, hi);
    *out = (int)v->valuedouble;
    return FM_OK;
}

static char *read_whole(const char *path, size_t *len, fm_status *st) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        *st = fm_fail(FM_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = fm_malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, fp);
        if (n < cap - 1) break;
        char *grown = fm_realloc(buf, cap *= 2);
        if (!grown) fm_free(buf);
        buf = grown;
    }
    int err = ferror(fp);
    fclose(fp);
    if (!buf) {
        *st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (err) {
        fm_free(buf);
        *st = fm_fail(FM_ERR_IO, "%s: read error", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    *st = FM_OK;
    return buf;
}

/* Parses the file's JSON into a tokenizer (codes, ids and fingerprint as recorded). */
static fm_status parse(const char *path, const char *text, size_t len, fm_image_tokenizer **out) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fm_fail(FM_ERR_FORMAT, "%s: not a JSON object", path);
    }
    fm_status st = FM_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    int version = 0, rows = 0, cols = 0, patch = 0, K = 0, image_id = 0, end_id = 0, code_base = 0, vocab = 0;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, IMAGE_TOKENIZER_TYPE) != 0)
        st = fm_fail(FM_ERR_FORMAT, "%s: \"type\" is not \"%s\"", path, IMAGE_TOKENIZER_TYPE);
    if (!st && !(st = get_int(root, "version", 0, 1 << 30, path, &version)) && version != IMAGE_TOKENIZER_VERSION)
        st = fm_fail(FM_ERR_FORMAT, "%s: version %d; this fm reads version %d", path, version, IMAGE_TOKENIZER_VERSION);
    if (!st) st = get_int(root, "rows", 1, 65536, path, &rows);
    if (!st) st = get_int(root, "cols", 1, 65536, path, &cols);
    if (!st) st = get_int(root, "patch", 1, 64, path, &patch);
    if (!st) st = get_int(root, "codebook_size", 1, 65536, path, &K);
    if (!st) st = get_int(root, "vocab_size", 1, 1 << 24, path, &vocab);
    if (!st) st = get_int(root, "image_id", 0, vocab - 1, path, &image_id);
    if (!st) st = get_int(root, "end_id", 0, vocab - 1, path, &end_id);
    if (!st) st = get_int(root, "code_base", 0, vocab - K, path, &code_base);
    if (!st && (image_id == end_id || (image_id >= code_base && image_id < code_base + K) ||
                (end_id >= code_base && end_id < code_base + K)))
        st = fm_fail(FM_ERR_FORMAT, "%s: image_id %d, end_id %d and the codes %d .. %d overlap", path, image_id, end_id,
                     code_base, code_base + K - 1);
    uint64_t fingerprint = 0;
    if (!st) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "tokenizer_fingerprint");
        char *end = NULL;
        if (cJSON_IsString(f)) fingerprint = strtoull(f->valuestring, &end, 16);
        if (!cJSON_IsString(f) || strlen(f->valuestring) != 16 || !end || *end)
            st = fm_fail(FM_ERR_FORMAT, "%s: \"tokenizer_fingerprint\" must be 16 hexadecimal digits", path);
    }
    fm_image_tokenizer *t = NULL;
    if (!st && (st = fm_image_tok_new(&t, rows, cols, patch, K))) st = fm_fail_prefix(FM_ERR_FORMAT, "%s: ", path);
    if (!st) {
        t->image_id = image_id, t->end_id = end_id, t->code_base = code_base, t->vocab_size = vocab;
        t->tokenizer_fingerprint = fingerprint;
        const cJSON *cb = cJSON_GetObjectItemCaseSensitive(root, "codebook");
        int D = patch * patch;
        if (!cJSON_IsArray(cb) || cJSON_GetArraySize(cb) != K)
            st = fm_fail(FM_ERR_FORMAT, "%s: \"codebook\" must be an array of %d centroids", path, K);
        int k = 0;
        for (const cJSON *row = cb ? cb->child : NULL; !st && row; row = row->next, k++) {
            if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != D) {
                st = fm_fail(FM_ERR_FORMAT, "%s: codebook[%d] must be an array of %d numbers (%d x %d pixels)", path, k,
                             D, patch, patch);
                break;
            }
            int j = 0;
            for (const cJSON *v = row->child; v; v = v->next, j++) {
                if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < -1 || v->valuedouble > 256) {
                    st = fm_fail(FM_ERR_FORMAT, "%s: codebook[%d][%d] is not a pixel value (0 .. 255)", path, k, j);
                    break;
                }
                t->codebook[(size_t)k * D + j] = (float)v->valuedouble;
            }
        }
    }
    cJSON_Delete(root);
    if (st) {
        fm_image_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

fm_status fm_image_tokenizer_check(const fm_image_tokenizer *t, const fm_tokenizer *tok, const char *name) {
    if (!t || !tok) return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_check: NULL argument");
    uint64_t f = fm_tokenizer_fingerprint(tok);
    if (f != t->tokenizer_fingerprint)
        return fm_fail(FM_ERR_MISMATCH,
                       "the image tokenizer was made with text tokenizer %016" PRIx64 " but %s is %016" PRIx64
                       ": they do not belong together (train the image tokenizer again, or use its tokenizer.json)",
                       t->tokenizer_fingerprint, name, f);
    return FM_OK;
}

fm_status fm_image_tokenizer_load(const char *dir, fm_image_tokenizer **out) {
    if (!dir || !out) return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_load: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0) return fm_fail(FM_ERR_IO, "%s: cannot open (%s)", dir, strerror(errno));
    size_t n = strlen(dir) + sizeof FM_IMAGE_TOKENIZER_FILE + 2;
    char *path = fm_malloc(n), *tok_path = fm_malloc(n);
    if (!path || !tok_path) {
        fm_free(path), fm_free(tok_path);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    }
    int is_dir = S_ISDIR(sb.st_mode);
    if (is_dir) snprintf(path, n, "%s/%s", dir, FM_IMAGE_TOKENIZER_FILE);
    else snprintf(path, n, "%s", dir);
    fm_status st = FM_OK;
    if (is_dir && stat(path, &sb) != 0) {
        st = fm_fail(FM_ERR_IO, "%s holds no image tokenizer (%s): a text-only model or tokenizer; make one with "
                     "fm tokenizer train --images", dir, FM_IMAGE_TOKENIZER_FILE);
    }
    size_t len = 0;
    char *text = st ? NULL : read_whole(path, &len, &st);
    fm_image_tokenizer *t = NULL;
    if (!st) st = parse(path, text, len, &t);
    fm_free(text);
    /* the text tokenizer beside it must be the one it was made with */
    if (!st && is_dir) {
        snprintf(tok_path, n, "%s/tokenizer.json", dir);
        if (stat(tok_path, &sb) == 0) {
            fm_tokenizer *tok = NULL;
            st = fm_tokenizer_load(&tok, tok_path);
            if (!st) st = fm_image_tokenizer_check(t, tok, tok_path);
            if (st) fm_fail_prefix(st, "%s: ", path);
            fm_tokenizer_free(tok);
        }
    }
    fm_free(path), fm_free(tok_path);
    if (st) {
        fm_image_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

fm_status fm_image_tokenizer_copy(const char *from_dir, const char *to_dir, int *copied) {
    if (copied) *copied = 0;
    size_t n = strlen(from_dir) + sizeof FM_IMAGE_TOKENIZER_FILE + 2;
    char *path = fm_malloc(n);
    if (!path) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", from_dir);
    snprintf(path, n, "%s/%s", from_dir, FM_IMAGE_TOKENIZER_FILE);
    struct stat sb;
    int present = stat(path, &sb) == 0;
    fm_free(path);
    if (!present) return FM_OK;
    fm_image_tokenizer *t;
    fm_status st = fm_image_tokenizer_load(from_dir, &t);
    if (!st) st = fm_image_tokenizer_save(t, to_dir);
    fm_image_tokenizer_free(t);
    if (!st && copied) *copied = 1;
    return st;
}
