/*
 * test_quant.c — int8 (Q8_0) weights: the quantization error bound, the decoder on int8 blocks
 * against the float forward of the same (dequantized) model, the file round trip, a broken
 * file's message, and a backward returning the model to float32.
 *
 * Bounds: Q8_0 rounds each weight to the nearest multiple of its block's scale d = max|w| / 127
 * (d itself rounded to float16, within 2^-11 relative), so |w - d q| <= d / 2 (1 + 2^-10).
 * The int8 products and the float products with the dequantized weights compute the same sums
 * in a different order: they agree to float rounding, 1e-4 of the largest logit leaves room.
 */
#include "test_util.h"

#include <math.h>

#include "core/internal.h"
#include "model/model.h"
#include "model/quant.h"

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

/* Decoder logits after each of T tokens (int8 products) against the forward's (float). */
static void check_decoder_matches_forward(fm_model *m, const int *tokens, int T) {
    int V = cfg.vocab_size;
    assert_int_equal(fm_model_forward(m, tokens, 1, T), FM_OK);
    fm_decoder *d;
    assert_int_equal(fm_decoder_init(&d, m, T), FM_OK);
    for (int t = 0; t < T; t++) {
        const float *logits, *want = fm_model_logits(m) + (size_t)t * V;
        assert_int_equal(fm_decoder_feed(d, &tokens[t], 1, &logits), FM_OK);
        double maxv = 0, err = 0;
        for (int v = 0; v < V; v++) {
            maxv = fmax(maxv, fabs(want[v]));
            err = fmax(err, fabs((double)logits[v] - want[v]));
        }
        if (!(err <= 1e-4 * maxv)) fail_msg("position %d: int8 decoder differs by %g (largest logit %g)", t, err, maxv);
    }
    fm_decoder_free(d);
}

static void test_decoder_on_int8(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 12), FM_OK);
    assert_int_equal(fm_model_quantize(m), FM_OK);
    int tokens[20];
    for (int i = 0; i < 20; i++) tokens[i] = (i * 29 + 3) % cfg.vocab_size;
    check_decoder_matches_forward(m, tokens, 20);
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
    check_decoder_matches_forward(back, tokens, 9);
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
    check_decoder_matches_forward(m, tokens, 6);
    fm_model_free(m);
}

int main(void) {
    fm_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_bound),
        cmocka_unit_test(test_decoder_on_int8),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_missing_scale_refused),
        cmocka_unit_test(test_training_returns_to_float),
    };
    return cmocka_run_group_tests_name("int8 weights", tests, NULL, NULL);
}
