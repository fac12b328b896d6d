/*
 * test_logreg.c — the linear probe's multinomial logistic regression (src/eval/logreg.c).
 *
 * - separable blobs: the fit classifies its training rows and new rows of the same blobs 100%;
 * - the gradient of the objective matches central finite differences at a random point;
 * - a small fixed problem matches scikit-learn 1.2.1 (LogisticRegression, multinomial lbfgs,
 *   C = 1 / (lambda n), tol 1e-12, on StandardScaler's features): the probabilities agree within
 *   2e-4 (the committed values were printed by that script; see the comment at the table);
 * - a fit is bitwise the same on 1 and 2 threads; a warm start reaches the same solution;
 * - a label out of range is refused, naming the row.
 */
#include "test_util.h"

#include <math.h>

#include "eval/logreg.h"

/* Three Gaussian blobs in d = 5, centres 8 apart on the first three axes, sd 1. */
static void blobs(fm_rng *rng, int n, float *X, int *y) {
    for (int i = 0; i < n; i++) {
        y[i] = i % 3;
        for (int j = 0; j < 5; j++) X[i * 5 + j] = fm_rng_normal(rng) + (j == y[i] ? 8.0f : 0.0f);
    }
}

static void test_separable(void **state) {
    (void)state;
    enum { N = 90 };
    float X[N * 5], Xt[N * 5];
    int y[N], yt[N];
    fm_rng rng;
    fm_rng_seed(&rng, 7);
    blobs(&rng, N, X, y);
    blobs(&rng, N, Xt, yt);
    fm_logreg m;
    fm_logreg_options opt = {.lambda = 1e-4};
    assert_int_equal(fm_logreg_fit(&m, X, y, N, 5, 3, &opt, NULL), FM_OK);
    double acc, nll;
    assert_int_equal(fm_logreg_score(&m, X, y, N, &acc, &nll), FM_OK);
    assert_true(acc == 1.0);
    assert_true(nll < 0.05);
    assert_int_equal(fm_logreg_score(&m, Xt, yt, N, &acc, NULL), FM_OK);
    assert_true(acc == 1.0);
    fm_logreg_free(&m);
}

static void test_gradient(void **state) {
    (void)state;
    enum { N = 40, D = 6, K = 4 };
    float Z[N * D];
    int y[N];
    double theta[(D + 1) * K], grad[(D + 1) * K];
    fm_rng rng;
    fm_rng_seed(&rng, 11);
    for (int i = 0; i < N * D; i++) Z[i] = fm_rng_normal(&rng);
    for (int i = 0; i < N; i++) y[i] = (int)(fm_rng_u64(&rng) % K);
    for (int i = 0; i < (D + 1) * K; i++) theta[i] = 0.5 * fm_rng_normal(&rng);
    double lambda = 0.03, f;
    assert_int_equal(fm_logreg_objective(Z, y, N, D, K, lambda, theta, &f, grad), FM_OK);
    double worst = 0.0;
    for (int p = 0; p < (D + 1) * K; p++) {
        double h = 1e-3, keep = theta[p], fp, fm;
        theta[p] = keep + h;
        assert_int_equal(fm_logreg_objective(Z, y, N, D, K, lambda, theta, &fp, NULL), FM_OK);
        theta[p] = keep - h;
        assert_int_equal(fm_logreg_objective(Z, y, N, D, K, lambda, theta, &fm, NULL), FM_OK);
        theta[p] = keep;
        double fd = (fp - fm) / (2 * h), err = fabs(fd - grad[p]) / fmax(1e-2, fabs(grad[p]));
        if (err > worst) worst = err;
    }
    if (worst > 2e-3) fail_msg("gradient vs finite differences: worst relative error %g", worst);
}

/* The fixed problem: n 12, d 3, k 3, x_ij = ((7i + 3j) mod 11) - 5 + 0.1 i + 0.5 (i mod 3)(j + 1),
 * y_i = i mod 3, lambda 0.1. Reference: scikit-learn 1.2.1,
 *   Z = StandardScaler().fit_transform(X)
 *   LogisticRegression(C=1/(0.1*12), tol=1e-12, max_iter=10000).fit(Z, y).predict_proba(Z) */
