/*
 * tokenizer_io.c — reading and writing tokenizer files.
 *
 * What it is for: Hugging Face's tokenizer.json (a BPE model with the byte-level pre-tokenizer
 * and decoder, and added tokens), read and written; GPT-2's own files, encoder.json + vocab.bpe
 * (or vocab.json + merges.txt, as Hugging Face names them), read. Every check names the file and
 * the entry at fault ("tokenizer.json: merges[12] refers to unknown token 'xx'"), so a malformed
 * file gets a clear error and never a crash.
 *
 * Token strings in these files are "byte-level": each byte is shown as one printable character
 * (GPT-2's bytes_to_unicode: the printable bytes ! to ~, ¡ to ¬ and ® to ÿ stand for themselves,
 * the other 68 bytes become U+0100 onwards in order, so a space is 'Ġ' and a newline 'Ċ').
 * What it is not for: encoding (tokenizer.c) or training (tokenizer_train.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "tokenizer/tokenizer_internal.h"

/* ---------------------------------------------------------------- the byte-level alphabet */

/* The code point that stands for byte b. The 68 bytes that are not printable, in order, are
 * 0x00-0x20 (U+0100-U+0120), 0x7F-0xA0 (U+0121-U+0142) and 0xAD (U+0143). */
static int32_t byte_char(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    if (b <= 0x20) return 256 + b;
    if (b <= 0xA0) return 289 + (b - 0x7F);
    return 323; /* 0xAD, the soft hyphen */
}

/* The byte that code point cp stands for, or -1. */
static int char_byte(int32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return cp;
    if (cp >= 256 && cp <= 288) return cp - 256;
    if (cp >= 289 && cp <= 322) return 0x7F + (cp - 289);
    if (cp == 323) return 0xAD;
    return -1;
}

/* Decodes one byte-level string (UTF-8, len bytes) into out (at most len bytes); returns the
 * number of bytes, or -1 with *bad the offending code point (-1 for invalid UTF-8). */
static long bytelevel_decode(const char *str, size_t len, uint8_t *out, int32_t *bad) {
    const uint8_t *s = (const uint8_t *)str;
    long n = 0;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        int extra = s[i] < 0x80 ? 0 : (s[i] & 0xE0) == 0xC0 ? 1 : (s[i] & 0xF0) == 0xE0 ? 2 : (s[i] & 0xF8) == 0xF0 ? 3 : -1;
        if (extra < 0 || i + (size_t)extra >= len) {
            *bad = -1;
            return -1;
        }
        cp = extra ? s[i] & (0x3F >> extra) : s[i];
        for (int k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                *bad = -1;
                return -1;
            }
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        i += 1 + (size_t)extra;
        static const int32_t shortest[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < shortest[extra]) { /* an overlong form */
            *bad = -1;
            return -1;
        }
        int byte = char_byte(cp);
        if (byte < 0) {
            *bad = cp;
            return -1;
        }
        out[n++] = (uint8_t)byte;
    }
    return n;
}

/* ---------------------------------------------------------------- growable text */


/* Appends s (n bytes) as the inside of a JSON string, escaped. */
static void buf_json_escaped(fm_text *b, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            fm_text_append(b, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            fm_text_append(b, esc, 6);
        } else {
            fm_text_append(b, &c, 1);
        }
    }
}

/* Appends bytes as their byte-level string (UTF-8, JSON-escaped). */
static void buf_bytelevel(fm_text *b, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int32_t cp = byte_char(s[i]);
        if (cp == '"' || cp == '\\') {
            char esc[2] = {'\\', (char)cp};
            fm_text_append(b, esc, 2);
        } else if (cp < 0x80) {
            char c = (char)cp;
            fm_text_append(b, &c, 1);
        } else {
            char u[2] = {(char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F))};
            fm_text_append(b, u, 2);
        }
    }
}

/* ---------------------------------------------------------------- a string -> id map */

typedef struct {
    const char *key; /* not owned */
    size_t len;
    int32_t id;
} smap_slot;

typedef struct {
    smap_slot *slots;
    size_t mask;
} smap;

static uint64_t str_hash(const char *s, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001B3ull;
    return h ^ (h >> 29);
}

