/*
 * block.c — one transformer block, the only one: training's forward, scoring and decoding all
 * run it (model.c over whole sequences, src/infer/session.c over cached rows).
 *
 * What it is for: x -> x + attn(ln_1(x)) -> (+) mlp(ln_2(.)), GPT-2's pre-LayerNorm block, over
 * N rows, keeping every intermediate the backward needs. Attention is either full causal
 * attention over B sequences of T rows (flash-style kernel, src/cpu) or, for decoding, each row
 * against its own sequence's key/value cache. Every kernel computes each row on its own, so a
 * row's result does not depend on which other rows share the call (batched decoding relies on
 * it). Not for: the backward (model.c) or the cache's bookkeeping (session.c).
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/team.h"
#include "cpu/kernels.h"
#include "model/dropout.h"
#include "model/model.h"
#include "model/quant.h"

typedef struct {
    float *atty;
    const float *qkv;
    int C, NH;
    const fm_attention_rows *att;
} attend_job;

/* Tasks [lo, hi) of attend_cached, task t = (row t / NH, head t % NH): one chunk of fm_team_for. */
static void attend_tasks(void *arg, int lo, int hi) {
    const attend_job *j = arg;
    int C = j->C, NH = j->NH, hs = C / NH;
    for (int t = lo; t < hi; t++) {
        int r = t / NH, h = t % NH;
        fm_k_attend_cached(j->atty + (size_t)r * C + h * hs, j->att->scores + (size_t)t * j->att->score_stride,
                           j->qkv + (size_t)r * 3 * C + h * hs, j->att->keys[r] + h * hs, j->att->values[r] + h * hs,
                           j->att->pos[r] + 1, C, hs, 1.0f / sqrtf((float)hs));
    }
}

/* Cached attention of N rows: each row's key and value written at its position, then each
 * (row, head) attends to its own cache; one task per (row, head), so nothing is shared; the
 * tasks are shared by the team (src/core/team.h). */
static void attend_cached(float *atty, const float *qkv, int N, int C, int NH, const fm_attention_rows *att) {
    for (int r = 0; r < N; r++) {
        memcpy(att->keys[r] + (size_t)att->pos[r] * C, qkv + (size_t)r * 3 * C + C, sizeof(float) * C);
        memcpy(att->values[r] + (size_t)att->pos[r] * C, qkv + (size_t)r * 3 * C + 2 * C, sizeof(float) * C);
    }
    attend_job job = {atty, qkv, C, NH, att};
    fm_team_for(N * NH, 1, attend_tasks, &job);
}

/* out (N, OC) = inp (N, IC) @ w (IC, OC) + bias: the int8 blocks when given their scratch and
 * the model is quantized, else float32. */
static void linear(const fm_model *m, float *q8_scratch, float *out, const float *inp, const float *w,
                   const float *bias, int N, int IC, int OC) {
    if (q8_scratch) fm_model_linear(m, out, inp, w, bias, N, IC, OC, q8_scratch);
    else fm_k_linear_forward(out, inp, w, bias, N, IC, OC);
}

void fm_block_forward(const fm_model *m, int l, const float *x, fm_layer_acts *a, int N,
                      const fm_attention_rows *att, float *q8_scratch, const fm_lora *lora, uint64_t seed) {
    const fm_config *c = &m->cfg;
    const fm_layer_weights *w = &m->w.layers[l];
    int C = c->n_embd, H = fm_config_mlp_width(c), NH = c->n_head;
    float eps = c->layer_norm_epsilon;
    FM_TIMED("other: layernorm", fm_k_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x, w->ln1_w, w->ln1_b,
                                                        N, C, eps));
    FM_TIMED("products: c_attn", linear(m, q8_scratch, a->qkv, a->ln1, w->qkv_w, w->qkv_b, N, C, 3 * C));
    if (lora) FM_TIMED("products: lora", fm_lora_forward(lora, l, FM_LORA_C_ATTN_K, a->qkv, a->ln1,
                                                         a->lora_t[FM_LORA_C_ATTN_K], a->lora_xd, N, C, 3 * C, seed));
    if (att->keys) FM_TIMED("attention: forward", attend_cached(a->atty, a->qkv, N, C, NH, att));
    else FM_TIMED("attention: forward", fm_k_attention_forward(a->atty, a->lse, a->qkv, att->B, att->T, C, NH));
    FM_TIMED("products: attn.c_proj", linear(m, q8_scratch, a->attproj, a->atty, w->attproj_w, w->attproj_b, N, C, C));
    if (lora) FM_TIMED("products: lora", fm_lora_forward(lora, l, FM_LORA_ATTN_PROJ_K, a->attproj, a->atty,
                                                         a->lora_t[FM_LORA_ATTN_PROJ_K], a->lora_xd, N, C, C, seed));
    if (seed && m->resid_dropout > 0.0f) /* GPT-2's dropout on the branch, before the residual add */
        FM_TIMED("other: dropout", fm_dropout_apply(a->attproj, a->attproj, (size_t)N, (size_t)C, m->resid_dropout,
                                                    seed, FM_DROP_SITE_RESIDUAL(l, 0)));
    FM_TIMED("other: residual", fm_k_residual_forward(a->resid2, x, a->attproj, (size_t)N * C));
    FM_TIMED("other: layernorm", fm_k_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->resid2, w->ln2_w,
                                                        w->ln2_b, N, C, eps));
    FM_TIMED("products: c_fc", linear(m, q8_scratch, a->fch, a->ln2, w->fc_w, w->fc_b, N, C, H));
    if (lora) FM_TIMED("products: lora", fm_lora_forward(lora, l, FM_LORA_C_FC_K, a->fch, a->ln2,
                                                         a->lora_t[FM_LORA_C_FC_K], a->lora_xd, N, C, H, seed));
    FM_TIMED("other: gelu", fm_k_gelu_forward(a->fch_gelu, a->fch, (size_t)N * H));
    FM_TIMED("products: mlp.c_proj", linear(m, q8_scratch, a->fcproj, a->fch_gelu, w->fcproj_w, w->fcproj_b, N, H, C));
    if (lora) FM_TIMED("products: lora", fm_lora_forward(lora, l, FM_LORA_MLP_PROJ_K, a->fcproj, a->fch_gelu,
                                                         a->lora_t[FM_LORA_MLP_PROJ_K], a->lora_xd, N, H, C, seed));
    if (seed && m->resid_dropout > 0.0f)
        FM_TIMED("other: dropout", fm_dropout_apply(a->fcproj, a->fcproj, (size_t)N, (size_t)C, m->resid_dropout,
                                                    seed, FM_DROP_SITE_RESIDUAL(l, 1)));
    FM_TIMED("other: residual", fm_k_residual_forward(a->resid3, a->resid2, a->fcproj, (size_t)N * C));
}
