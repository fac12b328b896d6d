/*
 * model.c — the GPT-2 transformer: parameter layout, initialisation, forward and backward.
 *
 * What it is for: one decoder (pre-LayerNorm blocks, learned positions, GELU MLP, tied output
 * head) whose backward starts from any objective's gradient on the logits and/or the final
 * hidden states. Parameters and gradients are single allocations with named views in Hugging
 * Face's GPT-2 names and layouts. Activations come from one arena sized per (B, T) shape.
 * Not for: objectives (loss.c), the optimizer (optim.c) or files (checkpoint.c).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/internal.h"
#include "model/model.h"
#include "model/quant.h"

/* ------------------------------------------------------------ parameter layout */

static void add_tensor(fm_model *m, const char *name, int ndim, int d0, int d1, int decay) {
    fm_tensor_info *t = &m->tensors[m->n_tensors++];
    snprintf(m->names[m->n_tensors - 1], FM_NAME_MAX, "%s", name);
    t->name = m->names[m->n_tensors - 1];
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 1;
    t->numel = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
    t->offset = m->num_params;
    t->decay = decay;
    m->num_params += t->numel;
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
    fm_model *m = calloc(1, sizeof *m);
    if (!m) return fm_fail(FM_ERR_NOMEM, "out of memory for the model");
    m->cfg = *cfg;
    int max_tensors = 4 + 12 * cfg->n_layer;
    m->tensors = calloc(max_tensors, sizeof *m->tensors);
    m->names = calloc(max_tensors, sizeof *m->names);
    m->w.layers = calloc(cfg->n_layer, sizeof *m->w.layers);
    m->g.layers = calloc(cfg->n_layer, sizeof *m->g.layers);
    if (!m->tensors || !m->names || !m->w.layers || !m->g.layers) goto nomem;
    build_layout(m);
    m->params = fm_alloc_big(sizeof(float) * m->num_params, 0); /* written by init or load */
    m->grads = fm_alloc_big(sizeof(float) * m->num_params, 0);  /* touched by the first zero_grad */
    if (!m->params || !m->grads) goto nomem;
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

static void free_acts(fm_model *m) {
    fm_free_big(m->arena);
    free(m->tokens);
    free(m->a.layers);
    m->arena = NULL;
    m->tokens = NULL;
    m->a.layers = NULL;
    m->B = m->T = 0;
}

void fm_model_free(fm_model *m) {
    if (!m) return;
    fm_quant_free(m->quant);
    free_acts(m);
    fm_free_big(m->params);
    fm_free_big(m->grads);
    free(m->tensors);
    free(m->names);
    free(m->w.layers);
    free(m->g.layers);
    free(m);
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

void fm_model_zero_grad(fm_model *m) {
    enum { CHUNK = 1 << 16 };
    size_t n = m->num_params, chunks = (n + CHUNK - 1) / CHUNK;
    double timed = fm_profile_start();
#pragma omp parallel for schedule(static) if (chunks > 4)
    for (size_t c = 0; c < chunks; c++)
        memset(m->grads + c * CHUNK, 0, sizeof(float) * (c * CHUNK + CHUNK < n ? CHUNK : n - c * CHUNK));
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
#undef TAKE
    return used;
}

static fm_status ensure_acts(fm_model *m, int B, int T) {
    if (m->B == B && m->T == T) return FM_OK;
    free_acts(m);
    size_t count = layout_acts(m, NULL, B, T);
    m->arena = fm_alloc_big(sizeof(float) * count, 1);
    m->tokens = malloc(sizeof(int) * (size_t)B * T);
    m->a.layers = calloc(m->cfg.n_layer, sizeof *m->a.layers);
    if (!m->arena || !m->tokens || !m->a.layers) {
        free_acts(m);
        return fm_fail(FM_ERR_NOMEM, "out of memory for activations of batch %d x %d (%zu MiB)", B, T,
                       count * sizeof(float) >> 20);
    }
    layout_acts(m, m->arena, B, T);
    m->B = B;
    m->T = T;
    return FM_OK;
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

    int N = B * T, C = c->n_embd, H = fm_config_mlp_width(c), NH = c->n_head;
    float eps = c->layer_norm_epsilon;
    fm_acts *a = &m->a;
    FM_TIMED("other: embeddings", fm_k_encoder_forward(a->encoded, tokens, m->w.wte, m->w.wpe, B, T, C));
    const float *resid = a->encoded; /* (N, C), the residual stream entering layer l */
    for (int l = 0; l < c->n_layer; l++) {
        const fm_layer_weights *w = &m->w.layers[l];
        fm_layer_acts *la = &a->layers[l];
        FM_TIMED("other: layernorm",
                 fm_k_layernorm_forward(la->ln1, la->ln1_mean, la->ln1_rstd, resid, w->ln1_w, w->ln1_b, N, C, eps));
        FM_TIMED("products: c_attn", fm_k_linear_forward(la->qkv, la->ln1, w->qkv_w, w->qkv_b, N, C, 3 * C));
        FM_TIMED("attention: forward", fm_k_attention_forward(la->atty, la->lse, la->qkv, B, T, C, NH));
        FM_TIMED("products: attn.c_proj",
                 fm_k_linear_forward(la->attproj, la->atty, w->attproj_w, w->attproj_b, N, C, C));
        FM_TIMED("other: residual", fm_k_residual_forward(la->resid2, resid, la->attproj, (size_t)N * C));
        FM_TIMED("other: layernorm", fm_k_layernorm_forward(la->ln2, la->ln2_mean, la->ln2_rstd, la->resid2,
                                                            w->ln2_w, w->ln2_b, N, C, eps));
        FM_TIMED("products: c_fc", fm_k_linear_forward(la->fch, la->ln2, w->fc_w, w->fc_b, N, C, H));
        FM_TIMED("other: gelu", fm_k_gelu_forward(la->fch_gelu, la->fch, (size_t)N * H));
        FM_TIMED("products: mlp.c_proj",
                 fm_k_linear_forward(la->fcproj, la->fch_gelu, w->fcproj_w, w->fcproj_b, N, H, C));
        FM_TIMED("other: residual", fm_k_residual_forward(la->resid3, la->resid2, la->fcproj, (size_t)N * C));
        resid = la->resid3;
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

    /* Gradient on the final hidden states: the objective's own plus the tied head's. */
    float *dlnf = a->dln; /* (N, C) */
    if (dhidden) memcpy(dlnf, dhidden, sizeof(float) * (size_t)N * C);
    if (dlogits) {
        FM_TIMED("products: head", /* dlogits @ wte, then dlogits^T @ lnf */
                 fm_k_gemm(0, 0, N, C, V, dlogits, V, m->w.wte, C, dlnf, C, dhidden != NULL);
                 fm_k_gemm(1, 0, V, C, N, dlogits, V, a->lnf, C, g->wte, C, 1));
    }
    const float *last = c->n_layer > 0 ? a->layers[c->n_layer - 1].resid3 : a->encoded;
    memset(a->dresid, 0, sizeof(float) * (size_t)N * C);
    FM_TIMED("other: layernorm", fm_k_layernorm_backward(a->dresid, g->lnf_w, g->lnf_b, dlnf, last, m->w.lnf_w,
                                                        a->lnf_mean, a->lnf_rstd, N, C));

    /* a->dresid holds d(residual stream) as it flows down; residual adds pass it through. */
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const fm_layer_weights *w = &m->w.layers[l];
        fm_layer_weights *gl = &g->layers[l];
        fm_layer_acts *la = &a->layers[l];
        const float *resid_in = l == 0 ? a->encoded : a->layers[l - 1].resid3;
        /* MLP: resid3 = resid2 + c_proj(gelu(c_fc(ln_2(resid2)))) */
        FM_TIMED("products: mlp.c_proj", fm_k_linear_backward(a->dfch_gelu, gl->fcproj_w, gl->fcproj_b, a->dresid,
                                                              la->fch_gelu, w->fcproj_w, N, H, C));
        FM_TIMED("other: gelu", fm_k_gelu_backward(a->dfch, la->fch, a->dfch_gelu, (size_t)N * H));
        FM_TIMED("products: c_fc",
                 fm_k_linear_backward(a->dln, gl->fc_w, gl->fc_b, a->dfch, la->ln2, w->fc_w, N, C, H));
        FM_TIMED("other: layernorm", fm_k_layernorm_backward(a->dresid, gl->ln2_w, gl->ln2_b, a->dln, la->resid2,
                                                            w->ln2_w, la->ln2_mean, la->ln2_rstd, N, C));
        /* attention: resid2 = resid_in + c_proj(attn(c_attn(ln_1(resid_in)))) */
        FM_TIMED("products: attn.c_proj", fm_k_linear_backward(a->datty, gl->attproj_w, gl->attproj_b, a->dresid,
                                                               la->atty, w->attproj_w, N, C, C));
        FM_TIMED("attention: backward", fm_k_attention_backward(a->dqkv, a->datty, la->qkv, la->lse, B, T, C, NH));
        FM_TIMED("products: c_attn",
                 fm_k_linear_backward(a->dln, gl->qkv_w, gl->qkv_b, a->dqkv, la->ln1, w->qkv_w, N, C, 3 * C));
        FM_TIMED("other: layernorm", fm_k_layernorm_backward(a->dresid, gl->ln1_w, gl->ln1_b, a->dln, resid_in,
                                                            w->ln1_w, la->ln1_mean, la->ln1_rstd, N, C));
    }
    FM_TIMED("other: embeddings", fm_k_encoder_backward(g->wte, g->wpe, a->dresid, m->tokens, B, T, C));
    return FM_OK;
}
