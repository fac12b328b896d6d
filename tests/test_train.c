/*
 * test_train.c — training as a whole: exact resume from a checkpoint, independence from the
 * thread count, the learning-rate schedule, clipping, weight-decay groups, argument checks,
 * and that a small model actually learns.
 */
#include "test_util.h"

#include <math.h>

static const fm_config small_cfg = {.n_layer = 2, .n_head = 2, .n_embd = 24, .vocab_size = 53,
                                    .n_positions = 20, .n_inner = 0, .layer_norm_epsilon = 1e-5f};

static fm_adamw_config train_cfg(int total) {
    fm_adamw_config c;
    fm_adamw_config_default(&c);
    c.lr = 1e-2f;
    c.min_lr = 1e-3f;
    c.warmup_steps = 4;
    c.total_steps = total;
    c.grad_clip = 0.5f;
    return c;
}

/* One training step on a batch drawn from the trainer's own RNG (saved in the state), so a
 * resumed run must restore the RNG and the data position to see the same batches. */
static float train_step(fm_model *m, fm_optimizer *opt, fm_train_state *st, int B, int T) {
    int V = fm_model_config(m)->vocab_size, n = B * T;
    int *tokens = malloc(sizeof(int) * n), *targets = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) {
        tokens[i] = (int)(fm_rng_u64(&st->rng) % V);
        targets[i] = (tokens[i] * 7 + 3) % V; /* a learnable rule */
    }
    float loss;
    fm_model_zero_grad(m);
    assert_int_equal(fm_model_train_loss(m, tokens, targets, NULL, B, T, &loss), FM_OK);
    assert_int_equal(fm_optimizer_step(opt, m, NULL, NULL), FM_OK);
    st->data_position += (uint64_t)n;
    free(tokens);
    free(targets);
    return loss;
}

static void start(fm_model **m, fm_optimizer **opt, fm_train_state *st, const fm_config *cfg, int total) {
    fm_adamw_config c = train_cfg(total);
    assert_int_equal(fm_model_init(m, cfg, 7), FM_OK);
    assert_int_equal(fm_optimizer_init(opt, *m, &c), FM_OK);
    st->seed = 99;
    st->data_position = 0;
    fm_rng_seed(&st->rng, st->seed);
}

/* 20 steps straight equal 10 steps, save, load, 10 steps, to the bit. */
static void test_exact_resume(void **state) {
    (void)state;
    fm_set_threads(2);
    fm_model *a, *b, *c;
    fm_optimizer *oa, *ob, *oc;
    fm_train_state sa, sb, sc;
    float straight[20], resumed[20];
    start(&a, &oa, &sa, &small_cfg, 20);
    for (int s = 0; s < 20; s++) straight[s] = train_step(a, oa, &sa, 3, 11);

    start(&b, &ob, &sb, &small_cfg, 20);
    for (int s = 0; s < 10; s++) resumed[s] = train_step(b, ob, &sb, 3, 11);
    char *dir = make_temp_dir();
    assert_int_equal(fm_checkpoint_save(dir, b, ob, &sb), FM_OK);
    fm_model_free(b);
    fm_optimizer_free(ob);
    assert_int_equal(fm_checkpoint_load(dir, &c, &oc, &sc), FM_OK);
    assert_int_equal(fm_optimizer_steps_done(oc), 10);
    assert_int_equal(sc.data_position, 10 * 3 * 11);
    for (int s = 10; s < 20; s++) resumed[s] = train_step(c, oc, &sc, 3, 11);

    assert_memory_equal(straight, resumed, sizeof straight);
    assert_memory_equal(fm_model_params(a), fm_model_params(c), sizeof(float) * fm_model_num_params(a));
    assert_true(straight[19] < straight[0]);
    remove_dir_recursive(dir);
    free(dir);
    fm_model_free(a), fm_model_free(c), fm_optimizer_free(oa), fm_optimizer_free(oc);
}

/* 1 and 2 threads: the issue asks for losses within 1e-5 relative; fm's kernels split work
 * by output element, so the runs are in fact bitwise equal, which is asserted too. */
