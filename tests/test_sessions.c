/*
 * test_sessions.c — inference sessions and generation: batched steps give each sequence the
 * logits it gets alone, bit for bit; fm_generate with several prompts decoding together (prompts
 * joining and leaving) gives each prompt its alone result, tokens and log-probs bit for bit,
 * greedy and seeded; two sessions on two threads sharing one model; the loop's semantics against
 * a hand-written reference (today's fm generate: recent window, context sliding, a prompt longer
 * than the session); stop strings, end of text, the callback and its early stop; argument
 * errors; every allocation failing in turn.
 *
 * Models: head size 24 and vocabulary 300 (odd sizes), and a wide MLP (width 128: K = 512 is
 * more than one 384-deep slice of the packed products).
 */
#include "test_util.h"

#include <math.h>
#include <pthread.h>

#include "core/alloc.h"
#include "core/internal.h"

static const fm_config odd_cfg = {.n_layer = 2, .n_head = 2, .n_embd = 48, .vocab_size = 300,
                                  .n_positions = 64, .n_inner = 0, .layer_norm_epsilon = 1e-5f};
static const fm_config wide_cfg = {.n_layer = 2, .n_head = 4, .n_embd = 128, .vocab_size = 300,
                                   .n_positions = 64, .n_inner = 0, .layer_norm_epsilon = 1e-5f};

/* Weights of a fresh model scaled up so that the logits are far from uniform (a fresh GPT-2's
 * are nearly flat, and every choice would hang on rounding). */
static fm_model *make_model(const fm_config *c, uint64_t seed) {
    fm_model *m;
    assert_int_equal(fm_model_init(&m, c, seed), FM_OK);
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        if (t->ndim != 2) continue;
        for (size_t k = 0; k < t->numel; k++) t->data[k] *= 8.0f;
    }
    return m;
}

/* Four prompts of different lengths (1, 5, 33, 12). */
#define N_PROMPTS 4
static int prompt_store[N_PROMPTS][40];
static const int prompt_lens[N_PROMPTS] = {1, 5, 33, 12};
static const int *prompt_ptrs[N_PROMPTS];

static void make_prompts(int V) {
    for (int i = 0; i < N_PROMPTS; i++) {
        for (int j = 0; j < prompt_lens[i]; j++) prompt_store[i][j] = (j * 37 + i * 101 + 11) % V;
        prompt_ptrs[i] = prompt_store[i];
    }
}

static void assert_same_result(const fm_generate_result *a, const fm_generate_result *b, const char *what, int i) {
    if (a->n_tokens != b->n_tokens || a->finish != b->finish)
        fail_msg("%s, prompt %d: %d tokens (%s) against %d (%s)", what, i, a->n_tokens, fm_finish_reason_name(a->finish),
                 b->n_tokens, fm_finish_reason_name(b->finish));
    for (int t = 0; t < a->n_tokens; t++) {
        if (a->tokens[t] != b->tokens[t])
            fail_msg("%s, prompt %d, token %d: %d against %d", what, i, t, a->tokens[t], b->tokens[t]);
        if (memcmp(&a->logprobs[t], &b->logprobs[t], sizeof(float)) != 0)
            fail_msg("%s, prompt %d, token %d: log-prob %.9g against %.9g", what, i, t, a->logprobs[t], b->logprobs[t]);
    }
    assert_int_equal(a->text_len, b->text_len);
    if (a->text || b->text) {
        assert_non_null(a->text);
        assert_non_null(b->text);
        assert_memory_equal(a->text, b->text, a->text_len);
    }
}

/* Each prompt alone: a session of one sequence per prompt. */
static void generate_alone(const fm_model *m, int max_len, const fm_generate_config *gc, const int *const *prompts,
                           const int *lens, int n, fm_generate_result *out) {
    for (int i = 0; i < n; i++) {
        fm_session *s;
        assert_int_equal(fm_session_init(&s, m, 1, max_len), FM_OK);
        assert_int_equal(fm_generate(s, gc, &prompts[i], &lens[i], 1, NULL, NULL, &out[i]), FM_OK);
        fm_session_free(s);
    }
}

static void free_results(fm_generate_result *r, int n) {
    for (int i = 0; i < n; i++) fm_generate_result_free(&r[i]);
}

/* ------------------------------------------------------------ batched steps */

/* Sequences of different lengths stepped together get, row by row, the logits each gets when
 * stepped alone in a session of its own: bitwise. */
