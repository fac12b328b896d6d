/*
 * adapter_io.c — LoRA adapters as PEFT writes them: adapter_config.json and
 * adapter_model.safetensors.
 *
 * What it is for: saving a model's trainable LoRA so that PEFT (and fm) load it, and loading an
 * adapter written by PEFT or fm onto a base model with every disagreement named. The files:
 *   adapter_config.json         {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r", "lora_alpha",
 *                               "lora_dropout", "target_modules": [...], "fan_in_fan_out": true
 *                               (GPT-2's Conv1D), "bias": "none", "base_model_name_or_path", ...}
 *   adapter_model.safetensors   F32 "base_model.model.transformer.h.L.attn.c_attn.lora_A.weight"
 *                               (r, in) and "...lora_B.weight" (out, r) per adapted product;
 *                               metadata "format" = "pt" and fm's "fm_base_fingerprint".
 * Not for: the arithmetic (model/lora.c) or attaching (model/adapter.c).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/lora.h"
#include "model/model.h"

#define ADAPTER_CONFIG "adapter_config.json"
#define ADAPTER_WEIGHTS "adapter_model.safetensors"
#define PEFT_PREFIX "base_model.model.transformer."

/* ------------------------------------------------------------ writing */

static char *config_text(const fm_lora_config *cfg) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    ok = ok && cJSON_AddStringToObject(root, "peft_type", "LORA");
    ok = ok && cJSON_AddStringToObject(root, "task_type", "CAUSAL_LM");
    ok = ok && cJSON_AddNumberToObject(root, "r", cfg->r);
    ok = ok && cJSON_AddNumberToObject(root, "lora_alpha", cfg->alpha);
    ok = ok && cJSON_AddNumberToObject(root, "lora_dropout", cfg->dropout);
    cJSON *targets = ok ? cJSON_AddArrayToObject(root, "target_modules") : NULL;
    ok = targets != NULL;
    for (int k = 0; ok && k < FM_LORA_TARGETS; k++)
        if (cfg->targets & (1u << k)) ok = cJSON_AddItemToArray(targets, cJSON_CreateString(fm_lora_target_name(k)));
    ok = ok && cJSON_AddBoolToObject(root, "fan_in_fan_out", 1);
    ok = ok && cJSON_AddStringToObject(root, "bias", "none");
    ok = ok && cJSON_AddStringToObject(root, "base_model_name_or_path", cfg->base_model);
    ok = ok && cJSON_AddBoolToObject(root, "inference_mode", 1);
    ok = ok && cJSON_AddBoolToObject(root, "init_lora_weights", 1);
    ok = ok && cJSON_AddBoolToObject(root, "use_rslora", cfg->use_rslora);
    ok = ok && cJSON_AddBoolToObject(root, "use_dora", 0);
    ok = ok && cJSON_AddNullToObject(root, "modules_to_save");
    ok = ok && cJSON_AddNullToObject(root, "layers_to_transform");
    ok = ok && cJSON_AddObjectToObject(root, "rank_pattern") && cJSON_AddObjectToObject(root, "alpha_pattern");
    ok = ok && cJSON_AddNullToObject(root, "revision");
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return text;
}

