/*
 * test_trainer.c — the library trainer and trainable parameter groups: gradient accumulation
 * equals one big batch (uneven loss masks included), a second objective (a classification head
 * on the hidden states, driven by the gradient on them) trains, resumes exactly and does not
 * depend on the thread count, frozen tensors get no weight gradient and no optimizer state,
 * and attached tensors survive a save and load.
 */
#define _GNU_SOURCE /* memmem */
#include "test_util.h"

#include <math.h>

/* head size 24, an odd vocabulary */
static const fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 48, .vocab_size = 67,
                              .n_positions = 16, .n_inner = 0, .layer_norm_epsilon = 1e-5f};

enum { ROWS = 8, T = 12, CLASSES = 3 };

/* ------------------------------------------------------------ a fixed data source */

/* ROWS fixed sequences; next() hands them out in order (position counts rows); row r's mask
 * weighs its positions unevenly so that micro-batches weigh differently. */
typedef struct {
    int tokens[ROWS][T], targets[ROWS][T];
    float mask[ROWS][T];
    int masked;
} fixed_data;

static void fixed_init(fixed_data *d, int masked) {
    fm_rng rng;
    fm_rng_seed(&rng, 5);
    d->masked = masked;
    for (int r = 0; r < ROWS; r++)
        for (int t = 0; t < T; t++) {
            d->tokens[r][t] = (int)(fm_rng_u64(&rng) % cfg.vocab_size);
            d->targets[r][t] = (d->tokens[r][t] * 5 + 1) % cfg.vocab_size;
            /* row 0 all ones, row 1 half masked, row 2 a single position, others 0.5 / 2 */
            float m = r == 0 ? 1.0f : r == 1 ? (t % 2 ? 1.0f : 0.0f) : r == 2 ? (t == 3 ? 1.0f : 0.0f)
                                                                              : (t % 3 ? 0.5f : 2.0f);
            d->mask[r][t] = masked ? m : 1.0f;
        }
}

static fm_status fixed_next(void *ctx, fm_batch *b, fm_rng *rng, uint64_t *position) {
    fixed_data *d = ctx;
    (void)rng;
    for (int i = 0; i < b->B; i++) {
        int r = (int)((*position)++ % ROWS);
        memcpy(b->tokens + (size_t)i * b->T, d->tokens[r], sizeof(int) * b->T);
        memcpy(b->targets + (size_t)i * b->T, d->targets[r], sizeof(int) * b->T);
        memcpy(b->mask + (size_t)i * b->T, d->mask[r], sizeof(float) * b->T);
    }
    b->rows = b->B;
    return FM_OK;
}

static fm_status fixed_eval(void *ctx, fm_batch *b, uint64_t index) {
    fixed_data *d = ctx;
    b->rows = 0;
    for (int r = (int)index * b->B; r < ROWS && b->rows < b->B; r++, b->rows++) {
        memcpy(b->tokens + (size_t)b->rows * b->T, d->tokens[r], sizeof(int) * b->T);
        memcpy(b->targets + (size_t)b->rows * b->T, d->targets[r], sizeof(int) * b->T);
        memcpy(b->mask + (size_t)b->rows * b->T, d->mask[r], sizeof(float) * b->T);
    }
    return FM_OK;
}

static fm_data_source fixed_source(fixed_data *d) {
    return (fm_data_source){.ctx = d, .next = fixed_next, .eval_next = fixed_eval};
}

static fm_adamw_config adam(int total) {
    fm_adamw_config c;
    fm_adamw_config_default(&c);
    c.lr = 3e-3f, c.min_lr = 3e-4f, c.warmup_steps = 2, c.total_steps = total;
    return c;
}

static fm_trainer_config trainer_cfg(int batch, int accum, int total) {
    return (fm_trainer_config){.batch = batch, .seq = T, .grad_accum = accum, .total_steps = total,
                               .eval_every = 0, .save_every = 0};
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *scale) {
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    if (scale) *scale = s;
    return d;
}

/* ------------------------------------------------------------ gradient accumulation */

/* One step: K micro-batches of ROWS / K rows against one batch of ROWS, the same rows; the
 * gradients (before the update) and the loss agree within 1e-6. */
