/*
 * rng.c — the library's random numbers: xoshiro256** seeded through splitmix64.
 *
 * What it is for: weight initialisation and a trainer's sampling, reproducible from a seed and
 * resumable from the saved state (fm_rng is plain data). Not a cryptographic generator.
 */
#include <math.h>

#include "fm.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fm_rng_seed(fm_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fm_rng_u64(fm_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float fm_rng_uniform(fm_rng *rng) {
    return (float)(fm_rng_u64(rng) >> 40) * (1.0f / 16777216.0f); /* 24 random bits */
}

float fm_rng_normal(fm_rng *rng) {
    /* Box-Muller on two uniforms in (0, 1]; one draw per call keeps the state simple. */
    double u1 = ((fm_rng_u64(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (fm_rng_u64(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
