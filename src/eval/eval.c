/*
 * eval.c — measuring a model on text: per-token log-probabilities with sliding windows, and
 * the token-bigram baseline that the held-out bits per byte are compared against.
 *
 * What it is for: `fm score`, `fm eval`, the demo and every evaluation built on log-probs. The
 * model is only read: scoring runs an inference session's cache-free forward (session.c), so it
 * needs no training buffers and may run beside other users of the model.
 * Not for: training objectives (loss.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "eval/eval.h"

/* ------------------------------------------------------------ model log-probabilities */

double fm_log_prob(const float *z, int V, int target) {
    float maxv = z[0];
    for (int v = 1; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)z[v] - maxv);
    return (double)z[target] - maxv - log(sum);
}

#define SCORE_LOGITS_BUDGET (64u << 20) /* floats of logits per batched forward */

/* Windows of len = min(n - 1, n_positions) tokens: the logits of a window's row j predict the
 * token after it, so a window [start, start + len) scores targets start + 1 .. start + len, each
 * seeing every token of the window before it. The first window scores targets 1 .. len; each
 * next one ends stride = n_positions / 2 (at least 1) targets later, scoring only those, so each
 * target sees at least len + 1 - stride tokens: half a context and more, and the one token a
 * context of 1 holds. */
fm_status fm_score_tokens(const fm_model *model, const int *tokens, size_t n, float *logprobs, double *nll) {
    const fm_config *c = fm_model_config(model);
    int Tm = c->n_positions, V = c->vocab_size, stride = Tm / 2 > 0 ? Tm / 2 : 1;
    double total = 0.0;
    if (logprobs && n > 0) logprobs[0] = NAN;
    if (n < 2) {
        if (nll) *nll = 0.0;
        return FM_OK;
    }
    int len = n - 1 < (size_t)Tm ? (int)(n - 1) : Tm;
    int max_batch = (int)(SCORE_LOGITS_BUDGET / ((size_t)len * V));
    max_batch = max_batch < 1 ? 1 : max_batch > 8 ? 8 : max_batch;
    /* a session without caches worth the name: only its scoring forward is used */
    fm_session *s = NULL;
    fm_status st = fm_session_init(&s, model, 1, 1);
    if (st) return st;
    int *batch = fm_malloc(sizeof(int) * (size_t)max_batch * len);
    size_t *starts = fm_malloc(sizeof(size_t) * max_batch), *froms = fm_malloc(sizeof(size_t) * max_batch);
    if (!batch || !starts || !froms) {
        fm_free(batch), fm_free(starts), fm_free(froms);
        fm_session_free(s);
        return fm_fail(FM_ERR_NOMEM, "out of memory for scoring");
    }
    size_t end = 1; /* targets < end are scored */
    while (end < n && st == FM_OK) {
        int B = 0;
        while (B < max_batch && end < n) {
            /* the window's last target, new_end - 1, is predicted by its last row */
            size_t new_end = end == 1 ? (size_t)len + 1 : (end + stride < n ? end + stride : n);
            starts[B] = new_end - 1 - len;
            froms[B] = end;
            memcpy(batch + (size_t)B * len, tokens + starts[B], sizeof(int) * len);
            end = new_end;
            B++;
        }
        const float *logits;
        st = fm_session_forward(s, batch, B, len, &logits);
        if (st) break;
        for (int b = 0; b < B; b++)
            for (size_t p = froms[b]; p <= starts[b] + len; p++) {
                const float *z = logits + ((size_t)b * len + (p - 1 - starts[b])) * V;
                double lp = fm_log_prob(z, V, tokens[p]);
                if (logprobs) logprobs[p] = (float)lp;
                total -= lp;
            }
    }
    fm_free(batch), fm_free(starts), fm_free(froms);
    fm_session_free(s);
    if (st == FM_OK && nll) *nll = total;
    return st;
}

/* ------------------------------------------------------------ bigram baseline */

