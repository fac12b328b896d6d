/*
 * quant.c — int8 weights (Q8_0) for generation: quantizing a model, its file form, and the
 * products the decoder calls.
 *
 * What it is for: generation streams every weight once per token, so it runs at memory speed;
 * Q8_0 (per block of 32 weights, one scale d = max|w| / 127 rounded to float16, q = round(w / d))
 * moves 34 bytes where float32 moves 128. The matrices quantized are wte (the output head) and
 * every c_attn, c_proj and c_fc weight; biases, LayerNorms and wpe stay float32. The model's
 * float parameters are overwritten with the dequantized weights, so every float computation
 * (training, scoring, evaluation) sees exactly the quantized model, and the decoder's int8
 * products differ from them only by float rounding.
 * Not for: the block arithmetic (fm_k_q8_matmul in src/cpu/kernels.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "core/alloc.h"
#include "core/internal.h"
#include "model/model.h"
#include "model/quant.h"

#define WEIGHTS_META "fm_weights"
#define WEIGHTS_Q8 "q8_0"

/* ------------------------------------------------------------ float16 scales */

/* float -> IEEE half, round to nearest even (the scales are positive and far from overflow). */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    int32_t exp = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
    if (((x >> 23) & 0xffu) == 0xffu) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) { /* subnormal half: mantissa * 2^-24 */
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        int shift = 14 - exp;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry rounds into the exponent */
    return (uint16_t)h;
}

/* ------------------------------------------------------------ which tensors, which layout */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* 1: a Conv1D weight (in, out), used transposed; 2: wte (V, C) as the head; 0: kept float. */
static int matrix_kind(const fm_tensor_info *t) {
    if (strcmp(t->name, "wte.weight") == 0) return 2;
    if (t->ndim == 2 && (ends_with(t->name, ".c_attn.weight") || ends_with(t->name, ".c_proj.weight") ||
                         ends_with(t->name, ".c_fc.weight")))
        return 1;
    return 0;
}

/* Element (o, i) of the matrix as the decoder multiplies it (rows = outputs). */
static inline float *element(float *p, const fm_tensor_info *t, int kind, int o, int i) {
    return kind == 1 ? p + (size_t)i * t->shape[1] + o : p + (size_t)o * t->shape[1] + i;
}

void fm_quant_free(struct fm_quant *q) {
    if (!q) return;
    fm_free_big(q->arena);
    fm_free(q->mats);
    fm_free(q);
}

/* The quantized matrices' shapes (data not yet allocated): one per quantizable tensor. */
static struct fm_quant *quant_layout(const fm_model *m) {
    struct fm_quant *q = fm_calloc(1, sizeof *q);
    if (!q) return NULL;
    q->mats = fm_calloc(m->n_tensors, sizeof *q->mats);
    if (!q->mats) {
        fm_free(q);
        return NULL;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const fm_tensor_info *t = &m->tensors[i];
        int kind = matrix_kind(t);
        if (!kind) continue;
        fm_q8_matrix *x = &q->mats[q->n++];
        x->tensor = i;
        x->rows = kind == 1 ? t->shape[1] : t->shape[0];
        x->cols = kind == 1 ? t->shape[0] : t->shape[1];
        x->blocks = (x->cols + FM_Q8_BLOCK - 1) / FM_Q8_BLOCK;
    }
    return q;
}

static size_t line_up(size_t bytes) { return (bytes + 63) / 64 * 64; }

/* Every matrix's q and then d, one after the other in one buffer (each part on 64-byte lines).
 * Decoding streams all of it once per token: from one fm_alloc_big it lies in 2 MiB pages where
 * the kernel grants them (malloc's 4 KiB pages cost a TLB miss every 4 KiB, and the hardware
 * prefetchers stop at each page's end). Returns 0 when out of memory. */
