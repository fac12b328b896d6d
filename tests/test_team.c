/*
 * test_team.c — fm_team_for (src/core/team.h): every chunk runs exactly once, with the bounds
 * asked, over many loops in a row (helpers that miss loops or wake late), nested loops, and two
 * threads' loops at once (one of them falls back to OpenMP).
 */
#include <pthread.h>
#include <stdatomic.h>

#include "test_util.h"
#include "core/team.h"

#define MAXN 5000

typedef struct {
    int n, grain;
    _Atomic int hits[MAXN];
    _Atomic int bad; /* a chunk with the wrong bounds */
} cover;

static void mark(void *arg, int lo, int hi) {
    cover *c = arg;
    if (lo < 0 || hi > c->n || hi <= lo || lo % c->grain || (hi - lo != c->grain && hi != c->n)) atomic_store(&c->bad, 1);
    for (int i = lo; i < hi && i < MAXN; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void check_loop(cover *c, int n, int grain) {
    c->n = n, c->grain = grain;
    atomic_store(&c->bad, 0);
    for (int i = 0; i < MAXN; i++) atomic_store(&c->hits[i], 0);
    fm_team_for(n, grain, mark, c);
    assert_int_equal(atomic_load(&c->bad), 0);
    for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&c->hits[i]), 1);
    for (int i = n; i < MAXN; i++) assert_int_equal(atomic_load(&c->hits[i]), 0);
}

static void test_every_chunk_once(void **state) {
    (void)state;
    static cover c;
    int shapes[][2] = {{1, 1}, {7, 1}, {100, 7}, {100, 100}, {100, 1000}, {4999, 16}, {5000, 3}, {0, 4}};
    for (int threads = 1; threads <= 4; threads++) {
        fm_set_threads(threads);
        for (int rep = 0; rep < 200; rep++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) check_loop(&c, shapes[s][0], shapes[s][1]);
    }
    fm_set_threads(0);
}

/* A chunk that runs a loop of its own: the inner loop runs on the chunk's thread. */
typedef struct {
    cover inner[8];
} nested;

static void outer_chunk(void *arg, int lo, int hi) {
    nested *n = arg;
    for (int i = lo; i < hi; i++) {
        n->inner[i].n = 300, n->inner[i].grain = 10;
        fm_team_for(300, 10, mark, &n->inner[i]);
    }
}

static void test_nested(void **state) {
    (void)state;
    static nested n;
    fm_set_threads(2);
    fm_team_for(8, 1, outer_chunk, &n);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(atomic_load(&n.inner[k].bad), 0);
        for (int i = 0; i < 300; i++) assert_int_equal(atomic_load(&n.inner[k].hits[i]), 1);
    }
    fm_set_threads(0);
}

static void *other_thread(void *arg) {
    cover *c = arg;
    for (int rep = 0; rep < 300; rep++) {
        c->n = 2000, c->grain = 13;
        for (int i = 0; i < 2000; i++) atomic_store(&c->hits[i], 0);
        fm_team_for(2000, 13, mark, c);
        for (int i = 0; i < 2000; i++)
            if (atomic_load(&c->hits[i]) != 1) atomic_store(&c->bad, 1);
    }
    return NULL;
}

static void test_two_callers(void **state) {
    (void)state;
    static cover a, b;
    fm_set_threads(2);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, &b), 0);
    for (int rep = 0; rep < 300; rep++) check_loop(&a, 1500, 11);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&b.bad), 0);
    fm_set_threads(0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_chunk_once), cmocka_unit_test(test_nested),
                                       cmocka_unit_test(test_two_callers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
