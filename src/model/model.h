/*
 * model.h — the inside of fm_model, shared by the model, the inference sessions, the objectives
 * and the checkpoint code.
 *
 * What it is for: the named parameter views, the activation layout of one transformer block,
 * and fm_block_forward, the block that training, scoring and decoding all run. Nothing outside
 * src/ sees these; the public API is fm.h.
 */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include "fm.h"
#include "model/lora.h"

#define FM_NAME_MAX 64

/* Views of one layer's tensors (into params or into grads). Shapes with C width, H MLP width. */
typedef struct {
    float *ln1_w, *ln1_b;         /* (C), (C) */
    float *qkv_w, *qkv_b;         /* (C, 3C), (3C) */
    float *attproj_w, *attproj_b; /* (C, C), (C) */
    float *ln2_w, *ln2_b;         /* (C), (C) */
    float *fc_w, *fc_b;           /* (C, H), (H) */
    float *fcproj_w, *fcproj_b;   /* (H, C), (C) */
} fm_layer_weights;

typedef struct {
    float *wte;            /* (V, C) */
    float *wpe;            /* (maxT, C) */
    fm_layer_weights *layers;
    float *lnf_w, *lnf_b;  /* (C), (C) */
} fm_weights;

/* Forward activations of one layer, N rows (B*T in training; a session's rows when decoding). */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N, C), (N), (N) */
    float *qkv;                       /* (N, 3C) */
    float *att;                       /* unused (NULL): attention keeps no (T, T) matrix, see lse */
    float *atty;                      /* (N, C) attention output before c_proj */
    float *attproj;                   /* (N, C) */
    float *resid2;                    /* (N, C) residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* (N, C), (N), (N) */
    float *fch, *fch_gelu;            /* (N, H), (N, H) */
    float *fcproj;                    /* (N, C) */
    float *resid3;                    /* (N, C) residual after the MLP */
    float *lse;                       /* (B, NH, T) log-sum-exp of each attention row */
    /* with a LoRA adapter: each product's (N, r) intermediate scale * x A^T (kept for the
     * backward in training; one shared buffer in a session), and the (N, max(C, H)) scratch of
     * the adapters' input dropout; NULL without */
    float *lora_t[FM_LORA_TARGETS];
    float *lora_xd;
} fm_layer_acts;

typedef struct {
    float *encoded;                   /* (N, C) wte[tokens] + wpe */
    fm_layer_acts *layers;
    float *lnf, *lnf_mean, *lnf_rstd; /* (N, C) final hidden states, (N), (N) */
    float *logits, *dlogits;          /* (N, V), (N, V) */
    /* backward scratch */
    float *dresid, *dln, *datty;      /* (N, C) each */
    float *dqkv;                      /* (N, 3C) */
    float *dfch, *dfch_gelu;          /* (N, H) each */
    float *datt_scratch;              /* unused (NULL): attention backward needs no scratch */
    float *lora_dt;                   /* (N, r) with a LoRA adapter */
    float *lora_xd, *lora_dxd;        /* (N, max(C, H)) each with LoRA dropout */
    float *ddrop;                     /* (N, C) with residual dropout: the gradient through its mask */
} fm_acts;

struct fm_model {
    fm_config cfg;
    int n_tensors, cap_tensors, n_own; /* tensors [0, n_own) are the transformer's own */
    fm_tensor_info *tensors;
    char (*names)[FM_NAME_MAX];
    size_t num_params;               /* floats of the own tensors */
    float *params, *grads;           /* (num_params) each */
    fm_weights w, g; /* views into params and grads */
    unsigned char *frozen_w;         /* per own tensor: 1 when frozen (fast lookup in backward) */
    /* activations for the current (B, T) */
    int B, T;
    int have_forward;
    float *arena;
    int *tokens; /* (B, T) copy of the last forward's input */
    fm_acts a;
    struct fm_quant *quant; /* NULL, or the int8 (Q8_0) matrices generation uses (quant.h) */
    fm_lora *lora;          /* the trainable LoRA adapter (attached tensors), or NULL */
    fm_lora_config lora_cfg;
    const fm_adapter *adapter; /* the loaded adapter new sessions apply, or NULL */
    uint64_t dropout_seed;  /* nonzero: the training forward drops (fm_model_set_dropout_seed) */
    float resid_dropout;    /* GPT-2's resid_pdrop and embd_pdrop in training (fm_model_set_dropout) */
    struct fm_classifier *classifier; /* labels and padding id of "score.weight", or NULL (classifier.h) */
    /* fm_model_set_backward_hook's: called as each block's gradients are complete, or NULL */
    void (*layer_done)(void *ctx, int layer);
    void *layer_done_ctx;
};

/* Frees the activation arena (re-laid out at the next forward). */
void fm_model_release_acts(fm_model *m);

/* A model with its layout and zeroed gradients but uninitialised parameters (for loading). */
fm_status fm_model_create(fm_model **out, const fm_config *cfg);

/* 1 when the tensor whose values start at w is trainable (w: a view of m->w). */
int fm_model_weight_trainable(const fm_model *m, const float *w);

/* ------------------------------------------------------------ the transformer block */

/* How a block's rows attend.
 * Full causal attention (keys == NULL): the N = B * T rows are B sequences of T positions;
 * each row attends to the rows before it in its sequence (training, scoring).
 * Cached attention (keys != NULL): row r is the position pos[r] of some sequence whose keys and
 * values for this layer live at keys[r], values[r] ((>= pos[r] + 1, C) each, row stride C); the
 * block writes the row's own key and value at pos[r], then the row attends to positions
 * 0..pos[r] (decoding, prompt feeding). scores: scratch of (N * n_head, max_pos + 1) floats. */
typedef struct {
    int B, T;
    float *const *keys, *const *values; /* (N) per row, this layer's cache */
    const int *pos;                     /* (N) */
    float *scores;
    int score_stride;                   /* floats per (row, head) in scores */
} fm_attention_rows;

/* One pre-LayerNorm block l over N rows: x (N, C) in, a->resid3 (N, C) out, every
 * intermediate kept in a (a->lse only for full attention). x may be a->resid3 (in place).
 * q8_scratch: when not NULL (fm_quant_scratch_floats(m, N) floats), the matrix products use the
 * model's Q8_0 blocks if it is quantized (decoding); NULL keeps them float32 (training, whose
 * backward differentiates the float weights' products). lora: the adapter added to the products
 * (NULL: none), its intermediates kept in a->lora_t; dropout_seed: nonzero in a training forward
 * with dropout. */
void fm_block_forward(const fm_model *m, int l, const float *x, fm_layer_acts *a, int N,
                      const fm_attention_rows *att, float *q8_scratch, const fm_lora *lora, uint64_t dropout_seed);

/* The attached tensors as "NAME=DECAY,..." (DECAY 0 or 1), the "fm_attached" metadata of a
 * weights file; fm_malloc'd, NULL when out of memory. */
char *fm_model_attached_text(const fm_model *m);

#endif /* FM_MODEL_H */
