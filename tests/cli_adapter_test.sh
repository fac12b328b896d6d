#!/usr/bin/env bash
# cli_adapter_test.sh — LoRA adapters on the command line: --adapter on score, generate and eval,
# fm merge, and adapters that do not fit. tests/ref/lora holds a small GPT-2 (base/) and a PEFT
# adapter of rank 4 on all four products (adapter/), made by tests/torch/lora_reference.py; the
# 300-token tokenizer of tests/ref/tasks serves as the base's tokenizer.
# Usage: tests/cli_adapter_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_adapter_test.sh PATH/TO/fm}")
src=$(dirname "$(realpath "$0")")/..
ref=$src/tests/ref/lora
tmp=$(mktemp -d /tmp/fm_adapter_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$src/tests/cli_lib.sh"
cd "$tmp"
cp -r "$ref/base" base && cp "$src/tests/ref/tasks/tokenizer.json" base/
cp -r "$ref/adapter" adapter

# merged and unmerged compute the same
expect "merge" 0 "merged" -- "$FM" merge --model base --adapter adapter --out merged
[ -f merged/model.safetensors ] && [ -f merged/tokenizer.json ] && [ ! -e merged/adapter_config.json ] && ok ||
    bad "merge did not write a plain model directory with the tokenizer"
ids="5 17 42 99 3 250 7 8 61 12"
"$FM" score --model base --adapter adapter --ids "$ids" --json >with.json 2>&1
"$FM" score --model merged --ids "$ids" --json >merged.json 2>&1
"$FM" score --model base --ids "$ids" --json >plain.json 2>&1
nll() { sed -n 's/.*"nll":\([-0-9.e+]*\).*/\1/p' "$1"; }
awk -v a="$(nll with.json)" -v b="$(nll merged.json)" -v c="$(nll plain.json)" \
    'BEGIN { d = a - b; if (d < 0) d = -d; e = a - c; if (e < 0) e = -e; exit !(a != "" && d < 1e-4 && e > 1e-3) }' && ok ||
    bad "score: with the adapter $(nll with.json), merged $(nll merged.json), base $(nll plain.json)"
"$FM" generate --model base --adapter adapter --ids "$ids" --max-tokens 12 --temperature 0 >gen_a.txt 2>/dev/null
"$FM" generate --model merged --ids "$ids" --max-tokens 12 --temperature 0 >gen_m.txt 2>/dev/null
[ -s gen_a.txt ] && cmp -s gen_a.txt gen_m.txt && ok || bad "greedy generation differs between the adapter and the merged model"

# eval: each adapter an entry on one base, equal to the merged model
cp -r adapter adapter2
mc=$src/tests/fixtures/tasks/fixture_mc.jsonl
expect "eval two adapters" 0 "adapter2" -- "$FM" eval --model base --adapter adapter --adapter adapter2 --tasks "$mc" \
    --json --output two.json
expect "eval merged" 0 "fixture_mc" -- "$FM" eval --model merged --tasks "$mc" --json --output merged_eval.json
python3 - two.json merged_eval.json <<'PY' && ok || bad "eval with adapters differs from the merged model"
import json, sys
two, merged = (json.load(open(p)) for p in sys.argv[1:3])
entries = two["models"]
assert [e["model"] for e in entries] == ["adapter", "adapter2"], entries
want = merged["results"]["fixture_mc"]
for e in entries:
    got = e["results"]["fixture_mc"]
    for k in ("acc,none", "acc_norm,none", "n"):
        assert abs(got[k] - want[k]) < 1e-9, (k, got[k], want[k])
PY
expect "eval --adapter with two models" 2 "one --model" -- "$FM" eval --model base --model merged --adapter adapter \
    --tasks "$mc"

# adapters that do not fit, and bad directories: named, exit 1, nothing written
expect "another shape" 1 "has shape" -- "$FM" score --model "$src/tests/ref/tiny" --adapter adapter --ids "1 2 3"
expect "missing adapter" 1 "adapter_config.json" -- "$FM" score --model base --adapter nowhere --ids "1 2 3"
mkdir bad1 && cp adapter/adapter_model.safetensors bad1/ && echo '{"peft_type": "PREFIX_TUNING"}' >bad1/adapter_config.json
expect "another peft_type" 1 "peft_type" -- "$FM" score --model base --adapter bad1 --ids "1 2 3"
mkdir bad2 && cp adapter/adapter_config.json bad2/ && head -c 2000 adapter/adapter_model.safetensors >bad2/adapter_model.safetensors
expect "truncated weights" 1 "adapter_model.safetensors" -- "$FM" score --model base --adapter bad2 --ids "1 2 3"
mkdir bad3 && cp adapter/adapter_model.safetensors bad3/ &&
    sed 's/"c_fc"/"q_proj"/' adapter/adapter_config.json >bad3/adapter_config.json
expect "an untargeted product" 1 "target_modules" -- "$FM" score --model base --adapter bad3 --ids "1 2 3"
expect "merge into its base" 2 "input directory" -- "$FM" merge --model base --adapter adapter --out base
expect "merge over a model" 1 "already holds a model" -- "$FM" merge --model base --adapter adapter --out merged
expect "merge a bad adapter" 1 "peft_type" -- "$FM" merge --model base --adapter bad1 --out merged2
[ ! -e merged2/model.safetensors ] && ok || bad "a failed merge wrote a model"

summary "cli_adapter_test"
