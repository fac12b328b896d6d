/*
 * config.c — GPT-2 hyper-parameters: defaults, validation, config.json read and write.
 *
 * config.json uses Hugging Face's GPT2Config keys so that HF transformers and fm read each
 * other's model directories. Settings fm does not implement (another activation, untied head,
 * cross-attention, ...) are refused with a message rather than silently ignored. A classification
 * head's keys (GPT2ForSequenceClassification: num_labels, id2label, label2id, pad_token_id; and
 * fm's classifier_pooling) are read and written here too (fm_config_load_classifier,
 * fm_config_save_head_finished).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/classifier.h"

void fm_config_default(fm_config *cfg) {
    cfg->n_layer = 12;
    cfg->n_head = 12;
    cfg->n_embd = 768;
    cfg->vocab_size = 50257;
    cfg->n_positions = 1024;
    cfg->n_inner = 0;
    cfg->layer_norm_epsilon = 1e-5f;
}

int fm_config_mlp_width(const fm_config *cfg) { return cfg->n_inner > 0 ? cfg->n_inner : 4 * cfg->n_embd; }

/* Limits keep every size product inside size_t and every index inside int. */
#define MAX_LAYERS 4096
#define MAX_WIDTH 65536
#define MAX_VOCAB 16777216
#define MAX_POSITIONS 1048576

fm_status fm_config_validate(const fm_config *cfg) {
    if (cfg->n_layer < 1 || cfg->n_layer > MAX_LAYERS)
        return fm_fail(FM_ERR_CONFIG, "n_layer = %d: must be between 1 and %d", cfg->n_layer, MAX_LAYERS);
    if (cfg->n_embd < 1 || cfg->n_embd > MAX_WIDTH)
        return fm_fail(FM_ERR_CONFIG, "n_embd = %d: must be between 1 and %d", cfg->n_embd, MAX_WIDTH);
    if (cfg->n_head < 1 || cfg->n_head > cfg->n_embd)
        return fm_fail(FM_ERR_CONFIG, "n_head = %d: must be between 1 and n_embd (%d)", cfg->n_head, cfg->n_embd);
    if (cfg->n_embd % cfg->n_head != 0)
        return fm_fail(FM_ERR_CONFIG, "n_head = %d does not divide n_embd = %d", cfg->n_head, cfg->n_embd);
    if (cfg->vocab_size < 1 || cfg->vocab_size > MAX_VOCAB)
        return fm_fail(FM_ERR_CONFIG, "vocab_size = %d: must be between 1 and %d", cfg->vocab_size, MAX_VOCAB);
    if (cfg->n_positions < 1 || cfg->n_positions > MAX_POSITIONS)
        return fm_fail(FM_ERR_CONFIG, "n_positions = %d: must be between 1 and %d", cfg->n_positions, MAX_POSITIONS);
    if (cfg->n_inner < 0 || cfg->n_inner > 16 * MAX_WIDTH)
        return fm_fail(FM_ERR_CONFIG, "n_inner = %d: must be 0 (meaning 4 * n_embd) or positive", cfg->n_inner);
    if (!(cfg->layer_norm_epsilon > 0.0f) || !(cfg->layer_norm_epsilon < 1.0f))
        return fm_fail(FM_ERR_CONFIG, "layer_norm_epsilon = %g: must be in (0, 1)", cfg->layer_norm_epsilon);
    return FM_OK;
}

/* ------------------------------------------------------------ reading */

static char *read_text_file(const char *path, size_t *len_out, fm_status *status) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        *status = fm_fail(FM_ERR_IO, "%s: cannot open: %m", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            if (cap > (64u << 20)) {
                *status = fm_fail(FM_ERR_FORMAT, "%s: larger than 64 MiB, not a config file", path);
                goto fail;
            }
            char *grown = fm_realloc(buf, cap);
            if (!grown) {
                *status = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
                goto fail;
            }
            buf = grown;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, fp);
        len += got;
        if (got == 0) break;
    }
    if (ferror(fp)) {
        *status = fm_fail(FM_ERR_IO, "%s: read error", path);
        goto fail;
    }
    fclose(fp);
    buf[len] = '\0';
    if (len == 0) {
        fm_free(buf);
        *status = fm_fail(FM_ERR_FORMAT, "%s: empty file", path);
        return NULL;
    }
    *len_out = len;
    return buf;
fail:
    fclose(fp);
    fm_free(buf);
    return NULL;
}

/* The offset of the first NUL in JSON text, a NUL byte or a \u0000 escape (a string holding a
 * NUL), or -1. In valid JSON a backslash only begins an escape inside a string, so escapes are
 * read pairwise. */
