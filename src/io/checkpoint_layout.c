/*
 * checkpoint_layout.c — a run directory's checkpoints: written beside the current one, switched
 * in by one atomic rename of a link, listed newest first for loading.
 *
 * What it is for: a save that is killed, or fails on a full disk, at any point must leave the
 * previous checkpoint current and loadable (the layout is described in checkpoint_layout.h).
 * What it is not for: the files' contents (checkpoint.c writes and reads them).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "io/checkpoint_layout.h"

/* The top-level files that read through RUN/checkpoint. */
#define MAX_LINKED 8 /* files of one checkpoint linked from the run directory */

/* fsync of a folder (filesystems that cannot, EINVAL, are accepted); 0 or an errno value. */
static int sync_dir(const char *dir) {
    if (fm_io_should_fail("fsync folder")) return EIO;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return errno;
    int err = fsync(fd) != 0 && errno != EINVAL ? errno : 0;
    close(fd);
    return err;
}

/* Removes a checkpoint folder: its plain files, then the folder. Best effort. */
static void remove_folder(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[PATH_MAX];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path) unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void release(fm_ckpt_txn *t) {
    fm_free(t->run);
    fm_free(t->tmp);
    memset(t, 0, sizeof *t);
}

fm_status fm_ckpt_begin(fm_ckpt_txn *t, const char *run, int64_t step) {
    memset(t, 0, sizeof *t);
    fm_status st = fm_mkdir(run);
    if (st) return st;
    char *folder = fm_path_join(run, FM_CKPT_FOLDER);
    if (!folder) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", run);
    st = fm_mkdir(folder);
    if (st) {
        fm_free(folder);
        return st;
    }
    char name[64];
    snprintf(name, sizeof name, ".tmp-step-%08" PRId64 ".XXXXXX", step);
    t->tmp = fm_path_join(folder, name);
    t->run = fm_strdup(run);
    fm_free(folder);
    if (!t->tmp || !t->run) {
        release(t);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", run);
    }
    if (fm_io_should_fail("create folder") || !mkdtemp(t->tmp)) {
        int err = errno;
        release(t);
        return fm_fail(FM_ERR_IO, "cannot create a checkpoint folder in %s/%s: %s", run, FM_CKPT_FOLDER,
                       strerror(err));
    }
    t->step = step;
    return FM_OK;
}

void fm_ckpt_abort(fm_ckpt_txn *t) {
    if (t->tmp) remove_folder(t->tmp);
    release(t);
}

/* Replaces path by a symbolic link to target, atomically (a link under a temporary name, then
 * renamed over path). Returns 0 or an errno value. */
static int replace_with_link(const char *target, const char *path) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) return ENAMETOOLONG;
    unlink(tmp);
    if (fm_io_should_fail("symlink") || symlink(target, tmp) != 0) return errno;
    if (fm_io_should_fail("rename link") || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return err;
    }
    return 0;
}

