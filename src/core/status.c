/*
 * status.c — fm_status names and the per-thread last-error message.
 *
 * What it is for: fm_fail() records why a call failed so that the caller (the CLI, the server)
 * can show it; fm_last_error() reads it back. It is not a logger: the library never prints.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

static _Thread_local char last_error[1024];

const char *fm_last_error(void) { return last_error; }

const char *fm_status_name(fm_status status) {
    switch (status) {
    case FM_OK: return "ok";
    case FM_ERR_IO: return "I/O error";
    case FM_ERR_FORMAT: return "format error";
    case FM_ERR_CONFIG: return "configuration error";
    case FM_ERR_MISMATCH: return "mismatch";
    case FM_ERR_NOMEM: return "out of memory";
    case FM_ERR_ARG: return "invalid argument";
    case FM_ERR_NONFINITE: return "non-finite value";
    }
    return "unknown status";
}

fm_status fm_fail(fm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

fm_status fm_fail_prefix(fm_status status, const char *fmt, ...) {
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t plen = strnlen(prefix, sizeof last_error - 1);
    size_t olen = strnlen(old, sizeof last_error - 1 - plen);
    memcpy(last_error, prefix, plen);
    memcpy(last_error + plen, old, olen);
    last_error[plen + olen] = '\0';
    return status;
}
