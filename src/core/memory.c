/*
 * memory.c — the big buffers: zeroed, aligned to cache lines and huge pages.
 *
 * What it is for: parameters, gradients, optimizer moments, activations and decoding caches,
 * which are large and streamed every step. Their start is aligned (2 MiB for buffers of at
 * least 4 MiB, else 64 bytes), so that a row whose length is a multiple of 16 floats lies in
 * whole cache lines: malloc's 16-byte alignment made every 64-byte store of a product's tile
 * straddle two lines (measured: the tied head of configuration (iii), 2 threads, 188 -> 205
 * GFLOP/s from alignment alone). Those on 2 MiB boundaries are offered to the kernel as
 * transparent huge pages (fewer TLB misses). Memory comes from calloc, so untouched pages stay
 * unmapped (gradients cost nothing to a model that only generates); prefault touches every page
 * now, so that no training step pays for page faults. The memory comes through fm_calloc, so
 * allocation failure injection (core/alloc.h) reaches these buffers too.
 * Not for: small or short-lived allocations (fm_malloc).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/alloc.h"
#include "core/internal.h"

#define HUGE_PAGE ((size_t)2 << 20)
#define LINE 64

void *fm_alloc_big(size_t bytes, int prefault) {
    size_t align = bytes >= 2 * HUGE_PAGE ? HUGE_PAGE : LINE;
    if (bytes > SIZE_MAX - align - sizeof(void *)) return NULL;
    /* room for the aligned start and, just before it, the pointer calloc gave (for free) */
    char *raw = fm_calloc(1, bytes + align + sizeof(void *));
    if (!raw) return NULL;
    uintptr_t start = ((uintptr_t)raw + sizeof(void *) + align - 1) / align * align;
    char *p = (char *)start;
    memcpy(p - sizeof(void *), &raw, sizeof raw);
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE) madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
    if (prefault) memset(p, 0, bytes);
    return p;
}

void fm_free_big(void *p) {
    if (!p) return;
    void *raw;
    memcpy(&raw, (char *)p - sizeof(void *), sizeof raw);
    fm_free(raw);
}
