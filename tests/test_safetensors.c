/*
 * test_safetensors.c — tests of the safetensors reader/writer and of atomic file writes.
 *
 * What it is for: round trips of every dtype (with metadata, a scalar, an empty tensor and an
 * unaligned tensor), header padding, F16/BF16 conversion, one test per kind of corrupt file
 * (checking the status and the message), and the guarantees of fm_atomic_* and fm_mkdir.
 * What it is not for: model files (the model save/load tests cover which tensors a model has).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>

#include "core/internal.h"
#include "test_util.h"

/* ---------------------------------------------------------------- fixtures and helpers */

static int setup(void **state) {
    *state = make_temp_dir();
    return 0;
}

static int teardown(void **state) {
    remove_dir_recursive(*state);
    free(*state);
    return 0;
}

/* Writes a file made of an 8-byte length, the header text and data bytes; returns its path. */
static char *write_raw(const char *dir, const char *header, const void *data, size_t data_size) {
    char *path = test_path(dir, "raw.safetensors");
    size_t n = strlen(header);
    unsigned char *bytes = malloc(8 + n + data_size + 1);
    assert_non_null(bytes);
    for (int i = 0; i < 8; i++) bytes[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(bytes + 8, header, n);
    if (data_size) memcpy(bytes + 8 + n, data, data_size);
    write_file_bytes(path, bytes, 8 + n + data_size);
    free(bytes);
    return path;
}

/* Asserts that opening path fails with status, a message containing phrase and the path, and
 * that the handle is left empty. */
static void expect_open_error(const char *path, fm_status status, const char *phrase) {
    fm_safetensors st;
    assert_error_contains(fm_st_open(&st, path), status, phrase);
    assert_non_null(strstr(fm_last_error(), path));
    assert_null(st.map);
    assert_null(st.tensors);
    assert_int_equal(st.n_tensors, 0);
    fm_st_close(&st); /* harmless on an empty handle */
}

/* A header + data with one entry, for the corruption tests below. */
static void expect_header_error(const char *dir, const char *header, size_t data_size,
                                const char *phrase) {
    unsigned char *data = calloc(data_size + 1, 1);
    char *path = write_raw(dir, header, data, data_size);
    expect_open_error(path, FM_ERR_FORMAT, phrase);
    free(path);
    free(data);
}

static char *write_small_valid(const char *dir, const char *name) {
    char *path = test_path(dir, name);
    float a[6] = {1, 2, 3, 4, 5, 6};
    fm_st_entry e = {.name = "a", .dtype = FM_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = a};
    assert_int_equal(fm_st_write(path, &e, 1, NULL, NULL, 0), FM_OK);
    return path;
}

/* ---------------------------------------------------------------- round trips */

static void test_round_trip_all_dtypes(void **state) {
    const char *dir = *state;
    float f32[6] = {0.5f, -1.0f, 2.25f, 1e-30f, -3e20f, 7.0f};
    uint16_t f16[4] = {0x3c00, 0xc100, 0x7bff, 0x0001};       /* 1, -2.5, 65504, 2^-24 */
    uint16_t bf16[3] = {0x3f80, 0xc020, 0x7f80};              /* 1, -2.5, inf */
    double f64[3] = {1.0 / 3.0, -1e300, 0.0};
    int64_t i64[2] = {-5, 2147483647};
    int32_t i32[3] = {-2147483647 - 1, 0, 42};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    float scalar = 3.5f;
    fm_st_entry entries[] = {
        {.name = "w.f32", .dtype = FM_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = f32},
        {.name = "w.f16", .dtype = FM_DTYPE_F16, .ndim = 1, .shape = {4}, .data = f16},
        {.name = "w.bf16", .dtype = FM_DTYPE_BF16, .ndim = 3, .shape = {1, 3, 1}, .data = bf16},
        {.name = "w.f64", .dtype = FM_DTYPE_F64, .ndim = 1, .shape = {3}, .data = f64},
        {.name = "step", .dtype = FM_DTYPE_I64, .ndim = 1, .shape = {2}, .data = i64},
        {.name = "ids", .dtype = FM_DTYPE_I32, .ndim = 1, .shape = {3}, .data = i32},
        {.name = "bytes \"quoted\" \\ name", .dtype = FM_DTYPE_U8, .ndim = 1, .shape = {5}, .data = u8},
        {.name = "scalar", .dtype = FM_DTYPE_F32, .ndim = 0, .data = &scalar},
        {.name = "empty", .dtype = FM_DTYPE_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
    };
    int n = (int)(sizeof entries / sizeof entries[0]);
    const char *keys[] = {"format", "note"};
    const char *values[] = {"pt", "line\nbreak \"and\" ünïcode"};
    char *path = test_path(dir, "all.safetensors");
    assert_int_equal(fm_st_write(path, entries, n, keys, values, 2), FM_OK);

    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    assert_string_equal(st.path, path);
    assert_int_equal(st.n_tensors, n);
    assert_int_equal(st.n_meta, 2);
    assert_string_equal(fm_st_meta(&st, "format"), "pt");
    assert_string_equal(fm_st_meta(&st, "note"), values[1]);
    assert_null(fm_st_meta(&st, "absent"));
    assert_null(fm_st_find(&st, "absent"));
    for (int i = 0; i < n; i++) {
        const fm_st_tensor *t = &st.tensors[i];
        assert_string_equal(t->name, entries[i].name); /* file order is write order */
        assert_ptr_equal(fm_st_find(&st, entries[i].name), t);
        assert_int_equal(t->dtype, entries[i].dtype);
        assert_int_equal(t->ndim, entries[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_int_equal(t->shape[d], entries[i].shape[d]);
            numel *= (size_t)t->shape[d];
        }
        assert_int_equal(t->numel, numel);
        assert_int_equal(t->nbytes, numel * fm_dtype_size(t->dtype));
        if (t->nbytes) assert_memory_equal(t->data, entries[i].data, t->nbytes);
    }

    float out[8];
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "w.f32"), out), FM_OK);
    assert_memory_equal(out, f32, sizeof f32);
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "w.f16"), out), FM_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 65504.0f && out[3] == ldexpf(1.0f, -24));
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "w.bf16"), out), FM_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && isinf(out[2]) && out[2] > 0);
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "w.f64"), out), FM_OK);
    assert_true(out[0] == (float)(1.0 / 3.0) && isinf(out[1]) && out[1] < 0 && out[2] == 0.0f);
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "scalar"), out), FM_OK);
    assert_true(out[0] == 3.5f);
    assert_int_equal(fm_st_find(&st, "scalar")->numel, 1);
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "empty"), out), FM_OK);

    int ints[8];
    assert_int_equal(fm_st_read_i32(&st, fm_st_find(&st, "step"), ints), FM_OK);
    assert_int_equal(ints[0], -5);
    assert_int_equal(ints[1], 2147483647);
    assert_int_equal(fm_st_read_i32(&st, fm_st_find(&st, "ids"), ints), FM_OK);
    assert_memory_equal(ints, i32, sizeof i32);
    assert_int_equal(fm_st_read_i32(&st, fm_st_find(&st, entries[6].name), ints), FM_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(ints[i], u8[i]);

    fm_st_close(&st);
    assert_null(st.map);
    fm_st_close(&st); /* twice is harmless */
    free(path);
}

