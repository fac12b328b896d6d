/*
 * team.c — fm_team_for (team.h): chunks of a loop handed out to whichever of a few persistent
 * threads is running, the caller among them; no barrier waits on a thread that never started.
 *
 * How: one word `next` holds the loop's generation (high 32 bits), its number of chunks (bits
 * 16-31) and the next chunk to take (bits 0-15); a thread takes chunk i by a compare-and-swap
 * from i to i + 1 within the same generation, so a helper waking late can never take a chunk of
 * a later loop it has not seen. A taken chunk keeps the loop from finishing, so the job's fields
 * stay put while its taker reads them. The caller returns when `done` reaches the number of
 * chunks. Waiting (helpers for the next loop, the caller for chunks still running elsewhere)
 * spins for FM_TEAM_SPIN_US and then sleeps on a condition variable. The caller's wake-up
 * cannot be lost whatever the memory ordering: a helper that finishes a loop's last chunk
 * signals under the mutex, and the caller checks for the end under the same mutex before it
 * sleeps (no flag read across a store-load pair, which some emulators do not order;
 * docs/kernels.md). A helper announces its sleep (sleepers) before its last check and the
 * caller looks after publishing a loop; a wake-up missed there costs that loop the helper,
 * never progress.
 * Not for: what the chunks compute (the kernels), or OpenMP's regions elsewhere.
 */
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "core/internal.h"
#include "core/team.h"

#define FM_TEAM_SPIN_US 50.0 /* spin this long waiting, then sleep */
#define MAX_HELPERS 255
#define MAX_CHUNKS 0xFFFF

typedef void (*chunk_fn)(void *arg, int lo, int hi);

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* helpers sleep here between loops */
    pthread_cond_t finished;  /* the caller sleeps here for the last chunks */
    _Atomic uint64_t next;    /* generation << 32 | chunks << 16 | next chunk */
    _Atomic int done;         /* chunks of the current loop finished */
    _Atomic int sleepers;     /* helpers asleep or about to be */
    _Atomic int want;         /* helpers that take part (fm_get_threads() - 1 of the caller) */
    atomic_flag busy;         /* a loop holds the team */
    /* the current loop: written by its caller before `next` publishes it */
    chunk_fn fn;
    void *arg;
    int n, grain;
    /* the caller's own (under busy) */
    uint32_t generation;
    int started; /* helper threads running */
} team = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
          .finished = PTHREAD_COND_INITIALIZER, .busy = ATOMIC_FLAG_INIT};

static _Thread_local int in_team; /* a helper, or a caller inside its loop: nested loops run alone */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e6 * (double)t.tv_sec + 1e-3 * (double)t.tv_nsec;
}

/* Spins until done() or spin_us microseconds have passed; returns done(). */
static int spin_until(int (*done)(void), double spin_us) {
    double t0 = 0.0;
    for (int i = 0;; i++) {
        if (done()) return 1;
        cpu_relax();
        if ((i & 31) == 31) {
            double t = now_us();
            if (t0 == 0.0) t0 = t;
            else if (t - t0 > spin_us) return done();
        }
    }
}

/* Takes and runs chunks of the loop of generation gen until none is left; a helper (not the
 * loop's caller) that finishes the last chunk wakes the caller. */
static void work(uint32_t gen, int helper) {
    for (;;) {
        uint64_t w = atomic_load(&team.next);
        if ((uint32_t)(w >> 32) != gen) return;
        int chunks = (int)((w >> 16) & 0xFFFF), i = (int)(w & 0xFFFF);
        if (i >= chunks) return;
        if (!atomic_compare_exchange_weak(&team.next, &w, w + 1)) continue;
        int lo = i * team.grain, hi = lo + team.grain < team.n ? lo + team.grain : team.n;
        team.fn(team.arg, lo, hi);
        if (atomic_fetch_add(&team.done, 1) + 1 == chunks && helper) {
            pthread_mutex_lock(&team.lock);
            pthread_cond_signal(&team.finished);
            pthread_mutex_unlock(&team.lock);
        }
    }
}