typedef struct {
    uint64_t *pairs; /* sorted codes prev * V + next, one per pair occurrence */
    size_t n_pairs;
    uint32_t *unigram; /* (V) token counts */
    uint32_t *context; /* (V) times each token is followed by another */
    size_t n_tokens;
    int V;
} bigram_counts;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static fm_status count(bigram_counts *bc, const int *t, size_t n, int V) {
    bc->V = V;
    bc->n_tokens = n;
    bc->n_pairs = n > 0 ? n - 1 : 0;
    bc->pairs = fm_malloc(sizeof(uint64_t) * (bc->n_pairs + 1));
    bc->unigram = fm_calloc(V, sizeof(uint32_t));
    bc->context = fm_calloc(V, sizeof(uint32_t));
    if (!bc->pairs || !bc->unigram || !bc->context) return fm_fail(FM_ERR_NOMEM, "out of memory for bigram counts");
    for (size_t i = 0; i < n; i++) bc->unigram[t[i]]++;
    for (size_t i = 1; i < n; i++) {
        bc->pairs[i - 1] = (uint64_t)t[i - 1] * V + t[i];
        bc->context[t[i - 1]]++;
    }
    qsort(bc->pairs, bc->n_pairs, sizeof(uint64_t), cmp_u64);
    return FM_OK;
}

static void release(bigram_counts *bc) {
    fm_free(bc->pairs), fm_free(bc->unigram), fm_free(bc->context);
    memset(bc, 0, sizeof *bc);
}

/* Occurrences of code in the sorted pairs. */
static size_t pair_count(const bigram_counts *bc, uint64_t code) {
    size_t lo = 0, hi = bc->n_pairs;
    while (lo < hi) { /* first >= code */
        size_t mid = lo + (hi - lo) / 2;
        if (bc->pairs[mid] < code) lo = mid + 1;
        else hi = mid;
    }
    size_t first = lo;
    hi = bc->n_pairs;
    while (lo < hi) { /* first > code */
        size_t mid = lo + (hi - lo) / 2;
        if (bc->pairs[mid] <= code) lo = mid + 1;
        else hi = mid;
    }
    return lo - first;
}

static double unigram_p(const bigram_counts *bc, int w) {
    return (bc->unigram[w] + 1.0) / ((double)bc->n_tokens + bc->V);
}

static double bigram_nll(const bigram_counts *bc, const int *e, size_t n, double beta) {
    if (n == 0) return 0.0;
    double total = -log(unigram_p(bc, e[0]));
    for (size_t i = 1; i < n; i++) {
        int v = e[i - 1], w = e[i];
        double c_vw = (double)pair_count(bc, (uint64_t)v * bc->V + w);
        total -= log((c_vw + beta * unigram_p(bc, w)) / (bc->context[v] + beta));
    }
    return total;
}

fm_status fm_bigram_nll(const int *train, size_t n_train, const int *eval, size_t n_eval, int V,
                        double *nll, double *beta_out) {
    if (n_train < 20) return fm_fail(FM_ERR_ARG, "bigram baseline: %zu training tokens are too few", n_train);
    for (size_t i = 0; i < n_train; i++)
        if (train[i] < 0 || train[i] >= V) return fm_fail(FM_ERR_ARG, "bigram: training token %d outside [0, %d)", train[i], V);
    for (size_t i = 0; i < n_eval; i++)
        if (eval[i] < 0 || eval[i] >= V) return fm_fail(FM_ERR_ARG, "bigram: token %d outside [0, %d)", eval[i], V);
    bigram_counts bc = {0};
    size_t fit = n_train - n_train / 10;
    fm_status st = count(&bc, train, fit, V);
    double best_beta = 1.0, best = INFINITY;
    for (int k = 0; st == FM_OK && k <= 24; k++) { /* beta from 0.01 to 10^4, 4 steps a decade */
        double beta = pow(10.0, -2.0 + k * 0.25);
        double x = bigram_nll(&bc, train + fit, n_train - fit, beta);
        if (x < best) best = x, best_beta = beta;
    }
    release(&bc);
    if (st == FM_OK) st = count(&bc, train, n_train, V);
    if (st == FM_OK) {
        *nll = bigram_nll(&bc, eval, n_eval, best_beta);
        if (beta_out) *beta_out = best_beta;
    }
    release(&bc);
    return st;
}
