/*
 * image_tokenizer_train.c — learning an image tokenizer's patch codebook by k-means.
 *
 * What it is for: fm tokenizer train --images. A sample of the images is cut into P x P patches
 * (points of P*P pixel values); k-means++ picks K starting centroids, Lloyd iterations refine
 * them; then the image tokens (<|image|>, <|/image|>, K codes) are added to a text tokenizer.
 * Deterministic for a given seed whatever the thread count: the threads only find each point's
 * nearest centroid (a per-point answer); every sum and every random draw is made in one fixed
 * order on one thread. It draws from a splitmix64 stream of its own, so the tokenizer's sources
 * stand alone (the fuzz target builds them without the rest of the library).
 * Not for: encoding or the file (image_tokenizer.c).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/image_tokenizer_internal.h"

void fm_image_tokenizer_config_default(fm_image_tokenizer_config *cfg) {
    cfg->patch = 4;
    cfg->codebook = 512;
    cfg->iters = 20;
    cfg->sample = 10000;
    cfg->seed = 1;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }

static float squared_distance(const float *a, const float *b, int D) {
    float d = 0;
    for (int j = 0; j < D; j++) {
        float e = a[j] - b[j];
        d += e * e;
    }
    return d;
}

/* k-means++ (Arthur and Vassilvitskii 2007): the first centre uniformly, each next one with
 * probability proportional to the squared distance to the nearest centre so far. When every
 * point already sits on a centre (fewer distinct patches than K), the rest copy random points.
 * points (N, D), centres (K, D), dist (N) scratch. */
static void init_centres(const float *points, size_t N, int D, int K, float *centres, float *dist, uint64_t *rng) {
    size_t first = (size_t)(uniform01(rng) * N);
    memcpy(centres, points + first * D, sizeof(float) * D);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) dist[i] = squared_distance(points + i * D, centres, D);
    for (int k = 1; k < K; k++) {
        double total = 0;
        for (size_t i = 0; i < N; i++) total += dist[i];
        size_t pick = N - 1;
        if (total > 0) {
            double r = uniform01(rng) * total, acc = 0;
            for (size_t i = 0; i < N; i++) {
                acc += dist[i];
                if (acc > r && dist[i] > 0) {
                    pick = i;
                    break;
                }
            }
        } else {
            pick = (size_t)(uniform01(rng) * N);
        }
        float *c = centres + (size_t)k * D;
        memcpy(c, points + pick * D, sizeof(float) * D);
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < N; i++) {
            float d = squared_distance(points + i * D, c, D);
            if (d < dist[i]) dist[i] = d;
        }
    }
}

/* Lloyd's iterations: assign each point to its nearest centre, move each centre to its points'
 * mean (sums in double, in point order); an empty centre takes the point farthest from its own
 * centre. Stops early when no assignment changes. Returns the iterations run. */
static int lloyd(const float *points, size_t N, int D, int K, float *centres, int iters, int *assign, float *dist,
                 double *sums, size_t *counts) {
    for (size_t i = 0; i < N; i++) assign[i] = -1;
    int it = 0;
    for (; it < iters; it++) {
        size_t changed = 0;
#pragma omp parallel for schedule(static) reduction(+ : changed)
        for (size_t i = 0; i < N; i++) {
            int k = fm_image_tok_nearest(centres, K, D, points + i * D, &dist[i]);
            if (k != assign[i]) changed++, assign[i] = k;
        }
        if (changed == 0) break;
        memset(sums, 0, sizeof(double) * K * D);
        memset(counts, 0, sizeof(size_t) * K);
        for (size_t i = 0; i < N; i++) {
            double *s = sums + (size_t)assign[i] * D;
            const float *x = points + i * D;
            for (int j = 0; j < D; j++) s[j] += x[j];
            counts[assign[i]]++;
        }
        for (int k = 0; k < K; k++) {
            float *c = centres + (size_t)k * D;
            if (counts[k]) {
                for (int j = 0; j < D; j++) c[j] = (float)(sums[(size_t)k * D + j] / counts[k]);
                continue;
            }
            size_t far = 0; /* the worst-served point; it is then served perfectly */
            for (size_t i = 1; i < N; i++)
                if (dist[i] > dist[far]) far = i;
            memcpy(c, points + far * D, sizeof(float) * D);
            dist[far] = 0;
        }
    }
    return it;
}

