/*
 * profile.c — where a training step's time goes: wall time per kernel call site, by name.
 *
 * What it is for: `fm bench train --profile`, and the README's account of a step (how much of
 * it is matrix products, attention, the rest). While enabled, the model's forward and backward,
 * the cross-entropy, zero_grad and the optimizer step time each kernel call and add it under a
 * name of the form "kind: what" (kinds: products, attention, other), in the order first seen.
 * Switched off (the default) a call costs a test of one flag.
 * Not for: timing from several threads at once (the table is not locked; the model is driven
 * from one thread, the kernels' own threads are inside the timed calls).
 */
#include <string.h>
#include <time.h>

#include "core/internal.h"

#define PROFILE_MAX 64

static int profile_on;
static int profile_n;
typedef struct {
    const char *name;
    double seconds;
    long calls;
} profile_entry;

static profile_entry profile_table[PROFILE_MAX];

void fm_profile_enable(int on) { profile_on = on != 0; }

void fm_profile_reset(void) { profile_n = 0; }

int fm_profile_entries(void) { return profile_n; }

int fm_profile_entry(int i, const char **name, double *seconds, long *calls) {
    if (i < 0 || i >= profile_n) return 0;
    *name = profile_table[i].name;
    *seconds = profile_table[i].seconds;
    *calls = profile_table[i].calls;
    return 1;
}

double fm_profile_start(void) {
    if (!profile_on) return 0.0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fm_profile_stop(const char *name, double start) {
    if (!profile_on) return;
    double end = fm_profile_start();
    int i = 0;
    while (i < profile_n && profile_table[i].name != name && strcmp(profile_table[i].name, name) != 0) i++;
    if (i == profile_n) {
        if (profile_n == PROFILE_MAX) return; /* full: later names are not counted */
        profile_table[profile_n++] = (profile_entry){name, 0.0, 0};
    }
    profile_table[i].seconds += end - start;
    profile_table[i].calls++;
}