fm_status fm_lora_write_finished(const fm_model *m, const char *dir, int64_t step, fm_atomic_file files[2]) {
    memset(files, 0, 2 * sizeof *files);
    if (!m->lora) return fm_fail(FM_ERR_ARG, "%s: the model has no LoRA adapter to save", dir);
    int n = 0;
    for (int i = 0; i < m->lora->n_layer * FM_LORA_TARGETS; i++) n += m->lora->slots[i].rank ? 2 : 0;
    fm_st_entry *entries = fm_calloc(n, sizeof *entries);
    char (*names)[96] = fm_calloc(n, sizeof *names);
    char *config = fm_path_join(dir, ADAPTER_CONFIG), *weights = fm_path_join(dir, ADAPTER_WEIGHTS);
    char *text = config_text(&m->lora_cfg);
    fm_status st = entries && names && config && weights && text ? FM_OK : fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    int at = 0;
    for (int i = 0; !st && i < m->lora->n_layer * FM_LORA_TARGETS; i++) {
        const fm_lora_slot *s = &m->lora->slots[i];
        if (!s->rank) continue;
        int in, out, k = i % FM_LORA_TARGETS;
        fm_lora_target_dims(&m->cfg, k, &in, &out);
        for (int j = 0; j < 2; j++, at++) {
            snprintf(names[at], sizeof names[0], PEFT_PREFIX "h.%d.%s.lora_%c.weight", i / FM_LORA_TARGETS,
                     fm_lora_target_name(k), j ? 'B' : 'A');
            entries[at] = (fm_st_entry){.name = names[at], .dtype = FM_DTYPE_F32, .ndim = 2,
                                        .shape = {j ? out : s->rank, j ? s->rank : in}, .data = j ? s->B : s->A};
        }
    }
    char fingerprint[32], step_text[32];
    snprintf(fingerprint, sizeof fingerprint, "%016" PRIx64, fm_model_base_fingerprint(m));
    snprintf(step_text, sizeof step_text, "%" PRId64, step);
    const char *keys[3] = {"format", "fm_base_fingerprint", "fm_step"}, *values[3] = {"pt", fingerprint, step_text};
    if (!st) st = fm_st_write_finished(&files[1], weights, entries, n, keys, values, step >= 0 ? 3 : 2);
    if (!st) st = fm_atomic_open(&files[0], config);
    if (!st) {
        fm_atomic_write(&files[0], text, strlen(text));
        fm_atomic_write(&files[0], "\n", 1);
        st = fm_atomic_finish(&files[0]);
        if (st) fm_atomic_abort(&files[1]);
    }
    fm_free(entries);
    fm_free(names);
    fm_free(config);
    fm_free(weights);
    cJSON_free(text);
    return st;
}

fm_status fm_lora_save(const fm_model *m, const char *dir) {
    fm_status st = fm_mkdir(dir);
    if (st) return st;
    fm_atomic_file files[2];
    st = fm_lora_write_finished(m, dir, -1, files);
    if (st) return st;
    st = fm_atomic_commit(&files[1]);
    if (st) fm_atomic_abort(&files[0]);
    else st = fm_atomic_commit(&files[0]);
    return st;
}

/* ------------------------------------------------------------ reading */

/* Which products target_modules selects, by PEFT's rule: a string list matches a module whose
 * name is an entry or ends with "." + entry; a single string is a regular expression the whole
 * module name must match. Module names are "transformer.h.L.attn.c_attn" and the like. */
typedef struct {
    const cJSON *list;
    regex_t re;
    int has_re;
} target_rule;

static int rule_matches(const target_rule *rule, const char *module) {
    if (rule->has_re) {
        regmatch_t mt;
        return regexec(&rule->re, module, 1, &mt, 0) == 0 && mt.rm_so == 0 && module[mt.rm_eo] == '\0';
    }
    const cJSON *e;
    size_t len = strlen(module);
    cJSON_ArrayForEach(e, rule->list) {
        const char *t = e->valuestring;
        size_t tl = strlen(t);
        if (strcmp(module, t) == 0 || (len > tl && module[len - tl - 1] == '.' && strcmp(module + len - tl, t) == 0))
            return 1;
    }
    return 0;
}

