#!/usr/bin/env bash
# aarch64.sh — fm on aarch64, for correctness (not speed): cross-builds fm and the cmocka test
# programs with Debian's aarch64-linux-gnu-gcc and runs them under qemu-user's emulation.
# The Makefile compiles only the generic copy of the kernels for a compiler whose target is not
# x86-64, so this is the generic path built for another architecture: unsigned char, fused
# multiply-add contracted by the compiler, another libc and libgomp. MPI is left out (MPI=0).
# It runs every test program (test_kernels without the tests in FM_AARCH64_SKIP) and the CLI
# scripts in FM_AARCH64_SCRIPTS, given a wrapper that runs the aarch64 fm under qemu-aarch64.
# Usage: tests/cross/aarch64.sh [BUILD_DIR]   (default build/aarch64; make test-aarch64)
#   FM_AARCH64_SCRIPTS  CLI scripts under tests/ (default: cli_test.sh cli_tokenizer_test.sh
#                       cli_pretrain_test.sh)
#   FM_AARCH64_SKIP     test_kernels' tests to leave out, a cmocka pattern (* and ?); default
#                       test_gemm_rows_independent (11 minutes under qemu alone; the bfloat16
#                       variant of the same check runs). Empty: all of them.
# Installs what it needs first (scripts/install-deps.sh --aarch64). Prints each program's result
# and time, then "aarch64 (qemu): N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/aarch64}
scripts=${FM_AARCH64_SCRIPTS-cli_test.sh cli_tokenizer_test.sh cli_pretrain_test.sh}
export FM_TEST_SKIP=${FM_AARCH64_SKIP-test_gemm_rows_independent}
# Idle OpenMP threads that spin take, under emulation, the cores the working threads need
# (test_lora: 1.6 times as long with the default policy); tests do not depend on it.
export OMP_WAIT_POLICY=passive
limit=900 # seconds for one program or script: a hang counts as a failure

scripts/install-deps.sh --aarch64 || exit 1
tests=()
for src in tests/test_*.c; do
    name=${src#tests/}
    tests+=("$out/tests/${name%.c}")
done
# the Makefile's check for missing packages looks at the native ones, which --aarch64 includes
make -j2 --no-print-directory CC=aarch64-linux-gnu-gcc MPI=0 BUILD="$out" "$out/fm" "${tests[@]}" || exit 1

fm_abs=$(cd "$out" && pwd)/fm
printf '#!/bin/sh\n# fm built for aarch64, run under qemu-user (tests/cross/aarch64.sh)\nexec qemu-aarch64 "%s" "$@"\n' \
    "$fm_abs" >"$out/fm-qemu"
chmod +x "$out/fm-qemu"
if ! "$out/fm-qemu" info --cpu | grep -q '^cpu path *generic (this CPU runs: generic)$'; then
    echo "aarch64: $out/fm under qemu-aarch64 does not run, or runs a path other than generic" >&2
    exit 1
fi

passed=0 failed=0 failures=()
# run NAME COMMAND...: runs it with the time limit, prints its time and counts it
run() {
    local name=$1 start status
    shift
    echo "== $name"
    start=$(date +%s)
    timeout "$limit" "$@"
    status=$?
    if [ $status -eq 0 ]; then
        passed=$((passed + 1))
        echo "== $name: passed, $(($(date +%s) - start)) s"
    else
        failed=$((failed + 1)) failures+=("$name")
        echo "== $name: FAILED (exit $status$([ $status -eq 124 ] && echo ", over $limit s")), $(($(date +%s) - start)) s"
    fi
}
start_all=$(date +%s)
for t in "${tests[@]}"; do run "$t" qemu-aarch64 "$t"; done
for s in $scripts; do run "tests/$s" "tests/$s" "$out/fm-qemu"; done
[ -n "$FM_TEST_SKIP" ] && echo "left out of test_kernels: $FM_TEST_SKIP (FM_AARCH64_SKIP)"
echo "aarch64 (qemu): $passed passed, $failed failed in $(($(date +%s) - start_all)) s"
[ $failed -eq 0 ] || echo "failed: ${failures[*]}"
[ $failed -eq 0 ]
