/*
 * test_probe.c — the linear probe (src/eval/probe.c) and the pooled hidden states it reads
 * (fm_session_pooled_states).
 *
 * - separable synthetic features with three candidate layers, only the middle one informative:
 *   the probe chooses it, by cross-validation inside 10 labels per class and on a held-out part
 *   of all labels, and classifies every test row; the noise layer alone stays near chance;
 * - draws: per_class rows of each class, sorted, the same for the same seed, others for another;
 *   a class too small is refused naming it;
 * - bad arguments: a layer out of range, a test label out of range, mismatched feature shapes;
 * - pooled states of a tiny model: entry L is the mean over positions of fm_model_forward's final
 *   hidden states, entry 0 the mean of wte[token] + wpe[t], and a sequence pools the same alone
 *   as in a batch.
 */
#include "test_util.h"

#include <math.h>

enum { K = 3, LAYERS = 3, D = 4, N_TRAIN = 300, N_TEST = 150 };

/* Row i: class i % K; layer 1 holds the class's centre (6 apart) plus N(0, 1) noise, layers 0 and
 * 2 only noise. x (n, LAYERS, D). */
static void make_features(fm_rng *rng, int n, float *x, int *y) {
    for (int i = 0; i < n; i++) {
        y[i] = i % K;
        for (int l = 0; l < LAYERS; l++)
            for (int j = 0; j < D; j++)
                x[((size_t)i * LAYERS + l) * D + j] = fm_rng_normal(rng) + (l == 1 && j == y[i] ? 6.0f : 0.0f);
    }
}

static float train_x[N_TRAIN * LAYERS * D], test_x[N_TEST * LAYERS * D];
static int train_y[N_TRAIN], test_y[N_TEST];

static int setup(void **state) {
    (void)state;
    fm_rng rng;
    fm_rng_seed(&rng, 5);
    make_features(&rng, N_TRAIN, train_x, train_y);
    make_features(&rng, N_TEST, test_x, test_y);
    return 0;
}

static void test_separable_choice(void **state) {
    (void)state;
    fm_probe_features tr = {train_x, N_TRAIN, LAYERS, D}, te = {test_x, N_TEST, LAYERS, D};
    fm_probe_config cfg;
    fm_probe_config_default(&cfg);
    int rows[K * 10];
    assert_int_equal(fm_probe_draw(train_y, N_TRAIN, K, 10, 1, rows), FM_OK);
    fm_probe_result r;
    assert_int_equal(fm_probe_run(&tr, train_y, rows, K * 10, 1, &te, test_y, K, &cfg, &r), FM_OK);
    assert_int_equal(r.layer, 1);
    assert_true(r.accuracy == 1.0);
    assert_true(r.select_accuracy == 1.0);
    assert_int_equal(fm_probe_run(&tr, train_y, NULL, 0, 0, &te, test_y, K, &cfg, &r), FM_OK);
    assert_int_equal(r.layer, 1);
    assert_true(r.accuracy == 1.0);
    const double *grid;
    int n_grid = fm_probe_grid(&grid), found = 0;
    for (int g = 0; g < n_grid; g++) found += grid[g] == r.lambda;
    assert_int_equal(found, 1);
    cfg.layer = 0; /* noise: near chance (1/3) */
    assert_int_equal(fm_probe_run(&tr, train_y, NULL, 0, 0, &te, test_y, K, &cfg, &r), FM_OK);
    assert_int_equal(r.layer, 0);
    assert_true(r.accuracy < 0.6);
}

static void test_draws(void **state) {
    (void)state;
    int a[K * 5], b[K * 5], c[K * 5];
    assert_int_equal(fm_probe_draw(train_y, N_TRAIN, K, 5, 42, a), FM_OK);
    assert_int_equal(fm_probe_draw(train_y, N_TRAIN, K, 5, 42, b), FM_OK);
    assert_int_equal(fm_probe_draw(train_y, N_TRAIN, K, 5, 43, c), FM_OK);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    int per[K] = {0};
    for (int i = 0; i < K * 5; i++) {
        if (i) assert_true(a[i] > a[i - 1]);
        per[train_y[a[i]]]++;
    }
    for (int k = 0; k < K; k++) assert_int_equal(per[k], 5);
    int big[K * 101];
    assert_int_equal(fm_probe_draw(train_y, N_TRAIN, K, 101, 1, big), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "class 0 has 100 training rows"));
}

static void test_bad_arguments(void **state) {
    (void)state;
    fm_probe_features tr = {train_x, N_TRAIN, LAYERS, D}, te = {test_x, N_TEST, LAYERS, D};
    fm_probe_config cfg;
    fm_probe_config_default(&cfg);
    fm_probe_result r;
    cfg.layer = 3;
    assert_int_equal(fm_probe_run(&tr, train_y, NULL, 0, 0, &te, test_y, K, &cfg, &r), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "layer 3"));
    cfg.layer = -1;
    int bad_y[N_TEST];
    memcpy(bad_y, test_y, sizeof bad_y);
    bad_y[7] = 3;
    assert_int_equal(fm_probe_run(&tr, train_y, NULL, 0, 0, &te, bad_y, K, &cfg, &r), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "test label 3 of row 7"));
    fm_probe_features other = {test_x, N_TEST, 1, D};
    assert_int_equal(fm_probe_run(&tr, train_y, NULL, 0, 0, &other, test_y, K, &cfg, &r), FM_ERR_MISMATCH);
}

