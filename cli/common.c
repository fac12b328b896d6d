/*
 * common.c — helpers the fm subcommands share: reading inputs, loading a model directory with
 * its tokenizer, parsing token ids, a clock. They die with a message naming the problem.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "core/alloc.h" /* the library's allocator: FM_FAIL_ALLOC reaches the commands too */

void cli_out_of_memory(const char *cmd) {
    fprintf(stderr, "fm%s%s: out of memory\n", cmd && *cmd ? " " : "", cmd ? cmd : "");
    exit(1);
}

void *cli_alloc(const char *cmd, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) cli_out_of_memory(cmd);
    size_t bytes = count * size;
    void *p = fm_malloc(bytes ? bytes : 1);
    if (!p) cli_out_of_memory(cmd);
    return p;
}

void *cli_realloc(const char *cmd, void *p, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) cli_out_of_memory(cmd);
    size_t bytes = count * size;
    void *grown = fm_realloc(p, bytes ? bytes : 1);
    if (!grown) cli_out_of_memory(cmd);
    return grown;
}

char *cli_strdup(const char *cmd, const char *s) {
    char *d = fm_strdup(s);
    if (!d) cli_out_of_memory(cmd);
    return d;
}

void cli_print_json_number(const char *fmt, double v) {
    if (isfinite(v)) printf(fmt, v);
    else fputs("null", stdout);
}

cJSON *cli_parse_json(const char *cmd, const char *path, const char *text, size_t len) {
    for (size_t i = 0; i < len; i++) { /* in valid JSON a backslash begins an escape of a string */
        int nul = text[i] == '\0' ||
                  (text[i] == '\\' && i + 5 < len && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0);
        if (nul) {
            fprintf(stderr, "fm %s: %s: a NUL character (%s at byte %zu); a JSON text holds none\n", cmd, path,
                    text[i] ? "\\u0000" : "a NUL byte", i);
            exit(1);
        }
        if (text[i] == '\\' && i + 1 < len && text[i + 1] != '\0') i++; /* the escaped character */
    }
    const char *end = NULL;
    unsigned long failures = fm_alloc_failures();
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    if (!o && fm_alloc_failures() != failures) cli_out_of_memory(cmd); /* the JSON may be fine */
    if (!o) {
        fprintf(stderr, "fm %s: %s: invalid JSON near byte %zu\n", cmd, path, at);
        exit(1);
    }
    while (at < len && text[at] && strchr(" \t\r\n", text[at])) at++;
    if (at < len) {
        fprintf(stderr, "fm %s: %s: unexpected content after the JSON (byte %zu)\n", cmd, path, at);
        exit(1);
    }
    return o;
}

char *cli_read_file(const char *cmd, const char *path, size_t *len) {
    int use_stdin = !path || strcmp(path, "-") == 0;
    const char *name = use_stdin ? "standard input" : path;
    struct stat sb;
    if (!use_stdin && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "fm %s: %s: is a directory, not a file\n", cmd, path);
        exit(1);
    }
    FILE *fp = use_stdin ? stdin : fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "fm %s: %s: cannot open: %s\n", cmd, path, strerror(errno));
        exit(1);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = fm_malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n + 1 >= cap) {
            char *grown = cap > SIZE_MAX / 2 ? NULL : fm_realloc(buf, cap *= 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    if (!buf || ferror(fp)) {
        fprintf(stderr, "fm %s: %s: %s\n", cmd, name, buf ? "read error" : "out of memory");
        exit(1);
    }
    if (!use_stdin) fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *cli_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = cli_alloc(cli_command_name ? cli_command_name : "", n, 1);
    snprintf(path, n, "%s/%s", dir, name);
    return path;
}

/* A streamed corpus (data_stream.c): for NAME "train.bin", DIR/train-00000.bin, -00001.bin, ...
 * as one shard; NULL when DIR holds no DIR/STEM-00000.bin. */
static fm_shard *open_numbered(const char *cmd, const char *dir, const char *name) {
    const char *dot = strrchr(name, '.');
    size_t stem = dot ? (size_t)(dot - name) : strlen(name);
    char **paths = NULL;
    int n = 0;
    for (;; n++) {
        size_t len = strlen(dir) + stem + 32;
        char *p = cli_alloc(cmd, len, 1);
        snprintf(p, len, "%s/%.*s-%05d.bin", dir, (int)stem, name, n);
        struct stat sb;
        if (stat(p, &sb) != 0) {
            free(p);
            break;
        }
        paths = cli_realloc(cmd, paths, (size_t)n + 1, sizeof *paths);
        paths[n] = p;
    }
    if (n == 0) return NULL;
    fm_shard *s;
    fm_status st = fm_shard_open_parts(&s, (const char *const *)paths, n);
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    if (st) cli_fail(cmd, st);
    return s;
}

fm_shard *cli_open_shard(const char *cmd, const char *dir, const char *name, int vocab_size) {
    char *path = cli_path(dir, name);
    fm_shard *s;
    struct stat sb;
    if (stat(path, &sb) != 0 && (s = open_numbered(cmd, dir, name))) { /* a streamed corpus */
        path = cli_realloc(cmd, path, strlen(path) + 16, 1);
        strcpy(strrchr(path, '.'), "-*.bin"); /* how messages name it */
    } else {
        fm_status st = fm_shard_open(&s, path);
        if (st) cli_fail(cmd, st);
    }
    if (vocab_size > 0 && fm_shard_vocab_size(s) != vocab_size) {
        fprintf(stderr, "fm %s: %s: tokens of a %d-token vocabulary, but the model's vocab_size is %d\n", cmd,
                path, fm_shard_vocab_size(s), vocab_size);
        exit(1);
    }
    free(path);
    return s;
}

void cli_load_model(const char *cmd, const char *dir, fm_model **model, fm_tokenizer **tok, int require_tokenizer) {
    fm_status st = fm_model_load(model, dir);
    if (st) cli_fail(cmd, st);
    if (!tok) return;
    *tok = NULL;
    char *path = cli_path(dir, "tokenizer.json");
    struct stat sb;
    if (stat(path, &sb) != 0 && !require_tokenizer) {
        free(path);
        return;
    }
    if ((st = fm_tokenizer_load(tok, path))) cli_fail(cmd, st);
    int tv = fm_tokenizer_vocab_size(*tok), mv = fm_model_config(*model)->vocab_size;
    if (tv != mv) {
        fprintf(stderr, "fm %s: %s: the tokenizer has %d tokens but the model's vocab_size is %d; they "
                "do not belong together\n", cmd, path, tv, mv);
        exit(1);
    }
    free(path);
}

int *cli_parse_ids(const char *cmd, const char *text, int vocab_size, size_t *n) {
    size_t cap = 64, count = 0;
    int *ids = cli_alloc(cmd, cap, sizeof(int));
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= vocab_size) {
            fprintf(stderr, "fm %s: token id '%.*s' is not in [0, %d)\n", cmd, (int)strcspn(p, " ,\n"), p,
                    vocab_size);
            exit(2);
        }
        if (count == cap) ids = cli_realloc(cmd, ids, cap *= 2, sizeof(int));
        ids[count++] = (int)v;
        p = end;
    }
    *n = count;
    return ids;
}

