/*
 * cmd-finetune.c — `fm finetune`: adapting a pre-trained model to new text, to instructions or to
 * a labeled task, fully or with LoRA.
 *
 * The arguments, the run's settings file and the printing; the data formats and the chat
 * template are the library's (src/train/sft_data.c, src/tokenizer/chat_template.c), the training
 * its trainer with the cross-entropy objective (or the classification head's). A full run's
 * directory is a model directory like fm pretrain's; a LoRA run's holds the adapter as PEFT
 * writes it (adapter_config.json naming the base, adapter_model.safetensors) instead of the
 * weights. Both keep run.json, metrics.jsonl, loss.svg, samples.txt and best/, the model (or
 * adapter) with the lowest held-out loss so far. Ctrl-C or SIGTERM saves; --resume continues.
 * Under mpirun -np N it trains data-parallel (docs/distributed.md): rank 0 alone writes and prints.
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
#include "image_labels.h"

#ifndef FM_COMMIT
#define FM_COMMIT "unknown"
#endif

#define AUGMENT_SHIFT_MAX 8 /* --augment-shift: (2 * 8 + 1)^2 = 289 copies at most */

/* What run.json stores: everything that decides the sequence of losses. */
typedef struct {
    char base[4096], data[4096], val[4096];
    char format[32];
    int classify;   /* --task classify: a classification head on labeled lines (or images) */
    char train_images[4096], train_labels[4096]; /* --train-images: labeled images instead of --data */
    int per_class;  /* images: labels drawn per class (fm probe's draw), 0: every image */
    int draw;       /* images: which draw (0, 1, ...) */
    uint64_t draw_seed; /* images: the draws' seed (fm probe's --seed) */
    int augment_shift;  /* images: training images also shifted by up to this many pixels */
    int refit;      /* images: the held-out images are trained on too (a refit after a search) */
    int scratch;    /* --init scratch: the base's architecture with fresh weights */
    int head_only;  /* --task classify: only the head trains */
    fm_classifier_pooling pool; /* --task classify: the head's read-out (--pool; a given head's own) */
    int loss_on_all;
    int val_every;  /* without --val: every val_every-th example held out */
    float dropout;  /* GPT-2's residual and embedding dropout while training */
    int eval_rows;  /* held-out rows per evaluation, 0: all */
    int add_chat_tokens;
    int lora;
    fm_lora_config lora_cfg;
    int batch, seq, grad_accum, eval_every, save_every, sample_every, sample_tokens, total_steps;
    uint64_t seed;
    fm_matmul_precision precision;
    char command_line[4096];
} finetune_settings;

static char *settings_text(const finetune_settings *r) {
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "base", r->base);
    ok = ok && cJSON_AddStringToObject(o, "data", r->data);
    ok = ok && cJSON_AddStringToObject(o, "val", r->val);
    ok = ok && cJSON_AddNumberToObject(o, "val_every", r->val_every);
    ok = ok && cJSON_AddNumberToObject(o, "dropout", r->dropout);
    ok = ok && cJSON_AddNumberToObject(o, "eval_rows", r->eval_rows);
    ok = ok && cJSON_AddBoolToObject(o, "add_chat_tokens", r->add_chat_tokens);
    ok = ok && cJSON_AddStringToObject(o, "format", r->format);
    ok = ok && cJSON_AddStringToObject(o, "task", r->classify ? "classify" : "lm");
    ok = ok && cJSON_AddBoolToObject(o, "head_only", r->head_only);
    if (r->classify) ok = ok && cJSON_AddStringToObject(o, "pool", fm_classifier_pooling_name(r->pool));
    ok = ok && cJSON_AddStringToObject(o, "init", r->scratch ? "scratch" : "pretrained");
    if (r->train_images[0]) {
        char draw_seed[32];
        snprintf(draw_seed, sizeof draw_seed, "%llu", (unsigned long long)r->draw_seed);
        ok = ok && cJSON_AddStringToObject(o, "train_images", r->train_images);
        ok = ok && cJSON_AddStringToObject(o, "train_labels", r->train_labels);
        ok = ok && cJSON_AddNumberToObject(o, "per_class", r->per_class);
        ok = ok && cJSON_AddNumberToObject(o, "draw", r->draw);
        ok = ok && cJSON_AddStringToObject(o, "draw_seed", draw_seed);
        ok = ok && cJSON_AddNumberToObject(o, "augment_shift", r->augment_shift);
        ok = ok && cJSON_AddBoolToObject(o, "refit", r->refit);
    }
    ok = ok && cJSON_AddStringToObject(o, "loss_on", r->loss_on_all ? "all" : "completion");
    ok = ok && cJSON_AddBoolToObject(o, "lora", r->lora);
    if (r->lora) {
        char targets[128];
        fm_lora_targets_text(r->lora_cfg.targets, targets, sizeof targets);
        ok = ok && cJSON_AddNumberToObject(o, "lora_r", r->lora_cfg.r);
        ok = ok && cJSON_AddNumberToObject(o, "lora_alpha", r->lora_cfg.alpha);
        ok = ok && cJSON_AddNumberToObject(o, "lora_dropout", r->lora_cfg.dropout);
        ok = ok && cJSON_AddStringToObject(o, "lora_targets", targets);
    }
    ok = ok && cJSON_AddNumberToObject(o, "batch", r->batch);
    ok = ok && cJSON_AddNumberToObject(o, "seq", r->seq);
    ok = ok && cJSON_AddNumberToObject(o, "grad_accum", r->grad_accum);
    ok = ok && cJSON_AddNumberToObject(o, "eval_every", r->eval_every);
    ok = ok && cJSON_AddNumberToObject(o, "save_every", r->save_every);
    ok = ok && cJSON_AddNumberToObject(o, "sample_every", r->sample_every);
    ok = ok && cJSON_AddNumberToObject(o, "sample_tokens", r->sample_tokens);
    ok = ok && cJSON_AddNumberToObject(o, "total_steps", r->total_steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
    ok = ok && cJSON_AddStringToObject(o, "seed", seed);
    ok = ok && cJSON_AddStringToObject(o, "precision", fm_matmul_precision_name(r->precision));
    ok = ok && cJSON_AddStringToObject(o, "fm_commit", FM_COMMIT);
    ok = ok && cJSON_AddStringToObject(o, "command_line", r->command_line);
    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text) cli_out_of_memory("finetune");
    return text;
}

