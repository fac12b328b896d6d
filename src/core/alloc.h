/*
 * alloc.h — every heap allocation of libfm goes through these, so that tests can make the k-th
 * one fail (sqlite's way of testing out-of-memory paths) and check that each failure reaches
 * the caller as FM_ERR_NOMEM with nothing crashed or leaked.
 *
 * fm_malloc, fm_calloc, fm_realloc, fm_aligned_alloc and fm_strdup behave as the C library's and
 * are released with fm_free (plain free() works too). cJSON's allocations come through them as
 * well (fm_alloc_install_json_hooks, run at program start).
 *
 * Failure injection: fm_alloc_fail_at(k) makes the k-th allocation from now fail (1-based;
 * 0 disables); with persist, every allocation from the k-th on fails. The environment variable
 * FM_FAIL_ALLOC=k (read once, at the first allocation) does the same for whole programs.
 * fm_alloc_count() is the number of allocations counted since the last fm_alloc_fail_at call.
 * Counting is global (all threads), as the injection tests run the library from one thread.
 */
#ifndef FM_ALLOC_H
#define FM_ALLOC_H

#include <stddef.h>

void *fm_malloc(size_t size);
void *fm_calloc(size_t count, size_t size);
void *fm_realloc(void *p, size_t size);
void *fm_aligned_alloc(size_t align, size_t size); /* size rounded up to a multiple of align */
char *fm_strdup(const char *s);
void fm_free(void *p);

void fm_alloc_fail_at(long k, int persist);
long fm_alloc_count(void);
/* 1 when the last counted allocation was made to fail (the injection was reached). */
int fm_alloc_failed(void);
/* Allocations through these entry points that returned NULL on the calling thread so far
 * (injected or real). A call that hides why it failed (cJSON_Parse returns NULL both for bad
 * JSON and for no memory) is told apart by comparing the count before and after it. */
unsigned long fm_alloc_failures(void);

/* Routes cJSON's allocations through fm_malloc (its frees stay free(), which fm_free is), so that
 * cJSON_Print's results may be freed with fm_free, cJSON_free or free. Done once, at program
 * start (a constructor in alloc.c); calling it again is harmless. */
void fm_alloc_install_json_hooks(void);

#endif /* FM_ALLOC_H */
