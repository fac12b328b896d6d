#!/usr/bin/env bash
# make_eval_reference.sh — the committed reference for fm's evaluation harness (tests/ref/tasks):
# a small GPT trained briefly on the fixture tasks' own text (so that it generates words), saved
# as a plain Hugging Face GPT-2 directory with its tokenizer, and expected.json: the fixture tasks
# evaluated at 0, 1 and 2 shots by tests/torch/eval_reference.py (PyTorch, written independently
# of fm's harness). tests/cli_eval_test.sh compares fm eval --tasks against it.
# Usage: tests/torch/make_eval_reference.sh PATH/TO/fm     (needs /usr/bin/python3 with torch)
set -euo pipefail
FM=$(realpath "${1:?usage: make_eval_reference.sh PATH/TO/fm}")
cd "$(dirname "$0")/../.."
out=tests/ref/tasks
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the corpus: every query, choice, answer and text of the fixtures, ten times
/usr/bin/python3 - tests/fixtures/tasks/*.jsonl >"$work/corpus.txt" <<'PY'
import json, sys
lines = []
for path in sys.argv[1:]:
    for line in open(path, encoding="utf-8"):
        if line.strip():
            o = json.loads(line)
            for key in ("query", "text", "instruction"):
                if key in o:
                    lines.append(o[key].replace("\n", " "))
            for c in o.get("choices", []) + o.get("answers", []):
                lines.append(c)
            if "choices" in o:
                lines.append(o["query"].replace("\n", " ") + " " + o["choices"][o["gold"]])
for _ in range(10):
    print("\n".join(lines))
PY
"$FM" tokenizer train --vocab 300 --out "$work/tok.json" "$work/corpus.txt" >/dev/null
"$FM" data prepare --tokenizer "$work/tok.json" --out "$work/data" "$work/corpus.txt" >/dev/null
"$FM" pretrain --data "$work/data" --out "$work/run" --layers 2 --dim 48 --heads 2 --context 96 --batch 8 \
    --steps 300 --eval-every 100 --sample-every 0 --threads 1 --seed 11 >/dev/null
mkdir -p "$out"
cp -L "$work/run/config.json" "$work/run/model.safetensors" "$work/run/tokenizer.json" "$out/"
tasks=$(ls tests/fixtures/tasks/fixture_*.jsonl | paste -sd,)
OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/torch/eval_reference.py "$out" "$out/expected.json" \
    --tasks "$tasks" --shots 0,1,2 --seed 1234
echo "wrote $out (config.json, model.safetensors, tokenizer.json, expected.json)"
