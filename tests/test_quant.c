/*
 * test_quant.c — int8 (Q8_0) weights: the quantization error bound, an inference session on int8
 * blocks against the float forward of the same (dequantized) model, with proof that the session
 * multiplied the blocks and not the float copies (check_session_runs_int8), the file round trip,
 * a broken file's message, and a backward returning the model to float32.
 *
 * Bounds: Q8_0 rounds each weight to the nearest multiple of its block's scale d = max|w| / 127
 * (d itself rounded to float16, within 2^-11 relative), so |w - d q| <= d / 2 (1 + 2^-10).
 * The int8 products quantize their inputs too (per block of 32, to int8 with scale max|x| / 127:
 * src/cpu/kernels.h), so a session on int8 blocks and the float forward on the dequantized weights
 * differ by the inputs' rounding, under 1% of the largest logit for these shapes (measured: up to
 * 0.56% on every path); INT8_TOL leaves room. A float model's session agrees to float rounding (FLOAT_TOL).
 */
#include "test_util.h"

#include <math.h>

#include "core/internal.h"
#include "model/model.h"
#include "model/quant.h"

#define FLOAT_TOL 1e-4 /* of the largest logit: the same sums in another order */
#define INT8_TOL 2e-2  /* of the largest logit: the inputs of int8 products rounded to int8 */

/* Width 40: 2 blocks of 32 per row, the second padded, in every matrix (MLP width 4 x 40). */
static const fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 40, .vocab_size = 67,
                              .n_positions = 24, .n_inner = 0, .layer_norm_epsilon = 1e-5f};

static void test_error_bound(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 11), FM_OK);
    size_t n = fm_model_num_params(m);
    float *before = malloc(sizeof(float) * n);
    memcpy(before, fm_model_params(m), sizeof(float) * n);
    assert_string_equal(fm_model_weight_format(m), "f32");
    assert_int_equal(fm_model_quantize(m), FM_OK);
    assert_string_equal(fm_model_weight_format(m), "q8_0");
    int quantized = 0;
    for (int ti = 0; ti < fm_model_num_tensors(m); ti++) {
        const fm_tensor_info *t = fm_model_tensor(m, ti);
        const float *w0 = before + t->offset, *w1 = fm_model_params(m) + t->offset;
        int conv = t->ndim == 2 && strstr(t->name, ".c_") != NULL, head = strcmp(t->name, "wte.weight") == 0;
        if (!conv && !head) { /* kept in float32, to the bit */
            assert_memory_equal(w0, w1, sizeof(float) * t->numel);
            continue;
        }
        quantized++;
        /* rows = outputs, blocks of 32 along the inputs: a Conv1D weight (in, out) transposed */
        int rows = conv ? t->shape[1] : t->shape[0], cols = conv ? t->shape[0] : t->shape[1];
        for (int o = 0; o < rows; o++)
            for (int b = 0; b * 32 < cols; b++) {
                float amax = 0;
                for (int i = b * 32; i < cols && i < b * 32 + 32; i++) {
                    size_t at = conv ? (size_t)i * rows + o : (size_t)o * cols + i;
                    amax = fmaxf(amax, fabsf(w0[at]));
                }
                double bound = amax / 127.0 / 2.0 * (1.0 + 1.0 / 1024.0) + 1e-12;
                for (int i = b * 32; i < cols && i < b * 32 + 32; i++) {
                    size_t at = conv ? (size_t)i * rows + o : (size_t)o * cols + i;
                    if (!(fabs((double)w1[at] - w0[at]) <= bound))
                        fail_msg("%s (%d, %d): %g quantized to %g, bound %g", t->name, o, i, w0[at], w1[at], bound);
                }
            }
    }
    assert_int_equal(quantized, 1 + 4 * cfg.n_layer);
    free(before);
    fm_model_free(m);
}

/* Session logits (T + 1, V): after each of T tokens fed one at a time, then after the T tokens
 * fed as one prompt. */
static float *session_logits(fm_model *m, const int *tokens, int T) {
    int V = cfg.vocab_size;
    float *out = malloc(sizeof(float) * (size_t)(T + 1) * V);
    fm_session *s;
    assert_int_equal(fm_session_init(&s, m, 2, T), FM_OK);
    const float *logits;
    for (int t = 0; t <= T; t++) {
        if (t < T) assert_int_equal(fm_session_feed(s, 0, &tokens[t], 1, &logits), FM_OK);
        else assert_int_equal(fm_session_feed(s, 1, tokens, T, &logits), FM_OK); /* the whole prompt */
        memcpy(out + (size_t)t * V, logits, sizeof(float) * V);
    }
    fm_session_free(s);
    return out;
}