/* A map for up to n keys (kept at most half full). */
static int smap_init(smap *m, size_t n) {
    size_t slots = 16;
    while (slots < 2 * n + 2) slots *= 2;
    m->slots = fm_calloc(slots, sizeof *m->slots);
    m->mask = slots - 1;
    return m->slots != NULL;
}

static int32_t smap_get(const smap *m, const char *key, size_t len) {
    for (size_t h = str_hash(key, len) & m->mask;; h = (h + 1) & m->mask) {
        const smap_slot *s = &m->slots[h];
        if (!s->key) return -1;
        if (s->len == len && memcmp(s->key, key, len) == 0) return s->id;
    }
}

/* Adds key -> id; returns -1 when added, or the id already there when the key is present. */
static int32_t smap_put(smap *m, const char *key, size_t len, int32_t id) {
    for (size_t h = str_hash(key, len) & m->mask;; h = (h + 1) & m->mask) {
        smap_slot *s = &m->slots[h];
        if (!s->key) {
            *s = (smap_slot){key, len, id};
            return -1;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0) return s->id;
    }
}

/* ---------------------------------------------------------------- messages */

/* A token's text for a message: at most 40 bytes, cut at a character boundary, in quotes. */
static const char *quoted(const char *s, size_t n, char *out, size_t cap) {
    size_t max = 40, k = n < max ? n : max;
    while (k < n && k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
    snprintf(out, cap, "'%.*s%s'", (int)k, s, k < n ? "..." : "");
    return out;
}

/* The 1-based line of offset in data, for a JSON syntax error. */
static int line_of(const char *data, size_t offset) {
    int line = 1;
    for (size_t i = 0; i < offset; i++) line += data[i] == '\n';
    return line;
}

/* Parses JSON, or fails naming the line where it stopped making sense. Strict: one JSON value
 * and nothing after it but white space, and no NUL anywhere (a NUL byte, or a \u0000 escape in
 * a string: a token's text or a key read as a C string would silently end there). In valid JSON
 * a backslash only begins an escape inside a string, so escapes are read pairwise. */
static fm_status parse_json(cJSON **root, const char *data, size_t len, const char *name) {
    *root = NULL;
    for (size_t i = 0; i < len; i++) {
        int nul = data[i] == '\0' ||
                  (data[i] == '\\' && i + 5 < len && data[i + 1] == 'u' && memcmp(data + i + 2, "0000", 4) == 0);
        if (nul)
            return fm_fail(FM_ERR_FORMAT, "%s: a NUL character (%s, line %d); a JSON text holds none", name,
                           data[i] ? "\\u0000" : "a NUL byte", line_of(data, i));
        if (data[i] == '\\' && i + 1 < len && data[i + 1] != '\0') i++; /* the escaped character */
    }
    const char *end = NULL;
    unsigned long failures = fm_alloc_failures();
    *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
    if (*root) {
        while (at < len && strchr(" \t\r\n", data[at])) at++; /* data[at] is no NUL: checked above */
        if (at == len) return FM_OK;
        cJSON_Delete(*root);
        *root = NULL;
        return fm_fail(FM_ERR_FORMAT, "%s: unexpected content after the JSON (line %d)", name, line_of(data, at));
    }
    if (fm_alloc_failures() != failures) /* cJSON ran out of memory, the JSON may be fine */
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory parsing the JSON", name);
    return fm_fail(FM_ERR_FORMAT, "%s: invalid JSON (line %d)", name, line_of(data, at));
}

/* ---------------------------------------------------------------- building from a vocabulary */

/* A JSON value that is an id: a whole number in [0, FM_TOK_MAX_VOCAB). */
static int json_id(const cJSON *v, int *id) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d < FM_TOK_MAX_VOCAB) || d != (double)(int)d) return 0; /* range first: NaN, huge */
    *id = (int)d;
    return 1;
}

/* An added token of tokenizer.json, read before the vocabulary. */
typedef struct {
    int id;
    const char *content;
} added_token;

/* Makes the tokenizer from a vocabulary object (byte-level string -> id) and the added tokens
 * (id, text), and fills map with the vocabulary's strings (for the merges). where names the
 * object in messages ("model.vocab"). */
