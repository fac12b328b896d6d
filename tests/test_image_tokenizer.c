/*
 * test_image_tokenizer.c — the image tokenizer (k-means patch codebook) and the PNG writer.
 *
 * - images made only of K distinct patches: k-means with K codes finds them all, the
 *   reconstruction error is exactly 0 and every image decodes to itself; the ids are
 *   <|image|>, codes in code_base .. code_base + K - 1, <|/image|>, and the codes are the text
 *   tokenizer's special tokens;
 * - on noisy images the error is positive and below the error of the image's mean grey;
 * - the same seed gives the same codebook file with 1 and with 2 threads; another seed another;
 * - saved and loaded again it encodes the same; a partial sequence decodes only its patches;
 *   bad sequences (not starting with <|image|>, a text id among the codes) are refused;
 * - loading: a directory without one, a tokenizer.json that is not the one it was made with,
 *   damaged JSON: errors naming the file;
 * - the PNG writer: a picture written, read back with libpng, is the same pixels.
 */
#include "test_util.h"

#include <math.h>
#include <png.h>

/* count images of 16 x 16 made of 4 x 4 patches, each one of n_kinds patterns (pattern k: pixel
 * (y, x) = (k * 37 + y * 11 + x * 5) % 256), picked by (i * 7 + p * 3 + i / 3) % n_kinds; noise
 * > 0 adds a deterministic jitter of up to +-noise. */
static uint8_t *patterned_images(int count, int n_kinds, int noise) {
    uint8_t *px = malloc((size_t)count * 256);
    for (int i = 0; i < count; i++)
        for (int p = 0; p < 16; p++) {
            int k = (i * 7 + p * 3 + i / 3) % n_kinds, y0 = (p / 4) * 4, x0 = (p % 4) * 4;
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++) {
                    int v = (k * 37 + y * 11 + x * 5) % 256;
                    if (noise) v += (int)((i * 131 + p * 17 + y * 5 + x * 3) % (2 * noise + 1)) - noise;
                    px[(size_t)i * 256 + (y0 + y) * 16 + x0 + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        }
    return px;
}

static fm_tokenizer *byte_tokenizer(void) {
    fm_tokenizer *tok;
    assert_int_equal(fm_tokenizer_train(&tok, NULL, NULL, 0, 262), FM_OK);
    return tok;
}

static fm_image_tokenizer *train(fm_idx *idx, int K, uint64_t seed, fm_tokenizer **tok_out,
                                 fm_image_tokenizer_report *report) {
    fm_image_tokenizer_config cfg;
    fm_image_tokenizer_config_default(&cfg);
    cfg.codebook = K;
    cfg.seed = seed;
    fm_tokenizer *tok = byte_tokenizer();
    fm_image_tokenizer *t;
    assert_int_equal(fm_image_tokenizer_train(&t, idx, &cfg, tok, report), FM_OK);
    *tok_out = tok;
    return t;
}

static void test_exact_codebook(void **state) {
    (void)state;
    fm_idx idx = {.count = 60, .rows = 16, .cols = 16, .data = patterned_images(60, 8, 0)};
    fm_tokenizer *tok;
    fm_image_tokenizer_report rep;
    fm_image_tokenizer *t = train(&idx, 8, 3, &tok, &rep);
    assert_int_equal(fm_image_tokenizer_sequence_length(t), 18);
    assert_int_equal(fm_image_tokenizer_rows(t), 16);
    assert_int_equal(fm_image_tokenizer_cols(t), 16);
    assert_int_equal(rep.sample_images, 60);
    assert_true(rep.sample_mse == 0.0);
    assert_true(isnan(rep.other_mse));
    int base = fm_image_tokenizer_code_base(t);
    assert_int_equal(fm_tokenizer_vocab_size(tok), 262 + 8); /* <|image|> <|/image|> were there */
    assert_int_equal(fm_tokenizer_special_id(tok, "<|patch_0|>"), base);
    assert_int_equal(fm_tokenizer_special_id(tok, "<|patch_7|>"), base + 7);
    assert_int_equal(fm_tokenizer_special_id(tok, "<|image|>"), fm_image_tokenizer_image_id(t));
    assert_int_equal(fm_tokenizer_special_id(tok, "<|/image|>"), fm_image_tokenizer_end_id(t));
    int ids[18];
    uint8_t back[256];
    for (int i = 0; i < 60; i++) {
        assert_int_equal(fm_image_tokenizer_encode(t, idx.data + i * 256, ids), FM_OK);
        assert_int_equal(ids[0], fm_image_tokenizer_image_id(t));
        assert_int_equal(ids[17], fm_image_tokenizer_end_id(t));
        for (int p = 1; p <= 16; p++) assert_true(ids[p] >= base && ids[p] < base + 8);
        assert_int_equal(fm_image_tokenizer_decode(t, ids, 18, back), FM_OK);
        assert_memory_equal(back, idx.data + i * 256, 256);
    }
    double mse;
    assert_int_equal(fm_image_tokenizer_error(t, idx.data, 60, &mse), FM_OK);
    assert_true(mse == 0.0);
    /* a partial sequence: the first 5 patches (ids[1..5]) are written, the rest left alone */
    memset(back, 7, sizeof back);
    assert_int_equal(fm_image_tokenizer_decode(t, ids, 6, back), FM_OK);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            int p = (y / 4) * 4 + x / 4;
            if (p < 5) assert_int_equal(back[y * 16 + x], idx.data[59 * 256 + y * 16 + x]);
            else assert_int_equal(back[y * 16 + x], 7);
        }
    /* bad sequences */
    int bad[18];
    memcpy(bad, ids, sizeof bad);
    bad[0] = 65;
    assert_error_contains(fm_image_tokenizer_decode(t, bad, 18, back), FM_ERR_ARG, "not <|image|>");
    memcpy(bad, ids, sizeof bad);
    bad[3] = 65;
    assert_error_contains(fm_image_tokenizer_decode(t, bad, 18, back), FM_ERR_ARG, "id 65 at position 3");
    assert_error_contains(fm_image_tokenizer_decode(t, ids, 19, back), FM_ERR_ARG, "at most 18");
    /* a tokenizer that has codes already */
    fm_image_tokenizer_config cfg;
    fm_image_tokenizer_config_default(&cfg);
    cfg.codebook = 8;
    fm_image_tokenizer *again;
    assert_error_contains(fm_image_tokenizer_train(&again, &idx, &cfg, tok, NULL), FM_ERR_ARG, "already holds image codes");
    /* patches that do not tile the image */
    cfg.patch = 3;
    fm_tokenizer *fresh = byte_tokenizer();
    assert_error_contains(fm_image_tokenizer_train(&again, &idx, &cfg, fresh, NULL), FM_ERR_ARG, "whole 3 x 3 patches");
    fm_tokenizer_free(fresh);
    fm_image_tokenizer_free(t);
    fm_tokenizer_free(tok);
    free(idx.data);
}

