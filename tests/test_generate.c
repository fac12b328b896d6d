/*
 * test_generate.c — generation and evaluation pieces: a session's cached decoding against full
 * recomputation, the sampler's order and distributions, sliding-window scoring (bit for bit the
 * training forward's log-probs), the bigram baseline, token shards and their corruption errors,
 * the SVG plot. Batched decoding and fm_generate are tested in test_sessions.c.
 */
#include "test_util.h"

#include <math.h>

#include "core/internal.h"

static const fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 48, .vocab_size = 300,
                              .n_positions = 40, .n_inner = 0, .layer_norm_epsilon = 1e-5f};

/* A model trained briefly on "next = (3 t + 1) mod V" so that its predictions are peaked. */
static fm_model *trained_model(void) {
    fm_model *m;
    fm_optimizer *o;
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    ac.lr = 1e-2f, ac.warmup_steps = 5, ac.total_steps = 150, ac.weight_decay = 0;
    assert_int_equal(fm_model_init(&m, &cfg, 11), FM_OK);
    assert_int_equal(fm_optimizer_init(&o, m, &ac), FM_OK);
    fm_rng rng;
    fm_rng_seed(&rng, 5);
    int tokens[4 * 32], targets[4 * 32];
    for (int s = 0; s < 150; s++) {
        for (int b = 0; b < 4; b++) {
            int t = (int)(fm_rng_u64(&rng) % cfg.vocab_size);
            for (int i = 0; i < 32; i++) {
                tokens[b * 32 + i] = t;
                t = (3 * t + 1) % cfg.vocab_size;
                targets[b * 32 + i] = t;
            }
        }
        float loss;
        fm_model_zero_grad(m);
        assert_int_equal(fm_model_train_loss(m, tokens, targets, NULL, 4, 32, &loss), FM_OK);
        assert_int_equal(fm_optimizer_step(o, m, NULL, NULL), FM_OK);
        if (s == 149) print_message("trained model: final loss %.3f\n", loss);
    }
    fm_optimizer_free(o);
    return m;
}

static int argmax(const float *z, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > z[best]) best = v;
    return best;
}

/* Greedy generation with the cache equals greedy generation recomputing the whole sequence. */
static void test_kv_cache_equals_recomputation(void **state) {
    (void)state;
    fm_model *m = trained_model();
    int V = cfg.vocab_size, seq[40] = {7, 22, 67, 202, 5};
    int n = 5, zero = 0;
    fm_session *d;
    assert_int_equal(fm_session_init(&d, m, 1, cfg.n_positions), FM_OK);
    const float *cached;
    assert_int_equal(fm_session_feed(d, 0, seq, n, &cached), FM_OK);
    float *copy = malloc(sizeof(float) * V);
    while (n < cfg.n_positions) {
        memcpy(copy, cached, sizeof(float) * V);
        assert_int_equal(fm_model_forward(m, seq, 1, n), FM_OK);
        const float *full = fm_model_logits(m) + (size_t)(n - 1) * V;
        double max_ref = 0, max_err = 0;
        for (int v = 0; v < V; v++) {
            max_ref = fmax(max_ref, fabs(full[v]));
            max_err = fmax(max_err, fabs(full[v] - copy[v]));
        }
        if (max_err > 1e-5 * max_ref) fail_msg("position %d: logits differ by %g of %g", n, max_err, max_ref);
        int next = argmax(copy, V);
        assert_int_equal(next, argmax(full, V));
        seq[n++] = next;
        if (n < cfg.n_positions) assert_int_equal(fm_session_step(d, &zero, &next, 1, &cached), FM_OK);
    }
    assert_int_equal(fm_session_length(d, 0), cfg.n_positions - 1);
    /* the model learned the rule, so the continuation follows it */
    assert_int_equal(seq[6], (3 * seq[5] + 1) % V);
    /* past the length and bad tokens are refused; reset starts again */
    int two[2] = {1, 2};
    assert_int_equal(fm_session_feed(d, 0, two, 2, &cached), FM_ERR_ARG);
    assert_int_equal(fm_session_step(d, &zero, two, 1, &cached), FM_OK); /* the last position */
    assert_int_equal(fm_session_step(d, &zero, two, 1, &cached), FM_ERR_ARG); /* full */
    int bad = V, one = 1;
    fm_session_reset(d, 0);
    assert_int_equal(fm_session_length(d, 0), 0);
    assert_int_equal(fm_session_feed(d, 0, &bad, 1, &cached), FM_ERR_ARG);
    assert_int_equal(fm_session_feed(d, 1, seq, 1, &cached), FM_ERR_ARG); /* one sequence: 0 */
    assert_int_equal(fm_session_step(d, &one, seq, 1, &cached), FM_ERR_ARG);
    assert_int_equal(fm_session_feed(d, 0, seq, 5, &cached), FM_OK);
    free(copy);
    fm_session_free(d);
    fm_model_free(m);
}