static void check_step_rows(const fm_config *c, uint64_t seed) {
    fm_model *m = make_model(c, seed);
    make_prompts(c->vocab_size);
    int V = c->vocab_size, n = N_PROMPTS;
    fm_session *batch, *alone[N_PROMPTS];
    assert_int_equal(fm_session_init(&batch, m, n, c->n_positions), FM_OK);
    const float *logits;
    for (int i = 0; i < n; i++) {
        assert_int_equal(fm_session_init(&alone[i], m, 1, c->n_positions), FM_OK);
        assert_int_equal(fm_session_feed(batch, i, prompt_ptrs[i], prompt_lens[i], &logits), FM_OK);
        assert_int_equal(fm_session_feed(alone[i], 0, prompt_ptrs[i], prompt_lens[i], &logits), FM_OK);
    }
    int seqs[N_PROMPTS] = {2, 0, 3, 1}, toks[N_PROMPTS], zero = 0;
    for (int step = 0; step < 6; step++) {
        int rows = step % 2 ? n : 3; /* every other step without the last sequence */
        for (int r = 0; r < rows; r++) toks[r] = (step * 13 + r * 7) % V;
        assert_int_equal(fm_session_step(batch, seqs, toks, rows, &logits), FM_OK);
        float *copy = malloc(sizeof(float) * (size_t)rows * V);
        memcpy(copy, logits, sizeof(float) * (size_t)rows * V);
        for (int r = 0; r < rows; r++) {
            const float *own;
            assert_int_equal(fm_session_step(alone[seqs[r]], &zero, &toks[r], 1, &own), FM_OK);
            if (memcmp(own, copy + (size_t)r * V, sizeof(float) * V) != 0)
                fail_msg("width %d, step %d: sequence %d's row differs from its logits alone", c->n_embd, step, seqs[r]);
            assert_int_equal(fm_session_length(batch, seqs[r]), fm_session_length(alone[seqs[r]], 0));
        }
        free(copy);
    }
    int twice[2] = {1, 1};
    assert_int_equal(fm_session_step(batch, twice, toks, 2, &logits), FM_ERR_ARG);
    assert_int_equal(fm_session_step(batch, seqs, toks, n + 1, &logits), FM_ERR_ARG);
    for (int i = 0; i < n; i++) fm_session_free(alone[i]);
    fm_session_free(batch);
    fm_model_free(m);
}

static void test_step_rows_alone(void **state) {
    (void)state;
    check_step_rows(&odd_cfg, 21);
    check_step_rows(&wide_cfg, 22);
}

/* ------------------------------------------------------------ batched generation */

/* Four prompts through sessions of 4 and of 2 sequences (joining as slots free) against each
 * prompt alone, over 80 tokens in a session of 48 positions (each sequence slides). */
static void check_batched_generation(const fm_config *c, uint64_t seed) {
    fm_model *m = make_model(c, seed);
    make_prompts(c->vocab_size);
    int max_len = 48;
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = 80;
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 0) {
            gc.sampler.temperature = 0; /* greedy */
        } else { /* seeded, every transformation on */
            gc.sampler.temperature = 0.9f, gc.sampler.top_k = 40, gc.sampler.top_p = 0.95f;
            gc.sampler.min_p = 0.01f, gc.sampler.repeat_penalty = 1.3f, gc.repeat_window = 16, gc.seed = 77;
        }
        fm_generate_result alone[N_PROMPTS], batched[N_PROMPTS];
        generate_alone(m, max_len, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, alone);
        for (int i = 0; i < N_PROMPTS; i++) {
            assert_int_equal(alone[i].n_tokens, 80);
            assert_int_equal(alone[i].finish, FM_FINISH_LENGTH);
            assert_null(alone[i].text);
        }
        /* the prompts differ, and so do their continuations */
        assert_memory_not_equal(alone[0].tokens, alone[1].tokens, sizeof(int) * 80);
        for (int seqs = 4; seqs >= 2; seqs -= 2) {
            fm_session *s;
            assert_int_equal(fm_session_init(&s, m, seqs, max_len), FM_OK);
            assert_int_equal(fm_generate(s, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, batched), FM_OK);
            for (int i = 0; i < N_PROMPTS; i++)
                assert_same_result(&batched[i], &alone[i], seqs == 4 ? "4 at once" : "2 at once", i);
            free_results(batched, N_PROMPTS);
            fm_session_free(s);
        }
        free_results(alone, N_PROMPTS);
    }
    fm_model_free(m);
}

static void test_batched_equals_alone(void **state) {
    (void)state;
    check_batched_generation(&odd_cfg, 31);
}

static void test_batched_equals_alone_wide(void **state) {
    (void)state;
    check_batched_generation(&wide_cfg, 32);
}

/* Prompts of different lengths and stopping at different times (eos ends some early, so the
 * waiting prompts join mid-way) through 2 sequences: the same as alone. */
