/*
 * cmd-tokenizer.c — `fm tokenizer train|encode|decode`: byte-level BPE from the command line.
 *
 *   fm tokenizer train --vocab N --out tokenizer.json CORPUS...   learn merges, save tokenizer.json
 *   fm tokenizer encode --tokenizer F [FILE]                        ids, space-separated, on stdout
 *   fm tokenizer decode --tokenizer F [FILE]                        ids in, the exact bytes out
 *   fm tokenizer train --images IDX --out DIR [...]                 an image tokenizer (cmd-tokenizer-images.c)
 *
 * --tokenizer takes a tokenizer.json, or a folder with one (a model directory), or a folder with
 * GPT-2's encoder.json and vocab.bpe (or vocab.json and merges.txt). FILE absent or "-" is stdin.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const cli_command train_cmd = {
    "tokenizer train", "--vocab N --out tokenizer.json CORPUS...",
    "Learn byte-level BPE merges from text files (any bytes) up to N ids in all: the 256 bytes, the merges "
    "and 6 special tokens (<|endoftext|> <|image|> <|/image|> <|system|> <|user|> <|assistant|>).", NULL};
static const cli_command encode_cmd = {
    "tokenizer encode", "--tokenizer F [FILE]",
    "Print the token ids of FILE (or standard input), space-separated, on one line.", NULL};
static const cli_command decode_cmd = {
    "tokenizer decode", "--tokenizer F [FILE]",
    "Read token ids (space, comma or newline separated) from FILE (or standard input) and write the exact "
    "bytes they stand for.", NULL};

static int train(int argc, char **argv) {
    int vocab = 0;
    const char *out = NULL;
    cli_option opts[] = {
        {"vocab", OPT_INT, &vocab, 262, 16777216, "ids in all, 262 .. 16777216 (required)"},
        {"out", OPT_STRING, &out, 0, 0, "the tokenizer.json to write (required)"},
    };
    char **corpora = cli_alloc(train_cmd.name, (size_t)(argc > 0 ? argc : 1), sizeof(char *));
    int n = cli_parse(&train_cmd, argc, argv, opts, 2, corpora, argc);
    if (!vocab) cli_usage_error(train_cmd.name, "--vocab N is required");
    if (!out) cli_usage_error(train_cmd.name, "--out FILE is required");
    if (n == 0) cli_usage_error(train_cmd.name, "no corpus files given");

    char **texts = cli_alloc(train_cmd.name, (size_t)n, sizeof(char *));
    size_t *lens = cli_alloc(train_cmd.name, (size_t)n, sizeof(size_t)), total = 0;
    for (int i = 0; i < n; i++) {
        texts[i] = cli_read_file(train_cmd.name, corpora[i], &lens[i]);
        total += lens[i];
    }
    if (total == 0) {
        fprintf(stderr, "fm tokenizer train: the corpus is empty, nothing to learn from\n");
        return 1;
    }
    double t0 = cli_now();
    fm_tokenizer *tok;
    fm_status st = fm_tokenizer_train(&tok, (const char *const *)texts, lens, n, vocab);
    if (st) cli_fail(train_cmd.name, st);
    double seconds = cli_now() - t0;
    if ((st = fm_tokenizer_save(tok, out))) cli_fail(train_cmd.name, st);
    int got = fm_tokenizer_vocab_size(tok);
    printf("trained %d tokens from %zu bytes in %d file%s in %.2f s; saved to %s\n", got, total, n,
           n == 1 ? "" : "s", seconds, out);
    if (got < vocab)
        printf("(fewer than the %d asked for: no pair of tokens occurs twice any more)\n", vocab);
    for (int i = 0; i < n; i++) free(texts[i]);
    free(texts), free(lens), free(corpora);
    fm_tokenizer_free(tok);
    return 0;
}

/* Loads --tokenizer; dies with a usage error when it is missing. */
static fm_tokenizer *load(const cli_command *cmd, const char *path) {
    if (!path) cli_usage_error(cmd->name, "--tokenizer F is required");
    fm_tokenizer *tok;
    fm_status st = fm_tokenizer_load(&tok, path);
    if (st) cli_fail(cmd->name, st);
    return tok;
}

