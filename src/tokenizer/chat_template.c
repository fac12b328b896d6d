/*
 * chat_template.c — fm's pinned chat template: as text, as token ids with a loss mask, and as the
 * Jinja chat_template of tokenizer_config.json (with generation_config.json).
 *
 * What it is for: one definition of how a conversation becomes tokens, shared by fine-tuning
 * (sft_data.c), fm chat and a server. Each message is "<|ROLE|>" + content + "<|endoftext|>",
 * ROLE one of system, user, assistant; a prompt for generation ends with "<|assistant|>".
 * The ids are built piece by piece: the markers are their special ids and the content is
 * encoded with special tokens off, so text typed by a user can never become a control token.
 * Not for: reading fine-tuning files (train/sft_data.c).
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "tokenizer/tokenizer_internal.h"

/* The template in Jinja: renders exactly as fm_chat_render for any list of messages whose roles
 * and contents are strings (an unknown role raises). One line, so that no whitespace handling
 * (trim_blocks, lstrip_blocks) can change the output. */
static const char jinja_template[] =
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|endoftext|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

const char *fm_chat_template_jinja(void) { return jinja_template; }

static const char *const roles[3] = {"system", "user", "assistant"};
static const char *const role_tokens[3] = {"<|system|>", "<|user|>", "<|assistant|>"};
#define END_TOKEN "<|endoftext|>"

/* The index of a role in roles, or -1. */
static int role_index(const char *role) {
    for (int r = 0; r < 3; r++)
        if (!strcmp(role, roles[r])) return r;
    return -1;
}

/* Checks every message: role and content present, role known. */
static fm_status check_messages(const fm_chat_message *msgs, size_t n) {
    if (n > 0 && !msgs) return fm_fail(FM_ERR_ARG, "chat template: no messages given");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return fm_fail(FM_ERR_ARG, "chat template: message %zu has no %s", i, msgs[i].role ? "content" : "role");
        if (role_index(msgs[i].role) < 0)
            return fm_fail(FM_ERR_FORMAT, "chat template: message %zu has the unknown role \"%.64s\" (system, user "
                           "or assistant)", i, msgs[i].role);
    }
    return FM_OK;
}

fm_status fm_chat_render(const fm_chat_message *msgs, size_t n, int add_generation_prompt, char **text,
                         size_t *len) {
    if (!text) return fm_fail(FM_ERR_ARG, "fm_chat_render: no output given");
    *text = NULL;
    if (len) *len = 0;
    fm_status st = check_messages(msgs, n);
    if (st) return st;
    fm_text t = {0};
    fm_text_puts(&t, ""); /* an empty list still gives "" */
    for (size_t i = 0; i < n; i++) {
        fm_text_puts(&t, role_tokens[role_index(msgs[i].role)]);
        fm_text_puts(&t, msgs[i].content);
        fm_text_puts(&t, END_TOKEN);
    }
    if (add_generation_prompt) fm_text_puts(&t, role_tokens[2]);
    if (t.failed) {
        fm_free(t.data);
        return fm_fail(FM_ERR_NOMEM, "chat template: out of memory rendering %zu messages", n);
    }
    *text = t.data;
    if (len) *len = t.len;
    return FM_OK;
}

/* The ids of the four tokens the template needs: ids[0..2] the roles', ids[3] <|endoftext|>. */
static fm_status template_ids(const fm_tokenizer *tok, int ids[4]) {
    const char *missing[4];
    int n_missing = 0;
    for (int r = 0; r < 4; r++) {
        const char *name = r < 3 ? role_tokens[r] : END_TOKEN;
        ids[r] = fm_tokenizer_special_id(tok, name);
        if (ids[r] < 0) missing[n_missing++] = name;
    }
    if (n_missing == 0) return FM_OK;
    char list[128] = "";
    for (int i = 0; i < n_missing; i++) {
        if (i) strcat(list, ", ");
        strcat(list, missing[i]);
    }
    return fm_fail(FM_ERR_MISMATCH, "the tokenizer lacks the chat template's special token%s %s; add them with "
                   "--add-chat-tokens (which also grows the model's embeddings)", n_missing > 1 ? "s" : "", list);
}

