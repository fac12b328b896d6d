/*
 * test_alloc_fail.c — out-of-memory paths, tested the way sqlite tests them: for k = 1, 2, 3, ...
 * the k-th allocation of an operation fails (fm_alloc_fail_at, core/alloc.h), until the operation
 * runs through without reaching the failure. Each time the operation must either fail with
 * FM_ERR_NOMEM (or a status whose message says "out of memory"), with its outputs left empty, no
 * temporary file left behind and files it replaces untouched, or succeed with exactly the results
 * of a run without failures (a documented fallback: a kernel without its workspace, the
 * tokenizer's encoder without its cache). Under `make asan` LeakSanitizer checks that no failure
 * leaks. The persistent variant (every allocation from the k-th on fails) covers the fallbacks
 * that follow one another.
 *
 * Operations: loading a model directory (with an attached tensor) and an int8 one; loading a
 * tokenizer.json, encoding, decoding and saving it; a training step through the library trainer (shards opened,
 * shard source, AdamW made, trainer made with a metrics file to reload, one step); saving a
 * checkpoint and a model directory over earlier ones; quantizing a model and saving it;
 * decoding (a session fed two prompts and stepped, and fm_generate with a tokenizer and a
 * stop string). The step runs before anything else multiplies, so that the kernels' per-thread
 * workspaces are still to be allocated and their failures are reached too.
 */
#include "test_util.h"

#include <math.h>

#include "core/alloc.h"

/* head size 24, an odd vocabulary */
static const fm_config cfg = {.n_layer = 2, .n_head = 2, .n_embd = 48, .vocab_size = 67,
                              .n_positions = 64, .n_inner = 0, .layer_norm_epsilon = 1e-5f};

enum { SEQ = 16, BATCH = 2, ACCUM = 2, TRAIN_TOKENS = 600, VAL_TOKENS = 200, HEAD = 3 };

/* ------------------------------------------------------------ shared fixture */

static char *tmp_dir;        /* everything below lives here */
static char *model_dir;      /* a saved model with an attached tensor (load, decode) */
static char *int8_dir;       /* a saved int8 model (load) */
static char *tok_path;       /* a trained tokenizer.json */
static char *train_path, *val_path;
static fm_model *ref_model;  /* what model_dir holds */
static fm_model *ref_int8;   /* what int8_dir holds */
static fm_tokenizer *ref_tok;

/* How many failure points each operation reached (single failures), and recovered from. */
typedef struct {
    const char *name;
    long reached, recovered, reached_persist, recovered_persist;
} op_count;
enum { OP_LOAD, OP_TOKENIZER, OP_STEP, OP_SAVE, OP_QUANT, OP_DECODE, N_OPS };
static op_count counts[N_OPS] = {{"load", 0, 0, 0, 0},  {"tokenizer", 0, 0, 0, 0}, {"step", 0, 0, 0, 0},
                                 {"save", 0, 0, 0, 0},  {"quant", 0, 0, 0, 0},     {"decode", 0, 0, 0, 0}};