static long nul_at(const char *text, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\0') return (long)i;
        if (text[i] != '\\' || i + 1 >= len) continue;
        if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0) return (long)i;
        if (text[i + 1] != '\0') i++;
    }
    return -1;
}

/* An integer key. required: absence is an error; otherwise *out keeps its value. */
static fm_status get_int(const cJSON *root, const char *path, const char *key, int required, int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item || cJSON_IsNull(item)) {
        if (required) return fm_fail(FM_ERR_CONFIG, "%s: missing key \"%s\"", path, key);
        return FM_OK;
    }
    double v = item->valuedouble;
    if (!cJSON_IsNumber(item) || v != floor(v) || fabs(v) > 2147483647.0)
        return fm_fail(FM_ERR_CONFIG, "%s: \"%s\" must be an integer", path, key);
    *out = (int)v;
    return FM_OK;
}

/* A boolean key that must have the given value when present (a feature fm does not have). */
static fm_status expect_bool(const cJSON *root, const char *path, const char *key, int expected) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item || cJSON_IsNull(item)) return FM_OK;
    if (!cJSON_IsBool(item)) return fm_fail(FM_ERR_CONFIG, "%s: \"%s\" must be true or false", path, key);
    if (cJSON_IsTrue(item) != expected)
        return fm_fail(FM_ERR_CONFIG, "%s: \"%s\": %s is not supported by fm", path, key,
                       expected ? "false" : "true");
    return FM_OK;
}

/* The keys fm reads. Each may appear once: of a key given twice cJSON reads the first value and
 * Python's json (transformers) the last, so fm and transformers would build different models. */
static const char *const read_keys[] = {
    "model_type", "n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "n_ctx", "n_inner",
    "layer_norm_epsilon", "activation_function", "tie_word_embeddings", "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx", "add_cross_attention"};

static fm_status parse_config(fm_config *cfg, const cJSON *root, const char *path) {
    fm_status st;
    if (!cJSON_IsObject(root)) return fm_fail(FM_ERR_FORMAT, "%s: not a JSON object", path);
    for (size_t k = 0; k < sizeof read_keys / sizeof read_keys[0]; k++) {
        int seen = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, root)
            if (item->string && strcmp(item->string, read_keys[k]) == 0 && seen++)
                return fm_fail(FM_ERR_CONFIG, "%s: key \"%s\" appears twice", path, read_keys[k]);
    }
    fm_config_default(cfg);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "gpt2") != 0))
        return fm_fail(FM_ERR_CONFIG, "%s: model_type must be \"gpt2\"", path);
    if ((st = get_int(root, path, "n_layer", 1, &cfg->n_layer))) return st;
    if ((st = get_int(root, path, "n_head", 1, &cfg->n_head))) return st;
    if ((st = get_int(root, path, "n_embd", 1, &cfg->n_embd))) return st;
    if ((st = get_int(root, path, "vocab_size", 1, &cfg->vocab_size))) return st;
    int has_positions = cJSON_GetObjectItemCaseSensitive(root, "n_positions") != NULL;
    if ((st = get_int(root, path, has_positions ? "n_positions" : "n_ctx", 1, &cfg->n_positions))) return st;
    cfg->n_inner = 0;
    if ((st = get_int(root, path, "n_inner", 0, &cfg->n_inner))) return st;
    if (cfg->n_inner == 0 && cJSON_GetObjectItemCaseSensitive(root, "n_inner") &&
        !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "n_inner")))
        return fm_fail(FM_ERR_CONFIG, "%s: \"n_inner\" must be null or positive", path);
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
    if (eps) {
        if (!cJSON_IsNumber(eps)) return fm_fail(FM_ERR_CONFIG, "%s: \"layer_norm_epsilon\" must be a number", path);
        cfg->layer_norm_epsilon = (float)eps->valuedouble;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (act) {
        const char *a = cJSON_IsString(act) ? act->valuestring : "";
        if (strcmp(a, "gelu_new") && strcmp(a, "gelu_pytorch_tanh") && strcmp(a, "gelu_fast"))
            return fm_fail(FM_ERR_CONFIG, "%s: activation_function \"%s\" is not supported (fm uses "
                           "GELU with the tanh approximation, \"gelu_new\")", path, a);
    }
    if ((st = expect_bool(root, path, "tie_word_embeddings", 1))) return st;
    if ((st = expect_bool(root, path, "scale_attn_weights", 1))) return st;
    if ((st = expect_bool(root, path, "scale_attn_by_inverse_layer_idx", 0))) return st;
    if ((st = expect_bool(root, path, "add_cross_attention", 0))) return st;
    if ((st = fm_config_validate(cfg))) return fm_fail_prefix(st, "%s: ", path);
    return FM_OK;
}

