#!/usr/bin/env bash
# cli_finetune_test.sh — fm finetune end to end on a small GPT-2 with odd shapes (head size 24,
# vocabulary 300: tests/ref/lora/base with the tokenizer of tests/ref/tasks): full and LoRA runs
# on chat, prompt-completion and plain-text files, what each run directory holds, the adapter
# read back by other commands, an interrupted run resumed exactly, and bad input refused with the
# file and line named and nothing written. Classification heads: the last-token head, and the
# mean-pooled one (--pool mean): config.json's classifier_pooling in the run, best/ and an int8
# copy; fm classify on the saved model reproducing the held-out loss the run computed (and the same
# weights read at the last token not); an interrupted mean run resumed to the same weights; --pool
# refused where it does not belong (another task, --resume, a bad value, a head that reads otherwise).
# Usage: tests/cli_finetune_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_finetune_test.sh PATH/TO/fm}")
src=$(dirname "$(realpath "$0")")/..
tmp=$(mktemp -d /tmp/fm_finetune_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
source "$src/tests/cli_lib.sh"
cd "$tmp"
cp -r "$src/tests/ref/lora/base" base && cp "$src/tests/ref/tasks/tokenizer.json" base/

python3 - <<'PY'
import json, random
random.seed(3)
words = ["light", "water", "stone", "bread", "wind", "fire", "field", "river"]
with open("chat.jsonl", "w") as f:
    for i in range(60):
        w = random.choice(words)
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Say {w}."},
                                         {"role": "assistant", "content": w}]}) + "\n")
with open("pc.jsonl", "w") as f:
    for i in range(60):
        w = random.choice(words)
        f.write(json.dumps({"prompt": f"Say {w}:", "completion": f" {w}"}) + "\n")
with open("text.txt", "w") as f:
    for i in range(200):
        f.write(" ".join(random.choice(words) for _ in range(12)) + ".\n")
PY
common=(--model base --batch 4 --seq 32 --eval-every 5 --save-every 5 --threads 2)

# a full run on chats: a model directory, the chat template beside the tokenizer, the best model
expect "full chat" 0 "chat\): 57 training examples, 3 held out" -- "$FM" finetune "${common[@]}" --data chat.jsonl \
    --out full --steps 10 --lr 1e-3
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json run.json \
    metrics.jsonl loss.svg best/config.json best/model.safetensors best/tokenizer.json best/best.json; do
    [ -e "full/$f" ] || { bad "full run lacks $f"; continue; }
    ok
done
grep -q '"chat_template"' full/tokenizer_config.json && ok || bad "tokenizer_config.json has no chat_template"
expect "the full run's model generates" 0 "" -- "$FM" generate --model full/best --ids "1 2 3" --max-tokens 3 \
    --temperature 0

# a LoRA run on prompt-completion pairs: PEFT's files, no weights of the base
expect "lora pc" 0 "LoRA r 4" -- "$FM" finetune "${common[@]}" --data pc.jsonl --out lora --steps 10 --lora \
    --lora-r 4 --lora-targets c_attn,c_fc --lr 3e-3
[ -e lora/adapter_model.safetensors ] && [ ! -e lora/model.safetensors ] && ok ||
    bad "a LoRA run's directory should hold the adapter, not a model"
[ "$(ls lora/best | sort | tr '\n' ' ')" = "adapter_config.json adapter_model.safetensors best.json " ] && ok ||
    bad "lora/best holds: $(ls lora/best | tr '\n' ' ')"
grep -q '"attn.c_attn", "mlp.c_fc"' lora/adapter_config.json && ok || bad "target_modules not as asked"
expect "score with the adapter" 0 "total" -- "$FM" score --model base --adapter lora/best --ids "1 2 3 4"
expect "merge the adapter" 0 "merged" -- "$FM" merge --model base --adapter lora/best --out merged
expect "fm info on a LoRA run" 0 "" -- "$FM" info --model lora

# fm chat on the fine-tuned model: piped lines are turns, the end of input ends it; a context of
# 32 fills after a turn or two (the oldest forgotten), a message longer than it is not sent
expect "chat piped" 0 "" -- bash -c "printf 'Say fire.\n\nSay stone.\n' | '$FM' chat --model full/best --temperature 0 \
    --max-tokens 4 --system 'Be brief.'"
expect "chat fills the context" 0 "context full" -- bash -c "printf 'Say fire.\nSay water.\nSay stone.\n' | '$FM' chat \
    --model full/best --temperature 0 --max-tokens 8"
