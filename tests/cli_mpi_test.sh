#!/usr/bin/env bash
# cli_mpi_test.sh — data-parallel training under mpirun (docs/distributed.md): 20 steps of a tiny
# model on 2 ranks against 1 process with the same global batch and against 1 process with
# --grad-accum 2 (losses and parameters within a float tolerance: the gradient sums are added in
# another order), the overlap (--overlap 1, off by default: the same bits as the 2-rank run
# without it; with --grad-accum 2 within the tolerance of 1 process), mpirun -np 1 against a
# plain run (bit for bit), a SIGTERM on 2 ranks then --resume on 2 (the same bits) and on 1
# (within the tolerance), a rank killed with SIGKILL (the job ends within 30 s, exit status
# non-zero, mpirun's message naming the rank, the last checkpoint loads) and a rank that fails
# alone (the job ends within 30 s, exit status non-zero), that ranks other than 0 print nothing,
# and ZeRO-1 (--zero 1: the same bits as the plain 2-rank run; a resume with it on 2 ranks
# bitwise, on 3 within the tolerance). Skipped, saying why, when mpirun is absent or fm was built without MPI;
# a build without MPI still checks that it refuses to run under a launcher.
# Usage: tests/cli_mpi_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_mpi_test.sh PATH/TO/fm}")
tmp=$(mktemp -d /tmp/fm_mpi_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"

# The tolerance. One process sums a global batch's gradient in one pass, 2 ranks sum half each
# and then add the halves (and --grad-accum 2 adds the second half onto the first): the same
# numbers added in another order, so float32 rounding differs in the last bits, and AdamW's
# normalised steps carry such differences on. Measured over 20 steps of this model (lr 1e-3):
# losses equal to 9 digits, parameters within 2e-6 of each other (mean 1e-9). Allowed: losses
# within 1e-5 relative, parameters within 1e-4 absolute (a tenth of one step's largest move);
# over 200 steps the differences grow (measured up to 1.7e-4): there parameters within 1e-3 (one
# step's largest move).
loss_tol=1e-5 param_tol=1e-4 long_param_tol=1e-3

lambs_corpus 600 >corpus.txt
"$FM" tokenizer train --vocab 300 --out tok.json corpus.txt >/dev/null || bad "tokenizer train"
"$FM" data prepare --tokenizer tok.json --out data corpus.txt >/dev/null || bad "data prepare"
common=(--data data --layers 2 --dim 32 --heads 2 --context 32 --eval-every 10 --eval-tokens 512 --sample-every 0
        --seed 7)

# A build without MPI: refuses to run as one of several processes (each would train alone).
if ! "$FM" pretrain --help | grep -q "data parallel: MPI"; then
    expect "launcher without MPI" 1 "built without MPI" -- env OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 \
        "$FM" pretrain "${common[@]}" --batch 4 --steps 2 --out nompi
    skip_case "data-parallel runs" "this fm was built without MPI (make MPI=1 with libopenmpi-dev installed)"
    summary "cli mpi"
    exit
fi
if ! command -v mpirun >/dev/null; then
    skip_case "data-parallel runs" "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev, or scripts/install-deps.sh --mpi)"
    summary "cli mpi"
    exit
fi

mpi_test_env
mpi=(mpirun --allow-run-as-root --oversubscribe -np) # then the number of ranks
# lines_with PATTERN FILE: how many lines of FILE match (0 when FILE does not exist yet)
lines_with() { local n; n=$(grep -c -- "$1" "$2" 2>/dev/null); echo "${n:-0}"; }

losses() { grep -o '"step":[0-9]*,"loss":[0-9.e+-]*' "$1/metrics.jsonl"; }
val_losses() { grep -o '"step":[0-9]*,"val_loss":[0-9.e+-]*' "$1/metrics.jsonl"; }
# close_losses NAME A B [STEPS]: A's and B's per-step losses (and held-out losses) pair up, each
# within loss_tol relative; STEPS: how many per-step losses each must hold
close_losses() {
    local name=$1 a=$2 b=$3 steps=${4:-} worst
    if [ -n "$steps" ] && { [ "$(losses "$a" | wc -l)" -ne "$steps" ] || [ "$(losses "$b" | wc -l)" -ne "$steps" ]; }; then
        bad "$name: want $steps losses, $a holds $(losses "$a" | wc -l), $b $(losses "$b" | wc -l)"
        return
    fi
    worst=$(paste -d' ' <({ losses "$a"; val_losses "$a"; } | sed 's/.*://') \
                        <({ losses "$b"; val_losses "$b"; } | sed 's/.*://') |
        awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > w) w = r; n++ }
             NF != 2 { bad = 1 } END { if (bad || n == 0) print "unpaired"; else printf "%.3g\n", w }')
    echo "measured: $name: losses within $worst relative"
    if [ "$worst" != unpaired ] && awk -v w="$worst" -v t="$loss_tol" 'BEGIN { exit !(w <= t) }'; then ok; else
        bad "$name: losses differ by $worst relative (tolerance $loss_tol)"
    fi
}
# close_params NAME A B [TOL]: the model.safetensors of A and B within TOL (param_tol; python3,
# skipped without it)
close_params() {
    local name=$1 worst tol=${4:-$param_tol}
    if ! command -v python3 >/dev/null; then skip_case "$name" "python3 is not installed"; return; fi
    worst=$(python3 - "$2/model.safetensors" "$3/model.safetensors" <<'EOF'
import json, struct, sys
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    head, data = json.loads(b[8:8 + n]), b[8 + n:]
    return {k: struct.unpack('<%df' % ((v['data_offsets'][1] - v['data_offsets'][0]) // 4),
                             data[v['data_offsets'][0]:v['data_offsets'][1]])
            for k, v in head.items() if k != '__metadata__' and v['dtype'] == 'F32'}
a, b = load(sys.argv[1]), load(sys.argv[2])
print(max(abs(x - y) for k in a for x, y in zip(a[k], b[k])) if a.keys() == b.keys() and a else 'mismatch')
EOF
)
    echo "measured: $name: within $worst"
    if [ "$worst" != mismatch ] && awk -v w="$worst" -v t="$tol" 'BEGIN { exit !(w <= t) }'; then ok; else
        bad "$name: parameters differ by up to $worst (tolerance $tol)"
    fi
}

# --- 20 steps: 2 ranks, 1 process with the same global batch, 1 process with --grad-accum 2
expect "1 process" 0 "done: 20 steps" -- "$FM" pretrain "${common[@]}" --batch 4 --threads 1 --steps 20 --out one
expect "2 ranks" 0 "done: 20 steps" -- "${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 4 --steps 20 --out two
expect "grad-accum 2" 0 "done: 20 steps" -- "$FM" pretrain "${common[@]}" --batch 2 --grad-accum 2 --threads 1 \
    --steps 20 --out accum
close_losses "2 ranks vs 1 process" one two 20
close_params "2 ranks vs 1 process, parameters" one two
close_losses "2 ranks vs grad-accum 2" accum two 20
close_params "2 ranks vs grad-accum 2, parameters" accum two
# not required, for the record: the backward adds the second micro-batch onto the first one's
# gradient, 2 ranks add two separate halves, so the bits differ (docs/distributed.md)
cmp -s accum/model.safetensors two/model.safetensors && echo "note: 2 ranks and --grad-accum 2 gave the same bits"
# --overlap 1 (off by default): each block's sum starts as the backward finishes the block. With
# 2 ranks every element's sum is one addition of two floats, the same bits in either order and
# whatever buckets or algorithm MPI uses, so the run is held to the 2-rank run's bits (stricter
# than the tolerance; with 3 or more ranks the order may differ, docs/distributed.md).
expect "2 ranks, overlap" 0 "done: 20 steps" -- "${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 4 --steps 20 \
    --overlap 1 --out twoo
if [ "$(losses twoo | wc -l)" -eq 20 ] && diff <(losses two) <(losses twoo) >/dev/null &&
    diff <(val_losses two) <(val_losses twoo) >/dev/null && cmp -s two/model.safetensors twoo/model.safetensors; then ok
else bad "--overlap 1 on 2 ranks: losses or parameters differ from the 2-rank run without it"; fi
# the overlap with --grad-accum 2: the sums start during the second micro-batch's backward only;
# against 1 process with the same micro-batches, within the tolerance (the halves are added in
# another order, as above)
expect "2 ranks, overlap, grad-accum 2" 0 "done: 20 steps" -- "${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 2 \
    --grad-accum 2 --steps 20 --overlap 1 --out twooa
close_losses "2 ranks with overlap and grad-accum 2 vs grad-accum 2" accum twooa 20
close_params "2 ranks with overlap and grad-accum 2 vs grad-accum 2, parameters" accum twooa
# rank 1 prints nothing: one "done" line, one line per evaluation
out=$("${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 4 --steps 20 --out quiet 2>&1)
if [ "$(grep -c "^done: 20 steps" <<<"$out")" -eq 1 ] && [ "$(grep -c "^step 20/20" <<<"$out")" -eq 1 ]; then ok; else
    bad "ranks other than 0 printed: $(grep -c "^done" <<<"$out") done lines"
fi
# ZeRO-1 (--zero 1): each rank updates its 1/N of the elements with its shard of the moments and
# the ranks all-gather the parameters; AdamW is element-wise, so the bits are the plain 2-rank
# run's: losses, weights and the checkpoint's moments (gathered onto rank 0 whole, as one process
# writes them, so any number of ranks resumes it)
expect "2 ranks, ZeRO-1" 0 "ZeRO-1: AdamW's moments sharded over 2 ranks: .* MiB saved per rank" -- \
    "${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 4 --steps 20 --out twoz --zero 1
if diff <(losses two) <(losses twoz) >/dev/null && cmp -s two/model.safetensors twoz/model.safetensors &&
    cmp -s two/training_state.safetensors twoz/training_state.safetensors; then ok; else
    bad "ZeRO-1 on 2 ranks: losses, weights or moments differ from the plain 2-rank run"
fi
# mpirun -np 1 is the single process, bit for bit
expect "1 rank" 0 "done: 20 steps" -- "${mpi[@]}" 1 "$FM" pretrain "${common[@]}" --batch 4 --threads 1 --steps 20 --out rank1
if cmp -s one/model.safetensors rank1/model.safetensors && diff <(losses one) <(losses rank1) >/dev/null; then ok; else
    bad "mpirun -np 1 differs from a plain run"
fi
# a global batch smaller than the ranks is refused
expect "batch < ranks" 1 "smaller than the 2 data-parallel ranks" -- "${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 1 \
    --steps 2 --out small

# --- SIGTERM on 2 ranks (the ranks agree on the step), resume on 2 and on 1
run_steps=200
slow=(--eval-every 1)
expect "2 ranks, whole" 0 "done: $run_steps steps" -- "${mpi[@]}" 2 "$FM" pretrain "${common[@]}" "${slow[@]}" --batch 4 \
    --steps $run_steps --save-every 20 --out whole
"${mpi[@]}" 2 "$FM" pretrain "${common[@]}" "${slow[@]}" --batch 4 --steps $run_steps --save-every 20 --out cut \
    >cut.log 2>&1 &
pid=$!
for _ in $(seq 1 2000); do
    [ "$(lines_with '"loss"' cut/metrics.jsonl)" -ge 5 ] && break
    sleep 0.005
done
# SIGTERM to every rank (as a job scheduler sends it; mpirun's own forwarding may kill the ranks
# before they save), the ranks held still meanwhile so that a fast run cannot finish first; they
# agree on the step to stop after when they continue
ranks=()
for p in $(pgrep -f -- "--out cut"); do [ "$(readlink "/proc/$p/exe")" = "$FM" ] && ranks+=("$p"); done
kill -STOP "${ranks[@]}" 2>/dev/null
kill -TERM "${ranks[@]}" 2>/dev/null
kill -CONT "${ranks[@]}" 2>/dev/null
wait $pid
status=$?
at=$(grep -o "^interrupted: checkpoint saved at step [0-9]*" cut.log | grep -o "[0-9]*$")
if [ "$status" -ne 0 ] && [ -n "$at" ] && [ "$at" -lt $run_steps ] && [ "$(losses cut | wc -l)" -eq "$at" ]; then
    ok
    cp -a cut cut1
    cp -a cut cutz2
    cp -a cut cutz3
    expect "resume on 2" 0 "done: $run_steps steps" -- "${mpi[@]}" 2 "$FM" pretrain --out cut --resume
    if diff <(losses whole) <(losses cut) >/dev/null && cmp -s whole/model.safetensors cut/model.safetensors; then ok; else
        bad "resumed on 2 ranks: losses or parameters differ from the uninterrupted run"
    fi
    # a checkpoint resumed under ZeRO-1: sharded afresh, on 2 ranks the same bits; on 3 (shards of
    # unequal length, another summation order) within the tolerance
    expect "resume on 2, ZeRO-1" 0 "done: $run_steps steps" -- "${mpi[@]}" 2 "$FM" pretrain --out cutz2 --resume --zero 1
    if diff <(losses whole) <(losses cutz2) >/dev/null && cmp -s whole/model.safetensors cutz2/model.safetensors; then ok
    else bad "resumed on 2 ranks with ZeRO-1: losses or parameters differ from the uninterrupted run"; fi
    expect "resume on 3, ZeRO-1" 0 "sharded over 3 ranks" -- "${mpi[@]}" 3 "$FM" pretrain --out cutz3 --resume --zero 1
    close_losses "resumed on 3 with ZeRO-1 vs the 2-rank run" whole cutz3 $run_steps
    close_params "resumed on 3 with ZeRO-1 vs the 2-rank run, parameters" whole cutz3 $long_param_tol
    expect "resume on 1" 0 "done: $run_steps steps" -- "$FM" pretrain --out cut1 --resume --threads 1
    close_losses "resumed on 1 vs the 2-rank run" whole cut1 $run_steps
    close_params "resumed on 1 vs the 2-rank run, parameters" whole cut1 $long_param_tol
else
    bad "SIGTERM: exit $status (want non-zero), interrupted at step ${at:-none} (want < $run_steps)"
    tail -3 cut.log | sed 's/^/    /'
fi

# --- the job ends, non-zero, within 30 s: one rank killed (SIGKILL); one rank failing alone
# ends_within NAME PID LOG: PID is gone within 30 s with a non-zero status (the time and status
# printed for the record)
ends_within() {
    local name=$1 pid=$2 log=$3 start=$SECONDS t0 status
    t0=$(date +%s.%N)
    while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - start)) -lt 30 ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        bad "$name: the job still runs after 30 s"
        pkill -KILL -P "$pid"
        kill -KILL "$pid"
        wait "$pid"
        return
    fi
    wait "$pid"
    status=$?
    echo "measured: $name: the job ended $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after, exit status $status"
    if [ "$status" -ne 0 ]; then ok; else bad "$name: exit status 0"; tail -3 "$log" | sed 's/^/    /'; fi
}
# a checkpoint every 2 steps, so that one from during the run is the last when the rank is killed
"${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 4 --steps 100000 --save-every 2 --out killed >killed.log 2>&1 &
pid=$!
for _ in $(seq 1 2000); do
    [ "$(lines_with '"loss"' killed/metrics.jsonl)" -ge 5 ] && break
    sleep 0.005
