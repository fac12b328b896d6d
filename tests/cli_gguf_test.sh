#!/usr/bin/env bash
# cli_gguf_test.sh — `fm export gguf` checked against a real llama.cpp. Two small GPTs are trained
# on a short text repeated (so that their greedy continuations are confident): one of width 64 and
# 2 heads, one of width 96 and 4 heads of 24 on a 300-token vocabulary; each is exported as f32,
# f16 and q8_0 and
#   - tests/gguf/inspect_gguf.py reads every file byte by byte: header, counts, metadata types,
#     offsets and alignment, the file's size, llama.cpp's gpt2 keys, tensor names, shapes and
#     types, the tokenizer and chat template, and every value against model.safetensors;
#   - llama.cpp (npm's node-llama-cpp 3.22.1, its prebuilt CPU build; tests/gguf/check.mjs) loads
#     it, tokenizes the prompts and harder texts as fm does, continues 4 prompts greedily for 32
#     tokens and scores fm's continuations teacher-forced; tests/gguf/agree.py requires float32
#     to continue all 4 as `fm generate --temperature 0` does, token for token, and f16 and q8_0
#     3 of 4, or 97% of the teacher-forced top-1;
# and tests/ref/tasks (width 48: its q8_0 rows are not whole blocks, so stored f16) is exported and
# checked too. Then the bad inputs: each a clear message naming the file, a non-zero exit, nothing
# left behind. node-llama-cpp is installed from tests/gguf/package-lock.json into BUILD/npm-gguf
# (never into the repository) with npm, without its optional GPU packages and without install
# scripts; nothing is downloaded or built when it runs (NODE_LLAMA_CPP_SKIP_DOWNLOAD, getLlama
# with build "never"). The llama.cpp part is skipped, saying so, only when node is not installed
# or older than 20 (Debian 12's own); CI installs nodejs and npm (scripts/install-deps.sh --node).
# Usage: tests/cli_gguf_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_gguf_test.sh PATH/TO/fm}")
BUILD=$(dirname "$FM")
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
source "$ROOT/tests/cli_lib.sh"
tmp=$(mktemp -d /tmp/fm_gguf_test_XXXXXX)
trap 'cleanup_unwritable; rm -rf "$tmp"' EXIT
cd "$tmp"
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
# one thread: on a busy 2-core machine two OpenMP threads spin against each other (100x slower)
T=(--threads 1)