static void test_empty_file_list_and_overwrite(void **state) {
    char *path = test_path(*state, "none.safetensors");
    assert_int_equal(fm_st_write(path, NULL, 0, NULL, NULL, 0), FM_OK);
    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    assert_int_equal(st.n_tensors, 0);
    assert_int_equal(st.n_meta, 0);
    fm_st_close(&st);

    /* Writing again replaces the file (rename over it). */
    uint8_t b = 9;
    fm_st_entry e = {.name = "b", .dtype = FM_DTYPE_U8, .ndim = 1, .shape = {1}, .data = &b};
    assert_int_equal(fm_st_write(path, &e, 1, NULL, NULL, 0), FM_OK);
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    assert_int_equal(st.n_tensors, 1);
    fm_st_close(&st);
    assert_int_equal(count_dir_entries_containing(*state, ".tmp."), 0);
    free(path);
}

/* A U8 tensor of 3 bytes puts the F32 tensor after it at an odd offset. */
static void test_unaligned_tensor(void **state) {
    uint8_t u8[3] = {1, 2, 3};
    float f[5] = {1.5f, -2.5f, 3.25f, 0.0f, 8.0f};
    double d[2] = {0.25, -0.75};
    fm_st_entry entries[] = {
        {.name = "u", .dtype = FM_DTYPE_U8, .ndim = 1, .shape = {3}, .data = u8},
        {.name = "f", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {5}, .data = f},
        {.name = "d", .dtype = FM_DTYPE_F64, .ndim = 1, .shape = {2}, .data = d},
    };
    char *path = test_path(*state, "odd.safetensors");
    assert_int_equal(fm_st_write(path, entries, 3, NULL, NULL, 0), FM_OK);
    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    const fm_st_tensor *t = fm_st_find(&st, "f");
    assert_int_not_equal((uintptr_t)t->data % 4, 0);
    float out[5];
    assert_int_equal(fm_st_read_f32(&st, t, out), FM_OK);
    assert_memory_equal(out, f, sizeof f);
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "d"), out), FM_OK);
    assert_true(out[0] == 0.25f && out[1] == -0.75f);
    fm_st_close(&st);
    free(path);
}