fm_status fm_chat_check_tokenizer(const fm_tokenizer *tok) {
    if (!tok) return fm_fail(FM_ERR_ARG, "chat template: no tokenizer given");
    int ids[4];
    return template_ids(tok, ids);
}

/* A growing id list with its mask. */
typedef struct {
    int *ids;
    float *mask;
    size_t n, cap;
} id_list;

static fm_status push(id_list *l, const int *ids, size_t n, float mask) {
    if (l->n + n > l->cap) {
        size_t cap = l->cap ? l->cap : 64;
        while (cap < l->n + n) cap *= 2;
        int *gi = fm_realloc(l->ids, cap * sizeof *gi);
        if (gi) l->ids = gi;
        float *gm = gi ? fm_realloc(l->mask, cap * sizeof *gm) : NULL;
        if (gm) l->mask = gm;
        if (!gi || !gm) return fm_fail(FM_ERR_NOMEM, "chat template: out of memory for %zu tokens", l->n + n);
        l->cap = cap;
    }
    memcpy(l->ids + l->n, ids, n * sizeof *ids);
    for (size_t i = 0; i < n; i++) l->mask[l->n + i] = mask;
    l->n += n;
    return FM_OK;
}

fm_status fm_chat_encode(const fm_tokenizer *tok, const fm_chat_message *msgs, size_t n, int add_generation_prompt,
                         int loss_on_all, int **ids, float **loss_mask, size_t *n_ids) {
    if (!tok || !ids || !n_ids) return fm_fail(FM_ERR_ARG, "fm_chat_encode: no tokenizer or output given");
    *ids = NULL;
    if (loss_mask) *loss_mask = NULL;
    *n_ids = 0;
    int special[4];
    fm_status st = template_ids(tok, special);
    if (!st) st = check_messages(msgs, n);
    if (st) return st;
    id_list l = {0};
    float all = loss_on_all ? 1.0f : 0.0f;
    for (size_t i = 0; !st && i < n; i++) {
        int r = role_index(msgs[i].role);
        float learn = r == 2 ? 1.0f : all;
        int *content = NULL;
        size_t n_content = 0;
        st = push(&l, &special[r], 1, all);
        if (!st) st = fm_tokenizer_encode(tok, msgs[i].content, strlen(msgs[i].content), 0, &content, &n_content);
        if (!st) st = push(&l, content, n_content, learn);
        if (!st) st = push(&l, &special[3], 1, learn);
        fm_free(content);
    }
    if (!st && add_generation_prompt) st = push(&l, &special[2], 1, all);
    if (!st && l.n == 0) { /* nothing to give: still a valid (empty) allocation */
        l.ids = fm_malloc(sizeof *l.ids);
        l.mask = fm_malloc(sizeof *l.mask);
        if (!l.ids || !l.mask) st = fm_fail(FM_ERR_NOMEM, "chat template: out of memory");
    }
    if (st) {
        fm_free(l.ids);
        fm_free(l.mask);
        return st;
    }
    *ids = l.ids;
    *n_ids = l.n;
    if (loss_mask) *loss_mask = l.mask;
    else fm_free(l.mask);
    return FM_OK;
}

