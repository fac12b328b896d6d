/*
 * cmd-pretrain.c — `fm pretrain`: self-supervised next-token pre-training on token shards.
 *
 * A run directory is a model directory (config.json, model.safetensors, tokenizer.json,
 * training_state.safetensors) plus run.json (the run's settings, so --resume repeats them),
 * metrics.jsonl (one JSON line per step and per evaluation), loss.svg and samples.txt.
 * Batches are drawn from the run's RNG, which the checkpoint saves, so an interrupted run
 * (Ctrl-C saves a checkpoint) resumed with --resume makes the same losses as one that was not.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* ------------------------------------------------------------ settings */

typedef struct {
    const char *name;
    int layers, dim, heads, context;
} preset;

static const preset presets[] = {
    {"tiny", 2, 128, 4, 128},   /* ~0.5M parameters + embeddings */
    {"small", 4, 256, 4, 256},  /* ~3M + embeddings */
    {"medium", 6, 384, 6, 256}, /* ~11M + embeddings */
    {"gpt2", 12, 768, 12, 1024},
};

/* What run.json stores: everything that decides the sequence of losses. */
typedef struct {
    char data[4096];
    int batch, seq;
    int eval_every, eval_tokens, save_every, sample_every, sample_tokens;
    int total_steps;
    uint64_t seed;
    fm_matmul_precision precision;
} run_settings;

static void save_settings(const char *run_dir, const run_settings *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "data", r->data);
    cJSON_AddNumberToObject(o, "batch", r->batch);
    cJSON_AddNumberToObject(o, "seq", r->seq);
    cJSON_AddNumberToObject(o, "eval_every", r->eval_every);
    cJSON_AddNumberToObject(o, "eval_tokens", r->eval_tokens);
    cJSON_AddNumberToObject(o, "save_every", r->save_every);
    cJSON_AddNumberToObject(o, "sample_every", r->sample_every);
    cJSON_AddNumberToObject(o, "sample_tokens", r->sample_tokens);
    cJSON_AddNumberToObject(o, "total_steps", r->total_steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
    cJSON_AddStringToObject(o, "seed", seed);
    cJSON_AddStringToObject(o, "precision", fm_matmul_precision_name(r->precision));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    char *path = cli_path(run_dir, "run.json"), *tmp = cli_path(run_dir, "run.json.tmp");
    FILE *fp = fopen(tmp, "w");
    int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    if (fp && fclose(fp) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        fprintf(stderr, "fm pretrain: %s: cannot write the run settings\n", path);
        exit(1);
    }
    free(text), free(path), free(tmp);
}

static int json_int(const char *path, cJSON *o, const char *key, int lo, int hi) {
    cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < lo || it->valuedouble > hi) {
        fprintf(stderr, "fm pretrain: %s: \"%s\" is missing or out of range\n", path, key);
        exit(1);
    }
    return (int)it->valuedouble;
}

static void load_settings(const char *run_dir, run_settings *r) {
    char *path = cli_path(run_dir, "run.json");
    size_t len;
    char *text = cli_read_file("pretrain", path, &len);
    cJSON *o = cJSON_Parse(text);
    cJSON *data = o ? cJSON_GetObjectItemCaseSensitive(o, "data") : NULL;
    cJSON *seed = o ? cJSON_GetObjectItemCaseSensitive(o, "seed") : NULL;
    if (!cJSON_IsObject(o) || !cJSON_IsString(data) || !cJSON_IsString(seed)) {
        fprintf(stderr, "fm pretrain: %s: not a valid run settings file\n", path);
        exit(1);
    }
    snprintf(r->data, sizeof r->data, "%s", data->valuestring);
    r->seed = strtoull(seed->valuestring, NULL, 10);
    r->batch = json_int(path, o, "batch", 1, 1 << 20);
    r->seq = json_int(path, o, "seq", 1, 1 << 20);
    r->eval_every = json_int(path, o, "eval_every", 1, 1 << 30);
    r->eval_tokens = json_int(path, o, "eval_tokens", 1, 1 << 30);
    r->save_every = json_int(path, o, "save_every", 1, 1 << 30);
    r->sample_every = json_int(path, o, "sample_every", 0, 1 << 30);
    r->sample_tokens = json_int(path, o, "sample_tokens", 0, 1 << 20);
    r->total_steps = json_int(path, o, "total_steps", 1, 1 << 30);
    cJSON *precision = cJSON_GetObjectItemCaseSensitive(o, "precision"); /* absent: runs before bf16 */
    r->precision = FM_MATMUL_FP32;
    if (precision && (!cJSON_IsString(precision) || fm_matmul_precision_parse(precision->valuestring, &r->precision))) {
        fprintf(stderr, "fm pretrain: %s: \"precision\" must be \"fp32\" or \"bf16\"\n", path);
        exit(1);
    }
    cJSON_Delete(o);
    free(text), free(path);
}

