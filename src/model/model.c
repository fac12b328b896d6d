/*
 * model.c — the GPT-2 transformer: parameter layout, initialisation, forward and backward.
 *
 * What it is for: one decoder (pre-LayerNorm blocks, learned positions, GELU MLP, tied output
 * head) whose backward starts from any objective's gradient on the logits and/or the final
 * hidden states. Parameters and gradients are single allocations with named views in Hugging
 * Face's GPT-2 names and layouts; attached tensors (heads, adapters) have their own. Every
 * tensor has a trainable flag; a frozen matrix gets no weight gradient. Activations come from
 * one arena sized per (B, T) shape. The block itself is block.c's, shared with decoding.
 * Not for: objectives (src/train), the optimizer (optim.c) or files (checkpoint.c).
 */
#include <fnmatch.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/alloc.h"
#include "core/internal.h"
#include "model/dropout.h"
#include "model/model.h"
#include "model/classifier.h"
#include "model/quant.h"

/* ------------------------------------------------------------ parameter layout */

/* Appends an entry to the tensor table (room is reserved by the caller). */
static fm_tensor_info *add_entry(fm_model *m, const char *name, int ndim, int d0, int d1, int decay) {
    int i = m->n_tensors++;
    fm_tensor_info *t = &m->tensors[i];
    snprintf(m->names[i], FM_NAME_MAX, "%s", name);
    memset(t, 0, sizeof *t);
    t->name = m->names[i];
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 1;
    t->numel = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
    t->decay = decay;
    t->trainable = 1;
    return t;
}

static void add_tensor(fm_model *m, const char *name, int ndim, int d0, int d1, int decay) {
    fm_tensor_info *t = add_entry(m, name, ndim, d0, d1, decay);
    t->offset = m->num_params;
    m->num_params += t->numel;
}

/* Room for one more tensor in the table. */
static fm_status reserve_tensor(fm_model *m) {
    if (m->n_tensors < m->cap_tensors) return FM_OK;
    int cap = m->cap_tensors * 2;
    fm_tensor_info *t = fm_realloc(m->tensors, sizeof *t * cap);
    if (!t) return fm_fail(FM_ERR_NOMEM, "out of memory for the tensor table");
    m->tensors = t;
    char(*names)[FM_NAME_MAX] = fm_realloc(m->names, sizeof *names * cap);
    if (!names) return fm_fail(FM_ERR_NOMEM, "out of memory for the tensor table");
    m->names = names;
    m->cap_tensors = cap;
    for (int i = 0; i < m->n_tensors; i++) m->tensors[i].name = m->names[i];
    return FM_OK;
}

/* Tensor order: wte, wpe, then per layer as below, then ln_f. Weight decay on 2-D tensors. */
static void build_layout(fm_model *m) {
    const fm_config *c = &m->cfg;
    int C = c->n_embd, H = fm_config_mlp_width(c);
    char name[FM_NAME_MAX];
    add_tensor(m, "wte.weight", 2, c->vocab_size, C, 1);
    add_tensor(m, "wpe.weight", 2, c->n_positions, C, 1);
    for (int l = 0; l < c->n_layer; l++) {
#define LAYER_TENSOR(suffix, ndim, d0, d1, decay) \
    snprintf(name, sizeof name, "h.%d." suffix, l), add_tensor(m, name, ndim, d0, d1, decay)
        LAYER_TENSOR("ln_1.weight", 1, C, 0, 0);
        LAYER_TENSOR("ln_1.bias", 1, C, 0, 0);
        LAYER_TENSOR("attn.c_attn.weight", 2, C, 3 * C, 1);
        LAYER_TENSOR("attn.c_attn.bias", 1, 3 * C, 0, 0);
        LAYER_TENSOR("attn.c_proj.weight", 2, C, C, 1);
        LAYER_TENSOR("attn.c_proj.bias", 1, C, 0, 0);
        LAYER_TENSOR("ln_2.weight", 1, C, 0, 0);
        LAYER_TENSOR("ln_2.bias", 1, C, 0, 0);
        LAYER_TENSOR("mlp.c_fc.weight", 2, C, H, 1);
        LAYER_TENSOR("mlp.c_fc.bias", 1, H, 0, 0);
        LAYER_TENSOR("mlp.c_proj.weight", 2, H, C, 1);
        LAYER_TENSOR("mlp.c_proj.bias", 1, C, 0, 0);
#undef LAYER_TENSOR
    }
    add_tensor(m, "ln_f.weight", 1, C, 0, 0);
    add_tensor(m, "ln_f.bias", 1, C, 0, 0);
}