/* ---------------------------------------------------------------- tokenizer_config.json */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* tokenizer_config.json's text (cJSON_Print, fm_free it), or NULL when out of memory. */
static char *tokenizer_config_text(const fm_tokenizer *tok, int model_max_length) {
    cJSON *root = cJSON_CreateObject(), *added = cJSON_CreateObject();
    int ok = root && added && cJSON_AddItemToObject(root, "added_tokens_decoder", added);
    if (!ok) cJSON_Delete(added); /* not attached: root does not own it */
    /* every special token of the tokenizer, in id order, as transformers writes AddedToken */
    int *sorted = fm_malloc(sizeof(int) * (size_t)(tok->n_special + 1));
    ok = ok && sorted;
    if (ok) {
        memcpy(sorted, tok->special_ids, sizeof(int) * (size_t)tok->n_special);
        qsort(sorted, (size_t)tok->n_special, sizeof(int), cmp_int);
    }
    for (int s = 0; ok && s < tok->n_special; s++) {
        int id = sorted[s];
        size_t len = 0;
        const char *bytes = fm_tokenizer_token_bytes(tok, id, &len);
        char key[16], *content = fm_malloc(len + 1);
        cJSON *entry = cJSON_CreateObject();
        ok = content && entry && bytes;
        if (ok) {
            memcpy(content, bytes, len), content[len] = '\0';
            snprintf(key, sizeof key, "%d", id);
            ok = cJSON_AddStringToObject(entry, "content", content) && cJSON_AddFalseToObject(entry, "lstrip") &&
                 cJSON_AddFalseToObject(entry, "normalized") && cJSON_AddFalseToObject(entry, "rstrip") &&
                 cJSON_AddFalseToObject(entry, "single_word") && cJSON_AddTrueToObject(entry, "special");
        }
        ok = ok && cJSON_AddItemToObject(added, key, entry);
        if (!ok) cJSON_Delete(entry);
        fm_free(content);
    }
    fm_free(sorted);
    ok = ok && cJSON_AddFalseToObject(root, "add_bos_token") && cJSON_AddFalseToObject(root, "add_prefix_space") &&
         cJSON_AddStringToObject(root, "bos_token", END_TOKEN) &&
         cJSON_AddStringToObject(root, "chat_template", jinja_template) &&
         cJSON_AddFalseToObject(root, "clean_up_tokenization_spaces") &&
         cJSON_AddStringToObject(root, "eos_token", END_TOKEN) && cJSON_AddStringToObject(root, "errors", "replace");
    if (ok && model_max_length > 0) ok = cJSON_AddNumberToObject(root, "model_max_length", model_max_length) != NULL;
    ok = ok && cJSON_AddStringToObject(root, "pad_token", END_TOKEN) &&
         cJSON_AddStringToObject(root, "tokenizer_class", "GPT2Tokenizer") &&
         cJSON_AddStringToObject(root, "unk_token", END_TOKEN);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return text;
}

static char *generation_config_text(int end_id) {
    cJSON *root = cJSON_CreateObject();
    int ok = root && cJSON_AddNumberToObject(root, "bos_token_id", end_id) &&
             cJSON_AddNumberToObject(root, "eos_token_id", end_id) &&
             cJSON_AddNumberToObject(root, "pad_token_id", end_id);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return text;
}

fm_status fm_chat_write_config(const fm_tokenizer *tok, const char *dir, int model_max_length) {
    if (!tok || !dir || !dir[0]) return fm_fail(FM_ERR_ARG, "fm_chat_write_config: no tokenizer or folder given");
    int special[4];
    fm_status st = template_ids(tok, special);
    if (st) return st;
    static const char *const names[2] = {"tokenizer_config.json", "generation_config.json"};
    char *texts[2] = {tokenizer_config_text(tok, model_max_length), generation_config_text(special[3])};
    char *paths[2] = {fm_path_join(dir, names[0]), fm_path_join(dir, names[1])};
    fm_atomic_file files[2];
    int finished = 0;
    if (!texts[0] || !texts[1] || !paths[0] || !paths[1])
        st = fm_fail(FM_ERR_NOMEM, "%s: out of memory writing the chat template's files", dir);
    /* both files written whole before either replaces what dir held */
    for (int f = 0; !st && f < 2; f++) {
        st = fm_atomic_open(&files[f], paths[f]);
        if (st) break;
        fm_atomic_write(&files[f], texts[f], strlen(texts[f]));
        fm_atomic_write(&files[f], "\n", 1);
        st = fm_atomic_finish(&files[f]);
        if (!st) finished++;
    }
    if (st) {
        for (int f = 0; f < finished; f++) fm_atomic_abort(&files[f]);
    } else {
        for (int f = 0; f < 2; f++) {
            fm_status c = fm_atomic_commit(&files[f]);
            if (c && !st) st = c;
        }
    }
    for (int f = 0; f < 2; f++) fm_free(texts[f]), fm_free(paths[f]);
    return st;
}
