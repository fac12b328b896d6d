/*
 * scheduler.c — the server's continuous batching: one thread owns an inference session of
 * cfg.parallel sequences per model id (the base and each adapter: a session applies one adapter,
 * fixed when it is made) and runs every request's choices (jobs) in them.
 *
 * Each round, under the server lock: jobs of cancelled or timed-out requests leave their slots;
 * queued requests take free slots in their model's session, in arrival order, a job per slot
 * (a request leaves the queue once all its jobs have one); then, with the lock released while the
 * session computes, the joining jobs' prompts are fed (fm_session_feed_many; a job that echoes its
 * prompt's log-probs appends it in blocks with fm_session_append, which gives every position's
 * logits) and their first token chosen; then every running job of a session is stepped by one
 * token in one batched fm_session_step, and each row's token chosen (lock held again).
 *
 * A job's token is chosen as fm_generate chooses it (generate.c): fm_sample over the raw logits
 * with the last SERVE_REPEAT_WINDOW ids of prompt + generated as the recent tokens, the job's own
 * rng seeded from the request's seed (+ its number among the prompt's choices), the log-prob from
 * the raw logits (only where the request reports log-probs: the rows' log sum exp, a pass over
 * the vocabulary each, is then shared by the threads outside the lock); <|endoftext|> ends it
 * ("stop", not in the output), a stop string ends it ("stop": the text ends before it and the
 * tokens holding any of its bytes go), max_tokens ends it ("length"). The session computes each
 * row on its own and each job keeps its own rng, so a job gets the same ids alone or beside
 * others, and the same as fm generate with that seed. A job's prompt plus max_tokens fits the
 * session (api.c refuses longer ones), so nothing slides.
 *
 * Not for: HTTP (server.c) or request parsing and JSON (api.c).
 */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "serve/serve.h"

struct serve_sched {
    pthread_t thread;
    int started, stop;
    pthread_cond_t wake;
    int n_models, parallel;
    fm_session **sessions; /* (n_models) */
    serve_job **slots;     /* (n_models * parallel) the job in each slot, or NULL */
    int running;           /* jobs in slots */
    serve_request **queue; /* (max_queue) in arrival order */
    int n_queue;
    float *scratch;        /* (2 V) fm_sample's */
    double *lse;           /* (parallel) each row's log sum exp in a step, where log-probs are wanted */
    serve_job **join;      /* (parallel) jobs joining a session this round; those of a step */
    serve_job **echo;      /* (parallel) joining jobs that echo their prompt's log-probs */
    int *seqs, *toks, *lens;
    const int **ptrs;
};

const double serve_bucket_bounds[SERVE_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,   0.25,   0.5,   1.0,  2.5,   10.0};

double serve_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void serve_hist_add(serve_hist *h, double v) {
    int b = 0;
    while (b < SERVE_BUCKETS && v > serve_bucket_bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
}

void serve_request_release(serve_request *req) {
    if (--req->refs == 0) serve_request_free(req);
}

int serve_sched_queued(const fm_server *srv) { return srv->sched ? srv->sched->n_queue : 0; }
int serve_sched_running(const fm_server *srv) { return srv->sched ? srv->sched->running : 0; }

void serve_sched_wake(fm_server *srv) { pthread_cond_signal(&srv->sched->wake); }

int serve_sched_submit(fm_server *srv, serve_request *req) {
    serve_sched *q = srv->sched;
    if (q->n_queue >= srv->cfg.max_queue) return 503;
    q->queue[q->n_queue++] = req;
    req->queued = 1;
    req->refs++;
    for (int i = 0; i < req->n_prompts; i++) srv->metrics.prompt_tokens += (uint64_t)req->prompts[i].n;
    pthread_cond_signal(&q->wake);
    return 0;
}

/* ------------------------------------------------------------ one job's tokens (lock held) */

/* log sum exp of z (V), in double. */
static double row_lse(const float *z, int V) {
    float maxv = z[0];
    for (int v = 1; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)z[v] - maxv);
    return maxv + log(sum);
}

/* The k most likely ids of z (ties: the lower id first) and their log-probs. */
static void top_k(const float *z, int V, double lse, int k, int *ids, float *lps) {
    int n = 0;
    for (int v = 0; v < V; v++) {
        if (n == k && z[v] <= z[ids[n - 1]]) continue;
        int at = n < k ? n++ : k - 1;
        while (at > 0 && z[ids[at - 1]] < z[v]) {
            ids[at] = ids[at - 1];
            at--;
        }
        ids[at] = v;
    }
    for (int i = 0; i < k; i++) lps[i] = (float)((double)z[ids[i]] - lse);
}