/* Named views into a parameter-shaped buffer (params or grads), in build_layout's order. */
static void bind_views(const fm_model *m, float *base, fm_weights *w) {
    const fm_tensor_info *t = m->tensors;
    w->wte = base + (t++)->offset;
    w->wpe = base + (t++)->offset;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        fm_layer_weights *lw = &w->layers[l];
        float **slots[] = {&lw->ln1_w, &lw->ln1_b, &lw->qkv_w, &lw->qkv_b,
                           &lw->attproj_w, &lw->attproj_b, &lw->ln2_w, &lw->ln2_b,
                           &lw->fc_w, &lw->fc_b, &lw->fcproj_w, &lw->fcproj_b};
        for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) *slots[i] = base + (t++)->offset;
    }
    w->lnf_w = base + (t++)->offset;
    w->lnf_b = base + (t++)->offset;
}

fm_status fm_model_create(fm_model **out, const fm_config *cfg) {
    *out = NULL;
    fm_status st = fm_config_validate(cfg);
    if (st) return st;
    fm_model *m = fm_calloc(1, sizeof *m);
    if (!m) return fm_fail(FM_ERR_NOMEM, "out of memory for the model");
    m->cfg = *cfg;
    m->cap_tensors = 4 + 12 * cfg->n_layer + 4; /* the own tensors and a few attached ones */
    m->tensors = fm_calloc(m->cap_tensors, sizeof *m->tensors);
    m->names = fm_calloc(m->cap_tensors, sizeof *m->names);
    m->w.layers = fm_calloc(cfg->n_layer, sizeof *m->w.layers);
    m->g.layers = fm_calloc(cfg->n_layer, sizeof *m->g.layers);
    if (!m->tensors || !m->names || !m->w.layers || !m->g.layers) goto nomem;
    build_layout(m);
    m->n_own = m->n_tensors;
    m->frozen_w = fm_calloc(m->n_own, 1);
    m->params = fm_alloc_big(sizeof(float) * m->num_params, 0); /* written by init or load */
    m->grads = fm_alloc_big(sizeof(float) * m->num_params, 0);  /* touched by the first zero_grad */
    if (!m->frozen_w || !m->params || !m->grads) goto nomem;
    for (int i = 0; i < m->n_own; i++) {
        m->tensors[i].data = m->params + m->tensors[i].offset;
        m->tensors[i].grad = m->grads + m->tensors[i].offset;
    }
    bind_views(m, m->params, &m->w);
    bind_views(m, m->grads, &m->g);
    *out = m;
    return FM_OK;
nomem:;
    size_t wanted = m ? m->num_params : 0;
    fm_model_free(m);
    return fm_fail(FM_ERR_NOMEM, "out of memory for a model of %zu parameters", wanted);
}

fm_status fm_model_init(fm_model **out, const fm_config *cfg, uint64_t seed) {
    fm_status st = fm_model_create(out, cfg);
    if (st) return st;
    fm_model *m = *out;
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    float resid_std = 0.02f / sqrtf(2.0f * cfg->n_layer);
    for (int i = 0; i < m->n_tensors; i++) {
        const fm_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        size_t len = strlen(t->name);
        int is_bias = len > 5 && strcmp(t->name + len - 5, ".bias") == 0;
        int is_ln = strstr(t->name, "ln_") != NULL;
        if (t->ndim == 2) {
            int resid = strstr(t->name, "c_proj.weight") != NULL;
            float std = resid ? resid_std : 0.02f;
            for (size_t j = 0; j < t->numel; j++) p[j] = std * fm_rng_normal(&rng);
        } else {
            float v = (is_ln && !is_bias) ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++) p[j] = v;
        }
    }
    return FM_OK;
}

void fm_model_release_acts(fm_model *m) {
    fm_free_big(m->arena);
    fm_free(m->tokens);
    fm_free(m->a.layers);
    m->arena = NULL;
    m->tokens = NULL;
    m->a.layers = NULL;
    m->B = m->T = 0;
}

