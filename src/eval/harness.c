/*
 * harness.c — running an evaluation task (task.c) on a model the way EleutherAI's
 * lm-evaluation-harness defines it: prompts with k few-shot examples, multiple choice by the
 * log-likelihood of each continuation, greedy generation until a stop string, and rolling-window
 * perplexity; metrics with lm-eval's standard errors.
 *
 * What it is for: fm eval --tasks, and any caller measuring zero- and few-shot ability.
 * How: one inference session serves many requests at once. A question's choices share its
 * context: the context is fed once, its cached keys and values copied to one sequence per
 * choice (fm_session_copy), and the continuations of every question in a wave decode together
 * in batched steps. A session gives each sequence exactly what it gives alone, so results do not
 * depend on the batch or the thread count.
 * Not for: reading task files (task.c), or held-out bits per byte of shards (eval.c).
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "eval/eval.h"
#include "eval/task.h"
#include "model/model.h"

#define EOT "<|endoftext|>"

/* ------------------------------------------------------------ prompts */

/* The test item's few-shot examples: the pool (t->shots, without the item itself) shuffled by
 * an rng seeded from (seed, item), the first k taken. The first k for k are the first k for any
 * larger k, and the draw depends on nothing but the task, the item and the seed. */
static fm_status pick_shots(const fm_task *t, int item, int k, uint64_t seed, int *out) {
    int pool = 0;
    for (int i = 0; i < t->n_shots; i++) pool += t->shots[i] != item;
    if (k > pool)
        return fm_fail(FM_ERR_ARG, "task %s: %d shots asked, its few-shot split holds %d examples", t->name, k,
                       pool);
    int *order = fm_malloc(sizeof(int) * (pool ? pool : 1));
    if (!order) return fm_fail(FM_ERR_NOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < t->n_shots; i++)
        if (t->shots[i] != item) order[n++] = t->shots[i];
    fm_rng rng;
    fm_rng_seed(&rng, seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(item + 1)));
    for (int i = 0; i < k; i++) { /* a partial Fisher-Yates shuffle: the first k of the whole */
        int j = i + (int)(fm_rng_u64(&rng) % (uint64_t)(n - i));
        int tmp = order[i];
        order[i] = order[j], order[j] = tmp;
    }
    memcpy(out, order, sizeof(int) * k);
    fm_free(order);
    return FM_OK;
}

/* The target a few-shot example shows: the gold choice, or the first answer. */
static const char *example_target(const fm_task *t, const fm_task_item *it) {
    return t->type == FM_TASK_MULTIPLE_CHOICE ? it->choices[it->gold] : it->n_answers ? it->answers[0] : "";
}

/* instruction + (k examples "query<target delimiter>target", each followed by the few-shot
 * delimiter) + the item's query; fm_malloc'd into *out. */
static fm_status build_context(const fm_task *t, int item, int k, uint64_t seed, char **out) {
    *out = NULL;
    int *shots = fm_malloc(sizeof(int) * (k ? k : 1));
    if (!shots) return fm_fail(FM_ERR_NOMEM, "out of memory");
    fm_status st = pick_shots(t, item, k, seed, shots);
    fm_text text = {0};
    if (!st) {
        fm_text_puts(&text, t->instruction);
        for (int i = 0; i < k; i++) {
            const fm_task_item *ex = &t->items[shots[i]];
            fm_text_puts(&text, ex->query);
            fm_text_puts(&text, t->target_delimiter);
            fm_text_puts(&text, example_target(t, ex));
            fm_text_puts(&text, t->fewshot_delimiter);
        }
        fm_text_puts(&text, t->items[item].query);
        if (text.failed || !text.data) st = fm_fail(FM_ERR_NOMEM, "out of memory");
    }
    fm_free(shots);
    if (st) fm_free(text.data);
    else *out = text.data;
    return st;
}

/* The prompt as the chat template's ids (cfg->chat; tokenizer/chat_template.c): the task's
 * instruction as a system message when it is not empty, each of the k examples a user turn (its
 * query) and an assistant turn (its target, without the target delimiter), the item's query the
 * last user turn, then the generation prompt <|assistant|>. *ids malloc'd, *n its length. */
