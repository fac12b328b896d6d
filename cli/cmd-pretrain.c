/*
 * cmd-pretrain.c — `fm pretrain`: self-supervised next-token pre-training on token shards.
 *
 * The arguments, the run's settings file and the printing; the training itself is the
 * library's trainer (src/train/trainer.c) with the shard data source and the cross-entropy
 * objective. A run directory is a model directory (config.json, model.safetensors,
 * tokenizer.json, training_state.safetensors) plus run.json (the run's settings, so --resume
 * repeats them, and where they came from: fm's commit, the command line, the data's checksum),
 * metrics.jsonl (one JSON line per step and per evaluation), loss.svg and samples.txt.
 * Ctrl-C or SIGTERM saves a checkpoint; --resume continues with the same losses. Under
 * mpirun -np N it trains data-parallel (docs/distributed.md): rank 0 alone writes and prints.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    int batch, seq, grad_accum;
    int eval_every, eval_tokens, save_every, sample_every, sample_tokens;
    int total_steps;
    uint64_t seed;
    float dropout;            /* GPT-2's residual and embedding dropout while training */
    fm_matmul_precision precision;
    cli_list freeze;          /* tensor patterns kept frozen */
    char command_line[4096];
    uint64_t data_checksum;   /* train.bin's token checksum */
} run_settings;

#ifndef FM_COMMIT
#define FM_COMMIT "unknown"
#endif

/* run.json's text (malloc'd); every item is checked, so that a failed allocation never leaves a
 * key out of a file that is then written: out of memory ends the command. */
static char *settings_text(const run_settings *r) {
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "data", r->data);
    ok = ok && cJSON_AddNumberToObject(o, "batch", r->batch);
    ok = ok && cJSON_AddNumberToObject(o, "seq", r->seq);
    ok = ok && cJSON_AddNumberToObject(o, "grad_accum", r->grad_accum);
    ok = ok && cJSON_AddNumberToObject(o, "eval_every", r->eval_every);
    ok = ok && cJSON_AddNumberToObject(o, "eval_tokens", r->eval_tokens);
    ok = ok && cJSON_AddNumberToObject(o, "save_every", r->save_every);
    ok = ok && cJSON_AddNumberToObject(o, "sample_every", r->sample_every);
    ok = ok && cJSON_AddNumberToObject(o, "sample_tokens", r->sample_tokens);
    ok = ok && cJSON_AddNumberToObject(o, "total_steps", r->total_steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
    ok = ok && cJSON_AddStringToObject(o, "seed", seed);
    ok = ok && cJSON_AddStringToObject(o, "precision", fm_matmul_precision_name(r->precision));
    ok = ok && cJSON_AddNumberToObject(o, "dropout", r->dropout);
    cJSON *frozen = ok ? cJSON_AddArrayToObject(o, "freeze") : NULL;
    ok = ok && frozen;
    for (int i = 0; ok && i < r->freeze.n; i++) {
        cJSON *item = cJSON_CreateString(r->freeze.items[i]);
        ok = item && cJSON_AddItemToArray(frozen, item);
        if (!ok) cJSON_Delete(item);
    }
    /* provenance, for the record (a resume keeps the first run's) */
    ok = ok && cJSON_AddStringToObject(o, "fm_commit", FM_COMMIT);
    ok = ok && cJSON_AddStringToObject(o, "command_line", r->command_line);
    char checksum[32];
    snprintf(checksum, sizeof checksum, "%016llx", (unsigned long long)r->data_checksum);
    ok = ok && cJSON_AddStringToObject(o, "data_checksum", checksum);
    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text) cli_out_of_memory("pretrain");
    return text;
}

static void save_settings(const char *run_dir, const run_settings *r) {
    char *text = settings_text(r);
    char *path = cli_path(run_dir, "run.json");
    cli_write_text_atomic("pretrain", path, text);
    free(text), free(path);
}


/* A whole number in [lo, hi], range-checked as the double JSON gives before it becomes an int. */
static int json_int(const char *path, cJSON *o, const char *key, int lo, int hi) {
    cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it)) {
        fprintf(stderr, "fm pretrain: %s: \"%s\" is missing or not a number\n", path, key);
        exit(1);
    }
    double v = it->valuedouble;
    if (v != floor(v) || v < lo || v > hi) {
        fprintf(stderr, "fm pretrain: %s: \"%s\" = %.17g is not a whole number in [%d, %d]\n", path, key, v, lo, hi);
        exit(1);
    }
    return (int)v;
}