static _Thread_local uint32_t helper_seen; /* the last generation this helper saw */

static int new_loop(void) { return (uint32_t)(atomic_load(&team.next) >> 32) != helper_seen; }

static void *helper_main(void *p) {
    int index = (int)(intptr_t)p;
    in_team = 1;
    helper_seen = (uint32_t)(atomic_load(&team.next) >> 32);
    for (;;) {
        if (!spin_until(new_loop, FM_TEAM_SPIN_US)) {
            pthread_mutex_lock(&team.lock);
            atomic_fetch_add(&team.sleepers, 1);
            while (!new_loop()) pthread_cond_wait(&team.wake, &team.lock);
            atomic_fetch_sub(&team.sleepers, 1);
            pthread_mutex_unlock(&team.lock);
        }
        helper_seen = (uint32_t)(atomic_load(&team.next) >> 32);
        if (index < atomic_load(&team.want)) work(helper_seen, 1);
    }
    return NULL;
}

/* A forked child has none of the parent's helpers. */
static void after_fork_child(void) {
    pthread_mutex_init(&team.lock, NULL);
    pthread_cond_init(&team.wake, NULL);
    pthread_cond_init(&team.finished, NULL);
    atomic_store(&team.sleepers, 0);
    atomic_flag_clear(&team.busy);
    team.started = 0;
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

static int chunks_done_target; /* the caller's loop's chunks (read only by the caller) */
static int all_done(void) { return atomic_load(&team.done) == chunks_done_target; }

static void run_alone(int n, int grain, chunk_fn fn, void *arg) {
    for (int lo = 0; lo < n; lo += grain) fn(arg, lo, lo + grain < n ? lo + grain : n);
}

void fm_team_for(int n, int grain, chunk_fn fn, void *arg) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if ((n + grain - 1) / grain > MAX_CHUNKS) grain = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
    int chunks = (n + grain - 1) / grain, threads = omp_get_max_threads();
    if (chunks == 1 || threads <= 1 || in_team || omp_in_parallel()) {
        run_alone(n, grain, fn, arg);
        return;
    }
    if (atomic_flag_test_and_set(&team.busy)) { /* another thread's loop has the team */
#pragma omp parallel for schedule(dynamic)
        for (int c = 0; c < chunks; c++) fn(arg, c * grain, c * grain + grain < n ? c * grain + grain : n);
        return;
    }
    pthread_once(&atfork_once, register_atfork);
    int helpers = threads - 1 < MAX_HELPERS ? threads - 1 : MAX_HELPERS;
    while (team.started < helpers) { /* a helper that cannot start leaves its chunks to the others */
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, helper_main, (void *)(intptr_t)team.started);
        pthread_attr_destroy(&attr);
        if (failed) break;
        team.started++;
    }
    atomic_store(&team.want, helpers);
    team.fn = fn, team.arg = arg, team.n = n, team.grain = grain;
    chunks_done_target = chunks;
    atomic_store(&team.done, 0);
    uint32_t gen = ++team.generation;
    atomic_store(&team.next, (uint64_t)gen << 32 | (uint64_t)chunks << 16);
    if (atomic_load(&team.sleepers) > 0) {
        pthread_mutex_lock(&team.lock);
        pthread_cond_broadcast(&team.wake);
        pthread_mutex_unlock(&team.lock);
    }
    in_team = 1;
    work(gen, 0);
    in_team = 0;
    if (!spin_until(all_done, FM_TEAM_SPIN_US)) {
        pthread_mutex_lock(&team.lock);
        while (!all_done()) pthread_cond_wait(&team.finished, &team.lock);
        pthread_mutex_unlock(&team.lock);
    }
    atomic_flag_clear(&team.busy);
}