static void test_joins_and_leaves(void **state) {
    (void)state;
    fm_model *m = make_model(&odd_cfg, 33);
    make_prompts(odd_cfg.vocab_size);
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = 30;
    gc.sampler.temperature = 1.0f;
    gc.seed = 5;
    /* an eos that some sequences meet: the most frequent token of the alone runs */
    fm_generate_result alone[N_PROMPTS], batched[N_PROMPTS];
    generate_alone(m, 64, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, alone);
    int counts[300] = {0}, best = 0;
    for (int i = 0; i < N_PROMPTS; i++)
        for (int t = 0; t < alone[i].n_tokens; t++) counts[alone[i].tokens[t]]++;
    for (int v = 1; v < 300; v++)
        if (counts[v] > counts[best]) best = v;
    free_results(alone, N_PROMPTS);
    gc.eos = best;
    generate_alone(m, 64, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, alone);
    int eos_ended = 0;
    for (int i = 0; i < N_PROMPTS; i++) eos_ended += alone[i].finish == FM_FINISH_EOS;
    assert_true(eos_ended >= 1);
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 2, 64), FM_OK);
    assert_int_equal(fm_generate(s, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, batched), FM_OK);
    for (int i = 0; i < N_PROMPTS; i++) assert_same_result(&batched[i], &alone[i], "2 at once, eos", i);
    free_results(batched, N_PROMPTS);
    free_results(alone, N_PROMPTS);
    fm_session_free(s);
    fm_model_free(m);
}

/* ------------------------------------------------------------ two threads */

typedef struct {
    const fm_model *m;
    const fm_generate_config *gc;
    fm_generate_result results[N_PROMPTS];
    fm_status st;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    fm_session *s;
    j->st = fm_session_init(&s, j->m, 2, 48);
    if (j->st) return NULL;
    for (int round = 0; round < 2 && !j->st; round++) { /* the second round's results are kept */
        if (round) free_results(j->results, N_PROMPTS);
        j->st = fm_generate(s, j->gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, j->results);
    }
    fm_session_free(s);
    return NULL;
}

/* Two sessions from one model generating on two threads at once: each gets what it gets alone. */
static void test_two_threads(void **state) {
    (void)state;
    fm_model *m = make_model(&wide_cfg, 41);
    make_prompts(wide_cfg.vocab_size);
    for (int mode = 0; mode < 2; mode++) {
        fm_generate_config a, b;
        fm_generate_config_default(&a);
        a.max_tokens = 60;
        a.sampler.temperature = 0;
        b = a;
        if (mode) a.sampler.temperature = 0.8f, a.seed = 3, b.sampler.temperature = 1.1f, b.sampler.top_k = 30, b.seed = 4;
        fm_generate_result ra[N_PROMPTS], rb[N_PROMPTS];
        generate_alone(m, 48, &a, prompt_ptrs, prompt_lens, N_PROMPTS, ra);
        generate_alone(m, 48, &b, prompt_ptrs, prompt_lens, N_PROMPTS, rb);
        thread_job ja = {.m = m, .gc = &a}, jb = {.m = m, .gc = &b};
        pthread_t ta, tb;
        assert_int_equal(pthread_create(&ta, NULL, thread_main, &ja), 0);
        assert_int_equal(pthread_create(&tb, NULL, thread_main, &jb), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        assert_int_equal(ja.st, FM_OK);
        assert_int_equal(jb.st, FM_OK);
        for (int i = 0; i < N_PROMPTS; i++) {
            assert_same_result(&ja.results[i], &ra[i], "thread a", i);
            assert_same_result(&jb.results[i], &rb[i], "thread b", i);
        }
        free_results(ja.results, N_PROMPTS), free_results(jb.results, N_PROMPTS);
        free_results(ra, N_PROMPTS), free_results(rb, N_PROMPTS);
    }
    fm_model_free(m);
}

/* Sessions compute in float32 whatever the process-wide precision: with bfloat16 products
 * switched on, generation (prompt feeding, batched steps) and scoring give the same bits. */
static void test_float32_whatever_the_precision(void **state) {
    (void)state;
    fm_model *m = make_model(&wide_cfg, 45);
    make_prompts(wide_cfg.vocab_size);
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = 30;
    gc.seed = 8;
    fm_generate_result want[N_PROMPTS], got[N_PROMPTS];
    int text[100];
    for (int i = 0; i < 100; i++) text[i] = (i * 41 + 5) % wide_cfg.vocab_size;
    float lp_want[100], lp_got[100];
    double nll_want, nll_got;
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 4, 48), FM_OK);
    fm_matmul_precision before = fm_get_matmul_precision();
    fm_set_matmul_precision(FM_MATMUL_FP32);
    assert_int_equal(fm_generate(s, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, want), FM_OK);
    assert_int_equal(fm_score_tokens(m, text, 100, lp_want, &nll_want), FM_OK);
    fm_set_matmul_precision(FM_MATMUL_BF16);
    /* the setting is real: the training forward changes with it */
    assert_int_equal(fm_model_forward(m, text, 1, 40), FM_OK);
    float *bf16_logits = malloc(sizeof(float) * 40 * 300);
    memcpy(bf16_logits, fm_model_logits(m), sizeof(float) * 40 * 300);
    fm_status st1 = fm_generate(s, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, got);
    fm_status st2 = fm_score_tokens(m, text, 100, lp_got, &nll_got);
    fm_set_matmul_precision(FM_MATMUL_FP32);
    assert_int_equal(fm_model_forward(m, text, 1, 40), FM_OK);
    assert_memory_not_equal(bf16_logits, fm_model_logits(m), sizeof(float) * 40 * 300);
    fm_set_matmul_precision(before);
    free(bf16_logits);
    assert_int_equal(st1, FM_OK);
    assert_int_equal(st2, FM_OK);
    for (int i = 0; i < N_PROMPTS; i++) assert_same_result(&got[i], &want[i], "bf16 switched on", i);
    assert_memory_equal(lp_got + 1, lp_want + 1, sizeof(float) * 99);
    assert_memory_equal(&nll_got, &nll_want, sizeof nll_got);
    free_results(want, N_PROMPTS);
    free_results(got, N_PROMPTS);
    fm_session_free(s);
    fm_model_free(m);
}