static fm_status build_chat_ids(const fm_task *t, const fm_tokenizer *tok, int item, int k, uint64_t seed, int **ids,
                                size_t *n) {
    *ids = NULL, *n = 0;
    int *shots = fm_malloc(sizeof(int) * (k ? k : 1));
    fm_chat_message *msgs = fm_malloc(sizeof *msgs * (2 * (size_t)k + 2));
    fm_status st = (!shots || !msgs) ? fm_fail(FM_ERR_NOMEM, "out of memory") : pick_shots(t, item, k, seed, shots);
    size_t m = 0;
    if (!st && t->instruction[0]) msgs[m++] = (fm_chat_message){"system", t->instruction};
    for (int i = 0; i < k && !st; i++) {
        const fm_task_item *ex = &t->items[shots[i]];
        msgs[m++] = (fm_chat_message){"user", ex->query};
        msgs[m++] = (fm_chat_message){"assistant", example_target(t, ex)};
    }
    if (!st) {
        msgs[m++] = (fm_chat_message){"user", t->items[item].query};
        st = fm_chat_encode(tok, msgs, m, 1, 0, ids, NULL, n);
    }
    fm_free(shots), fm_free(msgs);
    return st;
}

/* lm-eval's _encode_pair: the context's trailing whitespace moves to the continuation; the whole
 * string is encoded and the context's own encoding split off its front; an empty context is the
 * end-of-text token. *ctx and *cont are fm_malloc'd. */
static fm_status encode_pair(const fm_tokenizer *tok, int eot, const char *context, const char *continuation,
                             int **ctx, int *n_ctx, int **cont, int *n_cont) {
    *ctx = *cont = NULL;
    size_t lc = strlen(context), lk = strlen(continuation), cut = lc;
    while (cut > 0 && isspace((unsigned char)context[cut - 1])) cut--;
    char *whole = fm_malloc(lc + lk + 1);
    if (!whole) return fm_fail(FM_ERR_NOMEM, "out of memory");
    memcpy(whole, context, lc);
    memcpy(whole + lc, continuation, lk + 1);
    int *w = NULL, *c = NULL;
    size_t nw = 0, nc = 0;
    fm_status st = FM_OK;
    if (cut == 0 && eot < 0) st = fm_fail(FM_ERR_ARG, "a prompt with no context needs the tokenizer's " EOT " token");
    if (!st) st = fm_tokenizer_encode(tok, whole, lc + lk, 0, &w, &nw);
    if (!st && cut > 0) st = fm_tokenizer_encode(tok, whole, cut, 0, &c, &nc);
    if (!st) {
        /* no context: the end-of-text token stands for it, and the whole text is the continuation */
        size_t n_rest = nw > nc ? nw - nc : 0;
        *ctx = fm_malloc(sizeof(int) * (nc ? nc : 1)), *cont = fm_malloc(sizeof(int) * (n_rest ? n_rest : 1));
        if (!*ctx || !*cont) st = fm_fail(FM_ERR_NOMEM, "out of memory");
        else if (cut == 0) (*ctx)[0] = eot, *n_ctx = 1;
        else memcpy(*ctx, c, sizeof(int) * nc), *n_ctx = (int)nc;
        if (!st) memcpy(*cont, w + nc, sizeof(int) * n_rest), *n_cont = (int)n_rest;
    }
    free(w), free(c);
    fm_free(whole);
    if (st) {
        fm_free(*ctx), fm_free(*cont);
        *ctx = *cont = NULL;
    }
    return st;
}

/* ------------------------------------------------------------ multiple choice */

/* One continuation being scored. */
typedef struct {
    int *ctx, n_ctx, *cont, n_cont;
    int cut;     /* context tokens cut from the left so that it fits */
    int slot;    /* its session sequence */
    int next;    /* continuation tokens scored so far */
    double ll;   /* their summed log-likelihood */
} request;

static void request_free(request *r) {
    fm_free(r->ctx), fm_free(r->cont);
    r->ctx = r->cont = NULL;
}

/* Scores nq requests (the choices of some questions, those of one question adjacent;
 * question[i] says whose) with the session, request i in sequence i: each distinct (question,
 * cut) context is fed once, the first continuation token of every choice sharing it scored from
 * its logits, and its cache copied to their sequences; then every continuation's other tokens,
 * many rows a pass. seqs, owner: scratch of nq entries. */
