/*
 * loss.c — next-token cross-entropy with a per-token loss mask, and the train-loss helper.
 *
 * What it is for: turning logits into a loss and its gradient on the logits, the objective of
 * pre-training and (with a mask on the prompt) of supervised fine-tuning. Other objectives
 * (reward heads, DPO, PPO) live in their own files and drive fm_model_backward the same way.
 */
#include <math.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/internal.h"

/* Rows are reduced in fixed chunks, so the loss does not depend on the thread count. */
#define MAX_CHUNKS 4096

fm_status fm_cross_entropy(const float *logits, const int *targets, const float *mask,
                           int N, int V, float *loss, float *dlogits) {
    if (N < 1 || V < 1) return fm_fail(FM_ERR_ARG, "cross-entropy over %d rows of %d logits", N, V);
    double weight = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0 || targets[n] >= V)
            return fm_fail(FM_ERR_ARG, "target %d at position %d is outside the vocabulary [0, %d)",
                           targets[n], n, V);
        double m = mask ? mask[n] : 1.0;
        if (!(m >= 0.0)) return fm_fail(FM_ERR_ARG, "loss mask at position %d is %g, not >= 0", n, m);
        weight += m;
    }
    float scale = weight > 0.0 ? (float)(1.0 / weight) : 0.0f;
    int chunk = (N + MAX_CHUNKS - 1) / MAX_CHUNKS;
    int n_chunks = (N + chunk - 1) / chunk;
    double partial[MAX_CHUNKS], timed = fm_profile_start();
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < n_chunks; ch++) {
        double sum_chunk = 0.0;
        int n1 = (ch + 1) * chunk < N ? (ch + 1) * chunk : N;
        for (int n = ch * chunk; n < n1; n++) {
            /* d loss / d z_v = m (softmax_v - [v == target]) / sum(mask); z may alias dz */
            float m = mask ? mask[n] : 1.0f;
            sum_chunk += (double)m * fm_k_xent_row(dlogits ? dlogits + (size_t)n * V : NULL,
                                                   logits + (size_t)n * V, V, targets[n], m * scale);
        }
        partial[ch] = sum_chunk;
    }
    double total = 0.0;
    for (int ch = 0; ch < n_chunks; ch++) total += partial[ch];
    *loss = weight > 0.0 ? (float)(total / weight) : 0.0f;
    fm_profile_stop("other: cross-entropy", timed);
    return FM_OK;
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