expect "chat: a message too long" 0 "not sent" -- bash -c "printf 'Say fire, water, stone, bread, wind and field.\n' | \
    '$FM' chat --model full/best --max-tokens 4"
expect "chat with an adapter" 0 "" -- bash -c "printf 'Say fire.\n' | '$FM' chat --model base --adapter lora/best \
    --max-tokens 3"
mkdir plain && cp base/config.json base/model.safetensors plain/ && "$FM" tokenizer train --vocab 280 \
    --out plain/tokenizer.json text.txt >/dev/null 2>&1
# a tokenizer without the chat markers (as GPT-2's): a trained one with them taken out
python3 - plain/tokenizer.json <<'PY'
import json, sys
path = sys.argv[1]
t = json.load(open(path))
drop = {"<|system|>", "<|user|>", "<|assistant|>"}
t["added_tokens"] = [a for a in t["added_tokens"] if a["content"] not in drop]
t["model"]["vocab"] = {k: v for k, v in t["model"]["vocab"].items() if k not in drop}
assert max(t["model"]["vocab"].values()) == len(t["model"]["vocab"]) - 1
json.dump(t, open(path, "w"))

PY
V=$(python3 -c 'import json; print(len(json.load(open("plain/tokenizer.json"))["model"]["vocab"]))')
"$FM" init --out plain --vocab "$V" --layers 1 --dim 24 --heads 1 --context 32 --force >/dev/null 2>&1
expect "chat data, no markers" 1 "add-chat-tokens" -- "$FM" finetune "${common[@]}" --model plain --data chat.jsonl \
    --out r8 --steps 2
[ ! -e r8 ] && ok || bad "a refused run left r8"
expect "--add-chat-tokens" 0 "added 3 chat tokens: vocabulary $V -> $((V + 3))" -- "$FM" finetune "${common[@]}" \
    --model plain --data chat.jsonl --out added --steps 2 --add-chat-tokens
grep -q '"vocab_size":[[:space:]]*'$((V + 3)) added/config.json && grep -q '<|assistant|>' added/tokenizer.json && ok ||
    bad "the grown model or tokenizer was not saved"
expect "--add-chat-tokens with LoRA" 2 "fine-tune fully" -- "$FM" finetune "${common[@]}" --model plain \
    --data chat.jsonl --out r9 --steps 2 --add-chat-tokens --lora

# a classification head on labeled lines (text TAB label), full and head alone
python3 - <<'PY'
import random
random.seed(4)
good, bad = ["fine", "kind", "glad"], ["sad", "ill", "cruel"]
with open("labels.tsv", "w") as f:
    for i in range(80):
        lab = random.choice(["neg", "pos"])
        f.write(f"so {random.choice(good if lab == 'pos' else bad)}\t{lab}\n")
with open("val.tsv", "w") as f:
    f.write("so fine\tpos\nso sad\tmaybe\n")
PY
expect "classify" 0 "classifier: 2 labels \(neg" -- "$FM" finetune "${common[@]}" --data labels.tsv --task classify \
    --out cls --steps 10 --lr 1e-3
grep -q GPT2ForSequenceClassification cls/best/config.json && ok || bad "the best classifier is not HF's class"
expect "fm classify" 0 '"probs":\{"neg"' -- "$FM" classify --model cls/best --text "so kind" --json
expect "classify, head only" 0 "the head alone trains" -- "$FM" finetune "${common[@]}" --data labels.tsv \
    --task classify --head-only --out cls_head --steps 4
expect "a held-out label not in training" 1 "val.tsv:2.*maybe" -- "$FM" finetune "${common[@]}" --data labels.tsv \
    --val val.tsv --task classify --out r10 --steps 2
expect "classify on chats" 2 "labeled lines" -- "$FM" finetune "${common[@]}" --data chat.jsonl --task classify \
    --out r11 --steps 2
expect "classify with LoRA" 2 "hold no head" -- "$FM" finetune "${common[@]}" --data labels.tsv --task classify \
    --lora --out r12 --steps 2
for r in r10 r11 r12; do [ ! -e $r ] || bad "a refused run left $r"; done

