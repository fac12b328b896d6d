#!/usr/bin/env bash
# dist_speed.sh — data-parallel speed on one machine (docs/distributed.md): on shapes (ii) and
# (iii) of bench/compare.sh, fm pretrain as 1 process x 2 threads against mpirun -np 2 x 1 thread,
# the latter with the gradient all-reduce overlapped with the backward (--overlap 1)
# and after it (--overlap 0, the default). Per run: the median tokens/s over the steps after the first two,
# the step time it implies, and the mean time per step a rank spent in the gradient sums after
# its backward (metrics.jsonl's allreduce_s: the wait the overlap did not hide). The three runs
# alternate, ROUNDS times (the machine may be shared: alternating spreads other jobs' load over
# all three), and the ratio 2 ranks / 1 process is reported per round and as the median.
# What it is not: a test (no pass or fail), or a multi-machine measurement.
#
# Usage: bench/dist_speed.sh [PATH/TO/fm] [TEXT]   env: ROUNDS (5), STEPS (20), SHAPES ("ii iii"),
#        RANK_FLAGS (more flags for the 2-rank runs, e.g. "--zero 1")
# TEXT: a plain-text corpus for the tokenizers (default: the King James Bible from the bible-kjv
# package's `bible` program and 40 MB of the Debian changelogs in /usr/share/doc, enough text for
# (ii)'s 50257 tokens). Needs mpirun (OpenMPI) and an fm built with MPI.
set -u
FM=$(realpath "${1:-build/fm}")
# a copy, so that rebuilding fm meanwhile does not break the runs
cp "$FM" "${TMPDIR:-/tmp}/fm_dist_speed_bin.$$" && FM=${TMPDIR:-/tmp}/fm_dist_speed_bin.$$
TEXT=${2:-}
ROUNDS=${ROUNDS:-5} STEPS=${STEPS:-20} SHAPES=${SHAPES:-"ii iii"}
read -r -a rank_flags <<<"${RANK_FLAGS:-}"
tmp=$(mktemp -d /tmp/fm_dist_speed_XXXXXX)
trap 'rm -rf "$tmp" "$FM"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)

"$FM" pretrain --help | grep -q "data parallel: MPI" || { echo "dist_speed: $FM was built without MPI" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "dist_speed: mpirun is not installed" >&2; exit 1; }
if [ -z "$TEXT" ]; then
    command -v bible >/dev/null || { echo "dist_speed: give a TEXT corpus (or install bible-kjv)" >&2; exit 1; }
    TEXT=$tmp/kjv.txt
    { bible -f Gen1:1-Rev22:21; zcat -f /usr/share/doc/*/changelog*.gz 2>/dev/null | head -c 40000000; } >"$TEXT"
fi

# shape NAME: the model and batch flags of bench/compare.sh's shape (vocabulary apart)
shape() {
    case $1 in
    ii) echo "--layers 6 --dim 384 --heads 6 --context 128 --batch 8 --seq 128" ;;
    iii) echo "--layers 4 --dim 256 --heads 4 --context 128 --batch 16 --seq 128" ;;
    esac
}
vocab() { case $1 in ii) echo 50257 ;; iii) echo 4096 ;; esac; }

# run NAME OUT CMD...: the run's median tokens/s and mean allreduce_s past step 2, "tok_s comm_s"
run() {
    local out=$2
    shift 2
    rm -rf "$out"
    "$@" --out "$out" >"$out.log" 2>&1 || { echo "failed: $*" >&2; tail -3 "$out.log" >&2; echo "0 0"; return; }
    local lines
    lines=$(grep '"loss"' "$out/metrics.jsonl" | sed 's/[{}"]//g' | awk -F, '
        { s = t = c = 0
          for (i = 1; i <= NF; i++) { split($i, kv, ":"); if (kv[1] == "step") s = kv[2];
                                      if (kv[1] == "tokens_per_s") t = kv[2]; if (kv[1] == "allreduce_s") c = kv[2] }
          if (s > 2) print t, c }')
    local tok comm
    tok=$(awk '{ print $1 }' <<<"$lines" | sort -g | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    comm=$(awk '{ c += $2 } END { printf "%.6f", NR ? c / NR : 0 }' <<<"$lines")
    echo "$tok $comm"
}

for s in $SHAPES; do
    "$FM" tokenizer train --vocab "$(vocab "$s")" --out "$tmp/tok_$s.json" "$TEXT" >/dev/null || exit 1
    "$FM" data prepare --tokenizer "$tmp/tok_$s.json" --out "$tmp/data_$s" "$TEXT" >/dev/null || exit 1
    v=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['model']['vocab']) + \
        len(json.load(open(sys.argv[1])).get('added_tokens', [])))" "$tmp/tok_$s.json" 2>/dev/null || echo "?")
    flags=($(shape "$s") --data "$tmp/data_$s" --steps "$STEPS" --eval-every 100000 --eval-tokens 1024 --save-every 100000
           --sample-every 0 --seed 1)
    tokens=$(shape "$s" | awk '{ for (i = 1; i < NF; i++) { if ($i == "--batch") b = $(i + 1); if ($i == "--seq") t = $(i + 1) } }
                               END { print b * t }')
    echo "shape ($s): $(shape "$s")${RANK_FLAGS:+, ranks with $RANK_FLAGS}, vocabulary $v (asked $(vocab "$s")), $tokens tokens per step, $STEPS steps, $ROUNDS rounds"
    printf "%-6s %12s %12s %12s %10s %10s %12s %12s\n" round "1x2 tok/s" "2x1 ovl" "2x1 no-ovl" "ratio ovl" "ratio no" \
        "comm ovl ms" "comm no ms"
    ratios=()
    ratios_no=()
    for r in $(seq "$ROUNDS"); do
        read -r one _ < <(run one "$tmp/one" "$FM" pretrain "${flags[@]}" --threads 2)
        read -r ovl covl < <(run ovl "$tmp/ovl" "${mpi[@]}" "$FM" pretrain "${flags[@]}" "${rank_flags[@]}" --threads 1 --overlap 1)
        read -r nov cnov < <(run nov "$tmp/nov" "${mpi[@]}" "$FM" pretrain "${flags[@]}" "${rank_flags[@]}" --threads 1 --overlap 0)
        ra=$(awk -v a="$ovl" -v b="$one" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
        rn=$(awk -v a="$nov" -v b="$one" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
        ratios+=("$ra")
        ratios_no+=("$rn")
        printf "%-6s %12s %12s %12s %10s %10s %12.2f %12.2f\n" "$r" "$one" "$ovl" "$nov" "$ra" "$rn" \
            "$(awk -v c="$covl" 'BEGIN { print 1000 * c }')" "$(awk -v c="$cnov" 'BEGIN { print 1000 * c }')"
    done
    med() { printf "%s\n" "$@" | sort -g | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
    echo "shape ($s): median ratio 2 ranks x 1 thread / 1 process x 2 threads: $(med "${ratios[@]}") with overlap," \
        "$(med "${ratios_no[@]}") without"
done
