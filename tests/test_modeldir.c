/*
 * test_modeldir.c — the model directory on disk (config.json, model.safetensors,
 * training_state.safetensors): damaged directories fail clearly, valid variants load,
 * checkpoints round-trip exactly and saves are atomic.
 *
 * What it is for: every way a directory can be missing, corrupt, truncated or inconsistent gives
 * the right fm_status and a message naming the file and the problem. Hugging Face files load:
 * a "transformer." prefix, the attn.bias / attn.masked_bias buffers, F16 and BF16 tensors, a
 * tied lm_head, n_ctx in place of n_positions. A non-default n_inner round-trips. A checkpoint
 * restores step, AdamW settings, moments, RNG, data position and seed exactly; torn or foreign
 * training states are refused. A failed save creates nothing and leaves the old files as they were.
 * What it is not for: the safetensors format itself (test_safetensors.c) or the numerics of the
 * model (test_parity.c).
 *
 * Every test starts from one small model (2 layers, width 24, 2 heads of 12, vocabulary 31,
 * 16 positions) saved by fm_model_save into a fresh temporary directory. All its parameters are
 * random, biases and LayerNorm included, so a tensor skipped on load would show. A test copies
 * that directory, damages the copy with the helpers below and checks what loading it gives.
 */
#include "test_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>

#include "core/internal.h"

#define CONFIG_FILE "config.json"
#define WEIGHTS_FILE "model.safetensors"
#define STATE_FILE "training_state.safetensors"

/* ---------------------------------------------------------------- the small model */

enum { N_LAYER = 2, N_EMBD = 24, N_HEAD = 2, VOCAB = 31, N_POS = 16 };

/* The small model with every parameter drawn from N(0, 0.5^2) by seed. */
static fm_model *small_model(int n_layer, int n_inner, uint64_t seed) {
    fm_config cfg;
    fm_config_default(&cfg);
    cfg.n_layer = n_layer;
    cfg.n_embd = N_EMBD;
    cfg.n_head = N_HEAD;
    cfg.vocab_size = VOCAB;
    cfg.n_positions = N_POS;
    cfg.n_inner = n_inner;
    fm_model *m = NULL;
    if (fm_model_init(&m, &cfg, seed) != FM_OK) fail_msg("fm_model_init: %s", fm_last_error());
    fm_rng rng;
    fm_rng_seed(&rng, seed + 1000);
    float *p = fm_model_params(m);
    for (size_t i = 0; i < fm_model_num_params(m); i++) p[i] = 0.5f * fm_rng_normal(&rng);
    return m;
}

static void assert_same_params(fm_model *a, fm_model *b) {
    assert_int_equal(fm_model_num_params(a), fm_model_num_params(b));
    assert_memory_equal(fm_model_params(a), fm_model_params(b), sizeof(float) * fm_model_num_params(a));
}

/* ---------------------------------------------------------------- fixture */

#define MAX_OWNED 16

typedef struct {
    char *tmp;              /* this test's temporary directory */
    char *good;             /* tmp/good: the small model as fm_model_save wrote it */
    fm_model *model;        /* the model saved in good */
    int n_owned;
    char *owned[MAX_OWNED]; /* paths handed out by dir_in, freed at teardown */
} fixture;

/* A path held in a value, for paths a helper needs only for a moment (nothing is left to free
 * when an assertion fails half-way): join(dir, name).s */
typedef struct {
    char s[4096];
} path_text;

static path_text join(const char *dir, const char *name) {
    path_text p;
    if (snprintf(p.s, sizeof p.s, "%s/%s", dir, name) >= (int)sizeof p.s) fail_msg("path too long: %s", dir);
    return p;
}

