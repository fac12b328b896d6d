/*
 * image_labels.c — labeled images for a classification head: an IDX image file and its label
 * file read and checked against the model's image tokenizer, the images' token sequences
 * (<|image|>, the patch codes, <|/image|>), the head's label for each IDX class, and the head's
 * predictions in batches.
 *
 * What it is for: `fm finetune --task classify --train-images` (training and held-out rows) and
 * `fm classify --images` (labels and accuracy) read images the same way, so that a fine-tuned
 * head sees at test time exactly the sequences it was trained on. What it is not for: the
 * tokenizer (src/tokenizer/image_tokenizer.c) or the head (src/model/classifier.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_labels.h"

void cli_image_set_load(const char *cmd, const char *images_path, const char *labels_path,
                        const fm_image_tokenizer *itok, int n_positions, cli_image_set *out) {
    memset(out, 0, sizeof *out);
    fm_status st = labels_path ? fm_idx_load_pair(images_path, labels_path, &out->images, &out->labels)
                               : fm_idx_load(images_path, &out->images);
    if (st) cli_fail(cmd, st);
    if (out->images.rows == 0) {
        fprintf(stderr, "fm %s: %s holds labels, not images\n", cmd, images_path);
        exit(1);
    }
    if (out->images.count == 0) {
        fprintf(stderr, "fm %s: %s holds no images\n", cmd, images_path);
        exit(1);
    }
    int R = fm_image_tokenizer_rows(itok), C = fm_image_tokenizer_cols(itok);
    if (out->images.rows != R || out->images.cols != C) {
        fprintf(stderr, "fm %s: %s holds %dx%d images but the model's image tokenizer encodes %dx%d\n", cmd,
                images_path, out->images.rows, out->images.cols, R, C);
        exit(1);
    }
    out->len = fm_image_tokenizer_sequence_length(itok);
    if (out->len > n_positions) {
        fprintf(stderr, "fm %s: an image is %d tokens but the model's context is %d\n", cmd, out->len, n_positions);
        exit(1);
    }
    if (labels_path) {
        out->has_labels = 1;
        for (int i = 0; i < out->labels.count; i++)
            if (out->labels.data[i] + 1 > out->k) out->k = out->labels.data[i] + 1;
    }
}

void cli_image_set_free(cli_image_set *set) {
    fm_idx_free(&set->images);
    if (set->has_labels) fm_idx_free(&set->labels);
    memset(set, 0, sizeof *set);
}

void cli_image_copy_offset(int c, int shift, int *dy, int *dx) {
    int side = 2 * shift + 1, moves = side * side, at = (c + moves / 2) % moves; /* copy 0: the grid's centre */
    *dy = at / side - shift;
    *dx = at % side - shift;
}

void cli_image_move(const uint8_t *img, int R, int C, int dy, int dx, int flip, uint8_t *out) {
    for (int y = 0; y < R; y++)
        for (int x = 0; x < C; x++) {
            int sy = y - dy, sx = (flip ? C - 1 - x : x) - dx;
            out[(size_t)y * C + x] = sy >= 0 && sy < R && sx >= 0 && sx < C ? img[(size_t)sy * C + sx] : 0;
        }
}

void cli_image_set_encode_into(const char *cmd, const cli_image_set *set, const fm_image_tokenizer *itok,
                               const int *rows, int n, int dy, int dx, int *ids) {
    int R = set->images.rows, C = set->images.cols;
    size_t npix = (size_t)R * C;
    uint8_t *moved = dy || dx ? cli_alloc(cmd, npix, 1) : NULL;
    for (int i = 0; i < n; i++) {
        const uint8_t *img = set->images.data + (rows ? (size_t)rows[i] : (size_t)i) * npix;
        if (moved) {
            cli_image_move(img, R, C, dy, dx, 0, moved);
            img = moved;
        }
        fm_status st = fm_image_tokenizer_encode(itok, img, ids + (size_t)i * set->len);
        if (st) cli_fail(cmd, st);
    }
    free(moved);
}

int *cli_image_set_encode(const char *cmd, const cli_image_set *set, const fm_image_tokenizer *itok,
                          const int *rows, int n) {
    int *ids = cli_alloc(cmd, (size_t)(n > 0 ? n : 1) * set->len, sizeof(int));
    cli_image_set_encode_into(cmd, set, itok, rows, n, 0, 0, ids);
    return ids;
}

void cli_image_label_map(const char *cmd, const fm_model *model, const char *dir, int k, int *out) {
    for (int c = 0; c < k; c++) {
        char name[16];
        snprintf(name, sizeof name, "%d", c);
        out[c] = fm_model_label_index(model, name);
        if (out[c] < 0) {
            fprintf(stderr, "fm %s: %s's head has no label \"%s\" (its labels: \"%s\", ...; an image head's are the "
                    "IDX classes \"0\", \"1\", ...)\n", cmd, dir, name, fm_model_label(model, 0));
            exit(1);
        }
    }
}

void cli_image_predict(const char *cmd, fm_model *model, const int *ids, int n, int len, int batch, int *pred,
                       double *probs) {
    int K = fm_model_num_labels(model);
    float *logits = cli_alloc(cmd, (size_t)batch * K, sizeof(float));
    for (int i0 = 0; i0 < n; i0 += batch) {
        int B = n - i0 < batch ? n - i0 : batch;
        /* every image is len tokens: no padding, each read at its <|/image|> */
        fm_status st = fm_model_classify(model, ids + (size_t)i0 * len, B, len, logits, NULL);
        if (st) cli_fail(cmd, st);
        for (int b = 0; b < B; b++) {
            const float *z = logits + (size_t)b * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (z[k] > z[best]) best = k;
            pred[i0 + b] = best;
            if (!probs) continue;
            double *p = probs + (size_t)(i0 + b) * K, sum = 0.0;
            for (int k = 0; k < K; k++) sum += p[k] = exp((double)z[k] - z[best]);
            for (int k = 0; k < K; k++) p[k] /= sum;
        }
    }
    free(logits);
}
