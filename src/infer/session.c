/*
 * session.c — inference sessions: key/value caches for several sequences, prompt feeding in
 * blocks, batched decoding steps, and a cache-free forward for scoring.
 *
 * What it is for: everything that runs a trained model without training it (fm generate,
 * fm score, fm eval, samples during pre-training, later the server and PPO rollouts) does so
 * through a session. A session owns all its buffers, allocated once by fm_session_init (the
 * scoring forward's per shape), and only reads the model, so sessions on different threads
 * share one model. The arithmetic is model/block.c's; every row is computed on its own (the
 * products included), so a sequence gets the same logits, bit for bit, whether it is stepped
 * alone or beside others, and whichever session or thread runs it. Each call's products run in
 * float32 (fm_k_gemm_force_fp32 on the calling thread for its duration) whatever the process-wide
 * precision, as fm.h promises: a bf16 training run's samples decode as any other.
 * Not for: training (no activations are kept for a backward) or sampling (sample.c).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "cpu/kernels.h"
#include "model/model.h"
#include "model/quant.h"

#define PREFILL_ROWS 128 /* prompt positions computed together (the weights are packed once a block) */

struct fm_session {
    const fm_model *model;
    const fm_lora *lora;          /* the adapter its products add (the model's, when made), or NULL */
    int omp_threads_spinning;     /* the last forward ran more than FM_K_FEW_ROWS rows */
    int max_seqs, max_len;
    int rows;                     /* rows of the row buffers: max(PREFILL_ROWS, max_seqs) */
    int *len;                     /* (max_seqs) positions filled */
    float *k_cache, *v_cache;     /* (max_seqs, L, max_len, C) each */
    float *arena;                 /* the row buffers below */
    fm_layer_acts a;              /* one block's buffers for `rows` rows; a.resid3 is x */
    float *x;                     /* (rows, C) residual stream */
    float *lnf, *lnf_mean, *lnf_rstd; /* (rows, C), (rows), (rows) */
    float *logits;                /* (rows, V) */
    float *last_x;                /* (max_seqs, C) fm_session_feed_many: each sequence's last row */
    float *scores;                /* (rows * NH, max_len) attention scratch */
    float *q8;                    /* int8 products' scratch, or NULL for a float model */
    float **keys, **values;       /* (rows) this layer's cache of each row's sequence */
    int *pos, *tok, *seq;         /* (rows) position, token and sequence of each row */
    /* fm_session_forward's buffers for (fB, fT) */
    int fB, fT;
    float *farena;
    fm_layer_acts fa;
    float *fx, *flnf, *fmean, *frstd, *flogits;
    int *ftok;
};

/* Lays out (or, with base NULL, sizes) one block's buffers for N rows; resid2 and resid3 are
 * separate, lse only with lse_rows > 0, one (N, lora_rank) buffer shared by the adapter's four
 * products when lora_rank > 0. Each buffer starts on a cache line. */
static size_t layout_rows(float *base, fm_layer_acts *a, size_t N, size_t C, size_t H, size_t lse_rows,
                          size_t lora_rank) {
    size_t used = 0;
#define TAKE(ptr, count) ((ptr) = base ? base + used : NULL, used += ((count) + 15) / 16 * 16)
    TAKE(a->ln1, N * C);
    TAKE(a->ln1_mean, N);
    TAKE(a->ln1_rstd, N);
    TAKE(a->qkv, N * 3 * C);
    TAKE(a->lse, lse_rows);
    TAKE(a->atty, N * C);
    TAKE(a->attproj, N * C);
    TAKE(a->resid2, N * C);
    TAKE(a->ln2, N * C);
    TAKE(a->ln2_mean, N);
    TAKE(a->ln2_rstd, N);
    TAKE(a->fch, N * H);
    TAKE(a->fch_gelu, N * H);
    TAKE(a->fcproj, N * C);
    TAKE(a->resid3, N * C);
    TAKE(a->lora_t[0], N * lora_rank);
#undef TAKE
    for (int k = 1; k < FM_LORA_TARGETS; k++) a->lora_t[k] = a->lora_t[0];
    a->lora_xd = NULL; /* sessions never drop */
    if (!lse_rows) a->lse = NULL;
    a->att = NULL;
    return used;
}