/* tmp/name, owned by the fixture (so a failing test leaks nothing). */
static const char *dir_in(fixture *f, const char *name) {
    assert_true(f->n_owned < MAX_OWNED);
    return f->owned[f->n_owned++] = test_path(f->tmp, name);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->tmp = make_temp_dir();
    f->good = test_path(f->tmp, "good");
    f->model = small_model(N_LAYER, 0, 1);
    if (fm_model_save(f->model, f->good) != FM_OK) fail_msg("fm_model_save: %s", fm_last_error());
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    chmod(f->good, 0755); /* in case a test failed while the directory was read-only */
    remove_dir_recursive(f->tmp);
    for (int i = 0; i < f->n_owned; i++) free(f->owned[i]);
    fm_model_free(f->model);
    free(f->good);
    free(f->tmp);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- files and directories */

static void copy_file(const char *from, const char *to) {
    size_t size;
    unsigned char *data = read_file_bytes(from, &size);
    if (!data) fail_msg("cannot read %s", from);
    write_file_bytes(to, data, size);
    free(data);
}

/* Copies name from dir src to dir dst if src has it. */
static void copy_if_present(const char *src, const char *dst, const char *name) {
    path_text from = join(src, name);
    if (file_exists(from.s)) copy_file(from.s, join(dst, name).s);
}

/* Copies the model-directory files of src into dst (created if absent). */
static void copy_model_dir(const char *src, const char *dst) {
    if (mkdir(dst, 0755) != 0 && !file_exists(dst)) fail_msg("cannot create %s", dst);
    copy_if_present(src, dst, CONFIG_FILE);
    copy_if_present(src, dst, WEIGHTS_FILE);
    copy_if_present(src, dst, STATE_FILE);
}

/* tmp/name, a copy of the good directory, ready to be damaged. */
static const char *case_dir(fixture *f, const char *name) {
    const char *dir = dir_in(f, name);
    copy_model_dir(f->good, dir);
    return dir;
}

static void remove_file_in(const char *dir, const char *name) {
    assert_int_equal(unlink(join(dir, name).s), 0);
}

static void write_text_in(const char *dir, const char *name, const char *text) {
    write_file_bytes(join(dir, name).s, text, strlen(text));
}

/* The bytes of dir/name (malloc'd); fails the test when it cannot be read. */
static unsigned char *read_in(const char *dir, const char *name, size_t *size) {
    path_text path = join(dir, name);
    unsigned char *data = read_file_bytes(path.s, size);
    if (!data) fail_msg("cannot read %s", path.s);
    return data;
}

/* Asserts that dir_a/name and dir_b/name have the same bytes. */
static void assert_same_file(const char *dir_a, const char *dir_b, const char *name) {
    size_t size_a, size_b;
    unsigned char *a = read_in(dir_a, name, &size_a), *b = read_in(dir_b, name, &size_b);
    if (size_a != size_b || memcmp(a, b, size_a) != 0)
        fail_msg("%s differs between %s (%zu bytes) and %s (%zu bytes)", name, dir_a, size_a, dir_b, size_b);
    free(a);
    free(b);
}

/* Replaces key of dir/config.json with json_value (JSON text), or removes it when NULL. */
static void edit_config(const char *dir, const char *key, const char *json_value) {
    char *text = (char *)read_in(dir, CONFIG_FILE, NULL);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (json_value) {
        cJSON *value = cJSON_Parse(json_value);
        assert_non_null(value);
        cJSON_AddItemToObject(root, key, value);
    }
    char *out = cJSON_Print(root);
    write_text_in(dir, CONFIG_FILE, out);
    cJSON_free(out);
    cJSON_Delete(root);
    free(text);
}

/* Rewrites dir/name keeping its first keep bytes and then patching n bytes at offset. */
static void damage_bytes(const char *dir, const char *name, size_t keep, size_t offset, const void *patch,
                         size_t n) {
    size_t size;
    unsigned char *data = read_in(dir, name, &size);
    assert_true(keep <= size && offset + n <= keep);
    if (n) memcpy(data + offset, patch, n);
    write_file_bytes(join(dir, name).s, data, keep);
    free(data);
}

static size_t file_size_in(const char *dir, const char *name) {
    size_t size;
    free(read_in(dir, name, &size));
    return size;
}

/* ---------------------------------------------------------------- editable safetensors copies */

#define MAX_ENTRIES 64

/* A safetensors file held in memory so that a test can drop, add, rename, re-type tensors and
 * change metadata before writing it back with fm_st_write. */
typedef struct {
    int n;
    char *name[MAX_ENTRIES];
    fm_dtype dtype[MAX_ENTRIES];
    int ndim[MAX_ENTRIES];
    int64_t shape[MAX_ENTRIES][FM_ST_MAX_DIMS];
    unsigned char *data[MAX_ENTRIES];
    int n_meta;
    char *key[MAX_ENTRIES], *value[MAX_ENTRIES];
} st_copy;

static size_t shape_numel(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    return n;
}

static size_t entry_bytes(const st_copy *c, int i) {
    return shape_numel(c->ndim[i], c->shape[i]) * fm_dtype_size(c->dtype[i]);
}

static void st_copy_add(st_copy *c, const char *name, fm_dtype dtype, int ndim, const int64_t *shape,
                        const void *data) {
    assert_true(c->n < MAX_ENTRIES);
    int i = c->n++;
    c->name[i] = strdup(name);
    c->dtype[i] = dtype;
    c->ndim[i] = ndim;
    memcpy(c->shape[i], shape, sizeof(int64_t) * (size_t)ndim);
    size_t nbytes = entry_bytes(c, i);
    c->data[i] = malloc(nbytes ? nbytes : 1);
    assert_non_null(c->data[i]);
    if (nbytes) memcpy(c->data[i], data, nbytes);
}

static void st_copy_read(st_copy *c, const char *dir, const char *name) {
    memset(c, 0, sizeof *c);
    fm_safetensors st;
    if (fm_st_open(&st, join(dir, name).s) != FM_OK) fail_msg("%s", fm_last_error());
    for (int i = 0; i < st.n_tensors; i++) {
        const fm_st_tensor *t = &st.tensors[i];
        st_copy_add(c, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    assert_true(st.n_meta <= MAX_ENTRIES);
    for (int i = 0; i < st.n_meta; i++) {
        c->key[i] = strdup(st.meta_keys[i]);
        c->value[i] = strdup(st.meta_values[i]);
    }
    c->n_meta = st.n_meta;
    fm_st_close(&st);
}

static void st_copy_free(st_copy *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->name[i]);
        free(c->data[i]);
    }
    for (int i = 0; i < c->n_meta; i++) {
        free(c->key[i]);
        free(c->value[i]);
    }
    memset(c, 0, sizeof *c);
}

/* Writes c as dir/name and frees it. */
static void st_copy_write(st_copy *c, const char *dir, const char *name) {
    fm_st_entry entries[MAX_ENTRIES];
    for (int i = 0; i < c->n; i++) {
        entries[i] = (fm_st_entry){.name = c->name[i], .dtype = c->dtype[i], .ndim = c->ndim[i],
                                   .data = c->data[i]};
        memcpy(entries[i].shape, c->shape[i], sizeof(int64_t) * (size_t)c->ndim[i]);
    }
    if (fm_st_write(join(dir, name).s, entries, c->n, (const char *const *)c->key,
                    (const char *const *)c->value, c->n_meta) != FM_OK)
        fail_msg("fm_st_write: %s", fm_last_error());
    st_copy_free(c);
}

static int st_copy_index(const st_copy *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->name[i], name) == 0) return i;
    fail_msg("no tensor '%s' in the copy", name);
    return -1;
}

static void st_copy_remove(st_copy *c, const char *name) {
    int i = st_copy_index(c, name);
    free(c->name[i]);
    free(c->data[i]);
    c->n--;
    for (int k = i; k < c->n; k++) {
        c->name[k] = c->name[k + 1];
        c->dtype[k] = c->dtype[k + 1];
        c->ndim[k] = c->ndim[k + 1];
        memcpy(c->shape[k], c->shape[k + 1], sizeof c->shape[k]);
        c->data[k] = c->data[k + 1];
    }
}

/* Replaces the tensor called name with one of another dtype and shape (data copied). */
static void st_copy_replace(st_copy *c, const char *name, fm_dtype dtype, int ndim, const int64_t *shape,
                            const void *data) {
    st_copy_remove(c, name);
    st_copy_add(c, name, dtype, ndim, shape, data);
}

static void st_copy_rename(st_copy *c, int i, const char *new_name) {
    free(c->name[i]);
    c->name[i] = strdup(new_name);
}

/* Sets metadata key to value; value NULL removes the key. */
static void st_copy_set_meta(st_copy *c, const char *key, const char *value) {
    for (int i = 0; i < c->n_meta; i++) {
        if (strcmp(c->key[i], key) != 0) continue;
        free(c->value[i]);
        if (value) {
            c->value[i] = strdup(value);
        } else {
            free(c->key[i]);
            c->key[i] = c->key[c->n_meta - 1];
            c->value[i] = c->value[c->n_meta - 1];
            c->n_meta--;
        }
        return;
    }
    if (!value) return;
    assert_true(c->n_meta < MAX_ENTRIES);
    c->key[c->n_meta] = strdup(key);
    c->value[c->n_meta++] = strdup(value);
}

/* ---------------------------------------------------------------- F16 / BF16 */

/* float to IEEE half, rounding to nearest even (|f| < 65504 here). */
static uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    float a = fabsf(f);
    if (a < 6.103515625e-05f) /* below 2^-14: a subnormal half, a multiple of 2^-24 */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    uint32_t h = ((((u >> 23) & 0xffu) - 127u + 15u) << 10) | ((u & 0x7fffffu) >> 13);
    uint32_t rest = u & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* a carry moves into the exponent */
    return sign | (uint16_t)h;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Converts an F32 entry to F16 or BF16 in place. */
static void st_copy_convert(st_copy *c, int i, fm_dtype to) {
    assert_int_equal(c->dtype[i], FM_DTYPE_F32);
    size_t n = shape_numel(c->ndim[i], c->shape[i]);
    uint16_t *half = malloc(2 * n + 2);
    for (size_t k = 0; k < n; k++) {
        float v;
        memcpy(&v, c->data[i] + 4 * k, sizeof v);
        assert_true(fabsf(v) < 65504.0f);
        half[k] = to == FM_DTYPE_F16 ? f32_to_f16(v) : f32_to_bf16(v);
    }
    free(c->data[i]);
    c->data[i] = (unsigned char *)half;
    c->dtype[i] = to;
}

/* ---------------------------------------------------------------- expectations */

static void assert_message_has(const char *phrase) {
    if (!strstr(fm_last_error(), phrase))
        fail_msg("error \"%s\" does not contain \"%s\"", fm_last_error(), phrase);
}

/* fm_model_load(dir) fails with status, a message containing phrase and the path dir/file, and
 * leaves no model behind. An unexpected success is reported as such (and its model freed). */