static void accumulate_vs_one_batch(int masked, int K) {
    fixed_data d;
    fixed_init(&d, masked);
    fm_data_source src = fixed_source(&d);
    fm_objective xent;
    fm_objective_cross_entropy(&xent);
    float *grads[2];
    float loss[2];
    size_t n = 0;
    for (int run = 0; run < 2; run++) {
        int accum = run == 0 ? 1 : K, batch = ROWS / accum;
        fm_model *m;
        fm_optimizer *o;
        fm_trainer *t;
        fm_train_state st = {0};
        fm_rng_seed(&st.rng, 1);
        fm_adamw_config ac = adam(4);
        ac.lr = ac.min_lr = 0.0f; /* lr 0 and no decay: the weights stay, the gradients remain */
        ac.weight_decay = 0.0f;
        fm_trainer_config tc = trainer_cfg(batch, accum, 4);
        assert_int_equal(fm_model_init(&m, &cfg, 3), FM_OK);
        assert_int_equal(fm_optimizer_init(&o, m, &ac), FM_OK);
        assert_int_equal(fm_trainer_init(&t, m, o, &st, &src, &xent, &tc), FM_OK);
        fm_step_report r;
        assert_int_equal(fm_trainer_step(t, &r), FM_OK);
        assert_int_equal(st.data_position, ROWS);
        n = fm_model_num_params(m);
        grads[run] = malloc(sizeof(float) * n);
        memcpy(grads[run], fm_model_grads(m), sizeof(float) * n);
        loss[run] = r.loss;
        fm_trainer_free(t);
        fm_optimizer_free(o);
        fm_model_free(m);
    }
    double scale, diff = max_abs_diff(grads[1], grads[0], n, &scale);
    assert_true(scale > 1e-3); /* the gradients are not trivially zero */
    if (diff > 1e-6) fail_msg("K = %d masked %d: gradients differ by %g (scale %g)", K, masked, diff, scale);
    assert_true(fabsf(loss[0] - loss[1]) <= 1e-6f * fabsf(loss[0]));
    free(grads[0]);
    free(grads[1]);
}

static void test_grad_accum_equals_big_batch(void **state) {
    (void)state;
    fm_set_threads(2);
    accumulate_vs_one_batch(0, 2);
    accumulate_vs_one_batch(0, 4);
    accumulate_vs_one_batch(1, 2); /* uneven masks: micro-batch weights 1+6+1+9 ... differ */
    accumulate_vs_one_batch(1, 8);
}

/* With uneven masks, normalising each micro-batch by its own weight (the naive way) would give
 * another gradient: this checks the test above can tell. */
static void test_grad_accum_normaliser_matters(void **state) {
    (void)state;
    fixed_data d;
    fixed_init(&d, 1);
    double w0 = 0, w1 = 0;
    for (int t = 0; t < T; t++) w0 += d.mask[0][t] + d.mask[1][t] + d.mask[2][t] + d.mask[3][t];
    for (int t = 0; t < T; t++) w1 += d.mask[4][t] + d.mask[5][t] + d.mask[6][t] + d.mask[7][t];
    assert_true(fabs(w0 - w1) > 1.0);
}

/* ------------------------------------------------------------ a classification head */

/* Classifies each sequence from its last position's hidden state: logits (3) = h (C) @ W (C, 3)
 * + b, label targets[row * T] % 3. Its gradient on the hidden states feeds the model's backward;
 * its own tensors are attached to the model ("score.weight", "score.bias"). */
typedef struct {
    int w, b; /* tensor indices */
} head_objective;

static double head_weight(void *ctx, const fm_model *m, const fm_batch *b) {
    (void)ctx, (void)m;
    return b->rows;
}