static void test_threads_do_not_change_results(void **state) {
    (void)state;
    fm_config cfg = small_cfg;
    cfg.n_embd = 72, cfg.n_head = 3, cfg.vocab_size = 300, cfg.n_positions = 40; /* head size 24 */
    float losses[2][6];
    float *params[2];
    for (int run = 0; run < 2; run++) {
        fm_set_threads(run + 1);
        assert_int_equal(fm_get_threads(), run + 1);
        fm_model *m;
        fm_optimizer *o;
        fm_train_state st;
        start(&m, &o, &st, &cfg, 6);
        for (int s = 0; s < 6; s++) losses[run][s] = train_step(m, o, &st, 4, 33);
        params[run] = malloc(sizeof(float) * fm_model_num_params(m));
        memcpy(params[run], fm_model_params(m), sizeof(float) * fm_model_num_params(m));
        if (run == 1) {
            for (size_t i = 0; i < fm_model_num_params(m); i++)
                if (params[0][i] != params[1][i]) fail_msg("parameter %zu differs between 1 and 2 threads", i);
        }
        fm_model_free(m);
        fm_optimizer_free(o);
    }
    for (int s = 0; s < 6; s++) {
        if (!(fabsf(losses[0][s] - losses[1][s]) <= 1e-5f * fabsf(losses[0][s])))
            fail_msg("step %d: loss %.7f with 1 thread, %.7f with 2", s, losses[0][s], losses[1][s]);
        assert_true(losses[0][s] == losses[1][s]);
    }
    free(params[0]);
    free(params[1]);
    fm_set_threads(2);
}

/* bfloat16 products (fm_set_matmul_precision): still independent of the thread count to the
 * bit, losses within 1% of float32's over the first steps, and different from them (the
 * setting takes effect); the precision is reset for the other tests. */
static void test_bf16_training(void **state) {
    (void)state;
    fm_config cfg = small_cfg;
    cfg.n_embd = 72, cfg.n_head = 3, cfg.vocab_size = 300, cfg.n_positions = 40;
    float losses[3][8];
    for (int run = 0; run < 3; run++) { /* fp32 on 2 threads, bf16 on 1, bf16 on 2 */
        fm_set_matmul_precision(run == 0 ? FM_MATMUL_FP32 : FM_MATMUL_BF16);
        fm_set_threads(run == 1 ? 1 : 2);
        fm_model *m;
        fm_optimizer *o;
        fm_train_state st;
        start(&m, &o, &st, &cfg, 8);
        for (int s = 0; s < 8; s++) losses[run][s] = train_step(m, o, &st, 4, 33);
        fm_model_free(m);
        fm_optimizer_free(o);
    }
    fm_set_matmul_precision(FM_MATMUL_FP32);
    fm_set_threads(2);
    assert_memory_equal(losses[1], losses[2], sizeof losses[1]);
    int differ = 0;
    for (int s = 0; s < 8; s++) {
        if (!(fabsf(losses[1][s] - losses[0][s]) <= 1e-2f * losses[0][s]))
            fail_msg("step %d: bf16 loss %.6f vs fp32 %.6f", s, losses[1][s], losses[0][s]);
        differ |= losses[1][s] != losses[0][s];
    }
    assert_true(differ);
    assert_true(losses[1][7] < losses[1][0]);
}

static void test_learning_rate_schedule(void **state) {
    (void)state;
    fm_adamw_config c = train_cfg(14); /* lr 1e-2, min 1e-3, warm-up 4 */
    assert_float_equal(fm_lr_at(&c, 0), 2.5e-3, 1e-9);  /* (0 + 1) / 4 of the peak */
    assert_float_equal(fm_lr_at(&c, 3), 1e-2, 1e-9);    /* end of warm-up */
    assert_float_equal(fm_lr_at(&c, 4), 1e-2, 1e-9);    /* cosine starts at the peak */
    assert_float_equal(fm_lr_at(&c, 9), 5.5e-3, 1e-7);  /* half-way: the mean of peak and floor */
    assert_float_equal(fm_lr_at(&c, 14), 1e-3, 1e-9);   /* the floor, and after */
    assert_float_equal(fm_lr_at(&c, 1000), 1e-3, 1e-9);
    for (int s = 4; s < 14; s++) assert_true(fm_lr_at(&c, s + 1) <= fm_lr_at(&c, s));
    c.warmup_steps = 0;
    assert_float_equal(fm_lr_at(&c, 0), 1e-2, 1e-9);
}