/* Ends a job: its slot frees; the request's last job ends the scheduler's hold on it. */
static void job_finish(fm_server *srv, serve_job *job, serve_finish why) {
    serve_sched *q = srv->sched;
    serve_request *req = job->req;
    job->finish = why;
    job->done = 1;
    job->final_len = job->text_len;
    job->final_tokens = job->n_tokens;
    if (job->slot >= 0) {
        q->slots[req->model * q->parallel + job->slot] = NULL;
        q->running--;
        job->slot = -1;
    }
    req->version++;
    pthread_cond_broadcast(&req->cond);
    if (++req->n_done == req->n_jobs) serve_request_release(req);
}

static void job_fail(fm_server *srv, serve_job *job, int status, const char *msg) {
    serve_request *req = job->req;
    if (!req->failed) {
        req->failed = status;
        snprintf(req->error, sizeof req->error, "%s", msg);
    }
    job_finish(srv, job, SERVE_FINISH_CANCEL);
}

/* Appends len bytes to the job's text. */
static int add_text(serve_job *job, const char *bytes, size_t len) {
    if (job->text_len + len + 1 > job->text_cap) {
        size_t cap = job->text_cap ? job->text_cap : 256;
        while (job->text_len + len + 1 > cap) cap *= 2;
        char *t = fm_realloc(job->text, cap);
        if (!t) return -1;
        job->text = t;
        job->text_cap = cap;
    }
    memcpy(job->text + job->text_len, bytes, len);
    job->text_len += len;
    job->text[job->text_len] = '\0';
    return 0;
}

static size_t token_len(const fm_server *srv, int id) {
    size_t len = 0;
    return fm_tokenizer_token_bytes(srv->tok, id, &len) ? len : 0;
}

/* The earliest stop string starting at or after `from`, or SIZE_MAX. */
static size_t find_stop(const serve_request *req, const serve_job *job, size_t from) {
    size_t best = SIZE_MAX;
    for (int i = 0; i < req->n_stops; i++) {
        size_t n = strlen(req->stops[i]);
        for (size_t p = from; p + n <= job->text_len && p < best; p++)
            if (memcmp(job->text + p, req->stops[i], n) == 0) {
                best = p;
                break;
            }
    }
    return best;
}

/* Tokens whose bytes end at or before byte `at` of the text. */
static int tokens_within(const fm_server *srv, const serve_job *job, size_t at) {
    int k = 0;
    while (k < job->n_tokens && job->offsets[k] + token_len(srv, job->tokens[k]) <= at) k++;
    return k;
}

/* Whether a job's request reports log-probs (only then is a row's log sum exp computed). */
static int wants_logprobs(const serve_job *job) { return job->req->logprobs || job->req->top_n; }

/* q->lse[r] for the n rows of logits (V each) whose jobs report log-probs, the rows shared by
 * the threads: each row is a pass of exp over the vocabulary (about 1 ms at 50257), which would
 * otherwise run on the scheduler's thread alone while the others wait. Lock not held: a job's
 * request fields are fixed once parsed. */
static void rows_lse(fm_server *srv, serve_job *const *jobs, int n, const float *logits) {
    serve_sched *q = srv->sched;
    int V = srv->V, any = 0;
    for (int r = 0; r < n; r++) any += wants_logprobs(jobs[r]);
#pragma omp parallel for schedule(dynamic, 1) if (any > 1)
    for (int r = 0; r < n; r++) q->lse[r] = wants_logprobs(jobs[r]) ? row_lse(logits + (size_t)r * V, V) : NAN;
}

/* Chooses the job's next token from its logits and takes it through eos, stop strings and
 * max_tokens; the job goes on (job->next to be fed) unless it ended. lse: the row's log sum exp
 * (rows_lse) when the request reports log-probs, else unused. */