static const char corpus[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
    "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. "
    "And God said, Let there be light: and there was light. And God saw the light, that it was good: and "
    "God divided the light from the darkness. 12345 67890 it's we'll they're\n\n";

/* The text the tokenizer operation encodes: special tokens, a piece longer than 48 bytes (the
 * heap merge), repeated pieces (the cache) and bytes outside the corpus. */
static char text[1024];
static size_t text_len;

static void make_text(void) {
    text_len = (size_t)snprintf(text, sizeof text,
                                "And God said<|endoftext|>, Let there be light: and there was light.   \n"
                                "thethethethethethethethethethethethethethethethethethethethetheend "
                                "\xc3\xa9t\xc3\xa9 \xe2\x82\xac 12345<|user|>the face of the waters");
}

static int tokens_at(size_t i, int salt) { return (int)((i * 37 + (size_t)salt * 101 + i / 7) % (size_t)cfg.vocab_size); }

static int setup(void **state) {
    (void)state;
    fm_set_threads(2);
    tmp_dir = make_temp_dir();
    model_dir = test_path(tmp_dir, "model");
    int8_dir = test_path(tmp_dir, "int8");
    tok_path = test_path(tmp_dir, "tokenizer.json");
    train_path = test_path(tmp_dir, "train.bin");
    val_path = test_path(tmp_dir, "val.bin");

    if (fm_model_init(&ref_model, &cfg, 7) != FM_OK) return -1;
    int head;
    if (fm_model_attach(ref_model, "score.weight", 2, cfg.n_embd, HEAD, 1, &head) != FM_OK) return -1;
    const fm_tensor_info *t = fm_model_tensor(ref_model, head);
    for (size_t i = 0; i < t->numel; i++) t->data[i] = 0.01f * (float)((int)(i % 17) - 8);
    if (fm_model_save(ref_model, model_dir) != FM_OK) return -1;
    /* (no attached tensor: an int8 model.safetensors does not list them) */
    if (fm_model_init(&ref_int8, &cfg, 8) != FM_OK || fm_model_quantize(ref_int8) != FM_OK ||
        fm_model_save(ref_int8, int8_dir) != FM_OK)
        return -1;

    const char *texts[1] = {corpus};
    size_t lens[1] = {sizeof corpus - 1};
    if (fm_tokenizer_train(&ref_tok, texts, lens, 1, 320) != FM_OK) return -1;
    if (fm_tokenizer_save(ref_tok, tok_path) != FM_OK) return -1;
    make_text();

    int train[TRAIN_TOKENS], val[VAL_TOKENS];
    for (size_t i = 0; i < TRAIN_TOKENS; i++) train[i] = tokens_at(i, 1);
    for (size_t i = 0; i < VAL_TOKENS; i++) val[i] = tokens_at(i, 2);
    if (fm_shard_write(train_path, train, TRAIN_TOKENS, cfg.vocab_size, 1000) != FM_OK) return -1;
    if (fm_shard_write(val_path, val, VAL_TOKENS, cfg.vocab_size, 300) != FM_OK) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    fm_model_free(ref_model);
    fm_model_free(ref_int8);
    fm_tokenizer_free(ref_tok);
    remove_dir_recursive(tmp_dir);
    free(model_dir), free(int8_dir), free(tok_path), free(train_path), free(val_path), free(tmp_dir);
    return 0;
}

/* ------------------------------------------------------------ the loop */

/* An operation: prepare (no injection), run (injected), check (no injection: st is what run
 * returned, failed whether the injection was reached), cleanup (no injection). */
typedef struct {
    void (*prepare)(void *ctx);
    fm_status (*run)(void *ctx);
    void (*check)(void *ctx, fm_status st, int failed);
    void (*cleanup)(void *ctx);
} op;

/* A failure that the caller sees as out of memory, with a message. */
static void assert_nomem(fm_status st, const char *what, long k) {
    if (st == FM_OK) return;
    if (st != FM_ERR_NOMEM && !strstr(fm_last_error(), "out of memory"))
        fail_msg("%s, allocation %ld failing: %s (\"%s\"), not out of memory", what, k, fm_status_name(st),
                 fm_last_error());
    if (!fm_last_error()[0]) fail_msg("%s, allocation %ld failing: no message", what, k);
}

/* Runs o with the k-th allocation failing for k = 1, 2, ... until a run does not reach it. */
static void run_failures(op_count *count, const op *o, void *ctx, int persist) {
    long reached = 0, recovered = 0;
    for (long k = 1;; k++) {
        if (o->prepare) o->prepare(ctx);
        fm_alloc_fail_at(k, persist);
        fm_status st = o->run(ctx);
        int failed = fm_alloc_failed();
        fm_alloc_fail_at(0, 0);
        if (failed) {
            reached++;
            if (st == FM_OK && recovered++ < 8)
                print_message("%s%s: allocation %ld failing was recovered from\n", count->name,
                              persist ? " (persistent)" : "", k);
            if (st != FM_OK) assert_nomem(st, count->name, k);
        } else if (st != FM_OK) {
            fail_msg("%s without a failure (k = %ld): %s (\"%s\")", count->name, k, fm_status_name(st),
                     fm_last_error());
        }
        o->check(ctx, st, failed);
        if (o->cleanup) o->cleanup(ctx);
        if (!failed) break;
        if (k > 100000) fail_msg("%s: more than 100000 allocations", count->name);
    }
    if (persist) count->reached_persist = reached, count->recovered_persist = recovered;
    else count->reached = reached, count->recovered = recovered;
    print_message("%s%s: %ld failure points reached, %ld recovered from\n", count->name,
                  persist ? " (persistent)" : "", reached, recovered);
}

static void assert_no_tmp(const char *dir, const char *what) {
    if (count_dir_entries_containing(dir, ".tmp.") != 0) fail_msg("%s: a temporary file is left in %s", what, dir);
}

/* The model's tensors equal the reference's, bit for bit. */
static void assert_same_model(const fm_model *a, const fm_model *b, const char *what) {
    assert_int_equal(fm_model_num_tensors(a), fm_model_num_tensors(b));
    for (int i = 0; i < fm_model_num_tensors(a); i++) {
        const fm_tensor_info *x = fm_model_tensor(a, i), *y = fm_model_tensor(b, i);
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->numel, y->numel);
        if (memcmp(x->data, y->data, sizeof(float) * x->numel) != 0)
            fail_msg("%s: tensor '%s' differs", what, x->name);
    }
}