/* Strict JSON: one object and nothing after it but white space; no string holds a NUL (a key
 * "n_layer\u0000" would read as "n_layer", a model_type "gpt2\u0000x" as "gpt2"). */
fm_status fm_json_load(const char *path, struct cJSON **out) {
    *out = NULL;
    fm_status st = FM_OK;
    size_t len = 0;
    char *text = read_text_file(path, &len, &st);
    if (!text) return st;
    long nul = nul_at(text, len);
    if (nul >= 0) {
        st = fm_fail(FM_ERR_FORMAT, "%s: a NUL character (%s at byte %ld); a JSON text holds none", path,
                     text[nul] ? "\\u0000" : "a NUL byte", nul);
        fm_free(text);
        return st;
    }
    unsigned long failures = fm_alloc_failures();
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    while (root && at < len && text[at] && strchr(" \t\r\n", text[at])) at++;
    if (!root && fm_alloc_failures() != failures) { /* cJSON ran out of memory, the JSON may be fine */
        st = fm_fail(FM_ERR_NOMEM, "%s: out of memory parsing the JSON", path);
    } else if (!root) {
        st = fm_fail(FM_ERR_FORMAT, "%s: invalid JSON near byte %zu", path, at);
    } else if (at < len) {
        st = fm_fail(FM_ERR_FORMAT, "%s: unexpected content after the JSON (byte %zu)", path, at);
    }
    fm_free(text);
    if (st) cJSON_Delete(root);
    else *out = root;
    return st;
}

fm_status fm_config_load(fm_config *cfg, const char *path) {
    cJSON *root = NULL;
    fm_status st = fm_json_load(path, &root);
    if (st) return st;
    fm_config parsed;
    st = parse_config(&parsed, root, path);
    if (st == FM_OK) *cfg = parsed;
    cJSON_Delete(root);
    return st;
}

/* ------------------------------------------------------------ a classification head */

/* Parses a decimal index "0", "1", ... (no sign, no leading zero) below n, or -1. */
static int label_key(const char *key, int n) {
    long v = 0;
    if (!key[0] || (key[0] == '0' && key[1])) return -1;
    for (const char *p = key; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
        if (v >= n) return -1;
    }
    return (int)v;
}

