#!/usr/bin/env bash
# demo-vision.sh — `make demo-vision`: self-supervised pre-training on images (docs/vision.md).
# Installs Debian's dataset-fashion-mnist if missing, trains an image tokenizer (4 x 4 patches,
# 512 codes by k-means) on the 60,000 training images, encodes them (the last 3,000 held out),
# pre-trains a GPT on the image token sequences for FM_VISION_MINUTES minutes (30) on 2 cores,
# and has it complete the lower half of test images: the loss curve, the completion grid and the
# commands' output land in build/vision/ (FM_VISION_OUT). The test images are used for nothing
# but the completion grid (and later the probe's evaluation).
# FM_VISION_FM: an fm binary to use instead of building build/fm. FM_VISION_STEPS=N: N steps instead
# of the minutes (a shared machine, whose speed the timing at the start cannot foresee).
# FM_VISION_REUSE_DATA=1: keep the tokenizer and data already in OUT (they are deterministic).
# FM_VISION_DROPOUT=P: GPT-2's dropout while pre-training (default 0.1: without it the 30-minute run
# memorises the training images after about 12 epochs; docs/vision.md).
# FM_VISION_LAYERS, FM_VISION_DIM, FM_VISION_HEADS: the model's shape (4, 192, 4).
# FM_VISION_AUGMENT: fm data prepare's augmentation flags for the training images (none), e.g.
# "--augment-shift 1 --augment-flip".
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${FM_VISION_MINUTES:-30}
STEPS=${FM_VISION_STEPS:-}
BUDGET=(--minutes "$MINUTES")
[ -z "$STEPS" ] || BUDGET=(--steps "$STEPS")
THREADS=${FM_VISION_THREADS:-2}
DROPOUT=${FM_VISION_DROPOUT:-0.1}
LAYERS=${FM_VISION_LAYERS:-4} DIM=${FM_VISION_DIM:-192} HEADS=${FM_VISION_HEADS:-4}
read -r -a AUGMENT <<<"${FM_VISION_AUGMENT:-}"
OUT=${FM_VISION_OUT:-build/vision}
FM=${FM_VISION_FM:-build/fm}
DATA=/usr/share/datasets/fashion-mnist
TRAIN_IMAGES=$DATA/train-images-idx3-ubyte.gz
TEST_IMAGES=$DATA/t10k-images-idx3-ubyte.gz

scripts/install-deps.sh --vision
[ -n "${FM_VISION_FM:-}" ] || make -s -j2 "$FM"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # see scripts/demo.sh
PRECISION=fp32
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && PRECISION=bf16

if [ "${FM_VISION_REUSE_DATA:-0}" = 1 ] && [ -f "$OUT/data/train.bin" ] && [ -f "$OUT/data/image_tokenizer.json" ]; then
    echo "== keeping the tokenizer and data in $OUT"
else
echo "== image tokenizer: 4 x 4 patches, 512 codes, k-means on 10,000 training images"
"$FM" tokenizer train --images "$TRAIN_IMAGES" --out "$OUT/tokenizer" --patch 4 --codebook 512 --iters 20 \
    --sample 10000 --seed 1 --threads "$THREADS" | tee "$OUT/tokenizer.txt"

echo "== data: 51 tokens per image; the last 3,000 training images held out"
"$FM" data prepare --images "$TRAIN_IMAGES" --tokenizer "$OUT/tokenizer" --out "$OUT/data" --val-images 3000 \
    ${AUGMENT[@]+"${AUGMENT[@]}"} --threads "$THREADS" | tee "$OUT/data.txt"
fi

# One image per row: a context of 51 positions, rows of 50 inputs (<|image|> and 49 codes) whose
# 50 targets are the 49 codes and <|/image|>; every window starts at an image (fm pretrain reads
# the image tokenizer beside the data). 4 layers of width 192 (1.9M parameters) ran at about
# 90 ms a step of 32 images on 2 (shared) cores: 30 minutes are several epochs of the 57,000
# training images (docs/vision.md: the measured figures).
echo "== pre-training (${BUDGET[*]}) on $THREADS threads ($PRECISION products)"
rm -rf "$OUT/run"
"$FM" pretrain --data "$OUT/data" --out "$OUT/run" --layers "$LAYERS" --dim "$DIM" --heads "$HEADS" --context 51 --seq 50 \
    --batch 32 --lr 3e-3 --beta2 0.99 --dropout "$DROPOUT" --precision "$PRECISION" "${BUDGET[@]}" --threads "$THREADS" \
    --eval-every 250 --eval-tokens 50000 --save-every 1000 --sample-every 0 | tee "$OUT/pretrain.txt"
cp "$OUT/run/loss.svg" "$OUT/loss.svg"

echo "== completions: the lower half of the first 10 test images, 4 samples each"
"$FM" complete --model "$OUT/run" --images "$TEST_IMAGES" --out "$OUT/completions.png" --count 10 --samples 4 \
    --seed 1 --temperature 1.0 --threads "$THREADS" | tee "$OUT/complete.txt"
echo "== done: $OUT/loss.svg, $OUT/completions.png; the model is $OUT/run"