static void test_header_padding(void **state) {
    /* Names of every length modulo 8 give every amount of padding. */
    const char *names[] = {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"};
    float v[2] = {1, 2};
    for (int i = 0; i < 8; i++) {
        char *path = test_path(*state, "pad.safetensors");
        fm_st_entry e = {.name = names[i], .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {2}, .data = v};
        assert_int_equal(fm_st_write(path, &e, 1, NULL, NULL, 0), FM_OK);
        size_t size;
        unsigned char *bytes = read_file_bytes(path, &size);
        assert_non_null(bytes);
        uint64_t n = 0;
        for (int k = 7; k >= 0; k--) n = (n << 8) | bytes[k];
        assert_int_equal((8 + n) % 8, 0);
        assert_int_equal(size, 8 + n + sizeof v);
        assert_int_equal(bytes[8], '{');
        size_t close = (size_t)n + 7; /* the last '}' is followed only by spaces */
        while (bytes[close] == ' ') close--;
        assert_int_equal(bytes[close], '}');
        assert_true(8 + n - 1 - close < 8);
        assert_memory_equal(bytes + 8 + n, v, sizeof v);
        free(bytes);

        fm_safetensors st;
        assert_int_equal(fm_st_open(&st, path), FM_OK);
        fm_st_close(&st);
        free(path);
    }
}

static void test_padded_header_from_other_writers(void **state) {
    /* Trailing whitespace beyond 8-byte alignment is accepted too. */
    float v = 2.0f;
    char *path = write_raw(*state, "{\"x\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}      \n  ",
                           &v, sizeof v);
    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    float out;
    assert_int_equal(fm_st_read_f32(&st, fm_st_find(&st, "x"), &out), FM_OK);
    assert_true(out == 2.0f);
    fm_st_close(&st);
    free(path);
}

/* ---------------------------------------------------------------- conversions */

static void test_f16_conversion(void **state) {
    (void)state;
    assert_true(fm_f16_to_f32(0x3c00) == 1.0f);
    assert_true(fm_f16_to_f32(0xc100) == -2.5f);
    assert_true(fm_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(fm_f16_to_f32(0xfbff) == -65504.0f);
    assert_true(fm_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    assert_true(fm_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24)); /* largest subnormal */
    assert_true(fm_f16_to_f32(0x0400) == ldexpf(1.0f, -14)); /* smallest normal */
    assert_true(fm_f16_to_f32(0x3555) == 0.333251953125f);
    assert_true(fm_f16_to_f32(0x0000) == 0.0f && !signbit(fm_f16_to_f32(0x0000)));
    assert_true(fm_f16_to_f32(0x8000) == 0.0f && signbit(fm_f16_to_f32(0x8000)));
    assert_true(isinf(fm_f16_to_f32(0x7c00)) && fm_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(fm_f16_to_f32(0xfc00)) && fm_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(fm_f16_to_f32(0x7e00)));
    assert_true(isnan(fm_f16_to_f32(0xfc01)));
}

static void test_bf16_conversion(void **state) {
    (void)state;
    assert_true(fm_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(fm_bf16_to_f32(0xc020) == -2.5f);
    assert_true(fm_bf16_to_f32(0x477f) == 65280.0f); /* 65504 is not a bfloat16 */
    assert_true(fm_bf16_to_f32(0x0001) == ldexpf(1.0f, -133)); /* smallest subnormal */
    assert_true(isinf(fm_bf16_to_f32(0x7f80)) && fm_bf16_to_f32(0x7f80) > 0);
    assert_true(isinf(fm_bf16_to_f32(0xff80)) && fm_bf16_to_f32(0xff80) < 0);
    assert_true(isnan(fm_bf16_to_f32(0x7fc0)));
    assert_true(fm_bf16_to_f32(0x8000) == 0.0f && signbit(fm_bf16_to_f32(0x8000)));
}

static void test_read_wrong_kind_of_dtype(void **state) {
    int32_t i32[2] = {1, 2};
    float f[2] = {1, 2};
    int64_t big[3] = {1, (int64_t)1 << 40, 3};
    fm_st_entry entries[] = {
        {.name = "ints", .dtype = FM_DTYPE_I32, .ndim = 1, .shape = {2}, .data = i32},
        {.name = "floats", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {2}, .data = f},
        {.name = "big", .dtype = FM_DTYPE_I64, .ndim = 1, .shape = {3}, .data = big},
    };
    char *path = test_path(*state, "kinds.safetensors");
    assert_int_equal(fm_st_write(path, entries, 3, NULL, NULL, 0), FM_OK);
    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    float fout[3];
    int iout[3];
    assert_error_contains(fm_st_read_f32(&st, fm_st_find(&st, "ints"), fout), FM_ERR_FORMAT,
                          "tensor 'ints' has dtype I32, expected a floating type");
    assert_non_null(strstr(fm_last_error(), path));
    assert_error_contains(fm_st_read_i32(&st, fm_st_find(&st, "floats"), iout), FM_ERR_FORMAT,
                          "has dtype F32, expected an integer type");
    assert_error_contains(fm_st_read_i32(&st, fm_st_find(&st, "big"), iout), FM_ERR_FORMAT,
                          "value 1099511627776 does not fit");
    assert_non_null(strstr(fm_last_error(), "'big'"));
    fm_st_close(&st);
    free(path);
}

/* ---------------------------------------------------------------- corrupt files */

static void test_missing_file(void **state) {
    char *path = test_path(*state, "nothing.safetensors");
    expect_open_error(path, FM_ERR_IO, "No such file");
    free(path);
    expect_open_error(*state, FM_ERR_IO, "not a regular file"); /* a directory */
}

static void test_empty_file(void **state) {
    char *path = test_path(*state, "empty.safetensors");
    write_file_bytes(path, "", 0);
    expect_open_error(path, FM_ERR_FORMAT, "empty file");
    free(path);
}

static void test_file_shorter_than_length(void **state) {
    char *path = test_path(*state, "short.safetensors");
    write_file_bytes(path, "\x10\x00\x00", 3);
    expect_open_error(path, FM_ERR_FORMAT, "too short");
    free(path);
}

static void test_header_length_zero(void **state) {
    char *path = test_path(*state, "zero.safetensors");
    write_file_bytes(path, "\0\0\0\0\0\0\0\0{}", 10);
    expect_open_error(path, FM_ERR_FORMAT, "header length is 0");
    free(path);
}

static void test_header_length_too_large(void **state) {
    char *path = test_path(*state, "huge.safetensors");
    unsigned char bytes[16] = {0x00, 0xe2, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100000256 */
    write_file_bytes(path, bytes, sizeof bytes);
    expect_open_error(path, FM_ERR_FORMAT, "exceeds the limit");
    bytes[7] = 0xff; /* a length that would overflow any addition */
    write_file_bytes(path, bytes, sizeof bytes);
    expect_open_error(path, FM_ERR_FORMAT, "exceeds the limit");
    free(path);
}

static void test_header_length_beyond_file(void **state) {
    char *path = test_path(*state, "beyond.safetensors");
    unsigned char bytes[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_file_bytes(path, bytes, sizeof bytes);
    expect_open_error(path, FM_ERR_FORMAT, "header length 100 is beyond the end of the file (12 bytes)");
    free(path);
}

static void test_garbage_json(void **state) {
    expect_header_error(*state, "{\"a\": {\"dtype\": \"F32\", ", 0, "invalid JSON");
    expect_header_error(*state, "this is not json at all!", 0, "invalid JSON");
    expect_header_error(*state, "{} trailing", 0, "unexpected bytes after the JSON");
    expect_header_error(*state, "[1, 2, 3]", 0, "not a JSON object");
    expect_header_error(*state, "\"text\"", 0, "not a JSON object");
    expect_header_error(*state, "{\"a\xff\": 1}", 0, "not valid UTF-8");
    expect_header_error(*state, "{\"\xc0\xaf\": 1}", 0, "not valid UTF-8"); /* overlong '/' */
    char with_nul[] = "{\"a\":{}}  ";
    with_nul[8] = '\0';
    char *path = test_path(*state, "nul.safetensors");
    unsigned char bytes[18] = {10, 0, 0, 0, 0, 0, 0, 0};
    memcpy(bytes + 8, with_nul, 10);
    write_file_bytes(path, bytes, sizeof bytes);
    expect_open_error(path, FM_ERR_FORMAT, "not valid UTF-8");
    free(path);
}

static void test_entry_not_object(void **state) {
    expect_header_error(*state, "{\"h.0.w\": [1, 2]}", 0, "tensor 'h.0.w': entry is not an object");
}

static void test_bad_dtype(void **state) {
    expect_header_error(*state, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'w': missing dtype");
    expect_header_error(*state, "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "dtype is not a string");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'w': unsupported dtype F8_E4M3");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "unsupported dtype f32");
}

static void test_bad_shape(void **state) {
    const char *bad[] = {
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}",
    };
    for (int i = 0; i < 4; i++)
        expect_header_error(*state, bad[i], 4, "tensor 'w': shape must be an array of non-negative integers");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4,
                        "shape is missing or not an array");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                        "shape is missing or not an array");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                        4, "shape has 9 dimensions, at most 8");
}

static void test_shape_overflow(void **state) {
    expect_header_error(*state,
                        "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
                        8, "tensor 'w': shape [4294967296, 4294967296] of F64 overflows");
    expect_header_error(*state,
                        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}",
                        8, "non-negative integers");
}

