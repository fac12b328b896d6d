/*
 * generate.c — continuing prompts with a session: sampling, stop strings, end of text, the
 * streaming callback, context sliding, log-probs, and several prompts decoded together.
 *
 * What it is for: everything that generates text (fm generate, the samples during pre-training,
 * later the server and rollouts). Up to fm_session_max_seqs(s) prompts are live at once, each in
 * a sequence slot of the session with its own sampler state (rng, recent tokens, scratch); one
 * fm_session_step advances all of them by a token, and a waiting prompt takes a slot as soon as
 * one frees (continuous batching). A prompt's work is the same whatever runs beside it — its
 * prompt fed alone, its tokens stepped in rows that the session computes each on its own, its
 * own rng — so its result is bit for bit what it gets alone.
 *
 * Each generated token, in this order: sampled from the logits (fm_sample; recent = the last
 * repeat_window tokens of prompt + generated), its log-prob taken from the raw logits; then
 * eos ends the sequence (the id and its log-prob are kept, no text); else its bytes join the
 * text, and a stop string found in the text not yet streamed ends it (the text ends before the
 * earliest stop; every token holding a byte of the stop is dropped); else the text released
 * (all but the longest stop's length - 1 bytes, which might begin a stop string) goes to the
 * callback with the ids whose bytes it completes; then max_tokens ends it. A sequence that has
 * filled the session's length is reset and fed its last max_len / 2 tokens (context sliding);
 * a prompt longer than the session keeps its last max_len - 1 tokens (the recent tokens of the
 * repetition penalty still see all of it).
 *
 * Buffers: the slots' state is allocated once per call; results grow by doubling (fm_realloc).
 * On any failure every result is released and zeroed. Not for: the arithmetic (session.c) or
 * the sampling transformations (sample.c).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"

void fm_generate_config_default(fm_generate_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    fm_sampler_config_default(&cfg->sampler);
    cfg->max_tokens = 200;
    cfg->repeat_window = 64;
    cfg->seed = 0;
    cfg->eos = -1;
    cfg->tok = NULL;
    cfg->stops = NULL;
    cfg->n_stops = 0;
}

const char *fm_finish_reason_name(fm_finish_reason reason) {
    switch (reason) {
    case FM_FINISH_LENGTH: return "length";
    case FM_FINISH_STOP: return "stop";
    case FM_FINISH_EOS: return "eos";
    case FM_FINISH_CALLBACK: return "callback";
    }
    return "unknown";
}

void fm_generate_result_free(fm_generate_result *r) {
    if (!r) return;
    fm_free(r->tokens);
    fm_free(r->logprobs);
    fm_free(r->text);
    memset(r, 0, sizeof *r);
}

/* One live sequence: which prompt it continues and its sampler's state. */
typedef struct {
    int index;         /* the prompt, or -1 for a free slot */
    fm_rng rng;
    int *hist;         /* (hist_cap) the last tokens of prompt + generated */
    int hist_n;
    float *scratch;    /* (2 V) fm_sample's */
    int next;          /* the token the next step feeds */
    size_t tok_cap;    /* capacity of the result's tokens and logprobs */
    size_t text_cap;   /* capacity of the result's text, NUL included */
    size_t emitted;    /* text bytes given to the callback */
    int reported;      /* tokens given to the callback */
    size_t reported_end; /* the text offset where the reported tokens' bytes end */
} slot;

typedef struct {
    fm_session *s;
    const fm_generate_config *cfg;
    fm_generate_callback cb;
    void *user;
    fm_generate_result *results;
    const int *const *prompts;
    const int *n_prompts;
    int V, max_len, keep;    /* keep: tokens re-fed when a sequence is full */
    int hist_keep, hist_cap; /* history kept after compaction; its capacity */
    size_t hold;             /* text bytes held back: the longest stop's length - 1 */
} gen;

/* log softmax(z)[id], accumulated in double. */
static float log_prob(const float *z, int V, int id) {
    float maxv = z[0];
    for (int v = 1; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)z[v] - maxv);
    return (float)((double)z[id] - maxv - log(sum));
}

static void hist_push(const gen *g, slot *sl, int token) {
    if (sl->hist_n == g->hist_cap) { /* keep the newest hist_keep */
        memmove(sl->hist, sl->hist + g->hist_cap - g->hist_keep, sizeof(int) * g->hist_keep);
        sl->hist_n = g->hist_keep;
    }
    sl->hist[sl->hist_n++] = token;
}

