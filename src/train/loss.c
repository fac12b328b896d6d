/*
 * loss.c — next-token cross-entropy with a per-token loss mask, and the train-loss helper.
 *
 * What it is for: turning logits into a loss and its gradient on the logits, the objective of
 * pre-training and (with a mask on the prompt) of supervised fine-tuning. Other objectives
 * (reward heads, DPO, PPO) live in their own files and drive fm_model_backward the same way,
 * through the fm_objective interface the trainer calls.
 */
#include <math.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/internal.h"

/* Rows are reduced in fixed chunks, so the loss does not depend on the thread count. */
#define MAX_CHUNKS 4096

/* The masked sum of the rows' losses into *loss_sum and the mask's sum into *weight; dlogits
 * (when not NULL) = mask_n (softmax - onehot) * scale, scale = 1 / norm, or 1 / weight when
 * norm <= 0 (0 when that is 0). */
static fm_status xent(const float *logits, const int *targets, const float *mask, int N, int V, double norm,
                      double *loss_sum, double *weight_out, float *dlogits) {
    if (N < 1 || V < 1) return fm_fail(FM_ERR_ARG, "cross-entropy over %d rows of %d logits", N, V);
    double weight = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0 || targets[n] >= V)
            return fm_fail(FM_ERR_ARG, "target %d at position %d is outside the vocabulary [0, %d)",
                           targets[n], n, V);
        double m = mask ? mask[n] : 1.0;
        if (!(m >= 0.0) || !isfinite(m)) return fm_fail(FM_ERR_ARG, "loss mask at position %d is %g, not >= 0", n, m);
        weight += m;
    }
    double denom = norm > 0.0 ? norm : weight;
    float scale = denom > 0.0 ? (float)(1.0 / denom) : 0.0f;
    int chunk = (N + MAX_CHUNKS - 1) / MAX_CHUNKS;
    int n_chunks = (N + chunk - 1) / chunk;
    double partial[MAX_CHUNKS], timed = fm_profile_start();
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < n_chunks; ch++) {
        double sum_chunk = 0.0;
        int n1 = (ch + 1) * chunk < N ? (ch + 1) * chunk : N;
        for (int n = ch * chunk; n < n1; n++) {
            /* d loss / d z_v = m (softmax_v - [v == target]) * scale; z may alias dz */
            float m = mask ? mask[n] : 1.0f;
            sum_chunk += (double)m * fm_k_xent_row(dlogits ? dlogits + (size_t)n * V : NULL,
                                                   logits + (size_t)n * V, V, targets[n], m * scale);
        }
        partial[ch] = sum_chunk;
    }
    double total = 0.0;
    for (int ch = 0; ch < n_chunks; ch++) total += partial[ch];
    *loss_sum = total;
    *weight_out = weight;
    fm_profile_stop("other: cross-entropy", timed);
    return FM_OK;
}

fm_status fm_cross_entropy(const float *logits, const int *targets, const float *mask,
                           int N, int V, float *loss, float *dlogits) {
    double total, weight;
    fm_status st = xent(logits, targets, mask, N, V, 0.0, &total, &weight, dlogits);
    if (st) return st;
    *loss = weight > 0.0 ? (float)(total / weight) : 0.0f;
    return FM_OK;
}

fm_status fm_cross_entropy_sum(const float *logits, const int *targets, const float *mask, int N, int V,
                               double norm, double *loss_sum, float *dlogits) {
    if (!(norm > 0.0)) return fm_fail(FM_ERR_ARG, "cross-entropy normaliser %g must be > 0", norm);
    double weight;
    return xent(logits, targets, mask, N, V, norm, loss_sum, &weight, dlogits);
}

/* ------------------------------------------------------------ the objective */

static double xent_weight(void *ctx, const fm_model *model, const fm_batch *b) {
    (void)ctx, (void)model;
    size_t n = (size_t)b->rows * b->T;
    if (!b->mask) return (double)n;
    double w = 0.0;
    for (size_t i = 0; i < n; i++) w += b->mask[i];
    return w;
}

static fm_status xent_loss(void *ctx, fm_model *model, const fm_batch *b, double norm, double *loss_sum,
                           float *dlogits, float *dhidden) {
    (void)ctx, (void)dhidden;
    const float *logits = fm_model_logits(model);
    if (!logits) return fm_fail(FM_ERR_ARG, "cross-entropy objective called without a forward");
    double weight;
    int V = fm_model_config(model)->vocab_size;
    return xent(logits, b->targets, b->mask, b->rows * b->T, V, norm, loss_sum, &weight, dlogits);
}

void fm_objective_cross_entropy(fm_objective *o) {
    *o = (fm_objective){.ctx = NULL, .name = "cross-entropy", .uses_logits = 1, .uses_hidden = 0,
                        .weight = xent_weight, .loss = xent_loss};
}

fm_status fm_model_train_loss(fm_model *model, const int *tokens, const int *targets,
                              const float *mask, int B, int T, float *loss) {
    fm_status st = fm_model_forward(model, tokens, B, T);
    if (st) return st;
    const fm_config *cfg = fm_model_config(model);
    float *dlogits = fm_model_dlogits(model);
    st = fm_cross_entropy(fm_model_logits(model), targets, mask, B * T, cfg->vocab_size, loss, dlogits);
    if (st) return st;
    return fm_model_backward(model, dlogits, NULL);
}