static void expect_load_error(const char *dir, const char *file, fm_status status, const char *phrase) {
    fm_model *m = (fm_model *)&m; /* not NULL: a failing call must clear it */
    fm_status got = fm_model_load(&m, dir);
    if (got == FM_OK) {
        fm_model_free(m);
        fail_msg("loading %s succeeded; expected %s with \"%s\"", dir, fm_status_name(status), phrase);
    }
    assert_error_contains(got, status, phrase);
    assert_message_has(join(dir, file).s);
    assert_null(m);
}

static void expect_checkpoint_error(const char *dir, const char *file, fm_status status, const char *phrase) {
    fm_model *m = (fm_model *)&m;
    fm_optimizer *o = (fm_optimizer *)&o;
    fm_train_state ts;
    fm_status got = fm_checkpoint_load(dir, &m, &o, &ts);
    if (got == FM_OK) {
        fm_optimizer_free(o);
        fm_model_free(m);
        fail_msg("loading checkpoint %s succeeded; expected %s with \"%s\"", dir, fm_status_name(status),
                 phrase);
    }
    assert_error_contains(got, status, phrase);
    assert_message_has(dir); /* the file in dir, or in its current checkpoint folder */
    assert_message_has(file);
    assert_null(m);
    assert_null(o);
}

/* A copy of the good directory with one config.json key changed (json_value) or removed (NULL)
 * must fail with status and phrase. */
static void config_case(fixture *f, const char *key, const char *json_value, fm_status status,
                        const char *phrase) {
    const char *dir = case_dir(f, "config_case");
    edit_config(dir, key, json_value);
    expect_load_error(dir, CONFIG_FILE, status, phrase);
}

/* ---------------------------------------------------------------- config.json */

static void test_missing_directory(void **state) {
    fixture *f = *state;
    const char *dir = dir_in(f, "no_such_model");
    expect_load_error(dir, CONFIG_FILE, FM_ERR_IO, "cannot open");
    assert_message_has("No such file");
}

static void test_missing_config(void **state) {
    const char *dir = case_dir(*state, "no_config");
    remove_file_in(dir, CONFIG_FILE);
    expect_load_error(dir, CONFIG_FILE, FM_ERR_IO, "cannot open");
}

static void test_empty_config(void **state) {
    const char *dir = case_dir(*state, "empty_config");
    write_text_in(dir, CONFIG_FILE, "");
    expect_load_error(dir, CONFIG_FILE, FM_ERR_FORMAT, "empty file");
}

static void test_invalid_json_config(void **state) {
    const char *dir = case_dir(*state, "bad_json");
    write_text_in(dir, CONFIG_FILE, "{\"n_layer\": 2, \"n_head\": 2,, }");
    expect_load_error(dir, CONFIG_FILE, FM_ERR_FORMAT, "invalid JSON");
}

static void test_config_not_an_object(void **state) {
    const char *dir = case_dir(*state, "json_array");
    write_text_in(dir, CONFIG_FILE, "[2, 24, 2]");
    expect_load_error(dir, CONFIG_FILE, FM_ERR_FORMAT, "not a JSON object");
}

static void test_config_missing_n_embd(void **state) {
    config_case(*state, "n_embd", NULL, FM_ERR_CONFIG, "missing key \"n_embd\"");
}

static void test_config_n_head_not_dividing(void **state) {
    config_case(*state, "n_head", "5", FM_ERR_CONFIG, "n_head = 5 does not divide n_embd = 24");
}

static void test_config_zero_layers(void **state) {
    config_case(*state, "n_layer", "0", FM_ERR_CONFIG, "n_layer = 0");
}

static void test_config_fractional_value(void **state) {
    config_case(*state, "vocab_size", "31.5", FM_ERR_CONFIG, "\"vocab_size\" must be an integer");
}

static void test_config_relu_refused(void **state) {
    config_case(*state, "activation_function", "\"relu\"", FM_ERR_CONFIG,
                "activation_function \"relu\" is not supported");
}

static void test_config_untied_refused(void **state) {
    config_case(*state, "tie_word_embeddings", "false", FM_ERR_CONFIG, "\"tie_word_embeddings\": false");
}

static void test_config_bert_refused(void **state) {
    config_case(*state, "model_type", "\"bert\"", FM_ERR_CONFIG, "model_type must be \"gpt2\"");
}

/* ---------------------------------------------------------------- model.safetensors: the file */

static void test_missing_weights(void **state) {
    const char *dir = case_dir(*state, "no_weights");
    remove_file_in(dir, WEIGHTS_FILE);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_IO, "cannot open");
}

static void test_empty_weights(void **state) {
    const char *dir = case_dir(*state, "empty_weights");
    write_text_in(dir, WEIGHTS_FILE, "");
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_FORMAT, "empty file");
}

static void test_truncated_weights(void **state) {
    const char *dir = case_dir(*state, "truncated");
    damage_bytes(dir, WEIGHTS_FILE, file_size_in(dir, WEIGHTS_FILE) - 100, 0, NULL, 0);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_FORMAT, "truncated");
}

static void test_header_length_beyond_file(void **state) {
    const char *dir = case_dir(*state, "long_header");
    size_t size = file_size_in(dir, WEIGHTS_FILE);
    uint64_t n = (uint64_t)size + 1000;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    damage_bytes(dir, WEIGHTS_FILE, size, 0, len, sizeof len);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_FORMAT, "beyond the end of the file");
}

static void test_garbage_header(void **state) {
    const char *dir = case_dir(*state, "garbage_header");
    damage_bytes(dir, WEIGHTS_FILE, file_size_in(dir, WEIGHTS_FILE), 8, "garbage!", 8);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_FORMAT, "invalid JSON");
}

/* ---------------------------------------------------------------- model.safetensors: the tensors */

static void test_missing_tensor(void **state) {
    const char *dir = case_dir(*state, "missing_tensor");
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    st_copy_remove(&w, "h.1.mlp.c_fc.bias");
    st_copy_write(&w, dir, WEIGHTS_FILE);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "missing tensor 'h.1.mlp.c_fc.bias'");
}

static void test_unknown_tensor(void **state) {
    const char *dir = case_dir(*state, "unknown_tensor");
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    float zeros[N_EMBD] = {0};
    st_copy_add(&w, "h.2.ln_1.weight", FM_DTYPE_F32, 1, (int64_t[]){N_EMBD}, zeros); /* a third layer */
    st_copy_write(&w, dir, WEIGHTS_FILE);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "unknown tensor 'h.2.ln_1.weight'");
}

/* The same tensor under its fm name and its Hugging Face name. */
static void test_tensor_twice_refused(void **state) {
    const char *dir = case_dir(*state, "twice");
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    int i = st_copy_index(&w, "ln_f.bias");
    st_copy_add(&w, "transformer.ln_f.bias", w.dtype[i], w.ndim[i], w.shape[i], w.data[i]);
    st_copy_write(&w, dir, WEIGHTS_FILE);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "appears twice");
    assert_message_has("ln_f.bias");
}

static void test_wrong_shape(void **state) {
    const char *dir = case_dir(*state, "wrong_shape");
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    float zeros[N_EMBD * (N_EMBD - 1)] = {0};
    st_copy_replace(&w, "h.1.attn.c_proj.weight", FM_DTYPE_F32, 2, (int64_t[]){N_EMBD, N_EMBD - 1}, zeros);
    st_copy_write(&w, dir, WEIGHTS_FILE);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "'h.1.attn.c_proj.weight'");
    assert_message_has("[24, 23]"); /* found */
    assert_message_has("[24, 24]"); /* expected */
}