void fm_model_free(fm_model *m) {
    if (!m) return;
    fm_quant_free(m->quant);
    fm_model_release_acts(m);
    fm_lora_free(m->lora);
    fm_classifier_free(m->classifier);
    for (int i = m->n_own; i < m->n_tensors; i++) {
        fm_free_big(m->tensors[i].data);
        fm_free_big(m->tensors[i].grad);
    }
    fm_free_big(m->params);
    fm_free_big(m->grads);
    fm_free(m->tensors);
    fm_free(m->names);
    fm_free(m->frozen_w);
    fm_free(m->w.layers);
    fm_free(m->g.layers);
    fm_free(m);
}

const fm_config *fm_model_config(const fm_model *m) { return &m->cfg; }
size_t fm_model_num_params(const fm_model *m) { return m->num_params; }
float *fm_model_params(fm_model *m) { return m->params; }
float *fm_model_grads(fm_model *m) { return m->grads; }
int fm_model_num_tensors(const fm_model *m) { return m->n_tensors; }

const fm_tensor_info *fm_model_tensor(const fm_model *m, int index) {
    return index >= 0 && index < m->n_tensors ? &m->tensors[index] : NULL;
}

int fm_model_find_tensor(const fm_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return i;
    return -1;
}

fm_status fm_model_attach(fm_model *m, const char *name, int ndim, int d0, int d1, int decay, int *index) {
    if (!name || !*name || strlen(name) >= FM_NAME_MAX)
        return fm_fail(FM_ERR_ARG, "attached tensor name '%s': must be 1 to %d bytes", name ? name : "",
                       FM_NAME_MAX - 1);
    if (fm_model_find_tensor(m, name) >= 0) return fm_fail(FM_ERR_ARG, "a tensor named '%s' already exists", name);
    if ((ndim != 1 && ndim != 2) || d0 < 1 || (ndim == 2 && d1 < 1) || (ndim == 2 && (size_t)d0 * d1 > (1u << 30)))
        return fm_fail(FM_ERR_ARG, "attached tensor '%s': shape must be (d0) or (d0, d1) with positive sizes",
                       name);
    fm_status st = reserve_tensor(m);
    if (st) return st;
    size_t numel = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
    float *data = fm_alloc_big(sizeof(float) * numel, 0), *grad = fm_alloc_big(sizeof(float) * numel, 0);
    if (!data || !grad) {
        fm_free_big(data);
        fm_free_big(grad);
        return fm_fail(FM_ERR_NOMEM, "out of memory for attached tensor '%s'", name);
    }
    fm_tensor_info *t = add_entry(m, name, ndim, d0, d1, decay);
    t->offset = SIZE_MAX;
    t->attached = 1;
    t->data = data;
    t->grad = grad;
    if (index) *index = m->n_tensors - 1;
    return FM_OK;
}

fm_status fm_model_set_trainable(fm_model *m, const char *pattern, int trainable, int *matched) {
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (fnmatch(pattern, m->tensors[i].name, 0) == 0) {
            m->tensors[i].trainable = trainable != 0;
            if (i < m->n_own) m->frozen_w[i] = trainable == 0;
            n++;
        }
    if (matched) *matched = n;
    if (n == 0) return fm_fail(FM_ERR_ARG, "pattern '%s' matches no tensor of the model", pattern);
    return FM_OK;
}

size_t fm_model_num_trainable(const fm_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].trainable) n += m->tensors[i].numel;
    return n;
}

int fm_model_weight_trainable(const fm_model *m, const float *w) {
    if (w < m->params || w >= m->params + m->num_params) return 1;
    size_t off = (size_t)(w - m->params);
    for (int i = 0; i < m->n_own; i++)
        if (m->tensors[i].offset == off) return !m->frozen_w[i];
    return 1;
}

/* Zeroes grads[begin, end) in parallel chunks. */
static void zero_range(float *grads, size_t begin, size_t end) {
    enum { CHUNK = 1 << 16 };
    size_t n = end - begin, chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 4)
    for (size_t c = 0; c < chunks; c++)
        memset(grads + begin + c * CHUNK, 0, sizeof(float) * (c * CHUNK + CHUNK < n ? CHUNK : n - c * CHUNK));
}

