#!/usr/bin/env bash
# decode_bandwidth.sh — batch-1 decoding against the memory's read bandwidth, and against
# llama.cpp, in one run: GPT-2 124M shapes (12 layers, width 768, 12 heads, vocabulary 50257,
# context 1024; random weights from `fm init`), float32 and Q8_0 (`fm quantize`).
#
# Each round measures, in this order (fm and llama.cpp swap places every other round):
#   - the read bandwidth: bench/readbw.c (1 GiB, all THREADS threads, vector loads summed, best of 5)
#   - fm's decode-only tokens/s: `fm bench generate` (PROMPT tokens fed, GEN generated, greedy,
#     median of RUNS runs after one warm-up), float32 and int8
#   - llama.cpp's, the same way (bench/llama_decode.mjs, npm's node-llama-cpp at
#     tests/gguf/package-lock.json's version) on `fm export gguf` of the same weights, f32 and q8_0
# and prints per round: % of bandwidth = bytes of weights read per token x tokens/s / bandwidth,
# and fm / llama.cpp. The summary gives the medians over the rounds of those per-round figures.
# Bytes per token: every matrix once (wte as the head), every bias and LayerNorm vector, one row
# of wte and wpe; float32: 4 bytes a weight; fm's int8: 1 byte a weight + a float32 scale per 32
# (llama.cpp's q8_0 holds float16 scales: 34 bytes per 32, its own figure uses that). The key /
# value cache read by attention (under 5% of the int8 weights at these lengths) is not counted.
#
# Usage: bench/decode_bandwidth.sh [BUILD]   (BUILD: where fm is built, default build)
# Environment: THREADS (2), ROUNDS (3), PROMPT (16), GEN (32), RUNS (3), FM (BUILD/fm); FM_BASE:
# another fm (an older build) measured too in every round, right after fm (base_* figures).
# The model, its GGUF files and node-llama-cpp are kept in BUILD/decode-bw and BUILD/npm-gguf
# between runs; the llama.cpp part is skipped, saying so, without node >= 20 or without the npm
# registry on the first run. On a machine shared with other work the figures move from round to
# round: read the ratios within a round.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
FM=${FM:-$BUILD/fm}
THREADS=${THREADS:-2} ROUNDS=${ROUNDS:-3} PROMPT=${PROMPT:-16} GEN=${GEN:-32} RUNS=${RUNS:-3}
L=12 C=768 H=12 V=50257 P=1024
[ -x "$FM" ] || { echo "decode_bandwidth.sh: $FM is not built (make BUILD=...)" >&2; exit 2; }
WORK=$BUILD/decode-bw
mkdir -p "$WORK"

# ---- the read-bandwidth probe
gcc -O2 -fopenmp "$ROOT/bench/readbw.c" -o "$WORK/readbw"

# ---- the model: float32 and int8, each with GPT-2's tokenizer (llama.cpp's file needs one)
if [ ! -f "$WORK/f32/model.safetensors" ]; then
    "$FM" init --out "$WORK/f32" --layers $L --dim $C --heads $H --vocab $V --context $P --force >/dev/null
    python3 - "$ROOT/tests/fixtures/tokenizer/gpt2" "$WORK/f32/tokenizer.json" <<'PY'
