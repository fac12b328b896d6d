/*
 * decode.c — incremental decoding with a key/value cache, for generation (batch 1).
 *
 * What it is for: producing the next-token logits one position at a time without recomputing
 * earlier positions: each layer's keys and values are cached (L, max_len, C) and the new token
 * attends to them. The arithmetic is the forward's (same kernels), so a cached run equals a full
 * forward up to float rounding (tests/test_generate.c checks it token for token). A prompt is fed
 * in blocks of up to PREFILL_ROWS positions, each a batch of rows through the matrix products
 * (the weights are read once per block, not once per token); generation feeds one at a time.
 * Not for: training (no activations are kept for backward) or batches of sequences.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/internal.h"
#include "model/model.h"
#include "model/quant.h"

#define PREFILL_ROWS 32 /* positions computed together while feeding a prompt */

/* R = PREFILL_ROWS rows of activations; a one-token step uses the first row. */
struct fm_decoder {
    const fm_model *model;
    int max_len, len;
    float *k_cache, *v_cache; /* (L, max_len, C) each */
    float *x;                 /* (R, C) residual stream */
    float *ln;                /* (R, C) */
    float *qkv;               /* (R, 3C) */
    float *atty;              /* (R, C) */
    float *proj;              /* (R, C) */
    float *fch, *fch_gelu;    /* (R, H) each */
    float *scores;            /* (NH, max_len) */
    float *logits;            /* (V) */
    float *mean, *rstd;       /* (R) layernorm statistics (unused after the call) */
};

fm_status fm_decoder_init(fm_decoder **out, const fm_model *model, int max_len) {
    *out = NULL;
    const fm_config *c = &model->cfg;
    if (max_len < 1 || max_len > c->n_positions)
        return fm_fail(FM_ERR_ARG, "decoder length %d: must be between 1 and the context (%d)", max_len,
                       c->n_positions);
    fm_decoder *d = calloc(1, sizeof *d);
    if (!d) return fm_fail(FM_ERR_NOMEM, "out of memory for the decoder");
    size_t C = c->n_embd, H = fm_config_mlp_width(c), cache = (size_t)c->n_layer * max_len * C, R = PREFILL_ROWS;
    d->model = model;
    d->max_len = max_len;
    d->k_cache = fm_alloc_big(sizeof(float) * cache, 0);
    d->v_cache = fm_alloc_big(sizeof(float) * cache, 0);
    d->x = fm_alloc_big(sizeof(float) * R * C, 0);
    d->ln = fm_alloc_big(sizeof(float) * R * C, 0);
    d->qkv = fm_alloc_big(sizeof(float) * R * 3 * C, 0);
    d->atty = fm_alloc_big(sizeof(float) * R * C, 0);
    d->proj = fm_alloc_big(sizeof(float) * R * C, 0);
    d->fch = fm_alloc_big(sizeof(float) * R * H, 0);
    d->fch_gelu = fm_alloc_big(sizeof(float) * R * H, 0);
    d->scores = fm_alloc_big(sizeof(float) * (size_t)c->n_head * max_len, 0);
    d->logits = fm_alloc_big(sizeof(float) * c->vocab_size, 0);
    d->mean = fm_alloc_big(sizeof(float) * R, 0);
    d->rstd = fm_alloc_big(sizeof(float) * R, 0);
    if (!d->k_cache || !d->v_cache || !d->x || !d->ln || !d->qkv || !d->atty || !d->proj || !d->fch ||
        !d->fch_gelu || !d->scores || !d->logits || !d->mean || !d->rstd) {
        fm_decoder_free(d);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a key/value cache of %d positions", max_len);
    }
    *out = d;
    return FM_OK;
}

void fm_decoder_free(fm_decoder *d) {
    if (!d) return;
    float *bufs[] = {d->k_cache, d->v_cache, d->x,      d->ln,     d->qkv,  d->atty, d->proj,
                     d->fch,     d->fch_gelu, d->scores, d->logits, d->mean, d->rstd};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) fm_free_big(bufs[i]);
    free(d);
}

void fm_decoder_reset(fm_decoder *d) { d->len = 0; }
int fm_decoder_length(const fm_decoder *d) { return d->len; }

/* One query (C) against the cached keys/values (len, C) of one layer: out (C), per head
 * softmax(q . k_u / sqrt(hs)) over u < len, then the weighted sum of v_u. */
