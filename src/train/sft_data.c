/*
 * sft_data.c — fine-tuning files (plain text, chat JSONL, prompt-completion JSONL, text TAB label)
 * turned into examples of token ids with a loss mask, and the trainer's data source over them.
 *
 * What it is for: fm finetune's data (docs/finetune-data.md). Every line of a file is checked
 * before anything is kept; the first bad one is reported with the file and line. Examples are
 * padded, one per row of a batch, so that no example attends to another; training rows follow a
 * per-epoch permutation computed from (seed, epoch), so the row count consumed (the trainer's
 * data position) is the whole state and a resume is exact.
 * Not for: pre-training shards (shard_source.c), the chat template itself (chat_template.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "core/internal.h"

#define BAD(...) (fm_fail(FM_ERR_FORMAT, __VA_ARGS__))

struct fm_sft_data {
    fm_sft_format format;
    char *path;
    int pad_id;
    size_t n_examples;
    size_t *offsets;      /* (n_examples + 1) example i is ids[offsets[i] .. offsets[i + 1]) */
    int *ids;             /* (offsets[n_examples]) */
    float *mask;          /* (offsets[n_examples]) chat and prompt-completion; NULL otherwise */
    int *labels;          /* (n_examples) tsv: label index; NULL otherwise */
    int *lines;           /* (n_examples) the file line of each example */
    uint64_t *ex_bytes;   /* (n_examples) UTF-8 bytes of each example's tokens (not text) */
    uint32_t *tok_bytes;  /* (offsets[n_examples]) text: bytes of each token; NULL otherwise */
    char **label_names;   /* (n_labels) tsv */
    int n_labels;
};

static const char *const format_names[4] = {"text", "chat", "prompt-completion", "tsv"};

const char *fm_sft_format_name(fm_sft_format format) {
    return (unsigned)format < 4 ? format_names[format] : "unknown";
}

fm_status fm_sft_format_parse(const char *name, fm_sft_format *out) {
    for (int f = 0; name && f < 4; f++)
        if (!strcmp(name, format_names[f])) {
            *out = (fm_sft_format)f;
            return FM_OK;
        }
    return fm_fail(FM_ERR_ARG, "unknown data format \"%.64s\" (text, chat, prompt-completion or tsv)",
                   name ? name : "");
}

/* ---------------------------------------------------------------- the data object */

void fm_sft_data_free(fm_sft_data *d) {
    if (!d) return;
    for (int i = 0; i < d->n_labels; i++) fm_free(d->label_names[i]);
    fm_free(d->label_names);
    fm_free(d->path), fm_free(d->offsets), fm_free(d->ids), fm_free(d->mask), fm_free(d->labels);
    fm_free(d->lines), fm_free(d->ex_bytes), fm_free(d->tok_bytes);
    fm_free(d);
}

fm_sft_format fm_sft_data_format(const fm_sft_data *d) { return d->format; }
const char *fm_sft_data_path(const fm_sft_data *d) { return d->path; }
size_t fm_sft_data_num_examples(const fm_sft_data *d) { return d->n_examples; }
size_t fm_sft_data_num_tokens(const fm_sft_data *d) { return d->offsets[d->n_examples]; }
int fm_sft_data_pad_id(const fm_sft_data *d) { return d->pad_id; }
int fm_sft_data_num_labels(const fm_sft_data *d) { return d->n_labels; }
const char *const *fm_sft_data_labels(const fm_sft_data *d) {
    return d->n_labels ? (const char *const *)d->label_names : NULL;
}
int fm_sft_data_line(const fm_sft_data *d, size_t i) { return i < d->n_examples ? d->lines[i] : 0; }

uint64_t fm_sft_data_num_bytes(const fm_sft_data *d) {
    uint64_t sum = 0;
    for (size_t i = 0; i < d->n_examples; i++) sum += d->ex_bytes[i];
    return sum;
}

void fm_sft_data_example(const fm_sft_data *d, size_t i, const int **ids, const float **mask, size_t *n_ids,
                         int *label) {
    size_t a = d->offsets[i];
    if (ids) *ids = d->ids + a;
    if (mask) *mask = d->mask ? d->mask + a : NULL;
    if (n_ids) *n_ids = d->offsets[i + 1] - a;
    if (label) *label = d->labels ? d->labels[i] : -1;
}

size_t fm_sft_data_truncated(const fm_sft_data *d, int seq, size_t *no_loss) {
    size_t cut = 0, empty = 0;
    if (no_loss) *no_loss = 0;
    if (d->format == FM_SFT_TEXT || seq < 1) return 0;
    size_t room = d->format == FM_SFT_TSV ? (size_t)seq : (size_t)seq + 1;
    for (size_t i = 0; i < d->n_examples; i++) {
        size_t a = d->offsets[i], n = d->offsets[i + 1] - a;
        if (n <= room) continue;
        cut++;
        if (d->mask) {
            int any = 0;
            for (size_t t = 1; t < room && !any; t++) any = d->mask[a + t] > 0.0f;
            empty += !any;
        }
    }
    if (no_loss) *no_loss = empty;
    return cut;
}