done
ranks=($(pgrep -P $pid))
if [ ${#ranks[@]} -eq 2 ]; then
    kill -KILL "${ranks[1]}"
    ends_within "a rank killed" $pid killed.log
    # mpirun says which rank died and how (its words vary by version, lines may wrap)
    if tr -s '\n ' '  ' <killed.log | grep -qE "rank 1 .*(signal 9|Killed)"; then ok; else
        bad "a rank killed: mpirun's message does not name rank 1 and the signal"; tail -5 killed.log | sed 's/^/    /'
    fi
    # the last checkpoint loads: its model for evaluation, and the whole of it for a --resume
    # (on 1 process, stopped by SIGTERM once it trains: its first progress line after the resume,
    # when the stop handler is in place, so that it saves; timeout: never a hang)
    at=$(readlink killed/checkpoint | grep -o "step-[0-9]*$" | grep -o "[1-9][0-9]*$")
    echo "measured: a rank killed: the last checkpoint is step ${at:-none}"
    expect "a rank killed: the model loads" 0 "model: .* bits per byte" -- "$FM" eval --data data --model killed --no-bigram
    timeout 60 "$FM" pretrain --out killed --resume --threads 1 >resumed.log 2>&1 &
    rpid=$!
    for _ in $(seq 1 4000); do grep -q "^step " resumed.log && break; kill -0 $rpid 2>/dev/null || break; sleep 0.01; done
    kill -TERM $rpid 2>/dev/null
    wait $rpid
    if [ -n "$at" ] && grep -q "^resuming killed at step $at of 100000" resumed.log &&
        grep -q "^interrupted: checkpoint saved at step" resumed.log; then ok; else
        bad "a rank killed: --resume did not continue from the last checkpoint (step ${at:-none})"
        tail -3 resumed.log | sed 's/^/    /'
    fi
else
    kill -TERM $pid
    wait $pid
    skip_case "a rank killed" "mpirun's children are not the 2 ranks (${#ranks[@]} found)"
fi
# rank 0 alone refuses an --out that holds a run (usage error); rank 1 goes on to wait for it
"${mpi[@]}" 2 "$FM" pretrain "${common[@]}" --batch 4 --steps 20 --out one >refused.log 2>&1 &
ends_within "one rank failing" $! refused.log
grep -q "already holds a run" refused.log && ok || bad "one rank failing: no message naming the cause"

summary "cli mpi"
