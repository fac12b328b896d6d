/*
 * lock.c — an advisory lock on a directory, so that two processes never write one run.
 *
 * What it is for: fm pretrain (and every command that writes a run or model directory) holds
 * DIR/.fm.lock locked (flock, exclusive) while it works; the file records the holder's process
 * id and command, which a second process reads to name the holder in its error. The lock goes
 * away with the process, however it ends (the kernel releases flock locks on exit), so a
 * killed run never leaves a stale lock behind. Not for: locking across machines (flock on
 * network file systems is not dependable).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"

#define LOCK_FILE ".fm.lock"

fm_status fm_dir_lock(const char *dir, const char *holder, int *fd_out) {
    *fd_out = -1;
    char *path = fm_path_join(dir, LOCK_FILE);
    if (!path) return fm_fail(FM_ERR_NOMEM, "out of memory");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fm_status st = fm_fail(FM_ERR_IO, "%s: cannot open the lock file: %s", path, strerror(errno));
        fm_free(path);
        return st;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char who[256] = {0};
        ssize_t n = pread(fd, who, sizeof who - 1, 0);
        who[n > 0 ? n : 0] = '\0';
        who[strcspn(who, "\n")] = '\0';
        fm_status st = fm_fail(FM_ERR_IO, "%s is in use by another process (%s); wait for it to end",
                               dir, who[0] ? who : "holder unknown");
        close(fd);
        fm_free(path);
        return st;
    }
    char line[256];
    int len = snprintf(line, sizeof line, "pid %ld, %s\n", (long)getpid(), holder ? holder : "fm");
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len) {
        /* the lock holds even if the note cannot be written */
    }
    fm_free(path);
    *fd_out = fd;
    return FM_OK;
}

void fm_dir_unlock(int fd) {
    if (fd >= 0) close(fd);
}
