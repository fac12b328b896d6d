/*
 * adapter.c — LoRA adapters on a model: attaching trainable ones, using a loaded one in
 * inference, merging one into the weights.
 *
 * What it is for: fm.h's LoRA calls that need the model's inside. A trainable adapter is a set
 * of attached tensors ("h.L.attn.c_attn.lora_A.weight" (r, in), "...lora_B.weight" (out, r)) that
 * the optimizer and the checkpoints see like any other, bound into an fm_lora that the forward and
 * backward run; the model's own tensors are frozen. A loaded adapter (fm_adapter, io/adapter_io.c)
 * is only read, by the sessions made after fm_model_use_adapter. Not for: the arithmetic
 * (lora.c) or the PEFT files (io/adapter_io.c).
 */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/lora.h"
#include "model/model.h"

void fm_lora_config_default(fm_lora_config *cfg) {
    *cfg = (fm_lora_config){.r = 8, .alpha = 8.0f, .dropout = 0.0f, .targets = FM_LORA_C_ATTN, .use_rslora = 0};
}

fm_status fm_lora_parse_targets(const char *list, unsigned *targets) {
    *targets = 0;
    if (!list || !*list) return fm_fail(FM_ERR_ARG, "LoRA targets: the list is empty");
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[32];
        if (len == 0 || len >= sizeof item)
            return fm_fail(FM_ERR_ARG, "LoRA targets '%s': an empty or overlong entry", list);
        memcpy(item, p, len);
        item[len] = '\0';
        static const struct {
            const char *name;
            unsigned bits;
        } known[] = {{"c_attn", FM_LORA_C_ATTN}, {"attn.c_attn", FM_LORA_C_ATTN},
                     {"attn.c_proj", FM_LORA_ATTN_PROJ}, {"c_fc", FM_LORA_C_FC}, {"mlp.c_fc", FM_LORA_C_FC},
                     {"mlp.c_proj", FM_LORA_MLP_PROJ}, {"c_proj", FM_LORA_ATTN_PROJ | FM_LORA_MLP_PROJ},
                     {"all", FM_LORA_C_ATTN | FM_LORA_ATTN_PROJ | FM_LORA_C_FC | FM_LORA_MLP_PROJ}};
        unsigned bits = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcmp(item, known[i].name) == 0) bits = known[i].bits;
        if (!bits)
            return fm_fail(FM_ERR_ARG, "LoRA target '%s' is not one of c_attn, attn.c_proj, c_fc, mlp.c_proj "
                           "(c_proj: both projections; all)", item);
        *targets |= bits;
        p += len;
        if (*p == ',') p++;
    }
    return FM_OK;
}

void fm_lora_targets_text(unsigned targets, char *buf, size_t size) {
    size_t used = 0;
    if (size) buf[0] = '\0';
    for (int k = 0; k < FM_LORA_TARGETS; k++)
        if (targets & (1u << k) && used < size)
            used += snprintf(buf + used, size - used, "%s%s", used ? "," : "", fm_lora_target_name(k));
}

/* "h.L.attn.c_attn.lora_A.weight" and the like. */
static void slot_tensor_name(char *buf, size_t size, int l, int k, char which) {
    snprintf(buf, size, "h.%d.%s.lora_%c.weight", l, fm_lora_target_name(k), which);
}