static void attend(float *out, float *scores, const float *q, const float *keys, const float *values,
                   int len, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static)
    for (int h = 0; h < NH; h++) {
        float *s = scores + (size_t)h * len, maxv = -INFINITY, sum = 0.0f;
        const float *qh = q + h * hs;
        for (int u = 0; u < len; u++) {
            const float *k = keys + (size_t)u * C + h * hs;
            float dot = 0.0f;
            for (int i = 0; i < hs; i++) dot += qh[i] * k[i];
            s[u] = dot * scale;
            maxv = s[u] > maxv ? s[u] : maxv;
        }
        for (int u = 0; u < len; u++) {
            s[u] = expf(s[u] - maxv);
            sum += s[u];
        }
        float *o = out + h * hs;
        for (int i = 0; i < hs; i++) o[i] = 0.0f;
        for (int u = 0; u < len; u++) {
            const float *v = values + (size_t)u * C + h * hs;
            float a = s[u] / sum;
            for (int i = 0; i < hs; i++) o[i] += a * v[i];
        }
    }
}

/* The forward of n <= PREFILL_ROWS tokens at positions d->len .. d->len + n - 1, filling the
 * caches and rows 0..n-1 of d->x. Row i attends to the cached positions up to its own. */
static void block(fm_decoder *d, const int *tokens, int n) {
    const fm_model *m = d->model;
    const fm_config *c = &m->cfg;
    int C = c->n_embd, H = fm_config_mlp_width(c), pos = d->len;
    float eps = c->layer_norm_epsilon;
    fm_k_encoder_forward(d->x, tokens, m->w.wte, m->w.wpe + (size_t)pos * C, 1, n, C);
    for (int l = 0; l < c->n_layer; l++) {
        const fm_layer_weights *w = &m->w.layers[l];
        float *keys = d->k_cache + (size_t)l * d->max_len * C, *values = d->v_cache + (size_t)l * d->max_len * C;
        fm_k_layernorm_forward(d->ln, d->mean, d->rstd, d->x, w->ln1_w, w->ln1_b, n, C, eps);
        fm_model_linear(m, d->qkv, d->ln, w->qkv_w, w->qkv_b, n, C, 3 * C);
        for (int i = 0; i < n; i++) {
            memcpy(keys + (size_t)(pos + i) * C, d->qkv + (size_t)i * 3 * C + C, sizeof(float) * C);
            memcpy(values + (size_t)(pos + i) * C, d->qkv + (size_t)i * 3 * C + 2 * C, sizeof(float) * C);
        }
        for (int i = 0; i < n; i++)
            attend(d->atty + (size_t)i * C, d->scores, d->qkv + (size_t)i * 3 * C, keys, values, pos + i + 1, C,
                   c->n_head);
        fm_model_linear(m, d->proj, d->atty, w->attproj_w, w->attproj_b, n, C, C);
        fm_k_residual_forward(d->x, d->x, d->proj, (size_t)n * C);
        fm_k_layernorm_forward(d->ln, d->mean, d->rstd, d->x, w->ln2_w, w->ln2_b, n, C, eps);
        fm_model_linear(m, d->fch, d->ln, w->fc_w, w->fc_b, n, C, H);
        fm_k_gelu_forward(d->fch_gelu, d->fch, (size_t)n * H);
        fm_model_linear(m, d->proj, d->fch_gelu, w->fcproj_w, w->fcproj_b, n, H, C);
        fm_k_residual_forward(d->x, d->x, d->proj, (size_t)n * C);
    }
    d->len += n;
}

fm_status fm_decoder_feed(fm_decoder *d, const int *tokens, int n, const float **logits) {
    const fm_model *m = d->model;
    const fm_config *c = &m->cfg;
    if (n < 1) return fm_fail(FM_ERR_ARG, "decoder: nothing to feed");
    if (d->len + n > d->max_len)
        return fm_fail(FM_ERR_ARG, "decoder: %d + %d positions exceed its length %d", d->len, n, d->max_len);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return fm_fail(FM_ERR_ARG, "token %d is outside the vocabulary [0, %d)", tokens[i], c->vocab_size);
    int last = 0; /* the row of the last position in d->x */
    for (int i = 0; i < n; i += PREFILL_ROWS) {
        int rows = n - i < PREFILL_ROWS ? n - i : PREFILL_ROWS;
        block(d, tokens + i, rows);
        last = rows - 1;
    }
    /* final LayerNorm of the last position, then the tied head: logits (V) = wte (V, C) @ ln */
    fm_k_layernorm_forward(d->ln, d->mean, d->rstd, d->x + (size_t)last * c->n_embd, m->w.lnf_w, m->w.lnf_b, 1,
                           c->n_embd, c->layer_norm_epsilon);
    fm_model_head(m, d->logits, d->ln, 1); /* int8 blocks when the model is quantized (quant.c) */
    *logits = d->logits;
    return FM_OK;
}
