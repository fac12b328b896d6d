/*
 * server.c — `fm serve`'s HTTP side: libmicrohttpd with a thread per connection, the routes,
 * the API key, the body limit, waiting for a request's jobs, server-sent events, the metrics, and
 * starting and stopping the whole server (fm_server_start / fm_server_stop in fm.h).
 *
 * A connection's thread reads the body (over cfg.max_body: 413, refused from Content-Length
 * before the body is read when it says so), routes it (unknown path 404, wrong method 405 with
 * Allow), checks "Authorization: Bearer KEY" when there is a key (all but /health; 401), and for
 * a completion parses the request (api.c) and queues it with the scheduler (503 when the queue is
 * full or the server is stopping). It then waits on the request's condition variable: for the
 * whole result, or, streaming, for each new piece, which a libmicrohttpd content-reader callback
 * writes as events (blocking is allowed in thread-per-connection mode). While it waits it looks
 * at the socket every 100 ms: a client that has gone (the peer closed; or a failed write, which
 * ends the request through the request-completed callback) cancels its request, and the
 * scheduler frees its slots before the next step. Every answer is counted by status for
 * /metrics; the library itself prints nothing (cfg.log receives a line per request).
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "serve/serve.h"

/* One HTTP request on a connection. */
typedef struct {
    fm_server *srv;
    char *body;
    size_t len, cap;
    int too_large;
    int fd;
    serve_request *req;  /* a completion in flight (the HTTP side's reference) */
    char *out;           /* stream events not yet written */
    size_t out_len, out_cap, out_pos;
    int out_done;
    unsigned seen;       /* the request's version last turned into events */
    double t0;
    int status;
    char method[16], path[128];
} conn;

void fm_server_config_default(fm_server_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->parallel = 4;
    cfg->max_queue = 64;
    cfg->max_body = 1 << 20;
    cfg->timeout = 600;
}

int fm_server_port(const fm_server *srv) { return srv->port; }

/* ------------------------------------------------------------ answers */

static void count_status(fm_server *srv, int status) {
    serve_metrics *m = &srv->metrics;
    pthread_mutex_lock(&srv->lock);
    int i = 0;
    while (i < m->n_codes && m->codes[i] != status) i++;
    if (i == m->n_codes && i < 16) m->codes[m->n_codes++] = status;
    if (i < 16) m->code_counts[i]++;
    pthread_mutex_unlock(&srv->lock);
}

static enum MHD_Result respond(conn *x, struct MHD_Connection *c, int status, const char *type, const char *body,
                               size_t n, const char *allow) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (allow) MHD_add_response_header(r, "Allow", allow);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    x->status = status;
    count_status(x->srv, status);
    return ret;
}

static enum MHD_Result respond_json(conn *x, struct MHD_Connection *c, int status, char *json) {
    if (!json) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                                  "\"code\":\"internal_error\"}}";
        return respond(x, c, 500, "application/json", oom, sizeof oom - 1, NULL);
    }
    enum MHD_Result r = respond(x, c, status, "application/json", json, strlen(json), NULL);
    fm_free(json);
    return r;
}

static enum MHD_Result respond_error(conn *x, struct MHD_Connection *c, const serve_error *e, const char *allow) {
    char *json = serve_error_json(e);
    if (!json) return respond_json(x, c, 500, NULL);
    enum MHD_Result r = respond(x, c, e->status, "application/json", json, strlen(json), allow);
    fm_free(json);
    return r;
}

/* The peer has closed its side (or the socket failed). */
static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return 1;
    char ch;
    return (p.revents & POLLIN) && recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void wait_a_while(pthread_cond_t *cond, pthread_mutex_t *lock) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_cond_timedwait(cond, lock, &ts);
}

static int finished(const serve_request *req) { return req->failed || req->n_done == req->n_jobs; }

/* ------------------------------------------------------------ metrics */