void fm_model_zero_grad(fm_model *m) {
    double timed = fm_profile_start();
    /* only the trainable tensors' gradients, in runs of adjacent ones: a frozen tensor's gradient
     * memory is never touched (LoRA keeps no gradients for the base) */
    size_t run_begin = 0;
    int in_run = 0;
    for (int i = 0; i <= m->n_own; i++) {
        int trains = i < m->n_own && !m->frozen_w[i];
        if (trains && !in_run) run_begin = m->tensors[i].offset, in_run = 1;
        if (!trains && in_run) zero_range(m->grads, run_begin, m->tensors[i - 1].offset + m->tensors[i - 1].numel),
                               in_run = 0;
    }
    for (int i = m->n_own; i < m->n_tensors; i++) memset(m->tensors[i].grad, 0, sizeof(float) * m->tensors[i].numel);
    fm_profile_stop("other: zero_grad", timed);
}

/* ------------------------------------------------------------ activation arena */

/* Lays out (or, with base NULL, just sizes) every activation and backward buffer for (B, T). */
static size_t layout_acts(fm_model *m, float *base, int B, int T) {
    const fm_config *c = &m->cfg;
    size_t N = (size_t)B * T, C = c->n_embd, H = fm_config_mlp_width(c), V = c->vocab_size;
    size_t NH = c->n_head, used = 0;
/* each buffer starts on a cache line (16 floats) */
#define TAKE(ptr, count) ((ptr) = base ? base + used : NULL, used += ((count) + 15) / 16 * 16)
    fm_acts *a = &m->a;
    TAKE(a->encoded, N * C);
    for (int l = 0; l < c->n_layer; l++) {
        fm_layer_acts *la = base ? &a->layers[l] : &(fm_layer_acts){0};
        TAKE(la->ln1, N * C);
        TAKE(la->ln1_mean, N);
        TAKE(la->ln1_rstd, N);
        TAKE(la->qkv, N * 3 * C);
        la->att = NULL;
        TAKE(la->lse, (size_t)B * NH * T);
        TAKE(la->atty, N * C);
        TAKE(la->attproj, N * C);
        TAKE(la->resid2, N * C);
        TAKE(la->ln2, N * C);
        TAKE(la->ln2_mean, N);
        TAKE(la->ln2_rstd, N);
        TAKE(la->fch, N * H);
        TAKE(la->fch_gelu, N * H);
        TAKE(la->fcproj, N * C);
        TAKE(la->resid3, N * C);
        for (int k = 0; k < FM_LORA_TARGETS; k++)
            if (m->lora) TAKE(la->lora_t[k], N * m->lora->max_rank);
            else la->lora_t[k] = NULL;
    }
    TAKE(a->lnf, N * C);
    TAKE(a->lnf_mean, N);
    TAKE(a->lnf_rstd, N);
    TAKE(a->logits, N * V);
    TAKE(a->dlogits, N * V);
    /* backward scratch, reused by every layer */
    TAKE(a->dresid, N * C);
    TAKE(a->dln, N * C);
    TAKE(a->datty, N * C);
    TAKE(a->dqkv, N * 3 * C);
    TAKE(a->dfch, N * H);
    TAKE(a->dfch_gelu, N * H);
    a->datt_scratch = NULL;
    a->lora_dt = a->lora_xd = a->lora_dxd = NULL;
    if (m->lora) TAKE(a->lora_dt, N * m->lora->max_rank);
    if (m->lora && m->lora->dropout > 0.0f) {
        TAKE(a->lora_xd, N * (H > C ? H : C));
        TAKE(a->lora_dxd, N * (H > C ? H : C));
    }
    for (int l = 0; base && l < c->n_layer; l++) a->layers[l].lora_xd = a->lora_xd;
    a->ddrop = NULL;
    if (m->resid_dropout > 0.0f) TAKE(a->ddrop, N * C);
#undef TAKE
    return used;
}

static fm_status ensure_acts(fm_model *m, int B, int T) {
    if (m->B == B && m->T == T) return FM_OK;
    fm_model_release_acts(m);
    size_t count = layout_acts(m, NULL, B, T);
    m->arena = fm_alloc_big(sizeof(float) * count, 1);
    m->tokens = fm_malloc(sizeof(int) * (size_t)B * T);
    m->a.layers = fm_calloc(m->cfg.n_layer, sizeof *m->a.layers);
    if (!m->arena || !m->tokens || !m->a.layers) {
        fm_model_release_acts(m);
        return fm_fail(FM_ERR_NOMEM, "out of memory for activations of batch %d x %d (%zu MiB)", B, T,
                       count * sizeof(float) >> 20);
    }
    layout_acts(m, m->arena, B, T);
    m->B = B;
    m->T = T;
    return FM_OK;
}