static void test_bad_data_offsets(void **state) {
    const char *bad[] = {
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"begin\":0}}}",
    };
    for (int i = 0; i < 6; i++)
        expect_header_error(*state, bad[i], 8, "tensor 'w': data_offsets must be two non-negative integers");
    expect_header_error(*state, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
                        "data_offsets [8, 4] end before they begin");
}

static void test_offsets_do_not_match_shape(void **state) {
    expect_header_error(*state,
                        "{\"h.0.ln_1.weight\":{\"dtype\":\"F32\",\"shape\":[48],\"data_offsets\":[0,100]}}",
                        200,
                        "tensor 'h.0.ln_1.weight': data_offsets [0, 100] do not match shape [48] of F32 (192 bytes)");
}

static void test_truncated_file(void **state) {
    char *path = write_small_valid(*state, "cut.safetensors");
    size_t size;
    unsigned char *bytes = read_file_bytes(path, &size);
    assert_non_null(bytes);
    write_file_bytes(path, bytes, size - 5); /* 24 bytes of data become 19 */
    expect_open_error(path, FM_ERR_FORMAT, "tensor 'a': truncated: file has 19 bytes of data, tensor needs up to 24");
    free(bytes);
    free(path);
}

static void test_overlapping_tensors(void **state) {
    expect_header_error(*state,
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                        12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
    /* A tensor inside another, listed first, and a zero-size tensor (which never overlaps). */
    expect_header_error(*state,
                        "{\"in\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12]},"
                        "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[11,11]},"
                        "\"out\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}",
                        16, "tensors 'out' [0, 16] and 'in' [10, 12] overlap");
    /* Same bytes twice. */
    expect_header_error(*state,
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                        4, "overlap");
}

static void test_zero_size_tensor_inside_data_is_fine(void **state) {
    unsigned char data[16] = {0};
    char *path = write_raw(*state,
                           "{\"z\":{\"dtype\":\"U8\",\"shape\":[3,0],\"data_offsets\":[5,5]},"
                           "\"all\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
                           "\"z2\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]}}",
                           data, sizeof data);
    fm_safetensors st;
    assert_int_equal(fm_st_open(&st, path), FM_OK);
    assert_int_equal(st.n_tensors, 3);
    assert_int_equal(fm_st_find(&st, "z")->numel, 0);
    fm_st_close(&st);
    free(path);
}

static void test_duplicate_names(void **state) {
    expect_header_error(*state,
                        "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                        2, "duplicate name 'w' in the header");
    expect_header_error(*state, "{\"__metadata__\":{},\"__metadata__\":{\"a\":\"b\"}}", 0,
                        "duplicate name '__metadata__' in the header");
    expect_header_error(*state, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
                        "duplicate __metadata__ key 'k'");
}

static void test_bad_metadata(void **state) {
    expect_header_error(*state, "{\"__metadata__\":[\"a\"]}", 0, "__metadata__ is not an object");
    expect_header_error(*state, "{\"__metadata__\":{\"step\":12}}", 0,
                        "__metadata__ value of 'step' is not a string");
}

/* ---------------------------------------------------------------- writing and atomicity */

static void test_write_invalid_entries(void **state) {
    char *path = test_path(*state, "bad.safetensors");
    float v[2] = {1, 2};
    fm_st_entry e[2] = {
        {.name = "x", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {2}, .data = v},
        {.name = "x", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {2}, .data = v},
    };
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "duplicate name 'x'");
    e[1].name = "";
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "empty name");
    e[1].name = "__metadata__";
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "cannot be called");
    e[1].name = "y";
    e[1].ndim = FM_ST_MAX_DIMS + 1;
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "9 dimensions");
    e[1].ndim = -1;
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "-1 dimensions");
    e[1].ndim = 1;
    e[1].shape[0] = -3;
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "invalid dimension -3");
    e[1].shape[0] = 2;
    e[1].data = NULL;
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "'y' has no data");
    e[1].data = v;
    e[1].dtype = (fm_dtype)42;
    assert_error_contains(fm_st_write(path, e, 2, NULL, NULL, 0), FM_ERR_ARG, "invalid dtype 42");
    e[1].dtype = FM_DTYPE_F32;
    const char *keys[] = {"k", "k"}, *values[] = {"1", "2"};
    assert_error_contains(fm_st_write(path, e, 2, keys, values, 2), FM_ERR_ARG, "duplicate name 'k'");
    assert_false(file_exists(path));
    assert_int_equal(count_dir_entries_containing(*state, ".tmp."), 0);
    assert_int_equal(fm_st_write(path, e, 2, keys, values, 1), FM_OK);
    free(path);
}

