/*
 * classifier.h — the inside of a model's classification head (model/classifier.c), shared with
 * the files that read and write it (io/config.c: config.json's keys, io/checkpoint.c: the
 * directory).
 *
 * What it is for: the label names and the padding id that travel with "score.weight" (K, C) in
 * config.json, as Hugging Face's GPT2ForSequenceClassification keeps them (architectures,
 * num_labels, id2label, label2id, pad_token_id), and fm's read-out choice (classifier_pooling:
 * the last token, or the mean up to it). The public API is fm.h's fm_model_add_classifier and
 * friends.
 */
#ifndef FM_MODEL_CLASSIFIER_H
#define FM_MODEL_CLASSIFIER_H

#include "fm.h"
#include "core/internal.h"

#define FM_CLASSIFIER_TENSOR "score.weight"
#define FM_CLASSIFIER_ARCH "GPT2ForSequenceClassification"
#define FM_CLASSIFIER_POOLING_KEY "classifier_pooling" /* config.json; fm's own, transformers lacks it */
#define FM_MAX_LABELS 65536
#define FM_MAX_LABEL_BYTES 1024

typedef struct fm_classifier {
    int n_labels;  /* K >= 1 */
    char **labels; /* (K) label names by index, distinct, non-empty (fm_malloc'd) */
    int pad_id;    /* the padding id (read position: the last token that is not it), -1: none */
    fm_classifier_pooling pooling; /* FM_POOL_LAST (transformers'), or FM_POOL_MEAN over 0..read position */
} fm_classifier;

/* A new head description (copies the names), read at the last token (pooling FM_POOL_LAST; set
 * the field to change it); labels NULL: "LABEL_0", "LABEL_1", ... as transformers names them.
 * Checks: 1 <= n <= FM_MAX_LABELS, names non-empty, at most FM_MAX_LABEL_BYTES bytes, distinct
 * (FM_ERR_ARG naming the label), pad_id >= -1. */
fm_status fm_classifier_new(fm_classifier **out, int n, const char *const *labels, int pad_id);
void fm_classifier_free(fm_classifier *c);

/* Gives head (owned from now on, also on failure) to model: its "score.weight" must be attached
 * with shape (K, C) (FM_ERR_MISMATCH naming what), what (a file, for messages) may be NULL.
 * Replaces a head the model had. */
fm_status fm_model_set_classifier(fm_model *model, fm_classifier *head, const char *what);
/* The model's head description, NULL without one. */
const fm_classifier *fm_model_classifier(const fm_model *model);

/* A mean head's read-out: out (C) = the mean of row's hidden states (T, C) at positions 0..t,
 * summed in double in position order (fm_model_classify and the objective share it, so that
 * inference and training read alike). */
void fm_classifier_mean(const float *row, int t, int C, double *out);

/* config.json's head (config.c): *out NULL when the file describes none (architectures without
 * "GPT2ForSequenceClassification"); else the labels (id2label, checked against num_labels and
 * label2id), pad_token_id (checked against vocab_size) and classifier_pooling ("last" or "mean";
 * absent or null: "last"). Errors name the file and key. */
fm_status fm_config_load_classifier(const char *path, int vocab_size, fm_classifier **out);
/* fm_config_save_finished with the head's keys when head is not NULL (architectures
 * GPT2ForSequenceClassification, num_labels, id2label, label2id, pad_token_id, problem_type, and
 * classifier_pooling "mean" for a mean head: a last-token head's file is transformers' own). */
fm_status fm_config_save_head_finished(fm_atomic_file *af, const fm_config *cfg, const fm_classifier *head,
                                       const char *path);

#endif /* FM_MODEL_CLASSIFIER_H */