/* A builder: examples appended one by one. */
typedef struct {
    fm_sft_data *d;
    size_t cap_ex, cap_tok;
    const fm_tokenizer *tok;
} builder;

static fm_status builder_init(builder *b, const char *path, fm_sft_format format, const fm_tokenizer *tok) {
    memset(b, 0, sizeof *b);
    b->tok = tok;
    fm_sft_data *d = b->d = fm_calloc(1, sizeof *d);
    if (!d) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    d->format = format;
    int end = tok ? fm_tokenizer_special_id(tok, "<|endoftext|>") : -1;
    d->pad_id = end >= 0 ? end : 0;
    d->path = fm_strdup(path);
    d->offsets = fm_calloc(1, sizeof *d->offsets);
    if (!d->path || !d->offsets) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    return FM_OK;
}

/* Appends an example: n ids, their mask (NULL: none kept), label (tsv), line; tok_bytes (text:
 * per-token byte counts to keep, else NULL) and bytes (the example's UTF-8 bytes). */
static fm_status builder_add(builder *b, const int *ids, const float *mask, size_t n, int label, int line,
                             const uint32_t *tok_bytes, uint64_t bytes) {
    fm_sft_data *d = b->d;
    size_t have = d->offsets[d->n_examples];
    if (d->n_examples + 1 >= b->cap_ex) {
        size_t cap = b->cap_ex ? 2 * b->cap_ex : 256;
        size_t *o = fm_realloc(d->offsets, (cap + 1) * sizeof *o);
        if (o) d->offsets = o;
        int *l = o ? fm_realloc(d->labels, cap * sizeof *l) : NULL;
        if (l) d->labels = l;
        int *ln = l ? fm_realloc(d->lines, cap * sizeof *ln) : NULL;
        if (ln) d->lines = ln;
        uint64_t *eb = ln ? fm_realloc(d->ex_bytes, cap * sizeof *eb) : NULL;
        if (eb) d->ex_bytes = eb;
        if (!eb) return fm_fail(FM_ERR_NOMEM, "%s: out of memory for %zu examples", d->path, cap);
        b->cap_ex = cap;
    }
    if (have + n > b->cap_tok || !d->ids) {
        size_t cap = b->cap_tok ? 2 * b->cap_tok : 4096;
        while (cap < have + n) cap *= 2;
        int *gi = fm_realloc(d->ids, cap * sizeof *gi);
        if (gi) d->ids = gi;
        int ok = gi != NULL;
        if (ok && mask) {
            float *gm = fm_realloc(d->mask, cap * sizeof *gm);
            if (gm) d->mask = gm;
            ok = gm != NULL;
        }
        if (ok && tok_bytes) {
            uint32_t *gb = fm_realloc(d->tok_bytes, cap * sizeof *gb);
            if (gb) d->tok_bytes = gb;
            ok = gb != NULL;
        }
        if (!ok) return fm_fail(FM_ERR_NOMEM, "%s: out of memory for %zu tokens", d->path, have + n);
        b->cap_tok = cap;
    }
    if (n) memcpy(d->ids + have, ids, n * sizeof *ids);
    if (mask && n) memcpy(d->mask + have, mask, n * sizeof *mask);
    if (tok_bytes && n) memcpy(d->tok_bytes + have, tok_bytes, n * sizeof *tok_bytes);
    d->labels[d->n_examples] = label;
    d->lines[d->n_examples] = line;
    d->ex_bytes[d->n_examples] = bytes;
    d->n_examples++;
    d->offsets[d->n_examples] = have + n;
    return FM_OK;
}

/* The UTF-8 bytes ids stand for. */
static uint64_t ids_bytes(const fm_tokenizer *tok, const int *ids, size_t n) {
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        if (fm_tokenizer_token_bytes(tok, ids[i], &len)) sum += len;
    }
    return sum;
}

/* ---------------------------------------------------------------- reading lines */