static int quant_alloc(struct fm_quant *q) {
    size_t total = 0;
    for (int k = 0; k < q->n; k++) {
        const fm_q8_matrix *x = &q->mats[k];
        total += line_up((size_t)x->rows * x->blocks * FM_Q8_BLOCK) + line_up(sizeof(float) * x->rows * x->blocks);
    }
    char *p = q->arena = fm_alloc_big(total, 0);
    if (!p) return 0;
    for (int k = 0; k < q->n; k++) {
        fm_q8_matrix *x = &q->mats[k];
        x->q = (int8_t *)p;
        p += line_up((size_t)x->rows * x->blocks * FM_Q8_BLOCK);
        x->d = (float *)p;
        p += line_up(sizeof(float) * x->rows * x->blocks);
    }
    return 1;
}

/* Writes the dequantized values d * q back into the model's float tensor. */
static void dequantize_into(fm_model *m, const fm_q8_matrix *x) {
    const fm_tensor_info *t = &m->tensors[x->tensor];
    int kind = matrix_kind(t);
    float *p = m->params + t->offset;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < x->rows; o++)
        for (int i = 0; i < x->cols; i++)
            *element(p, t, kind, o, i) = x->d[(size_t)o * x->blocks + i / FM_Q8_BLOCK] *
                                         (float)x->q[(size_t)o * x->blocks * FM_Q8_BLOCK + i];
}

fm_status fm_model_quantize(fm_model *m) {
    if (m->quant) return FM_OK;
    struct fm_quant *q = quant_layout(m);
    if (!q) return fm_fail(FM_ERR_NOMEM, "out of memory quantizing the model");
    /* every matrix's memory first: a failure leaves the model's float weights untouched */
    if (!quant_alloc(q)) {
        fm_quant_free(q);
        return fm_fail(FM_ERR_NOMEM, "out of memory quantizing the model");
    }
    for (int k = 0; k < q->n; k++) {
        fm_q8_matrix *x = &q->mats[k];
        const fm_tensor_info *t = &m->tensors[x->tensor];
        int kind = matrix_kind(t);
        float *p = m->params + t->offset;
        /* blocks outer, rows inner: a Conv1D weight's 32 input rows stay in cache */
#pragma omp parallel for schedule(static)
        for (int b = 0; b < x->blocks; b++)
            for (int o = 0; o < x->rows; o++) {
                int i0 = b * FM_Q8_BLOCK, n = x->cols - i0 < FM_Q8_BLOCK ? x->cols - i0 : FM_Q8_BLOCK;
                float amax = 0.0f;
                for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(*element(p, t, kind, o, i0 + i)));
                float d = fm_f16_to_f32(f32_to_f16(amax / 127.0f)), inv = d > 0.0f ? 1.0f / d : 0.0f;
                int8_t *qo = x->q + (size_t)o * x->blocks * FM_Q8_BLOCK + i0;
                for (int i = 0; i < FM_Q8_BLOCK; i++) {
                    float v = i < n ? roundf(*element(p, t, kind, o, i0 + i) * inv) : 0.0f;
                    qo[i] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
                }
                x->d[(size_t)o * x->blocks + b] = d;
            }
        dequantize_into(m, x);
    }
    m->quant = q;
    return FM_OK;
}

const char *fm_model_weight_format(const fm_model *m) { return m->quant ? WEIGHTS_Q8 : "f32"; }

/* ------------------------------------------------------------ the decoder's products */

static const fm_q8_matrix *find(const fm_model *m, const float *w) {
    if (!m->quant) return NULL;
    for (int k = 0; k < m->quant->n; k++)
        if (m->params + m->tensors[m->quant->mats[k].tensor].offset == w) return &m->quant->mats[k];
    return NULL;
}

size_t fm_quant_scratch_floats(const fm_model *m, int N) {
    if (!m->quant) return 0;
    int widest = 0;
    for (int k = 0; k < m->quant->n; k++)
        if (m->quant->mats[k].blocks > widest) widest = m->quant->mats[k].blocks;
    return (size_t)N * widest * FM_Q8_BLOCK;
}