static void test_noisy_error_and_determinism(void **state) {
    (void)state;
    fm_idx idx = {.count = 200, .rows = 16, .cols = 16, .data = patterned_images(200, 40, 6)};
    char *dir1 = make_temp_dir(), *dir2 = make_temp_dir(), *dir3 = make_temp_dir();
    const char *dirs[3] = {dir1, dir2, dir3};
    int threads[3] = {1, 2, 2};
    uint64_t seeds[3] = {5, 5, 6};
    for (int r = 0; r < 3; r++) {
        fm_set_threads(threads[r]);
        fm_tokenizer *tok;
        fm_image_tokenizer_config cfg;
        fm_image_tokenizer_config_default(&cfg);
        cfg.codebook = 16, cfg.seed = seeds[r], cfg.sample = 150;
        tok = byte_tokenizer();
        fm_image_tokenizer *t;
        fm_image_tokenizer_report rep;
        assert_int_equal(fm_image_tokenizer_train(&t, &idx, &cfg, tok, &rep), FM_OK);
        assert_int_equal(rep.sample_images, 150);
        assert_int_equal(rep.other_images, 50);
        assert_true(rep.sample_mse > 0);
        assert_true(rep.other_mse > 0);
        /* far better than every pixel at the mean grey */
        double mean = 0, var = 0;
        for (int i = 0; i < 200 * 256; i++) mean += idx.data[i];
        mean /= 200 * 256;
        for (int i = 0; i < 200 * 256; i++) var += (idx.data[i] - mean) * (idx.data[i] - mean);
        var /= 200 * 256;
        assert_true(rep.sample_mse < var / 4);
        char *tp = test_path(dirs[r], "tokenizer.json");
        assert_int_equal(fm_tokenizer_save(tok, tp), FM_OK);
        assert_int_equal(fm_image_tokenizer_save(t, dirs[r]), FM_OK);
        /* loaded again: the same ids */
        fm_image_tokenizer *u;
        assert_int_equal(fm_image_tokenizer_load(dirs[r], &u), FM_OK);
        int a[18], b[18];
        for (int i = 0; i < 200; i += 13) {
            fm_image_tokenizer_encode(t, idx.data + i * 256, a);
            fm_image_tokenizer_encode(u, idx.data + i * 256, b);
            assert_memory_equal(a, b, sizeof a);
        }
        free(tp);
        fm_image_tokenizer_free(t), fm_image_tokenizer_free(u);
        fm_tokenizer_free(tok);
    }
    fm_set_threads(0);
    char *f1 = test_path(dir1, "image_tokenizer.json"), *f2 = test_path(dir2, "image_tokenizer.json"),
         *f3 = test_path(dir3, "image_tokenizer.json");
    size_t n1, n2, n3;
    unsigned char *b1 = read_file_bytes(f1, &n1), *b2 = read_file_bytes(f2, &n2), *b3 = read_file_bytes(f3, &n3);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1); /* one seed, 1 or 2 threads: the same file */
    assert_true(n1 != n3 || memcmp(b1, b3, n1) != 0);
    free(b1), free(b2), free(b3), free(f1), free(f2), free(f3);
    for (int r = 0; r < 3; r++) remove_dir_recursive(dirs[r]);
    free(dir1), free(dir2), free(dir3);
    free(idx.data);
}