/* A prompt fed at once (two blocks of rows: 37 > 32 positions) gives the logits of the full
 * forward and of feeding it token by token, within float rounding, and the same continuation. */
static void test_prompt_in_blocks(void **state) {
    (void)state;
    fm_model *m = trained_model();
    int V = cfg.vocab_size, n = 37, seq[40];
    for (int i = 0; i < n; i++) seq[i] = (i * 37 + 11) % V;
    fm_session *whole, *single;
    assert_int_equal(fm_session_init(&whole, m, 1, cfg.n_positions), FM_OK);
    assert_int_equal(fm_session_init(&single, m, 1, cfg.n_positions), FM_OK);
    const float *a, *b;
    int zero = 0;
    assert_int_equal(fm_session_feed(whole, 0, seq, n, &a), FM_OK);
    assert_int_equal(fm_session_feed(single, 0, seq, 1, &b), FM_OK);
    for (int i = 1; i < n; i++) assert_int_equal(fm_session_step(single, &zero, seq + i, 1, &b), FM_OK);
    assert_int_equal(fm_model_forward(m, seq, 1, n), FM_OK);
    const float *full = fm_model_logits(m) + (size_t)(n - 1) * V;
    double max_ref = 0, err_a = 0, err_b = 0;
    for (int v = 0; v < V; v++) {
        max_ref = fmax(max_ref, fabs(full[v]));
        err_a = fmax(err_a, fabs(full[v] - a[v]));
        err_b = fmax(err_b, fabs(full[v] - b[v]));
    }
    if (err_a > 1e-5 * max_ref || err_b > 1e-5 * max_ref)
        fail_msg("prompt logits differ from the full forward: blocks %g, single %g of %g", err_a, err_b, max_ref);
    for (int step = 0; step < 2; step++) { /* the caches agree: the same next tokens */
        int ta = argmax(a, V), tb = argmax(b, V);
        assert_int_equal(ta, tb);
        assert_int_equal(fm_session_step(whole, &zero, &ta, 1, &a), FM_OK);
        assert_int_equal(fm_session_step(single, &zero, &tb, 1, &b), FM_OK);
    }
    assert_int_equal(fm_session_length(whole, 0), n + 2);
    fm_session_free(whole);
    fm_session_free(single);
    fm_model_free(m);
}

/* Frequencies of n draws. */
static void draw(const fm_sampler_config *sc, const float *logits, int V, int n, double *freq) {
    fm_rng rng;
    fm_rng_seed(&rng, 3);
    for (int v = 0; v < V; v++) freq[v] = 0;
    for (int i = 0; i < n; i++) freq[fm_sample(sc, logits, V, NULL, 0, &rng, NULL)] += 1.0 / n;
}

