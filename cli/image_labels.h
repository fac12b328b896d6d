/*
 * image_labels.h — labeled images for a classification head (cli/image_labels.c), shared by
 * `fm finetune --task classify --train-images` and `fm classify --images`.
 */
#ifndef FM_CLI_IMAGE_LABELS_H
#define FM_CLI_IMAGE_LABELS_H

#include "fm.h"

/* An IDX image file (and its label file, when given) checked against an image tokenizer. */
typedef struct {
    fm_idx images;  /* count x rows x cols bytes */
    fm_idx labels;  /* count labels (data NULL when no label file was given) */
    int has_labels;
    int k;          /* the number of classes: the largest label + 1 (0 without labels) */
    int len;        /* tokens per image (the tokenizer's sequence length, markers included) */
} cli_image_set;

/* Loads images_path (and labels_path, NULL: none; counts must agree) and checks that itok
 * encodes images of their size and that an image's tokens fit a context of n_positions. Dies
 * naming the file on any error. */
void cli_image_set_load(const char *cmd, const char *images_path, const char *labels_path,
                        const fm_image_tokenizer *itok, int n_positions, cli_image_set *out);
void cli_image_set_free(cli_image_set *set);

/* The token sequences of the given images (rows: n indices; NULL: images 0 .. n - 1) as one
 * (n, set->len) array, malloc'd. Dies on error. */
int *cli_image_set_encode(const char *cmd, const cli_image_set *set, const fm_image_tokenizer *itok,
                          const int *rows, int n);

/* The same into ids (n, set->len), the images moved dy rows down and dx columns right first
 * (negative: up, left; the pixels moved in from outside are 0, the IDX background). */
void cli_image_set_encode_into(const char *cmd, const cli_image_set *set, const fm_image_tokenizer *itok,
                               const int *rows, int n, int dy, int dx, int *ids);

/* The offset (dy, dx) of copy c (0 .. (2 shift + 1)^2 - 1) of an image moved by every offset in
 * [-shift, shift]^2: copy 0 is (0, 0), the unmoved image, then the others in raster order. */
void cli_image_copy_offset(int c, int shift, int *dy, int *dx);

/* img (R x C bytes) moved dy rows down and dx columns right (negative: up, left; the pixels moved
 * in from outside are 0, the IDX background), then mirrored left to right when flip is set, into
 * out (R x C bytes, not img). */
void cli_image_move(const uint8_t *img, int R, int C, int dy, int dx, int flip, uint8_t *out);

/* The head index of each class 0 .. k - 1 of an IDX label file: the head's label named "c"
 * (decimal); dies naming the model directory when the head lacks one. out: (k). */
void cli_image_label_map(const char *cmd, const fm_model *model, const char *dir, int k, int *out);

/* The head's answer for each of n token sequences ids (n, len) in batches of `batch`: pred (n)
 * the argmax index, probs (n, K; may be NULL) the softmax of the head's logits. Dies on error. */
void cli_image_predict(const char *cmd, fm_model *model, const int *ids, int n, int len, int batch, int *pred,
                       double *probs);

#endif /* FM_CLI_IMAGE_LABELS_H */
