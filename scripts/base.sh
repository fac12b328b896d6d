#!/usr/bin/env bash
# base.sh — `make base`: the English base model (docs/base-model.md). Installs the text packages
# (bible-kjv, wordnet-base, dict-gcide, fortunes, fortunes-min) and the build packages, builds fm,
# assembles the corpus (scripts/base-corpus.sh), trains an 8192-token tokenizer on its training
# part, tokenizes it with exactly the corpus's held-out part as val.bin, and pre-trains a 6-layer,
# 320-wide GPT (10.2M parameters, context 512) for a fixed number of steps: about an hour on 2
# cores. Then the held-out bits per byte beside a token-bigram baseline, and a few samples.
# Everything lands in build/base/ (the run in build/base/run).
#   FM_BASE_STEPS    training steps (3000, the hour; a smaller number checks the pipeline)
#   FM_BASE_THREADS  threads (2)
#   FM_BASE_OUT      output folder (build/base)
#   FM_BASE_BUILD    the build folder whose fm is used and built (build)
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${FM_BASE_STEPS:-3000}
THREADS=${FM_BASE_THREADS:-2}
OUT=${FM_BASE_OUT:-build/base}
BUILD=${FM_BASE_BUILD:-build}
FM=$BUILD/fm
VOCAB=8192

scripts/install-deps.sh --base
make -s -j2 BUILD="$BUILD" "$FM"
mkdir -p "$OUT"

echo "== corpus: King James, WordNet, GCIDE, fortunes (documents, lines and bytes per source)"
scripts/base-corpus.sh "$OUT/corpus"

echo "== tokenizer: byte-level BPE, $VOCAB tokens, trained on the training part only"
"$FM" tokenizer train --vocab "$VOCAB" --out "$OUT/tokenizer.json" "$OUT/corpus/train.txt"

# fm data prepare holds out the last lines of its input: given train.txt then val.txt and the
# fraction of lines val.txt holds, val.bin is exactly val.txt (checked from its report)
echo "== data: token shards, val.bin = the corpus's held-out part"
held=$(wc -l <"$OUT/corpus/val.txt")
total=$((held + $(wc -l <"$OUT/corpus/train.txt")))
fraction=$(LC_ALL=C awk -v h="$held" -v t="$total" 'BEGIN { printf "%.9f", h / t }')
"$FM" data prepare --tokenizer "$OUT/tokenizer.json" --out "$OUT/data" --val-fraction "$fraction" \
    "$OUT/corpus/train.txt" "$OUT/corpus/val.txt" | tee "$OUT/data.log"
if ! grep -q "held out the last $held of $total lines" "$OUT/data.log"; then
    echo "base.sh: fm data prepare did not hold out exactly the $held lines of val.txt" >&2
    exit 1
fi

# as in demo.sh: waiting OpenMP threads sleep (on a shared machine spinning steals the working
# core), and bfloat16 products where the CPU multiplies them natively (AVX512_BF16)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PRECISION=fp32
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && PRECISION=bf16
echo "== pre-training: 6 x 320, context 512, $STEPS steps of 8 x 512 tokens on $THREADS threads ($PRECISION products)"
rm -rf "$OUT/run"
# The recipe and how its size was measured: docs/base-model.md. The fixed step count (not
# --minutes) makes the run the same on any machine; 3000 steps of 4096 tokens (12.3M) are about
# 1.1 passes over the 11.3M training tokens.
"$FM" pretrain --data "$OUT/data" --out "$OUT/run" --layers 6 --dim 320 --heads 5 --context 512 \
    --batch 8 --lr 2e-3 --beta2 0.99 --weight-decay 0.1 --precision "$PRECISION" --steps "$STEPS" \
    --threads "$THREADS" --seed 1337 --eval-every 200 --eval-tokens 32768 --save-every 500 --sample-every 500

echo "== held-out bits per byte (lower is better)"
"$FM" eval --model "$OUT/run" --data "$OUT/data" --threads "$THREADS" | tee "$OUT/eval.txt"

echo "== generation (KV cache, temperature 0.8, top-k 40)"
for prompt in "In the beginning" "kindness (noun):" "Lantern, n." "A wise man once said"; do
    echo "--- $prompt"
    "$FM" generate --model "$OUT/run" --prompt "$prompt" --max-tokens 60 --temperature 0.8 --top-k 40 \
        --seed 1 --threads "$THREADS"
done
echo "== done: loss curve in $OUT/run/loss.svg, metrics in $OUT/run/metrics.jsonl"
