/*
 * task.c — reading an evaluation task from a JSONL file: an optional settings line, then one item
 * a line (the format is in docs/tasks.md).
 *
 * What it is for: fm eval --tasks and fm_task_evaluate (harness.c). Every problem is refused with
 * the file and line: a line that is not a JSON object, a missing or mistyped field, a gold index
 * outside the choices, no choices or an empty one, no answers, an unknown split or type.
 * Not for: running a task (harness.c).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "eval/task.h"

static const char *const type_names[] = {"multiple_choice", "generate", "perplexity"};

static void free_strings(char **s, int n) {
    for (int i = 0; s && i < n; i++) fm_free(s[i]);
    fm_free(s);
}

void fm_task_free(fm_task *t) {
    if (!t) return;
    for (int i = 0; i < t->n_items; i++) {
        fm_task_item *it = &t->items[i];
        fm_free(it->query);
        fm_free(it->text);
        free_strings(it->choices, it->n_choices);
        free_strings(it->answers, it->n_answers);
    }
    fm_free(t->items);
    free_strings(t->until, t->n_until);
    fm_free(t->name), fm_free(t->path), fm_free(t->target_delimiter), fm_free(t->fewshot_delimiter);
    fm_free(t->instruction), fm_free(t->test), fm_free(t->shots);
    fm_free(t);
}

const char *fm_task_name(const fm_task *t) { return t->name; }
fm_task_type fm_task_kind(const fm_task *t) { return t->type; }
const char *fm_task_type_name(fm_task_type type) { return type_names[type]; }
int fm_task_num_test(const fm_task *t) { return t->n_test; }
int fm_task_num_fewshot(const fm_task *t) { return t->n_shots; }
double fm_task_chance(const fm_task *t) { return t->chance; }

/* A message naming the file and line; status FM_ERR_FORMAT. */
#define BAD(...) (fm_fail(FM_ERR_FORMAT, __VA_ARGS__))

/* A string field: required (NULL when absent and not required), no NUL inside. */
static fm_status get_string(const cJSON *o, const char *key, int required, char **out, const char *path, int line) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return required ? BAD("%s:%d: \"%s\" is missing", path, line, key) : FM_OK;
    if (!cJSON_IsString(v)) return BAD("%s:%d: \"%s\" must be a string", path, line, key);
    if (!(*out = fm_strdup(v->valuestring))) return fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, line);
    return FM_OK;
}

/* An array of strings, at least one; each non-empty when nonempty is set. */
static fm_status get_strings(const cJSON *o, const char *key, int nonempty, char ***out, int *n, const char *path,
                             int line) {
    *out = NULL, *n = 0;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key), *v;
    if (!a) return BAD("%s:%d: \"%s\" is missing", path, line, key);
    if (!cJSON_IsArray(a)) return BAD("%s:%d: \"%s\" must be a list of strings", path, line, key);
    int count = cJSON_GetArraySize(a);
    if (count < 1) return BAD("%s:%d: \"%s\" is empty", path, line, key);
    char **s = fm_calloc(count, sizeof *s);
    if (!s) return fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, line);
    int i = 0;
    cJSON_ArrayForEach(v, a) {
        fm_status st = FM_OK;
        if (!cJSON_IsString(v)) st = BAD("%s:%d: \"%s\"[%d] is not a string", path, line, key, i);
        else if (nonempty && !v->valuestring[0]) st = BAD("%s:%d: \"%s\"[%d] is empty", path, line, key, i);
        else if (!(s[i] = fm_strdup(v->valuestring))) st = fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, line);
        if (st) {
            free_strings(s, count);
            return st;
        }
        i++;
    }
    *out = s, *n = count;
    return FM_OK;
}

/* The settings line: {"task", "type", "target_delimiter", "fewshot_delimiter", "instruction",
 * "until", "max_gen_tokens", "chance"}; any other key is refused (a misspelling would go unseen). */
