/*
 * classify.c — the classification objective: cross-entropy of the head "score.weight" (K, C) on
 * the final hidden states at each row's read position (or, for a mean head, on their mean over
 * positions 0 to it), for the trainer (fm_objective).
 *
 * What it is for: fine-tuning a GPT2ForSequenceClassification head (and the body under it) on
 * labeled text (fm finetune --task classify). The batch layout it reads is the one
 * fm_sft_source_init gives tsv data: the row's read position is its last position whose mask is
 * > 0 (the text's last token), the label is the target there, the mask value weighs the row. The
 * head itself (labels, attaching, inference) is model/classifier.c.
 */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/classifier.h"

/* The row's read position (its last t with mask > 0; T - 1 without a mask), or -1 when it has
 * none; *weight the mask there. */
static int read_position(const fm_batch *b, int r, float *weight) {
    if (!b->mask) {
        *weight = 1.0f;
        return b->T - 1;
    }
    const float *mask = b->mask + (size_t)r * b->T;
    for (int t = b->T - 1; t >= 0; t--)
        if (mask[t] > 0.0f) {
            *weight = mask[t];
            return t;
        }
    *weight = 0.0f;
    return -1;
}

static double classify_weight(void *ctx, const fm_model *model, const fm_batch *b) {
    (void)ctx, (void)model;
    double w = 0.0;
    for (int r = 0; r < b->rows; r++) {
        float m;
        if (read_position(b, r, &m) >= 0 && isfinite(m)) w += m;
    }
    return w;
}

static fm_status classify_loss(void *ctx, fm_model *model, const fm_batch *b, double norm, double *loss_sum,
                               float *dlogits, float *dhidden) {
    (void)ctx, (void)dlogits;
    int idx = fm_model_find_tensor(model, FM_CLASSIFIER_TENSOR);
    const float *hidden = fm_model_hidden(model);
    if (idx < 0) return fm_fail(FM_ERR_ARG, "classification objective: the model has no '%s'", FM_CLASSIFIER_TENSOR);
    if (!hidden) return fm_fail(FM_ERR_ARG, "classification objective called without a forward");
    if (dhidden && !(norm > 0.0)) return fm_fail(FM_ERR_ARG, "classification normaliser %g must be > 0", norm);
    const fm_tensor_info *W = fm_model_tensor(model, idx);
    const fm_classifier *head = fm_model_classifier(model);
    int C = fm_model_config(model)->n_embd, K = W->shape[0], T = b->T;
    int mean = head && head->pooling == FM_POOL_MEAN;
    double scale = dhidden ? 1.0 / norm : 0.0;
    float *dW = W->trainable ? W->grad : NULL;
    if (dhidden) memset(dhidden, 0, sizeof(float) * (size_t)b->rows * T * C);
    double total = 0.0, z[64], *zk = z;
    double *heap = K > 64 ? fm_malloc(sizeof(double) * (size_t)K) : NULL;
    if (K > 64 && !heap) return fm_fail(FM_ERR_NOMEM, "out of memory for %d logits", K);
    if (heap) zk = heap;
    /* a mean head: the row's mean hidden state x (C) and its gradient dx (C) */
    double *x = mean ? fm_malloc(sizeof(double) * (size_t)C) : NULL;
    float *dx = mean ? fm_malloc(sizeof(float) * (size_t)C) : NULL;
    if (mean && (!x || !dx)) {
        fm_free(heap), fm_free(x), fm_free(dx);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a mean-pooled head of width %d", C);
    }
    fm_status st = FM_OK;
    for (int r = 0; r < b->rows && !st; r++) {
        float m;
        int t = read_position(b, r, &m);
        if (t < 0) continue;
        if (!isfinite(m)) {
            st = fm_fail(FM_ERR_ARG, "classification batch row %d: weight %g is not finite", r, m);
            break;
        }
        int label = b->targets[(size_t)r * T + t];
        if (label < 0 || label >= K) {
            st = fm_fail(FM_ERR_ARG, "classification batch row %d: label %d is not among the head's %d labels", r,
                         label, K);
            break;
        }
        const float *h = hidden + ((size_t)r * T + t) * C;
        if (mean) fm_classifier_mean(hidden + (size_t)r * T * C, t, C, x);
        double mx = -INFINITY, sum = 0.0;
        for (int k = 0; k < K; k++) { /* z (K) = h (C) @ W^T, W (K, C); a mean head: x for h */
            const float *w = W->data + (size_t)k * C;
            double acc = 0.0;
            if (mean)
                for (int c = 0; c < C; c++) acc += x[c] * w[c];
            else
                for (int c = 0; c < C; c++) acc += (double)h[c] * w[c];
            zk[k] = acc;
            if (acc > mx) mx = acc;
        }
        for (int k = 0; k < K; k++) sum += exp(zk[k] - mx);
        double lse = mx + log(sum);
        total += (double)m * (lse - zk[label]);
        if (!dhidden) continue;
        /* g_k = m (softmax_k - [k == label]) / norm; dh (C) = g @ W, dW (K, C) += g^T h. A mean
         * head: dx (C) = g @ W, dW += g^T x, and every position s = 0..t gets dh_s = dx / (t + 1). */
        float *dh = mean ? dx : dhidden + ((size_t)r * T + t) * C;
        if (mean) memset(dx, 0, sizeof(float) * (size_t)C);
        for (int k = 0; k < K; k++) {
            float g = (float)(m * (exp(zk[k] - lse) - (k == label)) * scale);
            const float *w = W->data + (size_t)k * C;
            for (int c = 0; c < C; c++) dh[c] += g * w[c];
            if (dW) {
                float *gw = dW + (size_t)k * C;
                if (mean)
                    for (int c = 0; c < C; c++) gw[c] += g * (float)x[c];
                else
                    for (int c = 0; c < C; c++) gw[c] += g * h[c];
            }
        }
        if (mean) {
            for (int c = 0; c < C; c++) dx[c] /= (float)(t + 1);
            for (int p = 0; p <= t; p++) memcpy(dhidden + ((size_t)r * T + p) * C, dx, sizeof(float) * (size_t)C);
        }
    }
    fm_free(heap), fm_free(x), fm_free(dx);
    if (st) return st;
    *loss_sum = total;
    return FM_OK;
}

fm_status fm_objective_classify(fm_objective *out, const fm_model *model) {
    memset(out, 0, sizeof *out);
    int K = fm_model_num_labels(model);
    if (K == 0)
        return fm_fail(FM_ERR_ARG, "the model has no classification head ('%s', config.json's architectures \"%s\")",
                       FM_CLASSIFIER_TENSOR, FM_CLASSIFIER_ARCH);
    if (K == 1)
        return fm_fail(FM_ERR_ARG, "the model's head has one output (a score, as a reward model's): cross-entropy "
                       "over one label is always 0");
    *out = (fm_objective){.ctx = NULL, .name = "classification", .uses_logits = 0, .uses_hidden = 1,
                          .weight = classify_weight, .loss = classify_loss};
    return FM_OK;
}
