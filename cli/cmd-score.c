/*
 * cmd-score.c — `fm score`: the log-probability of each token of a text under a model, the
 * basis of perplexity and of every evaluation. Nothing is prepended unless --bos, so the first
 * token has no log-prob; texts longer than the context are scored with sliding windows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* A token's bytes as a JSON-safe, printable snippet. */
static void print_token_text(const fm_tokenizer *tok, int id) {
    size_t len;
    const char *b = tok ? fm_tokenizer_token_bytes(tok, id, &len) : NULL;
    if (!b) return;
    putchar('\t');
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)b[i];
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch == '\\') fputs("\\\\", stdout);
        else if (ch < 32 || ch == 127) printf("\\x%02x", ch);
        else putchar(ch);
    }
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *adapter_dir = NULL, *text = NULL, *file = NULL, *ids_text = NULL;
    int bos = 0, json = 0, threads = 0;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory (required)"},
        {"adapter", OPT_STRING, &adapter_dir, 0, 0, "a LoRA adapter directory (PEFT's files) applied to the model"},
        {"text", OPT_STRING, &text, 0, 0, "the text to score"},
        {"file", OPT_STRING, &file, 0, 0, "score a file's contents ('-' = stdin)"},
        {"ids", OPT_STRING, &ids_text, 0, 0, "score token ids (\"1 2 3\"); no tokenizer needed"},
        {"bos", OPT_FLAG, &bos, 0, 0, "prepend <|endoftext|> so every token is scored"},
        {"json", OPT_FLAG, &json, 0, 0, "one JSON line: tokens, logprobs, nll, n"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_score, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir) cli_usage_error("score", "--model DIR is required");
    if ((text != NULL) + (file != NULL) + (ids_text != NULL) != 1)
        cli_usage_error("score", "give exactly one of --text, --file and --ids");
    fm_set_threads(threads);
    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model("score", dir, &model, &tok, ids_text == NULL);
    fm_adapter *adapter = cli_use_adapter("score", model, adapter_dir);
    int V = fm_model_config(model)->vocab_size;

    int *ids = NULL;
    size_t n = 0;
    if (ids_text) {
        ids = cli_parse_ids("score", ids_text, V, &n);
    } else {
        size_t len = 0;
        char *owned = text ? NULL : cli_read_file("score", file, &len);
        const char *src = text ? text : owned;
        fm_status st = fm_tokenizer_encode(tok, src, text ? strlen(text) : len, 0, &ids, &n);
        if (st) cli_fail("score", st);
        free(owned);
    }
    /* with --bos the sequence is [eos] + ids and every id is scored */
    int offset = 0;
    if (bos) {
        int eos = tok ? fm_tokenizer_special_id(tok, "<|endoftext|>") : -1;
        if (eos < 0) cli_usage_error("score", "--bos needs a tokenizer with <|endoftext|>");
        ids = cli_realloc("score", ids, n + 1, sizeof(int));
        memmove(ids + 1, ids, sizeof(int) * n);
        ids[0] = eos;
        n++;
        offset = 1;
    }
    float *lp = cli_alloc("score", n ? n : 1, sizeof(float));
    double nll = 0;
    fm_status st = fm_score_tokens(model, ids, n, lp, &nll);
    if (st) cli_fail("score", st);
    size_t scored = n > 1 ? n - 1 : 0;
    if (json) {
        printf("{\"tokens\":[");
        for (size_t i = offset; i < n; i++) printf("%s%d", i > (size_t)offset ? "," : "", ids[i]);
        printf("],\"logprobs\":[");
        for (size_t i = offset; i < n; i++) { /* null: no log-prob (the first token), or not finite */
            if (i > (size_t)offset) putchar(',');
            cli_print_json_number("%.9g", lp[i]);
        }
        printf("],\"nll\":");
        cli_print_json_number("%.9g", nll);
        printf(",\"n\":%zu}\n", scored);
    } else {
        for (size_t i = offset; i < n; i++) {
            printf("%d\t", ids[i]);
            if (isnan(lp[i])) printf("-");
            else printf("%.6f", lp[i]);
            print_token_text(tok, ids[i]);
            putchar('\n');
        }
        printf("total: log-prob %.6f nats over %zu scored tokens (NLL %.4f per token, perplexity %.3f)\n", -nll, scored,
               scored ? nll / scored : 0.0, scored ? exp(nll / scored) : 1.0);
    }
    free(lp), free(ids);
    fm_tokenizer_free(tok);
    fm_adapter_free(adapter);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_score = {"score", "--model DIR (--text S | --file F | --ids \"1 2 3\") [--bos] [--json]",
                               "Log-probability of each token of a text under a model.", run};
