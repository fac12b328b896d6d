/*
 * test_lora.c — LoRA adapters: parity with PyTorch, gradients, merging, PEFT files, sessions.
 *
 * The reference is tests/ref/lora, written by tests/torch/lora_reference.py: a 2-layer GPT-2
 * with head size 24 and vocabulary 300 (base/), a PEFT adapter of rank 4 on all four products
 * (adapter/), a batch with an uneven loss mask, and PyTorch's logits, masked loss, the adapters'
 * gradients and the merged weights of layer 0 (expected.safetensors).
 */
#include <math.h>

#include "core/internal.h"
#include "test_util.h"

#define REF "tests/ref/lora"

typedef struct {
    fm_model *base;
    fm_adapter *adapter;
    fm_safetensors batch, expected;
    int B, T;
    int *tokens, *targets;
    float *mask;
} fixture;

static float *ref_f32(const fm_safetensors *st, const char *name, size_t numel) {
    const fm_st_tensor *t = fm_st_find(st, name);
    if (!t) fail_msg("%s lacks tensor '%s'", st->path, name);
    if (numel && t->numel != numel) fail_msg("'%s' has %zu elements, expected %zu", name, t->numel, numel);
    float *out = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    assert_int_equal(fm_st_read_f32(st, t, out), FM_OK);
    return out;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    fm_set_threads(2);
    if (fm_model_load(&f->base, REF "/base") != FM_OK) fail_msg("%s", fm_last_error());
    if (fm_adapter_load(&f->adapter, REF "/adapter", f->base) != FM_OK) fail_msg("%s", fm_last_error());
    if (fm_st_open(&f->batch, REF "/batch.safetensors") != FM_OK) fail_msg("%s", fm_last_error());
    if (fm_st_open(&f->expected, REF "/expected.safetensors") != FM_OK) fail_msg("%s", fm_last_error());
    const fm_st_tensor *tok = fm_st_find(&f->batch, "tokens"), *tgt = fm_st_find(&f->batch, "targets");
    assert_non_null(tok);
    assert_non_null(tgt);
    f->B = (int)tok->shape[0];
    f->T = (int)tok->shape[1];
    f->tokens = malloc(sizeof(int) * tok->numel);
    f->targets = malloc(sizeof(int) * tok->numel);
    assert_int_equal(fm_st_read_i32(&f->batch, tok, f->tokens), FM_OK);
    assert_int_equal(fm_st_read_i32(&f->batch, tgt, f->targets), FM_OK);
    f->mask = ref_f32(&f->batch, "mask", tok->numel);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    fm_adapter_free(f->adapter);
    fm_model_free(f->base);
    fm_st_close(&f->batch);
    fm_st_close(&f->expected);
    free(f->tokens);
    free(f->targets);
    free(f->mask);
    free(f);
    return 0;
}

/* max |got - want| relative to max |want| within tol. */
static void assert_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    double max_ref = 0, max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) max_err = e, worst = i;
    }
    double rel = max_ref > 0 ? max_err / max_ref : max_err;
    if (!(rel <= tol))
        fail_msg("%s: error %.3g of the largest magnitude %.3g (tolerance %.0e), worst at %zu: %g vs %g", what, rel,
                 max_ref, tol, worst, got[worst], want[worst]);
}

static fm_model *load_base(void) {
    fm_model *m = NULL;
    if (fm_model_load(&m, REF "/base") != FM_OK) fail_msg("%s", fm_last_error());
    return m;
}

/* The model's masked cross-entropy on the fixture batch: forward, loss, and (with grads) backward. */
static float train_loss(fixture *f, fm_model *m, int backward) {
    const fm_config *c = fm_model_config(m);
    size_t N = (size_t)f->B * f->T;
    assert_int_equal(fm_model_forward(m, f->tokens, f->B, f->T), FM_OK);
    float loss = 0, *dlogits = backward ? fm_model_dlogits(m) : NULL;
    assert_int_equal(fm_cross_entropy(fm_model_logits(m), f->targets, f->mask, (int)N, c->vocab_size, &loss, dlogits),
                     FM_OK);
    if (backward) {
        fm_model_zero_grad(m);
        assert_int_equal(fm_model_backward(m, dlogits, NULL), FM_OK);
    }
    return loss;
}

