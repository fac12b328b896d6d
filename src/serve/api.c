/*
 * api.c — OpenAI's API as the server speaks it: the request fields of /v1/completions and
 * /v1/chat/completions parsed and checked into a serve_request (prompts tokenized, every buffer
 * its jobs need allocated up front), the responses and stream chunks in OpenAI's shapes, the
 * error object, /tokenize, /detokenize and /v1/models.
 *
 * Every field is checked for its type and range, and a wrong one is refused (400) with a message
 * and "param" naming it; unknown fields are ignored, as llama.cpp's server ignores them. Text
 * going into JSON is made valid UTF-8 (each invalid sequence and each NUL byte becomes U+FFFD);
 * a stream holds back a character whose bytes have not all come yet. The field list and shapes:
 * docs/serve.md. Not for: HTTP (server.c) or running the requests (scheduler.c).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "serve/serve.h"

/* ------------------------------------------------------------ errors */

static const char *type_of(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 503: return "unavailable_error";
    case 504: return "timeout_error";
    case 500: return "server_error";
    default: return "invalid_request_error";
    }
}

int serve_error_set(serve_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = type_of(status);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return status;
}

static const char *code_of(const serve_error *e) {
    switch (e->status) {
    case 400: return "invalid_request";
    case 401: return "invalid_api_key";
    case 404: return strcmp(e->param, "model") == 0 ? "model_not_found" : "not_found";
    case 405: return "method_not_allowed";
    case 413: return "request_too_large";
    case 503: return "unavailable";
    case 504: return "timeout";
    default: return "internal_error";
    }
}

/* ------------------------------------------------------------ text into JSON */

/* The length of the UTF-8 sequence starting at p (1..4), or 0 when it is not a valid one. */
static int utf8_seq(const unsigned char *p, size_t avail) {
    unsigned c = p[0];
    int need = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
    if (need < 0 || avail <= (size_t)need) return 0;
    unsigned cp = need == 0 ? c : need == 1 ? c & 0x1F : need == 2 ? c & 0x0F : c & 0x07;
    for (int i = 1; i <= need; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    unsigned least = need == 0 ? 0 : need == 1 ? 0x80 : need == 2 ? 0x800 : 0x10000;
    if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need + 1;
}

/* n bytes as a JSON string: invalid UTF-8 and NUL bytes become U+FFFD. */
static cJSON *json_text(const char *s, size_t n) {
    char *out = fm_malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        int k = *p ? utf8_seq(p, (size_t)(end - p)) : 0;
        if (k == 0) {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            p++;
        } else {
            memcpy(o, p, k);
            o += k;
            p += k;
        }
    }
    *o = '\0';
    cJSON *j = cJSON_CreateString(out);
    fm_free(out);
    return j;
}

/* The longest prefix of s (n bytes) that does not end inside a character still to come. */
static size_t utf8_complete(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = p[n - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return (size_t)len > back ? n - back : n;
    }
    return n;
}

static int add(cJSON *obj, const char *key, cJSON *item) {
    if (!item) return -1;
    cJSON_AddItemToObject(obj, key, item);
    return 0;
}

int serve_buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (*len + n + 1 > c) c *= 2;
        char *b = fm_realloc(*buf, c);
        if (!b) return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

char *serve_error_json(const serve_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_CreateObject();
    char *out = NULL;
    if (root && err) {
        cJSON_AddItemToObject(root, "error", err);
        err = NULL;
        cJSON *in = cJSON_GetObjectItem(root, "error");
        /* the message may quote the request's own bytes (a role, a model, a path): valid UTF-8 */
        cJSON *message = json_text(e->message, strlen(e->message));
        if (message) cJSON_AddItemToObject(in, "message", message);
        cJSON_AddStringToObject(in, "type", e->type ? e->type : type_of(e->status));
        if (e->param[0]) cJSON_AddStringToObject(in, "param", e->param);
        else cJSON_AddNullToObject(in, "param");
        cJSON_AddStringToObject(in, "code", code_of(e));
        out = message ? cJSON_PrintUnformatted(root) : NULL;
    }
    cJSON_Delete(root);
    cJSON_Delete(err);
    return out;
}

/* ------------------------------------------------------------ request parsing */

/* Parses a body that must be one JSON object (white space after it allowed). */
static cJSON *parse_body(const char *body, size_t len, serve_error *e) {
    const char *nul = memchr(body, 0, len); /* JSON has none; cJSON would end a string there */
    if (nul) {
        serve_error_set(e, 400, NULL, "the body is not valid JSON (a NUL byte at byte %zu)", (size_t)(nul - body));
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        serve_error_set(e, 400, NULL, "the body is not valid JSON (at byte %zu)", at);
        return NULL;
    }
    while (end && end < body + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && end < body + len && *end) {
        cJSON_Delete(root);
        serve_error_set(e, 400, NULL, "the body has content after its JSON value (at byte %zu)", (size_t)(end - body));
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        serve_error_set(e, 400, NULL, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* A field that is absent or null. */
static int absent(const cJSON *f) { return !f || cJSON_IsNull(f); }

/* Number fields: 0 when absent, 1 when read, -1 (e set) when of the wrong type or range. */
static int get_number(const cJSON *root, const char *name, double lo, double hi, double *out, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, name);
    if (absent(f)) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble)) {
        serve_error_set(e, 400, name, "'%s' must be a number", name);
        return -1;
    }
    if (f->valuedouble < lo || f->valuedouble > hi) {
        serve_error_set(e, 400, name, "'%s' is %g: it must be between %g and %g", name, f->valuedouble, lo, hi);
        return -1;
    }
    *out = f->valuedouble;
    return 1;
}

