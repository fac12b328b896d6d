#!/usr/bin/env bash
# cli_classify_test.sh — fm classify on a Hugging Face GPT2ForSequenceClassification directory
# (tests/ref/classify, written by tests/torch/classify_reference.py) with the 300-token tokenizer
# of tests/ref/tasks: the table, the JSON lines (label = the most probable, probabilities summing
# to 1), the same answers whatever the batch and thread count (padded rows read as alone), the
# same weights as a mean-pooled head (config.json's "classifier_pooling": "mean": other answers,
# batch-independent too), an int8 copy from fm quantize keeping the head, and bad input: a model
# without a head, empty, blank-lined, unreadable files, missing tokenizer, wrong arguments, a bad
# classifier_pooling.
# Usage: tests/cli_classify_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_classify_test.sh PATH/TO/fm}")
src=$(dirname "$(realpath "$0")")/..
tmp=$(mktemp -d /tmp/fm_classify_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$src/tests/cli_lib.sh"
cd "$tmp"

mkdir model
cp "$src/tests/ref/classify/config.json" "$src/tests/ref/classify/model.safetensors" model/
cp "$src/tests/ref/tasks/tokenizer.json" model/
printf '%s\n' "free money now" "meeting at noon" "the weather is mild today, rain later" "call me" \
    "win a prize" "see you at lunch, bring the report and the slides" "ok" >texts.txt

expect "table" 0 "^label +ham +other +spam +text" -- "$FM" classify --model model --text "free money now"
expect "table row" 0 "^(ham|other|spam) +0\.[0-9]{4} +0\.[0-9]{4} +0\.[0-9]{4}  free money now" -- \
    "$FM" classify --model model --text "free money now"
expect "json" 0 '^\{"label":"(ham|other|spam)","probs":\{"ham":[0-9.e-]+,"other":[0-9.e-]+,"spam":[0-9.e-]+\}\}$' -- \
    "$FM" classify --model model --text "free money now" --json

"$FM" classify --model model --file texts.txt --json --threads 1 >b16.jsonl 2>err.txt && ok || bad "--file: $(cat err.txt)"
[ "$(wc -l <b16.jsonl)" -eq 7 ] && ok || bad "--file of 7 lines gave $(wc -l <b16.jsonl) JSON lines"
"$FM" classify --model model --file - --json --batch 1 --threads 2 <texts.txt >b1.jsonl && ok || bad "--batch 1"
"$FM" classify --model model --file texts.txt --json --batch 3 >b3.jsonl && ok || bad "--batch 3"
cmp -s b16.jsonl b1.jsonl && cmp -s b16.jsonl b3.jsonl && ok || bad "the answers changed with the batch or threads"
# each line alone gives its line of the batch (CRLF line ends are not part of the text)
"$FM" classify --model model --text "call me" --json >alone.jsonl
[ "$(sed -n 4p b16.jsonl)" = "$(cat alone.jsonl)" ] && ok || bad "a padded row differs from the text alone"
sed 's/$/\r/' texts.txt >crlf.txt
"$FM" classify --model model --file crlf.txt --json >crlf.jsonl && cmp -s b16.jsonl crlf.jsonl && ok ||
    bad "CRLF lines classified differently"

# the same weights as a mean-pooled head (config.json's "classifier_pooling": "mean"): other
# answers, the same whatever the batch (a padded row's mean stops at its last token)
mkdir mean && cp model/model.safetensors model/tokenizer.json mean/ &&
    sed 's/"problem_type": "single_label_classification"/&,\n  "classifier_pooling": "mean"/' model/config.json >mean/config.json
"$FM" classify --model mean --file texts.txt --json >m16.jsonl 2>err.txt && ok || bad "mean head: $(cat err.txt)"
"$FM" classify --model mean --file texts.txt --json --batch 1 --threads 1 >m1.jsonl && cmp -s m16.jsonl m1.jsonl && ok ||
    bad "the mean head's answers changed with the batch"
! cmp -s m16.jsonl b16.jsonl && ok || bad "the mean head answered as the last-token head"
sed 's/"mean"$/"max"/' mean/config.json >bad.json && mkdir badpool && cp bad.json badpool/config.json &&
    cp model/model.safetensors model/tokenizer.json badpool/
expect "a bad classifier_pooling" 1 'config.json: "classifier_pooling" must be "last" or "mean", not "max"' -- \
    "$FM" classify --model badpool --text hi

if command -v python3 >/dev/null; then
    python3 - b16.jsonl <<'PY' && ok || bad "JSON lines: label not the most probable, or probabilities not summing to 1"
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    assert set(d) == {"label", "probs"}, d
    assert list(d["probs"]) == ["ham", "other", "spam"], d
    assert abs(sum(d["probs"].values()) - 1) < 1e-5, d
    assert d["label"] == max(d["probs"], key=d["probs"].get), d
PY
else
    skipped=$((skipped + 1))
fi

# an int8 copy keeps the head and its labels; its answers stay close
"$FM" quantize --model model --out q8 >/dev/null 2>&1 && cp model/tokenizer.json q8/ && ok || bad "fm quantize"
grep -q '"GPT2ForSequenceClassification"' q8/config.json && grep -q '"spam":' q8/config.json && ok ||
    bad "the quantized copy lost the head's config"
expect "int8 copy" 0 '^\{"label":"(ham|other|spam)"' -- "$FM" classify --model q8 --file texts.txt --json

# bad input
expect "no head" 1 "has no classification head" -- "$FM" classify --model "$src/tests/ref/tasks" --text hi
: >empty.txt
expect "empty file" 1 "empty.txt: no text to classify" -- "$FM" classify --model model --file empty.txt
printf 'a\n\nb\n' >blank.txt
expect "blank line" 1 "blank.txt:2: the line is empty" -- "$FM" classify --model model --file blank.txt
expect "unreadable file" 1 "missing.txt" -- "$FM" classify --model model --file missing.txt
mkdir notok && cp model/config.json model/model.safetensors notok/
expect "no tokenizer" 1 "tokenizer.json" -- "$FM" classify --model notok --text hi
expect "neither input" 2 "exactly one of --text and --file" -- "$FM" classify --model model
expect "both inputs" 2 "exactly one of --text and --file" -- "$FM" classify --model model --text a --file texts.txt
expect "empty text" 2 "--text is empty" -- "$FM" classify --model model --text ""
expect "no model" 2 "--model DIR is required" -- "$FM" classify --text hi
sed 's/"spam": 2/"spam": 1/' model/config.json >bad.json && mkdir badcfg && cp bad.json badcfg/config.json &&
    cp model/model.safetensors model/tokenizer.json badcfg/
expect "label2id disagrees" 1 "label2id.*spam.*disagrees" -- "$FM" classify --model badcfg --text hi

summary "cli_classify_test"
