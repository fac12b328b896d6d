#!/usr/bin/env bash
# instruct.sh — `make instruct`: instruction tuning measured. A synthetic instruction set made
# from WordNet and the King James text (scripts/instruct_data.py; the base's pre-training saw
# that knowledge, and the set is split into training, validation and test by source item) teaches
# the English base model (`make base`) to answer questions in the chat template. Compared on the
# held-out test questions by exact match (fm eval's normalisation: case, punctuation, articles and
# spaces ignored; any accepted answer counts) and token F1:
#   - the base prompted few-shot (plain text: question, newline, answer; 0 and 4 examples)
#   - SFT from the base, every weight; SFT from the base with a LoRA adapter (r 8, all products)
#   - SFT of the same architecture from random weights, on the same budget
# Each SFT run keeps its best checkpoint by the validation questions' loss (never the test ones);
# that one is measured, through the chat template at 0 shots. Sample chats before and after go
# to OUT/chats.txt. Results: docs/finetune.md.
#   FM_INSTRUCT_STEPS    optimizer steps of each SFT run (1000, batch 32 x 96 tokens)
#   FM_INSTRUCT_OUT      output folder (build/instruct); FM_BASE_OUT the base's (build/base)
#   FM_INSTRUCT_THREADS  threads (2); FM_INSTRUCT_BUILD the build folder whose fm is used (build)
#   FM_INSTRUCT_LIMIT    test questions per kind, 0 = all (0)
#   FM_INSTRUCT_REUSE    1: keep SFT runs already finished in OUT (their best/ is there) and measure again
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${FM_INSTRUCT_STEPS:-1000}
OUT=${FM_INSTRUCT_OUT:-build/instruct}
BASE=${FM_BASE_OUT:-build/base}/run
THREADS=${FM_INSTRUCT_THREADS:-2}
BUILD=${FM_INSTRUCT_BUILD:-build}
LIMIT=${FM_INSTRUCT_LIMIT:-0}
REUSE=${FM_INSTRUCT_REUSE:-0}
FM=$BUILD/fm
[ -f "$BASE/model.safetensors" ] || { echo "instruct.sh: no base model in $BASE: run make base first" >&2; exit 1; }
make -s -j2 BUILD="$BUILD" "$FM"
mkdir -p "$OUT"

echo "== data: the instruction set (scripts/instruct_data.py)"
/usr/bin/python3 scripts/instruct_data.py "$OUT/data" | tee "$OUT/data.log"
tasks=$(ls "$OUT"/data/tasks/instruct_*.jsonl | paste -sd, -)

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PRECISION=fp32
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && PRECISION=bf16
common=(--data "$OUT/data/train.jsonl" --val "$OUT/data/val.jsonl" --format chat --batch 32 --seq 96
        --steps "$STEPS" --eval-every 50 --save-every "$STEPS" --threads "$THREADS" --precision "$PRECISION"
        --seed 1 --force)
finished() { # finished RUN: reuse asked for, and RUN's last step done
    [ "$REUSE" = 1 ] && grep -q "\"step\":$STEPS," "$1/metrics.jsonl" 2>/dev/null && [ -d "$1/best" ] &&
        echo "   (reusing $1)"
}
echo "== SFT from the base, every weight ($STEPS steps)"
finished "$OUT/full" || "$FM" finetune --model "$BASE" --out "$OUT/full" --lr 3e-4 "${common[@]}" | tail -2
echo "== SFT from the base, LoRA r 8 on all four products ($STEPS steps)"
finished "$OUT/lora" ||
    "$FM" finetune --model "$BASE" --out "$OUT/lora" --lora --lora-targets all --lr 2e-3 "${common[@]}" | tail -2
echo "== SFT from random weights, the base's architecture ($STEPS steps)"
if ! finished "$OUT/scratch"; then
    rm -rf "$OUT/random"
    "$FM" init --out "$OUT/random" --layers 6 --dim 320 --heads 5 --context 512 --vocab 8192 --seed 1 >/dev/null
    cp "$BASE/tokenizer.json" "$OUT/random/"
    "$FM" finetune --model "$OUT/random" --out "$OUT/scratch" --lr 2e-3 "${common[@]}" | tail -2
fi

