#!/usr/bin/env python3
# agree.py — compares what llama.cpp did with a GGUF file (tests/gguf/check.mjs's JSON) with what
# fm did with the model directory (tests/cli_gguf_test.sh): prints one line of agreement and exits
# 1 when the type's rule is broken.
#   every type  llama.cpp's token ids of each prompt text and of each extra text = fm tokenizer
#               encode's; the text of fm's continuation ids as llama.cpp detokenizes them = fm's
#               text; general.architecture "gpt2"; the chat template = the expected one
#   f32         each prompt's greedy continuation = fm generate --temperature 0's, every token
#   f16, q8_0   at least 3 of the 4 prompts' continuations equal fm's, or llama.cpp's top-1 (its
#               argmax given fm's tokens so far) = fm's token at >= 97% of the positions
# Usage: agree.py LABEL TYPE CASES.json LLAMA.json [TEMPLATE_FILE]
import json
import sys

label, kind, cases_path, llama_path = sys.argv[1:5]
template = open(sys.argv[5], encoding="utf-8").read() if len(sys.argv) > 5 else None
cases = json.load(open(cases_path))
out = json.load(open(llama_path))
problems = []
meta = out["metadata"]
if meta["architecture"] != "gpt2":
    problems.append("architecture %r" % meta["architecture"])
if meta["chat_template"] != template:
    problems.append("chat template %r, expected %r" % ((meta["chat_template"] or "")[:40], (template or "")[:40]))

prompts_equal = tokens_equal = tokens = forced_equal = 0
gap = float("inf")  # the smallest gap between llama.cpp's two largest logits along fm's tokens
for case, got in zip(cases["prompts"], out["prompts"]):
    want = case["fm_continuation"]
    if got["ids"] != case["fm_ids"]:
        problems.append("%r: llama.cpp tokenizes %s, fm %s" % (case["text"], got["ids"], case["fm_ids"]))
    if got["forced_text"] != case["fm_text"]:
        problems.append("%r: llama.cpp detokenizes fm's continuation as %r, fm %r" %
                        (case["text"], got["forced_text"], case["fm_text"]))
    same = sum(a == b for a, b in zip(got["greedy"], want))
    prompts_equal += got["greedy"] == want
    tokens_equal += same
    tokens += len(want)
    forced_equal += sum(a == b for a, b in zip(got["forced_top1"], want))
    gap = min([gap] + got["forced_margins"])
for text, ids, got in zip(cases.get("texts", []), cases.get("text_ids", []), out.get("texts", [])):
    if got != ids:
        problems.append("text %r: llama.cpp tokenizes %s, fm %s" % (text, got, ids))

n = len(cases["prompts"])
summary = "%s %s: greedy %d/%d prompts, %d/%d tokens; teacher-forced top-1 %d/%d (smallest top-2 logit gap %.3g)" % (
    label, kind, prompts_equal, n, tokens_equal, tokens, forced_equal, tokens, gap)
if kind == "f32":
    if prompts_equal != n:
        problems.append("float32 must continue every prompt as fm does")
elif not (prompts_equal >= n - 1 or forced_equal >= 0.97 * tokens):
    problems.append("below 3 of 4 prompts and below 97% teacher-forced")
if problems:
    print("FAIL %s; %s" % (summary, "; ".join(problems[:4])))
    sys.exit(1)
print(summary)
