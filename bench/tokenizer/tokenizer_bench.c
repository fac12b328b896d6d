/*
 * tokenizer_bench.c — times fm's tokenizer for bench/tokenizer/run.sh.
 *
 *   tokenizer_bench encode TOKENIZER FILE   load time; encoding throughput (best of 5) on 1 thread
 *                                           and on all threads; id count and FNV-1a 64 of the ids
 *   tokenizer_bench train FILE VOCAB        training time (library call only, best of 3)
 *   tokenizer_bench count TOKENIZER FILE    the number of ids of FILE
 * Output is "key value" lines for the script to read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void die(fm_status st) {
    fprintf(stderr, "%s: %s\n", fm_status_name(st), fm_last_error());
    exit(1);
}

/* Best of 5 encodings with the current thread count, in seconds. */
static double best_encode(const fm_tokenizer *tok, const char *text, size_t len, int **ids, size_t *n) {
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        fm_status st = fm_tokenizer_encode(tok, text, len, 0, ids, n);
        double dt = now() - t0;
        if (st) die(st);
        if (dt < best) best = dt;
        if (r < 4) free(*ids);
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "encode") == 0) {
        double t0 = now();
        fm_tokenizer *tok;
        fm_status st = fm_tokenizer_load(&tok, argv[2]);
        if (st) die(st);
        printf("load_s %.4f\n", now() - t0);
        size_t len, n;
        char *text = read_all(argv[3], &len);
        int *ids;
        int threads = fm_get_threads();
        fm_set_threads(1);
        double t1 = best_encode(tok, text, len, &ids, &n);
        free(ids);
        fm_set_threads(threads);
        double tn = best_encode(tok, text, len, &ids, &n);
        uint64_t h = 0xCBF29CE484222325ull;
        for (size_t i = 0; i < n; i++) h = (h ^ (uint64_t)ids[i]) * 0x100000001B3ull;
        printf("bytes %zu\nids %zu\nfnv1a64 %016llx\n", len, n, (unsigned long long)h);
        printf("threads %d\nmbps_1 %.2f\nmbps_n %.2f\n", threads, len / t1 / 1e6, len / tn / 1e6);
        free(ids);
        free(text);
        fm_tokenizer_free(tok);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "train") == 0) {
        size_t len;
        char *text = read_all(argv[2], &len);
        const char *texts[1] = {text};
        double best = 1e30;
        int vocab = atoi(argv[3]), got = 0;
        for (int r = 0; r < 3; r++) {
            fm_tokenizer *tok;
            double t0 = now();
            fm_status st = fm_tokenizer_train(&tok, texts, &len, 1, vocab);
            double dt = now() - t0;
            if (st) die(st);
            if (dt < best) best = dt;
            got = fm_tokenizer_vocab_size(tok);
            fm_tokenizer_free(tok);
        }
        printf("vocab %d\ntrain_s %.4f\n", got, best);
        free(text);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "count") == 0) {
        fm_tokenizer *tok;
        fm_status st = fm_tokenizer_load(&tok, argv[2]);
        if (st) die(st);
        size_t len, n;
        char *text = read_all(argv[3], &len);
        int *ids;
        if ((st = fm_tokenizer_encode(tok, text, len, 0, &ids, &n))) die(st);
        printf("ids %zu\n", n);
        free(ids), free(text);
        fm_tokenizer_free(tok);
        return 0;
    }
    fprintf(stderr, "usage: tokenizer_bench encode TOKENIZER FILE | train FILE VOCAB | count TOKENIZER FILE\n");
    return 2;
}
