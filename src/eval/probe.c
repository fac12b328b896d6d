/*
 * probe.c — the linear probe: which layer and L2 strength, chosen on training labels only, and
 * the test accuracy of a logistic regression on frozen features (fm.h, "linear probes").
 *
 * What it is for: given features of training and test rows (several candidate layers each),
 * draw a few labels per class, choose (layer, strength) by stratified cross-validation inside
 * those labels or on a held-out part of all training labels, refit on the labels, score the test
 * rows. What it is not for: computing the features (fm_session_pooled_states, the fm probe
 * command) or the regression itself (logreg.c).
 *
 * Every choice is deterministic: the folds and the held-out part come from permutations seeded by
 * cfg->seed; each strength path runs from the strongest to the weakest strength, each fit
 * starting from the previous one's solution.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "eval/logreg.h"

void fm_probe_config_default(fm_probe_config *cfg) {
    *cfg = (fm_probe_config){.folds = 5, .val_every = 10, .layer = -1, .seed = 0, .max_iter = 0};
}

int fm_probe_grid(const double **values) {
    *values = fm_logreg_grid;
    return FM_LOGREG_GRID_SIZE;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Fisher-Yates shuffle of v (n) from rng. */
static void shuffle(int *v, int n, fm_rng *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(fm_rng_u64(rng) % (uint64_t)(i + 1));
        int t = v[i];
        v[i] = v[j], v[j] = t;
    }
}

static uint64_t mix64(uint64_t x) { /* splitmix64's finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t fm_probe_draw_seed(uint64_t seed, int per_class, int draw) {
    return mix64(seed ^ mix64((uint64_t)per_class * 1000003ULL + (uint64_t)draw));
}

fm_status fm_probe_draw(const int *labels, int n, int k, int per_class, uint64_t seed, int *rows) {
    if (k < 2 || per_class < 1) return fm_fail(FM_ERR_ARG, "probe draw of %d per class over %d classes", per_class, k);
    int *members = fm_malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!members) return fm_fail(FM_ERR_NOMEM, "out of memory to draw from %d rows", n);
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    for (int c = 0; c < k; c++) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (labels[i] < 0 || labels[i] >= k) {
                fm_free(members);
                return fm_fail(FM_ERR_ARG, "probe draw: label %d of row %d is outside [0, %d)", labels[i], i, k);
            }
            if (labels[i] == c) members[m++] = i;
        }
        if (m < per_class) {
            fm_free(members);
            return fm_fail(FM_ERR_ARG, "class %d has %d training rows, fewer than the %d per class to draw", c, m,
                           per_class);
        }
        shuffle(members, m, &rng);
        memcpy(rows + (size_t)c * per_class, members, sizeof(int) * (size_t)per_class);
    }
    qsort(rows, (size_t)k * per_class, sizeof(int), cmp_int);
    fm_free(members);
    return FM_OK;
}

/* Layer `layer` of the given rows of f (rows NULL: rows 0 .. n - 1) into a new (n, d) matrix. */
static float *gather(const fm_probe_features *f, int layer, const int *rows, int n) {
    size_t d = (size_t)f->d;
    float *X = fm_alloc_big(sizeof(float) * (size_t)(n > 0 ? n : 1) * d, 0);
    if (!X) return NULL;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        size_t r = rows ? (size_t)rows[i] : (size_t)i;
        memcpy(X + (size_t)i * d, f->x + (r * (size_t)f->n_layers + (size_t)layer) * d, sizeof(float) * d);
    }
    return X;
}

/* Assigns each of the n labeled rows a part in [0, parts): per class, a seeded permutation of its
 * rows, position p going to part (start + p) % parts, where start continues from the previous
 * class (stratified, and the parts' sizes differ by at most one even with one row per class). */
static fm_status assign_parts(const int *labels, int n, int k, int parts, uint64_t seed, int *part) {
    int *members = fm_malloc(sizeof(int) * (size_t)n);
    if (!members) return fm_fail(FM_ERR_NOMEM, "out of memory for the probe's folds");
    fm_rng rng;
    fm_rng_seed(&rng, seed ^ 0x70726f6265ULL);
    int start = 0;
    for (int c = 0; c < k; c++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (labels[i] == c) members[m++] = i;
        shuffle(members, m, &rng);
        for (int p = 0; p < m; p++) part[members[p]] = (start + p) % parts;
        start = (start + m) % parts;
    }
    fm_free(members);
    return FM_OK;
}

/* The totals of one (layer, strength) candidate over the validation parts. */
typedef struct {
    double correct, log_loss;
    int count;
} tally;

/* Fits the strength path (strongest first, warm-started) on layer `layer` of the labeled rows
 * whose part is not `held`, and adds each strength's validation results on the rows whose part
 * is `held` to tallies (FM_LOGREG_GRID_SIZE). */