static fm_status head_loss(void *ctx, fm_model *m, const fm_batch *b, double norm, double *loss_sum,
                           float *dlogits, float *dhidden) {
    head_objective *h = ctx;
    (void)dlogits;
    int C = fm_model_config(m)->n_embd;
    const fm_tensor_info *W = fm_model_tensor(m, h->w), *bias = fm_model_tensor(m, h->b);
    const float *hidden = fm_model_hidden(m);
    if (dhidden) memset(dhidden, 0, sizeof(float) * (size_t)b->rows * b->T * C);
    double total = 0.0;
    for (int r = 0; r < b->rows; r++) {
        const float *x = hidden + ((size_t)r * b->T + b->T - 1) * C;
        int label = b->targets[(size_t)r * b->T] % CLASSES;
        double z[CLASSES], mx = -INFINITY, sum = 0.0;
        for (int k = 0; k < CLASSES; k++) {
            z[k] = bias->data[k];
            for (int c = 0; c < C; c++) z[k] += (double)x[c] * W->data[c * CLASSES + k];
            mx = fmax(mx, z[k]);
        }
        for (int k = 0; k < CLASSES; k++) sum += exp(z[k] - mx);
        total += log(sum) + mx - z[label];
        if (!dhidden) continue;
        float *dx = dhidden + ((size_t)r * b->T + b->T - 1) * C;
        for (int k = 0; k < CLASSES; k++) {
            float g = (float)((exp(z[k] - mx) / sum - (k == label)) / norm);
            bias->grad[k] += g;
            for (int c = 0; c < C; c++) {
                W->grad[c * CLASSES + k] += g * x[c];
                dx[c] += g * W->data[c * CLASSES + k];
            }
        }
    }
    *loss_sum = total;
    return FM_OK;
}

static fm_objective head_obj(head_objective *h, fm_model *m) {
    h->w = fm_model_find_tensor(m, "score.weight");
    h->b = fm_model_find_tensor(m, "score.bias");
    assert_true(h->w >= 0 && h->b >= 0);
    return (fm_objective){.ctx = h, .name = "head", .uses_hidden = 1, .weight = head_weight, .loss = head_loss};
}

static fm_model *model_with_head(void) {
    fm_model *m;
    int w;
    assert_int_equal(fm_model_init(&m, &cfg, 11), FM_OK);
    assert_int_equal(fm_model_attach(m, "score.weight", 2, cfg.n_embd, CLASSES, 1, &w), FM_OK);
    assert_int_equal(fm_model_attach(m, "score.bias", 1, CLASSES, 0, 0, NULL), FM_OK);
    fm_rng rng;
    fm_rng_seed(&rng, 2);
    const fm_tensor_info *t = fm_model_tensor(m, w);
    for (size_t i = 0; i < t->numel; i++) t->data[i] = 0.05f * fm_rng_normal(&rng);
    return m;
}

/* Trains steps [from, to) of a run of `total`; returns the losses in loss[from..to). */
static void train_head(fm_model *m, fm_optimizer *o, fm_train_state *st, int from, int to, int total, float *loss) {
    fixed_data d;
    fixed_init(&d, 0);
    fm_data_source src = fixed_source(&d);
    head_objective h;
    fm_objective obj = head_obj(&h, m);
    fm_trainer_config tc = trainer_cfg(2, 2, total);
    fm_trainer *t;
    assert_int_equal(fm_trainer_init(&t, m, o, st, &src, &obj, &tc), FM_OK);
    for (int s = from; s < to; s++) {
        fm_step_report r;
        assert_int_equal(fm_trainer_step(t, &r), FM_OK);
        assert_int_equal(r.step, s + 1);
        loss[s] = r.loss;
    }
    fm_trainer_free(t);
}

static void start_head(fm_model **m, fm_optimizer **o, fm_train_state *st, int total, const char *freeze) {
    *m = model_with_head();
    if (freeze) {
        assert_int_equal(fm_model_set_trainable(*m, freeze, 0, NULL), FM_OK);
        assert_int_equal(fm_model_set_trainable(*m, "score.*", 1, NULL), FM_OK);
    }
    fm_adamw_config ac = adam(total);
    assert_int_equal(fm_optimizer_init(o, *m, &ac), FM_OK);
    memset(st, 0, sizeof *st);
    fm_rng_seed(&st->rng, 4);
}

/* 12 steps straight equal 6, save, load, 6, to the bit; with 1 and 2 threads alike; and the
 * head learns (the loss falls). freeze: NULL trains everything, "*" only the head. */
