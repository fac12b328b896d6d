#!/usr/bin/env bash
# cli_finetune_images_test.sh — `fm finetune --task classify --train-images` and `fm classify
# --images` on tests/fixtures/images/ (300 training and 60 test images of 16 x 16, three kinds of
# shapes, 100 training images each):
#   - a tiny model pre-trained for 20 steps (as cli_probe_test.sh makes one), then fine-tuned with
#     a classification head on every training image, from its weights and from scratch (--init
#     scratch): both learn the separable shapes (test accuracy from fm classify --labels above
#     0.8, chance 0.33), accuracy.json holds the held-out accuracy, run.json the image settings;
#   - from scratch starts elsewhere than from the pre-trained weights (another first held-out
#     loss), and the same run twice gives the same metrics;
#   - --per-class 5: 15 images, every 5th of each class held out (12 + 3), and draw 0 and draw 1
#     are different images; --resume of a finished image run reads its settings back;
#   - --augment-shift 1: the 12 training images and their 8 one-pixel moves, the held-out 3 as they
#     are; run.json records it and --resume reads it back; refused without images or above 8;
#   - --refit: the 3 held-out images trained on too (15 and their moves: 135), recorded in run.json
#     and accuracy.json, read back by --resume; refused without images;
#   - --pool mean: a mean-pooled head learns the shapes too (held-out accuracy above 0.6); its
#     config.json says "classifier_pooling": "mean", run.json "pool": "mean"; fm classify --labels
#     on the 60 held-out images (written out as IDX files) gives the held-out accuracy the run
#     computed in memory, and its probabilities differ from the same weights read at the last
#     token; --resume keeps the head; --init scratch makes a new head, so --pool applies to a model
#     that has one, which otherwise refuses another read-out;
#   - fm classify --images without --labels prints a label per image, with --json the probabilities;
#   - errors: flags that do not go together, a label file given as images, counts that disagree,
#     images of another size, more labels per class than a class has, too few to hold out, a
#     model without an image tokenizer or without a head, a bad --init.
# Usage: tests/cli_finetune_images_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_finetune_images_test.sh PATH/TO/fm}")
FIX=$(realpath "$(dirname "$(realpath "$0")")/fixtures/images")
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
tmp=$(mktemp -d /tmp/fm_finetune_images_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"
export OMP_WAIT_POLICY=passive
TRI=$FIX/train-images-idx3-ubyte.gz TRL=$FIX/train-labels-idx1-ubyte.gz
TEI=$FIX/t10k-images-idx3-ubyte.gz TEL=$FIX/t10k-labels-idx1-ubyte.gz
IMG=(--task classify --train-images "$TRI" --train-labels "$TRL")
FT=(--batch 16 --eval-every 50 --threads 2 --seed 5)

# --- a tiny pre-trained model with its image tokenizer
"$FM" tokenizer train --images "$TRI" --out tok --codebook 32 --iters 5 --threads 2 >/dev/null 2>&1 || bad "tokenizer train"
"$FM" data prepare --images "$TRI" --tokenizer tok --out data >/dev/null 2>&1 || bad "data prepare"
"$FM" pretrain --data data --out run --layers 2 --dim 32 --heads 2 --context 18 --seq 17 --batch 8 --steps 20 \
    --lr 1e-2 --eval-every 20 --eval-tokens 255 --sample-every 0 --threads 2 --seed 3 >/dev/null 2>&1 || bad "pretrain"

# --- both inits learn the shapes
for init in pretrained scratch; do
    "$FM" finetune --model run "${IMG[@]}" --init "$init" --out "ft-$init" --steps 200 --lr 3e-3 "${FT[@]}" \
        >"ft-$init.txt" 2>&1 || { bad "finetune --init $init: exit $?"; tail -3 "ft-$init.txt"; }
    grep -q "240 training images, 60 held out (every 5-th of each class)" "ft-$init.txt" && ok ||
        bad "finetune --init $init: the split line: $(grep data: "ft-$init.txt")"
    "$FM" classify --model "ft-$init" --images "$TEI" --labels "$TEL" --json >"test-$init.json" 2>&1 ||
        bad "classify --images --labels ($init): exit $?"
    check=$("$PY" - "test-$init.json" "ft-$init/accuracy.json" "ft-$init/run.json" "$init" <<'EOF' 2>&1
import json, sys
t = json.load(open(sys.argv[1]))
assert t["images"] == 60 and len(t["per_class"]) == 3, t
assert abs(t["accuracy"] - t["correct"] / 60) < 1e-6, t
assert t["accuracy"] > 0.8, t
a = json.load(open(sys.argv[2]))
assert a["held_out"] == 60 and 0.8 < a["final"] <= 1 and 0 <= a["best"] <= 1, a
r = json.load(open(sys.argv[3]))
assert r["format"] == "images" and r["task"] == "classify" and r["init"] == sys.argv[4], r
assert r["train_images"].endswith("train-images-idx3-ubyte.gz") and r["per_class"] == 0 and r["draw"] == 0, r
print("ok")
EOF
)
    [ "$check" = ok ] && ok || bad "fine-tuned from $init: $check"
done
first_loss() { "$PY" -c 'import json,sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    if m.get("val_loss") is not None: print("%.6f" % m["val_loss"]); break' "$1"; }
[ "$(first_loss ft-pretrained/metrics.jsonl)" != "$(first_loss ft-scratch/metrics.jsonl)" ] && ok ||
    bad "--init scratch gave the pre-trained run's first held-out loss"
"$FM" finetune --model run "${IMG[@]}" --init scratch --out again --steps 200 --lr 3e-3 "${FT[@]}" >/dev/null 2>&1
losses() { sed 's/,"tokens_per_s":[0-9.]*//' "$1"; } # all but the speed
[ -s again/metrics.jsonl ] && [ "$(losses ft-scratch/metrics.jsonl)" = "$(losses again/metrics.jsonl)" ] && ok ||
    bad "the same scratch run twice gave other metrics"

# --- a mean-pooled head: trains, is saved with its key, and reads alike after a reload
expect "finetune --pool mean" 0 "the mean of the hidden states up to the last token" -- \
    "$FM" finetune --model run "${IMG[@]}" --pool mean --out ft-mean --steps 200 --lr 3e-3 "${FT[@]}"
grep -q '"classifier_pooling":[[:space:]]*"mean"' ft-mean/config.json && grep -q '"pool":[[:space:]]*"mean"' ft-mean/run.json &&
    ok || bad "the mean head's config.json or run.json"
# the 60 held-out images (every 5th of each class in file order) as IDX files
"$PY" - "$TRI" "$TRL" <<'EOF' || bad "writing the held-out images"
import gzip, sys
images, labels = gzip.open(sys.argv[1]).read(), gzip.open(sys.argv[2]).read()
n, size = int.from_bytes(labels[4:8], "big"), 16 * 16
seen, keep = {}, []
for i in range(n):
    c = labels[8 + i]
    seen[c] = seen.get(c, 0) + 1
    if seen[c] % 5 == 0: keep.append(i)
open("held.idx", "wb").write(images[:4] + len(keep).to_bytes(4, "big") + images[8:16] +
                             b"".join(images[16 + i * size:16 + (i + 1) * size] for i in keep))
open("held-labels.idx", "wb").write(labels[:4] + len(keep).to_bytes(4, "big") + bytes(labels[8 + i] for i in keep))
EOF
"$FM" classify --model ft-mean --images held.idx --labels held-labels.idx --json >held-mean.json 2>&1 ||
    bad "classify the held-out images: $(cat held-mean.json)"
# the same weights without the key: read at the last token
mkdir ft-mean-last && cp -r ft-mean/. ft-mean-last/ && rm ft-mean-last/config.json &&
    "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); del c["classifier_pooling"]; json.dump(c, sys.stdout)' \
        ft-mean/config.json >ft-mean-last/config.json
"$FM" classify --model ft-mean --images held.idx --json >probs-mean.jsonl 2>&1 &&
    "$FM" classify --model ft-mean-last --images held.idx --json >probs-last.jsonl 2>&1 ||
    bad "classify --json with and without the key: $(tail -1 probs-last.jsonl)"
check=$("$PY" - held-mean.json ft-mean/accuracy.json probs-mean.jsonl probs-last.jsonl <<'EOF' 2>&1
import json, sys
t, a = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert t["images"] == 60 == a["held_out"], (t, a)
assert abs(t["accuracy"] - a["final"]) < 1e-6, (t["accuracy"], a)
assert a["final"] > 0.6, a  # chance 0.33; the shapes are learnt, if more slowly than at the last token
mean, last = [[json.loads(l)["probs"] for l in open(p)] for p in sys.argv[3:5]]
assert len(mean) == len(last) == 60
assert max(abs(m[k] - l[k]) for m, l in zip(mean, last) for k in m) > 1e-3, "the key changed nothing"
print("ok")
EOF
)
[ "$check" = ok ] && ok || bad "the mean head after a reload: $check"
expect "resume a mean run" 0 "held-out accuracy: [0-9.]+ final" -- "$FM" finetune --out ft-mean --resume --threads 2
grep -q '"classifier_pooling":[[:space:]]*"mean"' ft-mean/config.json && ok || bad "--resume lost the mean head"
expect "--init scratch: a new head on a model with one" 0 "the mean of the hidden states" -- \
    "$FM" finetune --model ft-pretrained "${IMG[@]}" --init scratch --pool mean --per-class 5 --out s-mean --steps 2 "${FT[@]}"
grep -q '"classifier_pooling":[[:space:]]*"mean"' s-mean/config.json && ok || bad "--init scratch --pool mean"
expect "--pool mean on a last-token head" 2 "ft-pretrained's head already reads 'last'" -- \
    "$FM" finetune --model ft-pretrained "${IMG[@]}" --pool mean --per-class 5 --out e --steps 2 "${FT[@]}"
expect "--pool max" 2 "--pool must be last or mean, not 'max'" -- \
    "$FM" finetune --model run "${IMG[@]}" --pool max --out e --steps 2 "${FT[@]}"

# --- draws of a few labels per class, the held-out part carved from them
expect "per-class 5" 0 "draw 0 of 5 labels per class, seed 1\): 12 training images, 3 held out" -- \
    "$FM" finetune --model run "${IMG[@]}" --per-class 5 --out d0 --steps 5 "${FT[@]}"
expect "per-class 5, draw 1" 0 "draw 1 of 5 labels per class, seed 1\): 12 training images, 3 held out" -- \
    "$FM" finetune --model run "${IMG[@]}" --per-class 5 --draw 1 --out d1 --steps 5 "${FT[@]}"
"$FM" classify --model d0 --images "$TRI" >d0.labels 2>&1 && "$FM" classify --model d1 --images "$TRI" >d1.labels 2>&1 &&
    ! cmp -s d0/metrics.jsonl d1/metrics.jsonl && ok || bad "draws 0 and 1 trained alike"
expect "resume a finished run" 0 "held-out accuracy: [0-9.]+ final" -- "$FM" finetune --out d0 --resume --threads 2

# --- --augment-shift 1: the 12 training images and their 8 one-pixel moves (108), the 3 held out as they are
expect "augment-shift 1" 0 "draw 0 of 5 labels per class, seed 1\): 108 training images, 3 held out" -- \
    "$FM" finetune --model run "${IMG[@]}" --per-class 5 --augment-shift 1 --out a1 --steps 5 "${FT[@]}"
grep -q '"augment_shift":[[:space:]]*1' a1/run.json && ok || bad "run.json does not record augment_shift 1"
expect "resume an augmented run" 0 "108 training images, 3 held out" -- "$FM" finetune --out a1 --resume --threads 2
! cmp -s d0/metrics.jsonl a1/metrics.jsonl && ok || bad "the augmented run trained as the plain one"
expect "refit" 0 "draw 0 of 5 labels per class, seed 1\): 135 training images, 3 held out" -- \
    "$FM" finetune --model run "${IMG[@]}" --per-class 5 --augment-shift 1 --refit --out r1 --steps 5 "${FT[@]}"
grep -q '"refit":[[:space:]]*true' r1/run.json && grep -q '"refit": true' r1/accuracy.json && ok ||
    bad "run.json or accuracy.json does not record the refit"
grep -q '"refit": false' a1/accuracy.json && ok || bad "accuracy.json of a plain run does not say refit false"
expect "resume a refit" 0 "135 training images, 3 held out" -- "$FM" finetune --out r1 --resume --threads 2
expect "refit without images" 2 "--refit are for labeled images" -- \
    "$FM" finetune --model run --data x.tsv --refit --out e --steps 1
expect "augment-shift without images" 2 "--augment-shift and --refit are for labeled images" -- \
    "$FM" finetune --model run --data x.tsv --augment-shift 1 --out e --steps 1
expect "augment-shift out of range" 2 "augment-shift" -- \
    "$FM" finetune --model run "${IMG[@]}" --augment-shift 9 --out e --steps 1

# --- fm classify --images alone
"$FM" classify --model ft-scratch --images "$TEI" >labels.txt 2>&1 || bad "classify --images: exit $?"
[ "$(wc -l <labels.txt)" -eq 60 ] && grep -qE '^59	[0-2]$' labels.txt && ok || bad "classify --images: $(head -2 labels.txt)"
"$FM" classify --model ft-scratch --images "$TEI" --json >labels.json 2>&1
check=$("$PY" -c 'import json,sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 60 and all(abs(sum(r["probs"].values()) - 1) < 1e-4 and r["label"] in "012" for r in rows)
print("ok")' labels.json 2>&1)
[ "$check" = ok ] && ok || bad "classify --images --json: $check"

# --- errors
expect "images without labels" 2 "--train-images and --train-labels go together" -- \
    "$FM" finetune --model run --task classify --train-images "$TRI" --out e --steps 1
expect "images and --data" 2 "--train-images replaces --data" -- \
    "$FM" finetune --model run "${IMG[@]}" --data x.tsv --out e --steps 1
expect "images without classify" 2 "give --task classify" -- \
    "$FM" finetune --model run --train-images "$TRI" --train-labels "$TRL" --out e --steps 1
expect "per-class without images" 2 "--per-class, --draw, --augment-shift and --refit are for labeled images" -- \
    "$FM" finetune --model run --task classify --data x.tsv --per-class 5 --out e --steps 1
expect "bad --init" 2 "--init must be pretrained or scratch, not 'zero'" -- \
    "$FM" finetune --model run "${IMG[@]}" --init zero --out e --steps 1
expect "labels as images" 1 "a label file \\(1 dimension\\) where images were expected" -- \
    "$FM" finetune --model run --task classify --train-images "$TRL" --train-labels "$TRL" --out e --steps 1
expect "counts disagree" 1 "holds 300 images but .*t10k-labels-idx1-ubyte.gz holds 60 labels" -- \
    "$FM" finetune --model run --task classify --train-images "$TRI" --train-labels "$TEL" --out e --steps 1
{ printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x08\x00\x00\x00\x08'; head -c 128 /dev/zero; } >small.idx
printf '\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01' >small-labels.idx
expect "images of another size" 1 "small.idx holds 8x8 images but the model's image tokenizer encodes 16x16" -- \
    "$FM" finetune --model run --task classify --train-images small.idx --train-labels small-labels.idx --out e --steps 1
expect "too many per class" 1 "--per-class 101: class 0 has 100 training rows, fewer than the 101 per class" -- \
    "$FM" finetune --model run "${IMG[@]}" --per-class 101 --out e --steps 1
expect "too few to hold out" 2 "3 images are too few to hold out every 5-th of each class" -- \
    "$FM" finetune --model run "${IMG[@]}" --per-class 1 --out e --steps 1
mkdir textmodel && cp run/config.json run/model.safetensors run/tokenizer.json textmodel/
expect "no image tokenizer" 1 "textmodel holds no image tokenizer" -- \
    "$FM" finetune --model textmodel "${IMG[@]}" --out e --steps 1
[ ! -e e ] && ok || bad "a refused run left its --out behind"
expect "classify: no head" 1 "has no classification head" -- "$FM" classify --model run --images "$TEI" --labels "$TEL"
expect "classify: labels without images" 2 "--labels goes with --images" -- "$FM" classify --model ft-scratch --labels "$TEL"
expect "classify: two inputs" 2 "give exactly one of --text, --file and --images" -- \
    "$FM" classify --model ft-scratch --images "$TEI" --text hello
expect "classify: images of another size" 1 "small.idx holds 8x8 images" -- \
    "$FM" classify --model ft-scratch --images small.idx --labels small-labels.idx
{ printf '\x00\x00\x08\x01\x00\x00\x00\x3c'; head -c 60 /dev/zero | tr '\0' '\3'; } >threes.idx
expect "classify: a class the head lacks" 1 "head has no label \"3\"" -- \
    "$FM" classify --model ft-scratch --images "$TEI" --labels threes.idx

summary "cli_finetune_images_test"