static fm_status score_path(const fm_probe_features *train, const int *rows, const int *y, const int *part, int n,
                            int held, int layer, int k, int max_iter, tally *tallies) {
    int n_fit = 0, n_val = 0;
    for (int i = 0; i < n; i++) *(part[i] == held ? &n_val : &n_fit) += 1;
    if (n_fit == 0 || n_val == 0) return FM_OK; /* an empty part adds nothing */
    int *fit_rows = fm_malloc(sizeof(int) * (size_t)n), *fit_y = fm_malloc(sizeof(int) * (size_t)n);
    fm_status st = fit_rows && fit_y ? FM_OK : fm_fail(FM_ERR_NOMEM, "out of memory for the probe's folds");
    int *val_rows = fit_rows ? fit_rows + n_fit : NULL, *val_y = fit_y ? fit_y + n_fit : NULL;
    float *Xf = NULL, *Xv = NULL;
    if (!st) {
        int a = 0, b = 0;
        for (int i = 0; i < n; i++) {
            int r = rows ? rows[i] : i;
            if (part[i] == held) val_rows[b] = r, val_y[b++] = y[i];
            else fit_rows[a] = r, fit_y[a++] = y[i];
        }
        Xf = gather(train, layer, fit_rows, n_fit);
        Xv = gather(train, layer, val_rows, n_val);
        if (!Xf || !Xv) st = fm_fail(FM_ERR_NOMEM, "out of memory for the probe's features");
    }
    fm_logreg prev = {0}, cur;
    for (int g = FM_LOGREG_GRID_SIZE - 1; !st && g >= 0; g--) {
        fm_logreg_options opt = {.lambda = fm_logreg_grid[g], .max_iter = max_iter};
        st = fm_logreg_fit(&cur, Xf, fit_y, n_fit, train->d, k, &opt, prev.theta ? &prev : NULL);
        if (st) break;
        double acc, nll;
        st = fm_logreg_score(&cur, Xv, val_y, n_val, &acc, &nll);
        tallies[g].correct += acc * n_val;
        tallies[g].log_loss += nll * n_val;
        tallies[g].count += n_val;
        fm_logreg_free(&prev);
        prev = cur;
    }
    fm_logreg_free(&prev);
    if (Xf) fm_free_big(Xf);
    if (Xv) fm_free_big(Xv);
    fm_free(fit_rows), fm_free(fit_y);
    return st;
}