/* ------------------------------------------------------------ semantics */

static float ref_log_prob(const float *z, int V, int id) {
    float maxv = z[0];
    for (int v = 1; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)z[v] - maxv);
    return (float)((double)z[id] - maxv - log(sum));
}

/* fm generate's loop before fm_generate, written out: a prompt longer than the context keeps its
 * last ctx - 1 tokens; recent = the last `window` tokens of everything; a full cache keeps the
 * last ctx / 2 tokens. */
static int reference_loop(const fm_model *m, int ctx, const fm_sampler_config *sc, int window_max, uint64_t seed,
                          const int *prompt, int n_prompt, int max_tokens, int *out, float *lps) {
    int V = fm_model_config(m)->vocab_size, zero = 0;
    int *tokens = malloc(sizeof(int) * (size_t)(n_prompt + max_tokens));
    memcpy(tokens, prompt, sizeof(int) * n_prompt);
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 1, ctx), FM_OK);
    int first = n_prompt >= ctx ? n_prompt - ctx + 1 : 0, n = n_prompt, total = n_prompt + max_tokens;
    const float *logits;
    assert_int_equal(fm_session_feed(s, 0, tokens + first, n_prompt - first, &logits), FM_OK);
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    while (n < total) {
        int window = n < window_max ? n : window_max;
        int next = fm_sample(sc, logits, V, tokens + n - window, window, &rng, NULL);
        lps[n - n_prompt] = ref_log_prob(logits, V, next);
        tokens[n++] = next;
        if (n == total) break;
        if (fm_session_length(s, 0) == ctx) {
            fm_session_reset(s, 0);
            assert_int_equal(fm_session_feed(s, 0, tokens + n - ctx / 2, ctx / 2, &logits), FM_OK);
        } else {
            assert_int_equal(fm_session_step(s, &zero, &tokens[n - 1], 1, &logits), FM_OK);
        }
    }
    memcpy(out, tokens + n_prompt, sizeof(int) * max_tokens);
    free(tokens);
    fm_session_free(s);
    return n - n_prompt;
}

/* fm_generate equals the written-out loop: sampling with the recent window over prompt and
 * output, log-probs of the raw logits, context sliding (20 positions, 70 tokens), and a prompt
 * longer than the session (25 tokens). */
static void test_same_as_reference_loop(void **state) {
    (void)state;
    fm_model *m = make_model(&odd_cfg, 51);
    int V = odd_cfg.vocab_size, ctx = 20, max_tokens = 70;
    int prompt[25];
    for (int i = 0; i < 25; i++) prompt[i] = (i * 53 + 7) % V;
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = max_tokens;
    gc.sampler.temperature = 0.9f, gc.sampler.top_k = 50, gc.sampler.repeat_penalty = 1.5f;
    gc.repeat_window = 30; /* more than the session holds: reaches into the prompt's dropped part */
    gc.seed = 9;
    int lens[3] = {4, 19, 25};
    for (int k = 0; k < 3; k++) {
        int want[70];
        float want_lp[70];
        reference_loop(m, ctx, &gc.sampler, gc.repeat_window, gc.seed, prompt, lens[k], max_tokens, want, want_lp);
        fm_session *s;
        fm_generate_result r;
        assert_int_equal(fm_session_init(&s, m, 1, ctx), FM_OK);
        const int *p = prompt;
        assert_int_equal(fm_generate(s, &gc, &p, &lens[k], 1, NULL, NULL, &r), FM_OK);
        assert_int_equal(r.n_tokens, max_tokens);
        assert_int_equal(r.finish, FM_FINISH_LENGTH);
        for (int t = 0; t < max_tokens; t++) {
            if (r.tokens[t] != want[t])
                fail_msg("prompt of %d: token %d is %d, the reference loop gives %d", lens[k], t, r.tokens[t], want[t]);
            if (memcmp(&r.logprobs[t], &want_lp[t], sizeof(float)) != 0)
                fail_msg("prompt of %d: token %d's log-prob %.9g, the reference %.9g", lens[k], t, r.logprobs[t],
                         want_lp[t]);
            assert_true(r.logprobs[t] <= 0.0f);
        }
        fm_generate_result_free(&r);
        assert_null(r.tokens);
        fm_session_free(s);
    }
    fm_model_free(m);
}