static int get_int(const cJSON *root, const char *name, double lo, double hi, int *out, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, name);
    if (!absent(f) && (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble))) {
        serve_error_set(e, 400, name, "'%s' must be an integer", name);
        return -1;
    }
    double v;
    int r = get_number(root, name, lo, hi, &v, e);
    if (r == 1) *out = (int)v;
    return r;
}

static int get_bool(const cJSON *root, const char *name, int *out, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, name);
    if (absent(f)) return 0;
    if (!cJSON_IsBool(f)) {
        serve_error_set(e, 400, name, "'%s' must be true or false", name);
        return -1;
    }
    *out = cJSON_IsTrue(f);
    return 1;
}

/* ids of a JSON array of integers in [0, V); -1 with e set otherwise. */
static int read_ids(const fm_server *srv, const cJSON *arr, const char *name, serve_prompt *p, serve_error *e) {
    int n = cJSON_GetArraySize(arr);
    p->ids = fm_malloc(sizeof(int) * (n ? n : 1));
    if (!p->ids) return serve_error_set(e, 500, NULL, "out of memory"), -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < 0 ||
            it->valuedouble >= srv->V) {
            serve_error_set(e, 400, name, "'%s' holds something that is not a token id in [0, %d)", name, srv->V);
            return -1;
        }
        p->ids[p->n++] = (int)it->valuedouble;
    }
    return 0;
}

/* Encodes text (special tokens as text); an empty text is <|endoftext|>. */
static int encode_text(const fm_server *srv, const char *text, const char *name, serve_prompt *p, serve_error *e) {
    size_t n = 0;
    if (!text[0]) {
        if (srv->eos < 0) return serve_error_set(e, 400, name, "'%s' is empty", name), -1;
        p->ids = fm_malloc(sizeof(int));
        if (!p->ids) return serve_error_set(e, 500, NULL, "out of memory"), -1;
        p->ids[0] = srv->eos;
        p->n = 1;
        return 0;
    }
    if (fm_tokenizer_encode(srv->tok, text, strlen(text), 0, &p->ids, &n))
        return serve_error_set(e, 500, NULL, "encoding '%s': %s", name, fm_last_error()), -1;
    p->n = (int)n;
    return 0;
}

/* The prompts of a completions request: a string, strings, ids, or lists of ids. */
static int read_prompts(const fm_server *srv, serve_request *req, const cJSON *root, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, "prompt");
    if (absent(f)) return serve_error_set(e, 400, "prompt", "'prompt' is required"), -1;
    int many = cJSON_IsArray(f) && cJSON_GetArraySize(f) > 0 &&
               (cJSON_IsString(cJSON_GetArrayItem(f, 0)) || cJSON_IsArray(cJSON_GetArrayItem(f, 0)));
    if (!cJSON_IsString(f) && !cJSON_IsArray(f))
        return serve_error_set(e, 400, "prompt", "'prompt' must be a string, a list of strings or of token ids"), -1;
    if (cJSON_IsArray(f) && cJSON_GetArraySize(f) == 0)
        return serve_error_set(e, 400, "prompt", "'prompt' is an empty list"), -1;
    int n = many ? cJSON_GetArraySize(f) : 1;
    if (n > SERVE_MAX_CHOICES)
        return serve_error_set(e, 400, "prompt", "'prompt' has %d prompts: at most %d", n, SERVE_MAX_CHOICES), -1;
    req->prompts = fm_calloc(n, sizeof *req->prompts);
    if (!req->prompts) return serve_error_set(e, 500, NULL, "out of memory"), -1;
    req->n_prompts = n;
    for (int i = 0; i < n; i++) {
        const cJSON *item = many ? cJSON_GetArrayItem(f, i) : f;
        serve_prompt *p = &req->prompts[i];
        if (cJSON_IsString(item)) {
            if (encode_text(srv, item->valuestring, "prompt", p, e)) return -1;
        } else if (cJSON_IsArray(item) && cJSON_GetArraySize(item) > 0) {
            if (read_ids(srv, item, "prompt", p, e)) return -1;
        } else {
            return serve_error_set(e, 400, "prompt",
                                   "'prompt' must be a string, a list of strings, a list of token ids or of such lists"),
                   -1;
        }
    }
    return 0;
}

/* The text of a message's content: a string, or a list of {"type": "text", "text": ...} parts. */
static char *message_text(const cJSON *content, serve_error *e) {
    if (absent(content)) return fm_strdup("");
    if (cJSON_IsString(content)) return fm_strdup(content->valuestring);
    if (!cJSON_IsArray(content)) {
        serve_error_set(e, 400, "messages", "a message's 'content' must be a string or a list of text parts");
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (serve_buf_add(&buf, &len, &cap, "", 0)) return NULL;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItem(part, "type"), *text = cJSON_GetObjectItem(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text)) {
            fm_free(buf);
            serve_error_set(e, 400, "messages", "a content part must be {\"type\": \"text\", \"text\": string}");
            return NULL;
        }
        if (serve_buf_add(&buf, &len, &cap, text->valuestring, strlen(text->valuestring))) {
            fm_free(buf);
            return NULL;
        }
    }
    return buf;
}

