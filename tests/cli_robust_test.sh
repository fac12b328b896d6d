#!/usr/bin/env bash
# cli_robust_test.sh — the fm command against inputs and conditions a hostile user brings (issue 12):
#   - short contexts: models of context 1 and 2 work in every command (init, pretrain, generate,
#     score, eval, bench) or are refused with a message; scoring at context 1 read before its
#     logits (a crash, or wrong numbers);
#   - prompts are byte strings: a NUL byte in --file, stdin or --prompts is part of the prompt;
#   - a write error on standard output (> /dev/full, a closed stdout) exits 1 with a message;
#   - every JSON fm prints is valid JSON: a log-prob or bits per byte that is not finite is null;
#   - strict JSON: content after the JSON of config.json, tokenizer.json and run.json is refused
#     naming the file, as is a NUL (\u0000) in their strings and in a safetensors header (a dtype
#     "F32\u0000", a tensor name with a NUL); integers are range-checked before narrowing
#     (run.json, config.json, flags: --seed 1e3 is no longer seed 1);
#   - out of memory: with FM_FAIL_ALLOC=k (src/core/alloc.h) failing the k-th allocation, for each
#     k over the allocations of a command (all, or where a command's own are), the command succeeds
#     or exits 1 saying "out of memory": never a crash.
# JSON is checked with python3 (json module) or jq, whichever is there; the cases that need
# python3 (editing a safetensors file) are skipped, saying so, without it.
# Usage: tests/cli_robust_test.sh PATH/TO/fm    Prints "N passed, N failed"; exits non-zero on failure.
set -u
FM=$(realpath "${1:?usage: cli_robust_test.sh PATH/TO/fm}")
here=$(dirname "$(realpath "$0")")
source "$here/cli_lib.sh"
tmp=$(mktemp -d /tmp/fm_robust_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

PY=""
command -v python3 >/dev/null && python3 -c 'import json, struct' 2>/dev/null && PY=python3
JQ=""
command -v jq >/dev/null && JQ=jq

# valid_json NAME FILE: every line of FILE (JSON lines) is valid JSON with no NaN or Infinity
valid_json() {
    local name=$1 file=$2 why=""
    if [ ! -s "$file" ]; then
        why="no output"
    elif [ -n "$PY" ]; then
        why=$($PY -c '
import json, sys
def bad(c): raise ValueError("not JSON: " + c)
for i, line in enumerate(open(sys.argv[1], encoding="utf-8", errors="strict")):
    try: json.loads(line, parse_constant=bad)
    except Exception as e: print("line %d: %s: %s" % (i + 1, e, line[:200])); break' "$file" 2>&1)
    elif [ -n "$JQ" ]; then
        # jq takes nan and infinity as numbers: refuse them in the text itself
        if grep -qiE '(^|[^a-z"])-?(nan|inf|infinity)([^a-z"]|$)' "$file"; then why="nan or inf in $(head -c 200 "$file")"
        elif ! jq -e . "$file" >/dev/null 2>&1; then why="jq refuses $(head -c 200 "$file")"; fi
    else
        skip_case "$name" "neither python3 nor jq to check JSON"
        return
    fi
    if [ -z "$why" ]; then ok; else bad "$name: $why"; fi
}

# json_get FILE EXPR: a value of the first JSON line (python expression on d), printed by python
json_get() { $PY -c 'import json, sys; d = json.loads(open(sys.argv[1]).readline()); print(eval(sys.argv[2]))' "$1" "$2"; }

# st_edit FILE MODE [ARG]: rewrites a model.safetensors (python3): "huge A" sets ln_f.weight 0,
# ln_f.bias 1e28 and the rows of wte +A (first half) and -A (second half), so the logits are
# +-8 * 1e28 * A; "dtype-nul" makes the dtype of wte.weight "F32\u0000"; "name-nul" renames
# ln_f.bias to "ln_f.bias\u0000".
st_edit() {
    $PY - "$@" <<'EOF'
import json, struct, sys
path, mode = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
def put(name, values):
    begin, end = header[name]["data_offsets"]
    assert header[name]["dtype"] == "F32" and end - begin == 4 * len(values)
    data[begin:end] = struct.pack("<%df" % len(values), *values)
if mode == "huge":
    a = float(sys.argv[3])
    V, C = header["wte.weight"]["shape"]
    put("ln_f.weight", [0.0] * C)
    put("ln_f.bias", [1e28] * C)
    put("wte.weight", [a if v < V // 2 else -a for v in range(V) for c in range(C)])
elif mode == "dtype-nul":
    header["wte.weight"]["dtype"] = "F32\u0000"
elif mode == "name-nul":
    header["ln_f.bias\u0000"] = header.pop("ln_f.bias")
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + bytes(data))
EOF
}

# ---- fixtures: a corpus, a 300-token tokenizer, shards; models of context 1, 2 and 16
for i in $(seq 1 200); do echo "In the beginning God created the heaven and the earth. Line $i, and more words."; done >corpus.txt
"$FM" tokenizer train --vocab 300 --out tok.json corpus.txt >/dev/null || { echo "tokenizer train failed"; exit 1; }
"$FM" data prepare --tokenizer tok.json --out data corpus.txt >/dev/null || { echo "data prepare failed"; exit 1; }
tiny=(--layers 1 --dim 8 --heads 1 --vocab 300)
for c in 1 2 16; do
    expect "init context $c" 0 "initialised m$c: .*context $c\)" -- "$FM" init --out m$c "${tiny[@]}" --context $c
    cp tok.json m$c/tokenizer.json
done

# ---- 1. short contexts
# context 1 and a large vocabulary: scoring read V floats before the logits (a crash)
"$FM" init --out big1 --layers 1 --dim 8 --heads 1 --vocab 100000 --context 1 >/dev/null
ids20=$(seq 1 20 | tr '\n' ' ')
expect "score at context 1, 100000 tokens" 0 '"n":19\}' -- "$FM" score --model big1 --ids "$ids20" --json
# at context 1 a token's log-prob depends on the token before it alone (it was another's row)
for c in 1 2; do
    if [ $c -eq 1 ]; then
        "$FM" score --model m1 --ids "5 7" --json >s1.json 2>&1
        "$FM" score --model m1 --ids "3 9 5 7" --json >s2.json 2>&1
        a=$(grep -o '[-0-9.e]*\]' s1.json) b=$(grep -o '[-0-9.e]*\]' s2.json)
        [ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "context 1: log-prob of 7 after 5: $a alone, $b after 3 9 (want equal): $(cat s1.json s2.json)"
    fi
    expect "score text at context $c" 0 "perplexity" -- "$FM" score --model m$c --text "In the beginning God"
    expect "score --bos at context $c" 0 '"n":[0-9]+\}' -- "$FM" score --model m$c --text "In the beginning" --bos --json
    # an untrained model is near uniform: ln(300) nats a token, ~2.9 bits a byte on this text
    "$FM" eval --model m$c --data data --json >eval$c.json 2>&1
    bpb=$(grep -o '"model_bits_per_byte":[0-9.]*' eval$c.json | cut -d: -f2)
    awk -v b="${bpb:-0}" 'BEGIN { exit !(b > 2.5 && b < 3.4) }' && ok ||
        bad "eval at context $c: model bits per byte '$bpb' (want about 2.93, uniform): $(cat eval$c.json)"
    expect "generate at context $c" 0 "\[1 prompt tokens .*; 5 tokens generated" -- \
        "$FM" generate --model m$c --prompt "In the beginning" --max-tokens 5 --threads 1
    expect "generate --ids at context $c" 0 "5 tokens generated" -- "$FM" generate --model m$c --ids "5 6 7" --max-tokens 5
    expect "generate --prompts at context $c" 0 "2 prompts .* 6 tokens generated" -- \
        "$FM" generate --model m$c --prompts <(printf 'In the\nbeginning\n') --json --max-tokens 3
    expect "bench train at context $c" 0 "fm_bench mode=train .* seq=$c " -- \
        "$FM" bench train --layers 1 --dim 8 --heads 1 --vocab 300 --context $c --batch 2 --steps 1 --warmup 0 --threads 1
    expect "bench generate at context $c" 0 "fm_bench mode=generate .*prompt=1 gen=$c" -- \
        "$FM" bench generate --layers 1 --dim 8 --heads 1 --vocab 300 --context $c --prompt 1 --gen $c --steps 1 --warmup 0
    expect "bench generate past context $c" 2 "--prompt 2 \+ --gen 4 - 1 exceed the context $c" -- \
        "$FM" bench generate --layers 1 --dim 8 --heads 1 --vocab 300 --context $c --prompt 2 --gen 4
    rm -rf r$c
    expect "pretrain at context $c" 0 "done: 3 steps" -- "$FM" pretrain --data data --out r$c --layers 1 --dim 8 \
        --heads 1 --context $c --steps 3 --batch 2 --eval-every 2 --eval-tokens 16 --sample-every 2 --threads 1
    expect "generate from the run at context $c" 0 "tokens generated" -- "$FM" generate --model r$c --prompt "In" --max-tokens 3
    valid_json "metrics.jsonl at context $c" r$c/metrics.jsonl
    tr -d '\n' <r$c/run.json >run$c.json && echo >>run$c.json
    valid_json "run.json at context $c" run$c.json
done

# ---- 2. prompts are byte strings: a NUL byte is a byte of the prompt
printf 'In the\0beginning' >nul.txt
n_ids=$("$FM" tokenizer encode --tokenizer tok.json nul.txt | wc -w)
[ "$n_ids" -gt 4 ] && ok || bad "tokenizer encode: the text with a NUL gives $n_ids tokens"
expect "NUL in --file" 0 "\[$n_ids prompt tokens" -- "$FM" generate --model m16 --file nul.txt --max-tokens 1
expect "NUL on stdin" 0 "\[$n_ids prompt tokens" -- sh -c "'$FM' generate --model m16 --max-tokens 1 <nul.txt"
expect "NUL in score --file" 0 "\"n\":$((n_ids - 1))\}" -- "$FM" score --model m16 --file nul.txt --json
n_second=$(printf 'second' | "$FM" tokenizer encode --tokenizer tok.json | wc -w)
printf 'In the\0beginning\nsecond\n' >prompts.txt
"$FM" generate --model m16 --prompts prompts.txt --json --max-tokens 1 >prompts.json 2>prompts.err
grep -q "2 prompts ($((n_ids + n_second)) tokens)" prompts.err && ok || bad "NUL in --prompts: $(cat prompts.err)"
valid_json "generate --prompts --json with a NUL" prompts.json
if [ -n "$PY" ]; then
    got=$(json_get prompts.json 'repr(d["prompt"])')
    [ "$got" = "'In the\\x00beginning'" ] && ok || bad "NUL in --prompts: the JSON prompt is $got"
fi

# ---- 3. a write error on standard output is an error
if [ -c /dev/full ]; then
    for args in "generate --model m16 --prompt In --max-tokens 3" "generate --model m16 --prompts prompts.txt --json --max-tokens 2" \
                "score --model m16 --text In_the" "score --model m16 --text In_the --json" "info --model m16" \
                "eval --model m16 --data data" "eval --model m16 --data data --json" \
                "tokenizer encode --tokenizer tok.json corpus.txt" "init --help"; do
        # shellcheck disable=SC2086
        expect "fm $args >/dev/full" 1 "^fm ${args%% *}: standard output: " -- sh -c "'$FM' $args >/dev/full"
    done
else
    skip_case "write errors on stdout" "no /dev/full here"
fi
expect "fm info with stdout closed" 1 "fm info: standard output: " -- sh -c "'$FM' info --model m16 >&-"

# ---- 4. every JSON fm prints is valid JSON; what is not finite is null
"$FM" score --model m16 --text "In the beginning" --json >score.json 2>&1
valid_json "score --json" score.json
"$FM" score --model m16 --text "In the beginning" --bos --json >score_bos.json 2>&1
valid_json "score --bos --json" score_bos.json
"$FM" eval --model m16 --data data --json >eval.json 2>&1
valid_json "eval --json" eval.json
"$FM" eval --data data --json >eval_bigram.json 2>&1
valid_json "eval --json, bigram alone" eval_bigram.json
"$FM" generate --model m16 --prompt "In" --json --max-tokens 3 >gen.json 2>/dev/null
valid_json "generate --json" gen.json
if [ -n "$PY" ]; then
    # logits +-3.2e38 (finite): a log-prob of -6.4e38 is -inf as a float
    cp -r m16 huge && st_edit huge/model.safetensors huge 4e9
    "$FM" score --model huge --ids "1 200 1" --json >huge.json 2>&1
    valid_json "score --json, a log-prob below -FLT_MAX" huge.json
    expect "score --json, the -inf log-prob is null" 0 '"logprobs":\[null,null,' -- cat huge.json
    # logits +-8e38 overflow to infinities: NaN log-probs, a NaN nll and bits per byte
    cp -r m16 nan && st_edit nan/model.safetensors huge 1e10
    "$FM" score --model nan --ids "1 200 1" --json >nan.json 2>&1
    valid_json "score --json, NaN log-probs" nan.json
    expect "score --json, a NaN nll is null" 0 '"nll":null' -- cat nan.json
    "$FM" eval --model nan --data data --json >nan_eval.json 2>&1
    valid_json "eval --json, NaN bits per byte" nan_eval.json
    expect "eval --json, NaN bits per byte are null" 0 '"model_bits_per_byte":null' -- cat nan_eval.json
else
    skip_case "non-finite log-probs in JSON" "no python3 to write such a model"
fi

# ---- 5. strict JSON, NUL-free names, integers range-checked before narrowing
cp -r m16 trail && echo '{"n_layer": 2}' >>trail/config.json
expect "config.json with content after the JSON" 1 "trail/config.json: unexpected content after the JSON" -- \
    "$FM" info --model trail
cp -r m16 nulcfg && sed -i 's/"model_type":[^,]*/"model_type": "gpt2\\u0000x"/' nulcfg/config.json
expect "config.json with a NUL in a string" 1 "nulcfg/config.json: a NUL character" -- "$FM" info --model nulcfg
cp -r m16 bigint && sed -i 's/"n_layer":[^,]*/"n_layer": 4294967297/' bigint/config.json
expect "config.json n_layer 2^32 + 1" 1 "bigint/config.json: \"n_layer\" must be an integer" -- "$FM" info --model bigint
cp -r m16 trailtok && echo 'xyz' >>trailtok/tokenizer.json
expect "tokenizer.json with content after the JSON" 1 "trailtok/tokenizer.json: unexpected content after the JSON" -- \
    "$FM" score --model trailtok --text "In the"
cp -r m16 nultok && sed -i '0,/"model"/s//"nul\\u0000": 1, "model"/' nultok/tokenizer.json
expect "tokenizer.json with a NUL in a string" 1 "nultok/tokenizer.json: a NUL character" -- \
    "$FM" score --model nultok --text "In the"
# run.json, read by fm pretrain --resume
resume_case() { # resume_case NAME SED-EXPRESSION PATTERN: r2's run.json edited, then resumed
    rm -rf rr && cp -r r2 rr && sed -i "$2" rr/run.json
    expect "$1" 1 "$3" -- "$FM" pretrain --out rr --resume --threads 1
}
resume_case "run.json with content after the JSON" '$a {"total_steps": 40}' "rr/run.json: unexpected content after the JSON"
resume_case "run.json total_steps 2^32 + 40" 's/"total_steps":[^,]*/"total_steps": 4294967336/' \
    'rr/run.json: "total_steps" = 4294967336 is not a whole number in \[1, '
resume_case "run.json seed not a number" 's/"seed":[^,]*/"seed": "12abc"/' 'rr/run.json: "seed" = "12abc" is not a whole number'
resume_case "run.json data with a NUL" 's/"data":\s*"/&x\\u0000/' "rr/run.json: a NUL character"
rm -rf rr && cp -r r2 rr
expect "run.json untouched resumes" 0 "done: 3 steps" -- "$FM" pretrain --out rr --resume --threads 1
# safetensors: a dtype or a tensor name with a NUL
if [ -n "$PY" ]; then
    cp -r m16 nuldtype && st_edit nuldtype/model.safetensors dtype-nul
    expect "safetensors dtype F32\\u0000" 1 "nuldtype/model.safetensors: header has a string with a NUL" -- \
        "$FM" info --model nuldtype
    cp -r m16 nulname && st_edit nulname/model.safetensors name-nul
    expect "safetensors tensor name with a NUL" 1 "nulname/model.safetensors: header has a string with a NUL" -- \
        "$FM" score --model nulname --ids "1 2"
else
    skip_case "NUL in safetensors names" "no python3 to write such a file"
fi
# flags: a 64-bit seed is read as an integer, not through a double
expect "--seed 1e3" 2 "--seed: '1e3' is not a whole number in decimal digits" -- "$FM" init --out s1 "${tiny[@]}" --seed 1e3
expect "--seed 0x10" 2 "--seed: '0x10' is not a whole number" -- "$FM" init --out s2 "${tiny[@]}" --seed 0x10
expect "--seed 2^64" 2 "--seed: '18446744073709551616' is not a whole number" -- \
    "$FM" init --out s3 "${tiny[@]}" --seed 18446744073709551616
expect "--layers 2^32 + 1" 2 "--layers: 4294967297 is out of range" -- "$FM" init --out s4 --layers 4294967297
expect "--seed 17999999999999999999" 0 "initialised" -- "$FM" init --out s5 "${tiny[@]}" --seed 17999999999999999999

# ---- 6. out of memory: every allocation failing in turn, never a crash
# sweep NAME FIRST LAST STRIDE -- COMMAND...: for k = FIRST, FIRST + STRIDE, ... up to LAST, or
# until the command succeeds (k past its allocations), FM_FAIL_ALLOC=k must give exit 1 and
# "out of memory". One failure line per sweep, with the first bad k.
sweep() {
    local name=$1 k=$2 last=$3 stride=$4 runs=0 status out
    shift 5
    while [ "$k" -le "$last" ]; do
        out=$(FM_FAIL_ALLOC=$k "$@" 2>&1 >/dev/null)
        status=$?
        runs=$((runs + 1))
        [ $status -eq 0 ] && break
        if [ $status -ne 1 ] || ! grep -q "out of memory" <<<"$out"; then
            bad "$name: allocation $k failing: exit $status (want 1 and 'out of memory'): $(tail -2 <<<"$out")"
            return
        fi
        k=$((k + stride))
    done
    [ $runs -gt 0 ] && ok || bad "$name: nothing run"
}
# allocations COMMAND...: how many the command makes (the least k whose failure it never meets)
allocations() {
    local lo=1 hi=65536 mid
    while [ $lo -lt $hi ]; do
        mid=$(((lo + hi) / 2))
        if FM_FAIL_ALLOC=$mid "$@" >/dev/null 2>&1; then hi=$mid; else lo=$((mid + 1)); fi
    done
    echo $((lo - 1))
}
cp -r m16 m16bare && rm m16bare/tokenizer.json
ids70=$(seq 1 70 | tr '\n' ' ')
# score's own allocations come after the model's: from where one id stops to where 70 ids stop
from=$(allocations "$FM" score --model m16bare --ids 1 --threads 1)
to=$(allocations "$FM" score --model m16bare --ids "$ids70" --json --threads 1)
sweep "out of memory: score --ids" $((from > 5 ? from - 5 : 1)) $((to + 1)) 1 -- \
    "$FM" score --model m16bare --ids "$ids70" --json --threads 1
sweep "out of memory: eval, bigram alone" 1 100000 1 -- "$FM" eval --data data --json
sweep "out of memory: eval" 1 100000 1 -- "$FM" eval --model m16bare --data data --no-bigram --threads 1
sweep "out of memory: tokenizer train" 1 100000 1 -- "$FM" tokenizer train --vocab 270 --out tt.json corpus.txt nul.txt
# data prepare's own allocations follow the tokenizer's loading (as tokenizer encode's do)
"$FM" tokenizer train --vocab 262 --out tok262.json corpus.txt >/dev/null
from=$(allocations "$FM" tokenizer encode --tokenizer tok262.json /dev/null)
sweep "out of memory: data prepare" $((from > 20 ? from - 20 : 1)) $((from + 60)) 1 -- \
    "$FM" data prepare --tokenizer tok262.json --out d262 corpus.txt
"$FM" data prepare --tokenizer tok262.json --out d262 corpus.txt >/dev/null
# pretrain: every 11th allocation of a new run (run.json's items are a run of them); the first 150
# of a resume (run.json read, its freeze patterns copied)
new_run=(pretrain --data d262 --layers 1 --dim 8 --heads 1 --context 8 --steps 1 --batch 2 --eval-every 1
         --eval-tokens 16 --sample-every 0 --threads 1 --freeze 'wpe.weight')
sweep "out of memory: pretrain" 1 100000 11 -- sh -c 'rm -rf pr && exec "$@" --out pr' sh "$FM" "${new_run[@]}"
rm -rf pr && "$FM" "${new_run[@]}" --out pr >/dev/null
sweep "out of memory: pretrain --resume" 1 150 1 -- "$FM" pretrain --out pr --resume --threads 1

# ---- 7. help texts name only flags that exist
help=$("$FM" eval --help)
grep -q -- "--bigram-only" <<<"$help" && bad "fm eval --help mentions --bigram-only" || ok
for cmd in init info data pretrain generate score eval bench quantize; do
    "$FM" $cmd --help >help.txt 2>&1
    for flag in $(grep -oE -- '--[a-z][a-z0-9-]+' help.txt | sort -u); do
        grep -qE -- "^  $flag( |$)" help.txt || [ "$cmd" = data ] || bad "fm $cmd --help mentions $flag, which it does not take"
    done
done
ok

summary "cli robust"