/* ------------------------------------------------------------ (a) loading a model directory */

/* The float model (with an attached tensor), then the int8 one. */
typedef struct {
    fm_model *m, *q;
} load_ctx;

static fm_status load_run(void *p) {
    load_ctx *c = p;
    c->m = c->q = (fm_model *)1; /* must be set to NULL on failure */
    fm_status st = fm_model_load(&c->m, model_dir);
    if (st) {
        c->q = NULL;
        return st;
    }
    return fm_model_load(&c->q, int8_dir);
}

static void load_check(void *p, fm_status st, int failed) {
    (void)failed;
    load_ctx *c = p;
    if (c->m) {
        assert_same_model(c->m, ref_model, "loaded model");
        assert_string_equal(fm_model_weight_format(c->m), "f32");
    }
    if (st) {
        assert_null(c->q);
        return;
    }
    assert_non_null(c->m);
    assert_non_null(c->q);
    assert_same_model(c->q, ref_int8, "loaded int8 model");
    assert_string_equal(fm_model_weight_format(c->q), "q8_0");
}

static void load_cleanup(void *p) {
    load_ctx *c = p;
    fm_model_free(c->m);
    fm_model_free(c->q);
    c->m = c->q = NULL;
}

static void test_load(void **state) {
    (void)state;
    load_ctx c = {0};
    op o = {NULL, load_run, load_check, load_cleanup};
    run_failures(&counts[OP_LOAD], &o, &c, 1);
    run_failures(&counts[OP_LOAD], &o, &c, 0);
    assert_true(counts[OP_LOAD].reached > 0);
}

/* ------------------------------------------------------------ (b) a tokenizer */

typedef struct {
    char *out_path;
    fm_tokenizer *tok;
    int *ids, *want_ids;
    size_t n_ids, n_want;
    char *decoded;
    size_t decoded_len;
    unsigned char *want_file;
    size_t want_file_len;
} tok_ctx;

static void tok_prepare(void *p) {
    tok_ctx *c = p;
    unlink(c->out_path);
}

static fm_status tok_run(void *p) {
    tok_ctx *c = p;
    c->tok = (fm_tokenizer *)1, c->ids = (int *)1, c->decoded = (char *)1;
    fm_status st = fm_tokenizer_load(&c->tok, tok_path);
    if (st) {
        if (c->tok) fail_msg("a failed fm_tokenizer_load left a tokenizer");
        c->ids = NULL, c->decoded = NULL;
        return st;
    }
    st = fm_tokenizer_encode(c->tok, text, text_len, 1, &c->ids, &c->n_ids);
    if (st) {
        if (c->ids) fail_msg("a failed fm_tokenizer_encode left ids");
        c->decoded = NULL;
        return st;
    }
    st = fm_tokenizer_decode(c->tok, c->ids, c->n_ids, &c->decoded, &c->decoded_len);
    if (st) {
        if (c->decoded) fail_msg("a failed fm_tokenizer_decode left text");
        return st;
    }
    return fm_tokenizer_save(c->tok, c->out_path);
}

static void tok_check(void *p, fm_status st, int failed) {
    (void)failed;
    tok_ctx *c = p;
    assert_no_tmp(tmp_dir, "tokenizer save");
    if (c->ids) {
        assert_int_equal(c->n_ids, c->n_want);
        assert_memory_equal(c->ids, c->want_ids, sizeof(int) * c->n_want);
    }
    if (c->decoded) {
        assert_int_equal(c->decoded_len, text_len);
        assert_memory_equal(c->decoded, text, text_len);
    }
    if (st) {
        assert_false(file_exists(c->out_path)); /* nothing, not half a file */
        return;
    }
    size_t len;
    unsigned char *bytes = read_file_bytes(c->out_path, &len);
    assert_non_null(bytes);
    assert_int_equal(len, c->want_file_len);
    assert_memory_equal(bytes, c->want_file, len);
    free(bytes);
}

static void tok_cleanup(void *p) {
    tok_ctx *c = p;
    fm_tokenizer_free(c->tok);
    free(c->ids);
    free(c->decoded);
    c->tok = NULL, c->ids = NULL, c->decoded = NULL;
}

