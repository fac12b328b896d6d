/*
 * serve.h — what the server's files share (not part of the public API): the request and
 * its choices (jobs), the scheduler, the metrics, and the server object itself.
 *
 * server.c: HTTP (libmicrohttpd), routing, authentication, limits, waiting, streaming, metrics.
 * api.c: OpenAI's request fields parsed and checked into a serve_request; responses and stream
 *        chunks written from one; tokenize, detokenize and the model list.
 * chat_page.c: the chat page served at "/" (src/serve/chat.html, built in).
 * scheduler.c: continuous batching; one thread owns the sessions and runs every request's jobs.
 *
 * Locking: one mutex (fm_server.lock) guards the queue, every request's state and its jobs'
 * outputs, and the metrics. The scheduler holds it except while a session computes; the HTTP
 * threads hold it while they read a request's output or change its state.
 */
#ifndef FM_SERVE_H
#define FM_SERVE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "fm.h"

#define SERVE_MAX_STOPS 16   /* stop strings a request may give */
#define SERVE_MAX_TOP 20     /* top log-probs per position at most */
#define SERVE_MAX_CHOICES 64 /* prompts x n at most */
#define SERVE_REPEAT_WINDOW 64

typedef enum { SERVE_COMPLETION = 0, SERVE_CHAT } serve_kind;
typedef enum { SERVE_FINISH_NONE = 0, SERVE_FINISH_STOP, SERVE_FINISH_LENGTH, SERVE_FINISH_CANCEL } serve_finish;

typedef struct serve_request serve_request;

/* One prompt of a request: its ids and the text they decode to (echo, offsets). */
typedef struct {
    int *ids;
    int n;
    char *text;
    size_t text_len;
} serve_prompt;

/* One choice: one sequence in a session slot. Written by the scheduler under the lock. */
typedef struct {
    serve_request *req;
    int index;        /* the choice's index in the response: prompt * n + its number */
    int prompt;       /* which of the request's prompts it continues */
    uint64_t seed;    /* its sampler's seed */
    /* the scheduler's */
    int slot;         /* its slot in the session while it runs, else -1 */
    fm_rng rng;
    int *hist;        /* (prompt + max_tokens) the prompt and the generated ids */
    int hist_n;
    int next;         /* the id the next step feeds */
    double t_last;    /* when its last token came (per-token latency) */
    /* output: the generated ids (eos excluded), their log-probs and top log-probs */
    int *tokens;      /* (max_tokens) */
    float *lps;       /* (max_tokens) */
    size_t *offsets;  /* (max_tokens) where each token's bytes start in text */
    int *top_ids;     /* (max_tokens * top_n) */
    float *top_lps;
    int n_tokens;
    char *text;       /* the generated text, NUL-terminated */
    size_t text_len, text_cap;
    size_t final_len; /* bytes of text that are final (no stop string can start in them) */
    int final_tokens; /* tokens whose bytes are all final */
    serve_finish finish;
    int done;
    /* echo with log-probs: the prompt's (lps[0] NAN), computed when the job joins */
    float *prompt_lps;
    int *prompt_top_ids;
    float *prompt_top_lps;
    /* the stream's cursor (HTTP side) */
    size_t sent_text;
    int sent_tokens;
    int sent_start;   /* its opening (chat: the role; completions with echo: the prompt) is sent */
    int sent_end;     /* its finish_reason is sent */
} serve_job;

struct serve_request {
    serve_kind kind;
    int model;        /* 0 the base, 1 + i adapter i */
    char model_name[256];
    serve_prompt *prompts;
    int n_prompts;
    int n;            /* choices per prompt */
    int max_tokens;
    fm_sampler_config sampler;
    char *stops[SERVE_MAX_STOPS];
    int n_stops;
    size_t hold;      /* text held back while it may begin a stop string: longest stop - 1 */
    int logprobs;     /* log-probs wanted */
    int top_n;        /* top log-probs per position */
    int echo, stream, include_usage;
    int ignore_eos;   /* fm's extra: <|endoftext|> is a token like any other */
    int has_seed;
    uint64_t seed;
    serve_job *jobs;
    int n_jobs;
    /* state, under the lock */
    int refs;         /* the HTTP side and, while it queues or runs, the scheduler */
    int queued;       /* in the queue */
    int next_join;    /* jobs that have taken a slot */
    int n_done;
    int cancelled;    /* the client left: the scheduler drops its jobs */
    int failed;       /* 0, or the HTTP status of an error that ended it (504 timeout, 500) */
    char error[256];
    unsigned version; /* bumped whenever its output grows */
    pthread_cond_t cond;
    double t_start, deadline;
    int got_first;
    char id[48];
    long created;
};

