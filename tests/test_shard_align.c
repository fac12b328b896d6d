/*
 * test_shard_align.c — the shard data source with windows aligned to image boundaries
 * (fm_shard_source_init_aligned, train/shard_source.c).
 *
 * - shards of "images" of 5 tokens (a marker 0, then 1..4): with align 5, every training row and
 *   every held-out row starts at a marker and its targets are the next tokens; the held-out pass
 *   has the windows that fit (stride 5), then rows = 0;
 * - rows longer than an image (seq 9) still start at markers;
 * - align 1 draws exactly the batches of fm_shard_source_init (text pre-training is unchanged);
 * - a read range (data parallel: one rank's rows) fills those rows as a whole batch has them,
 *   leaves the others untouched, and draws the same stream (the next batch is the same).
 */
#include "test_util.h"

#define IMAGES 40
#define LEN 5

static void write_images(const char *path, int n_images) {
    int tokens[IMAGES * LEN];
    for (int i = 0; i < n_images * LEN; i++) tokens[i] = i % LEN;
    assert_int_equal(fm_shard_write(path, tokens, (size_t)n_images * LEN, 8, 0), FM_OK);
}

static fm_batch make_batch(int B, int T) {
    fm_batch b = {.B = B, .T = T};
    b.tokens = calloc((size_t)B * T, sizeof(int));
    b.targets = calloc((size_t)B * T, sizeof(int));
    b.mask = calloc((size_t)B * T, sizeof(float));
    return b;
}

static void free_batch(fm_batch *b) { free(b->tokens), free(b->targets), free(b->mask); }

static void check_rows(const fm_batch *b, int rows) {
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < b->T; t++) {
            assert_int_equal(b->tokens[r * b->T + t], t % LEN); /* starts at a marker */
            assert_int_equal(b->targets[r * b->T + t], (t + 1) % LEN);
        }
}

static void test_aligned_windows(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *tp = test_path(dir, "train.bin"), *vp = test_path(dir, "val.bin");
    write_images(tp, IMAGES);
    write_images(vp, 7); /* 35 tokens */
    fm_shard *train, *val;
    assert_int_equal(fm_shard_open(&train, tp), FM_OK);
    assert_int_equal(fm_shard_open(&val, vp), FM_OK);
    int seqs[2] = {4, 9};
    for (int k = 0; k < 2; k++) {
        int T = seqs[k];
        fm_data_source src;
        assert_int_equal(fm_shard_source_init_aligned(&src, train, val, T, 1 << 20, LEN), FM_OK);
        fm_batch b = make_batch(6, T);
        fm_rng rng;
        fm_rng_seed(&rng, 11);
        uint64_t pos = 0;
        for (int i = 0; i < 50; i++) {
            assert_int_equal(src.next(src.ctx, &b, &rng, &pos), FM_OK);
            assert_int_equal(b.rows, 6);
            check_rows(&b, 6);
        }
        assert_int_equal(pos, (uint64_t)50 * 6 * T);
        /* held-out: windows at 0, stride ceil(T / 5) * 5, while T + 1 tokens fit in 35 */
        int stride = (T + LEN - 1) / LEN * LEN, want = (35 - T - 1) / stride + 1, got = 0;
        for (uint64_t index = 0;; index++) {
            assert_int_equal(src.eval_next(src.ctx, &b, index), FM_OK);
            if (b.rows == 0) break;
            check_rows(&b, b.rows);
            got += b.rows;
        }
        assert_int_equal(got, want);
        free_batch(&b);
        fm_shard_source_free(&src);
    }
    /* align 1 is the plain source, draw for draw */
    fm_data_source plain, one;
    assert_int_equal(fm_shard_source_init(&plain, train, val, 4, 64), FM_OK);
    assert_int_equal(fm_shard_source_init_aligned(&one, train, val, 4, 64, 1), FM_OK);
    fm_batch a = make_batch(5, 4), c = make_batch(5, 4);
    fm_rng ra, rc;
    fm_rng_seed(&ra, 3), fm_rng_seed(&rc, 3);
    uint64_t pa = 0, pc = 0;
    int misaligned = 0;
    for (int i = 0; i < 20; i++) {
        plain.next(plain.ctx, &a, &ra, &pa);
        one.next(one.ctx, &c, &rc, &pc);
        assert_memory_equal(a.tokens, c.tokens, sizeof(int) * 20);
        assert_memory_equal(a.targets, c.targets, sizeof(int) * 20);
        for (int r = 0; r < 5; r++) misaligned += a.tokens[r * 4] != 0;
    }
    assert_true(misaligned > 0); /* the plain source does start mid-image */
    for (uint64_t index = 0; index < 3; index++) {
        plain.eval_next(plain.ctx, &a, index);
        one.eval_next(one.ctx, &c, index);
        assert_int_equal(a.rows, c.rows);
        assert_memory_equal(a.tokens, c.tokens, sizeof(int) * a.rows * 4);
    }
    fm_data_source bad;
    assert_error_contains(fm_shard_source_init_aligned(&bad, train, val, 4, 64, 0), FM_ERR_ARG, "alignment 0");
    free_batch(&a), free_batch(&c);
    fm_shard_source_free(&plain), fm_shard_source_free(&one);
    fm_shard_close(train), fm_shard_close(val);
    free(tp), free(vp);
    remove_dir_recursive(dir);
    free(dir);
}