static fm_status score_wave(fm_session *s, request *rq, int nq, const int *question, int *seqs, int *owner) {
    int V = fm_model_config(fm_session_model(s))->vocab_size;
    const float *logits;
    fm_status st = FM_OK;
    /* the distinct contexts, all fed at once (their rows share the products' blocks) */
    int n_groups = 0;
    const int **ctx = fm_malloc(sizeof *ctx * nq);
    int *lens = fm_malloc(sizeof(int) * nq), *leader = fm_malloc(sizeof(int) * nq);
    if (!ctx || !lens || !leader) st = fm_fail(FM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nq; i++) rq[i].slot = -1;
    for (int i = 0; i < nq && !st; i++) {
        if (rq[i].slot >= 0) continue;
        for (int j = i; j < nq && question[j] == question[i]; j++)
            if (rq[j].slot < 0 && rq[j].cut == rq[i].cut) rq[j].slot = j, owner[j] = n_groups;
        fm_session_reset(s, i);
        seqs[n_groups] = i, ctx[n_groups] = rq[i].ctx + rq[i].cut, lens[n_groups] = rq[i].n_ctx - rq[i].cut;
        leader[n_groups++] = i;
    }
    if (!st) st = fm_session_feed_many(s, n_groups, seqs, ctx, lens, &logits);
    for (int j = 0; j < nq && !st; j++) { /* each choice's first token, and its copy of the context */
        int g = owner[j];
        rq[j].ll = fm_log_prob(logits + (size_t)g * V, V, rq[j].cont[0]);
        rq[j].next = 1;
        if (leader[g] != j) st = fm_session_copy(s, leader[g], j);
    }
    fm_free(ctx), fm_free(lens), fm_free(leader);
    /* the continuations' other tokens, as many rows a pass as the session's block holds: the
     * logits of the row that appends token j - 1 score token j */
    int block = fm_session_max_rows(s);
    int *rs = fm_malloc(sizeof(int) * block), *rt = fm_malloc(sizeof(int) * block);
    int *ro = fm_malloc(sizeof(int) * block), *target = fm_malloc(sizeof(int) * block);
    if (!st && (!rs || !rt || !ro || !target)) st = fm_fail(FM_ERR_NOMEM, "out of memory");
    while (!st) {
        int n = 0;
        for (int i = 0; i < nq && n < block; i++)
            for (; rq[i].next < rq[i].n_cont && n < block; rq[i].next++)
                rs[n] = rq[i].slot, rt[n] = rq[i].cont[rq[i].next - 1], target[n] = rq[i].cont[rq[i].next],
                ro[n++] = i;
        if (!n) break;
        if ((st = fm_session_append(s, rs, rt, n, &logits))) break;
        for (int k = 0; k < n; k++) rq[ro[k]].ll += fm_log_prob(logits + (size_t)k * V, V, target[k]);
    }
    fm_free(rs), fm_free(rt), fm_free(ro), fm_free(target);
    return st;
}

/* Characters (UTF-8 code points) of a string: Python's len, which lm-eval's acc_norm divides by. */
static size_t utf8_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* The same scores from one full forward per request over its whole input (no cache, no sharing,
 * no batching): the plain way the cache and batching are checked and timed against. */
static fm_status score_plain(fm_session *s, request *r) {
    int V = fm_model_config(fm_session_model(s))->vocab_size;
    int n_in = r->n_ctx - r->cut + r->n_cont - 1;
    int *in = fm_malloc(sizeof(int) * n_in);
    if (!in) return fm_fail(FM_ERR_NOMEM, "out of memory");
    memcpy(in, r->ctx + r->cut, sizeof(int) * (r->n_ctx - r->cut));
    memcpy(in + r->n_ctx - r->cut, r->cont, sizeof(int) * (r->n_cont - 1));
    const float *logits;
    fm_status st = fm_session_forward(s, in, 1, n_in, &logits);
    r->ll = 0.0;
    for (int j = 0; !st && j < r->n_cont; j++)
        r->ll += fm_log_prob(logits + (size_t)(r->n_ctx - r->cut - 1 + j) * V, V, r->cont[j]);
    fm_free(in);
    return st;
}

/* Adds a 0/1 (or real) per-item value to a metric's running sums. */
typedef struct {
    double sum, sum_sq;
    int n;
} running;

