/*
 * checkpoint.c — the model directory: config.json, model.safetensors, training_state.safetensors.
 *
 * What it is for: saving and loading models (fm's own and Hugging Face GPT-2 files) and the
 * full training state for exact resume. Every file is written atomically; every problem on
 * load is reported with the file and tensor it concerns. A checkpoint's model and training
 * state both record the step, so a torn checkpoint (one file from another save) is detected.
 * Tensors attached to the model (heads, adapters) are saved with the rest and listed in the
 * weights' metadata "fm_attached", so loading attaches them again; the training state holds
 * AdamW's moments per trainable tensor ("adam.m.NAME", "adam.v.NAME"), which also records
 * which tensors were trainable. A model with a classification head is written as transformers
 * writes GPT2ForSequenceClassification (its own tensors under "transformer.", "score.weight", the
 * labels in config.json), and such a directory from transformers loads with its head.
 */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/model.h"
#include "model/classifier.h"
#include "train/optim.h"
#include "model/quant.h"
#include "io/checkpoint_layout.h"

#define CONFIG_FILE "config.json"
#define WEIGHTS_FILE "model.safetensors"
#define STATE_FILE "training_state.safetensors"

/* ------------------------------------------------------------ finite values */

/* The index of the first NaN or infinity among x[0..n), or n when there is none. */
static size_t first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return n;
}

/* Every value of the model's tensors is finite; else FM_ERR_NONFINITE naming the tensor, what
 * (the directory or file) first and outcome ("nothing was written") last. */
static fm_status check_finite_model(const fm_model *m, const char *what, const char *outcome) {
    for (int i = 0; i < m->n_tensors; i++) {
        const fm_tensor_info *t = &m->tensors[i];
        size_t at = first_nonfinite(t->data, t->numel);
        if (at < t->numel)
            return fm_fail(FM_ERR_NONFINITE, "%s: tensor '%s' holds %g (index %zu); %s", what, t->name,
                           t->data[at], at, outcome);
    }
    return FM_OK;
}

/* ------------------------------------------------------------ weights */

/* Writes model.safetensors into af's temporary file, finished but not renamed (the caller
 * commits it with the checkpoint's other files). step < 0: no step recorded (a plain save). */
static fm_status save_weights(const fm_model *m, const char *path, int64_t step, fm_atomic_file *af) {
    memset(af, 0, sizeof *af);
    fm_st_entry *entries = fm_calloc(m->n_tensors, sizeof *entries);
    char *attached = m->n_tensors > m->n_own ? fm_model_attached_text(m) : NULL;
    /* with a classification head: the own tensors as GPT2ForSequenceClassification names them */
    char (*prefixed)[FM_NAME_MAX + 16] = m->classifier ? fm_calloc(m->n_own, sizeof *prefixed) : NULL;
    if (!entries || (m->n_tensors > m->n_own && !attached) || (m->classifier && !prefixed)) {
        fm_free(entries);
        fm_free(attached);
        fm_free(prefixed);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const fm_tensor_info *t = &m->tensors[i];
        entries[i].name = t->name;
        if (prefixed && i < m->n_own) {
            snprintf(prefixed[i], sizeof prefixed[i], "transformer.%s", t->name);
            entries[i].name = prefixed[i];
        }
        entries[i].dtype = FM_DTYPE_F32;
        entries[i].ndim = t->ndim;
        entries[i].shape[0] = t->shape[0];
        entries[i].shape[1] = t->shape[1];
        entries[i].data = t->data;
    }
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%" PRId64, step);
    const char *keys[3] = {"format"}, *values[3] = {"pt"};
    int n_meta = 1;
    if (step >= 0) keys[n_meta] = "fm_step", values[n_meta++] = step_text;
    if (attached) keys[n_meta] = "fm_attached", values[n_meta++] = attached;
    fm_status st = fm_st_write_finished(af, path, entries, m->n_tensors, keys, values, n_meta);
    fm_free(entries);
    fm_free(attached);
    fm_free(prefixed);
    return st;
}

/* Renames the n finished files into place in order; after a failure the rest are removed. */
static fm_status commit_all(fm_atomic_file *files, int n) {
    fm_status st = FM_OK;
    for (int i = 0; i < n; i++) {
        if (st) fm_atomic_abort(&files[i]);
        else st = fm_atomic_commit(&files[i]);
    }
    return st;
}

static void abort_all(fm_atomic_file *files, int n) {
    for (int i = 0; i < n; i++) fm_atomic_abort(&files[i]);
}

