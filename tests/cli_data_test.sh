#!/usr/bin/env bash
# cli_data_test.sh — token shards from the command line: their header under a checksum, and the
# tokenizer that made them checked against the model's.
#   - fm data prepare records the tokenizer's fingerprint (and prints it);
#   - shards of tokenizer A beside a model (or a data directory's tokenizer.json) of tokenizer B,
#     both of 300 tokens, are refused by fm pretrain (a new run: nothing created in --out; and
#     --resume: the run left as it was) and by fm eval, naming the shard and both fingerprints;
#   - a flipped bit in val.bin's source-bytes field (outside the tokens' checksum) is refused by
#     fm eval and fm pretrain instead of changing the bits per byte;
#   - a version 1 shard (older fm) is refused, saying to run fm data prepare again;
#   - train.bin and val.bin of two tokenizers are refused by fm eval's bigram baseline and by pretrain.
# Usage: tests/cli_data_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_data_test.sh PATH/TO/fm}")
tmp=$(mktemp -d /tmp/fm_data_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"

# flip FILE OFFSET MASK: xors one byte of FILE in place
flip() {
    local byte
    byte=$(od -An -t u1 -j "$2" -N 1 "$1" | tr -d ' ')
    printf "\\x$(printf %02x $((byte ^ $3)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
# fingerprint OUTPUT: the tokenizer fingerprint fm data prepare printed
fingerprint() { sed -n 's/.*tokenizer \([0-9a-f]\{16\}\) saved to.*/\1/p' <<<"$1"; }

# two corpora, a tokenizer of 300 tokens from each: same size, other merges
lambs_corpus 600 >a.txt
for i in $(seq 1 600); do
    echo "fox $((i * 3)) jumps over $((i % 9)) lazy dogs, quickly $([ $((i % 2)) -eq 0 ] && echo near || echo far away)."
done >b.txt
"$FM" tokenizer train --vocab 300 --out tokA.json a.txt >/dev/null || bad "tokenizer train A"
"$FM" tokenizer train --vocab 300 --out tokB.json a.txt b.txt >/dev/null || bad "tokenizer train B"

# --- fm data records the fingerprint
outA=$("$FM" data prepare --tokenizer tokA.json --out dataA a.txt 2>&1) || bad "data prepare A: $outA"
outB=$("$FM" data prepare --tokenizer tokB.json --out dataB a.txt 2>&1) || bad "data prepare B: $outB"
fpA=$(fingerprint "$outA") fpB=$(fingerprint "$outB")
if [ -n "$fpA" ] && [ -n "$fpB" ] && [ "$fpA" != "$fpB" ]; then ok; else
    bad "fm data prepare printed fingerprints '$fpA' and '$fpB' (want two different ones)"; fi
for f in train val; do # recorded at offset 48 of each shard's header
    [ "$(od -An -t x8 -j 48 -N 8 dataA/$f.bin | tr -d ' ')" = "$fpA" ] && ok || bad "dataA/$f.bin does not record $fpA"
done
# the fingerprint of a tokenizer is that of its content: the same after a reload and a reformat
python3 -c "import json,sys; json.dump(json.load(open('tokA.json')), open('tokA2.json','w'))" 2>/dev/null ||
    tr -d '\n' <tokA.json >tokA2.json
out=$("$FM" data prepare --tokenizer tokA2.json --out dataA2 a.txt 2>&1)
[ "$(fingerprint "$out")" = "$fpA" ] && ok || bad "tokA.json in another JSON layout has another fingerprint: $out"
cmp -s dataA/train.bin dataA2/train.bin && ok || bad "the same tokenizer reformatted wrote another train.bin"

# --- a model of tokenizer B
small=(--layers 2 --dim 32 --heads 2 --context 32 --batch 4 --eval-every 10 --eval-tokens 256 --sample-every 0
       --threads 2 --seed 7)
"$FM" pretrain --data dataB --out runB "${small[@]}" --steps 4 >/dev/null 2>&1 || bad "pretrain on dataB"
expect "eval, matching tokenizer" 0 "model: +[0-9.]+ bits per byte" -- "$FM" eval --model runB --data dataB

# --- shards of A, model of B: refused, naming the shard and both fingerprints
names_both="dataA/val.bin was made by tokenizer $fpA \(that of dataA/tokenizer.json\), but runB/tokenizer.json is tokenizer $fpB"
expect "eval refuses another tokenizer's shards" 1 "$names_both" -- "$FM" eval --model runB --data dataA
expect "eval refuses them without the bigram too" 1 "$names_both" -- "$FM" eval --model runB --data dataA --no-bigram
# a new run: dataA's shards beside tokenizer B's tokenizer.json; nothing is created in --out
cp -r dataA mixed && cp tokB.json mixed/tokenizer.json
expect "pretrain refuses shards of another tokenizer" 1 \
    "mixed/train.bin was made by tokenizer $fpA, but .*mixed/tokenizer.json is tokenizer $fpB" -- \
    "$FM" pretrain --data mixed --out fresh "${small[@]}" --steps 4
[ -e fresh ] && bad "a refused pretrain created fresh/: $(ls -A fresh | tr '\n' ' ')" || ok
mkdir empty_out
expect "pretrain refuses them (existing empty --out)" 1 "was made by tokenizer $fpA" -- \
    "$FM" pretrain --data mixed --out empty_out "${small[@]}" --steps 4
[ -z "$(ls -A empty_out)" ] && ok || bad "a refused pretrain wrote into empty_out/: $(ls -A empty_out | tr '\n' ' ')"
# --resume of the run of B on the data of A: refused, the run as it was
sums() { (cd "$1" && find . -type f ! -name '*.lock' ! -name '.lock*' -exec md5sum {} + | sort); }
before=$(sums runB)
expect "pretrain --resume refuses shards of another tokenizer" 1 \
    "dataA/train.bin was made by tokenizer $fpA \(that of .*dataA/tokenizer.json\), but runB/tokenizer.json is tokenizer $fpB" -- \
    "$FM" pretrain --out runB --resume --data dataA
[ "$before" = "$(sums runB)" ] && ok || bad "a refused --resume changed runB"

# --- train.bin and val.bin of two tokenizers
cp -r dataB halves && cp dataA/train.bin halves/train.bin
expect "bigram refuses train.bin and val.bin of two tokenizers" 1 \
    "halves/train.bin was made by tokenizer $fpA .*halves/val.bin by $fpB" -- "$FM" eval --data halves
expect "pretrain refuses train.bin and val.bin of two tokenizers" 1 "$fpA|$fpB" -- \
    "$FM" pretrain --data halves --out fresh2 "${small[@]}" --steps 4
[ -e fresh2 ] && bad "a refused pretrain created fresh2/" || ok

# --- a flipped bit in the source-bytes field (bytes 40..47) of val.bin
expect "eval before the flip" 0 "held-out text: [0-9]+ tokens, [0-9]+ bytes" -- "$FM" eval --model runB --data dataB
cp -r dataB flipped
flip flipped/val.bin 41 8 # +2048 source bytes: the bits per byte would fall by half
expect "eval refuses a flipped source-bytes bit" 1 "flipped/val.bin: header checksum mismatch" -- \
    "$FM" eval --model runB --data flipped
expect "pretrain refuses a flipped source-bytes bit" 1 "flipped/val.bin: header checksum mismatch" -- \
    "$FM" pretrain --data flipped --out fresh3 "${small[@]}" --steps 4
[ -e fresh3 ] && bad "a refused pretrain created fresh3/" || ok
# every header byte of train.bin, one bit each
all=1
for at in $(seq 0 63); do
    cp dataB/train.bin flipped/train.bin && cp dataB/val.bin flipped/val.bin
    flip flipped/train.bin "$at" $((1 << (at % 8)))
    if out=$("$FM" eval --data flipped 2>&1); then
        all=0; bad "header byte $at flipped: fm eval accepted it: $(head -1 <<<"$out")"
    elif ! grep -q "flipped/train.bin" <<<"$out"; then
        all=0; bad "header byte $at flipped: the message does not name the file: $out"
    fi
done
[ $all -eq 1 ] && ok

# --- a version 1 shard, from an older fm
cp -r dataB old && printf '\x01' | dd of=old/val.bin bs=1 seek=8 conv=notrunc 2>/dev/null
expect "a version 1 shard is refused" 1 "old/val.bin: a version 1 shard.*fm data prepare" -- \
    "$FM" eval --model runB --data old

summary "cli data"