static int encode(int argc, char **argv) {
    const char *tok_path = NULL;
    int allow_special = 0;
    cli_option opts[] = {
        {"tokenizer", OPT_STRING, &tok_path, 0, 0, "tokenizer.json or a folder with one or GPT-2's files (required)"},
        {"allow-special", OPT_FLAG, &allow_special, 0, 0, "special-token text such as <|endoftext|> becomes its id"},
    };
    char *file[1] = {NULL};
    cli_parse(&encode_cmd, argc, argv, opts, 2, file, 1);
    fm_tokenizer *tok = load(&encode_cmd, tok_path);
    size_t len, n_ids;
    char *text = cli_read_file(encode_cmd.name, file[0], &len);
    int *ids;
    fm_status st = fm_tokenizer_encode(tok, text, len, allow_special, &ids, &n_ids);
    if (st) cli_fail(encode_cmd.name, st);
    /* ids as decimal text, written in blocks */
    char buf[1 << 16];
    size_t at = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (at > sizeof buf - 16) {
            fwrite(buf, 1, at, stdout);
            at = 0;
        }
        if (i) buf[at++] = ' ';
        char digits[12];
        int k = 0;
        unsigned v = (unsigned)ids[i];
        do digits[k++] = (char)('0' + v % 10), v /= 10;
        while (v);
        while (k) buf[at++] = digits[--k];
    }
    buf[at++] = '\n';
    fwrite(buf, 1, at, stdout);
    if (fflush(stdout) != 0) {
        perror("fm tokenizer encode: standard output");
        return 1;
    }
    free(ids), free(text);
    fm_tokenizer_free(tok);
    return 0;
}

static int decode(int argc, char **argv) {
    const char *tok_path = NULL;
    cli_option opts[] = {
        {"tokenizer", OPT_STRING, &tok_path, 0, 0, "tokenizer.json or a folder with one or GPT-2's files (required)"},
    };
    char *file[1] = {NULL};
    cli_parse(&decode_cmd, argc, argv, opts, 1, file, 1);
    fm_tokenizer *tok = load(&decode_cmd, tok_path);
    size_t len, n_ids, out_len;
    char *text = cli_read_file(decode_cmd.name, file[0], &len);
    int *ids = cli_parse_ids(decode_cmd.name, text, fm_tokenizer_vocab_size(tok), &n_ids);
    char *out;
    fm_status st = fm_tokenizer_decode(tok, ids, n_ids, &out, &out_len);
    if (st) cli_fail(decode_cmd.name, st);
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
        perror("fm tokenizer decode: standard output");
        return 1;
    }
    free(out), free(ids), free(text);
    fm_tokenizer_free(tok);
    return 0;
}

static int run(int argc, char **argv) {
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "train") == 0) {
        for (int i = 2; i < argc; i++) /* an image tokenizer: cmd-tokenizer-images.c */
            if (strncmp(argv[i], "--images", 8) == 0 && (argv[i][8] == '\0' || argv[i][8] == '='))
                return cli_tokenizer_train_images(argc - 1, argv + 1);
        return train(argc - 1, argv + 1);
    }
    if (strcmp(sub, "encode") == 0) return encode(argc - 1, argv + 1);
    if (strcmp(sub, "decode") == 0) return decode(argc - 1, argv + 1);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        printf("usage:\n  fm tokenizer train %s\n  fm tokenizer train --images IDX --out DIR [--patch P --codebook K ...]\n"
               "  fm tokenizer encode %s\n  fm tokenizer decode %s\n", train_cmd.usage, encode_cmd.usage, decode_cmd.usage);
        return 0;
    }
    if (!sub[0]) cli_usage_error("tokenizer", "expected 'train', 'encode' or 'decode'");
    cli_usage_error("tokenizer", "'%s' is not one of train, encode, decode", sub);
}

const cli_command cmd_tokenizer = {"tokenizer", "train|encode|decode ...",
                                   "Train a byte-level BPE tokenizer, or encode and decode with one.", run};