static const double sklearn_probs[12][3] = {
    {0.60422814, 0.05020697, 0.34556489}, {0.04981227, 0.89811799, 0.05206974},
    {0.06448293, 0.25240552, 0.68311155}, {0.82675911, 0.12484736, 0.04839353},
    {0.08046249, 0.85889515, 0.06064235}, {0.09127898, 0.21153118, 0.69718985},
    {0.88370028, 0.07900506, 0.03729466}, {0.12717646, 0.80371645, 0.06910709},
    {0.12691999, 0.17413384, 0.69894618}, {0.92305605, 0.04885709, 0.02808686},
    {0.04918422, 0.35782044, 0.59299534}, {0.17292686, 0.14046404, 0.68660910},
};

static void test_sklearn_reference(void **state) {
    (void)state;
    float X[12 * 3];
    int y[12];
    for (int i = 0; i < 12; i++) {
        y[i] = i % 3;
        for (int j = 0; j < 3; j++)
            X[i * 3 + j] = (float)(((i * 7 + j * 3) % 11) - 5 + 0.1 * i + 0.5 * (i % 3) * (j + 1));
    }
    fm_logreg m;
    fm_logreg_options opt = {.lambda = 0.1, .tol = 1e-5};
    assert_int_equal(fm_logreg_fit(&m, X, y, 12, 3, 3, &opt, NULL), FM_OK);
    assert_true(m.converged);
    int pred[12];
    float probs[12 * 3];
    assert_int_equal(fm_logreg_predict(&m, X, 12, pred, probs), FM_OK);
    for (int i = 0; i < 12; i++)
        for (int c = 0; c < 3; c++)
            if (fabs(probs[i * 3 + c] - sklearn_probs[i][c]) > 2e-4)
                fail_msg("row %d class %d: fm %.6f, scikit-learn %.6f", i, c, probs[i * 3 + c], sklearn_probs[i][c]);
    fm_logreg_free(&m);
}

static void test_threads_and_warm_start(void **state) {
    (void)state;
    enum { N = 300, D = 5 };
    float X[N * D];
    int y[N];
    fm_rng rng;
    fm_rng_seed(&rng, 3);
    for (int i = 0; i < N; i++) {
        y[i] = i % 3;
        for (int j = 0; j < D; j++) X[i * D + j] = fm_rng_normal(&rng) + (j == y[i] ? 1.0f : 0.0f);
    }
    fm_logreg_options opt = {.lambda = 1e-3, .tol = 1e-6};
    fm_logreg a, b, c, start;
    fm_set_threads(1);
    assert_int_equal(fm_logreg_fit(&a, X, y, N, D, 3, &opt, NULL), FM_OK);
    fm_set_threads(2);
    assert_int_equal(fm_logreg_fit(&b, X, y, N, D, 3, &opt, NULL), FM_OK);
    fm_set_threads(0);
    assert_memory_equal(a.theta, b.theta, sizeof(double) * (D + 1) * 3);
    fm_logreg_options strong = {.lambda = 1e-1};
    assert_int_equal(fm_logreg_fit(&start, X, y, N, D, 3, &strong, NULL), FM_OK);
    assert_int_equal(fm_logreg_fit(&c, X, y, N, D, 3, &opt, &start), FM_OK);
    assert_true(a.converged && c.converged);
    for (int p = 0; p < (D + 1) * 3; p++) assert_true(fabs(a.theta[p] - c.theta[p]) < 1e-4);
    fm_logreg_free(&a), fm_logreg_free(&b), fm_logreg_free(&c), fm_logreg_free(&start);
}

static void test_bad_label(void **state) {
    (void)state;
    float X[4] = {0, 1, 2, 3};
    int y[4] = {0, 1, 3, 0};
    fm_logreg m;
    fm_logreg_options opt = {.lambda = 1e-2};
    assert_int_equal(fm_logreg_fit(&m, X, y, 4, 1, 3, &opt, NULL), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "label 3 of row 2"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separable),
        cmocka_unit_test(test_gradient),
        cmocka_unit_test(test_sklearn_reference),
        cmocka_unit_test(test_threads_and_warm_start),
        cmocka_unit_test(test_bad_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