static fm_status read_settings(fm_task *t, const cJSON *o, const char *path) {
    static const char *const known[] = {"task", "type", "target_delimiter", "fewshot_delimiter", "instruction",
                                        "until", "max_gen_tokens", "chance", "description"};
    const cJSON *v;
    cJSON_ArrayForEach(v, o) {
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(known[k], v->string)) k++;
        if (k == sizeof known / sizeof known[0]) return BAD("%s:1: unknown setting \"%s\"", path, v->string);
    }
    fm_status st;
    char *s = NULL;
    if ((st = get_string(o, "task", 0, &s, path, 1))) return st;
    if (s) fm_free(t->name), t->name = s;
    if ((st = get_string(o, "type", 0, &s, path, 1))) return st;
    if (s) {
        int k = 0;
        while (k < 3 && strcmp(type_names[k], s)) k++;
        fm_free(s);
        if (k == 3) return BAD("%s:1: \"type\" must be multiple_choice, generate or perplexity", path);
        t->type = (fm_task_type)k;
    }
    const char *keys[3] = {"target_delimiter", "fewshot_delimiter", "instruction"};
    char **fields[3] = {&t->target_delimiter, &t->fewshot_delimiter, &t->instruction};
    for (int i = 0; i < 3; i++) {
        if ((st = get_string(o, keys[i], 0, &s, path, 1))) return st;
        if (s) fm_free(*fields[i]), *fields[i] = s;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "until") &&
        (st = get_strings(o, "until", 1, &t->until, &t->n_until, path, 1)))
        return st;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "max_gen_tokens"))) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > 65536)
            return BAD("%s:1: \"max_gen_tokens\" must be an integer from 1 to 65536", path);
        t->max_gen_tokens = (int)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "chance"))) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1.0))
            return BAD("%s:1: \"chance\" must be a number from 0 to 1", path);
        t->chance = v->valuedouble;
    }
    return FM_OK;
}

static fm_status read_item(fm_task *t, fm_task_item *it, const cJSON *o, const char *path, int line) {
    static const char *const known[] = {"query", "choices", "gold", "answers", "text", "split", "id"};
    const cJSON *v;
    cJSON_ArrayForEach(v, o) {
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(known[k], v->string)) k++;
        if (k == sizeof known / sizeof known[0]) return BAD("%s:%d: unknown field \"%s\"", path, line, v->string);
    }
    it->line = line;
    fm_status st;
    char *split = NULL;
    if ((st = get_string(o, "split", 0, &split, path, line))) return st;
    if (!split || !strcmp(split, "test")) it->split = FM_SPLIT_TEST;
    else if (!strcmp(split, "fewshot")) it->split = FM_SPLIT_FEWSHOT;
    else if (!strcmp(split, "train")) it->split = FM_SPLIT_TRAIN;
    else st = BAD("%s:%d: \"split\" must be test, fewshot or train, not \"%s\"", path, line, split);
    fm_free(split);
    if (st) return st;
    switch (t->type) {
    case FM_TASK_MULTIPLE_CHOICE:
        if ((st = get_string(o, "query", 1, &it->query, path, line)) ||
            (st = get_strings(o, "choices", 1, &it->choices, &it->n_choices, path, line)))
            return st;
        v = cJSON_GetObjectItemCaseSensitive(o, "gold");
        if (!v) return BAD("%s:%d: \"gold\" is missing", path, line);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
            return BAD("%s:%d: \"gold\" must be the index of a choice", path, line);
        if (v->valuedouble < 0 || v->valuedouble >= it->n_choices)
            return BAD("%s:%d: \"gold\" %g is outside the %d choices (0 to %d)", path, line, v->valuedouble,
                       it->n_choices, it->n_choices - 1);
        it->gold = (int)v->valuedouble;
        return FM_OK;
    case FM_TASK_GENERATE:
        if ((st = get_string(o, "query", 1, &it->query, path, line))) return st;
        return get_strings(o, "answers", 0, &it->answers, &it->n_answers, path, line);
    case FM_TASK_PERPLEXITY:
        if ((st = get_string(o, "text", 1, &it->text, path, line))) return st;
        if (!it->text[0]) return BAD("%s:%d: \"text\" is empty", path, line);
        return FM_OK;
    }
    return FM_OK;
}

/* The task's name from its file: the base name without ".jsonl". */
static char *name_from_path(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 6 && !strcmp(base + n - 6, ".jsonl")) n -= 6;
    char *s = fm_malloc(n + 1);
    if (s) memcpy(s, base, n), s[n] = '\0';
    return s;
}

