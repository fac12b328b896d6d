/*
 * classifier.c — a sequence-classification head on the model, as Hugging Face's
 * GPT2ForSequenceClassification defines it: "score.weight" (K, C), no bias, applied to the final
 * hidden states at each sequence's last token that is not the padding id; or (fm's mean head) to
 * the mean of the final hidden states up to that token.
 *
 * What it is for: attaching a head with its label names (fm_model_add_classifier, _pooled), the
 * labels, padding id and read-out that config.json carries (fm_classifier, classifier.h; read and
 * written by io/config.c and io/checkpoint.c), the read-position rule and the inference forward
 * (fm_model_classify). The training objective is train/classify.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/classifier.h"
#include "model/model.h"

/* ------------------------------------------------------------ the description */

void fm_classifier_free(fm_classifier *c) {
    if (!c) return;
    for (int i = 0; i < c->n_labels; i++) fm_free(c->labels ? c->labels[i] : NULL);
    fm_free(c->labels);
    fm_free(c);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

fm_status fm_classifier_new(fm_classifier **out, int n, const char *const *labels, int pad_id) {
    *out = NULL;
    if (n < 1 || n > FM_MAX_LABELS)
        return fm_fail(FM_ERR_ARG, "a classification head of %d labels: must be 1 to %d", n, FM_MAX_LABELS);
    if (pad_id < -1) return fm_fail(FM_ERR_ARG, "padding id %d: must be an id or -1 (none)", pad_id);
    for (int i = 0; labels && i < n; i++) {
        if (!labels[i] || !labels[i][0]) return fm_fail(FM_ERR_ARG, "label %d of the head is empty", i);
        if (strlen(labels[i]) > FM_MAX_LABEL_BYTES)
            return fm_fail(FM_ERR_ARG, "label %d of the head (\"%.32s...\") is longer than %d bytes", i, labels[i],
                           FM_MAX_LABEL_BYTES);
    }
    fm_classifier *c = fm_calloc(1, sizeof *c);
    char **names = c ? fm_calloc((size_t)n, sizeof *names) : NULL;
    char **sorted = names ? fm_malloc(sizeof *sorted * (size_t)n) : NULL;
    if (!sorted) {
        fm_free(names), fm_free(c);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a head of %d labels", n);
    }
    c->labels = names;
    c->n_labels = n;
    c->pad_id = pad_id;
    fm_status st = FM_OK;
    for (int i = 0; !st && i < n; i++) {
        char buf[32];
        if (!labels) snprintf(buf, sizeof buf, "LABEL_%d", i);
        if (!(names[i] = fm_strdup(labels ? labels[i] : buf)))
            st = fm_fail(FM_ERR_NOMEM, "out of memory for a head of %d labels", n);
    }
    if (!st) { /* distinct: neighbours in byte order differ */
        memcpy(sorted, names, sizeof *sorted * (size_t)n);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_names);
        for (int i = 1; !st && i < n; i++)
            if (!strcmp(sorted[i - 1], sorted[i]))
                st = fm_fail(FM_ERR_ARG, "label \"%.64s\" names two outputs of the head", sorted[i]);
    }
    fm_free(sorted);
    if (st) {
        fm_classifier_free(c);
        return st;
    }
    *out = c;
    return FM_OK;
}

fm_status fm_model_set_classifier(fm_model *m, fm_classifier *head, const char *what) {
    const char *sep = what ? ": " : "";
    if (!what) what = "";
    int C = m->cfg.n_embd, idx = fm_model_find_tensor(m, FM_CLASSIFIER_TENSOR);
    fm_status st = FM_OK;
    if (idx < 0) {
        st = fm_fail(FM_ERR_MISMATCH, "%s%smissing tensor '%s' (the classification head of %d labels)", what, sep,
                     FM_CLASSIFIER_TENSOR, head->n_labels);
    } else {
        const fm_tensor_info *t = &m->tensors[idx];
        if (t->ndim != 2 || t->shape[0] != head->n_labels || t->shape[1] != C)
            st = fm_fail(FM_ERR_MISMATCH, "%s%stensor '%s' has shape [%d%s%.0d], a head of %d labels on a width of %d "
                         "needs [%d, %d] (num_labels, n_embd)", what, sep, FM_CLASSIFIER_TENSOR, t->shape[0],
                         t->ndim == 2 ? ", " : "", t->ndim == 2 ? t->shape[1] : 0, head->n_labels, C, head->n_labels, C);
    }
    if (!st && head->pad_id >= m->cfg.vocab_size)
        st = fm_fail(FM_ERR_MISMATCH, "%s%spad_token_id %d is outside the vocabulary [0, %d)", what, sep, head->pad_id,
                     m->cfg.vocab_size);
    if (st) {
        fm_classifier_free(head);
        return st;
    }
    fm_classifier_free(m->classifier);
    m->classifier = head;
    return FM_OK;
}

const fm_classifier *fm_model_classifier(const fm_model *m) { return m->classifier; }

/* ------------------------------------------------------------ the public API */

const char *fm_classifier_pooling_name(fm_classifier_pooling pooling) {
    return pooling == FM_POOL_LAST ? "last" : pooling == FM_POOL_MEAN ? "mean" : NULL;
}