/* The prompt of a chat request: its messages through the chat template. */
static int read_messages(const fm_server *srv, serve_request *req, const cJSON *root, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, "messages");
    if (absent(f)) return serve_error_set(e, 400, "messages", "'messages' is required"), -1;
    if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) == 0)
        return serve_error_set(e, 400, "messages", "'messages' must be a non-empty list of messages"), -1;
    if (!srv->chat_ok)
        return serve_error_set(e, 400, "messages",
                               "the model's tokenizer lacks the chat template's tokens (<|system|>, <|user|>, "
                               "<|assistant|>, <|endoftext|>)"),
               -1;
    int n = cJSON_GetArraySize(f), rc = -1;
    fm_chat_message *msgs = fm_calloc(n, sizeof *msgs);
    char **texts = fm_calloc(n, sizeof *texts);
    req->prompts = fm_calloc(1, sizeof *req->prompts);
    if (!msgs || !texts || !req->prompts) {
        serve_error_set(e, 500, NULL, "out of memory");
        goto done;
    }
    req->n_prompts = 1;
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(f, i), *role = cJSON_GetObjectItem(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            serve_error_set(e, 400, "messages", "message %d must be an object with a string 'role'", i);
            goto done;
        }
        const char *r = role->valuestring;
        if (strcmp(r, "developer") == 0) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
            serve_error_set(e, 400, "messages", "message %d has role '%.64s': system, user or assistant", i, r);
            goto done;
        }
        if (!(texts[i] = message_text(cJSON_GetObjectItem(m, "content"), e))) {
            if (!e->status) serve_error_set(e, 500, NULL, "out of memory");
            goto done;
        }
        msgs[i] = (fm_chat_message){r, texts[i]};
    }
    size_t n_ids = 0;
    if (fm_chat_encode(srv->tok, msgs, n, 1, 0, &req->prompts[0].ids, NULL, &n_ids)) {
        serve_error_set(e, 400, "messages", "%s", fm_last_error());
        goto done;
    }
    req->prompts[0].n = (int)n_ids;
    rc = 0;
done:
    for (int i = 0; texts && i < n; i++) fm_free(texts[i]);
    fm_free(texts);
    fm_free(msgs);
    return rc;
}

/* "stop": a string or a list of strings (empty ones ignored). */
static int read_stops(serve_request *req, const cJSON *root, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, "stop");
    if (absent(f)) return 0;
    int list = cJSON_IsArray(f);
    if (!list && !cJSON_IsString(f)) return serve_error_set(e, 400, "stop", "'stop' must be a string or a list of strings"), -1;
    int n = list ? cJSON_GetArraySize(f) : 1;
    if (n > SERVE_MAX_STOPS) return serve_error_set(e, 400, "stop", "'stop' has %d strings: at most %d", n, SERVE_MAX_STOPS), -1;
    for (int i = 0; i < n; i++) {
        const cJSON *s = list ? cJSON_GetArrayItem(f, i) : f;
        if (!cJSON_IsString(s)) return serve_error_set(e, 400, "stop", "'stop' must be a string or a list of strings"), -1;
        if (!s->valuestring[0]) continue;
        if (!(req->stops[req->n_stops] = fm_strdup(s->valuestring)))
            return serve_error_set(e, 500, NULL, "out of memory"), -1;
        size_t len = strlen(s->valuestring);
        if (len - 1 > req->hold) req->hold = len - 1;
        req->n_stops++;
    }
    return 0;
}

