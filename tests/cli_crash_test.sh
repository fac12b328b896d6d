#!/usr/bin/env bash
# cli_crash_test.sh — a run survives any kill and any failed write of a save. fm pretrain
# --save-every 1 is killed with SIGKILL at random moments (seeded; at least 30 kills), stopped with
# SIGTERM, and made to fail at every file operation of a save in turn (FM_FAIL_IO); after each,
# the run directory's checkpoint loads (fm info), never at an earlier step than before, and the
# run resumed to its end reproduces the uninterrupted run's losses and weights bit for bit.
# Usage: tests/cli_crash_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_crash_test.sh PATH/TO/fm}")
tmp=$(mktemp -d /tmp/fm_crash_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"

lambs_corpus 400 >corpus.txt
"$FM" tokenizer train --vocab 300 --out tok.json corpus.txt >/dev/null || bad "tokenizer train"
"$FM" data prepare --tokenizer tok.json --out data corpus.txt >/dev/null || bad "data prepare"

losses() { grep -o '"step":[0-9]*,"loss":[0-9.]*' "$1/metrics.jsonl" 2>/dev/null; }
ckpt_step() { "$FM" info --model "$1" 2>/dev/null | sed -n 's/^training *step \([0-9]*\) .*/\1/p'; }
# same_as_reference NAME RUN REF: every step's loss and the final weights identical
same_as_reference() {
    if [ "$(losses "$3" | wc -l)" -gt 0 ] && diff <(losses "$3") <(losses "$2") >/dev/null &&
        cmp -s "$3/model.safetensors" "$2/model.safetensors"; then ok; else
        bad "$1: the resumed run differs from the uninterrupted one"
        diff <(losses "$3") <(losses "$2") | head -3 | sed 's/^/    /'
    fi
}
# saved RUN: the run has saved a checkpoint (its model and state files are there, through links or not)
saved() { [ -e "$1/model.safetensors" ] && [ -e "$1/training_state.safetensors" ]; }
# resume_to_end RUN ARGS...: resumes RUN (or starts it again when it never saved) until done
resume_to_end() {
    local run=$1
    shift
    if saved "$run"; then "$FM" pretrain --out "$run" --resume --threads 1 >"$run.resume.log" 2>&1
    else "$FM" pretrain "$@" --out "$run" --force >"$run.resume.log" 2>&1; fi
}

# --- SIGKILL at random moments, seeded; cycles of a fresh run killed until it completes
args=(--data data --layers 2 --dim 32 --heads 2 --context 32 --batch 4 --eval-every 10 --eval-tokens 256
      --sample-every 0 --threads 1 --seed 7 --steps 200 --save-every 1)
"$FM" pretrain "${args[@]}" --out ref >/dev/null 2>&1 || bad "reference run"
RANDOM=20261204
kills=0 cycles=0 regressions=0 unloadable=0 refused=0
while [ $kills -lt 30 ] && [ $cycles -lt 40 ]; do
    cycles=$((cycles + 1))
    rm -rf run
    last=0
    for attempt in $(seq 1 200); do
        if saved run; then "$FM" pretrain --out run --resume --threads 1 >run.log 2>&1 &
        else "$FM" pretrain "${args[@]}" --out run --force >run.log 2>&1 & fi
        pid=$!
        # once 30 kills are done, the run is left to finish
        [ $kills -lt 30 ] && sleep "$(printf '0.%03d' $((RANDOM % 300)))"
        if [ $kills -lt 30 ] && kill -KILL $pid 2>/dev/null; then
            wait $pid 2>/dev/null
            kills=$((kills + 1))
            saved run || continue # killed before the first checkpoint: starts again
            step=$(ckpt_step run)
            if [ -z "$step" ]; then unloadable=$((unloadable + 1)); "$FM" info --model run 2>&1 | tail -2; continue; fi
            [ "$step" -lt "$last" ] && regressions=$((regressions + 1))
            last=$step
        else
            wait $pid
            status=$?
            if [ $status -ne 0 ]; then refused=$((refused + 1)); tail -2 run.log; break; fi
            same_as_reference "killed $kills times (cycle $cycles)" run ref
            break
        fi
    done
done
[ $kills -ge 30 ] && ok || bad "only $kills kills in $cycles cycles"
[ $unloadable -eq 0 ] && ok || bad "$unloadable kills left a run directory whose checkpoint does not load"
[ $regressions -eq 0 ] && ok || bad "$regressions kills left a checkpoint older than the one before"
[ $refused -eq 0 ] && ok || bad "$refused resumes after a kill failed"
echo "  ($kills SIGKILLs over $cycles runs)"

# --- SIGTERM: what timeout, Slurm and container runtimes send; saves and exits like Ctrl-C
"$FM" pretrain "${args[@]}" --steps 400 --save-every 1000 --out term >term.log 2>&1 &
pid=$!
for _ in $(seq 1 500); do [ "$(losses term | wc -l)" -ge 5 ] && break; sleep 0.01; done
kill -TERM $pid
wait $pid
status=$?
at=$(grep -o "^interrupted: checkpoint saved at step [0-9]*" term.log | grep -o "[0-9]*$")
if [ $status -eq 130 ] && [ -n "$at" ] && [ "$(ckpt_step term)" = "$at" ]; then ok; else
    bad "SIGTERM: exit $status, saved at step ${at:-none}, checkpoint at step $(ckpt_step term)"
fi

# --- every file operation of a save failing in turn (FM_FAIL_IO=K): the first save (which
# creates the run) and the last; after each failure the run resumes and ends as the reference
short=(--data data --layers 1 --dim 32 --heads 2 --context 32 --batch 4 --eval-every 1000 --sample-every 0
       --threads 1 --seed 7 --steps 3 --save-every 1)
"$FM" pretrain "${short[@]}" --out short_ref >/dev/null 2>&1 || bad "short reference run"
FM_FAIL_IO_LOG=1 "$FM" pretrain "${short[@]}" --out counted >/dev/null 2>counted.log || bad "counted run"
# a save starts with its two folder creations ("mkdir" of the run and of checkpoints/)
mapfile -t starts < <(grep -n ': mkdir$' counted.log | sed -n 's/^[0-9]*:io \([0-9]*\): mkdir$/\1/p' | awk 'NR % 2 == 1')
# the last operations are the loss plot's (written after the last save, its failure only skips it)
total=$(( $(grep -n ': create file$' counted.log | tail -1 | sed -n 's/^[0-9]*:io \([0-9]*\): .*/\1/p') - 1 ))
if [ ${#starts[@]} -ge 2 ]; then
    first_end=$((${starts[1]} - 1))
    last_start=${starts[${#starts[@]} - 1]}
    points=$( (seq "${starts[0]}" "$first_end"; seq "$last_start" "$total") | tr '\n' ' ')
    n=0 failures=0 wrong=0
    for k in $points; do
        n=$((n + 1))
        rm -rf inj
        if FM_FAIL_IO=$k "$FM" pretrain "${short[@]}" --out inj >inj.log 2>&1; then
            wrong=$((wrong + 1)); echo "  FM_FAIL_IO=$k: the run did not fail"; continue
        fi
        grep -q "Input/output error" inj.log || { wrong=$((wrong + 1)); echo "  FM_FAIL_IO=$k: no I/O error named:"; tail -1 inj.log; }
        if saved inj && [ -z "$(ckpt_step inj)" ]; then
            failures=$((failures + 1)); echo "  FM_FAIL_IO=$k: the checkpoint no longer loads"; "$FM" info --model inj 2>&1 | tail -1
        fi
        resume_to_end inj "${short[@]}" || { failures=$((failures + 1)); echo "  FM_FAIL_IO=$k: resume failed:"; tail -2 inj.resume.log; continue; }
        if ! diff <(losses short_ref) <(losses inj) >/dev/null || ! cmp -s short_ref/model.safetensors inj/model.safetensors; then
            failures=$((failures + 1)); echo "  FM_FAIL_IO=$k: the resumed run differs from the reference"
        fi
    done
    [ $n -ge 20 ] && ok || bad "only $n failure points"
    [ $wrong -eq 0 ] && ok || bad "$wrong injected failures went unreported"
    [ $failures -eq 0 ] && ok || bad "$failures of $n injected failures lost the run or changed its result"
    echo "  ($n failure points: operations ${starts[0]}-$first_end and $last_start-$total of the run's $(grep -c '^io ' counted.log))"
else
    bad "FM_FAIL_IO_LOG listed no save (${#starts[@]} found)"
fi

# --- a full disk: a tmpfs with room for one checkpoint and a half, so that the run's second save
# (which needs the new checkpoint beside the current one) fails with ENOSPC; the run stops
# saying so, its checkpoint loads, and copied to a roomy disk it resumes to the reference's end
ck=$(du -sk --apparent-size short_ref/checkpoints/step-* | tail -1 | cut -f1)
if [ -n "$ck" ] && mkdir tinyfs && mount -t tmpfs -o size=$(( ck * 3 / 2 + 64 ))k tmpfs tinyfs 2>/dev/null; then
    trap 'umount "$tmp/tinyfs" 2>/dev/null; rm -rf "$tmp"' EXIT
    "$FM" pretrain "${short[@]}" --out tinyfs/run >full.log 2>&1
    status=$?
    if [ $status -eq 1 ] && grep -q "No space left on device" full.log && grep -q "previous one kept" full.log; then ok; else
        bad "full disk: exit $status (want 1), no ENOSPC named:"; tail -2 full.log | sed 's/^/    /'
    fi
    [ -n "$(ckpt_step tinyfs/run)" ] && ok || bad "full disk: the checkpoint no longer loads"
    ls -a tinyfs/run/checkpoints | grep -q '\.tmp' && bad "full disk: a temporary folder was left" || ok
    cp -a tinyfs/run roomy
    umount tinyfs
    resume_to_end roomy "${short[@]}" || bad "full disk: the copied run does not resume"
    same_as_reference "full disk, resumed elsewhere" roomy short_ref
else
    skip_case "full disk" "a tmpfs cannot be mounted here (not root, or no CAP_SYS_ADMIN)"
fi

summary "cli crash"