/* ------------------------------------------------------------ interruption */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C stops at once */
}

/* ------------------------------------------------------------ data */

typedef struct {
    fm_shard *train, *val;
    int *tokens, *targets; /* (B, T) */
    int *window;           /* (T + 1) */
} data_state;

/* Row b of the batch: T tokens from a random offset of the training shard and their successors. */
static void draw_batch(data_state *d, fm_train_state *state, int B, int T) {
    size_t n = fm_shard_length(d->train);
    for (int b = 0; b < B; b++) {
        size_t off = fm_rng_u64(&state->rng) % (n - T);
        fm_shard_read(d->train, off, T + 1, d->window);
        memcpy(d->tokens + (size_t)b * T, d->window, sizeof(int) * T);
        memcpy(d->targets + (size_t)b * T, d->window + 1, sizeof(int) * T);
    }
    state->data_position += (uint64_t)B * T;
}

/* Mean next-token loss over the first eval_tokens of the held-out shard, in windows of T. */
static double held_out_loss(fm_model *m, data_state *d, int B, int T, int eval_tokens) {
    size_t n = fm_shard_length(d->val), windows = (n - 1) / T;
    size_t want = ((size_t)eval_tokens + T - 1) / T;
    if (windows > want) windows = want;
    double total = 0;
    for (size_t w0 = 0; w0 < windows; w0 += B) {
        int rows = (int)(windows - w0 < (size_t)B ? windows - w0 : (size_t)B);
        for (int b = 0; b < rows; b++) {
            fm_shard_read(d->val, (w0 + b) * T, T + 1, d->window);
            memcpy(d->tokens + (size_t)b * T, d->window, sizeof(int) * T);
            memcpy(d->targets + (size_t)b * T, d->window + 1, sizeof(int) * T);
        }
        float loss;
        fm_status st = fm_model_forward(m, d->tokens, rows, T);
        if (!st) st = fm_cross_entropy(fm_model_logits(m), d->targets, NULL, rows * T,
                                       fm_model_config(m)->vocab_size, &loss, NULL);
        if (st) cli_fail("pretrain", st);
        total += (double)loss * rows;
    }
    return windows ? total / windows : NAN;
}

/* ------------------------------------------------------------ metrics and pictures */

typedef struct {
    double *steps, *loss, *val_steps, *val_loss;
    int n, n_val, cap, cap_val;
} history;

static void history_add(double **xs, double **ys, int *n, int *cap, double x, double y) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        *xs = realloc(*xs, sizeof(double) * *cap);
        *ys = realloc(*ys, sizeof(double) * *cap);
    }
    (*xs)[*n] = x;
    (*ys)[(*n)++] = y;
}

/* Re-reads metrics.jsonl up to step `upto` (a resumed run drops lines past its checkpoint)
 * and rewrites it with just those lines. */
static void reload_metrics(const char *path, int64_t upto, history *h) {
    FILE *fp = fopen(path, "r");
    if (!fp) return;
    char *tmp_path = malloc(strlen(path) + 8);
    sprintf(tmp_path, "%s.tmp", path);
    FILE *out = fopen(tmp_path, "w");
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) > 0) {
        cJSON *o = cJSON_Parse(line);
        cJSON *step = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(step) && step->valuedouble <= (double)upto) {
            cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
            cJSON *val = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
            if (cJSON_IsNumber(loss)) history_add(&h->steps, &h->loss, &h->n, &h->cap, step->valuedouble, loss->valuedouble);
            if (cJSON_IsNumber(val))
                history_add(&h->val_steps, &h->val_loss, &h->n_val, &h->cap_val, step->valuedouble, val->valuedouble);
            if (out) fputs(line, out);
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(fp);
    if (out && fclose(out) == 0) rename(tmp_path, path);
    free(tmp_path);
}