static void test_write_into_missing_directory(void **state) {
    char *missing = test_path(*state, "no/such/dir");
    char *path = test_path(missing, "model.safetensors");
    float v = 1;
    fm_st_entry e = {.name = "x", .dtype = FM_DTYPE_F32, .ndim = 0, .data = &v};
    assert_error_contains(fm_st_write(path, &e, 1, NULL, NULL, 0), FM_ERR_IO, path);
    assert_non_null(strstr(fm_last_error(), "No such file or directory"));
    assert_false(file_exists(path));
    assert_int_equal(count_dir_entries_containing(*state, ""), 2); /* only "." and ".." */
    free(path);
    free(missing);
}

static void test_atomic_abort_keeps_original(void **state) {
    char *path = write_small_valid(*state, "keep.safetensors");
    size_t before_size;
    unsigned char *before = read_file_bytes(path, &before_size);

    fm_atomic_file af;
    assert_int_equal(fm_atomic_open(&af, path), FM_OK);
    assert_int_equal(count_dir_entries_containing(*state, "keep.safetensors.tmp."), 1);
    fm_atomic_write(&af, "half a file", 11);
    fm_atomic_abort(&af);
    fm_atomic_abort(&af); /* twice is harmless */

    size_t after_size;
    unsigned char *after = read_file_bytes(path, &after_size);
    assert_int_equal(after_size, before_size);
    assert_memory_equal(after, before, before_size);
    assert_int_equal(count_dir_entries_containing(*state, ".tmp."), 0);
    free(before);
    free(after);
    free(path);
}

