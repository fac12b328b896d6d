#!/usr/bin/env bash
# finetune-vision.sh — `make finetune-vision`: fine-tuning the image model of `make demo-vision`
# with a classification head, against the same architecture trained from scratch, on Fashion-MNIST
# with 100 labels per class (docs/vision.md, "Fine-tuning with a classification head").
#
# What it does: for each of FM_FT_DRAWS draws (5) of 100 training images per class (fm probe's
# draws, --seed 1) and for each init (pretrained: the model's weights; scratch: its architecture,
# fresh weights), `fm finetune --task classify --train-images` with each head read-out of
# FM_FT_POOLS ("last": --pool last, the final hidden state at <|/image|>; "last mean" adds --pool
# mean, the mean of the final hidden states over the image's tokens, to the search), at each learning rate of the grid
# FM_FT_LRS (3e-4 1e-3 3e-3) and each dropout of FM_FT_DROPOUTS (0; "0 0.1" adds dropout to the search) for
# FM_FT_STEPS steps (150) of 32 images, every 5th labeled image of
# each class held out (20 per class), the training images also moved by up to FM_FT_AUGMENT pixels
# (1: 9 copies of each; 0: none) for both inits. The (pool, learning rate, dropout) with the best
# held-out accuracy wins (ties: the pool earlier in FM_FT_POOLS, so "last" by default, then the
# smaller rate, then the smaller dropout). With FM_FT_REFIT=1 (the default)
# the search compares the final models, and the winner is trained again on all the draw's labeled
# images, the held-out ones too (`fm finetune --refit`, as the probes refit on all their labels);
# that final model is kept. With FM_FT_REFIT=0 the kept model is the winner's held-out-loss best
# checkpoint (best/), chosen by its held-out accuracy. Only the kept model of a (draw, init) is
# scored on the 10,000 test images (`fm classify --images --labels`). Then `fm probe
# --features pixels --per-class 100` on the same draws gives the raw-pixel probe. The table:
# $OUT/finetune.md, everything: $OUT/finetune.json, the runs: $OUT/ft/.
# What it does not do: choose anything on the test images.
# FM_FT_MODEL: the pre-trained model (default $OUT/run; absent, make demo-vision runs first with
# FM_VISION_MINUTES, 20 by default here). FM_FT_FM: an fm binary instead of building build/fm.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${FM_VISION_OUT:-build/vision}
MODEL=${FM_FT_MODEL:-$OUT/run}
FM=${FM_FT_FM:-build/fm}
DRAWS=${FM_FT_DRAWS:-5}
LRS=${FM_FT_LRS:-3e-4 1e-3 3e-3}
DROPOUTS=${FM_FT_DROPOUTS:-0}
POOLS=${FM_FT_POOLS:-last}
STEPS=${FM_FT_STEPS:-150}
PER_CLASS=${FM_FT_PER_CLASS:-100}
AUGMENT=${FM_FT_AUGMENT:-1}
REFIT=${FM_FT_REFIT:-1}
ACC_KEY=best
[ "$REFIT" = 1 ] && ACC_KEY=final
THREADS=${FM_FT_THREADS:-2}
DATA=/usr/share/datasets/fashion-mnist
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

[ -n "${POOLS// /}" ] || { echo "finetune-vision: FM_FT_POOLS is empty (last, mean or both)" >&2; exit 2; }
for pool in $POOLS; do
    case $pool in last | mean) ;; *) echo "finetune-vision: FM_FT_POOLS: '$pool' is not last or mean" >&2; exit 2 ;; esac
done
[ -n "${FM_FT_FM:-}" ] || make -s -j2 "$FM"
if [ ! -f "$MODEL/config.json" ]; then
    echo "== no model in $MODEL: make demo-vision first (FM_VISION_MINUTES=${FM_VISION_MINUTES:-20})"
    FM_VISION_MINUTES=${FM_VISION_MINUTES:-20} FM_VISION_OUT=$OUT FM_VISION_FM=$FM scripts/demo-vision.sh
fi
scripts/install-deps.sh --vision
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # see scripts/demo.sh
PRECISION=fp32
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && PRECISION=bf16
TRAIN=(--train-images "$DATA/train-images-idx3-ubyte.gz" --train-labels "$DATA/train-labels-idx1-ubyte.gz")
TEST=(--images "$DATA/t10k-images-idx3-ubyte.gz" --labels "$DATA/t10k-labels-idx1-ubyte.gz")
mkdir -p "$OUT/ft"
results=$OUT/ft/results.jsonl
: >"$results"