/* path is already a symbolic link to target. */
static int links_to(const char *path, const char *target) {
    char got[PATH_MAX];
    ssize_t n = readlink(path, got, sizeof got - 1);
    if (n < 0) return 0;
    got[n] = '\0';
    return strcmp(got, target) == 0;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

fm_status fm_ckpt_publish(fm_ckpt_txn *t) {
    char folder[PATH_MAX], final[PATH_MAX], name[64], pointer[PATH_MAX], path[PATH_MAX], target[PATH_MAX];
    fm_status st = FM_OK;
    if (snprintf(folder, sizeof folder, "%s/%s", t->run, FM_CKPT_FOLDER) >= (int)sizeof folder ||
        snprintf(pointer, sizeof pointer, "%s/%s", t->run, FM_CKPT_POINTER) >= (int)sizeof pointer) {
        st = fm_fail(FM_ERR_IO, "%s: path too long", t->run);
        fm_ckpt_abort(t);
        return st;
    }
    int err = sync_dir(t->tmp);
    if (err) {
        st = fm_fail(FM_ERR_IO, "cannot sync %s: %s", t->tmp, strerror(err));
        fm_ckpt_abort(t);
        return st;
    }
    /* the checkpoint's files, each linked from the run directory: config.json, model.safetensors
     * and training_state.safetensors, or a LoRA run's adapter_config.json and
     * adapter_model.safetensors in place of the first two */
    char linked_files[MAX_LINKED][64];
    int n_linked = 0;
    DIR *files = opendir(t->tmp);
    if (!files) {
        st = fm_fail(FM_ERR_IO, "cannot read %s: %s", t->tmp, strerror(errno));
        fm_ckpt_abort(t);
        return st;
    }
    struct dirent *fe;
    while ((fe = readdir(files)))
        if (fe->d_name[0] != '.' && strlen(fe->d_name) < sizeof linked_files[0] && n_linked < MAX_LINKED)
            snprintf(linked_files[n_linked++], sizeof linked_files[0], "%s", fe->d_name);
    closedir(files);
    qsort(linked_files, n_linked, sizeof linked_files[0], by_name); /* the same order on every filesystem */
    /* a free name: step-N, else step-N-2, step-N-3, ... (a second save at one step) */
    struct stat sb;
    for (int k = 1;; k++) {
        if (k == 1) snprintf(name, sizeof name, "step-%08" PRId64, t->step);
        else snprintf(name, sizeof name, "step-%08" PRId64 "-%d", t->step, k);
        if (snprintf(final, sizeof final, "%s/%s", folder, name) >= (int)sizeof final) {
            st = fm_fail(FM_ERR_IO, "%s: path too long", folder);
            fm_ckpt_abort(t);
            return st;
        }
        if (lstat(final, &sb) != 0 && errno == ENOENT) break;
        if (k > 10000) {
            st = fm_fail(FM_ERR_IO, "%s: no free name for a checkpoint of step %" PRId64, folder, t->step);
            fm_ckpt_abort(t);
            return st;
        }
    }
    if (fm_io_should_fail("rename folder") || rename(t->tmp, final) != 0) {
        st = fm_fail(FM_ERR_IO, "cannot rename %s to %s: %s", t->tmp, final, strerror(errno));
        fm_ckpt_abort(t);
        return st;
    }
    if ((err = sync_dir(folder))) {
        st = fm_fail(FM_ERR_IO, "cannot sync %s: %s", folder, strerror(err));
        remove_folder(final);
        release(t);
        return st;
    }
    /* top-level files not there yet (a new run) are links before the switch, so that the run
     * reads as a model directory from the moment it has a checkpoint */
    struct stat lsb;
    for (int i = 0; i < n_linked; i++) {
        snprintf(target, sizeof target, "%s/%s", FM_CKPT_POINTER, linked_files[i]);
        if (snprintf(path, sizeof path, "%s/%s", t->run, linked_files[i]) >= (int)sizeof path) err = ENAMETOOLONG;
        else if (lstat(path, &lsb) != 0 && errno == ENOENT) err = replace_with_link(target, path);
        if (err) {
            st = fm_fail(FM_ERR_IO, "cannot create the link %s: %s; the previous checkpoint stays", path, strerror(err));
            remove_folder(final);
            release(t);
            return st;
        }
    }
    /* the switch: one rename; before it the previous checkpoint is current, after it this one */
    snprintf(target, sizeof target, "%s/%s", FM_CKPT_FOLDER, name);
    if ((err = replace_with_link(target, pointer)) || (err = sync_dir(t->run))) {
        st = fm_fail(FM_ERR_IO, "cannot make %s current (%s): %s; the previous checkpoint stays", final, pointer,
                     strerror(err));
        if (!links_to(pointer, target)) remove_folder(final);
        release(t);
        return st;
    }
    /* the top-level files read through the link (replacing the plain files of an older layout,
     * or of a plain model save over the run) */
    for (int i = 0; i < n_linked; i++) {
        snprintf(target, sizeof target, "%s/%s", FM_CKPT_POINTER, linked_files[i]);
        if (snprintf(path, sizeof path, "%s/%s", t->run, linked_files[i]) >= (int)sizeof path) err = ENAMETOOLONG;
        else if (!links_to(path, target)) err = replace_with_link(target, path);
        if (err) {
            st = fm_fail(FM_ERR_IO, "checkpoint %s is saved and current, but %s could not be made a link to it: %s",
                         final, path, strerror(err));
            break;
        }
    }
    if (!st && (err = sync_dir(t->run))) st = fm_fail(FM_ERR_IO, "cannot sync %s: %s", t->run, strerror(err));
    /* every other checkpoint (and what killed saves left) goes */
    DIR *d = opendir(folder);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, name) == 0) continue;
            if (strncmp(e->d_name, "step-", 5) != 0 && strncmp(e->d_name, ".tmp-step-", 10) != 0) continue;
            if (snprintf(path, sizeof path, "%s/%s", folder, e->d_name) < (int)sizeof path) remove_folder(path);
        }
        closedir(d);
    }
    release(t);
    return st;
}

