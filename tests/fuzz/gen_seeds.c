/*
 * gen_seeds.c — seed inputs for the file-reader fuzz targets: OUT/safetensors, OUT/config,
 * OUT/state and OUT/shard, each valid files written by fm itself (from the fixed models of
 * fuzz_common.h, so the training states match the weights the state target loads) plus
 * hand-made edge cases (every kind of damage the readers check for, and near misses).
 * Usage: gen_seeds OUT   (`make fuzz-seeds` writes $(BUILD)/fuzz/seeds; `make fuzz` starts from
 * them and the committed corpora, which are these seeds grown by libFuzzer and minimised.)
 */
#include "fuzz_common.h"

#include <math.h>

#include "model/model.h"

static const char *out_dir;

static char *out_path(const char *kind, const char *name) {
    size_t len = strlen(out_dir) + strlen(kind) + strlen(name) + 3;
    char *p = malloc(len);
    snprintf(p, len, "%s/%s/%s", out_dir, kind, name);
    return p;
}

static void seed(const char *kind, const char *name, const void *bytes, size_t n) {
    char *p = out_path(kind, name);
    fuzz_write(p, bytes, n);
    free(p);
}

static void seed_text(const char *kind, const char *name, const char *text) { seed(kind, name, text, strlen(text)); }

static void seed_file(const char *kind, const char *name, const char *from) {
    size_t n;
    unsigned char *bytes = fuzz_read(from, &n);
    seed(kind, name, bytes, n);
    free(bytes);
}

/* ------------------------------------------------------------ safetensors */

/* A safetensors file from its header text (padded with spaces to a multiple of 8 bytes) and
 * data_len bytes of data (a repeating pattern). */
static void seed_st(const char *kind, const char *name, const char *header, size_t data_len) {
    size_t h = strlen(header), padded = (h + 7) / 8 * 8;
    unsigned char *buf = malloc(8 + padded + data_len + 1);
    uint64_t len = padded;
    memcpy(buf, &len, 8);
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, ' ', padded - h);
    for (size_t i = 0; i < data_len; i++) buf[8 + padded + i] = (unsigned char)(i * 37 + 11);
    seed(kind, name, buf, 8 + padded + data_len);
    free(buf);
}