/* The sampling fields, n, max_tokens, seed, stream, logprobs and echo. */
static int read_options(serve_request *req, const cJSON *root, serve_error *e) {
    double v;
    int r, b;
    fm_sampler_config_default(&req->sampler);
    if ((r = get_number(root, "temperature", 0, 100, &v, e)) < 0) return -1;
    if (r) req->sampler.temperature = (float)v;
    if ((r = get_number(root, "top_p", 0, 1, &v, e)) < 0) return -1;
    if (r && v <= 0) return serve_error_set(e, 400, "top_p", "'top_p' must be above 0"), -1;
    if (r) req->sampler.top_p = (float)v;
    if (get_int(root, "top_k", 0, 1e9, &req->sampler.top_k, e) < 0) return -1;
    if ((r = get_number(root, "min_p", 0, 1, &v, e)) < 0) return -1;
    if (r) req->sampler.min_p = (float)v;
    if ((r = get_number(root, "repeat_penalty", 1e-3, 100, &v, e)) < 0) return -1;
    if (r) req->sampler.repeat_penalty = (float)v;
    static const char *const unsupported[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        if ((r = get_number(root, unsupported[i], -2, 2, &v, e)) < 0) return -1;
        if (r && v != 0)
            return serve_error_set(e, 400, unsupported[i], "'%s' is not supported (use repeat_penalty)", unsupported[i]),
                   -1;
    }
    req->n = 1;
    if (get_int(root, "n", 1, SERVE_MAX_CHOICES, &req->n, e) < 0) return -1;
    double seed;
    if ((r = get_number(root, "seed", -9.2e18, 1.8e19, &seed, e)) < 0) return -1;
    if (r && seed != floor(seed)) return serve_error_set(e, 400, "seed", "'seed' must be an integer"), -1;
    if (r) {
        req->has_seed = 1;
        req->seed = seed < 0 ? (uint64_t)(int64_t)seed : (uint64_t)seed;
    }
    if (get_bool(root, "stream", &req->stream, e) < 0) return -1;
    if (get_bool(root, "ignore_eos", &req->ignore_eos, e) < 0) return -1;
    const cJSON *so = cJSON_GetObjectItem(root, "stream_options");
    if (!absent(so)) {
        if (!cJSON_IsObject(so)) return serve_error_set(e, 400, "stream_options", "'stream_options' must be an object"), -1;
        if (get_bool(so, "include_usage", &req->include_usage, e) < 0) return -1;
    }
    int mt = -1;
    if (get_int(root, "max_tokens", 0, 1e9, &mt, e) < 0) return -1;
    if (req->kind == SERVE_CHAT && mt < 0 && get_int(root, "max_completion_tokens", 0, 1e9, &mt, e) < 0) return -1;
    if (req->kind == SERVE_COMPLETION) {
        if (get_bool(root, "echo", &req->echo, e) < 0) return -1;
        if ((r = get_int(root, "logprobs", 0, SERVE_MAX_TOP, &req->top_n, e)) < 0) return -1;
        req->logprobs = r == 1;
        const cJSON *suffix = cJSON_GetObjectItem(root, "suffix");
        if (!absent(suffix) && (!cJSON_IsString(suffix) || suffix->valuestring[0]))
            return serve_error_set(e, 400, "suffix", "'suffix' is not supported"), -1;
    } else {
        if ((r = get_bool(root, "logprobs", &b, e)) < 0) return -1;
        req->logprobs = r == 1 && b;
        if ((r = get_int(root, "top_logprobs", 0, SERVE_MAX_TOP, &req->top_n, e)) < 0) return -1;
        if (r && !req->logprobs) return serve_error_set(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true"), -1;
    }
    if (mt == 0 && !req->echo)
        return serve_error_set(e, 400, "max_tokens", "'max_tokens' must be at least 1 (0 only with 'echo')"), -1;
    req->max_tokens = mt;
    return read_stops(req, root, e);
}

/* The model a request names: the base, or an adapter's id. */
static int read_model(const fm_server *srv, serve_request *req, const cJSON *root, serve_error *e) {
    const cJSON *f = cJSON_GetObjectItem(root, "model");
    const char *name = srv->cfg.model_id;
    req->model = 0;
    if (!absent(f)) {
        if (!cJSON_IsString(f)) return serve_error_set(e, 400, "model", "'model' must be a string"), -1;
        if (f->valuestring[0] && strcmp(f->valuestring, srv->cfg.model_id)) {
            int m = -1;
            for (int i = 0; i < srv->cfg.n_adapters && m < 0; i++)
                if (strcmp(f->valuestring, srv->cfg.adapter_ids[i]) == 0) m = i;
            if (m < 0) return serve_error_set(e, 404, "model", "the model '%.200s' does not exist", f->valuestring), -1;
            req->model = m + 1;
            name = srv->cfg.adapter_ids[m];
        }
    }
    snprintf(req->model_name, sizeof req->model_name, "%s", name);
    return 0;
}

void serve_request_free(serve_request *req) {
    if (!req) return;
    for (int i = 0; req->prompts && i < req->n_prompts; i++) {
        fm_free(req->prompts[i].ids);
        fm_free(req->prompts[i].text);
    }
    fm_free(req->prompts);
    for (int i = 0; i < req->n_stops; i++) fm_free(req->stops[i]);
    for (int j = 0; req->jobs && j < req->n_jobs; j++) {
        serve_job *job = &req->jobs[j];
        fm_free(job->hist);
        fm_free(job->tokens);
        fm_free(job->lps);
        fm_free(job->offsets);
        fm_free(job->top_ids);
        fm_free(job->top_lps);
        fm_free(job->text);
        fm_free(job->prompt_lps);
        fm_free(job->prompt_top_ids);
        fm_free(job->prompt_top_lps);
    }
    fm_free(req->jobs);
    pthread_cond_destroy(&req->cond);
    fm_free(req);
}

/* Every job's buffers, sized by its prompt and max_tokens. */
static int make_jobs(serve_request *req, serve_error *e) {
    req->n_jobs = req->n_prompts * req->n;
    if (req->n_jobs > SERVE_MAX_CHOICES)
        return serve_error_set(e, 400, "n", "%d prompts x n %d = %d choices: at most %d", req->n_prompts, req->n,
                               req->n_jobs, SERVE_MAX_CHOICES),
               -1;
    req->jobs = fm_calloc(req->n_jobs, sizeof *req->jobs);
    if (!req->jobs) return serve_error_set(e, 500, NULL, "out of memory"), -1;
    size_t T = (size_t)req->max_tokens + 1, K = req->top_n;
    for (int p = 0; p < req->n_prompts; p++)
        for (int c = 0; c < req->n; c++) {
            serve_job *job = &req->jobs[p * req->n + c];
            const serve_prompt *pr = &req->prompts[p];
            job->req = req;
            job->index = p * req->n + c;
            job->prompt = p;
            job->slot = -1;
            job->seed = req->seed + (uint64_t)c;
            job->hist = fm_malloc(sizeof(int) * (pr->n + T));
            job->tokens = fm_malloc(sizeof(int) * T);
            job->lps = fm_malloc(sizeof(float) * T);
            job->offsets = fm_malloc(sizeof(size_t) * T);
            job->top_ids = K ? fm_malloc(sizeof(int) * T * K) : NULL;
            job->top_lps = K ? fm_malloc(sizeof(float) * T * K) : NULL;
            job->text = fm_malloc(1);
            job->text_cap = 1;
            int echo_lp = req->echo && req->logprobs;
            job->prompt_lps = echo_lp ? fm_malloc(sizeof(float) * pr->n) : NULL;
            job->prompt_top_ids = echo_lp && K ? fm_calloc((size_t)pr->n * K, sizeof(int)) : NULL;
            job->prompt_top_lps = echo_lp && K ? fm_calloc((size_t)pr->n * K, sizeof(float)) : NULL;
            if (!job->hist || !job->tokens || !job->lps || !job->offsets || (K && (!job->top_ids || !job->top_lps)) ||
                !job->text || (echo_lp && !job->prompt_lps) || (echo_lp && K && (!job->prompt_top_ids ||
                                                                                  !job->prompt_top_lps)))
                return serve_error_set(e, 500, NULL, "out of memory"), -1;
            job->text[0] = '\0';
            memcpy(job->hist, pr->ids, sizeof(int) * pr->n);
            job->hist_n = pr->n;
        }
    return 0;
}

serve_request *serve_request_parse(fm_server *srv, serve_kind kind, const char *body, size_t len, serve_error *e) {
    memset(e, 0, sizeof *e);
    cJSON *root = parse_body(body, len, e);
    if (!root) return NULL;
    serve_request *req = fm_calloc(1, sizeof *req);
    if (!req || pthread_cond_init(&req->cond, NULL)) {
        fm_free(req);
        cJSON_Delete(root);
        serve_error_set(e, 500, NULL, "out of memory");
        return NULL;
    }
    req->kind = kind;
    req->refs = 1;
    const char *pname = kind == SERVE_CHAT ? "messages" : "prompt";
    int bad = read_model(srv, req, root, e) || read_options(req, root, e) ||
              (kind == SERVE_CHAT ? read_messages(srv, req, root, e) : read_prompts(srv, req, root, e));
    for (int i = 0; !bad && i < req->n_prompts; i++) { /* the prompt and max_tokens must fit the context */
        serve_prompt *p = &req->prompts[i];
        int want = req->max_tokens >= 0 ? req->max_tokens : kind == SERVE_CHAT ? 1 : 16; /* chat: room for one */
        if (p->n + want > srv->ctx) {
            if (req->max_tokens >= 0)
                serve_error_set(e, 400, "max_tokens",
                                "the model's context is %d tokens: the prompt%s is %d tokens and max_tokens %d", srv->ctx,
                                req->n_prompts > 1 ? " (one of them)" : "", p->n, req->max_tokens);
            else
                serve_error_set(e, 400, pname, "the model's context is %d tokens: the prompt is %d tokens%s", srv->ctx,
                                p->n, kind == SERVE_CHAT ? ", leaving no room for a reply" : " and max_tokens 16");
            bad = 1;
        }
        if (fm_tokenizer_decode(srv->tok, p->ids, p->n, &p->text, &p->text_len)) {
            serve_error_set(e, 500, NULL, "decoding the prompt: %s", fm_last_error());
            bad = 1;
        }
    }
    if (!bad && req->max_tokens < 0) { /* the default: 16 (completions), what the context leaves (chat) */
        int most = srv->ctx;
        for (int i = 0; i < req->n_prompts; i++)
            if (srv->ctx - req->prompts[i].n < most) most = srv->ctx - req->prompts[i].n;
        req->max_tokens = kind == SERVE_CHAT ? most : 16;
    }
    cJSON_Delete(root);
    if (bad || make_jobs(req, e)) {
        serve_request_free(req);
        return NULL;
    }
    return req;
}

/* ------------------------------------------------------------ responses */

static cJSON *token_string(const fm_server *srv, int id) {
    size_t len = 0;
    const char *b = fm_tokenizer_token_bytes(srv->tok, id, &len);
    return json_text(b ? b : "", b ? len : 0);
}

static cJSON *number_or_null(float v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* Appends one token to a legacy logprobs object {tokens, token_logprobs, top_logprobs, text_offset};
 * top NULL: a null entry. */
static int legacy_add(const fm_server *srv, cJSON *lp, int id, float value, const int *top_ids, const float *top_lps,
                      int K, size_t offset) {
    cJSON *top;
    if (!top_ids) {
        top = cJSON_CreateNull();
    } else {
        top = cJSON_CreateObject();
        for (int i = 0; top && i < K; i++) {
            cJSON *t = token_string(srv, top_ids[i]);
            if (!t) return -1;
            if (!cJSON_GetObjectItem(top, t->valuestring)) cJSON_AddNumberToObject(top, t->valuestring, top_lps[i]);
            cJSON_Delete(t);
        }
    }
    cJSON *items[4] = {token_string(srv, id), number_or_null(value), top, cJSON_CreateNumber((double)offset)};
    static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    int rc = 0;
    for (int i = 0; i < 4; i++) {
        if (!items[i]) rc = -1;
        else cJSON_AddItemToArray(cJSON_GetObjectItem(lp, keys[i]), items[i]);
    }
    return rc;
}

static cJSON *legacy_new(void) {
    cJSON *lp = cJSON_CreateObject();
    if (!lp) return NULL;
    static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    for (int i = 0; i < 4; i++)
        if (!cJSON_AddArrayToObject(lp, keys[i])) {
            cJSON_Delete(lp);
            return NULL;
        }
    return lp;
}

/* A chat logprobs entry {token, logprob, bytes, top_logprobs}. */
static cJSON *chat_entry(const fm_server *srv, int id, float value, const int *top_ids, const float *top_lps, int K,
                         int with_top) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    size_t len = 0;
    const char *b = fm_tokenizer_token_bytes(srv->tok, id, &len);
    int bytes[64];
    int rc = add(o, "token", json_text(b ? b : "", b ? len : 0));
    cJSON_AddNumberToObject(o, "logprob", value);
    cJSON *arr = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; arr && b && i < len; i += 64) {
        int n = len - i < 64 ? (int)(len - i) : 64;
        for (int k = 0; k < n; k++) bytes[k] = (unsigned char)b[i + k];
        for (int k = 0; k < n; k++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(bytes[k]));
    }
    if (with_top) {
        cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
        for (int i = 0; top && i < K; i++) {
            cJSON *t = chat_entry(srv, top_ids[i], top_lps[i], NULL, NULL, 0, 0);
            if (!t) rc = -1;
            else cJSON_AddItemToArray(top, t);
        }
    }
    if (rc) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The log-probs of job's tokens [from, to): legacy shape (with the prompt's first when echo_from
 * >= 0: prompt tokens [echo_from, n)) or chat shape. base: the completion's offset in the text. */
