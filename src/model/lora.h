/*
 * lora.h — low-rank adapters (LoRA) on the transformer block's four matrix products.
 *
 * What it is for: a product y = x W + b (W (in, out), GPT-2's Conv1D layout) with an adapter
 * becomes y = x W + b + scale * (dropout(x) A^T) B^T, A (r, in) and B (out, r), as PEFT defines
 * LoRA (Hu et al. 2021). The same adapter arithmetic serves training (model.c keeps the (N, r)
 * intermediate of each product for the backward; A and B are tensors attached to the model) and
 * inference (sessions, with an adapter loaded from a PEFT directory, unmerged, so several adapters
 * share one base). Dropout masks are a hash of (seed, product, element), so the backward
 * recomputes them instead of storing them. Not for: the files (io/adapter.c).
 */
#ifndef FM_MODEL_LORA_H
#define FM_MODEL_LORA_H

#include <stdint.h>

#include "fm.h"

/* The block's products in order; slot l * FM_LORA_TARGETS + k is product k of layer l. */
enum { FM_LORA_C_ATTN_K = 0, FM_LORA_ATTN_PROJ_K, FM_LORA_C_FC_K, FM_LORA_MLP_PROJ_K, FM_LORA_TARGETS };

typedef struct {
    int rank;       /* 0: this product has no adapter */
    float scale;    /* alpha / rank (alpha / sqrt(rank) with rsLoRA) */
    float *A, *B;   /* A (rank, in), B (out, rank) */
    float *dA, *dB; /* their gradients when training, else NULL */
} fm_lora_slot;

typedef struct fm_lora {
    int n_layer;
    int max_rank;       /* the largest rank of any slot (sizes the (N, r) buffers) */
    float dropout;      /* on the adapter's input, training only */
    fm_lora_slot *slots; /* (n_layer * FM_LORA_TARGETS) */
} fm_lora;

/* An adapter loaded from a PEFT directory (io/adapter_io.c) for inference or merging: its own
 * copy of the A and B matrices, read-only once loaded. */
struct fm_adapter {
    fm_lora lora;          /* slots pointing into values; dA and dB NULL */
    fm_lora_config cfg;    /* as adapter_config.json gives it (r: the configured rank) */
    float *values;         /* every A and B */
    char *dir;             /* where it was loaded from, for messages */
};

/* "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj" for k = 0..3. */
const char *fm_lora_target_name(int k);
/* The input and output width of product k for a configuration. */
void fm_lora_target_dims(const fm_config *cfg, int k, int *in, int *out);

/* Adds product (l, k)'s adapter to out (N, OC): t (N, rank) = scale * dropout(inp) @ A^T, kept
 * for the backward, then out += t @ B^T. Dropout applies when seed != 0 and lora->dropout > 0;
 * xd (N, IC) is its scratch. Nothing happens for a slot without an adapter. */
void fm_lora_forward(const fm_lora *lora, int l, int k, float *out, const float *inp, float *t, float *xd, int N,
                     int IC, int OC, uint64_t seed);

/* The backward of fm_lora_forward given dout (N, OC): dB += dout^T t, dA += (scale dout B)^T
 * dropout(inp), and dinp (N, IC) += the adapter's share of the input gradient. dt (N, rank),
 * xd and dxd (N, IC) are scratch (xd and dxd used only with dropout). */
void fm_lora_backward(const fm_lora *lora, int l, int k, float *dinp, const float *dout, const float *inp,
                      const float *t, float *dt, float *xd, float *dxd, int N, int IC, int OC, uint64_t seed);

/* W (IC, OC) += scale * (B A)^T for every slot of layer l whose product weight is w_k: the
 * adapter folded into the base weights (fm merge). */
void fm_lora_merge_slot(const fm_lora_slot *slot, float *w, int IC, int OC);

/* Frees a fm_lora's slot table (not the tensors it points to). */
void fm_lora_free(fm_lora *lora);

#endif /* FM_MODEL_LORA_H */