/* With zero gradients, AdamW changes only the decayed (2-D) tensors: p *= 1 - lr * wd. */
static void test_weight_decay_groups(void **state) {
    (void)state;
    fm_model *m;
    fm_optimizer *o;
    fm_adamw_config c = train_cfg(10);
    c.warmup_steps = 0;
    c.weight_decay = 0.5f;
    assert_int_equal(fm_model_init(&m, &small_cfg, 3), FM_OK);
    assert_int_equal(fm_optimizer_init(&o, m, &c), FM_OK);
    size_t n = fm_model_num_params(m);
    float *before = malloc(sizeof(float) * n);
    memcpy(before, fm_model_params(m), sizeof(float) * n);
    fm_model_zero_grad(m);
    float norm, lr;
    assert_int_equal(fm_optimizer_step(o, m, &norm, &lr), FM_OK);
    assert_float_equal(norm, 0.0, 0.0);
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        assert_int_equal(t->decay, t->ndim == 2);
        for (size_t j = 0; j < t->numel; j++) {
            float want = t->decay ? before[t->offset + j] * (1.0f - lr * c.weight_decay) : before[t->offset + j];
            assert_float_equal(fm_model_params(m)[t->offset + j], want, 1e-9);
        }
    }
    free(before);
    fm_model_free(m);
    fm_optimizer_free(o);
}

/* Clipping (torch.nn.utils.clip_grad_norm_: the gradient times grad_clip / (norm + 1e-6) when
 * that is below 1). AdamW's first step is scale-free, so a clipped first step looks unclipped:
 * here step 1's gradient (norm 0.25) is under the clip of 0.5 and step 2's (norm 5) ten times
 * over it, and the two parameters with a gradient must follow the clipped update computed here
 * in double (PyTorch's AdamW), about 1e-3 away from the unclipped one (asserted, so the check
 * bites). The reported norm is the one before clipping; a NaN norm skips the update. */
static void test_clipping_reports_norm(void **state) {
    (void)state;
    fm_model *m;
    fm_optimizer *o;
    fm_adamw_config c = train_cfg(10);
    assert_float_equal(c.grad_clip, 0.5, 0.0);
    assert_int_equal(fm_model_init(&m, &small_cfg, 3), FM_OK);
    assert_int_equal(fm_optimizer_init(&o, m, &c), FM_OK);
    assert_int_equal(fm_model_tensor(m, 0)->decay, 1); /* wte: g[0], g[1] below are its gradients */
    float *p = fm_model_params(m), *g = fm_model_grads(m);
    const double grads[2][2] = {{0.15, 0.2}, {3.0, 4.0}};
    double ref[2][2], mom[2][2] = {{0}}, vel[2][2] = {{0}}; /* [0]: clipped, [1]: never clipped */
    for (int k = 0; k < 2; k++) ref[k][0] = p[0], ref[k][1] = p[1];
    for (int s = 0; s < 2; s++) {
        fm_model_zero_grad(m);
        g[0] = (float)grads[s][0], g[1] = (float)grads[s][1];
        float norm, lr;
        assert_int_equal(fm_optimizer_step(o, m, &norm, &lr), FM_OK);
        double n = hypot(grads[s][0], grads[s][1]);
        assert_float_equal(norm, n, 1e-6);
        int t = s + 1;
        double bc1 = 1 - pow(c.beta1, t), bc2_sqrt = sqrt(1 - pow(c.beta2, t));
        for (int k = 0; k < 2; k++) {
            double coef = k == 0 ? fmin(1.0, c.grad_clip / (n + 1e-6)) : 1.0;
            for (int i = 0; i < 2; i++) {
                double gi = grads[s][i] * coef;
                mom[k][i] = c.beta1 * mom[k][i] + (1 - c.beta1) * gi;
                vel[k][i] = c.beta2 * vel[k][i] + (1 - c.beta2) * gi * gi;
                ref[k][i] = ref[k][i] * (1 - (double)lr * c.weight_decay) -
                            lr / bc1 * mom[k][i] / (sqrt(vel[k][i]) / bc2_sqrt + c.eps);
            }
        }
        for (int i = 0; i < 2; i++)
            if (!(fabs(p[i] - ref[0][i]) <= 1e-7))
                fail_msg("step %d (norm %g, clip %g): parameter %d is %.9g, the clipped update gives %.9g "
                         "(unclipped: %.9g)", t, n, c.grad_clip, i, p[i], ref[0][i], ref[1][i]);
    }
    for (int i = 0; i < 2; i++) assert_true(fabs(ref[0][i] - ref[1][i]) > 1e-4);
    g[0] = NAN;
    float norm;
    assert_int_equal(fm_optimizer_step(o, m, &norm, NULL), FM_ERR_NONFINITE);
    assert_non_null(strstr(fm_last_error(), "gradient norm"));
    assert_int_equal(fm_optimizer_steps_done(o), 2);
    fm_model_free(m);
    fm_optimizer_free(o);
}