static fm_status parse_config(const char *path, const cJSON *root, fm_lora_config *cfg, target_rule *rule) {
    memset(cfg, 0, sizeof *cfg);
    memset(rule, 0, sizeof *rule);
    if (!cJSON_IsObject(root)) return fm_fail(FM_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA") != 0)
        return fm_fail(FM_ERR_FORMAT, "%s: \"peft_type\" must be \"LORA\"%s%s", path, cJSON_IsString(v) ? ", not " : "",
                       cJSON_IsString(v) ? v->valuestring : "");
    v = cJSON_GetObjectItemCaseSensitive(root, "r");
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 || v->valuedouble > 65536)
        return fm_fail(FM_ERR_FORMAT, "%s: \"r\" must be a whole number from 1", path);
    cfg->r = (int)v->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble))
        return fm_fail(FM_ERR_FORMAT, "%s: \"lora_alpha\" must be a positive number", path);
    cfg->alpha = (float)v->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(root, "lora_dropout");
    if (v && !cJSON_IsNull(v) && (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 1)))
        return fm_fail(FM_ERR_FORMAT, "%s: \"lora_dropout\" must be a number in [0, 1)", path);
    cfg->dropout = cJSON_IsNumber(v) ? (float)v->valuedouble : 0.0f;
    v = cJSON_GetObjectItemCaseSensitive(root, "bias");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0))
        return fm_fail(FM_ERR_FORMAT, "%s: \"bias\" must be \"none\" (fm's adapters train no biases)", path);
    v = cJSON_GetObjectItemCaseSensitive(root, "use_dora");
    if (cJSON_IsTrue(v)) return fm_fail(FM_ERR_FORMAT, "%s: DoRA (\"use_dora\": true) is not supported", path);
    cfg->use_rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_rslora"));
    const char *empty_keys[] = {"rank_pattern", "alpha_pattern"};
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(root, empty_keys[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsObject(v) && !v->child))
            return fm_fail(FM_ERR_FORMAT, "%s: a non-empty \"%s\" is not supported", path, empty_keys[i]);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "modules_to_save");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && !v->child))
        return fm_fail(FM_ERR_FORMAT, "%s: \"modules_to_save\" is not supported (fm's adapters hold LoRA "
                       "matrices only)", path);
    v = cJSON_GetObjectItemCaseSensitive(root, "base_model_name_or_path");
    if (cJSON_IsString(v)) snprintf(cfg->base_model, sizeof cfg->base_model, "%s", v->valuestring);
    v = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    if (cJSON_IsString(v)) {
        if (regcomp(&rule->re, v->valuestring, REG_EXTENDED) != 0)
            return fm_fail(FM_ERR_FORMAT, "%s: \"target_modules\" \"%s\" is not a regular expression fm reads", path,
                           v->valuestring);
        rule->has_re = 1;
    } else if (cJSON_IsArray(v) && v->child) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) if (!cJSON_IsString(e))
            return fm_fail(FM_ERR_FORMAT, "%s: \"target_modules\" must be a list of strings", path);
        rule->list = v;
    } else {
        return fm_fail(FM_ERR_FORMAT, "%s: \"target_modules\" must be a non-empty list of names or a regular "
                       "expression", path);
    }
    for (int k = 0; k < FM_LORA_TARGETS; k++) {
        char module[64];
        snprintf(module, sizeof module, "transformer.h.0.%s", fm_lora_target_name(k));
        if (rule_matches(rule, module)) cfg->targets |= 1u << k;
    }
    return FM_OK;
}

/* Parses "PREFIX h.L.MODULE.lora_X.weight": the layer, product and X (A or B); 0 when the name
 * has another form. */
static int parse_name(const char *name, int *layer, int *k, char *which) {
    const char *prefixes[] = {PEFT_PREFIX, "base_model.model."};
    const char *p = NULL;
    for (int i = 0; i < 2 && !p; i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) p = name + strlen(prefixes[i]);
    int end = 0;
    if (!p || sscanf(p, "h.%d.%n", layer, &end) != 1 || end == 0 || *layer < 0) return 0;
    p += end;
    for (*k = 0; *k < FM_LORA_TARGETS; (*k)++) {
        const char *t = fm_lora_target_name(*k);
        size_t tl = strlen(t);
        if (strncmp(p, t, tl) == 0 && strncmp(p + tl, ".lora_", 6) == 0 && (p[tl + 6] == 'A' || p[tl + 6] == 'B') &&
            strcmp(p + tl + 7, ".weight") == 0) {
            *which = p[tl + 6];
            return 1;
        }
    }
    return 0;
}

void fm_adapter_free(fm_adapter *a) {
    if (!a) return;
    fm_free(a->lora.slots);
    fm_free_big(a->values);
    fm_free(a->dir);
    fm_free(a);
}