static int hist_text(char **buf, size_t *len, size_t *cap, const char *name, const char *help, const serve_hist *h) {
    char line[256];
    int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    if (serve_buf_add(buf, len, cap, line, n)) return -1;
    uint64_t cum = 0;
    for (int b = 0; b <= SERVE_BUCKETS; b++) {
        cum += h->counts[b];
        if (b < SERVE_BUCKETS) n = snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name, serve_bucket_bounds[b],
                                            (unsigned long long)cum);
        else n = snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
        if (serve_buf_add(buf, len, cap, line, n)) return -1;
    }
    n = snprintf(line, sizeof line, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->n);
    return serve_buf_add(buf, len, cap, line, n);
}

static char *metrics_text(fm_server *srv) {
    char *buf = NULL, line[256];
    size_t len = 0, cap = 0;
    int rc = 0, n;
    pthread_mutex_lock(&srv->lock);
    const serve_metrics *m = &srv->metrics;
#define LINE(...) (n = snprintf(line, sizeof line, __VA_ARGS__), rc |= serve_buf_add(&buf, &len, &cap, line, n))
    LINE("# HELP fm_requests_total HTTP requests answered, by status code.\n# TYPE fm_requests_total counter\n");
    for (int i = 0; i < m->n_codes; i++)
        LINE("fm_requests_total{status=\"%d\"} %llu\n", m->codes[i], (unsigned long long)m->code_counts[i]);
    LINE("# HELP fm_prompt_tokens_total Prompt tokens of the completions queued.\n# TYPE fm_prompt_tokens_total counter\n"
         "fm_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    LINE("# HELP fm_generated_tokens_total Tokens sampled.\n# TYPE fm_generated_tokens_total counter\n"
         "fm_generated_tokens_total %llu\n", (unsigned long long)m->generated_tokens);
    LINE("# HELP fm_queue_length Requests waiting for a sequence slot.\n# TYPE fm_queue_length gauge\n"
         "fm_queue_length %d\n", serve_sched_queued(srv));
    LINE("# HELP fm_running_sequences Sequences decoding.\n# TYPE fm_running_sequences gauge\n"
         "fm_running_sequences %d\n", serve_sched_running(srv));
    LINE("# HELP fm_slots Sequence slots per model id.\n# TYPE fm_slots gauge\nfm_slots %d\n", srv->cfg.parallel);
#undef LINE
    rc |= hist_text(&buf, &len, &cap, "fm_time_to_first_token_seconds",
                    "Seconds from a completion's arrival to its first token.", &m->ttft);
    rc |= hist_text(&buf, &len, &cap, "fm_time_per_token_seconds", "Seconds between a sequence's tokens.",
                    &m->per_token);
    pthread_mutex_unlock(&srv->lock);
    if (rc) {
        fm_free(buf);
        return NULL;
    }
    return buf;
}