/* The session's logits against the float forward's (want_all: (T, V) from fm_model_forward),
 * logit `doubled` (or none: -1) at twice its forward value. With bf16_too, the session runs
 * again with bfloat16 products switched on (fm_set_matmul_precision(FM_MATMUL_BF16), really) and
 * must give the same bits: an int8 model's session multiplies the Q8_0 blocks in any mode. The
 * precision in force before is restored. */
static void compare_session(fm_model *m, const int *tokens, int T, const float *want_all, int doubled,
                            int bf16_too, double tol) {
    int V = cfg.vocab_size;
    float *got = session_logits(m, tokens, T), *got_bf16 = NULL;
    if (bf16_too) {
        fm_matmul_precision before = fm_get_matmul_precision();
        fm_set_matmul_precision(FM_MATMUL_BF16);
        assert_int_equal(fm_get_matmul_precision(), FM_MATMUL_BF16);
        got_bf16 = session_logits(m, tokens, T);
        fm_set_matmul_precision(before);
        if (memcmp(got, got_bf16, sizeof(float) * (size_t)(T + 1) * V) != 0)
            fail_msg("the int8 session's logits change with fm_set_matmul_precision(FM_MATMUL_BF16)");
    }
    for (int t = 0; t <= T; t++) {
        const float *want = want_all + (size_t)(t < T ? t : T - 1) * V, *logits = got + (size_t)t * V;
        double maxv = 0, err = 0;
        for (int v = 0; v < V; v++) maxv = fmax(maxv, fabs(want[v]));
        for (int v = 0; v < V; v++) {
            double w = v == doubled ? 2.0 * want[v] : want[v];
            err = fmax(err, fabs((double)logits[v] - w) / (v == doubled ? 2.0 : 1.0));
        }
        if (!(err <= tol * maxv))
            fail_msg("position %d%s: the session's logits differ by %g (largest logit %g)", t,
                     t == T ? " (prompt)" : "", err, maxv);
    }
    free(got);
    free(got_bf16);
}

/* A float model (no int8 blocks): the session's logits are the forward's, within float rounding. */
static void check_session_matches_forward(fm_model *m, const int *tokens, int T) {
    assert_null(m->quant);
    assert_int_equal(fm_model_forward(m, tokens, 1, T), FM_OK);
    size_t n = (size_t)T * cfg.vocab_size;
    float *want = malloc(sizeof(float) * n);
    memcpy(want, fm_model_logits(m), sizeof(float) * n);
    compare_session(m, tokens, T, want, -1, 0, FLOAT_TOL);
    free(want);
}

/* A quantized model: the session's products must run on the Q8_0 blocks. Its logits equal the
 * float forward's on the dequantized weights within float rounding (same sums, another order);
 * and, since that alone would pass if the session multiplied the float copies, the two are made
 * to disagree before the session runs: the float copies of every quantized Conv1D weight are
 * zeroed (the float forward then changes beyond recognition: checked) and the scales of one
 * vocabulary row of wte's blocks are doubled (through the int8 head that row's logit doubles;
 * the float forward does not see it: checked). The session must follow the blocks. Both are
 * restored after (doubling a scale is exact). */
static void check_session_runs_int8(fm_model *m, const int *tokens, int T) {
    int V = cfg.vocab_size;
    struct fm_quant *q = m->quant;
    assert_non_null(q);
    assert_string_equal(fm_model_weight_format(m), "q8_0");
    assert_int_equal(fm_model_forward(m, tokens, 1, T), FM_OK);
    size_t n = (size_t)T * V;
    float *want = malloc(sizeof(float) * n);
    memcpy(want, fm_model_logits(m), sizeof(float) * n);

    /* the vocabulary row to double: not fed (so that wte's embedding rows stay as they were), and
     * of those the one whose logit is largest somewhere, so that doubling it stands out */
    int row = -1;
    double row_size = -1;
    for (int v = 0; v < V; v++) {
        int fed = 0;
        for (int t = 0; t < T; t++) fed |= tokens[t] == v;
        double size = 0;
        for (int t = 0; t < T && !fed; t++) size = fmax(size, fabs(want[(size_t)t * V + v]));
        if (!fed && size > row_size) row = v, row_size = size;
    }
    assert_true(row >= 0);
    fm_q8_matrix *head = NULL;
    float **saved = calloc(q->n, sizeof *saved);
    for (int k = 0; k < q->n; k++) {
        const fm_tensor_info *t = fm_model_tensor(m, q->mats[k].tensor);
        if (strcmp(t->name, "wte.weight") == 0) {
            head = &q->mats[k];
            continue;
        }
        saved[k] = malloc(sizeof(float) * t->numel);
        memcpy(saved[k], t->data, sizeof(float) * t->numel);
        memset(t->data, 0, sizeof(float) * t->numel);
    }
    assert_non_null(head);
    assert_int_equal(head->rows, V);
    for (int b = 0; b < head->blocks; b++) head->d[(size_t)row * head->blocks + b] *= 2.0f;

    /* the float path now gives other logits, and the doubled row's unchanged */
    assert_int_equal(fm_model_forward(m, tokens, 1, T), FM_OK);
    double maxv = 0, moved = 0, row_moved = 0;
    for (size_t i = 0; i < n; i++) {
        maxv = fmax(maxv, fabs(want[i]));
        moved = fmax(moved, fabs((double)fm_model_logits(m)[i] - want[i]));
    }
    assert_true(moved > 0.1 * maxv);
    compare_session(m, tokens, T, want, row, 1, INT8_TOL);
    for (int t = 0; t < T; t++) row_moved = fmax(row_moved, fabs(want[(size_t)t * V + row]));
    assert_true(row_moved > 10 * INT8_TOL * maxv); /* doubling that row's logit is visible */

    for (int b = 0; b < head->blocks; b++) head->d[(size_t)row * head->blocks + b] *= 0.5f;
    for (int k = 0; k < q->n; k++)
        if (saved[k]) {
            const fm_tensor_info *t = fm_model_tensor(m, q->mats[k].tensor);
            memcpy(t->data, saved[k], sizeof(float) * t->numel);
            free(saved[k]);
        }
    free(saved);
    free(want);
}

