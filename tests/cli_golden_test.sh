#!/usr/bin/env bash
# cli_golden_test.sh — the golden run (tests/golden/pretrain50.sh: 50 steps of fm pretrain, two
# shapes, float32 and bfloat16, 1 and 2 threads) against its output from the binary before the
# library's restructuring (tests/golden/pretrain50.txt).
#   - every "loss", "val_loss" and "sha256" line must be identical: a difference fails the test,
#     the first one printed in full;
#   - the "generate" and "score" lines (checksums of decoding) are compared too, but a difference
#     is only a warning: decoding arithmetic is being changed on purpose.
# The expected bits are those of an AVX-512 build (-O3 -march=native on a CPU with AVX512_BF16).
# Skipped, with the reason printed: entirely in a build not compiled for AVX-512 (found from the
# compiler and flags the Makefile passes in FM_CC and FM_CFLAGS, or, run by hand without them,
# from the binary's instructions); float32 on a CPU without avx512f; bfloat16 on a CPU without
# avx512_bf16 or in a build without it.
# Usage: tests/cli_golden_test.sh PATH/TO/fm     Prints "N passed, N failed"; exits non-zero on failure.
set -u
FM=$(realpath "${1:?usage: cli_golden_test.sh PATH/TO/fm}")
here=$(dirname "$(realpath "$0")")
source "$here/cli_lib.sh"
expected=$here/golden/pretrain50.txt
tmp=$(mktemp -d /tmp/fm_golden_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# What the build was compiled for: __AVX512F__ and __AVX512BF16__ as its compiler flags define
# them, or the binary's own instructions (zmm registers, vdpbf16ps) when run by hand.
if [ -n "${FM_CFLAGS+x}" ]; then
    # shellcheck disable=SC2086
    macros=$(${FM_CC:-gcc} $FM_CFLAGS -dM -E -x c /dev/null 2>/dev/null)
    arch=$(tr ' ' '\n' <<<"$FM_CFLAGS" | grep -E '^-(O|m|fsanitize)' | tr '\n' ' ')
    how="compiled with ${FM_CC:-gcc} ${arch:-no -O/-m flags}"
    how=${how% }
    build_f=0 build_bf16=0
    grep -q '__AVX512F__ 1' <<<"$macros" && build_f=1
    grep -q '__AVX512BF16__ 1' <<<"$macros" && build_bf16=1
elif command -v objdump >/dev/null; then
    how="instructions of $FM"
    build_f=0 build_bf16=0
    objdump -d --no-show-raw-insn "$FM" >"$tmp/asm"
    grep -q '%zmm' "$tmp/asm" && build_f=1
    grep -q 'vdpbf16ps' "$tmp/asm" && build_bf16=1
else
    echo "cli golden: skipped: neither FM_CFLAGS (set by make) nor objdump to tell whether $FM is an AVX-512 build"
    exit 0
fi
if [ $build_f -eq 0 ]; then
    echo "cli golden: skipped: not an AVX-512 build ($how); the golden bits are the AVX-512 build's"
    exit 0
fi

precisions=()
if grep -qw avx512f /proc/cpuinfo; then precisions+=(fp32); else
    skip_case "golden fp32" "this CPU lacks avx512f"; fi
if ! grep -qw avx512_bf16 /proc/cpuinfo; then skip_case "golden bf16" "this CPU lacks avx512_bf16"
elif [ $build_bf16 -eq 0 ]; then skip_case "golden bf16" "the build has no AVX512_BF16 ($how)"
else precisions+=(bf16); fi
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