import gzip, json, sys
src, out = sys.argv[1:3]
vocab = json.load(gzip.open(src + "/encoder.json.gz", "rt", encoding="utf-8"))
merges = [l for l in gzip.open(src + "/vocab.bpe.gz", "rt", encoding="utf-8").read().split("\n")[1:] if l]
json.dump({"model": {"type": "BPE", "vocab": vocab, "merges": merges},
           "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "special": True}],
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"}},
          open(out, "w"))
PY
    rm -f "$WORK/q8/model.safetensors" "$WORK"/*.gguf
fi
[ -f "$WORK/q8/model.safetensors" ] || "$FM" quantize --model "$WORK/f32" --out "$WORK/q8" --force >/dev/null
[ -f "$WORK/f32.gguf" ] || "$FM" export gguf --model "$WORK/f32" --out "$WORK/f32.gguf" --type f32 --force >/dev/null
[ -f "$WORK/q8_0.gguf" ] || "$FM" export gguf --model "$WORK/q8" --out "$WORK/q8_0.gguf" --type q8_0 --force >/dev/null

# ---- llama.cpp (node-llama-cpp), installed once per build folder as tests/cli_gguf_test.sh does
LLAMA=
npm_dir=$BUILD/npm-gguf
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "llama.cpp: skipped (node-llama-cpp needs node >= 20: scripts/install-deps.sh --node)"
else
    if ! cmp -s "$ROOT/tests/gguf/package-lock.json" "$npm_dir/package-lock.source.json" ||
        [ ! -d "$npm_dir/node_modules/@node-llama-cpp/linux-x64/bins" ]; then
        rm -rf "$npm_dir" && mkdir -p "$npm_dir"
        cp "$ROOT/tests/gguf/package.json" "$ROOT/tests/gguf/package-lock.json" "$npm_dir/"
        if (cd "$npm_dir" && npm install --omit=optional --ignore-scripts --no-audit --no-fund >/dev/null 2>&1); then
            cp "$ROOT/tests/gguf/package-lock.json" "$npm_dir/package-lock.source.json"
        else
            echo "llama.cpp: skipped (npm install in $npm_dir failed; the registry must be reachable once)"
            rm -rf "$npm_dir"
        fi
    fi
    [ -d "$npm_dir/node_modules" ] && LLAMA=$npm_dir/node_modules
fi

# ---- bytes of weights read per token
read -r F32_BYTES Q8_BYTES LQ8_BYTES < <(python3 - $L $C $V $P <<'PY'
import sys
L, C, V, P = map(int, sys.argv[1:5])
mats = L * (C * 3 * C + C * C + C * 4 * C + 4 * C * C) + V * C        # wte read whole as the head
vecs = L * (3 * C + C + 4 * C + C + 4 * C) + 2 * C + 2 * C              # biases, LayerNorms, one wte + wpe row
print(4 * (mats + vecs), mats * 36 // 32 + 4 * vecs, mats * 34 // 32 + 4 * vecs)
PY
)

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
fm_rate() { "${FMX:-$FM}" bench generate --threads "$THREADS" \
    --prompt "$PROMPT" --gen "$GEN" --steps "$RUNS" --warmup 1 --model "$WORK/$1" 2>/dev/null | field decode_tokens_per_s; }
llama_rate() { node "$ROOT/bench/llama_decode.mjs" "$LLAMA" "$WORK/$1.gguf" "$THREADS" "$PROMPT" "$GEN" "$RUNS" 1 \
    2>/dev/null | field decode_tokens_per_s; }
pct() { python3 -c "print(f'{100 * $1 * $2 / ($3 * 1e9):.1f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "decode_bandwidth: threads=$THREADS prompt=$PROMPT gen=$GEN runs=$RUNS rounds=$ROUNDS" \
     "bytes_per_token f32=$F32_BYTES fm_int8=$Q8_BYTES llama_q8_0=$LQ8_BYTES cpu=$("$FM" info --cpu 2>/dev/null | sed -n "s/^cpu path *\([^ ]*\).*/\1/p")"
rows=$WORK/rounds.txt
: >"$rows"
for ((r = 1; r <= ROUNDS; r++)); do
    bw=$(OMP_NUM_THREADS=$THREADS "$WORK/readbw" | field read_gb_s)
    declare -A fm=() ll=() base=()
    for w in f32 q8; do
        g=$([ $w = f32 ] && echo f32 || echo q8_0)
        if [ $((r % 2)) = 1 ]; then
            fm[$w]=$(fm_rate $w)
            [ -n "${FM_BASE:-}" ] && base[$w]=$(FMX=$FM_BASE fm_rate $w)
            [ -n "$LLAMA" ] && ll[$w]=$(llama_rate $g)
        else
            [ -n "$LLAMA" ] && ll[$w]=$(llama_rate $g)
            fm[$w]=$(fm_rate $w)
            [ -n "${FM_BASE:-}" ] && base[$w]=$(FMX=$FM_BASE fm_rate $w)
        fi
    done
    line="round $r: read_gb_s=$bw fm_f32_tok_s=${fm[f32]} fm_f32_pct_bw=$(pct "${fm[f32]}" "$F32_BYTES" "$bw")"
    line+=" fm_q8_tok_s=${fm[q8]} fm_q8_pct_bw=$(pct "${fm[q8]}" "$Q8_BYTES" "$bw")"
    if [ -n "${FM_BASE:-}" ]; then
        line+=" base_f32_tok_s=${base[f32]} base_f32_pct_bw=$(pct "${base[f32]}" "$F32_BYTES" "$bw")"
        line+=" base_q8_tok_s=${base[q8]} base_q8_pct_bw=$(pct "${base[q8]}" "$Q8_BYTES" "$bw")"
    fi
    if [ -n "$LLAMA" ]; then
        line+=" llama_f32_tok_s=${ll[f32]} llama_f32_pct_bw=$(pct "${ll[f32]}" "$F32_BYTES" "$bw")"
        line+=" llama_q8_tok_s=${ll[q8]} llama_q8_pct_bw=$(pct "${ll[q8]}" "$LQ8_BYTES" "$bw")"
        line+=" fm_over_llama_f32=$(ratio "${fm[f32]}" "${ll[f32]}") fm_over_llama_q8=$(ratio "${fm[q8]}" "${ll[q8]}")"
    fi
    echo "$line" | tee -a "$rows"
done
python3 - "$rows" <<'PY'
import re, statistics, sys
rounds = [dict(re.findall(r"(\w+)=([0-9.]+)", l)) for l in open(sys.argv[1])]
keys = [k for k in rounds[0] if k != "round"]
print("median over rounds: " + " ".join(f"{k}={statistics.median(float(r[k]) for r in rounds):g}" for k in keys))
PY