static void add(running *m, double x) { m->sum += x, m->sum_sq += x * x, m->n++; }

/* mean and lm-eval's standard error of the mean: the sample standard deviation (n - 1) over
 * sqrt(n), which for 0/1 values is sqrt(p (1 - p) / (n - 1)). */
static void finish(const running *m, const char *name, fm_task_result *res) {
    fm_task_metric *out = &res->metrics[res->n_metrics++];
    double mean = m->n ? m->sum / m->n : NAN;
    double var = m->n > 1 ? (m->sum_sq - m->n * mean * mean) / (m->n - 1) : NAN;
    out->name = name;
    out->value = mean;
    out->std_error = m->n > 1 ? sqrt(var > 0.0 ? var : 0.0) / sqrt((double)m->n) : NAN;
}

/* A chat-template request: the prompt's ids as they are and the continuation encoded on its own
 * (the prompt ends with a special token, so nothing merges across the boundary). */
static fm_status encode_after(const fm_tokenizer *tok, const int *prompt, size_t n_prompt, const char *continuation,
                              request *r) {
    int *cont = NULL;
    size_t nc = 0;
    fm_status st = fm_tokenizer_encode(tok, continuation, strlen(continuation), 0, &cont, &nc);
    if (st) return st;
    r->ctx = fm_malloc(sizeof(int) * n_prompt), r->cont = fm_malloc(sizeof(int) * (nc ? nc : 1));
    if (!r->ctx || !r->cont) st = fm_fail(FM_ERR_NOMEM, "out of memory");
    else {
        memcpy(r->ctx, prompt, sizeof(int) * n_prompt), memcpy(r->cont, cont, sizeof(int) * nc);
        r->n_ctx = (int)n_prompt, r->n_cont = (int)nc;
    }
    free(cont);
    if (st) request_free(r);
    return st;
}

/* A plain-text request: lm-eval's _encode_pair of the context and target delimiter + choice. */
static fm_status encode_delimited(const fm_task *t, const fm_tokenizer *tok, int eot, const char *context,
                                  const char *choice, request *r) {
    size_t ld = strlen(t->target_delimiter), lc = strlen(choice);
    char *cont = fm_malloc(ld + lc + 1);
    if (!cont) return fm_fail(FM_ERR_NOMEM, "out of memory");
    memcpy(cont, t->target_delimiter, ld), memcpy(cont + ld, choice, lc + 1);
    fm_status st = encode_pair(tok, eot, context, cont, &r->ctx, &r->n_ctx, &r->cont, &r->n_cont);
    fm_free(cont);
    return st;
}

/* Encodes every choice of the first n_items test items (lm-eval's _encode_pair after the
 * prompt), cut to fit the context: *out (fm_malloc'd, *n_out requests, an item's choices adjacent),
 * question[r] the item's position. *longest: the most positions one request needs. */
static fm_status encode_requests(const fm_task *t, const fm_tokenizer *tok, const fm_task_config *cfg, int n_items,
                                 int L, request **out, int **question_out, int *n_out, int *longest,
                                 fm_task_result *res) {
    int eot = fm_tokenizer_special_id(tok, EOT), total_choices = 0;
    for (int q = 0; q < n_items; q++) total_choices += t->items[t->test[q]].n_choices;
    request *rq = fm_calloc(total_choices, sizeof *rq);
    int *question = fm_malloc(sizeof(int) * total_choices), n = 0;
    fm_status st = (!rq || !question) ? fm_fail(FM_ERR_NOMEM, "out of memory") : FM_OK;
    *longest = 1;
    for (int q = 0; q < n_items && !st; q++) {
        const fm_task_item *it = &t->items[t->test[q]];
        char *context = NULL;
        int *chat = NULL;
        size_t n_chat = 0;
        if (cfg->chat) st = build_chat_ids(t, tok, t->test[q], cfg->shots, cfg->seed, &chat, &n_chat);
        else st = build_context(t, t->test[q], cfg->shots, cfg->seed, &context);
        if (st) break;
        int truncated = 0, first = n, too_long = 0;
        for (int c = 0; c < it->n_choices && !st; c++) {
            request *r = &rq[n];
            if ((st = cfg->chat ? encode_after(tok, chat, n_chat, it->choices[c], r)
                                : encode_delimited(t, tok, eot, context, it->choices[c], r)))
                break;
            question[n++] = q;
            if (r->n_cont < 1) {
                st = fm_fail(FM_ERR_ARG, "%s:%d: choice %d encodes to no tokens after its context", t->path, it->line, c);
                break;
            }
            too_long |= r->n_cont > L; /* lm-eval refuses these; the item is skipped and counted */
            /* lm-eval's input: the last L + 1 tokens of context + continuation, minus the last */
            int total = r->n_ctx + r->n_cont;
            r->cut = total > L + 1 ? total - (L + 1) : 0;
            truncated |= r->cut > 0;
        }
        fm_free(context);
        free(chat);
        if (too_long && !st) { /* a choice longer than the whole context: the item is left out */
            for (int i = first; i < n; i++) request_free(&rq[i]);
            n = first;
            res->skipped++;
            continue;
        }
        for (int i = first; i < n; i++) {
            int total = rq[i].n_ctx + rq[i].n_cont;
            if (total - rq[i].cut - 1 > *longest) *longest = total - rq[i].cut - 1;
        }
        res->truncated += truncated;
    }
    if (st) {
        for (int i = 0; rq && i < n; i++) request_free(&rq[i]);
        fm_free(rq), fm_free(question);
        return st;
    }
    *out = rq, *question_out = question, *n_out = n;
    return FM_OK;
}