/* The whole file, fm_malloc'd with a NUL after it. */
static fm_status read_whole(const char *path, char **out, size_t *size) {
    *out = NULL, *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fm_fail(FM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = fm_malloc(cap + 1);
    fm_status st = FM_OK;
    while (buf) {
        len += fread(buf + len, 1, cap - len, fp);
        if (len < cap) break;
        char *grown = fm_realloc(buf, 2 * cap + 1);
        if (!grown) break;
        buf = grown, cap *= 2;
    }
    if (!buf || len == cap) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the file", path);
    else if (ferror(fp)) st = fm_fail(FM_ERR_IO, "%s: read error: %s", path, strerror(errno));
    fclose(fp);
    if (st) {
        fm_free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf, *size = len;
    return FM_OK;
}

/* Line iteration over a buffer: the next line (its ending, \n or \r\n, cut off) from *pos. */
typedef struct {
    const char *text;
    size_t len, pos;
    int number;
} line_reader;

static int next_line(line_reader *r, const char **line, size_t *len) {
    if (r->pos >= r->len) return 0;
    const char *start = r->text + r->pos;
    const char *nl = memchr(start, '\n', r->len - r->pos);
    size_t n = nl ? (size_t)(nl - start) : r->len - r->pos;
    r->pos += n + (nl != NULL);
    if (n > 0 && start[n - 1] == '\r') n--;
    r->number++;
    *line = start, *len = n;
    return 1;
}

/* A line of nothing but spaces and tabs (for tsv: spaces only, a TAB makes it a record). */
static int is_blank(const char *line, size_t len, int tabs_count) {
    for (size_t i = 0; i < len; i++)
        if (line[i] != ' ' && !(line[i] == '\t' && tabs_count)) return 0;
    return 1;
}

/* The line as a JSON object (*o, cJSON_Delete it). */
static fm_status parse_object(const char *path, int lineno, const char *line, size_t len, cJSON **o) {
    *o = NULL;
    if (memchr(line, '\0', len)) return BAD("%s:%d: a NUL byte in the line", path, lineno);
    unsigned long failures = fm_alloc_failures();
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!v) {
        if (fm_alloc_failures() != failures) return fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, lineno);
        size_t at = end && end >= line ? (size_t)(end - line) : 0;
        return BAD("%s:%d: not valid JSON (at byte %zu)", path, lineno, at + 1);
    }
    size_t used = (size_t)(end - line);
    while (used < len && (line[used] == ' ' || line[used] == '\t')) used++;
    if (used < len) {
        cJSON_Delete(v);
        return BAD("%s:%d: text after the JSON value", path, lineno);
    }
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return BAD("%s:%d: not a JSON object", path, lineno);
    }
    *o = v;
    return FM_OK;
}

/* A string field of o: *s its value (owned by o). */
static fm_status get_string(const cJSON *o, const char *key, const char *path, int lineno, const char *where,
                            const char **s) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return BAD("%s:%d: %s\"%s\" is missing", path, lineno, where, key);
    if (!cJSON_IsString(v) || !v->valuestring) return BAD("%s:%d: %s\"%s\" must be a string", path, lineno, where, key);
    *s = v->valuestring;
    return FM_OK;
}

/* The format one parsed first line implies. */
static fm_status detect_line(const char *path, int lineno, const char *line, size_t len, fm_sft_format *out) {
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i < len && line[i] == '{') {
        cJSON *o = NULL;
        unsigned long failures = fm_alloc_failures();
        cJSON *v = cJSON_ParseWithLength(line, len);
        if (!v && fm_alloc_failures() != failures) return fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, lineno);
        o = cJSON_IsObject(v) ? v : NULL;
        if (o) {
            int chat = cJSON_GetObjectItemCaseSensitive(o, "messages") != NULL;
            int pc = cJSON_GetObjectItemCaseSensitive(o, "prompt") && cJSON_GetObjectItemCaseSensitive(o, "completion");
            cJSON_Delete(v);
            if (chat) *out = FM_SFT_CHAT;
            else if (pc) *out = FM_SFT_PROMPT_COMPLETION;
            else
                return BAD("%s:%d: a JSON object with neither \"messages\" (chat) nor \"prompt\" and \"completion\" "
                           "(prompt-completion); give the format (text, to train on the lines as they are)",
                           path, lineno);
            return FM_OK;
        }
        cJSON_Delete(v);
    }
    *out = memchr(line, '\t', len) ? FM_SFT_TSV : FM_SFT_TEXT;
    return FM_OK;
}

/* Detects from the first non-blank line of text. */
static fm_status detect(const char *path, const char *text, size_t size, fm_sft_format *out) {
    line_reader r = {text, size, 0, 0};
    const char *line;
    size_t len;
    while (next_line(&r, &line, &len))
        if (!is_blank(line, len, 1)) return detect_line(path, r.number, line, len, out);
    *out = FM_SFT_TEXT;
    return FM_OK;
}

fm_status fm_sft_detect_format(const char *path, fm_sft_format *out) {
    char *text;
    size_t size;
    fm_status st = read_whole(path, &text, &size);
    if (!st) st = detect(path, text, size, out);
    fm_free(text);
    return st;
}

/* ---------------------------------------------------------------- the formats */

static fm_status load_text(builder *b, const char *text, size_t size) {
    int *ids = NULL;
    size_t n = 0;
    fm_status st = fm_tokenizer_encode(b->tok, text, size, 0, &ids, &n);
    if (st) return fm_fail_prefix(st, "%s: ", b->d->path);
    if (n == 0) {
        fm_free(ids);
        return BAD("%s: the file holds no text", b->d->path);
    }
    uint32_t *lens = fm_malloc(n * sizeof *lens);
    if (!lens) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", b->d->path);
    for (size_t i = 0; !st && i < n; i++) {
        size_t len = 0;
        fm_tokenizer_token_bytes(b->tok, ids[i], &len);
        lens[i] = (uint32_t)len;
    }
    if (!st) st = builder_add(b, ids, NULL, n, -1, 1, lens, (uint64_t)size);
    fm_free(lens);
    fm_free(ids);
    return st;
}