/* Attaches the tensors the file's "fm_attached" metadata lists, with the shapes the file gives. */
static fm_status attach_listed(fm_model *m, const fm_safetensors *st, const char *path) {
    const char *list = fm_st_meta(st, "fm_attached");
    if (!list) return FM_OK;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[FM_NAME_MAX + 8];
        const char *eq = memchr(p, '=', len);
        if (!eq || len >= sizeof item || (size_t)(eq - p) >= FM_NAME_MAX || eq == p ||
            (eq[1] != '0' && eq[1] != '1') || p + len != eq + 2)
            return fm_fail(FM_ERR_FORMAT, "%s: metadata \"fm_attached\" = \"%s\" is not a list of NAME=0|1", path, list);
        memcpy(item, p, (size_t)(eq - p));
        item[eq - p] = '\0';
        const fm_st_tensor *t = fm_st_find(st, item);
        if (!t) return fm_fail(FM_ERR_MISMATCH, "%s: attached tensor '%s' is listed but missing", path, item);
        if ((t->ndim != 1 && t->ndim != 2) || t->shape[0] < 1 || t->shape[0] > INT32_MAX ||
            (t->ndim == 2 && (t->shape[1] < 1 || t->shape[1] > INT32_MAX)))
            return fm_fail(FM_ERR_FORMAT, "%s: attached tensor '%s' must be 1-D or 2-D", path, item);
        fm_status s2 = fm_model_attach(m, item, t->ndim, (int)t->shape[0], t->ndim == 2 ? (int)t->shape[1] : 1,
                                       eq[1] == '1', NULL);
        if (s2) return fm_fail_prefix(s2, "%s: ", path);
        p += len;
        if (*p == ',') p++;
    }
    return FM_OK;
}

/* attach_listed for a file not otherwise open here (int8 weights, which quant.c reads). */
static fm_status attach_from(fm_model *m, const char *path) {
    fm_safetensors st;
    fm_status status = fm_st_open(&st, path);
    if (status) return status;
    status = attach_listed(m, &st, path);
    fm_st_close(&st);
    return status;
}

/* HF GPT-2 files carry the causal-mask buffers h.N.attn.bias / h.N.attn.masked_bias. */
static int is_mask_buffer(const char *name, int n_layer) {
    int layer, end = 0;
    if (sscanf(name, "h.%d.attn.bias%n", &layer, &end) == 1 && end > 0 && name[end] == '\0')
        return layer >= 0 && layer < n_layer;
    end = 0;
    if (sscanf(name, "h.%d.attn.masked_bias%n", &layer, &end) == 1 && end > 0 && name[end] == '\0')
        return layer >= 0 && layer < n_layer;
    return 0;
}

