/*
 * cmd-bench.c — `fm bench train|generate`: how fast fm trains and generates on this machine, as
 * one line a script reads.
 *
 * What it is for: side-by-side runs against the PyTorch peer (bench/compare.sh). A training
 * step is what a trainer does: zero the gradients, forward, masked cross-entropy, backward,
 * global-norm clipping and AdamW. The data are random tokens from a fixed seed. Steps after
 * the warm-up are timed one by one and the median is reported, with FLOPs per token counted as
 * llm.c does (6 N + 6 L C T, N all parameters) and the peak resident memory the process saw.
 * With --lora R the model gets a LoRA adapter of rank R first (PEFT's defaults otherwise: alpha
 * 8, c_attn, or --lora-targets), which freezes every weight of the model itself; the line then
 * also says how much of the resident memory is the activation arena (the resident set measured
 * just before and just after the arena is sized and zeroed, before the first step). --dump DIR
 * writes what a peer needs to reproduce the run (bench/torch_lora.py): DIR/model (the weights),
 * DIR/adapter (the LoRA adapter, PEFT's layout) and DIR/tokens.bin (the token stream, int32
 * little-endian; step s reads B*T tokens from s*B*T, its targets one further).
 * Generation is batch 1 through an inference session: a prompt, then greedy tokens one step at a
 * time.
 * Not for: correctness (tests/) or training a real model (fm pretrain).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The kernel timing table of the timed steps (fm_profile_*): milliseconds per step and share of
 * the mean step for each kernel call site, then per kind (products, attention, other) and what
 * no kernel timer saw (the trainer's own work between the calls). */
static void print_profile(int steps, double mean_step_s) {
    const char *kinds[] = {"products", "attention", "other"};
    double kind_s[3] = {0}, timed_s = 0.0;
    printf("profile of %d steps, %.1f ms per step on average: ms per step, share of the step, calls per step\n",
           steps, 1e3 * mean_step_s);
    for (int i = 0; i < fm_profile_entries(); i++) {
        const char *name;
        double sec;
        long calls;
        fm_profile_entry(i, &name, &sec, &calls);
        printf("  %-24s %9.2f %6.1f%% %6.1f\n", name, 1e3 * sec / steps, 100.0 * sec / steps / mean_step_s,
               (double)calls / steps);
        for (int k = 0; k < 3; k++)
            if (strncmp(name, kinds[k], strlen(kinds[k])) == 0) kind_s[k] += sec;
        timed_s += sec;
    }
    printf("  by kind:");
    for (int k = 0; k < 3; k++)
        printf(" %s %.1f ms (%.1f%%),", kinds[k], 1e3 * kind_s[k] / steps, 100.0 * kind_s[k] / steps / mean_step_s);
    double rest = mean_step_s - timed_s / steps;
    printf(" untimed %.1f ms (%.1f%%)\n", 1e3 * rest, 100.0 * rest / mean_step_s);
}

/* The resident set of this process now, in MiB (VmRSS of /proc/self/status; -1 where unreadable). */
static double rss_now_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1.0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtod(line + 6, NULL);
    if (f) fclose(f);
    return kb < 0 ? -1.0 : kb / 1024.0;
}

/* Peak resident set of this process so far, in MiB (Linux reports ru_maxrss in KiB). */
static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

typedef struct {
    fm_config cfg;
    int batch, seq, threads, steps, warmup, prompt, gen, int8, profile;
    float peak_gflops;
    uint64_t seed;
    const char *model_dir; /* generate: a model directory instead of a random model */
    const char *precision; /* matrix products: fp32 or bf16 */
    cli_list freeze;       /* train: tensor patterns kept frozen */
    int lora;              /* train: LoRA rank, 0 for none */
    const char *lora_targets; /* train: LoRA targets (c_attn) */
    const char *dump;      /* train: where to write the model, adapter and tokens */
} bench_args;