start=$(date +%s)
for draw in $(seq 0 $((DRAWS - 1))); do
    for init in pretrained scratch; do
        best_run= best_pool= best_lr= best_dropout= best_acc=-1
        for pool in $POOLS; do # outermost: a tie keeps the earlier pool
            for lr in $LRS; do
                for dropout in $DROPOUTS; do
                    run=$OUT/ft/d$draw-$init-lr$lr-drop$dropout-pool$pool
                    "$FM" finetune --model "$MODEL" --task classify "${TRAIN[@]}" --per-class "$PER_CLASS" --draw "$draw" \
                        --draw-seed 1 --init "$init" --augment-shift "$AUGMENT" --out "$run" --force --steps "$STEPS" \
                        --batch 32 --lr "$lr" --dropout "$dropout" --pool "$pool" \
                        --eval-every 25 --save-every 1000 --seed 1 --precision "$PRECISION" --threads "$THREADS" \
                        >"$run.log" 2>&1 || { echo "finetune-vision: $run failed:" >&2; tail -5 "$run.log" >&2; exit 1; }
                    acc=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$run/accuracy.json" "$ACC_KEY")
                    echo "draw $draw $init pool $pool lr $lr dropout $dropout: held-out accuracy $acc ($ACC_KEY), $(($(date +%s) - start)) s"
                    if "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$acc" "$best_acc"; then
                        best_acc=$acc best_pool=$pool best_lr=$lr best_dropout=$dropout best_run=$run
                    fi
                done
            done
        done
        kept=$best_run/best
        if [ "$REFIT" = 1 ]; then
            kept=$OUT/ft/d$draw-$init-refit
            "$FM" finetune --model "$MODEL" --task classify "${TRAIN[@]}" --per-class "$PER_CLASS" --draw "$draw" \
                --draw-seed 1 --init "$init" --augment-shift "$AUGMENT" --refit --out "$kept" --force --steps "$STEPS" \
                --batch 32 --lr "$best_lr" --dropout "$best_dropout" --pool "$best_pool" \
                --eval-every 25 --save-every 1000 --seed 1 --precision "$PRECISION" --threads "$THREADS" \
                >"$kept.log" 2>&1 || { echo "finetune-vision: $kept failed:" >&2; tail -5 "$kept.log" >&2; exit 1; }
        fi
        "$FM" classify --model "$kept" "${TEST[@]}" --json --threads "$THREADS" >"$kept.test.json"
        test_acc=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["accuracy"])' "$kept.test.json")
        echo "draw $draw $init: pool $best_pool, lr $best_lr, dropout $best_dropout chosen (held-out $best_acc), $kept: test accuracy $test_acc"
        printf '{"draw": %d, "init": "%s", "pool": "%s", "lr": %s, "dropout": %s, "held_out": %s, "refit": %s, "test": %s}\n' \
            "$draw" "$init" "$best_pool" "$best_lr" "$best_dropout" "$best_acc" "$REFIT" "$test_acc" >>"$results"
    done
done

echo "== the raw-pixel probe, $PER_CLASS labels per class, the same $DRAWS draws"
"$FM" probe --features pixels "${TRAIN[@]}" --test-images "$DATA/t10k-images-idx3-ubyte.gz" \
    --test-labels "$DATA/t10k-labels-idx1-ubyte.gz" --per-class "$PER_CLASS" --draws "$DRAWS" --seed 1 \
    --threads "$THREADS" --json >"$OUT/ft/probe-pixels.json" 2>"$OUT/ft/probe-pixels.log"
echo "   $(($(date +%s) - start)) s in all"

"$PY" - "$results" "$OUT/ft/probe-pixels.json" "$PER_CLASS" "$OUT/finetune.json" >"$OUT/finetune.md" <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
probe = json.load(open(sys.argv[2]))
k = sys.argv[3]
acc = {"pretrained": {}, "scratch": {}}
lrs = {"pretrained": {}, "scratch": {}}
dropouts = {"pretrained": {}, "scratch": {}}
pools = {"pretrained": {}, "scratch": {}}
for r in rows:
    acc[r["init"]][r["draw"]] = r["test"]
    lrs[r["init"]][r["draw"]] = r["lr"]
    dropouts[r["init"]][r["draw"]] = r.get("dropout", 0)
    pools[r["init"]][r["draw"]] = r.get("pool", "last")
draws = sorted(acc["pretrained"])
series = {"fine-tuned from pre-training": [acc["pretrained"][d] for d in draws],
          "same architecture from scratch": [acc["scratch"][d] for d in draws],
          "raw-pixel linear probe": probe["results"]["pixels"][k]["draws"][:len(draws)]}
def mean_sd(v):
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
refit = any(r.get("refit", 0) for r in rows)
out = {"per_class": int(k), "draws": draws, "test_images": probe["test"], "refit": refit, "accuracy": {},
       "chosen_lr": lrs, "chosen_dropout": dropouts, "chosen_pool": pools, "differences": {}}
print(f"Test accuracy (%) on the {probe['test']} test images, {k} labels per class, {len(draws)} draws:\n")
print("| model | mean ± sd | draws |")
print("|---|---|---|")
for name, v in series.items():
    m, s = mean_sd(v)
    out["accuracy"][name] = {"mean": m, "sd": s, "draws": v}
    print(f"| {name} | {100 * m:.2f} ± {100 * s:.2f} | " + ", ".join(f"{100 * x:.2f}" for x in v) + " |")
print("\nPaired differences over the draws (points; beats: mean > 2 standard errors):\n")
a = series["fine-tuned from pre-training"]
for name in ("same architecture from scratch", "raw-pixel linear probe"):
    d = [x - y for x, y in zip(a, series[name])]
    m, s = mean_sd(d)
    se = s / math.sqrt(len(d)) if len(d) > 1 else 0.0
    beats = len(d) > 1 and m > 2 * se
    out["differences"]["fine-tuned - " + name] = {"mean": m, "se": se, "beats": beats, "draws": d}
    print(f"- fine-tuned - {name}: {100 * m:+.2f} ± {100 * se:.2f} ({'beats' if beats else 'does not beat'})")
print("\nLearning rates chosen on the held-out labels:", {i: [lrs[i][d] for d in draws] for i in lrs})
print("Dropouts chosen on the held-out labels:", {i: [dropouts[i][d] for d in draws] for i in dropouts})
print("Head read-outs (--pool) chosen on the held-out labels:", {i: [pools[i][d] for d in draws] for i in pools})
if refit:
    print("The chosen settings refitted on all the labeled images of each draw (fm finetune --refit).")
json.dump(out, open(sys.argv[4], "w"), indent=1)
EOF
cat "$OUT/finetune.md"