/* Every request encoded first (so that the session's caches are only as long as the longest
 * request needs), then scored in waves of up to max_seqs sequences, whole questions at a time. */
static fm_status run_multiple_choice(const fm_task *t, const fm_model *model, const fm_tokenizer *tok,
                                     const fm_task_config *cfg, int n_items, fm_task_result *res) {
    int L = fm_model_config(model)->n_positions, S = cfg->max_seqs;
    request *rq = NULL;
    int *question = NULL, n_req = 0, longest = 1;
    fm_status st = encode_requests(t, tok, cfg, n_items, L, &rq, &question, &n_req, &longest, res);
    if (st) return st;
    fm_session *s = NULL;
    int *seqs = fm_malloc(sizeof(int) * S), *owner = fm_malloc(sizeof(int) * S);
    if (!seqs || !owner) st = fm_fail(FM_ERR_NOMEM, "out of memory");
    if (!st) st = fm_session_init(&s, model, S, longest);
    running acc = {0}, acc_norm = {0}, acc_bytes = {0};
    for (int start = 0; start < n_req && !st;) {
        /* the wave: whole questions from request `start`, up to S requests */
        int end = start;
        while (end < n_req) {
            int k = end;
            while (k < n_req && question[k] == question[end]) k++;
            if (k - start > S) break;
            end = k;
        }
        if (end == start) {
            const fm_task_item *it = &t->items[t->test[question[start]]];
            st = fm_fail(FM_ERR_ARG, "%s:%d: %d choices, more than the %d sequences evaluated at once", t->path,
                         it->line, it->n_choices, S);
            break;
        }
        if (cfg->plain)
            for (int i = start; i < end && !st; i++) st = score_plain(s, &rq[i]);
        else
            st = score_wave(s, rq + start, end - start, question + start, seqs, owner);
        for (int at = start; !st && at < end;) {
            int item_pos = question[at];
            const fm_task_item *it = &t->items[t->test[item_pos]];
            int best = 0, best_norm = 0, best_bytes = 0;
            for (int c = 0; c < it->n_choices; c++) {
                double ll = rq[at + c].ll;
                if (ll > rq[at + best].ll) best = c;
                if (ll / utf8_chars(it->choices[c]) > rq[at + best_norm].ll / utf8_chars(it->choices[best_norm]))
                    best_norm = c;
                if (ll / strlen(it->choices[c]) > rq[at + best_bytes].ll / strlen(it->choices[best_bytes]))
                    best_bytes = c;
            }
            add(&acc, best == it->gold), add(&acc_norm, best_norm == it->gold), add(&acc_bytes, best_bytes == it->gold);
            if (cfg->on_item) {
                double *v = fm_malloc(sizeof(double) * it->n_choices);
                if (!v) st = fm_fail(FM_ERR_NOMEM, "out of memory");
                for (int c = 0; v && c < it->n_choices; c++) v[c] = rq[at + c].ll;
                if (v) cfg->on_item(cfg->user, item_pos, v, it->n_choices, NULL);
                fm_free(v);
            }
            at += it->n_choices;
        }
        start = end;
    }
    if (!st) {
        finish(&acc, "acc", res);
        finish(&acc_norm, "acc_norm", res);
        finish(&acc_bytes, "acc_bytes", res);
        res->n = acc.n;
    }
    for (int i = 0; i < n_req; i++) request_free(&rq[i]);
    fm_free(rq), fm_free(question), fm_free(seqs), fm_free(owner);
    fm_session_free(s);
    return st;
}

