/*
 * replay.c — runs fuzz inputs through a libFuzzer entry point without libFuzzer, so that
 * `make test` can replay a committed corpus under AddressSanitizer + UndefinedBehaviorSanitizer
 * with gcc. Usage: replay FILE_OR_DIR...  (every file of a folder, in name order); with
 * FM_FUZZ_VERBOSE set, each file's name (and, from the readers' targets, what they said of it).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 0;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n, fp);
        if (got == 0) break;
        n += got;
    }
    fclose(fp);
    /* an exact-size copy, so that reading past the input is caught */
    uint8_t *input = malloc(n ? n : 1);
    memcpy(input, buf, n);
    free(buf);
    if (getenv("FM_FUZZ_VERBOSE")) fprintf(stderr, "%s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(input, n);
    free(input);
    return 1;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: replay FILE_OR_DIR...\n");
        return 2;
    }
    int count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            count += run_file(argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) return 1;
        char **names = NULL;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            names = realloc(names, sizeof(char *) * (n + 1));
            size_t len = strlen(argv[i]) + strlen(e->d_name) + 2;
            names[n] = malloc(len);
            snprintf(names[n++], len, "%s/%s", argv[i], e->d_name);
        }
        closedir(d);
        qsort(names, n, sizeof(char *), by_name);
        for (int k = 0; k < n; k++) {
            count += run_file(names[k]);
            free(names[k]);
        }
        free(names);
    }
    printf("fuzz replay: %d inputs, no crash, no sanitizer report\n", count);
    return count > 0 ? 0 : 1;
}