/* One chat line: {"messages": [{"role", "content"}, ...]}, other keys ignored. */
static fm_status chat_line(builder *b, const cJSON *o, int lineno, int loss_on_all) {
    const char *path = b->d->path;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (!msgs) return BAD("%s:%d: \"messages\" is missing", path, lineno);
    if (!cJSON_IsArray(msgs)) return BAD("%s:%d: \"messages\" must be a list of messages", path, lineno);
    int n = cJSON_GetArraySize(msgs);
    if (n == 0) return BAD("%s:%d: \"messages\" is empty", path, lineno);
    fm_chat_message *m = fm_malloc(sizeof *m * (size_t)n);
    if (!m) return fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, lineno);
    fm_status st = FM_OK;
    int i = 0, assistants = 0;
    char where[64];
    for (const cJSON *v = msgs->child; !st && v; v = v->next, i++) {
        snprintf(where, sizeof where, "message %d: ", i + 1);
        if (!cJSON_IsObject(v)) {
            st = BAD("%s:%d: message %d is not a JSON object", path, lineno, i + 1);
            break;
        }
        st = get_string(v, "role", path, lineno, where, &m[i].role);
        if (!st) st = get_string(v, "content", path, lineno, where, &m[i].content);
        if (st) break;
        if (strcmp(m[i].role, "system") && strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant"))
            st = BAD("%s:%d: message %d has the unknown role \"%.64s\" (system, user or assistant)", path, lineno,
                     i + 1, m[i].role);
        assistants += !strcmp(m[i].role, "assistant");
    }
    if (!st && assistants == 0) st = BAD("%s:%d: the conversation has no assistant message", path, lineno);
    int *ids = NULL;
    float *mask = NULL;
    size_t n_ids = 0;
    if (!st) {
        st = fm_chat_encode(b->tok, m, (size_t)n, 0, loss_on_all, &ids, &mask, &n_ids);
        if (st) fm_fail_prefix(st, "%s:%d: ", path, lineno);
    }
    if (!st) st = builder_add(b, ids, mask, n_ids, -1, lineno, NULL, ids_bytes(b->tok, ids, n_ids));
    fm_free(ids), fm_free(mask), fm_free(m);
    return st;
}

/* One prompt-completion line: prompt + completion + <|endoftext|>, the loss on the last two. */
static fm_status prompt_completion_line(builder *b, const cJSON *o, int lineno, int loss_on_all, int end_id) {
    const char *path = b->d->path, *prompt = NULL, *completion = NULL;
    fm_status st = get_string(o, "prompt", path, lineno, "", &prompt);
    if (!st) st = get_string(o, "completion", path, lineno, "", &completion);
    if (st) return st;
    if (!completion[0]) return BAD("%s:%d: \"completion\" is empty", path, lineno);
    int *p = NULL, *c = NULL, *ids = NULL;
    float *mask = NULL;
    size_t np = 0, nc = 0;
    st = fm_tokenizer_encode(b->tok, prompt, strlen(prompt), 0, &p, &np);
    if (!st) st = fm_tokenizer_encode(b->tok, completion, strlen(completion), 0, &c, &nc);
    if (st) fm_fail_prefix(st, "%s:%d: ", path, lineno);
    size_t n = np + nc + 1;
    if (!st) {
        ids = fm_malloc(n * sizeof *ids);
        mask = fm_malloc(n * sizeof *mask);
        if (!ids || !mask) st = fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, lineno);
    }
    if (!st) {
        memcpy(ids, p, np * sizeof *ids);
        memcpy(ids + np, c, nc * sizeof *ids);
        ids[n - 1] = end_id;
        for (size_t i = 0; i < n; i++) mask[i] = (i >= np || loss_on_all) ? 1.0f : 0.0f;
        st = builder_add(b, ids, mask, n, -1, lineno, NULL, ids_bytes(b->tok, ids, n));
    }
    fm_free(p), fm_free(c), fm_free(ids), fm_free(mask);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The index of label among names[0..n), or -1 (n is small: a linear search). */
static int find_label(char *const *names, int n, const char *label) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], label)) return i;
    return -1;
}

/* The list "a, b, c" of at most a few labels into buf. */
static void label_list(char *const *names, int n, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used + 8 < size; i++) {
        if (i == 6) {
            snprintf(buf + used, size - used, ", ... (%d in all)", n);
            return;
        }
        used += (size_t)snprintf(buf + used, size - used, "%s\"%.32s\"", i ? ", " : "", names[i]);
    }
}

/* tsv: every line "text TAB label". Labels are indexed once every line is read (or at once
 * against a given set). */