static void head_resume(const char *freeze) {
    enum { TOTAL = 12 };
    float straight[TOTAL], resumed[TOTAL], one_thread[TOTAL];
    fm_model *a, *b, *c;
    fm_optimizer *oa, *ob, *oc;
    fm_train_state sa, sb, sc;
    fm_set_threads(2);
    start_head(&a, &oa, &sa, TOTAL, freeze);
    train_head(a, oa, &sa, 0, TOTAL, TOTAL, straight);
    assert_true(straight[TOTAL - 1] < straight[0]);

    start_head(&b, &ob, &sb, TOTAL, freeze);
    train_head(b, ob, &sb, 0, TOTAL / 2, TOTAL, resumed);
    char *dir = make_temp_dir();
    assert_int_equal(fm_checkpoint_save(dir, b, ob, &sb), FM_OK);
    fm_model_free(b);
    fm_optimizer_free(ob);
    assert_int_equal(fm_checkpoint_load(dir, &c, &oc, &sc), FM_OK);
    train_head(c, oc, &sc, TOTAL / 2, TOTAL, TOTAL, resumed);
    assert_memory_equal(straight, resumed, sizeof straight);
    assert_memory_equal(fm_model_params(a), fm_model_params(c), sizeof(float) * fm_model_num_params(a));
    int w = fm_model_find_tensor(a, "score.weight");
    assert_memory_equal(fm_model_tensor(a, w)->data, fm_model_tensor(c, w)->data,
                        sizeof(float) * fm_model_tensor(a, w)->numel);
    assert_int_equal(fm_model_num_trainable(a), fm_model_num_trainable(c));

    fm_set_threads(1);
    fm_model *e;
    fm_optimizer *oe;
    fm_train_state se;
    start_head(&e, &oe, &se, TOTAL, freeze);
    train_head(e, oe, &se, 0, TOTAL, TOTAL, one_thread);
    assert_memory_equal(straight, one_thread, sizeof straight);
    assert_memory_equal(fm_model_params(a), fm_model_params(e), sizeof(float) * fm_model_num_params(a));
    fm_set_threads(2);

    if (freeze) { /* the state holds the head's moments only, and the body did not move */
        char *path = malloc(strlen(dir) + 40);
        sprintf(path, "%s/training_state.safetensors", dir);
        size_t len;
        unsigned char *bytes = read_file_bytes(path, &len);
        const char *names[] = {"\"adam.m.score.weight\"", "\"adam.v.score.bias\"", "\"adam.m.wte.weight\"", "\"adam.m.h.0"};
        for (int i = 0; i < 4; i++)
            assert_int_equal(memmem(bytes, len, names[i], strlen(names[i])) != NULL, i < 2);
        free(bytes);
        free(path);
        fm_model *fresh = model_with_head();
        assert_memory_equal(fm_model_params(fresh), fm_model_params(a), sizeof(float) * fm_model_num_params(a));
        assert_int_equal(fm_optimizer_num_params(oa), cfg.n_embd * CLASSES + CLASSES);
        fm_model_free(fresh);
    }
    remove_dir_recursive(dir);
    free(dir);
    fm_model_free(a), fm_model_free(c), fm_model_free(e);
    fm_optimizer_free(oa), fm_optimizer_free(oc), fm_optimizer_free(oe);
}

static void test_head_objective_resumes_exactly(void **state) {
    (void)state;
    head_resume(NULL);
}

static void test_head_only_training(void **state) {
    (void)state;
    head_resume("*");
}

/* ------------------------------------------------------------ frozen tensors */