static void test_integer_dtype_refused(void **state) {
    const char *dir = case_dir(*state, "i32");
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    int32_t ones[N_EMBD];
    for (int i = 0; i < N_EMBD; i++) ones[i] = 1;
    st_copy_replace(&w, "h.0.ln_1.weight", FM_DTYPE_I32, 1, (int64_t[]){N_EMBD}, ones);
    st_copy_write(&w, dir, WEIGHTS_FILE);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_FORMAT, "I32");
    assert_message_has("h.0.ln_1.weight");
}

static void test_vocab_size_disagrees_with_wte(void **state) {
    const char *dir = case_dir(*state, "vocab");
    edit_config(dir, "vocab_size", "40");
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "'wte.weight'");
    assert_message_has("[31, 24]");
    assert_message_has("[40, 24]");
}

/* ---------------------------------------------------------------- valid variants */

/* A Hugging Face style copy of the good weights in dir: every name prefixed "transformer.",
 * the causal-mask buffers h.N.attn.bias (1, 1, P, P) and h.N.attn.masked_bias () added, every
 * tensor converted to dtype (F32 keeps it), and lm_head.weight (a copy of wte) when asked. */
static void write_hf_weights(const char *dir, fm_dtype dtype, int with_lm_head) {
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    if (with_lm_head) {
        int i = st_copy_index(&w, "wte.weight");
        st_copy_add(&w, "lm_head.weight", w.dtype[i], w.ndim[i], w.shape[i], w.data[i]);
    }
    for (int i = 0; i < w.n; i++) {
        if (strcmp(w.name[i], "lm_head.weight") == 0) continue;
        char name[128];
        snprintf(name, sizeof name, "transformer.%s", w.name[i]);
        st_copy_rename(&w, i, name);
    }
    float *mask = calloc(N_POS * N_POS, sizeof *mask);
    for (int r = 0; r < N_POS; r++)
        for (int c = 0; c <= r; c++) mask[r * N_POS + c] = 1.0f;
    float masked_bias = -1e4f;
    for (int l = 0; l < N_LAYER; l++) {
        char name[128];
        snprintf(name, sizeof name, "transformer.h.%d.attn.bias", l);
        st_copy_add(&w, name, FM_DTYPE_F32, 4, (int64_t[]){1, 1, N_POS, N_POS}, mask);
        snprintf(name, sizeof name, "transformer.h.%d.attn.masked_bias", l);
        st_copy_add(&w, name, FM_DTYPE_F32, 0, (int64_t[]){0}, &masked_bias);
    }
    free(mask);
    if (dtype != FM_DTYPE_F32)
        for (int i = 0; i < w.n; i++) st_copy_convert(&w, i, dtype);
    st_copy_write(&w, dir, WEIGHTS_FILE);
}

/* Every parameter of got within the rounding of a float with mant_bits of mantissa (10 for F16,
 * 7 for BF16) of want: half a unit in the last place, or half of subnormal_step (the spacing of
 * the format's subnormals) when that is larger. */
static void assert_within_rounding(fm_model *got, fm_model *want, int mant_bits, double subnormal_step) {
    double rel = ldexp(1.0, -(mant_bits + 1)), worst = 0;
    for (int t = 0; t < fm_model_num_tensors(want); t++) {
        const fm_tensor_info *info = fm_model_tensor(want, t);
        const float *g = fm_model_params(got) + info->offset, *w = fm_model_params(want) + info->offset;
        int nonzero = 0;
        for (size_t i = 0; i < info->numel; i++) {
            double err = fabs((double)g[i] - w[i]);
            double bound = fmax(rel * fabs(w[i]), subnormal_step / 2);
            if (!(err <= bound))
                fail_msg("%s[%zu]: loaded %.9g, saved %.9g: more than the rounding apart", info->name, i, g[i],
                         w[i]);
            if (err / bound > worst) worst = err / bound;
            nonzero |= g[i] != 0.0f;
        }
        if (!nonzero) fail_msg("%s was not loaded (all zero)", info->name);
    }
    print_message("largest error: %.3f of the rounding bound\n", worst);
    assert_true(worst > 0); /* the values really went through the conversion */
}

static void load_ok(fm_model **m, const char *dir) {
    if (fm_model_load(m, dir) != FM_OK) fail_msg("loading %s: %s", dir, fm_last_error());
}

static void test_hf_f32_with_buffers_loads_exactly(void **state) {
    fixture *f = *state;
    const char *dir = case_dir(f, "hf_f32");
    write_hf_weights(dir, FM_DTYPE_F32, 0);
    fm_model *m;
    load_ok(&m, dir);
    assert_same_params(m, f->model); /* c_attn.bias included, the attn.bias buffers skipped */
    fm_model_free(m);
}

static void test_hf_f16_loads(void **state) {
    fixture *f = *state;
    const char *dir = case_dir(f, "hf_f16");
    write_hf_weights(dir, FM_DTYPE_F16, 0);
    fm_model *m;
    load_ok(&m, dir);
    assert_within_rounding(m, f->model, 10, ldexp(1.0, -24));
    fm_model_free(m);
}

static void test_hf_bf16_with_lm_head_loads(void **state) {
    fixture *f = *state;
    const char *dir = case_dir(f, "hf_bf16");
    write_hf_weights(dir, FM_DTYPE_BF16, 1);
    fm_model *m;
    load_ok(&m, dir);
    assert_within_rounding(m, f->model, 7, 0);
    fm_model_free(m);
}

/* A copy of the good directory with lm_head.weight: wte's data, with element 5 plus delta,
 * stored with shape rows x cols. */
static const char *lm_head_case(fixture *f, const char *name, float delta, int64_t rows, int64_t cols) {
    const char *dir = case_dir(f, name);
    st_copy w;
    st_copy_read(&w, dir, WEIGHTS_FILE);
    int i = st_copy_index(&w, "wte.weight");
    st_copy_add(&w, "lm_head.weight", FM_DTYPE_F32, 2, (int64_t[]){rows, cols}, w.data[i]);
    float *head = (float *)w.data[w.n - 1];
    head[5] += delta;
    st_copy_write(&w, dir, WEIGHTS_FILE);
    return dir;
}

static void test_lm_head_equal_to_wte_loads(void **state) {
    fixture *f = *state;
    const char *dir = lm_head_case(f, "lm_head_tied", 0.0f, VOCAB, N_EMBD);
    fm_model *m;
    load_ok(&m, dir);
    assert_same_params(m, f->model);
    fm_model_free(m);
}

static void test_lm_head_different_refused(void **state) {
    const char *dir = lm_head_case(*state, "lm_head_untied", 0.25f, VOCAB, N_EMBD);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "tied");
    assert_message_has("lm_head.weight");
}

/* wte's bytes stored as a (C, V) matrix are another matrix, not a tied copy of wte (V, C). */
static void test_lm_head_transposed_shape_refused(void **state) {
    const char *dir = lm_head_case(*state, "lm_head_transposed", 0.0f, N_EMBD, VOCAB);
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "lm_head.weight");
}

static void test_n_ctx_instead_of_n_positions(void **state) {
    fixture *f = *state;
    const char *dir = case_dir(f, "n_ctx");
    edit_config(dir, "n_positions", NULL);
    edit_config(dir, "n_ctx", "16");
    fm_model *m;
    load_ok(&m, dir);
    assert_int_equal(fm_model_config(m)->n_positions, N_POS);
    assert_same_params(m, f->model);
    fm_model_free(m);
}

