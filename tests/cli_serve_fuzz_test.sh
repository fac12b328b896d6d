#!/usr/bin/env bash
# cli_serve_fuzz_test.sh — fm serve under malformed and hostile requests (tests/serve/fuzz.py:
# bad JSON, wrong types for every field, absurd values, lying Content-Length, huge bodies and
# headers, chunked bodies, a byte at a time, idle half-sent requests, clients leaving before the
# answer and mid-stream, unknown routes and methods, 300 seeded random mutations of valid bodies).
# Every answer fm gives must be OpenAI's error object where it is an error, /health must answer
# after every case, the slots must free when clients leave, SIGTERM must then stop the server
# with status 0, and its stderr must hold no sanitizer report (under `make asan` this runs the
# AddressSanitizer + UndefinedBehaviorSanitizer build, leak check at exit included). The longer
# run is bench/serve_fuzz.sh. Skipped, saying so, without python3 (scripts/install-deps.sh --python).
# Usage: tests/cli_serve_fuzz_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_serve_fuzz_test.sh PATH/TO/fm}")
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
source "$ROOT/tests/cli_lib.sh"
tmp=$(mktemp -d /tmp/fm_serve_fuzz_XXXXXX)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

if ! command -v python3 >/dev/null; then
    skip_case "the request fuzz" "python3 is not installed (scripts/install-deps.sh --python)"
    summary "cli_serve_fuzz_test"
    exit
fi
cp -r "$ROOT/tests/ref/tasks" m
"$FM" serve --model m --port 0 --threads 1 --parallel 4 --max-queue 16 --quiet 2>server.err &
server_pid=$!
port=""
for _ in $(seq 300); do
    port=$(sed -n 's/^listening on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' server.err)
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    bad "the server did not start: $(head -5 server.err)"
else
    if out=$(python3 "$ROOT/tests/serve/fuzz.py" 127.0.0.1 "$port" --rounds "${FM_FUZZ_ROUNDS:-300}" 2>&1) &&
        grep -q "all passed" <<<"$out"; then
        ok
    else
        bad "tests/serve/fuzz.py:"
        grep -v '^ok ' <<<"$out" | head -30 | sed 's/^/    /'
    fi
    kill -TERM "$server_pid"
    wait "$server_pid"
    status=$?
    server_pid=""
    [ $status -eq 0 ] && grep -q '^stopped' server.err && ok || bad "SIGTERM after the fuzz: exit $status: $(tail -3 server.err)"
    if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: ' server.err; then
        bad "a sanitizer report in the server's stderr:"
        grep -A 12 -E 'ERROR: |runtime error:' server.err | head -40 | sed 's/^/    /'
    else
        ok
    fi
fi
summary "cli_serve_fuzz_test"