static void plot(const char *run_dir, const history *h) {
    char *path = cli_path(run_dir, "loss.svg");
    fm_series s[2] = {{"train (per step)", h->steps, h->loss, h->n, "#1f77b4"},
                      {"held-out", h->val_steps, h->val_loss, h->n_val, "#d62728"}};
    fm_status st = fm_plot_svg(path, "fm pretrain: next-token loss", "step", "loss (nats per token)", s, 2, 0);
    if (st) fprintf(stderr, "fm pretrain: warning: %s\n", fm_last_error());
    free(path);
}

/* ------------------------------------------------------------ samples */

static void write_sample(const char *run_dir, fm_model *m, const fm_tokenizer *tok, int n_tokens, int64_t step,
                         uint64_t seed) {
    int V = fm_model_config(m)->vocab_size, ctx = fm_model_config(m)->n_positions;
    int eos = fm_tokenizer_special_id(tok, "<|endoftext|>");
    if (eos < 0 || n_tokens < 1) return;
    if (n_tokens > ctx - 1) n_tokens = ctx - 1;
    fm_decoder *dec;
    if (fm_decoder_init(&dec, m, ctx)) return;
    fm_sampler_config sc;
    fm_sampler_config_default(&sc);
    sc.temperature = 0.8f;
    sc.top_k = 40;
    fm_rng rng;
    fm_rng_seed(&rng, seed ^ (uint64_t)step); /* its own stream: training's RNG is untouched */
    int *ids = malloc(sizeof(int) * (n_tokens + 1)), n = 0;
    const float *logits;
    ids[0] = eos;
    fm_status st = fm_decoder_feed(dec, ids, 1, &logits);
    while (!st && n < n_tokens) {
        int next = fm_sample(&sc, logits, V, NULL, 0, &rng, NULL);
        if (next == eos) break;
        ids[++n] = next;
        st = fm_decoder_feed(dec, &ids[n], 1, &logits);
    }
    char *text;
    size_t len;
    if (!fm_tokenizer_decode(tok, ids + 1, n, &text, &len)) {
        char *path = cli_path(run_dir, "samples.txt");
        FILE *fp = fopen(path, "a");
        if (fp) {
            fprintf(fp, "--- step %lld\n%s\n", (long long)step, text);
            fclose(fp);
        }
        printf("--- sample at step %lld:\n%s\n---\n", (long long)step, text);
        free(path);
        free(text);
    }
    free(ids);
    fm_decoder_free(dec);
}

/* ------------------------------------------------------------ the run */

/* Seconds per training step (forward + backward + an AdamW estimate) on one batch: the fastest
 * of a few timed steps, so a moment of load on a shared machine does not shorten the run. */
static double time_step(fm_model *m, data_state *d, fm_train_state *probe, int B, int T) {
    float loss;
    double best = INFINITY;
    for (int i = 0; i < 5; i++) {
        draw_batch(d, probe, B, T);
        double t0 = cli_now();
        fm_model_zero_grad(m);
        fm_status st = fm_model_train_loss(m, d->tokens, d->targets, NULL, B, T, &loss);
        if (st) cli_fail("pretrain", st);
        if (i > 0 && cli_now() - t0 < best) best = cli_now() - t0; /* the first touches fresh memory */
    }
    fm_model_zero_grad(m);
    return best + 16.0 * fm_model_num_params(m) / 5e9; /* AdamW reads and writes 4 arrays */
}

static void format_time(char *buf, size_t n, double s) {
    if (s < 0 || !isfinite(s)) s = 0;
    int m = (int)(s / 60);
    snprintf(buf, n, "%dm%02ds", m, (int)(s - 60 * m));
}