static fm_status load_tsv(builder *b, const char *text, size_t size, const char *const *given, int n_given) {
    fm_sft_data *d = b->d;
    const char *path = d->path;
    fm_status st = FM_OK;
    /* the label set: the given one (copied), else collected */
    int cap = n_given > 0 ? n_given : 16;
    d->label_names = fm_calloc((size_t)cap, sizeof *d->label_names);
    if (!d->label_names) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n_given; i++) {
        if (!given[i] || !given[i][0]) return fm_fail(FM_ERR_ARG, "%s: label %d of the given set is empty", path, i);
        if (find_label(d->label_names, d->n_labels, given[i]) >= 0)
            return fm_fail(FM_ERR_ARG, "%s: the given label set names \"%.64s\" twice", path, given[i]);
        if (!(d->label_names[d->n_labels] = fm_strdup(given[i]))) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
        d->n_labels++;
    }
    line_reader r = {text, size, 0, 0};
    const char *line;
    size_t len;
    char *buf = NULL;
    size_t buf_cap = 0;
    while (!st && next_line(&r, &line, &len)) {
        if (is_blank(line, len, 0)) continue;
        int lineno = r.number;
        if (memchr(line, '\0', len)) {
            st = BAD("%s:%d: a NUL byte in the line", path, lineno);
            break;
        }
        const char *tab = memchr(line, '\t', len);
        if (!tab) {
            st = BAD("%s:%d: no TAB (each line is: text TAB label)", path, lineno);
            break;
        }
        if (memchr(tab + 1, '\t', len - (size_t)(tab + 1 - line))) {
            st = BAD("%s:%d: more than one TAB (each line is: text TAB label; the text may not hold a TAB)", path,
                     lineno);
            break;
        }
        size_t n_text = (size_t)(tab - line), n_label = len - n_text - 1;
        if (n_text == 0) {
            st = BAD("%s:%d: the text is empty", path, lineno);
            break;
        }
        if (n_label == 0) {
            st = BAD("%s:%d: the label is empty", path, lineno);
            break;
        }
        if (len + 1 > buf_cap) {
            char *grown = fm_realloc(buf, len + 1);
            if (!grown) {
                st = fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, lineno);
                break;
            }
            buf = grown, buf_cap = len + 1;
        }
        memcpy(buf, tab + 1, n_label);
        buf[n_label] = '\0';
        int label = find_label(d->label_names, d->n_labels, buf);
        if (label < 0 && n_given > 0) {
            char list[256];
            label_list(d->label_names, d->n_labels, list, sizeof list);
            st = fm_fail(FM_ERR_MISMATCH, "%s:%d: the label \"%.64s\" is not among the %d labels of the training set "
                         "(%s)", path, lineno, buf, d->n_labels, list);
            break;
        }
        if (label < 0) {
            if (d->n_labels == cap) {
                char **grown = fm_realloc(d->label_names, sizeof *grown * (size_t)cap * 2);
                if (!grown) {
                    st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
                d->label_names = grown, cap *= 2;
            }
            if (!(d->label_names[d->n_labels] = fm_strdup(buf))) {
                st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            label = d->n_labels++;
        }
        int *ids = NULL;
        size_t n = 0;
        st = fm_tokenizer_encode(b->tok, line, n_text, 0, &ids, &n);
        if (st) fm_fail_prefix(st, "%s:%d: ", path, lineno);
        else st = builder_add(b, ids, NULL, n, label, lineno, NULL, n_text);
        fm_free(ids);
    }
    fm_free(buf);
    if (st || n_given > 0) return st;
    /* the labels in byte order, the examples renumbered */
    int *order = fm_malloc(sizeof(int) * (size_t)(d->n_labels + 1));
    char **sorted = fm_malloc(sizeof(char *) * (size_t)(d->n_labels + 1));
    if (!order || !sorted) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) {
        memcpy(sorted, d->label_names, sizeof(char *) * (size_t)d->n_labels);
        qsort(sorted, (size_t)d->n_labels, sizeof *sorted, cmp_str);
        for (int i = 0; i < d->n_labels; i++) order[i] = find_label(sorted, d->n_labels, d->label_names[i]);
        for (size_t e = 0; e < d->n_examples; e++) d->labels[e] = order[d->labels[e]];
        memcpy(d->label_names, sorted, sizeof(char *) * (size_t)d->n_labels);
    }
    fm_free(order), fm_free(sorted);
    return st;
}