static void load_settings(const char *run_dir, run_settings *r) {
    char *path = cli_path(run_dir, "run.json");
    size_t len;
    char *text = cli_read_file("pretrain", path, &len);
    cJSON *o = cli_parse_json("pretrain", path, text, len);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    if (!cJSON_IsObject(o) || !cJSON_IsString(data) || !cJSON_IsString(seed)) {
        fprintf(stderr, "fm pretrain: %s: not a valid run settings file\n", path);
        exit(1);
    }
    if (!data->valuestring[0] || strlen(data->valuestring) >= sizeof r->data) {
        fprintf(stderr, "fm pretrain: %s: \"data\" must be a path of 1 to %zu bytes\n", path, sizeof r->data - 1);
        exit(1);
    }
    snprintf(r->data, sizeof r->data, "%s", data->valuestring);
    const char *s = seed->valuestring;
    char *seed_end = NULL;
    errno = 0;
    r->seed = strtoull(s, &seed_end, 10);
    if (!s[0] || strspn(s, "0123456789") != strlen(s) || *seed_end || errno == ERANGE) {
        fprintf(stderr, "fm pretrain: %s: \"seed\" = \"%s\" is not a whole number of 64 bits in decimal digits\n",
                path, s);
        exit(1);
    }
    r->batch = json_int(path, o, "batch", 1, 1 << 20);
    r->seq = json_int(path, o, "seq", 1, 1 << 20);
    r->eval_every = json_int(path, o, "eval_every", 1, 1 << 30);
    r->eval_tokens = json_int(path, o, "eval_tokens", 1, 1 << 30);
    r->save_every = json_int(path, o, "save_every", 1, 1 << 30);
    r->sample_every = json_int(path, o, "sample_every", 0, 1 << 30);
    r->sample_tokens = json_int(path, o, "sample_tokens", 0, 1 << 20);
    r->total_steps = json_int(path, o, "total_steps", 1, 1 << 30);
    r->grad_accum = cJSON_GetObjectItemCaseSensitive(o, "grad_accum") ? json_int(path, o, "grad_accum", 1, 1 << 16) : 1;
    cJSON *dropout = cJSON_GetObjectItemCaseSensitive(o, "dropout"); /* absent: runs before --dropout */
    r->dropout = 0;
    if (dropout && (!cJSON_IsNumber(dropout) || !(dropout->valuedouble >= 0 && dropout->valuedouble < 1))) {
        fprintf(stderr, "fm pretrain: %s: \"dropout\" must be a number in [0, 1)\n", path);
        exit(1);
    }
    if (dropout) r->dropout = (float)dropout->valuedouble;
    cJSON *precision = cJSON_GetObjectItemCaseSensitive(o, "precision"); /* absent: runs before bf16 */
    r->precision = FM_MATMUL_FP32;
    if (precision && (!cJSON_IsString(precision) || fm_matmul_precision_parse(precision->valuestring, &r->precision))) {
        fprintf(stderr, "fm pretrain: %s: \"precision\" must be \"fp32\" or \"bf16\"\n", path);
        exit(1);
    }
    cJSON *freeze = cJSON_GetObjectItemCaseSensitive(o, "freeze"), *item;
    r->freeze.n = 0;
    if (freeze && !cJSON_IsArray(freeze)) {
        fprintf(stderr, "fm pretrain: %s: \"freeze\" must be a list of patterns\n", path);
        exit(1);
    }
    cJSON_ArrayForEach(item, freeze) {
        if (!cJSON_IsString(item) || r->freeze.n == CLI_LIST_MAX) {
            fprintf(stderr, "fm pretrain: %s: \"freeze\" must be a list of at most %d patterns\n", path, CLI_LIST_MAX);
            exit(1);
        }
        r->freeze.items[r->freeze.n++] = cli_strdup("pretrain", item->valuestring); /* lives as long as the run */
    }
    cJSON *line = cJSON_GetObjectItemCaseSensitive(o, "command_line");
    if (cJSON_IsString(line)) snprintf(r->command_line, sizeof r->command_line, "%s", line->valuestring);
    cJSON_Delete(o);
    free(text), free(path);
}

/* ------------------------------------------------------------ the run */

