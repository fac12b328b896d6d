/*
 * cmd-classify.c — `fm classify`: the label of each text under a model with a classification head
 * (GPT2ForSequenceClassification, from fm finetune --task classify or transformers), with every
 * label's probability: a table, or one JSON line per input {"label": ..., "probs": {...}}.
 *
 * A text is encoded with the model directory's tokenizer.json (special-token text stays text),
 * nothing appended, and read at its last token (a mean head, config.json's "classifier_pooling":
 * "mean": the mean of the final hidden states up to it); texts are classified in batches
 * right-padded with the model's pad_token_id, which gives each text exactly what it gives alone. A
 * text longer than the context keeps its first n_positions tokens, as fine-tuning keeps them.
 *
 * --images IDX: each image is encoded with the model directory's image tokenizer (<|image|>, its
 * codes, <|/image|>, as fm finetune --train-images encodes it) and read at <|/image|>; with
 * --labels IDX the command prints the accuracy (overall and per class) instead of each image's
 * label, the IDX class c being the head's label "c".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_labels.h"

#define CMD "classify"


/* The text's start for the table: control characters shown as spaces, at most `width` bytes
 * (cut at a UTF-8 boundary, "..." after). */
static void print_snippet(const char *s, size_t n, size_t width) {
    size_t end = n <= width ? n : width;
    while (end < n && end > 0 && ((unsigned char)s[end] & 0xC0) == 0x80) end--;
    for (size_t i = 0; i < end; i++) putchar((unsigned char)s[i] < 0x20 ? ' ' : s[i]);
    if (end < n) fputs("...", stdout);
}

typedef struct {
    const char *text;
    size_t len;
    int *ids;
    int n;
} input;

/* The lines of path's text (buf, len bytes) as inputs: a line's bytes without its newline (and a
 * trailing CR); an empty line is an error naming the file and line. */
static input *split_lines(const char *name, char *buf, size_t len, int *count) {
    int n = 0, cap = 16;
    input *in = cli_alloc(CMD, cap, sizeof *in);
    size_t at = 0;
    while (at < len) {
        char *nl = memchr(buf + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - buf) : len, stop = end;
        if (stop > at && buf[stop - 1] == '\r') stop--;
        if (stop == at) {
            fprintf(stderr, "fm " CMD ": %s:%d: the line is empty (one text a line)\n", name, n + 1);
            exit(1);
        }
        if (n == cap) in = cli_realloc(CMD, in, cap *= 2, sizeof *in);
        in[n++] = (input){.text = buf + at, .len = stop - at};
        at = end + 1;
    }
    *count = n;
    return in;
}

