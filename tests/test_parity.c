/*
 * test_parity.c — fm against PyTorch: logits, hidden states, loss, every gradient, and ten
 * AdamW steps (warm-up, cosine decay, clipping, both weight-decay groups): each step's loss,
 * gradient norm and learning rate, then every parameter and both moments after the ten steps.
 *
 * The reference (reference.safetensors beside the model it was computed from) is made by
 * tests/torch/gpt2_reference.py. `make test` reads the committed tests/ref/tiny (2 layers,
 * width 48, 3 heads, vocabulary 97); `make test-torch` regenerates it into FM_PARITY_DIR.
 * Tolerances (the issue's): loss 1e-5; logits, hidden and gradients 1e-4 of the tensor's
 * largest magnitude; the ten losses 1e-4; and the parameters and moments after them, 1e-4 of the
 * tensor's largest magnitude (measured: 6e-6 at most). Float32 sums in a different order than
 * PyTorch's differ by ~1e-6 relative, so these bounds catch any real error with a wide margin.
 * The ten losses alone would miss the last update (each loss is taken before its step's update)
 * and anything in the moments that has not yet moved a loss.
 */
#include "test_util.h"

#include <math.h>

#include "core/internal.h"
#include "train/optim.h"

typedef struct {
    char *dir;
    fm_model *model;
    fm_safetensors ref;
    int S, B, T;
    int *tokens, *targets; /* (S, B, T) */
    float *mask;           /* (S, B, T) */
} parity;

static float *ref_f32(parity *p, const char *name, size_t expect_numel) {
    const fm_st_tensor *t = fm_st_find(&p->ref, name);
    if (!t) fail_msg("reference lacks tensor '%s'", name);
    if (expect_numel && t->numel != expect_numel)
        fail_msg("reference tensor '%s' has %zu elements, expected %zu", name, t->numel, expect_numel);
    float *out = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    assert_int_equal(fm_st_read_f32(&p->ref, t, out), FM_OK);
    return out;
}

static double meta_number(parity *p, const char *key) {
    const char *v = fm_st_meta(&p->ref, key);
    if (!v) fail_msg("reference metadata lacks '%s'", key);
    return strtod(v, NULL);
}

static int setup(void **state) {
    parity *p = calloc(1, sizeof *p);
    const char *env = getenv("FM_PARITY_DIR");
    p->dir = strdup(env && *env ? env : "tests/ref/tiny");
    fm_set_threads(2);
    if (fm_model_load(&p->model, p->dir) != FM_OK) fail_msg("loading %s: %s", p->dir, fm_last_error());
    char *path = test_path(p->dir, "reference.safetensors");
    if (fm_st_open(&p->ref, path) != FM_OK) fail_msg("%s", fm_last_error());
    free(path);
    p->S = (int)meta_number(p, "steps");
    p->B = (int)meta_number(p, "batch");
    p->T = (int)meta_number(p, "seq");
    size_t n = (size_t)p->S * p->B * p->T;
    const fm_st_tensor *tok = fm_st_find(&p->ref, "tokens"), *tgt = fm_st_find(&p->ref, "targets");
    assert_non_null(tok);
    assert_non_null(tgt);
    assert_int_equal(tok->numel, n);
    p->tokens = malloc(sizeof(int) * n);
    p->targets = malloc(sizeof(int) * n);
    assert_int_equal(fm_st_read_i32(&p->ref, tok, p->tokens), FM_OK);
    assert_int_equal(fm_st_read_i32(&p->ref, tgt, p->targets), FM_OK);
    p->mask = ref_f32(p, "mask", n);
    *state = p;
    return 0;
}

static int teardown(void **state) {
    parity *p = *state;
    fm_model_free(p->model);
    fm_st_close(&p->ref);
    free(p->tokens);
    free(p->targets);
    free(p->mask);
    free(p->dir);
    free(p);
    return 0;
}

static double worst_seen; /* largest relative error passed, reported once per test */

/* max |got - want| relative to max |want|; prints the worst when over tol. */
static void assert_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    double max_ref = 0, max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) max_err = e, worst = i;
    }
    double rel = max_ref > 0 ? max_err / max_ref : max_err;
    if (rel > worst_seen) worst_seen = rel;
    if (!(rel <= tol))
        fail_msg("%s: error %.3g of the largest magnitude %.3g (tolerance %.0e), worst at %zu: %g vs %g",
                 what, rel, max_ref, tol, worst, got[worst], want[worst]);
}