fm_status fm_image_tokenizer_train(fm_image_tokenizer **out, const fm_idx *images, const fm_image_tokenizer_config *cfg,
                                   fm_tokenizer *tok, fm_image_tokenizer_report *report) {
    if (!out || !images || !cfg || !tok) return fm_fail(FM_ERR_ARG, "fm_image_tokenizer_train: NULL argument");
    *out = NULL;
    if (images->rows <= 0 || images->cols <= 0)
        return fm_fail(FM_ERR_ARG, "image tokenizer: a label file, not images, was given");
    if (images->count < 1) return fm_fail(FM_ERR_ARG, "image tokenizer: no images to learn from");
    if (cfg->iters < 1 || cfg->sample < 1) return fm_fail(FM_ERR_ARG, "image tokenizer: iterations and sample must be >= 1");
    fm_image_tokenizer *t;
    fm_status st = fm_image_tok_new(&t, images->rows, images->cols, cfg->patch, cfg->codebook);
    if (st) return st;
    char name[48];
    snprintf(name, sizeof name, FM_IMAGE_CODE_FORMAT, 0);
    if (fm_tokenizer_special_id(tok, name) >= 0) {
        fm_image_tokenizer_free(t);
        return fm_fail(FM_ERR_ARG, "image tokenizer: the text tokenizer already holds image codes (%s)", name);
    }
    int n_img = images->count < cfg->sample ? images->count : cfg->sample;
    size_t N = (size_t)n_img * t->n_patches;
    if (N < (size_t)t->K) {
        fm_image_tokenizer_free(t);
        return fm_fail(FM_ERR_ARG, "image tokenizer: %zu patches from %d images are fewer than the %d codes", N, n_img,
                       t->K);
    }
    int D = t->patch * t->patch, K = t->K;
    size_t pix = (size_t)images->rows * images->cols;
    int *order = fm_malloc(sizeof(int) * images->count);
    float *points = fm_malloc(sizeof(float) * N * D), *dist = fm_malloc(sizeof(float) * N);
    int *assign = fm_malloc(sizeof(int) * N);
    double *sums = fm_malloc(sizeof(double) * K * D);
    size_t *counts = fm_malloc(sizeof(size_t) * K);
    if (!order || !points || !dist || !assign || !sums || !counts) {
        st = fm_fail(FM_ERR_NOMEM, "image tokenizer: out of memory for %zu patches", N);
        goto done;
    }
    /* the sample: the first n_img of a seeded shuffle (all images, in order, when n_img = count) */
    uint64_t rng = cfg->seed;
    for (int i = 0; i < images->count; i++) order[i] = i;
    if (n_img < images->count)
        for (int i = 0; i < n_img; i++) {
            int j = i + (int)(splitmix64(&rng) % (uint64_t)(images->count - i)), tmp = order[i];
            order[i] = order[j], order[j] = tmp;
        }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n_img; i++)
        for (int p = 0; p < t->n_patches; p++)
            fm_image_tok_get_patch(t, images->data + (size_t)order[i] * pix, p, points + ((size_t)i * t->n_patches + p) * D);
    init_centres(points, N, D, K, t->codebook, dist, &rng);
    int ran = lloyd(points, N, D, K, t->codebook, cfg->iters, assign, dist, sums, counts);

    /* the image tokens join the text tokenizer */
    if (!(st = fm_tokenizer_add_special(tok, "<|image|>", &t->image_id)))
        st = fm_tokenizer_add_special(tok, "<|/image|>", &t->end_id);
    for (int k = 0; k < K && !st; k++) {
        int id;
        snprintf(name, sizeof name, FM_IMAGE_CODE_FORMAT, k);
        st = fm_tokenizer_add_special(tok, name, &id);
        if (!st && k == 0) t->code_base = id;
        if (!st && id != t->code_base + k)
            st = fm_fail(FM_ERR_ARG, "image tokenizer: %s took id %d, not %d", name, id, t->code_base + k);
    }
    if (st) goto done;
    t->vocab_size = fm_tokenizer_vocab_size(tok);
    t->tokenizer_fingerprint = fm_tokenizer_fingerprint(tok);

    if (report) {
        memset(report, 0, sizeof *report);
        report->sample_images = n_img;
        report->patches = N;
        report->iterations = ran;
        /* error on the sample, and on up to 2000 images outside it (NAN when there are none) */
        uint8_t *buf = fm_malloc(pix * (size_t)(n_img > 2000 ? n_img : 2000));
        if (!buf) {
            st = fm_fail(FM_ERR_NOMEM, "image tokenizer: out of memory measuring the error");
            goto done;
        }
        for (int i = 0; i < n_img; i++) memcpy(buf + (size_t)i * pix, images->data + (size_t)order[i] * pix, pix);
        st = fm_image_tokenizer_error(t, buf, n_img, &report->sample_mse);
        int rest = images->count - n_img < 2000 ? images->count - n_img : 2000;
        report->other_images = rest;
        report->other_mse = NAN;
        for (int i = 0; i < rest; i++) memcpy(buf + (size_t)i * pix, images->data + (size_t)order[n_img + i] * pix, pix);
        if (!st && rest > 0) st = fm_image_tokenizer_error(t, buf, rest, &report->other_mse);
        fm_free(buf);
    }
done:
    fm_free(order), fm_free(points), fm_free(dist), fm_free(assign), fm_free(sums), fm_free(counts);
    if (st) {
        fm_image_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}