void cli_mkdir_p(const char *cmd, const char *dir) {
    char *path = cli_strdup(cmd, dir);
    for (char *p = path + 1; ; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        struct stat sb;
        if (mkdir(path, 0755) != 0 && !(errno == EEXIST && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) {
            fprintf(stderr, "fm %s: %s: cannot create the directory: %s\n", cmd, path,
                    errno == EEXIST ? "a file of that name exists" : strerror(errno));
            exit(1);
        }
        *p = saved;
        if (!saved) break;
    }
    free(path);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The directory a path names, resolved (symbolic links, "..", "./"); NULL when it does not exist. */
static char *resolved(const char *path) { return realpath(path, NULL); }

void cli_check_out_dir(const char *cmd, const char *out, const char *input, int force) {
    char *out_real = resolved(out), *in_real = input ? resolved(input) : NULL;
    int same = out_real && in_real && strcmp(out_real, in_real) == 0;
    free(out_real);
    free(in_real);
    if (same) cli_usage_error(cmd, "--out %s is the input directory %s; write to another directory", out, input);
    if (force) return;
    static const char *const model_files[] = {"model.safetensors", "config.json", "training_state.safetensors",
                                              "tokenizer.json", "run.json", "metrics.jsonl",
                                              "adapter_config.json", "adapter_model.safetensors"};
    for (size_t i = 0; i < sizeof model_files / sizeof *model_files; i++) {
        char *path = cli_path(out, model_files[i]);
        int exists = access(path, F_OK) == 0;
        free(path);
        if (exists) {
            fprintf(stderr, "fm %s: %s already holds a model (%s); choose another --out, or add --force to "
                    "replace it\n", cmd, out, model_files[i]);
            exit(1);
        }
    }
}

int cli_lock_dir(const char *cmd, const char *dir) {
    char holder[64];
    snprintf(holder, sizeof holder, "fm %s", cmd);
    int fd;
    fm_status st = fm_dir_lock(dir, holder, &fd);
    if (st) cli_fail(cmd, st);
    return fd;
}

fm_adapter *cli_use_adapter(const char *cmd, fm_model *model, const char *dir) {
    if (!dir) return NULL;
    fm_adapter *a = NULL;
    fm_status st = fm_adapter_load(&a, dir, model);
    if (st) cli_fail(cmd, st);
    fm_model_use_adapter(model, a);
    return a;
}

/* Prints bytes as a JSON string: each invalid UTF-8 sequence becomes U+FFFD; quotes, backslashes
 * and control characters (NUL included: a prompt is a byte string) are escaped. */
void cli_print_json_string(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    putchar('"');
    while (p < end) {
        unsigned c = p[0];
        int need = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        int ok = need >= 0 && end - p > need;
        unsigned cp = need == 0 ? c : need == 1 ? c & 0x1F : need == 2 ? c & 0x0F : c & 0x07;
        for (int i = 1; ok && i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80) ok = 0;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if (ok && need > 0) { /* overlong forms, surrogates and values past U+10FFFF are invalid */
            unsigned least = need == 1 ? 0x80 : need == 2 ? 0x800 : 0x10000;
            if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = 0;
        }
        if (!ok) {
            fputs("\xEF\xBF\xBD", stdout);
            p++;
        } else if (c == '"' || c == '\\') {
            printf("\\%c", c);
            p++;
        } else if (c < 0x20) {
            const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (named) fputs(named, stdout);
            else printf("\\u%04x", c);
            p++;
        } else {
            fwrite(p, 1, need + 1, stdout);
            p += need + 1;
        }
    }
    putchar('"');
}
