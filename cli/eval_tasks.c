/*
 * eval_tasks.c — `fm eval --tasks`: zero- and few-shot evaluation of one or more models on task
 * files (src/eval/harness.c), printed as a table, as lm-evaluation-harness's JSON, and as a
 * picture of each task's score against shots (or against model).
 *
 * What it is for: cmd-eval.c calls cli_eval_tasks when --tasks is given; the rest of fm eval
 * (held-out bits per byte of shards) is cmd-eval.c's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "eval_tasks.h"

#define MAX_SHOTS 32
#define MAX_TASKS 64

/* A task name (no '/', no ".jsonl") is a built-in task: TASKS_DIR/NAME.jsonl, TASKS_DIR from
 * $FM_TASKS, else build/tasks beside the fm binary's folder (where `make tasks` writes them). */
static char *task_path(const char *arg, const char *argv0) {
    size_t n = strlen(arg);
    if (strchr(arg, '/') || (n > 6 && !strcmp(arg + n - 6, ".jsonl"))) return cli_strdup("eval", arg);
    const char *env = getenv("FM_TASKS");
    char dir[4096];
    if (env && env[0]) snprintf(dir, sizeof dir, "%s", env);
    else {
        const char *slash = strrchr(argv0, '/');
        if (slash) snprintf(dir, sizeof dir, "%.*s/tasks", (int)(slash - argv0), argv0);
        else snprintf(dir, sizeof dir, "build/tasks");
    }
    size_t need = strlen(dir) + n + 8;
    char *path = cli_alloc("eval", need, 1);
    snprintf(path, need, "%s/%s.jsonl", dir, arg);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "fm eval: unknown task '%s': no %s (built-in tasks: make tasks; or give a .jsonl file)\n", arg,
                path);
        exit(2);
    }
    return path;
}

/* "0,1,2,4" into shots[]; exits 2 on anything else. */
static int parse_shots(const char *text, int *shots) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 4096 || n == MAX_SHOTS || (*end && *end != ','))
            cli_usage_error("eval", "--shots: '%s' is not a comma-separated list of counts 0..4096", text);
        shots[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!n) cli_usage_error("eval", "--shots: empty");
    return n;
}

/* The model's tokenizer: DIR/tokenizer.json, else GPT-2's files in DIR. */
static fm_tokenizer *load_tokenizer(const char *dir, const fm_model *model) {
    char *path = cli_path(dir, "tokenizer.json");
    struct stat sb;
    fm_tokenizer *tok = NULL;
    fm_status st = fm_tokenizer_load(&tok, stat(path, &sb) == 0 ? path : dir);
    if (st) {
        fprintf(stderr, "fm eval: %s: no usable tokenizer (tokenizer.json, or GPT-2's vocab.json and merges.txt): %s\n",
                dir, fm_last_error());
        exit(1);
    }
    if (fm_tokenizer_vocab_size(tok) != fm_model_config(model)->vocab_size) {
        fprintf(stderr, "fm eval: %s: the tokenizer has %d tokens but the model's vocab_size is %d\n", dir,
                fm_tokenizer_vocab_size(tok), fm_model_config(model)->vocab_size);
        exit(1);
    }
    free(path);
    return tok;
}

/* --log-samples: one JSON line per item. */
typedef struct {
    FILE *fp;
    const char *model, *task;
    int shots;
} sample_log;

static void log_item(void *user, int index, const double *values, int n, const char *text) {
    sample_log *log = user;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", log->model);
    cJSON_AddStringToObject(o, "task", log->task);
    cJSON_AddNumberToObject(o, "shots", log->shots);
    cJSON_AddNumberToObject(o, "index", index);
    cJSON *v = cJSON_AddArrayToObject(o, "values");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(v, isfinite(values[i]) ? cJSON_CreateNumber(values[i]) : cJSON_CreateNull());
    if (text) cJSON_AddStringToObject(o, "text", text);
    char *line = cJSON_PrintUnformatted(o);
    if (!line) {
        fprintf(stderr, "fm eval: out of memory\n");
        exit(1);
    }
    fprintf(log->fp, "%s\n", line);
    free(line);
    cJSON_Delete(o);
}

static cJSON *number_or_null(double x) { return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull(); }

