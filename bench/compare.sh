#!/usr/bin/env bash
# compare.sh — fm beside PyTorch on the same machine, same configurations, in one run.
#
# What it is for: the side-by-side figures of the README's "Speed" section. For each training
# configuration it runs `fm bench train` and bench/torch_peer.py (same model, same batch, same
# step: zero_grad, forward, cross-entropy, backward, clipping, AdamW) one after the other,
# ROUNDS times alternating, keeps each side's best median, and prints tokens/s and the ratio.
# Only ratios from one run mean anything: the machine is shared and its speed drifts.
# The peer trains fm's own weights on fm's own token stream (`fm bench train --dump`, once per
# configuration) and its step-0 loss is printed beside fm's; in float32 a difference above 1e-4
# fails the run (the peer would not be computing fm's step, and its speed would not count).
# Then generation (batch 1, a 16-token prompt, 128 greedy tokens, KV cache): fm in float32 and
# in int8 (Q8_0) beside PyTorch's float32 under inference_mode, decode-only tokens/s. Last, fm's
# thread scaling from 1 to 2 threads on (iii).
# --precision bf16 trains both sides with bfloat16 products: fm --precision bf16 against PyTorch's
# forward under torch.autocast("cpu", bfloat16) (its backward follows the autocast types).
#
# Usage: bench/compare.sh [--rounds N] [--steps N] [--configs "i ii iii vision"] [--gen-configs "i iii"]
#                         [--fm PATH] [--no-torch] [--no-generate] [--any-blas] [--precision bf16]
# The peer runs with /usr/bin/python3 and Debian's python3-torch on OpenBLAS (the OpenMP build,
# libopenblas0-openmp, with OPENBLAS_CORETYPE=SkylakeX), 2 threads, flushed denormals.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=1 STEPS=10 WARMUP=3 CONFIGS="i ii iii" GEN_CONFIGS="i iii" FM=build/fm TORCH=1 THREADS=2 GENERATE=1 ANY_BLAS=0
PRECISION=fp32
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --fm) FM=$2; shift 2 ;;
    --no-torch) TORCH=0; shift ;;
    --no-generate) GENERATE=0; shift ;;
    --any-blas) ANY_BLAS=1; shift ;;
    --precision) PRECISION=$2; shift 2 ;;
    --gen-configs) GEN_CONFIGS=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

config() { # name -> fm/peer flags
    case $1 in
    i) echo "--layers 12 --dim 768 --heads 12 --vocab 50257 --batch 4 --seq 64" ;;
    ii) echo "--layers 6 --dim 384 --heads 6 --vocab 50257 --batch 8 --seq 128" ;;
    iii) echo "--layers 4 --dim 256 --heads 4 --vocab 4096 --batch 16 --seq 128" ;;
    vision) echo "--layers 4 --dim 192 --heads 4 --vocab 774 --batch 32 --seq 50 --context 51" ;; # make demo-vision's
    *) echo "compare.sh: unknown configuration '$1' (i, ii, iii, vision)" >&2; exit 2 ;;
    esac
}

[ -x "$FM" ] || { echo "compare.sh: $FM not built (run make)" >&2; exit 1; }

# The peer's environment: OpenBLAS's OpenMP build (it shares PyTorch's OpenMP threads; the
# pthread build fights them and runs several times slower), SkylakeX kernels.
PEER_ENV=(OPENBLAS_CORETYPE=SkylakeX)
if [ "$TORCH" = 1 ]; then
    if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
        echo "compare.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch)" >&2
        exit 1
    fi
    blas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp
    if [ -e "$blas_dir/libblas.so.3" ]; then
        PEER_ENV+=(LD_LIBRARY_PATH="$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    elif [ "$ANY_BLAS" = 0 ]; then
        echo "compare.sh: $blas_dir is missing: apt-get install libopenblas0-openmp (without it PyTorch" \
            "runs on whatever libblas.so.3 is, often the slow reference BLAS; --any-blas to go on anyway)" >&2
        exit 1
    fi
fi

field() { # line key -> value
    tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

best() { # keeps the larger of two numbers ("" counts as nothing)
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 > a + 0) print b; else print a }'
}

run_fm() { # flags... -> the fm_bench line
    "$FM" bench train "$@" --steps "$STEPS" --warmup "$WARMUP" --precision "$PRECISION" 2>/dev/null | grep '^fm_bench'
}

DUMP=$(mktemp -d /tmp/compare_dump_XXXXXX)
trap 'rm -rf "$DUMP"' EXIT
run_peer() { # flags... -> the torch_bench line, on fm's weights and stream in $DUMP
    env "${PEER_ENV[@]}" /usr/bin/python3 bench/torch_peer.py train "$@" --steps "$STEPS" --warmup "$WARMUP" \
        --precision "$PRECISION" --dump "$DUMP" \
        2>/dev/null | grep '^torch_bench'
}

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
peak_bin=$(dirname "$FM")/fma_peak
if gcc -O2 -march=native -ffp-contract=fast -fopenmp bench/fma_peak.c -o "$peak_bin" 2>/dev/null; then
    echo "measured FMA peak: $(OMP_NUM_THREADS=$THREADS "$peak_bin" | sed 's/ (checksum.*//' | paste -sd " " -) (fm's peak_pct divides by --peak-gflops, 330 by default)"