static void test_n_inner_round_trips(void **state) {
    fixture *f = *state;
    enum { H = 40 };
    fm_model *saved = small_model(N_LAYER, H, 7);
    const char *dir = dir_in(f, "n_inner");
    assert_int_equal(fm_model_save(saved, dir), FM_OK);

    char *text = (char *)read_in(dir, CONFIG_FILE, NULL);
    cJSON *root = cJSON_Parse(text);
    const cJSON *n_inner = cJSON_GetObjectItemCaseSensitive(root, "n_inner");
    assert_true(cJSON_IsNumber(n_inner) && n_inner->valueint == H);
    cJSON_Delete(root);
    free(text);

    fm_model *m;
    load_ok(&m, dir);
    assert_int_equal(fm_model_config(m)->n_inner, H);
    assert_int_equal(fm_config_mlp_width(fm_model_config(m)), H);
    const struct { const char *name; int ndim, d0, d1; } want[] = {
        {"h.1.mlp.c_fc.weight", 2, N_EMBD, H},
        {"h.1.mlp.c_fc.bias", 1, H, 0},
        {"h.1.mlp.c_proj.weight", 2, H, N_EMBD},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const fm_tensor_info *t = fm_model_tensor(m, fm_model_find_tensor(m, want[i].name));
        assert_non_null(t);
        assert_int_equal(t->ndim, want[i].ndim);
        assert_int_equal(t->shape[0], want[i].d0);
        if (t->ndim == 2) assert_int_equal(t->shape[1], want[i].d1);
    }
    assert_same_params(m, saved);
    fm_model_free(m);

    /* the same file under the default width (4 * 24 = 96) is a shape mismatch */
    edit_config(dir, "n_inner", "null");
    expect_load_error(dir, WEIGHTS_FILE, FM_ERR_MISMATCH, "mlp.c_fc.weight");
    assert_message_has("[24, 40]");
    assert_message_has("[24, 96]");
    fm_model_free(saved);
}

/* ---------------------------------------------------------------- checkpoints */

/* A small training run: model, AdamW with non-default settings, and the trainer's state. */
typedef struct {
    fm_model *model;
    fm_optimizer *opt;
    fm_train_state state;
} trainer;

static void trainer_init(trainer *t, int n_layer, uint64_t seed) {
    t->model = small_model(n_layer, 0, seed);
    fm_adamw_config c = {.lr = 1e-3f, .min_lr = 1e-4f, .warmup_steps = 3, .total_steps = 50, .beta1 = 0.8f,
                         .beta2 = 0.99f, .eps = 1e-7f, .weight_decay = 0.05f, .grad_clip = 0.5f};
    assert_int_equal(fm_optimizer_init(&t->opt, t->model, &c), FM_OK);
    fm_rng_seed(&t->state.rng, seed * 7919 + 3);
    t->state.data_position = 1000 * seed;
    t->state.seed = seed;
}

static void trainer_free(trainer *t) {
    fm_optimizer_free(t->opt);
    fm_model_free(t->model);
}

/* One AdamW step on a batch drawn from the trainer's own rng; moves the data position. */
static void trainer_step(trainer *t) {
    enum { B = 2, T = 8 };
    int tokens[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)(fm_rng_u64(&t->state.rng) % VOCAB);
        targets[i] = (int)(fm_rng_u64(&t->state.rng) % VOCAB);
    }
    float loss;
    fm_model_zero_grad(t->model);
    assert_int_equal(fm_model_train_loss(t->model, tokens, targets, NULL, B, T, &loss), FM_OK);
    assert_int_equal(fm_optimizer_step(t->opt, t->model, NULL, NULL), FM_OK);
    t->state.data_position += B * T;
}

/* Saves t as the checkpoint tmp/name. */
/* The current checkpoint folder of a run directory (through its link), where its files are. */
#define CURRENT(dir) join(dir, "checkpoint").s

static const char *save_checkpoint(fixture *f, const trainer *t, const char *name) {
    const char *dir = dir_in(f, name);
    if (fm_checkpoint_save(dir, t->model, t->opt, &t->state) != FM_OK)
        fail_msg("fm_checkpoint_save: %s", fm_last_error());
    return dir;
}

static void load_checkpoint_ok(trainer *t, const char *dir) {
    if (fm_checkpoint_load(dir, &t->model, &t->opt, &t->state) != FM_OK)
        fail_msg("loading %s: %s", dir, fm_last_error());
}

static void assert_same_adamw(const fm_adamw_config *a, const fm_adamw_config *b) {
    assert_true(a->lr == b->lr && a->min_lr == b->min_lr);
    assert_int_equal(a->warmup_steps, b->warmup_steps);
    assert_int_equal(a->total_steps, b->total_steps);
    assert_true(a->beta1 == b->beta1 && a->beta2 == b->beta2 && a->eps == b->eps);
    assert_true(a->weight_decay == b->weight_decay && a->grad_clip == b->grad_clip);
}

static void test_checkpoint_round_trip(void **state) {
    fixture *f = *state;
    trainer a, b;
    trainer_init(&a, N_LAYER, 5);
    trainer_step(&a);
    trainer_step(&a);
    const char *dir = save_checkpoint(f, &a, "ckpt");

    /* the moments are really there to be restored */
    st_copy s;
    st_copy_read(&s, dir, STATE_FILE);
    size_t nonzero = 0, values = 0;
    for (int t = 0; t < s.n; t++) {
        if (strncmp(s.name[t], "adam.v.", 7) != 0) continue;
        size_t n = (size_t)s.shape[t][0];
        for (size_t i = 0; i < n; i++) nonzero += ((const float *)s.data[t])[i] != 0.0f;
        values += n;
    }
    assert_int_equal(values, fm_model_num_params(a.model)); /* a moment for every parameter */
    assert_true(nonzero > values / 2);
    st_copy_free(&s);

    load_checkpoint_ok(&b, dir);
    assert_int_equal(fm_optimizer_steps_done(b.opt), 2);
    assert_same_adamw(fm_optimizer_config(b.opt), fm_optimizer_config(a.opt));
    assert_memory_equal(b.state.rng.s, a.state.rng.s, sizeof a.state.rng.s);
    assert_int_equal(b.state.data_position, a.state.data_position);
    assert_int_equal(b.state.seed, a.state.seed);
    assert_memory_equal(fm_model_config(b.model), fm_model_config(a.model), sizeof(fm_config));
    assert_same_params(b.model, a.model);

    /* saved again, the loaded checkpoint is the same bytes: moments included */
    const char *again = save_checkpoint(f, &b, "again");
    assert_same_file(dir, again, CONFIG_FILE);
    assert_same_file(dir, again, WEIGHTS_FILE);
    assert_same_file(dir, again, STATE_FILE);

    /* and training goes on identically: same batch (rng), learning rate (step), update (moments) */
    trainer_step(&a);
    trainer_step(&b);
    assert_int_equal(fm_optimizer_steps_done(b.opt), 3);
    assert_same_params(b.model, a.model);
    assert_int_equal(b.state.data_position, a.state.data_position);

    trainer_free(&a);
    trainer_free(&b);
}