static void test_sampler(void **state) {
    (void)state;
    float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    double f[4];
    fm_sampler_config sc;
    fm_sampler_config_default(&sc);
    draw(&sc, logits, 4, 40000, f);
    assert_float_equal(f[0], 0.5, 0.015);
    assert_float_equal(f[1], 0.3, 0.015);
    assert_float_equal(f[3], 0.05, 0.01);
    sc.top_k = 2; /* {0.5, 0.3} renormalised */
    draw(&sc, logits, 4, 40000, f);
    assert_float_equal(f[0], 0.625, 0.015);
    assert_float_equal(f[2] + f[3], 0.0, 0.0);
    sc.top_k = 0, sc.top_p = 0.9f; /* 0.5 + 0.3 + 0.15 reaches 0.9 */
    draw(&sc, logits, 4, 40000, f);
    assert_float_equal(f[3], 0.0, 0.0);
    assert_float_equal(f[2], 0.15 / 0.95, 0.015);
    sc.top_p = 1.0f, sc.min_p = 0.5f; /* keeps p >= 0.25 */
    draw(&sc, logits, 4, 40000, f);
    assert_float_equal(f[0], 0.625, 0.015);
    assert_float_equal(f[2], 0.0, 0.0);
    sc.min_p = 0, sc.temperature = 0.5f; /* sharpened: p^2 normalised */
    draw(&sc, logits, 4, 40000, f);
    assert_float_equal(f[0], 0.25 / (0.25 + 0.09 + 0.0225 + 0.0025), 0.015);
    /* greedy, and the repetition penalty acting on the recent tokens */
    sc.temperature = 0;
    fm_rng rng;
    fm_rng_seed(&rng, 1);
    assert_int_equal(fm_sample(&sc, logits, 4, NULL, 0, &rng, NULL), 0);
    float pos[3] = {2.0f, 1.5f, -1.0f};
    int recent[3] = {0, 0, 0}; /* repeated ids are penalised once */
    sc.repeat_penalty = 1.5f;  /* 2.0 / 1.5 = 1.33 < 1.5 */
    assert_int_equal(fm_sample(&sc, pos, 3, recent, 3, &rng, NULL), 1);
    sc.repeat_penalty = 1.2f; /* 2.0 / 1.2 = 1.67 > 1.5 */
    assert_int_equal(fm_sample(&sc, pos, 3, recent, 3, &rng, NULL), 0);
    /* same seed, same draws */
    fm_sampler_config_default(&sc);
    fm_rng a, b;
    fm_rng_seed(&a, 9), fm_rng_seed(&b, 9);
    for (int i = 0; i < 100; i++)
        assert_int_equal(fm_sample(&sc, logits, 4, NULL, 0, &a, NULL), fm_sample(&sc, logits, 4, NULL, 0, &b, NULL));
    sc.top_p = 0;
    assert_int_equal(fm_sampler_validate(&sc), FM_ERR_ARG);
}

/* Sliding-window scoring: the first window equals scoring the prefix alone; all finite. */
static void test_score_sliding_window(void **state) {
    (void)state;
    fm_model *m = trained_model();
    size_t n = 100; /* 2.5 contexts */
    int *tokens = malloc(sizeof(int) * n);
    float *lp = malloc(sizeof(float) * n), *lp_prefix = malloc(sizeof(float) * n);
    tokens[0] = 17;
    for (size_t i = 1; i < n; i++) tokens[i] = (int)((3 * tokens[i - 1] + 1 + (i % 7 == 0)) % cfg.vocab_size);
    double nll, nll_prefix, sum = 0;
    assert_int_equal(fm_score_tokens(m, tokens, n, lp, &nll), FM_OK);
    assert_true(isnan(lp[0]));
    for (size_t i = 1; i < n; i++) {
        assert_true(isfinite(lp[i]) && lp[i] <= 0);
        sum -= lp[i];
    }
    assert_float_equal(nll, sum, 1e-3);
    /* the first window, bit for bit the training forward's log softmax (scoring runs a session's
     * forward, which must compute what fm_model_forward computes) */
    assert_int_equal(fm_model_forward(m, tokens, 1, cfg.n_positions), FM_OK);
    for (int i = 1; i < cfg.n_positions; i++) {
        const float *z = fm_model_logits(m) + (size_t)(i - 1) * cfg.vocab_size;
        float maxv = z[0];
        for (int v = 1; v < cfg.vocab_size; v++) maxv = z[v] > maxv ? z[v] : maxv;
        double se = 0.0;
        for (int v = 0; v < cfg.vocab_size; v++) se += exp((double)z[v] - maxv);
        float want = (float)((double)z[tokens[i]] - maxv - log(se));
        if (memcmp(&want, &lp[i], sizeof want) != 0)
            fail_msg("position %d: scored %.9g, the training forward gives %.9g", i, lp[i], want);
    }
    assert_int_equal(fm_score_tokens(m, tokens, cfg.n_positions, lp_prefix, &nll_prefix), FM_OK);
    for (int i = 1; i < cfg.n_positions; i++) assert_float_equal(lp[i], lp_prefix[i], 1e-5);
    /* the rule was learned: predictable tokens are likely, the perturbed ones (i % 7 == 0) are not,
     * in the later windows too */
    double rule = 0, perturbed = 0;
    int n_rule = 0, n_perturbed = 0;
    for (size_t i = cfg.n_positions; i < n; i++) {
        if (i % 7 == 0) perturbed += lp[i], n_perturbed++;
        else rule += lp[i], n_rule++;
    }
    print_message("mean log-prob: %.2f following the rule, %.2f off it\n", rule / n_rule, perturbed / n_perturbed);
    assert_true(rule / n_rule > perturbed / n_perturbed + 5.0);
    assert_int_equal(fm_score_tokens(m, tokens, 1, lp, &nll), FM_OK);
    assert_float_equal(nll, 0.0, 0.0);
    free(tokens), free(lp), free(lp_prefix);
    fm_model_free(m);
}