static fm_status parse_classifier(const cJSON *root, const char *path, int vocab_size, fm_classifier **out) {
    static const char *const keys[] = {"architectures", "num_labels", "id2label", "label2id", "pad_token_id",
                                       FM_CLASSIFIER_POOLING_KEY};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        int seen = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, root)
            if (item->string && strcmp(item->string, keys[k]) == 0 && seen++)
                return fm_fail(FM_ERR_CONFIG, "%s: key \"%s\" appears twice", path, keys[k]);
    }
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures"), *item;
    int head = 0;
    if (arch && !cJSON_IsNull(arch)) {
        if (!cJSON_IsArray(arch)) return fm_fail(FM_ERR_CONFIG, "%s: \"architectures\" must be a list of names", path);
        cJSON_ArrayForEach(item, arch) {
            if (!cJSON_IsString(item))
                return fm_fail(FM_ERR_CONFIG, "%s: \"architectures\" must be a list of names", path);
            if (!strcmp(item->valuestring, FM_CLASSIFIER_ARCH)) head = 1;
        }
    }
    if (!head) return FM_OK;
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(root, "id2label");
    const cJSON *label2id = cJSON_GetObjectItemCaseSensitive(root, "label2id");
    if (id2label && cJSON_IsNull(id2label)) id2label = NULL;
    if (label2id && cJSON_IsNull(label2id)) label2id = NULL;
    if (id2label && !cJSON_IsObject(id2label))
        return fm_fail(FM_ERR_CONFIG, "%s: \"id2label\" must be an object {\"0\": \"name\", ...}", path);
    if (label2id && !cJSON_IsObject(label2id))
        return fm_fail(FM_ERR_CONFIG, "%s: \"label2id\" must be an object {\"name\": 0, ...}", path);
    /* transformers' default is 2 labels; num_labels, else id2label's size */
    int n = id2label ? cJSON_GetArraySize(id2label) : 2;
    int has_n = cJSON_GetObjectItemCaseSensitive(root, "num_labels") != NULL;
    fm_status st = get_int(root, path, "num_labels", 0, &n);
    if (st) return st;
    if (n < 1 || n > FM_MAX_LABELS)
        return fm_fail(FM_ERR_CONFIG, "%s: \"num_labels\" = %d: must be 1 to %d", path, n, FM_MAX_LABELS);
    if (id2label && has_n && cJSON_GetArraySize(id2label) != n)
        return fm_fail(FM_ERR_CONFIG, "%s: \"id2label\" names %d labels but \"num_labels\" is %d", path,
                       cJSON_GetArraySize(id2label), n);
    const char **names = fm_calloc((size_t)n, sizeof *names);
    if (!names) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    if (id2label) {
        cJSON_ArrayForEach(item, id2label) {
            int i = label_key(item->string, n);
            if (i < 0) {
                st = fm_fail(FM_ERR_CONFIG, "%s: \"id2label\" key \"%.64s\" is not an index in [0, %d)", path,
                             item->string, n);
                break;
            }
            if (names[i]) {
                st = fm_fail(FM_ERR_CONFIG, "%s: \"id2label\" names label %d twice", path, i);
                break;
            }
            if (!cJSON_IsString(item) || !item->valuestring[0]) {
                st = fm_fail(FM_ERR_CONFIG, "%s: \"id2label\" \"%s\" must be a non-empty name", path, item->string);
                break;
            }
            names[i] = item->valuestring;
        }
    }
    fm_classifier *c = NULL;
    if (!st) {
        st = fm_classifier_new(&c, n, id2label ? names : NULL, -1);
        if (st && st != FM_ERR_NOMEM) st = FM_ERR_CONFIG; /* e.g. a name given twice */
        if (st) fm_fail_prefix(st, "%s: \"id2label\": ", path);
    }
    fm_free(names);
    if (st) return st;
    /* label2id, when present, is id2label inverted */
    if (label2id) {
        int count = 0;
        cJSON_ArrayForEach(item, label2id) {
            int want = -1;
            for (int i = 0; i < n && want < 0; i++)
                if (!strcmp(c->labels[i], item->string)) want = i;
            if (want < 0 || !cJSON_IsNumber(item) || item->valuedouble != want) {
                st = fm_fail(FM_ERR_CONFIG, "%s: \"label2id\" \"%.64s\" disagrees with \"id2label\"", path, item->string);
                break;
            }
            count++;
        }
        if (!st && count != n)
            st = fm_fail(FM_ERR_CONFIG, "%s: \"label2id\" names %d labels, \"id2label\" %d", path, count, n);
    }
    int pad = -1;
    if (!st) st = get_int(root, path, "pad_token_id", 0, &pad);
    if (!st && (pad < -1 || pad >= vocab_size))
        st = fm_fail(FM_ERR_CONFIG, "%s: \"pad_token_id\" = %d is outside the vocabulary [0, %d)", path, pad,
                     vocab_size);
    /* fm's read-out: "last" (transformers' rule; absent or null) or "mean" */
    const cJSON *pooling = cJSON_GetObjectItemCaseSensitive(root, FM_CLASSIFIER_POOLING_KEY);
    fm_classifier_pooling pool = FM_POOL_LAST;
    if (!st && pooling && !cJSON_IsNull(pooling) &&
        (!cJSON_IsString(pooling) || fm_classifier_pooling_parse(pooling->valuestring, &pool)))
        st = fm_fail(FM_ERR_CONFIG, "%s: \"%s\" must be \"last\" or \"mean\"%s%.64s%s", path,
                     FM_CLASSIFIER_POOLING_KEY, cJSON_IsString(pooling) ? ", not \"" : " (a string)",
                     cJSON_IsString(pooling) ? pooling->valuestring : "", cJSON_IsString(pooling) ? "\"" : "");
    if (st) {
        fm_classifier_free(c);
        return st;
    }
    c->pad_id = pad;
    c->pooling = pool;
    *out = c;
    return FM_OK;
}

fm_status fm_config_load_classifier(const char *path, int vocab_size, fm_classifier **out) {
    *out = NULL;
    cJSON *root = NULL;
    fm_status st = fm_json_load(path, &root);
    if (st) return st;
    st = cJSON_IsObject(root) ? parse_classifier(root, path, vocab_size, out)
                              : fm_fail(FM_ERR_FORMAT, "%s: not a JSON object", path);
    cJSON_Delete(root);
    return st;
}

/* ------------------------------------------------------------ writing */

/* The shortest decimal that reads back as the same float (1e-05, not 9.99999974737875e-06). */
static cJSON *float_number(float f) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, f);
        if (strtof(buf, NULL) == f) break;
    }
    return cJSON_CreateRaw(buf);
}

/* config.json's text (fm_malloc'd), or NULL when out of memory: every item is checked, so that
 * a failed allocation never leaves a key out of a file that is then written. */
