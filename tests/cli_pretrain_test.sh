#!/usr/bin/env bash
# cli_pretrain_test.sh — the pre-training path end to end on a small corpus: data prepare,
# pretrain, interrupt + resume (same losses as an uninterrupted run), generate (same seed, same
# text), score, eval, and each bad input's clear error, non-zero exit and no partial file.
# Usage: tests/cli_pretrain_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_pretrain_test.sh PATH/TO/fm}")
src_dir=$(dirname "$(realpath "$0")")/..
tmp=$(mktemp -d /tmp/fm_pretrain_XXXXXX)
trap 'umount "$tmp/tinyfs" 2>/dev/null; cleanup_unwritable; rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"

# lines_with PATTERN FILE: how many lines of FILE match (0 when FILE does not exist yet)
lines_with() { local n; n=$(grep -c -- "$1" "$2" 2>/dev/null); echo "${n:-0}"; }

# interrupted STEPS RUN_DIR LOG -- COMMAND...: starts COMMAND, sends Ctrl-C (SIGINT) once RUN_DIR's
# metrics hold STEPS steps, waits; the exit status is the command's.
interrupted() {
    local steps=$1 dir=$2 log=$3
    shift 4
    "$@" >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 1000); do
        [ "$(lines_with '"loss"' "$dir/metrics.jsonl")" -ge "$steps" ] && break
        sleep 0.01
    done
    kill -INT $pid
    wait $pid
}


# A corpus of 600 varied lines (a counting rhyme), and a tokenizer for it.
lambs_corpus 600 >corpus.txt
"$FM" tokenizer train --vocab 300 --out tok.json corpus.txt >/dev/null || bad "tokenizer train"
"$FM" tokenizer train --vocab 400 --out tok400.json corpus.txt >/dev/null || bad "tokenizer train 400"

# --- data prepare and its errors
expect "prepare" 0 "val.bin: [0-9]+ tokens" -- "$FM" data prepare --tokenizer tok.json --out data corpus.txt
[ -f data/train.bin ] && [ -f data/val.bin ] && [ -f data/tokenizer.json ] && ok || bad "shards missing"
expect "missing corpus" 1 "nope.txt: cannot open" -- "$FM" data prepare --tokenizer tok.json --out d1 nope.txt
: >empty.txt
expect "empty corpus" 1 "empty.txt: empty file" -- "$FM" data prepare --tokenizer tok.json --out d2 empty.txt
head -c 3000 /dev/urandom >binary.bin
printf 'abc\0def' >>binary.bin
expect "binary corpus" 1 "binary.bin: binary file" -- "$FM" data prepare --tokenizer tok.json --out d3 binary.bin
[ -e d1 ] || [ -e d2 ] || [ -e d3 ] && bad "a refused prepare left a directory behind" || ok

# --- pretrain flags
common=(--data data --layers 2 --dim 32 --heads 2 --context 32 --batch 4 --eval-every 10 --eval-tokens 512
        --sample-every 0 --threads 2 --seed 7)
expect "zero layers" 2 "--layers: 0 is out of range" -- "$FM" pretrain "${common[@]}" --layers 0 --steps 5 --out r0
expect "heads not dividing" 2 "n_head = 3 does not divide n_embd = 32" -- "$FM" pretrain "${common[@]}" --heads 3 --steps 5 --out r0
expect "seq over context" 2 "--seq 64 is longer than the context \(32\)" -- "$FM" pretrain "${common[@]}" --seq 64 --steps 5 --out r0
expect "no budget" 2 "exactly one of --steps and --minutes" -- "$FM" pretrain "${common[@]}" --out r0
expect "beta2 of 1" 2 "--beta2: 1 is out of range" -- "$FM" pretrain "${common[@]}" --beta2 1 --steps 5 --out r0
[ -e r0 ] && bad "refused pretrain left r0" || ok