static void test_tokenizer(void **state) {
    (void)state;
    tok_ctx c = {0};
    c.out_path = test_path(tmp_dir, "saved-tokenizer.json");
    assert_int_equal(fm_tokenizer_encode(ref_tok, text, text_len, 1, &c.want_ids, &c.n_want), FM_OK);
    assert_int_equal(fm_tokenizer_save(ref_tok, c.out_path), FM_OK);
    c.want_file = read_file_bytes(c.out_path, &c.want_file_len);
    op o = {tok_prepare, tok_run, tok_check, tok_cleanup};
    run_failures(&counts[OP_TOKENIZER], &o, &c, 0);
    assert_true(counts[OP_TOKENIZER].reached > 0);
    free(c.want_ids);
    free(c.want_file);
    free(c.out_path);
}

/* ------------------------------------------------------------ (c) a training step */

static const char metrics_before[] = "{\"step\":0,\"loss\":5.5}\n{\"step\":3,\"loss\":4.25}\n";
static const char metrics_after[] = "{\"step\":0,\"loss\":5.5}\n"; /* the lines past step 0 dropped */

typedef struct {
    char *metrics_path;
    fm_model *m;
    fm_shard *train, *val;
    fm_data_source src;
    fm_optimizer *opt;
    fm_trainer *t;
    fm_train_state state;
    int trainer_made;
    float loss;
    /* the runs that succeeded after a failure, to compare with the clean run at the end */
    int n_recovered;
    float rec_loss[64];
    float *rec_grads[64];
} step_ctx;

static fm_adamw_config adam(void) {
    fm_adamw_config a;
    fm_adamw_config_default(&a);
    a.lr = 3e-3f, a.min_lr = 3e-4f, a.warmup_steps = 2, a.total_steps = 10;
    return a;
}

static void step_prepare(void *p) {
    step_ctx *c = p;
    assert_int_equal(fm_model_init(&c->m, &cfg, 11), FM_OK);
    write_file_bytes(c->metrics_path, metrics_before, sizeof metrics_before - 1);
    fm_rng_seed(&c->state.rng, 3);
    c->state.data_position = 0;
    c->state.seed = 3;
    c->trainer_made = 0;
}

static fm_status step_run(void *p) {
    step_ctx *c = p;
    fm_status st = fm_shard_open(&c->train, train_path);
    if (!st) st = fm_shard_open(&c->val, val_path);
    fm_adamw_config a = adam();
    if (!st) st = fm_optimizer_init(&c->opt, c->m, &a);
    if (!st) st = fm_shard_source_init(&c->src, c->train, c->val, SEQ, 64);
    fm_objective obj;
    fm_objective_cross_entropy(&obj);
    fm_trainer_config tc = {.batch = BATCH, .seq = SEQ, .grad_accum = ACCUM, .total_steps = 10,
                            .eval_every = 5, .metrics_path = c->metrics_path};
    if (!st) st = fm_trainer_init(&c->t, c->m, c->opt, &c->state, &c->src, &obj, &tc);
    c->trainer_made = st == FM_OK;
    fm_step_report r;
    if (!st) st = fm_trainer_step(c->t, &r);
    if (!st) c->loss = r.loss;
    return st;
}

static void step_check(void *p, fm_status st, int failed) {
    step_ctx *c = p;
    assert_no_tmp(tmp_dir, "trainer");
    size_t len;
    unsigned char *metrics = read_file_bytes(c->metrics_path, &len);
    assert_non_null(metrics);
    /* reloading the metrics either happened in full or not at all */
    const char *want = c->trainer_made ? metrics_after : metrics_before;
    if (len != strlen(want) || memcmp(metrics, want, len) != 0)
        fail_msg("metrics file after %s trainer: \"%s\"", c->trainer_made ? "a" : "no", (const char *)metrics);
    free(metrics);
    if (st) {
        if (c->trainer_made) {
            /* a failed step leaves the stream where it was and updates nothing */
            fm_rng fresh;
            fm_rng_seed(&fresh, 3);
            assert_memory_equal(&c->state.rng, &fresh, sizeof fresh);
            assert_int_equal(c->state.data_position, 0);
            assert_int_equal(fm_optimizer_steps_done(c->opt), 0);
        }
        return;
    }
    assert_int_equal(fm_optimizer_steps_done(c->opt), 1);
    assert_int_equal(c->state.data_position, (uint64_t)BATCH * ACCUM * SEQ);
    if (failed) { /* recovered: kept to compare with the clean run */
        assert_true(c->n_recovered < 64);
        size_t n = fm_model_num_params(c->m);
        float *copy = malloc(sizeof(float) * n);
        memcpy(copy, fm_model_grads(c->m), sizeof(float) * n);
        c->rec_loss[c->n_recovered] = c->loss;
        c->rec_grads[c->n_recovered++] = copy;
    }
}

static void step_cleanup(void *p);

/* The step's op has no cleanup (the last, clean run's model is kept for the comparison): what a
 * failed or recovered run left is freed here. */
