#!/usr/bin/env bash
# cpu_path_vs_torch.sh — fm forced to one kernel code path (FM_CPU) beside PyTorch restricted to
# the same instruction set, training (i)-(iii), in one run.
#
# What it is for: the AVX2 figures of docs/performance.md: fm's avx2 path against PyTorch with
# ATEN_CPU_CAPABILITY=avx2 and OpenBLAS's Haswell kernels (OPENBLAS_CORETYPE=Haswell, the OpenMP
# build as bench/compare.sh uses), or the avx512 paths against PyTorch's defaults (SkylakeX). Each
# configuration runs ROUNDS rounds, the order of the two sides alternating between rounds; each
# run is `fm bench train` / bench/torch_peer.py train (median step of STEPS timed steps); the
# ratio printed is the median over the rounds of fm/torch tokens per second. With --old PATH a
# second fm binary (e.g. a -march=native build of an earlier commit) joins each round, and the
# median of new/old is printed too. The configuration `decode` is batch-1 decoding of GPT-2 124M
# shapes instead (a 16-token prompt, then 128 greedy tokens with the key/value cache, decode-only
# tokens/s: `fm bench generate` / torch_peer.py generate, each on its own random weights of the
# same shapes, float32; decoding speed does not depend on the values).
# The peer runs on fm's own weights and token stream (`fm bench train --dump`, once per
# configuration; fm's runs re-create the same from the same seed), and a round counts only if the
# two step-0 losses agree within 1e-4 (same weights, same batch); the script fails otherwise.
# Usage: bench/cpu_path_vs_torch.sh [--fm build/fm] [--cpu avx2] [--rounds 5] [--steps 5]
#                                   [--configs "i ii iii decode"] [--threads 2] [--old PATH] [--no-torch]
set -euo pipefail
cd "$(dirname "$0")/.."
FM=build/fm CPU=avx2 ROUNDS=5 STEPS=5 CONFIGS="i ii iii" THREADS=2 OLD= TORCH=1
while [ $# -gt 0 ]; do
    case $1 in
    --fm) FM=$2; shift 2 ;;
    --cpu) CPU=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --old) OLD=$2; shift 2 ;;
    --no-torch) TORCH=0; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "cpu_path_vs_torch.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -x "$FM" ] || { echo "cpu_path_vs_torch.sh: $FM not built (run make)" >&2; exit 1; }
[ -z "$OLD" ] || [ -x "$OLD" ] || { echo "cpu_path_vs_torch.sh: --old $OLD is not an executable" >&2; exit 1; }
FM_CPU=$CPU "$FM" info --cpu >/dev/null || exit 1 # an unknown or unsupported path: fm says why

config() {
    case $1 in
    i) echo "--layers 12 --dim 768 --heads 12 --vocab 50257 --batch 4 --seq 64" ;;
    ii) echo "--layers 6 --dim 384 --heads 6 --vocab 50257 --batch 8 --seq 128" ;;
    iii) echo "--layers 4 --dim 256 --heads 4 --vocab 4096 --batch 16 --seq 128" ;;
    vision) echo "--layers 4 --dim 192 --heads 4 --vocab 774 --batch 32 --seq 50 --context 51" ;; # make demo-vision's
    decode) echo "--layers 12 --dim 768 --heads 12 --vocab 50257 --prompt 16 --gen 128" ;;
    *) echo "cpu_path_vs_torch.sh: unknown configuration '$1' (i, ii, iii, vision, decode)" >&2; exit 2 ;;
    esac
}

