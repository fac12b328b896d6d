/*
 * model.h — the inside of fm_model, shared by model.c, loss.c and checkpoint.c.
 *
 * What it is for: the named parameter views and the activation arena layout. Nothing outside
 * src/ sees these; the public API is fm.h.
 */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include "fm.h"

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

/* Forward activations of one layer, N = B*T rows. */
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
} fm_acts;

struct fm_model {
    fm_config cfg;
    int n_tensors;
    fm_tensor_info *tensors;
    char (*names)[FM_NAME_MAX];
    size_t num_params;
    float *params, *grads;
    fm_weights w, g; /* views into params and grads */
    /* activations for the current (B, T) */
    int B, T;
    int have_forward;
    float *arena;
    int *tokens; /* (B, T) copy of the last forward's input */
    fm_acts a;
    struct fm_quant *quant; /* NULL, or the int8 (Q8_0) matrices generation uses (quant.h) */
};

/* A model with its layout and zeroed gradients but uninitialised parameters (for loading). */
fm_status fm_model_create(fm_model **out, const fm_config *cfg);

#endif /* FM_MODEL_H */