# --- an uninterrupted run, and one interrupted by Ctrl-C then resumed
expect "pretrain" 0 "done: 150 steps" -- "$FM" pretrain "${common[@]}" --steps 150 --save-every 50 --out full
losses() { grep -o '"step":[0-9]*,"loss":[0-9.]*' "$1/metrics.jsonl"; }
# stopped_short NAME STATUS LOG RUN_DIR: the run was really interrupted before its 150 steps: exit
# status 130, the "interrupted: checkpoint saved at step N" message with N < 150, and its metrics
# holding exactly N steps' losses (the checkpoint's), so that the resume has steps left to run
stopped_short() {
    local name=$1 status=$2 log=$3 dir=$4 at n
    at=$(grep -o "^interrupted: checkpoint saved at step [0-9]*" "$log" | grep -o "[0-9]*$")
    n=$(losses "$dir" | wc -l)
    if [ "$status" -eq 130 ] && [ -n "$at" ] && [ "$at" -lt 150 ] && [ "$n" -eq "$at" ]; then ok; else
        bad "$name: exit $status (want 130), interrupted at step ${at:-none} (want < 150), metrics hold $n steps"
        tail -3 "$log" | sed 's/^/    /'
    fi
}
interrupted 20 cut cut.log -- "$FM" pretrain "${common[@]}" --steps 150 --save-every 50 --out cut
stopped_short "interrupt" $? cut.log cut
expect "resume" 0 "done: 150 steps" -- "$FM" pretrain --out cut --resume --threads 2
if [ "$(losses full | wc -l)" -eq 150 ] && diff <(losses full) <(losses cut) >/dev/null; then ok; else
    bad "resumed losses differ from the uninterrupted run"; diff <(losses full) <(losses cut) | head -5
fi
cmp -s full/model.safetensors cut/model.safetensors && ok || bad "resumed weights differ"
grep -q "<svg" full/loss.svg && ok || bad "no loss curve"
expect "resume a finished run" 0 "done: 150 steps" -- "$FM" pretrain --out full --resume
# run.json names the commit fm was built from (the source tree's, when it is a git checkout)
want=$(git -C "$src_dir" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
grep -q "\"fm_commit\":[[:space:]]*\"${want%-dirty}" full/run.json && ok || bad "run.json does not record commit $want"
expect "info shows the optimizer" 0 "betas \(0.9, 0.95\), eps 1e-08, weight decay 0.1" -- "$FM" info --model full
"$FM" quantize --model full --out q8run >/dev/null 2>&1
expect "resume a quantized directory" 1 "holds a model but no training state" -- "$FM" pretrain --out q8run --resume
expect "fresh run over an old one" 2 "already holds a run" -- "$FM" pretrain "${common[@]}" --steps 5 --out full

# --- bfloat16 products: recorded in run.json, kept by a resume, close to float32's losses
expect "unknown precision" 2 "unknown matmul precision 'fp16'" -- "$FM" pretrain "${common[@]}" --precision fp16 --steps 5 --out r0
expect "precision on resume" 2 "drop the size, budget and precision flags" -- "$FM" pretrain --out full --resume --precision bf16
expect "pretrain bf16" 0 "done: 150 steps" -- "$FM" pretrain "${common[@]}" --steps 150 --save-every 50 --precision bf16 --out bf
grep -q '"precision":[[:space:]]*"bf16"' bf/run.json && ok || bad "run.json does not record bf16"
interrupted 20 bfcut bfcut.log -- "$FM" pretrain "${common[@]}" --steps 150 --save-every 50 --precision bf16 --out bfcut
stopped_short "interrupt bf16" $? bfcut.log bfcut
expect "resume bf16" 0 "done: 150 steps" -- "$FM" pretrain --out bfcut --resume --threads 1
diff <(losses bf) <(losses bfcut) >/dev/null && ok || bad "bf16 resumed losses differ from the uninterrupted run"
last_loss() { losses "$1" | tail -1 | grep -o '[0-9.]*$'; }
if awk -v a="$(last_loss full)" -v b="$(last_loss bf)" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != b && d < 0.05 * a) }'
then ok; else bad "bf16 final loss $(last_loss bf) vs fp32 $(last_loss full): not close, or identical"; fi