static void step_check_and_free(void *p, fm_status st, int failed) {
    step_check(p, st, failed);
    if (failed) step_cleanup(p);
}

static void step_cleanup(void *p) {
    step_ctx *c = p;
    fm_trainer_free(c->t);
    fm_shard_source_free(&c->src);
    fm_optimizer_free(c->opt);
    fm_shard_close(c->train);
    fm_shard_close(c->val);
    fm_model_free(c->m);
    c->t = NULL, c->opt = NULL, c->train = NULL, c->val = NULL, c->m = NULL;
}

/* The recovered runs against the clean run (the last): the same loss (1e-6 relative) and the
 * same step's gradients (the trainer leaves them in place until its next step), each within
 * 1e-4 of the largest gradient. The attention fallback sums in another order, which moves a
 * gradient by float rounding; a wrong fallback (e.g. dK not accumulated over rows) moves them by
 * their own size. Not the parameters: AdamW's first step moves each by about lr whatever its
 * gradient's size, so a near-zero gradient whose rounding differs moves its parameter by up to
 * 2 lr, which says nothing about the fallback. Frees the copies; returns 0 with a message in why
 * when one differs. */
static int compare_recovered(step_ctx *c, const float *clean_grads, float clean_loss, size_t n, char *why,
                             size_t why_size) {
    int bitwise = 0, ok = 1;
    double scale = 0.0, worst_all = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)clean_grads[i]));
    for (int r = 0; r < c->n_recovered; r++) {
        float d = fabsf(c->rec_loss[r] - clean_loss);
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)c->rec_grads[r][i] - clean_grads[i]));
        worst_all = fmax(worst_all, worst);
        if (ok && !(d <= 1e-6f * fabsf(clean_loss))) {
            snprintf(why, why_size, "recovered step %d: loss %.9g, the clean step's %.9g", r, c->rec_loss[r],
                     clean_loss);
            ok = 0;
        } else if (ok && !(worst <= 1e-4 * scale)) {
            snprintf(why, why_size, "recovered step %d: a gradient differs by %g from the clean step's (largest %g)",
                     r, worst, scale);
            ok = 0;
        }
        bitwise += c->rec_loss[r] == clean_loss && memcmp(c->rec_grads[r], clean_grads, sizeof(float) * n) == 0;
        free(c->rec_grads[r]);
    }
    if (c->n_recovered)
        print_message("step: %d runs recovered (kernels without workspace), %d bitwise equal to the clean run; "
                      "gradients within %.3g of the largest\n", c->n_recovered, bitwise, worst_all / scale);
    c->n_recovered = 0;
    return ok;
}

static void test_step(void **state) {
    (void)state;
    step_ctx c = {0};
    c.metrics_path = test_path(tmp_dir, "metrics.jsonl");
    /* no cleanup: the last (clean) run's model is kept for the comparison */
    op o = {step_prepare, step_run, step_check_and_free, NULL};
    float *clean = NULL;
    float clean_loss = 0.0f;
    size_t n = 0;
    /* persistent first: the kernels' workspaces are still unallocated, and each run leaves one
     * more of them in place, so every fallback is reached in turn */
    for (int persist = 1; persist >= 0; persist--) {
        run_failures(&counts[OP_STEP], &o, &c, persist);
        /* the last run was clean: its model is still there */
        n = fm_model_num_params(c.m);
        if (!clean) {
            clean = malloc(sizeof(float) * n);
            memcpy(clean, fm_model_grads(c.m), sizeof(float) * n);
            clean_loss = c.loss;
        } else {
            assert_memory_equal(clean, fm_model_grads(c.m), sizeof(float) * n);
            assert_true(clean_loss == c.loss);
        }
        step_cleanup(&c);
    }
    char why[256];
    int same = compare_recovered(&c, clean, clean_loss, n, why, sizeof why);
    free(clean);
    free(c.metrics_path);
    if (!same) fail_msg("%s", why);
    assert_true(counts[OP_STEP].reached > 0);
}

/* ------------------------------------------------------------ (d) saving a checkpoint */

#define N_FILES 5
static const char *const file_names[N_FILES] = {"ckpt/config.json", "ckpt/model.safetensors",
                                                "ckpt/training_state.safetensors", "model2/config.json",
                                                "model2/model.safetensors"};

typedef struct {
    fm_model *m;
    fm_optimizer *opt;
    fm_train_state state;
    char *ckpt, *mdir, *paths[N_FILES];
    unsigned char *old[N_FILES], *fresh[N_FILES];
    size_t old_len[N_FILES], fresh_len[N_FILES];
    fm_status ckpt_st, model_st;
} save_ctx;

