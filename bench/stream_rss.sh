#!/usr/bin/env bash
# stream_rss.sh — `fm data prepare --shard-tokens` on ever larger corpora: peak memory and MB/s.
#
# What it is for: docs/distributed.md's "Corpora larger than memory" table: the streaming mode's
# peak resident set staying flat while the text grows (100 MB to 4 GB by default), and its
# throughput. The text is the King James Bible (one verse a line, Debian's bible-kjv) and the
# Debian changelogs under /usr/share/doc, repeated until SIZE bytes, piped in on standard input
# (nothing of that size is written to disk; the shards are, and are removed after each size).
# Each size is one run of `/usr/bin/time -v fm data prepare ... -`; the line printed per size:
#   stream_rss size_mb=... peak_rss_mb=... seconds=... mb_per_s=... tokens=... shards=...
# Not for: the in-memory mode (no --shard-tokens), which holds the whole corpus.
# fm data prepare tokenizes on all cores.
# Usage: bench/stream_rss.sh [--fm build/fm] [--sizes "100 1000 4000"] [--vocab 8192]
#                            [--shard-tokens 10000000] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
FM=build/fm SIZES="100 1000 4000" VOCAB=8192 SHARD=10000000 WORK=
while [ $# -gt 0 ]; do
    case $1 in
    --fm) FM=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --vocab) VOCAB=$2; shift 2 ;;
    --shard-tokens) SHARD=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "stream_rss.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -x "$FM" ] || { echo "stream_rss.sh: $FM not built (run make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "stream_rss.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
command -v bible >/dev/null || scripts/install-deps.sh --kjv
WORK=${WORK:-$(mktemp -d /tmp/stream_rss_XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK/out"' EXIT

# the seed text: the verses (4.5 MB), then the changelogs' text up to 20 MB in all
seed=$WORK/seed.txt
if [ ! -s "$seed" ]; then
    bible -m 8192 -l4000 'Gen1:1-Rev22:21' </dev/null | sed -n -E 's/^ +[0-9]+ //p' >"$seed"
    { find /usr/share/doc -name 'changelog*.gz' -print0 | sort -z | xargs -0 zcat 2>/dev/null | tr -d '\000' |
        head -c 15500000 >>"$seed"; } || true
fi
[ -s "$WORK/tok.json" ] || "$FM" tokenizer train --vocab "$VOCAB" --out "$WORK/tok.json" "$seed" >/dev/null
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "seed text: $(wc -c <"$seed") bytes; tokenizer: $VOCAB tokens; shards of $SHARD tokens"

for mb in $SIZES; do
    rm -rf "$WORK/out"
    bytes=$((mb * 1000000))
    # the seed text repeated without end, cut at SIZE bytes (the last line may be cut short)
    start=$(date +%s.%N)
    set +e
    while cat "$seed"; do :; done 2>/dev/null | head -c "$bytes" |
        /usr/bin/time -v -o "$WORK/time.txt" "$FM" data prepare --tokenizer "$WORK/tok.json" --out "$WORK/out" \
            --shard-tokens "$SHARD" - >"$WORK/prepare.txt" 2>&1
    rc=${PIPESTATUS[2]}
    set -e
    end=$(date +%s.%N)
    if [ "$rc" != 0 ]; then
        echo "stream_rss.sh: fm data prepare failed on $mb MB (exit $rc):" >&2
        tail -5 "$WORK/prepare.txt" >&2
        exit 1
    fi
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
    shards=$(find "$WORK/out" -name 'train-*.bin' -o -name 'val-*.bin' | wc -l)
    tokens=$(grep -o '[0-9,]* tokens' "$WORK/prepare.txt" | head -1 | tr -d ', tokens')
    awk -v mb="$mb" -v kb="$rss_kb" -v s0="$start" -v s1="$end" -v t="${tokens:-?}" -v n="$shards" 'BEGIN {
        s = s1 - s0; printf "stream_rss size_mb=%d peak_rss_mb=%.1f seconds=%.1f mb_per_s=%.2f tokens=%s shards=%d\n",
        mb, kb / 1024, s, mb / s, t, n }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
