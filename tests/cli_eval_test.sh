#!/usr/bin/env bash
# cli_eval_test.sh — fm eval --tasks against an independent reference, and its bad inputs.
# tests/ref/tasks is a small GPT saved as a plain Hugging Face GPT-2 directory with its tokenizer
# (tests/torch/make_eval_reference.sh), and expected.json what tests/torch/eval_reference.py
# (PyTorch, written apart from fm's harness) computes on the fixture tasks at 0, 1 and 2 shots:
# acc, acc_norm, acc_bytes, exact match, F1, bits per byte, truncation counts must be equal, each
# choice's log-likelihood within 1e-4, each generated text identical. The results must not change
# with the thread count or the batch size.
# Usage: tests/cli_eval_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_eval_test.sh PATH/TO/fm}")
src=$(dirname "$(realpath "$0")")/..
ref=$src/tests/ref/tasks
fix=$src/tests/fixtures/tasks
tmp=$(mktemp -d /tmp/fm_eval_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$src/tests/cli_lib.sh"
cd "$tmp"

tasks=$fix/fixture_mc.jsonl,$fix/fixture_gen.jsonl,$fix/fixture_ppl.jsonl
expect "eval tasks" 0 "fixture_mc" -- "$FM" eval --model "$ref" --tasks "$tasks" --shots 0,1,2 --threads 1 \
    --log-samples samples1.jsonl --output out1.json --plot shots.svg
expect "eval bare items" 0 "fixture_bare" -- "$FM" eval --model "$ref" --tasks "$fix/fixture_bare.jsonl" --threads 2 \
    --batch 3 --log-samples samples_bare.jsonl --output out_bare.json
expect "two threads, batch 1" 0 "fixture_mc" -- "$FM" eval --model "$ref" --tasks "$tasks" --shots 0,1,2 --threads 2 \
    --batch 1 --log-samples samples2.jsonl --output out2.json
cmp -s samples1.jsonl samples2.jsonl && cmp -s out1.json out2.json && ok ||
    bad "the results changed with the thread count or the batch size"
grep -q "<svg" shots.svg && grep -q "fixture_mc (acc)" shots.svg && ok || bad "no picture of score against shots"

if command -v python3 >/dev/null; then
    python3 - "$ref/expected.json" out1.json samples1.jsonl out_bare.json samples_bare.jsonl <<'PY' && ok || bad "fm eval differs from the PyTorch reference"
import json, math, sys
expected = json.load(open(sys.argv[1]))
runs = json.load(open(sys.argv[2]))["models"]
samples = [json.loads(l) for l in open(sys.argv[3])]
bare = json.load(open(sys.argv[4]))
samples += [json.loads(l) for l in open(sys.argv[5])]
runs.append(bare)
problems = []
checked = 0
for run in runs:
    for task, res in run["results"].items():
        k = str(run["n-shot"][task])
        want = expected[task][k]
        for key, value in res.items():
            name = key.split(",")[0]
            if name in ("chance",):
                continue
            if name not in want and value is None and name.endswith("_stderr"):
                continue  # perplexity metrics have none, on either side
            if name not in want:
                problems.append(f"{task} {k}-shot: {name} not in the reference")
                continue
            w = want[name]
            if w is None or value is None:
                if (w is None) != (value is None) and not (w == 0 and value == 0):
                    problems.append(f"{task} {k}-shot {name}: fm {value}, reference {w}")
                continue
            tol = 1e-5 * max(1.0, abs(w)) if name.endswith("perplexity") or name == "bits_per_byte" else 1e-9
            if abs(value - w) > tol:
                problems.append(f"{task} {k}-shot {name}: fm {value!r}, reference {w!r}")
            checked += 1
for s in samples:
    want = expected[s["task"]][str(s["shots"])]["samples"][s["index"]]
    if isinstance(want, list):  # multiple choice: each choice's log-likelihood
        for a, b in zip(s["values"], want):
            if abs(a - b) > 1e-4 * max(1.0, abs(b)):
                problems.append(f"{s['task']} {s['shots']}-shot item {s['index']}: log-likelihood {a} vs {b}")
    elif isinstance(want, dict):  # generation: the text itself
        if s["text"] != want["text"]:
            problems.append(f"{s['task']} {s['shots']}-shot item {s['index']}: generated {s['text']!r} vs {want['text']!r}")
    elif abs(s["values"][0] - want) > 1e-4 * max(1.0, abs(want)):
        problems.append(f"{s['task']} item {s['index']}: log-likelihood {s['values'][0]} vs {want}")
    checked += 1
print(f"  compared {checked} values with the PyTorch reference, {len(problems)} differ")
for p in problems[:10]:
    print("   ", p)
sys.exit(1 if problems or checked < 50 else 0)
PY
else
    skip_case "comparison with the PyTorch reference" "python3 is not installed"
fi

# lm-eval's JSON shape for one model and one shot count
"$FM" eval --model "$ref" --tasks "$fix/fixture_mc.jsonl" --json --threads 1 >one.json 2>/dev/null
grep -q '"acc,none"' one.json && grep -q '"acc_stderr,none"' one.json && grep -q '"n-shot"' one.json && ok ||
    bad "--json lacks lm-eval's keys"
# two models side by side
expect "two models" 0 "models" -- "$FM" eval --model "$ref" --model "$ref" --tasks "$fix/fixture_bare.jsonl" --json \
    --plot models.svg
grep -q "score against model" models.svg && grep -q "fixture_bare (acc)" models.svg && ok ||
    bad "no picture of score against model"

# bad inputs: each names the problem, and the line where there is one
printf '{"query": "a", "choices": ["x", "y"], "gold": 0}\n{"query": "b", "choices": ["x"\n' >malformed.jsonl
expect "malformed line" 1 "malformed.jsonl:2: not valid JSON" -- "$FM" eval --model "$ref" --tasks malformed.jsonl
printf '{"query": "a", "choices": ["x", "y"], "gold": 5}\n' >gold.jsonl
expect "gold outside" 1 "gold.jsonl:1: \"gold\" 5 is outside the 2 choices" -- "$FM" eval --model "$ref" --tasks gold.jsonl
printf '{"query": "a", "choices": [], "gold": 0}\n' >empty.jsonl
expect "empty choices" 1 "empty.jsonl:1: \"choices\" is empty" -- "$FM" eval --model "$ref" --tasks empty.jsonl
expect "too many shots" 2 "fixture_mc: 9 shots asked, its few-shot split holds" -- \
    "$FM" eval --model "$ref" --tasks "$fix/fixture_mc.jsonl" --shots 0,9
expect "unknown task" 2 "unknown task 'no_such_task'" -- "$FM" eval --model "$ref" --tasks no_such_task
expect "tasks with data" 2 "give one" -- "$FM" eval --model "$ref" --tasks "$fix/fixture_mc.jsonl" --data .
expect "bad shots" 2 "--shots" -- "$FM" eval --model "$ref" --tasks "$fix/fixture_mc.jsonl" --shots 1,x
expect "no model" 2 "needs --model" -- "$FM" eval --tasks "$fix/fixture_mc.jsonl"

summary "cli eval"
