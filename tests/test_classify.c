/*
 * test_classify.c — classification heads (GPT2ForSequenceClassification): parity with PyTorch,
 * the read-position rule, the files, training through the trainer, and bad input.
 *
 * The reference is tests/ref/classify, written by tests/torch/classify_reference.py: a Hugging
 * Face GPT2ForSequenceClassification directory (2 layers, C 72, V 300, labels ham/other/spam,
 * pad_token_id 299), a right-padded batch of 4 rows with labels, and PyTorch's logits at each
 * row's last non-padding token, that index, the mean cross-entropy and the gradient of every
 * tensor (float64, stored as float32); and for fm's mean head on the same weights
 * (expected_mean.safetensors) the logits of the mean of the final hidden states up to that token,
 * the loss and a few tensors' gradients. The mean head is also checked against a plain C
 * reference on fm's own hidden states and against central finite differences.
 */
#include <math.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "test_util.h"

#define REF "tests/ref/classify"
#define TOL 1e-4 /* float32 against the float64 reference, relative to each tensor's largest */

static float *ref_f32(const fm_safetensors *st, const char *name, size_t numel) {
    const fm_st_tensor *t = fm_st_find(st, name);
    if (!t) fail_msg("%s lacks tensor '%s'", st->path, name);
    if (numel && t->numel != numel) fail_msg("'%s' has %zu elements, expected %zu", name, t->numel, numel);
    float *out = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    assert_int_equal(fm_st_read_f32(st, t, out), FM_OK);
    return out;
}

static int *ref_i32(const fm_safetensors *st, const char *name, size_t *numel) {
    const fm_st_tensor *t = fm_st_find(st, name);
    if (!t) fail_msg("%s lacks tensor '%s'", st->path, name);
    int *out = malloc(sizeof(int) * (t->numel ? t->numel : 1));
    assert_int_equal(fm_st_read_i32(st, t, out), FM_OK);
    if (numel) *numel = t->numel;
    return out;
}

/* max |got - want| relative to max |want| within tol; returns that relative error. */
static double assert_close(const char *what, const float *got, const float *want, size_t n, double tol) {
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
    return rel;
}

static fm_model *load_ref(void) {
    fm_model *m = NULL;
    if (fm_model_load(&m, REF) != FM_OK) fail_msg("%s", fm_last_error());
    return m;
}

/* The fixture's batch in the objective's layout: targets the row's label everywhere, the mask 1 at
 * the row's last non-padding token (as fm_sft_source_init lays out tsv rows). */
typedef struct {
    int B, T;
    int *tokens, *labels, *targets;
    float *mask;
} ref_batch;

static void read_batch(ref_batch *rb, int pad) {
    fm_safetensors st;
    if (fm_st_open(&st, REF "/batch.safetensors") != FM_OK) fail_msg("%s", fm_last_error());
    const fm_st_tensor *t = fm_st_find(&st, "tokens");
    assert_non_null(t);
    rb->B = (int)t->shape[0];
    rb->T = (int)t->shape[1];
    rb->tokens = ref_i32(&st, "tokens", NULL);
    size_t n;
    rb->labels = ref_i32(&st, "labels", &n);
    assert_int_equal(n, rb->B);
    fm_st_close(&st);
    rb->targets = malloc(sizeof(int) * rb->B * rb->T);
    rb->mask = calloc((size_t)rb->B * rb->T, sizeof(float));
    for (int r = 0; r < rb->B; r++) {
        for (int t = 0; t < rb->T; t++) rb->targets[r * rb->T + t] = rb->labels[r];
        rb->mask[r * rb->T + fm_classify_last_index(rb->tokens + r * rb->T, rb->T, pad)] = 1.0f;
    }
}

static void free_batch(ref_batch *rb) {
    free(rb->tokens), free(rb->labels), free(rb->targets), free(rb->mask);
}

/* ------------------------------------------------------------ parity */