static int run(int argc, char **argv) {
    const char *data_dir = NULL, *out = NULL, *preset_name = "small", *precision = NULL;
    fm_config cfg = {0};
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    ac.lr = 1e-3f;
    ac.min_lr = -1;
    ac.warmup_steps = -1;
    int layers = 0, dim = 0, heads = 0, context = 0, steps = 0, threads = 0, resume = 0, grad_accum = 0;
    int zero = 0, overlap = 0;
    int force = 0;
    float minutes = 0, dropout = -1;
    cli_list freeze = {0};
    run_settings rs = {.batch = 16, .seq = 0, .grad_accum = 1, .eval_every = 100, .eval_tokens = 32768,
                       .save_every = 500, .sample_every = 500, .sample_tokens = 64, .seed = 1337};
    cli_option opts[] = {
        {"data", OPT_STRING, &data_dir, 0, 0, "directory of fm data prepare (train.bin, val.bin, tokenizer.json)"},
        {"out", OPT_STRING, &out, 0, 0, "run directory = model directory (required)"},
        {"preset", OPT_STRING, &preset_name, 0, 0, "tiny, small (default), medium or gpt2"},
        {"layers", OPT_INT, &layers, 1, 4096, "transformer blocks (overrides the preset)"},
        {"dim", OPT_INT, &dim, 1, 65536, "width"},
        {"heads", OPT_INT, &heads, 1, 65536, "attention heads (must divide the width)"},
        {"context", OPT_INT, &context, 1, 1048576, "longest context (n_positions)"},
        {"batch", OPT_INT, &rs.batch, 1, 65536, "sequences per micro-batch (16)" CLI_DIST_BATCH_HELP},
        {"grad-accum", OPT_INT, &grad_accum, 1, 65536,
         "micro-batches per step: a step sees batch x grad-accum sequences (1)"},
        {"seq", OPT_INT, &rs.seq, 1, 1048576, "tokens per sequence (default: the context)"},
        {"lr", OPT_FLOAT, &ac.lr, 0, 10, "peak learning rate (1e-3)"},
        {"min-lr", OPT_FLOAT, &ac.min_lr, 0, 10, "final learning rate (default lr / 10)"},
        {"warmup", OPT_INT, &ac.warmup_steps, 0, 1 << 30, "warm-up steps (default min(100, steps / 10))"},
        {"weight-decay", OPT_FLOAT, &ac.weight_decay, 0, 10, "AdamW decay of the 2-D weights (0.1)"},
        {"grad-clip", OPT_FLOAT, &ac.grad_clip, 0, 1e6, "global gradient-norm clip, 0 = off (1.0)"},
        {"beta2", OPT_FLOAT, &ac.beta2, 0, 0.99999, "AdamW's second-moment decay (0.95)"},
        {"dropout", OPT_FLOAT, &dropout, 0, 0.99,
         "GPT-2's dropout on each block's outputs and the embeddings while training (0; GPT-2 used 0.1)"},
        {"freeze", OPT_LIST, &freeze, 0, 0,
         "keep the tensors matching this pattern fixed, e.g. 'h.*.attn.c_attn.weight' (repeatable)"},
        {"steps", OPT_INT, &steps, 1, 1 << 30, "training steps"},
        {"minutes", OPT_FLOAT, &minutes, 0.01, 1e6, "time budget, turned into steps by a timing at the start"},
        {"eval-every", OPT_INT, &rs.eval_every, 1, 1 << 30, "held-out evaluation interval (100)"},
        {"eval-tokens", OPT_INT, &rs.eval_tokens, 1, 1 << 30, "held-out tokens per evaluation (32768)"},
        {"save-every", OPT_INT, &rs.save_every, 1, 1 << 30, "checkpoint interval (500)"},
        {"sample-every", OPT_INT, &rs.sample_every, 0, 1 << 30, "sample interval, 0 = never (500)"},
        {"sample-tokens", OPT_INT, &rs.sample_tokens, 0, 1 << 20, "tokens per sample (64)"},
        {"seed", OPT_U64, &rs.seed, 0, 1.8e19, "random seed (1337)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
        {"zero", OPT_INT, &zero, 0, 1, CLI_ZERO_HELP},
        {"overlap", OPT_INT, &overlap, 0, 1, CLI_OVERLAP_HELP},
        {"precision", OPT_STRING, &precision, 0, 0,
         "matrix products: fp32 (default) or bf16 (bfloat16 factors, float32 sums and weights)"},
        {"resume", OPT_FLAG, &resume, 0, 0, "continue the run in --out from its checkpoint"},
        {"force", OPT_FLAG, &force, 0, 0, "start a new run in an --out that holds a model (replacing it)"},
    };
    char *positional[1];
    cli_parse(&cmd_pretrain, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows up in logs as it happens */
    if (!out) cli_usage_error("pretrain", "--out RUN_DIR is required");
    fm_set_threads(threads);
    fm_comm *comm = cli_dist_init("pretrain", threads);
    int rank0 = fm_comm_rank(comm) == 0; /* data parallel: the one rank that writes */

    fm_model *model = NULL;
    fm_optimizer *opt = NULL;
    fm_train_state state = {0};
    fm_status st;
    int lock = -1;
    char *metrics_path = cli_path(out, "metrics.jsonl"), *plot_path = cli_path(out, "loss.svg");
    if (resume) {
        if (steps || minutes || layers || dim || heads || context || precision || grad_accum || freeze.n || dropout >= 0)
            cli_usage_error("pretrain", "--resume continues with the run's stored settings; drop the size, budget and "
                            "precision flags (and --grad-accum, --freeze, --dropout)");
        if (rank0) lock = cli_lock_dir("pretrain", out);
        if (!cli_holds_checkpoint(out)) {
            char *weights = cli_path(out, "model.safetensors");
            struct stat sb;
            if (stat(weights, &sb) == 0) /* fm init or fm quantize wrote it: weights, no training state */
                fprintf(stderr, "fm pretrain: %s holds a model but no training state: it is not a run to resume "
                        "(fm init and fm quantize write none)\n", out);
            else
                fprintf(stderr, "fm pretrain: %s holds no checkpoint: the run stopped before its first save; start "
                        "it again (--force over what it left)\n", out);
            free(weights);
            exit(1);
        }
        load_settings(out, &rs);
        if (data_dir) snprintf(rs.data, sizeof rs.data, "%s", data_dir); /* the data may have moved */
        fm_checkpoint_report report;
        if ((st = fm_checkpoint_load_report(out, &model, &opt, &state, &report))) cli_fail("pretrain", st);
        if (report.skipped[0]) fprintf(stderr, "fm pretrain: warning: passed over %s\n", report.skipped);
        printf("resuming %s at step %lld of %d (checkpoint %s)\n", out, (long long)fm_optimizer_steps_done(opt),
               rs.total_steps, report.used);
    } else {
        if (!data_dir) cli_usage_error("pretrain", "--data DIR is required");
        if (!steps == !minutes) cli_usage_error("pretrain", "give exactly one of --steps and --minutes");
        if (precision && fm_matmul_precision_parse(precision, &rs.precision))
            cli_usage_error("pretrain", "--precision: %s", fm_last_error());
        if (rank0 && access(metrics_path, F_OK) == 0) /* data parallel: before rank 0 writes there */
            cli_usage_error("pretrain", "%s already holds a run; use --resume, or another --out", out);
        if (rank0) cli_check_out_dir("pretrain", out, data_dir, force);
        const preset *p = NULL;
        for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
            if (strcmp(presets[i].name, preset_name) == 0) p = &presets[i];
        if (!p) cli_usage_error("pretrain", "unknown preset '%s' (tiny, small, medium, gpt2)", preset_name);
        char *data_real = realpath(data_dir, NULL); /* run.json must find it from anywhere */
        snprintf(rs.data, sizeof rs.data, "%s", data_real ? data_real : data_dir);
        free(data_real);
        rs.grad_accum = grad_accum ? grad_accum : 1;
        rs.dropout = dropout > 0 ? dropout : 0;
        rs.freeze = freeze;
        size_t used = 0;
        for (int i = 0; i < argc && used < sizeof rs.command_line; i++)
            used += snprintf(rs.command_line + used, sizeof rs.command_line - used, "%s%s", i ? " " : "fm pretrain ", argv[i]);
        fm_config_default(&cfg);
        cfg.n_layer = layers ? layers : p->layers;
        cfg.n_embd = dim ? dim : p->dim;
        cfg.n_head = heads ? heads : p->heads;
        cfg.n_positions = context ? context : p->context;
    }

    fm_set_matmul_precision(rs.precision);

    /* the data and the model's tokenizer: a new run's is the data's (copied into RUN), a resumed
     * run's is RUN/tokenizer.json; the shards must have been made by it (their fingerprint), all
     * checked before anything is created in --out */
    char *tok_path = cli_path(resume ? out : rs.data, "tokenizer.json");
    fm_tokenizer *tok = NULL;
    if ((st = fm_tokenizer_load(&tok, tok_path))) cli_fail("pretrain", st);
    if (!resume) {
        cfg.vocab_size = fm_tokenizer_vocab_size(tok);
        if (fm_config_validate(&cfg)) cli_usage_error("pretrain", "%s", fm_last_error());
        if (!rs.seq) rs.seq = cfg.n_positions;
        if (rs.seq > cfg.n_positions)
            cli_usage_error("pretrain", "--seq %d is longer than the context (%d)", rs.seq, cfg.n_positions);
        if ((st = fm_model_init(&model, &cfg, rs.seed))) cli_fail("pretrain", st);
        for (int i = 0; i < rs.freeze.n; i++)
            if (fm_model_set_trainable(model, rs.freeze.items[i], 0, NULL))
                cli_usage_error("pretrain", "--freeze: %s", fm_last_error());
    }
    if ((st = fm_model_set_dropout(model, rs.dropout))) cli_fail("pretrain", st);
    const fm_config *mc = fm_model_config(model);
    if (fm_tokenizer_vocab_size(tok) != mc->vocab_size) {
        fprintf(stderr, "fm pretrain: %s has %d tokens but the model's vocab_size is %d\n", tok_path,
                fm_tokenizer_vocab_size(tok), mc->vocab_size);
        return 1;
    }
    fm_shard *train = cli_open_shard("pretrain", rs.data, "train.bin", mc->vocab_size);
    fm_shard *val = cli_open_shard("pretrain", rs.data, "val.bin", mc->vocab_size);
    char *data_tok = resume ? cli_path(rs.data, "tokenizer.json") : NULL;
    if ((st = fm_shard_check_tokenizer(train, tok, tok_path, data_tok)) ||
        (st = fm_shard_check_tokenizer(val, tok, tok_path, data_tok)))
        cli_fail("pretrain", st);
    free(data_tok);
    rs.data_checksum = fm_shard_checksum(train);
    /* image data (fm data prepare --images) has an image tokenizer beside its tokenizer: every
     * window then starts at an image's first token (docs/vision.md) */
    int align = 1;
    fm_image_tokenizer *image_tok = NULL;
    {
        const char *image_dir = resume ? out : rs.data;
        char *image_path = cli_path(image_dir, "image_tokenizer.json");
        if (access(image_path, F_OK) == 0) {
            if ((st = fm_image_tokenizer_load(image_dir, &image_tok)) ||
                (st = fm_image_tokenizer_check(image_tok, tok, tok_path)))
                cli_fail("pretrain", st);
            align = fm_image_tokenizer_sequence_length(image_tok);
        }
        free(image_path);
    }
    fm_data_source source;
    if ((st = fm_shard_source_init_aligned(&source, train, val, rs.seq, (size_t)rs.eval_tokens, align))) {
        fprintf(stderr, "fm pretrain: %s: %s\n", rs.data, fm_last_error());
        return 1;
    }
    fm_objective objective;
    fm_objective_cross_entropy(&objective);
    int eos = fm_tokenizer_special_id(tok, "<|endoftext|>");
    cli_progress prog = {.cmd = "pretrain", .out = out, .tty = isatty(2), .model = model, .tok = tok,
                         .sample_every = rs.sample_every, .sample_tokens = rs.sample_tokens, .seed = rs.seed,
                         .sample_prompt = &eos, .n_sample_prompt = eos >= 0,
                         .bytes_per_token = (double)fm_shard_source_bytes(val) / fm_shard_length(val)};
    fm_trainer_config tc = {.batch = rs.batch, .seq = rs.seq, .grad_accum = rs.grad_accum,
                            .eval_every = rs.eval_every, .save_every = rs.save_every, .checkpoint_dir = out,
                            .metrics_path = metrics_path, .plot_path = plot_path,
                            .bytes_per_token = prog.bytes_per_token, .user = &prog, .on_step = cli_on_step,
                            .comm = comm};
    if (!rank0) tc.checkpoint_dir = tc.metrics_path = tc.plot_path = NULL, tc.on_step = NULL;

    if (!resume) {
        if (minutes) { /* a trainer with a stand-in optimizer times a step */
            fm_trainer *probe;
            fm_adamw_config pc = ac;
            pc.total_steps = pc.warmup_steps = 1;
            pc.min_lr = 0;
            fm_trainer_config ptc = tc;
            ptc.total_steps = 1, ptc.checkpoint_dir = ptc.metrics_path = ptc.plot_path = NULL;
            double t;
            if ((st = fm_optimizer_init(&opt, model, &pc)) || (st = fm_trainer_init(&probe, model, opt, &state, &source, &objective, &ptc)))
                cli_fail("pretrain", st);
            if ((st = fm_trainer_time_step(probe, rs.seed ^ 0x5eed, &t))) cli_fail("pretrain", st);
            fm_trainer_free(probe);
            fm_optimizer_free(opt);
            double eval_cost = t / 3 * ((double)rs.eval_tokens / ((double)rs.batch * rs.seq) + 1);
            double per_step = t + eval_cost / rs.eval_every;
            steps = (int)(minutes * 60 / per_step);
            if (steps < 1) steps = 1;
            if ((st = fm_comm_bcast(comm, &steps, sizeof steps, 0))) cli_fail("pretrain", st); /* rank 0's timing */
            printf("timing: %.0f ms per step; %.1f minutes make %d steps\n", 1000 * t, minutes, steps);
        }
        rs.total_steps = steps;
        ac.total_steps = steps;
        if (ac.min_lr < 0) ac.min_lr = ac.lr / 10;
        if (ac.warmup_steps < 0) ac.warmup_steps = steps / 10 < 100 ? steps / 10 : 100;
        if (ac.warmup_steps > steps) ac.warmup_steps = steps;
        if ((st = fm_optimizer_init(&opt, model, &ac))) {
            if (st == FM_ERR_NOMEM) cli_fail("pretrain", st);
            cli_usage_error("pretrain", "%s", fm_last_error());
        }
        /* what can fail for want of memory fails before the run directory exists */
        if ((st = fm_model_reserve(model, rs.batch, rs.seq))) cli_fail("pretrain", st);
        state.seed = rs.seed;
        fm_rng_seed(&state.rng, rs.seed);
    }
    if (!resume && rank0) {
        cli_mkdir_p("pretrain", out);
        lock = cli_lock_dir("pretrain", out);
        /* the run's settings and tokenizer first: the first checkpoint is what makes the run
         * resumable, so a kill before it leaves a directory that --resume names as unstarted */
        save_settings(out, &rs);
        char *dst = cli_path(out, "tokenizer.json");
        if ((st = fm_tokenizer_save(tok, dst))) cli_fail("pretrain", st);
        free(dst);
        if (image_tok && (st = fm_image_tokenizer_save(image_tok, out))) cli_fail("pretrain", st);
        if ((st = fm_checkpoint_save(out, model, opt, &state))) cli_fail("pretrain", st);
        printf("model: %zu parameters (%d layers, width %d, %d heads, context %d, vocabulary %d)",
               fm_model_num_params(model), mc->n_layer, mc->n_embd, mc->n_head, mc->n_positions, mc->vocab_size);
        if (fm_model_num_trainable(model) != fm_model_num_params(model))
            printf("; %zu trainable", fm_model_num_trainable(model));
        printf("\n");
    }
    tc.total_steps = rs.total_steps;
    prog.first_step = fm_optimizer_steps_done(opt);
    cli_dist_zero("pretrain", opt, comm, zero); /* after the first checkpoint, written whole */
    tc.overlap = overlap;
    fm_trainer *trainer;
    if ((st = fm_trainer_init(&trainer, model, opt, &state, &source, &objective, &tc))) cli_fail("pretrain", st);
    int stopped = cli_run_trainer("pretrain", trainer, opt, prog.tty, out);
    if (!stopped)
        printf("done: %d steps; model in %s (loss curve: %s/loss.svg)\n", rs.total_steps, out, out);
    fm_trainer_free(trainer);
    fm_shard_source_free(&source);
    fm_shard_close(train), fm_shard_close(val);
    free(tok_path), free(metrics_path), free(plot_path);
    fm_tokenizer_free(tok);
    fm_image_tokenizer_free(image_tok);
    fm_optimizer_free(opt);
    fm_model_free(model);
    fm_dir_unlock(lock);
    if (resume) /* the patterns load_settings copied */
        for (int i = 0; i < rs.freeze.n; i++) free((char *)rs.freeze.items[i]);
    cli_dist_finish();
    return stopped ? 130 : 0;
}

const cli_command cmd_pretrain = {"pretrain", "--data DIR --out RUN (--steps N | --minutes M) [options] | --out RUN --resume",
                                  "Pre-train a GPT on token shards (next-token prediction).", run};