static int run(int argc, char **argv) {
    const char *data_dir = NULL, *out = NULL, *preset_name = "small", *precision = NULL;
    fm_config cfg = {0};
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    ac.lr = 1e-3f;
    ac.min_lr = -1;
    ac.warmup_steps = -1;
    int layers = 0, dim = 0, heads = 0, context = 0, steps = 0, threads = 0, resume = 0;
    float minutes = 0;
    run_settings rs = {.batch = 16, .seq = 0, .eval_every = 100, .eval_tokens = 32768, .save_every = 500,
                       .sample_every = 500, .sample_tokens = 64, .seed = 1337};
    cli_option opts[] = {
        {"data", OPT_STRING, &data_dir, 0, 0, "directory of fm data prepare (train.bin, val.bin, tokenizer.json)"},
        {"out", OPT_STRING, &out, 0, 0, "run directory = model directory (required)"},
        {"preset", OPT_STRING, &preset_name, 0, 0, "tiny, small (default), medium or gpt2"},
        {"layers", OPT_INT, &layers, 1, 4096, "transformer blocks (overrides the preset)"},
        {"dim", OPT_INT, &dim, 1, 65536, "width"},
        {"heads", OPT_INT, &heads, 1, 65536, "attention heads (must divide the width)"},
        {"context", OPT_INT, &context, 1, 1048576, "longest context (n_positions)"},
        {"batch", OPT_INT, &rs.batch, 1, 65536, "sequences per step (16)"},
        {"seq", OPT_INT, &rs.seq, 1, 1048576, "tokens per sequence (default: the context)"},
        {"lr", OPT_FLOAT, &ac.lr, 0, 10, "peak learning rate (1e-3)"},
        {"min-lr", OPT_FLOAT, &ac.min_lr, 0, 10, "final learning rate (default lr / 10)"},
        {"warmup", OPT_INT, &ac.warmup_steps, 0, 1 << 30, "warm-up steps (default min(100, steps / 10))"},
        {"weight-decay", OPT_FLOAT, &ac.weight_decay, 0, 10, "AdamW decay of the 2-D weights (0.1)"},
        {"grad-clip", OPT_FLOAT, &ac.grad_clip, 0, 1e6, "global gradient-norm clip, 0 = off (1.0)"},
        {"beta2", OPT_FLOAT, &ac.beta2, 0, 0.99999, "AdamW's second-moment decay (0.95)"},
        {"steps", OPT_INT, &steps, 1, 1 << 30, "training steps"},
        {"minutes", OPT_FLOAT, &minutes, 0.01, 1e6, "time budget, turned into steps by a timing at the start"},
        {"eval-every", OPT_INT, &rs.eval_every, 1, 1 << 30, "held-out evaluation interval (100)"},
        {"eval-tokens", OPT_INT, &rs.eval_tokens, 1, 1 << 30, "held-out tokens per evaluation (32768)"},
        {"save-every", OPT_INT, &rs.save_every, 1, 1 << 30, "checkpoint interval (500)"},
        {"sample-every", OPT_INT, &rs.sample_every, 0, 1 << 30, "sample interval, 0 = never (500)"},
        {"sample-tokens", OPT_INT, &rs.sample_tokens, 0, 1 << 20, "tokens per sample (64)"},
        {"seed", OPT_U64, &rs.seed, 0, 1.8e19, "random seed (1337)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
        {"precision", OPT_STRING, &precision, 0, 0,
         "matrix products: fp32 (default) or bf16 (bfloat16 factors, float32 sums and weights)"},
        {"resume", OPT_FLAG, &resume, 0, 0, "continue the run in --out from its checkpoint"},
    };
    char *positional[1];
    cli_parse(&cmd_pretrain, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows up in logs as it happens */
    if (!out) cli_usage_error("pretrain", "--out RUN_DIR is required");
    fm_set_threads(threads);

    fm_model *model = NULL;
    fm_optimizer *opt = NULL;
    fm_train_state state = {0};
    fm_status st;
    char *metrics_path = cli_path(out, "metrics.jsonl");
    history hist = {0};
    data_state d = {0};
    if (resume) {
        if (steps || minutes || layers || dim || heads || context || precision)
            cli_usage_error("pretrain", "--resume continues with the run's stored settings; drop the size, budget and "
                            "precision flags");
        load_settings(out, &rs);
        if (data_dir) snprintf(rs.data, sizeof rs.data, "%s", data_dir); /* the data may have moved */
        if ((st = fm_checkpoint_load(out, &model, &opt, &state))) cli_fail("pretrain", st);
        reload_metrics(metrics_path, fm_optimizer_steps_done(opt), &hist);
        printf("resuming %s at step %lld of %d\n", out, (long long)fm_optimizer_steps_done(opt), rs.total_steps);
    } else {
        if (!data_dir) cli_usage_error("pretrain", "--data DIR is required");
        if (!steps == !minutes) cli_usage_error("pretrain", "give exactly one of --steps and --minutes");
        if (precision && fm_matmul_precision_parse(precision, &rs.precision))
            cli_usage_error("pretrain", "--precision: %s", fm_last_error());
        if (access(metrics_path, F_OK) == 0)
            cli_usage_error("pretrain", "%s already holds a run; use --resume, or another --out", out);
        const preset *p = NULL;
        for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
            if (strcmp(presets[i].name, preset_name) == 0) p = &presets[i];
        if (!p) cli_usage_error("pretrain", "unknown preset '%s' (tiny, small, medium, gpt2)", preset_name);
        snprintf(rs.data, sizeof rs.data, "%s", data_dir);
        fm_config_default(&cfg);
        cfg.n_layer = layers ? layers : p->layers;
        cfg.n_embd = dim ? dim : p->dim;
        cfg.n_head = heads ? heads : p->heads;
        cfg.n_positions = context ? context : p->context;
    }

    fm_set_matmul_precision(rs.precision);

    /* the data and its tokenizer */
    char *tok_path = cli_path(rs.data, "tokenizer.json");
    fm_tokenizer *tok = NULL;
    if ((st = fm_tokenizer_load(&tok, tok_path))) cli_fail("pretrain", st);
    if (!resume) {
        cfg.vocab_size = fm_tokenizer_vocab_size(tok);
        if (fm_config_validate(&cfg)) cli_usage_error("pretrain", "%s", fm_last_error());
        if (!rs.seq) rs.seq = cfg.n_positions;
        if (rs.seq > cfg.n_positions)
            cli_usage_error("pretrain", "--seq %d is longer than the context (%d)", rs.seq, cfg.n_positions);
        if ((st = fm_model_init(&model, &cfg, rs.seed))) cli_fail("pretrain", st);
    }
    const fm_config *mc = fm_model_config(model);
    if (fm_tokenizer_vocab_size(tok) != mc->vocab_size) {
        fprintf(stderr, "fm pretrain: %s has %d tokens but the model's vocab_size is %d\n", tok_path,
                fm_tokenizer_vocab_size(tok), mc->vocab_size);
        return 1;
    }
    d.train = cli_open_shard("pretrain", rs.data, "train.bin", mc->vocab_size);
    d.val = cli_open_shard("pretrain", rs.data, "val.bin", mc->vocab_size);
    int B = rs.batch, T = rs.seq;
    if (fm_shard_length(d.train) <= (size_t)T + 1 || fm_shard_length(d.val) <= (size_t)T + 1) {
        fprintf(stderr, "fm pretrain: %s: the shards hold fewer than seq + 2 = %d tokens\n", rs.data, T + 2);
        return 1;
    }
    d.tokens = malloc(sizeof(int) * (size_t)B * T);
    d.targets = malloc(sizeof(int) * (size_t)B * T);
    d.window = malloc(sizeof(int) * (size_t)(T + 1));

    if (!resume) {
        fm_train_state probe;
        fm_rng_seed(&probe.rng, rs.seed ^ 0x5eed);
        if (minutes) {
            double t = time_step(model, &d, &probe, B, T);
            double eval_cost = t / 3 * ((double)rs.eval_tokens / ((double)B * T) + 1);
            double per_step = t + eval_cost / rs.eval_every;
            steps = (int)(minutes * 60 / per_step);
            if (steps < 1) steps = 1;
            printf("timing: %.0f ms per step; %.1f minutes make %d steps\n", 1000 * t, minutes, steps);
        }
        rs.total_steps = steps;
        ac.total_steps = steps;
        if (ac.min_lr < 0) ac.min_lr = ac.lr / 10;
        if (ac.warmup_steps < 0) ac.warmup_steps = steps / 10 < 100 ? steps / 10 : 100;
        if (ac.warmup_steps > steps) ac.warmup_steps = steps;
        if ((st = fm_optimizer_init(&opt, model, &ac))) cli_usage_error("pretrain", "%s", fm_last_error());
        cli_mkdir_p("pretrain", out);
        state.seed = rs.seed;
        fm_rng_seed(&state.rng, rs.seed);
        if ((st = fm_checkpoint_save(out, model, opt, &state))) cli_fail("pretrain", st);
        save_settings(out, &rs);
        char *dst = cli_path(out, "tokenizer.json");
        if ((st = fm_tokenizer_save(tok, dst))) cli_fail("pretrain", st);
        free(dst);
        printf("model: %zu parameters (%d layers, width %d, %d heads, context %d, vocabulary %d)\n",
               fm_model_num_params(model), mc->n_layer, mc->n_embd, mc->n_head, mc->n_positions, mc->vocab_size);
    }

    FILE *metrics = fopen(metrics_path, "a");
    if (!metrics) {
        fprintf(stderr, "fm pretrain: %s: cannot open for appending\n", metrics_path);
        return 1;
    }
    signal(SIGINT, on_sigint);
    int tty = isatty(2);
    double bytes_per_token = (double)fm_shard_source_bytes(d.val) / fm_shard_length(d.val);
    double t_start = cli_now(), tokens_per_s = 0;
    int64_t first_step = fm_optimizer_steps_done(opt);
    int exit_status = 0;
    for (int64_t s = first_step; s < rs.total_steps; s++) {
        double t0 = cli_now();
        float loss, norm, lr;
        draw_batch(&d, &state, B, T);
        fm_model_zero_grad(model);
        if ((st = fm_model_train_loss(model, d.tokens, d.targets, NULL, B, T, &loss))) cli_fail("pretrain", st);
        if ((st = fm_optimizer_step(opt, model, &norm, &lr))) cli_fail("pretrain", st);
        double dt = cli_now() - t0;
        tokens_per_s = (double)B * T / dt;
        int64_t step = s + 1;
        fprintf(metrics, "{\"step\":%lld,\"loss\":%.9g,\"lr\":%.6g,\"grad_norm\":%.4f,\"tokens_per_s\":%.0f}\n",
                (long long)step, loss, lr, norm, tokens_per_s);
        fflush(metrics);
        history_add(&hist.steps, &hist.loss, &hist.n, &hist.cap, (double)step, loss);
        double elapsed = cli_now() - t_start;
        double eta = elapsed / (double)(step - first_step) * (double)(rs.total_steps - step);
        char eta_text[32];
        format_time(eta_text, sizeof eta_text, eta);
        if (tty)
            fprintf(stderr, "\rstep %lld/%d | loss %.4f | lr %.2e | %.0f tok/s | ETA %s   ", (long long)step,
                    rs.total_steps, loss, lr, tokens_per_s, eta_text);
        int last = step == rs.total_steps;
        if (step % rs.eval_every == 0 || last) {
            double val = held_out_loss(model, &d, B, T, rs.eval_tokens);
            double bpb = val / log(2.0) / bytes_per_token;
            fprintf(metrics, "{\"step\":%lld,\"val_loss\":%.9g,\"val_bpb_estimate\":%.4f}\n", (long long)step, val, bpb);
            fflush(metrics);
            history_add(&hist.val_steps, &hist.val_loss, &hist.n_val, &hist.cap_val, (double)step, val);
            plot(out, &hist);
            if (tty) fputc('\n', stderr);
            printf("step %lld/%d | loss %.4f | held-out %.4f (~%.3f bits/byte) | %.0f tok/s | ETA %s\n",
                   (long long)step, rs.total_steps, loss, val, bpb, tokens_per_s, eta_text);
            fflush(stdout);
        }
        if (rs.sample_every && (step % rs.sample_every == 0 || last)) write_sample(out, model, tok, rs.sample_tokens, step, rs.seed);
        if (step % rs.save_every == 0 || last || interrupted) {
            fflush(metrics);
            if ((st = fm_checkpoint_save(out, model, opt, &state))) cli_fail("pretrain", st);
        }
        if (interrupted && !last) {
            if (tty) fputc('\n', stderr);
            plot(out, &hist);
            printf("interrupted: checkpoint saved at step %lld; continue with: fm pretrain --out %s --resume\n",
                   (long long)step, out);
            exit_status = 130;
            break;
        }
    }
    fclose(metrics);
    if (exit_status == 0) printf("done: %d steps; model in %s (loss curve: %s/loss.svg)\n", rs.total_steps, out, out);
    fm_shard_close(d.train), fm_shard_close(d.val);
    free(d.tokens), free(d.targets), free(d.window), free(tok_path), free(metrics_path);
    free(hist.steps), free(hist.loss), free(hist.val_steps), free(hist.val_loss);
    fm_tokenizer_free(tok);
    fm_optimizer_free(opt);
    fm_model_free(model);
    return exit_status;
}

const cli_command cmd_pretrain = {"pretrain", "--data DIR --out RUN (--steps N | --minutes M) [options] | --out RUN --resume",
                                  "Pre-train a GPT on token shards (next-token prediction).", run};
