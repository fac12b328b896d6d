/*
 * cmd-complete.c — `fm complete`: an image model draws the lower half of images from their upper half.
 *
 *   fm complete --model M --images IDX --out grid.png [--count N --samples K --seed S --temperature T]
 *
 * For images first .. first + N - 1 of IDX (the first N unless --first): the image tokenizer of M
 * encodes each; <|image|> and the codes of the upper rows of patches (floor(R / 2) of R patch
 * rows) are fed to an inference session; the remaining codes are sampled K times, each sample
 * drawn among the image codes only (the codes' logits alone, at --temperature), the K samples
 * decoding together as K sequences copied from the fed prompt. The PNG grid (libpng) has one
 * column per image and 2 + K rows: the original, the upper half alone (the hidden part grey),
 * the K completions decoded (the given half as the tokenizer reconstructs it). Prints the grid's
 * size and the completions' mean squared error on the hidden rows against the original.
 * Not for: text (fm generate).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

extern const cli_command cmd_complete;

#define CELL_GAP 2      /* pixels of white between cells */
#define HIDDEN_GREY 96  /* the hidden part of the "upper half" row */

/* Copies cell (rows x cols pixels, scaled by scale) to grid row r, column c. */
static void put_cell(uint8_t *grid, int grid_w, const uint8_t *cell, int rows, int cols, int scale, int r, int c) {
    int y0 = CELL_GAP + r * (rows * scale + CELL_GAP), x0 = CELL_GAP + c * (cols * scale + CELL_GAP);
    for (int y = 0; y < rows * scale; y++)
        for (int x = 0; x < cols * scale; x++)
            grid[(size_t)(y0 + y) * grid_w + x0 + x] = cell[(size_t)(y / scale) * cols + x / scale];
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *images_path = NULL, *out = NULL;
    int count = 8, samples = 4, first = 0, scale = 2, threads = 0;
    float temperature = 1.0f;
    int top_k = 0;
    uint64_t seed = 1;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory with an image tokenizer (required)"},
        {"images", OPT_STRING, &images_path, 0, 0, "IDX image file, e.g. the test images (required)"},
        {"out", OPT_STRING, &out, 0, 0, "the PNG grid to write (required)"},
        {"count", OPT_INT, &count, 1, 1000, "images, the grid's columns (8)"},
        {"first", OPT_INT, &first, 0, 1 << 30, "index of the first image in the file (0)"},
        {"samples", OPT_INT, &samples, 1, 64, "completions per image (4)"},
        {"seed", OPT_U64, &seed, 0, 1.8e19, "random seed of the sampling (1)"},
        {"temperature", OPT_FLOAT, &temperature, 0, 100, "sampling temperature; 0 = greedy (1.0)"},
        {"top-k", OPT_INT, &top_k, 0, 1 << 20, "sample among the k likeliest codes only, 0 = all (0)"},
        {"scale", OPT_INT, &scale, 1, 16, "each pixel drawn as scale x scale (2)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_complete, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir || !images_path || !out) cli_usage_error("complete", "--model, --images and --out are required");
    fm_set_threads(threads);
    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model("complete", dir, &model, &tok, 1);
    fm_image_tokenizer *it;
    fm_status st = fm_image_tokenizer_load(dir, &it);
    if (st) cli_fail("complete", st);
    fm_idx images;
    if ((st = fm_idx_load(images_path, &images))) cli_fail("complete", st);
    int rows = fm_image_tokenizer_rows(it), cols = fm_image_tokenizer_cols(it);
    if (images.rows == 0) {
        fprintf(stderr, "fm complete: %s is a label file (1 dimension), not images\n", images_path);
        return 1;
    }
    if (images.rows != rows || images.cols != cols) {
        fprintf(stderr, "fm complete: %s holds %d x %d images but the model's image tokenizer encodes %d x %d\n",
                images_path, images.rows, images.cols, rows, cols);
        return 1;
    }
    if (first + count > images.count) {
        fprintf(stderr, "fm complete: %s holds %d images; --first %d --count %d asks for more\n", images_path,
                images.count, first, count);
        return 1;
    }
    const fm_config *mc = fm_model_config(model);
    int L = fm_image_tokenizer_sequence_length(it), P = fm_image_tokenizer_patch(it);
    int K = fm_image_tokenizer_codebook_size(it), base = fm_image_tokenizer_code_base(it), V = mc->vocab_size;
    if (mc->n_positions < L - 1) {
        fprintf(stderr, "fm complete: the model's context (%d) is shorter than an image's %d tokens\n", mc->n_positions,
                L - 1);
        return 1;
    }
    int grid_cols = cols / P, patch_rows = rows / P, given_rows = patch_rows / 2 > 0 ? patch_rows / 2 : 1;
    int n_given = 1 + given_rows * grid_cols; /* <|image|> and the upper codes */
    int n_codes = L - 2;
    fm_sampler_config sc;
    fm_sampler_config_default(&sc);
    sc.temperature = temperature, sc.top_k = top_k;
    if (fm_sampler_validate(&sc)) cli_usage_error("complete", "%s", fm_last_error());
    fm_session *s;
    if ((st = fm_session_init(&s, model, samples, L - 1))) cli_fail("complete", st);

    int cell_h = rows * scale, cell_w = cols * scale, n_rows = 2 + samples;
    int grid_w = CELL_GAP + count * (cell_w + CELL_GAP), grid_h = CELL_GAP + n_rows * (cell_h + CELL_GAP);
    uint8_t *grid = cli_alloc("complete", (size_t)grid_w * grid_h, 1);
    memset(grid, 255, (size_t)grid_w * grid_h);
    int *ids = cli_alloc("complete", (size_t)samples * L, sizeof(int)), *seqs = cli_alloc("complete", samples, sizeof(int));
    int *next = cli_alloc("complete", samples, sizeof(int));
    float *code_logits = cli_alloc("complete", (size_t)samples * K, sizeof(float)), *scratch = cli_alloc("complete", 2 * (size_t)K, sizeof(float));
    uint8_t *cell = cli_alloc("complete", (size_t)rows * cols, 1);
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    double hidden_se = 0;
    size_t hidden_px = 0;
    int hidden_from = given_rows * P; /* first pixel row not given */
    double t0 = cli_now();
    for (int c = 0; c < count; c++) {
        const uint8_t *orig = images.data + (size_t)(first + c) * rows * cols;
        put_cell(grid, grid_w, orig, rows, cols, scale, 0, c);
        memcpy(cell, orig, (size_t)rows * cols);
        memset(cell + (size_t)hidden_from * cols, HIDDEN_GREY, (size_t)(rows - hidden_from) * cols);
        put_cell(grid, grid_w, cell, rows, cols, scale, 1, c);
        fm_image_tokenizer_encode(it, orig, ids);
        for (int k = 0; k < samples; k++) {
            seqs[k] = k;
            fm_session_reset(s, k);
            if (k) memcpy(ids + (size_t)k * L, ids, sizeof(int) * n_given);
        }
        const float *logits;
        if ((st = fm_session_feed(s, 0, ids, n_given, &logits))) cli_fail("complete", st);
        for (int k = 0; k < samples; k++) memcpy(code_logits + (size_t)k * K, logits + base, sizeof(float) * K);
        for (int k = 1; k < samples; k++)
            if ((st = fm_session_copy(s, 0, k))) cli_fail("complete", st);
        for (int pos = n_given; pos < 1 + n_codes; pos++) {
            for (int k = 0; k < samples; k++) {
                next[k] = base + fm_sample(&sc, code_logits + (size_t)k * K, K, NULL, 0, &rng, scratch);
                ids[(size_t)k * L + pos] = next[k];
            }
            if (pos + 1 == 1 + n_codes) break; /* the last code: nothing more to predict */
            if ((st = fm_session_step(s, seqs, next, samples, &logits))) cli_fail("complete", st);
            for (int k = 0; k < samples; k++) memcpy(code_logits + (size_t)k * K, logits + (size_t)k * V + base, sizeof(float) * K);
        }
        for (int k = 0; k < samples; k++) {
            ids[(size_t)k * L + L - 1] = fm_image_tokenizer_end_id(it);
            if ((st = fm_image_tokenizer_decode(it, ids + (size_t)k * L, L, cell))) cli_fail("complete", st);
            put_cell(grid, grid_w, cell, rows, cols, scale, 2 + k, c);
            for (size_t j = (size_t)hidden_from * cols; j < (size_t)rows * cols; j++) {
                double e = (double)cell[j] - orig[j];
                hidden_se += e * e;
                hidden_px++;
            }
        }
    }
    double seconds = cli_now() - t0;
    if ((st = fm_png_write_gray(out, grid, grid_w, grid_h))) cli_fail("complete", st);
    printf("%s: %d x %d pixels: %d images (%d .. %d of %s) x (original, upper %d of %d rows, %d completions)\n", out,
           grid_w, grid_h, count, first, first + count - 1, images_path, hidden_from, rows, samples);
    printf("sampled %d codes per completion at temperature %g in %.2f s; hidden rows' MSE against the original: "
           "%.1f per pixel (0..255)\n",
           1 + n_codes - n_given, temperature, seconds, hidden_px ? hidden_se / hidden_px : 0.0);
    free(grid), free(ids), free(seqs), free(next), free(code_logits), free(scratch), free(cell);
    fm_session_free(s);
    fm_idx_free(&images);
    fm_image_tokenizer_free(it);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_complete = {
    "complete", "--model M --images IDX --out grid.png [--count N --samples K --seed S --temperature T]",
    "Complete the lower half of images from their upper half with an image model; write a PNG grid.", run};
