/*
 * logreg.c — multinomial logistic regression with L2 regularisation, fitted by L-BFGS (logreg.h).
 *
 * What it is for: the linear probe's classifier: standardise the features with the training rows'
 * mean and sd, minimise the mean cross-entropy plus (lambda / 2) ||W||^2 full batch to
 * convergence, predict. What it is not for: choosing lambda (probe.c), sparse or huge data.
 *
 * The two products per evaluation, logits = Z W (n, d) x (d, k) and the gradient Z^T (P - Y),
 * are float32 GEMMs (src/cpu, results independent of the thread count); the softmax runs per row
 * under OpenMP and every sum over rows is taken in row order in double, so a fit is bitwise the
 * same on any number of threads. The parameters and the L-BFGS state are double.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "cpu/kernels.h"
#include "eval/logreg.h"

const double fm_logreg_grid[FM_LOGREG_GRID_SIZE] = {1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};

#define LBFGS_MEMORY 10

void fm_logreg_free(fm_logreg *m) {
    if (!m) return;
    fm_free(m->mean);
    fm_free(m->scale);
    fm_free(m->theta);
    memset(m, 0, sizeof *m);
}

/* Scratch of one objective evaluation: Wf (d, k), logits (n, k) (becomes P - Y), gW (d, k),
 * per-row losses (n). */
typedef struct {
    float *Wf, *logits, *gW;
    double *row_loss;
} objective_scratch;

static void scratch_free(objective_scratch *s) {
    fm_free(s->Wf);
    fm_free(s->logits);
    fm_free(s->gW);
    fm_free(s->row_loss);
}

static fm_status scratch_init(objective_scratch *s, int n, int d, int k) {
    memset(s, 0, sizeof *s);
    s->Wf = fm_malloc(sizeof(float) * (size_t)d * k);
    s->logits = fm_malloc(sizeof(float) * (size_t)n * k);
    s->gW = fm_malloc(sizeof(float) * (size_t)d * k);
    s->row_loss = fm_malloc(sizeof(double) * (size_t)n);
    if (!s->Wf || !s->logits || !s->gW || !s->row_loss) {
        scratch_free(s);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a logistic regression of %d rows, %d features, %d classes",
                       n, d, k);
    }
    return FM_OK;
}

/* f and its gradient at theta ((d + 1) * k) for standardised Z (n, d); grad may be NULL. */
static double evaluate(objective_scratch *s, const float *Z, const int *y, int n, int d, int k, double lambda,
                       const double *theta, double *grad) {
    size_t dk = (size_t)d * k;
    for (size_t i = 0; i < dk; i++) s->Wf[i] = (float)theta[i];
    const double *b = theta + dk;
    fm_k_gemm(0, 0, n, k, d, Z, d, s->Wf, k, s->logits, k, 0); /* (n, d) @ (d, k) */
    double inv_n = 1.0 / n;
#pragma omp parallel for schedule(static) if ((size_t)n * k >= 16384)
    for (int i = 0; i < n; i++) {
        float *z = s->logits + (size_t)i * k;
        double zmax = -DBL_MAX, row[k];
        for (int c = 0; c < k; c++) {
            row[c] = (double)z[c] + b[c];
            if (row[c] > zmax) zmax = row[c];
        }
        double sum = 0.0;
        for (int c = 0; c < k; c++) sum += exp(row[c] - zmax);
        double lse = zmax + log(sum);
        s->row_loss[i] = lse - row[y[i]];
        for (int c = 0; c < k; c++) z[c] = (float)((exp(row[c] - lse) - (c == y[i])) * inv_n); /* (P - Y) / n */
    }
    double loss = 0.0, reg = 0.0;
    for (int i = 0; i < n; i++) loss += s->row_loss[i];
    for (size_t i = 0; i < dk; i++) reg += theta[i] * theta[i];
    double value = loss * inv_n + 0.5 * lambda * reg;
    if (!grad) return value;
    fm_k_gemm(1, 0, d, k, n, Z, d, s->logits, k, s->gW, k, 0); /* (d, n) @ (n, k) */
    for (size_t i = 0; i < dk; i++) grad[i] = (double)s->gW[i] + lambda * theta[i];
    for (int c = 0; c < k; c++) grad[dk + c] = 0.0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) grad[dk + c] += s->logits[(size_t)i * k + c];
    return value;
}

