# cli_lib.sh — what the command-line test scripts share (sourced, not run): pass/fail counting,
# `expect` for a command's exit status and output, and the closing summary line.

passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); }
bad() {
    failed=$((failed + 1))
    echo "FAIL $*"
}

# expect NAME STATUS PATTERN -- COMMAND...: exit status and a pattern (grep -E) in stdout+stderr
expect() {
    local name=$1 want=$2 pattern=$3
    shift 4
    local out status
    out=$("$@" 2>&1)
    status=$?
    if [ "$status" -eq "$want" ] && grep -qE -- "$pattern" <<<"$out"; then
        ok
    else
        bad "$name: exit $status (want $want), output:"
        sed 's/^/    /' <<<"$out" | head -5
    fi
}

# lambs_corpus N: prints N lines of the tests' counting rhyme ("Line i: the i%7 lambs and i%5 sheep
# went up/down the hill."), the small varied corpus the training tests tokenize
lambs_corpus() {
    local i
    for i in $(seq 1 "$1"); do
        echo "Line $i: the $((i % 7)) lambs and $((i % 5)) sheep went $([ $((i % 3)) -eq 0 ] && echo up || echo down) the hill."
    done
}

# summary LABEL: prints "LABEL: N passed, N failed[, N skipped]" and returns non-zero on any failure
summary() {
    local note=""
    [ "$skipped" -gt 0 ] && note=", $skipped skipped"
    echo "$1: $passed passed, $failed failed$note"
    [ "$failed" -eq 0 ]
}

# ---- a directory nobody may write into, root included
# unwritable DIR: makes DIR unwritable to the commands the test runs next, and proves it by trying
# to create a file there the way they will. Root (CAP_DAC_OVERRIDE) writes into a 0555 directory,
# so as root it tries, in order: a read-only bind mount of DIR onto itself, `chattr +i DIR`, and
# running the commands as the unprivileged user nobody (setpriv). On success it returns 0 and sets
# unwritable_how (the way) and as_writer (a command prefix to put before the commands: empty, or
# setpriv ...); otherwise it returns 1 with the reason in unwritable_why, and the caller skips
# the case, printing that reason. FM_TEST_UNWRITABLE=chmod|mount|chattr|setpriv forces one way.
# writable DIR undoes it; cleanup_unwritable (for EXIT traps) undoes every one still in place.
unwritable_dirs=()
as_writer=()
# the reasons a write into such a folder fails with (EROFS, EACCES, EPERM), for messages' patterns
why_unwritable="Read-only file system|Permission denied|Operation not permitted"
as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
can_write() { # can_write DIR [PREFIX...]: creates and removes a file in DIR
    local dir=$1 probe="$1/.fm_probe_$$"
    shift
    if "$@" sh -c ': >"$1"' sh "$probe" 2>/dev/null; then rm -f "$probe"; return 0; fi
    return 1
}
unwritable() {
    local dir=$1 way ways=(chmod mount chattr setpriv)
    [ -n "${FM_TEST_UNWRITABLE:-}" ] && ways=("$FM_TEST_UNWRITABLE")
    unwritable_how="" unwritable_why="" as_writer=()
    unwritable_dirs+=("$dir")
    for way in "${ways[@]}"; do
        case $way in
        chmod) chmod 0555 "$dir" && ! can_write "$dir" && unwritable_how="chmod 0555" ;;
        mount) mount --bind "$dir" "$dir" 2>/dev/null && { mount -o remount,bind,ro "$dir" 2>/dev/null || umount "$dir"; } &&
               ! can_write "$dir" && unwritable_how="read-only bind mount" ;;
        chattr) chattr +i "$dir" 2>/dev/null && ! can_write "$dir" && unwritable_how="chattr +i" ;;
        setpriv) # as nobody: DIR 0555, its parent open to others (the tests' files live there), and
                 # the command reachable by nobody
            if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && chmod 0555 "$dir" &&
               chmod go+rx "$(dirname "$dir")" &&
               "${as_nobody[@]}" test -x "$FM" -a -r "$dir" && ! can_write "$dir" "${as_nobody[@]}"; then
                unwritable_how="as user nobody (setpriv)" as_writer=("${as_nobody[@]}")
            fi ;;
        esac
        [ -n "$unwritable_how" ] && return 0
        writable "$dir"
    done
    unwritable_why="uid $(id -u) can write into a 0555 directory, and neither a read-only bind mount, chattr +i nor setpriv to user nobody stopped it (tried: ${ways[*]})"
    return 1
}
writable() {
    local dir=$1
    while grep -q " $(realpath "$dir") " /proc/self/mounts 2>/dev/null && umount "$dir" 2>/dev/null; do :; done
    chattr -i "$dir" 2>/dev/null
    chmod 0755 "$dir"
}
cleanup_unwritable() {
    local dir
    for dir in "${unwritable_dirs[@]}"; do [ -d "$dir" ] && writable "$dir"; done
}
# skip_case NAME REASON: a case that cannot run here, said so and counted apart from the passes
skip_case() {
    skipped=$((skipped + 1))
    echo "SKIP $1: $2"
}

# mpi_test_env: OpenMPI as CI runs it: as root, on fewer cores than ranks, in containers without the
# kernel's cross-memory attach; OpenMPI's own allocations are not fm's leaks (a sanitizer build).
mpi_test_env() {
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    export OMPI_MCA_btl_vader_single_copy_mechanism=none
    export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
}