static void test_session_on_int8(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 12), FM_OK);
    assert_int_equal(fm_model_quantize(m), FM_OK);
    int tokens[20];
    for (int i = 0; i < 20; i++) tokens[i] = (i * 29 + 3) % cfg.vocab_size;
    check_session_runs_int8(m, tokens, 20);
    fm_model_free(m);
}

static void test_save_load_round_trip(void **state) {
    (void)state;
    fm_model *m, *back;
    assert_int_equal(fm_model_init(&m, &cfg, 13), FM_OK);
    assert_int_equal(fm_model_quantize(m), FM_OK);
    char *dir = make_temp_dir();
    assert_int_equal(fm_model_save(m, dir), FM_OK);
    assert_int_equal(fm_model_load(&back, dir), FM_OK);
    assert_string_equal(fm_model_weight_format(back), "q8_0");
    assert_memory_equal(fm_model_params(m), fm_model_params(back), sizeof(float) * fm_model_num_params(m));
    const struct fm_quant *a = m->quant, *b = back->quant;
    assert_int_equal(a->n, b->n);
    for (int k = 0; k < a->n; k++) {
        const fm_q8_matrix *x = &a->mats[k], *y = &b->mats[k];
        assert_int_equal(x->rows, y->rows);
        assert_memory_equal(x->q, y->q, (size_t)x->rows * x->blocks * 32);
        assert_memory_equal(x->d, y->d, sizeof(float) * x->rows * x->blocks);
    }
    int tokens[9] = {1, 5, 9, 2, 66, 0, 3, 3, 7};
    check_session_runs_int8(back, tokens, 9);
    /* three times smaller than float32 on disk (wpe and the vectors stay float32) */
    char *path = test_path(dir, "model.safetensors");
    size_t q8_size, f32_size;
    free(read_file_bytes(path, &q8_size));
    fm_model *plain;
    assert_int_equal(fm_model_init(&plain, &cfg, 13), FM_OK);
    assert_int_equal(fm_model_save(plain, dir), FM_OK);
    free(read_file_bytes(path, &f32_size));
    assert_true(q8_size * 2 < f32_size);
    free(path);
    remove_dir_recursive(dir);
    free(dir);
    fm_model_free(plain);
    fm_model_free(back);
    fm_model_free(m);
}