fm_status fm_session_init(fm_session **out, const fm_model *m, int max_seqs, int max_len) {
    *out = NULL;
    const fm_config *c = &m->cfg;
    if (max_len < 1 || max_len > c->n_positions)
        return fm_fail(FM_ERR_ARG, "session length %d: must be between 1 and the context (%d)", max_len,
                       c->n_positions);
    if (max_seqs < 1 || max_seqs > 4096)
        return fm_fail(FM_ERR_ARG, "session of %d sequences: must be between 1 and 4096", max_seqs);
    fm_session *s = fm_calloc(1, sizeof *s);
    if (!s) return fm_fail(FM_ERR_NOMEM, "out of memory for a session");
    size_t C = c->n_embd, H = fm_config_mlp_width(c), L = c->n_layer, V = c->vocab_size, NH = c->n_head;
    s->model = m;
    s->lora = m->adapter ? &m->adapter->lora : m->lora;
    size_t rank = s->lora ? (size_t)s->lora->max_rank : 0;
    s->max_seqs = max_seqs;
    s->max_len = max_len;
    s->rows = max_seqs > PREFILL_ROWS ? max_seqs : PREFILL_ROWS;
    size_t R = s->rows, cache = (size_t)max_seqs * L * max_len * C;
    size_t block = layout_rows(NULL, &s->a, R, C, H, 0, rank);
    size_t extra = R * C + R + R + R * V; /* lnf, mean, rstd, logits */
    s->len = fm_calloc(max_seqs, sizeof *s->len);
    s->k_cache = fm_alloc_big(sizeof(float) * (cache ? cache : 1), 0);
    s->v_cache = fm_alloc_big(sizeof(float) * (cache ? cache : 1), 0);
    s->arena = fm_alloc_big(sizeof(float) * (block + extra + 16 * 4), 0);
    s->scores = fm_alloc_big(sizeof(float) * R * NH * max_len, 0);
    size_t q8 = fm_quant_scratch_floats(m, (int)R);
    s->q8 = q8 ? fm_alloc_big(sizeof(float) * q8, 0) : NULL;
    s->last_x = fm_alloc_big(sizeof(float) * (size_t)max_seqs * C, 0);
    s->keys = fm_calloc(R, sizeof *s->keys);
    s->values = fm_calloc(R, sizeof *s->values);
    s->pos = fm_calloc(R, sizeof *s->pos);
    s->tok = fm_calloc(R, sizeof *s->tok);
    s->seq = fm_calloc(R, sizeof *s->seq);
    if (!s->len || !s->k_cache || !s->v_cache || !s->arena || !s->scores || (q8 && !s->q8) || !s->last_x || !s->keys ||
        !s->values || !s->pos || !s->tok || !s->seq) {
        fm_session_free(s);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a session of %d sequences of %d positions", max_seqs,
                       max_len);
    }
    layout_rows(s->arena, &s->a, R, C, H, 0, rank);
    s->x = s->a.resid3;
    float *p = s->arena + block;
    s->lnf = p, p += (R * C + 15) / 16 * 16;
    s->lnf_mean = p, p += (R + 15) / 16 * 16;
    s->lnf_rstd = p, p += (R + 15) / 16 * 16;
    s->logits = p;
    *out = s;
    return FM_OK;
}

static void free_forward(fm_session *s) {
    fm_free_big(s->farena);
    fm_free(s->ftok);
    s->farena = NULL;
    s->ftok = NULL;
    s->fB = s->fT = 0;
}

void fm_session_free(fm_session *s) {
    if (!s) return;
    free_forward(s);
    fm_free(s->len);
    fm_free_big(s->k_cache);
    fm_free_big(s->v_cache);
    fm_free_big(s->arena);
    fm_free_big(s->scores);
    fm_free_big(s->q8);
    fm_free_big(s->last_x);
    fm_free(s->keys);
    fm_free(s->values);
    fm_free(s->pos);
    fm_free(s->tok);
    fm_free(s->seq);
    fm_free(s);
}