fm_status fm_model_add_lora(fm_model *m, const fm_lora_config *cfg, uint64_t seed) {
    if (m->lora) return fm_fail(FM_ERR_ARG, "the model already has a LoRA adapter");
    if (cfg->r < 1) return fm_fail(FM_ERR_ARG, "LoRA rank %d: must be at least 1", cfg->r);
    if (!(cfg->alpha > 0.0f) || !isfinite(cfg->alpha))
        return fm_fail(FM_ERR_ARG, "LoRA alpha %g: must be positive", cfg->alpha);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return fm_fail(FM_ERR_ARG, "LoRA dropout %g: must be in [0, 1)", cfg->dropout);
    unsigned all = (1u << FM_LORA_TARGETS) - 1;
    if (!cfg->targets || (cfg->targets & ~all)) return fm_fail(FM_ERR_ARG, "LoRA targets: none or unknown bits");
    for (int k = 0; k < FM_LORA_TARGETS; k++) {
        int in, out;
        fm_lora_target_dims(&m->cfg, k, &in, &out);
        if (cfg->targets & (1u << k) && (cfg->r > in || cfg->r > out))
            return fm_fail(FM_ERR_ARG, "LoRA rank %d is larger than %s (%d x %d): at most %d", cfg->r,
                           fm_lora_target_name(k), in, out, in < out ? in : out);
    }
    fm_lora *lora = fm_calloc(1, sizeof *lora);
    if (lora) lora->slots = fm_calloc((size_t)m->cfg.n_layer * FM_LORA_TARGETS, sizeof *lora->slots);
    if (!lora || !lora->slots) {
        fm_lora_free(lora);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a LoRA adapter");
    }
    lora->n_layer = m->cfg.n_layer;
    lora->max_rank = cfg->r;
    lora->dropout = cfg->dropout;
    float scale = cfg->use_rslora ? cfg->alpha / sqrtf((float)cfg->r) : cfg->alpha / (float)cfg->r;
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    int first_attached = m->n_tensors;
    fm_status st = FM_OK;
    for (int l = 0; l < m->cfg.n_layer && !st; l++)
        for (int k = 0; k < FM_LORA_TARGETS && !st; k++) {
            if (!(cfg->targets & (1u << k))) continue;
            int in, out, ia, ib;
            fm_lora_target_dims(&m->cfg, k, &in, &out);
            char name[FM_NAME_MAX];
            slot_tensor_name(name, sizeof name, l, k, 'A');
            st = fm_model_attach(m, name, 2, cfg->r, in, 1, &ia);
            slot_tensor_name(name, sizeof name, l, k, 'B');
            if (!st) st = fm_model_attach(m, name, 2, out, cfg->r, 1, &ib);
            if (st) break;
            fm_lora_slot *s = &lora->slots[l * FM_LORA_TARGETS + k];
            *s = (fm_lora_slot){.rank = cfg->r, .scale = scale, .A = m->tensors[ia].data, .B = m->tensors[ib].data,
                                .dA = m->tensors[ia].grad, .dB = m->tensors[ib].grad};
            /* PEFT: kaiming_uniform_(A, a=sqrt(5)), i.e. U(-b, b) with b = 1 / sqrt(fan_in) */
            float bound = 1.0f / sqrtf((float)in);
            for (size_t j = 0; j < (size_t)cfg->r * in; j++) s->A[j] = bound * (2.0f * fm_rng_uniform(&rng) - 1.0f);
            memset(s->B, 0, sizeof(float) * (size_t)out * cfg->r);
        }
    if (st) {
        /* the tensors attached so far stay unbound and frozen, so they change nothing */
        for (int i = first_attached; i < m->n_tensors; i++) m->tensors[i].trainable = 0;
        fm_lora_free(lora);
        return st;
    }
    for (int i = 0; i < m->n_own; i++) {
        m->tensors[i].trainable = 0;
        m->frozen_w[i] = 1;
    }
    m->lora = lora;
    m->lora_cfg = *cfg;
    fm_model_release_acts(m); /* the arena gains the adapters' buffers */
    return FM_OK;
}

const fm_lora_config *fm_model_lora(const fm_model *m) { return m->lora ? &m->lora_cfg : NULL; }

void fm_model_set_dropout_seed(fm_model *m, uint64_t seed) { m->dropout_seed = seed; }

float fm_model_dropout(const fm_model *m) {
    float lora = m->lora ? m->lora->dropout : 0.0f;
    return lora > m->resid_dropout ? lora : m->resid_dropout;
}

fm_status fm_model_set_dropout(fm_model *m, float p) {
    if (!(p >= 0.0f && p < 1.0f)) return fm_fail(FM_ERR_ARG, "dropout %g: must be in [0, 1)", p);
    if ((p > 0.0f) != (m->resid_dropout > 0.0f)) fm_model_release_acts(m); /* the arena gains or loses a buffer */
    m->resid_dropout = p;
    return FM_OK;
}