# the mean-pooled head: --pool mean, recorded in config.json (run, best/, an int8 copy) and run.json
printf '%s\n' "so fine	pos" "so cruel	neg" "so glad	pos" "so ill	neg" "so kind	pos" "so sad	neg" >heldout.tsv
cut -f1 heldout.tsv >heldout.txt
expect "classify --pool mean" 0 "classifier: 2 labels \(neg, ...\), the mean of the hidden states up to the last token" -- \
    "$FM" finetune "${common[@]}" --data labels.tsv --val heldout.tsv --task classify --pool mean --out clsm --steps 10 \
    --lr 1e-3
pooled() { grep -q '"classifier_pooling":[[:space:]]*"mean"' "$1"; }
pooled clsm/config.json && pooled clsm/best/config.json && ok || bad "the mean head's config.json lacks classifier_pooling"
grep -q '"pool":[[:space:]]*"mean"' clsm/run.json && ok || bad "run.json does not record pool mean"
grep -q '"pool":[[:space:]]*"last"' cls/run.json && ! grep -q classifier_pooling cls/config.json && ok ||
    bad "a last-token head's run.json or config.json"
# fm classify on the saved model gives the held-out loss the run computed at its last step; the same
# weights without the key (read at the last token) give another
"$FM" classify --model clsm --file heldout.txt --json >clsm.jsonl 2>&1 || bad "fm classify on the mean head: $(cat clsm.jsonl)"
mkdir clsm_last && cp clsm/model.safetensors clsm/tokenizer.json clsm_last/ &&
    python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); del c["classifier_pooling"]; json.dump(c, sys.stdout)' \
        clsm/config.json >clsm_last/config.json
"$FM" classify --model clsm_last --file heldout.txt --json >clsm_last.jsonl 2>&1 || bad "fm classify read at the last token: $(cat clsm_last.jsonl)"
check=$(python3 - clsm/metrics.jsonl heldout.tsv clsm.jsonl clsm_last.jsonl <<'PY' 2>&1
import json, math, sys
val = [json.loads(l) for l in open(sys.argv[1]) if "val_loss" in l][-1]
assert val["step"] == 10, val
labels = [l.rstrip("\n").split("\t")[1] for l in open(sys.argv[2])]
def loss(path):
    rows = [json.loads(l) for l in open(path)]
    assert len(rows) == len(labels), rows
    return sum(-math.log(r["probs"][y]) for r, y in zip(rows, labels)) / len(labels)
mean, last = loss(sys.argv[3]), loss(sys.argv[4])
assert abs(mean - val["val_loss"]) <= 1e-4 * val["val_loss"], (mean, val)
assert abs(last - val["val_loss"]) > 1e-3, (last, val)
print("ok")
PY
)
[ "$check" = ok ] && ok || bad "fm classify on the mean head vs the run's held-out loss: $check"
"$FM" quantize --model clsm --out clsm_q8 >/dev/null 2>&1 && pooled clsm_q8/config.json && ok ||
    bad "fm quantize lost the mean head's classifier_pooling"
expect "an int8 mean head" 0 '^\{"label":"(neg|pos)"' -- "$FM" classify --model clsm_q8 --text "so kind" --json
# a run continued from a mean head keeps it (--pool mean may say so); another --pool is refused
expect "continue a mean head" 0 "the mean of the hidden states" -- "$FM" finetune "${common[@]}" --model clsm \
    --data labels.tsv --task classify --pool mean --out clsm2 --steps 2
pooled clsm2/config.json && grep -q '"pool":[[:space:]]*"mean"' clsm2/run.json && ok || bad "a continued mean head"
expect "--pool last on a mean head" 2 "--pool last: .*clsm's head already reads 'mean'" -- "$FM" finetune "${common[@]}" \
    --model clsm --data labels.tsv --task classify --pool last --out r13 --steps 2
expect "--pool mean on a last-token head" 2 "head already reads 'last'" -- "$FM" finetune "${common[@]}" \
    --model cls --data labels.tsv --task classify --pool mean --out r13 --steps 2
expect "--pool bogus" 2 "--pool must be last or mean, not 'bogus'" -- "$FM" finetune "${common[@]}" --data labels.tsv \
    --task classify --pool bogus --out r13 --steps 2
expect "--pool without classify" 2 "--pool chooses a classification head's read-out: give --task classify" -- \
    "$FM" finetune "${common[@]}" --data chat.jsonl --pool mean --out r13 --steps 2
expect "--pool with --resume" 2 "--resume continues with the run's stored settings" -- \
    "$FM" finetune --out clsm --resume --pool mean