const fm_model *fm_session_model(const fm_session *s) { return s->model; }
int fm_session_max_seqs(const fm_session *s) { return s->max_seqs; }
int fm_session_max_len(const fm_session *s) { return s->max_len; }
void fm_session_reset(fm_session *s, int seq) {
    if (seq >= 0 && seq < s->max_seqs) s->len[seq] = 0;
}
int fm_session_max_rows(const fm_session *s) { return s->rows; }
int fm_session_length(const fm_session *s, int seq) { return seq >= 0 && seq < s->max_seqs ? s->len[seq] : 0; }

fm_status fm_session_copy(fm_session *s, int from, int to) {
    if (from < 0 || from >= s->max_seqs || to < 0 || to >= s->max_seqs)
        return fm_fail(FM_ERR_ARG, "session: sequences %d and %d: must be below %d", from, to, s->max_seqs);
    if (from == to) return FM_OK;
    const fm_config *c = &s->model->cfg;
    size_t C = c->n_embd, per_layer = (size_t)s->max_len * C, n = (size_t)s->len[from] * C;
    for (int l = 0; l < c->n_layer; l++) { /* the cache is (seq, layer, position, C) */
        size_t src = ((size_t)from * c->n_layer + l) * per_layer, dst = ((size_t)to * c->n_layer + l) * per_layer;
        memcpy(s->k_cache + dst, s->k_cache + src, sizeof(float) * n);
        memcpy(s->v_cache + dst, s->v_cache + src, sizeof(float) * n);
    }
    s->len[to] = s->len[from];
    return FM_OK;
}

/* The blocks over rows 0..n-1 (s->tok, s->pos, s->seq set): each row's key and value go into
 * its sequence's cache at its position, and s->x holds the last block's output rows. */
static void rows_forward(fm_session *s, int n) {
    /* A forward of more than FM_K_FEW_ROWS rows runs OpenMP regions (the packed products, the
     * row kernels over many elements); the first few-row forward after one ends OpenMP's idle
     * threads, which would otherwise spin for tens of milliseconds on the cores the decoding
     * team needs. */
    if (n <= FM_K_FEW_ROWS && s->omp_threads_spinning) fm_omp_release_idle();
    s->omp_threads_spinning = n > FM_K_FEW_ROWS;
    const fm_model *m = s->model;
    const fm_config *c = &m->cfg;
    int C = c->n_embd, NH = c->n_head;
    for (int r = 0; r < n; r++) { /* x = wte[token] + wpe[position] */
        const float *e = m->w.wte + (size_t)s->tok[r] * C, *p = m->w.wpe + (size_t)s->pos[r] * C;
        float *o = s->x + (size_t)r * C;
        for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
    }
    int max_pos = 0;
    for (int r = 0; r < n; r++) max_pos = s->pos[r] > max_pos ? s->pos[r] : max_pos;
    fm_attention_rows att = {.keys = s->keys, .values = s->values, .pos = s->pos, .scores = s->scores,
                             .score_stride = max_pos + 1};
    for (int l = 0; l < c->n_layer; l++) {
        for (int r = 0; r < n; r++) {
            size_t at = ((size_t)s->seq[r] * c->n_layer + l) * s->max_len * C;
            s->keys[r] = s->k_cache + at;
            s->values[r] = s->v_cache + at;
        }
        (void)NH;
        fm_block_forward(m, l, s->x, &s->a, n, &att, s->q8, s->lora, 0);
    }
}

/* Final LayerNorm and the tied head for n rows of s->x starting at row r0: s->logits (n, V). */
static void head(fm_session *s, int r0, int n) {
    const fm_model *m = s->model;
    const fm_config *c = &m->cfg;
    fm_k_layernorm_forward(s->lnf, s->lnf_mean, s->lnf_rstd, s->x + (size_t)r0 * c->n_embd, m->w.lnf_w,
                           m->w.lnf_b, n, c->n_embd, c->layer_norm_epsilon);
    fm_model_head(m, s->logits, s->lnf, n, s->q8); /* int8 blocks when the model is quantized */
}

static fm_status check_tokens(const fm_session *s, const int *tokens, int n) {
    int V = s->model->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return fm_fail(FM_ERR_ARG, "token %d is outside the vocabulary [0, %d)", tokens[i], V);
    return FM_OK;
}

