#!/usr/bin/env bash
# cli_vision_test.sh — the image pipeline from the command line on tests/fixtures/images/ (300
# training and 60 test images of 16 x 16, three kinds of shapes; make_fixtures.py writes them):
#   - fm tokenizer train --images: reports the reconstruction error, writes tokenizer.json and
#     image_tokenizer.json; the same file with 1 and with 2 threads;
#   - fm data prepare --images: 18 tokens per image, the last 5% of the training file held out,
#     the pixels recorded as the shards' source bytes (bits per pixel); --augment-shift and
#     --augment-flip: the training images unchanged first, then each moved copy is the shard of
#     the file moved the same way (written by python3), the held-out shard unchanged;
#   - fm pretrain on them (20 steps) keeps the image tokenizer in the run directory, and its
#     held-out loss falls below the uniform loss over the codes; interrupted and resumed, the
#     same losses as uninterrupted;
#   - fm complete: a PNG of the right size (columns: images; rows: original, upper half,
#     completions), also from fm quantize's copy of the model (the image tokenizer goes along);
#   - errors naming the file: a label file where images belong, truncated and foreign files, a
#     tokenizer directory without an image tokenizer or with another tokenizer.json, a model
#     without one, images of another size, a patch that does not divide the image.
# Usage: tests/cli_vision_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_vision_test.sh PATH/TO/fm}")
FIX=$(realpath "$(dirname "$(realpath "$0")")/fixtures/images")
tmp=$(mktemp -d /tmp/fm_vision_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$(realpath "$0")")/cli_lib.sh"
cd "$tmp"
TRAIN=$FIX/train-images-idx3-ubyte.gz TEST=$FIX/t10k-images-idx3-ubyte.gz LABELS=$FIX/train-labels-idx1-ubyte.gz

# --- the tokenizer
expect "tokenizer train --images" 0 "reconstruction on the 300 sampled images: MSE [0-9.]+ per pixel \(0..255\), PSNR [0-9.]+ dB" -- \
    "$FM" tokenizer train --images "$TRAIN" --out tok --codebook 32 --iters 10 --threads 2
[ -f tok/tokenizer.json ] && [ -f tok/image_tokenizer.json ] && ok || bad "tok/ lacks tokenizer.json or image_tokenizer.json"
"$FM" tokenizer train --images "$TRAIN" --out tok1 --codebook 32 --iters 10 --threads 1 >/dev/null 2>&1 || bad "one thread"
cmp -s tok/image_tokenizer.json tok1/image_tokenizer.json && cmp -s tok/tokenizer.json tok1/tokenizer.json && ok ||
    bad "the tokenizer differs between 1 and 2 threads"
expect "16 x 16 images, 18 tokens" 0 "16 x 16 images -> 18 tokens each" -- \
    "$FM" tokenizer train --images "$TRAIN" --out tok2 --codebook 16 --iters 3 --sample 100 --seed 5
expect "patch 3" 2 "--patch 3 does not divide the 16 x 16 images" -- \
    "$FM" tokenizer train --images "$TRAIN" --out bad --patch 3
expect "labels as images" 1 "train-labels-idx1-ubyte.gz is a label file" -- \
    "$FM" tokenizer train --images "$LABELS" --out bad

# --- broken files
gzip -dc "$TRAIN" >plain.idx
head -c 5000 plain.idx >truncated.idx
expect "truncated" 1 "truncated.idx: truncated: the header says 300 images" -- \
    "$FM" tokenizer train --images truncated.idx --out bad
printf 'not an idx file at all' >foreign.idx
expect "foreign" 1 "foreign.idx: not an IDX file" -- "$FM" tokenizer train --images foreign.idx --out bad
expect "missing" 1 "nosuch.gz: cannot open" -- "$FM" tokenizer train --images nosuch.gz --out bad
expect "plain file reads as the gzip one" 0 "held out the last 15 of 300 images" -- \
    "$FM" data prepare --images plain.idx --tokenizer tok --out data_plain

# --- data
expect "data prepare --images" 0 "held out the last 15 of 300 images; 18 tokens per image" -- \
    "$FM" data prepare --images "$TRAIN" --tokenizer tok --out data
cmp -s data/train.bin data_plain/train.bin && ok || bad "gzip and plain IDX gave other shards"
[ -f data/image_tokenizer.json ] && ok || bad "data/ lacks image_tokenizer.json"
[ "$(od -An -t u8 -j 16 -N 8 data/val.bin | tr -d ' ')" = 270 ] && ok || bad "val.bin does not hold 15 x 18 tokens"
[ "$(od -An -t u8 -j 40 -N 8 data/val.bin | tr -d ' ')" = 3840 ] && ok || bad "val.bin does not record 15 x 256 pixels"
# augmentation: copy 1 of --augment-shift 1 is every image moved one pixel right; with
# --augment-flip the second half of the copies is mirrored (copy 9: mirrored, not moved)
python3 - plain.idx <<'PY'
import sys
raw = open(sys.argv[1], "rb").read()
head, body = raw[:16], raw[16:]
n, R, C = (int.from_bytes(head[i:i + 4], "big") for i in (4, 8, 12))
right, mirror = bytearray(), bytearray()
for i in range(n):
    for y in range(R):
        row = body[(i * R + y) * C:(i * R + y + 1) * C]
        right += bytes([0]) + row[:-1]
        mirror += row[::-1]
open("right.idx", "wb").write(head + right)
open("mirror.idx", "wb").write(head + mirror)
PY
"$FM" data prepare --images right.idx --tokenizer tok --out data_right >/dev/null 2>&1 || bad "prepare right.idx"
"$FM" data prepare --images mirror.idx --tokenizer tok --out data_mirror >/dev/null 2>&1 || bad "prepare mirror.idx"
expect "augment" 0 "285 images \(0 .. 284 of the file\) in 18 versions \(moved by up to 1 pixels, and mirrored\), 92340 tokens" -- \
    "$FM" data prepare --images "$TRAIN" --tokenizer tok --out data_aug --augment-shift 1 --augment-flip
tokens() { tail -c +65 "$1" | head -c $((2 * 285 * 18 * ($2 + 1))) | tail -c $((2 * 285 * 18)) | od -An -v -t u2; }
[ "$(tokens data_aug/train.bin 0)" = "$(tokens data/train.bin 0)" ] && ok || bad "augmented copy 0 is not the images"
[ "$(tokens data_aug/train.bin 1)" = "$(tokens data_right/train.bin 0)" ] && ok || bad "augmented copy 1 is not moved right"
[ "$(tokens data_aug/train.bin 9)" = "$(tokens data_mirror/train.bin 0)" ] && ok || bad "augmented copy 9 is not mirrored"
cmp -s data_aug/val.bin data/val.bin && ok || bad "augmentation changed the held-out shard"
expect "augment shift too large" 2 "--augment-shift" -- \
    "$FM" data prepare --images "$TRAIN" --tokenizer tok --out bad --augment-shift 9
mkdir textonly && cp tok/tokenizer.json textonly/
expect "no image tokenizer" 1 "textonly holds no image tokenizer" -- \
    "$FM" data prepare --images "$TRAIN" --tokenizer textonly --out bad
mkdir other && cp tok/image_tokenizer.json other/ && cp tok2/tokenizer.json other/
expect "another tokenizer.json" 1 "do not belong together" -- \
    "$FM" data prepare --images "$TRAIN" --tokenizer other --out bad
{ printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x08\x00\x00\x00\x08'; head -c 128 /dev/zero; } >small.idx
expect "images of another size" 1 "small.idx holds 8 x 8 images but the image tokenizer in tok encodes 16 x 16" -- \
    "$FM" data prepare --images small.idx --tokenizer tok --out bad

# --- pre-training: one image per row
out=$("$FM" pretrain --data data --out run --layers 2 --dim 32 --heads 2 --context 18 --seq 17 --batch 8 --steps 20 \
    --lr 1e-2 --eval-every 10 --eval-tokens 255 --sample-every 0 --threads 2 --seed 3 2>&1) || bad "pretrain: $out"
[ -f run/image_tokenizer.json ] && ok || bad "the run directory lacks image_tokenizer.json"
# the held-out loss after 20 steps, against the uniform loss over 32 codes (ln 32 = 3.47)
last=$(sed -n 's/.*held-out \([0-9.]*\).*/\1/p' <<<"$out" | tail -1)
awk -v l="${last:-99}" 'BEGIN { exit !(l < 3.4) }' && ok || bad "held-out loss '$last' after 20 steps is not below ln 32"

# --- interrupted (SIGINT after 40 steps) and resumed: the same losses as an uninterrupted run
common=(--layers 2 --dim 32 --heads 2 --context 18 --seq 17 --batch 8 --lr 1e-2 --eval-every 25 --eval-tokens 255
        --sample-every 0 --threads 1 --seed 4 --save-every 10 --steps 150)
losses() { grep -o '"step":[0-9]*,"loss":[0-9.]*' "$1/metrics.jsonl"; }
"$FM" pretrain --data data --out full "${common[@]}" >/dev/null 2>&1 || bad "uninterrupted pretrain"
"$FM" pretrain --data data --out cut "${common[@]}" >cut.log 2>&1 &
pid=$!
for _ in $(seq 1 1000); do
    [ "$(grep -c '"loss"' cut/metrics.jsonl 2>/dev/null)" -ge 40 ] 2>/dev/null && break
    sleep 0.01
done
kill -INT $pid 2>/dev/null
wait $pid
expect "resume" 0 "done: 150 steps" -- "$FM" pretrain --out cut --resume
if [ "$(losses full | wc -l)" -eq 150 ] && diff <(losses full) <(losses cut) >/dev/null; then ok; else
    bad "resumed losses differ from the uninterrupted run"; diff <(losses full) <(losses cut) | head -5
fi

# --- completion grid: 3 columns of 16 + 2, 2 + 2 rows of 16 + 2, a 2-pixel margin
expect "complete" 0 "grid.png: 56 x 74 pixels: 3 images" -- \
    "$FM" complete --model run --images "$TEST" --out grid.png --count 3 --samples 2 --scale 1 --threads 2
[ "$(head -c 8 grid.png | od -An -t x1 | tr -d ' ')" = 89504e470d0a1a0a ] && ok || bad "grid.png is not a PNG"
[ "$(od -An -t u1 -j 16 -N 8 grid.png | tr -s ' ')" = " 0 0 0 56 0 0 0 74" ] && ok || bad "grid.png's IHDR is not 56 x 74"
expect "complete, scale 2" 0 "grid.png: 104 x 138 pixels" -- \
    "$FM" complete --model run --images "$TEST" --out grid.png --count 3 --samples 2 --scale 2
expect "complete: too many" 1 "holds 60 images; --first 58 --count 3" -- \
    "$FM" complete --model run --images "$TEST" --out grid.png --first 58 --count 3
expect "complete: other size" 1 "small.idx holds 8 x 8 images" -- \
    "$FM" complete --model run --images small.idx --out grid.png
# the image tokenizer goes along with the model: fm quantize's copy completes images too
"$FM" quantize --model run --out q >/dev/null 2>&1 || bad "quantize"
expect "complete with the quantized copy" 0 "grid.png: 56 x 74 pixels" -- \
    "$FM" complete --model q --images "$TEST" --out grid.png --count 3 --samples 2 --scale 1
expect "complete: labels" 1 "train-labels-idx1-ubyte.gz is a label file" -- \
    "$FM" complete --model run --images "$LABELS" --out grid.png
mkdir textmodel && cp run/config.json run/model.safetensors run/tokenizer.json textmodel/
expect "complete: no image tokenizer" 1 "textmodel holds no image tokenizer" -- \
    "$FM" complete --model textmodel --images "$TEST" --out grid.png
expect "complete: out unwritable" 1 "nodir/grid.png" -- \
    "$FM" complete --model run --images "$TEST" --out nodir/grid.png --count 1 --samples 1

summary "cli_vision_test"