int cli_eval_tasks(const eval_tasks_args *a) {
    const char *names[MAX_TASKS];
    int n_tasks = 0, shots[MAX_SHOTS], n_shots = parse_shots(a->shots ? a->shots : "0", shots);
    char *list = cli_strdup("eval", a->tasks);
    for (char *p = strtok(list, ","); p; p = strtok(NULL, ",")) {
        if (n_tasks == MAX_TASKS) cli_usage_error("eval", "--tasks: at most %d tasks", MAX_TASKS);
        names[n_tasks++] = p;
    }
    if (!n_tasks) cli_usage_error("eval", "--tasks: no task named");
    fm_task *tasks[MAX_TASKS];
    for (int i = 0; i < n_tasks; i++) { /* every task file is read and checked before any model runs */
        char *path = task_path(names[i], a->argv0);
        fm_status st = fm_task_load(&tasks[i], path);
        free(path);
        if (st) cli_fail("eval", st);
        for (int k = 0; k < n_shots; k++)
            if (fm_task_kind(tasks[i]) != FM_TASK_PERPLEXITY && shots[k] > fm_task_num_fewshot(tasks[i])) {
                fprintf(stderr, "fm eval: task %s: %d shots asked, its few-shot split holds %d examples\n",
                        fm_task_name(tasks[i]), shots[k], fm_task_num_fewshot(tasks[i]));
                exit(2);
            }
    }
    FILE *samples = NULL;
    if (a->log_samples && !(samples = fopen(a->log_samples, "w"))) {
        fprintf(stderr, "fm eval: %s: cannot write\n", a->log_samples);
        exit(1);
    }
    /* results[m][t][k] */
    /* the entries compared: the models, or one base model with each adapter (loaded once) */
    int n_models = a->n_adapters ? a->n_adapters : a->n_models;
    const char *const *entries = a->n_adapters ? a->adapters : a->models;
    fm_task_result *res = cli_alloc("eval", (size_t)n_models * n_tasks * n_shots, sizeof *res);
    if (!a->json) printf("%-24s %-20s %5s  %-16s %9s %9s %7s %6s %9s\n", "model", "task", "shots", "metric", "value",
                         "stderr", "chance", "n", "truncated");
    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    for (int m = 0; m < n_models; m++) {
        if (!model) {
            const char *dir = a->models[a->n_adapters ? 0 : m];
            cli_load_model("eval", dir, &model, NULL, 0);
            tok = load_tokenizer(dir, model);
        }
        fm_adapter *adapter = a->n_adapters ? cli_use_adapter("eval", model, a->adapters[m]) : NULL;
        for (int t = 0; t < n_tasks; t++)
            for (int k = 0; k < n_shots; k++) {
                fm_task_result *r = &res[((size_t)m * n_tasks + t) * n_shots + k];
                if (fm_task_kind(tasks[t]) == FM_TASK_PERPLEXITY && k > 0) { /* takes no shots: once */
                    *r = res[((size_t)m * n_tasks + t) * n_shots];
                    continue;
                }
                fm_task_config c;
                fm_task_config_default(&c);
                c.shots = shots[k], c.limit = a->limit, c.seed = a->seed, c.max_seqs = a->batch;
                c.plain = a->plain, c.chat = a->chat;
                sample_log log = {samples, entries[m], fm_task_name(tasks[t]), shots[k]};
                if (samples) c.on_item = log_item, c.user = &log;
                fm_status st = fm_task_evaluate(tasks[t], model, tok, &c, r);
                if (st) cli_fail("eval", st);
                if (r->skipped)
                    fprintf(stderr, "fm eval: %s: %d items left out: a choice is longer than the context of %s\n",
                            fm_task_name(tasks[t]), r->skipped, entries[m]);
                if (a->json) continue;
                for (int i = 0; i < r->n_metrics; i++)
                    printf("%-24s %-20s %5d  %-16s %9.4f %9.4f %7.4f %6d %9d\n", i ? "" : entries[m],
                           i ? "" : fm_task_name(tasks[t]), r->shots, r->metrics[i].name, r->metrics[i].value,
                           r->metrics[i].std_error, r->chance, r->n, r->truncated);
                fflush(stdout);
            }
        fm_model_use_adapter(model, NULL);
        fm_adapter_free(adapter);
        if (!a->n_adapters || m == n_models - 1) {
            fm_tokenizer_free(tok);
            fm_model_free(model);
            tok = NULL, model = NULL;
        }
    }
    if (samples && fclose(samples) != 0) {
        fprintf(stderr, "fm eval: %s: write error\n", a->log_samples);
        exit(1);
    }
    /* lm-evaluation-harness's shape, one object per (model, shots) */
    cJSON *runs = cJSON_CreateArray();
    for (int m = 0; m < n_models; m++)
        for (int k = 0; k < n_shots; k++) {
            cJSON *o = cJSON_CreateObject(), *results = cJSON_AddObjectToObject(o, "results");
            cJSON *nshot = cJSON_AddObjectToObject(o, "n-shot");
            cJSON_AddStringToObject(o, "model", entries[m]);
            cJSON_AddBoolToObject(o, "chat_template", a->chat);
            for (int t = 0; t < n_tasks; t++) {
                const fm_task_result *r = &res[((size_t)m * n_tasks + t) * n_shots + k];
                cJSON *tr = cJSON_AddObjectToObject(results, fm_task_name(tasks[t]));
                for (int i = 0; i < r->n_metrics; i++) {
                    char key[64];
                    snprintf(key, sizeof key, "%s,none", r->metrics[i].name);
                    cJSON_AddItemToObject(tr, key, number_or_null(r->metrics[i].value));
                    snprintf(key, sizeof key, "%s_stderr,none", r->metrics[i].name);
                    cJSON_AddItemToObject(tr, key, number_or_null(r->metrics[i].std_error));
                }
                cJSON_AddItemToObject(tr, "chance", number_or_null(r->chance));
                cJSON_AddNumberToObject(tr, "n", r->n);
                cJSON_AddNumberToObject(tr, "truncated", r->truncated);
                cJSON_AddNumberToObject(tr, "skipped", r->skipped);
                cJSON_AddNumberToObject(nshot, fm_task_name(tasks[t]), r->shots);
            }
            cJSON_AddItemToArray(runs, o);
        }
    cJSON *doc = runs;
    if (cJSON_GetArraySize(runs) == 1) {
        doc = cJSON_DetachItemFromArray(runs, 0);
        cJSON_Delete(runs);
    } else {
        doc = cJSON_CreateObject();
        cJSON_AddItemToObject(doc, "models", runs);
    }
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!text) {
        fprintf(stderr, "fm eval: out of memory\n");
        exit(1);
    }
    if (a->json) printf("%s\n", text);
    if (a->output) {
        FILE *fp = fopen(a->output, "w");
        if (!fp || fprintf(fp, "%s\n", text) < 0 || fclose(fp) != 0) {
            fprintf(stderr, "fm eval: %s: cannot write\n", a->output);
            exit(1);
        }
    }
    free(text);
    /* the picture: each task's first metric against shots (several counts), else against model */
    if (a->plot) {
        int by_shots = n_shots > 1, n_x = by_shots ? n_shots : n_models;
        int n_series = by_shots ? n_models * n_tasks : n_tasks;
        fm_series *series = cli_alloc("eval", n_series, sizeof *series);
        double *xs = cli_alloc("eval", n_x, sizeof *xs), *ys = cli_alloc("eval", (size_t)n_series * n_x, sizeof *ys);
        char (*labels)[160] = cli_alloc("eval", n_series, sizeof *labels);
        static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                             "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
        for (int x = 0; x < n_x; x++) xs[x] = by_shots ? shots[x] : x;
        for (int s = 0; s < n_series; s++) {
            int m = by_shots ? s / n_tasks : 0, t = s % n_tasks;
            for (int x = 0; x < n_x; x++) {
                const fm_task_result *r =
                    &res[((size_t)(by_shots ? m : x) * n_tasks + t) * n_shots + (by_shots ? x : 0)];
                ys[(size_t)s * n_x + x] = r->n_metrics ? r->metrics[0].value : NAN;
            }
            const fm_task_result *r0 = &res[((size_t)m * n_tasks + t) * n_shots];
            if (by_shots && n_models > 1)
                snprintf(labels[s], sizeof labels[s], "%s %s (%s)", entries[m], fm_task_name(tasks[t]),
                         r0->n_metrics ? r0->metrics[0].name : "");
            else
                snprintf(labels[s], sizeof labels[s], "%s (%s)", fm_task_name(tasks[t]),
                         r0->n_metrics ? r0->metrics[0].name : "");
            series[s] = (fm_series){labels[s], xs, ys + (size_t)s * n_x, n_x, colors[s % 10]};
        }
        fm_status st = fm_plot_svg(a->plot, by_shots ? "score against few-shot examples" : "score against model",
                                   by_shots ? "shots" : "model (in the order given)", "score", series, n_series, 0);
        if (st) cli_fail("eval", st);
        free(series), free(xs), free(ys), free(labels);
    }
    for (int t = 0; t < n_tasks; t++) fm_task_free(tasks[t]);
    free(res);
    free(list);
    return 0;
}