static void bad_settings(const char *path, const char *key, const char *want) {
    fprintf(stderr, "fm finetune: %s: \"%s\" %s\n", path, key, want);
    exit(1);
}

static void json_text(const char *path, cJSON *o, const char *key, char *out, size_t size) {
    cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(it) || strlen(it->valuestring) >= size) bad_settings(path, key, "is missing or not a string");
    snprintf(out, size, "%s", it->valuestring);
}

static double json_number(const char *path, cJSON *o, const char *key, double lo, double hi, int whole) {
    cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || it->valuedouble < lo || it->valuedouble > hi ||
        (whole && it->valuedouble != floor(it->valuedouble)))
        bad_settings(path, key, "is missing or not a number in range");
    return it->valuedouble;
}

static void load_settings(const char *run_dir, finetune_settings *r) {
    char *path = cli_path(run_dir, "run.json");
    size_t len;
    char *text = cli_read_file("finetune", path, &len);
    cJSON *o = cli_parse_json("finetune", path, text, len);
    if (!cJSON_IsObject(o)) bad_settings(path, "(top)", "is not a settings object");
    json_text(path, o, "base", r->base, sizeof r->base);
    json_text(path, o, "data", r->data, sizeof r->data);
    json_text(path, o, "val", r->val, sizeof r->val);
    json_text(path, o, "format", r->format, sizeof r->format);
    char task[32];
    json_text(path, o, "task", task, sizeof task);
    r->classify = strcmp(task, "classify") == 0;
    r->head_only = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "head_only"));
    r->pool = FM_POOL_LAST; /* runs before --pool recorded none: the last token */
    if (r->classify && cJSON_GetObjectItemCaseSensitive(o, "pool")) {
        char pool[16];
        json_text(path, o, "pool", pool, sizeof pool);
        if (fm_classifier_pooling_parse(pool, &r->pool)) bad_settings(path, "pool", "must be \"last\" or \"mean\"");
    }
    cJSON *init = cJSON_GetObjectItemCaseSensitive(o, "init");
    r->scratch = cJSON_IsString(init) && !strcmp(init->valuestring, "scratch");
    if (cJSON_GetObjectItemCaseSensitive(o, "train_images")) {
        char draw_seed[32], *stop = NULL;
        json_text(path, o, "train_images", r->train_images, sizeof r->train_images);
        json_text(path, o, "train_labels", r->train_labels, sizeof r->train_labels);
        r->per_class = (int)json_number(path, o, "per_class", 0, 1 << 30, 1);
        r->draw = (int)json_number(path, o, "draw", 0, 1 << 30, 1);
        json_text(path, o, "draw_seed", draw_seed, sizeof draw_seed);
        errno = 0;
        r->draw_seed = strtoull(draw_seed, &stop, 10);
        if (!draw_seed[0] || *stop || errno) bad_settings(path, "draw_seed", "is not a whole number");
        r->augment_shift = cJSON_GetObjectItemCaseSensitive(o, "augment_shift")
                               ? (int)json_number(path, o, "augment_shift", 0, AUGMENT_SHIFT_MAX, 1)
                               : 0;
        r->refit = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "refit"));
    }
    char loss_on[32], seed[32], precision[16];
    json_text(path, o, "loss_on", loss_on, sizeof loss_on);
    r->loss_on_all = strcmp(loss_on, "all") == 0;
    r->val_every = (int)json_number(path, o, "val_every", 2, 1 << 30, 1);
    r->dropout = (float)json_number(path, o, "dropout", 0, 0.99, 0);
    r->eval_rows = (int)json_number(path, o, "eval_rows", 0, 1 << 30, 1);
    r->add_chat_tokens = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "add_chat_tokens"));
    r->lora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "lora"));
    r->batch = (int)json_number(path, o, "batch", 1, 1 << 20, 1);
    r->seq = (int)json_number(path, o, "seq", 1, 1 << 20, 1);
    r->grad_accum = (int)json_number(path, o, "grad_accum", 1, 1 << 16, 1);
    r->eval_every = (int)json_number(path, o, "eval_every", 1, 1 << 30, 1);
    r->save_every = (int)json_number(path, o, "save_every", 1, 1 << 30, 1);
    r->sample_every = (int)json_number(path, o, "sample_every", 0, 1 << 30, 1);
    r->sample_tokens = (int)json_number(path, o, "sample_tokens", 0, 1 << 20, 1);
    r->total_steps = (int)json_number(path, o, "total_steps", 1, 1 << 30, 1);
    json_text(path, o, "seed", seed, sizeof seed);
    char *end = NULL;
    errno = 0;
    r->seed = strtoull(seed, &end, 10);
    if (!seed[0] || *end || errno) bad_settings(path, "seed", "is not a whole number");
    json_text(path, o, "precision", precision, sizeof precision);
    if (fm_matmul_precision_parse(precision, &r->precision)) bad_settings(path, "precision", "must be fp32 or bf16");
    cJSON *line = cJSON_GetObjectItemCaseSensitive(o, "command_line");
    if (cJSON_IsString(line)) snprintf(r->command_line, sizeof r->command_line, "%s", line->valuestring);
    cJSON_Delete(o);
    free(text), free(path);
}

/* An absolute path when it resolves (run.json must find it from anywhere), else as given. */
static void absolute(char *out, size_t size, const char *path) {
    char *real = realpath(path, NULL);
    snprintf(out, size, "%s", real ? real : path);
    free(real);
}

/* Labeled images as fine-tuning data: the images of draw rs->draw of rs->per_class labels per
 * class (fm probe's rows for that count, draw and seed; 0: every image), tokenized with the base's
 * image tokenizer (<|image|>, the codes, <|/image|>: the head reads the last); of each class's rows,
 * in file order, every rs->val_every-th is held out. With rs->augment_shift = S > 0 the training
 * part also holds each of its images moved by every (dy, dx) in [-S, S]^2 other than (0, 0), zero
 * filled ((2S + 1)^2 copies in all, each with its image's label); the held-out part is as is.
 * With rs->refit the training part holds every drawn image (the held-out ones too, moved alike):
 * the final fit once a search has chosen the settings, whose held-out figures are then on
 * images it trained on.
 * The labels are the IDX classes, named "0", "1", ... in index order. Dies on error, naming the
 * file or flag. */