static char *config_text(const fm_config *cfg, const fm_classifier *head) {
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    int ok = arch && cJSON_AddItemToArray(arch, cJSON_CreateString(head ? FM_CLASSIFIER_ARCH : "GPT2LMHeadModel"));
    ok = ok && cJSON_AddStringToObject(root, "model_type", "gpt2");
    ok = ok && cJSON_AddNumberToObject(root, "n_layer", cfg->n_layer);
    ok = ok && cJSON_AddNumberToObject(root, "n_head", cfg->n_head);
    ok = ok && cJSON_AddNumberToObject(root, "n_embd", cfg->n_embd);
    ok = ok && cJSON_AddNumberToObject(root, "vocab_size", cfg->vocab_size);
    ok = ok && cJSON_AddNumberToObject(root, "n_positions", cfg->n_positions);
    ok = ok && cJSON_AddNumberToObject(root, "n_ctx", cfg->n_positions);
    if (cfg->n_inner > 0) ok = ok && cJSON_AddNumberToObject(root, "n_inner", cfg->n_inner);
    else ok = ok && cJSON_AddNullToObject(root, "n_inner");
    if (ok) {
        cJSON *eps = float_number(cfg->layer_norm_epsilon);
        ok = cJSON_AddItemToObject(root, "layer_norm_epsilon", eps);
        if (!ok) cJSON_Delete(eps);
    }
    ok = ok && cJSON_AddStringToObject(root, "activation_function", "gelu_new");
    ok = ok && cJSON_AddNumberToObject(root, "initializer_range", 0.02);
    ok = ok && cJSON_AddNumberToObject(root, "resid_pdrop", 0);
    ok = ok && cJSON_AddNumberToObject(root, "embd_pdrop", 0);
    ok = ok && cJSON_AddNumberToObject(root, "attn_pdrop", 0);
    ok = ok && cJSON_AddBoolToObject(root, "scale_attn_weights", 1);
    ok = ok && cJSON_AddBoolToObject(root, "tie_word_embeddings", 1);
    ok = ok && cJSON_AddBoolToObject(root, "use_cache", 1);
    ok = ok && cJSON_AddStringToObject(root, "torch_dtype", "float32");
    if (head) { /* as transformers writes GPT2ForSequenceClassification's config */
        if (head->pad_id >= 0) ok = ok && cJSON_AddNumberToObject(root, "pad_token_id", head->pad_id);
        ok = ok && cJSON_AddNumberToObject(root, "num_labels", head->n_labels);
        cJSON *id2label = ok ? cJSON_AddObjectToObject(root, "id2label") : NULL;
        cJSON *label2id = id2label ? cJSON_AddObjectToObject(root, "label2id") : NULL;
        ok = label2id != NULL;
        for (int i = 0; ok && i < head->n_labels; i++) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            ok = cJSON_AddStringToObject(id2label, key, head->labels[i]) &&
                 cJSON_AddNumberToObject(label2id, head->labels[i], i);
        }
        /* one output is a score (transformers infers "regression"), several are classes */
        if (head->n_labels > 1) ok = ok && cJSON_AddStringToObject(root, "problem_type", "single_label_classification");
        /* fm's mean head says so; a last-token head's keys stay exactly transformers' */
        if (head->pooling == FM_POOL_MEAN)
            ok = ok && cJSON_AddStringToObject(root, FM_CLASSIFIER_POOLING_KEY, fm_classifier_pooling_name(head->pooling));
    }
    ok = ok && cJSON_AddNumberToObject(root, "fm_format_version", 1);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return text;
}

fm_status fm_config_save_finished(fm_atomic_file *af, const fm_config *cfg, const char *path) {
    return fm_config_save_head_finished(af, cfg, NULL, path);
}

fm_status fm_config_save_head_finished(fm_atomic_file *af, const fm_config *cfg, const fm_classifier *head,
                                       const char *path) {
    memset(af, 0, sizeof *af);
    fm_status st = fm_config_validate(cfg);
    if (st) return fm_fail_prefix(st, "%s: ", path);
    char *text = config_text(cfg, head);
    if (!text) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    st = fm_atomic_open(af, path);
    if (st == FM_OK) {
        fm_atomic_write(af, text, strlen(text));
        fm_atomic_write(af, "\n", 1);
        st = fm_atomic_finish(af);
    }
    fm_free(text);
    return st;
}

fm_status fm_config_save(const fm_config *cfg, const char *path) {
    fm_atomic_file af;
    fm_status st = fm_config_save_finished(&af, cfg, path);
    return st == FM_OK ? fm_atomic_commit(&af) : st;
}
