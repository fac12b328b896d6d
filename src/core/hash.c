/*
 * hash.c — a fast 64-bit checksum for binding files together (not cryptographic).
 *
 * What it is for: a training state records the checksum of the weights it was saved with, so a
 * state paired with other weights (a torn or mixed checkpoint) is recognised on load. FNV-1a's
 * xor-multiply step taken over 8-byte words (bytes for the tail), a few GB/s.
 */
#include <string.h>

#include "core/internal.h"

uint64_t fm_hash64_update(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