/* Logits with the adapter, trained path and inference path, equal PyTorch's; so do the loss and
 * every adapter gradient. */
static void test_parity_with_torch(void **state) {
    fixture *f = *state;
    const fm_config *c = fm_model_config(f->base);
    size_t N = (size_t)f->B * f->T, V = c->vocab_size;
    float *want_logits = ref_f32(&f->expected, "logits", N * V);

    /* inference: a session on the base applying the loaded adapter */
    fm_model_use_adapter(f->base, f->adapter);
    fm_session *s = NULL;
    assert_int_equal(fm_session_init(&s, f->base, 1, c->n_positions), FM_OK);
    const float *logits = NULL;
    assert_int_equal(fm_session_forward(s, f->tokens, f->B, f->T, &logits), FM_OK);
    assert_close("session logits", logits, want_logits, N * V, 1e-4);
    /* decoding through the cache gives the same rows */
    for (int b = 0; b < f->B; b++) {
        fm_session_reset(s, 0);
        const float *row = NULL;
        assert_int_equal(fm_session_feed(s, 0, f->tokens + (size_t)b * f->T, f->T, &row), FM_OK);
        assert_close("fed logits", row, want_logits + ((size_t)b * f->T + f->T - 1) * V, V, 1e-4);
    }
    fm_session_free(s);
    fm_model_use_adapter(f->base, NULL);

    /* training: the adapter attached as the model's trainable LoRA */
    fm_model *m = load_base();
    assert_int_equal(fm_model_attach_adapter(m, f->adapter), FM_OK);
    float loss = train_loss(f, m, 1);
    assert_close("logits", fm_model_logits(m), want_logits, N * V, 1e-4);
    float *want_loss = ref_f32(&f->expected, "loss", 1);
    assert_true(fabs(loss - want_loss[0]) <= 1e-5 * fabs(want_loss[0]));
    int checked = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        if (!t->attached) {
            assert_false(t->trainable); /* the base is frozen */
            continue;
        }
        char name[128];
        snprintf(name, sizeof name, "grad.base_model.model.transformer.%s", t->name);
        float *want = ref_f32(&f->expected, name, t->numel);
        assert_close(name, t->grad, want, t->numel, 1e-4);
        free(want);
        checked++;
    }
    assert_int_equal(checked, 2 * 4 * c->n_layer);
    free(want_loss);
    free(want_logits);
    fm_model_free(m);
}

/* fm merge: the base weights gain scale (B A)^T; the merged model computes the adapted logits. */
static void test_merge(void **state) {
    fixture *f = *state;
    const fm_config *c = fm_model_config(f->base);
    size_t N = (size_t)f->B * f->T;
    fm_model *m = load_base();
    assert_int_equal(fm_model_merge_adapter(m, f->adapter), FM_OK);
    const char *products[] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    for (int k = 0; k < 4; k++) {
        char name[96], ref[128];
        snprintf(name, sizeof name, "h.0.%s.weight", products[k]);
        snprintf(ref, sizeof ref, "merged.%s", name);
        const fm_tensor_info *t = fm_model_tensor(m, fm_model_find_tensor(m, name));
        float *want = ref_f32(&f->expected, ref, t->numel);
        assert_close(ref, t->data, want, t->numel, 1e-6);
        free(want);
    }
    float *want_logits = ref_f32(&f->expected, "logits", N * c->vocab_size);
    train_loss(f, m, 0);
    assert_close("merged logits", fm_model_logits(m), want_logits, N * c->vocab_size, 1e-4);
    free(want_logits);
    fm_model_free(m);
}

/* A new adapter starts as the base (B = 0), bit for bit; A is PEFT's Kaiming-uniform; only the
 * adapters train; absurd settings are refused. */