[ ! -e r13 ] && ok || bad "a refused --pool left r13"
# an interrupted mean-head run resumed ends with the uninterrupted run's weights
"$FM" finetune "${common[@]}" --data labels.tsv --task classify --pool mean --out mwhole --steps 20 --lr 1e-3 \
    >/dev/null 2>&1 || bad "the uninterrupted mean run failed"
"$FM" finetune "${common[@]}" --data labels.tsv --task classify --pool mean --out mcut --steps 20 --lr 1e-3 \
    --save-every 3 >mcut.log 2>&1 &
pid=$!
for _ in $(seq 100); do [ -e mcut/checkpoint ] && break; sleep 0.05; done
kill -INT $pid 2>/dev/null
wait $pid
expect "resume a mean run" 0 "done: 20 steps" -- "$FM" finetune --out mcut --resume --threads 2
cmp -s mwhole/model.safetensors mcut/model.safetensors && pooled mcut/config.json && ok ||
    bad "the resumed mean run differs from the uninterrupted one"

# plain text: continued pre-training, held-out bits per byte
expect "text" 0 "bits/byte" -- "$FM" finetune "${common[@]}" --data text.txt --out text --steps 5 --val-every 10

# an interrupted LoRA run (both dropouts on) resumed on one thread ends where the whole run ends
"$FM" finetune "${common[@]}" --data chat.jsonl --out whole --steps 20 --lora --lora-dropout 0.2 --dropout 0.1 \
    --lr 3e-3 >/dev/null 2>&1 || bad "the uninterrupted run failed"
"$FM" finetune "${common[@]}" --data chat.jsonl --out cut --steps 20 --lora --lora-dropout 0.2 --dropout 0.1 \
    --lr 3e-3 --save-every 3 >cut.log 2>&1 &
pid=$!
for _ in $(seq 100); do [ -e cut/checkpoint ] && break; sleep 0.05; done
kill -INT $pid 2>/dev/null
wait $pid
expect "resume" 0 "done: 20 steps" -- "$FM" finetune --out cut --resume --threads 1
cmp -s whole/adapter_model.safetensors cut/adapter_model.safetensors && ok ||
    bad "the resumed run's adapter differs from the uninterrupted run's"
diff <(grep -v tokens_per_s whole/metrics.jsonl) <(grep -v tokens_per_s cut/metrics.jsonl) >/dev/null && ok ||
    bad "the resumed run's losses differ"

# bad input: named with its line, exit 1, no run directory
expect "every answer cut" 2 "raise --seq" -- "$FM" finetune "${common[@]}" --data chat.jsonl --out r0 --steps 2 --seq 4
[ ! -e r0 ] && ok || bad "a refused run left r0"
printf '%s\n' "$(head -2 chat.jsonl)" '{"messages": [{"role": "user", "content": "hi"' >broken.jsonl
expect "malformed line" 1 "broken.jsonl:3" -- "$FM" finetune "${common[@]}" --data broken.jsonl --out r1 --steps 2
[ ! -e r1 ] && ok || bad "a refused run left r1"
printf '%s\n' '{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}' >role.jsonl
expect "unknown role" 1 "role.jsonl:1.*wizard" -- "$FM" finetune "${common[@]}" --data role.jsonl --out r2 --steps 2
printf '%s\n' '{"prompt": "a", "completion": "b"}' '{"prompt": "a", "completion": ""}' >empty.jsonl
expect "empty completion" 1 "empty.jsonl:2" -- "$FM" finetune "${common[@]}" --data empty.jsonl --out r3 --steps 2
expect "labeled lines" 2 "classify" -- "$FM" finetune "${common[@]}" --data labels.tsv --out r4 --steps 2
expect "rank too large" 2 "larger than" -- "$FM" finetune "${common[@]}" --data pc.jsonl --out r5 --steps 2 --lora \
    --lora-r 100
expect "unknown target" 2 "q_proj" -- "$FM" finetune "${common[@]}" --data pc.jsonl --out r6 --steps 2 \
    --lora-targets q_proj
expect "bad --loss-on" 2 "loss-on" -- "$FM" finetune "${common[@]}" --data pc.jsonl --out r7 --steps 2 --loss-on some
for r in r2 r3 r4 r5 r6 r7; do [ ! -e $r ] || bad "a refused run left $r"; done
ok
expect "a run that exists" 2 "already holds a run" -- "$FM" finetune "${common[@]}" --data pc.jsonl --out lora --steps 2
expect "resume without a checkpoint" 1 "no checkpoint" -- "$FM" finetune --out base --resume

summary "cli_finetune_test"
