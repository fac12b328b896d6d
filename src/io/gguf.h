/*
 * gguf.h — the GGUF writer inside libfm (gguf.c), used by the model export (gguf_export.c).
 *
 * What it is for: building a GGUF version 3 file (llama.cpp's format) from typed metadata and
 * tensors, and writing it atomically. What it is not for: knowing which keys or tensors a model
 * needs (gguf_export.c) or reading GGUF.
 */
#ifndef FM_GGUF_H
#define FM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "fm.h"

/* ggml's block of 32 weights for Q8_0: one float16 scale d, then 32 int8 q; w ~ d * q. */
#define FM_GGUF_Q8_BLOCK 32
#define FM_GGUF_Q8_BYTES 34

/* Bytes of a row of n elements of type (n a multiple of 32 for Q8_0); 0 for an unknown type. */
size_t fm_gguf_row_bytes(fm_gguf_type type, int64_t n);
/* IEEE half precision, rounded to nearest even (overflow to infinity, subnormals kept). */
uint16_t fm_gguf_f16(float f);
/* One row of n floats (n a multiple of 32) to n / 32 Q8_0 blocks in out, laid out as ggml's:
 * d = max|x| / 127 stored as float16, then q = round(x / d) with the stored d (|q| <= 127). */
void fm_gguf_quantize_q8_0(const float *x, int64_t n, uint8_t *out);

typedef struct fm_gguf fm_gguf;

/* An empty file under construction; alignment (a power of two) pads the tensor data. */
fm_status fm_gguf_new(fm_gguf **out, uint32_t alignment);
void fm_gguf_free(fm_gguf *g);

/* Metadata, in the order added; a key may appear once (a second one is FM_ERR_ARG). Strings are
 * len bytes (UTF-8, not NUL-terminated in the file). After a failed call every later call, and
 * fm_gguf_write, returns the first error. */
fm_status fm_gguf_kv_u32(fm_gguf *g, const char *key, uint32_t v);
fm_status fm_gguf_kv_f32(fm_gguf *g, const char *key, float v);
fm_status fm_gguf_kv_bool(fm_gguf *g, const char *key, int v);
fm_status fm_gguf_kv_str(fm_gguf *g, const char *key, const char *s, size_t len);
/* Arrays: n strings (strs[i], lens[i] bytes), or n int32 values. */
fm_status fm_gguf_kv_strs(fm_gguf *g, const char *key, const char *const *strs, const size_t *lens, size_t n);
fm_status fm_gguf_kv_i32s(fm_gguf *g, const char *key, const int32_t *v, size_t n);

/* Fills nbytes of a tensor's data into dst (zeroed) when the file is written. */
typedef fm_status (*fm_gguf_fill)(void *user, void *dst, size_t nbytes);
/* A tensor of ndim (1..4) dimensions ne[0..ndim) in ggml's order (ne[0] varies fastest: a matrix
 * of R rows of K values is {K, R}), of type; ne[0] must be a multiple of 32 for Q8_0. Its bytes
 * come from fill(user, ...) during fm_gguf_write, in the order the tensors were added, so user
 * must outlive the write. The name (below 64 bytes) must be new. */
fm_status fm_gguf_tensor(fm_gguf *g, const char *name, fm_gguf_type type, int ndim, const int64_t *ne,
                         fm_gguf_fill fill, void *user);

/* Writes the file to path atomically (temporary file, fsync, rename): header, metadata, tensor
 * infos, padding to the alignment, then each tensor's data padded to the alignment. On failure
 * nothing is left at path and the message names it. *bytes (may be NULL) receives the size. */
fm_status fm_gguf_write(const fm_gguf *g, const char *path, size_t *bytes);

#endif /* FM_GGUF_H */
