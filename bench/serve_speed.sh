#!/usr/bin/env bash
# serve_speed.sh — fm serve's speed on GPT-2 124M shapes (12 x 768, 12 heads, vocabulary 50257,
# context 1024, float32; random weights from `fm init`, GPT-2's own tokenizer files from
# tests/fixtures/tokenizer/gpt2), side by side in one run, the sides taken in turn each round
# because the machine is shared with other work (the load average is printed each round):
#   (a) 8 concurrent streams: `fm serve --parallel 8`, 8 completions at once (prompts of PROMPT
#       token ids, GEN tokens each, greedy, ignore_eos), aggregate generated tokens/s over the wall
#       time from the first request sent to the last answer, against the compute limit: the FMA
#       peak measured that round (bench/fma_peak.c, same threads) / (2 x parameters) tokens/s;
#       the server's CPU time per generated token (/proc: user + system) is printed beside it;
#   (b) one stream through HTTP (the same request alone, streamed, read to [DONE]) against
#       `fm bench generate --model` (same prompt length, GEN, greedy) total_tokens_per_s, both
#       counting the prompt's time and GEN tokens.
# Targets (issue 16): (a) >= 40% of the compute limit, (b) >= 90% of fm bench generate.
# Usage: bench/serve_speed.sh [PATH/TO/fm] [ROUNDS]      (defaults build/fm, 5)
#        GEN=64 PROMPT=16 THREADS=(all cores) OMP_WAIT_POLICY=passive (both sides alike)
# Prints each round's figures and the medians of the per-round ratios. Needs curl, gcc, python3.
# Not a test: figures only (docs/serve.md keeps them).
set -u
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
cd "$ROOT"
FM=$(realpath "${1:-build/fm}")
ROUNDS=${2:-5}
GEN=${GEN:-64} PROMPT=${PROMPT:-16}
THREADS=${THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
work=$(dirname "$FM")/serve-speed
mkdir -p "$work"
model=$work/gpt2-124m
if [ ! -f "$model/tokenizer.json" ]; then
    echo "== fm init: GPT-2 124M shapes, random weights"
    rm -rf "$model"
    "$FM" init --out "$model" --layers 12 --dim 768 --heads 12 --vocab 50257 --context 1024 >/dev/null || exit 1
    gzip -dc tests/fixtures/tokenizer/gpt2/encoder.json.gz >"$model/encoder.json"
    gzip -dc tests/fixtures/tokenizer/gpt2/vocab.bpe.gz >"$model/vocab.bpe"
    # the model directory wants tokenizer.json: GPT-2's two files in Hugging Face's layout
    python3 - "$model" <<'PY' || exit 1
import json, sys
d = sys.argv[1]
enc = json.load(open(f"{d}/encoder.json"))
merges = [l for l in open(f"{d}/vocab.bpe", encoding="utf-8").read().split("\n")[1:] if l]
json.dump({"version": "1.0", "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": True}],
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": enc, "merges": merges}}, open(f"{d}/tokenizer.json", "w"))
PY
fi
params=$("$FM" info --model "$model" | sed -n 's/^parameters *//p')
gcc -O2 -march=native -mno-avx512bf16 -ffp-contract=fast -fopenmp bench/fma_peak.c -o "$work/fma_peak" || exit 1

"$FM" serve --model "$model" --port 0 --parallel 8 --max-queue 64 --threads "$THREADS" --quiet 2>"$work/server.err" &
pid=$!
trap 'kill -9 $pid 2>/dev/null' EXIT
port=""
for _ in $(seq 600); do
    port=$(sed -n 's/^listening on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$work/server.err")
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start: $(head -3 "$work/server.err")"; exit 1; }
url=http://127.0.0.1:$port/v1/completions
# body I: a prompt of PROMPT token ids (different for each I), GEN tokens, greedy
body() {
    local ids
    ids=$(awk -v n="$PROMPT" -v s="$1" 'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", int(rand() * 50000) }')
    printf '{"prompt":[%s],"max_tokens":%d,"temperature":0,"ignore_eos":true%s}' "$ids" "$GEN" "${2:-}"
}
now() { date +%s.%N; }
echo "== $(head -1 "$work/server.err"); $params parameters; $THREADS threads; prompt $PROMPT, $GEN tokens; OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
# warm-up: 8 at once, so that every slot's key/value cache has been touched (its first use faults pages in)
for i in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null "$url" -d "$(body "$i")" & done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' /proc/$pid/stat; } # the server's CPU seconds
ratios_a=() ratios_b=()
for r in $(seq "$ROUNDS"); do
    peak=$(OMP_NUM_THREADS=$THREADS "$work/fma_peak" | sed -n 's/^fma_peak gflops=\([0-9.]*\).*/\1/p')
    limit=$(awk -v p="$peak" -v n="$params" 'BEGIN { printf "%.1f", p * 1e9 / (2 * n) }')
    # (a) 8 streams at once
    c0=$(cpu) t0=$(now)
    for i in 1 2 3 4 5 6 7 8; do curl -s -o "$work/a$i.json" "$url" -d "$(body "$r$i")" & done
    wait $(jobs -p | grep -v "^$pid$") 2>/dev/null
    t1=$(now) c1=$(cpu)
    got=$(cat "$work"/a?.json | grep -o '"completion_tokens":[0-9]*' | cut -d: -f2 | awk '{ s += $1 } END { print s + 0 }')
    agg=$(awk -v g="$got" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", g / (b - a) }')
    cpu_ms=$(awk -v g="$got" -v c0="$c0" -v c1="$c1" 'BEGIN { printf "%.1f", 1e3 * (c1 - c0) / g }')
    # (b) one stream through HTTP, then fm bench generate
    t0=$(now)
    curl -sN "$url" -d "$(body "${r}9" ',"stream":true')" >"$work/b.txt"
    t1=$(now)
    n_b=$(grep -c '^data: {' "$work/b.txt")
    [ "$(grep -v '^$' "$work/b.txt" | tail -1)" = "data: [DONE]" ] || echo "warning: the stream did not end with [DONE]"
    http=$(awk -v g="$GEN" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", g / (b - a) }')
    line=$("$FM" bench generate --model "$model" --prompt "$PROMPT" --gen "$GEN" --steps 3 --warmup 1 --threads "$THREADS" 2>/dev/null)
    direct=$(sed -n 's/.*total_tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
    decode=$(sed -n 's/.*decode_tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
    ra=$(awk -v a="$agg" -v l="$limit" 'BEGIN { printf "%.3f", a / l }')
    rb=$(awk -v h="$http" -v d="$direct" 'BEGIN { printf "%.3f", h / d }')
    ratios_a+=("$ra") ratios_b+=("$rb")
    echo "round $r (load $(cut -d' ' -f1 /proc/loadavg)): peak $peak GFLOP/s -> limit $limit tok/s; 8 streams $agg tok/s ($got tokens) = $(awk -v x="$ra" 'BEGIN { printf "%.1f", 100 * x }')% of the limit ($cpu_ms CPU ms per token); one stream over HTTP $http tok/s ($n_b events), fm bench generate $direct tok/s (decode alone $decode) = $(awk -v x="$rb" 'BEGIN { printf "%.1f", 100 * x }')%"
done
kill -TERM $pid
wait $pid
trap - EXIT
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(median "${ratios_a[@]}") mb=$(median "${ratios_b[@]}")
echo "median over $ROUNDS rounds: 8 streams at $(awk -v x="$ma" 'BEGIN { printf "%.1f", 100 * x }')% of the compute limit (target 40%); one HTTP stream at $(awk -v x="$mb" 'BEGIN { printf "%.1f", 100 * x }')% of fm bench generate (target 90%)"
