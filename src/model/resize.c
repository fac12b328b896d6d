/*
 * resize.c — growing a model's vocabulary, for tokens added to its tokenizer (the chat markers
 * a GPT-2 tokenizer lacks).
 *
 * A new model with the larger configuration gets every tensor of the old one; wte (V, C) keeps
 * its rows and each new row is the mean of the old ones, so a new token starts as an average
 * token rather than noise. The output head is tied to wte, so it grows with it.
 */
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "model/model.h"

fm_status fm_model_resize_vocab(const fm_model *m, int vocab_size, fm_model **out) {
    *out = NULL;
    int V = m->cfg.vocab_size, C = m->cfg.n_embd;
    if (vocab_size < V)
        return fm_fail(FM_ERR_ARG, "a vocabulary of %d cannot hold the model's %d tokens", vocab_size, V);
    if (m->n_tensors > m->n_own) return fm_fail(FM_ERR_ARG, "resizing a model with attached tensors (heads, adapters)");
    if (m->quant) return fm_fail(FM_ERR_ARG, "resizing an int8 model: resize the float32 one");
    fm_config cfg = m->cfg;
    cfg.vocab_size = vocab_size;
    fm_model *r = NULL;
    fm_status st = fm_model_create(&r, &cfg);
    if (st) return st;
    for (int i = 0; i < m->n_own; i++) {
        const fm_tensor_info *from = &m->tensors[i], *to = &r->tensors[i];
        memcpy(to->data, from->data, sizeof(float) * from->numel); /* wte: its first V rows */
        r->tensors[i].trainable = from->trainable;
        r->frozen_w[i] = m->frozen_w[i];
    }
    double *mean = fm_calloc((size_t)C, sizeof *mean);
    if (!mean) {
        fm_model_free(r);
        return fm_fail(FM_ERR_NOMEM, "out of memory resizing the vocabulary");
    }
    for (int v = 0; v < V; v++)
        for (int c = 0; c < C; c++) mean[c] += m->w.wte[(size_t)v * C + c];
    for (int v = V; v < vocab_size; v++)
        for (int c = 0; c < C; c++) r->w.wte[(size_t)v * C + c] = (float)(mean[c] / V);
    fm_free(mean);
    *out = r;
    return FM_OK;
}