static cJSON *job_logprobs(const fm_server *srv, const serve_request *req, const serve_job *job, int echo, int from,
                           int to, size_t base) {
    int K = req->top_n;
    if (req->kind == SERVE_CHAT) {
        cJSON *o = cJSON_CreateObject(), *content = o ? cJSON_AddArrayToObject(o, "content") : NULL;
        if (!content) return cJSON_Delete(o), NULL;
        for (int k = from; k < to; k++) {
            cJSON *entry = chat_entry(srv, job->tokens[k], job->lps[k], job->top_ids + (size_t)k * K,
                                      job->top_lps + (size_t)k * K, K, 1);
            if (!entry) return cJSON_Delete(o), NULL;
            cJSON_AddItemToArray(content, entry);
        }
        return o;
    }
    cJSON *lp = legacy_new();
    if (!lp) return NULL;
    if (echo) {
        const serve_prompt *p = &req->prompts[job->prompt];
        size_t off = 0;
        for (int k = 0; k < p->n; k++) {
            const int *ti = k && K ? job->prompt_top_ids + (size_t)k * K : NULL;
            const float *tl = k && K ? job->prompt_top_lps + (size_t)k * K : NULL;
            static const int none = 0;
            if (k && !K) ti = &none; /* an empty object, as for the generated tokens */
            if (legacy_add(srv, lp, p->ids[k], job->prompt_lps[k], ti, tl, K, off)) return cJSON_Delete(lp), NULL;
            size_t len = 0;
            off += fm_tokenizer_token_bytes(srv->tok, p->ids[k], &len) ? len : 0;
        }
    }
    for (int k = from; k < to; k++) {
        static const int none = 0;
        const int *ti = K ? job->top_ids + (size_t)k * K : &none;
        const float *tl = K ? job->top_lps + (size_t)k * K : NULL;
        if (legacy_add(srv, lp, job->tokens[k], job->lps[k], ti, tl, K, base + job->offsets[k]))
            return cJSON_Delete(lp), NULL;
    }
    return lp;
}

