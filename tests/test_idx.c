/*
 * test_idx.c — the IDX reader (src/io/idx.c) on files the test writes itself, plain and gzip.
 *
 * - images and labels read back exactly, from a plain file and from the same bytes gzip-compressed;
 * - every way a file can be wrong is refused naming the file: missing, empty, wrong magic, another
 *   element type, another rank, a truncated header, truncated pixels (plain and gzip), bytes after
 *   the data, a zero image side, a count far past the file (no allocation of what it announces); a pair whose counts disagree, images and labels swapped.
 * Not for: the image tokenizer (test_image_tokenizer.c).
 */
#include "test_util.h"

#include <zlib.h>

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
}

/* An IDX image file's bytes: count images of rows x cols, pixel (n, y, x) = (n*31 + y*7 + x) % 256.
 * *size receives the length (16 + count*rows*cols). */
static unsigned char *idx_images(int count, int rows, int cols, size_t *size) {
    size_t n = 16 + (size_t)count * rows * cols;
    unsigned char *b = malloc(n);
    put_be32(b, 0x803), put_be32(b + 4, count), put_be32(b + 8, rows), put_be32(b + 12, cols);
    for (int i = 0; i < count; i++)
        for (int y = 0; y < rows; y++)
            for (int x = 0; x < cols; x++) b[16 + ((size_t)i * rows + y) * cols + x] = (unsigned char)((i * 31 + y * 7 + x) % 256);
    *size = n;
    return b;
}

static unsigned char *idx_labels(int count, size_t *size) {
    unsigned char *b = malloc(8 + count);
    put_be32(b, 0x801), put_be32(b + 4, count);
    for (int i = 0; i < count; i++) b[8 + i] = (unsigned char)(i % 10);
    *size = 8 + count;
    return b;
}