static void test_parity_with_torch(void **state) {
    (void)state;
    fm_model *m = load_ref();
    assert_int_equal(fm_model_num_labels(m), 3);
    assert_string_equal(fm_model_label(m, 0), "ham");
    assert_string_equal(fm_model_label(m, 1), "other");
    assert_string_equal(fm_model_label(m, 2), "spam");
    assert_null(fm_model_label(m, 3));
    assert_int_equal(fm_model_label_index(m, "spam"), 2);
    assert_int_equal(fm_model_label_index(m, "eggs"), -1);
    assert_int_equal(fm_model_pad_id(m), 299);
    int w = fm_model_find_tensor(m, "score.weight");
    assert_true(w >= 0);
    assert_int_equal(fm_model_tensor(m, w)->shape[0], 3);
    assert_int_equal(fm_model_tensor(m, w)->shape[1], 72);

    ref_batch rb;
    read_batch(&rb, fm_model_pad_id(m));
    fm_safetensors exp;
    if (fm_st_open(&exp, REF "/expected.safetensors") != FM_OK) fail_msg("%s", fm_last_error());
    int B = rb.B, T = rb.T, K = 3;

    /* inference: logits at the last non-padding token */
    float *logits = malloc(sizeof(float) * B * K), *want = ref_f32(&exp, "logits", (size_t)B * K);
    int *last = malloc(sizeof(int) * B), *want_last = ref_i32(&exp, "last_index", NULL);
    assert_int_equal(fm_model_classify(m, rb.tokens, B, T, logits, last), FM_OK);
    for (int r = 0; r < B; r++) assert_int_equal(last[r], want_last[r]);
    double e_logits = assert_close("logits", logits, want, (size_t)B * K, TOL);

    /* training: the objective's loss and every gradient */
    fm_objective obj;
    assert_int_equal(fm_objective_classify(&obj, m), FM_OK);
    assert_true(obj.uses_hidden && !obj.uses_logits);
    fm_batch b = {.B = B, .T = T, .rows = B, .tokens = rb.tokens, .targets = rb.targets, .mask = rb.mask};
    double weight = obj.weight(obj.ctx, m, &b);
    assert_true(weight == B);
    fm_model_zero_grad(m);
    assert_int_equal(fm_model_forward(m, rb.tokens, B, T), FM_OK);
    size_t C = 72;
    float *dhidden = malloc(sizeof(float) * B * T * C);
    double loss_sum = 0;
    assert_int_equal(obj.loss(obj.ctx, m, &b, weight, &loss_sum, NULL, dhidden), FM_OK);
    float *want_loss = ref_f32(&exp, "loss", 1);
    double e_loss = fabs(loss_sum / weight - want_loss[0]) / fabs(want_loss[0]);
    if (!(e_loss <= TOL)) fail_msg("loss %.9g, PyTorch %.9g", loss_sum / weight, want_loss[0]);
    /* the gradient on the hidden states is zero away from the read positions */
    for (int r = 0; r < B; r++)
        for (int t = 0; t < T; t++)
            if (t != last[r])
                for (size_t c = 0; c < C; c++) assert_true(dhidden[((size_t)r * T + t) * C + c] == 0.0f);
    assert_int_equal(fm_model_backward(m, NULL, dhidden), FM_OK);
    double e_grad = 0;
    int checked = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_tensor_info *t = fm_model_tensor(m, i);
        char name[128];
        snprintf(name, sizeof name, "grad.%s%s", t->attached ? "" : "transformer.", t->name);
        float *g = ref_f32(&exp, name, t->numel);
        double e = assert_close(name, t->grad, g, t->numel, TOL);
        if (e > e_grad) e_grad = e;
        checked++;
        free(g);
    }
    assert_int_equal(checked, fm_model_num_tensors(m));
    print_message("classify parity: logits %.2g, loss %.2g, gradients %.2g (largest of %d tensors), relative\n",
                  e_logits, e_loss, e_grad, checked);

    /* the same loss with the head frozen: no head gradient is touched */
    assert_int_equal(fm_model_set_trainable(m, "score.weight", 0, NULL), FM_OK);
    fm_model_zero_grad(m);
    memset(fm_model_tensor(m, w)->grad, 0, sizeof(float) * 3 * C);
    assert_int_equal(fm_model_forward(m, rb.tokens, B, T), FM_OK);
    double again = 0;
    assert_int_equal(obj.loss(obj.ctx, m, &b, weight, &again, NULL, dhidden), FM_OK);
    assert_true(again == loss_sum);
    for (size_t i = 0; i < 3 * C; i++) assert_true(fm_model_tensor(m, w)->grad[i] == 0.0f);

    free(want_loss), free(dhidden), free(logits), free(want), free(last), free(want_last);
    free_batch(&rb);
    fm_st_close(&exp);
    fm_model_free(m);
}

/* ------------------------------------------------------------ where a row is read */

static void test_last_index_rule(void **state) {
    (void)state;
    int a[6] = {5, 6, 7, 9, 9, 9}, b[6] = {9, 5, 9, 6, 9, 9}, c[4] = {9, 9, 9, 9}, d[3] = {1, 2, 9};
    assert_int_equal(fm_classify_last_index(a, 6, 9), 2);
    assert_int_equal(fm_classify_last_index(b, 6, 9), 3); /* the rightmost non-padding token */
    assert_int_equal(fm_classify_last_index(c, 4, 9), 0); /* all padding: position 0, as transformers */
    assert_int_equal(fm_classify_last_index(d, 3, -1), 2); /* no padding id: the last position */
    assert_int_equal(fm_classify_last_index(d, 3, 4), 2);

    /* a padded row gives what its text gives alone, unpadded */
    fm_model *m = load_ref();
    ref_batch rb;
    read_batch(&rb, 299);
    float padded[4 * 3], alone[3];
    int last[4];
    assert_int_equal(fm_model_classify(m, rb.tokens, rb.B, rb.T, padded, last), FM_OK);
    for (int r = 0; r < rb.B; r++) {
        assert_int_equal(fm_model_classify(m, rb.tokens + r * rb.T, 1, last[r] + 1, alone, NULL), FM_OK);
        assert_close("padded row vs alone", padded + r * 3, alone, 3, 1e-5);
    }
    /* the objective reads where the mask says, whatever the tokens after it */
    fm_objective obj;
    assert_int_equal(fm_objective_classify(&obj, m), FM_OK);
    fm_batch bt = {.B = rb.B, .T = rb.T, .rows = rb.B, .tokens = rb.tokens, .targets = rb.targets, .mask = rb.mask};
    assert_int_equal(fm_model_forward(m, rb.tokens, rb.B, rb.T), FM_OK);
    double sum = 0, want = 0;
    assert_int_equal(obj.loss(obj.ctx, m, &bt, 4, &sum, NULL, NULL), FM_OK);
    for (int r = 0; r < rb.B; r++) {
        const float *z = padded + r * 3;
        double mx = fmax(z[0], fmax(z[1], z[2]));
        want += mx + log(exp(z[0] - mx) + exp(z[1] - mx) + exp(z[2] - mx)) - z[rb.labels[r]];
    }
    assert_true(fabs(sum - want) < 1e-5 * fabs(want));
    /* a row without a mask is skipped; weights count */
    memset(rb.mask + rb.T, 0, sizeof(float) * rb.T);
    assert_true(obj.weight(obj.ctx, m, &bt) == 3.0);
    rb.mask[2 * rb.T + last[2]] = 2.5f;
    assert_true(obj.weight(obj.ctx, m, &bt) == 4.5);
    free_batch(&rb);
    fm_model_free(m);
}

/* ------------------------------------------------------------ files */

static char *read_text(const char *dir, const char *name) {
    char *p = test_path(dir, name);
    char *text = (char *)read_file_bytes(p, NULL);
    if (!text) fail_msg("cannot read %s", p);
    free(p);
    return text;
}

