/*
 * data_stream.c — `fm data prepare --shard-tokens N`: a text corpus of any size to numbered token
 * shards, streamed in constant memory (docs/data.md).
 *
 * What it is for: corpora larger than memory. The inputs (files, directories read recursively
 * in name order, "-" for standard input) are read one block of whole lines at a time (--block-mb,
 * 16 MiB); each block's lines are dealt to the training or the held-out text by the rule below,
 * each text is tokenized on all cores (fm_tokenizer_encode splits it among the threads), and the
 * tokens are appended to DIR/train-NNNNN.bin and DIR/val-NNNNN.bin, shards of N tokens each
 * (fm_shard_series). Memory: a block, its two texts and their tokens, whatever the corpus size.
 *
 * The held-out rule: with P = round(1 / val-fraction), every P-th line of the whole stream (lines
 * P, 2P, ... counted from 1 over all inputs in order) is held out. It needs no look-ahead, does
 * not depend on the block size or the thread count, and spreads the held-out text over the whole
 * corpus. A line longer than a block is cut at a UTF-8 boundary; its pieces stay on its side.
 * Each input ends with a newline (one is added when missing), so its last line never joins the
 * next input's first. Blocks are cut after a newline, so the tokens are those of encoding the
 * training lines and the held-out lines each as one text, except where GPT-2's pre-tokenizer
 * would join whitespace across a block's end.
 * Not for: the in-memory mode (cmd-data.c: train.bin and val.bin, the last lines held out).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

/* ------------------------------------------------------------ the inputs */

typedef struct {
    char **paths;
    int n, cap;
} path_list;

static void add_path(path_list *l, const char *path) {
    if (l->n == l->cap) l->paths = cli_realloc("data", l->paths, l->cap = l->cap ? 2 * l->cap : 64, sizeof(char *));
    size_t len = strlen(path) + 1;
    l->paths[l->n] = cli_alloc("data", len, 1);
    memcpy(l->paths[l->n++], path, len);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files under dir, recursively, in name order (names starting with '.' skipped). */
static void add_dir(path_list *l, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "fm data: %s: cannot read the directory: %s\n", dir, strerror(errno));
        exit(1);
    }
    path_list here = {0};
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = cli_path(dir, e->d_name);
        add_path(&here, p);
        free(p);
    }
    closedir(d);
    if (here.n > 1) qsort(here.paths, (size_t)here.n, sizeof(char *), by_name);
    for (int i = 0; i < here.n; i++) {
        struct stat sb;
        if (stat(here.paths[i], &sb) == 0 && S_ISDIR(sb.st_mode)) add_dir(l, here.paths[i]);
        else if (stat(here.paths[i], &sb) == 0 && S_ISREG(sb.st_mode)) add_path(l, here.paths[i]);
        free(here.paths[i]);
    }
    free(here.paths);
}

/* ------------------------------------------------------------ the stream */

typedef struct {
    const fm_tokenizer *tok;
    fm_shard_series *train, *val;
    int period;              /* P: line k (from 1) is held out when k % P == 0 */
    uint64_t line;           /* lines begun so far (the current one's number, from 1) */
    int in_line;             /* the current line has begun (a piece of it was dealt) */
    char *side[2];           /* (block) the training and the held-out text of a block */
    size_t side_len[2];
    uint64_t bytes[2], lines[2], tokens[2];
    double encode_s;
} stream;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The texts of a block tokenized and appended to their shards. */
static void flush_sides(stream *s) {
    for (int k = 0; k < 2; k++) {
        if (!s->side_len[k]) continue;
        int *ids;
        size_t n;
        double t0 = now_s();
        fm_status st = fm_tokenizer_encode(s->tok, s->side[k], s->side_len[k], 0, &ids, &n);
        s->encode_s += now_s() - t0;
        if (!st) st = fm_shard_series_append(k ? s->val : s->train, ids, n, s->side_len[k]);
        free(ids);
        if (st) cli_fail("data", st);
        s->bytes[k] += s->side_len[k], s->tokens[k] += n;
        s->side_len[k] = 0;
    }
}