static fm_status from_vocab(fm_tokenizer **out, smap *map, const cJSON *vocab, const added_token *added,
                            int n_added, const char *name, const char *where) {
    char q[128];
    *out = NULL;
    if (!cJSON_IsObject(vocab)) return fm_fail(FM_ERR_FORMAT, "%s: %s is not an object of token -> id", name, where);
    int n_entries = cJSON_GetArraySize(vocab), max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        const char *key = e->string ? e->string : "";
        int id;
        if (!json_id(e, &id))
            return fm_fail(FM_ERR_FORMAT, "%s: %s[%s] is not an id (a whole number in [0, %d))", name, where,
                           quoted(key, strlen(key), q, sizeof q), FM_TOK_MAX_VOCAB);
        if (id > max_id) max_id = id;
    }
    for (int a = 0; a < n_added; a++)
        if (added[a].id > max_id) max_id = added[a].id;
    if (max_id < 0) return fm_fail(FM_ERR_FORMAT, "%s: %s is empty", name, where);

    fm_tokenizer *tok;
    fm_status st = fm_tok_new(&tok, max_id + 1);
    if (st) return st;
    /* added tokens first: their text is what they stand for */
    for (int a = 0; a < n_added; a++) {
        if (tok->tok_len[added[a].id] >= 0) {
            fm_tokenizer_free(tok);
            return fm_fail(FM_ERR_FORMAT, "%s: added_tokens: id %d appears twice", name, added[a].id);
        }
        st = fm_tok_set_token(tok, added[a].id, added[a].content, strlen(added[a].content));
        if (!st) st = fm_tok_add_special(tok, added[a].id);
        if (st) {
            fm_tokenizer_free(tok);
            return fm_fail_prefix(st, "%s: ", name);
        }
    }
    uint8_t *bytes = fm_malloc(1024);
    size_t bytes_cap = 1024;
    if (!bytes || !smap_init(map, (size_t)n_entries)) {
        fm_free(bytes);
        fm_tokenizer_free(tok);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
    }
    for (const cJSON *e = vocab->child; e; e = e->next) {
        const char *key = e->string ? e->string : "";
        size_t len = strlen(key);
        int id = 0;
        json_id(e, &id);
        int32_t other = smap_put(map, key, len, id);
        if (other >= 0) {
            st = fm_fail(FM_ERR_FORMAT, "%s: %s has the token %s twice", name, where, quoted(key, len, q, sizeof q));
            break;
        }
        int is_added = 0;
        for (int a = 0; a < n_added && !is_added; a++) is_added = added[a].id == id;
        if (is_added) continue; /* the added token's text stands */
        if (len > bytes_cap) {
            uint8_t *grown = fm_realloc(bytes, len);
            if (!grown) {
                st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
                break;
            }
            bytes = grown;
            bytes_cap = len;
        }
        int32_t bad = 0;
        long n = bytelevel_decode(key, len, bytes, &bad);
        if (n < 0) {
            if (bad >= 0)
                st = fm_fail(FM_ERR_FORMAT, "%s: %s: %s is not a byte-level token (U+%04X stands for no byte)", name,
                             where, quoted(key, len, q, sizeof q), (unsigned)bad);
            else
                st = fm_fail(FM_ERR_FORMAT, "%s: %s: %s is not a byte-level token (not valid UTF-8)", name, where,
                             quoted(key, len, q, sizeof q));
            break;
        }
        if (tok->tok_len[id] >= 0) {
            st = fm_fail(FM_ERR_FORMAT, "%s: %s: id %d is given to %s and to another token", name, where, id,
                         quoted(key, len, q, sizeof q));
            break;
        }
        st = fm_tok_set_token(tok, id, bytes, (size_t)n);
        if (st) {
            fm_fail_prefix(st, "%s: ", name);
            break;
        }
    }
    fm_free(bytes);
    if (st) {
        fm_free(map->slots);
        map->slots = NULL;
        fm_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return FM_OK;
}