static uint16_t f32_to_f16(float f) { /* exact for the fixed models' values (small k / 64) */
    if (f == 0.0f) return signbit(f) ? 0x8000 : 0;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t sign = (bits >> 16) & 0x8000u;
    int exponent = (int)((bits >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(sign | (uint32_t)exponent << 10 | (bits & 0x7fffffu) >> 13);
}

/* The model's tensors in Hugging Face's form: dtype F16 or BF16, names with the "transformer."
 * prefix when prefix, the causal-mask buffers, and lm_head.weight (a copy of wte). */
static void seed_hf(const char *name, fm_model *m, fm_dtype dtype, int prefix) {
    int n = fm_model_num_tensors(m);
    fm_st_entry entries[40];
    char names[40][96];
    uint16_t *data[40];
    int k = 0;
    for (int i = 0; i < n + 1; i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i < n ? i : 0);
        snprintf(names[k], sizeof names[k], "%s%s", prefix && i < n ? "transformer." : "", i < n ? t->name : "lm_head.weight");
        data[k] = malloc(2 * t->numel);
        for (size_t j = 0; j < t->numel; j++) {
            uint32_t bits;
            memcpy(&bits, &t->data[j], 4);
            data[k][j] = dtype == FM_DTYPE_F16 ? f32_to_f16(t->data[j]) : (uint16_t)(bits >> 16);
        }
        entries[k] = (fm_st_entry){.name = names[k], .dtype = dtype, .ndim = t->ndim,
                                   .shape = {t->shape[0], t->shape[1]}, .data = data[k]};
        k++;
    }
    float mask[16];
    for (int i = 0; i < 16; i++) mask[i] = (i % 4) <= (i / 4);
    float masked_bias = -10000.0f;
    snprintf(names[k], sizeof names[k], "%sh.0.attn.bias", prefix ? "transformer." : "");
    entries[k++] = (fm_st_entry){.name = names[k - 1], .dtype = FM_DTYPE_F32, .ndim = 4, .shape = {1, 1, 4, 4}, .data = mask};
    snprintf(names[k], sizeof names[k], "%sh.0.attn.masked_bias", prefix ? "transformer." : "");
    entries[k++] = (fm_st_entry){.name = names[k - 1], .dtype = FM_DTYPE_F32, .ndim = 0, .data = &masked_bias};
    const char *keys[1] = {"format"}, *values[1] = {"pt"};
    char *p = out_path("safetensors", name);
    fuzz_check(fm_st_write(p, entries, k, keys, values, 1) == FM_OK, "cannot write an HF seed");
    free(p);
    for (int i = 0; i < n + 1; i++) free(data[i]);
}

/* One tensor of every dtype, a scalar, an empty tensor, an I64 that overflows an int. */
static void seed_dtypes(void) {
    float f32[3] = {1.5f, -2.0f, INFINITY};
    uint16_t f16[2] = {0x3c00, 0x7e01}, bf16[2] = {0x3f80, 0xff80};
    double f64[2] = {1e300, -0.5};
    int64_t i64[2] = {-3, 5000000000ll};
    int32_t i32[2] = {-7, 2147483647};
    uint8_t u8[3] = {0, 128, 255};
    float scalar = 42.0f;
    fm_st_entry e[] = {
        {.name = "f32", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {3}, .data = f32},
        {.name = "f16", .dtype = FM_DTYPE_F16, .ndim = 2, .shape = {1, 2}, .data = f16},
        {.name = "bf16", .dtype = FM_DTYPE_BF16, .ndim = 2, .shape = {2, 1}, .data = bf16},
        {.name = "f64", .dtype = FM_DTYPE_F64, .ndim = 1, .shape = {2}, .data = f64},
        {.name = "i64", .dtype = FM_DTYPE_I64, .ndim = 1, .shape = {2}, .data = i64},
        {.name = "i32", .dtype = FM_DTYPE_I32, .ndim = 1, .shape = {2}, .data = i32},
        {.name = "u8", .dtype = FM_DTYPE_U8, .ndim = 3, .shape = {1, 3, 1}, .data = u8},
        {.name = "scalar", .dtype = FM_DTYPE_F32, .ndim = 0, .data = &scalar},
        {.name = "empty", .dtype = FM_DTYPE_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
    };
    const char *keys[2] = {"format", "note"}, *values[2] = {"pt", "caf\xc3\xa9"};
    char *p = out_path("safetensors", "dtypes");
    fuzz_check(fm_st_write(p, e, (int)(sizeof e / sizeof e[0]), keys, values, 2) == FM_OK, "cannot write the dtypes seed");
    free(p);
}

static void safetensors_seeds(const char *scratch) {
    char dir[600];
    fm_model *m = fuzz_model(0);
    snprintf(dir, sizeof dir, "%s/head", scratch);
    fuzz_check(fm_model_save(m, dir) == FM_OK, "cannot save the head model");
    snprintf(dir, sizeof dir, "%s/head/model.safetensors", scratch);
    seed_file("safetensors", "model-head", dir);
    fm_model_free(m);
    m = fuzz_model(1);
    seed_hf("hf-f16-prefix", m, FM_DTYPE_F16, 1);
    seed_hf("hf-bf16", m, FM_DTYPE_BF16, 0);
    snprintf(dir, sizeof dir, "%s/plain", scratch);
    fuzz_check(fm_model_save(m, dir) == FM_OK, "cannot save the plain model");
    snprintf(dir, sizeof dir, "%s/plain/model.safetensors", scratch);
    seed_file("safetensors", "model-plain", dir);
    fuzz_check(fm_model_quantize(m) == FM_OK, "cannot quantize");
    snprintf(dir, sizeof dir, "%s/q8", scratch);
    fuzz_check(fm_model_save(m, dir) == FM_OK, "cannot save the int8 model");
    snprintf(dir, sizeof dir, "%s/q8/model.safetensors", scratch);
    seed_file("safetensors", "model-q8", dir);
    fm_model_free(m);
    seed_dtypes();

    static const char *const cases[][2] = {
        {"minimal", "{}"},
        {"meta-only", "{\"__metadata__\":{\"format\":\"pt\"}}"},
        {"one", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"},
        {"two-adjacent", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}"},
        {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"},
        {"duplicate", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"},
        {"empty-tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},\"b\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[0,0]}}"},
        {"bad-dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}"},
        {"dtype-number", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}"},
        {"no-dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}"},
        {"shape-negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}"},
        {"shape-fraction", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}"},
        {"shape-9-dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}"},
        {"shape-overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}"},
        {"shape-huge", "{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740992],\"data_offsets\":[0,8]}}"},
        {"shape-1e400", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,8]}}"},
        {"offsets-reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}"},
        {"offsets-mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}"},
        {"offsets-three", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}"},
        {"offsets-beyond", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}"},
        {"entry-not-object", "{\"a\":[1,2,3]}"},
        {"header-array", "[{\"a\":1}]"},
        {"meta-not-string", "{\"__metadata__\":{\"format\":1}}"},
        {"meta-not-object", "{\"__metadata__\":\"pt\"}"},
        {"meta-twice", "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"a\":\"2\"}}"},
        {"meta-duplicate-key", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}"},
        {"name-nul", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"},
        {"name-empty", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"},
        {"trailing", "{} x"},
        {"invalid-json", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"},
        {"attached", "{\"__metadata__\":{\"fm_attached\":\"score.weight=1\"},\"score.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]}}"},
        {"attached-bad", "{\"__metadata__\":{\"fm_attached\":\"wte.weight=1,x=2,=0,\"}}"},
        {"attached-3d", "{\"__metadata__\":{\"fm_attached\":\"h=0\"},\"h\":{\"dtype\":\"F32\",\"shape\":[1,2,1],\"data_offsets\":[0,8]}}"},
        {"q8-marker", "{\"__metadata__\":{\"fm_weights\":\"q8_0\",\"fm_step\":\"2\"},\"wte.weight\":{\"dtype\":\"U8\",\"shape\":[7,32],\"data_offsets\":[0,224]},\"wte.weight.scale\":{\"dtype\":\"F16\",\"shape\":[7,1],\"data_offsets\":[224,238]}}"},
        {"step-bad", "{\"__metadata__\":{\"fm_step\":\"-2\"}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) seed_st("safetensors", cases[i][0], cases[i][1], 400);
    seed_st("safetensors", "truncated", cases[2][1], 5);
    /* header lengths: 0, beyond the file, beyond the limit; a file shorter than the length word */
    unsigned char raw[24] = {0};
    seed("safetensors", "length-zero", raw, 16);
    raw[0] = 200;
    memcpy(raw + 8, "{}      ", 8);
    seed("safetensors", "length-beyond", raw, 16);
    memset(raw, 0xff, 8);
    seed("safetensors", "length-huge", raw, 16);
    seed("safetensors", "short", raw, 5);
    /* not UTF-8, a NUL inside the header */
    seed_st("safetensors", "not-utf8", "{\"\xc3\x28\":{}}", 0);
    const char nul[] = "\x08\0\0\0\0\0\0\0{}\0     ";
    seed("safetensors", "nul", nul, 16);
}

/* ------------------------------------------------------------ config.json */

static void config_seeds(void) {
    char *p = out_path("config", "fixed");
    fuzz_check(fm_config_save(&fuzz_cfg, p) == FM_OK, "cannot save a config");
    free(p);
    fm_config c;
    fm_config_default(&c);
    p = out_path("config", "gpt2-fm");
    fuzz_check(fm_config_save(&c, p) == FM_OK, "cannot save a config");
    free(p);
    c.n_inner = 100, c.layer_norm_epsilon = 3e-7f;
    p = out_path("config", "inner");
    fuzz_check(fm_config_save(&c, p) == FM_OK, "cannot save a config");
    free(p);
    static const char *const cases[][2] = {
        {"gpt2-hf",
         "{\n  \"activation_function\": \"gelu_new\",\n  \"architectures\": [\"GPT2LMHeadModel\"],\n"
         "  \"attn_pdrop\": 0.1,\n  \"bos_token_id\": 50256,\n  \"embd_pdrop\": 0.1,\n  \"eos_token_id\": 50256,\n"
         "  \"initializer_range\": 0.02,\n  \"layer_norm_epsilon\": 1e-05,\n  \"model_type\": \"gpt2\",\n"
         "  \"n_ctx\": 1024,\n  \"n_embd\": 768,\n  \"n_head\": 12,\n  \"n_layer\": 12,\n  \"n_positions\": 1024,\n"
         "  \"resid_pdrop\": 0.1,\n  \"summary_activation\": null,\n  \"summary_first_dropout\": 0.1,\n"
         "  \"summary_proj_to_labels\": true,\n  \"summary_type\": \"cls_index\",\n  \"summary_use_proj\": true,\n"
         "  \"task_specific_params\": {\"text-generation\": {\"do_sample\": true, \"max_length\": 50}},\n"
         "  \"vocab_size\": 50257\n}\n"},
        {"n-ctx", "{\"n_layer\":2,\"n_head\":3,\"n_embd\":48,\"vocab_size\":97,\"n_ctx\":32,\"n_inner\":null}"},
        {"bools", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"tie_word_embeddings\":true,"
                  "\"scale_attn_weights\":true,\"scale_attn_by_inverse_layer_idx\":false,\"add_cross_attention\":false,"
                  "\"activation_function\":\"gelu_pytorch_tanh\"}"},
        {"untied", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"tie_word_embeddings\":false}"},
        {"bool-not-bool", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"scale_attn_weights\":1}"},
        {"relu", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"activation_function\":\"relu\"}"},
        {"act-number", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"activation_function\":7}"},
        {"bert", "{\"model_type\":\"bert\",\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"type-number", "{\"model_type\":2,\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"fraction", "{\"n_layer\":1.5,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"negative", "{\"n_layer\":-1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"huge", "{\"n_layer\":1e300,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"int-max", "{\"n_layer\":2147483647,\"n_head\":2147483647,\"n_embd\":2147483647,\"vocab_size\":-2147483647,\"n_positions\":4}"},
        {"inf", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"layer_norm_epsilon\":1e999}"},
        {"eps-string", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"layer_norm_epsilon\":\"1e-5\"}"},
        {"eps-tiny", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"layer_norm_epsilon\":1e-50}"},
        {"heads-not-dividing", "{\"n_layer\":1,\"n_head\":3,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"inner-zero", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"n_inner\":0}"},
        {"inner-huge", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"n_inner\":2000000}"},
        {"missing", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4}"},
        {"null-key", "{\"n_layer\":null,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"string-value", "{\"n_layer\":\"1\",\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"duplicate-key", "{\"n_layer\":1,\"n_layer\":2,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4}"},
        {"array", "[1,2,3]"},
        {"empty-object", "{}"},
        {"null", "null"},
        {"deep", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["},
        {"unicode", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4,\"model_type\":\"gpt\\u0000 2\",\"\\ud83d\\ude00\":\"\\ud800\"}"},
        {"trailing", "{\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"vocab_size\":5,\"n_positions\":4} trailing"},
        {"truncated", "{\"n_layer\":1,\"n_head\":1,\"n_em"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) seed_text("config", cases[i][0], cases[i][1]);
    seed("config", "nul-byte", "{\"n_layer\":1}\0{}", 16);
}

/* ------------------------------------------------------------ training state */

/* A copy of the safetensors file from, with metadata key set to value (value NULL: removed; a
 * new key: added), tensor renamed to rename (rename NULL: removed), or, when flat, the moments
 * concatenated into "adam.m" / "adam.v" in file order. */
typedef struct {
    const char *key, *value;
    const char *tensor, *rename;
    int flat;
    float poke;     /* when not 0, the first value of tensor number poke_at */
    int poke_at;
} variant;

static void seed_state(const char *name, const char *from, variant v) {
    fm_safetensors st;
    fuzz_check(fm_st_open(&st, from) == FM_OK, "cannot open a state");
    fm_st_entry e[64];
    float *data[64] = {0};
    int n = 0;
    size_t total[2] = {0};
    for (int i = 0; i < st.n_tensors; i++) total[st.tensors[i].name[5] == 'v'] += st.tensors[i].numel;
    float *flat[2] = {malloc(sizeof(float) * (total[0] + 1)), malloc(sizeof(float) * (total[1] + 1))};
    size_t used[2] = {0};
    for (int i = 0; i < st.n_tensors; i++) {
        const fm_st_tensor *t = &st.tensors[i];
        data[i] = malloc(sizeof(float) * (t->numel + 1));
        fuzz_check(fm_st_read_f32(&st, t, data[i]) == FM_OK, "cannot read a state");
        if (v.poke != 0.0f && i == v.poke_at && t->numel) data[i][0] = v.poke;
        if (v.flat) {
            int j = t->name[5] == 'v';
            memcpy(flat[j] + used[j], data[i], sizeof(float) * t->numel);
            used[j] += t->numel;
            continue;
        }
        const char *tn = t->name;
        if (v.tensor && strcmp(tn, v.tensor) == 0) {
            if (!v.rename) continue;
            tn = v.rename;
        }
        e[n++] = (fm_st_entry){.name = tn, .dtype = FM_DTYPE_F32, .ndim = t->ndim,
                               .shape = {t->shape[0], t->shape[1]}, .data = data[i]};
    }
    if (v.flat) {
        e[n++] = (fm_st_entry){.name = "adam.m", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {(int64_t)total[0]}, .data = flat[0]};
        e[n++] = (fm_st_entry){.name = "adam.v", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {(int64_t)total[1]}, .data = flat[1]};
    }
    const char *keys[40], *values[40];
    int nm = 0, found = 0;
    for (int i = 0; i < st.n_meta; i++) {
        if (v.key && strcmp(st.meta_keys[i], v.key) == 0) {
            found = 1;
            if (!v.value) continue;
            keys[nm] = st.meta_keys[i], values[nm++] = v.value;
            continue;
        }
        keys[nm] = st.meta_keys[i], values[nm++] = st.meta_values[i];
    }
    if (v.key && v.value && !found) keys[nm] = v.key, values[nm++] = v.value;
    char *p = out_path("state", name);
    fuzz_check(fm_st_write(p, e, n, keys, values, nm) == FM_OK, "cannot write a state seed");
    free(p);
    for (int i = 0; i < st.n_tensors; i++) free(data[i]);
    free(flat[0]), free(flat[1]);
    fm_st_close(&st);
}

static void state_seeds(const char *scratch) {
    char from[2][700];
    for (int plain = 0; plain < 2; plain++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/ckpt-%d", scratch, plain);
        fm_model *m = fuzz_model(plain);
        fm_optimizer *opt = fuzz_optimizer(m);
        fm_train_state ts = fuzz_train_state();
        fuzz_check(fm_checkpoint_save(dir, m, opt, &ts) == FM_OK, "cannot save a checkpoint");
        fm_optimizer_free(opt);
        fm_model_free(m);
        snprintf(from[plain], sizeof from[plain], "%s/training_state.safetensors", dir);
        seed_file("state", plain ? "plain" : "head", from[plain]);
        if (plain) { /* a checkpoint's weights are a safetensors seed too */
            snprintf(dir, sizeof dir, "%s/ckpt-1/model.safetensors", scratch);
            seed_file("safetensors", "model-step", dir);
        }
    }
    const char *h = from[0], *p = from[1];
    seed_state("flat", p, (variant){.flat = 1});
    seed_state("flat-old", p, (variant){.flat = 1, .key = "weights_hash"});
    seed_state("flat-head", h, (variant){.flat = 1});
    seed_state("old-no-hash", h, (variant){.key = "weights_hash"});
    seed_state("old-no-size", p, (variant){.key = "model_params"});
    seed_state("hash-other", h, (variant){.key = "weights_hash", .value = "0123456789abcdef"});
    seed_state("hash-bad", h, (variant){.key = "weights_hash", .value = "-1"});
    seed_state("size-other", p, (variant){.key = "model_params", .value = "12"});
    seed_state("step-other", h, (variant){.key = "step", .value = "4"});
    seed_state("step-negative", h, (variant){.key = "step", .value = "-3"});
    seed_state("step-space", h, (variant){.key = "step", .value = " 3"});
    seed_state("step-huge", h, (variant){.key = "step", .value = "99999999999999999999"});
    seed_state("no-rng", h, (variant){.key = "rng"});
    seed_state("rng-zero", h, (variant){.key = "rng", .value = "0 0 0 0"});
    seed_state("rng-short", h, (variant){.key = "rng", .value = "1 2 3"});
    seed_state("rng-trailing", h, (variant){.key = "rng", .value = "1 2 3 4 5"});
    seed_state("lr-nan", h, (variant){.key = "lr", .value = "nan"});
    seed_state("lr-inf", p, (variant){.key = "lr", .value = "1e999"});
    seed_state("lr-text", h, (variant){.key = "lr", .value = "fast"});
    seed_state("lr-big", h, (variant){.key = "lr", .value = "1e39"});
    seed_state("clip-inf", h, (variant){.key = "grad_clip", .value = "inf"});
    seed_state("decay-nan", p, (variant){.key = "weight_decay", .value = "-nan"});
    seed_state("min-lr-hex", h, (variant){.key = "min_lr", .value = "0x1p-20"});
    seed_state("data-space", h, (variant){.key = "data_position", .value = " -1"});
    seed_state("beta-big", p, (variant){.key = "beta2", .value = "2.5"});
    seed_state("eps-negative", p, (variant){.key = "eps", .value = "-1e-8"});
    seed_state("warmup-big", h, (variant){.key = "warmup_steps", .value = "4294967297"});
    seed_state("warmup-negative", h, (variant){.key = "warmup_steps", .value = " -5"});
    seed_state("total-zero", p, (variant){.key = "total_steps", .value = "0"});
    seed_state("params-other", h, (variant){.key = "num_params", .value = "7"});
    seed_state("data-negative", h, (variant){.key = "data_position", .value = "-1"});
    seed_state("extra-key", h, (variant){.key = "fm_extra", .value = "1"});
    seed_state("missing-m", h, (variant){.tensor = "adam.m.wte.weight"});
    seed_state("missing-v", p, (variant){.tensor = "adam.v.h.0.ln_1.bias"});
    seed_state("unknown-tensor", h, (variant){.tensor = "adam.m.score.weight", .rename = "adam.m.nothing"});
    seed_state("not-adam", p, (variant){.tensor = "adam.v.ln_f.weight", .rename = "ln_f.weight"});
    seed_state("frozen-moment", h, (variant){.tensor = "adam.m.wte.weight", .rename = "adam.m.wpe.weight"});
    seed_state("moment-nan", h, (variant){.poke = NAN});
    seed_state("moment-negative", p, (variant){.poke = -1.0f, .poke_at = 1}); /* adam.v of the first tensor */
}

/* ------------------------------------------------------------ token shards */

static void shard_seeds(void) {
    int tokens[300];
    for (int i = 0; i < 300; i++) tokens[i] = (i * 7 + i / 11) % 11;
    struct {
        const char *name;
        size_t n;
        int vocab;
    } valid[] = {{"empty", 0, 11}, {"one", 1, 11}, {"three", 3, 11}, {"short", 40, 11}, {"long", 300, 11},
                 {"wide", 50, 70000}, {"vocab-one", 5, 1}};
    int zeros[8] = {0};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        char *p = out_path("shard", valid[i].name);
        fuzz_check(fm_shard_write(p, valid[i].vocab == 1 ? zeros : tokens, valid[i].n, valid[i].vocab, valid[i].n * 3) == FM_OK,
                   "cannot write a shard");
        free(p);
    }
    /* damage to the "short" shard (2-byte tokens, 40 of them); the header's checksum (56..63)
     * made right again unless raw, so that each reaches the check it is for */
    char *p = out_path("shard", "short");
    size_t n;
    unsigned char *good = fuzz_read(p, &n);
    free(p);
    unsigned char *b = malloc(n + 8);
    struct {
        const char *name;
        size_t at, len;
        const char *bytes;
        long resize; /* added to the length */
        int raw;
    } edits[] = {
        {"bad-magic", 0, 8, "FMTOKENZ", 0, 1},
        {"version-1", 8, 4, "\x01\0\0\0", 0, 1},
        {"version-3", 8, 4, "\x03\0\0\0", 0, 0},
        {"header-sum", 40, 1, "\x07", 0, 1},
        {"width-3", 12, 4, "\x03\0\0\0", 0, 0},
        {"width-4", 12, 4, "\x04\0\0\0", 0, 0},
        {"count-more", 16, 8, "\x29\0\0\0\0\0\0\0", 0, 0},
        {"count-huge", 16, 8, "\0\0\0\0\0\0\0\x80", 0, 0},
        {"checksum", 24, 1, "\x00", 0, 0},
        {"vocab-zero", 32, 4, "\0\0\0\0", 0, 0},
        {"vocab-big", 32, 4, "\x01\x00\x01\x00", 0, 0},
        {"vocab-small", 32, 4, "\x02\0\0\0", 0, 0},
        {"reserved", 36, 1, "\x01", 0, 0},
        {"fingerprint", 48, 8, "\x11\x22\x33\x44\x55\x66\x77\x88", 0, 0},
        {"token-outside", 64, 2, "\x0b\x00", 0, 0},
        {"truncated", 0, 0, "", -3, 0},
        {"padded", 0, 0, "", 2, 0},
        {"header-only", 0, 0, "", -80, 0},
        {"header-cut", 0, 0, "", -(long)n + 40, 0},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(b, good, n);
        memset(b + n, 0, 8);
        memcpy(b + edits[i].at, edits[i].bytes, edits[i].len);
        if (!edits[i].raw) {
            uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 of bytes 0..55 */
            for (int k = 0; k < 56; k++) h = (h ^ b[k]) * 0x100000001b3ull;
            memcpy(b + 56, &h, 8);
        }
        seed("shard", edits[i].name, b, (size_t)((long)n + edits[i].resize));
    }
    free(b);
    free(good);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds OUT\n");
        return 2;
    }
    out_dir = argv[1];
    const char *kinds[4] = {"safetensors", "config", "state", "shard"};
    fuzz_check(fm_mkdir(out_dir) == FM_OK, "cannot make OUT");
    for (int i = 0; i < 4; i++) {
        char *p = out_path(kinds[i], "");
        fuzz_check(fm_mkdir(p) == FM_OK, "cannot make a seed folder");
        free(p);
    }
    const char *scratch = fuzz_dir();
    safetensors_seeds(scratch);
    config_seeds();
    state_seeds(scratch);
    shard_seeds();
    printf("gen_seeds: seeds in %s/{safetensors,config,state,shard}\n", out_dir);
    return 0;
}
