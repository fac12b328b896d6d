#!/usr/bin/env bash
# cli_data_stream_test.sh — `fm data prepare --shard-tokens N` (cli/data_stream.c): inputs from
# files, a directory (recursively, in name order) and standard input; numbered shards of exactly
# N tokens (the last fewer); every byte accounted for (a newline added to an input without one);
# the held-out rule (every round(1/X)-th line); the same shards whatever the block size; fm
# pretrain on the shard directory (1 process and, when MPI is there, 2 ranks); and the refusals
# (binary input, empty input, too few lines, a directory with shards already, a missing input).
# Usage: tests/cli_data_stream_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_data_stream_test.sh PATH/TO/fm}")
tmp=$(mktemp -d /tmp/fm_stream_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"

# a corpus of about 1.5 MB: numbered lines of varied words (so a 1 MiB block cuts it)
awk 'BEGIN { split("the lambs and sheep went up down hill over a green field by river in spring", w, " ")
             for (i = 1; i <= 30000; i++) { s = "line " i ":"; for (j = 0; j < 8; j++) s = s " " w[(i * 7 + j * 3) % 17 + 1]
                                             print s "." } }' >corpus.txt
"$FM" tokenizer train --vocab 400 --out tok.json corpus.txt >/dev/null || bad "tokenizer train"
mkdir -p in/sub
head -n 1000 corpus.txt >in/b.txt
head -n 500 corpus.txt >in/sub/a.txt
printf 'the last line has no newline' >in/sub/c.txt
bytes() { stat -c %s "$@" | awk '{ s += $1 } END { print s }'; }

# --- files, a directory and standard input; shards of exactly N tokens
N=20000
out=$(head -n 2000 corpus.txt | "$FM" data prepare --tokenizer tok.json --out s1 --shard-tokens $N corpus.txt in - 2>&1)
status=$?
if [ $status -eq 0 ]; then ok; else bad "prepare: exit $status"; echo "$out" | head -3; fi
# every input byte, plus the newline c.txt lacks
want=$(($(bytes corpus.txt in/b.txt in/sub/a.txt in/sub/c.txt) + $(head -n 2000 corpus.txt | wc -c) + 1))
got=$(grep -o "from [0-9]* bytes" <<<"$out" | awk '{ s += $2 } END { print s }')
[ "$got" = "$want" ] && ok || bad "bytes: the shards account for $got, the inputs hold $want"
# the directory's files in name order: b.txt before sub/ (a.txt, c.txt)
grep -q "5 inputs" <<<"$out" && ok || bad "want 5 inputs (corpus.txt, in/b.txt, in/sub/a.txt, in/sub/c.txt, -): $out"
n_train=$(ls s1/train-*.bin | wc -l)
sizes_ok=1
i=0
for f in s1/train-*.bin; do
    i=$((i + 1))
    size=$(stat -c %s "$f")
    if [ $i -lt "$n_train" ] && [ "$size" -ne $((64 + 2 * N)) ]; then sizes_ok=0; fi
    if [ $i -eq "$n_train" ] && [ "$size" -gt $((64 + 2 * N)) ]; then sizes_ok=0; fi
done
[ "$n_train" -ge 2 ] && [ $sizes_ok -eq 1 ] && ok || bad "want >= 2 training shards of $N tokens each (the last fewer), got $n_train"
[ -f s1/val-00000.bin ] && [ -f s1/tokenizer.json ] && ok || bad "no val-00000.bin or tokenizer.json"
ls s1 | grep -q '\.tmp$' && bad "a .tmp file was left behind" || ok

# --- the held-out rule: every round(1/X)-th line; X = 0.25 -> lines 4, 8, ...: 30000 / 4 = 7500
out=$("$FM" data prepare --tokenizer tok.json --out s2 --shard-tokens $N --val-fraction 0.25 corpus.txt 2>&1)
grep -q "val-\*.bin: .* in 7500 lines" <<<"$out" && grep -q "train-\*.bin: .* in 22500 lines" <<<"$out" && ok ||
    bad "held-out rule: $out"

# --- the same shards whatever the block size (blocks end after a newline)
"$FM" data prepare --tokenizer tok.json --out s3 --shard-tokens $N --block-mb 1 corpus.txt >/dev/null 2>&1
"$FM" data prepare --tokenizer tok.json --out s4 --shard-tokens $N --block-mb 64 corpus.txt >/dev/null 2>&1
same=1
for f in s3/*.bin; do cmp -s "$f" "s4/$(basename "$f")" || same=0; done
[ "$(ls s3 | wc -l)" -eq "$(ls s4 | wc -l)" ] && [ $same -eq 1 ] && ok || bad "--block-mb 1 and 64 gave different shards"

# --- refusals, each naming the cause
printf 'a\0b\n' >binary.txt
: >empty.txt
mkdir -p emptydir
expect "binary input" 1 "binary.txt: binary file \(a NUL byte at offset 1\)" -- \
    "$FM" data prepare --tokenizer tok.json --out e1 --shard-tokens $N binary.txt
expect "empty input" 1 "empty" -- "$FM" data prepare --tokenizer tok.json --out e2 --shard-tokens $N empty.txt
expect "too few lines" 1 "too few to hold out" -- "$FM" data prepare --tokenizer tok.json --out e3 --shard-tokens $N in/sub/c.txt
expect "shards already" 1 "already holds token shards" -- "$FM" data prepare --tokenizer tok.json --out s1 --shard-tokens $N corpus.txt
expect "missing input" 1 "nothing.txt: cannot open" -- "$FM" data prepare --tokenizer tok.json --out e4 --shard-tokens $N nothing.txt
expect "empty directory" 1 "emptydir: the directory holds no files" -- \
    "$FM" data prepare --tokenizer tok.json --out e5 --shard-tokens $N emptydir
expect "tiny shards" 2 "shard-tokens" -- "$FM" data prepare --tokenizer tok.json --out e6 --shard-tokens 10 corpus.txt

# --- the trainer reads the shard directory (windows may span two shards)
common=(--data s1 --layers 1 --dim 16 --heads 2 --context 16 --batch 4 --steps 4 --eval-every 2 --eval-tokens 256
        --sample-every 0 --threads 1)
expect "pretrain on shards" 0 "done: 4 steps" -- "$FM" pretrain "${common[@]}" --out run1
if "$FM" pretrain --help | grep -q "data parallel: MPI" && command -v mpirun >/dev/null; then
    mpi_test_env
    expect "pretrain on shards, 2 ranks" 0 "done: 4 steps" -- \
        mpirun --allow-run-as-root --oversubscribe -np 2 "$FM" pretrain "${common[@]}" --out run2
else
    skip_case "pretrain on shards, 2 ranks" "no MPI in this build or no mpirun"
fi

summary "cli data stream"
