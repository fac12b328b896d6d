/*
 * cmd-eval.c — `fm eval`: held-out bits per byte of a model beside a token-bigram baseline, or
 * (with --tasks) zero- and few-shot evaluation on task files, which eval_tasks.c runs.
 *
 * Bits per byte = the summed negative log-likelihood of the held-out tokens, in bits, over the
 * held-out text's UTF-8 bytes. The model scores every token (the first after <|endoftext|>);
 * the bigram baseline is fitted on the training shard and measured the same way. The shards
 * must have been made by the model's tokenizer (their recorded fingerprint against that of
 * MODEL/tokenizer.json), and train.bin by the same tokenizer as val.bin.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval_tasks.h"

static int *read_all(fm_shard *s, size_t *n) {
    *n = fm_shard_length(s);
    int *t = cli_alloc("eval", *n + 1, sizeof(int));
    fm_shard_read(s, 0, *n, t + 1); /* leave room for a <|endoftext|> in front */
    return t;
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *data = NULL, *tasks = NULL, *shots = NULL, *output = NULL, *plot = NULL;
    const char *log_samples = NULL;
    int no_bigram = 0, json = 0, threads = 0, limit = 0, batch = 32, no_cache = 0, chat = 0;
    uint64_t seed = 1234;
    cli_list models = {0}, adapters = {0};
    cli_option opts[] = {
        {"model", OPT_LIST, &models, 0, 0, "model directory (with --tasks: repeatable, compared side by side)"},
        {"adapter", OPT_LIST, &adapters, 0, 0,
         "a LoRA adapter directory applied to the model (with --tasks: repeatable, each compared on one base)"},
        {"data", OPT_STRING, &data, 0, 0, "directory of fm data prepare (train.bin, val.bin): held-out bits per byte"},
        {"no-bigram", OPT_FLAG, &no_bigram, 0, 0, "skip the bigram baseline"},
        {"tasks", OPT_STRING, &tasks, 0, 0, "comma-separated task names (build/tasks, $FM_TASKS) or .jsonl files"},
        {"shots", OPT_STRING, &shots, 0, 0, "few-shot examples, one count or a list such as 0,1,2,4,8 (default 0)"},
        {"limit", OPT_INT, &limit, 0, 1 << 30, "tasks: the first N test items of each (default: all)"},
        {"seed", OPT_U64, &seed, 0, 1.8e19, "tasks: seed of the few-shot draws (default 1234)"},
        {"batch", OPT_INT, &batch, 1, 4096, "tasks: sequences decoded at once (default 32)"},
        {"output", OPT_STRING, &output, 0, 0, "tasks: also write the JSON results to this file"},
        {"plot", OPT_STRING, &plot, 0, 0, "tasks: an SVG of each task's score against shots (or model)"},
        {"log-samples", OPT_STRING, &log_samples, 0, 0, "tasks: one JSON line per item (scores, generated text)"},
        {"chat-template", OPT_FLAG, &chat, 0, 0,
         "tasks: prompts through the model's chat template, few-shot examples as earlier turns"},
        {"no-cache", OPT_FLAG, &no_cache, 0, 0, "tasks: score each choice with its own full forward (to compare speed)"},
        {"json", OPT_FLAG, &json, 0, 0, "JSON instead of text (tasks: lm-evaluation-harness's shape)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_eval, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (tasks) {
        if (data) cli_usage_error("eval", "--tasks and --data are two evaluations: give one");
        if (no_bigram) cli_usage_error("eval", "--no-bigram belongs to --data");
        if (!models.n) cli_usage_error("eval", "--tasks needs --model DIR");
        if (adapters.n && models.n > 1) cli_usage_error("eval", "--adapter goes with one --model (their base)");
        fm_set_threads(threads);
        eval_tasks_args a = {.models = models.items, .n_models = models.n, .adapters = adapters.items,
                             .n_adapters = adapters.n, .tasks = tasks, .shots = shots,
                             .limit = limit, .json = json, .output = output, .plot = plot, .log_samples = log_samples,
                             .seed = seed, .batch = batch, .plain = no_cache, .chat = chat,
                             .argv0 = argv[0]};
        return cli_eval_tasks(&a);
    }
    if (shots || limit || output || plot || log_samples || no_cache || chat)
        cli_usage_error("eval", "--shots, --limit, --output, --plot, --log-samples, --no-cache and --chat-template go "
                        "with --tasks");
    if (models.n > 1) cli_usage_error("eval", "--data evaluates one --model");
    if (adapters.n > 1) cli_usage_error("eval", "--data evaluates one --adapter");
    if (adapters.n && !models.n) cli_usage_error("eval", "--adapter needs --model (its base)");
    dir = models.n ? models.items[0] : NULL;
    if (!data) cli_usage_error("eval", "--data DIR (held-out bits per byte) or --tasks is required");
    if (!dir && no_bigram) cli_usage_error("eval", "nothing to do: no --model and --no-bigram");
    fm_set_threads(threads);
    fm_shard *val = cli_open_shard("eval", data, "val.bin", 0);
    size_t n_val;
    int *val_tokens = read_all(val, &n_val);
    double bytes = (double)fm_shard_source_bytes(val), model_bpb = NAN, bigram_bpb = NAN, beta = NAN;
    if (bytes <= 0) {
        fprintf(stderr, "fm eval: %s/val.bin records no source bytes\n", data);
        return 1;
    }
    if (dir) {
        fm_model *model;
        fm_tokenizer *tok;
        cli_load_model("eval", dir, &model, &tok, 0);
        fm_adapter *adapter = cli_use_adapter("eval", model, adapters.n ? adapters.items[0] : NULL);
        if (fm_model_config(model)->vocab_size != fm_shard_vocab_size(val)) {
            fprintf(stderr, "fm eval: %s/val.bin has a %d-token vocabulary, the model %d\n", data,
                    fm_shard_vocab_size(val), fm_model_config(model)->vocab_size);
            return 1;
        }
        char *val_path = cli_path(data, "val.bin"), *data_tok = cli_path(data, "tokenizer.json");
        if (tok) {
            char *tok_path = cli_path(dir, "tokenizer.json");
            fm_status st = fm_shard_check_tokenizer(val, tok, tok_path, data_tok);
            if (st) cli_fail("eval", st);
            free(tok_path);
        } else {
            fprintf(stderr, "fm eval: warning: %s has no tokenizer.json, so nothing checks that %s (tokenizer "
                    "%016llx) holds this model's ids\n", dir, val_path,
                    (unsigned long long)fm_shard_tokenizer_fingerprint(val));
        }
        free(val_path), free(data_tok);
        int eos = tok ? fm_tokenizer_special_id(tok, "<|endoftext|>") : -1;
        double nll;
        fm_status st;
        if (eos >= 0) {
            val_tokens[0] = eos; /* every held-out token is scored */
            st = fm_score_tokens(model, val_tokens, n_val + 1, NULL, &nll);
        } else {
            st = fm_score_tokens(model, val_tokens + 1, n_val, NULL, &nll);
        }
        if (st) cli_fail("eval", st);
        model_bpb = nll / log(2.0) / bytes;
        fm_tokenizer_free(tok);
        fm_adapter_free(adapter);
        fm_model_free(model);
    }
    if (!no_bigram) {
        fm_shard *train = cli_open_shard("eval", data, "train.bin", 0);
        size_t n_train;
        if (fm_shard_tokenizer_fingerprint(train) != fm_shard_tokenizer_fingerprint(val) ||
            fm_shard_vocab_size(train) != fm_shard_vocab_size(val)) {
            fprintf(stderr, "fm eval: %s/train.bin was made by tokenizer %016llx (%d tokens), %s/val.bin by "
                    "%016llx (%d tokens); a baseline fitted on one says nothing of the other\n", data,
                    (unsigned long long)fm_shard_tokenizer_fingerprint(train), fm_shard_vocab_size(train), data,
                    (unsigned long long)fm_shard_tokenizer_fingerprint(val), fm_shard_vocab_size(val));
            return 1;
        }
        int *train_tokens = read_all(train, &n_train);
        double nll;
        fm_status st = fm_bigram_nll(train_tokens + 1, n_train, val_tokens + 1, n_val, fm_shard_vocab_size(val), &nll, &beta);
        if (st) cli_fail("eval", st);
        bigram_bpb = nll / log(2.0) / bytes;
        free(train_tokens);
        fm_shard_close(train);
    }
    if (json) {
        printf("{\"tokens\":%zu,\"bytes\":%.0f", n_val, bytes); /* numbers not finite are null */
        if (dir) printf(",\"model_bits_per_byte\":"), cli_print_json_number("%.4f", model_bpb);
        if (!no_bigram) {
            printf(",\"bigram_bits_per_byte\":"), cli_print_json_number("%.4f", bigram_bpb);
            printf(",\"bigram_beta\":"), cli_print_json_number("%.3g", beta);
        }
        printf("}\n");
    } else {
        printf("held-out text: %zu tokens, %.0f bytes\n", n_val, bytes);
        if (dir) printf("model:  %.4f bits per byte\n", model_bpb);
        if (!no_bigram) printf("bigram: %.4f bits per byte (token bigram, interpolated with the unigram, beta %.3g)\n",
                               bigram_bpb, beta);
    }
    free(val_tokens);
    fm_shard_close(val);
    return 0;
}

const cli_command cmd_eval = {"eval", "--data DIR [--model DIR] [--no-bigram] [--json] | --model DIR... --tasks T,... "
                              "[--shots 0,1,2] [--chat-template] [--limit N] [--json] [--output F] [--plot F]",
                              "Held-out bits per byte beside a token-bigram baseline, or zero- and few-shot tasks.",
                              run};