fm_status fm_model_reserve(fm_model *m, int B, int T) {
    if (B < 1 || T < 1 || T > m->cfg.n_positions)
        return fm_fail(FM_ERR_ARG, "batch %d x %d: need B >= 1 and 1 <= T <= the context (%d)", B, T,
                       m->cfg.n_positions);
    if ((size_t)B * T > (size_t)INT32_MAX / (size_t)m->cfg.vocab_size)
        return fm_fail(FM_ERR_ARG, "batch %d x %d is too large", B, T);
    return ensure_acts(m, B, T);
}

/* ------------------------------------------------------------ forward */

fm_status fm_model_forward(fm_model *m, const int *tokens, int B, int T) {
    const fm_config *c = &m->cfg;
    m->have_forward = 0;
    if (B < 1 || T < 1) return fm_fail(FM_ERR_ARG, "batch %d x %d: both must be at least 1", B, T);
    if (T > c->n_positions)
        return fm_fail(FM_ERR_ARG, "sequence length %d exceeds the model's context (n_positions = %d)",
                       T, c->n_positions);
    if ((size_t)B * T > (size_t)INT32_MAX / (size_t)c->vocab_size)
        return fm_fail(FM_ERR_ARG, "batch %d x %d is too large", B, T);
    for (size_t i = 0; i < (size_t)B * T; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return fm_fail(FM_ERR_ARG, "token %d at position %zu is outside the vocabulary [0, %d)",
                           tokens[i], i, c->vocab_size);
    fm_status st = ensure_acts(m, B, T);
    if (st) return st;
    memcpy(m->tokens, tokens, sizeof(int) * (size_t)B * T);

    int N = B * T, C = c->n_embd;
    float eps = c->layer_norm_epsilon;
    fm_acts *a = &m->a;
    FM_TIMED("other: embeddings", fm_k_encoder_forward(a->encoded, tokens, m->w.wte, m->w.wpe, B, T, C));
    if (m->dropout_seed && m->resid_dropout > 0.0f) /* GPT-2's embd_pdrop */
        FM_TIMED("other: dropout", fm_dropout_apply(a->encoded, a->encoded, (size_t)N, (size_t)C, m->resid_dropout,
                                                    m->dropout_seed, FM_DROP_SITE_EMBEDDING));
    const float *resid = a->encoded; /* (N, C), the residual stream entering layer l */
    fm_attention_rows full = {.B = B, .T = T};
    for (int l = 0; l < c->n_layer; l++) {
        fm_block_forward(m, l, resid, &a->layers[l], N, &full, NULL, m->lora, m->dropout_seed);
        resid = a->layers[l].resid3;
    }
    FM_TIMED("other: layernorm",
             fm_k_layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, resid, m->w.lnf_w, m->w.lnf_b, N, C, eps));
    /* tied head: logits (N, V) = lnf (N, C) @ wte^T, wte (V, C) */
    FM_TIMED("products: head", fm_k_gemm(0, 1, N, c->vocab_size, C, a->lnf, C, m->w.wte, C, a->logits,
                                         c->vocab_size, 0));
    m->have_forward = 1;
    return FM_OK;
}

const float *fm_model_logits(const fm_model *m) { return m->have_forward ? m->a.logits : NULL; }
const float *fm_model_hidden(const fm_model *m) { return m->have_forward ? m->a.lnf : NULL; }
float *fm_model_dlogits(fm_model *m) { return m->have_forward ? m->a.dlogits : NULL; }

/* ------------------------------------------------------------ backward */

/* A linear layer's backward (fm_k_linear_backward) that computes no weight gradient when the
 * weight is frozen: dinp (N, IC) = dout @ w^T, and the bias gradient (OC) when the bias trains. */
