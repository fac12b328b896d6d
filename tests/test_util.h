/*
 * test_util.h — small helpers shared by the cmocka test programs in tests/.
 *
 * What it is for: temporary directories, whole-file reads and writes, and an assertion that a
 * libfm call failed with a given status and a message containing a given phrase.
 * What it is not for: anything the library itself uses; all helpers are static inline and abort
 * the current test (cmocka fail_msg) on unexpected trouble.
 */
#ifndef FM_TEST_UTIL_H
#define FM_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm.h"

/* A fresh directory under /tmp (malloc'd path); remove it with remove_dir_recursive. */
static inline char *make_temp_dir(void) {
    char *dir = strdup("/tmp/fm_test_XXXXXX");
    if (!dir || !mkdtemp(dir)) {
        fail_msg("cannot create a temporary directory");
        return NULL;
    }
    return dir;
}

/* Removes path and, if it is a directory, everything below it (symbolic links not followed). */
static inline void remove_dir_recursive(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (!S_ISDIR(sb.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            size_t n = strlen(path) + strlen(e->d_name) + 2;
            char *child = malloc(n);
            if (!child) break;
            snprintf(child, n, "%s/%s", path, e->d_name);
            remove_dir_recursive(child);
            free(child);
        }
        closedir(d);
    }
    rmdir(path);
}

/* dir + "/" + name, malloc'd. */
static inline char *test_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) {
        fail_msg("out of memory");
        return NULL; /* fail_msg does not return; this tells the compiler */
    }
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Writes size bytes to path, replacing it; fails the test on error. */
static inline void write_file_bytes(const char *path, const void *data, size_t size) {
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        fail_msg("cannot create %s", path);
        return;
    }
    if (size > 0 && fwrite(data, 1, size, fp) != size) fail_msg("cannot write %s", path);
    if (fclose(fp) != 0) fail_msg("cannot close %s", path);
}

/* The whole file, malloc'd (with a terminating NUL not counted in *size); NULL if unreadable. */
static inline unsigned char *read_file_bytes(const char *path, size_t *size) {
    if (size) *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    size_t cap = 4096, len = 0;
    unsigned char *data = malloc(cap + 1);
    while (data) {
        len += fread(data + len, 1, cap - len, fp);
        if (len < cap) break;
        cap *= 2;
        unsigned char *grown = realloc(data, cap + 1);
        if (!grown) free(data);
        data = grown;
    }
    fclose(fp);
    if (!data) {
        fail_msg("out of memory reading %s", path);
        return NULL;
    }
    data[len] = '\0';
    if (size) *size = len;
    return data;
}

static inline int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* How many entries of dir have a name containing substring (e.g. ".tmp." leftovers). */
static inline int count_dir_entries_containing(const char *dir, const char *substring) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, substring)) count++;
    closedir(d);
    return count;
}

/* Asserts that status_expr returns expected_status and fm_last_error() contains substring. */
#define assert_error_contains(status_expr, expected_status, substring)                            \
    do {                                                                                          \
        fm_status test_status_ = (status_expr);                                                   \
        fm_status test_expected_ = (expected_status);                                             \
        if (test_status_ != test_expected_)                                                       \
            fail_msg("%s: expected %s, got %s (\"%s\")", #status_expr,                            \
                     fm_status_name(test_expected_), fm_status_name(test_status_),                \
                     fm_last_error());                                                            \
        if (!strstr(fm_last_error(), (substring)))                                                \
            fail_msg("%s: error \"%s\" does not contain \"%s\"", #status_expr, fm_last_error(),   \
                     (substring));                                                                \
    } while (0)

#endif /* FM_TEST_UTIL_H */
