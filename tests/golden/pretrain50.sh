#!/usr/bin/env bash
# pretrain50.sh — the golden run: 50 steps of `fm pretrain` on a generated corpus, in float32 and
# bfloat16 on 1 and 2 threads. Prints, per run, every step's training loss and the held-out losses
# (as metrics.jsonl writes them, %.9g) and the sha256 of the final model.safetensors.
# Usage: tests/golden/pretrain50.sh PATH/TO/fm [fp32|bf16 ...]
# tests/golden/pretrain50.txt holds what the binary of commit "golden fixture" printed (an AVX-512
# build, -O3 -march=native); the test (tests/cli_golden_test.sh, run by make test) reruns it and
# requires every loss, val_loss and sha256 line to the bit, and reports differing generate and
# score checksums as warnings.
set -euo pipefail
FM=$(realpath "${1:?usage: pretrain50.sh PATH/TO/fm [precisions]}")
shift
precisions=("$@")
[ ${#precisions[@]} -gt 0 ] || precisions=(fp32 bf16)
tmp=$(mktemp -d /tmp/fm_golden_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/../cli_lib.sh"
cd "$tmp"
lambs_corpus 600 >corpus.txt
"$FM" tokenizer train --vocab 300 --out tok.json corpus.txt >/dev/null
"$FM" data prepare --tokenizer tok.json --out data corpus.txt >/dev/null
# two shapes: head size 24; and depths past one packed slice of the products (MLP 512)
shapes=("--layers 2 --dim 48 --heads 2 --context 64 --batch 4" "--layers 2 --dim 128 --heads 4 --context 128 --batch 4")
for shape in "${shapes[@]}"; do
for precision in "${precisions[@]}"; do
    for threads in 1 2; do
        run="run-$precision-$threads"
        rm -rf "$run"
        # shellcheck disable=SC2086
        "$FM" pretrain --data data --out "$run" $shape \
            --steps 50 --eval-every 25 --eval-tokens 1024 --sample-every 0 --seed 11 \
            --precision "$precision" --threads "$threads" >/dev/null
        echo "== $shape $precision threads=$threads"
        sed -E -n 's/.*"step":([0-9]+),"(loss|val_loss)":([^,]+),.*/\1 \2 \3/p' "$run/metrics.jsonl"
        echo "sha256 $(sha256sum "$run/model.safetensors" | cut -d' ' -f1)"
        if [ "$threads" = 2 ]; then # generation and scoring from the trained model (context sliding at 150 tokens)
            for sampling in "--temperature 0" "--temperature 0.8 --top-k 20 --seed 3" "--temperature 1 --top-p 0.9 --repeat-penalty 1.3 --seed 5"; do
                # shellcheck disable=SC2086
                echo "generate $sampling: $("$FM" generate --model "$run" --prompt "Line 12: the" --max-tokens 150 $sampling --ignore-eos --threads 2 2>/dev/null | od -An -c | tr -s ' \n' ' ' | cksum)"
            done
            echo "score: $("$FM" score --model "$run" --file corpus.txt --json --threads 2 | cksum)"
        fi
    done
done
done