void fm_model_linear(const fm_model *m, float *out, const float *inp, const float *w, const float *bias,
                     int N, int IC, int OC, float *xpad) {
    const fm_q8_matrix *x = find(m, w);
    if (x) fm_k_q8_matmul(out, inp, x->q, x->d, bias, N, x->rows, x->cols, xpad);
    else fm_k_linear_forward(out, inp, w, bias, N, IC, OC);
}

void fm_model_head(const fm_model *m, float *logits, const float *x, int N, float *xpad) {
    const fm_config *c = &m->cfg;
    const fm_q8_matrix *q = find(m, m->w.wte);
    if (q) fm_k_q8_matmul(logits, x, q->q, q->d, NULL, N, q->rows, q->cols, xpad);
    else fm_k_gemm(0, 1, N, c->vocab_size, c->n_embd, x, c->n_embd, m->w.wte, c->n_embd, logits, c->vocab_size, 0);
}

/* ------------------------------------------------------------ files */

fm_status fm_quant_file_is_q8(const char *path, int *q8) {
    *q8 = 0;
    fm_safetensors st;
    fm_status status = fm_st_open(&st, path);
    if (status == FM_ERR_NOMEM) return status; /* not knowing which loader would misreport it */
    if (status != FM_OK) return FM_OK;         /* the float loader reports the problem */
    const char *v = fm_st_meta(&st, WEIGHTS_META);
    *q8 = v && strcmp(v, WEIGHTS_Q8) == 0;
    fm_st_close(&st);
    return FM_OK;
}

fm_status fm_quant_save(const fm_model *m, const char *path, fm_atomic_file *af) {
    memset(af, 0, sizeof *af);
    const struct fm_quant *q = m->quant;
    int n = m->n_tensors + q->n;
    fm_st_entry *e = fm_calloc(n, sizeof *e);
    char (*names)[FM_NAME_MAX + 8] = fm_calloc(q->n, sizeof *names);
    uint16_t **scales = fm_calloc(q->n, sizeof *scales);
    fm_status st = FM_OK;
    if (!e || !names || !scales) {
        st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int k = 0, used = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const fm_tensor_info *t = &m->tensors[i];
        if (k < q->n && q->mats[k].tensor == i) {
            const fm_q8_matrix *x = &q->mats[k];
            size_t nd = (size_t)x->rows * x->blocks;
            if (!(scales[k] = fm_malloc(sizeof(uint16_t) * nd))) {
                st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            for (size_t j = 0; j < nd; j++) scales[k][j] = f32_to_f16(x->d[j]);
            snprintf(names[k], sizeof names[k], "%s.scale", t->name);
            e[used++] = (fm_st_entry){.name = t->name, .dtype = FM_DTYPE_U8, .ndim = 2,
                                      .shape = {x->rows, (int64_t)x->blocks * FM_Q8_BLOCK}, .data = x->q};
            e[used++] = (fm_st_entry){.name = names[k], .dtype = FM_DTYPE_F16, .ndim = 2,
                                      .shape = {x->rows, x->blocks}, .data = scales[k]};
            k++;
        } else {
            e[used++] = (fm_st_entry){.name = t->name, .dtype = FM_DTYPE_F32, .ndim = t->ndim,
                                      .shape = {t->shape[0], t->shape[1]}, .data = t->data};
        }
    }
    /* attached tensors (heads, adapters) are listed as in a float file, so loading attaches them */
    char *attached = m->n_tensors > m->n_own ? fm_model_attached_text(m) : NULL;
    if (m->n_tensors > m->n_own && !attached) {
        st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    const char *keys[] = {"format", WEIGHTS_META, "fm_attached"}, *values[] = {"pt", WEIGHTS_Q8, attached};
    st = fm_st_write_finished(af, path, e, used, keys, values, attached ? 3 : 2);
    fm_free(attached);
done:
    if (scales)
        for (int i = 0; i < q->n; i++) fm_free(scales[i]);
    fm_free(scales);
    fm_free(names);
    fm_free(e);
    return st;
}

/* The tensor called name with exactly this dtype class and shape, or a failure naming it. */
static fm_status expect(const fm_safetensors *st, const char *path, const char *name, int integer, int ndim,
                        int64_t d0, int64_t d1, const fm_st_tensor **out) {
    const fm_st_tensor *t = fm_st_find(st, name);
    if (!t) return fm_fail(FM_ERR_MISMATCH, "%s: missing tensor '%s'", path, name);
    int is_int = t->dtype == FM_DTYPE_U8;
    if (is_int != integer || t->dtype == FM_DTYPE_I32 || t->dtype == FM_DTYPE_I64)
        return fm_fail(FM_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s", path, name,
                       fm_dtype_name(t->dtype), integer ? "U8 (int8 bytes)" : "a float type");
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1))
        return fm_fail(FM_ERR_MISMATCH, "%s: tensor '%s' has the wrong shape for this config.json", path, name);
    *out = t;
    return FM_OK;
}