fm_status fm_session_feed(fm_session *s, int seq, const int *tokens, int n, const float **logits) {
    if (seq < 0 || seq >= s->max_seqs)
        return fm_fail(FM_ERR_ARG, "sequence %d: the session holds sequences 0..%d", seq, s->max_seqs - 1);
    if (n < 1) return fm_fail(FM_ERR_ARG, "session: no tokens to feed");
    if (n > s->max_len - s->len[seq])
        return fm_fail(FM_ERR_ARG, "session: %d + %d positions exceed its length %d", s->len[seq], n, s->max_len);
    fm_status st = check_tokens(s, tokens, n);
    if (st) return st;
    int last = 0, own = fm_k_gemm_fp32_forced();
    fm_k_gemm_force_fp32(1); /* float32 products whatever the process-wide precision */
    for (int i = 0; i < n; i += PREFILL_ROWS) {
        int rows = n - i < PREFILL_ROWS ? n - i : PREFILL_ROWS;
        for (int r = 0; r < rows; r++) {
            s->tok[r] = tokens[i + r];
            s->pos[r] = s->len[seq] + r;
            s->seq[r] = seq;
        }
        rows_forward(s, rows);
        s->len[seq] += rows;
        last = rows - 1;
    }
    head(s, last, 1);
    fm_k_gemm_force_fp32(own);
    *logits = s->logits;
    return FM_OK;
}

fm_status fm_session_feed_many(fm_session *s, int n, const int *seqs, const int *const *tokens, const int *lens,
                               const float **logits) {
    if (n < 1 || n > s->max_seqs)
        return fm_fail(FM_ERR_ARG, "session feed of %d sequences: between 1 and %d", n, s->max_seqs);
    for (int i = 0; i < n; i++) {
        if (seqs[i] < 0 || seqs[i] >= s->max_seqs)
            return fm_fail(FM_ERR_ARG, "sequence %d: the session holds sequences 0..%d", seqs[i], s->max_seqs - 1);
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return fm_fail(FM_ERR_ARG, "sequence %d appears twice in one feed", seqs[i]);
        if (lens[i] < 1) return fm_fail(FM_ERR_ARG, "session: no tokens to feed to sequence %d", seqs[i]);
        if (lens[i] > s->max_len - s->len[seqs[i]])
            return fm_fail(FM_ERR_ARG, "session: %d + %d positions exceed its length %d", s->len[seqs[i]], lens[i],
                           s->max_len);
        fm_status st = check_tokens(s, tokens[i], lens[i]);
        if (st) return st;
    }
    const fm_model *m = s->model;
    const fm_config *c = &m->cfg;
    size_t C = c->n_embd;
    int own = fm_k_gemm_fp32_forced();
    fm_k_gemm_force_fp32(1);
    /* every sequence's tokens one after another, cut into blocks of s->rows rows; a sequence's
     * last row is kept (last_x) for one head over all of them at the end */
    int seq_i = 0, tok_i = 0;
    while (seq_i < n) {
        int rows = 0;
        int at_seq = seq_i, at_tok = tok_i;
        while (rows < s->rows && at_seq < n) {
            s->tok[rows] = tokens[at_seq][at_tok];
            s->seq[rows] = seqs[at_seq];
            s->pos[rows] = s->len[seqs[at_seq]] + at_tok;
            rows++;
            if (++at_tok == lens[at_seq]) at_seq++, at_tok = 0;
        }
        rows_forward(s, rows);
        for (int r = 0; r < rows; r++) { /* rows that end their sequence */
            if (tok_i == lens[seq_i] - 1) memcpy(s->last_x + (size_t)seq_i * C, s->x + (size_t)r * C, sizeof(float) * C);
            if (++tok_i == lens[seq_i]) s->len[seqs[seq_i]] += lens[seq_i], seq_i++, tok_i = 0;
        }
    }
    fm_k_layernorm_forward(s->lnf, s->lnf_mean, s->lnf_rstd, s->last_x, m->w.lnf_w, m->w.lnf_b, n, (int)C,
                           c->layer_norm_epsilon);
    fm_model_head(m, s->logits, s->lnf, n, s->q8);
    fm_k_gemm_force_fp32(own);
    *logits = s->logits;
    return FM_OK;
}