/* The committed model is what `fm init --seed 1337` writes: initialisation is reproducible. */
static void test_init_matches_saved_weights(void **state) {
    parity *p = *state;
    fm_model *fresh = NULL;
    assert_int_equal(fm_model_init(&fresh, fm_model_config(p->model), 1337), FM_OK);
    assert_memory_equal(fm_model_params(fresh), fm_model_params(p->model),
                        sizeof(float) * fm_model_num_params(fresh));
    fm_model_free(fresh);
}

static void test_forward_and_loss(void **state) {
    parity *p = *state;
    const fm_config *c = fm_model_config(p->model);
    size_t BT = (size_t)p->B * p->T;
    assert_int_equal(fm_model_forward(p->model, p->tokens, p->B, p->T), FM_OK);
    worst_seen = 0;
    float *logits = ref_f32(p, "logits", BT * c->vocab_size), *hidden = ref_f32(p, "hidden", BT * c->n_embd);
    assert_close("logits", fm_model_logits(p->model), logits, BT * c->vocab_size, 1e-4);
    assert_close("hidden", fm_model_hidden(p->model), hidden, BT * c->n_embd, 1e-4);
    float loss, *want = ref_f32(p, "loss", 1);
    assert_int_equal(fm_cross_entropy(fm_model_logits(p->model), p->targets, p->mask, (int)BT,
                                      c->vocab_size, &loss, NULL), FM_OK);
    print_message("logits and hidden: largest relative error %.2e; loss %.7f vs %.7f\n", worst_seen,
                  loss, want[0]);
    if (!(fabs(loss - want[0]) <= 1e-5)) fail_msg("loss %.7f, PyTorch %.7f", loss, want[0]);
    free(logits);
    free(hidden);
    free(want);
}

/* Every parameter's gradient against the reference tensors "<prefix><name>". */
static void check_grads(parity *p, const char *prefix) {
    for (int i = 0; i < fm_model_num_tensors(p->model); i++) {
        const fm_tensor_info *t = fm_model_tensor(p->model, i);
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        float *want = ref_f32(p, name, t->numel);
        assert_close(name, fm_model_grads(p->model) + t->offset, want, t->numel, 1e-4);
        free(want);
    }
}

static void test_cross_entropy_gradients(void **state) {
    parity *p = *state;
    float loss;
    fm_model_zero_grad(p->model);
    assert_int_equal(fm_model_train_loss(p->model, p->tokens, p->targets, p->mask, p->B, p->T, &loss), FM_OK);
    worst_seen = 0;
    check_grads(p, "grad.");
    print_message("largest relative gradient error: %.2e\n", worst_seen);
}

/* Backward from the final hidden states alone: objective sum(hidden * R). */
static void test_hidden_state_gradients(void **state) {
    parity *p = *state;
    const fm_config *c = fm_model_config(p->model);
    float *R = ref_f32(p, "hidden_weights", (size_t)p->B * p->T * c->n_embd);
    fm_model_zero_grad(p->model);
    assert_int_equal(fm_model_forward(p->model, p->tokens, p->B, p->T), FM_OK);
    assert_int_equal(fm_model_backward(p->model, NULL, R), FM_OK);
    worst_seen = 0;
    check_grads(p, "hgrad.");
    print_message("largest relative gradient error: %.2e\n", worst_seen);
    free(R);
}

