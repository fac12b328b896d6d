#!/usr/bin/env bash
# serve_fuzz.sh — the long version of tests/cli_serve_fuzz_test.sh: tests/serve/fuzz.py against
# one `fm serve` for several seeds of ROUNDS random mutations each (every fixed case too, each
# seed), then SIGTERM (exit 0 wanted) and a look for sanitizer reports in the server's stderr.
# Build the sanitized binary first for it to mean most:
#   make BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" build-asan/fm
#   bench/serve_fuzz.sh build-asan/fm [SEEDS] [ROUNDS]     (defaults 5 seeds x 5000 rounds)
# Not a test (minutes); prints a line per seed and exits 1 on any failure.
set -u
FM=$(realpath "${1:?usage: bench/serve_fuzz.sh PATH/TO/fm [SEEDS] [ROUNDS]}")
SEEDS=${2:-5} ROUNDS=${3:-5000}
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
tmp=$(mktemp -d /tmp/fm_serve_fuzz_long_XXXXXX)
trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
cp -r "$ROOT/tests/ref/tasks" "$tmp/m"
"$FM" serve --model "$tmp/m" --port 0 --threads 1 --parallel 4 --max-queue 16 --quiet 2>"$tmp/server.err" &
pid=$!
for _ in $(seq 300); do
    port=$(sed -n 's/^listening on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$tmp/server.err")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "${port:-}" ] || { echo "the server did not start: $(head -3 "$tmp/server.err")"; exit 1; }
failed=0
for seed in $(seq "$SEEDS"); do
    start=$(date +%s)
    out=$(python3 "$ROOT/tests/serve/fuzz.py" 127.0.0.1 "$port" --seed "$seed" --rounds "$ROUNDS" 2>&1)
    echo "seed $seed: $(tail -1 <<<"$out") ($(($(date +%s) - start)) s)"
    grep -q "all passed" <<<"$out" || { failed=1; grep '^FAIL' <<<"$out" | head -20; }
done
kill -TERM $pid
wait $pid
status=$?
echo "SIGTERM: exit $status"
[ $status -eq 0 ] || failed=1
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$tmp/server.err"; then
    echo "sanitizer reports:"
    grep -A 20 -E 'ERROR: |runtime error:' "$tmp/server.err" | head -60
    failed=1
else
    echo "no sanitizer report"
fi
exit $failed