static void test_new_adapter(void **state) {
    fixture *f = *state;
    const fm_config *c = fm_model_config(f->base);
    size_t NV = (size_t)f->B * f->T * c->vocab_size;
    fm_model *m = load_base();
    train_loss(f, m, 0);
    float *base_logits = malloc(sizeof(float) * NV);
    memcpy(base_logits, fm_model_logits(m), sizeof(float) * NV);
    fm_lora_config cfg;
    fm_lora_config_default(&cfg);
    assert_int_equal(cfg.r, 8);
    assert_int_equal(cfg.targets, FM_LORA_C_ATTN);
    assert_int_equal(fm_lora_parse_targets("c_attn,c_proj", &cfg.targets), FM_OK);
    assert_int_equal(cfg.targets, FM_LORA_C_ATTN | FM_LORA_ATTN_PROJ | FM_LORA_MLP_PROJ);
    assert_int_equal(fm_lora_parse_targets("c_attn,q_proj", &cfg.targets), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "q_proj"));
    cfg.targets = FM_LORA_C_ATTN | FM_LORA_C_FC;
    cfg.r = c->n_embd + 1;
    assert_int_equal(fm_model_add_lora(m, &cfg, 1), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "larger than"));
    cfg.r = 8;
    assert_int_equal(fm_model_add_lora(m, &cfg, 1), FM_OK);
    train_loss(f, m, 0);
    assert_memory_equal(fm_model_logits(m), base_logits, sizeof(float) * NV);
    size_t lora_params = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        if (!t->attached) continue;
        lora_params += t->numel;
        int is_a = strstr(t->name, "lora_A") != NULL;
        float bound = is_a ? 1.0f / sqrtf((float)t->shape[1]) : 0.0f, max = 0;
        for (size_t j = 0; j < t->numel; j++) max = fabsf(t->data[j]) > max ? fabsf(t->data[j]) : max;
        assert_true(max <= bound);
        if (is_a) assert_true(max > 0.9f * bound);
    }
    /* (8 x C + 3C x 8) + (8 x C + 4C x 8) per layer */
    assert_int_equal(lora_params, (size_t)c->n_layer * 8 * (c->n_embd + 3 * c->n_embd + c->n_embd + 4 * c->n_embd));
    assert_int_equal(fm_model_num_trainable(m), lora_params);
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    fm_optimizer *opt = NULL;
    assert_int_equal(fm_optimizer_init(&opt, m, &ac), FM_OK);
    assert_int_equal(fm_optimizer_num_params(opt), lora_params);
    fm_optimizer_free(opt);
    free(base_logits);
    fm_model_free(m);
}

