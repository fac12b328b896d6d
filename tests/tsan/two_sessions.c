/*
 * two_sessions.c — two inference sessions from one model on two threads, under
 * ThreadSanitizer (tests/tsan/run.sh builds and runs it).
 *
 * Each thread makes its own session and generates from the same four prompts (several
 * sequences decoding together, context sliding, log-probs) while the other does the same with
 * different sampling, then scores a text (fm_score_tokens: a session's cache-free forward);
 * the main thread computed every answer alone beforehand, and each thread must reproduce its
 * own bit for bit. Exit status 0 when all agree (TSan itself makes the exit status 66 on any
 * report); 1 with a message otherwise.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm.h"

#define N_PROMPTS 4
#define MAX_LEN 24
#define TOKENS 40
#define SCORED 70

static const int lens[N_PROMPTS] = {1, 4, 9, 30};
static int store[N_PROMPTS][30];
static const int *prompts[N_PROMPTS];
static int text[SCORED];

typedef struct {
    const fm_model *model;
    fm_generate_config gc;
    int seqs;
    fm_generate_result results[N_PROMPTS];
    float logprobs[SCORED];
    double nll;
    fm_status st;
} job;

static void run_job(job *j) {
    fm_session *s;
    j->st = fm_session_init(&s, j->model, j->seqs, MAX_LEN);
    if (j->st) return;
    j->st = fm_generate(s, &j->gc, prompts, lens, N_PROMPTS, NULL, NULL, j->results);
    fm_session_free(s);
    if (!j->st) j->st = fm_score_tokens(j->model, text, SCORED, j->logprobs, &j->nll);
}

static void *thread_main(void *arg) {
    run_job(arg);
    return NULL;
}

static int same(const job *a, const job *b, const char *name) {
    if (a->st || b->st) {
        fprintf(stderr, "two_sessions: %s: %s\n", name, fm_last_error());
        return 0;
    }
    for (int i = 0; i < N_PROMPTS; i++) {
        const fm_generate_result *x = &a->results[i], *y = &b->results[i];
        if (x->n_tokens != y->n_tokens || x->finish != y->finish ||
            memcmp(x->tokens, y->tokens, sizeof(int) * x->n_tokens) != 0 ||
            memcmp(x->logprobs, y->logprobs, sizeof(float) * x->n_tokens) != 0) {
            fprintf(stderr, "two_sessions: %s: prompt %d differs from its result alone\n", name, i);
            return 0;
        }
    }
    if (memcmp(a->logprobs + 1, b->logprobs + 1, sizeof(float) * (SCORED - 1)) != 0 ||
        memcmp(&a->nll, &b->nll, sizeof a->nll) != 0) {
        fprintf(stderr, "two_sessions: %s: scoring differs from scoring alone\n", name);
        return 0;
    }
    return 1;
}

int main(void) {
    fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 48, .vocab_size = 300, .n_positions = 32,
                     .n_inner = 0, .layer_norm_epsilon = 1e-5f};
    fm_model *model;
    if (fm_model_init(&model, &cfg, 5)) {
        fprintf(stderr, "two_sessions: %s\n", fm_last_error());
        return 1;
    }
    for (int i = 0; i < N_PROMPTS; i++) {
        for (int k = 0; k < lens[i]; k++) store[i][k] = (k * 37 + i * 101 + 11) % cfg.vocab_size;
        prompts[i] = store[i];
    }
    for (int i = 0; i < SCORED; i++) text[i] = (i * 53 + 7) % cfg.vocab_size;
    job want[2], got[2];
    for (int k = 0; k < 2; k++) {
        memset(&want[k], 0, sizeof want[k]);
        want[k].model = model;
        fm_generate_config_default(&want[k].gc);
        want[k].gc.max_tokens = TOKENS;
        want[k].gc.sampler.temperature = k ? 0.9f : 0.0f; /* greedy; seeded */
        want[k].gc.sampler.top_k = k ? 40 : 0;
        want[k].gc.seed = 3;
        want[k].seqs = 1 + k; /* one sequence at a time; two */
        got[k] = want[k];
        run_job(&want[k]); /* alone, on this thread */
    }
    pthread_t threads[2];
    for (int k = 0; k < 2; k++)
        if (pthread_create(&threads[k], NULL, thread_main, &got[k])) {
            fprintf(stderr, "two_sessions: cannot start a thread\n");
            return 1;
        }
    for (int k = 0; k < 2; k++) pthread_join(threads[k], NULL);
    int ok = same(&got[0], &want[0], "greedy thread") && same(&got[1], &want[1], "seeded thread");
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N_PROMPTS; i++) {
            fm_generate_result_free(&want[k].results[i]);
            fm_generate_result_free(&got[k].results[i]);
        }
    fm_model_free(model);
    if (ok) printf("two_sessions: two threads, one model: every result as alone\n");
    return ok ? 0 : 1;
}
