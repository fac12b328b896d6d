/*
 * image_tokenizer_internal.h — the image tokenizer's struct and the nearest-centroid search that
 * image_tokenizer.c (files, encode, decode) and image_tokenizer_train.c (k-means) share.
 * Not part of the public API (fm.h's "images" section is).
 */
#ifndef FM_IMAGE_TOKENIZER_INTERNAL_H
#define FM_IMAGE_TOKENIZER_INTERNAL_H

#include <stdint.h>

#include "core/internal.h"

#define FM_IMAGE_TOKENIZER_FILE "image_tokenizer.json"
#define FM_IMAGE_CODE_FORMAT "<|patch_%d|>" /* the special token of code k */

struct fm_image_tokenizer {
    int rows, cols;      /* image size in pixels */
    int patch;           /* P: patches are P x P pixels */
    int grid_rows, grid_cols, n_patches; /* rows / P, cols / P, their product */
    int K;               /* codebook size */
    int image_id, end_id; /* ids of <|image|> and <|/image|> */
    int code_base;       /* code k is id code_base + k */
    int vocab_size;      /* the text tokenizer's vocabulary when trained (codes included) */
    uint64_t tokenizer_fingerprint; /* of that tokenizer (fm_tokenizer_fingerprint) */
    float *codebook;     /* (K, P*P) centroids, pixel values in 0..255, row-major within a patch */
};

/* An image tokenizer with every field set from the arguments and a zeroed codebook (K, P*P);
 * checks that P divides rows and cols. */
fm_status fm_image_tok_new(fm_image_tokenizer **out, int rows, int cols, int patch, int K);
/* The index of the centroid of codebook (K, D) nearest to x (D) in squared distance, the lowest
 * index among equals; *dist (may be NULL) receives the squared distance. */
int fm_image_tok_nearest(const float *codebook, int K, int D, const float *x, float *dist);
/* Patch p (raster order) of an image (rows, cols) into out (P*P floats). */
void fm_image_tok_get_patch(const fm_image_tokenizer *t, const uint8_t *pixels, int p, float *out);

#endif