static void test_read_range(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *tp = test_path(dir, "train.bin"), *vp = test_path(dir, "val.bin");
    int tokens[400];
    for (int i = 0; i < 400; i++) tokens[i] = (i * 7) % 97;
    assert_int_equal(fm_shard_write(tp, tokens, 400, 97, 0), FM_OK);
    assert_int_equal(fm_shard_write(vp, tokens, 100, 97, 0), FM_OK);
    fm_shard *train, *val;
    assert_int_equal(fm_shard_open(&train, tp), FM_OK);
    assert_int_equal(fm_shard_open(&val, vp), FM_OK);
    fm_data_source src;
    assert_int_equal(fm_shard_source_init(&src, train, val, 6, 1 << 20), FM_OK);
    const int B = 5, T = 6, first = 2, end = 4, sentinel = -7;
    fm_batch whole = make_batch(B, T), part = make_batch(B, T);
    fm_rng rw, rp;
    fm_rng_seed(&rw, 5), fm_rng_seed(&rp, 5);
    uint64_t pw = 0, pp = 0;
    for (int i = 0; i < 10; i++) {
        for (int k = 0; k < B * T; k++) part.tokens[k] = part.targets[k] = sentinel;
        part.read_first = first, part.read_end = end;
        assert_int_equal(src.next(src.ctx, &whole, &rw, &pw), FM_OK);
        assert_int_equal(src.next(src.ctx, &part, &rp, &pp), FM_OK);
        assert_int_equal(part.rows, B);
        assert_int_equal(pp, pw);
        for (int k = 0; k < B * T; k++) {
            int in = k / T >= first && k / T < end;
            assert_int_equal(part.tokens[k], in ? whole.tokens[k] : sentinel);
            assert_int_equal(part.targets[k], in ? whole.targets[k] : sentinel);
        }
    }
    /* held-out: an empty range still counts the batch's rows */
    whole.read_first = whole.read_end = 0;
    part.read_first = part.read_end = B;
    assert_int_equal(src.eval_next(src.ctx, &whole, 0), FM_OK);
    assert_int_equal(src.eval_next(src.ctx, &part, 0), FM_OK);
    assert_true(whole.rows > 0);
    assert_int_equal(part.rows, whole.rows);
    free_batch(&whole), free_batch(&part);
    fm_shard_source_free(&src);
    fm_shard_close(train), fm_shard_close(val);
    free(tp), free(vp);
    remove_dir_recursive(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aligned_windows),
        cmocka_unit_test(test_read_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