/* Reads the tensors into a (slots already allocated), checking each against base. */
static fm_status read_tensors(fm_adapter *a, const fm_safetensors *st, const char *path, const fm_model *base,
                              const target_rule *rule) {
    const fm_config *cfg = &base->cfg;
    int L = cfg->n_layer;
    size_t total = 0;
    int *rank_a = fm_calloc((size_t)L * FM_LORA_TARGETS, sizeof *rank_a);
    int *rank_b = fm_calloc((size_t)L * FM_LORA_TARGETS, sizeof *rank_b);
    const fm_st_tensor **ta = fm_calloc((size_t)L * FM_LORA_TARGETS, sizeof *ta);
    const fm_st_tensor **tb = fm_calloc((size_t)L * FM_LORA_TARGETS, sizeof *tb);
    fm_status s = rank_a && rank_b && ta && tb ? FM_OK : fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; !s && i < st->n_tensors; i++) {
        const fm_st_tensor *t = &st->tensors[i];
        int layer, k;
        char which;
        if (!parse_name(t->name, &layer, &k, &which)) {
            s = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' is not a LoRA matrix of a GPT-2 block product "
                        "(base_model.model.transformer.h.L.attn.c_attn.lora_A.weight and the like)", path, t->name);
            break;
        }
        if (layer >= L) {
            s = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' is for layer %d; the base model has %d layers", path,
                        t->name, layer, L);
            break;
        }
        char module[64];
        snprintf(module, sizeof module, "transformer.h.%d.%s", layer, fm_lora_target_name(k));
        if (!rule_matches(rule, module)) {
            s = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' adapts %s, which adapter_config.json's target_modules "
                        "does not name", path, t->name, module);
            break;
        }
        int in, out, slot = layer * FM_LORA_TARGETS + k;
        fm_lora_target_dims(cfg, k, &in, &out);
        int64_t r = t->shape[which == 'A' ? 0 : 1], other = t->shape[which == 'A' ? 1 : 0];
        int64_t want = which == 'A' ? in : out;
        if (t->ndim != 2 || other != want || r < 1 || r > (in < out ? in : out)) {
            s = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' has shape [%" PRId64 ", %" PRId64 "]; the base model's %s "
                        "(%d -> %d) needs %s", path, t->name, t->shape[0], t->ndim == 2 ? t->shape[1] : 0, module,
                        in, out, which == 'A' ? "[r, in] with r <= min(in, out)" : "[out, r]");
            break;
        }
        if ((which == 'A' ? ta : tb)[slot]) {
            s = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' appears twice", path, t->name);
            break;
        }
        (which == 'A' ? ta : tb)[slot] = t;
        (which == 'A' ? rank_a : rank_b)[slot] = (int)r;
        total += (size_t)r * (which == 'A' ? in : out);
    }
    for (int i = 0; !s && i < L * FM_LORA_TARGETS; i++) {
        if (!ta[i] && !tb[i]) continue;
        if (!ta[i] || !tb[i] || rank_a[i] != rank_b[i]) {
            s = fm_fail(FM_ERR_MISMATCH, "%s: layer %d's %s has %s", path, i / FM_LORA_TARGETS,
                        fm_lora_target_name(i % FM_LORA_TARGETS),
                        !ta[i] ? "lora_B but no lora_A" : !tb[i] ? "lora_A but no lora_B" : "lora_A and lora_B of different ranks");
        }
    }
    if (!s && total == 0) s = fm_fail(FM_ERR_FORMAT, "%s: no LoRA matrices", path);
    if (!s && !(a->values = fm_alloc_big(sizeof(float) * total, 0))) s = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    float *p = a->values;
    for (int i = 0; !s && i < L * FM_LORA_TARGETS; i++) {
        if (!ta[i]) continue;
        int in, out;
        fm_lora_target_dims(cfg, i % FM_LORA_TARGETS, &in, &out);
        fm_lora_slot *sl = &a->lora.slots[i];
        sl->rank = rank_a[i];
        sl->scale = a->cfg.use_rslora ? a->cfg.alpha / sqrtf((float)sl->rank) : a->cfg.alpha / (float)sl->rank;
        sl->A = p, p += (size_t)sl->rank * in;
        sl->B = p, p += (size_t)out * sl->rank;
        s = fm_st_read_f32(st, ta[i], sl->A);
        if (!s) s = fm_st_read_f32(st, tb[i], sl->B);
        for (size_t j = 0; !s && j < (size_t)sl->rank * (in + out); j++)
            if (!isfinite(sl->A[j]))
                s = fm_fail(FM_ERR_NONFINITE, "%s: layer %d's %s holds a value that is not finite", path,
                            i / FM_LORA_TARGETS, fm_lora_target_name(i % FM_LORA_TARGETS));
        if (sl->rank > a->lora.max_rank) a->lora.max_rank = sl->rank;
    }
    fm_free(rank_a);
    fm_free(rank_b);
    fm_free(ta);
    fm_free(tb);
    return s;
}

