/*
 * decoded_images.c — an IDX image file as an image tokenizer sees it: every image encoded and
 * decoded again (each patch replaced by its nearest code's centroid, the picture `fm complete`
 * draws from the tokens), written as a plain IDX file.
 *
 * What it is for: measuring how much a tokenizer's lossy codes cost a linear probe, by running
 * `fm probe --features pixels` on the decoded training and test images beside the raw ones
 * (docs/probe.md, "What the tokenizer keeps"). Encoding and decoding are the library's
 * (fm_image_tokenizer_encode / _decode), so the codes are those fm data prepare writes.
 * Build and run: make build/bench_decoded_images, then
 *     build/bench_decoded_images TOKENIZER_DIR IN.idx[.gz] OUT.idx
 * Prints the mean squared error per pixel (0..255 units).
 */
#include <stdio.h>
#include <stdlib.h>

#include "fm.h"

static int fail(const char *what) {
    fprintf(stderr, "decoded_images: %s: %s\n", what, fm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TOKENIZER_DIR IN.idx[.gz] OUT.idx\n", argv[0]);
        return 2;
    }
    fm_image_tokenizer *t;
    fm_idx images;
    fm_status st;
    if ((st = fm_image_tokenizer_load(argv[1], &t))) return fail(argv[1]);
    if ((st = fm_idx_load(argv[2], &images))) return fail(argv[2]);
    int R = images.rows, C = images.cols, len = fm_image_tokenizer_sequence_length(t);
    if (R != fm_image_tokenizer_rows(t) || C != fm_image_tokenizer_cols(t)) {
        fprintf(stderr, "decoded_images: %s holds %d x %d images; the tokenizer encodes %d x %d\n", argv[2], R, C,
                fm_image_tokenizer_rows(t), fm_image_tokenizer_cols(t));
        return 1;
    }
    size_t pix = (size_t)R * C;
    uint8_t *out = malloc(pix * (size_t)images.count);
    if (!out) {
        fprintf(stderr, "decoded_images: out of memory for %d images\n", images.count);
        return 1;
    }
    double sq = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sq)
    for (int i = 0; i < images.count; i++) {
        int ids[len];
        const uint8_t *img = images.data + (size_t)i * pix;
        uint8_t *back = out + (size_t)i * pix;
        fm_image_tokenizer_encode(t, img, ids); /* fails only on NULL arguments */
        fm_image_tokenizer_decode(t, ids, len, back);
        for (size_t j = 0; j < pix; j++) sq += ((double)img[j] - back[j]) * ((double)img[j] - back[j]);
    }
    FILE *f = fopen(argv[3], "wb");
    unsigned char head[16] = {0, 0, 8, 3};
    unsigned int dims[3] = {(unsigned)images.count, (unsigned)R, (unsigned)C};
    for (int d = 0; d < 3; d++)
        for (int b = 0; b < 4; b++) head[4 + 4 * d + b] = (unsigned char)(dims[d] >> (24 - 8 * b));
    int written = f && fwrite(head, 1, 16, f) == 16 && fwrite(out, 1, pix * images.count, f) == pix * images.count;
    if (f && fclose(f)) written = 0;
    if (!written) {
        fprintf(stderr, "decoded_images: cannot write %s\n", argv[3]);
        return 1;
    }
    printf("%s: %d images, MSE %.2f per pixel\n", argv[3], images.count, sq / ((double)pix * images.count));
    free(out);
    fm_idx_free(&images);
    fm_image_tokenizer_free(t);
    return 0;
}