/* m saved as a checkpoint (with an AdamW state) under dir/run and loaded back: *back */
static void checkpoint_round_trip(const char *dir, fm_model *m, fm_model **back) {
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    fm_optimizer *opt, *opt_back;
    assert_int_equal(fm_optimizer_init(&opt, m, &ac), FM_OK);
    fm_train_state ts = {0}, ts_back;
    fm_rng_seed(&ts.rng, 1);
    char *run = test_path(dir, "run");
    assert_int_equal(fm_checkpoint_save(run, m, opt, &ts), FM_OK);
    assert_int_equal(fm_checkpoint_load(run, back, &opt_back, &ts_back), FM_OK);
    fm_optimizer_free(opt_back);
    fm_optimizer_free(opt);
    free(run);
}

static void assert_same_model(const fm_model *a, const fm_model *b) {
    assert_int_equal(fm_model_num_tensors(a), fm_model_num_tensors(b));
    for (int i = 0; i < fm_model_num_tensors(a); i++) {
        const fm_tensor_info *x = fm_model_tensor(a, i), *y = fm_model_tensor(b, i);
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->numel, y->numel);
        assert_memory_equal(x->data, y->data, sizeof(float) * x->numel);
    }
    assert_int_equal(fm_model_num_labels(a), fm_model_num_labels(b));
    for (int i = 0; i < fm_model_num_labels(a); i++) assert_string_equal(fm_model_label(a, i), fm_model_label(b, i));
    assert_int_equal(fm_model_pad_id(a), fm_model_pad_id(b));
    assert_int_equal(fm_model_classifier_pooling(a), fm_model_classifier_pooling(b));
}

static void test_save_load(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    fm_model *m = load_ref(), *back = NULL;
    char *out = test_path(dir, "saved");
    assert_int_equal(fm_model_save(m, out), FM_OK);
    char *cfg = read_text(out, "config.json");
    assert_non_null(strstr(cfg, "\"GPT2ForSequenceClassification\""));
    assert_null(strstr(cfg, "GPT2LMHeadModel"));
    assert_non_null(strstr(cfg, "\"num_labels\":\t3"));
    assert_non_null(strstr(cfg, "\"pad_token_id\":\t299"));
    assert_non_null(strstr(cfg, "\"id2label\":\t{\n\t\t\"0\":\t\"ham\",\n\t\t\"1\":\t\"other\",\n\t\t\"2\":\t\"spam\""));
    assert_non_null(strstr(cfg, "\"label2id\":\t{\n\t\t\"ham\":\t0,\n\t\t\"other\":\t1,\n\t\t\"spam\":\t2"));
    assert_non_null(strstr(cfg, "\"problem_type\":\t\"single_label_classification\""));
    free(cfg);
    /* transformers' names: the body under "transformer.", the head as it is */
    fm_safetensors st;
    char *weights = test_path(out, "model.safetensors");
    assert_int_equal(fm_st_open(&st, weights), FM_OK);
    assert_non_null(fm_st_find(&st, "transformer.wte.weight"));
    assert_non_null(fm_st_find(&st, "transformer.h.1.mlp.c_proj.bias"));
    assert_non_null(fm_st_find(&st, "score.weight"));
    assert_null(fm_st_find(&st, "wte.weight"));
    fm_st_close(&st);
    assert_int_equal(fm_model_load(&back, out), FM_OK);
    assert_same_model(m, back);
    fm_model_free(back);

    /* a new head on a new model: labels, padding id and values come back */
    fm_config c = {.n_layer = 1, .n_head = 2, .n_embd = 16, .vocab_size = 40, .n_positions = 16,
                   .layer_norm_epsilon = 1e-5f};
    fm_model *fresh, *fresh_back;
    assert_int_equal(fm_model_init(&fresh, &c, 3), FM_OK);
    const char *labels[] = {"neg", "neutral", "pos", "ünïcode \"q\""};
    assert_int_equal(fm_model_add_classifier(fresh, 4, labels, 39, 7), FM_OK);
    const fm_tensor_info *t = fm_model_tensor(fresh, fm_model_find_tensor(fresh, "score.weight"));
    assert_int_equal(t->shape[0], 4);
    assert_int_equal(t->shape[1], 16);
    assert_true(t->trainable && t->decay);
    double ss = 0;
    for (size_t i = 0; i < t->numel; i++) ss += (double)t->data[i] * t->data[i];
    assert_true(sqrt(ss / t->numel) > 0.01 && sqrt(ss / t->numel) < 0.03); /* N(0, 0.02) */
    char *out2 = test_path(dir, "fresh");
    assert_int_equal(fm_model_save(fresh, out2), FM_OK);
    assert_int_equal(fm_model_load(&fresh_back, out2), FM_OK);
    assert_same_model(fresh, fresh_back);
    fm_model_free(fresh_back);

    /* default names, no padding id; one output writes no problem_type */
    fm_model *one;
    assert_int_equal(fm_model_init(&one, &c, 3), FM_OK);
    assert_int_equal(fm_model_add_classifier(one, 1, NULL, -1, 1), FM_OK);
    assert_string_equal(fm_model_label(one, 0), "LABEL_0");
    char *out3 = test_path(dir, "one");
    assert_int_equal(fm_model_save(one, out3), FM_OK);
    cfg = read_text(out3, "config.json");
    assert_null(strstr(cfg, "pad_token_id"));
    assert_null(strstr(cfg, "problem_type"));
    free(cfg);
    assert_int_equal(fm_model_load(&fresh_back, out3), FM_OK);
    assert_same_model(one, fresh_back);
    fm_model_free(fresh_back);
    fm_model_free(one);

    /* a checkpoint keeps the head and its labels */
    checkpoint_round_trip(dir, fresh, &fresh_back);
    assert_same_model(fresh, fresh_back);
    fm_model_free(fresh_back);

    /* a model without a head writes the language model's config, as before */
    fm_model *plain;
    assert_int_equal(fm_model_init(&plain, &c, 3), FM_OK);
    char *out4 = test_path(dir, "plain");
    assert_int_equal(fm_model_save(plain, out4), FM_OK);
    cfg = read_text(out4, "config.json");
    assert_non_null(strstr(cfg, "\"GPT2LMHeadModel\""));
    assert_null(strstr(cfg, "id2label"));
    assert_null(strstr(cfg, "num_labels"));
    free(cfg);
    assert_int_equal(fm_model_load(&fresh_back, out4), FM_OK);
    assert_int_equal(fm_model_num_labels(fresh_back), 0);
    assert_int_equal(fm_model_pad_id(fresh_back), -1);
    fm_model_free(fresh_back);
    fm_model_free(plain);

    fm_model_free(fresh);
    fm_model_free(m);
    remove_dir_recursive(dir);
    free(dir), free(out), free(out2), free(out3), free(out4), free(weights);
}