/* A tokenizer of 300 ids (the model's vocabulary size) trained on a little text. */
static fm_tokenizer *small_tokenizer(void) {
    char *text = malloc(1 << 16);
    size_t len = 0;
    for (int i = 0; i < 600; i++)
        len += (size_t)sprintf(text + len, "Line %d: the %d lambs and %d sheep went %s the hill.\n", i, i % 7, i % 5,
                               i % 3 ? "down" : "up");
    const char *texts[1] = {text};
    fm_tokenizer *tok;
    assert_int_equal(fm_tokenizer_train(&tok, texts, &len, 1, 300), FM_OK);
    assert_int_equal(fm_tokenizer_vocab_size(tok), 300);
    free(text);
    return tok;
}

typedef struct {
    char text[4096];
    size_t len;
    int ids[512];
    int n_ids, calls, stop_after;
} collected;

static int collect(void *user, int index, const int *ids, int n_ids, const char *text, size_t len) {
    collected *c = user;
    assert_int_equal(index, 0);
    assert_true(c->len + len < sizeof c->text && c->n_ids + n_ids <= 512);
    if (text) memcpy(c->text + c->len, text, len);
    c->len += len;
    memcpy(c->ids + c->n_ids, ids, sizeof(int) * n_ids);
    c->n_ids += n_ids;
    c->calls++;
    return c->stop_after && c->calls >= c->stop_after;
}

static size_t token_bytes_len(const fm_tokenizer *tok, int id) {
    size_t n = 0;
    fm_tokenizer_token_bytes(tok, id, &n);
    return n;
}

/* The earliest of n stop strings in text, or -1. */
static long first_stop(const char *text, size_t len, const char *const *stops, int n) {
    long best = -1;
    for (int i = 0; i < n; i++) {
        size_t m = strlen(stops[i]);
        for (size_t p = 0; p + m <= len; p++)
            if (memcmp(text + p, stops[i], m) == 0) {
                if (best < 0 || (long)p < best) best = (long)p;
                break;
            }
    }
    return best;
}

/* Where streaming stops: the first token after which the text holds a stop string; the
 * earliest stop in that text. -1 for none. */
static long streaming_stop(const fm_tokenizer *tok, const fm_generate_result *r, const char *const *stops, int n) {
    size_t len = 0;
    for (int t = 0; t < r->n_tokens; t++) {
        len += token_bytes_len(tok, r->tokens[t]);
        long p = first_stop(r->text, len, stops, n);
        if (p >= 0) return p;
    }
    return -1;
}

/* Stop strings: the text ends before the earliest stop, the tokens holding any byte of it are
 * dropped, the streamed pieces and ids are exactly the result's; text is held back while it may
 * begin a stop string (a piece never has to be taken back). Then eos, the callback's early stop,
 * text without stops, and ids without a tokenizer. */