/* Adds the merge of the tokens a and b (byte-level strings); what names it in messages. */
static fm_status add_merge_strings(fm_tokenizer *tok, const smap *map, const char *a, size_t la, const char *b,
                                   size_t lb, const char *name, const char *what, char **joined, size_t *joined_cap) {
    char q[128];
    int32_t left = smap_get(map, a, la), right = smap_get(map, b, lb);
    if (left < 0) return fm_fail(FM_ERR_FORMAT, "%s: %s refers to unknown token %s", name, what, quoted(a, la, q, sizeof q));
    if (right < 0) return fm_fail(FM_ERR_FORMAT, "%s: %s refers to unknown token %s", name, what, quoted(b, lb, q, sizeof q));
    if (la + lb > *joined_cap) {
        size_t cap = (la + lb) * 2;
        char *grown = fm_realloc(*joined, cap);
        if (!grown) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
        *joined = grown;
        *joined_cap = cap;
    }
    memcpy(*joined, a, la);
    memcpy(*joined + la, b, lb);
    int32_t result = smap_get(map, *joined, la + lb);
    if (result < 0)
        return fm_fail(FM_ERR_FORMAT, "%s: %s: the merged token %s is not in the vocabulary", name, what,
                       quoted(*joined, la + lb, q, sizeof q));
    return fm_tok_add_merge(tok, left, right, result);
}

/* ---------------------------------------------------------------- tokenizer.json */

/* Checks that an optional component (pre_tokenizer, decoder, normalizer) is absent, null, or of
 * one of the accepted types (NULL: none accepted). */
static fm_status check_component(const cJSON *root, const char *key, const char *accepted, const char *name) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!c || cJSON_IsNull(c)) return FM_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "?";
    if (!accepted || strcmp(t, accepted) != 0) {
        if (accepted)
            return fm_fail(FM_ERR_FORMAT, "%s: %s is \"%.60s\"; fm reads byte-level BPE (\"%s\") only", name, key, t, accepted);
        return fm_fail(FM_ERR_FORMAT, "%s: %s \"%.60s\" is not supported (fm reads byte-level BPE without one)", name, key, t);
    }
    const cJSON *regex = cJSON_GetObjectItemCaseSensitive(c, "use_regex");
    if (strcmp(key, "pre_tokenizer") == 0 && cJSON_IsFalse(regex))
        return fm_fail(FM_ERR_FORMAT, "%s: pre_tokenizer.use_regex is false; fm applies GPT-2's regex always", name);
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(c, "add_prefix_space");
    if (strcmp(key, "pre_tokenizer") == 0 && cJSON_IsTrue(prefix))
        return fm_fail(FM_ERR_FORMAT, "%s: pre_tokenizer.add_prefix_space is true; fm does not add a space", name);
    return FM_OK;
}

/* A string option of the model that must be absent, null or "". */
static fm_status check_empty_string(const cJSON *model, const char *key, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, key);
    if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && v->valuestring[0] == '\0'))
        return fm_fail(FM_ERR_FORMAT, "%s: model.%s is set; fm reads BPE without it", name, key);
    return FM_OK;
}