/* The line is a settings line: an object with "task" or "type" and none of the item fields. */
static int is_settings(const cJSON *o) {
    return (cJSON_GetObjectItemCaseSensitive(o, "task") || cJSON_GetObjectItemCaseSensitive(o, "type")) &&
           !cJSON_GetObjectItemCaseSensitive(o, "query") && !cJSON_GetObjectItemCaseSensitive(o, "text");
}

fm_status fm_task_load(fm_task **out, const char *path) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return fm_fail(FM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fm_task *t = fm_calloc(1, sizeof *t);
    fm_status st = FM_OK;
    if (!t) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) {
        t->type = FM_TASK_MULTIPLE_CHOICE;
        t->max_gen_tokens = 64;
        t->chance = NAN;
        t->path = fm_strdup(path);
        t->name = name_from_path(path);
        t->target_delimiter = fm_strdup(" ");
        t->fewshot_delimiter = fm_strdup("\n\n");
        t->instruction = fm_strdup("");
        if (!t->path || !t->name || !t->target_delimiter || !t->fewshot_delimiter || !t->instruction)
            st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, cap_items = 0;
    while (!st && (len = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        if ((size_t)len != strlen(line)) {
            st = BAD("%s:%d: a NUL byte in the line", path, lineno);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        size_t skip = strspn(line, " \t");
        if (!line[skip]) continue; /* blank lines are allowed */
        const char *end = NULL;
        unsigned long failures = fm_alloc_failures();
        cJSON *o = cJSON_ParseWithOpts(line, &end, 0);
        if (!o) {
            st = fm_alloc_failures() != failures ? fm_fail(FM_ERR_NOMEM, "%s:%d: out of memory", path, lineno)
                                                  : BAD("%s:%d: not valid JSON", path, lineno);
            break;
        }
        end += strspn(end, " \t");
        if (*end) st = BAD("%s:%d: text after the JSON object", path, lineno);
        else if (!cJSON_IsObject(o)) st = BAD("%s:%d: not a JSON object", path, lineno);
        else if (is_settings(o)) {
            if (t->n_items > 0 || lineno > 1) st = BAD("%s:%d: settings must be the first line", path, lineno);
            else st = read_settings(t, o, path);
        } else {
            if (t->n_items == cap_items) {
                int grown_cap = cap_items ? 2 * cap_items : 64;
                fm_task_item *grown = fm_realloc(t->items, sizeof *grown * grown_cap);
                if (!grown) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
                else t->items = grown, cap_items = grown_cap;
            }
            if (!st) {
                fm_task_item *it = &t->items[t->n_items++];
                memset(it, 0, sizeof *it);
                st = read_item(t, it, o, path, lineno);
            }
        }
        cJSON_Delete(o);
    }
    if (!st && ferror(fp)) st = fm_fail(FM_ERR_IO, "%s: read error", path);
    free(line);
    fclose(fp);
    if (!st && t->n_items == 0) st = BAD("%s: no items", path);
    if (!st) {
        t->test = fm_calloc(t->n_items, sizeof *t->test);
        t->shots = fm_calloc(t->n_items, sizeof *t->shots);
        if (!t->test || !t->shots) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!st) {
        /* few-shot examples come from the fewshot split, else from train */
        int has_fewshot = 0;
        for (int i = 0; i < t->n_items; i++) has_fewshot |= t->items[i].split == FM_SPLIT_FEWSHOT;
        for (int i = 0; i < t->n_items; i++) {
            fm_split s = t->items[i].split;
            if (s == FM_SPLIT_TEST) t->test[t->n_test++] = i;
            else if (s == (has_fewshot ? FM_SPLIT_FEWSHOT : FM_SPLIT_TRAIN)) t->shots[t->n_shots++] = i;
        }
        if (t->n_test == 0) st = BAD("%s: no test items (\"split\": \"test\", the default)", path);
    }
    if (!st && t->type == FM_TASK_GENERATE && t->n_until == 0) { /* stop where an example would end */
        t->until = fm_calloc(1, sizeof *t->until);
        if (t->until && (t->until[0] = fm_strdup(t->fewshot_delimiter))) t->n_until = 1;
        else st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!st && isnan(t->chance) && t->type == FM_TASK_MULTIPLE_CHOICE) {
        double sum = 0.0;
        for (int i = 0; i < t->n_test; i++) sum += 1.0 / t->items[t->test[i]].n_choices;
        t->chance = sum / t->n_test;
    }
    if (st) {
        fm_task_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}
