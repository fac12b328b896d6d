/*
 * lora.c — the arithmetic of low-rank adapters: forward, backward, dropout masks and merging.
 *
 * What it is for: lora.h's products, written with the packed GEMM (src/cpu) so that a row's
 * result does not depend on the other rows (batched decoding stays bitwise) or on the thread
 * count. Shapes: x (N, in), A (r, in), B (out, r), t (N, r), y (N, out).
 */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "cpu/kernels.h"
#include "model/dropout.h"
#include "model/lora.h"

const char *fm_lora_target_name(int k) {
    static const char *const names[FM_LORA_TARGETS] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    return k >= 0 && k < FM_LORA_TARGETS ? names[k] : "?";
}

void fm_lora_target_dims(const fm_config *cfg, int k, int *in, int *out) {
    int C = cfg->n_embd, H = fm_config_mlp_width(cfg);
    static const int in_is_h[FM_LORA_TARGETS] = {0, 0, 0, 1};
    *in = in_is_h[k] ? H : C;
    *out = k == FM_LORA_C_ATTN_K ? 3 * C : k == FM_LORA_C_FC_K ? H : C;
}

void fm_lora_forward(const fm_lora *lora, int l, int k, float *out, const float *inp, float *t, float *xd, int N,
                     int IC, int OC, uint64_t seed) {
    if (!lora) return;
    int slot = l * FM_LORA_TARGETS + k;
    const fm_lora_slot *s = &lora->slots[slot];
    if (!s->rank) return;
    int r = s->rank;
    const float *x = inp;
    if (seed && lora->dropout > 0.0f) {
        fm_dropout_apply(xd, inp, (size_t)N, (size_t)IC, lora->dropout, seed, slot);
        x = xd;
    }
    fm_k_gemm(0, 1, N, r, IC, x, IC, s->A, IC, t, r, 0); /* x @ A^T */
    for (size_t i = 0; i < (size_t)N * r; i++) t[i] *= s->scale;
    fm_k_gemm(0, 1, N, OC, r, t, r, s->B, r, out, OC, 1); /* += t @ B^T */
}

void fm_lora_backward(const fm_lora *lora, int l, int k, float *dinp, const float *dout, const float *inp,
                      const float *t, float *dt, float *xd, float *dxd, int N, int IC, int OC, uint64_t seed) {
    if (!lora) return;
    int slot = l * FM_LORA_TARGETS + k;
    const fm_lora_slot *s = &lora->slots[slot];
    if (!s->rank) return;
    int r = s->rank, dropout = seed && lora->dropout > 0.0f;
    /* dB (OC, r) += dout^T @ t */
    if (s->dB) fm_k_gemm(1, 0, OC, r, N, dout, OC, t, r, s->dB, r, 1);
    /* dt (N, r) = scale * dout @ B */
    fm_k_gemm(0, 0, N, r, OC, dout, OC, s->B, r, dt, r, 0);
    for (size_t i = 0; i < (size_t)N * r; i++) dt[i] *= s->scale;
    const float *x = inp;
    if (dropout) {
        fm_dropout_apply(xd, inp, (size_t)N, (size_t)IC, lora->dropout, seed, slot);
        x = xd;
    }
    /* dA (r, IC) += dt^T @ x */
    if (s->dA) fm_k_gemm(1, 0, r, IC, N, dt, r, x, IC, s->dA, IC, 1);
    if (!dropout) {
        fm_k_gemm(0, 0, N, IC, r, dt, r, s->A, IC, dinp, IC, 1); /* dinp += dt @ A */
        return;
    }
    /* through the dropout: the same mask applied to dt @ A */
    fm_k_gemm(0, 0, N, IC, r, dt, r, s->A, IC, dxd, IC, 0);
    fm_dropout_apply(dxd, dxd, (size_t)N, (size_t)IC, lora->dropout, seed, slot);
    for (size_t i = 0; i < (size_t)N * IC; i++) dinp[i] += dxd[i];
}

void fm_lora_merge_slot(const fm_lora_slot *s, float *w, int IC, int OC) {
    if (!s->rank) return;
    /* w[i][o] += scale * sum_j B[o][j] A[j][i], summed in double for one rounding */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < IC; i++)
        for (int o = 0; o < OC; o++) {
            double sum = 0.0;
            for (int j = 0; j < s->rank; j++) sum += (double)s->B[(size_t)o * s->rank + j] * s->A[(size_t)j * IC + i];
            w[(size_t)i * OC + o] += (float)(s->scale * sum);
        }
}

void fm_lora_free(fm_lora *lora) {
    if (!lora) return;
    fm_free(lora->slots);
    fm_free(lora);
}