static void test_stops_eos_callback(void **state) {
    (void)state;
    fm_model *m = make_model(&odd_cfg, 61);
    fm_tokenizer *tok = small_tokenizer();
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 1, 64), FM_OK);
    int prompt_ids[3] = {116, 104, 101};
    const int *prompt = prompt_ids;
    int n_prompt = 3;
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = 60;
    gc.sampler.temperature = 0.7f;
    gc.seed = 12;
    gc.tok = tok;
    /* the plain continuation: its text is its tokens' bytes, streamed whole */
    fm_generate_result ref;
    collected c = {0};
    assert_int_equal(fm_generate(s, &gc, &prompt, &n_prompt, 1, collect, &c, &ref), FM_OK);
    assert_int_equal(ref.finish, FM_FINISH_LENGTH);
    assert_int_equal(ref.n_tokens, 60);
    char *decoded;
    size_t decoded_len;
    assert_int_equal(fm_tokenizer_decode(tok, ref.tokens, ref.n_tokens, &decoded, &decoded_len), FM_OK);
    assert_int_equal(decoded_len, ref.text_len);
    assert_memory_equal(decoded, ref.text, decoded_len);
    assert_int_equal(ref.text[ref.text_len], '\0');
    free(decoded);
    assert_int_equal(c.len, ref.text_len);
    assert_memory_equal(c.text, ref.text, c.len);
    assert_int_equal(c.n_ids, ref.n_tokens);
    assert_memory_equal(c.ids, ref.tokens, sizeof(int) * c.n_ids);
    assert_int_equal(c.calls, 60); /* no stops: every token's text at once */
    assert_true(ref.text_len > 40);

    /* stop strings taken from the middle of the text: at several places, alone and with others */
    for (size_t at = ref.text_len / 4; at < ref.text_len - 6; at += ref.text_len / 5) {
        char mid[4], late[7];
        memcpy(mid, ref.text + at, 3), mid[3] = '\0';
        memcpy(late, ref.text + at + 1, 6), late[6] = '\0';
        if (strlen(mid) < 3 || strlen(late) < 6) continue; /* a NUL byte */
        const char *sets[3][3] = {{mid}, {"\x01never", late, mid}, {late}};
        int counts[3] = {1, 3, 1};
        for (int k = 0; k < 3; k++) {
            gc.stops = sets[k];
            gc.n_stops = counts[k];
            long p = streaming_stop(tok, &ref, sets[k], counts[k]);
            assert_true(p >= 0 && (size_t)p <= at + 1);
            fm_generate_result r;
            memset(&c, 0, sizeof c);
            assert_int_equal(fm_generate(s, &gc, &prompt, &n_prompt, 1, collect, &c, &r), FM_OK);
            assert_int_equal(r.finish, FM_FINISH_STOP);
            assert_int_equal(r.text_len, (size_t)p);
            assert_memory_equal(r.text, ref.text, (size_t)p);
            assert_int_equal(r.text[p], '\0');
            /* the kept tokens: those whose bytes end by p */
            int kept = 0;
            size_t end = 0;
            while (kept < ref.n_tokens && end + token_bytes_len(tok, ref.tokens[kept]) <= (size_t)p)
                end += token_bytes_len(tok, ref.tokens[kept++]);
            assert_int_equal(r.n_tokens, kept);
            assert_memory_equal(r.tokens, ref.tokens, sizeof(int) * kept);
            assert_memory_equal(r.logprobs, ref.logprobs, sizeof(float) * kept);
            assert_int_equal(c.len, r.text_len);
            assert_memory_equal(c.text, r.text, c.len);
            assert_int_equal(c.n_ids, r.n_tokens);
            assert_memory_equal(c.ids, r.tokens, sizeof(int) * c.n_ids);
            fm_generate_result_free(&r);
        }
    }
    gc.stops = NULL, gc.n_stops = 0;

    /* eos: the first time the 10th token's id comes, the sequence ends; the id is kept (with its
     * log-prob), its bytes are not text, and the callback never sees it */
    gc.eos = ref.tokens[10];
    int j = 0;
    while (ref.tokens[j] != gc.eos) j++;
    size_t text_before = 0;
    for (int t = 0; t < j; t++) text_before += token_bytes_len(tok, ref.tokens[t]);
    fm_generate_result r;
    memset(&c, 0, sizeof c);
    assert_int_equal(fm_generate(s, &gc, &prompt, &n_prompt, 1, collect, &c, &r), FM_OK);
    assert_int_equal(r.finish, FM_FINISH_EOS);
    assert_int_equal(r.n_tokens, j + 1);
    assert_memory_equal(r.tokens, ref.tokens, sizeof(int) * (j + 1));
    assert_memory_equal(r.logprobs, ref.logprobs, sizeof(float) * (j + 1));
    assert_int_equal(r.text_len, text_before);
    assert_memory_equal(r.text, ref.text, text_before);
    assert_int_equal(c.n_ids, j);
    assert_int_equal(c.len, text_before);
    fm_generate_result_free(&r);
    gc.eos = -1;

    /* the callback ends the sequence after its 7th piece; the result holds what was made */
    memset(&c, 0, sizeof c);
    c.stop_after = 7;
    assert_int_equal(fm_generate(s, &gc, &prompt, &n_prompt, 1, collect, &c, &r), FM_OK);
    assert_int_equal(r.finish, FM_FINISH_CALLBACK);
    assert_int_equal(r.n_tokens, 7);
    assert_memory_equal(r.tokens, ref.tokens, sizeof(int) * 7);
    fm_generate_result_free(&r);

    /* without a tokenizer: ids only, one a call; no text */
    gc.tok = NULL;
    memset(&c, 0, sizeof c);
    assert_int_equal(fm_generate(s, &gc, &prompt, &n_prompt, 1, collect, &c, &r), FM_OK);
    assert_null(r.text);
    assert_int_equal(r.text_len, 0);
    assert_int_equal(c.calls, 60);
    assert_int_equal(c.n_ids, 60);
    assert_memory_equal(c.ids, ref.tokens, sizeof(int) * 60);
    assert_memory_equal(r.logprobs, ref.logprobs, sizeof(float) * 60);
    fm_generate_result_free(&r);
    fm_generate_result_free(&ref);

    /* names and defaults */
    assert_string_equal(fm_finish_reason_name(FM_FINISH_LENGTH), "length");
    assert_string_equal(fm_finish_reason_name(FM_FINISH_STOP), "stop");
    assert_string_equal(fm_finish_reason_name(FM_FINISH_EOS), "eos");
    assert_string_equal(fm_finish_reason_name(FM_FINISH_CALLBACK), "callback");
    fm_generate_config_default(&gc);
    assert_int_equal(gc.max_tokens, 200);
    assert_int_equal(gc.repeat_window, 64);
    assert_int_equal(gc.eos, -1);
    assert_true(gc.sampler.temperature == 1.0f);
    fm_tokenizer_free(tok);
    fm_session_free(s);
    fm_model_free(m);
}