/* Deals text[0, len) (whole lines, or a piece of one when ends_line is 0) to the two sides. */
static void deal(stream *s, const char *text, size_t len, const char *path, uint64_t offset) {
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        fprintf(stderr, "fm data: %s: binary file (a NUL byte at offset %llu), not a text corpus\n", path,
                (unsigned long long)(offset + (uint64_t)(nul - text)));
        exit(1);
    }
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        if (!s->in_line) s->line++, s->in_line = 1;
        int k = s->line % (uint64_t)s->period == 0;
        memcpy(s->side[k] + s->side_len[k], text + i, end - i);
        s->side_len[k] += end - i;
        if (nl) s->in_line = 0, s->lines[k]++;
        i = end;
    }
}

/* One input, block by block; a newline added at its end when it lacks one. */
static void read_input(stream *s, const char *path, char *buf, size_t block) {
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "fm data: %s: cannot open: %s\n", path, strerror(errno));
        exit(1);
    }
    size_t have = 0; /* bytes in buf: the carried partial line, then what was read */
    uint64_t offset = 0, total = 0;
    int last_newline = 1;
    for (;;) {
        size_t got = fread(buf + have, 1, block - have, fp);
        if (ferror(fp)) {
            fprintf(stderr, "fm data: %s: cannot read: %s\n", path, strerror(errno));
            exit(1);
        }
        have += got, total += got;
        int eof = got == 0 || feof(fp);
        if (have == 0) break;
        last_newline = buf[have - 1] == '\n';
        /* whole lines up to the last newline; at the end everything; a line longer than the block
         * cut at a UTF-8 boundary */
        size_t cut = have;
        if (!eof) {
            while (cut > 0 && buf[cut - 1] != '\n') cut--;
            if (cut == 0) {
                cut = have;
                while (cut > 1 && ((unsigned char)buf[cut - 1] & 0xC0) == 0x80) cut--;
                if (cut > 1 && (unsigned char)buf[cut - 1] >= 0xC0) cut--;
            }
        }
        deal(s, buf, cut, path, offset);
        offset += cut;
        memmove(buf, buf + cut, have - cut);
        have -= cut;
        flush_sides(s);
        if (eof && have == 0) break;
    }
    if (fp != stdin) fclose(fp);
    if (total > 0 && !last_newline) {
        deal(s, "\n", 1, path, offset);
        flush_sides(s);
    }
}

/* 1 when dir holds shards already (a previous run's, which new ones would mix with). */
static int holds_shards(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));)
        found = strcmp(e->d_name, "train.bin") == 0 || strcmp(e->d_name, "val.bin") == 0 ||
                strncmp(e->d_name, "train-", 6) == 0 || strncmp(e->d_name, "val-", 4) == 0;
    closedir(d);
    return found;
}