static void shape_text(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t used = snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += snprintf(buf + used, size - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* A classification head that config.json describes (head != NULL): "score.weight" [K, C] is
 * attached when the file does not list it (transformers' files). */
static fm_status attach_head(fm_model *m, const fm_safetensors *st, const char *path, const fm_classifier *head) {
    if (!head || fm_model_find_tensor(m, FM_CLASSIFIER_TENSOR) >= 0) return FM_OK;
    const fm_st_tensor *t = fm_st_find(st, FM_CLASSIFIER_TENSOR);
    if (!t) return fm_fail(FM_ERR_MISMATCH, "%s: missing tensor '%s' (config.json describes a classification head "
                           "of %d labels)", path, FM_CLASSIFIER_TENSOR, head->n_labels);
    if (t->ndim != 2 || t->shape[0] != head->n_labels || t->shape[1] != m->cfg.n_embd) {
        char got[128];
        shape_text(got, sizeof got, t->ndim, t->shape);
        return fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' has shape %s, config.json implies [%d, %d] (num_labels, "
                       "n_embd)", path, FM_CLASSIFIER_TENSOR, got, head->n_labels, m->cfg.n_embd);
    }
    fm_status status = fm_model_attach(m, FM_CLASSIFIER_TENSOR, 2, head->n_labels, m->cfg.n_embd, 1, NULL);
    return status ? fm_fail_prefix(status, "%s: ", path) : FM_OK;
}

static fm_status load_weights(fm_model *m, const char *path, int64_t *step_out, const fm_classifier *head) {
    fm_safetensors st;
    fm_status status = fm_st_open(&st, path);
    if (status) return status;
    if ((status = attach_listed(m, &st, path)) || (status = attach_head(m, &st, path, head))) {
        fm_st_close(&st);
        return status;
    }
    unsigned char *seen = fm_calloc(m->n_tensors, 1);
    const fm_st_tensor *lm_head = NULL;
    if (!seen) {
        status = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const fm_st_tensor *t = &st.tensors[i];
        const char *name = t->name;
        if (strncmp(name, "transformer.", 12) == 0) name += 12;
        if (is_mask_buffer(name, m->cfg.n_layer)) continue;
        if (strcmp(name, "lm_head.weight") == 0) {
            lm_head = t;
            continue;
        }
        int idx = fm_model_find_tensor(m, name);
        if (idx < 0 && strcmp(name, FM_CLASSIFIER_TENSOR) == 0) {
            status = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' is a classification head, but config.json does not "
                             "describe one (architectures [\"%s\"], id2label)", path, t->name, FM_CLASSIFIER_ARCH);
            goto done;
        }
        if (idx < 0) {
            status = fm_fail(FM_ERR_MISMATCH, "%s: unknown tensor '%s' (not part of a GPT-2 with %d layers)",
                             path, t->name, m->cfg.n_layer);
            goto done;
        }
        const fm_tensor_info *info = &m->tensors[idx];
        int64_t want[2] = {info->shape[0], info->shape[1]};
        if (t->ndim != info->ndim || t->shape[0] != want[0] || (info->ndim == 2 && t->shape[1] != want[1])) {
            char got_s[128], want_s[128];
            shape_text(got_s, sizeof got_s, t->ndim, t->shape);
            shape_text(want_s, sizeof want_s, info->ndim, want);
            status = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' has shape %s, config.json implies %s",
                             path, t->name, got_s, want_s);
            goto done;
        }
        if (seen[idx]) {
            status = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' appears twice", path, name);
            goto done;
        }
        if ((status = fm_st_read_f32(&st, t, info->data))) goto done;
        size_t at = first_nonfinite(info->data, info->numel);
        if (at < info->numel) {
            status = fm_fail(FM_ERR_NONFINITE, "%s: tensor '%s' holds %g at index %zu (weights must be finite)",
                             path, t->name, info->data[at], at);
            goto done;
        }
        seen[idx] = 1;
    }
    for (int i = 0; i < m->n_tensors; i++)
        if (!seen[i]) {
            status = fm_fail(FM_ERR_MISMATCH, "%s: missing tensor '%s'", path, m->tensors[i].name);
            goto done;
        }
    if (lm_head) {
        /* fm ties the output head to wte; a separate head is accepted only if it is that copy */
        size_t numel = (size_t)m->cfg.vocab_size * m->cfg.n_embd;
        float *head = lm_head->numel == numel ? fm_malloc(sizeof(float) * numel) : NULL;
        if (lm_head->numel == numel && !head) {
            status = fm_fail(FM_ERR_NOMEM, "%s: out of memory comparing '%s' with wte.weight", path, lm_head->name);
            goto done;
        }
        int tied = head && lm_head->ndim == 2 && lm_head->shape[0] == m->cfg.vocab_size &&
                   lm_head->shape[1] == m->cfg.n_embd && fm_st_read_f32(&st, lm_head, head) == FM_OK &&
                   memcmp(head, m->w.wte, sizeof(float) * numel) == 0;
        fm_free(head);
        if (!tied) {
            status = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' differs from wte.weight; fm needs a tied "
                             "output head", path, lm_head->name);
            goto done;
        }
    }
    if (step_out) {
        const char *step = fm_st_meta(&st, "fm_step");
        char *end = NULL;
        errno = 0;
        *step_out = step ? strtoll(step, &end, 10) : -1;
        if (step && (end == step || *end != '\0' || errno || *step_out < -1)) {
            status = fm_fail(FM_ERR_FORMAT, "%s: metadata \"fm_step\" = \"%s\" is not a valid step", path, step);
            goto done;
        }
    }
done:
    fm_free(seen);
    fm_st_close(&st);
    return status;
}

