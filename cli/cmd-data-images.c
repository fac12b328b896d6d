/*
 * cmd-data-images.c — `fm data prepare --images IDX --tokenizer DIR --out DATA`: image token shards.
 *
 * Every image of the IDX file becomes its token sequence (<|image|>, the patch codes in raster
 * order, <|/image|>), the sequences back to back in file order. The held-out share is the last
 * images of the same (training) file: the last round(count x --val-fraction) images, or the last
 * --val-images; a test file is never read here. DATA gets train.bin, val.bin, tokenizer.json and
 * image_tokenizer.json; fm pretrain finds the image tokenizer there and starts every training
 * window at an image's first token. The shards record the pixels as their source bytes (an IDX
 * pixel is one byte), so the held-out "bits per byte" of fm pretrain and fm eval are bits per
 * pixel. Augmentation (--augment-shift S, --augment-flip) adds to train.bin each training image
 * moved by every (dy, dx) in [-S, S]^2 (zero filled) and/or mirrored left to right, after the
 * unchanged images; val.bin holds the held-out images as they are. cmd-data.c sends `data prepare`
 * here when --images is given.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "image_labels.h"

#define AUGMENT_SHIFT_MAX 4 /* --augment-shift: (2 * 4 + 1)^2 = 81 copies of each image at most */

static const cli_command prepare_images_cmd = {
    "data",
    "prepare --images IDX --tokenizer DIR --out DATA [--val-fraction X | --val-images N] [--augment-shift S] "
    "[--augment-flip]",
    "Encode the images of an IDX file with DIR's image tokenizer into train.bin and val.bin (the last images held "
    "out; training images optionally also moved and mirrored).", NULL};

/* Encodes images [first, first + n) into one shard at DATA/name, each in `copies` versions: copy c
 * moved by offset c % moves of [-shift, shift]^2 (cli_image_copy_offset: copy 0 unmoved) and, when
 * flip is set, mirrored for c >= moves. */
static void write_images(const char *out, const char *name, const fm_image_tokenizer *t, const fm_tokenizer *tok,
                         const fm_idx *images, int first, int n, int shift, int flip) {
    int len = fm_image_tokenizer_sequence_length(t), moves = (2 * shift + 1) * (2 * shift + 1);
    int copies = moves * (flip ? 2 : 1), R = images->rows, C = images->cols;
    size_t pix = (size_t)R * C, total = (size_t)n * copies;
    int *ids = cli_alloc("data", total * len, sizeof(int));
#pragma omp parallel
    {
        uint8_t *moved = cli_alloc("data", pix, 1);
#pragma omp for schedule(static)
        for (long long j = 0; j < (long long)total; j++) {
            int c = (int)(j / n), i = (int)(j % n), mirror = c >= moves, dy, dx;
            cli_image_copy_offset(c % moves, shift, &dy, &dx);
            const uint8_t *img = images->data + (size_t)(first + i) * pix;
            if (dy || dx || mirror) {
                cli_image_move(img, R, C, dy, dx, mirror, moved);
                img = moved;
            }
            fm_image_tokenizer_encode(t, img, ids + (size_t)j * len); /* fails only on NULL arguments */
        }
        free(moved);
    }
    char *path = cli_path(out, name);
    fm_status st = fm_shard_write_with_fingerprint(path, ids, total * len, fm_tokenizer_vocab_size(tok),
                                                   (uint64_t)total * pix, fm_tokenizer_fingerprint(tok));
    if (st) cli_fail("data", st);
    if (copies > 1)
        printf("%s: %d images (%d .. %d of the file) in %d versions (moved by up to %d pixels%s), %zu tokens\n", path,
               n, first, first + n - 1, copies, shift, flip ? ", and mirrored" : "", total * len);
    else
        printf("%s: %d images (%d .. %d of the file), %zu tokens\n", path, n, first, first + n - 1, total * len);
    free(path);
    free(ids);
}

int cli_data_prepare_images(int argc, char **argv) {
    const char *images_path = NULL, *tok_dir = NULL, *out = NULL;
    float val_fraction = 0.05f;
    int val_images = 0, threads = 0, augment_shift = 0, augment_flip = 0;
    cli_option opts[] = {
        {"images", OPT_STRING, &images_path, 0, 0, "IDX image file, the training images only (required)"},
        {"tokenizer", OPT_STRING, &tok_dir, 0, 0,
         "directory with tokenizer.json and image_tokenizer.json (fm tokenizer train --images; required)"},
        {"out", OPT_STRING, &out, 0, 0, "output directory (required)"},
        {"val-fraction", OPT_FLOAT, &val_fraction, 0.0001, 0.5, "share of the file's last images held out (0.05)"},
        {"val-images", OPT_INT, &val_images, 1, 1 << 30, "hold out exactly the last N images instead"},
        {"augment-shift", OPT_INT, &augment_shift, 0, AUGMENT_SHIFT_MAX,
         "train.bin also holds each training image moved by every offset up to S pixels each way (0)"},
        {"augment-flip", OPT_FLAG, &augment_flip, 0, 0, "train.bin also holds each training image mirrored"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&prepare_images_cmd, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!images_path || !tok_dir || !out) cli_usage_error("data", "--images, --tokenizer and --out are required");
    fm_set_threads(threads);
    fm_image_tokenizer *t;
    fm_status st = fm_image_tokenizer_load(tok_dir, &t);
    if (st) cli_fail("data", st);
    fm_tokenizer *tok;
    if ((st = fm_tokenizer_load(&tok, tok_dir))) cli_fail("data", st);
    char *tok_name = cli_path(tok_dir, "tokenizer.json");
    if ((st = fm_image_tokenizer_check(t, tok, tok_name))) cli_fail("data", st);
    fm_idx images;
    if ((st = fm_idx_load(images_path, &images))) cli_fail("data", st);
    if (images.rows == 0) {
        fprintf(stderr, "fm data: %s is a label file (1 dimension), not images\n", images_path);
        return 1;
    }
    if (images.rows != fm_image_tokenizer_rows(t) || images.cols != fm_image_tokenizer_cols(t)) {
        fprintf(stderr, "fm data: %s holds %d x %d images but the image tokenizer in %s encodes %d x %d\n",
                images_path, images.rows, images.cols, tok_dir, fm_image_tokenizer_rows(t), fm_image_tokenizer_cols(t));
        return 1;
    }
    int held = val_images ? val_images : (int)(images.count * (double)val_fraction + 0.5);
    if (held < 1 || held >= images.count) {
        fprintf(stderr, "fm data: %s holds %d images, too few to hold out %d of them and train on the rest\n",
                images_path, images.count, held < 1 ? 1 : held);
        return 1;
    }
    cli_mkdir_p("data", out);
    write_images(out, "train.bin", t, tok, &images, 0, images.count - held, augment_shift, augment_flip);
    write_images(out, "val.bin", t, tok, &images, images.count - held, held, 0, 0);
    char *path = cli_path(out, "tokenizer.json");
    if ((st = fm_tokenizer_save(tok, path)) || (st = fm_image_tokenizer_save(t, out))) cli_fail("data", st);
    printf("held out the last %d of %d images; %d tokens per image; tokenizer %016llx and image tokenizer saved "
           "in %s\n",
           held, images.count, fm_image_tokenizer_sequence_length(t), (unsigned long long)fm_tokenizer_fingerprint(tok),
           out);
    free(path), free(tok_name);
    fm_idx_free(&images);
    fm_tokenizer_free(tok);
    fm_image_tokenizer_free(t);
    return 0;
}
