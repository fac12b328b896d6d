/*
 * omp.h — a stand-in for OpenMP's header in the ThreadSanitizer build (tests/tsan/run.sh).
 *
 * libgomp is not built with ThreadSanitizer, so its threads' accesses would be invisible (or
 * reported falsely). The library is compiled for this check without -fopenmp: its `#pragma omp`
 * lines are ignored and every kernel runs on the thread that calls it, as one team of one. The
 * few OpenMP calls the sources make get the answers of that single-threaded world here. What
 * TSan then checks is what sessions promise: two user threads sharing one model.
 */
#ifndef FM_TSAN_OMP_STUB_H
#define FM_TSAN_OMP_STUB_H

static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_procs(void) { return 1; }
static inline int omp_in_parallel(void) { return 0; }
static inline void omp_set_num_threads(int n) { (void)n; }

#endif /* FM_TSAN_OMP_STUB_H */