fm_status fm_sft_data_load(fm_sft_data **out, const char *path, const char *format, const fm_tokenizer *tok,
                           int loss_on_all, const char *const *labels, int n_labels) {
    if (!out || !path || !tok) return fm_fail(FM_ERR_ARG, "fm_sft_data_load: no output, file or tokenizer given");
    *out = NULL;
    if (n_labels < 0 || (n_labels > 0 && !labels)) return fm_fail(FM_ERR_ARG, "fm_sft_data_load: bad label set");
    fm_sft_format fmt = FM_SFT_TEXT;
    fm_status st = format ? fm_sft_format_parse(format, &fmt) : FM_OK;
    if (st) return st;
    char *text = NULL;
    size_t size = 0;
    if ((st = read_whole(path, &text, &size))) return st;
    if (!format) st = detect(path, text, size, &fmt);
    if (!st && n_labels > 0 && fmt != FM_SFT_TSV)
        st = fm_fail(FM_ERR_ARG, "%s: a label set was given for %s data (labels are for tsv)", path,
                     fm_sft_format_name(fmt));
    int end_id = fm_tokenizer_special_id(tok, "<|endoftext|>");
    if (!st && fmt == FM_SFT_CHAT) {
        st = fm_chat_check_tokenizer(tok);
        if (st) fm_fail_prefix(st, "%s (chat data): ", path);
    } else if (!st && fmt == FM_SFT_PROMPT_COMPLETION && end_id < 0)
        st = fm_fail(FM_ERR_MISMATCH, "%s (prompt-completion data): the tokenizer has no <|endoftext|> token to end "
                     "each completion with; add the chat tokens with --add-chat-tokens", path);
    builder b;
    memset(&b, 0, sizeof b);
    if (!st) st = builder_init(&b, path, fmt, tok);
    if (!st && fmt == FM_SFT_TEXT) st = load_text(&b, text, size);
    else if (!st && fmt == FM_SFT_TSV) st = load_tsv(&b, text, size, labels, n_labels);
    else if (!st) {
        line_reader r = {text, size, 0, 0};
        const char *line;
        size_t len;
        while (!st && next_line(&r, &line, &len)) {
            if (is_blank(line, len, 1)) continue;
            cJSON *o = NULL;
            st = parse_object(path, r.number, line, len, &o);
            if (!st && fmt == FM_SFT_CHAT) st = chat_line(&b, o, r.number, loss_on_all);
            else if (!st) st = prompt_completion_line(&b, o, r.number, loss_on_all, end_id);
            cJSON_Delete(o);
        }
    }
    if (!st && b.d->n_examples == 0) st = BAD("%s: no examples (the file is empty or blank)", path);
    fm_free(text);
    if (st) {
        fm_sft_data_free(b.d);
        return st;
    }
    *out = b.d;
    return FM_OK;
}

/* ---------------------------------------------------------------- labeled sequences in memory */

fm_status fm_sft_data_from_ids(fm_sft_data **out, const char *name, const int *ids, size_t n, int len,
                               const int *labels, const char *const *label_names, int n_labels, int pad_id) {
    if (!out || !name || (n && (!ids || !labels)) || len < 1 || n_labels < 1 || !label_names || pad_id < 0)
        return fm_fail(FM_ERR_ARG, "fm_sft_data_from_ids: bad arguments");
    *out = NULL;
    if (n == 0) return fm_fail(FM_ERR_ARG, "%s: no examples", name);
    builder b;
    fm_status st = builder_init(&b, name, FM_SFT_TSV, NULL);
    if (!st) {
        b.d->pad_id = pad_id;
        if (!(b.d->label_names = fm_calloc((size_t)n_labels, sizeof *b.d->label_names)))
            st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
    }
    for (int i = 0; !st && i < n_labels; i++) {
        if (!label_names[i] || !label_names[i][0]) st = fm_fail(FM_ERR_ARG, "%s: label %d has no name", name, i);
        else if (!(b.d->label_names[i] = fm_strdup(label_names[i]))) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
        else b.d->n_labels++;
    }
    for (size_t i = 0; !st && i < n; i++) {
        if (labels[i] < 0 || labels[i] >= n_labels)
            st = fm_fail(FM_ERR_ARG, "%s: example %zu has label %d, outside [0, %d)", name, i, labels[i], n_labels);
        else
            st = builder_add(&b, ids + i * (size_t)len, NULL, (size_t)len, labels[i], (int)(i + 1), NULL, 0);
    }
    if (st) {
        fm_sft_data_free(b.d);
        return st;
    }
    *out = b.d;
    return FM_OK;
}

/* ---------------------------------------------------------------- held-out split */

/* A copy of d's frame (format, path, pad, labels) with no examples. */
static fm_status empty_like(const fm_sft_data *d, builder *b) {
    fm_status st = builder_init(b, d->path, d->format, NULL);
    if (st) return st;
    b->d->pad_id = d->pad_id;
    if (d->n_labels > 0) {
        b->d->label_names = fm_calloc((size_t)d->n_labels, sizeof *b->d->label_names);
        if (!b->d->label_names) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", d->path);
        for (int i = 0; i < d->n_labels; i++) {
            if (!(b->d->label_names[i] = fm_strdup(d->label_names[i])))
                return fm_fail(FM_ERR_NOMEM, "%s: out of memory", d->path);
            b->d->n_labels++;
        }
    }
    return FM_OK;
}