/* ------------------------------------------------------------ training */

static void test_trains_on_tsv(void **state) {
    (void)state;
    /* the fixture's model learns a tsv file's labels through the fine-tuning source */
    char *dir = make_temp_dir();
    char *tsv = test_path(dir, "labeled.tsv");
    const char *text = "free money now\tspam\nwin a prize today\tspam\nmeeting at noon\tham\nsee you at lunch\tham\n"
                       "the weather is mild\tother\ncall me later\tham\nclaim your reward\tspam\nrain again\tother\n";
    write_file_bytes(tsv, text, strlen(text));
    fm_tokenizer *tok;
    assert_int_equal(fm_tokenizer_load(&tok, "tests/ref/tasks/tokenizer.json"), FM_OK);
    fm_sft_data *data;
    assert_int_equal(fm_sft_data_load(&data, tsv, "tsv", tok, 0, NULL, 0), FM_OK);
    assert_int_equal(fm_sft_data_num_labels(data), 3);
    fm_model *m = load_ref();
    for (int i = 0; i < 3; i++) assert_string_equal(fm_sft_data_labels(data)[i], fm_model_label(m, i));
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, data, data, 8, 5, 0), FM_OK);
    fm_objective obj;
    assert_int_equal(fm_objective_classify(&obj, m), FM_OK);
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    ac.lr = 3e-3f, ac.warmup_steps = 0, ac.total_steps = 30, ac.min_lr = 3e-3f;
    fm_optimizer *opt;
    assert_int_equal(fm_optimizer_init(&opt, m, &ac), FM_OK);
    fm_train_state ts = {0};
    fm_rng_seed(&ts.rng, 9);
    fm_trainer_config tc = {.batch = 4, .seq = 8, .grad_accum = 1, .total_steps = 30};
    fm_trainer *tr;
    assert_int_equal(fm_trainer_init(&tr, m, opt, &ts, &src, &obj, &tc), FM_OK);
    double before, after;
    assert_int_equal(fm_trainer_evaluate(tr, &before), FM_OK);
    for (int s = 0; s < 30; s++) {
        fm_step_report r;
        assert_int_equal(fm_trainer_step(tr, &r), FM_OK);
        assert_true(isfinite(r.loss));
    }
    assert_int_equal(fm_trainer_evaluate(tr, &after), FM_OK);
    print_message("classify training: held-out loss %.4f -> %.4f\n", before, after);
    assert_true(after < 0.5 * before);
    fm_trainer_free(tr);

    /* the source's rows are read where transformers reads them (its padding is <|endoftext|>) */
    int pad = fm_sft_data_pad_id(data);
    int tokens[4 * 8], targets[4 * 8];
    float mask[4 * 8];
    fm_batch b = {.B = 4, .T = 8, .tokens = tokens, .targets = targets, .mask = mask};
    assert_int_equal(src.eval_next(src.ctx, &b, 0), FM_OK);
    for (int r = 0; r < b.rows; r++) {
        int at = fm_classify_last_index(tokens + r * 8, 8, pad);
        assert_true(mask[r * 8 + at] == 1.0f);
        int label;
        fm_sft_data_example(data, r, NULL, NULL, NULL, &label);
        assert_int_equal(targets[r * 8 + at], label);
    }
    fm_sft_source_free(&src);
    fm_optimizer_free(opt);
    fm_model_free(m);
    fm_sft_data_free(data);
    fm_tokenizer_free(tok);
    remove_dir_recursive(dir);
    free(dir), free(tsv);
}

/* ------------------------------------------------------------ bad input */

/* A copy of the fixture in dir/name with config.json's text `from` replaced by `to` (NULL: as it
 * is) and without model.safetensors' score.weight when drop_head (written from a model). */
static char *variant(const char *dir, const char *name, const char *from, const char *to) {
    char *out = test_path(dir, name);
    mkdir(out, 0755);
    size_t size;
    unsigned char *w = read_file_bytes(REF "/model.safetensors", &size);
    char *p = test_path(out, "model.safetensors");
    write_file_bytes(p, w, size);
    free(p), free(w);
    char *cfg = (char *)read_file_bytes(REF "/config.json", &size);
    char *at = from ? strstr(cfg, from) : NULL;
    if (from && !at) fail_msg("config.json lacks \"%s\"", from);
    p = test_path(out, "config.json");
    FILE *fp = fopen(p, "wb");
    if (at) {
        fwrite(cfg, 1, (size_t)(at - cfg), fp);
        fputs(to, fp);
        fputs(at + strlen(from), fp);
    } else {
        fputs(cfg, fp);
    }
    fclose(fp);
    free(p), free(cfg);
    return out;
}

