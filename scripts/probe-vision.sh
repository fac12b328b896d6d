#!/usr/bin/env bash
# probe-vision.sh — `make probe-vision`: the linear probe of the image model that `make demo-vision`
# pre-trained (build/vision/run), on Fashion-MNIST (docs/probe.md).
#
# What it does: `fm probe` with 10, 100 and all labels per class and FM_PROBE_DRAWS draws (5) on the
# pre-trained features, the raw pixels and a randomly initialised model of the same shape, the
# layer and strength chosen on training labels only; the JSON goes to build/vision/probe.json, its
# table (markdown) to build/vision/probe.md, the progress to build/vision/probe.log. Then
# bench/probe_sklearn.py fits scikit-learn's LogisticRegression on all the pixels with the strength
# fm chose and compares the test accuracies (build/vision/probe_sklearn.txt).
# What it does not do: train anything but the probes; tune anything on the test images.
# FM_PROBE_FM: an fm binary to use instead of building build/fm; FM_PROBE_MODEL: another model.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${FM_VISION_OUT:-build/vision}
MODEL=${FM_PROBE_MODEL:-$OUT/run}
FM=${FM_PROBE_FM:-build/fm}
DRAWS=${FM_PROBE_DRAWS:-5}
THREADS=${FM_PROBE_THREADS:-2}
DATA=/usr/share/datasets/fashion-mnist

[ -f "$MODEL/config.json" ] || { echo "probe-vision: no model in $MODEL; run make demo-vision first" >&2; exit 1; }
scripts/install-deps.sh --vision --sklearn
[ -n "${FM_PROBE_FM:-}" ] || make -s -j2 "$FM"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # see scripts/demo.sh

echo "== fm probe: 10, 100 and all labels per class, $DRAWS draws (progress in $OUT/probe.log)"
start=$(date +%s)
"$FM" probe --model "$MODEL" --train-images "$DATA/train-images-idx3-ubyte.gz" \
    --train-labels "$DATA/train-labels-idx1-ubyte.gz" --test-images "$DATA/t10k-images-idx3-ubyte.gz" \
    --test-labels "$DATA/t10k-labels-idx1-ubyte.gz" --per-class 10,100,all --draws "$DRAWS" --seed 1 \
    --threads "$THREADS" --json >"$OUT/probe.json" 2>"$OUT/probe.log"
echo "   $(($(date +%s) - start)) s"

/usr/bin/python3 - "$OUT/probe.json" >"$OUT/probe.md" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"Linear probe, test accuracy on {r['test']} images (mean ± sd over the draws; layer {r['layer']}):\n")
sets = [s for s in ("pretrained", "pixels", "random") if s in r["results"]]
settings = list(r["results"][sets[0]].keys())
print("| features | " + " | ".join(f"{p} labels/class" for p in settings) + " |")
print("|---|" + "---|" * len(settings))
for s in sets:
    cells = []
    for p in settings:
        e = r["results"][s][p]
        cells.append(f"{100 * e['mean']:.2f} ± {100 * e['sd']:.2f}" if len(e["draws"]) > 1 else f"{100 * e['mean']:.2f}")
    print(f"| {s} | " + " | ".join(cells) + " |")
print("\nPaired differences (points; beats: mean > 2 standard errors):\n")
for name, c in r.get("comparisons", {}).items():
    for p, e in c.items():
        se = f", SE {100 * e['se']:.2f}, beats: {'yes' if e['beats'] else 'no'}" if e["se"] > 0 else " (one result)"
        print(f"- {name}, {p} labels/class: {100 * e['mean_diff']:+.2f}{se}")
print("\nLayers chosen per draw:", {s: {p: r["results"][s][p]["layers"] for p in settings} for s in sets if s != "pixels"})
print("Strengths chosen per draw:", {s: {p: r["results"][s][p]["strengths"] for p in settings} for s in sets})
EOF
cat "$OUT/probe.md"

echo "== scikit-learn on the raw pixels, all labels, fm's strength"
/usr/bin/python3 bench/probe_sklearn.py --fm-json "$OUT/probe.json" | tee "$OUT/probe_sklearn.txt"