static void advance(fm_server *srv, serve_job *job, const float *logits, double lse) {
    serve_request *req = job->req;
    int V = srv->V;
    int window = job->hist_n < SERVE_REPEAT_WINDOW ? job->hist_n : SERVE_REPEAT_WINDOW;
    int next = fm_sample(&req->sampler, logits, V, job->hist + job->hist_n - window, window, &job->rng,
                         srv->sched->scratch);
    double now = serve_now();
    srv->metrics.generated_tokens++;
    if (!req->got_first) {
        req->got_first = 1;
        serve_hist_add(&srv->metrics.ttft, now - req->t_start);
    } else if (job->t_last > 0) {
        serve_hist_add(&srv->metrics.per_token, now - job->t_last);
    }
    job->t_last = now;
    job->hist[job->hist_n++] = next;
    if (next == srv->eos && !req->ignore_eos) {
        job_finish(srv, job, SERVE_FINISH_STOP);
        return;
    }
    int k = job->n_tokens++;
    job->tokens[k] = next;
    job->lps[k] = wants_logprobs(job) ? (float)((double)logits[next] - lse) : NAN;
    job->offsets[k] = job->text_len;
    if (req->top_n)
        top_k(logits, V, lse, req->top_n, job->top_ids + (size_t)k * req->top_n, job->top_lps + (size_t)k * req->top_n);
    size_t len = 0;
    const char *bytes = fm_tokenizer_token_bytes(srv->tok, next, &len);
    if (add_text(job, bytes ? bytes : "", bytes ? len : 0)) {
        job_fail(srv, job, 500, "out of memory for the generated text");
        return;
    }
    req->version++;
    pthread_cond_broadcast(&req->cond);
    size_t at = req->n_stops ? find_stop(req, job, job->final_len) : SIZE_MAX;
    if (at != SIZE_MAX) {
        job->n_tokens = tokens_within(srv, job, at);
        job->text_len = at;
        job->text[at] = '\0';
        job_finish(srv, job, SERVE_FINISH_STOP);
        return;
    }
    if (job->n_tokens >= req->max_tokens) {
        job_finish(srv, job, SERVE_FINISH_LENGTH);
        return;
    }
    if (job->text_len > req->hold && job->text_len - req->hold > job->final_len) {
        job->final_len = job->text_len - req->hold;
        job->final_tokens = tokens_within(srv, job, job->final_len);
    }
    job->next = next;
}

/* ------------------------------------------------------------ a round */

/* Jobs of cancelled or timed-out requests leave their slots; such requests leave the queue. */
static void drop_cancelled(fm_server *srv, double now) {
    serve_sched *q = srv->sched;
    for (int i = 0; i < q->n_models * q->parallel; i++) {
        serve_job *job = q->slots[i];
        if (!job) continue;
        serve_request *req = job->req;
        if (!req->cancelled && !req->failed && now > req->deadline) {
            req->failed = 504;
            snprintf(req->error, sizeof req->error, "the request ran past the server's limit of %g s", srv->cfg.timeout);
        }
        if (req->cancelled || req->failed) job_finish(srv, job, SERVE_FINISH_CANCEL);
    }
    for (int i = 0; i < q->n_queue;) {
        serve_request *req = q->queue[i];
        if (!req->cancelled && !req->failed && now > req->deadline) {
            req->failed = 504;
            snprintf(req->error, sizeof req->error, "the request waited past the server's limit of %g s for a slot",
                     srv->cfg.timeout);
        }
        if (!req->cancelled && !req->failed) {
            i++;
            continue;
        }
        memmove(q->queue + i, q->queue + i + 1, sizeof *q->queue * (q->n_queue - i - 1));
        q->n_queue--;
        req->queued = 0;
        int from = req->next_join, n = req->n_jobs;
        req->next_join = n;
        for (int j = from; j < n; j++) job_finish(srv, &req->jobs[j], SERVE_FINISH_CANCEL); /* may free req */
    }
}

/* Queued jobs of model m take its free slots; returns how many joined (in q->join). */
static int admit(fm_server *srv, int m) {
    serve_sched *q = srv->sched;
    serve_job **slots = q->slots + m * q->parallel;
    int n = 0, k = 0;
    for (int i = 0; i < q->n_queue;) {
        serve_request *req = q->queue[i];
        if (req->model != m) {
            i++;
            continue;
        }
        while (req->next_join < req->n_jobs) {
            while (k < q->parallel && slots[k]) k++;
            if (k == q->parallel) return n;
            serve_job *job = &req->jobs[req->next_join++];
            job->slot = k;
            slots[k] = job;
            q->running++;
            q->join[n++] = job;
        }
        memmove(q->queue + i, q->queue + i + 1, sizeof *q->queue * (q->n_queue - i - 1));
        q->n_queue--;
        req->queued = 0;
    }
    return n;
}