int cli_data_prepare_stream(int argc, char **argv) {
    const char *tok_path = NULL, *out = NULL;
    float val_fraction = 0.05f;
    uint64_t shard_tokens = 0;
    int block_mb = 16;
    cli_option opts[] = {
        {"tokenizer", OPT_STRING, &tok_path, 0, 0, "tokenizer.json or a GPT-2 folder (required)"},
        {"out", OPT_STRING, &out, 0, 0, "output directory (required)"},
        {"shard-tokens", OPT_U64, &shard_tokens, 1024, 1e12,
         "tokens per shard: stream the corpus into numbered shards train-NNNNN.bin, val-NNNNN.bin"},
        {"val-fraction", OPT_FLOAT, &val_fraction, 0.0001, 0.5,
         "held out: every round(1/X)-th line of the stream (0.05: every 20th)"},
        {"block-mb", OPT_INT, &block_mb, 1, 4096, "text read and tokenized at a time, in MiB (16)"},
    };
    char *inputs[256];
    static const cli_command sub = {
        "data", "prepare --tokenizer F --out DIR --shard-tokens N [--val-fraction X] INPUT...",
        "Stream text files, directories or - (standard input) into numbered token shards.", NULL};
    int n_inputs = cli_parse(&sub, argc, argv, opts, sizeof opts / sizeof opts[0], inputs, 256);
    if (!tok_path || !out) cli_usage_error("data", "--tokenizer and --out are required");
    if (n_inputs == 0) cli_usage_error("data", "no input given (files, directories, or - for standard input)");
    path_list files = {0};
    int stdin_used = 0;
    for (int i = 0; i < n_inputs; i++) {
        struct stat sb;
        if (strcmp(inputs[i], "-") == 0) {
            if (stdin_used++) cli_usage_error("data", "- (standard input) given twice");
            add_path(&files, "-");
        } else if (stat(inputs[i], &sb) != 0) {
            fprintf(stderr, "fm data: %s: cannot open: %s\n", inputs[i], strerror(errno));
            exit(1);
        } else if (S_ISDIR(sb.st_mode)) {
            int before = files.n;
            add_dir(&files, inputs[i]);
            if (files.n == before) {
                fprintf(stderr, "fm data: %s: the directory holds no files\n", inputs[i]);
                exit(1);
            }
        } else {
            add_path(&files, inputs[i]);
        }
    }
    if (holds_shards(out)) {
        fprintf(stderr, "fm data: %s already holds token shards; give another --out (new shards would mix with "
                "them)\n", out);
        exit(1);
    }
    fm_tokenizer *tok;
    fm_status st = fm_tokenizer_load(&tok, tok_path);
    if (st) cli_fail("data", st);
    cli_mkdir_p("data", out);
    size_t block = (size_t)block_mb << 20;
    stream s = {.tok = tok, .period = (int)lround(1.0 / val_fraction)};
    if (s.period < 2) s.period = 2;
    uint64_t fp = fm_tokenizer_fingerprint(tok);
    int vocab = fm_tokenizer_vocab_size(tok);
    if ((st = fm_shard_series_open(&s.train, out, "train", (size_t)shard_tokens, vocab, fp)) ||
        (st = fm_shard_series_open(&s.val, out, "val", (size_t)shard_tokens, vocab, fp)))
        cli_fail("data", st);
    fm_shard_series_count_bytes(s.train, tok), fm_shard_series_count_bytes(s.val, tok);
    char *buf = cli_alloc("data", block, 1);
    s.side[0] = cli_alloc("data", block + 1, 1);
    s.side[1] = cli_alloc("data", block + 1, 1);
    double t0 = now_s();
    for (int i = 0; i < files.n; i++) read_input(&s, files.paths[i], buf, block);
    double seconds = now_s() - t0;
    if (s.bytes[0] + s.bytes[1] == 0) {
        fm_shard_series_free(s.train), fm_shard_series_free(s.val);
        fprintf(stderr, "fm data: the input is empty, nothing to train on\n");
        exit(1);
    }
    if (s.tokens[0] == 0 || s.tokens[1] == 0) {
        fm_shard_series_free(s.train), fm_shard_series_free(s.val);
        fprintf(stderr, "fm data: the input has %llu lines, too few to hold out every %d-th of them\n",
                (unsigned long long)s.line, s.period);
        exit(1);
    }
    int shards[2];
    size_t tokens[2];
    if ((st = fm_shard_series_finish(s.train, &shards[0], &tokens[0]))) cli_fail("data", st);
    if ((st = fm_shard_series_finish(s.val, &shards[1], &tokens[1]))) cli_fail("data", st);
    for (int k = 0; k < 2; k++)
        printf("%s/%s-*.bin: %d shard%s, %zu tokens from %llu bytes in %llu lines (%.2f bytes per token)\n", out,
               k ? "val" : "train", shards[k], shards[k] == 1 ? "" : "s", tokens[k], (unsigned long long)s.bytes[k],
               (unsigned long long)s.lines[k], (double)s.bytes[k] / (double)tokens[k]);
    double mb = (double)(s.bytes[0] + s.bytes[1]) / 1e6;
    printf("held out every %d-th line; %d input%s, %.1f MB in %.1f s: %.1f MB/s (tokenizing %.1f s, %d threads)\n",
           s.period, files.n, files.n == 1 ? "" : "s", mb, seconds, mb / (seconds > 0 ? seconds : 1e-9), s.encode_s,
           fm_get_threads());
    char *path = cli_path(out, "tokenizer.json");
    if ((st = fm_tokenizer_save(tok, path))) cli_fail("data", st);
    printf("tokenizer %016llx saved to %s\n", (unsigned long long)fp, path);
    free(path);
    free(buf), free(s.side[0]), free(s.side[1]);
    for (int i = 0; i < files.n; i++) free(files.paths[i]);
    free(files.paths);
    fm_tokenizer_free(tok);
    return 0;
}