/* Checkpoints tmp/step1 and tmp/step2 of one run (paths through the arguments). */
static void two_checkpoints(fixture *f, const char **step1, const char **step2) {
    trainer t;
    trainer_init(&t, N_LAYER, 11);
    trainer_step(&t);
    *step1 = save_checkpoint(f, &t, "step1");
    trainer_step(&t);
    *step2 = save_checkpoint(f, &t, "step2");
    trainer_free(&t);
}

static void test_checkpoint_mixed_steps_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    const char *mixed = dir_in(f, "mixed");

    copy_model_dir(step1, mixed); /* step-1 model, step-2 state */
    copy_if_present(step2, mixed, STATE_FILE);
    expect_checkpoint_error(mixed, STATE_FILE, FM_ERR_MISMATCH, "mixed");
    assert_message_has("step 2");
    assert_message_has("step 1");

    copy_model_dir(step2, mixed); /* step-2 model, step-1 state */
    copy_if_present(step1, mixed, STATE_FILE);
    expect_checkpoint_error(mixed, STATE_FILE, FM_ERR_MISMATCH, "mixed");

    /* a plain model save over a run directory replaces its top-level files, not its checkpoint:
     * the checkpoint still loads whole */
    fm_model *m;
    load_ok(&m, step1);
    assert_int_equal(fm_model_save(m, step2), FM_OK);
    fm_model_free(m);
    trainer t;
    load_checkpoint_ok(&t, step2);
    assert_int_equal(fm_optimizer_steps_done(t.opt), 2);
    trainer_free(&t);
}

static void test_checkpoint_state_of_other_model_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    trainer small;
    trainer_init(&small, 1, 11);
    trainer_step(&small);
    const char *other = save_checkpoint(f, &small, "one_layer"); /* also at step 1 */
    trainer_free(&small);

    copy_if_present(other, step1, STATE_FILE);
    expect_checkpoint_error(step1, STATE_FILE, FM_ERR_MISMATCH, "parameters");
}

static void test_checkpoint_missing_state(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    remove_file_in(CURRENT(step1), STATE_FILE);
    expect_checkpoint_error(step1, STATE_FILE, FM_ERR_IO, "cannot open");
    /* the model alone still loads */
    fm_model *m;
    load_ok(&m, step1);
    fm_model_free(m);
}

/* The step-1 checkpoint with one training-state metadata value replaced (NULL: removed). */
static void corrupt_state_meta(const char *good, const char *dir, const char *key, const char *value) {
    copy_model_dir(good, dir);
    st_copy s;
    st_copy_read(&s, dir, STATE_FILE);
    st_copy_set_meta(&s, key, value);
    st_copy_write(&s, dir, STATE_FILE);
}

static void test_checkpoint_corrupt_metadata_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    const char *dir = dir_in(f, "corrupt");
    const struct {
        const char *key, *value;
        fm_status status;
        const char *phrase;
    } cases[] = {
        {"rng", "not hex at all", FM_ERR_FORMAT, "\"rng\""},
        {"rng", "0 0 0 0", FM_ERR_FORMAT, "\"rng\""}, /* xoshiro's one forbidden state */
        {"rng", "1 2 3", FM_ERR_FORMAT, "\"rng\""},
        {"step", "1.5", FM_ERR_FORMAT, "\"step\""},
        {"step", "-1", FM_ERR_FORMAT, "\"step\""},
        {"data_position", "-3", FM_ERR_FORMAT, "\"data_position\""},
        {"seed", "", FM_ERR_FORMAT, "\"seed\""},
        {"lr", "fast", FM_ERR_FORMAT, "\"lr\""},
        {"num_params", NULL, FM_ERR_FORMAT, "\"num_params\" is missing"},
        {"beta1", "1.5", FM_ERR_CONFIG, "betas"},
        /* found by fuzz_state: narrowing, a sign behind a space, a space, infinity */
        {"warmup_steps", "4294967297", FM_ERR_FORMAT, "\"warmup_steps\""},
        {"total_steps", "4294967336", FM_ERR_FORMAT, "\"total_steps\""},
        {"data_position", " -1", FM_ERR_FORMAT, "\"data_position\""},
        {"step", " 3", FM_ERR_FORMAT, "\"step\""},
        {"grad_clip", "inf", FM_ERR_FORMAT, "\"grad_clip\""},
        {"lr", "nan", FM_ERR_FORMAT, "\"lr\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("%s = %s\n", cases[i].key, cases[i].value ? cases[i].value : "(removed)");
        corrupt_state_meta(step1, dir, cases[i].key, cases[i].value);
        expect_checkpoint_error(dir, STATE_FILE, cases[i].status, cases[i].phrase);
    }
}

static void test_checkpoint_bad_moments_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    st_copy s;
    st_copy_read(&s, CURRENT(step1), STATE_FILE);
    st_copy_remove(&s, "adam.m.h.0.mlp.c_fc.weight"); /* its adam.v stays */
    st_copy_write(&s, CURRENT(step1), STATE_FILE);
    expect_checkpoint_error(step1, STATE_FILE, FM_ERR_MISMATCH, "missing tensor 'adam.m.h.0.mlp.c_fc.weight'");

    st_copy_read(&s, CURRENT(step2), STATE_FILE);
    int i = st_copy_index(&s, "adam.v.wpe.weight");
    s.shape[i][0] -= 1; /* one value short; the data shrinks with the shape */
    st_copy_write(&s, CURRENT(step2), STATE_FILE);
    expect_checkpoint_error(step2, STATE_FILE, FM_ERR_MISMATCH, "'adam.v.wpe.weight'");
}

/* model.safetensors records the step the training state must match; a value that is not a
 * number ("1x", which strtoll reads as 1) must not pass for one. */
static void test_checkpoint_corrupt_weights_step_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    st_copy w;
    st_copy_read(&w, CURRENT(step1), WEIGHTS_FILE);
    st_copy_set_meta(&w, "fm_step", "1x");
    st_copy_write(&w, CURRENT(step1), WEIGHTS_FILE);
    expect_checkpoint_error(step1, WEIGHTS_FILE, FM_ERR_FORMAT, "fm_step");
}

/* ---------------------------------------------------------------- atomic saves */

static void test_save_into_missing_parent(void **state) {
    fixture *f = *state;
    const char *parent = dir_in(f, "absent");
    path_text dir = join(parent, "model");
    assert_error_contains(fm_model_save(f->model, dir.s), FM_ERR_IO, dir.s);
    assert_message_has("No such file");
    assert_false(file_exists(parent));

    trainer t;
    trainer_init(&t, N_LAYER, 3);
    assert_error_contains(fm_checkpoint_save(dir.s, t.model, t.opt, &t.state), FM_ERR_IO, dir.s);
    assert_false(file_exists(parent));
    trainer_free(&t);
}

static void test_save_leaves_only_its_files(void **state) {
    fixture *f = *state;
    assert_int_equal(count_dir_entries_containing(f->good, ".tmp."), 0);
    assert_int_equal(count_dir_entries_containing(f->good, ""), 2 + 2); /* ".", "..", two files */

    trainer t;
    trainer_init(&t, N_LAYER, 3);
    trainer_step(&t);
    const char *dir = save_checkpoint(f, &t, "ckpt");
    assert_int_equal(fm_checkpoint_save(dir, t.model, t.opt, &t.state), FM_OK); /* over itself */
    /* three links, the current-checkpoint link and the checkpoints folder, which holds one */
    assert_int_equal(count_dir_entries_containing(dir, ".tmp"), 0);
    assert_int_equal(count_dir_entries_containing(dir, ""), 2 + 5);
    assert_int_equal(count_dir_entries_containing(join(dir, "checkpoints").s, ""), 2 + 1);
    assert_int_equal(count_dir_entries_containing(CURRENT(dir), ""), 2 + 3);
    trainer_free(&t);
}