static fm_status load_json_tree(fm_tokenizer **out, const cJSON *root, const char *name) {
    char q[128];
    if (!cJSON_IsObject(root)) return fm_fail(FM_ERR_FORMAT, "%s: not a JSON object", name);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return fm_fail(FM_ERR_FORMAT, "%s: no \"model\" object (not a tokenizer.json; for GPT-2's encoder.json and "
                       "vocab.bpe give their folder)", name);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        return fm_fail(FM_ERR_FORMAT, "%s: model.type is %s%.60s%s; fm reads \"BPE\" only", name,
                       cJSON_IsString(type) ? "\"" : "", cJSON_IsString(type) ? type->valuestring : "not a string",
                       cJSON_IsString(type) ? "\"" : "");
    fm_status st;
    if ((st = check_component(root, "pre_tokenizer", "ByteLevel", name)) ||
        (st = check_component(root, "decoder", "ByteLevel", name)) ||
        (st = check_component(root, "normalizer", NULL, name)) ||
        (st = check_empty_string(model, "continuing_subword_prefix", name)) ||
        (st = check_empty_string(model, "end_of_word_suffix", name)))
        return st;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")))
        return fm_fail(FM_ERR_FORMAT, "%s: model.ignore_merges is true; fm always applies the merges", name);
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return fm_fail(FM_ERR_FORMAT, "%s: model.merges is missing or not an array", name);

    /* added tokens */
    const cJSON *added_json = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added_json && !cJSON_IsNull(added_json) && !cJSON_IsArray(added_json))
        return fm_fail(FM_ERR_FORMAT, "%s: added_tokens is not an array", name);
    int n_added = cJSON_IsArray(added_json) ? cJSON_GetArraySize(added_json) : 0;
    added_token *added = fm_calloc((size_t)n_added + 1, sizeof *added);
    if (!added) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
    int k = 0;
    for (const cJSON *a = n_added ? added_json->child : NULL; a; a = a->next, k++) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        int id;
        if (!json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id)) {
            fm_free(added);
            return fm_fail(FM_ERR_FORMAT, "%s: added_tokens[%d].id is missing or not an id in [0, %d)", name, k,
                           FM_TOK_MAX_VOCAB);
        }
        if (!cJSON_IsString(content) || content->valuestring[0] == '\0') {
            fm_free(added);
            return fm_fail(FM_ERR_FORMAT, "%s: added_tokens[%d].content is missing or empty", name, k);
        }
        added[k] = (added_token){id, content->valuestring};
    }

    smap map = {NULL, 0};
    fm_tokenizer *tok = NULL;
    st = from_vocab(&tok, &map, cJSON_GetObjectItemCaseSensitive(model, "vocab"), added, n_added, name, "model.vocab");
    fm_free(added);
    if (st) return st;

    /* merges: "a b" strings or ["a", "b"] pairs */
    char *joined = NULL, what[64];
    size_t joined_cap = 0;
    int i = 0;
    for (const cJSON *m = merges->child; m && !st; m = m->next, i++) {
        snprintf(what, sizeof what, "merges[%d]", i);
        if (cJSON_IsString(m)) {
            const char *s = m->valuestring, *space = strchr(s, ' ');
            if (!space || space == s || !space[1] || strchr(space + 1, ' ')) {
                st = fm_fail(FM_ERR_FORMAT, "%s: %s is %s, not two tokens separated by one space", name, what,
                             quoted(s, strlen(s), q, sizeof q));
                break;
            }
            st = add_merge_strings(tok, &map, s, (size_t)(space - s), space + 1, strlen(space + 1), name, what,
                                   &joined, &joined_cap);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            const char *a = m->child->valuestring, *b = m->child->next->valuestring;
            st = add_merge_strings(tok, &map, a, strlen(a), b, strlen(b), name, what, &joined, &joined_cap);
        } else {
            st = fm_fail(FM_ERR_FORMAT, "%s: %s is neither \"A B\" nor [\"A\", \"B\"]", name, what);
        }
    }
    fm_free(joined);
    fm_free(map.slots);
    if (!st) st = fm_tok_finish(tok, name);
    if (st) {
        fm_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return FM_OK;
}

fm_status fm_tok_load_json_buffer(fm_tokenizer **out, const char *data, size_t len, const char *name) {
    if (!out) return fm_fail(FM_ERR_ARG, "fm_tokenizer_load: no output given");
    *out = NULL;
    cJSON *root;
    fm_status st = parse_json(&root, data, len, name);
    if (st) return st;
    st = load_json_tree(out, root, name);
    cJSON_Delete(root);
    return st;
}

/* ---------------------------------------------------------------- GPT-2's encoder.json + vocab.bpe */