static void linear_backward(const fm_model *m, float *dinp, float *dw, float *dbias, const float *dout,
                            const float *inp, const float *w, const float *bias, int N, int IC, int OC) {
    if (fm_model_weight_trainable(m, w)) {
        fm_k_linear_backward(dinp, dw, fm_model_weight_trainable(m, bias) ? dbias : NULL, dout, inp, w, N, IC, OC);
        return;
    }
    fm_k_gemm(0, 1, N, IC, OC, dout, OC, w, OC, dinp, IC, 0); /* dout @ w^T */
    if (!fm_model_weight_trainable(m, bias)) return;
    /* the bias gradient: column sums of dout, rows in order, the columns shared out in blocks */
    enum { COLS = 64 };
#pragma omp parallel for schedule(static) if ((size_t)N * OC > 65536)
    for (int o0 = 0; o0 < OC; o0 += COLS) {
        int o1 = o0 + COLS < OC ? o0 + COLS : OC;
        for (int n = 0; n < N; n++)
            for (int o = o0; o < o1; o++) dbias[o] += dout[(size_t)n * OC + o];
    }
}

fm_status fm_model_backward(fm_model *m, const float *dlogits, const float *dhidden) {
    if (!m->have_forward) return fm_fail(FM_ERR_ARG, "backward called without a forward");
    if (!dlogits && !dhidden) return fm_fail(FM_ERR_ARG, "backward needs dlogits or dhidden");
    /* Training a quantized model goes on in float32: the int8 copy would go stale. */
    fm_quant_free(m->quant);
    m->quant = NULL;
    const fm_config *c = &m->cfg;
    int B = m->B, T = m->T, N = B * T, C = c->n_embd, H = fm_config_mlp_width(c), NH = c->n_head;
    int V = c->vocab_size;
    fm_acts *a = &m->a;
    fm_weights *g = &m->g;

    /* a LayerNorm's gain or bias gradient, NULL when frozen (its memory is never touched) */
#define GRAD(field) (fm_model_weight_trainable(m, m->w.field) ? g->field : NULL)
#define LAYER_GRAD(field) (fm_model_weight_trainable(m, w->field) ? gl->field : NULL)
    /* Gradient on the final hidden states: the objective's own plus the tied head's. */
    float *dlnf = a->dln; /* (N, C) */
    if (dhidden) memcpy(dlnf, dhidden, sizeof(float) * (size_t)N * C);
    if (dlogits) {
        FM_TIMED("products: head", /* dlogits @ wte, then dlogits^T @ lnf */
                 fm_k_gemm(0, 0, N, C, V, dlogits, V, m->w.wte, C, dlnf, C, dhidden != NULL);
                 if (fm_model_weight_trainable(m, m->w.wte))
                     fm_k_gemm(1, 0, V, C, N, dlogits, V, a->lnf, C, g->wte, C, 1));
    }
    const float *last = c->n_layer > 0 ? a->layers[c->n_layer - 1].resid3 : a->encoded;
    memset(a->dresid, 0, sizeof(float) * (size_t)N * C);
    FM_TIMED("other: layernorm", fm_k_layernorm_backward(a->dresid, GRAD(lnf_w), GRAD(lnf_b), dlnf, last, m->w.lnf_w,
                                                        a->lnf_mean, a->lnf_rstd, N, C));

    /* the adapter's share of product k's gradients (its input gradient added to dinp) */
#define LORA_BACKWARD(k, dinp, dout, inp, IC, OC)                                                              \
    if (m->lora)                                                                                              \
    FM_TIMED("products: lora", fm_lora_backward(m->lora, l, k, dinp, dout, inp, la->lora_t[k], a->lora_dt,    \
                                                a->lora_xd, a->lora_dxd, N, IC, OC, m->dropout_seed))
    /* with residual dropout, the gradient a block's branch gets is the residual's through its mask */
    int drops = m->dropout_seed && m->resid_dropout > 0.0f;
#define THROUGH_DROPOUT(l, j)                                                                                   \
    (drops ? (fm_dropout_apply(a->ddrop, a->dresid, (size_t)N, (size_t)C, m->resid_dropout, m->dropout_seed,   \
                               FM_DROP_SITE_RESIDUAL(l, j)),                                                  \
              (const float *)a->ddrop)                                                                        \
           : (const float *)a->dresid)
    /* a->dresid holds d(residual stream) as it flows down; residual adds pass it through. */
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const fm_layer_weights *w = &m->w.layers[l];
        fm_layer_weights *gl = &g->layers[l];
        fm_layer_acts *la = &a->layers[l];
        const float *resid_in = l == 0 ? a->encoded : a->layers[l - 1].resid3;
        /* MLP: resid3 = resid2 + c_proj(gelu(c_fc(ln_2(resid2)))) */
        const float *dbranch = THROUGH_DROPOUT(l, 1); /* d(fcproj): the residual's, through the dropout */
        FM_TIMED("products: mlp.c_proj", linear_backward(m, a->dfch_gelu, gl->fcproj_w, gl->fcproj_b, dbranch,
                                                         la->fch_gelu, w->fcproj_w, w->fcproj_b, N, H, C));
        LORA_BACKWARD(FM_LORA_MLP_PROJ_K, a->dfch_gelu, dbranch, la->fch_gelu, H, C);
        FM_TIMED("other: gelu", fm_k_gelu_backward(a->dfch, la->fch, a->dfch_gelu, (size_t)N * H));
        FM_TIMED("products: c_fc",
                 linear_backward(m, a->dln, gl->fc_w, gl->fc_b, a->dfch, la->ln2, w->fc_w, w->fc_b, N, C, H));
        LORA_BACKWARD(FM_LORA_C_FC_K, a->dln, a->dfch, la->ln2, C, H);
        FM_TIMED("other: layernorm", fm_k_layernorm_backward(a->dresid, LAYER_GRAD(ln2_w), LAYER_GRAD(ln2_b), a->dln, la->resid2,
                                                            w->ln2_w, la->ln2_mean, la->ln2_rstd, N, C));
        /* attention: resid2 = resid_in + c_proj(attn(c_attn(ln_1(resid_in)))) */
        dbranch = THROUGH_DROPOUT(l, 0);
        FM_TIMED("products: attn.c_proj", linear_backward(m, a->datty, gl->attproj_w, gl->attproj_b, dbranch,
                                                          la->atty, w->attproj_w, w->attproj_b, N, C, C));
        LORA_BACKWARD(FM_LORA_ATTN_PROJ_K, a->datty, dbranch, la->atty, C, C);
        FM_TIMED("attention: backward", fm_k_attention_backward(a->dqkv, a->datty, la->qkv, la->lse, B, T, C, NH));
        FM_TIMED("products: c_attn",
                 linear_backward(m, a->dln, gl->qkv_w, gl->qkv_b, a->dqkv, la->ln1, w->qkv_w, w->qkv_b, N, C, 3 * C));
        LORA_BACKWARD(FM_LORA_C_ATTN_K, a->dln, a->dqkv, la->ln1, C, 3 * C);
        FM_TIMED("other: layernorm", fm_k_layernorm_backward(a->dresid, LAYER_GRAD(ln1_w), LAYER_GRAD(ln1_b), a->dln, resid_in,
                                                            w->ln1_w, la->ln1_mean, la->ln1_rstd, N, C));
        if (m->layer_done) m->layer_done(m->layer_done_ctx, l); /* block l's gradients are final */
    }