/* The step a checkpoint folder's name gives ("step-N" or "step-N-K"), the suffix K in *k;
 * -1 for other names. */
static int64_t name_step(const char *name, int *k) {
    int64_t step = -1;
    int used = 0;
    *k = 1;
    if (sscanf(name, "step-%" SCNd64 "%n", &step, &used) != 1 || step < 0) return -1;
    if (name[used] == '\0') return step;
    int end = 0;
    if (sscanf(name + used, "-%d%n", k, &end) == 1 && name[used + end] == '\0' && *k > 1) return step;
    return -1;
}

typedef struct {
    int64_t step;
    int k;
    char *path;
} candidate;

static int newest_first(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return x->k > y->k ? -1 : x->k < y->k;
}

fm_status fm_ckpt_list_dirs(const char *run, fm_ckpt_list *l) {
    memset(l, 0, sizeof *l);
    char folder[PATH_MAX], pointer[PATH_MAX];
    if (snprintf(folder, sizeof folder, "%s/%s", run, FM_CKPT_FOLDER) >= (int)sizeof folder ||
        snprintf(pointer, sizeof pointer, "%s/%s", run, FM_CKPT_POINTER) >= (int)sizeof pointer)
        return fm_fail(FM_ERR_IO, "%s: path too long", run);
    char current[PATH_MAX] = "";
    struct stat sb;
    if (lstat(pointer, &sb) == 0) {
        l->pointer = 1;
        ssize_t n = readlink(pointer, l->pointer_target, sizeof l->pointer_target - 1);
        if (n > 0) {
            l->pointer_target[n] = '\0';
            if (stat(pointer, &sb) == 0 && S_ISDIR(sb.st_mode) &&
                snprintf(current, sizeof current, "%s/%s", run, l->pointer_target) < (int)sizeof current)
                l->pointer_ok = 1;
        }
    }
    DIR *d = opendir(folder);
    if (!d) {
        if (errno == ENOENT && !l->pointer) return FM_OK; /* an older, flat directory */
        if (errno != ENOENT) return fm_fail(FM_ERR_IO, "cannot read %s: %s", folder, strerror(errno));
    }
    int cap = 0;
    candidate *c = NULL;
    fm_status st = FM_OK;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int k;
        int64_t step = name_step(e->d_name, &k);
        if (step < 0) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", folder, e->d_name) >= (int)sizeof path) continue;
        if (l->pointer_ok) { /* the current one is listed first, below */
            char a[PATH_MAX], b[PATH_MAX];
            if (realpath(path, a) && realpath(current, b) && strcmp(a, b) == 0) continue;
        }
        if (l->n == cap) {
            cap = cap ? 2 * cap : 8;
            candidate *grown = fm_realloc(c, sizeof *c * cap);
            if (!grown) {
                st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", folder);
                break;
            }
            c = grown;
        }
        c[l->n] = (candidate){step, k, fm_strdup(path)};
        if (!c[l->n].path) {
            st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", folder);
            break;
        }
        l->n++;
    }
    if (d) closedir(d);
    if (!st) {
        if (l->n > 1) qsort(c, l->n, sizeof *c, newest_first);
        l->dirs = fm_calloc(l->n + 1, sizeof *l->dirs);
        if (!l->dirs) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", folder);
    }
    int found = l->n;
    if (!st && l->pointer_ok && !(l->dirs[0] = fm_strdup(current))) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", run);
    if (!st) {
        int at = l->pointer_ok;
        for (int i = 0; i < found; i++) l->dirs[at++] = c[i].path, c[i].path = NULL;
        l->n = at;
    }
    for (int i = 0; i < found; i++) fm_free(c[i].path);
    fm_free(c);
    if (st) fm_ckpt_list_free(l);
    return st;
}

void fm_ckpt_list_free(fm_ckpt_list *l) {
    for (int i = 0; l->dirs && i < l->n; i++) fm_free(l->dirs[i]);
    fm_free(l->dirs);
    l->dirs = NULL;
    l->n = 0;
}