fm_status fm_adapter_load_step(fm_adapter **out, const char *dir, const fm_model *base, int64_t *step) {
    *out = NULL;
    if (step) *step = -1;
    char *config = fm_path_join(dir, ADAPTER_CONFIG), *weights = fm_path_join(dir, ADAPTER_WEIGHTS);
    fm_adapter *a = fm_calloc(1, sizeof *a);
    if (a) a->dir = fm_strdup(dir);
    if (a && a->dir) a->lora.slots = fm_calloc((size_t)base->cfg.n_layer * FM_LORA_TARGETS, sizeof *a->lora.slots);
    if (!config || !weights || !a || !a->dir || !a->lora.slots) {
        fm_free(config);
        fm_free(weights);
        fm_adapter_free(a);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    }
    a->lora.n_layer = base->cfg.n_layer;
    cJSON *root = NULL;
    target_rule rule;
    memset(&rule, 0, sizeof rule);
    fm_status s = fm_json_load(config, &root);
    if (!s) s = parse_config(config, root, &a->cfg, &rule);
    fm_safetensors st;
    int opened = 0;
    if (!s) s = fm_st_open(&st, weights), opened = s == FM_OK;
    if (!s) {
        const char *fp = fm_st_meta(&st, "fm_base_fingerprint");
        uint64_t have = fm_model_base_fingerprint(base);
        char *end = NULL;
        uint64_t want = fp ? strtoull(fp, &end, 16) : 0;
        if (fp && (end == fp || *end)) s = fm_fail(FM_ERR_FORMAT, "%s: metadata \"fm_base_fingerprint\" = \"%s\" is "
                                                   "not a hexadecimal number", weights, fp);
        else if (fp && want != have && !base->quant)
            s = fm_fail(FM_ERR_MISMATCH, "%s: the adapter was trained on another base model (its fingerprint %016" PRIx64
                        ", this model's %016" PRIx64 ")", weights, want, have);
    }
    if (!s) s = read_tensors(a, &st, weights, base, &rule);
    if (!s && step) {
        const char *v = fm_st_meta(&st, "fm_step");
        char *end = NULL;
        errno = 0;
        *step = v ? strtoll(v, &end, 10) : -1;
        if (v && (end == v || *end || errno || *step < -1))
            s = fm_fail(FM_ERR_FORMAT, "%s: metadata \"fm_step\" = \"%s\" is not a valid step", weights, v);
    }
    if (!s) {
        a->cfg.targets = 0;
        for (int i = 0; i < a->lora.n_layer * FM_LORA_TARGETS; i++)
            if (a->lora.slots[i].rank) a->cfg.targets |= 1u << (i % FM_LORA_TARGETS);
        a->lora.dropout = a->cfg.dropout;
    }
    if (opened) fm_st_close(&st);
    if (rule.has_re) regfree(&rule.re);
    cJSON_Delete(root);
    fm_free(config);
    fm_free(weights);
    if (s) {
        fm_adapter_free(a);
        return s;
    }
    *out = a;
    return FM_OK;
}

fm_status fm_adapter_load(fm_adapter **out, const char *dir, const fm_model *base) {
    return fm_adapter_load_step(out, dir, base, NULL);
}

fm_status fm_adapter_base_name(const char *dir, char *base, size_t size) {
    char *config = fm_path_join(dir, ADAPTER_CONFIG);
    if (!config) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    cJSON *root = NULL;
    fm_status s = fm_json_load(config, &root);
    const cJSON *v = s ? NULL : cJSON_GetObjectItemCaseSensitive(root, "base_model_name_or_path");
    if (!s && (!cJSON_IsString(v) || !*v->valuestring))
        s = fm_fail(FM_ERR_FORMAT, "%s: no \"base_model_name_or_path\" names the base model", config);
    if (!s) snprintf(base, size, "%s", v->valuestring);
    cJSON_Delete(root);
    fm_free(config);
    return s;
}

int fm_adapter_dir_is(const char *dir) {
    char *config = fm_path_join(dir, ADAPTER_CONFIG);
    int yes = config && access(config, F_OK) == 0;
    fm_free(config);
    return yes;
}