/* ------------------------------------------------------------ generation */

/* The comparison form of an answer (SQuAD's normalisation): lowercase ASCII, punctuation
 * removed, the articles a/an/the removed, words separated by one space. fm_malloc'd. */
static char *normalize_answer(const char *s) {
    size_t n = strlen(s);
    char *out = fm_malloc(n + 1), *word = fm_malloc(n + 1);
    if (!out || !word) {
        fm_free(out), fm_free(word);
        return NULL;
    }
    size_t o = 0, w = 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch && ispunct(ch)) continue;
        if (ch && !isspace(ch)) {
            word[w++] = (char)tolower(ch);
            continue;
        }
        word[w] = '\0';
        if (w && strcmp(word, "a") && strcmp(word, "an") && strcmp(word, "the")) {
            if (o) out[o++] = ' ';
            memcpy(out + o, word, w), o += w;
        }
        w = 0;
    }
    out[o] = '\0';
    fm_free(word);
    return out;
}

/* Token F1 of two normalised answers: the words they share (as a multiset) against each one's
 * word count; 1 when both are empty. */
static double token_f1(const char *pred, const char *gold) {
    char *a = fm_strdup(pred), *b = fm_strdup(gold);
    const char *wa[512], *wb[512];
    int na = 0, nb = 0;
    for (char *p = a ? strtok(a, " ") : NULL; p && na < 512; p = strtok(NULL, " ")) wa[na++] = p;
    for (char *p = b ? strtok(b, " ") : NULL; p && nb < 512; p = strtok(NULL, " ")) wb[nb++] = p;
    double f1 = 0.0;
    if (na == 0 || nb == 0) f1 = na == nb;
    else {
        int common = 0;
        unsigned char used[512] = {0};
        for (int i = 0; i < na; i++)
            for (int j = 0; j < nb; j++)
                if (!used[j] && !strcmp(wa[i], wb[j])) {
                    used[j] = 1, common++;
                    break;
                }
        if (common) {
            double p = (double)common / na, r = (double)common / nb;
            f1 = 2 * p * r / (p + r);
        }
    }
    fm_free(a), fm_free(b);
    return f1;
}

