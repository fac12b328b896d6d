/*
 * sample.c — choosing the next token from logits: repetition penalty, temperature, top-k,
 * top-p, min-p, in that order (documented in fm.h), then one draw from the renormalised rest.
 *
 * What it is for: every command that generates (fm generate, the server). Deterministic for a
 * given rng state. Not for: scoring or training.
 */
#include <math.h>
#include <stdlib.h> /* qsort */
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"

void fm_sampler_config_default(fm_sampler_config *c) {
    c->temperature = 1.0f;
    c->top_k = 0;
    c->top_p = 1.0f;
    c->min_p = 0.0f;
    c->repeat_penalty = 1.0f;
}

fm_status fm_sampler_validate(const fm_sampler_config *c) {
    if (!(c->temperature >= 0.0f) || !isfinite(c->temperature))
        return fm_fail(FM_ERR_ARG, "temperature %g: must be >= 0 (0 = greedy)", c->temperature);
    if (c->top_k < 0) return fm_fail(FM_ERR_ARG, "top-k %d: must be >= 0 (0 = off)", c->top_k);
    if (!(c->top_p > 0.0f && c->top_p <= 1.0f)) return fm_fail(FM_ERR_ARG, "top-p %g: must be in (0, 1]", c->top_p);
    if (!(c->min_p >= 0.0f && c->min_p <= 1.0f)) return fm_fail(FM_ERR_ARG, "min-p %g: must be in [0, 1]", c->min_p);
    if (!(c->repeat_penalty > 0.0f) || !isfinite(c->repeat_penalty))
        return fm_fail(FM_ERR_ARG, "repetition penalty %g: must be > 0 (1 = off)", c->repeat_penalty);
    return FM_OK;
}

static int descending(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Zeroes the probabilities below threshold and returns the sum of those kept. */
static double keep_at_least(float *probs, int V, float threshold) {
    double sum = 0.0;
    for (int v = 0; v < V; v++) {
        if (probs[v] < threshold) probs[v] = 0.0f;
        sum += probs[v];
    }
    return sum;
}

int fm_sample(const fm_sampler_config *c, const float *logits, int V, const int *recent, int n_recent,
              fm_rng *rng, float *scratch) {
    float *own = NULL;
    if (!scratch) scratch = own = fm_malloc(sizeof(float) * 2 * (size_t)V);
    if (!scratch) return 0;
    float *p = scratch, *sorted = scratch + V;
    memcpy(p, logits, sizeof(float) * V);

    /* 1. repetition penalty, once per distinct id (sorted[] marks ids already penalised) */
    if (c->repeat_penalty != 1.0f && n_recent > 0) {
        memset(sorted, 0, sizeof(float) * V);
        for (int i = 0; i < n_recent; i++) {
            int id = recent[i];
            if (id < 0 || id >= V || sorted[id] != 0.0f) continue;
            sorted[id] = 1.0f;
            p[id] = p[id] > 0.0f ? p[id] / c->repeat_penalty : p[id] * c->repeat_penalty;
        }
    }
    /* 2. temperature; 0 is greedy (lowest id among equal maxima) */
    int best = 0;
    for (int v = 1; v < V; v++)
        if (p[v] > p[best]) best = v;
    if (c->temperature == 0.0f) {
        fm_free(own);
        return best;
    }
    float maxv = p[best];
    double sum = 0.0;
    for (int v = 0; v < V; v++) {
        p[v] = expf((p[v] - maxv) / c->temperature);
        sum += p[v];
    }
    /* 3. top-k: keep values >= the k-th largest */
    if (c->top_k > 0 && c->top_k < V) {
        memcpy(sorted, p, sizeof(float) * V);
        qsort(sorted, V, sizeof(float), descending);
        sum = keep_at_least(p, V, sorted[c->top_k - 1]);
    }
    /* 4. top-p: the smallest head of the sorted distribution reaching top_p of the kept mass */
    if (c->top_p < 1.0f) {
        memcpy(sorted, p, sizeof(float) * V);
        qsort(sorted, V, sizeof(float), descending);
        double target = c->top_p * sum, acc = 0.0;
        int last = 0;
        while (last < V - 1 && acc + sorted[last] < target) acc += sorted[last++];
        sum = keep_at_least(p, V, sorted[last]);
    }
    /* 5. min-p: relative to the most likely token (whose unnormalised weight is 1) */
    if (c->min_p > 0.0f) sum = keep_at_least(p, V, c->min_p);
    /* draw */
    double r = (double)fm_rng_uniform(rng) * sum, acc = 0.0;
    int chosen = best;
    for (int v = 0; v < V; v++) {
        if (p[v] == 0.0f) continue;
        acc += p[v];
        if (r < acc) {
            chosen = v;
            break;
        }
    }
    fm_free(own);
    return chosen;
}
