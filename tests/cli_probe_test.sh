#!/usr/bin/env bash
# cli_probe_test.sh — `fm probe` from the command line on tests/fixtures/images/ (300 training and
# 60 test images of 16 x 16, three kinds of shapes, 100 training images each):
#   - a tiny model pre-trained for 20 steps (as cli_vision_test.sh makes one), then the probe with
#     5 and all labels per class, 2 draws: --json prints one object whose keys are
#     layer, results.{pretrained,pixels,random}.{5,all}.{mean,sd,draws} (2 draws and 1), and
#     the pixels' accuracy on these easy shapes is above chance;
#   - the same run twice gives the same JSON; the table names every feature set and the paired
#     differences; --features pixels needs no model;
#   - --pool: "mean" (the default) is the JSON of no --pool; normed and auto name the pools chosen
#     (auto: among both, per draw), a fixed --layer with --pool normed reports that layer;
#   - errors: image and label counts that disagree, a missing file, images of another size than
#     the image tokenizer's, a model without an image tokenizer, more labels per class than a
#     class has, too few labels to cross-validate, a bad --per-class or --layer.
# Usage: tests/cli_probe_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_probe_test.sh PATH/TO/fm}")
FIX=$(realpath "$(dirname "$(realpath "$0")")/fixtures/images")
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d /tmp/fm_probe_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"
export OMP_WAIT_POLICY=passive
TRI=$FIX/train-images-idx3-ubyte.gz TRL=$FIX/train-labels-idx1-ubyte.gz
TEI=$FIX/t10k-images-idx3-ubyte.gz TEL=$FIX/t10k-labels-idx1-ubyte.gz
DATA=(--train-images "$TRI" --train-labels "$TRL" --test-images "$TEI" --test-labels "$TEL")

# --- a tiny pre-trained model with its image tokenizer
"$FM" tokenizer train --images "$TRI" --out tok --codebook 32 --iters 5 --threads 2 >/dev/null 2>&1 || bad "tokenizer train"
"$FM" data prepare --images "$TRI" --tokenizer tok --out data >/dev/null 2>&1 || bad "data prepare"
"$FM" pretrain --data data --out run --layers 2 --dim 32 --heads 2 --context 18 --seq 17 --batch 8 --steps 20 \
    --lr 1e-2 --eval-every 20 --eval-tokens 255 --sample-every 0 --threads 2 --seed 3 >/dev/null 2>&1 || bad "pretrain"

# --- the JSON object
"$FM" probe --model run "${DATA[@]}" --per-class 5,all --draws 2 --json >probe.json 2>probe.err || {
    bad "probe --json: exit $?"
    sed 's/^/    /' probe.err | tail -5
}
check=$("$PY" - probe.json <<'EOF' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
assert isinstance(r["layer"], int) and 0 <= r["layer"] <= 2, r["layer"]
assert r["pool"] == "mean", r["pool"]
for s in ("pretrained", "pixels", "random"):
    for p, n in (("5", 2), ("all", 1)):
        e = r["results"][s][p]
        assert len(e["draws"]) == n, (s, p, e)
        assert all(0.0 <= a <= 1.0 for a in e["draws"]), e
        assert abs(e["mean"] - sum(e["draws"]) / n) < 1e-5, e
        assert e["sd"] >= 0.0, e
assert r["results"]["pixels"]["all"]["mean"] > 0.5, r["results"]["pixels"]
print("json ok")
EOF
)
[ "$check" = "json ok" ] && ok || bad "probe JSON: $check"
"$FM" probe --model run "${DATA[@]}" --per-class 5,all --draws 2 --json >again.json 2>/dev/null
cmp -s probe.json again.json && ok || bad "two runs gave different JSON"

# --- --pool
"$FM" probe --model run "${DATA[@]}" --per-class 5,all --draws 2 --json --pool mean >mean.json 2>/dev/null
cmp -s probe.json mean.json && ok || bad "--pool mean differs from the default"
for pool in normed auto; do
    "$FM" probe --model run "${DATA[@]}" --per-class 5 --draws 2 --json --pool $pool --features pretrained,random \
        >$pool.json 2>$pool.err || bad "--pool $pool: exit $? $(tail -2 $pool.err)"