static void save_prepare(void *p) {
    save_ctx *c = p;
    for (int i = 0; i < N_FILES; i++) write_file_bytes(c->paths[i], c->old[i], c->old_len[i]);
}

static fm_status save_run(void *p) {
    save_ctx *c = p;
    c->model_st = FM_ERR_ARG; /* not tried */
    c->ckpt_st = fm_checkpoint_save(c->ckpt, c->m, c->opt, &c->state);
    if (c->ckpt_st) return c->ckpt_st;
    return c->model_st = fm_model_save(c->m, c->mdir);
}

/* Files [first, first + n) are all the old ones (saved false) or all the new ones (true). */
static void assert_files(save_ctx *c, int first, int n, int saved) {
    for (int i = first; i < first + n; i++) {
        size_t len;
        unsigned char *bytes = read_file_bytes(c->paths[i], &len);
        const unsigned char *want = saved ? c->fresh[i] : c->old[i];
        size_t want_len = saved ? c->fresh_len[i] : c->old_len[i];
        if (!bytes || len != want_len || memcmp(bytes, want, len) != 0)
            fail_msg("%s is not the %s file", file_names[i], saved ? "newly saved" : "previous");
        free(bytes);
    }
}

static void save_check(void *p, fm_status st, int failed) {
    (void)st, (void)failed;
    save_ctx *c = p;
    assert_no_tmp(c->ckpt, "checkpoint save");
    assert_no_tmp(c->mdir, "model save");
    assert_files(c, 0, 3, c->ckpt_st == FM_OK);
    assert_files(c, 3, 2, c->model_st == FM_OK);
    if (c->ckpt_st) { /* and the previous checkpoint still loads */
        fm_model *m;
        fm_optimizer *o;
        fm_train_state s;
        assert_int_equal(fm_checkpoint_load(c->ckpt, &m, &o, &s), FM_OK);
        assert_int_equal(fm_optimizer_steps_done(o), 1);
        fm_optimizer_free(o);
        fm_model_free(m);
    }
}

/* One AdamW step on a fixed batch. */
static void train_once(save_ctx *c) {
    int tokens[BATCH * SEQ], targets[BATCH * SEQ];
    for (int i = 0; i < BATCH * SEQ; i++) tokens[i] = tokens_at((size_t)i, 4), targets[i] = tokens_at((size_t)i + 1, 4);
    float loss;
    fm_model_zero_grad(c->m);
    assert_int_equal(fm_model_train_loss(c->m, tokens, targets, NULL, BATCH, SEQ, &loss), FM_OK);
    assert_int_equal(fm_optimizer_step(c->opt, c->m, NULL, NULL), FM_OK);
    c->state.data_position += BATCH * SEQ;
    fm_rng_u64(&c->state.rng);
}

static void test_save(void **state) {
    (void)state;
    save_ctx c = {0};
    c.ckpt = test_path(tmp_dir, "ckpt");
    c.mdir = test_path(tmp_dir, "model2");
    for (int i = 0; i < N_FILES; i++) c.paths[i] = test_path(tmp_dir, file_names[i]);
    /* the previous checkpoint and model directory (step 1), then the state to save (step 2) */
    assert_int_equal(fm_model_init(&c.m, &cfg, 21), FM_OK);
    assert_int_equal(fm_model_attach(c.m, "score.weight", 2, cfg.n_embd, HEAD, 1, NULL), FM_OK);
    fm_adamw_config a = adam();
    assert_int_equal(fm_optimizer_init(&c.opt, c.m, &a), FM_OK);
    fm_rng_seed(&c.state.rng, 9);
    c.state.seed = 9;
    train_once(&c);
    assert_int_equal(fm_checkpoint_save(c.ckpt, c.m, c.opt, &c.state), FM_OK);
    assert_int_equal(fm_model_save(c.m, c.mdir), FM_OK);
    for (int i = 0; i < N_FILES; i++) c.old[i] = read_file_bytes(c.paths[i], &c.old_len[i]);
    train_once(&c);
    assert_int_equal(fm_checkpoint_save(c.ckpt, c.m, c.opt, &c.state), FM_OK);
    assert_int_equal(fm_model_save(c.m, c.mdir), FM_OK);
    for (int i = 0; i < N_FILES; i++) {
        c.fresh[i] = read_file_bytes(c.paths[i], &c.fresh_len[i]);
        if (i != 0 && i != 3 && c.fresh_len[i] == c.old_len[i] && memcmp(c.fresh[i], c.old[i], c.old_len[i]) == 0)
            fail_msg("%s: the second save wrote the same bytes", file_names[i]);
    }

    op o = {save_prepare, save_run, save_check, NULL};
    run_failures(&counts[OP_SAVE], &o, &c, 1);
    run_failures(&counts[OP_SAVE], &o, &c, 0);
    assert_true(counts[OP_SAVE].reached > 0);

    for (int i = 0; i < N_FILES; i++) free(c.old[i]), free(c.fresh[i]), free(c.paths[i]);
    fm_optimizer_free(c.opt);
    fm_model_free(c.m);
    free(c.ckpt), free(c.mdir);
}