/* Prometheus histogram. */
#define SERVE_BUCKETS 12
typedef struct {
    uint64_t counts[SERVE_BUCKETS + 1]; /* the last: +Inf */
    double sum;
    uint64_t n;
} serve_hist;

typedef struct {
    int codes[16];
    uint64_t code_counts[16];
    int n_codes;
    uint64_t prompt_tokens, generated_tokens;
    serve_hist ttft, per_token;
} serve_metrics;

typedef struct serve_sched serve_sched;

struct fm_server {
    fm_server_config cfg;
    fm_model *model;
    const fm_tokenizer *tok;
    int V, ctx, eos;
    int chat_ok;                /* the tokenizer has the chat template's tokens */
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t lock;
    serve_metrics metrics;
    serve_sched *sched;
    int draining;               /* stopping: new requests get 503 */
    int busy;                   /* requests an HTTP thread is handling */
    pthread_cond_t idle;        /* signalled when busy drops */
    uint64_t counter;           /* request ids */
    fm_rng seeds;               /* seeds for requests without one */
};

/* ---------------------------------------------------------------- api.c */

/* An error for the client: HTTP status, OpenAI's type, the offending field (or ""), a message. */
typedef struct {
    int status;
    const char *type;
    char param[64];
    char message[512];
} serve_error;

/* Sets e (status, the type that goes with it, param, printf message); returns e->status. */
int serve_error_set(serve_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* {"error":{"message","type","param","code"}} as malloc'd text. */
char *serve_error_json(const serve_error *e);
/* Parses and checks a completions or chat request body into a new request (refs 1, not queued),
 * its prompts tokenized and its jobs' buffers allocated. On failure returns NULL with e set (400,
 * 404 for an unknown model, 500 when out of memory). Call with the lock not held. */
serve_request *serve_request_parse(fm_server *srv, serve_kind kind, const char *body, size_t len, serve_error *e);
void serve_request_free(serve_request *req);
/* The whole response of a finished request, malloc'd JSON (NULL when out of memory). */
char *serve_response_json(const fm_server *srv, const serve_request *req);
/* Appends to *buf (malloc'd, *len, *cap) the stream events for what the request's jobs made since
 * the last call (their cursors move), and, when every job is done, the closing events and
 * "data: [DONE]". Returns 1 when the stream is complete, -1 when out of memory, else 0. */
int serve_stream_events(const fm_server *srv, serve_request *req, char **buf, size_t *len, size_t *cap);
/* The JSON bodies of /tokenize, /detokenize and /v1/models; NULL with e set on a bad request. */
char *serve_tokenize(const fm_server *srv, const char *body, size_t len, serve_error *e);
char *serve_detokenize(const fm_server *srv, const char *body, size_t len, serve_error *e);
char *serve_models(const fm_server *srv);
/* Appends n bytes to a growing buffer; -1 when out of memory. */
int serve_buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* ---------------------------------------------------------------- chat_page.c */

/* The chat page served at "/" (src/serve/chat.html), NUL-terminated. */
extern const char serve_chat_page[];

/* ---------------------------------------------------------------- scheduler.c */

/* Starts the scheduler thread with a session of cfg.parallel sequences per model id. */
fm_status serve_sched_start(fm_server *srv);
/* Ends the thread once the queue and the slots are empty, and frees the sessions. */
void serve_sched_stop(fm_server *srv);
/* Queues req (the scheduler takes a reference); 0, or 503 when the queue is full. Lock held. */
int serve_sched_submit(fm_server *srv, serve_request *req);
/* Wakes the scheduler (a request was cancelled). Lock held. */
void serve_sched_wake(fm_server *srv);
/* Requests waiting for a slot, and sequences running. Lock held. */
int serve_sched_queued(const fm_server *srv);
int serve_sched_running(const fm_server *srv);
/* Drops one reference to req, freeing it at zero. Lock held. */
void serve_request_release(serve_request *req);
/* Seconds on a monotonic clock. */
double serve_now(void);
/* Adds v to a histogram of the metrics. Lock held. */
void serve_hist_add(serve_hist *h, double v);
extern const double serve_bucket_bounds[SERVE_BUCKETS];

#endif /* FM_SERVE_H */
