#!/usr/bin/env bash
# eval_speed.sh — fm eval --tasks with its shared-context cache and batched continuations beside
# the plain way (--no-cache: one full forward per choice), in one run: ROUNDS rounds alternating
# the order, items per second of each, and the median ratio.
# Usage: bench/eval_speed.sh --model DIR --task NAME|FILE [--limit 200] [--rounds 5] [--shots 0]
#                            [--threads 2] [--fm build/fm]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL= TASK= LIMIT=200 ROUNDS=5 SHOTS=0 THREADS=2 FM=build/fm
while [ $# -gt 0 ]; do
    case $1 in
    --model) MODEL=$2; shift 2 ;;
    --task) TASK=$2; shift 2 ;;
    --limit) LIMIT=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --shots) SHOTS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --fm) FM=$2; shift 2 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "eval_speed.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$MODEL" ] && [ -n "$TASK" ] || { echo "eval_speed.sh: give --model and --task" >&2; exit 2; }
# seconds of one evaluation (extra flags after the common ones)
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$FM" eval --model "$MODEL" --tasks "$TASK" --limit "$LIMIT" --shots "$SHOTS" --threads "$THREADS" "$@" >/dev/null
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'
}
n=$("$FM" eval --model "$MODEL" --tasks "$TASK" --limit "$LIMIT" --shots "$SHOTS" --json | grep -o '"n":[[:space:]]*[0-9]*' | head -1 | grep -o '[0-9]*$')
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then plain=$(timed --no-cache); cached=$(timed); else cached=$(timed); plain=$(timed --no-cache); fi
    ratio=$(awk -v p="$plain" -v c="$cached" 'BEGIN { printf "%.3f", p / c }')
    ratios+=("$ratio")
    echo "round $r: $n items; plain $(awk -v t="$plain" -v n="$n" 'BEGIN { printf "%.1f", n / t }') items/s," \
         "cached + batched $(awk -v t="$cached" -v n="$n" 'BEGIN { printf "%.1f", n / t }') items/s, ratio $ratio"
done
echo "median ratio over $ROUNDS rounds (cached + batched / plain items per second): $(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