/* ------------------------------------------------------------ int8: quantize and save */

typedef struct {
    char *qdir;
    fm_model *m, *loaded, *ref;
    fm_status quant_st;
} quant_ctx;

static void quant_prepare(void *p) {
    quant_ctx *c = p;
    assert_int_equal(fm_model_init(&c->m, &cfg, 31), FM_OK);
    remove_dir_recursive(c->qdir);
}

static fm_status quant_run(void *p) {
    quant_ctx *c = p;
    fm_status st = c->quant_st = fm_model_quantize(c->m);
    if (!st) st = fm_model_save(c->m, c->qdir);
    return st;
}

static void quant_check(void *p, fm_status st, int failed) {
    (void)failed;
    quant_ctx *c = p;
    c->loaded = NULL;
    if (c->quant_st) { /* a failed quantization leaves the float model as it was */
        assert_string_equal(fm_model_weight_format(c->m), "f32");
        assert_same_model(c->m, c->ref, "model after a failed quantization");
    } else {
        assert_string_equal(fm_model_weight_format(c->m), "q8_0");
    }
    if (st) { /* no file, not half of one, nor one of the two */
        if (file_exists(c->qdir) && count_dir_entries_containing(c->qdir, "") != 2)
            fail_msg("a failed int8 save left files in %s", c->qdir);
        return;
    }
    assert_no_tmp(c->qdir, "int8 save");
    assert_int_equal(fm_model_load(&c->loaded, c->qdir), FM_OK);
    assert_string_equal(fm_model_weight_format(c->loaded), "q8_0");
    assert_same_model(c->loaded, c->m, "int8 model loaded");
}

static void quant_cleanup(void *p) {
    quant_ctx *c = p;
    fm_model_free(c->m);
    fm_model_free(c->loaded);
    c->m = c->loaded = NULL;
}

static void test_quant(void **state) {
    (void)state;
    quant_ctx c = {0};
    c.qdir = test_path(tmp_dir, "int8-saved");
    assert_int_equal(fm_model_init(&c.ref, &cfg, 31), FM_OK);
    op o = {quant_prepare, quant_run, quant_check, quant_cleanup};
    run_failures(&counts[OP_QUANT], &o, &c, 0);
    assert_true(counts[OP_QUANT].reached > 0);
    fm_model_free(c.ref);
    free(c.qdir);
}

/* ------------------------------------------------------------ (e) decoding */

#define N_PROMPTS 3
static const int prompt_lens[N_PROMPTS] = {5, 33, 2};

typedef struct {
    int prompts[N_PROMPTS][40];
    const int *prompt_ptrs[N_PROMPTS];
    fm_session *s, *g;
    float *logits;           /* (N_PROMPTS + 2, V): after each feed, then the batched step's two rows */
    int n_logits;
    fm_generate_result results[N_PROMPTS];
    float *want_logits;
    fm_generate_result want[N_PROMPTS];
    fm_generate_config gc;
} decode_ctx;

static fm_status decode_run(void *p) {
    decode_ctx *c = p;
    int V = cfg.vocab_size;
    c->n_logits = 0;
    c->s = c->g = (fm_session *)1;
    fm_status st = fm_session_init(&c->s, ref_model, 2, 48);
    if (st) {
        if (c->s) fail_msg("a failed fm_session_init left a session");
        c->g = NULL;
        return st;
    }
    const float *lg;
    for (int i = 0; i < 2 && !st; i++) {
        st = fm_session_feed(c->s, i, c->prompts[i], prompt_lens[i], &lg);
        if (!st) memcpy(c->logits + (size_t)c->n_logits++ * V, lg, sizeof(float) * V);
    }
    int seqs[2] = {1, 0}, toks[2] = {7, 11};
    if (!st) st = fm_session_step(c->s, seqs, toks, 2, &lg);
    if (!st) {
        memcpy(c->logits + (size_t)c->n_logits * V, lg, sizeof(float) * 2 * V);
        c->n_logits += 2;
    }
    if (st) {
        c->g = NULL;
        return st;
    }
    st = fm_session_init(&c->g, ref_model, 2, 40); /* 90 tokens: sequences fill it and go on */
    if (st) {
        if (c->g) fail_msg("a failed fm_session_init left a session");
        return st;
    }
    return fm_generate(c->g, &c->gc, c->prompt_ptrs, prompt_lens, N_PROMPTS, NULL, NULL, c->results);
}