static fm_status check_labels(const int *y, int n, int k) {
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k)
            return fm_fail(FM_ERR_ARG, "logistic regression: label %d of row %d is outside [0, %d)", y[i], i, k);
    return FM_OK;
}

fm_status fm_logreg_objective(const float *Z, const int *y, int n, int d, int k, double lambda,
                              const double *theta, double *value, double *grad) {
    if (n < 1 || d < 1 || k < 2) return fm_fail(FM_ERR_ARG, "logistic regression of %d rows, %d features, %d classes", n, d, k);
    fm_status st = check_labels(y, n, k);
    objective_scratch s;
    if (!st) st = scratch_init(&s, n, d, k);
    if (st) return st;
    *value = evaluate(&s, Z, y, n, d, k, lambda, theta, grad);
    scratch_free(&s);
    return FM_OK;
}

/* z = (x - mean) * scale for every row of X (n, d) into Z. */
static void standardise(const fm_logreg *m, const float *X, int n, float *Z) {
    int d = m->d;
#pragma omp parallel for schedule(static) if ((size_t)n * d >= 65536)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            Z[(size_t)i * d + j] = (X[(size_t)i * d + j] - m->mean[j]) * m->scale[j];
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double max_abs(const double *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

/* Minimises f from m->theta by L-BFGS with a backtracking (Armijo) line search; stops when the
 * gradient's largest entry is <= tol, after max_iter iterations, or when no step along the
 * direction decreases f any more (float32 products: f is exact to about 1e-7 of itself). */
static fm_status lbfgs(fm_logreg *m, const float *Z, const int *y, int n, int max_iter, double tol) {
    int d = m->d, k = m->k;
    size_t P = (size_t)(d + 1) * k;
    objective_scratch s;
    fm_status st = scratch_init(&s, n, d, k);
    if (st) return st;
    double *buf = fm_malloc(sizeof(double) * P * (4 + 2 * LBFGS_MEMORY));
    if (!buf) {
        scratch_free(&s);
        return fm_fail(FM_ERR_NOMEM, "out of memory for L-BFGS over %zu parameters", P);
    }
    double *g = buf, *dir = g + P, *x_new = dir + P, *g_new = x_new + P;
    double *S = g_new + P, *Yd = S + P * LBFGS_MEMORY, rho[LBFGS_MEMORY], alpha[LBFGS_MEMORY];
    double *x = m->theta;
    double f = evaluate(&s, Z, y, n, d, k, m->lambda, x, g);
    int pairs = 0, newest = -1, it = 0, stalls = 0;
    m->converged = 0;
    for (; it < max_iter; it++) {
        if (max_abs(g, P) <= tol) {
            m->converged = 1;
            break;
        }
        /* direction = -H g by the two-loop recursion over the stored pairs, newest first */
        for (size_t i = 0; i < P; i++) dir[i] = -g[i];
        for (int j = 0; j < pairs; j++) {
            int idx = (newest - j + LBFGS_MEMORY) % LBFGS_MEMORY;
            alpha[idx] = rho[idx] * dot(S + idx * P, dir, P);
            for (size_t i = 0; i < P; i++) dir[i] -= alpha[idx] * Yd[idx * P + i];
        }
        if (pairs > 0) {
            double gamma = dot(S + newest * P, Yd + newest * P, P) / dot(Yd + newest * P, Yd + newest * P, P);
            for (size_t i = 0; i < P; i++) dir[i] *= gamma;
        }
        for (int j = pairs - 1; j >= 0; j--) {
            int idx = (newest - j + LBFGS_MEMORY) % LBFGS_MEMORY;
            double beta = rho[idx] * dot(Yd + idx * P, dir, P);
            for (size_t i = 0; i < P; i++) dir[i] += (alpha[idx] - beta) * S[idx * P + i];
        }
        double slope = dot(g, dir, P);
        if (!(slope < 0)) { /* not a descent direction: forget the pairs, go down the gradient */
            pairs = 0;
            for (size_t i = 0; i < P; i++) dir[i] = -g[i];
            slope = -dot(g, g, P);
        }
        double step = pairs ? 1.0 : fmin(1.0, 1.0 / sqrt(-slope));
        double f_new = f;
        int accepted = 0;
        for (int tries = 0; tries < 40; tries++, step *= 0.5) {
            for (size_t i = 0; i < P; i++) x_new[i] = x[i] + step * dir[i];
            f_new = evaluate(&s, Z, y, n, d, k, m->lambda, x_new, g_new);
            if (isfinite(f_new) && f_new <= f + 1e-4 * step * slope) {
                accepted = 1;
                break;
            }
        }
        if (!accepted) break; /* f no longer decreases measurably */
        double sy = 0.0, yy = 0.0;
        for (size_t i = 0; i < P; i++) {
            double dx = x_new[i] - x[i], dg = g_new[i] - g[i];
            sy += dx * dg;
            yy += dg * dg;
        }
        if (sy > 1e-12 * yy) { /* keep only pairs with positive curvature, replacing the oldest */
            int slot = (newest + 1) % LBFGS_MEMORY;
            for (size_t i = 0; i < P; i++) {
                S[slot * P + i] = x_new[i] - x[i];
                Yd[slot * P + i] = g_new[i] - g[i];
            }
            rho[slot] = 1.0 / sy;
            newest = slot;
            if (pairs < LBFGS_MEMORY) pairs++;
        }
        stalls = (f - f_new) <= 1e-12 * fmax(1.0, fabs(f)) ? stalls + 1 : 0;
        memcpy(x, x_new, sizeof(double) * P);
        memcpy(g, g_new, sizeof(double) * P);
        f = f_new;
        if (stalls >= 3) break;
    }
    if (!m->converged && max_abs(g, P) <= tol) m->converged = 1;
    m->objective = f;
    m->iterations = it;
    fm_free(buf);
    scratch_free(&s);
    return FM_OK;
}

fm_status fm_logreg_fit(fm_logreg *out, const float *X, const int *y, int n, int d, int k,
                        const fm_logreg_options *opt, const fm_logreg *warm) {
    memset(out, 0, sizeof *out);
    if (n < 1 || d < 1 || k < 2)
        return fm_fail(FM_ERR_ARG, "logistic regression of %d rows, %d features, %d classes: needs at least 1, 1, 2", n,
                       d, k);
    if (!(opt->lambda >= 0)) return fm_fail(FM_ERR_ARG, "logistic regression strength %g: must be >= 0", opt->lambda);
    if (warm && (warm->d != d || warm->k != k))
        return fm_fail(FM_ERR_ARG, "warm start of %d features, %d classes for a fit of %d, %d", warm->d, warm->k, d, k);
    fm_status st = check_labels(y, n, k);
    if (st) return st;
    size_t P = (size_t)(d + 1) * k;
    out->d = d, out->k = k, out->lambda = opt->lambda;
    out->mean = fm_malloc(sizeof(float) * d);
    out->scale = fm_malloc(sizeof(float) * d);
    out->theta = fm_calloc(P, sizeof(double));
    float *Z = fm_alloc_big(sizeof(float) * (size_t)n * d, 0);
    double *sum = fm_calloc((size_t)d * 2, sizeof(double));
    if (!out->mean || !out->scale || !out->theta || !Z || !sum) {
        fm_free(sum);
        if (Z) fm_free_big(Z);
        fm_logreg_free(out);
        return fm_fail(FM_ERR_NOMEM, "out of memory for a logistic regression of %d rows and %d features", n, d);
    }
    /* mean and (population) sd of each feature over the training rows, in row order */
    double *sq = sum + d;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) sum[j] += X[(size_t)i * d + j];
    for (int j = 0; j < d; j++) out->mean[j] = (float)(sum[j] / n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double e = (double)X[(size_t)i * d + j] - out->mean[j];
            sq[j] += e * e;
        }
    for (int j = 0; j < d; j++) {
        double sd = sqrt(sq[j] / n);
        out->scale[j] = sd > 0 ? (float)(1.0 / sd) : 1.0f; /* a constant feature stays 0 */
    }
    fm_free(sum);
    standardise(out, X, n, Z);
    if (warm) memcpy(out->theta, warm->theta, sizeof(double) * P);
    int max_iter = opt->max_iter > 0 ? opt->max_iter : 1000;
    double tol = opt->tol > 0 ? opt->tol : 1e-4; /* scikit-learn's default tol on the same objective */
    st = lbfgs(out, Z, y, n, max_iter, tol);
    fm_free_big(Z);
    if (st) fm_logreg_free(out);
    return st;
}

fm_status fm_logreg_predict(const fm_logreg *m, const float *X, int n, int *pred, float *probs) {
    int d = m->d, k = m->k;
    size_t dk = (size_t)d * k;
    float *Z = fm_alloc_big(sizeof(float) * (size_t)n * d, 0);
    float *Wf = fm_malloc(sizeof(float) * dk), *logits = fm_malloc(sizeof(float) * (size_t)n * k);
    if (!Z || !Wf || !logits) {
        if (Z) fm_free_big(Z);
        fm_free(Wf), fm_free(logits);
        return fm_fail(FM_ERR_NOMEM, "out of memory to predict %d rows of %d features", n, d);
    }
    standardise(m, X, n, Z);
    for (size_t i = 0; i < dk; i++) Wf[i] = (float)m->theta[i];
    fm_k_gemm(0, 0, n, k, d, Z, d, Wf, k, logits, k, 0);
    const double *b = m->theta + dk;
#pragma omp parallel for schedule(static) if ((size_t)n * k >= 16384)
    for (int i = 0; i < n; i++) {
        double row[k], zmax = -DBL_MAX;
        int best = 0;
        for (int c = 0; c < k; c++) {
            row[c] = (double)logits[(size_t)i * k + c] + b[c];
            if (row[c] > zmax) zmax = row[c], best = c;
        }
        pred[i] = best;
        if (probs) {
            double sum = 0.0;
            for (int c = 0; c < k; c++) sum += exp(row[c] - zmax);
            for (int c = 0; c < k; c++) probs[(size_t)i * k + c] = (float)(exp(row[c] - zmax) / sum);
        }
    }
    fm_free_big(Z);
    fm_free(Wf), fm_free(logits);
    return FM_OK;
}

fm_status fm_logreg_score(const fm_logreg *m, const float *X, const int *y, int n, double *accuracy,
                          double *log_loss) {
    fm_status st = check_labels(y, n, m->k);
    if (st) return st;
    int *pred = fm_malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    float *probs = log_loss ? fm_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * m->k) : NULL;
    if (!pred || (log_loss && !probs)) {
        fm_free(pred), fm_free(probs);
        return fm_fail(FM_ERR_NOMEM, "out of memory to score %d rows", n);
    }
    st = n > 0 ? fm_logreg_predict(m, X, n, pred, probs) : FM_OK;
    if (!st) {
        int right = 0;
        double nll = 0.0;
        for (int i = 0; i < n; i++) {
            right += pred[i] == y[i];
            if (log_loss) nll -= log(fmax((double)probs[(size_t)i * m->k + y[i]], 1e-30));
        }
        *accuracy = n > 0 ? (double)right / n : 0.0;
        if (log_loss) *log_loss = n > 0 ? nll / n : 0.0;
    }
    fm_free(pred), fm_free(probs);
    return st;
}