/* Central differences of the masked loss in A and B entries, with dropout on (fixed masks). */
static void test_gradients_with_dropout(void **state) {
    fixture *f = *state;
    fm_model *m = load_base();
    assert_int_equal(fm_model_attach_adapter(m, f->adapter), FM_OK);
    fm_lora_config cfg = *fm_model_lora(m);
    (void)cfg;
    /* a dropout rate, set through a fresh attach with the adapter's matrices */
    fm_model_free(m);
    m = load_base();
    fm_lora_config drop;
    fm_lora_config_default(&drop);
    drop.r = 4;
    drop.alpha = 8;
    drop.dropout = 0.3f;
    drop.targets = FM_LORA_C_ATTN | FM_LORA_ATTN_PROJ | FM_LORA_C_FC | FM_LORA_MLP_PROJ;
    assert_int_equal(fm_model_add_lora(m, &drop, 7), FM_OK);
    /* nonzero B (copied from the fixture's adapter), so that A has gradients too */
    fm_model *src = load_base();
    assert_int_equal(fm_model_attach_adapter(src, f->adapter), FM_OK);
    for (int i = 0; i < fm_model_num_tensors(src); i++) {
        const fm_tensor_info *t = fm_model_tensor(src, i);
        if (!t->attached) continue;
        const fm_tensor_info *to = fm_model_tensor(m, fm_model_find_tensor(m, t->name));
        assert_non_null(to);
        memcpy(to->data, t->data, sizeof(float) * t->numel);
    }
    fm_model_free(src);
    assert_true(fm_model_dropout(m) > 0.29f);
    fm_model_set_dropout_seed(m, 12345);
    float l0 = train_loss(f, m, 1);
    /* dropout changes the loss; seed 0 (evaluation) turns it off */
    fm_model_set_dropout_seed(m, 0);
    float off = train_loss(f, m, 0);
    assert_true(fabsf(off - l0) > 1e-6f);
    fm_model_set_dropout_seed(m, 12345);
    assert_true(train_loss(f, m, 0) == l0); /* the same seed, the same masks */
    int checked = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        if (!t->attached) continue;
        train_loss(f, m, 1);
        for (size_t j = 0; j < t->numel; j += t->numel / 5 + 1) {
            float g = t->grad[j], keep = t->data[j], eps = 1e-2f;
            t->data[j] = keep + eps;
            double up = train_loss(f, m, 0);
            t->data[j] = keep - eps;
            double down = train_loss(f, m, 0);
            t->data[j] = keep;
            double fd = (up - down) / (2.0 * eps);
            if (fabs(fd) < 1e-4 && fabs(g) < 1e-4) continue;
            if (fabs(fd - g) > 2e-2 * fabs(fd) + 2e-4)
                fail_msg("%s[%zu]: gradient %g, central difference %g", t->name, j, g, fd);
            checked++;
        }
    }
    assert_true(checked > 20);
    fm_model_free(m);
}

/* GPT-2's residual and embedding dropout on a fully trained model: central differences of the
 * masked loss in entries of several tensors, the masks fixed by the seed; seed 0 drops nothing. */
static void test_residual_dropout_gradients(void **state) {
    fixture *f = *state;
    fm_model *m = load_base();
    train_loss(f, m, 0);
    float plain = train_loss(f, m, 0);
    assert_int_equal(fm_model_set_dropout(m, 1.5f), FM_ERR_ARG);
    assert_int_equal(fm_model_set_dropout(m, 0.25f), FM_OK);
    assert_true(train_loss(f, m, 0) == plain); /* no seed: no dropout (evaluation) */
    fm_model_set_dropout_seed(m, 99);
    float dropped = train_loss(f, m, 1);
    assert_true(fabsf(dropped - plain) > 1e-5f);
    const char *names[] = {"wte.weight", "wpe.weight", "h.0.attn.c_proj.weight", "h.1.mlp.c_fc.bias",
                           "h.1.mlp.c_proj.weight", "ln_f.weight"};
    int checked = 0;
    for (int n = 0; n < 6; n++) {
        const fm_tensor_info *t = fm_model_tensor(m, fm_model_find_tensor(m, names[n]));
        assert_non_null(t);
        train_loss(f, m, 1);
        for (size_t j = 7; j < t->numel; j += t->numel / 6 + 1) {
            float g = t->grad[j], keep = t->data[j], eps = 1e-2f;
            t->data[j] = keep + eps;
            double up = train_loss(f, m, 0);
            t->data[j] = keep - eps;
            double down = train_loss(f, m, 0);
            t->data[j] = keep;
            double fd = (up - down) / (2.0 * eps);
            if (fabs(fd) < 1e-4 && fabs(g) < 1e-4) continue;
            if (fabs(fd - g) > 2e-2 * fabs(fd) + 2e-4) fail_msg("%s[%zu]: gradient %g, central difference %g", t->name, j, g, fd);
            checked++;
        }
    }
    assert_true(checked > 15);
    fm_model_free(m);
}

/* fm_lora_save writes PEFT's two files; they load back to the same matrices on the same base,
 * and are refused by another base (fingerprint) or another shape. */
