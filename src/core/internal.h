/*
 * internal.h — declarations shared inside libfm, not part of the public API.
 *
 * What it is for: error reporting (fm_fail), atomic file writes, the safetensors reader/writer.
 * What it is not for: kernels (src/cpu/kernels.h) or anything a library user should call.
 */
#ifndef FM_INTERNAL_H
#define FM_INTERNAL_H

#include <stdio.h>
#include "fm.h"

/* ---------------------------------------------------------------- errors (status.c) */

/* Records a printf-style message as this thread's last error and returns status. */
fm_status fm_fail(fm_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current error message with more context ("loading DIR: " ...). */
fm_status fm_fail_prefix(fm_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- big buffers (memory.c) */

/* bytes of zeros, 64-byte aligned (2 MiB and huge pages from 4 MiB up), or NULL; prefault
 * touches every page now. Released only with fm_free_big. */
void *fm_alloc_big(size_t bytes, int prefault);
void fm_free_big(void *p);

/* ---------------------------------------------------------------- threads (threads.c) */

/* Ends the calling thread's idle OpenMP threads (they start again with its next parallel
 * region). After a region libgomp's threads spin for tens of milliseconds waiting for the next
 * one; work that then runs on other threads (the team of core/team.h) would share the cores
 * with that spinning. A no-op inside a parallel region or without OpenMP 5.0. */
void fm_omp_release_idle(void);

/* ---------------------------------------------------------------- kernel timing (profile.c) */

/* The clock when profiling is on (fm_profile_enable), else 0; stop adds the time since start
 * under name (a string that outlives the table, e.g. a literal). */
double fm_profile_start(void);
void fm_profile_stop(const char *name, double start);
/* A statement (a kernel call) timed under name when profiling is on. */
#define FM_TIMED(name, call)                         \
    do {                                             \
        double fm_timed_start_ = fm_profile_start(); \
        call;                                        \
        fm_profile_stop(name, fm_timed_start_);      \
    } while (0)

/* ---------------------------------------------------------------- atomic writes (fileio.c) */

/* Writing a file so that a crash or full disk never leaves a half-written file where a good
 * one stood: data goes to "PATH.tmp.XXXXXX" in the same folder, then fflush + fsync + rename +
 * fsync of the folder. On any failure the temporary file is removed and PATH is untouched. */
typedef struct {
    FILE *fp;
    char *path;     /* final path */
    char *tmp_path; /* temporary path in the same folder */
    int failed;     /* a write failed; commit will refuse */
    int finished;   /* fm_atomic_finish done: complete and closed, not yet renamed */
} fm_atomic_file;

fm_status fm_atomic_open(fm_atomic_file *af, const char *path);
/* fwrite that remembers failure (e.g. ENOSPC) for commit to report. */
void fm_atomic_write(fm_atomic_file *af, const void *data, size_t size);
/* Flush, fsync, rename over path. Always releases af. Allocates nothing, so that no
 * out-of-memory failure can come after the rename. */
fm_status fm_atomic_commit(fm_atomic_file *af);
/* The first half of commit: flush, fsync and close the temporary file (on failure it is removed
 * and af released). The file is then complete but not in place: fm_atomic_commit renames it,
 * fm_atomic_abort removes it. For several files that are replaced together or not at all (a
 * checkpoint): every file is finished before the first is committed. */
fm_status fm_atomic_finish(fm_atomic_file *af);
/* Removes the temporary file and releases af (use on an error path before commit). */
void fm_atomic_abort(fm_atomic_file *af);

/* Failure injection for tests, sqlite-style: with FM_FAIL_IO=K in the environment, the K-th file
 * operation that asks (counted over the process from 1: creating, writing, syncing, closing,
 * renaming, linking) fails as if the system had returned EIO; FM_FAIL_IO_LOG=1 prints each
 * operation's number and name to stderr. Returns 1 (errno = EIO) when this one is to fail. */
int fm_io_should_fail(const char *op);

/* Creates a directory if it does not exist (one level). */
fm_status fm_mkdir(const char *dir);
/* dir + "/" + name, fm_malloc'd (NULL when out of memory). */
char *fm_path_join(const char *dir, const char *name);

/* hash.c: continues a 64-bit checksum h over n bytes (start from FM_HASH64_SEED). */
#define FM_HASH64_SEED 0xcbf29ce484222325ull
uint64_t fm_hash64_update(uint64_t h, const void *data, size_t n);

/* ---------------------------------------------------------------- config.json (config.c) */

/* Reads and parses a JSON file whole: a missing file, a NUL, invalid JSON (the byte named) or
 * content after it is an error naming path. *root is the caller's to cJSON_Delete. */
struct cJSON;
fm_status fm_json_load(const char *path, struct cJSON **root);
/* fm_config_save up to the rename (see fm_st_write_finished). */
fm_status fm_config_save_finished(fm_atomic_file *af, const fm_config *cfg, const char *path);

/* ---------------------------------------------------------------- text buffer (text.c) */

/* A growing, NUL-terminated text; start from {0}; a failed allocation sets failed and later
 * appends do nothing. Free data (fm_free) when done. */
typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} fm_text;

void fm_text_append(fm_text *t, const void *data, size_t n);
void fm_text_puts(fm_text *t, const char *s);
void fm_text_printf(fm_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- safetensors (safetensors.c) */

typedef enum {
    FM_DTYPE_F32,
    FM_DTYPE_F16,
    FM_DTYPE_BF16,
    FM_DTYPE_F64,
    FM_DTYPE_I64,
    FM_DTYPE_I32,
    FM_DTYPE_U8,
} fm_dtype;

/* Bytes per element, and the safetensors name ("F32", "BF16", ...). */
size_t fm_dtype_size(fm_dtype dtype);
const char *fm_dtype_name(fm_dtype dtype);

#define FM_ST_MAX_DIMS 8

typedef struct {
    char *name;
    fm_dtype dtype;
    int ndim;
    int64_t shape[FM_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data; /* points into the mapped file; not aligned in general */
} fm_st_tensor;

typedef struct {
    char *path;
    fm_st_tensor *tensors;
    int n_tensors;
    char **meta_keys; /* "__metadata__" string pairs */
    char **meta_values;
    int n_meta;
    void *map;        /* the whole file, mmap'd read-only */
    size_t map_size;
} fm_safetensors;

/* Opens and validates a safetensors file: header length, JSON, dtypes, shapes, offsets inside
 * the data and not overlapping, file not truncated. Messages name the file and tensor. */
fm_status fm_st_open(fm_safetensors *st, const char *path);
void fm_st_close(fm_safetensors *st);
const fm_st_tensor *fm_st_find(const fm_safetensors *st, const char *name);
const char *fm_st_meta(const fm_safetensors *st, const char *key); /* NULL when absent */
/* Copies a floating tensor (F32, F16, BF16, F64) into out (numel floats), converting. */
fm_status fm_st_read_f32(const fm_safetensors *st, const fm_st_tensor *t, float *out);
/* Copies an integer tensor (I32, I64, U8) into out (numel ints); fails if a value overflows. */
fm_status fm_st_read_i32(const fm_safetensors *st, const fm_st_tensor *t, int *out);

/* One tensor to write; data is little-endian in dtype. */
typedef struct {
    const char *name;
    fm_dtype dtype;
    int ndim;
    int64_t shape[FM_ST_MAX_DIMS];
    const void *data;
} fm_st_entry;

/* Writes a safetensors file atomically; meta is n_meta key/value string pairs (may be 0).
 * The header is padded with spaces to a multiple of 8 bytes; tensors are written in order. */
fm_status fm_st_write(const char *path, const fm_st_entry *entries, int n_entries,
                      const char *const *meta_keys, const char *const *meta_values, int n_meta);
/* fm_st_write up to the rename: the file is complete in af's temporary file (fm_atomic_finish
 * done), for the caller to fm_atomic_commit or fm_atomic_abort. On failure nothing is left and
 * af needs no release. */
fm_status fm_st_write_finished(fm_atomic_file *af, const char *path, const fm_st_entry *entries, int n_entries,
                               const char *const *meta_keys, const char *const *meta_values, int n_meta);

/* ---------------------------------------------------------------- LoRA adapter files (adapter_io.c) */

/* fm_lora_save's two files written whole into dir (files[0] adapter_config.json, files[1]
 * adapter_model.safetensors, recording step when >= 0) up to the rename, for the caller to
 * commit or abort (a checkpoint's files). */
fm_status fm_lora_write_finished(const fm_model *m, const char *dir, int64_t step, fm_atomic_file files[2]);
/* fm_adapter_load that also gives the step the file records (-1 when none). */
fm_status fm_adapter_load_step(fm_adapter **out, const char *dir, const fm_model *base, int64_t *step);
/* 1 when dir holds an adapter_config.json. */
int fm_adapter_dir_is(const char *dir);

/* IEEE half and bfloat16 to float. */
float fm_f16_to_f32(uint16_t h);
float fm_bf16_to_f32(uint16_t b);

#endif /* FM_INTERNAL_H */
