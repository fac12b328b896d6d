/*
 * eval_tasks.h — what cmd-eval.c hands to the task evaluation (eval_tasks.c).
 */
#ifndef FM_CLI_EVAL_TASKS_H
#define FM_CLI_EVAL_TASKS_H

#include <stdint.h>

typedef struct {
    const char *const *models; /* model directories, evaluated in this order */
    int n_models;
    const char *const *adapters; /* LoRA adapter directories: with one model, each is an entry */
    int n_adapters;
    const char *tasks;         /* comma-separated names (build/tasks/NAME.jsonl) or .jsonl files */
    const char *shots;         /* comma-separated counts, NULL: "0" */
    int limit;                 /* first N test items of each task; 0: all */
    int json;                  /* print lm-eval's JSON instead of the table */
    const char *output;        /* also write the JSON here */
    const char *plot;          /* an SVG of score against shots (or model) */
    const char *log_samples;   /* one JSON line per item */
    uint64_t seed;             /* few-shot draws */
    int batch;                 /* sequences decoded at once */
    int plain;                 /* multiple choice: a full forward per choice (no cache, no batching) */
    int chat;                  /* prompts through the chat template (fm_task_config.chat) */
    const char *argv0;         /* finds build/tasks beside the binary */
} eval_tasks_args;

int cli_eval_tasks(const eval_tasks_args *a);

#endif
