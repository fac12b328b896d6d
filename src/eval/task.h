/*
 * task.h — an evaluation task in memory: its settings and items, as task.c reads them from a
 * JSONL file (the format is in docs/tasks.md), for harness.c to run.
 */
#ifndef FM_EVAL_TASK_H
#define FM_EVAL_TASK_H

#include "fm.h"

typedef enum { FM_SPLIT_TEST, FM_SPLIT_FEWSHOT, FM_SPLIT_TRAIN } fm_split;

typedef struct {
    char *query;     /* multiple choice, generate: the question as the prompt ends */
    char **choices;  /* multiple choice: n_choices continuations (without the target delimiter) */
    int n_choices;
    int gold;        /* multiple choice: the right choice */
    char **answers;  /* generate: accepted answers (the first is the target of few-shot examples) */
    int n_answers;
    char *text;      /* perplexity: the document */
    fm_split split;
    int line;        /* its line in the file (1-based), for messages */
} fm_task_item;

struct fm_task {
    char *name, *path;
    fm_task_type type;
    char *target_delimiter;  /* between query and answer: " " */
    char *fewshot_delimiter; /* between examples: "\n\n" */
    char *instruction;       /* prepended to every prompt as given: "" */
    char **until;            /* generate: stop strings (default: the few-shot delimiter) */
    int n_until;
    int max_gen_tokens;      /* generate: 64 */
    double chance;           /* the settings' "chance", else 1 / choices averaged; NAN unknown */
    fm_task_item *items;
    int n_items;
    int *test, n_test;       /* indices of the test items, in file order */
    int *shots, n_shots;     /* indices of the items few-shot examples are drawn from */
};

#endif
