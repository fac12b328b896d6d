/*
 * test_shard_stream.c — streamed shards (src/io/shard_stream.c) and shards read as one
 * (fm_shard_open_parts, src/io/data.c).
 *
 * - a series whose tokens fit one shard writes the bytes fm_shard_write_with_fingerprint writes;
 * - appends of any sizes give the same shards (numbered, N tokens each, the last fewer), and with
 *   fm_shard_series_count_bytes the same source bytes too; no .tmp file is left;
 * - the shards opened as parts read back the whole stream, windows spanning two parts included,
 *   their lengths and source bytes summed; parts of two vocabularies are refused naming the file;
 * - a series freed unfinished removes the shard it was writing.
 */
#include "test_util.h"

#define VOCAB 300

static int *make_tokens(size_t n) {
    int *t = malloc(sizeof(int) * n);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) t[i] = (int)((i * 7919 + i / 13) % VOCAB);
    return t;
}

static void test_one_shard_equals_shard_write(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    int *tokens = make_tokens(1000);
    fm_shard_series *s;
    assert_int_equal(fm_shard_series_open(&s, dir, "train", 5000, VOCAB, 0x1234), FM_OK);
    assert_int_equal(fm_shard_series_append(s, tokens, 600, 1500), FM_OK);
    assert_int_equal(fm_shard_series_append(s, tokens + 600, 400, 1000), FM_OK);
    int shards;
    size_t n;
    assert_int_equal(fm_shard_series_finish(s, &shards, &n), FM_OK);
    assert_int_equal(shards, 1);
    assert_int_equal(n, 1000);
    char *streamed = test_path(dir, "train-00000.bin"), *whole = test_path(dir, "whole.bin");
    assert_int_equal(fm_shard_write_with_fingerprint(whole, tokens, 1000, VOCAB, 2500, 0x1234), FM_OK);
    size_t na, nb;
    unsigned char *a = read_file_bytes(streamed, &na), *b = read_file_bytes(whole, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a), free(b), free(streamed), free(whole), free(tokens);
    remove_dir_recursive(dir);
    free(dir);
}

/* Writes tokens [0, n) to DIR/PREFIX-*.bin in appends of `step` tokens; returns the shard count. */
static int write_series(const char *dir, const char *prefix, const int *tokens, size_t n, size_t step,
                        size_t shard_tokens, const fm_tokenizer *tok) {
    fm_shard_series *s;
    assert_int_equal(fm_shard_series_open(&s, dir, prefix, shard_tokens, VOCAB, 7), FM_OK);
    if (tok) fm_shard_series_count_bytes(s, tok);
    for (size_t i = 0; i < n; i += step) {
        size_t m = n - i < step ? n - i : step;
        assert_int_equal(fm_shard_series_append(s, tokens + i, m, 3 * m), FM_OK);
    }
    int shards;
    assert_int_equal(fm_shard_series_finish(s, &shards, NULL), FM_OK);
    return shards;
}

static void test_appends_and_parts(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    const size_t n = 10000, per = 3000;
    int *tokens = make_tokens(n);
    /* a tokenizer for exact byte counts: 300 tokens, trained on a little text */
    char text[8192];
    size_t len = 0;
    for (int i = 0; i < 120; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "line %d of the %d sheep\n", i, i % 9);
    const char *texts[1] = {text};
    fm_tokenizer *tok;
    assert_int_equal(fm_tokenizer_train(&tok, texts, &len, 1, VOCAB), FM_OK);
    assert_int_equal(write_series(dir, "a", tokens, n, 1, per, tok), 4);
    assert_int_equal(write_series(dir, "b", tokens, n, 777, per, tok), 4);
    assert_int_equal(write_series(dir, "c", tokens, n, n, per, tok), 4);
    assert_int_equal(count_dir_entries_containing(dir, ".tmp"), 0);
    char *paths[3][4];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++) {
            char name[32];
            snprintf(name, sizeof name, "%c-%05d.bin", 'a' + k, i);
            paths[k][i] = test_path(dir, name);
        }
    for (int i = 0; i < 4; i++) { /* the same files however the appends were cut */
        size_t na, nb, nc;
        unsigned char *a = read_file_bytes(paths[0][i], &na), *b = read_file_bytes(paths[1][i], &nb);
        unsigned char *c = read_file_bytes(paths[2][i], &nc);
        assert_int_equal(na, 64 + 2 * (i < 3 ? per : n - 3 * per));
        assert_true(na == nb && na == nc);
        assert_memory_equal(a, b, na);
        assert_memory_equal(a, c, na);
        free(a), free(b), free(c);
    }
    fm_shard *whole;
    assert_int_equal(fm_shard_open_parts(&whole, (const char *const *)paths[1], 4), FM_OK);
    assert_int_equal(fm_shard_length(whole), n);
    assert_int_equal(fm_shard_vocab_size(whole), VOCAB);
    assert_int_equal(fm_shard_tokenizer_fingerprint(whole), 7);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = 0;
        fm_tokenizer_token_bytes(tok, tokens[i], &l);
        bytes += l;
    }
    assert_int_equal(fm_shard_source_bytes(whole), bytes);
    int *back = malloc(sizeof(int) * n);
    fm_shard_read(whole, 0, n, back);
    assert_memory_equal(back, tokens, sizeof(int) * n);
    fm_shard_read(whole, per - 5, 10, back); /* a window across the first boundary */
    assert_memory_equal(back, tokens + per - 5, sizeof(int) * 10);
    fm_shard_read(whole, 2 * per + 1, per, back); /* from inside part 2 into part 3 */
    assert_memory_equal(back, tokens + 2 * per + 1, sizeof(int) * per);
    fm_shard_close(whole);
    /* parts of another vocabulary: refused, naming the file */
    char *other = test_path(dir, "other.bin");
    assert_int_equal(fm_shard_write_with_fingerprint(other, tokens, 100, VOCAB + 1, 100, 7), FM_OK);
    const char *mixed[2] = {paths[0][0], other};
    fm_shard *bad;
    assert_int_equal(fm_shard_open_parts(&bad, mixed, 2), FM_ERR_FORMAT);
    assert_non_null(strstr(fm_last_error(), "other.bin"));
    free(other), free(back), free(tokens);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++) free(paths[k][i]);
    fm_tokenizer_free(tok);
    remove_dir_recursive(dir);
    free(dir);
}

static void test_unfinished_removed(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    int *tokens = make_tokens(2500);
    fm_shard_series *s;
    assert_int_equal(fm_shard_series_open(&s, dir, "t", 2000, VOCAB, 0), FM_OK);
    assert_int_equal(fm_shard_series_append(s, tokens, 2500, 0), FM_OK); /* one whole shard, one begun */
    fm_shard_series_free(s);
    assert_int_equal(count_dir_entries_containing(dir, ".tmp"), 0);
    assert_int_equal(count_dir_entries_containing(dir, "t-00000.bin"), 1);
    assert_int_equal(count_dir_entries_containing(dir, "t-00001"), 0);
    int bad_token = VOCAB;
    assert_int_equal(fm_shard_series_open(&s, dir, "u", 2000, VOCAB, 0), FM_OK);
    assert_int_equal(fm_shard_series_append(s, &bad_token, 1, 1), FM_ERR_ARG);
    fm_shard_series_free(s);
    free(tokens);
    remove_dir_recursive(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_shard_equals_shard_write),
        cmocka_unit_test(test_appends_and_parts),
        cmocka_unit_test(test_unfinished_removed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
