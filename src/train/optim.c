/*
 * optim.c — AdamW with global-norm gradient clipping and a warm-up + cosine schedule.
 *
 * What it is for: the update rule of every trainer in fm. It follows PyTorch's AdamW exactly
 * (decoupled decay p *= 1 - lr*wd, bias corrections, eps added after the corrected square
 * root) and torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), capped at 1).
 * Weight decay applies to the tensors the model marks decay = 1: all 2-D weights (wte, wpe,
 * c_attn, c_proj, c_fc); biases and LayerNorm parameters are not decayed. It keeps moments for
 * the model's trainable tensors only (a slot each, in the model's tensor order) and updates
 * only those; frozen tensors are not touched.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "cpu/kernels.h"
#include "core/internal.h"
#include "train/optim.h"

void fm_adamw_config_default(fm_adamw_config *cfg) {
    cfg->lr = 6e-4f;
    cfg->min_lr = 6e-5f;
    cfg->warmup_steps = 100;
    cfg->total_steps = 10000;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.95f;
    cfg->eps = 1e-8f;
    cfg->weight_decay = 0.1f;
    cfg->grad_clip = 1.0f;
}

float fm_lr_at(const fm_adamw_config *cfg, int64_t step) {
    if (step < cfg->warmup_steps) return cfg->lr * (float)(step + 1) / (float)cfg->warmup_steps;
    if (step >= cfg->total_steps) return cfg->min_lr;
    double ratio = (double)(step - cfg->warmup_steps) / (double)(cfg->total_steps - cfg->warmup_steps);
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return (float)(cfg->min_lr + coeff * (cfg->lr - cfg->min_lr));
}

static fm_status validate(const fm_adamw_config *c) {
    if (!(c->lr >= 0.0f) || !isfinite(c->lr)) return fm_fail(FM_ERR_CONFIG, "learning rate %g must be >= 0", c->lr);
    if (!(c->min_lr >= 0.0f) || c->min_lr > c->lr)
        return fm_fail(FM_ERR_CONFIG, "min_lr %g must be between 0 and lr (%g)", c->min_lr, c->lr);
    if (c->warmup_steps < 0 || c->total_steps < c->warmup_steps)
        return fm_fail(FM_ERR_CONFIG, "warmup_steps %d and total_steps %d: need 0 <= warmup <= total",
                       c->warmup_steps, c->total_steps);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return fm_fail(FM_ERR_CONFIG, "betas (%g, %g) must be in [0, 1)", c->beta1, c->beta2);
    if (!(c->eps > 0.0f)) return fm_fail(FM_ERR_CONFIG, "eps %g must be > 0", c->eps);
    if (!(c->weight_decay >= 0.0f)) return fm_fail(FM_ERR_CONFIG, "weight_decay %g must be >= 0", c->weight_decay);
    if (isnan(c->grad_clip)) return fm_fail(FM_ERR_CONFIG, "grad_clip is NaN");
    return FM_OK;
}

fm_status fm_optimizer_init(fm_optimizer **out, const fm_model *model, const fm_adamw_config *cfg) {
    *out = NULL;
    fm_status st = validate(cfg);
    if (st) return st;
    fm_optimizer *o = fm_calloc(1, sizeof *o);
    if (!o) return fm_fail(FM_ERR_NOMEM, "out of memory for the optimizer");
    o->cfg = *cfg;
    int nt = fm_model_num_tensors(model);
    o->slots = fm_calloc(nt, sizeof *o->slots);
    o->runs = fm_calloc(nt, sizeof *o->runs);
    if (!o->slots || !o->runs) goto nomem;
    const float *run_end = NULL;
    for (int i = 0; i < nt; i++) {
        const fm_tensor_info *t = fm_model_tensor(model, i);
        if (!t->trainable) continue;
        o->slots[o->n_slots++] = (fm_adam_slot){.tensor = i, .numel = t->numel, .decay = t->decay, .flat = o->n};
        if (o->n_runs > 0 && t->grad == run_end) {
            o->runs[o->n_runs - 1].n += t->numel;
        } else {
            o->runs[o->n_runs++] = (fm_grad_run){.grad = t->grad, .n = t->numel};
        }
        run_end = t->grad + t->numel;
        o->n += t->numel;
    }
    if (o->n_slots == 0) {
        fm_optimizer_free(o);
        return fm_fail(FM_ERR_ARG, "every tensor of the model is frozen: nothing to train");
    }
    for (int r = 0; r < o->n_runs; r++) {
        o->runs[r].first_chunk = o->n_chunks;
        o->n_chunks += (o->runs[r].n + FM_NORM_CHUNK - 1) / FM_NORM_CHUNK;
    }
    o->m = fm_alloc_big(sizeof(float) * o->n, 0);
    o->v = fm_alloc_big(sizeof(float) * o->n, 0);
    o->partial = fm_calloc(o->n_chunks + 1, sizeof(double));
    if (!o->m || !o->v || !o->partial) goto nomem;
    fm_optim_point_slots(o, o->m, o->v, 0, o->n);
    *out = o;
    return FM_OK;
nomem:
    fm_optimizer_free(o);
    return fm_fail(FM_ERR_NOMEM, "out of memory for the optimizer state");
}

void fm_optim_point_slots(fm_optimizer *o, float *m, float *v, size_t lo, size_t hi) {
    o->m = m, o->v = v, o->view_lo = lo, o->view_hi = hi;
    for (int k = 0; k < o->n_slots; k++) {
        fm_adam_slot *sl = &o->slots[k];
        size_t a = lo > sl->flat ? lo - sl->flat : 0, b = hi > sl->flat ? hi - sl->flat : 0;
        sl->own_lo = a < sl->numel ? a : sl->numel;
        sl->own_hi = b < sl->numel ? b : sl->numel;
        if (sl->own_hi < sl->own_lo) sl->own_hi = sl->own_lo;
        size_t at = sl->own_hi > sl->own_lo ? sl->flat + sl->own_lo - lo : 0; /* none: any valid address */
        sl->m = m + at, sl->v = v + at;
    }
}

