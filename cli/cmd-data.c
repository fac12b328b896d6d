/*
 * cmd-data.c — `fm data prepare`: a text corpus to token shards (train.bin, val.bin) with a
 * held-out split of the last lines, and the tokenizer beside them. Each shard records the
 * tokenizer's fingerprint, so a model with another tokenizer refuses it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Refuses text that is clearly not text: NUL bytes, or mostly invalid UTF-8. */
static void check_text(const char *path, const char *buf, size_t len) {
    if (len == 0) {
        fprintf(stderr, "fm data: %s: empty file, nothing to train on\n", path);
        exit(1);
    }
    size_t bad = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)buf[i];
        if (c == 0) {
            fprintf(stderr, "fm data: %s: binary file (a NUL byte at offset %zu), not a text corpus\n", path, i);
            exit(1);
        }
        int need = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        int ok = need >= 0 && i + need < len;
        for (int k = 1; ok && k <= need; k++) ok = ((unsigned char)buf[i + k] >> 6) == 2;
        if (!ok) {
            bad++;
            i++;
        } else {
            i += need + 1;
        }
    }
    if (bad * 10 > len) {
        fprintf(stderr, "fm data: %s: binary file (%zu of %zu bytes are not UTF-8), not a text corpus\n", path,
                bad, len);
        exit(1);
    }
}

static void write_shard(const char *dir, const char *name, const fm_tokenizer *tok, const char *text, size_t len) {
    int *ids;
    size_t n;
    fm_status st = fm_tokenizer_encode(tok, text, len, 0, &ids, &n);
    if (st) cli_fail("data", st);
    char *path = cli_path(dir, name);
    if ((st = fm_shard_write_with_fingerprint(path, ids, n, fm_tokenizer_vocab_size(tok), len,
                                              fm_tokenizer_fingerprint(tok))))
        cli_fail("data", st);
    printf("%s: %zu tokens from %zu bytes (%.2f bytes per token)\n", path, n, len, n ? (double)len / n : 0.0);
    free(path);
    free(ids);
}

static int prepare(int argc, char **argv) {
    const char *tok_path = NULL, *out = NULL;
    float val_fraction = 0.05f;
    cli_option opts[] = {
        {"tokenizer", OPT_STRING, &tok_path, 0, 0, "tokenizer.json or a GPT-2 folder (required)"},
        {"out", OPT_STRING, &out, 0, 0, "output directory (required)"},
        {"val-fraction", OPT_FLOAT, &val_fraction, 0.0001, 0.5, "share of the last lines held out (0.05)"},
    };
    char *corpora[256];
    static const cli_command sub = {"data", "prepare --tokenizer F --out DIR CORPUS...",
                                    "Tokenize text files into train.bin and val.bin (last lines held out).", NULL};
    int n_corpora = cli_parse(&sub, argc, argv, opts, sizeof opts / sizeof opts[0], corpora, 256);
    if (!tok_path || !out) cli_usage_error("data", "--tokenizer and --out are required");
    if (n_corpora == 0) cli_usage_error("data", "no corpus files given");
    fm_tokenizer *tok;
    fm_status st = fm_tokenizer_load(&tok, tok_path);
    if (st) cli_fail("data", st);

    /* the corpora, one after another, each ending in a newline */
    size_t total = 0, cap = 1;
    char *text = cli_alloc("data", cap, 1);
    for (int i = 0; i < n_corpora; i++) {
        size_t len;
        char *buf = cli_read_file("data", corpora[i], &len);
        check_text(corpora[i], buf, len);
        if (total + len + 2 > cap) text = cli_realloc("data", text, cap = 2 * (total + len + 2), 1);
        memcpy(text + total, buf, len);
        total += len;
        if (text[total - 1] != '\n') text[total++] = '\n';
        free(buf);
    }
    size_t lines = 0;
    for (size_t i = 0; i < total; i++) lines += text[i] == '\n';
    size_t held = (size_t)(lines * (double)val_fraction + 0.5);
    if (held < 1 || held >= lines) {
        fprintf(stderr, "fm data: the corpus has %zu lines, too few to hold out %.1f%% of them\n", lines,
                100.0 * val_fraction);
        return 1;
    }
    /* split after line (lines - held) */
    size_t split = 0, seen = 0;
    while (seen < lines - held) seen += text[split++] == '\n';
    cli_mkdir_p("data", out);
    write_shard(out, "train.bin", tok, text, split);
    write_shard(out, "val.bin", tok, text + split, total - split);
    char *path = cli_path(out, "tokenizer.json");
    if ((st = fm_tokenizer_save(tok, path))) cli_fail("data", st);
    printf("held out the last %zu of %zu lines; tokenizer %016llx saved to %s\n", held, lines,
           (unsigned long long)fm_tokenizer_fingerprint(tok), path);
    free(path);
    free(text);
    fm_tokenizer_free(tok);
    return 0;
}

static int run(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "prepare") == 0) {
        for (int i = 2; i < argc; i++) /* images: cmd-data-images.c */
            if (strncmp(argv[i], "--images", 8) == 0 && (argv[i][8] == '\0' || argv[i][8] == '='))
                return cli_data_prepare_images(argc - 1, argv + 1);
        for (int i = 2; i < argc; i++) /* streamed into numbered shards: data_stream.c */
            if (strncmp(argv[i], "--shard-tokens", 14) == 0 && (argv[i][14] == '\0' || argv[i][14] == '='))
                return cli_data_prepare_stream(argc - 1, argv + 1);
        return prepare(argc - 1, argv + 1);
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: fm data prepare --tokenizer F --out DIR [--val-fraction X] CORPUS...\n"
               "       fm data prepare --images IDX --tokenizer DIR --out DIR [--val-fraction X | --val-images N]\n"
               "       fm data prepare --tokenizer F --out DIR --shard-tokens N [--val-fraction X] INPUT... "
               "(files, directories, - for standard input; streamed)\n");
        return 0;
    }
    cli_usage_error("data", "expected 'fm data prepare ...'");
}

const cli_command cmd_data = {"data", "prepare --tokenizer F --out DIR CORPUS...",
                              "Tokenize a text corpus into token shards with a held-out split.", run};