#undef LORA_BACKWARD
#undef THROUGH_DROPOUT
#undef GRAD
#undef LAYER_GRAD
    float *dwte = fm_model_weight_trainable(m, m->w.wte) ? g->wte : NULL;
    float *dwpe = fm_model_weight_trainable(m, m->w.wpe) ? g->wpe : NULL;
    if (drops && (dwte || dwpe))
        fm_dropout_apply(a->dresid, a->dresid, (size_t)N, (size_t)C, m->resid_dropout, m->dropout_seed,
                         FM_DROP_SITE_EMBEDDING);
    if (dwte || dwpe) FM_TIMED("other: embeddings", fm_k_encoder_backward(dwte, dwpe, a->dresid, m->tokens, B, T, C));
    return FM_OK;
}

void fm_model_set_backward_hook(fm_model *m, void (*layer_done)(void *ctx, int layer), void *ctx) {
    m->layer_done = layer_done;
    m->layer_done_ctx = ctx;
}

char *fm_model_attached_text(const fm_model *m) {
    fm_text t = {0};
    for (int i = m->n_own; i < m->n_tensors; i++)
        fm_text_printf(&t, "%s%s=%d", t.len ? "," : "", m->tensors[i].name, m->tensors[i].decay);
    if (t.failed) {
        fm_free(t.data);
        return NULL;
    }
    return t.data;
}