static void test_errors(void **state) {
    (void)state;
    fm_config c = {.n_layer = 1, .n_head = 2, .n_embd = 16, .vocab_size = 40, .n_positions = 16,
                   .layer_norm_epsilon = 1e-5f};
    fm_model *m;
    assert_int_equal(fm_model_init(&m, &c, 3), FM_OK);
    fm_objective obj;
    assert_error_contains(fm_objective_classify(&obj, m), FM_ERR_ARG, "no classification head");
    float logits[4];
    int tokens[4] = {1, 2, 3, 4};
    assert_error_contains(fm_model_classify(m, tokens, 1, 4, logits, NULL), FM_ERR_ARG, "no classification head");
    const char *twice[] = {"a", "b", "a"}, *empty[] = {"a", ""};
    assert_error_contains(fm_model_add_classifier(m, 3, twice, -1, 1), FM_ERR_ARG, "\"a\" names two outputs");
    assert_error_contains(fm_model_add_classifier(m, 2, empty, -1, 1), FM_ERR_ARG, "label 1 of the head is empty");
    assert_error_contains(fm_model_add_classifier(m, 0, NULL, -1, 1), FM_ERR_ARG, "0 labels");
    assert_error_contains(fm_model_add_classifier(m, 2, NULL, 40, 1), FM_ERR_ARG, "outside the vocabulary");
    assert_int_equal(fm_model_find_tensor(m, "score.weight"), -1); /* nothing attached by a failure */
    assert_int_equal(fm_model_add_classifier(m, 1, NULL, -1, 1), FM_OK);
    assert_error_contains(fm_objective_classify(&obj, m), FM_ERR_ARG, "one output");
    assert_error_contains(fm_model_add_classifier(m, 2, NULL, -1, 1), FM_ERR_ARG, "already has");
    fm_model_free(m);

    /* a label outside the head's in a batch */
    m = load_ref();
    assert_int_equal(fm_objective_classify(&obj, m), FM_OK);
    int toks[2 * 3] = {1, 2, 299, 4, 5, 6}, tg[6] = {0, 0, 0, 3, 3, 3};
    float mask[6] = {0, 1, 0, 0, 0, 1};
    fm_batch b = {.B = 2, .T = 3, .rows = 2, .tokens = toks, .targets = tg, .mask = mask};
    assert_int_equal(fm_model_forward(m, toks, 2, 3), FM_OK);
    double sum;
    assert_error_contains(obj.loss(obj.ctx, m, &b, 2, &sum, NULL, NULL), FM_ERR_ARG, "row 1: label 3");
    fm_model_free(m);

    /* directories that do not hold together */
    char *dir = make_temp_dir();
    struct {
        const char *name, *from, *to;
        fm_status status;
        const char *message;
    } cases[] = {
        {"lm", "\"GPT2ForSequenceClassification\"", "\"GPT2LMHeadModel\"", FM_ERR_MISMATCH,
         "'score.weight' is a classification head, but config.json does not describe one"},
        {"four", "\"num_labels\": 3", "\"num_labels\": 4", FM_ERR_CONFIG, "\"id2label\" names 3 labels but"},
        {"wide", "\"num_labels\": 3,\n  \"id2label\": {\n    \"0\": \"ham\",\n    \"1\": \"other\",\n    \"2\": \"spam\"\n  },"
                 "\n  \"label2id\": {\n    \"ham\": 0,\n    \"other\": 1,\n    \"spam\": 2\n  },",
         "\"num_labels\": 2,", FM_ERR_MISMATCH, "config.json implies [2, 72]"},
        {"key", "\"2\": \"spam\"", "\"7\": \"spam\"", FM_ERR_CONFIG, "\"id2label\" key \"7\" is not an index"},
        {"dup", "\"2\": \"spam\"", "\"2\": \"ham\"", FM_ERR_CONFIG, "\"ham\" names two outputs"},
        {"inverse", "\"spam\": 2", "\"spam\": 1", FM_ERR_CONFIG, "\"label2id\" \"spam\" disagrees"},
        {"pad", "\"pad_token_id\": 299", "\"pad_token_id\": 300", FM_ERR_CONFIG, "\"pad_token_id\" = 300"},
        {"arch", "[\n    \"GPT2ForSequenceClassification\"\n  ]", "\"GPT2ForSequenceClassification\"", FM_ERR_CONFIG,
         "\"architectures\" must be a list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *d = variant(dir, cases[i].name, cases[i].from, cases[i].to);
        fm_model *bad = (fm_model *)1;
        fm_status st = fm_model_load(&bad, d);
        if (st != cases[i].status || !strstr(fm_last_error(), cases[i].message))
            fail_msg("%s: got %s \"%s\", want %s \"%s\"", cases[i].name, fm_status_name(st), fm_last_error(),
                     fm_status_name(cases[i].status), cases[i].message);
        assert_null(bad);
        free(d);
    }
    /* a head without its tensor: fm's own file of a plain model under a classification config */
    fm_model *plain;
    c.n_embd = 72, c.n_head = 3, c.n_layer = 2, c.vocab_size = 300, c.n_positions = 32;
    assert_int_equal(fm_model_init(&plain, &c, 1), FM_OK);
    char *d = variant(dir, "headless", NULL, NULL);
    assert_int_equal(fm_model_save(plain, d), FM_OK); /* overwrites both files */
    char *src = (char *)read_file_bytes(REF "/config.json", NULL), *p = test_path(d, "config.json");
    write_file_bytes(p, src, strlen(src));
    fm_model *bad;
    assert_error_contains(fm_model_load(&bad, d), FM_ERR_MISMATCH, "missing tensor 'score.weight'");
    fm_model_free(plain);
    free(src), free(p), free(d);
    remove_dir_recursive(dir);
    free(dir);
}

/* ------------------------------------------------------------ the mean head */

#define MEAN_FROM "\"problem_type\": \"single_label_classification\""
#define MEAN_TO "\"problem_type\": \"single_label_classification\",\n  \"classifier_pooling\": \"mean\""

/* The fixture's weights and labels with config.json saying "classifier_pooling": "mean" (a copy
 * in dir), loaded. */
static fm_model *load_mean(const char *dir) {
    char *d = variant(dir, "mean", MEAN_FROM, MEAN_TO);
    fm_model *m = NULL;
    if (fm_model_load(&m, d) != FM_OK) fail_msg("%s", fm_last_error());
    free(d);
    assert_int_equal(fm_model_classifier_pooling(m), FM_POOL_MEAN);
    return m;
}

/* logits (B, K) from fm's final hidden states (B, T, C) the plain way: for each row the mean of
 * hidden[r, 0..last[r]] in double, then the product with W (K, C). */
static void mean_reference(const float *hidden, const float *W, const int *last, int B, int T, int C, int K,
                           double *logits) {
    for (int r = 0; r < B; r++) {
        for (int k = 0; k < K; k++) {
            double z = 0.0;
            for (int c = 0; c < C; c++) {
                double mean = 0.0;
                for (int t = 0; t <= last[r]; t++) mean += hidden[((size_t)r * T + t) * C + c];
                z += mean / (last[r] + 1) * W[(size_t)k * C + c];
            }
            logits[r * K + k] = z;
        }
    }
}

static void test_mean_head(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    fm_model *m = load_mean(dir);
    ref_batch rb;
    read_batch(&rb, fm_model_pad_id(m));
    int B = rb.B, T = rb.T, K = 3, C = 72;
    const fm_tensor_info *W = fm_model_tensor(m, fm_model_find_tensor(m, "score.weight"));

    /* inference: the mean of fm's own hidden states up to the read position, then the product */
    float logits[4 * 3];
    int last[4];
    assert_int_equal(fm_model_classify(m, rb.tokens, B, T, logits, last), FM_OK);
    for (int r = 0; r < B; r++) assert_int_equal(last[r], fm_classify_last_index(rb.tokens + r * T, T, 299));
    assert_int_equal(fm_model_forward(m, rb.tokens, B, T), FM_OK);
    double plain[4 * 3];
    mean_reference(fm_model_hidden(m), W->data, last, B, T, C, K, plain);
    for (int i = 0; i < B * K; i++)
        if (!(fabs(logits[i] - plain[i]) <= 1e-6 * (1 + fabs(plain[i]))))
            fail_msg("logit %d: %.9g, plain C %.9g", i, logits[i], plain[i]);
    /* the same weights read at the last token give other logits */
    fm_model *lastm = load_ref();
    float at_last[4 * 3];
    assert_int_equal(fm_model_classify(lastm, rb.tokens, B, T, at_last, NULL), FM_OK);
    double moved = 0;
    for (int i = 0; i < B * K; i++) moved = fmax(moved, fabs(at_last[i] - logits[i]));
    assert_true(moved > 0.1);
    fm_model_free(lastm);

    /* PyTorch: logits, loss and the gradients it keeps */
    fm_safetensors exp;
    if (fm_st_open(&exp, REF "/expected_mean.safetensors") != FM_OK) fail_msg("%s", fm_last_error());
    float *want = ref_f32(&exp, "logits", (size_t)B * K);
    double e_logits = assert_close("mean logits", logits, want, (size_t)B * K, TOL);
    fm_objective obj;
    assert_int_equal(fm_objective_classify(&obj, m), FM_OK);
    fm_batch b = {.B = B, .T = T, .rows = B, .tokens = rb.tokens, .targets = rb.targets, .mask = rb.mask};
    double weight = obj.weight(obj.ctx, m, &b), loss_sum = 0;
    fm_model_zero_grad(m);
    assert_int_equal(fm_model_forward(m, rb.tokens, B, T), FM_OK);
    float *dhidden = malloc(sizeof(float) * B * T * C);
    assert_int_equal(obj.loss(obj.ctx, m, &b, weight, &loss_sum, NULL, dhidden), FM_OK);
    float *want_loss = ref_f32(&exp, "loss", 1);
    double e_loss = fabs(loss_sum / weight - want_loss[0]) / fabs(want_loss[0]);
    if (!(e_loss <= TOL)) fail_msg("mean-head loss %.9g, PyTorch %.9g", loss_sum / weight, want_loss[0]);
    /* dhidden: one vector (g @ W) / (t + 1) at every position 0..t of a row, zero after (padding) */
    for (int r = 0; r < B; r++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                float v = dhidden[((size_t)r * T + t) * C + c], first = dhidden[(size_t)r * T * C + c];
                if (t > last[r]) assert_true(v == 0.0f);
                else assert_true(v == first);
            }
    assert_int_equal(fm_model_backward(m, NULL, dhidden), FM_OK);
    const char *names[] = {"score.weight", "ln_f.weight", "ln_f.bias", "wpe.weight", "h.0.ln_1.weight",
                           "h.1.attn.c_attn.bias"};
    double e_grad = 0;
    for (int i = 0; i < 6; i++) {
        const fm_tensor_info *t = fm_model_tensor(m, fm_model_find_tensor(m, names[i]));
        char name[128];
        snprintf(name, sizeof name, "grad.%s%s", t->attached ? "" : "transformer.", t->name);
        float *g = ref_f32(&exp, name, t->numel);
        e_grad = fmax(e_grad, assert_close(name, t->grad, g, t->numel, TOL));
        free(g);
    }
    print_message("mean-head parity: logits %.2g, loss %.2g, gradients %.2g (largest of 6 tensors), relative\n",
                  e_logits, e_loss, e_grad);
    fm_st_close(&exp);

    /* padding: each padded row gives what its text gives alone, unpadded */
    for (int r = 0; r < B; r++) {
        float alone[3];
        assert_int_equal(fm_model_classify(m, rb.tokens + r * T, 1, last[r] + 1, alone, NULL), FM_OK);
        assert_close("mean head: padded row vs alone", logits + r * K, alone, 3, 1e-5);
    }
    /* the objective averages up to the row's last mask > 0 whatever the tokens after it: padding
     * replaced by text leaves the loss as it was */
    int *other = malloc(sizeof(int) * B * T);
    memcpy(other, rb.tokens, sizeof(int) * B * T);
    for (int r = 0; r < B; r++)
        for (int t = last[r] + 1; t < T; t++) other[r * T + t] = (7 * t + r) % 299;
    fm_batch bo = b;
    bo.tokens = other;
    double again = 0;
    assert_int_equal(fm_model_forward(m, other, B, T), FM_OK);
    assert_int_equal(obj.loss(obj.ctx, m, &bo, weight, &again, NULL, NULL), FM_OK);
    assert_true(fabs(again - loss_sum) <= 1e-5 * fabs(loss_sum));
    free(other);

    free(want), free(want_loss), free(dhidden);
    free_batch(&rb);
    fm_model_free(m);
    remove_dir_recursive(dir);
    free(dir);
}

/* The objective's loss sum / weight on the fixture's batch (row 2 weighing 2.5). */
static double fd_loss(fm_model *m, const fm_objective *obj, const fm_batch *b) {
    double sum = 0;
    assert_int_equal(fm_model_forward(m, b->tokens, b->B, b->T), FM_OK);
    assert_int_equal(obj->loss(obj->ctx, m, b, obj->weight(obj->ctx, m, b), &sum, NULL, NULL), FM_OK);
    return sum / obj->weight(obj->ctx, m, b);
}

/* The objective's gradient (its own into score.weight, the model's backward from dhidden) against
 * central differences of its loss, entries of several tensors, for both read-outs. */
static void test_gradients_finite_differences(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    for (int pass = 0; pass < 2; pass++) {
        fm_model *m = pass ? load_mean(dir) : load_ref();
        ref_batch rb;
        read_batch(&rb, 299);
        rb.mask[2 * rb.T + fm_classify_last_index(rb.tokens + 2 * rb.T, rb.T, 299)] = 2.5f;
        fm_objective obj;
        assert_int_equal(fm_objective_classify(&obj, m), FM_OK);
        fm_batch b = {.B = rb.B, .T = rb.T, .rows = rb.B, .tokens = rb.tokens, .targets = rb.targets, .mask = rb.mask};
        float *dhidden = malloc(sizeof(float) * rb.B * rb.T * 72);
        double sum;
        fm_model_zero_grad(m);
        assert_int_equal(fm_model_forward(m, rb.tokens, rb.B, rb.T), FM_OK);
        assert_int_equal(obj.loss(obj.ctx, m, &b, obj.weight(obj.ctx, m, &b), &sum, NULL, dhidden), FM_OK);
        assert_int_equal(fm_model_backward(m, NULL, dhidden), FM_OK);
        const char *names[] = {"score.weight", "ln_f.weight", "ln_f.bias", "wpe.weight", "wte.weight",
                               "h.0.attn.c_attn.weight", "h.1.mlp.c_proj.weight", "h.0.ln_1.bias"};
        int checked = 0;
        for (int n = 0; n < 8; n++) {
            const fm_tensor_info *t = fm_model_tensor(m, fm_model_find_tensor(m, names[n]));
            assert_non_null(t);
            size_t start = 3, stride = t->numel / 7 + 1;
            if (!strcmp(names[n], "wte.weight")) start = (size_t)rb.tokens[1] * 72, stride = 13; /* a used row */
            for (size_t j = start; j < t->numel && j < start + 7 * stride; j += stride) {
                float g = t->grad[j], keep = t->data[j], eps = 1e-2f;
                t->data[j] = keep + eps;
                double up = fd_loss(m, &obj, &b);
                t->data[j] = keep - eps;
                double down = fd_loss(m, &obj, &b);
                t->data[j] = keep;
                double fd = (up - down) / (2.0 * eps);
                if (fabs(fd) < 1e-4 && fabs(g) < 1e-4) continue;
                if (fabs(fd - g) > 2e-2 * fabs(fd) + 2e-4)
                    fail_msg("%s head, %s[%zu]: gradient %g, central difference %g", pass ? "mean" : "last", t->name,
                             j, g, fd);
                checked++;
            }
        }
        print_message("%s head: %d gradient entries match central differences\n", pass ? "mean" : "last", checked);
        assert_true(checked > 30);
        free(dhidden);
        free_batch(&rb);
        fm_model_free(m);
    }
    remove_dir_recursive(dir);
    free(dir);
}

/* classifier_pooling in config.json: written for a mean head only, read back by every path that
 * saves a head (fm_model_save, checkpoints, an int8 copy), and a bad value refused naming the
 * file and key. */
static void test_pooling_files(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    assert_string_equal(fm_classifier_pooling_name(FM_POOL_LAST), "last");
    assert_string_equal(fm_classifier_pooling_name(FM_POOL_MEAN), "mean");
    assert_null(fm_classifier_pooling_name((fm_classifier_pooling)7));
    fm_classifier_pooling pool = FM_POOL_LAST;
    assert_int_equal(fm_classifier_pooling_parse("mean", &pool), FM_OK);
    assert_int_equal(pool, FM_POOL_MEAN);
    assert_error_contains(fm_classifier_pooling_parse("max", &pool), FM_ERR_ARG, "\"last\" or \"mean\", not \"max\"");
    assert_int_equal(fm_classifier_pooling_parse(NULL, &pool), FM_ERR_ARG);

    fm_config c = {.n_layer = 1, .n_head = 2, .n_embd = 32, .vocab_size = 40, .n_positions = 16,
                   .layer_norm_epsilon = 1e-5f};
    fm_model *m, *back;
    assert_int_equal(fm_model_init(&m, &c, 3), FM_OK);
    assert_int_equal(fm_model_classifier_pooling(m), FM_POOL_LAST); /* no head */
    assert_error_contains(fm_model_add_classifier_pooled(m, 2, NULL, 39, (fm_classifier_pooling)2, 1), FM_ERR_ARG,
                          "pooling 2");
    assert_int_equal(fm_model_find_tensor(m, "score.weight"), -1);
    assert_int_equal(fm_model_add_classifier_pooled(m, 2, NULL, 39, FM_POOL_MEAN, 1), FM_OK);
    assert_int_equal(fm_model_classifier_pooling(m), FM_POOL_MEAN);
    char *out = test_path(dir, "mean");
    assert_int_equal(fm_model_save(m, out), FM_OK);
    char *cfg = read_text(out, "config.json");
    assert_non_null(strstr(cfg, "\"classifier_pooling\":\t\"mean\""));
    free(cfg);
    assert_int_equal(fm_model_load(&back, out), FM_OK);
    assert_same_model(m, back);
    assert_int_equal(fm_model_classifier_pooling(back), FM_POOL_MEAN);
    fm_model_free(back);

    /* a checkpoint keeps it */
    checkpoint_round_trip(dir, m, &back);
    assert_int_equal(fm_model_classifier_pooling(back), FM_POOL_MEAN);
    fm_model_free(back);

    /* an int8 copy (fm quantize) keeps it */
    assert_int_equal(fm_model_quantize(m), FM_OK);
    char *q8 = test_path(dir, "q8");
    assert_int_equal(fm_model_save(m, q8), FM_OK);
    assert_int_equal(fm_model_load(&back, q8), FM_OK);
    assert_int_equal(fm_model_classifier_pooling(back), FM_POOL_MEAN);
    assert_int_equal(fm_model_num_labels(back), 2);
    fm_model_free(back);
    fm_model_free(m);

    /* a last-token head writes no key: its config.json is transformers' own */
    assert_int_equal(fm_model_init(&m, &c, 3), FM_OK);
    assert_int_equal(fm_model_add_classifier(m, 2, NULL, 39, 1), FM_OK);
    assert_int_equal(fm_model_classifier_pooling(m), FM_POOL_LAST);
    char *out2 = test_path(dir, "last");
    assert_int_equal(fm_model_save(m, out2), FM_OK);
    cfg = read_text(out2, "config.json");
    assert_null(strstr(cfg, "classifier_pooling"));
    free(cfg);
    fm_model_free(m);

    /* config.json's values: "last" and null read as the last token; anything else is refused */
    struct {
        const char *name, *to;
        fm_status status;
        fm_classifier_pooling pooling;
        const char *message;
    } cases[] = {
        {"last", MEAN_FROM ",\n  \"classifier_pooling\": \"last\"", FM_OK, FM_POOL_LAST, NULL},
        {"null", MEAN_FROM ",\n  \"classifier_pooling\": null", FM_OK, FM_POOL_LAST, NULL},
        {"mean", MEAN_TO, FM_OK, FM_POOL_MEAN, NULL},
        {"max", MEAN_FROM ",\n  \"classifier_pooling\": \"max\"", FM_ERR_CONFIG, 0,
         "config.json: \"classifier_pooling\" must be \"last\" or \"mean\", not \"max\""},
        {"Mean", MEAN_FROM ",\n  \"classifier_pooling\": \"Mean\"", FM_ERR_CONFIG, 0, "not \"Mean\""},
        {"number", MEAN_FROM ",\n  \"classifier_pooling\": 1", FM_ERR_CONFIG, 0,
         "\"classifier_pooling\" must be \"last\" or \"mean\" (a string)"},
        {"twice", MEAN_TO ",\n  \"classifier_pooling\": \"mean\"", FM_ERR_CONFIG, 0,
         "key \"classifier_pooling\" appears twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *d = variant(dir, cases[i].name, MEAN_FROM, cases[i].to);
        fm_model *got = NULL;
        fm_status st = fm_model_load(&got, d);
        if (st != cases[i].status || (cases[i].message && !strstr(fm_last_error(), cases[i].message)))
            fail_msg("%s: got %s \"%s\", want %s \"%s\"", cases[i].name, fm_status_name(st), st ? fm_last_error() : "",
                     fm_status_name(cases[i].status), cases[i].message ? cases[i].message : "");
        if (!st) assert_int_equal(fm_model_classifier_pooling(got), cases[i].pooling);
        else assert_null(got);
        fm_model_free(got);
        free(d);
    }
    remove_dir_recursive(dir);
    free(dir), free(out), free(out2), free(q8);
}

/* Every allocation of loading, attaching and saving a head failing in turn: FM_ERR_NOMEM with an
 * "out of memory" message, nothing half-made. */
static void test_out_of_memory(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *out = test_path(dir, "saved");
    fm_config c = {.n_layer = 1, .n_head = 2, .n_embd = 16, .vocab_size = 40, .n_positions = 16,
                   .layer_norm_epsilon = 1e-5f};
    const char *labels[] = {"a", "b", "c"};
    for (long k = 1, pass = 0; pass < 2; k++) { /* pass 0: transformers' files; 1: a new head saved, loaded */
        fm_model *m = NULL, *back = NULL, *fresh = NULL;
        fm_alloc_fail_at(k, 0);
        fm_status st = FM_OK;
        if (pass == 0) st = fm_model_load(&m, REF);
        if (pass == 1) st = fm_model_init(&fresh, &c, 1);
        if (pass == 1 && !st) st = fm_model_add_classifier_pooled(fresh, 3, labels, 2, FM_POOL_MEAN, 1);
        if (pass == 1 && !st) st = fm_model_save(fresh, out);
        if (pass == 1 && !st) st = fm_model_load(&back, out);
        int failed = fm_alloc_failed();
        fm_alloc_fail_at(0, 0);
        if (st && (st != FM_ERR_NOMEM || !strstr(fm_last_error(), "out of memory")))
            fail_msg("allocation %ld failing: %s (\"%s\")", k, fm_status_name(st), fm_last_error());
        if (!st) assert_int_equal(fm_model_num_labels(pass ? back : m), 3);
        if (!st) assert_int_equal(fm_model_classifier_pooling(pass ? back : m), pass ? FM_POOL_MEAN : FM_POOL_LAST);
        fm_model_free(m), fm_model_free(back), fm_model_free(fresh);
        if (!failed) {
            assert_int_equal(st, FM_OK);
            pass++, k = 0;
        }
    }
    remove_dir_recursive(dir);
    free(dir), free(out);
}

int main(void) {
    fm_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_with_torch), cmocka_unit_test(test_last_index_rule),
        cmocka_unit_test(test_save_load),         cmocka_unit_test(test_trains_on_tsv),
        cmocka_unit_test(test_errors),            cmocka_unit_test(test_mean_head),
        cmocka_unit_test(test_gradients_finite_differences), cmocka_unit_test(test_pooling_files),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