static const char *finish_name(serve_finish f) { return f == SERVE_FINISH_LENGTH ? "length" : "stop"; }

/* id, object, created, model, system_fingerprint. */
static cJSON *envelope(const serve_request *req, const char *object) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "id", req->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)req->created);
    cJSON_AddStringToObject(root, "model", req->model_name);
    cJSON_AddStringToObject(root, "system_fingerprint", "fm-" FM_VERSION);
    return root;
}

static cJSON *usage(const serve_request *req) {
    cJSON *u = cJSON_CreateObject();
    if (!u) return NULL;
    long prompt = 0, completion = 0;
    for (int i = 0; i < req->n_prompts; i++) prompt += req->prompts[i].n;
    for (int j = 0; j < req->n_jobs; j++) completion += req->jobs[j].n_tokens;
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    return u;
}

char *serve_response_json(const fm_server *srv, const serve_request *req) {
    int chat = req->kind == SERVE_CHAT;
    cJSON *root = envelope(req, chat ? "chat.completion" : "text_completion");
    cJSON *choices = root ? cJSON_AddArrayToObject(root, "choices") : NULL;
    int rc = choices ? 0 : -1;
    for (int j = 0; !rc && j < req->n_jobs; j++) {
        const serve_job *job = &req->jobs[j];
        const serve_prompt *p = &req->prompts[job->prompt];
        cJSON *c = cJSON_CreateObject();
        if (!c) {
            rc = -1;
            break;
        }
        cJSON_AddItemToArray(choices, c);
        cJSON_AddNumberToObject(c, "index", job->index);
        if (chat) {
            cJSON *msg = cJSON_AddObjectToObject(c, "message");
            if (!msg) rc = -1;
            else {
                cJSON_AddStringToObject(msg, "role", "assistant");
                rc |= add(msg, "content", json_text(job->text, job->text_len));
            }
        } else if (req->echo) {
            char *both = fm_malloc(p->text_len + job->text_len + 1);
            if (!both) rc = -1;
            else {
                memcpy(both, p->text, p->text_len);
                memcpy(both + p->text_len, job->text, job->text_len);
                rc |= add(c, "text", json_text(both, p->text_len + job->text_len));
                fm_free(both);
            }
        } else {
            rc |= add(c, "text", json_text(job->text, job->text_len));
        }
        if (req->logprobs)
            rc |= add(c, "logprobs", job_logprobs(srv, req, job, req->echo, 0, job->n_tokens, req->echo ? p->text_len : 0));
        else cJSON_AddNullToObject(c, "logprobs");
        cJSON_AddStringToObject(c, "finish_reason", finish_name(job->finish));
    }
    if (!rc) rc = add(root, "usage", usage(req));
    char *out = rc ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* "data: " + the chunk + "\n\n" onto the buffer; the chunk is deleted. */
static int emit(cJSON *chunk, char **buf, size_t *len, size_t *cap) {
    char *s = chunk ? cJSON_PrintUnformatted(chunk) : NULL;
    cJSON_Delete(chunk);
    if (!s) return -1;
    int rc = serve_buf_add(buf, len, cap, "data: ", 6) || serve_buf_add(buf, len, cap, s, strlen(s)) ||
             serve_buf_add(buf, len, cap, "\n\n", 2);
    fm_free(s);
    return rc ? -1 : 0;
}

/* A chunk with one choice: text (or the chat delta's content; role when opening), log-probs and
 * finish_reason (NULL: null; a finishing chat chunk has an empty delta). */
static cJSON *chunk(const serve_request *req, const serve_job *job, const char *text, size_t n, int role,
                    cJSON *logprobs, const char *finish) {
    int chat = req->kind == SERVE_CHAT;
    cJSON *root = envelope(req, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = root ? cJSON_AddArrayToObject(root, "choices") : NULL, *c = cJSON_CreateObject();
    if (!choices || !c) {
        cJSON_Delete(root), cJSON_Delete(c), cJSON_Delete(logprobs);
        return NULL;
    }
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", job->index);
    int rc = 0;
    if (chat) {
        cJSON *delta = cJSON_AddObjectToObject(c, "delta");
        if (delta && role) cJSON_AddStringToObject(delta, "role", "assistant");
        if (delta && text) rc |= add(delta, "content", json_text(text, n));
    } else {
        rc |= add(c, "text", json_text(text ? text : "", text ? n : 0));
    }
    if (logprobs) cJSON_AddItemToObject(c, "logprobs", logprobs);
    else cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    if (rc) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int serve_stream_events(const fm_server *srv, serve_request *req, char **buf, size_t *len, size_t *cap) {
    int chat = req->kind == SERVE_CHAT, all_ended = 1;
    for (int j = 0; j < req->n_jobs; j++) {
        serve_job *job = &req->jobs[j];
        const serve_prompt *p = &req->prompts[job->prompt];
        size_t base = req->echo ? p->text_len : 0;
        if (job->n_tokens == 0 && !job->done) { /* not started: its prompt's log-probs may still be in the making */
            all_ended = 0;
            continue;
        }
        if (!job->sent_start) {
            job->sent_start = 1;
            if (chat && emit(chunk(req, job, "", 0, 1, NULL, NULL), buf, len, cap)) return -1;
            if (!chat && req->echo) {
                cJSON *lp = req->logprobs ? job_logprobs(srv, req, job, 1, 0, 0, base) : NULL;
                if ((req->logprobs && !lp) || emit(chunk(req, job, p->text, p->text_len, 0, lp, NULL), buf, len, cap))
                    return -1;
            }
        }
        size_t upto = job->done ? job->text_len : utf8_complete(job->text, job->final_len);
        int tok_upto = job->done ? job->n_tokens : job->final_tokens;
        if (upto < job->sent_text) upto = job->sent_text;
        if (tok_upto < job->sent_tokens) tok_upto = job->sent_tokens;
        if (upto > job->sent_text || (req->logprobs && tok_upto > job->sent_tokens)) {
            cJSON *lp = req->logprobs ? job_logprobs(srv, req, job, 0, job->sent_tokens, tok_upto, base) : NULL;
            if ((req->logprobs && !lp) ||
                emit(chunk(req, job, job->text + job->sent_text, upto - job->sent_text, 0, lp, NULL), buf, len, cap))
                return -1;
            job->sent_text = upto;
        }
        job->sent_tokens = tok_upto;
        if (job->done && !job->sent_end && job->finish != SERVE_FINISH_CANCEL) {
            job->sent_end = 1;
            if (emit(chunk(req, job, NULL, 0, 0, NULL, finish_name(job->finish)), buf, len, cap)) return -1;
        }
        if (!job->sent_end) all_ended = 0;
    }
    if (req->failed) {
        serve_error e;
        serve_error_set(&e, req->failed, NULL, "%s", req->error);
        char *s = serve_error_json(&e);
        int rc = !s || serve_buf_add(buf, len, cap, "data: ", 6) || serve_buf_add(buf, len, cap, s, strlen(s)) ||
                 serve_buf_add(buf, len, cap, "\n\ndata: [DONE]\n\n", 16);
        fm_free(s);
        return rc ? -1 : 1;
    }
    if (!all_ended) return 0;
    if (req->include_usage) {
        cJSON *root = envelope(req, chat ? "chat.completion.chunk" : "text_completion");
        if (!root || !cJSON_AddArrayToObject(root, "choices") || add(root, "usage", usage(req))) {
            cJSON_Delete(root);
            return -1;
        }
        if (emit(root, buf, len, cap)) return -1;
    }
    return serve_buf_add(buf, len, cap, "data: [DONE]\n\n", 14) ? -1 : 1;
}

/* ------------------------------------------------------------ tokenize, detokenize, models */

static char *print_delete(cJSON *root, serve_error *e) {
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) serve_error_set(e, 500, NULL, "out of memory");
    return s;
}

char *serve_tokenize(const fm_server *srv, const char *body, size_t len, serve_error *e) {
    memset(e, 0, sizeof *e);
    cJSON *in = parse_body(body, len, e);
    if (!in) return NULL;
    const cJSON *f = cJSON_GetObjectItem(in, "content");
    if (!cJSON_IsString(f)) {
        cJSON_Delete(in);
        serve_error_set(e, 400, "content", "'content' must be a string");
        return NULL;
    }
    int *ids = NULL;
    size_t n = 0;
    if (fm_tokenizer_encode(srv->tok, f->valuestring, strlen(f->valuestring), 0, &ids, &n)) {
        cJSON_Delete(in);
        serve_error_set(e, 500, NULL, "%s", fm_last_error());
        return NULL;
    }
    cJSON_Delete(in);
    cJSON *root = cJSON_CreateObject(), *arr = root ? cJSON_AddArrayToObject(root, "tokens") : NULL;
    for (size_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    fm_free(ids);
    return print_delete(arr ? root : (cJSON_Delete(root), NULL), e);
}

char *serve_detokenize(const fm_server *srv, const char *body, size_t len, serve_error *e) {
    memset(e, 0, sizeof *e);
    cJSON *in = parse_body(body, len, e);
    if (!in) return NULL;
    const cJSON *f = cJSON_GetObjectItem(in, "tokens");
    serve_prompt p = {0};
    if (!cJSON_IsArray(f)) serve_error_set(e, 400, "tokens", "'tokens' must be a list of token ids");
    else read_ids(srv, f, "tokens", &p, e);
    cJSON_Delete(in);
    char *text = NULL;
    size_t n = 0;
    if (!e->status && fm_tokenizer_decode(srv->tok, p.ids, p.n, &text, &n))
        serve_error_set(e, 500, NULL, "%s", fm_last_error());
    fm_free(p.ids);
    if (e->status) return NULL;
    cJSON *root = cJSON_CreateObject();
    if (root && add(root, "content", json_text(text, n))) cJSON_Delete(root), root = NULL;
    fm_free(text);
    return print_delete(root, e);
}

char *serve_models(const fm_server *srv) {
    cJSON *root = cJSON_CreateObject(), *data = root ? cJSON_AddArrayToObject(root, "data") : NULL;
    if (!data) return cJSON_Delete(root), NULL;
    cJSON_AddStringToObject(root, "object", "list");
    for (int m = 0; m <= srv->cfg.n_adapters; m++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) return cJSON_Delete(root), NULL;
        cJSON_AddItemToArray(data, o);
        cJSON_AddStringToObject(o, "id", m ? srv->cfg.adapter_ids[m - 1] : srv->cfg.model_id);
        cJSON_AddStringToObject(o, "object", "model");
        cJSON_AddNumberToObject(o, "created", 0);
        cJSON_AddStringToObject(o, "owned_by", "fm");
        if (m) cJSON_AddStringToObject(o, "parent", srv->cfg.model_id);
        cJSON *meta = cJSON_AddObjectToObject(o, "meta");
        if (meta) {
            cJSON_AddNumberToObject(meta, "n_ctx", srv->ctx);
            cJSON_AddNumberToObject(meta, "n_vocab", srv->V);
        }
    }
    serve_error e;
    return print_delete(root, &e);
}