done
"$FM" probe --model run "${DATA[@]}" --per-class 5 --draws 2 --json --pool normed --layer 1 >normed1.json 2>/dev/null ||
    bad "--pool normed --layer 1"
check=$("$PY" - <<'EOF' 2>&1
import json
n, a, n1 = (json.load(open(f)) for f in ("normed.json", "auto.json", "normed1.json"))
assert n["pool"] == "normed" and n1["pool"] == "normed" and n1["layer"] == 1, (n["pool"], n1)
for s in ("pretrained", "random"):
    assert n["results"][s]["5"]["pools"] == ["normed", "normed"], n["results"][s]
    assert all(p in ("mean", "normed") for p in a["results"][s]["5"]["pools"]), a["results"][s]
    assert n1["results"][s]["5"]["layers"] == [1, 1], n1["results"][s]
print("pool ok")
EOF
)
[ "$check" = "pool ok" ] && ok || bad "--pool JSON: $check"
expect "table marks normed layers" 0 "pretrained +5 .* 2n,2n" -- \
    "$FM" probe --model run "${DATA[@]}" --per-class 5 --draws 2 --layer 2 --pool normed
expect "bad --pool" 2 "--pool 'max': give mean, normed or auto" -- "$FM" probe --model run "${DATA[@]}" --pool max

# --- the table, and pixels without a model
expect "table" 0 "pretrained - pixels, 5 labels/class: paired mean difference" -- \
    "$FM" probe --model run "${DATA[@]}" --per-class 5 --draws 2 --layer 2
expect "table rows" 0 "random +5 " -- "$FM" probe --model run "${DATA[@]}" --per-class 5 --draws 2 --layer 1
expect "pixels alone" 0 "pixels +all" -- "$FM" probe --features pixels "${DATA[@]}" --per-class all

# --- errors
expect "counts disagree" 1 "holds 300 images but .*t10k-labels-idx1-ubyte.gz holds 60 labels" -- \
    "$FM" probe --model run --train-images "$TRI" --train-labels "$TEL" --test-images "$TEI" --test-labels "$TEL"
expect "missing file" 1 "nosuch.gz: cannot open" -- \
    "$FM" probe --model run --train-images nosuch.gz --train-labels "$TRL" --test-images "$TEI" --test-labels "$TEL"
{ printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x08\x00\x00\x00\x08'; head -c 128 /dev/zero; } >small.idx
printf '\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01' >small-labels.idx
expect "test images of another size" 1 "holds 16x16 images but small.idx holds 8x8" -- \
    "$FM" probe --model run --train-images "$TRI" --train-labels "$TRL" --test-images small.idx --test-labels small-labels.idx
mkdir textmodel && cp run/config.json run/model.safetensors textmodel/
expect "no image tokenizer" 1 "textmodel holds no image tokenizer" -- "$FM" probe --model textmodel "${DATA[@]}"
expect "too many per class" 1 "class 0 has 100 training rows, fewer than the 101 per class" -- \
    "$FM" probe --model run "${DATA[@]}" --per-class 101
expect "too few to cross-validate" 1 "3 labeled rows, fewer than the 5 cross-validation folds" -- \
    "$FM" probe --model run "${DATA[@]}" --per-class 1
expect "bad --per-class" 2 "'x' is not a count of labels per class" -- "$FM" probe --model run "${DATA[@]}" --per-class 10,x
expect "twice in --per-class" 2 "10 appears twice" -- "$FM" probe --model run "${DATA[@]}" --per-class 10,10
expect "bad --layer" 2 "--layer 3: run has layers 0 \(embeddings\) to 2" -- "$FM" probe --model run "${DATA[@]}" --layer 3
expect "no model" 2 "--model DIR is required" -- "$FM" probe "${DATA[@]}"

summary "cli_probe_test"