static void test_files(void **state) {
    fixture *f = *state;
    char *dir = make_temp_dir();
    fm_model *m = load_base();
    assert_int_equal(fm_model_attach_adapter(m, f->adapter), FM_OK);
    assert_int_equal(fm_lora_save(m, dir), FM_OK);
    assert_int_equal(count_dir_entries_containing(dir, ""), 4); /* ., .. and the two files */
    assert_int_equal(count_dir_entries_containing(dir, "adapter_"), 2);
    char *config = test_path(dir, "adapter_config.json");
    size_t len = 0;
    char *text = (char *)read_file_bytes(config, &len);
    assert_non_null(strstr(text, "\"peft_type\":\t\"LORA\""));
    assert_non_null(strstr(text, "\"fan_in_fan_out\":\ttrue"));
    free(text);
    fm_adapter *back = NULL;
    assert_int_equal(fm_adapter_load(&back, dir, f->base), FM_OK);
    fm_model *m2 = load_base();
    assert_int_equal(fm_model_attach_adapter(m2, back), FM_OK);
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *a = fm_model_tensor(m, i), *b = fm_model_tensor(m2, i);
        assert_string_equal(a->name, b->name);
        assert_memory_equal(a->data, b->data, sizeof(float) * a->numel);
    }
    fm_adapter_free(back);
    fm_model_free(m2);
    /* another base: one weight changed */
    fm_model *other = load_base();
    fm_model_params(other)[5] += 1.0f;
    assert_int_equal(fm_adapter_load(&back, dir, other), FM_ERR_MISMATCH);
    assert_non_null(strstr(fm_last_error(), "another base model"));
    fm_model_free(other);
    /* another shape: a wider model */
    fm_config wide = *fm_model_config(f->base);
    wide.n_embd += wide.n_head;
    assert_int_equal(fm_model_init(&other, &wide, 1), FM_OK);
    fm_status st = fm_adapter_load(&back, REF "/adapter", other);
    assert_int_equal(st, FM_ERR_MISMATCH);
    assert_non_null(strstr(fm_last_error(), "has shape"));
    fm_model_free(other);
    /* a malformed config names the file and the key */
    write_file_bytes(config, "{\"peft_type\": \"PREFIX_TUNING\"}", 30);
    assert_int_equal(fm_adapter_load(&back, dir, f->base), FM_ERR_FORMAT);
    assert_non_null(strstr(fm_last_error(), "adapter_config.json"));
    assert_non_null(strstr(fm_last_error(), "peft_type"));
    free(config);
    fm_model_free(m);
    remove_dir_recursive(dir);
    free(dir);
}

/* Batched decoding with an adapter: each sequence's logits are bitwise those it gets alone. */
static void test_batched_sessions(void **state) {
    fixture *f = *state;
    const fm_config *c = fm_model_config(f->base);
    int V = c->vocab_size;
    fm_model_use_adapter(f->base, f->adapter);
    fm_session *alone = NULL, *both = NULL;
    assert_int_equal(fm_session_init(&alone, f->base, 1, c->n_positions), FM_OK);
    assert_int_equal(fm_session_init(&both, f->base, 2, c->n_positions), FM_OK);
    fm_model_use_adapter(f->base, NULL);
    const float *logits = NULL;
    float *want = malloc(sizeof(float) * 2 * V);
    for (int b = 0; b < 2; b++) {
        fm_session_reset(alone, 0);
        assert_int_equal(fm_session_feed(alone, 0, f->tokens + (size_t)b * f->T, 5 + b, &logits), FM_OK);
        memcpy(want + (size_t)b * V, logits, sizeof(float) * V);
    }
    const int *prompts[2] = {f->tokens, f->tokens + f->T};
    int lens[2] = {5, 6}, seqs[2] = {0, 1};
    assert_int_equal(fm_session_feed_many(both, 2, seqs, prompts, lens, &logits), FM_OK);
    assert_memory_equal(logits, want, sizeof(float) * 2 * V);
    free(want);
    fm_session_free(alone);
    fm_session_free(both);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_with_torch), cmocka_unit_test(test_merge),
        cmocka_unit_test(test_new_adapter),      cmocka_unit_test(test_gradients_with_dropout),
        cmocka_unit_test(test_files),            cmocka_unit_test(test_batched_sessions),
        cmocka_unit_test(test_residual_dropout_gradients),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