/* Bad arguments are refused before anything runs, with the results zeroed. */
static void test_generate_errors(void **state) {
    (void)state;
    fm_model *m = make_model(&odd_cfg, 71);
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 2, 32), FM_OK);
    int good[2] = {1, 2}, bad[2] = {1, 300}, two = 2, none = 0;
    const int *p = good, *q = bad;
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    fm_generate_result r;
    assert_error_contains(fm_generate(s, &gc, &q, &two, 1, NULL, NULL, &r), FM_ERR_ARG, "outside the vocabulary");
    assert_error_contains(fm_generate(s, &gc, &p, &none, 1, NULL, NULL, &r), FM_ERR_ARG, "no tokens");
    const char *stops[1] = {"x"};
    gc.stops = stops, gc.n_stops = 1;
    assert_error_contains(fm_generate(s, &gc, &p, &two, 1, NULL, NULL, &r), FM_ERR_ARG, "need a tokenizer");
    gc.stops = NULL, gc.n_stops = 0;
    gc.eos = 300;
    assert_error_contains(fm_generate(s, &gc, &p, &two, 1, NULL, NULL, &r), FM_ERR_ARG, "eos");
    gc.eos = -1;
    gc.sampler.top_p = 0;
    assert_error_contains(fm_generate(s, &gc, &p, &two, 1, NULL, NULL, &r), FM_ERR_ARG, "top-p");
    gc.sampler.top_p = 1;
    gc.max_tokens = -1;
    assert_error_contains(fm_generate(s, &gc, &p, &two, 1, NULL, NULL, &r), FM_ERR_ARG, "max_tokens");
    gc.max_tokens = 0; /* nothing asked, nothing made */
    assert_int_equal(fm_generate(s, &gc, &p, &two, 1, NULL, NULL, &r), FM_OK);
    assert_int_equal(r.n_tokens, 0);
    assert_int_equal(r.finish, FM_FINISH_LENGTH);
    fm_generate_result_free(&r);
    assert_int_equal(fm_generate(s, &gc, NULL, NULL, 0, NULL, NULL, NULL), FM_OK);
    fm_session_free(s);
    fm_model_free(m);
}

/* Every allocation of fm_generate failing in turn: FM_ERR_NOMEM, results zeroed; then it works.
 * (Under AddressSanitizer, nothing leaks.) */
static void test_generate_out_of_memory(void **state) {
    (void)state;
    fm_model *m = make_model(&odd_cfg, 81);
    fm_tokenizer *tok = small_tokenizer();
    make_prompts(odd_cfg.vocab_size);
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 2, 32), FM_OK);
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = 100; /* past the first capacities of tokens (64) and text (256 bytes) */
    gc.tok = tok;
    const char *stops[1] = {"\x01\x02"};
    gc.stops = stops, gc.n_stops = 1;
    fm_generate_result want[N_PROMPTS], r[N_PROMPTS];
    assert_int_equal(fm_generate(s, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, want), FM_OK);
    int failures = 0;
    for (long k = 1;; k++) {
        fm_alloc_fail_at(k, 0);
        fm_status st = fm_generate(s, &gc, prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, r);
        int failed = fm_alloc_failed();
        fm_alloc_fail_at(0, 0);
        if (!failed) {
            assert_int_equal(st, FM_OK);
            for (int i = 0; i < N_PROMPTS; i++) assert_same_result(&r[i], &want[i], "after the failures", i);
            free_results(r, N_PROMPTS);
            break;
        }
        failures++;
        assert_int_equal(st, FM_ERR_NOMEM);
        for (int i = 0; i < N_PROMPTS; i++) {
            assert_null(r[i].tokens);
            assert_null(r[i].logprobs);
            assert_null(r[i].text);
            assert_int_equal(r[i].n_tokens, 0);
        }
    }
    print_message("%d allocations failed in turn\n", failures);
    assert_true(failures >= 8); /* 5 up front, and the results' growth */
    free_results(want, N_PROMPTS);
    fm_tokenizer_free(tok);
    fm_session_free(s);
    fm_model_free(m);
}

