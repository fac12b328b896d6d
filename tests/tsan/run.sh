#!/usr/bin/env bash
# run.sh — ThreadSanitizer check of sessions on threads: builds the library's sources and
# tests/tsan/two_sessions.c with -fsanitize=thread (without -fopenmp: libgomp is not
# instrumented; tests/tsan/omp.h stands in for OpenMP's header, found first on the include
# path, and the #pragma omp lines are ignored; -Wno-unused-variable: variables that only an
# OpenMP clause reads), then runs it. Exits 0 only when the program
# agrees with itself and TSan reported nothing.
# Usage: tests/tsan/run.sh [BUILD_DIR]   (default build/tsan)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/tsan}
mkdir -p "$out"
CC=${CC:-gcc}
flags=(-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=thread -march=native -ffp-contract=fast
       -Wall -Wextra -Wno-unknown-pragmas -Wno-unused-variable -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
       -Itests/tsan -Iinclude -Isrc)
objs=()
for src in src/*/*.c; do
    obj="$out/$(echo "${src%.c}" | tr / _).o"
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include src tests/tsan -name '*.h' -newer "$obj" -print -quit)" ]; then
        "$CC" "${flags[@]}" -c "$src" -o "$obj"
    fi
    objs+=("$obj")
done
"$CC" "${flags[@]}" tests/tsan/two_sessions.c "${objs[@]}" -o "$out/two_sessions" -lcjson -lutf8proc -lmicrohttpd -lpng -lz -lm -lpthread
# every report printed (not only the first); exit status 66 when there was any
TSAN_OPTIONS="halt_on_error=0 exitcode=66 history_size=4 ${TSAN_OPTIONS:-}" "$out/two_sessions"
