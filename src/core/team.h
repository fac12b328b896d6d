/*
 * team.h — a loop shared by a small team of persistent threads that never waits on a thread
 * that has not started (team.c).
 *
 * What it is for: decoding one token runs some sixty short products (tens to hundreds of
 * microseconds each). With an OpenMP region per product, every region ends in a barrier that
 * waits for each thread; on a machine whose cores are shared with other work, a thread that the
 * kernel has descheduled holds up the others, which spin through their own time slices
 * (libgomp spins for milliseconds before sleeping): batch-1 decoding with two threads ran 5-10x
 * slower than with one on a busy two-core machine. fm_team_for hands out chunks of the loop
 * to whichever threads are running: the caller works through chunks itself and returns as soon
 * as every chunk is done, whether or not a helper ever woke up; helpers spin only briefly
 * (FM_TEAM_SPIN_US) before sleeping.
 * Not for: long loops with few fork points (training's OpenMP regions), or anything whose
 * result depends on which thread runs a chunk (the chunks must be independent).
 */
#ifndef FM_CORE_TEAM_H
#define FM_CORE_TEAM_H

/* Runs fn(arg, lo, hi) over [0, n) in chunks [lo, hi) of `grain` items (the last may be
 * shorter), each chunk exactly once, on the calling thread and up to fm_get_threads() - 1
 * helper threads; returns when all chunks are done. Runs every chunk on the calling thread,
 * in order, when n <= grain, when called inside an OpenMP region or from a chunk, or with one
 * thread. While another thread's loop holds the team, the chunks run in an OpenMP loop instead.
 * Helpers are started on first use and live until the process ends. */
void fm_team_for(int n, int grain, void (*fn)(void *arg, int lo, int hi), void *arg);

#endif /* FM_CORE_TEAM_H */