static void test_atomic_failed_write_keeps_original(void **state) {
    char *path = write_small_valid(*state, "keep.safetensors");
    size_t before_size;
    unsigned char *before = read_file_bytes(path, &before_size);

    /* A recorded write failure (as fwrite would record ENOSPC) makes commit refuse. */
    fm_atomic_file af;
    assert_int_equal(fm_atomic_open(&af, path), FM_OK);
    fm_atomic_write(&af, "new", 3);
    af.failed = ENOSPC;
    fm_atomic_write(&af, "more", 4); /* ignored after a failure */
    assert_error_contains(fm_atomic_commit(&af), FM_ERR_IO, "No space left on device");
    assert_non_null(strstr(fm_last_error(), path));
    assert_null(af.fp);
    assert_null(af.tmp_path);

    /* A real write failure: a file size limit makes the writes fail with EFBIG. */
    struct rlimit old_limit, small_limit;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    small_limit = old_limit;
    small_limit.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small_limit), 0);
    size_t n = 100000;
    float *big = calloc(n, sizeof *big);
    fm_st_entry e = {.name = "big", .dtype = FM_DTYPE_F32, .ndim = 1, .shape = {(int64_t)n}, .data = big};
    fm_status status = fm_st_write(path, &e, 1, NULL, NULL, 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
    signal(SIGXFSZ, old_handler);
    free(big);
    assert_int_equal(status, FM_ERR_IO);
    assert_non_null(strstr(fm_last_error(), path));
    assert_non_null(strstr(fm_last_error(), "too large")); /* strerror(EFBIG) */

    size_t after_size;
    unsigned char *after = read_file_bytes(path, &after_size);
    assert_int_equal(after_size, before_size);
    assert_memory_equal(after, before, before_size);
    assert_int_equal(count_dir_entries_containing(*state, ".tmp."), 0);
    free(before);
    free(after);
    free(path);
}