/* The joining jobs' prompts through the session, and their first tokens. Lock held on entry and
 * exit; released while the session computes. */
static void prefill(fm_server *srv, int m, int n) {
    serve_sched *q = srv->sched;
    fm_session *s = q->sessions[m];
    int V = srv->V;
    /* the plain ones together; echo-with-log-probs ones apart; max_tokens 0 ends at once */
    int n_plain = 0, n_echo = 0;
    for (int i = 0; i < n; i++) {
        serve_job *job = q->join[i];
        serve_request *req = job->req;
        fm_rng_seed(&job->rng, job->seed);
        if (req->echo && req->logprobs) q->echo[n_echo++] = job;
        else if (req->max_tokens > 0) q->join[n_plain++] = job;
        else job_finish(srv, job, SERVE_FINISH_LENGTH); /* the request has other jobs left */
    }
    if (n_plain) {
        for (int i = 0; i < n_plain; i++) {
            serve_job *job = q->join[i];
            const serve_prompt *p = &job->req->prompts[job->prompt];
            q->seqs[i] = job->slot;
            q->ptrs[i] = p->ids;
            q->lens[i] = p->n;
            fm_session_reset(s, job->slot);
        }
        const float *logits;
        pthread_mutex_unlock(&srv->lock);
        fm_status st = fm_session_feed_many(s, n_plain, q->seqs, q->ptrs, q->lens, &logits);
        if (!st) rows_lse(srv, q->join, n_plain, logits);
        pthread_mutex_lock(&srv->lock);
        for (int i = 0; i < n_plain; i++) {
            serve_job *job = q->join[i];
            if (st) job_fail(srv, job, 500, fm_last_error());
            else advance(srv, job, logits + (size_t)i * V, q->lse[i]);
        }
    }
    for (int i = 0; i < n_echo; i++) {
        serve_job *job = q->echo[i];
        serve_request *req = job->req;
        const serve_prompt *p = &req->prompts[job->prompt];
        int rows = fm_session_max_rows(s), K = req->top_n;
        fm_session_reset(s, job->slot);
        pthread_mutex_unlock(&srv->lock); /* the prompt's arrays are read once the job has a token or ends */
        fm_status st = FM_OK;
        const float *logits = NULL;
        job->prompt_lps[0] = NAN;
        for (int at = 0; at < p->n && !st; at += rows) {
            int cnt = p->n - at < rows ? p->n - at : rows;
            for (int r = 0; r < cnt; r++) q->seqs[r] = job->slot;
            st = fm_session_append(s, q->seqs, p->ids + at, cnt, &logits);
            for (int r = 0; r < cnt && !st; r++) {
                int pos = at + r + 1; /* the position row r predicts */
                const float *z = logits + (size_t)r * V;
                if (pos >= p->n) continue;
                double lse = row_lse(z, V);
                job->prompt_lps[pos] = (float)((double)z[p->ids[pos]] - lse);
                if (K) top_k(z, V, lse, K, job->prompt_top_ids + (size_t)pos * K, job->prompt_top_lps + (size_t)pos * K);
            }
            if (!st && at + cnt == p->n) logits += (size_t)(cnt - 1) * V;
        }
        pthread_mutex_lock(&srv->lock);
        if (st) job_fail(srv, job, 500, fm_last_error());
        else if (req->max_tokens == 0) job_finish(srv, job, SERVE_FINISH_LENGTH);
        else advance(srv, job, logits, row_lse(logits, V));
    }
}

/* One batched step of model m's running jobs. Lock held on entry and exit. */
static void step(fm_server *srv, int m) {
    serve_sched *q = srv->sched;
    serve_job **slots = q->slots + m * q->parallel;
    int n = 0;
    for (int k = 0; k < q->parallel; k++)
        if (slots[k]) {
            q->join[n] = slots[k];
            q->seqs[n] = k;
            q->toks[n] = slots[k]->next;
            n++;
        }
    if (!n) return;
    const float *logits;
    pthread_mutex_unlock(&srv->lock);
    fm_status st = fm_session_step(q->sessions[m], q->seqs, q->toks, n, &logits);
    if (!st) rows_lse(srv, q->join, n, logits);
    pthread_mutex_lock(&srv->lock);
    for (int r = 0; r < n; r++) {
        serve_job *job = q->join[r];
        if (job->done) continue;
        if (st) job_fail(srv, job, 500, fm_last_error());
        else advance(srv, job, logits + (size_t)r * srv->V, q->lse[r]);
    }
}