fm_status fm_probe_run(const fm_probe_features *train, const int *train_labels, const int *rows, int n_rows,
                       int cross_validate, const fm_probe_features *test, const int *test_labels, int k,
                       const fm_probe_config *cfg, fm_probe_result *out) {
    memset(out, 0, sizeof *out);
    if (train->n_layers != test->n_layers || train->d != test->d)
        return fm_fail(FM_ERR_MISMATCH, "probe: training features of %d x %d, test features of %d x %d", train->n_layers,
                       train->d, test->n_layers, test->d);
    if (cfg->layer < -1 || cfg->layer >= train->n_layers)
        return fm_fail(FM_ERR_ARG, "probe layer %d: the features have candidates 0 to %d", cfg->layer,
                       train->n_layers - 1);
    if (!rows) n_rows = train->n;
    int parts = cross_validate ? cfg->folds : cfg->val_every;
    if (parts < 2) return fm_fail(FM_ERR_ARG, "probe: %d %s, at least 2 needed", parts, cross_validate ? "folds" : "val_every");
    if (n_rows < parts)
        return fm_fail(FM_ERR_ARG, "probe: %d labeled rows, fewer than the %d %s; give more labels per class", n_rows,
                       parts, cross_validate ? "cross-validation folds" : "held-out parts");
    for (int i = 0; i < test->n; i++)
        if (test_labels[i] < 0 || test_labels[i] >= k)
            return fm_fail(FM_ERR_ARG, "probe: test label %d of row %d is outside [0, %d)", test_labels[i], i, k);
    int *y = fm_malloc(sizeof(int) * (size_t)n_rows), *part = fm_malloc(sizeof(int) * (size_t)n_rows);
    int lo = cfg->layer >= 0 ? cfg->layer : 0, hi = cfg->layer >= 0 ? cfg->layer : train->n_layers - 1;
    tally *tallies = fm_calloc((size_t)(hi - lo + 1) * FM_LOGREG_GRID_SIZE, sizeof *tallies);
    fm_status st = y && part && tallies ? FM_OK : fm_fail(FM_ERR_NOMEM, "out of memory for a probe of %d rows", n_rows);
    for (int i = 0; !st && i < n_rows; i++) {
        int r = rows ? rows[i] : i;
        if (r < 0 || r >= train->n) st = fm_fail(FM_ERR_ARG, "probe: row %d is outside the %d training rows", r, train->n);
        else if (train_labels[r] < 0 || train_labels[r] >= k)
            st = fm_fail(FM_ERR_ARG, "probe: training label %d of row %d is outside [0, %d)", train_labels[r], r, k);
        else y[i] = train_labels[r];
    }
    if (!st) st = assign_parts(y, n_rows, k, parts, cfg->seed, part);
    /* cross-validation: every part held out in turn; otherwise the last part alone (1 in val_every).
     * Each (layer, part) task tallies into its own slot, summed in task order afterwards; small
     * problems run the tasks on parallel threads (each fit then on one), large ones one after
     * another with the products shared out. */
    int first = cross_validate ? 0 : parts - 1, per_layer = parts - first, tasks = (hi - lo + 1) * per_layer;
    tally *task_tallies = st ? NULL : fm_calloc((size_t)tasks * FM_LOGREG_GRID_SIZE, sizeof *task_tallies);
    fm_status *task_status = st ? NULL : fm_calloc((size_t)tasks, sizeof *task_status);
    char (*task_error)[256] = st ? NULL : fm_calloc((size_t)tasks, sizeof *task_error);
    if (!st && (!task_tallies || !task_status || !task_error))
        st = fm_fail(FM_ERR_NOMEM, "out of memory for a probe of %d rows", n_rows);
    int small = (double)n_rows * train->d < 4e6;
#pragma omp parallel for schedule(dynamic, 1) if (!st && small && tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int l = lo + t / per_layer, held = first + t % per_layer;
        task_status[t] = score_path(train, rows, y, part, n_rows, held, l, k, cfg->max_iter,
                                    task_tallies + (size_t)t * FM_LOGREG_GRID_SIZE);
        if (task_status[t]) snprintf(task_error[t], sizeof task_error[t], "%s", fm_last_error());
    }
    for (int t = 0; !st && t < tasks; t++) {
        if (task_status[t]) {
            st = fm_fail(task_status[t], "%s", task_error[t]);
            break;
        }
        tally *sum = tallies + (size_t)(t / per_layer) * FM_LOGREG_GRID_SIZE;
        for (int g = 0; g < FM_LOGREG_GRID_SIZE; g++) {
            sum[g].correct += task_tallies[(size_t)t * FM_LOGREG_GRID_SIZE + g].correct;
            sum[g].log_loss += task_tallies[(size_t)t * FM_LOGREG_GRID_SIZE + g].log_loss;
            sum[g].count += task_tallies[(size_t)t * FM_LOGREG_GRID_SIZE + g].count;
        }
    }
    fm_free(task_tallies), fm_free(task_status), fm_free(task_error);
    int best_l = lo, best_g = FM_LOGREG_GRID_SIZE - 1;
    double best_acc = -1.0, best_loss = INFINITY;
    for (int l = lo; !st && l <= hi; l++)
        for (int g = FM_LOGREG_GRID_SIZE - 1; g >= 0; g--) { /* ties keep the lower layer, the stronger strength */
            const tally *t = tallies + (size_t)(l - lo) * FM_LOGREG_GRID_SIZE + g;
            if (!t->count) continue;
            double acc = t->correct / t->count, loss = t->log_loss / t->count;
            if (acc > best_acc + 1e-12 || (fabs(acc - best_acc) <= 1e-12 && loss < best_loss)) {
                best_acc = acc, best_loss = loss, best_l = l, best_g = g;
            }
        }
    float *X = NULL, *Xt = NULL;
    if (!st) {
        X = gather(train, best_l, rows, n_rows);
        Xt = gather(test, best_l, NULL, test->n);
        if (!X || !Xt) st = fm_fail(FM_ERR_NOMEM, "out of memory for the probe's features");
    }
    if (!st) {
        fm_logreg m;
        fm_logreg_options opt = {.lambda = fm_logreg_grid[best_g], .max_iter = cfg->max_iter};
        st = fm_logreg_fit(&m, X, y, n_rows, train->d, k, &opt, NULL);
        if (!st) {
            double acc = 0.0;
            st = test->n > 0 ? fm_logreg_score(&m, Xt, test_labels, test->n, &acc, NULL) : FM_OK;
            *out = (fm_probe_result){.accuracy = acc, .layer = best_l, .lambda = opt.lambda,
                                     .select_accuracy = best_acc, .converged = m.converged};
            fm_logreg_free(&m);
        }
    }
    if (X) fm_free_big(X);
    if (Xt) fm_free_big(Xt);
    fm_free(y), fm_free(part), fm_free(tallies);
    return st;
}