/* A file size limit (soft RLIMIT_FSIZE) under which writes fail with EFBIG, even for root. */
static struct rlimit saved_limit;
static void (*saved_handler)(int);

static void limit_file_size(rlim_t bytes) {
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_limit), 0);
    struct rlimit small = saved_limit;
    small.rlim_cur = bytes;
    saved_handler = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
}

static void unlimit_file_size(void) {
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved_limit), 0);
    signal(SIGXFSZ, saved_handler);
}

/* Saves a different model (other weights and n_inner, so another config.json too) over the
 * good directory; returns the status, the message stays in fm_last_error(). */
static fm_status resave_other_model(fixture *f) {
    fm_model *other = small_model(N_LAYER, 40, 99);
    fm_status status = fm_model_save(other, f->good);
    fm_model_free(other);
    return status;
}

/* The re-save failed with an I/O error about model.safetensors, and the good directory still
 * holds the files copied to before, byte for byte, and no temporary file. */
static void assert_resave_failed_cleanly(fixture *f, const char *before, fm_status status, const char *phrase) {
    assert_error_contains(status, FM_ERR_IO, phrase);
    assert_message_has(join(f->good, WEIGHTS_FILE).s);
    assert_same_file(before, f->good, CONFIG_FILE);
    assert_same_file(before, f->good, WEIGHTS_FILE);
    assert_int_equal(count_dir_entries_containing(f->good, ".tmp."), 0);
}

static void test_failed_resave_keeps_old_files(void **state) {
    fixture *f = *state;
    const char *before = dir_in(f, "before");
    copy_model_dir(f->good, before);

    /* A read-only directory: no temporary file can be created. Root (or CAP_DAC_OVERRIDE)
     * writes anyway, so there this part is skipped with a note rather than passed untested. */
    assert_int_equal(chmod(f->good, 0555), 0);
    if (access(f->good, W_OK) != 0) {
        fm_status status = resave_other_model(f);
        assert_int_equal(chmod(f->good, 0755), 0);
        assert_resave_failed_cleanly(f, before, status, "cannot create a temporary file");
    } else {
        assert_int_equal(chmod(f->good, 0755), 0);
        print_message("note: uid %d can write into a 0555 directory; the read-only case is skipped\n",
                      (int)geteuid());
    }

    /* A file size limit below the size of model.safetensors: its writes fail. */
    limit_file_size(4096);
    fm_status status = resave_other_model(f);
    unlimit_file_size();
    assert_resave_failed_cleanly(f, before, status, "File too large");

    /* the same save without the obstacle succeeds and changes both files: the checks above bite */
    assert_int_equal(resave_other_model(f), FM_OK);
    size_t size_a, size_b;
    unsigned char *a = read_in(before, CONFIG_FILE, &size_a), *b = read_in(f->good, CONFIG_FILE, &size_b);
    assert_false(size_a == size_b && memcmp(a, b, size_a) == 0);
    free(a);
    free(b);
}

/* A checkpoint re-save that fails on its last file (no room for training_state.safetensors)
 * fails with an I/O error naming that file and leaves the previous checkpoint whole: no
 * temporary file, and it loads at its step with its moments. */
static void test_failed_checkpoint_resave_keeps_previous(void **state) {
    fixture *f = *state;
    trainer t, back;
    trainer_init(&t, N_LAYER, 13);
    trainer_step(&t);
    const char *dir = save_checkpoint(f, &t, "ckpt");
    const char *copy = dir_in(f, "copy");
    copy_model_dir(dir, copy);
    copy_if_present(dir, copy, STATE_FILE);
    trainer_step(&t);

    /* room for model.safetensors, not for training_state.safetensors (twice as large) */
    limit_file_size(file_size_in(dir, WEIGHTS_FILE) + 4096);
    fm_status status = fm_checkpoint_save(dir, t.model, t.opt, &t.state);
    unlimit_file_size();
    assert_int_equal(status, FM_ERR_IO);
    assert_message_has(STATE_FILE);
    assert_int_equal(count_dir_entries_containing(dir, ".tmp."), 0);
    assert_same_file(copy, dir, CONFIG_FILE);
    assert_same_file(copy, dir, WEIGHTS_FILE);
    assert_same_file(copy, dir, STATE_FILE);
    load_checkpoint_ok(&back, dir);
    assert_int_equal(fm_optimizer_steps_done(back.opt), 1);
    trainer_free(&back);
    trainer_free(&t);
}

/* Weights changed after the save (same step recorded, same shapes): the state's checksum of its
 * weights no longer matches, and the pair is refused. */
static void test_checkpoint_weights_changed_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    st_copy w;
    st_copy_read(&w, CURRENT(step1), WEIGHTS_FILE);
    ((float *)w.data[st_copy_index(&w, "ln_f.bias")])[0] += 1.0f;
    st_copy_write(&w, CURRENT(step1), WEIGHTS_FILE);
    expect_checkpoint_error(step1, STATE_FILE, FM_ERR_MISMATCH, "other weights");
}

/* ---------------------------------------------------------------- finite values only */

/* A NaN or an infinity in a weight is refused on load, naming the tensor; in an int8 file too. */
static void test_nonfinite_weight_refused(void **state) {
    fixture *f = *state;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        const char *dir = case_dir(f, k == 0 ? "nan" : k == 1 ? "inf" : "minus_inf");
        st_copy w;
        st_copy_read(&w, dir, WEIGHTS_FILE);
        int i = st_copy_index(&w, "h.1.mlp.c_proj.weight");
        memcpy(w.data[i] + 4 * 7, &bad[k], sizeof(float));
        st_copy_write(&w, dir, WEIGHTS_FILE);
        expect_load_error(dir, WEIGHTS_FILE, FM_ERR_NONFINITE, "'h.1.mlp.c_proj.weight'");
        assert_message_has("index 7");
    }
}

/* Moments that no AdamW run produces: a negative second moment, a NaN first moment. */
static void test_invalid_moments_refused(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    st_copy s;
    st_copy_read(&s, CURRENT(step1), STATE_FILE);
    float minus = -1e-8f, nan = NAN;
    memcpy(s.data[st_copy_index(&s, "adam.v.h.0.ln_1.bias")] + 4 * 3, &minus, sizeof minus);
    st_copy_write(&s, CURRENT(step1), STATE_FILE);
    expect_checkpoint_error(step1, STATE_FILE, FM_ERR_NONFINITE, "'adam.v.h.0.ln_1.bias'");
    assert_message_has("not negative");

    st_copy_read(&s, CURRENT(step2), STATE_FILE);
    memcpy(s.data[st_copy_index(&s, "adam.m.wte.weight")], &nan, sizeof nan);
    st_copy_write(&s, CURRENT(step2), STATE_FILE);
    expect_checkpoint_error(step2, STATE_FILE, FM_ERR_NONFINITE, "'adam.m.wte.weight'");
}

/* ---------------------------------------------------------------- checkpoint folders */