fm_status fm_model_save(const fm_model *m, const char *dir) {
    fm_status st = m->quant ? FM_OK : check_finite_model(m, dir, "nothing was written");
    if (!st) st = fm_mkdir(dir);
    if (st) return st;
    char *config = fm_path_join(dir, CONFIG_FILE), *weights = fm_path_join(dir, WEIGHTS_FILE);
    /* both files are written in full before either replaces what the folder held */
    fm_atomic_file files[2] = {{0}};
    if (!config || !weights) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    if (!st) st = m->quant ? fm_quant_save(m, weights, &files[0]) : save_weights(m, weights, -1, &files[0]); /* int8: quant.c */
    if (!st) st = fm_config_save_head_finished(&files[1], &m->cfg, m->classifier, config);
    if (!st) st = commit_all(files, 2);
    else abort_all(files, 2);
    fm_free(config);
    fm_free(weights);
    return st;
}

static fm_status load_model(fm_model **out, const char *dir, int64_t *step) {
    *out = NULL;
    fm_config cfg;
    char *config = fm_path_join(dir, CONFIG_FILE), *weights = fm_path_join(dir, WEIGHTS_FILE);
    fm_status st = (!config || !weights) ? fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir) : FM_OK;
    fm_classifier *head = NULL; /* config.json's classification head, if it describes one */
    if (!st) st = fm_config_load(&cfg, config);
    if (!st) st = fm_config_load_classifier(config, cfg.vocab_size, &head);
    if (!st) st = fm_model_create(out, &cfg);
    int q8 = 0;
    if (!st) st = fm_quant_file_is_q8(weights, &q8);
    if (!st && q8) st = attach_from(*out, weights);
    if (!st && q8) st = fm_quant_load(*out, weights, step); /* int8: quant.c */
    if (!st && q8) st = check_finite_model(*out, weights, "weights must be finite");
    else if (!st) st = load_weights(*out, weights, step, head);
    if (!st && head) st = fm_model_set_classifier(*out, head, weights);
    else fm_classifier_free(head);
    if (st) {
        fm_model_free(*out);
        *out = NULL;
    }
    fm_free(config);
    fm_free(weights);
    return st;
}

fm_status fm_model_load(fm_model **out, const char *dir) { return load_model(out, dir, NULL); }

/* ------------------------------------------------------------ training state */

enum { META_STEP, META_DATA, META_SEED, META_RNG, META_LR, META_MIN_LR, META_WARMUP, META_TOTAL,
       META_BETA1, META_BETA2, META_EPS, META_WD, META_CLIP, META_PARAMS, META_COUNT,
       /* optional (states written before them lack them) */
       META_MODEL_PARAMS = META_COUNT, META_WEIGHTS_HASH, META_ALL };
static const char *const meta_names[META_ALL] = {
    "step", "data_position", "seed", "rng", "lr", "min_lr", "warmup_steps", "total_steps",
    "beta1", "beta2", "eps", "weight_decay", "grad_clip", "num_params", "model_params", "weights_hash"};

/* The checksum of every tensor's values, in the model's order: what a training state records of
 * the weights it belongs to. */
static uint64_t weights_hash(const fm_model *m) {
    uint64_t h = FM_HASH64_SEED;
    for (int i = 0; i < m->n_tensors; i++) h = fm_hash64_update(h, m->tensors[i].data, sizeof(float) * m->tensors[i].numel);
    return h;
}

/* Every value of the model's tensors, attached ones included. */
static size_t model_values(const fm_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += m->tensors[i].numel;
    return n;
}

/* Writes the three files of a checkpoint into dir (a fresh folder) and re-reads the two
 * safetensors files' headers: every file complete and synced, or an error. */
