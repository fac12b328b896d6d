#!/usr/bin/env bash
# old_vs_new.sh — two fm binaries side by side on the training configurations (i)-(iii), in one
# run: ROUNDS rounds, the order of the two alternating between rounds, each run `fm bench train`
# (median step of STEPS timed steps). Prints each run, then per configuration the median over the
# rounds of new/old tokens per second. With --freeze it also times (iii) with every 2-D weight of
# the blocks frozen beside the full step (new binary). The machine's FMA peak and memory
# bandwidth are measured in the same run, before and after.
# Usage: bench/old_vs_new.sh --old PATH --new PATH [--rounds 5] [--steps 10] [--threads 2]
#                            [--configs "i ii iii"] [--freeze]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD= NEW= ROUNDS=5 STEPS=10 THREADS=2 CONFIGS="i ii iii" FREEZE=0
while [ $# -gt 0 ]; do
    case $1 in
    --old) OLD=$2; shift 2 ;;
    --new) NEW=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --freeze) FREEZE=1; shift ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "old_vs_new.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -x "$OLD" ] && [ -x "$NEW" ] || { echo "old_vs_new.sh: give --old and --new fm binaries" >&2; exit 2; }

config() {
    case $1 in
    i) echo "--layers 12 --dim 768 --heads 12 --vocab 50257 --batch 4 --seq 64" ;;
    ii) echo "--layers 6 --dim 384 --heads 6 --vocab 50257 --batch 8 --seq 128" ;;
    iii) echo "--layers 4 --dim 256 --heads 4 --vocab 4096 --batch 16 --seq 128" ;;
    *) echo "old_vs_new.sh: unknown configuration '$1'" >&2; exit 2 ;;
    esac
}
FROZEN=(--freeze 'h.*.attn.c_attn.weight' --freeze 'h.*.attn.c_proj.weight' --freeze 'h.*.mlp.c_fc.weight'
        --freeze 'h.*.mlp.c_proj.weight')

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
gcc -O2 -march=native -ffp-contract=fast -fopenmp bench/fma_peak.c -o "$tools/fma_peak"
gcc -O2 -march=native -fopenmp bench/membw.c -o "$tools/membw"
machine() { OMP_NUM_THREADS=$THREADS "$tools/fma_peak" | head -1; OMP_NUM_THREADS=$THREADS "$tools/membw"; }
echo "== machine before"; machine

# tok_s BINARY CONFIG [EXTRA...]: tokens per second of one fm bench train run
tok_s() {
    local bin=$1 cfg=$2
    shift 2
    # shellcheck disable=SC2046
    "$bin" bench train $(config "$cfg") --threads "$THREADS" --steps "$STEPS" --warmup 3 "$@" 2>/dev/null |
        grep -o 'tokens_per_s=[0-9.]*' | cut -d= -f2
}

declare -A ratios frozen_ratios
for r in $(seq 1 "$ROUNDS"); do
    for cfg in $CONFIGS; do
        if [ $((r % 2)) -eq 1 ]; then o=$(tok_s "$OLD" "$cfg"); n=$(tok_s "$NEW" "$cfg")
        else n=$(tok_s "$NEW" "$cfg"); o=$(tok_s "$OLD" "$cfg"); fi
        ratio=$(awk -v a="$n" -v b="$o" 'BEGIN { printf "%.4f", a / b }')
        ratios[$cfg]+="$ratio "
        echo "round $r ($cfg): old $o tok/s, new $n tok/s, new/old $ratio"
        if [ "$FREEZE" = 1 ] && [ "$cfg" = iii ]; then
            if [ $((r % 2)) -eq 1 ]; then f=$(tok_s "$NEW" iii "${FROZEN[@]}"); full=$(tok_s "$NEW" iii)
            else full=$(tok_s "$NEW" iii); f=$(tok_s "$NEW" iii "${FROZEN[@]}"); fi
            fr=$(awk -v a="$full" -v b="$f" 'BEGIN { printf "%.4f", a / b }') # frozen step time / full step time
            frozen_ratios[iii]+="$fr "
            echo "round $r (iii frozen 2-D block weights): full $full tok/s, frozen $f tok/s, frozen step / full step $fr"
        fi
    done
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "== medians over $ROUNDS rounds ($THREADS threads, $STEPS timed steps a run)"
for cfg in $CONFIGS; do echo "($cfg) new/old tokens per second: $(echo "${ratios[$cfg]}" | med)"; done
[ "$FREEZE" = 1 ] && echo "(iii) frozen step / full step: $(echo "${frozen_ratios[iii]:-}" | med)"
echo "== machine after"; machine