static fm_status push_token(slot *sl, fm_generate_result *r, int token, float lp) {
    if ((size_t)r->n_tokens == sl->tok_cap) {
        size_t cap = sl->tok_cap ? 2 * sl->tok_cap : 64;
        int *t = fm_realloc(r->tokens, sizeof(int) * cap);
        if (t) r->tokens = t;
        float *l = t ? fm_realloc(r->logprobs, sizeof(float) * cap) : NULL;
        if (l) r->logprobs = l;
        if (!t || !l) return fm_fail(FM_ERR_NOMEM, "out of memory for %zu generated tokens", cap);
        sl->tok_cap = cap;
    }
    r->tokens[r->n_tokens] = token;
    r->logprobs[r->n_tokens] = lp;
    r->n_tokens++;
    return FM_OK;
}

static fm_status push_text(slot *sl, fm_generate_result *r, const char *bytes, size_t len) {
    if (r->text_len + len + 1 > sl->text_cap) {
        size_t cap = sl->text_cap ? sl->text_cap : 256;
        while (r->text_len + len + 1 > cap) cap *= 2;
        char *t = fm_realloc(r->text, cap);
        if (!t) return fm_fail(FM_ERR_NOMEM, "out of memory for %zu bytes of generated text", cap);
        r->text = t;
        sl->text_cap = cap;
    }
    if (len) memcpy(r->text + r->text_len, bytes, len);
    r->text_len += len;
    r->text[r->text_len] = '\0';
    return FM_OK;
}

static size_t token_len(const gen *g, int id) {
    size_t len = 0;
    if (!fm_tokenizer_token_bytes(g->cfg->tok, id, &len)) return 0;
    return len;
}

/* Gives the callback the text up to byte `upto` and the unreported tokens whose bytes end by
 * then; returns the callback's answer (0 without a callback or when there is nothing new). */
static int release(const gen *g, slot *sl, size_t upto) {
    fm_generate_result *r = &g->results[sl->index];
    int k = sl->reported;
    size_t end = sl->reported_end;
    while (k < r->n_tokens) {
        size_t e = end + token_len(g, r->tokens[k]);
        if (e > upto) break;
        end = e;
        k++;
    }
    int first = sl->reported;
    size_t from = sl->emitted;
    sl->reported = k;
    sl->reported_end = end;
    if (upto > sl->emitted) sl->emitted = upto;
    if (!g->cb || (k == first && upto <= from)) return 0;
    return g->cb(g->user, sl->index, r->tokens + first, k - first, r->text + from, upto > from ? upto - from : 0);
}

/* The earliest stop string in the text from `from` on: its offset, or SIZE_MAX. */
static size_t find_stop(const gen *g, const fm_generate_result *r, size_t from) {
    size_t best = SIZE_MAX;
    for (int i = 0; i < g->cfg->n_stops; i++) {
        const char *stop = g->cfg->stops[i];
        size_t n = strlen(stop);
        if (n == 0 || r->text_len < from + n) continue;
        for (size_t p = from; p + n <= r->text_len && p < best; p++)
            if (r->text[p] == stop[0] && memcmp(r->text + p, stop, n) == 0) {
                best = p;
                break;
            }
    }
    return best;
}

/* Ends a sequence: its slot is free again. */
static void finish(slot *sl, fm_generate_result *r, fm_finish_reason why) {
    r->finish = why;
    sl->index = -1;
}

/* Chooses the next token of slot sl from its logits and takes it through eos, stop strings,
 * the callback and max_tokens. *more: the sequence goes on (sl->next to be fed). */