static fm_status write_checkpoint_files(const char *dir, const fm_model *m, const fm_optimizer *opt,
                                        const fm_train_state *state) {
    fm_status st = FM_OK;
    const fm_adamw_config *c = &opt->cfg;
    char values[META_ALL][96];
    snprintf(values[META_STEP], 96, "%" PRId64, opt->step);
    snprintf(values[META_DATA], 96, "%" PRIu64, state->data_position);
    snprintf(values[META_SEED], 96, "%" PRIu64, state->seed);
    snprintf(values[META_RNG], 96, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64,
             state->rng.s[0], state->rng.s[1], state->rng.s[2], state->rng.s[3]);
    /* %.9g reads back as the same float */
    snprintf(values[META_LR], 96, "%.9g", c->lr);
    snprintf(values[META_MIN_LR], 96, "%.9g", c->min_lr);
    snprintf(values[META_WARMUP], 96, "%d", c->warmup_steps);
    snprintf(values[META_TOTAL], 96, "%d", c->total_steps);
    snprintf(values[META_BETA1], 96, "%.9g", c->beta1);
    snprintf(values[META_BETA2], 96, "%.9g", c->beta2);
    snprintf(values[META_EPS], 96, "%.9g", c->eps);
    snprintf(values[META_WD], 96, "%.9g", c->weight_decay);
    snprintf(values[META_CLIP], 96, "%.9g", c->grad_clip);
    snprintf(values[META_PARAMS], 96, "%zu", opt->n);
    snprintf(values[META_MODEL_PARAMS], 96, "%zu", model_values(m));
    snprintf(values[META_WEIGHTS_HASH], 96, "%016" PRIx64, weights_hash(m));
    const char *value_ptrs[META_ALL];
    for (int i = 0; i < META_ALL; i++) value_ptrs[i] = values[i];
    /* the moments of each trainable tensor, "adam.m.NAME" and "adam.v.NAME" */
    int n_entries = 2 * opt->n_slots;
    fm_st_entry *entries = fm_calloc(n_entries, sizeof *entries);
    char (*names)[FM_NAME_MAX + 8] = fm_calloc(n_entries, sizeof *names);
    char *config = fm_path_join(dir, CONFIG_FILE), *weights = fm_path_join(dir, WEIGHTS_FILE);
    char *state_path = fm_path_join(dir, STATE_FILE);
    if (!config || !weights || !state_path || !entries || !names)
        st = fm_fail(FM_ERR_NOMEM, "%s: out of memory saving a checkpoint", dir);
    for (int k = 0; !st && k < opt->n_slots; k++) {
        const fm_adam_slot *sl = &opt->slots[k];
        for (int j = 0; j < 2; j++) {
            fm_st_entry *e = &entries[2 * k + j];
            snprintf(names[2 * k + j], sizeof names[0], "adam.%c.%s", j ? 'v' : 'm', m->tensors[sl->tensor].name);
            *e = (fm_st_entry){.name = names[2 * k + j], .dtype = FM_DTYPE_F32, .ndim = 1,
                               .shape = {(int64_t)sl->numel}, .data = j ? sl->v : sl->m};
        }
    }
    /* All three files are written in full (every allocation done) before the first replaces its
     * predecessor, so a failure leaves the previous checkpoint whole and no temporary file. */
    fm_atomic_file files[3] = {{0}};
    if (!st && m->lora) { /* a LoRA run: the adapter as PEFT writes it; the base stays where it is */
        fm_free(weights);
        weights = fm_path_join(dir, "adapter_model.safetensors");
        st = weights ? fm_lora_write_finished(m, dir, opt->step, files) : fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    }
    if (!st && !m->lora) st = fm_config_save_head_finished(&files[0], &m->cfg, m->classifier, config);
    if (!st && !m->lora) st = save_weights(m, weights, opt->step, &files[1]);
    if (!st) st = fm_st_write_finished(&files[2], state_path, entries, n_entries, meta_names, value_ptrs, META_ALL);
    if (!st) st = commit_all(files, 3);
    else abort_all(files, 3);
    fm_free(entries);
    fm_free(names);
    /* verified: both safetensors files parse and hold what their headers promise */
    for (int i = 0; !st && i < 2; i++) {
        fm_safetensors check;
        st = fm_st_open(&check, i ? state_path : weights);
        if (!st) fm_st_close(&check);
        else fm_fail_prefix(st, "checking the checkpoint just written: ");
    }
    fm_free(config);
    fm_free(weights);
    fm_free(state_path);
    return st;
}

fm_status fm_checkpoint_save(const char *dir, const fm_model *m, const fm_optimizer *opt,
                             const fm_train_state *state) {
    for (int k = 0; k < opt->n_slots; k++)
        if (opt->slots[k].tensor >= m->n_tensors || m->tensors[opt->slots[k].tensor].numel != opt->slots[k].numel)
            return fm_fail(FM_ERR_MISMATCH, "the optimizer does not match the model's tensors");
    if (opt->view_lo != 0 || opt->view_hi != opt->n) /* ZeRO-1: the trainer gathers them first */
        return fm_fail(FM_ERR_ARG, "%s: this process holds AdamW's moments of %zu of %zu elements (sharded): "
                       "gather them before saving", dir, opt->view_hi - opt->view_lo, opt->n);
    /* nothing non-finite replaces a good checkpoint */
    fm_status st = check_finite_model(m, dir, "nothing was written");
    for (int k = 0; !st && k < opt->n_slots; k++) {
        const fm_adam_slot *sl = &opt->slots[k];
        size_t at = first_nonfinite(sl->m, sl->numel), at_v = first_nonfinite(sl->v, sl->numel);
        if (at < sl->numel || at_v < sl->numel)
            st = fm_fail(FM_ERR_NONFINITE, "%s: AdamW's moments of '%s' are not finite; nothing was written", dir,
                         m->tensors[sl->tensor].name);
    }
    if (st) return st;
    fm_ckpt_txn txn;
    st = fm_ckpt_begin(&txn, dir, opt->step);
    if (st) return st;
    st = write_checkpoint_files(txn.tmp, m, opt, state);
    if (st) {
        fm_ckpt_abort(&txn);
        return fm_fail_prefix(st, "checkpoint of step %" PRId64 " not saved, the previous one kept: ", opt->step);
    }
    return fm_ckpt_publish(&txn);
}


