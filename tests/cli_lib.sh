# cli_lib.sh — what the command-line test scripts share (sourced, not run): pass/fail counting,
# `expect` for a command's exit status and output, and the closing summary line.

passed=0 failed=0
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

# summary LABEL: prints "LABEL: N passed, N failed" and returns non-zero on any failure
summary() {
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
