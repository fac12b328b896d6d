/*
 * cmd-tokenizer-images.c — `fm tokenizer train --images IDX --out DIR`: an image tokenizer.
 *
 * Learns a patch codebook by k-means from an IDX image file (library: image_tokenizer_train.c),
 * prints the reconstruction error (MSE per pixel in 0..255 units, PSNR) and writes DIR, a
 * complete tokenizer directory: tokenizer.json (a byte-level text tokenizer, or --base's, with
 * <|image|>, <|/image|> and the K image codes added as special tokens) and image_tokenizer.json.
 * cmd-tokenizer.c sends `tokenizer train` here when --images is given.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static const cli_command train_images_cmd = {
    "tokenizer train", "--images IDX --out DIR [--patch P --codebook K --iters N --sample N --seed S --base DIR]",
    "Learn an image tokenizer: P x P patches quantised to K codes by k-means on a sample of the images; DIR gets "
    "tokenizer.json (text + image tokens) and image_tokenizer.json.", NULL};

int cli_tokenizer_train_images(int argc, char **argv) {
    const char *cmd = "tokenizer train";
    const char *images_path = NULL, *out = NULL, *base = NULL;
    int threads = 0;
    fm_image_tokenizer_config cfg;
    fm_image_tokenizer_config_default(&cfg);
    cli_option opts[] = {
        {"images", OPT_STRING, &images_path, 0, 0, "IDX image file, gzip or plain (required)"},
        {"out", OPT_STRING, &out, 0, 0, "tokenizer directory to write (required)"},
        {"patch", OPT_INT, &cfg.patch, 1, 64, "patch side P in pixels; must divide the image size (4)"},
        {"codebook", OPT_INT, &cfg.codebook, 2, 65536, "codes K (512)"},
        {"iters", OPT_INT, &cfg.iters, 1, 100000, "k-means iterations at most (20)"},
        {"sample", OPT_INT, &cfg.sample, 1, 1 << 30, "images drawn for k-means (10000; all when fewer)"},
        {"seed", OPT_U64, &cfg.seed, 0, 1.8e19, "random seed of the sample and the starting centroids (1)"},
        {"base", OPT_STRING, &base, 0, 0, "a text tokenizer (tokenizer.json or a directory) to add the image tokens to "
                                          "(default: byte-level, 262 ids)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&train_images_cmd, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!images_path) cli_usage_error(cmd, "--images IDX is required");
    if (!out) cli_usage_error(cmd, "--out DIR is required");
    fm_set_threads(threads);
    fm_idx images;
    fm_status st = fm_idx_load(images_path, &images);
    if (st) cli_fail(cmd, st);
    if (images.rows == 0) {
        fprintf(stderr, "fm %s: %s is a label file (1 dimension), not images\n", cmd, images_path);
        return 1;
    }
    if (images.rows % cfg.patch || images.cols % cfg.patch)
        cli_usage_error(cmd, "--patch %d does not divide the %d x %d images of %s", cfg.patch, images.rows, images.cols,
                        images_path);
    fm_tokenizer *tok = NULL;
    if (base) st = fm_tokenizer_load(&tok, base);
    else st = fm_tokenizer_train(&tok, NULL, NULL, 0, 262); /* the 256 bytes and the 6 special tokens */
    if (st) cli_fail(cmd, st);
    int text_vocab = fm_tokenizer_vocab_size(tok);
    double t0 = cli_now();
    fm_image_tokenizer *t;
    fm_image_tokenizer_report rep;
    if ((st = fm_image_tokenizer_train(&t, &images, &cfg, tok, &rep))) cli_fail(cmd, st);
    double seconds = cli_now() - t0;
    cli_mkdir_p(cmd, out);
    char *tok_path = cli_path(out, "tokenizer.json");
    if ((st = fm_tokenizer_save(tok, tok_path)) || (st = fm_image_tokenizer_save(t, out))) cli_fail(cmd, st);
    int seq = fm_image_tokenizer_sequence_length(t);
    printf("k-means: %d codes of %d x %d patches from %d of %d images (%zu patches), %d iterations, %.1f s\n",
           cfg.codebook, cfg.patch, cfg.patch, rep.sample_images, images.count, rep.patches, rep.iterations, seconds);
    printf("reconstruction on the %d sampled images: MSE %.2f per pixel (0..255), PSNR %.2f dB\n", rep.sample_images,
           rep.sample_mse, 10 * log10(255.0 * 255.0 / rep.sample_mse));
    if (rep.other_images > 0)
        printf("reconstruction on %d other images of the file: MSE %.2f per pixel, PSNR %.2f dB\n", rep.other_images,
               rep.other_mse, 10 * log10(255.0 * 255.0 / rep.other_mse));
    printf("%d x %d images -> %d tokens each (<|image|>, %d codes, <|/image|>); codes are ids %d .. %d of %d "
           "(text: %d)\n",
           images.rows, images.cols, seq, seq - 2, fm_image_tokenizer_code_base(t),
           fm_image_tokenizer_code_base(t) + cfg.codebook - 1, fm_tokenizer_vocab_size(tok), text_vocab);
    printf("saved %s and %s/image_tokenizer.json\n", tok_path, out);
    free(tok_path);
    fm_image_tokenizer_free(t);
    fm_tokenizer_free(tok);
    fm_idx_free(&images);
    return 0;
}
