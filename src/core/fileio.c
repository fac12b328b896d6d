/*
 * fileio.c — atomic file writes, directory creation and path joining.
 *
 * What it is for: every file libfm writes (config.json, *.safetensors) goes through
 * fm_atomic_open/write/commit, so that a crash, a full disk or an error half-way never leaves a
 * truncated file where a good one stood: the data goes to "PATH.tmp.XXXXXX" in the same folder,
 * is flushed and fsync'd, renamed over PATH, and the folder is fsync'd so the rename is durable.
 * What it is not for: reading files or knowing any file format (safetensors.c, config code).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/internal.h"

#define TMP_SUFFIX ".tmp.XXXXXX"

int fm_io_should_fail(const char *op) {
    static long fail_at = -1, count = 0;
    static int log = 0;
    if (fail_at < 0) {
        const char *k = getenv("FM_FAIL_IO"), *l = getenv("FM_FAIL_IO_LOG");
        fail_at = k ? atol(k) : 0;
        log = l && l[0] == '1';
    }
    if (!fail_at && !log) return 0;
    long n = __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
    if (log) fprintf(stderr, "io %ld: %s\n", n, op);
    if (n != fail_at) return 0;
    errno = EIO;
    return 1;
}

/* Frees the strings of af and zeroes it, so that a second commit/abort is harmless. */
static void release(fm_atomic_file *af) {
    fm_free(af->path);
    fm_free(af->tmp_path);
    af->fp = NULL;
    af->path = NULL;
    af->tmp_path = NULL;
    af->failed = 0;
    af->finished = 0;
}

/* Closes (if open) and removes the temporary file, then releases af. */
static void discard(fm_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    af->fp = NULL;
    if (af->tmp_path) unlink(af->tmp_path);
    release(af);
}

/* fsync of the folder holding path, so that a rename into it survives a crash. Filesystems that
 * cannot sync a directory (EINVAL) are accepted. Returns 0 or an errno value. path is cut at its
 * last '/' in place (the caller's temporary path, no longer needed): nothing is allocated once
 * the file is in place, so the rename is never followed by an out-of-memory failure. */
static int sync_parent_dir(char *path) {
    char *slash = strrchr(path, '/');
    const char *dir = path;
    if (!slash) dir = ".";
    else if (slash == path) dir = "/";
    else *slash = '\0';
    if (fm_io_should_fail("fsync folder")) return EIO;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return errno;
    int err = 0;
    if (fsync(fd) != 0 && errno != EINVAL) err = errno;
    close(fd);
    return err;
}

fm_status fm_atomic_open(fm_atomic_file *af, const char *path) {
    if (!af) return fm_fail(FM_ERR_ARG, "fm_atomic_open: no file handle given");
    memset(af, 0, sizeof *af);
    if (!path || !path[0]) return fm_fail(FM_ERR_ARG, "fm_atomic_open: empty path");

    size_t n = strlen(path);
    af->path = fm_strdup(path);
    af->tmp_path = fm_malloc(n + sizeof TMP_SUFFIX);
    if (!af->path || !af->tmp_path) {
        release(af);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(af->tmp_path, path, n);
    memcpy(af->tmp_path + n, TMP_SUFFIX, sizeof TMP_SUFFIX);

    int fd = fm_io_should_fail("create file") ? -1 : mkstemp(af->tmp_path);
    if (fd < 0) {
        int err = errno;
        release(af);
        return fm_fail(FM_ERR_IO, "cannot create a temporary file for %s: %s", path, strerror(err));
    }
    /* mkstemp creates 0600; the final file should be readable like any other output. */
    if (fchmod(fd, 0644) != 0 || !(af->fp = fdopen(fd, "wb"))) {
        int err = errno;
        close(fd);
        discard(af);
        return fm_fail(FM_ERR_IO, "cannot prepare a temporary file for %s: %s", path, strerror(err));
    }
    return FM_OK;
}

void fm_atomic_write(fm_atomic_file *af, const void *data, size_t size) {
    if (!af || !af->fp || af->failed || size == 0) return;
    errno = 0;
    if (fm_io_should_fail("write") || fwrite(data, 1, size, af->fp) != size) af->failed = errno ? errno : EIO;
}

fm_status fm_atomic_finish(fm_atomic_file *af) {
    if (!af || (!af->fp && !af->finished)) {
        if (af) release(af);
        return fm_fail(FM_ERR_ARG, "fm_atomic_finish: the file is not open");
    }
    if (af->finished) return FM_OK;
    int err = af->failed;
    if (!err && (fm_io_should_fail("flush") || fflush(af->fp) != 0)) err = errno;
    if (!err && (fm_io_should_fail("fsync file") || fsync(fileno(af->fp)) != 0)) err = errno;
    if (!err) {
        int closed = fm_io_should_fail("close") ? (fclose(af->fp), errno = EIO, -1) : fclose(af->fp);
        af->fp = NULL;
        if (closed != 0) err = errno;
    }
    if (err) {
        fm_status status = fm_fail(FM_ERR_IO, "cannot write %s: %s", af->path, strerror(err));
        discard(af);
        return status;
    }
    af->finished = 1;
    return FM_OK;
}

fm_status fm_atomic_commit(fm_atomic_file *af) {
    if (!af || (!af->fp && !af->finished)) {
        if (af) release(af);
        return fm_fail(FM_ERR_ARG, "fm_atomic_commit: the file is not open");
    }
    fm_status finished = fm_atomic_finish(af);
    if (finished != FM_OK) return finished;
    if (fm_io_should_fail("rename file") || rename(af->tmp_path, af->path) != 0) {
        fm_status status = fm_fail(FM_ERR_IO, "cannot rename %s to %s: %s", af->tmp_path,
                                   af->path, strerror(errno));
        discard(af);
        return status;
    }
    /* The data is in place; only the durability of the rename is left to check. */
    int err = sync_parent_dir(af->tmp_path);
    fm_status status = FM_OK;
    if (err)
        status = fm_fail(FM_ERR_IO, "%s was written but its folder could not be synced: %s",
                         af->path, strerror(err));
    release(af);
    return status;
}

void fm_atomic_abort(fm_atomic_file *af) {
    if (af) discard(af);
}

fm_status fm_mkdir(const char *dir) {
    if (!dir || !dir[0]) return fm_fail(FM_ERR_ARG, "fm_mkdir: empty directory name");
    if (fm_io_should_fail("mkdir")) return fm_fail(FM_ERR_IO, "cannot create directory %s: %s", dir, strerror(EIO));
    if (mkdir(dir, 0755) == 0) return FM_OK;
    int err = errno;
    struct stat sb;
    if (err == EEXIST && stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return FM_OK;
        return fm_fail(FM_ERR_IO, "cannot create directory %s: it exists and is not a directory", dir);
    }
    return fm_fail(FM_ERR_IO, "cannot create directory %s: %s", dir, strerror(err));
}

char *fm_path_join(const char *dir, const char *name) {
    size_t nd = strlen(dir), nn = strlen(name);
    int slash = nd > 0 && dir[nd - 1] != '/'; /* no doubled '/', no leading '/' for "" */
    char *out = fm_malloc(nd + (size_t)slash + nn + 1);
    if (!out) return NULL;
    memcpy(out, dir, nd);
    if (slash) out[nd] = '/';
    memcpy(out + nd + (size_t)slash, name, nn + 1);
    return out;
}