static void test_adamw_ten_steps(void **state) {
    parity *p = *state;
    fm_model *m = NULL;
    assert_int_equal(fm_model_load(&m, p->dir), FM_OK); /* fresh initial weights */
    fm_adamw_config cfg = {
        .lr = (float)meta_number(p, "lr"), .min_lr = (float)meta_number(p, "min_lr"),
        .warmup_steps = (int)meta_number(p, "warmup_steps"), .total_steps = (int)meta_number(p, "total_steps"),
        .beta1 = (float)meta_number(p, "beta1"), .beta2 = (float)meta_number(p, "beta2"),
        .eps = (float)meta_number(p, "eps"), .weight_decay = (float)meta_number(p, "weight_decay"),
        .grad_clip = (float)meta_number(p, "grad_clip")};
    fm_optimizer *opt = NULL;
    assert_int_equal(fm_optimizer_init(&opt, m, &cfg), FM_OK);
    float *losses = ref_f32(p, "losses", p->S), *norms = ref_f32(p, "grad_norms", p->S);
    float *lrs = ref_f32(p, "lrs", p->S);
    int clipped = 0;
    worst_seen = 0;
    size_t BT = (size_t)p->B * p->T;
    for (int s = 0; s < p->S; s++) {
        float loss, norm, lr;
        fm_model_zero_grad(m);
        assert_int_equal(fm_model_train_loss(m, p->tokens + s * BT, p->targets + s * BT, p->mask + s * BT,
                                             p->B, p->T, &loss), FM_OK);
        assert_int_equal(fm_optimizer_step(opt, m, &norm, &lr), FM_OK);
        if (!(fabs(loss - losses[s]) <= 1e-4)) fail_msg("step %d: loss %.7f, PyTorch %.7f", s, loss, losses[s]);
        if (!(fabs(norm - norms[s]) <= 1e-4 * norms[s]))
            fail_msg("step %d: gradient norm %.7f, PyTorch %.7f", s, norm, norms[s]);
        if (!(fabs(lr - lrs[s]) <= 1e-6 * lrs[s])) fail_msg("step %d: lr %.9g, PyTorch %.9g", s, lr, lrs[s]);
        clipped += norm > cfg.grad_clip;
        if (fabs(loss - losses[s]) > worst_seen) worst_seen = fabs(loss - losses[s]);
    }
    print_message("largest loss difference over %d steps: %.2e\n", p->S, worst_seen);
    assert_true(clipped > 0); /* the reference exercises clipping */

    /* Where the steps leave every parameter and both moments of every tensor, 1e-4 of each
     * tensor's largest magnitude. One exception, for the parameters alone: the key third of each
     * attn.c_attn.bias. Its gradient is zero in exact arithmetic (q . (k + b) adds q . b to all of
     * a query's scores, which the softmax ignores), so both sides see rounding noise (~1e-11) that
     * AdamW divides by its own square root: updates of about lr in directions no one can
     * reproduce. Those elements are taken from the reference, after checking that they are
     * noise on both sides (second moments below 1e-18, against 1e-11 and more elsewhere). */
    assert_int_equal(opt->n_slots, fm_model_num_tensors(m));
    const int C = fm_model_config(m)->n_embd;
    double worst[3] = {0, 0, 0};
    for (int k = 0; k < opt->n_slots; k++) {
        const fm_tensor_info *t = fm_model_tensor(m, opt->slots[k].tensor);
        float *got[3] = {t->data, opt->slots[k].m, opt->slots[k].v};
        static const char *const prefix[3] = {"final.", "adam.m.", "adam.v."};
        float *want[3];
        for (int j = 0; j < 3; j++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", prefix[j], t->name);
            want[j] = ref_f32(p, name, t->numel);
        }
        float *params = malloc(sizeof(float) * t->numel);
        memcpy(params, got[0], sizeof(float) * t->numel);
        const char *suffix = strstr(t->name, "attn.c_attn.bias");
        if (suffix && suffix[strlen("attn.c_attn.bias")] == '\0') {
            for (int i = C; i < 2 * C; i++) {
                if (!(want[2][i] < 1e-18f && got[2][i] < 1e-18f))
                    fail_msg("%s[%d]: second moment %g (PyTorch %g) is not rounding noise", t->name, i, got[2][i],
                             want[2][i]);
                params[i] = want[0][i];
            }
        }
        for (int j = 0; j < 3; j++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", prefix[j], t->name);
            worst_seen = 0;
            assert_close(name, j == 0 ? params : got[j], want[j], t->numel, 1e-4);
            if (worst_seen > worst[j]) worst[j] = worst_seen;
            free(want[j]);
        }
        free(params);
    }
    print_message("after %d steps, largest relative error: parameters %.2e, first moments %.2e, second "
                  "moments %.2e\n", p->S, worst[0], worst[1], worst[2]);
    free(losses);
    free(norms);
    free(lrs);
    fm_optimizer_free(opt);
    fm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_matches_saved_weights),
        cmocka_unit_test(test_forward_and_loss),
        cmocka_unit_test(test_cross_entropy_gradients),
        cmocka_unit_test(test_hidden_state_gradients),
        cmocka_unit_test(test_adamw_ten_steps),
    };
    return cmocka_run_group_tests_name("parity with PyTorch", tests, setup, teardown);
}