/* A checkpoint folder copied in full to another place (a file at a time, plain files). */
static void copy_checkpoint_folder(const char *from, const char *to) {
    if (mkdir(to, 0755) != 0) fail_msg("cannot create %s", to);
    copy_if_present(from, to, CONFIG_FILE);
    copy_if_present(from, to, WEIGHTS_FILE);
    copy_if_present(from, to, STATE_FILE);
}

/* Points dir's checkpoint link at checkpoints/name. */
static void point_at(const char *dir, const char *name) {
    path_text link = join(dir, "checkpoint"), target = join("checkpoints", name);
    unlink(link.s);
    if (symlink(target.s, link.s) != 0) fail_msg("symlink %s: %s", link.s, strerror(errno));
}

static void load_checkpoint_report_ok(trainer *t, const char *dir, fm_checkpoint_report *r) {
    if (fm_checkpoint_load_report(dir, &t->model, &t->opt, &t->state, r) != FM_OK)
        fail_msg("loading %s: %s", dir, fm_last_error());
}

/* What a save killed before its switch leaves (a temporary folder, a complete newer folder the
 * link does not name) is not loaded: the current checkpoint is; the next save removes both. */
static void test_checkpoint_killed_save_leaves_current(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    path_text newer = join(join(step1, "checkpoints").s, "step-00000002");
    path_text tmp = join(join(step1, "checkpoints").s, ".tmp-step-00000002.AbCdEf");
    copy_checkpoint_folder(CURRENT(step2), newer.s);
    copy_checkpoint_folder(CURRENT(step2), tmp.s);
    remove_file_in(tmp.s, STATE_FILE); /* killed half-way */
    trainer t;
    fm_checkpoint_report r;
    load_checkpoint_report_ok(&t, step1, &r);
    assert_int_equal(fm_optimizer_steps_done(t.opt), 1);
    assert_false(r.fell_back);
    assert_non_null(strstr(r.used, "step-00000001"));
    trainer_step(&t);
    trainer_step(&t);
    assert_int_equal(fm_checkpoint_save(step1, t.model, t.opt, &t.state), FM_OK); /* step 3 */
    assert_int_equal(count_dir_entries_containing(join(step1, "checkpoints").s, ""), 2 + 1);
    assert_true(file_exists(join(join(step1, "checkpoints").s, "step-00000003").s));
    trainer_free(&t);
}

/* The current checkpoint is broken (its state damaged, or the link names a removed folder):
 * the newest older complete one loads, and the report names the broken one and why. */
static void test_checkpoint_broken_current_falls_back(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    /* step2's run gets step1's checkpoint as an older folder */
    path_text older = join(join(step2, "checkpoints").s, "step-00000001");
    copy_checkpoint_folder(CURRENT(step1), older.s);
    st_copy s;
    st_copy_read(&s, CURRENT(step2), STATE_FILE);
    st_copy_set_meta(&s, "rng", "garbage");
    st_copy_write(&s, CURRENT(step2), STATE_FILE);
    trainer t;
    fm_checkpoint_report r;
    load_checkpoint_report_ok(&t, step2, &r);
    assert_int_equal(fm_optimizer_steps_done(t.opt), 1);
    assert_true(r.fell_back);
    assert_non_null(strstr(r.used, "step-00000001"));
    assert_non_null(strstr(r.skipped, "step-00000002"));
    assert_non_null(strstr(r.skipped, "\"rng\""));
    trainer_free(&t);

    /* the link names a folder that is gone */
    point_at(step2, "step-00000009");
    load_checkpoint_report_ok(&t, step2, &r);
    assert_int_equal(fm_optimizer_steps_done(t.opt), 1); /* step 2's folder is still damaged */
    assert_true(r.fell_back);
    assert_non_null(strstr(r.skipped, "checkpoint: names no checkpoint folder"));
    assert_non_null(strstr(r.skipped, "step-00000002"));
    trainer_free(&t);
}

/* A directory in the flat layout of older fm loads; a save over it turns its files into links
 * to the new checkpoint folder. */
static void test_flat_checkpoint_loads_and_converts(void **state) {
    fixture *f = *state;
    const char *step1, *step2;
    two_checkpoints(f, &step1, &step2);
    const char *flat = dir_in(f, "flat");
    copy_checkpoint_folder(CURRENT(step1), flat);
    trainer t;
    fm_checkpoint_report r;
    load_checkpoint_report_ok(&t, flat, &r);
    assert_string_equal(r.used, flat);
    assert_int_equal(fm_optimizer_steps_done(t.opt), 1);
    trainer_step(&t);
    assert_int_equal(fm_checkpoint_save(flat, t.model, t.opt, &t.state), FM_OK);
    struct stat sb;
    assert_int_equal(lstat(join(flat, WEIGHTS_FILE).s, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_same_file(flat, step2, WEIGHTS_FILE); /* the same step 2 as the other run's */
    trainer_free(&t);
}

/* ---------------------------------------------------------------- main */

#define TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
    fm_set_threads(1); /* bitwise comparisons of two training runs need one summation order */
    const struct CMUnitTest tests[] = {
        TEST(test_missing_directory),
        TEST(test_missing_config),
        TEST(test_empty_config),
        TEST(test_invalid_json_config),
        TEST(test_config_not_an_object),
        TEST(test_config_missing_n_embd),
        TEST(test_config_n_head_not_dividing),
        TEST(test_config_zero_layers),
        TEST(test_config_fractional_value),
        TEST(test_config_relu_refused),
        TEST(test_config_untied_refused),
        TEST(test_config_bert_refused),
        TEST(test_missing_weights),
        TEST(test_empty_weights),
        TEST(test_truncated_weights),
        TEST(test_header_length_beyond_file),
        TEST(test_garbage_header),
        TEST(test_missing_tensor),
        TEST(test_unknown_tensor),
        TEST(test_tensor_twice_refused),
        TEST(test_wrong_shape),
        TEST(test_integer_dtype_refused),
        TEST(test_vocab_size_disagrees_with_wte),
        TEST(test_hf_f32_with_buffers_loads_exactly),
        TEST(test_hf_f16_loads),
        TEST(test_hf_bf16_with_lm_head_loads),
        TEST(test_lm_head_equal_to_wte_loads),
        TEST(test_lm_head_different_refused),
        TEST(test_lm_head_transposed_shape_refused),
        TEST(test_n_ctx_instead_of_n_positions),
        TEST(test_n_inner_round_trips),
        TEST(test_checkpoint_round_trip),
        TEST(test_checkpoint_mixed_steps_refused),
        TEST(test_checkpoint_state_of_other_model_refused),
        TEST(test_checkpoint_missing_state),
        TEST(test_checkpoint_corrupt_metadata_refused),
        TEST(test_checkpoint_bad_moments_refused),
        TEST(test_checkpoint_corrupt_weights_step_refused),
        TEST(test_save_into_missing_parent),
        TEST(test_save_leaves_only_its_files),
        TEST(test_failed_resave_keeps_old_files),
        TEST(test_failed_checkpoint_resave_keeps_previous),
        TEST(test_checkpoint_weights_changed_refused),
        TEST(test_nonfinite_weight_refused),
        TEST(test_invalid_moments_refused),
        TEST(test_checkpoint_killed_save_leaves_current),
        TEST(test_checkpoint_broken_current_falls_back),
        TEST(test_flat_checkpoint_loads_and_converts),
    };
    return cmocka_run_group_tests_name("model directory", tests, NULL, NULL);
}