static void *sched_main(void *arg) {
    fm_server *srv = arg;
    serve_sched *q = srv->sched;
    fm_set_threads(srv->cfg.threads); /* OpenMP's thread count is per thread */
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        while (!q->stop && q->n_queue == 0 && q->running == 0) pthread_cond_wait(&q->wake, &srv->lock);
        if (q->stop && q->n_queue == 0 && q->running == 0) break;
        drop_cancelled(srv, serve_now());
        for (int m = 0; m < q->n_models; m++) {
            int n = admit(srv, m);
            if (n) prefill(srv, m, n);
        }
        drop_cancelled(srv, serve_now());
        for (int m = 0; m < q->n_models; m++) step(srv, m);
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

static void sched_free(serve_sched *q) {
    if (!q) return;
    for (int m = 0; q->sessions && m < q->n_models; m++) fm_session_free(q->sessions[m]);
    fm_free(q->sessions);
    fm_free(q->slots);
    fm_free(q->queue);
    fm_free(q->scratch);
    fm_free(q->lse);
    fm_free(q->join);
    fm_free(q->echo);
    fm_free(q->seqs);
    fm_free(q->toks);
    fm_free(q->lens);
    fm_free(q->ptrs);
    fm_free(q);
}

fm_status serve_sched_start(fm_server *srv) {
    int P = srv->cfg.parallel, M = 1 + srv->cfg.n_adapters;
    serve_sched *q = fm_calloc(1, sizeof *q);
    if (!q) return fm_fail(FM_ERR_NOMEM, "out of memory for the scheduler");
    q->n_models = M;
    q->parallel = P;
    q->sessions = fm_calloc(M, sizeof *q->sessions);
    q->slots = fm_calloc((size_t)M * P, sizeof *q->slots);
    q->queue = fm_calloc(srv->cfg.max_queue > 0 ? srv->cfg.max_queue : 1, sizeof *q->queue);
    q->scratch = fm_malloc(sizeof(float) * 2 * (size_t)srv->V);
    q->lse = fm_calloc(P, sizeof *q->lse);
    q->join = fm_calloc(P, sizeof *q->join);
    q->echo = fm_calloc(P, sizeof *q->echo);
    int R = P > 128 ? P : 128; /* a session's row block: fm_session_append's most rows */
    q->seqs = fm_calloc(R, sizeof *q->seqs);
    q->toks = fm_calloc(R, sizeof *q->toks);
    q->lens = fm_calloc(P, sizeof *q->lens);
    q->ptrs = fm_calloc(P, sizeof *q->ptrs);
    if (!q->sessions || !q->slots || !q->queue || !q->scratch || !q->lse || !q->join || !q->echo || !q->seqs ||
        !q->toks || !q->lens || !q->ptrs) {
        sched_free(q);
        return fm_fail(FM_ERR_NOMEM, "out of memory for the scheduler");
    }
    fm_status st = FM_OK;
    for (int m = 0; m < M && !st; m++) { /* a session applies the adapter set when it is made */
        fm_model_use_adapter(srv->model, m ? srv->cfg.adapters[m - 1] : NULL);
        st = fm_session_init(&q->sessions[m], srv->model, P, srv->ctx);
    }
    fm_model_use_adapter(srv->model, NULL);
    if (st) {
        sched_free(q);
        return st;
    }
    if (pthread_cond_init(&q->wake, NULL)) {
        sched_free(q);
        return fm_fail(FM_ERR_NOMEM, "cannot make the scheduler's condition variable");
    }
    srv->sched = q;
    if (pthread_create(&q->thread, NULL, sched_main, srv)) {
        pthread_cond_destroy(&q->wake);
        srv->sched = NULL;
        sched_free(q);
        return fm_fail(FM_ERR_NOMEM, "cannot start the scheduler thread");
    }
    q->started = 1;
    return FM_OK;
}

void serve_sched_stop(fm_server *srv) {
    serve_sched *q = srv->sched;
    if (!q) return;
    pthread_mutex_lock(&srv->lock);
    q->stop = 1;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&srv->lock);
    if (q->started) pthread_join(q->thread, NULL);
    pthread_cond_destroy(&q->wake);
    srv->sched = NULL;
    sched_free(q);
}