fm_status fm_session_append(fm_session *s, const int *seqs, const int *tokens, int n, const float **logits) {
    if (n < 1 || n > s->rows)
        return fm_fail(FM_ERR_ARG, "session append of %d rows: between 1 and %d", n, s->rows);
    fm_status st = check_tokens(s, tokens, n);
    if (st) return st;
    for (int r = 0; r < n; r++) {
        if (seqs[r] < 0 || seqs[r] >= s->max_seqs)
            return fm_fail(FM_ERR_ARG, "sequence %d: the session holds sequences 0..%d", seqs[r], s->max_seqs - 1);
        int before = 0; /* earlier rows of the same sequence in this call */
        for (int j = 0; j < r; j++) before += seqs[j] == seqs[r];
        if (s->len[seqs[r]] + before >= s->max_len)
            return fm_fail(FM_ERR_ARG, "sequence %d is full (%d positions)", seqs[r], s->max_len);
        s->tok[r] = tokens[r];
        s->seq[r] = seqs[r];
        s->pos[r] = s->len[seqs[r]] + before;
    }
    int own = fm_k_gemm_fp32_forced();
    fm_k_gemm_force_fp32(1);
    rows_forward(s, n);
    for (int r = 0; r < n; r++) s->len[seqs[r]]++;
    head(s, 0, n);
    fm_k_gemm_force_fp32(own);
    *logits = s->logits;
    return FM_OK;
}

/* One row per sequence, the sequences distinct: fm_session_append's checks and pass. */
fm_status fm_session_step(fm_session *s, const int *seqs, const int *tokens, int n, const float **logits) {
    if (n < 1 || n > s->max_seqs)
        return fm_fail(FM_ERR_ARG, "session step of %d sequences: between 1 and %d", n, s->max_seqs);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return fm_fail(FM_ERR_ARG, "sequence %d appears twice in one step", seqs[i]);
    return fm_session_append(s, seqs, tokens, n, logits);
}

/* ------------------------------------------------------------ scoring forward */

static fm_status ensure_forward(fm_session *s, int B, int T) {
    if (s->fB == B && s->fT == T) return FM_OK;
    free_forward(s);
    const fm_config *c = &s->model->cfg;
    size_t N = (size_t)B * T, C = c->n_embd, H = fm_config_mlp_width(c), V = c->vocab_size;
    size_t rank = s->lora ? (size_t)s->lora->max_rank : 0;
    size_t block = layout_rows(NULL, &s->fa, N, C, H, (size_t)B * c->n_head * T, rank);
    size_t total = block + (N * C + 15) / 16 * 16 + 2 * ((N + 15) / 16 * 16) + N * V;
    s->farena = fm_alloc_big(sizeof(float) * total, 0);
    s->ftok = fm_malloc(sizeof(int) * N);
    if (!s->farena || !s->ftok) {
        free_forward(s);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a forward over %d x %d tokens (%zu MiB)", B, T,
                       total * sizeof(float) >> 20);
    }
    layout_rows(s->farena, &s->fa, N, C, H, (size_t)B * c->n_head * T, rank);
    s->fx = s->fa.resid3;
    float *p = s->farena + block;
    s->flnf = p, p += (N * C + 15) / 16 * 16;
    s->fmean = p, p += (N + 15) / 16 * 16;
    s->frstd = p, p += (N + 15) / 16 * 16;
    s->flogits = p;
    s->fB = B;
    s->fT = T;
    return FM_OK;
}

/* The cache-less forwards' shared start: checks B, T and the tokens (B*T) against the model and
 * sizes the forward arena for them. */