static fm_status run_generate(const fm_task *t, fm_session *s, const fm_tokenizer *tok, const fm_task_config *cfg,
                              int n_items, fm_task_result *res) {
    const fm_config *mc = fm_model_config(fm_session_model(s));
    int L = mc->n_positions, room = L - t->max_gen_tokens;
    if (room < 1)
        return fm_fail(FM_ERR_ARG, "task %s: max_gen_tokens %d leaves no room for a prompt in a context of %d",
                       t->name, t->max_gen_tokens, L);
    int **prompts = fm_calloc(n_items, sizeof *prompts), *lens = fm_calloc(n_items, sizeof *lens);
    fm_generate_result *out = fm_calloc(n_items, sizeof *out);
    fm_status st = (!prompts || !lens || !out) ? fm_fail(FM_ERR_NOMEM, "out of memory") : FM_OK;
    for (int q = 0; q < n_items && !st; q++) {
        char *context = NULL;
        int *ids = NULL;
        size_t n = 0;
        if (cfg->chat) st = build_chat_ids(t, tok, t->test[q], cfg->shots, cfg->seed, &ids, &n);
        else if (!(st = build_context(t, t->test[q], cfg->shots, cfg->seed, &context)))
            st = fm_tokenizer_encode(tok, context, strlen(context), 0, &ids, &n);
        fm_free(context);
        if (st) break;
        if (n == 0) {
            free(ids);
            st = fm_fail(FM_ERR_ARG, "%s:%d: the prompt encodes to no tokens", t->path, t->items[t->test[q]].line);
            break;
        }
        /* lm-eval keeps the last (context - max_gen_tokens) tokens of the prompt */
        int keep = (int)n > room ? room : (int)n;
        res->truncated += (int)n > room;
        prompts[q] = fm_malloc(sizeof(int) * keep);
        if (!prompts[q]) st = fm_fail(FM_ERR_NOMEM, "out of memory");
        else memcpy(prompts[q], ids + n - keep, sizeof(int) * keep), lens[q] = keep;
        free(ids);
    }
    if (!st) {
        fm_generate_config g;
        fm_generate_config_default(&g);
        g.sampler.temperature = 0.0f; /* greedy */
        g.max_tokens = t->max_gen_tokens;
        g.eos = fm_tokenizer_special_id(tok, EOT);
        g.tok = tok;
        g.stops = (const char *const *)t->until;
        g.n_stops = t->n_until;
        st = fm_generate(s, &g, (const int *const *)prompts, lens, n_items, NULL, NULL, out);
    }
    running em = {0}, f1 = {0};
    for (int q = 0; q < n_items && !st; q++) {
        const fm_task_item *it = &t->items[t->test[q]];
        char *pred = normalize_answer(out[q].text ? out[q].text : "");
        double best_em = 0.0, best_f1 = 0.0;
        for (int a = 0; pred && a < it->n_answers; a++) {
            char *gold = normalize_answer(it->answers[a]);
            if (!gold) break;
            best_em = fmax(best_em, strcmp(pred, gold) == 0);
            best_f1 = fmax(best_f1, token_f1(pred, gold));
            fm_free(gold);
        }
        if (!pred) st = fm_fail(FM_ERR_NOMEM, "out of memory");
        fm_free(pred);
        add(&em, best_em), add(&f1, best_f1);
        if (!st && cfg->on_item) {
            double v[2] = {best_em, best_f1};
            cfg->on_item(cfg->user, q, v, 2, out[q].text ? out[q].text : "");
        }
    }
    if (!st) {
        finish(&em, "exact_match", res);
        finish(&f1, "f1", res);
        res->n = em.n;
    }
    for (int q = 0; q < n_items; q++) {
        if (prompts) fm_free(prompts[q]);
        if (out) fm_generate_result_free(&out[q]);
    }
    fm_free(prompts), fm_free(lens), fm_free(out);
    return st;
}

/* ------------------------------------------------------------ perplexity */

/* The log-likelihood of a document's tokens in lm-eval's rolling windows of the context L: the
 * first window is the end-of-text token and the first L - 1 tokens, predicting the first L;
 * each later one predicts the next (up to L) tokens from the L tokens before each. */
static fm_status rolling_ll(fm_session *s, const int *ids, int n, int eot, int L, int *buf, double *ll) {
    int V = fm_model_config(fm_session_model(s))->vocab_size;
    const float *logits;
    *ll = 0.0;
    int done = 0;
    while (done < n) {
        int pred = n - done < L ? n - done : L, end = done + pred, start = end - L - 1, len;
        if (done == 0) { /* [eot] + tokens[0 .. pred - 1) */
            buf[0] = eot;
            memcpy(buf + 1, ids, sizeof(int) * (pred - 1));
            len = pred;
        } else {
            if (start < 0) start = 0;
            len = end - 1 - start;
            memcpy(buf, ids + start, sizeof(int) * len);
        }
        fm_status st = fm_session_forward(s, buf, 1, len, &logits);
        if (st) return st;
        for (int j = 0; j < pred; j++) /* the last pred rows predict ids[end - pred .. end) */
            *ll += fm_log_prob(logits + (size_t)(len - pred + j) * V, V, ids[end - pred + j]);
        done = end;
    }
    return FM_OK;
}