echo "== held-out test questions: exact match and F1"
evaluate() { # evaluate NAME JSON fm-eval-arguments...: one run of fm eval, its JSON kept
    local name=$1 json=$2
    shift 2
    "$FM" eval --tasks "$tasks" --limit "$LIMIT" --threads "$THREADS" --output "$OUT/$json" "$@" >"$OUT/$json.txt"
    echo "-- $name"
    cat "$OUT/$json.txt"
}
evaluate "base, plain prompts, 0 and 4 shots" base.json --model "$BASE" --shots 0,4
evaluate "base, chat template, 0 shots" base-chat.json --model "$BASE" --chat-template
evaluate "SFT full" full.json --model "$OUT/full/best" --chat-template
evaluate "SFT LoRA" lora.json --model "$BASE" --adapter "$OUT/lora/best" --chat-template
evaluate "SFT from random weights" scratch.json --model "$OUT/scratch/best" --chat-template
/usr/bin/python3 - "$OUT" <<'PY'
# one table: exact match and F1 of every model on every kind
import json, os, sys
out = sys.argv[1]
rows = []  # (model, {task: (em, em_se, f1)})
def runs(doc):
    return doc["models"] if "models" in doc else [doc]
for name, f in (("base, plain, 0-shot", "base.json"), ("base, plain, 4-shot", "base.json"),
                ("base, chat template, 0-shot", "base-chat.json"), ("SFT full", "full.json"),
                ("SFT LoRA", "lora.json"), ("SFT from random init", "scratch.json")):
    doc = json.load(open(os.path.join(out, f)))
    rs = runs(doc)
    r = rs[1] if name.endswith("4-shot") else rs[0]
    rows.append((name, {t: (v["exact_match,none"], v["exact_match_stderr,none"], v["f1,none"], v["n"])
                        for t, v in r["results"].items()}))
tasks = sorted(rows[0][1])
# a floor: always answering a kind's most frequent training answer (by the normalisation fm eval uses)
import re
from collections import Counter
def norm(a):
    a = re.sub(r"[^\w\s]", "", a.lower())
    return " ".join(w for w in a.split() if w not in ("a", "an", "the"))
kind_of = [("antonym", "What is the opposite of "), ("hypernym", "What is a"), ("word", "Which word means "),
           ("synonym", "Give another word for "), ("define", "What does "), ("book", "Which book of the Bible ")]
counts = {k: Counter() for k, _ in kind_of}
for line in open(os.path.join(out, "data", "train.jsonl")):
    m = json.loads(line)["messages"]
    kind = next(k for k, prefix in kind_of if m[0]["content"].startswith(prefix))
    counts[kind][norm(m[1]["content"])] += 1
floor = {}
for t in tasks:
    top = counts[t.replace("instruct_", "")].most_common(1)[0][0]
    items = [json.loads(l) for l in open(os.path.join(out, "data", "tasks", t + ".jsonl"))][1:]
    test = [i for i in items if i.get("split", "test") == "test"]
    hits = sum(any(norm(a) == top for a in i["answers"]) for i in test)
    p = hits / len(test)
    floor[t] = (p, (p * (1 - p) / (len(test) - 1)) ** 0.5, float("nan"), len(test))
rows.insert(0, ("most frequent training answer", floor))
with open(os.path.join(out, "results.tsv"), "w") as fh:
    fh.write("model\t" + "\t".join(t.replace("instruct_", "") + " EM\t" + t.replace("instruct_", "") + " F1"
                                   for t in tasks) + "\n")
    for name, res in rows:
        fh.write(name + "\t" + "\t".join("%.3f ± %.3f\t%.3f" % (res[t][0], res[t][1], res[t][2]) for t in tasks) + "\n")
print(open(os.path.join(out, "results.tsv")).read(), end="")
print("test questions per kind:", ", ".join("%s %d" % (t.replace("instruct_", ""), rows[0][1][t][3]) for t in tasks))
PY

echo "== sample chats before and after (greedy)"
questions=$OUT/chat-questions.txt
/usr/bin/python3 - "$OUT/data/tasks" >"$questions" <<'PY'
# the first two test questions of each kind
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/instruct_*.jsonl")):
    items = [json.loads(l) for l in open(path) if l.strip()][1:]
    for it in [i for i in items if i.get("split", "test") == "test"][:2]:
        print(it["query"].replace("\n", " "))
PY
while IFS= read -r q; do
    echo "user:     $q"
    for who in base full lora scratch; do
        case $who in
            base) args=(--model "$BASE") ;;
            full) args=(--model "$OUT/full/best") ;;
            lora) args=(--model "$BASE" --adapter "$OUT/lora/best") ;;
            scratch) args=(--model "$OUT/scratch/best") ;;
        esac
        # one turn each (no history); the note fm chat prints on stderr at the token limit is dropped
        answer=$(printf '%s\n' "$q" | "$FM" chat "${args[@]}" --temperature 0 --max-tokens 40 \
            --threads "$THREADS" 2>/dev/null | tr '\n' ' ')
        printf '%-9s %s\n' "$who:" "$answer"
    done
    echo
done <"$questions" >"$OUT/chats.txt"
cat "$OUT/chats.txt"
echo "== done: $OUT/results.tsv, $OUT/chats.txt"