static void test_bigram_baseline(void **state) {
    (void)state;
    size_t n = 20000;
    int *cyclic = malloc(sizeof(int) * n), *noise = malloc(sizeof(int) * n);
    fm_rng rng;
    fm_rng_seed(&rng, 2);
    for (size_t i = 0; i < n; i++) {
        cyclic[i] = (int)(i % 5);
        noise[i] = (int)(fm_rng_u64(&rng) % 50);
    }
    double nll, beta;
    assert_int_equal(fm_bigram_nll(cyclic, n - 1000, cyclic + n - 1000, 1000, 50, &nll, &beta), FM_OK);
    assert_true(nll / 1000 < 0.01); /* deterministic successions cost almost nothing */
    assert_int_equal(fm_bigram_nll(noise, n - 1000, noise + n - 1000, 1000, 50, &nll, &beta), FM_OK);
    assert_float_equal(nll / 1000, log(50.0), 0.1); /* uniform noise costs log V */
    assert_true(beta > 10); /* and the fit leans on the unigram */
    int bad[30] = {0};
    bad[3] = 50;
    assert_int_equal(fm_bigram_nll(bad, 30, bad, 30, 50, &nll, &beta), FM_ERR_ARG);
    free(cyclic), free(noise);
}

static void test_shards(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *path = test_path(dir, "train.bin");
    int tokens[1000];
    for (int i = 0; i < 1000; i++) tokens[i] = (i * 7919) % 70000;
    for (int wide = 0; wide < 2; wide++) {
        int V = wide ? 70000 : 300;
        int *t = malloc(sizeof tokens);
        for (int i = 0; i < 1000; i++) t[i] = tokens[i] % V;
        assert_int_equal(fm_shard_write(path, t, 1000, V, 4321), FM_OK);
        fm_shard *s;
        assert_int_equal(fm_shard_open(&s, path), FM_OK);
        assert_int_equal(fm_shard_length(s), 1000);
        assert_int_equal(fm_shard_vocab_size(s), V);
        assert_int_equal(fm_shard_source_bytes(s), 4321);
        int back[10];
        fm_shard_read(s, 990, 10, back);
        assert_memory_equal(back, t + 990, sizeof back);
        fm_shard_close(s);
        free(t);
    }
    size_t size;
    unsigned char *bytes = read_file_bytes(path, &size);
    fm_shard *s;
    /* truncated */
    write_file_bytes(path, bytes, size - 4);
    assert_error_contains(fm_shard_open(&s, path), FM_ERR_FORMAT, "truncated");
    write_file_bytes(path, bytes, 30);
    assert_error_contains(fm_shard_open(&s, path), FM_ERR_FORMAT, "truncated");
    /* a flipped token byte */
    bytes[100] ^= 1;
    write_file_bytes(path, bytes, size);
    assert_error_contains(fm_shard_open(&s, path), FM_ERR_FORMAT, "checksum");
    bytes[100] ^= 1;
    /* not a shard */
    bytes[0] = 'X';
    write_file_bytes(path, bytes, size);
    assert_error_contains(fm_shard_open(&s, path), FM_ERR_FORMAT, "magic");
    write_file_bytes(path, bytes, 0);
    assert_error_contains(fm_shard_open(&s, path), FM_ERR_FORMAT, "empty");
    assert_true(strstr(fm_last_error(), path) != NULL);
    char *missing = test_path(dir, "none.bin");
    assert_error_contains(fm_shard_open(&s, missing), FM_ERR_IO, "none.bin");
    int out_of_range[2] = {1, 300};
    assert_int_equal(fm_shard_write(path, out_of_range, 2, 300, 2), FM_ERR_ARG);
    free(bytes), free(missing);
    remove_dir_recursive(dir);
    free(dir), free(path);
}

