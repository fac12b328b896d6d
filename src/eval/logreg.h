/*
 * logreg.h — multinomial logistic regression with L2 regularisation (logreg.c), the classifier of
 * the linear probe (probe.c).
 *
 * What it is for: fitting a softmax regression on a feature matrix to convergence, full batch and
 * deterministically (L-BFGS), with the features standardised by the training rows' mean and
 * standard deviation, and predicting with it. What it is not for: choosing the strength or the
 * rows (probe.c does that), or anything beyond a linear model.
 *
 * The objective, over the n training rows z_i (standardised features, d) with labels y_i in [0, k):
 *   f(W, b) = (1/n) sum_i [logsumexp(z_i W + b) - (z_i W + b)_{y_i}] + (lambda / 2) ||W||^2
 * W (d, k), b (k), the intercept b not penalised. This is scikit-learn's LogisticRegression
 * (multinomial, penalty "l2") with C = 1 / (lambda * n).
 */
#ifndef FM_EVAL_LOGREG_H
#define FM_EVAL_LOGREG_H

#include "fm.h"

/* The fixed grid of strengths lambda the probe chooses from, weakest first (decades 1e-5 .. 1). */
#define FM_LOGREG_GRID_SIZE 6
extern const double fm_logreg_grid[FM_LOGREG_GRID_SIZE];

typedef struct {
    double lambda;   /* L2 strength (>= 0) */
    int max_iter;    /* L-BFGS iterations at most (0: 1000) */
    double tol;      /* stop when max |gradient| <= tol (0: 1e-4, scikit-learn's default for this objective) */
} fm_logreg_options;

typedef struct {
    int d, k;
    float *mean, *scale; /* (d) each: z = (x - mean) * scale; scale = 1 / sd, 1 where sd is 0 */
    double *theta;       /* ((d + 1) * k): W (d, k) row-major, then b (k) */
    double lambda;
    double objective;    /* f at the solution */
    int iterations;
    int converged;       /* 1: the gradient reached tol; 0: the iterations or the line search ran out */
} fm_logreg;

/* Fits on X (n, d) float rows with labels y (n) in [0, k); 1 <= n, d, 2 <= k. warm (may be NULL):
 * a fit of the same d and k whose W and b start this one (a path over strengths); its
 * standardisation is not reused, this fit computes its own from X. out is the caller's; free with
 * fm_logreg_free. FM_ERR_ARG names a label out of range; FM_ERR_NOMEM. */
fm_status fm_logreg_fit(fm_logreg *out, const float *X, const int *y, int n, int d, int k,
                        const fm_logreg_options *opt, const fm_logreg *warm);
void fm_logreg_free(fm_logreg *m);

/* The predicted class of each row of X (n, d) into pred (n); probs (n, k, may be NULL) receives
 * the softmax probabilities. FM_ERR_NOMEM. */
fm_status fm_logreg_predict(const fm_logreg *m, const float *X, int n, int *pred, float *probs);
/* The share of rows of X (n, d) predicted as y (n), into *accuracy; *log_loss (may be NULL): the
 * mean negative log-probability of the true labels. */
fm_status fm_logreg_score(const fm_logreg *m, const float *X, const int *y, int n, double *accuracy,
                          double *log_loss);

/* The objective f and its gradient (grad, (d + 1) * k, may be NULL) at theta, for already
 * standardised rows Z (n, d): what the fit minimises, exposed for the tests' finite differences. */
fm_status fm_logreg_objective(const float *Z, const int *y, int n, int d, int k, double lambda,
                              const double *theta, double *value, double *grad);

#endif