fi
[ "$TORCH" = 1 ] && echo "peer: $(/usr/bin/python3 -c 'import torch; print("torch", torch.__version__)'), ${PEER_ENV[*]}"
printf '%-5s %-26s %12s %12s %7s %9s %8s %11s %12s\n' config shape "fm tok/s" "torch tok/s" ratio "fm GF/s" "fm peak%" \
    "fm RSS MiB" "loss0 diff"
for c in $CONFIGS; do
    flags=$(config "$c")
    fm_best="" torch_best="" fm_line="" loss0_diff=-
    if [ "$TORCH" = 1 ]; then # fm's weights and stream for the peer (an untimed run)
        rm -rf "$DUMP" && mkdir -p "$DUMP"
        # shellcheck disable=SC2086
        "$FM" bench train $flags --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --dump "$DUMP" >/dev/null 2>&1 ||
            { echo "compare.sh: ($c) fm bench train --dump failed" >&2; exit 1; }
    fi
    for _ in $(seq "$ROUNDS"); do
        line=$(run_fm $flags --threads "$THREADS")
        tok=$(field "$line" tokens_per_s)
        if [ "$(best "$fm_best" "$tok")" != "$fm_best" ]; then fm_best=$tok fm_line=$line; fi
        if [ "$TORCH" = 1 ]; then
            tline=$(run_peer $flags --threads "$THREADS")
            torch_best=$(best "$torch_best" "$(field "$tline" tokens_per_s)")
            loss0_diff=$(awk -v a="$(field "$line" loss0)" -v b="$(field "$tline" loss0)" \
                'BEGIN { if (a == "" || b == "") print "none"; else printf "%.2e", (a > b ? a - b : b - a) }')
            if [ "$PRECISION" = fp32 ] && ! awk -v d="$loss0_diff" 'BEGIN { exit !(d != "none" && d + 0 <= 1e-4) }'; then
                echo "compare.sh: ($c) the step-0 losses of fm and the peer differ by $loss0_diff (> 1e-4)" >&2
                exit 1
            fi
        fi
    done
    ratio=$(awk -v a="$fm_best" -v b="$torch_best" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    shape=$(awk '{ printf "L%s C%s H%s V%s B%s T%s", $2, $4, $6, $8, $10, $12 }' <<<"$flags")
    printf '%-5s %-26s %12s %12s %7s %9s %8s %11s %12s\n' "($c)" "$shape" \
        "$fm_best" "${torch_best:--}" "$ratio" "$(field "$fm_line" gflops)" "$(field "$fm_line" peak_pct)" \
        "$(field "$fm_line" peak_rss_mb)" "$loss0_diff"
done

if [ "$GENERATE" = 1 ]; then
    printf '\n%-5s %-16s %12s %12s %12s %10s %10s %11s\n' config "generate" "fm f32 tok/s" "fm int8" "torch tok/s" \
        "f32/torch" "int8/f32" "f32 RSS MiB"
    for c in $GEN_CONFIGS; do
        flags=$(config "$c" | sed 's/ --batch [0-9]* --seq [0-9]*//')
        f32="" int8="" torch="" f32_line=""
        for _ in $(seq "$ROUNDS"); do
            line=$("$FM" bench generate $flags --threads "$THREADS" --steps 3 --warmup 1 2>/dev/null | grep '^fm_bench')
            tok=$(field "$line" decode_tokens_per_s)
            if [ "$(best "$f32" "$tok")" != "$f32" ]; then f32=$tok f32_line=$line; fi
            line=$("$FM" bench generate $flags --threads "$THREADS" --steps 3 --warmup 1 --int8 2>/dev/null | grep '^fm_bench')
            int8=$(best "$int8" "$(field "$line" decode_tokens_per_s)")
            if [ "$TORCH" = 1 ]; then
                tline=$(env "${PEER_ENV[@]}" /usr/bin/python3 bench/torch_peer.py generate $flags --threads "$THREADS" \
                    --steps 3 --warmup 1 2>/dev/null | grep '^torch_bench')
                torch=$(best "$torch" "$(field "$tline" decode_tokens_per_s)")
            fi
        done
        printf '%-5s %-16s %12s %12s %12s %10s %10s %11s\n' "($c)" "prompt 16 + 128" "$f32" "$int8" "${torch:--}" \
            "$(awk -v a="$f32" -v b="$torch" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
            "$(awk -v a="$int8" -v b="$f32" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" \
            "$(field "$f32_line" peak_rss_mb)"
    done
fi

if [[ " $CONFIGS " == *" iii "* ]]; then
    one="" two=""
    for _ in $(seq "$ROUNDS"); do
        one=$(best "$one" "$(field "$(run_fm $(config iii) --threads 1)" tokens_per_s)")
        two=$(best "$two" "$(field "$(run_fm $(config iii) --threads 2)" tokens_per_s)")
    done
    echo "thread scaling (iii): 1 thread $one tok/s, 2 threads $two tok/s, speed-up $(awk -v a="$one" -v b="$two" 'BEGIN { printf "%.2f", b / a }')"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