/* Parses every metadata value of the training state, strictly. */
static fm_status parse_meta(const fm_safetensors *st, const char *path, int64_t *ints, double *reals,
                            fm_rng *rng) {
    for (int i = 0; i < META_COUNT; i++) {
        const char *text = fm_st_meta(st, meta_names[i]);
        if (!text) return fm_fail(FM_ERR_FORMAT, "%s: metadata \"%s\" is missing", path, meta_names[i]);
        char *end = NULL;
        errno = 0;
        if (i == META_RNG) {
            int used = 0;
            if (sscanf(text, "%" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 "%n", &rng->s[0], &rng->s[1],
                       &rng->s[2], &rng->s[3], &used) != 4 || text[used] != '\0' ||
                !(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]))
                return fm_fail(FM_ERR_FORMAT, "%s: metadata \"rng\" is not four hex words", path);
            continue;
        }
        int integer = i == META_STEP || i == META_DATA || i == META_SEED || i == META_WARMUP ||
                      i == META_TOTAL || i == META_PARAMS;
        if (integer) { /* digits only: no sign, no space, and within the field's range */
            uint64_t v = text[0] >= '0' && text[0] <= '9' ? strtoull(text, &end, 10) : 0;
            uint64_t max = i == META_WARMUP || i == META_TOTAL ? INT32_MAX
                           : i == META_STEP || i == META_PARAMS ? INT64_MAX : UINT64_MAX;
            if (!(text[0] >= '0' && text[0] <= '9')) end = (char *)text;
            else if (v > max) errno = ERANGE;
            ints[i] = (int64_t)v;
        } else {
            reals[i] = strtod(text, &end);
            if (!isfinite(reals[i])) errno = ERANGE; /* inf, nan */
        }
        if (end == text || *end != '\0' || errno)
            return fm_fail(FM_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not a valid %s", path,
                           meta_names[i], text, integer ? "integer in range" : "finite number");
    }
    if (ints[META_STEP] < 0) return fm_fail(FM_ERR_FORMAT, "%s: metadata \"step\" is negative", path);
    return FM_OK;
}