# --- dropout: recorded in run.json, refused on a resume, the same masks after a resume (on
# another thread count), a training loss not the same as without it
expect "dropout of 1" 2 "--dropout: 1 is out of range" -- "$FM" pretrain "${common[@]}" --dropout 1 --steps 5 --out r0
expect "dropout on resume" 2 "drop the size, budget and precision flags" -- "$FM" pretrain --out full --resume --dropout 0.1
expect "pretrain dropout" 0 "done: 150 steps" -- "$FM" pretrain "${common[@]}" --steps 150 --save-every 50 --dropout 0.2 --out drop
grep -q '"dropout":[[:space:]]*0.2' drop/run.json && ok || bad "run.json does not record the dropout"
grep -q '"dropout":[[:space:]]*0[,}]' full/run.json && ok || bad "run.json of a run without dropout does not say 0"
interrupted 20 dropcut dropcut.log -- "$FM" pretrain "${common[@]}" --steps 150 --save-every 50 --dropout 0.2 --out dropcut
stopped_short "interrupt with dropout" $? dropcut.log dropcut
expect "resume with dropout" 0 "done: 150 steps" -- "$FM" pretrain --out dropcut --resume --threads 1
diff <(losses drop) <(losses dropcut) >/dev/null && ok || bad "resumed losses with dropout differ from the uninterrupted run"
cmp -s drop/model.safetensors dropcut/model.safetensors && ok || bad "resumed weights with dropout differ"
[ "$(losses drop | sed -n 1p)" != "$(losses full | sed -n 1p)" ] && ok || bad "dropout 0.2 did not change the first loss"