case $CPU in
avx2) PEER_ENV=(ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell) ;;
generic) PEER_ENV=(ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Prescott) ;;
*) PEER_ENV=(OPENBLAS_CORETYPE=SkylakeX) ;;
esac
blas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp
[ -e "$blas_dir/libblas.so.3" ] && PEER_ENV+=(LD_LIBRARY_PATH="$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
if [ "$TORCH" = 1 ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "cpu_path_vs_torch.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch)" >&2
    exit 1
fi

DUMP=$(mktemp -d /tmp/cpvt_dump_XXXXXX)
trap 'rm -rf "$DUMP" /tmp/cpvt_ratio.$$ /tmp/cpvt_old.$$ /tmp/cpvt_loss0.$$.*' EXIT
field() { grep -o "$1=[0-9.]*" | cut -d= -f2; } # field NAME < line -> value
fm_tok() { # binary cpu flags... -> tokens/s; fm's step-0 loss into /tmp/cpvt_loss0.$$.fm
    local bin=$1 cpu=$2 line
    shift 2
    line=$(env ${cpu:+FM_CPU=$cpu} "$bin" bench train "$@" --threads "$THREADS" --steps "$STEPS" --warmup 2 2>/dev/null)
    [ "$bin" = "$FM" ] && field loss0 <<<"$line" >/tmp/cpvt_loss0.$$.fm
    field tokens_per_s <<<"$line"
}
torch_tok() { # flags... -> tokens/s on the dump; the peer's step-0 loss into /tmp/cpvt_loss0.$$.torch
    local line
    line=$(env "${PEER_ENV[@]}" /usr/bin/python3 bench/torch_peer.py train "$@" --dump "$DUMP" --threads "$THREADS" \
        --steps "$STEPS" --warmup 2 2>/dev/null)
    field loss0 <<<"$line" >/tmp/cpvt_loss0.$$.torch
    field tokens_per_s <<<"$line"
}
fm_decode() { # binary cpu flags... -> decode-only tokens/s
    local bin=$1 cpu=$2
    shift 2
    env ${cpu:+FM_CPU=$cpu} "$bin" bench generate "$@" --threads "$THREADS" --steps 3 --warmup 1 2>/dev/null |
        field decode_tokens_per_s
}
torch_decode() { # flags... -> decode-only tokens/s
    env "${PEER_ENV[@]}" /usr/bin/python3 bench/torch_peer.py generate "$@" --threads "$THREADS" --steps 3 --warmup 1 \
        2>/dev/null | field decode_tokens_per_s
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fm: $FM, FM_CPU=$CPU ($(FM_CPU=$CPU "$FM" info --cpu | awk '{ print $3 }'))${OLD:+; old: $OLD (its own build flags)}"
[ "$TORCH" = 1 ] && echo "peer: torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), ${PEER_ENV[*]}"
for c in $CONFIGS; do
    flags=$(config "$c")
    : >/tmp/cpvt_ratio.$$ && : >/tmp/cpvt_old.$$ && rm -f /tmp/cpvt_loss0.$$.*
    fm_run=fm_tok torch_run=torch_tok # training; decode: tokens/s of decoding, no step-0 loss
    [ "$c" = decode ] && fm_run=fm_decode torch_run=torch_decode
    if [ "$TORCH" = 1 ] && [ "$c" != decode ]; then # fm's weights and stream for the peer (not timed)
        rm -rf "$DUMP" && mkdir -p "$DUMP"
        # shellcheck disable=SC2086
        "$FM" bench train $flags --threads "$THREADS" --steps "$STEPS" --warmup 2 --dump "$DUMP" >/dev/null 2>&1 ||
            { echo "cpu_path_vs_torch.sh: ($c) fm bench train --dump failed" >&2; exit 1; }
    fi
    for r in $(seq 1 "$ROUNDS"); do
        # shellcheck disable=SC2086
        if [ $((r % 2)) -eq 1 ]; then
            f=$($fm_run "$FM" "$CPU" $flags); t=$([ "$TORCH" = 1 ] && $torch_run $flags || echo); o=$([ -n "$OLD" ] && $fm_run "$OLD" "" $flags || echo)
        else
            o=$([ -n "$OLD" ] && $fm_run "$OLD" "" $flags || echo); t=$([ "$TORCH" = 1 ] && $torch_run $flags || echo); f=$($fm_run "$FM" "$CPU" $flags)
        fi
        l0f=$(cat /tmp/cpvt_loss0.$$.fm 2>/dev/null || true) l0t=$(cat /tmp/cpvt_loss0.$$.torch 2>/dev/null || true)
        losses=$([ "$c" != decode ] && echo "; step-0 loss fm $l0f, torch $l0t" || echo)
        echo "($c) round $r: fm $f tok/s${t:+, torch $t}${o:+, old $o}${t:+$losses}"
        if [ -n "$t" ] && [ "$c" != decode ] && ! awk -v a="$l0f" -v b="$l0t" 'BEGIN { d = a - b; exit !(a != "" && b != "" && d <= 1e-4 && d >= -1e-4) }'; then
            echo "cpu_path_vs_torch.sh: ($c) round $r: the step-0 losses differ by more than 1e-4: the peer is not computing fm's step" >&2
            exit 1
        fi
        [ -n "$t" ] && awk -v a="$f" -v b="$t" 'BEGIN { printf "%.4f\n", a / b }' >>/tmp/cpvt_ratio.$$
        [ -n "$o" ] && awk -v a="$f" -v b="$o" 'BEGIN { printf "%.4f\n", a / b }' >>/tmp/cpvt_old.$$
    done
    if [ -s /tmp/cpvt_ratio.$$ ]; then echo "($c) median fm/torch over $ROUNDS rounds: $(median </tmp/cpvt_ratio.$$)"; fi
    if [ -s /tmp/cpvt_old.$$ ]; then echo "($c) median new/old over $ROUNDS rounds: $(median </tmp/cpvt_old.$$)"; fi
done