void fm_optimizer_free(fm_optimizer *o) {
    if (!o) return;
    fm_free_big(o->m);
    fm_free_big(o->v);
    fm_free_big(o->shard_m); /* set while the moments are gathered for a checkpoint */
    fm_free_big(o->shard_v);
    fm_free(o->partial);
    fm_free(o->slots);
    fm_free(o->runs);
    fm_free(o);
}

int64_t fm_optimizer_steps_done(const fm_optimizer *o) { return o->step; }
const fm_adamw_config *fm_optimizer_config(const fm_optimizer *o) { return &o->cfg; }
size_t fm_optimizer_num_params(const fm_optimizer *o) { return o->n; }

/* L2 norm of the trainable gradients: each contiguous run cut into fixed chunks, the partial
 * sums added in order, so it does not depend on the thread count. */
static double global_norm(fm_optimizer *o) {
    for (int r = 0; r < o->n_runs; r++) {
        const fm_grad_run *run = &o->runs[r];
        size_t n = run->n, chunks = (n + FM_NORM_CHUNK - 1) / FM_NORM_CHUNK;
        double *partial = o->partial + run->first_chunk;
#pragma omp parallel for schedule(static)
        for (size_t ch = 0; ch < chunks; ch++) {
            size_t i1 = (ch + 1) * FM_NORM_CHUNK < n ? (ch + 1) * FM_NORM_CHUNK : n;
            partial[ch] = fm_k_sumsq(run->grad + ch * FM_NORM_CHUNK, i1 - ch * FM_NORM_CHUNK);
        }
    }
    double total = 0.0;
    for (size_t ch = 0; ch < o->n_chunks; ch++) total += o->partial[ch];
    return sqrt(total);
}

/* The model is the one the optimizer was made for: the same trainable tensors. */
static fm_status check_model(const fm_optimizer *o, const fm_model *model) {
    for (int k = 0; k < o->n_slots; k++) {
        const fm_tensor_info *t = fm_model_tensor(model, o->slots[k].tensor);
        if (!t || t->numel != o->slots[k].numel || !t->trainable)
            return fm_fail(FM_ERR_MISMATCH, "the optimizer's tensor %d does not match the model's trainable tensors",
                           o->slots[k].tensor);
    }
    return FM_OK;
}

fm_status fm_optimizer_step(fm_optimizer *o, fm_model *model, float *grad_norm, float *lr_out) {
    fm_status st = check_model(o, model);
    if (st) return st;
    double norm;
    FM_TIMED("other: gradient norm", norm = global_norm(o));
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm))
        return fm_fail(FM_ERR_NONFINITE, "step %lld: the gradient norm is %g; the update was not applied",
                       (long long)o->step + 1, norm);
    float clip = 1.0f;
    if (o->cfg.grad_clip > 0.0f) {
        double coef = o->cfg.grad_clip / (norm + 1e-6);
        if (coef < 1.0) clip = (float)coef;
    }
    const fm_adamw_config *c = &o->cfg;
    float lr = fm_lr_at(c, o->step);
    if (lr_out) *lr_out = lr;
    int64_t t = o->step + 1;
    float bc1 = 1.0f - powf(c->beta1, (float)t);
    float bc2_sqrt = sqrtf(1.0f - powf(c->beta2, (float)t));
    float step_size = lr / bc1;
    double timed = fm_profile_start();
    /* each element's update reads only that element (fm_k_adamw is element-wise, the same
     * operations in its vector body and its masked tail), so updating a slot's own stretch alone
     * under ZeRO-1 gives the bits of the whole slot's update */
    for (int k = 0; k < o->n_slots; k++) {
        const fm_adam_slot *sl = &o->slots[k];
        if (sl->own_hi == sl->own_lo) continue;
        const fm_tensor_info *ti = fm_model_tensor(model, sl->tensor);
        float shrink = sl->decay ? 1.0f - lr * c->weight_decay : 1.0f;
        fm_k_adamw(ti->data + sl->own_lo, ti->grad + sl->own_lo, sl->m, sl->v, sl->own_hi - sl->own_lo, clip, shrink,
                   c->beta1, c->beta2, step_size, bc2_sqrt, c->eps);
    }
    fm_profile_stop("other: adamw", timed);
    if (o->comm && (st = fm_optim_allgather_params(o, model))) return st;
    o->step++;
    return FM_OK;
}