/* A frozen matrix gets no weight gradient; every other gradient is what it was unfrozen. */
static void test_frozen_weight_has_no_gradient(void **state) {
    (void)state;
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &cfg, 3), FM_OK);
    fixed_data d;
    fixed_init(&d, 1);
    size_t n = fm_model_num_params(m);
    float *full = malloc(sizeof(float) * n), loss;
    fm_model_zero_grad(m);
    assert_int_equal(fm_model_train_loss(m, &d.tokens[0][0], &d.targets[0][0], &d.mask[0][0], 4, T, &loss), FM_OK);
    memcpy(full, fm_model_grads(m), sizeof(float) * n);

    const char *frozen[] = {"h.0.attn.c_attn.weight", "h.1.mlp.c_fc.weight", "h.1.mlp.c_proj.bias", "wte.weight"};
    for (int i = 0; i < 4; i++) assert_int_equal(fm_model_set_trainable(m, frozen[i], 0, NULL), FM_OK);
    fm_model_zero_grad(m);
    /* a frozen tensor's gradient memory is not touched at all: not zeroed, not written */
    for (int i = 0; i < fm_model_num_tensors(m); i++)
        if (!fm_model_tensor(m, i)->trainable) memset(fm_model_tensor(m, i)->grad, 0, sizeof(float) * fm_model_tensor(m, i)->numel);
    assert_int_equal(fm_model_train_loss(m, &d.tokens[0][0], &d.targets[0][0], &d.mask[0][0], 4, T, &loss), FM_OK);
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        int is_frozen = !t->trainable;
        /* wte: the tied head's weight gradient is skipped, the embedding lookup's is not */
        if (strcmp(t->name, "wte.weight") == 0) continue;
        for (size_t j = 0; j < t->numel; j++) {
            float want = is_frozen ? 0.0f : full[t->offset + j];
            if (t->grad[j] != want) fail_msg("%s[%zu]: %g, want %g", t->name, j, t->grad[j], want);
        }
    }
    /* the optimizer leaves frozen tensors alone */
    fm_adamw_config ac = adam(3);
    fm_optimizer *o;
    float *before = malloc(sizeof(float) * n);
    memcpy(before, fm_model_params(m), sizeof(float) * n);
    assert_int_equal(fm_optimizer_init(&o, m, &ac), FM_OK);
    assert_int_equal(fm_optimizer_step(o, m, NULL, NULL), FM_OK);
    int changed = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        int same = memcmp(t->data, before + t->offset, sizeof(float) * t->numel) == 0;
        if (!t->trainable) assert_true(same);
        else changed += !same;
    }
    assert_true(changed > 10);
    assert_int_equal(fm_model_set_trainable(m, "no.such.*", 0, NULL), FM_ERR_ARG);
    free(before);
    free(full);
    fm_optimizer_free(o);
    fm_model_free(m);
}

/* ------------------------------------------------------------ non-finite steps */

/* A step whose loss is NaN (a NaN weight) is not applied: the weights, the moments, the step
 * count and the data position stay; the run stops with the last good checkpoint kept, saying
 * which; and the NaN model cannot be saved over it. A NaN gradient is refused by the optimizer
 * the same way. */
