/*
 * text.c — a growing text buffer for the library's writers (safetensors headers, tokenizer.json,
 * SVG pictures). A failed allocation sets `failed`; later appends do nothing, and the writer
 * checks `failed` once at the end instead of after every append.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"

void fm_text_append(fm_text *t, const void *data, size_t n) {
    if (t->failed) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *grown = fm_realloc(t->data, cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, data, n);
    t->len += n;
    t->data[t->len] = '\0';
}

void fm_text_puts(fm_text *t, const char *s) { fm_text_append(t, s, strlen(s)); }

void fm_text_printf(fm_text *t, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        fm_text_append(t, small, (size_t)n);
        return;
    }
    char *big = fm_malloc((size_t)n + 1);
    if (!big) {
        t->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    fm_text_append(t, big, (size_t)n);
    fm_free(big);
}
