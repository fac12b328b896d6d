/*
 * alloc.c — the library's allocator entry points with failure injection (see alloc.h).
 *
 * What it is for: a single place where an allocation can be made to fail on purpose, so every
 * out-of-memory path of the library is exercised by tests. Not for: the big aligned buffers'
 * layout (memory.c), which call fm_calloc underneath.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"

static atomic_long counter;      /* allocations since the last fm_alloc_fail_at */
static atomic_long fail_at;      /* 0: off; else the allocation number that fails */
static atomic_int fail_persist;  /* every allocation from fail_at on fails */
static atomic_int fail_reached;  /* the last counted allocation was failed */
static atomic_int env_read;
static _Thread_local unsigned long thread_failures; /* NULLs returned on this thread */

static void read_env(void) {
    if (atomic_exchange(&env_read, 1)) return;
    const char *v = getenv("FM_FAIL_ALLOC");
    if (v && *v) {
        char *end;
        long k = strtol(v, &end, 10);
        if (*end == '\0' && k > 0) atomic_store(&fail_at, k);
        const char *p = getenv("FM_FAIL_ALLOC_PERSIST");
        atomic_store(&fail_persist, p && *p == '1');
    }
}

/* 1 when this allocation must fail. */
static int should_fail(void) {
    read_env();
    long k = atomic_load(&fail_at);
    long n = atomic_fetch_add(&counter, 1) + 1;
    if (k <= 0) return 0;
    int fail = n == k || (atomic_load(&fail_persist) && n > k);
    if (fail) atomic_store(&fail_reached, 1);
    return fail;
}

void fm_alloc_fail_at(long k, int persist) {
    atomic_store(&env_read, 1);
    atomic_store(&counter, 0);
    atomic_store(&fail_reached, 0);
    atomic_store(&fail_persist, persist != 0);
    atomic_store(&fail_at, k > 0 ? k : 0);
}

long fm_alloc_count(void) { return atomic_load(&counter); }
int fm_alloc_failed(void) { return atomic_load(&fail_reached); }
unsigned long fm_alloc_failures(void) { return thread_failures; }

/* p, counting it as a failure when it is NULL. */
static void *counted(void *p) {
    if (!p) thread_failures++;
    return p;
}

void *fm_malloc(size_t size) { return counted(should_fail() ? NULL : malloc(size ? size : 1)); }
void *fm_calloc(size_t count, size_t size) {
    return counted(should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1));
}
void *fm_realloc(void *p, size_t size) { return counted(should_fail() ? NULL : realloc(p, size ? size : 1)); }
void *fm_aligned_alloc(size_t align, size_t size) {
    if (should_fail()) return counted(NULL);
    if (size > SIZE_MAX - align) return counted(NULL);
    size_t rounded = (size + align - 1) / align * align;
    return counted(aligned_alloc(align, rounded ? rounded : align));
}
char *fm_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = fm_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
void fm_free(void *p) { free(p); }

static void *json_malloc(size_t size) { return fm_malloc(size); }

void fm_alloc_install_json_hooks(void) {
    static atomic_int done;
    if (atomic_exchange(&done, 1)) return;
    cJSON_Hooks hooks = {json_malloc, free};
    cJSON_InitHooks(&hooks);
}

/* Before main: every cJSON call of the program (the library's and its users') allocates through
 * fm_malloc from the start, whichever entry point runs first. */
__attribute__((constructor)) static void install_json_hooks_at_start(void) { fm_alloc_install_json_hooks(); }