static fm_status run_perplexity(const fm_task *t, fm_session *s, const fm_tokenizer *tok, const fm_task_config *cfg,
                                int n_items, fm_task_result *res) {
    const fm_config *mc = fm_model_config(fm_session_model(s));
    int L = mc->n_positions, eot = fm_tokenizer_special_id(tok, EOT);
    if (eot < 0) return fm_fail(FM_ERR_ARG, "task %s: rolling windows begin with the tokenizer's " EOT " token, "
                                "which this tokenizer lacks", t->name);
    int *buf = fm_malloc(sizeof(int) * (L + 1));
    if (!buf) return fm_fail(FM_ERR_NOMEM, "out of memory");
    double ll_sum = 0.0, tokens = 0.0, bytes = 0.0, words = 0.0;
    fm_status st = FM_OK;
    for (int q = 0; q < n_items && !st; q++) {
        const fm_task_item *it = &t->items[t->test[q]];
        int *ids = NULL;
        size_t n = 0;
        if ((st = fm_tokenizer_encode(tok, it->text, strlen(it->text), 0, &ids, &n))) break;
        double ll = 0.0;
        st = rolling_ll(s, ids, (int)n, eot, L, buf, &ll);
        free(ids);
        ll_sum += ll, tokens += n, bytes += strlen(it->text);
        for (const char *p = it->text; *p;) { /* words: runs of non-space */
            while (*p && isspace((unsigned char)*p)) p++;
            if (*p) words++;
            while (*p && !isspace((unsigned char)*p)) p++;
        }
        if (!st && cfg->on_item) cfg->on_item(cfg->user, q, &ll, 1, NULL);
    }
    fm_free(buf);
    if (st) return st;
    /* corpus-level: summed log-likelihood over summed counts, as lm-eval aggregates them */
    fm_task_metric *m = res->metrics;
    m[0] = (fm_task_metric){"bits_per_byte", -ll_sum / (bytes * log(2.0)), NAN};
    m[1] = (fm_task_metric){"token_perplexity", exp(-ll_sum / tokens), NAN};
    m[2] = (fm_task_metric){"word_perplexity", exp(-ll_sum / (words > 0 ? words : 1)), NAN};
    res->n_metrics = 3;
    res->n = n_items;
    return FM_OK;
}

/* ------------------------------------------------------------ the task */

void fm_task_config_default(fm_task_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->seed = 1234;
    cfg->max_seqs = 32;
}

fm_status fm_task_evaluate(const fm_task *t, const fm_model *model, const fm_tokenizer *tok, const fm_task_config *cfg,
                           fm_task_result *res) {
    memset(res, 0, sizeof *res);
    res->chance = t->chance;
    res->shots = t->type == FM_TASK_PERPLEXITY ? 0 : cfg->shots;
    if (cfg->shots < 0) return fm_fail(FM_ERR_ARG, "shots: %d is negative", cfg->shots);
    if (cfg->max_seqs < 1 || cfg->max_seqs > 4096)
        return fm_fail(FM_ERR_ARG, "max_seqs %d: must be between 1 and 4096", cfg->max_seqs);
    if (fm_tokenizer_vocab_size(tok) != fm_model_config(model)->vocab_size)
        return fm_fail(FM_ERR_MISMATCH, "the tokenizer has %d tokens, the model %d", fm_tokenizer_vocab_size(tok),
                       fm_model_config(model)->vocab_size);
    if (cfg->chat && t->type != FM_TASK_PERPLEXITY) {
        fm_status st = fm_chat_check_tokenizer(tok);
        if (st) return fm_fail_prefix(st, "task %s with the chat template: ", t->name);
    }
    int n_items = cfg->limit > 0 && cfg->limit < t->n_test ? cfg->limit : t->n_test;
    int max_choices = 1;
    for (int i = 0; i < n_items && t->type == FM_TASK_MULTIPLE_CHOICE; i++)
        if (t->items[t->test[i]].n_choices > max_choices) max_choices = t->items[t->test[i]].n_choices;
    int seqs = cfg->max_seqs > max_choices ? cfg->max_seqs : max_choices;
    fm_task_config c = *cfg;
    c.max_seqs = seqs;
    if (t->type == FM_TASK_MULTIPLE_CHOICE) return run_multiple_choice(t, model, tok, &c, n_items, res);
    fm_session *s = NULL;
    fm_status st = fm_session_init(&s, model, seqs, fm_model_config(model)->n_positions);
    if (st) return st;
    switch (t->type) {
    case FM_TASK_MULTIPLE_CHOICE: break;
    case FM_TASK_GENERATE: st = run_generate(t, s, tok, &c, n_items, res); break;
    case FM_TASK_PERPLEXITY: {
        c.shots = 0;
        st = run_perplexity(t, s, tok, &c, n_items, res);
        break;
    }
    }
    fm_session_free(s);
    return st;
}