static void test_atomic_commit_mode_and_contents(void **state) {
    char *path = test_path(*state, "plain.txt");
    write_file_bytes(path, "old contents", 12);
    fm_atomic_file af;
    assert_int_equal(fm_atomic_open(&af, path), FM_OK);
    fm_atomic_write(&af, "new ", 4);
    fm_atomic_write(&af, "contents", 8);
    assert_int_equal(fm_atomic_commit(&af), FM_OK);
    size_t size;
    unsigned char *bytes = read_file_bytes(path, &size);
    assert_int_equal(size, 12);
    assert_memory_equal(bytes, "new contents", 12);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);
    assert_int_equal(count_dir_entries_containing(*state, ".tmp."), 0);
    assert_error_contains(fm_atomic_commit(&af), FM_ERR_ARG, "not open"); /* already released */
    free(bytes);
    free(path);
}

static void test_mkdir_and_path_join(void **state) {
    char *sub = test_path(*state, "sub");
    assert_int_equal(fm_mkdir(sub), FM_OK);
    assert_int_equal(fm_mkdir(sub), FM_OK); /* exists already */
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));

    char *file = test_path(*state, "file");
    write_file_bytes(file, "x", 1);
    assert_error_contains(fm_mkdir(file), FM_ERR_IO, "exists and is not a directory");
    assert_non_null(strstr(fm_last_error(), file));
    char *deep = test_path(*state, "a/b");
    assert_error_contains(fm_mkdir(deep), FM_ERR_IO, "No such file");

    char *joined = fm_path_join("dir", "name.json");
    assert_string_equal(joined, "dir/name.json");
    free(joined);
    joined = fm_path_join("dir/", "name.json");
    assert_string_equal(joined, "dir/name.json");
    free(joined);
    free(deep);
    free(file);
    free(sub);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_round_trip_all_dtypes),
        T(test_empty_file_list_and_overwrite),
        T(test_unaligned_tensor),
        T(test_header_padding),
        T(test_padded_header_from_other_writers),
        T(test_f16_conversion),
        T(test_bf16_conversion),
        T(test_read_wrong_kind_of_dtype),
        T(test_missing_file),
        T(test_empty_file),
        T(test_file_shorter_than_length),
        T(test_header_length_zero),
        T(test_header_length_too_large),
        T(test_header_length_beyond_file),
        T(test_garbage_json),
        T(test_entry_not_object),
        T(test_bad_dtype),
        T(test_bad_shape),
        T(test_shape_overflow),
        T(test_bad_data_offsets),
        T(test_offsets_do_not_match_shape),
        T(test_truncated_file),
        T(test_overlapping_tensors),
        T(test_zero_size_tensor_inside_data_is_fine),
        T(test_duplicate_names),
        T(test_bad_metadata),
        T(test_write_invalid_entries),
        T(test_write_into_missing_directory),
        T(test_atomic_abort_keeps_original),
        T(test_atomic_failed_write_keeps_original),
        T(test_atomic_commit_mode_and_contents),
        T(test_mkdir_and_path_join),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