uint64_t fm_model_base_fingerprint(const fm_model *m) {
    uint64_t h = FM_HASH64_SEED;
    for (int i = 0; i < m->n_own; i++) h = fm_hash64_update(h, m->tensors[i].data, sizeof(float) * m->tensors[i].numel);
    return h;
}

void fm_model_use_adapter(fm_model *m, const fm_adapter *adapter) { m->adapter = adapter; }

const fm_lora_config *fm_adapter_config(const fm_adapter *a) { return &a->cfg; }

/* The product weight (IC, OC) of slot (l, k). */
static float *slot_weight(fm_model *m, int l, int k) {
    fm_layer_weights *w = &m->w.layers[l];
    float *weights[FM_LORA_TARGETS] = {w->qkv_w, w->attproj_w, w->fc_w, w->fcproj_w};
    return weights[k];
}

/* The adapter's shapes against the model's (an adapter loaded for another model). */
static fm_status check_fits(const fm_model *m, const fm_adapter *a) {
    if (a->lora.n_layer != m->cfg.n_layer)
        return fm_fail(FM_ERR_MISMATCH, "%s: the adapter has %d layers, the model %d", a->dir, a->lora.n_layer,
                       m->cfg.n_layer);
    return FM_OK;
}

fm_status fm_model_merge_adapter(fm_model *m, const fm_adapter *a) {
    fm_status st = check_fits(m, a);
    if (st) return st;
    if (m->quant) return fm_fail(FM_ERR_ARG, "merging an adapter needs float weights, not an int8 model");
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int k = 0; k < FM_LORA_TARGETS; k++) {
            int in, out;
            fm_lora_target_dims(&m->cfg, k, &in, &out);
            fm_lora_merge_slot(&a->lora.slots[l * FM_LORA_TARGETS + k], slot_weight(m, l, k), in, out);
        }
    return FM_OK;
}

fm_status fm_model_attach_adapter(fm_model *m, const fm_adapter *a) {
    fm_status st = check_fits(m, a);
    if (st) return st;
    /* one rank and one scale for every product: what fm_model_add_lora makes */
    const fm_lora_slot *first = NULL;
    unsigned targets = 0;
    for (int i = 0; i < a->lora.n_layer * FM_LORA_TARGETS; i++) {
        const fm_lora_slot *s = &a->lora.slots[i];
        if (!s->rank) continue;
        if (first && (s->rank != first->rank || s->scale != first->scale))
            return fm_fail(FM_ERR_ARG, "%s: training on needs one rank and scale for every product", a->dir);
        if (!first) first = s;
        targets |= 1u << (i % FM_LORA_TARGETS);
    }
    for (int i = 0; i < a->lora.n_layer * FM_LORA_TARGETS; i++)
        if (!a->lora.slots[i].rank && (targets & (1u << (i % FM_LORA_TARGETS))))
            return fm_fail(FM_ERR_ARG, "%s: training on needs every layer adapted alike (layer %d's %s has none)",
                           a->dir, i / FM_LORA_TARGETS, fm_lora_target_name(i % FM_LORA_TARGETS));
    if (!first) return fm_fail(FM_ERR_FORMAT, "%s: the adapter holds no matrices", a->dir);
    fm_lora_config cfg = a->cfg;
    cfg.targets = targets;
    cfg.r = first->rank;
    st = fm_model_add_lora(m, &cfg, 0);
    if (st) return st;
    for (int i = 0; i < a->lora.n_layer * FM_LORA_TARGETS; i++) {
        const fm_lora_slot *from = &a->lora.slots[i];
        fm_lora_slot *to = &m->lora->slots[i];
        if (!from->rank) continue;
        int in, out;
        fm_lora_target_dims(&m->cfg, i % FM_LORA_TARGETS, &in, &out);
        memcpy(to->A, from->A, sizeof(float) * (size_t)from->rank * in);
        memcpy(to->B, from->B, sizeof(float) * (size_t)out * from->rank);
        to->scale = from->scale;
    }
    return FM_OK;
}