static void test_plot(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *path = test_path(dir, "loss.svg");
    double xs[3] = {0, 10, 20}, ys[3] = {5.0, 3.0, NAN}, ys2[2] = {4.5, 3.5};
    fm_series series[2] = {{"train <loss>", xs, ys, 3, "#1f77b4"}, {"held-out", xs, ys2, 2, "#d62728"}};
    assert_int_equal(fm_plot_svg(path, "a & b", "step", "loss", series, 2, 0), FM_OK);
    size_t size;
    char *svg = (char *)read_file_bytes(path, &size);
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "train &lt;loss&gt;"));
    assert_non_null(strstr(svg, "a &amp; b"));
    assert_non_null(strstr(svg, "</svg>"));
    assert_null(strstr(svg, "log scale"));
    free(svg);
    assert_int_equal(fm_plot_svg(path, "empty", "x", "y", series, 0, 1), FM_OK); /* empty axes */

    /* Log scale with real series: decades 100 down to 0.01, and a zero, a negative and a NaN that
     * a log scale cannot place. Read back: the y grid's labels are powers of ten among others,
     * equally spaced per decade; the first line's points are exactly the 5 placeable ones, each
     * on the grid line of its value; the second's (50, 0.05) between their decades. */
    double lx[8] = {0, 1, 2, 3, 4, 5, 6, 7}, ly[8] = {100, 10, 0, 1, -3, 0.1, NAN, 0.01};
    double lx2[2] = {0, 7}, ly2[2] = {50, 0.05};
    fm_series logs[2] = {{"train", lx, ly, 8, "#1f77b4"}, {"held-out", lx2, ly2, 2, "#d62728"}};
    assert_int_equal(fm_plot_svg(path, "log", "step", "loss", logs, 2, 1), FM_OK);
    svg = (char *)read_file_bytes(path, &size);
    assert_non_null(strstr(svg, ">loss (log scale)</text>"));
    const char *decades[5] = {"100", "10", "1", "0.1", "0.01"};
    double decade_y[5] = {NAN, NAN, NAN, NAN, NAN}, pts[2][16][2];
    int n_ticks = 0, n_pts[2] = {-1, -1};
    for (char *line = svg; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        double y;
        char label[32];
        if (sscanf(line, "<line x1=\"%*d\" y1=\"%lf\" x2=\"%*d\" y2=\"%*f\" stroke=\"#eee\"/><text x=\"%*d\" y=\"%*f\" "
                         "text-anchor=\"end\">%31[^<]</text>", &y, label) == 2) {
            n_ticks++;
            for (int d = 0; d < 5; d++)
                if (strcmp(label, decades[d]) == 0) decade_y[d] = y;
        }
        for (int s = 0; s < 2; s++) {
            char head[96];
            snprintf(head, sizeof head, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", logs[s].color);
            if (strncmp(line, head, strlen(head)) != 0) continue;
            const char *p = line + strlen(head);
            int used;
            n_pts[s] = 0;
            while (n_pts[s] < 16 && sscanf(p, "%lf,%lf %n", &pts[s][n_pts[s]][0], &pts[s][n_pts[s]][1], &used) == 2)
                n_pts[s]++, p += used;
            assert_true(*p == '"');
        }
    }
    assert_true(n_ticks >= 5 && n_ticks <= 12);
    for (int d = 0; d < 5; d++) {
        if (isnan(decade_y[d])) fail_msg("no y tick labelled %s on the log scale:\n%s", decades[d], svg);
        if (d > 0 && !(fabs((decade_y[d] - decade_y[d - 1]) - (decade_y[1] - decade_y[0])) <= 0.15))
            fail_msg("decades not equally spaced: %s at y %.1f, %s at %.1f", decades[d - 1], decade_y[d - 1], decades[d],
                     decade_y[d]);
    }
    assert_true(decade_y[1] - decade_y[0] > 50); /* downwards, and far apart */
    assert_int_equal(n_pts[0], 5);
    const double placed_x[5] = {0, 1, 3, 5, 7};
    for (int i = 0; i < 5; i++) {
        assert_float_equal(pts[0][i][1], decade_y[i], 0.051);
        if (i > 0) assert_true(pts[0][i][0] > pts[0][i - 1][0]);
        assert_float_equal((pts[0][i][0] - pts[0][0][0]) / (pts[0][4][0] - pts[0][0][0]), placed_x[i] / 7.0, 1e-3);
    }
    assert_int_equal(n_pts[1], 2);
    assert_true(pts[1][0][1] > decade_y[0] && pts[1][0][1] < decade_y[1]); /* 50: between 100 and 10 */
    assert_true(pts[1][1][1] > decade_y[3] && pts[1][1][1] < decade_y[4]); /* 0.05: between 0.1 and 0.01 */
    free(svg);
    remove_dir_recursive(dir);
    free(dir), free(path);
}

int main(void) {
    fm_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cache_equals_recomputation),
        cmocka_unit_test(test_prompt_in_blocks),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_score_sliding_window),
        cmocka_unit_test(test_bigram_baseline),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_plot),
    };
    return cmocka_run_group_tests_name("generation and evaluation", tests, NULL, NULL);
}
