#!/usr/bin/env bash
# cli_cpu_emulated_test.sh — the one x86-64 fm binary on CPUs without AVX-512, under Debian's
# qemu-user: `qemu-x86_64 -cpu MODEL` runs the binary with cpuid reporting only MODEL's
# instruction sets, and an instruction MODEL lacks stops the program (SIGILL).
#   - Haswell (AVX2 and FMA, no AVX-512): fm picks the avx2 kernels by itself (FM_CPU unset);
#     qemu64 (the x86-64 baseline, SSE2): the generic ones. fm info --cpu must say so.
#   - On each: a short fm pretrain, greedy generation from it, and int8 decoding of its
#     fm quantize copy print the same losses, the same model bytes and the same text as the same
#     commands run natively with FM_CPU forced to that path.
#   - test_quant (int8 products and inference sessions) passes under each.
# It runs once per make test, on the first code path of the list (make test runs every script
# once per path); skipped, saying why: on other paths, under sanitizers (their runtime does not
# run under qemu-user), on a host that is not x86-64, or without qemu-x86_64
# (scripts/install-deps.sh --qemu installs qemu-user).
# Usage: tests/cli_cpu_emulated_test.sh PATH/TO/fm     Prints "N passed, N failed"; exits non-zero on failure.
set -u
FM=$(realpath "${1:?usage: cli_cpu_emulated_test.sh PATH/TO/fm}")
here=$(dirname "$(realpath "$0")")
source "$here/cli_lib.sh"
tests_dir=$(dirname "$FM")/tests

if [[ " ${FM_CFLAGS:-} " == *" -fsanitize="* ]]; then
    echo "cli cpu emulated: skipped: a sanitizer build (its runtime does not run under qemu-user)"
    exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
    echo "cli cpu emulated: skipped: the host is $(uname -m), not x86-64"
    exit 0
fi
supported=$(env -u FM_CPU "$FM" info --cpu | sed -n 's/.*this CPU runs: \(.*\))$/\1/p')
first=${supported%% *}
if [ -n "${FM_CPU:-}" ] && [ "$FM_CPU" != "$first" ]; then
    echo "cli cpu emulated: skipped on FM_CPU=$FM_CPU: it runs once, on the first path ($first)"
    exit 0
fi
if ! command -v qemu-x86_64 >/dev/null; then
    echo "cli cpu emulated: skipped: no qemu-x86_64 (scripts/install-deps.sh --qemu installs qemu-user)"
    exit 0
fi

tmp=$(mktemp -d /tmp/fm_emulated_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
lambs_corpus 300 >corpus.txt
env -u FM_CPU "$FM" tokenizer train --vocab 300 --out tok.json corpus.txt >/dev/null &&
    env -u FM_CPU "$FM" data prepare --tokenizer tok.json --out data corpus.txt >/dev/null ||
    { bad "preparing the corpus failed"; summary "cli cpu emulated"; exit; }

# run_all DIR PREFIX...: pretrain, generate, quantize and generate again, each command run as
# PREFIX fm ...; prints the losses, the model's sha256 and the two texts
run_all() {
    local dir=$1
    shift
    "$@" "$FM" pretrain --data data --out "$dir/run" --layers 2 --dim 48 --heads 2 --context 64 --batch 4 \
        --steps 8 --eval-every 4 --eval-tokens 512 --sample-every 0 --seed 5 --threads 2 >/dev/null || return 1
    sed -E -n 's/.*"step":([0-9]+),"(loss|val_loss)":([^,]+),.*/\1 \2 \3/p' "$dir/run/metrics.jsonl"
    echo "sha256 $(sha256sum "$dir/run/model.safetensors" | cut -d' ' -f1)"
    echo "generate: $("$@" "$FM" generate --model "$dir/run" --prompt "Line 12: the" --max-tokens 40 --temperature 0 --ignore-eos --threads 2)" || return 1
    "$@" "$FM" quantize --model "$dir/run" --out "$dir/q8" >/dev/null || return 1
    echo "generate int8: $("$@" "$FM" generate --model "$dir/q8" --prompt "Line 12: the" --max-tokens 40 --temperature 0 --ignore-eos --threads 2)"
}

# compare_bits MODEL PATH: run_all natively with FM_CPU=PATH and under qemu -cpu MODEL without
# FM_CPU; the two outputs must be identical
compare_bits() {
    local model=$1 path=$2
    local emu=(env -u FM_CPU qemu-x86_64 -cpu "$model")
    mkdir -p "native-$path" "emulated-$path"
    if [[ " $supported " != *" $path "* ]]; then
        skip_case "$model bits" "this CPU does not run the $path path natively (it runs: $supported)"
        return
    fi
    if ! FM_CPU=$path run_all "native-$path" env >"native-$path.txt" 2>"native-$path.err"; then
        bad "$path: the native run failed: $(tail -1 "native-$path.err")"
        return
    fi
    if ! run_all "emulated-$path" "${emu[@]}" >"emulated-$path.txt" 2>"emulated-$path.err"; then
        bad "$model: the emulated run failed: $(grep -v '^qemu-x86_64: warning' "emulated-$path.err" | tail -1)"
        return
    fi
    grep -q "^8 loss" "native-$path.txt" || bad "$path: the native run printed no step-8 loss"
    if cmp -s "native-$path.txt" "emulated-$path.txt"; then
        ok
    else
        bad "$model: the emulated run differs from the native FM_CPU=$path run:"
        diff "native-$path.txt" "emulated-$path.txt" | head -6 | sed 's/^/    /'
    fi
}

for pair in Haswell:avx2 qemu64:generic; do
    model=${pair%%:*} path=${pair##*:}
    emu=(env -u FM_CPU qemu-x86_64 -cpu "$model")
    # qemu prints a warning per host feature its TCG cannot emulate (pcid, x2apic, ...): not ours
    got=$("${emu[@]}" "$FM" info --cpu 2>/dev/null)
    if [[ "$got" == "cpu path      $path "* ]]; then ok; else bad "$model: fm info --cpu says '$got', want path $path"; fi

    compare_bits "$model" "$path"

    if [ -x "$tests_dir/test_quant" ]; then
        if (cd "$here/.." && "${emu[@]}" "$tests_dir/test_quant" >"$tmp/quant-$path.txt" 2>&1); then
            ok
        else
            bad "$model: test_quant failed under emulation:"
            grep -E "ERROR|FAILED" "$tmp/quant-$path.txt" | head -4 | sed 's/^/    /'
        fi
    else
        skip_case "$model test_quant" "$tests_dir/test_quant is not built"
    fi
done
summary "cli cpu emulated"
