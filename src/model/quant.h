/*
 * quant.h — int8 (Q8_0) weights for generation, inside libfm (quant.c).
 *
 * What it is for: a model whose matrix weights (wte and every c_attn, c_proj, c_fc weight) are
 * held as Q8_0 blocks, the form the decoder multiplies directly: 4.5x less memory to stream per
 * generated token than float32. The model's float parameters then hold the dequantized values,
 * so training, scoring and evaluation compute with exactly the quantized model.
 * Not for: the block arithmetic (src/cpu/kernels.c, fm_k_q8_matmul) or file layout details
 * beyond the two hooks checkpoint.c calls.
 */
#ifndef FM_QUANT_H
#define FM_QUANT_H

#include <stdint.h>

#include "fm.h"
#include "core/internal.h"

/* One matrix as the decoder uses it: out = in @ W^T, W (rows = outputs, cols = inputs) in
 * blocks of FM_Q8_BLOCK along the inputs. For an HF Conv1D weight stored (in, out) this is the
 * transpose; for wte (V, C), used as the output head, it is wte itself. */
typedef struct {
    int tensor;     /* index of the float tensor it replaces (fm_model_tensor) */
    int rows, cols; /* outputs, inputs */
    int blocks;     /* per row: ceil(cols / 32) */
    int8_t *q;      /* (rows, blocks * 32), zero past cols */
    float *d;       /* (rows, blocks) scales: w = d * q */
} fm_q8_matrix;

struct fm_quant {
    int n;
    fm_q8_matrix *mats;
    void *arena; /* every matrix's q and d (fm_alloc_big): huge pages for the decoder's streams */
};

void fm_quant_free(struct fm_quant *q);

/* Checkpoint hooks. model.safetensors with metadata "fm_weights": "q8_0" holds the quantized
 * matrices as "<name>" U8 (rows, blocks * 32) int8 bytes, transposed to (out, in) for the
 * Conv1D weights, plus "<name>.scale" F16 (rows, blocks); every other tensor as F32. */
/* *q8: the file is an int8 model.safetensors. Fails only when out of memory (a file that cannot be
 * read is reported by the loader that then reads it). */
fm_status fm_quant_file_is_q8(const char *path, int *q8);
fm_status fm_quant_load(fm_model *m, const char *path, int64_t *step_out);
/* Writes the int8 model.safetensors into af's temporary file, finished, for the caller to commit
 * (fm_st_write_finished). */
fm_status fm_quant_save(const fm_model *m, const char *path, fm_atomic_file *af);

/* The decoder's products. out (N, OC) = inp (N, IC) @ w (IC, OC) + bias for a Conv1D weight w
 * of the model, and logits (N, V) = x (N, C) @ wte^T: through the int8 blocks when the model is
 * quantized (whatever N, so each row's numbers do not depend on N), else the float kernels.
 * xpad: fm_quant_scratch_floats(m, N) floats (0, and xpad may be NULL, for a float model). */
size_t fm_quant_scratch_floats(const fm_model *m, int N);
void fm_model_linear(const fm_model *m, float *out, const float *inp, const float *w, const float *bias,
                     int N, int IC, int OC, float *xpad);
void fm_model_head(const fm_model *m, float *logits, const float *x, int N, float *xpad);

#endif /* FM_QUANT_H */
