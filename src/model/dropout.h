/*
 * dropout.h — dropout masks that need no memory: element (n, i)'s fate is a hash of
 * (seed, site, n * width + i), so a backward recomputes the forward's mask instead of keeping it.
 * Sites name where in the model a mask applies (a LoRA product's input, a block's residual
 * branch, the embedding); the trainer draws the seed per micro-batch from its own stream.
 */
#ifndef FM_MODEL_DROPOUT_H
#define FM_MODEL_DROPOUT_H

#include <stddef.h>
#include <stdint.h>

/* Sites: LoRA product (l, k) is l * 4 + k; these sit above any of them. */
#define FM_DROP_SITE_EMBEDDING 0x7fff0000
#define FM_DROP_SITE_RESIDUAL(l, j) (0x40000000 + 2 * (l) + (j)) /* j 0: attention, 1: MLP */

/* out (N, width) = in with each element kept with probability 1 - p and scaled by 1 / (1 - p),
 * or zeroed; out may be in. The same (seed, site) gives the same mask. */
void fm_dropout_apply(float *out, const float *in, size_t N, size_t width, float p, uint64_t seed, int site);

#endif /* FM_MODEL_DROPOUT_H */