# ---- two small models on a short text, learnt by heart
cat >verse.txt <<'EOF'
The lighthouse keeper counts the ships at night: one from the north with silver sails,
two from the east that carry salt and copper, three from the south whose drums are heard
before their lanterns, and four from the west that never answer when he calls their names.
In the morning he writes them down, folds the page twice, and sleeps until the gulls return.
EOF
for _ in $(seq 1 60); do cat verse.txt; done >corpus.txt
train() { # train NAME VOCAB LAYERS DIM HEADS
    "$FM" tokenizer train --vocab "$2" --out "tok$1.json" corpus.txt >/dev/null &&
        "$FM" data prepare --tokenizer "tok$1.json" --out "data$1" corpus.txt >/dev/null &&
        "$FM" pretrain --data "data$1" --out "$1" --layers "$3" --dim "$4" --heads "$5" --context 64 --seq 32 \
            --batch 4 --steps 150 --lr 5e-3 --eval-every 1000 --eval-tokens 128 --sample-every 0 "${T[@]}" \
            >/dev/null 2>&1
}
train m64 400 1 64 2 && ok || bad "training the width-64 model"
train m96 300 1 96 4 && ok || bad "training the width-96 model (heads of 24)"
cp -r "$ROOT/tests/ref/tasks" tasks
# chat templates: a string (m64), transformers' list of named templates (m96), none (tasks)
python3 - <<'PY'
import json
t = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|endoftext|>' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}\n\"quotes\", \\backslash, ünïcode ✓")
json.dump({"chat_template": t, "eos_token": "<|endoftext|>"}, open("m64/tokenizer_config.json", "w"))
json.dump({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": t}]},
          open("m96/tokenizer_config.json", "w"))
open("template.txt", "w", encoding="utf-8").write(t)
PY

# ---- export, and the file structure
for m in m64 m96 tasks; do
    for type in f32 f16 q8_0; do
        expect "export $m $type" 0 "exported $m to $m-$type.gguf: GGUF v3.*matrices $type" -- \
            "$FM" export gguf --model "$m" --out "$m-$type.gguf" --type "$type"
        expect "structure of $m-$type.gguf" 0 "^ok " -- \
            python3 "$ROOT/tests/gguf/inspect_gguf.py" "$m-$type.gguf" "$m" "$type"
    done
done
expect "q8_0 fallback reported" 0 "8 of them f16" -- "$FM" export gguf --model tasks --out t.gguf --type q8_0
grep -q "f16: rows not whole blocks" <("$FM" export gguf --model m96 --out t.gguf --type q8_0 --force) &&
    bad "m96 (width 96) should need no f16 fallback" || ok
expect "export --help" 0 "--type S +the matrices' type" -- "$FM" export --help

# ---- llama.cpp
llama_cpp() {
    if ! command -v node >/dev/null; then
        skip_case "llama.cpp (node-llama-cpp)" \
            "node is not installed (apt-get install nodejs npm, or scripts/install-deps.sh --node)"
        return
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$major" -lt 20 ]; then
        # Debian 12's own nodejs is 18 (Debian 13's is 20): the check cannot run there
        skip_case "llama.cpp (node-llama-cpp)" "node-llama-cpp 3.22.1 needs node >= 20; this node is $(node --version)"
        return
    fi
    if [ "$(uname -sm)" != "Linux x86_64" ]; then
        bad "the locked llama.cpp build is @node-llama-cpp/linux-x64; this machine is $(uname -sm)"
        return
    fi
    # node-llama-cpp at the locked version, installed once per build folder
    local npm_dir=$BUILD/npm-gguf out
    if ! cmp -s "$ROOT/tests/gguf/package-lock.json" "$npm_dir/package-lock.source.json" ||
        [ ! -d "$npm_dir/node_modules/@node-llama-cpp/linux-x64/bins" ]; then
        rm -rf "$npm_dir"
        mkdir -p "$npm_dir"
        cp "$ROOT/tests/gguf/package.json" "$ROOT/tests/gguf/package-lock.json" "$npm_dir/"
        # npm install, not npm ci: the lock lacks node-llama-cpp's optional packages for other
        # platforms (some were never published at 3.22.1), which npm ci refuses
        if ! out=$(cd "$npm_dir" && npm install --omit=optional --ignore-scripts --no-audit --no-fund 2>&1); then
            bad "npm install in $npm_dir failed (the npm registry must be reachable once):"
            sed 's/^/    /' <<<"$out" | tail -5
            rm -rf "$npm_dir"
            return
        fi
        cp "$ROOT/tests/gguf/package-lock.json" "$npm_dir/package-lock.source.json"
    fi
    local modules=$npm_dir/node_modules

    # fm's side: the prompts' ids, the greedy continuations, and harder texts' ids
    printf '%s\n' "The lighthouse" "two from the east" "In the morning he" "four from" >prompts.txt
    local m type
    for m in m64 m96 tasks; do
        "$FM" generate --model "$m" --prompts prompts.txt --json --temperature 0 --max-tokens 32 --ignore-eos \
            --repeat-penalty 1 "${T[@]}" >"$m-gen.jsonl" 2>/dev/null || bad "fm generate on $m"
        python3 - "$m" "$FM" <<'PY' || bad "cases for $m"
import json, subprocess, sys
m, fm = sys.argv[1:3]
def encode(text):
    r = subprocess.run([fm, "tokenizer", "encode", "--tokenizer", m + "/tokenizer.json"], input=text.encode(),
                       capture_output=True, check=True)
    return [int(x) for x in r.stdout.split()]
cases = {"tokens": 32, "prompts": [], "texts": [], "text_ids": []}
for line in open(m + "-gen.jsonl"):
    g = json.loads(line)
    ids = encode(g["prompt"])
    cases["prompts"].append({"text": g["prompt"], "fm_ids": ids, "fm_continuation": g["ids"], "fm_text": g["text"],
                             "forced": ids + g["ids"], "forced_from": len(ids) - 1})
for text in ["Hello,  world!   Tabs\tand\tspaces,\t1234567 and 3.14159; I'm sure they'll've gone.\n  ",
             "\u00fcn\u00efc\u00f6d\u00e9 \u2014 \u201cquotes\u201d \u65e5\u672c\u8a9e \U0001F600 \u00bd \ufb01\t end",
             "a\r\n\r\n  b   \n\n\n", "   leading, and\u00a0non-breaking\u3000spaces  "]:
    cases["texts"].append(text)
    cases["text_ids"].append(encode(text))
json.dump(cases, open(m + "-cases.json", "w"))
PY
        for type in f32 f16 q8_0; do
            if ! node "$ROOT/tests/gguf/check.mjs" "$modules" "$m-$type.gguf" "$m-cases.json" >"$m-$type.json" \
                2>"$m-$type.err"; then
                bad "llama.cpp on $m-$type.gguf:"
                sed 's/^/    /' "$m-$type.err" | tail -5
                continue
            fi
            local template=()
            [ "$m" = tasks ] || template=(template.txt)
            if [ "$m" = tasks ]; then # a model that repeats itself at near ties: agreement reported, not required
                python3 "$ROOT/tests/gguf/agree.py" "$m" "$type" "$m-cases.json" "$m-$type.json" "${template[@]}" |
                    sed 's/^FAIL /(not required) /'
                ok
            elif out=$(python3 "$ROOT/tests/gguf/agree.py" "$m" "$type" "$m-cases.json" "$m-$type.json" \
                "${template[@]}"); then
                echo "$out"
                ok
            else
                bad "$out"
            fi
        done
    done
    # the check does catch a difference: a continuation changed by one token
    python3 - <<'PY'
import json
c = json.load(open("m64-cases.json"))
c["prompts"][0]["fm_continuation"][5] = (c["prompts"][0]["fm_continuation"][5] + 1) % 400
json.dump(c, open("changed-cases.json", "w"))
PY
    expect "a changed continuation is caught" 1 "FAIL m64 f32: greedy 3/4" -- \
        python3 "$ROOT/tests/gguf/agree.py" m64 f32 changed-cases.json m64-f32.json template.txt
}
llama_cpp

# ---- bad inputs: a clear message naming the file, a non-zero exit, nothing left behind
no_file() { # no_file NAME PATH: nothing at PATH, and no temporary file beside it
    if [ ! -e "$2" ] && [ -z "$(ls "$(dirname "$2")" | grep -F "$(basename "$2").tmp")" ]; then ok; else
        bad "$1 left $(ls -d "$2"* 2>/dev/null)"; fi
}
expect "no format" 2 "expected a format: gguf" -- "$FM" export
expect "unknown format" 2 "'onnx' is not a format" -- "$FM" export onnx --model m64 --out x.onnx
expect "no --out" 2 "--model DIR and --out FILE are required" -- "$FM" export gguf --model m64
expect "unknown --type" 2 "--type: 'q4_k' is not a GGUF type \(f32, f16 or q8_0\)" -- \
    "$FM" export gguf --model m64 --out bad.gguf --type q4_k
no_file "unknown --type" bad.gguf
expect "missing model" 1 "nowhere/config.json" -- "$FM" export gguf --model nowhere --out bad.gguf
no_file "missing model" bad.gguf
mkdir trunc && cp m64/config.json m64/tokenizer.json trunc/ &&
    head -c 3000 m64/model.safetensors >trunc/model.safetensors
expect "corrupt model" 1 "trunc/model.safetensors: .*truncated" -- "$FM" export gguf --model trunc --out bad.gguf
no_file "corrupt model" bad.gguf
mkdir notok && cp m64/config.json m64/model.safetensors notok/
expect "no tokenizer.json" 1 "notok/tokenizer.json" -- "$FM" export gguf --model notok --out bad.gguf
no_file "no tokenizer.json" bad.gguf
cp -r m64 badcfg && echo '{"chat_template": "x",' >badcfg/tokenizer_config.json
expect "corrupt tokenizer_config.json" 1 "badcfg/tokenizer_config.json" -- \
    "$FM" export gguf --model badcfg --out bad.gguf
no_file "corrupt tokenizer_config.json" bad.gguf
echo '{"chat_template": 7}' >badcfg/tokenizer_config.json
expect "a chat_template of another kind" 1 "badcfg/tokenizer_config.json: chat_template is neither" -- \
    "$FM" export gguf --model badcfg --out bad.gguf
cp -r "$ROOT/tests/ref/classify" cls && cp tasks/tokenizer.json cls/
expect "a classification head" 1 "attached tensor score.weight" -- "$FM" export gguf --model cls --out bad.gguf
no_file "a classification head" bad.gguf
expect "--out in a missing folder" 1 "missing/x.gguf" -- "$FM" export gguf --model m64 --out missing/x.gguf
expect "--out is a folder" 1 "m96 is a folder" -- "$FM" export gguf --model m64 --out m96
expect "--out exists" 1 "m64-f32.gguf already exists \(--force replaces it\)" -- \
    "$FM" export gguf --model m64 --out m64-f32.gguf
expect "--force replaces" 0 "exported" -- "$FM" export gguf --model m64 --out m64-f32.gguf --type f16 --force
mkdir ro
if unwritable ro; then
    expect "unwritable --out ($unwritable_how)" 1 "ro/x.gguf.*($why_unwritable)" -- \
        "${as_writer[@]}" "$FM" export gguf --model m64 --out ro/x.gguf
    [ -z "$(ls -A ro)" ] && ok || bad "a refused export left $(ls -A ro) in ro"
    writable ro
else
    skip_case "unwritable --out" "$unwritable_why"
fi
# each file operation failing in turn (FM_FAIL_IO=k: creating, each write, flush, fsync, close,
# rename): exit 1 naming the file, and nothing left; the folder's fsync after the rename leaves the
# file in place, and says so
n_io=$(FM_FAIL_IO_LOG=1 "$FM" export gguf --model m64 --out io.gguf 2>&1 >/dev/null | grep -c '^io [0-9]*:')
rm -f io.gguf
[ "$n_io" -gt 5 ] && ok || bad "FM_FAIL_IO_LOG counted $n_io file operations"
for k in $(seq 1 "$n_io"); do
    out=$(FM_FAIL_IO=$k "$FM" export gguf --model m64 --out io.gguf 2>&1)
    status=$?
    [ $status -eq 1 ] && grep -q "io.gguf" <<<"$out" || { bad "FM_FAIL_IO=$k: exit $status: $out"; continue; }
    if grep -q "was written but its folder could not be synced" <<<"$out"; then
        [ -f io.gguf ] && ok || bad "FM_FAIL_IO=$k: the folder's fsync failed, but io.gguf is not there"
        rm -f io.gguf
    else
        no_file "FM_FAIL_IO=$k" io.gguf
    fi
done

summary "cli_gguf_test"
