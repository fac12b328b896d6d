/*
 * test_team.c — fm_team_for (src/core/team.h): every chunk runs exactly once, with the bounds
 * asked, over many loops in a row (helpers that miss loops or wake late), nested loops, two
 * threads' loops at once (one of them falls back to OpenMP), and loops whose last chunk ends on a
 * helper just as the caller stops spinning and goes to sleep (a lost wake-up hangs the caller).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

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

/* Loops of two chunks, one of them busy for 0 to 120 us: a helper that runs it finishes the loop
 * before, while and after the caller (which spins 50 us) goes to sleep. */
static _Atomic int slow_us;

static double monotonic_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e6 * (double)t.tv_sec + 1e-3 * (double)t.tv_nsec;
}

static void busy_chunk(void *arg, int lo, int hi) {
    (void)hi;
    if (lo == 1) {
        double until = monotonic_us() + atomic_load(&slow_us);
        while (monotonic_us() < until) {
        }
    }
    atomic_fetch_add((_Atomic int *)arg, 1);
}

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t ended;
    int finished, loops_done, bad;
} wake_run;

static void *wake_loops(void *arg) {
    wake_run *r = arg;
    for (int rep = 0; rep < 12000; rep++) {
        atomic_store(&slow_us, (rep * 7) % 121);
        _Atomic int ran = 0;
        fm_team_for(2, 1, busy_chunk, &ran);
        if (atomic_load(&ran) != 2) r->bad = 1;
        pthread_mutex_lock(&r->lock);
        r->loops_done = rep + 1;
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_lock(&r->lock);
    r->finished = 1;
    pthread_cond_signal(&r->ended);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void test_caller_wakes(void **state) {
    (void)state;
    fm_set_threads(2);
    static wake_run r = {.lock = PTHREAD_MUTEX_INITIALIZER, .ended = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wake_loops, &r), 0);
    /* 12,000 loops take about a second natively, a few more under emulation */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 120;
    pthread_mutex_lock(&r.lock);
    while (!r.finished && pthread_cond_timedwait(&r.ended, &r.lock, &deadline) == 0) {
    }
    int finished = r.finished, loops = r.loops_done;
    pthread_mutex_unlock(&r.lock);
    if (!finished) fail_msg("fm_team_for did not return for 120 s after %d loops: a lost wake-up", loops);
    pthread_join(t, NULL);
    assert_int_equal(r.bad, 0);
    fm_set_threads(0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_chunk_once), cmocka_unit_test(test_nested),
                                       cmocka_unit_test(test_two_callers), cmocka_unit_test(test_caller_wakes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