static void test_load_errors(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *other = make_temp_dir();
    fm_image_tokenizer *t;
    assert_error_contains(fm_image_tokenizer_load(dir, &t), FM_ERR_IO, "holds no image tokenizer");
    assert_null(t);
    fm_idx idx = {.count = 30, .rows = 16, .cols = 16, .data = patterned_images(30, 8, 0)};
    fm_tokenizer *tok;
    fm_image_tokenizer *made = train(&idx, 8, 1, &tok, NULL);
    assert_int_equal(fm_image_tokenizer_save(made, dir), FM_OK);
    assert_int_equal(fm_image_tokenizer_load(dir, &t), FM_OK); /* no tokenizer.json beside it: not checked */
    fm_image_tokenizer_free(t);
    /* the byte-level tokenizer without the codes is not the one it was made with */
    fm_tokenizer *plain = byte_tokenizer();
    char *tp = test_path(dir, "tokenizer.json");
    assert_int_equal(fm_tokenizer_save(plain, tp), FM_OK);
    assert_error_contains(fm_image_tokenizer_load(dir, &t), FM_ERR_MISMATCH, "do not belong together");
    assert_non_null(strstr(fm_last_error(), tp));
    assert_int_equal(fm_tokenizer_save(tok, tp), FM_OK);
    assert_int_equal(fm_image_tokenizer_load(dir, &t), FM_OK);
    fm_image_tokenizer_free(t);
    /* copying into another directory */
    int copied = 0;
    assert_int_equal(fm_image_tokenizer_copy(dir, other, &copied), FM_OK);
    assert_int_equal(copied, 1);
    assert_int_equal(fm_image_tokenizer_copy(other + 0, dir, &copied), FM_OK);
    char *empty = make_temp_dir();
    assert_int_equal(fm_image_tokenizer_copy(empty, other, &copied), FM_OK);
    assert_int_equal(copied, 0);
    /* damaged files */
    char *jp = test_path(dir, "image_tokenizer.json");
    size_t n;
    char *text = (char *)read_file_bytes(jp, &n);
    write_file_bytes(jp, text, n / 2);
    assert_error_contains(fm_image_tokenizer_load(dir, &t), FM_ERR_FORMAT, "not a JSON object");
    assert_non_null(strstr(fm_last_error(), jp));
    char *patched = strdup(text), *at = strstr(patched, "\"patch\": 4");
    at[9] = '5';
    write_file_bytes(jp, patched, n);
    assert_error_contains(fm_image_tokenizer_load(dir, &t), FM_ERR_FORMAT, "whole 5 x 5 patches");
    free(patched);
    patched = strdup(text), at = strstr(patched, "\"codebook_size\": 8");
    at[17] = '7';
    write_file_bytes(jp, patched, n);
    assert_error_contains(fm_image_tokenizer_load(dir, &t), FM_ERR_FORMAT, "an array of 7 centroids");
    free(patched);
    free(text), free(jp), free(tp);
    fm_image_tokenizer_free(made);
    fm_tokenizer_free(tok), fm_tokenizer_free(plain);
    remove_dir_recursive(dir), remove_dir_recursive(other), remove_dir_recursive(empty);
    free(dir), free(other), free(empty), free(idx.data);
}

static void test_png_round_trip(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *path = test_path(dir, "grid.png");
    int w = 37, h = 23;
    uint8_t *px = malloc((size_t)w * h);
    for (int i = 0; i < w * h; i++) px[i] = (uint8_t)(i * 7 + i / w);
    assert_int_equal(fm_png_write_gray(path, px, w, h), FM_OK);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_file(&img, path));
    assert_int_equal(img.width, (unsigned)w);
    assert_int_equal(img.height, (unsigned)h);
    img.format = PNG_FORMAT_GRAY;
    uint8_t *back = malloc((size_t)w * h);
    assert_true(png_image_finish_read(&img, NULL, back, w, NULL));
    assert_memory_equal(back, px, (size_t)w * h);
    char *nowhere = test_path(dir, "no/such/dir/x.png");
    assert_error_contains(fm_png_write_gray(nowhere, px, w, h), FM_ERR_IO, nowhere);
    assert_error_contains(fm_png_write_gray(path, px, 0, h), FM_ERR_ARG, "picture size 0 x 23");
    assert_int_equal(count_dir_entries_containing(dir, ".tmp."), 0);
    free(nowhere), free(back), free(px), free(path);
    remove_dir_recursive(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_codebook),
        cmocka_unit_test(test_noisy_error_and_determinism),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_png_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