fm_status fm_sft_data_split(const fm_sft_data *all, int every, fm_sft_data **train, fm_sft_data **val) {
    if (!all || !train || !val || every < 2)
        return fm_fail(FM_ERR_ARG, "fm_sft_data_split: holding out every %d-th example (2 or more)", every);
    *train = *val = NULL;
    builder bt, bv;
    memset(&bt, 0, sizeof bt), memset(&bv, 0, sizeof bv);
    fm_status st = empty_like(all, &bt);
    if (!st) st = empty_like(all, &bv);
    if (!st && all->format == FM_SFT_TEXT) {
        size_t n = all->offsets[1], held = n / (size_t)every, keep = n - held;
        if (held == 0)
            st = fm_fail(FM_ERR_ARG, "%s: %zu tokens are too few to hold out 1/%d of them", all->path, n, every);
        uint64_t bytes = 0;
        for (size_t i = 0; !st && i < keep; i++) bytes += all->tok_bytes[i];
        if (!st) st = builder_add(&bt, all->ids, NULL, keep, -1, 1, all->tok_bytes, bytes);
        if (!st) st = builder_add(&bv, all->ids + keep, NULL, held, -1, 1, all->tok_bytes + keep,
                                  fm_sft_data_num_bytes(all) - bytes);
    } else if (!st) {
        for (size_t i = 0; !st && i < all->n_examples; i++) {
            size_t a = all->offsets[i];
            st = builder_add(i % (size_t)every == (size_t)every - 1 ? &bv : &bt, all->ids + a,
                             all->mask ? all->mask + a : NULL, all->offsets[i + 1] - a,
                             all->labels[i], all->lines[i], NULL, all->ex_bytes[i]);
        }
        if (!st && (bv.d->n_examples == 0 || bt.d->n_examples == 0))
            st = fm_fail(FM_ERR_ARG, "%s: %zu examples are too few to hold out every %d-th (give a held-out file)",
                         all->path, all->n_examples, every);
    }
    if (st) {
        fm_sft_data_free(bt.d);
        fm_sft_data_free(bv.d);
        return st;
    }
    *train = bt.d, *val = bv.d;
    return FM_OK;
}

/* ---------------------------------------------------------------- the trainer's data source */

typedef struct {
    const fm_sft_data *train, *val;
    int seq;
    uint64_t seed;
    size_t eval_rows;  /* rows per held-out pass */
    int *perm;         /* (train examples) the order of epoch perm_epoch */
    uint64_t perm_epoch;
    int have_perm;
} sft_source;

/* Fills row r of b with example i of d: padded, cut to the row (tsv: the label). */
static void fill_example(fm_batch *b, int r, const fm_sft_data *d, size_t i) {
    int T = b->T, pad = d->pad_id;
    int *tokens = b->tokens + (size_t)r * T, *targets = b->targets + (size_t)r * T;
    float *mask = b->mask + (size_t)r * T;
    size_t a = d->offsets[i], n = d->offsets[i + 1] - a;
    const int *ids = d->ids + a;
    if (d->format == FM_SFT_TSV) {
        size_t m = n < (size_t)T ? n : (size_t)T; /* >= 1: a tsv text is never empty */
        for (int t = 0; t < T; t++) {
            tokens[t] = (size_t)t < m ? ids[t] : pad;
            targets[t] = d->labels[i];
            mask[t] = (size_t)t + 1 == m ? 1.0f : 0.0f;
        }
        return;
    }
    /* inputs ids[0 .. m-1), targets ids[1 .. m), m = min(n, T + 1) */
    size_t m = n < (size_t)T + 1 ? n : (size_t)T + 1;
    for (int t = 0; t < T; t++) {
        if ((size_t)t + 1 < m) {
            tokens[t] = ids[t];
            targets[t] = ids[t + 1];
            mask[t] = d->mask ? d->mask[a + t + 1] : 1.0f;
        } else {
            tokens[t] = (size_t)t < m ? ids[t] : pad;
            targets[t] = pad;
            mask[t] = 0.0f;
        }
    }
}

/* The training example at position p: epoch p / n follows a permutation drawn from (seed, epoch). */
static size_t example_at(sft_source *s, uint64_t p) {
    size_t n = s->train->n_examples;
    uint64_t epoch = p / n;
    if (!s->have_perm || s->perm_epoch != epoch) {
        uint64_t key[2] = {s->seed, epoch};
        fm_rng rng;
        fm_rng_seed(&rng, fm_hash64_update(FM_HASH64_SEED, key, sizeof key));
        for (size_t i = 0; i < n; i++) s->perm[i] = (int)i;
        for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = (size_t)(fm_rng_u64(&rng) % (i + 1));
            int t = s->perm[i];
            s->perm[i] = s->perm[j], s->perm[j] = t;
        }
        s->perm_epoch = epoch, s->have_perm = 1;
    }
    return (size_t)s->perm[p % n];
}

/* Copies tokens [off, off + T] of a text's tokens into row r (all targets count). */
static void fill_window(fm_batch *b, int r, const int *ids) {
    memcpy(b->tokens + (size_t)r * b->T, ids, sizeof(int) * (size_t)b->T);
    memcpy(b->targets + (size_t)r * b->T, ids + 1, sizeof(int) * (size_t)b->T);
    for (int t = 0; t < b->T; t++) b->mask[(size_t)r * b->T + t] = 1.0f;
}