static fm_status advance(const gen *g, slot *sl, const float *logits, int *more) {
    const fm_generate_config *cfg = g->cfg;
    fm_generate_result *r = &g->results[sl->index];
    *more = 0;
    int window = sl->hist_n < cfg->repeat_window ? sl->hist_n : cfg->repeat_window;
    int next = fm_sample(&cfg->sampler, logits, g->V, sl->hist + sl->hist_n - window, window, &sl->rng, sl->scratch);
    float lp = log_prob(logits, g->V, next);
    hist_push(g, sl, next);
    if (next == cfg->eos) {
        if (cfg->tok) release(g, sl, r->text_len); /* what was held back */
        fm_status st = push_token(sl, r, next, lp);
        if (st) return st;
        finish(sl, r, FM_FINISH_EOS);
        return FM_OK;
    }
    fm_status st = push_token(sl, r, next, lp);
    if (st) return st;
    int stop_asked = 0;
    if (cfg->tok) {
        size_t len = 0;
        const char *bytes = fm_tokenizer_token_bytes(cfg->tok, next, &len);
        if ((st = push_text(sl, r, bytes ? bytes : "", bytes ? len : 0))) return st;
        size_t at = cfg->n_stops ? find_stop(g, r, sl->emitted) : SIZE_MAX;
        if (at != SIZE_MAX) {
            release(g, sl, at);
            r->n_tokens = sl->reported; /* the tokens holding the stop string go */
            r->text_len = at;
            r->text[at] = '\0';
            finish(sl, r, FM_FINISH_STOP);
            return FM_OK;
        }
        stop_asked = release(g, sl, r->text_len > g->hold ? r->text_len - g->hold : 0);
    } else if (g->cb) {
        stop_asked = g->cb(g->user, sl->index, r->tokens + sl->reported, r->n_tokens - sl->reported, NULL, 0);
        sl->reported = r->n_tokens;
    }
    if (stop_asked) {
        finish(sl, r, FM_FINISH_CALLBACK);
        return FM_OK;
    }
    if (r->n_tokens >= cfg->max_tokens) {
        if (cfg->tok) release(g, sl, r->text_len);
        finish(sl, r, FM_FINISH_LENGTH);
        return FM_OK;
    }
    sl->next = next;
    *more = 1;
    return FM_OK;
}

/* Slot k's sequence is full: it keeps its last `keep` tokens (fed again) and goes on, as many
 * times as needed; *more as advance's. */
static fm_status slide(const gen *g, slot *sl, int k, int *more) {
    while (*more && fm_session_length(g->s, k) >= g->max_len) {
        const float *logits;
        fm_session_reset(g->s, k);
        fm_status st = fm_session_feed(g->s, k, sl->hist + sl->hist_n - g->keep, g->keep, &logits);
        if (!st) st = advance(g, sl, logits, more);
        if (st) return st;
    }
    return FM_OK;
}

/* Prompt i takes slot k: fed (its last max_len - 1 tokens at most), first token chosen. */
static fm_status join(const gen *g, slot *sl, int k, int i, int *more) {
    const int *p = g->prompts[i];
    int n = g->n_prompts[i];
    sl->index = i;
    fm_rng_seed(&sl->rng, g->cfg->seed);
    sl->hist_n = 0;
    int h = n < g->hist_keep ? n : g->hist_keep;
    memcpy(sl->hist, p + n - h, sizeof(int) * h);
    sl->hist_n = h;
    sl->tok_cap = sl->text_cap = 0;
    sl->emitted = sl->reported_end = 0;
    sl->reported = 0;
    *more = 0;
    if (g->cfg->max_tokens == 0) {
        finish(sl, &g->results[i], FM_FINISH_LENGTH);
        return FM_OK;
    }
    int fit = g->max_len > 1 ? g->max_len - 1 : 1, first = n > fit ? n - fit : 0;
    const float *logits;
    fm_session_reset(g->s, k);
    fm_status st = fm_session_feed(g->s, k, p + first, n - first, &logits);
    if (!st) st = advance(g, sl, logits, more);
    if (!st) st = slide(g, sl, k, more);
    return st;
}

static fm_status check_args(const fm_session *s, const fm_generate_config *cfg, const int *const *prompts,
                            const int *n_prompts, int n, const fm_generate_result *results) {
    if (!s || !cfg) return fm_fail(FM_ERR_ARG, "generate: no session or no configuration");
    if (n < 0) return fm_fail(FM_ERR_ARG, "generate: %d prompts", n);
    if (n > 0 && (!prompts || !n_prompts || !results))
        return fm_fail(FM_ERR_ARG, "generate: prompts, their lengths and the results are required");
    fm_status st = fm_sampler_validate(&cfg->sampler);
    if (st) return st;
    int V = fm_model_config(fm_session_model(s))->vocab_size;
    if (cfg->max_tokens < 0) return fm_fail(FM_ERR_ARG, "generate: max_tokens %d is negative", cfg->max_tokens);
    if (cfg->repeat_window < 0)
        return fm_fail(FM_ERR_ARG, "generate: repeat_window %d is negative", cfg->repeat_window);
    if (cfg->eos < -1 || cfg->eos >= V)
        return fm_fail(FM_ERR_ARG, "generate: eos %d is outside the vocabulary [0, %d) (or -1)", cfg->eos, V);
    if (cfg->n_stops < 0 || (cfg->n_stops > 0 && !cfg->stops))
        return fm_fail(FM_ERR_ARG, "generate: %d stop strings but none given", cfg->n_stops);
    if (cfg->n_stops > 0 && !cfg->tok) return fm_fail(FM_ERR_ARG, "generate: stop strings need a tokenizer");
    for (int i = 0; i < cfg->n_stops; i++)
        if (!cfg->stops[i]) return fm_fail(FM_ERR_ARG, "generate: stop string %d is NULL", i);
    for (int i = 0; i < n; i++) {
        if (n_prompts[i] < 1 || !prompts[i])
            return fm_fail(FM_ERR_ARG, "generate: prompt %d has no tokens (%d)", i, n_prompts[i]);
        for (int j = 0; j < n_prompts[i]; j++)
            if (prompts[i][j] < 0 || prompts[i][j] >= V)
                return fm_fail(FM_ERR_ARG, "generate: prompt %d, token %d: %d is outside the vocabulary [0, %d)", i,
                               j, prompts[i][j], V);
    }
    return FM_OK;
}