fm_status fm_classifier_pooling_parse(const char *name, fm_classifier_pooling *out) {
    if (name && !strcmp(name, "last")) *out = FM_POOL_LAST;
    else if (name && !strcmp(name, "mean")) *out = FM_POOL_MEAN;
    else return fm_fail(FM_ERR_ARG, "a head's pooling must be \"last\" or \"mean\", not \"%.64s\"", name ? name : "(none)");
    return FM_OK;
}

fm_status fm_model_add_classifier(fm_model *m, int num_labels, const char *const *labels, int pad_id, uint64_t seed) {
    return fm_model_add_classifier_pooled(m, num_labels, labels, pad_id, FM_POOL_LAST, seed);
}

fm_status fm_model_add_classifier_pooled(fm_model *m, int num_labels, const char *const *labels, int pad_id,
                                         fm_classifier_pooling pooling, uint64_t seed) {
    if (!m) return fm_fail(FM_ERR_ARG, "fm_model_add_classifier: no model");
    if (!fm_classifier_pooling_name(pooling))
        return fm_fail(FM_ERR_ARG, "a head's pooling %d: must be FM_POOL_LAST or FM_POOL_MEAN", (int)pooling);
    if (fm_model_find_tensor(m, FM_CLASSIFIER_TENSOR) >= 0)
        return fm_fail(FM_ERR_ARG, "the model already has a tensor '%s' (a classification head)", FM_CLASSIFIER_TENSOR);
    if (pad_id >= m->cfg.vocab_size)
        return fm_fail(FM_ERR_ARG, "padding id %d is outside the vocabulary [0, %d)", pad_id, m->cfg.vocab_size);
    fm_classifier *head;
    fm_status st = fm_classifier_new(&head, num_labels, labels, pad_id);
    if (st) return st;
    head->pooling = pooling;
    int idx;
    if ((st = fm_model_attach(m, FM_CLASSIFIER_TENSOR, 2, num_labels, m->cfg.n_embd, 1, &idx))) {
        fm_classifier_free(head);
        return st;
    }
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    fm_tensor_info *t = &m->tensors[idx];
    for (size_t i = 0; i < t->numel; i++) t->data[i] = 0.02f * fm_rng_normal(&rng);
    return fm_model_set_classifier(m, head, NULL); /* the shape is right: cannot fail */
}

int fm_model_num_labels(const fm_model *m) { return m && m->classifier ? m->classifier->n_labels : 0; }

const char *fm_model_label(const fm_model *m, int i) {
    return m && m->classifier && i >= 0 && i < m->classifier->n_labels ? m->classifier->labels[i] : NULL;
}

int fm_model_label_index(const fm_model *m, const char *label) {
    for (int i = 0; label && i < fm_model_num_labels(m); i++)
        if (!strcmp(m->classifier->labels[i], label)) return i;
    return -1;
}

int fm_model_pad_id(const fm_model *m) { return m && m->classifier ? m->classifier->pad_id : -1; }

fm_classifier_pooling fm_model_classifier_pooling(const fm_model *m) {
    return m && m->classifier ? m->classifier->pooling : FM_POOL_LAST;
}

void fm_classifier_mean(const float *row, int t, int C, double *out) {
    for (int c = 0; c < C; c++) out[c] = 0.0;
    for (int s = 0; s <= t; s++)
        for (int c = 0; c < C; c++) out[c] += row[(size_t)s * C + c];
    for (int c = 0; c < C; c++) out[c] /= t + 1;
}

int fm_classify_last_index(const int *tokens, int T, int pad_id) {
    if (pad_id < 0) return T - 1;
    for (int t = T - 1; t >= 0; t--)
        if (tokens[t] != pad_id) return t;
    return 0;
}

fm_status fm_model_classify(fm_model *m, const int *tokens, int B, int T, float *logits, int *last) {
    if (!m || !m->classifier)
        return fm_fail(FM_ERR_ARG, "the model has no classification head ('%s', config.json's architectures "
                       "\"%s\")", FM_CLASSIFIER_TENSOR, FM_CLASSIFIER_ARCH);
    const fm_tensor_info *W = &m->tensors[fm_model_find_tensor(m, FM_CLASSIFIER_TENSOR)];
    fm_status st = fm_model_forward(m, tokens, B, T);
    if (st) return st;
    int C = m->cfg.n_embd, K = m->classifier->n_labels, mean = m->classifier->pooling == FM_POOL_MEAN;
    const float *hidden = fm_model_hidden(m); /* (B, T, C) */
    double *pooled = mean ? fm_malloc(sizeof(double) * (size_t)C) : NULL; /* (C): a row's mean */
    if (mean && !pooled) return fm_fail(FM_ERR_NOMEM, "out of memory for a mean-pooled head of width %d", C);
    for (int b = 0; b < B; b++) {
        int t = fm_classify_last_index(tokens + (size_t)b * T, T, m->classifier->pad_id);
        if (last) last[b] = t;
        const float *h = hidden + ((size_t)b * T + t) * C;
        if (mean) fm_classifier_mean(hidden + (size_t)b * T * C, t, C, pooled);
        for (int k = 0; k < K; k++) { /* (1, C) @ (C, K): summed in double, in a fixed order */
            const float *w = W->data + (size_t)k * C;
            double z = 0.0;
            if (mean)
                for (int c = 0; c < C; c++) z += pooled[c] * w[c];
            else
                for (int c = 0; c < C; c++) z += (double)h[c] * w[c];
            logits[(size_t)b * K + k] = (float)z;
        }
    }
    fm_free(pooled);
    return FM_OK;
}