static void write_gzip(const char *path, const void *data, size_t size) {
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    if (size) assert_int_equal(gzwrite(gz, data, (unsigned)size), (int)size);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void test_reads_plain_and_gzip(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    size_t ni, nl;
    unsigned char *img = idx_images(5, 3, 4, &ni), *lab = idx_labels(5, &nl);
    for (int gz = 0; gz < 2; gz++) {
        char *ip = test_path(dir, gz ? "i.gz" : "i"), *lp = test_path(dir, gz ? "l.gz" : "l");
        if (gz) write_gzip(ip, img, ni), write_gzip(lp, lab, nl);
        else write_file_bytes(ip, img, ni), write_file_bytes(lp, lab, nl);
        fm_idx images, labels;
        assert_int_equal(fm_idx_load_pair(ip, lp, &images, &labels), FM_OK);
        assert_int_equal(images.count, 5);
        assert_int_equal(images.rows, 3);
        assert_int_equal(images.cols, 4);
        assert_memory_equal(images.data, img + 16, 60);
        assert_int_equal(labels.count, 5);
        assert_int_equal(labels.rows, 0);
        assert_int_equal(labels.cols, 0);
        assert_memory_equal(labels.data, lab + 8, 5);
        fm_idx_free(&images);
        fm_idx_free(&labels);
        assert_null(images.data);
        free(ip), free(lp);
    }
    /* zero images is a valid (empty) file */
    unsigned char empty[16];
    put_be32(empty, 0x803), put_be32(empty + 4, 0), put_be32(empty + 8, 2), put_be32(empty + 12, 2);
    char *ep = test_path(dir, "empty");
    write_file_bytes(ep, empty, 16);
    fm_idx e;
    assert_int_equal(fm_idx_load(ep, &e), FM_OK);
    assert_int_equal(e.count, 0);
    fm_idx_free(&e);
    free(ep), free(img), free(lab);
    remove_dir_recursive(dir);
    free(dir);
}

/* Writes bytes to dir/name (gzip-compressed when gz), loads it, and checks the error. */
static void expect_error(const char *dir, const char *name, const void *bytes, size_t n, int gz, fm_status status,
                         const char *phrase) {
    char *p = test_path(dir, name);
    if (gz) write_gzip(p, bytes, n);
    else write_file_bytes(p, bytes, n);
    fm_idx idx;
    assert_error_contains(fm_idx_load(p, &idx), status, phrase);
    assert_non_null(strstr(fm_last_error(), p)); /* names the file */
    assert_null(idx.data);
    free(p);
}

static void test_bad_files(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    size_t n;
    unsigned char *img = idx_images(4, 5, 5, &n);
    fm_idx idx;
    char *missing = test_path(dir, "missing.gz");
    assert_error_contains(fm_idx_load(missing, &idx), FM_ERR_IO, missing);
    free(missing);
    for (int gz = 0; gz < 2; gz++) {
        expect_error(dir, "empty", img, 0, gz, FM_ERR_FORMAT, "not an IDX file");
        unsigned char bad[16];
        memcpy(bad, img, 16);
        bad[0] = 0x1f, bad[1] = 0x00; /* a wrong magic */
        expect_error(dir, "magic", bad, 16, gz, FM_ERR_FORMAT, "not an IDX file (magic");
        memcpy(bad, img, 16);
        bad[2] = 0x0d; /* floats */
        expect_error(dir, "float", bad, 16, gz, FM_ERR_FORMAT, "element type 0x0d");
        memcpy(bad, img, 16);
        bad[3] = 2; /* two dimensions */
        expect_error(dir, "rank", bad, 16, gz, FM_ERR_FORMAT, "of 2 dimensions");
        expect_error(dir, "header", img, 10, gz, FM_ERR_FORMAT, "truncated header");
        expect_error(dir, "pixels", img, n - 1, gz, FM_ERR_FORMAT, "truncated");
        expect_error(dir, "pixels", img, n - 20, gz, FM_ERR_FORMAT, "(3 whole)");
        unsigned char *longer = calloc(1, n + 3);
        memcpy(longer, img, n);
        expect_error(dir, "trailing", longer, n + 3, gz, FM_ERR_FORMAT, "bytes after the 4 images");
        free(longer);
        memcpy(bad, img, 16);
        put_be32(bad + 4, 0x7fffffff); /* 53 GB announced, 100 bytes there: refused at once */
        unsigned char *big = malloc(n);
        memcpy(big, bad, 16), memcpy(big + 16, img + 16, n - 16);
        expect_error(dir, "huge", big, n, gz, FM_ERR_FORMAT, "more than fm reads");
        put_be32(big + 4, 4000000); /* 100 MB announced: read as far as it goes, 64 MB held at most */
        expect_error(dir, "big", big, n, gz, FM_ERR_FORMAT, "the header says 4000000 images (100000000 bytes) but 100");
        free(big);
        memcpy(bad, img, 16);
        put_be32(bad + 8, 0);
        expect_error(dir, "side", bad, 16, gz, FM_ERR_FORMAT, "absurd image size 0 x 5");
    }
    free(img);
    remove_dir_recursive(dir);
    free(dir);
}

static void test_pairs_that_disagree(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    size_t ni, nl;
    unsigned char *img = idx_images(6, 2, 2, &ni), *lab = idx_labels(5, &nl);
    char *ip = test_path(dir, "imgs.gz"), *lp = test_path(dir, "labs.gz");
    write_gzip(ip, img, ni);
    write_gzip(lp, lab, nl);
    fm_idx a, b;
    assert_error_contains(fm_idx_load_pair(ip, lp, &a, &b), FM_ERR_MISMATCH, "holds 6 images but");
    assert_non_null(strstr(fm_last_error(), lp));
    assert_null(a.data);
    assert_null(b.data);
    assert_error_contains(fm_idx_load_pair(lp, ip, &a, &b), FM_ERR_MISMATCH, "where images were expected");
    assert_error_contains(fm_idx_load_pair(ip, ip, &a, &b), FM_ERR_MISMATCH, "where labels were expected");
    free(ip), free(lp), free(img), free(lab);
    remove_dir_recursive(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_plain_and_gzip),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_pairs_that_disagree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