static void test_bad_arguments(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &small_cfg, 1), FM_OK);
    int tokens[25] = {0};
    assert_int_equal(fm_model_backward(m, fm_model_dlogits(m), NULL), FM_ERR_ARG); /* no forward yet */
    assert_int_equal(fm_model_forward(m, tokens, 1, 21), FM_ERR_ARG);               /* context is 20 */
    assert_non_null(strstr(fm_last_error(), "context"));
    tokens[4] = 53;
    assert_int_equal(fm_model_forward(m, tokens, 1, 5), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "vocabulary"));
    tokens[4] = -1;
    assert_int_equal(fm_model_forward(m, tokens, 1, 5), FM_ERR_ARG);
    assert_int_equal(fm_model_forward(m, tokens, 0, 5), FM_ERR_ARG);
    tokens[4] = 0;
    assert_int_equal(fm_model_forward(m, tokens, 1, 5), FM_OK);
    assert_int_equal(fm_model_backward(m, NULL, NULL), FM_ERR_ARG);
    fm_model_free(m);

    fm_config bad = small_cfg;
    bad.n_head = 5; /* does not divide 24 */
    assert_int_equal(fm_model_init(&m, &bad, 1), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_last_error(), "n_head"));
    bad = small_cfg;
    bad.n_layer = 0;
    assert_int_equal(fm_model_init(&m, &bad, 1), FM_ERR_CONFIG);
    assert_null(m);

    fm_adamw_config c = train_cfg(10);
    fm_optimizer *o;
    assert_int_equal(fm_model_init(&m, &small_cfg, 1), FM_OK);
    c.warmup_steps = 20; /* more than total */
    assert_int_equal(fm_optimizer_init(&o, m, &c), FM_ERR_CONFIG);
    c = train_cfg(10);
    c.lr = -1;
    assert_int_equal(fm_optimizer_init(&o, m, &c), FM_ERR_CONFIG);
    fm_model_free(m);
}

/* Shapes change between calls (the arena is re-laid out) and results do not depend on it. */
static void test_shape_changes(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &small_cfg, 5), FM_OK);
    int tokens[2 * 20];
    for (int i = 0; i < 40; i++) tokens[i] = (i * 13) % 53;
    assert_int_equal(fm_model_forward(m, tokens, 2, 20), FM_OK);
    size_t V = 53;
    float *row = malloc(sizeof(float) * V * 20);
    memcpy(row, fm_model_logits(m) + 20 * V, sizeof(float) * V * 20); /* batch row 1 */
    assert_int_equal(fm_model_forward(m, tokens + 20, 1, 20), FM_OK);
    for (size_t i = 0; i < V * 20; i++) assert_float_equal(fm_model_logits(m)[i], row[i], 1e-6);
    /* causality: the first 7 positions do not depend on what follows them */
    assert_int_equal(fm_model_forward(m, tokens + 20, 1, 7), FM_OK);
    for (size_t i = 0; i < V * 7; i++) assert_float_equal(fm_model_logits(m)[i], row[i], 1e-6);
    free(row);
    fm_model_free(m);
}

/* The big buffers start on cache lines (src/memory.c): the products' tile stores then fill whole
 * lines (a 16-byte start cost the tied head 8% of its speed). Parameters, gradients and every
 * activation the public API hands out, for an odd batch so the arena's offsets are not round. */
static void test_buffers_on_cache_lines(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &small_cfg, 5), FM_OK);
    int tokens[3 * 7];
    for (int i = 0; i < 21; i++) tokens[i] = (i * 5) % 53;
    assert_int_equal(fm_model_forward(m, tokens, 3, 7), FM_OK);
    const void *bufs[] = {fm_model_params(m), fm_model_grads(m), fm_model_logits(m), fm_model_hidden(m),
                          fm_model_dlogits(m)};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        assert_non_null(bufs[i]);
        assert_int_equal((uintptr_t)bufs[i] % 64, 0);
    }
    fm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_resume),
        cmocka_unit_test(test_threads_do_not_change_results),
        cmocka_unit_test(test_bf16_training),
        cmocka_unit_test(test_learning_rate_schedule),
        cmocka_unit_test(test_weight_decay_groups),
        cmocka_unit_test(test_clipping_reports_norm),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_shape_changes),
        cmocka_unit_test(test_buffers_on_cache_lines),
    };
    return cmocka_run_group_tests_name("training", tests, NULL, NULL);
}