/* Several prompts fed at once (rows of different sequences sharing blocks, one prompt across a
 * block boundary), a shared prefix copied, and many rows appended in one pass (a sequence
 * several times) each give exactly what feeding and stepping alone give. */
static void test_feed_many_copy_append(void **state) {
    (void)state;
    fm_config c = odd_cfg;
    c.n_positions = 160; /* 160 prompt rows: past one 128-row block */
    fm_model *m = make_model(&c, 21);
    int V = c.vocab_size, lens[3] = {100, 60, 3}, toks[3][100];
    const int *ptrs[3] = {toks[0], toks[1], toks[2]};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < lens[i]; j++) toks[i][j] = (i * 131 + j * 17 + 5) % V;
    fm_session *many, *alone;
    assert_int_equal(fm_session_init(&many, m, 4, 128), FM_OK);
    assert_int_equal(fm_session_init(&alone, m, 1, 128), FM_OK);
    assert_int_equal(fm_session_max_rows(many), 128);
    const float *lm, *la;
    int seqs[3] = {2, 0, 3};
    assert_int_equal(fm_session_feed_many(many, 3, seqs, ptrs, lens, &lm), FM_OK);
    float *first = malloc(sizeof(float) * 3 * V);
    memcpy(first, lm, sizeof(float) * 3 * V);
    /* sequence 1: a copy of sequence 0 (prompt 1), both continued the same way below */
    assert_int_equal(fm_session_copy(many, 0, 1), FM_OK);
    assert_int_equal(fm_session_length(many, 1), 60);
    for (int i = 0; i < 3; i++) {
        fm_session_reset(alone, 0);
        assert_int_equal(fm_session_feed(alone, 0, toks[i], lens[i], &la), FM_OK);
        assert_memory_equal(first + (size_t)i * V, la, sizeof(float) * V);
    }
    /* append: sequence 2 three tokens, sequence 1 two, interleaved; against stepping alone */
    int app_seqs[5] = {2, 1, 2, 1, 2}, app_toks[5] = {7, 8, 9, 10, 11};
    assert_int_equal(fm_session_append(many, app_seqs, app_toks, 5, &lm), FM_OK);
    float *rows = malloc(sizeof(float) * 5 * V);
    memcpy(rows, lm, sizeof(float) * 5 * V);
    const int prompt_of[4] = {1, 1, 0, 0}; /* sequence -> the prompt it holds (1 is a copy of 0) */
    for (int seq = 1; seq <= 2; seq++) {
        fm_session_reset(alone, 0);
        assert_int_equal(fm_session_feed(alone, 0, toks[prompt_of[seq]], lens[prompt_of[seq]], &la), FM_OK);
        for (int r = 0; r < 5; r++) {
            if (app_seqs[r] != seq) continue;
            assert_int_equal(fm_session_step(alone, (int[]){0}, &app_toks[r], 1, &la), FM_OK);
            assert_memory_equal(rows + (size_t)r * V, la, sizeof(float) * V);
        }
    }
    assert_int_equal(fm_session_length(many, 2), 103);
    /* errors: a sequence twice in a feed, too many rows, past the length */
    int twice[2] = {0, 0};
    assert_int_equal(fm_session_feed_many(many, 2, twice, ptrs, lens, &lm), FM_ERR_ARG);
    int big[200] = {0}, big_seqs[200] = {0};
    assert_int_equal(fm_session_append(many, big_seqs, big, 200, &lm), FM_ERR_ARG);
    assert_int_equal(fm_session_append(many, big_seqs, big, 100, &lm), FM_ERR_ARG); /* 60 + 100 > 128 */
    free(first), free(rows);
    fm_session_free(many);
    fm_session_free(alone);
    fm_model_free(m);
}

int main(void) {
    fm_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_rows_alone),
        cmocka_unit_test(test_feed_many_copy_append),
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_batched_equals_alone_wide),
        cmocka_unit_test(test_joins_and_leaves),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_float32_whatever_the_precision),
        cmocka_unit_test(test_same_as_reference_loop),
        cmocka_unit_test(test_stops_eos_callback),
        cmocka_unit_test(test_generate_errors),
        cmocka_unit_test(test_generate_out_of_memory),
    };
    return cmocka_run_group_tests_name("sessions and generation", tests, NULL, NULL);
}