/* ------------------------------------------------------------ completions */

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    conn *x = cls;
    fm_server *srv = x->srv;
    for (;;) {
        if (x->out_pos < x->out_len) {
            size_t n = x->out_len - x->out_pos < max ? x->out_len - x->out_pos : max;
            memcpy(out, x->out + x->out_pos, n);
            x->out_pos += n;
            if (x->out_pos == x->out_len) x->out_pos = x->out_len = 0;
            return (ssize_t)n;
        }
        if (x->out_done) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&srv->lock);
        serve_request *req = x->req;
        while (req->version == x->seen && !finished(req)) {
            wait_a_while(&req->cond, &srv->lock);
            if (client_gone(x->fd)) {
                req->cancelled = 1;
                serve_sched_wake(srv);
                pthread_mutex_unlock(&srv->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        x->seen = req->version;
        int r = serve_stream_events(srv, req, &x->out, &x->out_len, &x->out_cap);
        pthread_mutex_unlock(&srv->lock);
        if (r < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (r == 1) x->out_done = 1;
    }
}

static enum MHD_Result complete(fm_server *srv, conn *x, struct MHD_Connection *c, serve_kind kind) {
    serve_error e;
    serve_request *req = serve_request_parse(srv, kind, x->body ? x->body : "", x->len, &e);
    if (!req) return respond_error(x, c, &e, NULL);
    pthread_mutex_lock(&srv->lock);
    int status = srv->draining ? 503 : 0;
    if (!status) {
        req->t_start = serve_now();
        req->deadline = req->t_start + srv->cfg.timeout;
        req->created = (long)time(NULL);
        snprintf(req->id, sizeof req->id, "%s-%llu", kind == SERVE_CHAT ? "chatcmpl" : "cmpl",
                 (unsigned long long)++srv->counter);
        if (!req->has_seed) { /* a fresh seed; the prompt's choices count from it */
            uint64_t base = fm_rng_u64(&srv->seeds);
            for (int j = 0; j < req->n_jobs; j++) req->jobs[j].seed = base + (uint64_t)(j % req->n);
        }
        status = serve_sched_submit(srv, req);
    }
    if (status) {
        serve_request_release(req);
        serve_error_set(&e, 503, NULL, srv->draining ? "the server is stopping" : "the queue is full (%d requests wait)",
                        srv->cfg.max_queue);
        pthread_mutex_unlock(&srv->lock);
        return respond_error(x, c, &e, NULL);
    }
    x->req = req;
    if (req->stream) {
        pthread_mutex_unlock(&srv->lock);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, x, NULL);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        x->status = 200;
        count_status(srv, 200);
        return ret;
    }
    while (!finished(req)) {
        wait_a_while(&req->cond, &srv->lock);
        if (!finished(req) && client_gone(x->fd)) {
            req->cancelled = 1;
            serve_sched_wake(srv);
            pthread_mutex_unlock(&srv->lock);
            x->status = 499; /* nginx's "client closed request", for the log line */
            return MHD_NO;
        }
    }
    char *json = NULL;
    int failed = req->failed;
    if (failed) serve_error_set(&e, failed, NULL, "%s", req->error);
    else json = serve_response_json(srv, req);
    pthread_mutex_unlock(&srv->lock);
    return failed ? respond_error(x, c, &e, NULL) : respond_json(x, c, 200, json);
}

/* ------------------------------------------------------------ routing */

enum { R_PAGE, R_HEALTH, R_MODELS, R_METRICS, R_COMPLETIONS, R_CHAT, R_TOKENIZE, R_DETOKENIZE };
static const struct {
    const char *path, *method;
} routes[] = {
    [R_PAGE] = {"/", "GET"},
    [R_HEALTH] = {"/health", "GET"},
    [R_MODELS] = {"/v1/models", "GET"},
    [R_METRICS] = {"/metrics", "GET"},
    [R_COMPLETIONS] = {"/v1/completions", "POST"},
    [R_CHAT] = {"/v1/chat/completions", "POST"},
    [R_TOKENIZE] = {"/tokenize", "POST"},
    [R_DETOKENIZE] = {"/detokenize", "POST"},
};
#define N_ROUTES (int)(sizeof routes / sizeof routes[0])

static int authorized(const fm_server *srv, struct MHD_Connection *c) {
    const char *key = srv->cfg.api_key;
    if (!key || !key[0]) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(key);
    if (strlen(h) != n) return 0;
    unsigned diff = 0; /* compared in full, whatever differs first */
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(h[i] ^ key[i]);
    return diff == 0;
}

static enum MHD_Result handle(fm_server *srv, conn *x, struct MHD_Connection *c, const char *url, const char *method) {
    serve_error e;
    if (x->too_large)
        return serve_error_set(&e, 413, NULL, "the body is larger than the server's limit of %zu bytes", srv->cfg.max_body),
               respond_error(x, c, &e, NULL);
    int route = -1;
    for (int i = 0; i < N_ROUTES && route < 0; i++)
        if (strcmp(url, routes[i].path) == 0) route = i;
    if (route < 0) return serve_error_set(&e, 404, NULL, "no route %.100s", url), respond_error(x, c, &e, NULL);
    if (strcmp(method, routes[route].method)) {
        serve_error_set(&e, 405, NULL, "%.100s takes %s, not %.16s", url, routes[route].method, method);
        return respond_error(x, c, &e, routes[route].method);
    }
    if (route != R_HEALTH && route != R_PAGE && !authorized(srv, c)) /* the page asks for the key itself */
        return serve_error_set(&e, 401, NULL, "a valid API key is required (Authorization: Bearer KEY)"),
               respond_error(x, c, &e, NULL);
    const char *body = x->body ? x->body : "";
    switch (route) {
    case R_PAGE: return respond(x, c, 200, "text/html; charset=utf-8", serve_chat_page, strlen(serve_chat_page), NULL);
    case R_HEALTH: {
        static const char ok[] = "{\"status\":\"ok\"}";
        return respond(x, c, 200, "application/json", ok, sizeof ok - 1, NULL);
    }
    case R_MODELS: return respond_json(x, c, 200, serve_models(srv));
    case R_METRICS: {
        char *text = metrics_text(srv);
        if (!text) return respond_json(x, c, 500, NULL);
        enum MHD_Result r = respond(x, c, 200, "text/plain; version=0.0.4", text, strlen(text), NULL);
        fm_free(text);
        return r;
    }
    case R_TOKENIZE:
    case R_DETOKENIZE: {
        char *json = route == R_TOKENIZE ? serve_tokenize(srv, body, x->len, &e) : serve_detokenize(srv, body, x->len, &e);
        return json ? respond_json(x, c, 200, json) : respond_error(x, c, &e, NULL);
    }
    default: return complete(srv, x, c, route == R_CHAT ? SERVE_CHAT : SERVE_COMPLETION);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    fm_server *srv = cls;
    conn *x = *con_cls;
    if (!x) {
        if (!(x = fm_calloc(1, sizeof *x))) return MHD_NO;
        x->srv = srv;
        x->t0 = serve_now();
        x->fd = -1;
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info) x->fd = info->connect_fd;
        snprintf(x->method, sizeof x->method, "%s", method);
        snprintf(x->path, sizeof x->path, "%s", url);
        *con_cls = x;
        pthread_mutex_lock(&srv->lock);
        srv->busy++;
        pthread_mutex_unlock(&srv->lock);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > srv->cfg.max_body) { /* refused before its body is read */
            x->too_large = 1;
            return handle(srv, x, c, url, method);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!x->too_large && x->len + *upload_size > srv->cfg.max_body) {
            x->too_large = 1;
            fm_free(x->body);
            x->body = NULL;
            x->len = x->cap = 0;
        }
        if (!x->too_large && serve_buf_add(&x->body, &x->len, &x->cap, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (x->status) return MHD_YES; /* answered already (413 from Content-Length) */
    return handle(srv, x, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c;
    fm_server *srv = cls;
    conn *x = *con_cls;
    if (!x) return;
    *con_cls = NULL;
    pthread_mutex_lock(&srv->lock);
    if (x->req) {
        if (!finished(x->req)) { /* the client left, or a write failed */
            x->req->cancelled = 1;
            serve_sched_wake(srv);
        }
        serve_request_release(x->req);
    }
    srv->busy--;
    pthread_cond_broadcast(&srv->idle);
    pthread_mutex_unlock(&srv->lock);
    if (srv->cfg.log) {
        char line[256];
        snprintf(line, sizeof line, "%s %s %d %.3fs%s", x->method, x->path, x->status ? x->status : 499,
                 serve_now() - x->t0, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
        srv->cfg.log(srv->cfg.log_user, line);
    }
    fm_free(x->body);
    fm_free(x->out);
    fm_free(x);
}

/* ------------------------------------------------------------ start, stop */

static void server_free(fm_server *srv) {
    serve_sched_stop(srv);
    pthread_cond_destroy(&srv->idle);
    pthread_mutex_destroy(&srv->lock);
    fm_free(srv);
}

fm_status fm_server_start(fm_server **out, const fm_server_config *cfg) {
    *out = NULL;
    if (!cfg || !cfg->model || !cfg->tok || !cfg->model_id || !cfg->model_id[0])
        return fm_fail(FM_ERR_ARG, "server: a model, its tokenizer and a model id are required");
    if (cfg->parallel < 1 || cfg->parallel > 4096)
        return fm_fail(FM_ERR_ARG, "server: parallel %d: must be between 1 and 4096", cfg->parallel);
    if (cfg->max_queue < 0) return fm_fail(FM_ERR_ARG, "server: max_queue %d is negative", cfg->max_queue);
    if (cfg->n_adapters < 0 || (cfg->n_adapters && (!cfg->adapters || !cfg->adapter_ids)))
        return fm_fail(FM_ERR_ARG, "server: %d adapters but none given", cfg->n_adapters);
    if (!(cfg->timeout > 0)) return fm_fail(FM_ERR_ARG, "server: the time limit must be positive");
    int V = fm_model_config(cfg->model)->vocab_size;
    if (fm_tokenizer_vocab_size(cfg->tok) > V)
        return fm_fail(FM_ERR_MISMATCH, "server: the tokenizer has %d ids, the model %d", fm_tokenizer_vocab_size(cfg->tok),
                       V);
    fm_server *srv = fm_calloc(1, sizeof *srv);
    if (!srv) return fm_fail(FM_ERR_NOMEM, "out of memory for the server");
    srv->cfg = *cfg;
    if (!srv->cfg.host) srv->cfg.host = "127.0.0.1";
    if (!srv->cfg.max_body) srv->cfg.max_body = 1 << 20;
    srv->model = cfg->model;
    srv->tok = cfg->tok;
    srv->V = V;
    srv->ctx = fm_model_config(cfg->model)->n_positions;
    srv->eos = fm_tokenizer_special_id(cfg->tok, "<|endoftext|>");
    srv->chat_ok = fm_chat_check_tokenizer(cfg->tok) == FM_OK;
    fm_rng_seed(&srv->seeds, (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->idle, NULL);
    fm_status st = serve_sched_start(srv);
    if (st) {
        server_free(srv);
        return st;
    }
    /* the address: a numeric one or a name, IPv4 or IPv6 */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(srv->cfg.host, port, &hints, &ai);
    if (gai) {
        server_free(srv);
        return fm_fail(FM_ERR_IO, "server: cannot resolve '%s': %s", cfg->host, gai_strerror(gai));
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    unsigned limit = (unsigned)(cfg->max_queue + cfg->parallel * (1 + cfg->n_adapters) + 64);
    errno = 0;
    srv->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
                                   ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                   MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                   MHD_OPTION_END);
    int err = errno;
    freeaddrinfo(ai);
    if (!srv->daemon) {
        server_free(srv);
        return fm_fail(FM_ERR_IO, "server: cannot listen on %s port %d%s%s", cfg->host, cfg->port, err ? ": " : "",
                       err ? strerror(err) : "");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : cfg->port;
    *out = srv;
    return FM_OK;
}

void fm_server_stop(fm_server *srv) {
    if (!srv) return;
    pthread_mutex_lock(&srv->lock);
    srv->draining = 1;
    pthread_mutex_unlock(&srv->lock);
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon); /* no new connections */
    if (fd != MHD_INVALID_SOCKET) close(fd);
    double until = serve_now() + srv->cfg.timeout + 5;
    pthread_mutex_lock(&srv->lock);
    while (srv->busy > 0 && serve_now() < until) wait_a_while(&srv->idle, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    MHD_stop_daemon(srv->daemon);
    server_free(srv);
}