fm_status fm_tok_load_gpt2_buffers(fm_tokenizer **out, const char *encoder_json, size_t encoder_len,
                                   const char *encoder_name, const char *merges_txt, size_t merges_len,
                                   const char *merges_name) {
    if (!out) return fm_fail(FM_ERR_ARG, "fm_tokenizer_load: no output given");
    *out = NULL;
    cJSON *root;
    fm_status st = parse_json(&root, encoder_json, encoder_len, encoder_name);
    if (st) return st;
    smap map = {NULL, 0};
    fm_tokenizer *tok = NULL;
    st = from_vocab(&tok, &map, root, NULL, 0, encoder_name, "the vocabulary");
    if (st) {
        cJSON_Delete(root);
        return st;
    }
    /* GPT-2's one special token is in the vocabulary itself */
    int32_t eot = smap_get(&map, "<|endoftext|>", 13);
    if (eot >= 0) st = fm_tok_add_special(tok, eot);

    /* one merge a line, "a b"; a first line "#version: ..." and blank lines are skipped */
    char *joined = NULL, what[64];
    size_t joined_cap = 0, pos = 0;
    int line = 0;
    while (!st && pos < merges_len) {
        const char *s = merges_txt + pos;
        const char *nl = memchr(s, '\n', merges_len - pos);
        size_t n = nl ? (size_t)(nl - s) : merges_len - pos;
        pos += n + 1;
        line++;
        if (n > 0 && s[n - 1] == '\r') n--;
        if (n == 0 || (line == 1 && n >= 8 && memcmp(s, "#version", 8) == 0)) continue;
        const char *space = memchr(s, ' ', n);
        size_t la = space ? (size_t)(space - s) : 0;
        if (!space || la == 0 || la + 1 == n || memchr(space + 1, ' ', n - la - 1)) {
            st = fm_fail(FM_ERR_FORMAT, "%s: line %d is not two tokens separated by one space", merges_name, line);
            break;
        }
        snprintf(what, sizeof what, "line %d", line);
        st = add_merge_strings(tok, &map, s, la, space + 1, n - la - 1, merges_name, what, &joined, &joined_cap);
    }
    fm_free(joined);
    fm_free(map.slots);
    cJSON_Delete(root);
    if (!st) st = fm_tok_finish(tok, merges_name);
    if (st) {
        fm_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return FM_OK;
}

/* ---------------------------------------------------------------- files */

/* The whole file, fm_malloc'd with a NUL after it. */
static fm_status read_whole(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fm_fail(FM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return fm_fail(FM_ERR_IO, "cannot read %s: not a regular file", path);
    }
    if (sb.st_size > (off_t)1 << 30) {
        fclose(fp);
        return fm_fail(FM_ERR_FORMAT, "%s: %lld bytes is too large for a tokenizer file", path, (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = fm_malloc(size + 1);
    if (!buf) {
        fclose(fp);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, size, fp);
    int err = ferror(fp);
    fclose(fp);
    if (got != size || err) {
        fm_free(buf);
        return fm_fail(FM_ERR_IO, "cannot read %s", path);
    }
    buf[size] = '\0';
    *data = buf;
    *len = size;
    return FM_OK;
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static fm_status load_json_file(fm_tokenizer **out, const char *path) {
    char *data;
    size_t len;
    fm_status st = read_whole(path, &data, &len);
    if (st) return st;
    st = fm_tok_load_json_buffer(out, data, len, path);
    fm_free(data);
    return st;
}

static fm_status load_gpt2_files(fm_tokenizer **out, const char *encoder_path, const char *merges_path) {
    char *enc = NULL, *merges = NULL;
    size_t enc_len, merges_len;
    fm_status st = read_whole(encoder_path, &enc, &enc_len);
    if (!st) st = read_whole(merges_path, &merges, &merges_len);
    if (!st) st = fm_tok_load_gpt2_buffers(out, enc, enc_len, encoder_path, merges, merges_len, merges_path);
    fm_free(enc);
    fm_free(merges);
    return st;
}

fm_status fm_tokenizer_load(fm_tokenizer **out, const char *path) {
    if (!out) return fm_fail(FM_ERR_ARG, "fm_tokenizer_load: no output given");
    *out = NULL;
    if (!path || !path[0]) return fm_fail(FM_ERR_ARG, "fm_tokenizer_load: empty path");
    struct stat sb;
    if (stat(path, &sb) != 0) return fm_fail(FM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return load_json_file(out, path);

    /* a folder: a model directory's tokenizer.json, or GPT-2's pair of files */
    static const char *const layouts[3][2] = {
        {"tokenizer.json", NULL}, {"encoder.json", "vocab.bpe"}, {"vocab.json", "merges.txt"}};
    for (int k = 0; k < 3; k++) {
        char *a = fm_path_join(path, layouts[k][0]);
        char *b = layouts[k][1] ? fm_path_join(path, layouts[k][1]) : NULL;
        if (!a || (layouts[k][1] && !b)) {
            fm_free(a), fm_free(b);
            return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
        }
        fm_status st = FM_ERR_IO;
        int found = is_file(a) && (!b || is_file(b));
        if (found) st = b ? load_gpt2_files(out, a, b) : load_json_file(out, a);
        fm_free(a), fm_free(b);
        if (found) return st;
    }
    return fm_fail(FM_ERR_IO, "%s holds no tokenizer.json, encoder.json + vocab.bpe, or vocab.json + merges.txt", path);
}

/* ---------------------------------------------------------------- saving tokenizer.json */

static int is_special(const fm_tokenizer *tok, int id) {
    for (int s = 0; s < tok->n_special; s++)
        if (tok->special_ids[s] == id) return 1;
    return 0;
}

fm_status fm_tok_save_buffer(const fm_tokenizer *tok, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    fm_text b = {NULL, 0, 0, 0};
    char num[64];

    fm_text_puts(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (int s = 0; s < tok->n_special; s++) {
        int id = tok->special_ids[s];
        snprintf(num, sizeof num, "%s\n    {\n      \"id\": %d,\n      \"content\": \"", s ? "," : "", id);
        fm_text_puts(&b, num);
        buf_json_escaped(&b, tok->pool + tok->tok_off[id], (size_t)tok->tok_len[id]);
        fm_text_puts(&b, "\",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n"
                    "      \"normalized\": false,\n      \"special\": true\n    }");
    }
    fm_text_puts(&b, tok->n_special ? "\n  ],\n" : "],\n");
    fm_text_puts(&b, "  \"normalizer\": null,\n"
                "  \"pre_tokenizer\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": false,\n"
                "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
                "  \"post_processor\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
                "    \"trim_offsets\": false,\n    \"use_regex\": true\n  },\n"
                "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
                "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
                "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
                "    \"continuing_subword_prefix\": \"\",\n    \"end_of_word_suffix\": \"\",\n"
                "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {");

    /* every token, in id order; a special token whose bytes equal an ordinary token's appears
     * only in added_tokens, so that no key repeats */
    smap seen;
    if (!smap_init(&seen, (size_t)tok->n_vocab)) {
        fm_free(b.data);
        return fm_fail(FM_ERR_NOMEM, "tokenizer.json: out of memory");
    }
    int first = 1;
    for (int pass = 0; pass < 2; pass++) { /* ordinary tokens claim their keys first */
        for (int id = 0; id < tok->n_vocab; id++) {
            if (tok->tok_len[id] < 0 || is_special(tok, id) != pass) continue;
            smap_put(&seen, (const char *)tok->pool + tok->tok_off[id], (size_t)tok->tok_len[id], id);
        }
    }
    for (int id = 0; id < tok->n_vocab; id++) {
        if (tok->tok_len[id] < 0) continue;
        if (smap_get(&seen, (const char *)tok->pool + tok->tok_off[id], (size_t)tok->tok_len[id]) != id) continue;
        fm_text_puts(&b, first ? "\n      \"" : ",\n      \"");
        first = 0;
        buf_bytelevel(&b, tok->pool + tok->tok_off[id], (size_t)tok->tok_len[id]);
        snprintf(num, sizeof num, "\": %d", id);
        fm_text_puts(&b, num);
    }
    fm_free(seen.slots);
    fm_text_puts(&b, first ? "},\n    \"merges\": [" : "\n    },\n    \"merges\": [");
    for (int r = 0; r < tok->n_merges; r++) {
        fm_tok_merge m = tok->merges[r];
        fm_text_puts(&b, r ? ",\n      \"" : "\n      \"");
        buf_bytelevel(&b, tok->pool + tok->tok_off[m.left], (size_t)tok->tok_len[m.left]);
        fm_text_puts(&b, " ");
        buf_bytelevel(&b, tok->pool + tok->tok_off[m.right], (size_t)tok->tok_len[m.right]);
        fm_text_puts(&b, "\"");
    }
    fm_text_puts(&b, tok->n_merges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n");
    if (b.failed) {
        fm_free(b.data);
        return fm_fail(FM_ERR_NOMEM, "tokenizer.json: out of memory");
    }
    *out = b.data;
    *len = b.len;
    return FM_OK;
}

fm_status fm_tokenizer_save(const fm_tokenizer *tok, const char *path) {
    if (!tok || !path) return fm_fail(FM_ERR_ARG, "fm_tokenizer_save: missing tokenizer or path");
    char *text;
    size_t len;
    fm_status st = fm_tok_save_buffer(tok, &text, &len);
    if (st) return st;
    fm_atomic_file af;
    st = fm_atomic_open(&af, path);
    if (st) {
        fm_free(text);
        return st;
    }
    fm_atomic_write(&af, text, len);
    fm_free(text);
    return fm_atomic_commit(&af);
}
