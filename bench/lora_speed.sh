#!/usr/bin/env bash
# lora_speed.sh — LoRA's step time and peak memory beside full fine-tuning, on GPT-2 124M shapes,
# in one run (issue 14, "Speed and memory").
#
# What it is for: the figures of docs/performance.md's "LoRA fine-tuning: speed and memory". On
# L12 C768 H12 V50257 (context 1024), B8 T128 by default, THREADS threads, for each precision
# (fp32, and bf16 where the CPU has AVX512_BF16) it runs ROUNDS rounds of two fresh processes,
# `fm bench train` (full fine-tuning: every weight trainable) and `fm bench train --lora 8`
# (PEFT's GPT-2 default: r 8, alpha 8, c_attn; every weight of the model frozen), alternating
# which goes first. Each run's step time is the median of STEPS timed steps after WARMUP.
# Reported: each round, then the median over the rounds of LoRA step / full step, and the peak
# resident memory (getrusage) of each in bytes per parameter with the activation arena taken out:
# fm bench measures the resident set just before and just after the arena is sized and zeroed
# (before the first step; acts_mb in its line), and (peak_rss - acts) / parameters is the figure.
# The arena's size from the formula of docs/performance.md (plus LoRA's (N, r) buffers) is
# printed beside the measured one. The machine's FMA peak (bench/fma_peak.c) and triad bandwidth
# (bench/membw.c) are measured before and after, as bench/old_vs_new.sh does.
# Usage: bench/lora_speed.sh [--fm PATH] [--rounds 5] [--steps 3] [--warmup 1] [--threads 2]
#                            [--batch 8] [--seq 128] [--rank 8] [--targets c_attn] [--precisions "fp32 bf16"]
set -euo pipefail
cd "$(dirname "$0")/.."
FM=build/fm ROUNDS=5 STEPS=3 WARMUP=1 THREADS=2 BATCH=8 SEQ=128 RANK=8 TARGETS=c_attn PRECISIONS=
while [ $# -gt 0 ]; do
    case $1 in
    --fm) FM=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --seq) SEQ=$2; shift 2 ;;
    --rank) RANK=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --precisions) PRECISIONS=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "lora_speed.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -x "$FM" ] || { echo "lora_speed.sh: $FM not built (run make)" >&2; exit 1; }
if [ -z "$PRECISIONS" ]; then
    PRECISIONS=fp32
    grep -qw avx512_bf16 /proc/cpuinfo && PRECISIONS="fp32 bf16"
fi
L=12 C=768 NH=12 V=50257
SHAPE=(--layers $L --dim $C --heads $NH --vocab $V --context 1024 --batch "$BATCH" --seq "$SEQ")

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
gcc -O2 -march=native -ffp-contract=fast -fopenmp bench/fma_peak.c -o "$tools/fma_peak"
gcc -O2 -march=native -fopenmp bench/membw.c -o "$tools/membw"
machine() { OMP_NUM_THREADS=$THREADS "$tools/fma_peak" | head -1; OMP_NUM_THREADS=$THREADS "$tools/membw"; }
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== machine before"; machine

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
med() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
run() { # precision [extra...] -> the fm_bench line
    local p=$1
    shift
    "$FM" bench train "${SHAPE[@]}" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --precision "$p" "$@" \
        2>/dev/null | grep '^fm_bench'
}
per_param() { # line -> bytes per parameter of (peak RSS - activation arena)
    awk -v p="$(field "$1" peak_rss_mb)" -v a="$(field "$1" acts_mb)" -v n="$(field "$1" params)" \
        'BEGIN { printf "%.3f", (p - a) * 1048576 / n }'
}

# The arena from the formula (floats): L (N (10C + 2H) + 4N + B NH T) + N (8C + 2H) + 2N + 2 N V, and with
# LoRA one (N, r) buffer per adapted product and layer and one for the backward.
N=$((BATCH * SEQ)) H=$((4 * C))
n_targets=$(tr ',' '\n' <<<"$TARGETS" | awk '/^all$/ { n += 4; next } /^c_proj$/ { n += 2; next } { n++ } END { print n }')
arena=$(awk -v L=$L -v N=$N -v C=$C -v H=$H -v B="$BATCH" -v NH=$NH -v T="$SEQ" -v V=$V \
    'BEGIN { printf "%.0f", L * (N * (10 * C + 2 * H) + 4 * N + B * NH * T) + N * (8 * C + 2 * H) + 2 * N + 2 * N * V }')
echo "shape: L$L C$C H$NH V$V context 1024, B$BATCH T$SEQ, $THREADS threads, $STEPS timed steps after $WARMUP a run;" \
    "LoRA r $RANK on $TARGETS"
echo "activation arena by the formula: full $(awk -v f="$arena" 'BEGIN { printf "%.1f", 4 * f / 1048576 }') MiB," \
    "LoRA $(awk -v f="$arena" -v L=$L -v N=$N -v r="$RANK" -v k="$n_targets" \
        'BEGIN { printf "%.1f", 4 * (f + (L * k + 1) * N * r) / 1048576 }') MiB (each buffer rounded up to 16 floats, not counted here)"

for p in $PRECISIONS; do
    ratios="" full_bpp="" lora_bpp=""
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) -eq 1 ]; then
            full=$(run "$p"); lora=$(run "$p" --lora "$RANK" --lora-targets "$TARGETS")
        else
            lora=$(run "$p" --lora "$RANK" --lora-targets "$TARGETS"); full=$(run "$p")
        fi
        ratio=$(awk -v a="$(field "$lora" ms_per_step)" -v b="$(field "$full" ms_per_step)" 'BEGIN { printf "%.4f", a / b }')
        fb=$(per_param "$full") lb=$(per_param "$lora")
        ratios+="$ratio " full_bpp+="$fb " lora_bpp+="$lb "
        echo "$p round $r ($([ $((r % 2)) -eq 1 ] && echo full || echo LoRA) first):" \
            "full $(field "$full" ms_per_step) ms/step, $(field "$full" tokens_per_s) tok/s," \
            "peak RSS $(field "$full" peak_rss_mb) MiB, arena $(field "$full" acts_mb) MiB, $fb B/param;" \
            "LoRA $(field "$lora" ms_per_step) ms/step, $(field "$lora" tokens_per_s) tok/s," \
            "peak RSS $(field "$lora" peak_rss_mb) MiB (before the arena $(field "$lora" rss_before_acts_mb))," \
            "arena $(field "$lora" acts_mb) MiB, $lb B/param; LoRA/full step $ratio;" \
            "step-0 loss $(field "$full" loss0) / $(field "$lora" loss0)"
    done
    echo "== $p: median over $ROUNDS rounds: LoRA step / full step $(echo "$ratios" | med)" \
        "(rounds: $ratios); peak RSS less the arena, bytes per parameter ($(field "$full" params) parameters," \
        "$(field "$lora" trainable) trainable under LoRA): full $(echo "$full_bpp" | med), LoRA $(echo "$lora_bpp" | med)"
    echo "lora_speed precision=$p rounds=$ROUNDS step_ratio=$(echo "$ratios" | med) full_bytes_per_param=$(echo "$full_bpp" | med)" \
        "lora_bytes_per_param=$(echo "$lora_bpp" | med) params=$(field "$full" params) trainable=$(field "$lora" trainable)"
done
echo "== machine after"; machine
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
