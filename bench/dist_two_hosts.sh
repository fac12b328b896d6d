#!/usr/bin/env bash
# dist_two_hosts.sh — two "hosts" on one machine (docs/distributed.md): network namespaces fmh_a
# (10.77.0.1) and fmh_b (10.77.0.2) joined by a veth pair, each end limited by tc (tbf) to RATE
# (1gbit), and `mpirun -np 2` with one rank in each, MPI over TCP only (btl tcp,self; mpirun's
# remote launch goes through `ip netns exec` instead of ssh). Shape (iii) of bench/compare.sh,
# one thread per rank, with and without the overlap, alternated with the same run on one "host"
# (shared memory) for the compute time. Reports per run the median step time and the mean time
# per step in the gradient sums after the backward, and the step time the model of
# docs/distributed.md predicts: C + A_tail + max(0, A_blocks - B), A = G / W for 2 ranks.
# Needs root, iproute2 (ip, tc), mpirun, an fm built with MPI. Removes its namespaces at the end.
# What it is not: a test.
# Usage: sudo bench/dist_two_hosts.sh [PATH/TO/fm] [TEXT]   env: ROUNDS (3), STEPS (8), RATE (1gbit)
set -u
FM=$(realpath "${1:-build/fm}")
TEXT=${2:-}
ROUNDS=${ROUNDS:-3} STEPS=${STEPS:-8} RATE=${RATE:-1gbit}
tmp=$(mktemp -d /tmp/fm_two_hosts_XXXXXX)
cp "$FM" "$tmp/fm" && FM=$tmp/fm # rebuilding fm meanwhile does not break the runs
teardown() { ip netns del fmh_a 2>/dev/null; ip netns del fmh_b 2>/dev/null; rm -rf "$tmp"; }
trap teardown EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none

ip netns del fmh_a 2>/dev/null; ip netns del fmh_b 2>/dev/null
set -e
for n in fmh_a fmh_b; do ip netns add $n; ip -n $n link set lo up; done
ip link add fmh_va type veth peer name fmh_vb
ip link set fmh_va netns fmh_a
ip link set fmh_vb netns fmh_b
ip -n fmh_a addr add 10.77.0.1/24 dev fmh_va
ip -n fmh_b addr add 10.77.0.2/24 dev fmh_vb
ip -n fmh_a link set fmh_va up
ip -n fmh_b link set fmh_vb up
ip netns exec fmh_a tc qdisc add dev fmh_va root tbf rate "$RATE" burst 256kb latency 50ms
ip netns exec fmh_b tc qdisc add dev fmh_vb root tbf rate "$RATE" burst 256kb latency 50ms
set +e
cat >"$tmp/agent.sh" <<'EOF'
#!/bin/bash
# mpirun's "ssh": the command runs in the namespace that holds the host's address
host=$1
shift
case $host in 10.77.0.1) ns=fmh_a ;; 10.77.0.2) ns=fmh_b ;; *) echo "agent: unknown host $host" >&2; exit 1 ;; esac
exec ip netns exec "$ns" sh -c "$*"
EOF
chmod +x "$tmp/agent.sh"
two_hosts=(ip netns exec fmh_a mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2
           -H 10.77.0.1:1,10.77.0.2:1 --mca plm_rsh_agent "$tmp/agent.sh" --mca btl tcp,self
           --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24
           -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM)
one_host=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)

if [ -z "$TEXT" ]; then
    TEXT=$tmp/kjv.txt
    bible -f Gen1:1-Rev22:21 >"$TEXT" || { echo "two_hosts: give a TEXT corpus (or install bible-kjv)" >&2; exit 1; }
fi
"$FM" tokenizer train --vocab 4096 --out "$tmp/tok.json" "$TEXT" >/dev/null || exit 1
"$FM" data prepare --tokenizer "$tmp/tok.json" --out "$tmp/data" "$TEXT" >/dev/null || exit 1
flags=(--layers 4 --dim 256 --heads 4 --context 128 --batch 16 --seq 128 --data "$tmp/data" --steps "$STEPS"
       --eval-every 100000 --eval-tokens 1024 --save-every 100000 --sample-every 0 --seed 1 --threads 1)
tokens=$((16 * 128))

# run OUT OVERLAP LAUNCHER...: "step_s comm_s": the median step time and the mean gradient-sum
# time past step 2
run() {
    local out=$1 overlap=$2
    shift 2
    rm -rf "$out"
    "$@" "$FM" pretrain "${flags[@]}" --overlap "$overlap" --out "$out" >"$out.log" 2>&1 || { tail -3 "$out.log" >&2; echo "0 0"; return; }
    grep '"loss"' "$out/metrics.jsonl" | sed 's/[{}"]//g' | awk -F, -v tokens=$tokens '
        { s = t = c = 0
          for (i = 1; i <= NF; i++) { split($i, kv, ":"); if (kv[1] == "step") s = kv[2];
                                      if (kv[1] == "tokens_per_s") t = kv[2]; if (kv[1] == "allreduce_s") c = kv[2] }
          if (s > 2 && t > 0) { st[n++] = tokens / t; cs += c } }
        END { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (st[j] < st[i]) { x = st[i]; st[i] = st[j]; st[j] = x }
              printf "%.4f %.4f\n", n % 2 ? st[(n - 1) / 2] : (st[n / 2 - 1] + st[n / 2]) / 2, n ? cs / n : 0 }'
}

params=$("$FM" pretrain "${flags[@]}" --steps 1 --out "$tmp/probe" 2>/dev/null | grep -o "model: [0-9]* parameters" | grep -o "[0-9]*")
wte=$((4096 * 256 + 128 * 256))
rate_bits=$(awk -v r="$RATE" 'BEGIN { n = r + 0; if (r ~ /gbit$/) n *= 1e9; else if (r ~ /mbit$/) n *= 1e6; print n }')
A=$(awk -v p="$params" -v w="$rate_bits" 'BEGIN { printf "%.4f", 4 * p * 8 / w }')
A_tail=$(awk -v a="$A" -v p="$params" -v e="$wte" 'BEGIN { printf "%.4f", a * e / p }')
echo "shape (iii), 2 ranks x 1 thread, $params parameters: gradient $((4 * params)) bytes; at $RATE A = $A s" \
    "(outside the blocks: $A_tail s)"
printf "%-6s %-8s %12s %12s %12s %12s %14s\n" round overlap "1 host s" "1 host comm" "2 hosts s" "2 hosts comm" "model 2 hosts"
for r in $(seq "$ROUNDS"); do
    for o in 1 0; do
        read -r s1 c1 < <(run "$tmp/one_$o" $o "${one_host[@]}")
        read -r s2 c2 < <(run "$tmp/two_$o" $o "${two_hosts[@]}")
        # the one-host step is the compute C: its sums move 17 MB through shared memory in milliseconds,
        # the rest of its "comm" is one rank waiting for the slower one, which a real step includes too
        model=$(awk -v s="$s1" -v c="$c1" -v a="$A" -v t="$A_tail" -v o=$o '
            BEGIN { C = s; B = 2 * C / 3; blocks = a - t; hidden = blocks - B; if (hidden < 0) hidden = 0
                    printf "%.4f", o ? C + t + hidden : C + a }')
        printf "%-6s %-8s %12s %12s %12s %12s %14s\n" "$r" "$o" "$s1" "$c1" "$s2" "$c2" "$model"
    done
done