static void assert_same_result(const fm_generate_result *a, const fm_generate_result *b) {
    assert_int_equal(a->n_tokens, b->n_tokens);
    assert_int_equal(a->finish, b->finish);
    assert_memory_equal(a->tokens, b->tokens, sizeof(int) * a->n_tokens);
    assert_memory_equal(a->logprobs, b->logprobs, sizeof(float) * a->n_tokens);
    assert_int_equal(a->text_len, b->text_len);
    assert_memory_equal(a->text, b->text, a->text_len);
}

static void decode_check(void *p, fm_status st, int failed) {
    (void)failed;
    decode_ctx *c = p;
    /* whatever was computed before the failure is right */
    assert_memory_equal(c->logits, c->want_logits, sizeof(float) * c->n_logits * cfg.vocab_size);
    if (st) {
        if (c->g) /* fm_generate failed: its results are empty */
            for (int i = 0; i < N_PROMPTS; i++) {
                assert_null(c->results[i].tokens);
                assert_null(c->results[i].text);
                assert_int_equal(c->results[i].n_tokens, 0);
            }
        return;
    }
    assert_int_equal(c->n_logits, 4);
    for (int i = 0; i < N_PROMPTS; i++) assert_same_result(&c->results[i], &c->want[i]);
}

static void decode_cleanup(void *p) {
    decode_ctx *c = p;
    fm_session_free(c->s);
    if (c->g) {
        fm_session_free(c->g);
        for (int i = 0; i < N_PROMPTS; i++) fm_generate_result_free(&c->results[i]);
    }
    c->s = c->g = NULL;
}

static void test_decode(void **state) {
    (void)state;
    decode_ctx c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < N_PROMPTS; i++) {
        for (int j = 0; j < prompt_lens[i]; j++) c.prompts[i][j] = tokens_at((size_t)j, 5 + i);
        c.prompt_ptrs[i] = c.prompts[i];
    }
    fm_generate_config_default(&c.gc);
    c.gc.max_tokens = 90; /* past the first capacities of the results */
    c.gc.sampler.temperature = 0.9f, c.gc.sampler.top_k = 20, c.gc.seed = 5;
    c.gc.tok = ref_tok;
    static const char *const stops[1] = {"\x01\x02"};
    c.gc.stops = stops, c.gc.n_stops = 1;
    size_t bytes = sizeof(float) * 4 * cfg.vocab_size;
    c.logits = malloc(bytes);
    /* the clean run first: what every run must give */
    assert_int_equal(decode_run(&c), FM_OK);
    c.want_logits = malloc(bytes);
    memcpy(c.want_logits, c.logits, bytes);
    memcpy(c.want, c.results, sizeof c.want);
    memset(c.results, 0, sizeof c.results);
    fm_session_free(c.s);
    fm_session_free(c.g);
    c.s = c.g = NULL;

    op o = {NULL, decode_run, decode_check, decode_cleanup};
    run_failures(&counts[OP_DECODE], &o, &c, 0);
    assert_true(counts[OP_DECODE].reached > 0);
    for (int i = 0; i < N_PROMPTS; i++) fm_generate_result_free(&c.want[i]);
    free(c.logits);
    free(c.want_logits);
}

/* ------------------------------------------------------------ summary */

static void test_summary(void **state) {
    (void)state;
    long total = 0, recovered = 0;
    char line[512];
    size_t used = (size_t)snprintf(line, sizeof line, "allocation failure points reached:");
    for (int i = 0; i < N_OPS; i++) {
        total += counts[i].reached;
        recovered += counts[i].recovered + counts[i].recovered_persist;
        used += (size_t)snprintf(line + used, sizeof line - used, "%s %s %ld", i ? "," : "", counts[i].name,
                                 counts[i].reached);
    }
    snprintf(line + used, sizeof line - used, "; %ld in all (persistent runs besides: load %ld, step %ld, save %ld); "
             "%ld runs recovered through a fallback; all handled\n", total, counts[OP_LOAD].reached_persist,
             counts[OP_STEP].reached_persist, counts[OP_SAVE].reached_persist, recovered);
    print_message("%s", line);
    for (int i = 0; i < N_OPS; i++)
        if (counts[i].reached <= 0) fail_msg("%s reached no failure point", counts[i].name);
}

int main(void) {
    /* The step goes first: nothing has multiplied yet, so the kernels' workspaces are still to
     * be allocated (see the top). */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step),    cmocka_unit_test(test_load),   cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_save),    cmocka_unit_test(test_quant),  cmocka_unit_test(test_decode),
        cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests_name("allocation failures", tests, setup, teardown);
}