# --- generate, score, eval
expect "generate" 0 "tokens generated" -- "$FM" generate --model full --prompt "Line 5: the" --max-tokens 20 --seed 3
a=$("$FM" generate --model full --prompt "Line" --max-tokens 30 --seed 9 2>/dev/null)
b=$("$FM" generate --model full --prompt "Line" --max-tokens 30 --seed 9 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "same seed gave different text"
echo "Line 12: the" >prompt.txt
expect "prompt from a file" 0 "tokens generated" -- "$FM" generate --model full --file prompt.txt --max-tokens 5
expect "prompt from stdin" 0 "tokens generated" -- sh -c "echo 'Line 3' | '$FM' generate --model full --max-tokens 5"
# --stop: the stop string is taken from the greedy continuation itself (5 characters from its middle,
# no newline or backslash), so it is provably generated; the stopped run prints exactly the text
# before its first occurrence
unstopped=$("$FM" generate --model full --prompt "Line 1" --max-tokens 60 --temperature 0 2>/dev/null)
stop=""
for off in 30 25 35 20 40 15 45 10; do
    cand=${unstopped:off:5}
    if [ ${#cand} -eq 5 ] && [[ $cand != *$'\n'* && $cand != *\\* ]]; then stop=$cand; break; fi
done
before=$(printf '%s' "${unstopped%%"$stop"*}")
out=$("$FM" generate --model full --prompt "Line 1" --max-tokens 60 --temperature 0 --stop "$stop" 2>/dev/null)
if [ -n "$stop" ] && [ -n "$before" ] && [ ${#before} -lt ${#unstopped} ] && [ "$out" = "$before" ]; then ok; else
    bad "--stop '$stop': printed '$out', want the text before it: '$before' (unstopped: '$unstopped')"
fi
expect "score json" 0 '^\{"tokens":\[[0-9,]+\],"logprobs":\[null,-[0-9]' -- "$FM" score --model full --text "Line 4: the 4 lambs" --json
expect "score bos" 0 '"logprobs":\[-[0-9]' -- "$FM" score --model full --text "Line 4" --bos --json
expect "eval" 0 "bigram: [0-9.]+ bits per byte" -- "$FM" eval --model full --data data

# --- bad inputs to a trained model
cp -r full mism && cp tok400.json mism/tokenizer.json
expect "tokenizer vocabulary mismatch" 1 "the tokenizer has [0-9]+ tokens but the model's vocab_size is 300" -- \
    "$FM" generate --model mism --prompt "Line" --max-tokens 5
expect "absurd top-p" 2 "out of range" -- "$FM" generate --model full --prompt x --top-p 2
cp -r data bad_data
printf '\x01' | dd of=bad_data/train.bin bs=1 seek=100 conv=notrunc 2>/dev/null
expect "corrupt shard" 1 "train.bin: checksum mismatch" -- "$FM" pretrain "${common[@]}" --data bad_data --steps 5 --out r1
truncate -s -7 bad_data/val.bin
expect "truncated shard" 1 "val.bin: truncated" -- "$FM" eval --data bad_data --model full
cp -r full bad_ckpt
truncate -s -100 bad_ckpt/model.safetensors
expect "corrupt checkpoint" 1 "model.safetensors: .*truncated" -- "$FM" pretrain --out bad_ckpt --resume
expect "corrupt checkpoint (generate)" 1 "model.safetensors" -- "$FM" generate --model bad_ckpt --prompt x
# fm info names a broken checkpoint and why, and fails
cp -a full broken_state
truncate -s -64 broken_state/checkpoint/training_state.safetensors
expect "info on a broken checkpoint" 1 "BROKEN: .*training_state.safetensors" -- "$FM" info --model broken_state
cp -a full dangling
rm -rf dangling/checkpoints/step-*
expect "info on a dangling checkpoint link" 1 "dangling/config.json: cannot open" -- "$FM" info --model dangling

# --- a full disk while saving: the previous checkpoint survives
interrupted 12 disk disk.log -- "$FM" pretrain "${common[@]}" --steps 2000 --save-every 10 --out disk
before=$(cd disk && md5sum model.safetensors training_state.safetensors config.json)
# real ENOSPC on a tiny tmpfs when we may mount one; otherwise a file-size limit (EFBIG)
if mkdir tinyfs && mount -t tmpfs -o size=$(( $(du -sk disk | cut -f1) + 48 ))k tmpfs tinyfs 2>/dev/null; then
    cp -a disk/. tinyfs/
    dir=tinyfs
    expect "full disk" 1 "No space left on device" -- "$FM" pretrain --out tinyfs --resume
else
    dir=disk
    limit=$(( $(stat -c %s disk/model.safetensors) / 1024 - 1 ))
    expect "file too large" 1 "File too large" -- bash -c "trap '' XFSZ; ulimit -f $limit; exec '$FM' pretrain --out disk --resume"
fi
after=$(cd $dir && md5sum model.safetensors training_state.safetensors config.json)
[ "$before" = "$after" ] && ok || bad "the previous checkpoint changed after a failed save"
ls $dir | grep -q '\.tmp' && bad "temporary files left in $dir" || ok
"$FM" info --model $dir >/dev/null 2>&1 && ok || bad "the previous checkpoint no longer loads"

# --- a run directory nobody may write into, root included (unwritable in cli_lib.sh): the resumed
# run fails (opening metrics.jsonl, or at its first save), naming the folder, and leaves the
# checkpoint there untouched
cp -a disk rorun
ckpt() { (cd "$1" && md5sum model.safetensors training_state.safetensors config.json run.json); }
before=$(ckpt rorun)
if unwritable rorun; then
    expect "resume in a read-only run directory ($unwritable_how)" 1 "$tmp/rorun|rorun/" -- \
        "${as_writer[@]}" "$FM" pretrain --out rorun --resume
    writable rorun
    [ "$before" = "$(ckpt rorun)" ] && ok || bad "a failed resume in a read-only run directory changed its checkpoint"
    ls rorun | grep -q '\.tmp' && bad "temporary files left in rorun" || ok
else
    skip_case "resume in a read-only run directory" "$unwritable_why"
fi

summary "cli pretrain"