static void test_pooled_states(void **state) {
    (void)state;
    fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 16, .vocab_size = 23, .n_positions = 12,
                     .layer_norm_epsilon = 1e-5f};
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 9), FM_OK);
    enum { B = 3, T = 7, C = 16, L = 2 };
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 5 + 3) % 23;
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 1, T), FM_OK);
    float pooled[B * (L + 1) * C], alone[(L + 1) * C];
    assert_int_equal(fm_session_pooled_states(s, tokens, B, T, pooled), FM_OK);
    assert_int_equal(fm_session_pooled_states(s, tokens + T, 1, T, alone), FM_OK);
    for (int i = 0; i < (L + 1) * C; i++) assert_true(fabsf(alone[i] - pooled[(L + 1) * C + i]) < 1e-5f);
    assert_int_equal(fm_model_forward(m, tokens, B, T), FM_OK);
    const float *hidden = fm_model_hidden(m); /* (B, T, C) after ln_f */
    const float *wte = fm_model_tensor(m, fm_model_find_tensor(m, "wte.weight"))->data;
    const float *wpe = fm_model_tensor(m, fm_model_find_tensor(m, "wpe.weight"))->data;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double last = 0.0, first = 0.0;
            for (int t = 0; t < T; t++) {
                last += hidden[((size_t)b * T + t) * C + c];
                first += wte[(size_t)tokens[b * T + t] * C + c] + wpe[(size_t)t * C + c];
            }
            assert_true(fabs(pooled[((size_t)b * (L + 1) + L) * C + c] - last / T) < 1e-4);
            assert_true(fabs(pooled[((size_t)b * (L + 1) + 0) * C + c] - first / T) < 1e-5);
        }
    fm_session_free(s);
    fm_model_free(m);
}

/* Each position's state normalised, then averaged: layer 0 against a plain reference on wte +
 * wpe; the final layer equals the ln_f-pooled one while ln_f is the identity affine map (GPT-2's
 * initialisation: gain 1, bias 0); either output alone gives the same numbers as both. */
static void test_pooled_states_normed(void **state) {
    (void)state;
    fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 24, .vocab_size = 31, .n_positions = 10,
                     .layer_norm_epsilon = 1e-5f};
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 4), FM_OK);
    enum { B = 2, T = 9, C = 24, L = 2 };
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 7 + 1) % 31;
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 1, T), FM_OK);
    float pooled[B * (L + 1) * C], normed[B * (L + 1) * C], alone[B * (L + 1) * C], plain[B * (L + 1) * C];
    assert_int_equal(fm_session_pooled_states_normed(s, tokens, B, T, pooled, normed), FM_OK);
    assert_int_equal(fm_session_pooled_states_normed(s, tokens, B, T, NULL, alone), FM_OK);
    assert_int_equal(fm_session_pooled_states(s, tokens, B, T, plain), FM_OK);
    assert_memory_equal(alone, normed, sizeof normed);
    assert_memory_equal(plain, pooled, sizeof pooled);
    const float *wte = fm_model_tensor(m, fm_model_find_tensor(m, "wte.weight"))->data;
    const float *wpe = fm_model_tensor(m, fm_model_find_tensor(m, "wpe.weight"))->data;
    for (int b = 0; b < B; b++) {
        double ref[C];
        for (int c = 0; c < C; c++) ref[c] = 0.0;
        for (int t = 0; t < T; t++) {
            double x[C], mu = 0.0, var = 0.0;
            for (int c = 0; c < C; c++) {
                x[c] = (double)wte[(size_t)tokens[b * T + t] * C + c] + wpe[(size_t)t * C + c];
                mu += x[c] / C;
            }
            for (int c = 0; c < C; c++) var += (x[c] - mu) * (x[c] - mu) / C;
            for (int c = 0; c < C; c++) ref[c] += (x[c] - mu) / sqrt(var + 1e-5) / T;
        }
        for (int c = 0; c < C; c++) {
            assert_true(fabs(normed[((size_t)b * (L + 1) + 0) * C + c] - ref[c]) < 1e-4);
            assert_true(fabsf(normed[((size_t)b * (L + 1) + L) * C + c] - pooled[((size_t)b * (L + 1) + L) * C + c]) <
                        1e-4f);
        }
        /* the layers between differ from the plain mean: they are normalised */
        double diff = 0.0;
        for (int c = 0; c < C; c++) diff += fabs(normed[((size_t)b * (L + 1) + 1) * C + c] - pooled[((size_t)b * (L + 1) + 1) * C + c]);
        assert_true(diff > 1e-2);
    }
    fm_session_free(s);
    fm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separable_choice),
        cmocka_unit_test(test_draws),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_pooled_states),
        cmocka_unit_test(test_pooled_states_normed),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