static fm_status load_state(const char *path, fm_model *m, int64_t weights_step, fm_optimizer **opt_out,
                            fm_train_state *state) {
    fm_safetensors st;
    fm_status status = fm_st_open(&st, path);
    if (status) return status;
    int64_t ints[META_COUNT] = {0};
    double reals[META_COUNT] = {0};
    fm_train_state loaded = {0};
    fm_optimizer *opt = NULL;
    if ((status = parse_meta(&st, path, ints, reals, &loaded.rng))) goto done;
    if (m->quant) {
        status = fm_fail(FM_ERR_ARG, "%s: the model beside this state is int8-quantized; training resumes "
                         "from float weights only", path);
        goto done;
    }
    /* what the state records of its weights, when it does (fm before these wrote neither) */
    uint64_t optional[2] = {0};
    int present[2] = {0};
    for (int i = 0; i < 2; i++) {
        const char *name = meta_names[META_MODEL_PARAMS + i], *text = fm_st_meta(&st, name);
        if (!text) continue;
        char *end = NULL;
        errno = 0;
        optional[i] = strtoull(text, &end, i ? 16 : 10);
        if (end == text || *end != '\0' || errno || text[0] == '-') {
            status = fm_fail(FM_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not valid", path, name, text);
            goto done;
        }
        present[i] = 1;
    }
    if (present[0] && optional[0] != model_values(m)) {
        status = fm_fail(FM_ERR_MISMATCH, "%s: state is for a model of %" PRIu64 " parameters, %s holds %zu "
                         "(the state of another model)", path, optional[0], WEIGHTS_FILE, model_values(m));
        goto done;
    }
    if (weights_step != ints[META_STEP]) {
        status = fm_fail(FM_ERR_MISMATCH, "%s: state is at step %" PRId64 " but %s is at step %" PRId64
                         " (a checkpoint mixed from two saves)", path, ints[META_STEP], WEIGHTS_FILE,
                         weights_step);
        goto done;
    }
    if (present[1] && optional[1] != weights_hash(m)) {
        status = fm_fail(FM_ERR_MISMATCH, "%s: state was saved with other weights than %s's (a checkpoint "
                         "mixed from two saves, or weights changed since)", path, WEIGHTS_FILE);
        goto done;
    }
    fm_adamw_config c = {
        .lr = (float)reals[META_LR], .min_lr = (float)reals[META_MIN_LR],
        .warmup_steps = (int)ints[META_WARMUP], .total_steps = (int)ints[META_TOTAL],
        .beta1 = (float)reals[META_BETA1], .beta2 = (float)reals[META_BETA2], .eps = (float)reals[META_EPS],
        .weight_decay = (float)reals[META_WD], .grad_clip = (float)reals[META_CLIP]};
    /* The trainable tensors are those with moments; a state from before per-tensor moments holds
     * one flat "adam.m" / "adam.v" over every tensor of the transformer. */
    const fm_st_tensor *flat_m = fm_st_find(&st, "adam.m"), *flat_v = fm_st_find(&st, "adam.v");
    int flat = flat_m || flat_v;
    if (flat) {
        if (!flat_m || !flat_v || m->n_tensors != m->n_own) {
            status = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' is missing", path, flat_m ? "adam.v" : "adam.m");
            goto done;
        }
    } else {
        for (int i = 0; i < m->n_tensors; i++) {
            char name[FM_NAME_MAX + 8];
            snprintf(name, sizeof name, "adam.m.%s", m->tensors[i].name);
            int has_m = fm_st_find(&st, name) != NULL;
            name[5] = 'v';
            m->tensors[i].trainable = has_m || fm_st_find(&st, name) != NULL; /* one alone: missing below */
            if (i < m->n_own) m->frozen_w[i] = !m->tensors[i].trainable;
        }
        for (int i = 0; i < st.n_tensors; i++) { /* no moments of tensors the model lacks */
            const char *name = st.tensors[i].name;
            if ((strncmp(name, "adam.m.", 7) != 0 && strncmp(name, "adam.v.", 7) != 0) ||
                fm_model_find_tensor(m, name + 7) < 0) {
                status = fm_fail(FM_ERR_MISMATCH, "%s: unknown tensor '%s'", path, name);
                goto done;
            }
        }
    }
    if ((status = fm_optimizer_init(&opt, m, &c))) {
        fm_fail_prefix(status, "%s: ", path);
        goto done;
    }
    if ((size_t)ints[META_PARAMS] != opt->n) {
        status = fm_fail(FM_ERR_MISMATCH, "%s: state is for %" PRId64 " trainable parameters, the model has %zu",
                         path, ints[META_PARAMS], opt->n);
        goto done;
    }
    for (int k = 0; k < (flat ? 1 : opt->n_slots); k++) {
        for (int j = 0; j < 2; j++) {
            char name[FM_NAME_MAX + 8];
            if (flat) snprintf(name, sizeof name, "adam.%c", j ? 'v' : 'm');
            else snprintf(name, sizeof name, "adam.%c.%s", j ? 'v' : 'm', m->tensors[opt->slots[k].tensor].name);
            size_t want = flat ? opt->n : opt->slots[k].numel;
            const fm_st_tensor *t = fm_st_find(&st, name);
            if (!t) {
                status = fm_fail(FM_ERR_MISMATCH, "%s: missing tensor '%s'", path, name);
                goto done;
            }
            if (t->ndim != 1 || (size_t)t->shape[0] != want) {
                status = fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' must have shape [%zu]", path, name, want);
                goto done;
            }
            float *dst = flat ? (j ? opt->v : opt->m) : (j ? opt->slots[k].v : opt->slots[k].m);
            if ((status = fm_st_read_f32(&st, t, dst))) goto done;
            size_t at = first_nonfinite(dst, want);
            if (at == want && j) /* second moments are averages of squares */
                for (at = 0; at < want && dst[at] >= 0.0f; at++) {}
            if (at < want) {
                status = fm_fail(FM_ERR_NONFINITE, "%s: tensor '%s' holds %g at index %zu (%s)", path, name,
                                 dst[at], at, j ? "a second moment must be finite and not negative"
                                                : "a moment must be finite");
                goto done;
            }
        }
    }
    opt->step = ints[META_STEP];
    loaded.data_position = (uint64_t)ints[META_DATA];
    loaded.seed = (uint64_t)ints[META_SEED];
    *state = loaded;
    *opt_out = opt;
    opt = NULL;
done:
    fm_optimizer_free(opt);
    fm_st_close(&st);
    return status;
}

/* A LoRA run's checkpoint: the base model adapter_config.json names, with the adapter attached
 * as its trainable LoRA. */
static fm_status load_adapter_run(fm_model **out, const char *dir, int64_t *step) {
    char base[1024];
    fm_adapter *adapter = NULL;
    fm_status st = fm_adapter_base_name(dir, base, sizeof base);
    if (!st) st = load_model(out, base, NULL);
    if (st) return fm_fail_prefix(st, "%s: loading its base model: ", dir);
    st = fm_adapter_load_step(&adapter, dir, *out, step);
    if (!st) st = fm_model_attach_adapter(*out, adapter);
    fm_adapter_free(adapter);
    if (st) {
        fm_model_free(*out);
        *out = NULL;
    }
    return st;
}

/* One checkpoint's three files, from dir (a checkpoint folder, or a flat directory). */
static fm_status load_checkpoint_files(const char *dir, fm_model **model, fm_optimizer **opt,
                                       fm_train_state *state) {
    *model = NULL;
    *opt = NULL;
    int64_t weights_step = -1;
    fm_status st = fm_adapter_dir_is(dir) ? load_adapter_run(model, dir, &weights_step) : load_model(model, dir, &weights_step);
    if (st) return st;
    char *path = fm_path_join(dir, STATE_FILE);
    st = path ? load_state(path, *model, weights_step, opt, state) : fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    fm_free(path);
    if (st) {
        fm_model_free(*model);
        *model = NULL;
    }
    return st;
}

/* Appends "what: why" to a report field, "; " between entries, cut at its size. */
static void report_add(char *field, size_t size, const char *what, const char *why) {
    size_t used = strlen(field);
    if (used + 1 < size) snprintf(field + used, size - used, "%s%s: %s", used ? "; " : "", what, why);
}

fm_status fm_checkpoint_load_report(const char *dir, fm_model **model, fm_optimizer **opt, fm_train_state *state,
                                    fm_checkpoint_report *report) {
    fm_checkpoint_report scratch;
    if (!report) report = &scratch;
    memset(report, 0, sizeof *report);
    *model = NULL;
    *opt = NULL;
    fm_ckpt_list list;
    fm_status st = fm_ckpt_list_dirs(dir, &list);
    if (st) return st;
    if (list.n == 0 && !list.pointer) { /* a flat directory (fm before checkpoint folders) */
        snprintf(report->used, sizeof report->used, "%s", dir);
        return load_checkpoint_files(dir, model, opt, state);
    }
    if (list.pointer && !list.pointer_ok)
        report_add(report->skipped, sizeof report->skipped, FM_CKPT_POINTER,
                   list.pointer_target[0] ? "names no checkpoint folder" : "is not a link");
    fm_status first = FM_OK;
    char first_msg[1024] = "";
    for (int i = 0; i < list.n; i++) {
        st = load_checkpoint_files(list.dirs[i], model, opt, state);
        if (!st) {
            snprintf(report->used, sizeof report->used, "%s", list.dirs[i]);
            report->fell_back = i > 0 || (list.pointer && !list.pointer_ok);
            fm_ckpt_list_free(&list);
            return FM_OK;
        }
        if (!first) first = st, snprintf(first_msg, sizeof first_msg, "%s", fm_last_error());
        report_add(report->skipped, sizeof report->skipped, list.dirs[i], fm_last_error());
    }
    fm_ckpt_list_free(&list);
    if (!first) return fm_fail(FM_ERR_IO, "%s: no checkpoint (%s)", dir, report->skipped[0] ? report->skipped :
                               "the checkpoints folder is empty");
    /* none loads: the newest one's error, and the others' in the report */
    return fm_fail(first, "%s", first_msg);
}

fm_status fm_checkpoint_load(const char *dir, fm_model **model, fm_optimizer **opt, fm_train_state *state) {
    return fm_checkpoint_load_report(dir, model, opt, state, NULL);
}