static void image_data(const finetune_settings *rs, const fm_tokenizer *tok, int n_positions, fm_sft_data **train,
                       fm_sft_data **held) {
    fm_image_tokenizer *itok;
    fm_status st = fm_image_tokenizer_load(rs->base, &itok);
    if (st) cli_fail("finetune", st);
    cli_image_set set;
    cli_image_set_load("finetune", rs->train_images, rs->train_labels, itok, n_positions, &set);
    int k = set.k, n = set.images.count;
    if (k < 2) {
        fprintf(stderr, "fm finetune: %s: every label is %d; a classifier needs at least two classes\n",
                rs->train_labels, k - 1);
        exit(1);
    }
    int *y = cli_alloc("finetune", (size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) y[i] = set.labels.data[i];
    int n_rows = rs->per_class ? rs->per_class * k : n;
    int *rows = cli_alloc("finetune", (size_t)n_rows, sizeof(int));
    if (rs->per_class) {
        uint64_t seed = fm_probe_draw_seed(rs->draw_seed, rs->per_class, rs->draw);
        if ((st = fm_probe_draw(y, n, k, rs->per_class, seed, rows))) {
            fprintf(stderr, "fm finetune: %s: --per-class %d: %s\n", rs->train_labels, rs->per_class, fm_last_error());
            exit(1);
        }
    } else {
        for (int i = 0; i < n; i++) rows[i] = i;
    }
    /* stratified: the m-th row of class c (m = 0, 1, ...) is held out when m % every == every - 1 */
    int *seen = cli_alloc("finetune", (size_t)k, sizeof(int));
    int *part_rows[2], *part_labels[2], count[2] = {0, 0};
    memset(seen, 0, sizeof(int) * (size_t)k);
    for (int p = 0; p < 2; p++) {
        part_rows[p] = cli_alloc("finetune", (size_t)n_rows, sizeof(int));
        part_labels[p] = cli_alloc("finetune", (size_t)n_rows, sizeof(int));
    }
    for (int i = 0; i < n_rows; i++) {
        int c = y[rows[i]], p = seen[c]++ % rs->val_every == rs->val_every - 1;
        part_rows[p][count[p]] = rows[i];
        part_labels[p][count[p]++] = c;
    }
    if (!count[0] || !count[1])
        cli_usage_error("finetune", "%s: %d images are too few to hold out every %d-th of each class (--val-every)",
                        rs->train_images, n_rows, rs->val_every);
    char names_buf[16 * 64], *names[64];
    char **label_names = k <= 64 ? names : cli_alloc("finetune", (size_t)k, sizeof(char *));
    for (int c = 0; c < k; c++) {
        char num[16];
        snprintf(num, sizeof num, "%d", c);
        label_names[c] = k <= 64 ? memcpy(names_buf + 16 * c, num, strlen(num) + 1) : cli_strdup("finetune", num);
    }
    int pad = fm_tokenizer_special_id(tok, "<|endoftext|>");
    fm_sft_data **out[2] = {train, held};
    if (rs->refit) { /* the held-out images join the training part (after its own) */
        memcpy(part_rows[0] + count[0], part_rows[1], sizeof(int) * (size_t)count[1]);
        memcpy(part_labels[0] + count[0], part_labels[1], sizeof(int) * (size_t)count[1]);
        count[0] += count[1];
    }
    for (int p = 0; p < 2; p++) {
        int S = p == 0 ? rs->augment_shift : 0, copies = (2 * S + 1) * (2 * S + 1), n_p = count[p] * copies;
        int *ids = cli_alloc("finetune", (size_t)n_p * set.len, sizeof(int));
        int *labels = cli_alloc("finetune", (size_t)n_p, sizeof(int));
        for (int c = 0; c < copies; c++) {
            int dy, dx;
            cli_image_copy_offset(c, S, &dy, &dx);
            cli_image_set_encode_into("finetune", &set, itok, part_rows[p], count[p], dy, dx,
                                      ids + (size_t)c * count[p] * set.len);
            memcpy(labels + (size_t)c * count[p], part_labels[p], sizeof(int) * (size_t)count[p]);
        }
        if ((st = fm_sft_data_from_ids(out[p], rs->train_images, ids, (size_t)n_p, set.len, labels,
                                       (const char *const *)label_names, k, pad >= 0 ? pad : 0)))
            cli_fail("finetune", st);
        free(ids), free(labels), free(part_rows[p]), free(part_labels[p]);
    }
    if (k > 64) {
        for (int c = 0; c < k; c++) free(label_names[c]);
        free(label_names);
    }
    free(seen), free(rows), free(y);
    cli_image_set_free(&set);
    fm_image_tokenizer_free(itok);
}

/* The held-out accuracy of model's head on held (tsv rows, all one length): the share of rows
 * whose argmax is their label. */
static double held_accuracy(fm_model *model, const fm_sft_data *held) {
    size_t n = fm_sft_data_num_examples(held), len = 0;
    fm_sft_data_example(held, 0, NULL, NULL, &len, NULL);
    int *ids = cli_alloc("finetune", n, len * sizeof(int)), *pred = cli_alloc("finetune", n, sizeof(int));
    size_t right = 0;
    for (size_t i = 0; i < n; i++) {
        const int *x;
        fm_sft_data_example(held, i, &x, NULL, NULL, NULL);
        memcpy(ids + i * len, x, len * sizeof(int));
    }
    cli_image_predict("finetune", model, ids, (int)n, (int)len, 64, pred, NULL);
    for (size_t i = 0; i < n; i++) {
        int label;
        fm_sft_data_example(held, i, NULL, NULL, NULL, &label);
        right += pred[i] == label;
    }
    free(ids), free(pred);
    return n ? (double)right / n : 0.0;
}

/* ------------------------------------------------------------ the run */

static int run(int argc, char **argv) {
    const char *base_dir = NULL, *data = NULL, *val = NULL, *out = NULL, *format = NULL, *loss_on = NULL;
    const char *precision = NULL, *targets = NULL, *task = NULL, *pool = NULL;
    const char *train_images = NULL, *train_labels = NULL, *init = NULL;
    int per_class = -1, draw = -1, augment_shift = -1, refit = 0;
    uint64_t draw_seed = 1;
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    ac.lr = 0;
    ac.min_lr = -1;
    ac.warmup_steps = -1;
    ac.weight_decay = 0.0f;
    int zero = 0, overlap = 0;
    int steps = 0, threads = 0, resume = 0, force = 0, lora = 0, lora_r = 0;
    float lora_alpha = 0, lora_dropout = -1, epochs = 0, dropout = -1;
    finetune_settings rs = {.batch = 8, .grad_accum = 1, .eval_every = 50, .save_every = 200, .sample_every = 0,
                            .sample_tokens = 64, .seed = 1337, .val_every = 0};
    cli_option opts[] = {
        {"model", OPT_STRING, &base_dir, 0, 0, "the pre-trained model directory (required)"},
        {"data", OPT_STRING, &data, 0, 0, "the training file (required)"},
        {"val", OPT_STRING, &val, 0, 0, "a held-out file in the same format (default: a share of --data)"},
        {"val-every", OPT_INT, &rs.val_every, 2, 1 << 30,
         "without --val, every K-th example of --data is held out (20: 5%; text: its last 1/K; images: every K-th "
         "of each class, 5)"},
        {"eval-rows", OPT_INT, &rs.eval_rows, 0, 1 << 30, "held-out rows per evaluation, 0 = all (0)"},
        {"add-chat-tokens", OPT_FLAG, &rs.add_chat_tokens, 0, 0,
         "give a tokenizer without them the chat markers (<|system|>, <|user|>, <|assistant|>), growing the embedding"},
        {"out", OPT_STRING, &out, 0, 0, "run directory (required)"},
        {"format", OPT_STRING, &format, 0, 0, "text, chat, prompt-completion or tsv (default: from the first line)"},
        {"loss-on", OPT_STRING, &loss_on, 0, 0, "completion (default: the answers and their end token) or all"},
        {"task", OPT_STRING, &task, 0, 0, "lm (default: next tokens) or classify (labeled lines, text TAB label)"},
        {"head-only", OPT_FLAG, &rs.head_only, 0, 0, "--task classify: train the head alone (a linear probe)"},
        {"pool", OPT_STRING, &pool, 0, 0,
         "--task classify, a new head: last (default: the final hidden state at the last token, as transformers) "
         "or mean (the mean of the final hidden states up to it)"},
        {"train-images", OPT_STRING, &train_images, 0, 0,
         "--task classify on an IDX image file (tokenized with --model's image tokenizer) instead of --data"},
        {"train-labels", OPT_STRING, &train_labels, 0, 0, "the IDX label file of --train-images (classes 0, 1, ...)"},
        {"per-class", OPT_INT, &per_class, 0, 1 << 20,
         "images: train on this many labels per class, drawn as fm probe draws them (0 = every image; default 0)"},
        {"draw", OPT_INT, &draw, 0, 1 << 20, "images: which draw of --per-class labels (0, 1, ...; default 0)"},
        {"draw-seed", OPT_U64, &draw_seed, 0, 1.8e19, "images: the draws' seed, fm probe's --seed (default 1)"},
        {"augment-shift", OPT_INT, &augment_shift, 0, AUGMENT_SHIFT_MAX,
         "images: also train on every training image moved by up to N pixels each way, zero filled ((2N+1)^2 "
         "copies; the held-out images are not moved; default 0)"},
        {"refit", OPT_FLAG, &refit, 0, 0,
         "images: train on the held-out images too (the final fit after a search chose the settings; the held-out "
         "figures are then on seen images)"},
        {"init", OPT_STRING, &init, 0, 0,
         "pretrained (default: --model's weights) or scratch (its architecture, freshly initialised from --seed)"},
        {"dropout", OPT_FLOAT, &dropout, 0, 0.99,
         "GPT-2's dropout on each block's outputs and the embeddings while training (0; GPT-2 used 0.1)"},
        {"lora", OPT_FLAG, &lora, 0, 0, "train a LoRA adapter instead of every weight"},
        {"lora-r", OPT_INT, &lora_r, 1, 65536, "LoRA rank (8)"},
        {"lora-alpha", OPT_FLOAT, &lora_alpha, 1e-6, 1e6, "LoRA alpha: scale = alpha / r (8)"},
        {"lora-dropout", OPT_FLOAT, &lora_dropout, 0, 0.99, "dropout on the adapters' input (0)"},
        {"lora-targets", OPT_STRING, &targets, 0, 0, "products among c_attn, attn.c_proj, c_fc, mlp.c_proj (c_attn)"},
        {"steps", OPT_INT, &steps, 1, 1 << 30, "optimizer steps"},
        {"epochs", OPT_FLOAT, &epochs, 0.001, 1e6, "passes over the training examples, turned into steps"},
        {"batch", OPT_INT, &rs.batch, 1, 65536, "examples per micro-batch (8)" CLI_DIST_BATCH_HELP},
        {"grad-accum", OPT_INT, &rs.grad_accum, 1, 65536, "micro-batches per step (1)"},
        {"seq", OPT_INT, &rs.seq, 1, 1048576, "tokens per example row (default: the context)"},
        {"lr", OPT_FLOAT, &ac.lr, 0, 10, "peak learning rate (1e-4 full, 1e-3 LoRA)"},
        {"min-lr", OPT_FLOAT, &ac.min_lr, 0, 10, "final learning rate (default lr / 10)"},
        {"warmup", OPT_INT, &ac.warmup_steps, 0, 1 << 30, "warm-up steps (default min(100, steps / 10))"},
        {"weight-decay", OPT_FLOAT, &ac.weight_decay, 0, 10, "AdamW decay of the 2-D weights (0)"},
        {"grad-clip", OPT_FLOAT, &ac.grad_clip, 0, 1e6, "global gradient-norm clip, 0 = off (1.0)"},
        {"eval-every", OPT_INT, &rs.eval_every, 1, 1 << 30, "held-out evaluation interval (50)"},
        {"save-every", OPT_INT, &rs.save_every, 1, 1 << 30, "checkpoint interval (200)"},
        {"sample-every", OPT_INT, &rs.sample_every, 0, 1 << 30, "sample interval, 0 = never (0)"},
        {"sample-tokens", OPT_INT, &rs.sample_tokens, 0, 1 << 20, "tokens per sample (64)"},
        {"seed", OPT_U64, &rs.seed, 0, 1.8e19, "random seed (1337)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
        {"zero", OPT_INT, &zero, 0, 1, CLI_ZERO_HELP},
        {"overlap", OPT_INT, &overlap, 0, 1, CLI_OVERLAP_HELP},
        {"precision", OPT_STRING, &precision, 0, 0, "matrix products: fp32 (default) or bf16"},
        {"resume", OPT_FLAG, &resume, 0, 0, "continue the run in --out from its checkpoint"},
        {"force", OPT_FLAG, &force, 0, 0, "start a new run in an --out that holds one (replacing it)"},
    };
    char *positional[1];
    cli_parse(&cmd_finetune, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!out) cli_usage_error("finetune", "--out RUN_DIR is required");
    fm_set_threads(threads);
    fm_comm *comm = cli_dist_init("finetune", threads);
    int rank0 = fm_comm_rank(comm) == 0; /* data parallel: the one rank that writes */
    int any_lora_flag = lora_r || lora_alpha > 0 || lora_dropout >= 0 || targets;

    fm_model *model = NULL;
    fm_optimizer *opt = NULL;
    fm_train_state state = {0};
    fm_tokenizer *tok = NULL;
    fm_status st;
    int lock = -1;
    char *metrics_path = cli_path(out, "metrics.jsonl"), *plot_path = cli_path(out, "loss.svg");
    char *best_dir = cli_path(out, "best");
    if (resume) {
        if (base_dir || data || val || format || loss_on || steps || epochs || lora || any_lora_flag || precision || task ||
            dropout >= 0 || train_images || train_labels || per_class >= 0 || draw >= 0 || augment_shift >= 0 || init || refit ||
            pool)
            cli_usage_error("finetune", "--resume continues with the run's stored settings; give only --out "
                            "(and --threads, --zero)");
        if (rank0) lock = cli_lock_dir("finetune", out);
        if (!cli_holds_checkpoint(out)) {
            fprintf(stderr, "fm finetune: %s holds no checkpoint: the run stopped before its first save; start it "
                    "again (--force over what it left)\n", out);
            exit(1);
        }
        load_settings(out, &rs);
        fm_checkpoint_report report;
        if ((st = fm_checkpoint_load_report(out, &model, &opt, &state, &report))) cli_fail("finetune", st);
        if (report.skipped[0]) fprintf(stderr, "fm finetune: warning: passed over %s\n", report.skipped);
        if (rs.classify && fm_model_num_labels(model) && fm_model_classifier_pooling(model) != rs.pool) {
            fprintf(stderr, "fm finetune: %s/run.json says \"pool\": \"%s\" but the checkpoint's head (config.json's "
                    "\"classifier_pooling\") reads '%s'\n", out, fm_classifier_pooling_name(rs.pool),
                    fm_classifier_pooling_name(fm_model_classifier_pooling(model)));
            exit(1);
        }
        char *tok_path = cli_path(out, "tokenizer.json");
        if ((st = fm_tokenizer_load(&tok, tok_path))) cli_fail("finetune", st);
        free(tok_path);
        printf("resuming %s at step %lld of %d (checkpoint %s)\n", out, (long long)fm_optimizer_steps_done(opt),
               rs.total_steps, report.used);
    } else {
        if (!base_dir || (!data && !train_images))
            cli_usage_error("finetune", "--model BASE and --data FILE (or --train-images) are required");
        if (train_images && (data || val || format))
            cli_usage_error("finetune", "--train-images replaces --data, --val and --format; give one or the other");
        if (!train_images != !train_labels) cli_usage_error("finetune", "--train-images and --train-labels go together");
        if (!train_images && (per_class >= 0 || draw >= 0 || augment_shift >= 0 || refit))
            cli_usage_error("finetune", "--per-class, --draw, --augment-shift and --refit are for labeled images: give "
                            "--train-images");
        if (train_images && !(task && !strcmp(task, "classify")))
            cli_usage_error("finetune", "--train-images trains a classification head: give --task classify");
        if (init && strcmp(init, "pretrained") && strcmp(init, "scratch"))
            cli_usage_error("finetune", "--init must be pretrained or scratch, not '%s'", init);
        rs.scratch = init && !strcmp(init, "scratch");
        rs.per_class = per_class > 0 ? per_class : 0;
        rs.draw = draw > 0 ? draw : 0;
        rs.draw_seed = draw_seed;
        rs.augment_shift = augment_shift > 0 ? augment_shift : 0;
        rs.refit = refit;
        if (!steps == !epochs) cli_usage_error("finetune", "give exactly one of --steps and --epochs");
        if (precision && fm_matmul_precision_parse(precision, &rs.precision))
            cli_usage_error("finetune", "--precision: %s", fm_last_error());
        if (loss_on && strcmp(loss_on, "all") && strcmp(loss_on, "completion"))
            cli_usage_error("finetune", "--loss-on must be completion or all, not '%s'", loss_on);
        rs.loss_on_all = loss_on && strcmp(loss_on, "all") == 0;
        if (rank0 && access(metrics_path, F_OK) == 0 && !force) /* data parallel: before rank 0 writes there */
            cli_usage_error("finetune", "%s already holds a run; use --resume, another --out, or --force", out);
        if (rank0) cli_check_out_dir("finetune", out, base_dir, force);
        if (task && strcmp(task, "lm") && strcmp(task, "classify"))
            cli_usage_error("finetune", "--task must be lm or classify, not '%s'", task);
        rs.classify = task && strcmp(task, "classify") == 0;
        if (rs.head_only && !rs.classify) cli_usage_error("finetune", "--head-only goes with --task classify");
        if (pool && !rs.classify) cli_usage_error("finetune", "--pool chooses a classification head's read-out: give "
                                                  "--task classify");
        if (pool && fm_classifier_pooling_parse(pool, &rs.pool))
            cli_usage_error("finetune", "--pool must be last or mean, not '%s'", pool);
        rs.lora = lora || any_lora_flag;
        rs.dropout = dropout > 0 ? dropout : 0;
        fm_lora_config_default(&rs.lora_cfg);
        if (lora_r) rs.lora_cfg.r = lora_r;
        if (lora_alpha > 0) rs.lora_cfg.alpha = lora_alpha;
        if (lora_dropout >= 0) rs.lora_cfg.dropout = lora_dropout;
        if (targets && fm_lora_parse_targets(targets, &rs.lora_cfg.targets))
            cli_usage_error("finetune", "--lora-targets: %s", fm_last_error());
        absolute(rs.base, sizeof rs.base, base_dir);
        if (data) absolute(rs.data, sizeof rs.data, data);
        if (train_images) absolute(rs.train_images, sizeof rs.train_images, train_images);
        if (train_images) absolute(rs.train_labels, sizeof rs.train_labels, train_labels);
        if (!rs.val_every) rs.val_every = train_images ? 5 : 20;
        if (val) absolute(rs.val, sizeof rs.val, val);
        if (strlen(rs.base) >= sizeof rs.lora_cfg.base_model)
            cli_usage_error("finetune", "--model: the path %s is longer than %zu bytes", rs.base,
                            sizeof rs.lora_cfg.base_model - 1);
        memcpy(rs.lora_cfg.base_model, rs.base, strlen(rs.base) + 1);
        size_t used = 0;
        for (int i = 0; i < argc && used < sizeof rs.command_line; i++)
            used += snprintf(rs.command_line + used, sizeof rs.command_line - used, "%s%s", i ? " " : "fm finetune ",
                             argv[i]);
        cli_load_model("finetune", rs.base, &model, &tok, 1);
        if (rs.scratch) { /* the same architecture, GPT-2's initialisation (a head, if any, is dropped) */
            fm_model *fresh = NULL;
            if ((st = fm_model_init(&fresh, fm_model_config(model), rs.seed ^ 0x736372617463ULL)))
                cli_fail("finetune", st);
            fm_model_free(model);
            model = fresh;
        }
    }
    int images = rs.train_images[0] != 0;
    fm_set_matmul_precision(rs.precision);
    if ((st = fm_model_set_dropout(model, rs.dropout))) cli_fail("finetune", st);
    const fm_config *mc = fm_model_config(model);
    int seq_given = rs.seq != 0;
    if (!rs.seq) rs.seq = mc->n_positions;
    if (rs.seq > mc->n_positions)
        cli_usage_error("finetune", "--seq %d is longer than the model's context (%d)", rs.seq, mc->n_positions);

    /* the chat markers a tokenizer lacks (GPT-2's): new special tokens and embedding rows */
    if (!resume && rs.add_chat_tokens) {
        if (rs.lora) cli_usage_error("finetune", "--add-chat-tokens changes the base's embedding, which a LoRA run "
                                     "leaves as it is: fine-tune fully, or add the tokens in a full run first");
        const char *markers[] = {"<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>"};
        int V0 = fm_tokenizer_vocab_size(tok);
        for (int i = 0; i < 4; i++)
            if ((st = fm_tokenizer_add_special(tok, markers[i], NULL))) cli_fail("finetune", st);
        if (fm_tokenizer_vocab_size(tok) > V0) {
            fm_model *grown = NULL;
            if ((st = fm_model_resize_vocab(model, fm_tokenizer_vocab_size(tok), &grown))) cli_fail("finetune", st);
            fm_model_free(model);
            model = grown;
            mc = fm_model_config(model);
            if ((st = fm_model_set_dropout(model, rs.dropout))) cli_fail("finetune", st);
            printf("added %d chat tokens: vocabulary %d -> %d (new rows the mean embedding)\n",
                   fm_tokenizer_vocab_size(tok) - V0, V0, fm_tokenizer_vocab_size(tok));
        }
    }

    /* the data: every line checked before anything is written */
    fm_sft_data *all = NULL, *train = NULL, *held = NULL;
    fm_sft_format fmt = FM_SFT_TSV;
    int n_labels;
    if (images) {
        image_data(&rs, tok, mc->n_positions, &train, &held);
        snprintf(rs.format, sizeof rs.format, "images");
        n_labels = fm_sft_data_num_labels(train);
        size_t len = 0; /* every image is len tokens: rows of exactly that, the head reading <|/image|> */
        fm_sft_data_example(train, 0, NULL, NULL, &len, NULL);
        if (!seq_given) rs.seq = (int)len;
        if ((size_t)rs.seq < len)
            cli_usage_error("finetune", "--seq %d is shorter than an image's %zu tokens", rs.seq, len);
    } else {
        const char *fmt_name = resume ? rs.format : format;
        if ((st = fm_sft_data_load(&all, rs.data, fmt_name, tok, rs.loss_on_all, NULL, 0))) cli_fail("finetune", st);
        fmt = fm_sft_data_format(all);
        snprintf(rs.format, sizeof rs.format, "%s", fm_sft_format_name(fmt));
        if (fmt == FM_SFT_TSV && !rs.classify)
            cli_usage_error("finetune", "%s holds labeled lines (text TAB label): that is --task classify", rs.data);
        if (rs.classify && fmt != FM_SFT_TSV)
            cli_usage_error("finetune", "--task classify reads labeled lines (text TAB label); %s is %s", rs.data,
                            rs.format);
        /* a classifier's labels: the training file's, sorted; a resumed or continued model's own */
        n_labels = fm_sft_data_num_labels(all);
        const char *const *labels = fm_sft_data_labels(all);
        if (rs.val[0]) {
            train = all, all = NULL;
            st = fm_sft_data_load(&held, rs.val, rs.format, tok, rs.loss_on_all, labels, n_labels);
        } else {
            st = fm_sft_data_split(all, rs.val_every, &train, &held);
        }
        if (st) cli_fail("finetune", st);
        fm_sft_data_free(all);
    }
    fm_data_source source;
    if ((st = fm_sft_source_init(&source, train, held, rs.seq, rs.seed, (size_t)rs.eval_rows))) cli_fail("finetune", st);
    size_t n_train = fm_sft_data_num_examples(train), no_loss = 0, no_loss_held = 0;
    size_t truncated = fm_sft_data_truncated(train, rs.seq, &no_loss) + fm_sft_data_truncated(held, rs.seq, &no_loss_held);
    if (images && rs.augment_shift)
        printf("augment: every training image also moved by up to %d pixels each way: %d copies\n", rs.augment_shift,
               (2 * rs.augment_shift + 1) * (2 * rs.augment_shift + 1));
    if (images && rs.refit)
        printf("refit: the %zu held-out images are trained on too (their figures below are on seen images)\n",
               fm_sft_data_num_examples(held));
    if (images && rs.per_class)
        printf("data: %s (images, draw %d of %d labels per class, seed %llu): %zu training images, %zu held out\n",
               rs.train_images, rs.draw, rs.per_class, (unsigned long long)rs.draw_seed, n_train,
               fm_sft_data_num_examples(held));
    else if (images)
        printf("data: %s (images): %zu training images, %zu held out (every %d-th of each class)\n", rs.train_images,
               n_train, fm_sft_data_num_examples(held), rs.val_every);
    else if (fmt == FM_SFT_TEXT)
        printf("data: %s (text): %zu training tokens, %zu held out\n", rs.data, fm_sft_data_num_tokens(train),
               fm_sft_data_num_tokens(held));
    else
        printf("data: %s (%s): %zu training examples, %zu held out\n", rs.data, rs.format, n_train,
               fm_sft_data_num_examples(held));
    if (fmt != FM_SFT_TEXT && no_loss == n_train)
        cli_usage_error("finetune", "%s: every example is cut at --seq %d before any token the loss covers: raise "
                        "--seq (the model's context is %d)", rs.data, rs.seq, mc->n_positions);
    if (fmt != FM_SFT_TEXT && truncated)
        printf("  %zu examples are longer than %d tokens and cut (%zu of them keep nothing to learn)\n", truncated,
               rs.seq, no_loss + no_loss_held);
    /* held-out bits per byte where the loss covers every token (plain text) */
    double bytes_per_token = fmt == FM_SFT_TEXT && fm_sft_data_num_tokens(held)
                                 ? (double)fm_sft_data_num_bytes(held) / fm_sft_data_num_tokens(held) : 0;
    if (rs.classify && !resume) {
        if (rs.lora) cli_usage_error("finetune", "--task classify trains the head and the model (or, with "
                                     "--head-only, the head): LoRA adapters hold no head");
        if (fm_model_num_labels(model) == 0 &&
            (st = fm_model_add_classifier_pooled(model, n_labels, fm_sft_data_labels(train), fm_sft_data_pad_id(train),
                                                 rs.pool, rs.seed)))
            cli_fail("finetune", st);
        /* a head the model has keeps its read-out: --pool may only say the same */
        if (pool && fm_model_classifier_pooling(model) != rs.pool)
            cli_usage_error("finetune", "--pool %s: %s's head already reads '%s' (config.json's \"classifier_pooling\"); "
                            "--pool chooses the read-out of a new head only", pool, rs.base,
                            fm_classifier_pooling_name(fm_model_classifier_pooling(model)));
        rs.pool = fm_model_classifier_pooling(model);
        for (int i = 0; i < n_labels && fm_model_num_labels(model); i++)
            if (fm_model_label_index(model, fm_sft_data_labels(train)[i]) < 0 || fm_model_num_labels(model) != n_labels)
                cli_usage_error("finetune", "%s's head has labels %s...; the data's are %s...", rs.base,
                                fm_model_label(model, 0), fm_sft_data_labels(train)[0]);
        if (rs.head_only && (st = fm_model_set_trainable(model, "*", 0, NULL))) cli_fail("finetune", st);
        if (rs.head_only && (st = fm_model_set_trainable(model, "score.weight", 1, NULL))) cli_fail("finetune", st);
        printf("classifier: %d labels (%s%s), %s%s\n", n_labels, fm_model_label(model, 0), n_labels > 1 ? ", ..." : "",
               rs.pool == FM_POOL_MEAN ? "the mean of the hidden states up to the last token" : "read at the last token",
               rs.head_only ? ", the head alone trains" : "");
    }
    fm_objective objective;
    if (rs.classify) st = fm_objective_classify(&objective, model);
    else fm_objective_cross_entropy(&objective), st = FM_OK;
    if (st) cli_fail("finetune", st);

    if (!resume) {
        if (rs.lora && (st = fm_model_add_lora(model, &rs.lora_cfg, rs.seed))) {
            if (st == FM_ERR_NOMEM) cli_fail("finetune", st);
            cli_usage_error("finetune", "%s", fm_last_error());
        }
        if (epochs) {
            double per_step = (double)rs.batch * rs.grad_accum;
            double rows = fmt == FM_SFT_TEXT ? (double)fm_sft_data_num_tokens(train) / rs.seq : (double)n_train;
            steps = (int)ceil(epochs * rows / per_step);
            if (steps < 1) steps = 1;
        }
        rs.total_steps = steps;
        if (ac.lr == 0) ac.lr = rs.lora ? 1e-3f : 1e-4f;
        ac.total_steps = steps;
        if (ac.min_lr < 0) ac.min_lr = ac.lr / 10;
        if (ac.warmup_steps < 0) ac.warmup_steps = steps / 10 < 100 ? steps / 10 : 100;
        if (ac.warmup_steps > steps) ac.warmup_steps = steps;
        if ((st = fm_optimizer_init(&opt, model, &ac))) cli_fail("finetune", st);
        if ((st = fm_model_reserve(model, rs.batch, rs.seq))) cli_fail("finetune", st);
        state.seed = rs.seed;
        fm_rng_seed(&state.rng, rs.seed);
    }
    if (!resume && rank0) {
        cli_mkdir_p("finetune", out);
        lock = cli_lock_dir("finetune", out);
        char *text = settings_text(&rs), *path = cli_path(out, "run.json");
        cli_write_text_atomic("finetune", path, text);
        free(text), free(path);
        cli_mkdir_p("finetune", best_dir);
        /* the tokenizer beside the run's model, and beside the best one (an adapter's folder holds
         * PEFT's two files only: its tokenizer is the base's) */
        const char *tok_dirs[2] = {out, best_dir};
        for (int i = 0; i < (rs.lora ? 1 : 2); i++) {
            char *dst = cli_path(tok_dirs[i], "tokenizer.json");
            if ((st = fm_tokenizer_save(tok, dst))) cli_fail("finetune", st);
            free(dst);
            /* an image model's image tokenizer goes along while the text tokenizer is the one it
             * was made with (docs/vision.md) */
            fm_image_tokenizer *image_tok = NULL;
            if (fm_image_tokenizer_load(base_dir, &image_tok) == FM_OK && fm_image_tokenizer_check(image_tok, tok, "") == FM_OK &&
                (st = fm_image_tokenizer_save(image_tok, tok_dirs[i])))
                cli_fail("finetune", st);
            fm_image_tokenizer_free(image_tok);
            if (fm_chat_check_tokenizer(tok) == FM_OK &&
                (st = fm_chat_write_config(tok, tok_dirs[i], mc->n_positions)))
                cli_fail("finetune", st);
        }
        if ((st = fm_checkpoint_save(out, model, opt, &state))) cli_fail("finetune", st);
        printf("model: %s, %zu parameters; training %zu", rs.base, fm_model_num_params(model),
               fm_model_num_trainable(model));
        if (rs.lora) {
            char t[128];
            fm_lora_targets_text(rs.lora_cfg.targets, t, sizeof t);
            printf(" (LoRA r %d, alpha %g, dropout %g on %s)", rs.lora_cfg.r, rs.lora_cfg.alpha, rs.lora_cfg.dropout, t);
        }
        printf("; %d steps of %d x %d\n", rs.total_steps, rs.batch * rs.grad_accum, rs.seq);
    }

    /* samples continue the first held-out example's prompt (the tokens before its first masked
     * one; plain text: its first 16 tokens) */
    const int *ex_ids = NULL;
    const float *ex_mask = NULL;
    size_t n_ex = 0, n_sample = 0;
    fm_sft_data_example(held, 0, &ex_ids, &ex_mask, &n_ex, NULL);
    if (ex_mask)
        while (n_sample < n_ex && ex_mask[n_sample] == 0.0f) n_sample++;
    else
        n_sample = n_ex < 16 ? n_ex : 16;
    if (n_sample > (size_t)mc->n_positions / 2) n_sample = 0;
    char *sample_text = NULL;
    size_t sample_len = 0;
    if (n_sample && fm_tokenizer_decode(tok, ex_ids, n_sample, &sample_text, &sample_len)) n_sample = 0;
    cli_progress prog = {.cmd = "finetune", .out = out, .tty = isatty(2), .model = model, .tok = tok,
                         .sample_every = rs.sample_every, .sample_tokens = rs.sample_tokens, .seed = rs.seed,
                         .sample_prompt = ex_ids, .n_sample_prompt = (int)n_sample,
                         .sample_prompt_text = sample_text, .bytes_per_token = bytes_per_token,
                         .first_step = fm_optimizer_steps_done(opt)};
    fm_trainer_config tc = {.batch = rs.batch, .seq = rs.seq, .grad_accum = rs.grad_accum,
                            .total_steps = rs.total_steps, .eval_every = rs.eval_every,
                            .save_every = rs.save_every, .checkpoint_dir = out, .best_dir = best_dir,
                            .bytes_per_token = bytes_per_token,
                            .metrics_path = metrics_path, .plot_path = plot_path, .user = &prog,
                            .on_step = cli_on_step, .comm = comm};
    if (!rank0) tc.checkpoint_dir = tc.best_dir = tc.metrics_path = tc.plot_path = NULL, tc.on_step = NULL;
    cli_dist_zero("finetune", opt, comm, zero); /* after the first checkpoint, written whole */
    tc.overlap = overlap;
    fm_trainer *trainer;
    if ((st = fm_trainer_init(&trainer, model, opt, &state, &source, &objective, &tc))) cli_fail("finetune", st);
    int stopped = cli_run_trainer("finetune", trainer, opt, prog.tty, out);
    if (!stopped)
        printf("done: %d steps; %s in %s, the best by held-out loss in %s (loss curve: %s/loss.svg)\n",
               rs.total_steps, rs.lora ? "adapter" : "model", out, best_dir, out);
    if (!stopped && images && rank0) {
        /* the held-out accuracy of the final model and of best/, what a search over settings
         * compares (the test images are for fm classify --images alone) */
        double acc_final = held_accuracy(model, held), acc_best = -1.0;
        fm_model *best = NULL;
        if (fm_model_load(&best, best_dir) == FM_OK) acc_best = held_accuracy(best, held);
        fm_model_free(best);
        printf("held-out accuracy: %.4f final, %.4f best (of %zu images%s)\n", acc_final, acc_best,
               fm_sft_data_num_examples(held), rs.refit ? ", trained on: --refit" : "");
        char text[256], *path = cli_path(out, "accuracy.json");
        snprintf(text, sizeof text, "{\"held_out\": %zu, \"final\": %.6f, \"best\": %.6f, \"refit\": %s}\n",
                 fm_sft_data_num_examples(held), acc_final, acc_best, rs.refit ? "true" : "false");
        cli_write_text_atomic("finetune", path, text);
        free(path);
    }
    fm_trainer_free(trainer);
    fm_sft_source_free(&source);
    fm_sft_data_free(train);
    fm_sft_data_free(held);
    free(sample_text);
    free(metrics_path), free(plot_path), free(best_dir);
    fm_tokenizer_free(tok);
    fm_optimizer_free(opt);
    fm_model_free(model);
    fm_dir_unlock(lock);
    cli_dist_finish();
    return stopped ? 130 : 0;
}

const cli_command cmd_finetune = {
    "finetune", "--model BASE --data FILE --out RUN (--steps N | --epochs E) [--lora ...] [options] | --out RUN --resume",
    "Fine-tune a model on text, chats, prompt-completion pairs (fully or with LoRA).", run};