fm_status fm_quant_load(fm_model *m, const char *path, int64_t *step_out) {
    if (step_out) *step_out = -1; /* an int8 model records no training step */
    fm_safetensors st;
    fm_status status = fm_st_open(&st, path);
    if (status) return status;
    struct fm_quant *q = quant_layout(m);
    if (!q || !quant_alloc(q)) {
        fm_quant_free(q);
        fm_st_close(&st);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    int k = 0;
    for (int i = 0; i < m->n_tensors && !status; i++) {
        const fm_tensor_info *t = &m->tensors[i];
        const fm_st_tensor *data = NULL, *scale = NULL;
        if (k < q->n && q->mats[k].tensor == i) {
            fm_q8_matrix *x = &q->mats[k++];
            char scale_name[FM_NAME_MAX + 8];
            snprintf(scale_name, sizeof scale_name, "%s.scale", t->name);
            if ((status = expect(&st, path, t->name, 1, 2, x->rows, (int64_t)x->blocks * FM_Q8_BLOCK, &data)) ||
                (status = expect(&st, path, scale_name, 0, 2, x->rows, x->blocks, &scale)))
                break;
            memcpy(x->q, data->data, data->nbytes);
            if ((status = fm_st_read_f32(&st, scale, x->d))) break;
            for (size_t j = 0; j < (size_t)x->rows * x->blocks; j++)
                if (!(x->d[j] >= 0.0f && isfinite(x->d[j]))) {
                    status = fm_fail(FM_ERR_FORMAT, "%s: tensor '%s' has a scale %g (not finite and >= 0)",
                                     path, scale_name, x->d[j]);
                    break;
                }
            if (!status) dequantize_into(m, x);
        } else if (!(status = expect(&st, path, t->name, 0, t->ndim, t->shape[0], t->shape[1], &data))) {
            status = fm_st_read_f32(&st, data, t->data);
        }
    }
    for (int i = 0; i < st.n_tensors && !status; i++) { /* nothing besides the model's tensors */
        const char *name = st.tensors[i].name;
        char base[FM_NAME_MAX + 8];
        int known = fm_model_find_tensor(m, name) >= 0;
        if (!known && ends_with(name, ".scale") && strlen(name) < sizeof base) {
            snprintf(base, sizeof base, "%.*s", (int)(strlen(name) - 6), name);
            int idx = fm_model_find_tensor(m, base);
            known = idx >= 0 && matrix_kind(&m->tensors[idx]);
        }
        if (!known) status = fm_fail(FM_ERR_MISMATCH, "%s: unknown tensor '%s'", path, name);
    }
    fm_st_close(&st);
    if (status) {
        fm_quant_free(q);
        return status;
    }
    fm_quant_free(m->quant);
    m->quant = q;
    return FM_OK;
}
