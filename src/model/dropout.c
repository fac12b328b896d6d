/*
 * dropout.c — hashed dropout masks (dropout.h): splitmix64 of the seed, the site and the
 * element's index decides each element, in parallel and in no particular order, so the mask does
 * not depend on the thread count.
 */
#include "model/dropout.h"

/* splitmix64: a well-mixed 64-bit hash of a counter. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fm_dropout_apply(float *out, const float *in, size_t N, size_t width, float p, uint64_t seed, int site) {
    uint64_t base = mix64(seed ^ mix64((uint64_t)(uint32_t)site + 1));
    double t = (double)p * 4294967296.0;
    uint32_t threshold = (uint32_t)(t > 4294967295.0 ? 4294967295.0 : t);
    float keep_scale = 1.0f / (1.0f - p);
    size_t n = N * width;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)(mix64(base + i) >> 32);
        out[i] = u >= threshold ? in[i] * keep_scale : 0.0f;
    }
}
