/*
 * idx.c — the IDX files of the MNIST family (images and labels), gzip-compressed or plain.
 *
 * What it is for: reading an image file (magic 0x00000803: count, rows, cols, then unsigned
 * bytes row-major) or a label file (magic 0x00000801: count, then one byte per label) whole
 * into memory, with every way a file can be wrong (missing, not IDX, another element type or
 * rank, truncated, trailing bytes, absurd sizes, an image/label pair whose counts disagree)
 * reported with the file's name. zlib's gzread reads both compressed and plain files.
 * Not for: writing IDX files (tests and scripts write their own), or other element types
 * (int, float IDX files are refused).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/internal.h"

#define IDX_MAGIC_IMAGES 0x00000803u /* unsigned bytes, 3 dimensions */
#define IDX_MAGIC_LABELS 0x00000801u /* unsigned bytes, 1 dimension */
#define IDX_MAX_SIDE 65536           /* rows or cols past this: not an image fm reads */
#define IDX_MAX_BYTES (((size_t)1) << 34) /* 16 GiB of pixels: refuse before allocating */
#define IDX_FIRST_CHUNK (((size_t)1) << 26) /* the first 64 MiB of the body; more as it comes */

static uint32_t big_endian_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Reads exactly n bytes; *got receives how many came (fewer at the end of the file). */
static fm_status read_exact(gzFile gz, const char *path, void *buf, size_t n, size_t *got) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
        int r = gzread(gz, (char *)buf + done, chunk);
        if (r < 0) {
            int errnum = 0;
            const char *msg = gzerror(gz, &errnum);
            *got = done;
            return fm_fail(FM_ERR_FORMAT, "%s: cannot read (%s)", path,
                           errnum == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return FM_OK;
}

fm_status fm_idx_load(const char *path, fm_idx *out) {
    if (!path || !out) return fm_fail(FM_ERR_ARG, "fm_idx_load: NULL argument");
    memset(out, 0, sizeof *out);
    gzFile gz = gzopen(path, "rb");
    if (!gz) return fm_fail(FM_ERR_IO, "%s: cannot open (%s)", path, errno ? strerror(errno) : "out of memory");
    unsigned char head[16];
    size_t got = 0;
    fm_status st = read_exact(gz, path, head, 4, &got);
    if (st != FM_OK) goto fail;
    if (got < 4) {
        st = fm_fail(FM_ERR_FORMAT, "%s: not an IDX file (%zu bytes, shorter than the 4-byte magic)", path, got);
        goto fail;
    }
    uint32_t magic = big_endian_u32(head);
    int ndim;
    if (magic == IDX_MAGIC_IMAGES) ndim = 3;
    else if (magic == IDX_MAGIC_LABELS) ndim = 1;
    else {
        if (head[0] == 0 && head[1] == 0 && head[2] != 0x08)
            st = fm_fail(FM_ERR_FORMAT, "%s: IDX element type 0x%02x is not unsigned bytes (0x08)", path, head[2]);
        else if (head[0] == 0 && head[1] == 0 && head[2] == 0x08)
            st = fm_fail(FM_ERR_FORMAT, "%s: IDX file of %d dimensions; fm reads images (3) and labels (1)", path,
                         head[3]);
        else
            st = fm_fail(FM_ERR_FORMAT, "%s: not an IDX file (magic 0x%08x; images 0x00000803, labels 0x00000801)",
                         path, magic);
        goto fail;
    }
    st = read_exact(gz, path, head + 4, 4u * ndim, &got);
    if (st != FM_OK) goto fail;
    if (got < 4u * ndim) {
        st = fm_fail(FM_ERR_FORMAT, "%s: truncated header (%zu of %d bytes of dimensions)", path, got, 4 * ndim);
        goto fail;
    }
    uint32_t count = big_endian_u32(head + 4);
    uint32_t rows = ndim == 3 ? big_endian_u32(head + 8) : 1;
    uint32_t cols = ndim == 3 ? big_endian_u32(head + 12) : 1;
    if (count > INT32_MAX) {
        st = fm_fail(FM_ERR_FORMAT, "%s: absurd item count %u", path, count);
        goto fail;
    }
    if (ndim == 3 && (rows == 0 || cols == 0 || rows > IDX_MAX_SIDE || cols > IDX_MAX_SIDE)) {
        st = fm_fail(FM_ERR_FORMAT, "%s: absurd image size %u x %u", path, rows, cols);
        goto fail;
    }
    size_t per_item = (size_t)rows * cols;
    size_t bytes = (size_t)count * per_item;
    if (bytes > IDX_MAX_BYTES) {
        st = fm_fail(FM_ERR_FORMAT, "%s: %u items of %u x %u pixels is more than fm reads (16 GiB)", path, count, rows,
                     cols);
        goto fail;
    }
    /* the buffer grows with what really comes (64 MiB at a time, doubling), so a header that
     * announces more than the file holds costs no more memory than the file */
    size_t cap = bytes < IDX_FIRST_CHUNK ? bytes : IDX_FIRST_CHUNK;
    uint8_t *data = fm_malloc(cap ? cap : 1);
    if (!data) {
        st = fm_fail(FM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
        goto fail;
    }
    got = 0;
    while (st == FM_OK) {
        size_t more = 0;
        st = read_exact(gz, path, data + got, cap - got, &more);
        got += more;
        if (st != FM_OK || got < cap || cap == bytes) break;
        size_t grown_cap = cap > bytes / 2 ? bytes : 2 * cap;
        uint8_t *grown = fm_realloc(data, grown_cap);
        if (!grown) {
            st = fm_fail(FM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, grown_cap);
            break;
        }
        data = grown, cap = grown_cap;
    }
    if (st == FM_OK && got < bytes)
        st = fm_fail(FM_ERR_FORMAT, "%s: truncated: the header says %u %s (%zu bytes) but %zu bytes follow it (%zu whole)",
                     path, count, ndim == 3 ? "images" : "labels", bytes, got, per_item ? got / per_item : 0);
    if (st == FM_OK) {
        unsigned char extra;
        size_t more = 0;
        st = read_exact(gz, path, &extra, 1, &more);
        if (st == FM_OK && more)
            st = fm_fail(FM_ERR_FORMAT, "%s: bytes after the %u %s the header announces (a wrong count?)", path, count,
                         ndim == 3 ? "images" : "labels");
    }
    if (st != FM_OK) {
        fm_free(data);
        goto fail;
    }
    gzclose(gz);
    out->count = (int)count;
    out->rows = ndim == 3 ? (int)rows : 0;
    out->cols = ndim == 3 ? (int)cols : 0;
    out->data = data;
    return FM_OK;
fail:
    gzclose(gz);
    return st;
}

fm_status fm_idx_load_pair(const char *images_path, const char *labels_path, fm_idx *images, fm_idx *labels) {
    if (!images_path || !labels_path || !images || !labels)
        return fm_fail(FM_ERR_ARG, "fm_idx_load_pair: NULL argument");
    memset(labels, 0, sizeof *labels);
    fm_status st = fm_idx_load(images_path, images);
    if (st != FM_OK) return st;
    if (images->rows == 0) {
        fm_idx_free(images);
        return fm_fail(FM_ERR_MISMATCH, "%s: a label file (1 dimension) where images were expected", images_path);
    }
    st = fm_idx_load(labels_path, labels);
    if (st != FM_OK) {
        fm_idx_free(images);
        return st;
    }
    if (labels->rows != 0) {
        st = fm_fail(FM_ERR_MISMATCH, "%s: an image file (3 dimensions) where labels were expected", labels_path);
    } else if (labels->count != images->count) {
        st = fm_fail(FM_ERR_MISMATCH, "%s holds %d images but %s holds %d labels", images_path, images->count,
                     labels_path, labels->count);
    }
    if (st != FM_OK) {
        fm_idx_free(images);
        fm_idx_free(labels);
    }
    return st;
}

void fm_idx_free(fm_idx *idx) {
    if (!idx) return;
    fm_free(idx->data);
    memset(idx, 0, sizeof *idx);
}