fm_status fm_generate(fm_session *s, const fm_generate_config *cfg, const int *const *prompts,
                      const int *n_prompts, int n, fm_generate_callback cb, void *user,
                      fm_generate_result *results) {
    fm_status st = check_args(s, cfg, prompts, n_prompts, n, results);
    if (st) return st;
    for (int i = 0; i < n; i++) memset(&results[i], 0, sizeof results[i]);
    if (n == 0) return FM_OK;
    gen g = {.s = s, .cfg = cfg, .cb = cb, .user = user, .results = results, .prompts = prompts,
             .n_prompts = n_prompts};
    g.V = fm_model_config(fm_session_model(s))->vocab_size;
    g.max_len = fm_session_max_len(s);
    g.keep = g.max_len / 2 > 0 ? g.max_len / 2 : 1;
    g.hist_keep = g.keep > cfg->repeat_window ? g.keep : cfg->repeat_window;
    g.hist_cap = 2 * g.hist_keep;
    for (int i = 0; i < cfg->n_stops; i++)
        if (strlen(cfg->stops[i]) > g.hold + 1) g.hold = strlen(cfg->stops[i]) - 1;

    /* every buffer of the call, allocated once */
    int n_slots = fm_session_max_seqs(s) < n ? fm_session_max_seqs(s) : n;
    slot *slots = fm_calloc(n_slots, sizeof *slots);
    int *seqs = fm_malloc(sizeof(int) * n_slots), *toks = fm_malloc(sizeof(int) * n_slots);
    int *hist = fm_malloc(sizeof(int) * (size_t)n_slots * g.hist_cap);
    float *scratch = fm_malloc(sizeof(float) * 2 * (size_t)g.V * n_slots);
    if (!slots || !seqs || !toks || !hist || !scratch) {
        st = fm_fail(FM_ERR_NOMEM, "out of memory for generating %d sequences at once", n_slots);
        goto done;
    }
    for (int k = 0; k < n_slots; k++) {
        slots[k].index = -1;
        slots[k].hist = hist + (size_t)k * g.hist_cap;
        slots[k].scratch = scratch + (size_t)k * 2 * g.V;
    }

    int next_prompt = 0, live = 0;
    for (;;) {
        /* waiting prompts take the free slots (a prompt that ends at once frees its slot again) */
        for (int k = 0; k < n_slots && next_prompt < n; k++) {
            while (slots[k].index < 0 && next_prompt < n) {
                int more;
                if ((st = join(&g, &slots[k], k, next_prompt++, &more))) goto done;
            }
        }
        live = 0;
        for (int k = 0; k < n_slots; k++)
            if (slots[k].index >= 0) {
                seqs[live] = k;
                toks[live] = slots[k].next;
                live++;
            }
        if (live == 0) break;
        const float *logits;
        if ((st = fm_session_step(s, seqs, toks, live, &logits))) goto done;
        /* sample every row before any feed overwrites the step's logits */
        int full = 0;
        for (int r = 0; r < live; r++) {
            int k = seqs[r], more;
            if ((st = advance(&g, &slots[k], logits + (size_t)r * g.V, &more))) goto done;
            if (more && fm_session_length(s, k) >= g.max_len) full = 1;
        }
        for (int k = 0; full && k < n_slots; k++) {
            int more = slots[k].index >= 0;
            if (more && (st = slide(&g, &slots[k], k, &more))) goto done;
        }
    }
done:
    if (st)
        for (int i = 0; i < n; i++) fm_generate_result_free(&results[i]);
    fm_free(slots);
    fm_free(seqs);
    fm_free(toks);
    fm_free(hist);
    fm_free(scratch);
    return st;
}
