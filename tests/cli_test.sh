#!/usr/bin/env bash
# cli_test.sh — the fm command from the outside: help, dispatch, flags, exit codes, messages.
# Usage: tests/cli_test.sh PATH/TO/fm    Prints "N passed, N failed"; exits non-zero on failure.
set -u
FM=${1:?usage: cli_test.sh PATH/TO/fm}
tmp=$(mktemp -d /tmp/fm_cli_XXXXXX)
trap 'cleanup_unwritable; rm -rf "$tmp"' EXIT
source "$(dirname "$0")/cli_lib.sh"


expect "help lists commands" 0 "init.*" -- "$FM" help
expect "no command" 2 "usage" -- "$FM"
expect "unknown command" 2 "'frobnicate' is not a command" -- "$FM" frobnicate
expect "command help" 0 "--layers" -- "$FM" init --help
expect "init needs --out" 2 "--out DIR is required" -- "$FM" init
expect "unknown option" 2 "unknown option '--bogus'" -- "$FM" init --out "$tmp/m" --bogus 3
expect "zero layers" 2 "--layers: 0 is out of range" -- "$FM" init --out "$tmp/m" --layers 0
expect "not a number" 2 "--dim: 'wide' is not a number" -- "$FM" init --out "$tmp/m" --dim wide
expect "fractional" 2 "not a whole number" -- "$FM" init --out "$tmp/m" --heads 2.5
expect "heads not dividing width" 2 "n_head = 5 does not divide n_embd = 48" -- \
    "$FM" init --out "$tmp/m" --dim 48 --heads 5
expect "missing value" 2 "--seed needs a value" -- "$FM" init --out "$tmp/m" --seed
[ -e "$tmp/m" ] && { failed=$((failed + 1)); echo "FAIL refused init left $tmp/m behind"; }

expect "init" 0 "initialised .*: 14664 parameters" -- \
    "$FM" init --out "$tmp/m" --layers 1 --dim 24 --heads 2 --vocab 300 --context 8
expect "info" 0 "head size 12" -- "$FM" info --model "$tmp/m"
expect "info shows the kernels' code path" 0 "cpu path +(avx512bf16|avx512|avx2|generic) \\(this CPU runs: .*generic\\)" -- \
    "$FM" info --model "$tmp/m"
# FM_CPU forces a code path; generic runs everywhere; a name no build has is refused
expect "FM_CPU=generic" 0 "^cpu path +generic " -- env FM_CPU=generic "$FM" info --cpu
expect "FM_CPU unknown" 2 "FM_CPU: CPU path 'avx9' is not one of this build's paths; this CPU runs: .*generic" -- \
    env FM_CPU=avx9 "$FM" info --cpu
expect "info missing dir" 1 "$tmp/none/config.json" -- "$FM" info --model "$tmp/none"
printf '{"n_layer": 1,' >"$tmp/m/config.json"
expect "info corrupt config" 1 "config.json: invalid JSON" -- "$FM" info --model "$tmp/m"
ls "$tmp/m" | grep -q '\.tmp\.' && { failed=$((failed + 1)); echo "FAIL temporary files left"; }

# a folder nobody may write into, root included (unwritable in cli_lib.sh: chmod, a read-only bind
# mount, chattr +i or running fm as user nobody; skipped with the reason when none works)
mkdir "$tmp/ro"
if unwritable "$tmp/ro"; then
    expect "init in a read-only folder ($unwritable_how)" 1 "$tmp/ro/m.*($why_unwritable)" -- \
        "${as_writer[@]}" "$FM" init --out "$tmp/ro/m" --layers 1 --dim 24 --heads 2 --vocab 300 --context 8
    writable "$tmp/ro"
    [ -z "$(ls -A "$tmp/ro")" ] && ok || bad "a refused init left $(ls -A "$tmp/ro") in $tmp/ro"
else
    skip_case "init in a read-only folder" "$unwritable_why"
fi

# bench: one machine-readable line; --profile adds the kernel table of the timed steps
small="--layers 1 --dim 24 --heads 2 --vocab 300 --context 8 --batch 2 --seq 8 --steps 2 --warmup 1 --threads 1"
expect "bench train" 0 "fm_bench mode=train tokens_per_s=[0-9.]+ " -- "$FM" bench train $small
expect "bench profile" 0 "attention: backward .*by kind: products [0-9.]+ ms \\([0-9.]+%\\), attention" -- \
    bash -c "'$FM' bench train $small --profile | tr '\\n' ' '"
expect "bench profile counts" 0 "products: c_attn +[0-9.]+ +[0-9.]+% +2.0$" -- "$FM" bench train $small --profile
expect "bench generate" 0 "fm_bench mode=generate decode_tokens_per_s=" -- \
    "$FM" bench generate --layers 1 --dim 24 --heads 2 --vocab 300 --context 8 --prompt 2 --gen 4 --steps 1 --warmup 0
expect "bench absurd seq" 2 "--seq 9 exceeds --context 8" -- "$FM" bench train $small --seq 9
expect "bench generate --profile" 2 "--profile times training steps" -- "$FM" bench generate --profile

summary "cli"