static fm_status next(void *ctx, fm_batch *b, fm_rng *rng, uint64_t *position) {
    sft_source *s = ctx;
    if (b->T != s->seq) return fm_fail(FM_ERR_ARG, "fine-tuning data: a batch of %d positions, the source's rows have %d",
                                       b->T, s->seq);
    if (s->train->format == FM_SFT_TEXT) {
        size_t n = s->train->offsets[1];
        for (int r = 0; r < b->B; r++) fill_window(b, r, s->train->ids + fm_rng_u64(rng) % (n - (size_t)s->seq));
        *position += (uint64_t)b->B * (uint64_t)s->seq;
    } else {
        for (int r = 0; r < b->B; r++) fill_example(b, r, s->train, example_at(s, *position + (uint64_t)r));
        *position += (uint64_t)b->B;
    }
    b->rows = b->B;
    return FM_OK;
}

/* Held-out rows: examples (text: windows of seq + 1 tokens, seq apart) in order. */
static size_t eval_total(const sft_source *s) {
    const fm_sft_data *v = s->val;
    size_t all = v->format == FM_SFT_TEXT ? (v->offsets[1] - 1) / (size_t)s->seq : v->n_examples;
    return s->eval_rows > 0 && s->eval_rows < all ? s->eval_rows : all;
}

static fm_status eval_next(void *ctx, fm_batch *b, uint64_t index) {
    sft_source *s = ctx;
    if (b->T != s->seq) return fm_fail(FM_ERR_ARG, "fine-tuning data: a batch of %d positions, the source's rows have %d",
                                       b->T, s->seq);
    size_t total = eval_total(s);
    b->rows = 0;
    if (index > total / (size_t)b->B + 1) return FM_OK;
    for (size_t w = (size_t)index * (size_t)b->B; w < total && b->rows < b->B; w++) {
        if (s->val->format == FM_SFT_TEXT) fill_window(b, b->rows++, s->val->ids + w * (size_t)s->seq);
        else fill_example(b, b->rows++, s->val, w);
    }
    return FM_OK;
}

fm_status fm_sft_source_init(fm_data_source *out, const fm_sft_data *train, const fm_sft_data *val, int seq,
                             uint64_t seed, size_t eval_rows) {
    if (!out || !train) return fm_fail(FM_ERR_ARG, "fm_sft_source_init: no source or training data given");
    memset(out, 0, sizeof *out);
    if (seq < 1) return fm_fail(FM_ERR_ARG, "fine-tuning data: rows of %d positions", seq);
    if (val && val->format != train->format)
        return fm_fail(FM_ERR_MISMATCH, "the training data %s is %s, the held-out data %s is %s", train->path,
                       fm_sft_format_name(train->format), val->path, fm_sft_format_name(val->format));
    if (train->format == FM_SFT_TEXT) {
        if (train->offsets[1] < (size_t)seq + 2)
            return fm_fail(FM_ERR_ARG, "%s: %zu tokens, fewer than seq + 2 = %d", train->path, train->offsets[1],
                           seq + 2);
        if (val && val->offsets[1] < (size_t)seq + 1)
            return fm_fail(FM_ERR_ARG, "%s: %zu held-out tokens, fewer than seq + 1 = %d", val->path, val->offsets[1],
                           seq + 1);
    }
    if (train->format == FM_SFT_TSV && val) {
        int same = train->n_labels == val->n_labels;
        for (int i = 0; same && i < train->n_labels; i++) same = !strcmp(train->label_names[i], val->label_names[i]);
        if (!same)
            return fm_fail(FM_ERR_MISMATCH, "%s and %s have different label sets (load the held-out file with the "
                           "training file's labels)", train->path, val->path);
    }
    if (train->pad_id != (val ? val->pad_id : train->pad_id))
        return fm_fail(FM_ERR_MISMATCH, "%s and %s were read with different tokenizers (padding ids %d and %d)",
                       train->path, val->path, train->pad_id, val->pad_id);
    sft_source *s = fm_calloc(1, sizeof *s);
    int *perm = fm_malloc(sizeof(int) * (train->n_examples + 1));
    if (!s || !perm) {
        fm_free(s), fm_free(perm);
        return fm_fail(FM_ERR_NOMEM, "out of memory for the fine-tuning data source");
    }
    s->train = train, s->val = val, s->seq = seq, s->seed = seed, s->eval_rows = eval_rows, s->perm = perm;
    out->ctx = s;
    out->next = next;
    out->eval_next = val ? eval_next : NULL;
    return FM_OK;
}

void fm_sft_source_free(fm_data_source *source) {
    if (!source) return;
    sft_source *s = source->ctx;
    if (s) fm_free(s->perm);
    fm_free(s);
    source->ctx = NULL;
}