/* A q8 file missing one scale is refused with a message naming it; nothing is loaded. */
static void test_missing_scale_refused(void **state) {
    (void)state;
    fm_model *m, *back = NULL;
    assert_int_equal(fm_model_init(&m, &cfg, 14), FM_OK);
    assert_int_equal(fm_model_quantize(m), FM_OK);
    char *dir = make_temp_dir(), *path = test_path(dir, "model.safetensors");
    assert_int_equal(fm_model_save(m, dir), FM_OK);
    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    fm_st_entry *e = calloc(st.n_tensors, sizeof *e);
    int n = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const fm_st_tensor *t = &st.tensors[i];
        if (strcmp(t->name, "h.1.mlp.c_fc.weight.scale") == 0) continue;
        e[n] = (fm_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    char *other = test_path(dir, "copy.safetensors");
    const char *keys[] = {"fm_weights"}, *values[] = {"q8_0"};
    assert_int_equal(fm_st_write(other, e, n, keys, values, 1), FM_OK);
    fm_st_close(&st);
    assert_int_equal(rename(other, path), 0);
    assert_int_equal(fm_model_load(&back, dir), FM_ERR_MISMATCH);
    assert_null(back);
    assert_non_null(strstr(fm_last_error(), "missing tensor 'h.1.mlp.c_fc.weight.scale'"));
    free(e), free(other), free(path);
    remove_dir_recursive(dir);
    free(dir);
    fm_model_free(m);
}

/* A quantized model's batched decoding: four prompts (lengths 1, 3, 9, 30 > the session's 24
 * positions) through fm_generate in sessions of 4 and of 2 sequences give, token for token and
 * log-prob for log-prob (bitwise), what each gets alone; greedy and seeded, 40 tokens (sliding),
 * at width 40 and at width 128 (MLP 512: 16 blocks a row). */
static void check_int8_batched(const fm_config *c, uint64_t seed) {
    fm_model *m;
    assert_int_equal(fm_model_init(&m, c, seed), FM_OK);
    for (int i = 0; i < fm_model_num_tensors(m); i++) { /* peaked logits: choices not on a knife edge */
        const fm_tensor_info *t = fm_model_tensor(m, i);
        if (t->ndim == 2)
            for (size_t k = 0; k < t->numel; k++) t->data[k] *= 8.0f;
    }
    assert_int_equal(fm_model_quantize(m), FM_OK);
    int store[4][30], lens[4] = {1, 3, 9, 30};
    const int *prompts[4];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < lens[i]; j++) store[i][j] = (j * 29 + i * 17 + 3) % c->vocab_size;
        prompts[i] = store[i];
    }
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.max_tokens = 40;
    for (int mode = 0; mode < 2; mode++) {
        gc.sampler.temperature = mode ? 0.9f : 0.0f;
        gc.sampler.top_k = mode ? 20 : 0;
        gc.seed = 7;
        fm_generate_result alone[4], batched[4];
        for (int i = 0; i < 4; i++) {
            fm_session *s;
            assert_int_equal(fm_session_init(&s, m, 1, 24), FM_OK);
            assert_int_equal(fm_generate(s, &gc, &prompts[i], &lens[i], 1, NULL, NULL, &alone[i]), FM_OK);
            assert_int_equal(alone[i].n_tokens, 40);
            fm_session_free(s);
        }
        for (int seqs = 4; seqs >= 2; seqs -= 2) {
            fm_session *s;
            assert_int_equal(fm_session_init(&s, m, seqs, 24), FM_OK);
            assert_int_equal(fm_generate(s, &gc, prompts, lens, 4, NULL, NULL, batched), FM_OK);
            for (int i = 0; i < 4; i++) {
                assert_int_equal(batched[i].n_tokens, alone[i].n_tokens);
                for (int t = 0; t < alone[i].n_tokens; t++)
                    if (batched[i].tokens[t] != alone[i].tokens[t] ||
                        memcmp(&batched[i].logprobs[t], &alone[i].logprobs[t], sizeof(float)) != 0)
                        fail_msg("width %d, %d at once, prompt %d, token %d: %d (%.9g), alone %d (%.9g)", c->n_embd,
                                 seqs, i, t, batched[i].tokens[t], batched[i].logprobs[t], alone[i].tokens[t],
                                 alone[i].logprobs[t]);
                fm_generate_result_free(&batched[i]);
            }
            fm_session_free(s);
        }
        for (int i = 0; i < 4; i++) fm_generate_result_free(&alone[i]);
    }
    fm_model_free(m);
}

static void test_int8_batched_equals_alone(void **state) {
    (void)state;
    check_int8_batched(&cfg, 16);
    fm_config wide = cfg;
    wide.n_embd = 128, wide.n_head = 4, wide.vocab_size = 300;
    check_int8_batched(&wide, 17);
}

/* A backward (training) drops the int8 copy, which would go stale; the float weights stay. */
static void test_training_returns_to_float(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 15), FM_OK);
    assert_int_equal(fm_model_quantize(m), FM_OK);
    int tokens[6] = {1, 2, 3, 4, 5, 6}, targets[6] = {2, 3, 4, 5, 6, 7};
    float loss;
    fm_model_zero_grad(m);
    assert_int_equal(fm_model_train_loss(m, tokens, targets, NULL, 1, 6, &loss), FM_OK);
    assert_string_equal(fm_model_weight_format(m), "f32");
    check_session_matches_forward(m, tokens, 6);
    fm_model_free(m);
}

int main(void) {
    fm_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_bound),
        cmocka_unit_test(test_session_on_int8),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_missing_scale_refused),
        cmocka_unit_test(test_int8_batched_equals_alone),
        cmocka_unit_test(test_training_returns_to_float),
    };
    return cmocka_run_group_tests_name("int8 weights", tests, NULL, NULL);
}