/* --dump: DIR/model, DIR/adapter (with a LoRA adapter) and DIR/tokens.bin (count int32). */
static void dump_run(const bench_args *a, const fm_model *model, const int *stream, size_t count) {
    cli_mkdir_p("bench", a->dump);
    char path[4096];
    snprintf(path, sizeof path, "%s/model", a->dump);
    fm_status st = fm_model_save(model, path);
    snprintf(path, sizeof path, "%s/adapter", a->dump);
    if (!st && a->lora) st = fm_lora_save(model, path);
    if (st) cli_fail("bench", st);
    snprintf(path, sizeof path, "%s/tokens.bin", a->dump);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(stream, sizeof(int), count, f) != count || fclose(f)) {
        fprintf(stderr, "fm bench: --dump: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static int bench_train(const bench_args *a) {
    const fm_config *cfg = &a->cfg;
    int B = a->batch, T = a->seq ? a->seq : cfg->n_positions < 64 ? cfg->n_positions : 64, n = B * T;
    if (T > cfg->n_positions)
        cli_usage_error("bench", "--seq %d exceeds --context %d", T, cfg->n_positions);
    fm_set_threads(a->threads);
    fm_model *model = NULL;
    fm_optimizer *opt = NULL;
    fm_adamw_config ocfg;
    fm_adamw_config_default(&ocfg);
    ocfg.warmup_steps = 10;
    ocfg.total_steps = 1000;
    fm_status st = fm_model_init(&model, cfg, a->seed);
    if (st) cli_fail("bench", st);
    for (int i = 0; i < a->freeze.n; i++)
        if (fm_model_set_trainable(model, a->freeze.items[i], 0, NULL))
            cli_usage_error("bench", "--freeze: %s", fm_last_error());
    if (a->lora_targets && !a->lora) cli_usage_error("bench", "--lora-targets needs --lora R");
    if (a->lora) {
        fm_lora_config lcfg;
        fm_lora_config_default(&lcfg);
        lcfg.r = a->lora;
        if (a->lora_targets && fm_lora_parse_targets(a->lora_targets, &lcfg.targets))
            cli_usage_error("bench", "--lora-targets: %s", fm_last_error());
        if ((st = fm_model_add_lora(model, &lcfg, a->seed))) cli_usage_error("bench", "--lora: %s", fm_last_error());
    }
    if ((st = fm_optimizer_init(&opt, model, &ocfg))) cli_fail("bench", st);
    /* the activation arena: sized and zeroed (paged in) here, so the resident set before and
     * after it is what the weights, gradients touched so far and the rest take, and the arena */
    double rss_before_acts = rss_now_mb();
    if ((st = fm_model_reserve(model, B, T))) cli_fail("bench", st);
    double acts_mb = rss_now_mb() - rss_before_acts;

    /* Random tokens (B, T) per step; targets are the next token of the same stream. */
    int total = a->warmup + a->steps;
    int *stream = cli_alloc("bench", (size_t)n * total + 1, sizeof(int));
    double *times = cli_alloc("bench", a->steps > 0 ? a->steps : 1, sizeof(double));
    fm_rng rng;
    fm_rng_seed(&rng, a->seed + 1);
    for (size_t i = 0; i < (size_t)n * total + 1; i++) stream[i] = (int)(fm_rng_u64(&rng) % cfg->vocab_size);
    if (a->dump) dump_run(a, model, stream, (size_t)n * total + 1);

    float loss = 0.0f, loss0 = 0.0f;
    for (int s = 0; s < total; s++) {
        const int *tokens = stream + (size_t)s * n, *targets = tokens + 1;
        if (a->profile && s == a->warmup) { /* time the kernels of the timed steps only */
            fm_profile_reset();
            fm_profile_enable(1);
        }
        double t0 = now_s();
        fm_model_zero_grad(model);
        if ((st = fm_model_train_loss(model, tokens, targets, NULL, B, T, &loss))) cli_fail("bench", st);
        if (s == 0) loss0 = loss;
        if ((st = fm_optimizer_step(opt, model, NULL, NULL))) cli_fail("bench", st);
        double dt = now_s() - t0;
        if (s >= a->warmup) times[s - a->warmup] = dt;
        fprintf(stderr, "step %d%s: loss %.4f, %.1f ms\n", s + 1, s < a->warmup ? " (warm-up)" : "", loss,
                1e3 * dt);
    }
    fm_profile_enable(0);
    double mean_step_s = 0.0;
    for (int s = 0; s < a->steps; s++) mean_step_s += times[s] / a->steps;
    double step_s = median(times, a->steps);
    size_t N = fm_model_num_params(model);
    double flops_per_token = 6.0 * (double)N + 6.0 * cfg->n_layer * cfg->n_embd * (double)T;
    double tok_s = n / step_s, gflops = flops_per_token * tok_s / 1e9;
    /* FLOPs are counted for a full step, frozen weights included: gflops compares like with like */
    printf("fm_bench mode=train tokens_per_s=%.1f ms_per_step=%.2f gflops=%.1f peak_pct=%.1f params=%zu trainable=%zu "
           "peak_rss_mb=%.1f threads=%d layers=%d dim=%d heads=%d vocab=%d batch=%d seq=%d precision=%s loss=%.4f "
           "lora_r=%d rss_before_acts_mb=%.1f acts_mb=%.1f loss0=%.7f cpu=%s\n",
           tok_s, 1e3 * step_s, gflops, 100.0 * gflops / a->peak_gflops, N, fm_model_num_trainable(model), peak_rss_mb(), fm_get_threads(),
           cfg->n_layer, cfg->n_embd, cfg->n_head, cfg->vocab_size, B, T,
           fm_matmul_precision_name(fm_get_matmul_precision()), loss, a->lora, rss_before_acts, acts_mb, loss0,
           fm_cpu_path());
    if (a->profile) print_profile(a->steps, mean_step_s);
    free(stream);
    free(times);
    fm_optimizer_free(opt);
    fm_model_free(model);
    return 0;
}

/* The index of the largest logit (greedy decoding: no sampler cost in the figures). */
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Batch 1: a prompt of a->prompt random tokens fed at once, then a->gen tokens one at a time,
 * greedy. Runs warm-up + timed times; reports medians of the decode-only rate (generated
 * tokens over the time of the single-token steps) and of the whole run's (over prompt + steps). */
static int bench_generate(const bench_args *a) {
    fm_set_threads(a->threads);
    fm_model *model = NULL;
    fm_status st = a->model_dir ? fm_model_load(&model, a->model_dir) : fm_model_init(&model, &a->cfg, a->seed);
    if (st) cli_fail("bench", st);
    if (a->int8 && (st = fm_model_quantize(model))) cli_fail("bench", st);
    const fm_config *cfg = fm_model_config(model);
    /* the session holds the prompt and every generated token but the last, which is not fed */
    int len = a->prompt + a->gen, V = cfg->vocab_size;
    if (len - 1 > cfg->n_positions)
        cli_usage_error("bench", "--prompt %d + --gen %d - 1 exceed the context %d", a->prompt, a->gen, cfg->n_positions);
    fm_session *session = NULL;
    if ((st = fm_session_init(&session, model, 1, len - 1))) cli_fail("bench", st);
    int *tokens = cli_alloc("bench", (size_t)len, sizeof(int));
    int runs = a->warmup + a->steps;
    double *decode_s = cli_alloc("bench", runs, sizeof(double)), *whole_s = cli_alloc("bench", runs, sizeof(double));
    fm_rng rng;
    fm_rng_seed(&rng, a->seed + 1);
    for (int i = 0; i < a->prompt; i++) tokens[i] = (int)(fm_rng_u64(&rng) % V);
    double prompt_ms = 0.0;
    for (int r = 0; r < runs; r++) {
        const float *logits;
        fm_session_reset(session, 0);
        double t0 = now_s();
        if ((st = fm_session_feed(session, 0, tokens, a->prompt, &logits))) cli_fail("bench", st);
        double t1 = now_s();
        for (int i = a->prompt; i < len; i++) {
            tokens[i] = argmax(logits, V);
            int seq = 0;
            if (i + 1 < len && (st = fm_session_step(session, &seq, &tokens[i], 1, &logits))) cli_fail("bench", st);
        }
        double t2 = now_s();
        /* a->gen tokens come out; the last needs no further step, so gen - 1 steps were timed */
        decode_s[r] = (t2 - t1) / (a->gen > 1 ? a->gen - 1 : 1);
        whole_s[r] = t2 - t0;
        if (r >= a->warmup) prompt_ms += 1e3 * (t1 - t0) / a->steps;
        fprintf(stderr, "run %d%s: prompt %.1f ms, %.2f ms per token\n", r + 1, r < a->warmup ? " (warm-up)" : "",
                1e3 * (t1 - t0), 1e3 * decode_s[r]);
    }
    double tok_s = 1.0 / median(decode_s + a->warmup, a->steps);
    double whole = a->gen / median(whole_s + a->warmup, a->steps);
    printf("fm_bench mode=generate decode_tokens_per_s=%.1f total_tokens_per_s=%.1f ms_per_token=%.2f prompt_ms=%.1f "
           "params=%zu weights=%s peak_rss_mb=%.1f threads=%d layers=%d dim=%d heads=%d vocab=%d prompt=%d gen=%d "
           "cpu=%s\n",
           tok_s, whole, 1e3 / tok_s, prompt_ms, fm_model_num_params(model), fm_model_weight_format(model),
           peak_rss_mb(), fm_get_threads(), cfg->n_layer, cfg->n_embd, cfg->n_head, V, a->prompt, a->gen,
           fm_cpu_path());
    free(tokens);
    free(decode_s);
    free(whole_s);
    fm_session_free(session);
    fm_model_free(model);
    return 0;
}

static int run(int argc, char **argv) {
    bench_args a = {.batch = 4, .seq = 0, .threads = 0, .steps = 10, .warmup = 3, .peak_gflops = 330.0f,
                    .seed = 1337, .prompt = 16, .gen = 128};
    fm_config_default(&a.cfg);
    cli_option opts[] = {
        {"layers", OPT_INT, &a.cfg.n_layer, 1, 4096, "transformer blocks (default 12)"},
        {"dim", OPT_INT, &a.cfg.n_embd, 1, 65536, "width (default 768)"},
        {"heads", OPT_INT, &a.cfg.n_head, 1, 65536, "attention heads (default 12)"},
        {"vocab", OPT_INT, &a.cfg.vocab_size, 1, 16777216, "vocabulary size (default 50257)"},
        {"context", OPT_INT, &a.cfg.n_positions, 1, 1048576, "rows of the position table (default 1024)"},
        {"batch", OPT_INT, &a.batch, 1, 65536, "sequences per step (default 4)"},
        {"seq", OPT_INT, &a.seq, 1, 1048576, "tokens per sequence (default 64, or the context if shorter)"},
        {"threads", OPT_INT, &a.threads, 0, 1024, "threads (default: all cores)"},
        {"steps", OPT_INT, &a.steps, 1, 100000, "timed steps, or generate runs (default 10)"},
        {"warmup", OPT_INT, &a.warmup, 0, 100000, "untimed steps or runs first (default 3)"},
        {"prompt", OPT_INT, &a.prompt, 1, 1048576, "generate: prompt tokens (default 16)"},
        {"gen", OPT_INT, &a.gen, 1, 1048576, "generate: tokens generated (default 128)"},
        {"model", OPT_STRING, &a.model_dir, 0, 0, "generate: a model directory (default: random weights)"},
        {"int8", OPT_FLAG, &a.int8, 0, 0, "generate: quantize the weights to Q8_0 first"},
        {"profile", OPT_FLAG, &a.profile, 0, 0, "train: also print where the step's time goes, kernel by kernel"},
        {"peak-gflops", OPT_FLOAT, &a.peak_gflops, 1e-3, 1e9, "FMA peak for peak_pct (default 330)"},
        {"seed", OPT_U64, &a.seed, 0, 1.8e19, "random seed (default 1337)"},
        {"precision", OPT_STRING, &a.precision, 0, 0, "matrix products: fp32 (default) or bf16"},
        {"freeze", OPT_LIST, &a.freeze, 0, 0, "train: keep tensors matching this pattern frozen (repeatable)"},
        {"lora", OPT_INT, &a.lora, 1, 65536, "train: attach a LoRA adapter of this rank first (alpha 8)"},
        {"lora-targets", OPT_STRING, &a.lora_targets, 0, 0, "train: LoRA products among c_attn, attn.c_proj, c_fc, mlp.c_proj, all (c_attn)"},
        {"dump", OPT_STRING, &a.dump, 0, 0, "train: write DIR/model, DIR/adapter and DIR/tokens.bin for a peer"},
    };
    char *positional[1];
    int n_pos = cli_parse(&cmd_bench, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 1);
    if (n_pos != 1) cli_usage_error("bench", "which benchmark? 'train' or 'generate'");
    if (fm_config_validate(&a.cfg)) cli_usage_error("bench", "%s", fm_last_error());
    fm_matmul_precision precision = FM_MATMUL_FP32;
    if (a.precision && fm_matmul_precision_parse(a.precision, &precision))
        cli_usage_error("bench", "--precision: %s", fm_last_error());
    fm_set_matmul_precision(precision);
    if (strcmp(positional[0], "train") == 0) return bench_train(&a);
    if (strcmp(positional[0], "generate") == 0) {
        if (a.profile) cli_usage_error("bench", "--profile times training steps: use it with 'train'");
        if (a.lora || a.lora_targets || a.dump) cli_usage_error("bench", "--lora, --lora-targets and --dump are for 'train'");
        return bench_generate(&a);
    }
    cli_usage_error("bench", "'%s' is not a benchmark (train, generate)", positional[0]);
}

const cli_command cmd_bench = {"bench", "train|generate [--layers N --dim N --heads N --vocab N --batch N --seq N --threads N]",
                               "Measure training or generation speed: one machine-readable fm_bench line.", run};
