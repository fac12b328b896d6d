#!/usr/bin/env bash
# cli_golden_test.sh — the golden run (tests/golden/pretrain50.sh: 50 steps of fm pretrain, two
# shapes, float32 and bfloat16, 1 and 2 threads) against its output from the binary before the
# library's restructuring (tests/golden/pretrain50.txt).
#   - every "loss", "val_loss" and "sha256" line must be identical: a difference fails the test,
#     the first one printed in full;
#   - the "generate" and "score" lines (checksums of decoding) are compared too, but a difference
#     is only a warning: decoding arithmetic is being changed on purpose.
# The expected bits are those of an AVX-512 build (-O3 -march=native on a CPU with AVX512_BF16),
# which the runtime-dispatched build's avx512 and avx512bf16 code paths reproduce. Skipped, with
# the reason printed: entirely on the avx2 and generic paths and under sanitizers; bfloat16 on
# the avx512 path (see below).
# Usage: tests/cli_golden_test.sh PATH/TO/fm     Prints "N passed, N failed"; exits non-zero on failure.
set -u
FM=$(realpath "${1:?usage: cli_golden_test.sh PATH/TO/fm}")
here=$(dirname "$(realpath "$0")")
source "$here/cli_lib.sh"
expected=$here/golden/pretrain50.txt
tmp=$(mktemp -d /tmp/fm_golden_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The kernels' code path that runs (fm info --cpu: the best this CPU has, or the one FM_CPU
# forces; make test runs the suite once per path): the golden bits are the AVX-512 paths'.
# float32 runs on avx512 and avx512bf16, bfloat16 on avx512bf16 only (its products are
# AVX512_BF16's dot products). Skipped under sanitizers (FM_CFLAGS from make): their -O1 build
# need not round as the -O3 one did.
if [[ " ${FM_CFLAGS:-} " == *" -fsanitize="* ]]; then
    echo "cli golden: skipped: a sanitizer build (the golden bits are the optimised build's)"
    exit 0
fi
if ! path=$("$FM" info --cpu 2>"$tmp/err"); then
    bad "fm info --cpu failed: $(head -1 "$tmp/err")"
    summary "cli golden"
    exit
fi
path=$(awk '{ print $3 }' <<<"$path")
precisions=()
case $path in
avx512bf16) precisions=(fp32 bf16) ;;
avx512) precisions=(fp32); skip_case "golden bf16" "the code path is avx512, without AVX512_BF16's products" ;;
*) echo "cli golden: skipped: the kernels' code path is $path; the golden bits are the AVX-512 paths'"
   exit 0 ;;
esac
if [ ${#precisions[@]} -eq 0 ]; then summary "cli golden"; exit; fi

if ! "$here/golden/pretrain50.sh" "$FM" "${precisions[@]}" >"$tmp/got" 2>"$tmp/err"; then
    bad "tests/golden/pretrain50.sh failed:"
    tail -5 "$tmp/err" | sed 's/^/    /'
    summary "cli golden"
    exit
fi

# keyed FILE [PRECISIONS...]: one line per value, "kind<TAB>run<TAB>what<TAB>value", kind strict
# (loss, val_loss, sha256) or decode (generate, score); only the runs of the given precisions
keyed() {
    awk -v want=" ${*:2} " '
        /^== / { run = substr($0, 4); n = split(run, w, " "); keep = index(want, " " w[n - 1] " ") > 0; next }
        !keep { next }
        /^[0-9]+ (loss|val_loss) / { printf "strict\t%s\tstep %s %s\t%s\n", run, $1, $2, $3; next }
        /^sha256 / { printf "strict\t%s\tsha256\t%s\n", run, $2; next }
        /^(generate|score)/ { i = index($0, ": "); printf "decode\t%s\t%s\t%s\n", run, substr($0, 1, i - 1), substr($0, i + 2); next }
        { printf "strict\t%s\tunexpected line\t%s\n", run, $0 }' "$1"
}
keyed "$expected" "${precisions[@]}" >"$tmp/want.keyed"
keyed "$tmp/got" "${precisions[@]}" >"$tmp/got.keyed"

# The comparison, in the expected file's order; a value missing on either side is a difference.
awk -F'\t' -v out="$tmp/report" '
    NR == FNR { got[$2 "\t" $3] = $4; order[++n_got] = $2 "\t" $3; kind_got[$2 "\t" $3] = $1; next }
    {
        key = $2 "\t" $3; seen[key] = 1
        value = (key in got) ? got[key] : "(missing)"
        if ($1 == "strict") {
            if (value == $4) same++
            else if (!strict_diffs++) first = sprintf("%s: %s: expected %s, got %s", $2, $3, $4, value)
        } else if (value == $4) decode_same++
        else { decode_diffs++; print "WARN " $2 ": " $3 ": expected " $4 ", got " value >out }
    }
    END {
        for (i = 1; i <= n_got; i++)
            if (!(order[i] in seen) && kind_got[order[i]] == "strict" && !strict_diffs++)
                first = sprintf("%s: not in the golden output: %s", order[i], got[order[i]])
        printf "%d %d %d %d\n", same, strict_diffs, decode_same, decode_diffs
        if (strict_diffs) print "FIRST " first >out
    }' "$tmp/got.keyed" "$tmp/want.keyed" >"$tmp/counts"
read -r same strict_diffs decode_same decode_diffs <"$tmp/counts"
touch "$tmp/report"

runs=$(grep -c '^== ' "$tmp/got")
if [ "$same" -gt 0 ] && [ "$strict_diffs" -eq 0 ]; then
    ok
    echo "golden ${precisions[*]}: $runs runs, all $same loss, val_loss and sha256 lines identical to tests/golden/pretrain50.txt"
else
    bad "golden ${precisions[*]}: $strict_diffs loss/val_loss/sha256 lines differ from tests/golden/pretrain50.txt; the first:"
    sed -n 's/^FIRST /    /p' "$tmp/report"
fi
if [ "$decode_diffs" -gt 0 ]; then
    echo "WARNING (not a failure: decoding is being changed on purpose): $decode_diffs of $((decode_same + decode_diffs)) generate/score checksums differ from the golden output:"
    sed -n 's/^WARN /    /p' "$tmp/report"
else
    echo "golden ${precisions[*]}: all $decode_same generate/score checksums identical"
fi
summary "cli golden"