static fm_status begin_forward(fm_session *s, const int *tokens, int B, int T) {
    const fm_config *c = &s->model->cfg;
    if (B < 1 || T < 1) return fm_fail(FM_ERR_ARG, "batch %d x %d: both must be at least 1", B, T);
    if (T > c->n_positions)
        return fm_fail(FM_ERR_ARG, "sequence length %d exceeds the model's context (n_positions = %d)", T,
                       c->n_positions);
    if ((size_t)B * T > (size_t)INT32_MAX / (size_t)c->vocab_size)
        return fm_fail(FM_ERR_ARG, "batch %d x %d is too large", B, T);
    fm_status st = check_tokens(s, tokens, B * T);
    return st ? st : ensure_forward(s, B, T);
}

fm_status fm_session_forward(fm_session *s, const int *tokens, int B, int T, const float **logits) {
    fm_status st = begin_forward(s, tokens, B, T);
    if (st) return st;
    const fm_model *m = s->model;
    const fm_config *c = &m->cfg;
    int N = B * T, C = c->n_embd;
    int own = fm_k_gemm_fp32_forced();
    fm_k_gemm_force_fp32(1);
    fm_k_encoder_forward(s->fx, tokens, m->w.wte, m->w.wpe, B, T, C);
    fm_attention_rows full = {.B = B, .T = T};
    for (int l = 0; l < c->n_layer; l++) fm_block_forward(m, l, s->fx, &s->fa, N, &full, NULL, s->lora, 0);
    fm_k_layernorm_forward(s->flnf, s->fmean, s->frstd, s->fx, m->w.lnf_w, m->w.lnf_b, N, C, c->layer_norm_epsilon);
    fm_k_gemm(0, 1, N, c->vocab_size, C, s->flnf, C, m->w.wte, C, s->flogits, c->vocab_size, 0);
    fm_k_gemm_force_fp32(own);
    *logits = s->flogits;
    return FM_OK;
}

/* ------------------------------------------------------------ pooled hidden states (the probe) */

/* mean over the T rows of one sequence's states x (T, C) into out (C), summed in double in
 * position order */
static void mean_rows(const float *x, int T, int C, float *out) {
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int t = 0; t < T; t++) sum += x[(size_t)t * C + c];
        out[c] = (float)(sum / T);
    }
}

fm_status fm_session_pooled_states_normed(fm_session *s, const int *tokens, int B, int T, float *pooled,
                                          float *normed) {
    fm_status st = begin_forward(s, tokens, B, T);
    if (st) return st;
    const fm_model *m = s->model;
    const fm_config *c = &m->cfg;
    int N = B * T, C = c->n_embd, L = c->n_layer;
    float eps = c->layer_norm_epsilon;
    /* normed: LayerNorm with gain 1 and bias 0 (unit: C ones, then C zeros) into flnf, then the mean */
    float *unit = normed ? fm_calloc(2 * (size_t)C, sizeof(float)) : NULL;
    if (normed && !unit) return fm_fail(FM_ERR_NOMEM, "out of memory for the normalised states of width %d", C);
    for (int i = 0; unit && i < C; i++) unit[i] = 1.0f;
    int own = fm_k_gemm_fp32_forced();
    fm_k_gemm_force_fp32(1);
    fm_k_encoder_forward(s->fx, tokens, m->w.wte, m->w.wpe, B, T, C);
    fm_attention_rows full = {.B = B, .T = T};
    for (int l = 0; l <= L; l++) {
        if (l > 0) fm_block_forward(m, l - 1, s->fx, &s->fa, N, &full, NULL, s->lora, 0);
        for (int kind = 0; kind < 2; kind++) { /* 0: normed, 1: pooled */
            float *out = kind ? pooled : normed;
            if (!out) continue;
            const float *x = s->fx;
            if (!kind || l == L) {
                fm_k_layernorm_forward(s->flnf, s->fmean, s->frstd, s->fx, kind ? m->w.lnf_w : unit,
                                       kind ? m->w.lnf_b : unit + C, N, C, eps);
                x = s->flnf;
            }
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) mean_rows(x + (size_t)b * T * C, T, C, out + ((size_t)b * (L + 1) + l) * C);
        }
    }
    fm_k_gemm_force_fp32(own);
    fm_free(unit);
    return FM_OK;
}

fm_status fm_session_pooled_states(fm_session *s, const int *tokens, int B, int T, float *pooled) {
    return fm_session_pooled_states_normed(s, tokens, B, T, pooled, NULL);
}