static void test_nonfinite_step_not_applied(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *ckpt = test_path(dir, "run");
    fixed_data d;
    fixed_init(&d, 0);
    fm_data_source src = fixed_source(&d);
    fm_objective xent;
    fm_objective_cross_entropy(&xent);
    fm_model *m;
    fm_optimizer *o;
    fm_trainer *t;
    fm_train_state st = {0};
    fm_rng_seed(&st.rng, 1);
    fm_adamw_config ac = adam(6);
    fm_trainer_config tc = trainer_cfg(4, 1, 6);
    tc.checkpoint_dir = ckpt, tc.save_every = 1;
    assert_int_equal(fm_model_init(&m, &cfg, 3), FM_OK);
    assert_int_equal(fm_optimizer_init(&o, m, &ac), FM_OK);
    assert_int_equal(fm_trainer_init(&t, m, o, &st, &src, &xent, &tc), FM_OK);
    fm_step_report r;
    assert_int_equal(fm_trainer_step(t, &r), FM_OK);
    assert_int_equal(fm_checkpoint_save(ckpt, m, o, &st), FM_OK); /* the good checkpoint: step 1 */

    size_t n = fm_model_num_params(m);
    int ln = fm_model_find_tensor(m, "ln_f.weight");
    fm_model_tensor(m, ln)->data[0] = NAN;
    float *before = malloc(sizeof(float) * n);
    memcpy(before, fm_model_params(m), sizeof(float) * n);
    fm_train_state st_before = st;
    fm_status s = fm_trainer_step(t, &r);
    assert_int_equal(s, FM_ERR_NONFINITE);
    assert_non_null(strstr(fm_last_error(), "step 2: the loss is"));
    assert_memory_equal(before, fm_model_params(m), sizeof(float) * n);
    assert_int_equal(fm_optimizer_steps_done(o), 1);
    assert_int_equal(st.data_position, st_before.data_position);
    assert_memory_equal(&st.rng, &st_before.rng, sizeof st.rng);

    int stopped = 0;
    s = fm_trainer_run(t, &stopped);
    assert_int_equal(s, FM_ERR_NONFINITE);
    assert_non_null(strstr(fm_last_error(), "keeps its last checkpoint"));
    assert_int_equal(fm_checkpoint_save(ckpt, m, o, &st), FM_ERR_NONFINITE); /* refused */
    assert_non_null(strstr(fm_last_error(), "ln_f.weight"));
    fm_model *back;
    fm_optimizer *o2;
    fm_train_state st2;
    assert_int_equal(fm_checkpoint_load(ckpt, &back, &o2, &st2), FM_OK);
    assert_int_equal(fm_optimizer_steps_done(o2), 1);
    assert_true(isfinite(fm_model_tensor(back, ln)->data[0]));
    fm_optimizer_free(o2);
    fm_model_free(back);

    /* a NaN gradient: the optimizer applies nothing */
    fm_model_tensor(m, ln)->data[0] = 1.0f;
    memcpy(before, fm_model_params(m), sizeof(float) * n);
    fm_model_zero_grad(m);
    fm_model_tensor(m, ln)->grad[1] = NAN;
    assert_int_equal(fm_optimizer_step(o, m, NULL, NULL), FM_ERR_NONFINITE);
    assert_memory_equal(before, fm_model_params(m), sizeof(float) * n);
    assert_int_equal(fm_optimizer_steps_done(o), 1);

    free(before);
    fm_trainer_free(t);
    fm_optimizer_free(o);
    fm_model_free(m);
    remove_dir_recursive(dir);
    free(ckpt);
    free(dir);
}

/* ------------------------------------------------------------ attached tensors on disk */

static void test_attached_tensors_round_trip(void **state) {
    (void)state;
    fm_model *m = model_with_head(), *back;
    char *dir = make_temp_dir();
    assert_int_equal(fm_model_save(m, dir), FM_OK);
    assert_int_equal(fm_model_load(&back, dir), FM_OK);
    assert_int_equal(fm_model_num_tensors(back), fm_model_num_tensors(m));
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *x = fm_model_tensor(m, i), *y = fm_model_tensor(back, fm_model_find_tensor(back, x->name));
        assert_int_equal(x->numel, y->numel);
        assert_int_equal(x->attached, y->attached);
        assert_int_equal(x->decay, y->decay);
        assert_memory_equal(x->data, y->data, sizeof(float) * x->numel);
    }
    assert_int_equal(fm_model_attach(back, "score.weight", 1, 3, 0, 0, NULL), FM_ERR_ARG); /* taken */
    fm_model_free(back);

    /* int8 weights keep them too: listed and stored in float32 beside the Q8_0 blocks */
    assert_int_equal(fm_model_quantize(m), FM_OK);
    assert_int_equal(fm_model_save(m, dir), FM_OK);
    assert_int_equal(fm_model_load(&back, dir), FM_OK);
    assert_int_equal(fm_model_num_tensors(back), fm_model_num_tensors(m));
    int attached = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *x = fm_model_tensor(m, i);
        if (!x->attached) continue;
        const fm_tensor_info *y = fm_model_tensor(back, fm_model_find_tensor(back, x->name));
        assert_true(y->attached);
        assert_int_equal(x->decay, y->decay);
        assert_memory_equal(x->data, y->data, sizeof(float) * x->numel);
        attached++;
    }
    assert_true(attached > 0);
    fm_model_free(back);
    remove_dir_recursive(dir);
    free(dir);
    fm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_accum_equals_big_batch),
        cmocka_unit_test(test_grad_accum_normaliser_matters),
        cmocka_unit_test(test_head_objective_resumes_exactly),
        cmocka_unit_test(test_head_only_training),
        cmocka_unit_test(test_frozen_weight_has_no_gradient),
        cmocka_unit_test(test_attached_tensors_round_trip),
        cmocka_unit_test(test_nonfinite_step_not_applied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