/* --images (and --labels): the head's label of each image, or its accuracy. */
static int run_images(const char *dir, const char *images_path, const char *labels_path, int json, int batch) {
    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model(CMD, dir, &model, &tok, 1);
    int K = fm_model_num_labels(model);
    if (K == 0) {
        fprintf(stderr, "fm " CMD ": %s has no classification head (make one with fm finetune --task classify "
                "--train-images)\n", dir);
        exit(1);
    }
    fm_image_tokenizer *itok;
    fm_status st = fm_image_tokenizer_load(dir, &itok);
    if (st) cli_fail(CMD, st);
    cli_image_set set;
    cli_image_set_load(CMD, images_path, labels_path, itok, fm_model_config(model)->n_positions, &set);
    int n = set.images.count, k = set.k;
    int *ids = cli_image_set_encode(CMD, &set, itok, NULL, n), *pred = cli_alloc(CMD, (size_t)n, sizeof(int));
    double *probs = labels_path ? NULL : cli_alloc(CMD, (size_t)n * K, sizeof(double));
    int *head_of = labels_path ? cli_alloc(CMD, (size_t)k, sizeof(int)) : NULL;
    if (labels_path) cli_image_label_map(CMD, model, dir, k, head_of);
    double t0 = cli_now();
    cli_image_predict(CMD, model, ids, n, set.len, batch, pred, probs);
    double seconds = cli_now() - t0;
    if (!labels_path) {
        for (int i = 0; i < n; i++) {
            const char *label = fm_model_label(model, pred[i]);
            if (json) {
                printf("{\"label\":");
                cli_print_json_string(label, strlen(label));
                printf(",\"probs\":{");
                for (int c = 0; c < K; c++) {
                    const char *l = fm_model_label(model, c);
                    if (c) putchar(',');
                    cli_print_json_string(l, strlen(l));
                    putchar(':');
                    cli_print_json_number("%.6g", probs[(size_t)i * K + c]);
                }
                printf("}}\n");
            } else {
                printf("%d\t%s\n", i, label);
            }
        }
    } else {
        int right = 0, *per = cli_alloc(CMD, (size_t)k, sizeof(int)), *of = cli_alloc(CMD, (size_t)k, sizeof(int));
        memset(per, 0, sizeof(int) * (size_t)k), memset(of, 0, sizeof(int) * (size_t)k);
        for (int i = 0; i < n; i++) {
            int c = set.labels.data[i], ok = pred[i] == head_of[c];
            right += ok, per[c] += ok, of[c]++;
        }
        if (json) {
            printf("{\"images\": %d, \"correct\": %d, \"accuracy\": ", n, right);
            cli_print_json_number("%.6f", (double)right / n);
            printf(", \"per_class\": [");
            for (int c = 0; c < k; c++) {
                if (c) printf(", ");
                cli_print_json_number("%.6f", of[c] ? (double)per[c] / of[c] : 0.0);
            }
            printf("]}\n");
        } else {
            printf("accuracy: %.4f (%d of %d images; %.1f s)\n", (double)right / n, right, n, seconds);
            printf("%-8s %8s %8s\n", "class", "images", "accuracy");
            for (int c = 0; c < k; c++)
                printf("%-8d %8d %8.4f\n", c, of[c], of[c] ? (double)per[c] / of[c] : 0.0);
        }
        free(per), free(of);
    }
    free(ids), free(pred), free(probs), free(head_of);
    cli_image_set_free(&set);
    fm_image_tokenizer_free(itok);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *text = NULL, *file = NULL, *images = NULL, *labels = NULL;
    int json = 0, batch = 16, threads = 0;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory with a classification head and tokenizer.json (required)"},
        {"text", OPT_STRING, &text, 0, 0, "one text to classify"},
        {"file", OPT_STRING, &file, 0, 0, "texts to classify, one a line ('-' = stdin)"},
        {"images", OPT_STRING, &images, 0, 0, "an IDX image file to classify (with the model's image tokenizer)"},
        {"labels", OPT_STRING, &labels, 0, 0, "--images' IDX label file: print the accuracy instead of the labels"},
        {"json", OPT_FLAG, &json, 0, 0, "one JSON line per text: {\"label\": ..., \"probs\": {label: p, ...}}"},
        {"batch", OPT_INT, &batch, 1, 4096, "texts classified together (default 16)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_classify, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir) cli_usage_error(CMD, "--model DIR is required");
    if (labels && !images) cli_usage_error(CMD, "--labels goes with --images");
    if (images && (text || file)) cli_usage_error(CMD, "give exactly one of --text, --file and --images");
    if (!images && (text != NULL) + (file != NULL) != 1)
        cli_usage_error(CMD, "give exactly one of --text and --file (or --images)");
    fm_set_threads(threads);
    if (images) return run_images(dir, images, labels, json, batch);
    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model(CMD, dir, &model, &tok, 1);
    int K = fm_model_num_labels(model);
    if (K == 0) {
        fprintf(stderr, "fm " CMD ": %s has no classification head (config.json's architectures is not "
                "GPT2ForSequenceClassification; make one with fm finetune --task classify)\n", dir);
        exit(1);
    }

    /* the inputs */
    char *owned = NULL;
    int n = 0;
    input *in;
    const char *name = file && strcmp(file, "-") ? file : "standard input";
    if (text) {
        in = cli_alloc(CMD, 1, sizeof *in);
        in[0] = (input){.text = text, .len = strlen(text)};
        n = 1;
        if (!text[0]) cli_usage_error(CMD, "--text is empty");
    } else {
        size_t len = 0;
        owned = cli_read_file(CMD, strcmp(file, "-") ? file : NULL, &len);
        in = split_lines(name, owned, len, &n);
        if (n == 0) {
            fprintf(stderr, "fm " CMD ": %s: no text to classify (the file is empty)\n", name);
            exit(1);
        }
    }
    int P = fm_model_config(model)->n_positions, cut = 0;
    for (int i = 0; i < n; i++) {
        size_t got;
        fm_status st = fm_tokenizer_encode(tok, in[i].text, in[i].len, 0, &in[i].ids, &got);
        if (st) cli_fail(CMD, st);
        if (got == 0) { /* only possible for text that encodes to nothing */
            if (text) fprintf(stderr, "fm " CMD ": --text encodes to no tokens\n");
            else fprintf(stderr, "fm " CMD ": %s:%d: the line encodes to no tokens\n", name, i + 1);
            exit(1);
        }
        if (got > (size_t)P) got = (size_t)P, cut++;
        in[i].n = (int)got;
    }
    if (cut) fprintf(stderr, "fm " CMD ": %d text%s longer than the context: the first %d tokens classified\n", cut,
                     cut == 1 ? "" : "s", P);

    /* batches right-padded with the padding id; without one each text goes alone */
    int pad = fm_model_pad_id(model);
    if (pad < 0) batch = 1;
    int *tokens = cli_alloc(CMD, (size_t)batch * P, sizeof(int));
    float *logits = cli_alloc(CMD, (size_t)batch * K, sizeof(float));
    double *probs = cli_alloc(CMD, (size_t)K, sizeof(double));
    if (!json) {
        printf("%-12s", "label");
        for (int k = 0; k < K; k++) printf(" %10.10s", fm_model_label(model, k));
        printf("  text\n");
    }
    /* The forward also keeps the (rows, V) logits and their gradient's buffer: a batch holds at
     * most about 512 MiB of them (one text at least). */
    size_t max_rows = ((size_t)64 << 20) / (size_t)fm_model_config(model)->vocab_size;
    for (int i0 = 0, B = 0; i0 < n; i0 += B) {
        int T = 0;
        for (B = 0; B < batch && i0 + B < n; B++) {
            int t = in[i0 + B].n > T ? in[i0 + B].n : T;
            if (B > 0 && (size_t)(B + 1) * t > max_rows) break;
            T = t;
        }
        for (int b = 0; b < B; b++) {
            const input *x = &in[i0 + b];
            memcpy(tokens + (size_t)b * T, x->ids, sizeof(int) * x->n);
            for (int t = x->n; t < T; t++) tokens[(size_t)b * T + t] = pad;
        }
        fm_status st = fm_model_classify(model, tokens, B, T, logits, NULL);
        if (st) cli_fail(CMD, st);
        for (int b = 0; b < B; b++) {
            const float *z = logits + (size_t)b * K;
            int best = 0;
            double mx = -INFINITY, sum = 0.0;
            for (int k = 0; k < K; k++) {
                if (z[k] > z[best]) best = k;
                if (z[k] > mx) mx = z[k];
            }
            for (int k = 0; k < K; k++) sum += probs[k] = exp(z[k] - mx);
            for (int k = 0; k < K; k++) probs[k] /= sum;
            const char *label = fm_model_label(model, best);
            if (json) {
                printf("{\"label\":");
                cli_print_json_string(label, strlen(label));
                printf(",\"probs\":{");
                for (int k = 0; k < K; k++) {
                    const char *l = fm_model_label(model, k);
                    if (k) putchar(',');
                    cli_print_json_string(l, strlen(l));
                    putchar(':');
                    cli_print_json_number("%.6g", probs[k]);
                }
                printf("}}\n");
            } else {
                printf("%-12s", label);
                for (int k = 0; k < K; k++) printf(" %10.4f", probs[k]);
                printf("  ");
                print_snippet(in[i0 + b].text, in[i0 + b].len, 60);
                putchar('\n');
            }
        }
    }
    for (int i = 0; i < n; i++) free(in[i].ids);
    free(in), free(owned), free(tokens), free(logits), free(probs);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_classify = {"classify", "--model DIR (--text T | --file F | --images IDX [--labels IDX]) [--json] [--batch N]",
                                  "Label texts with a model's classification head (probabilities per label).", run};
