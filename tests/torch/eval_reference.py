#!/usr/bin/python3
"""Independent reference for fm's evaluation harness (src/eval/harness.c).

Re-implements, in Python and PyTorch, what lm-evaluation-harness does for the three task types
and what fm documents for its task files (docs/tasks.md), then writes the results as JSON for
tests/cli_eval_test.sh to compare with `fm eval --tasks ... --json --log-samples`:

  prompts        instruction + k few-shot examples ("query" + target delimiter + target, each
                 followed by the few-shot delimiter) + the item's query; the examples are drawn
                 as fm draws them (xoshiro256** seeded through splitmix64 with
                 seed ^ (0x9e3779b97f4a7c15 * (item + 1)), a partial Fisher-Yates shuffle of the
                 few-shot pool without the item)
  _encode_pair   the context's trailing whitespace moves to the continuation; the whole string
                 is encoded and the context's own tokens split off its front; an empty context
                 is the end-of-text token
  scoring        the last n_positions + 1 tokens of context + continuation minus the last, one
                 full forward, the continuation's log-probabilities summed (float64 log-softmax)
  metrics        acc, acc_norm (log-likelihood / characters of the choice), acc_bytes (/ bytes),
                 exact match and token F1 after SQuAD's normalisation, rolling-window bits per
                 byte, token and word perplexity; standard errors sqrt(var_sample / n)

The tokenizer is a plain byte-level BPE over tokenizer.json with GPT-2's pre-tokenisation written
for Python's re (letters as [^\W\d_], numbers as decimal digits, which covers the fixtures).

Usage:
    /usr/bin/python3 tests/torch/eval_reference.py MODEL_DIR OUT.json --tasks A.jsonl,B.jsonl
                                                   [--shots 0,1,2] [--seed 1234]
"""

import argparse
import json
import math
import os
import re
import sys
import unicodedata

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference  # noqa: E402  (the model, loaded from fm's files)

EOT = "<|endoftext|>"
MASK = (1 << 64) - 1


# ------------------------------------------------------------------ tokenizer

def bytes_to_unicode():
    """GPT-2's map from bytes to printable characters (the alphabet of tokenizer.json)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# GPT-2's pattern with \p{L} as [^\W\d_] (Python's letters) and \p{N} as \d: the same pieces on
# text whose letters and digits are ordinary ones (the fixtures: English, a few accented words)
PRETOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+| ?_+|\s+(?!\S)|\s+""")


class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        self.vocab = dict(j["model"]["vocab"])
        for added in j.get("added_tokens", []):
            self.vocab[added["content"]] = added["id"]
        merges = j["model"]["merges"]
        self.ranks = {}
        for i, m in enumerate(merges):
            a, b = m.split(" ") if isinstance(m, str) else m
            self.ranks[(a, b)] = i
        self.b2u = bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}
        self.id2tok = {v: k for k, v in self.vocab.items()}
        self.specials = {a["content"] for a in j.get("added_tokens", [])}

    def bpe(self, piece):
        word = [self.b2u[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(self.ranks.get((word[i], word[i + 1]), None), i) for i in range(len(word) - 1)]
            pairs = [p for p in pairs if p[0] is not None]
            if not pairs:
                break
            rank = min(p[0] for p in pairs)
            a, b = None, None
            out, i = [], 0
            first = [w for w in pairs if w[0] == rank][0][1]
            a, b = word[first], word[first + 1]
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return [self.vocab[w] for w in word]

    def encode(self, text):
        if any(unicodedata.category(c)[0] == "N" and not c.isdecimal() for c in text):
            raise ValueError("the reference pre-tokenizer handles decimal digits only")
        ids = []
        for piece in PRETOKEN.findall(text):
            ids.extend(self.bpe(piece))
        return ids

    def decode(self, ids):
        return bytes(self.u2b[c] for i in ids for c in self.id2tok[i]).decode("utf-8", errors="replace")


# ------------------------------------------------------------------ fm's few-shot draw

class Rng:
    """xoshiro256** seeded through splitmix64, as src/core/rng.c."""

    def __init__(self, seed):
        x = seed & MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            self.s.append(z ^ (z >> 31))

    def u64(self):
        s = self.s
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & MASK
        result = (rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result


def pick_shots(pool, item, k, seed):
    order = [i for i in pool if i != item]
    if k > len(order):
        raise ValueError(f"{k} shots asked, the few-shot split holds {len(order)}")
    rng = Rng((seed ^ ((0x9E3779B97F4A7C15 * (item + 1)) & MASK)) & MASK)
    for i in range(k):
        j = i + rng.u64() % (len(order) - i)
        order[i], order[j] = order[j], order[i]
    return order[:k]


# ------------------------------------------------------------------ tasks

def load_task(path):
    settings = {"task": os.path.basename(path)[:-6] if path.endswith(".jsonl") else os.path.basename(path),
                "type": "multiple_choice", "target_delimiter": " ", "fewshot_delimiter": "\n\n",
                "instruction": "", "max_gen_tokens": 64}
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            o = json.loads(line)
            if ("task" in o or "type" in o) and "query" not in o and "text" not in o:
                settings.update(o)
            else:
                items.append(o)
    if "until" not in settings:
        settings["until"] = [settings["fewshot_delimiter"]]
    has_fewshot = any(it.get("split") == "fewshot" for it in items)
    pool_split = "fewshot" if has_fewshot else "train"
    test = [i for i, it in enumerate(items) if it.get("split", "test") == "test"]
    pool = [i for i, it in enumerate(items) if it.get("split", "test") == pool_split]
    return settings, items, test, pool


def context_of(settings, items, pool, item, k, seed):
    text = settings["instruction"]
    for j in pick_shots(pool, item, k, seed):
        ex = items[j]
        target = ex["choices"][ex["gold"]] if settings["type"] == "multiple_choice" else ex["answers"][0]
        text += ex["query"] + settings["target_delimiter"] + target + settings["fewshot_delimiter"]
    return text + items[item]["query"]


def encode_pair(tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if context == "":
        return [tok.vocab[EOT]], tok.encode(continuation)
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx):]


def log_probs(model, tokens):
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokens], dtype=torch.long))
    return torch.log_softmax(logits[0].double(), dim=-1)


def stderr_of(values):
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var) / math.sqrt(n)


def normalize_answer(s):
    s = "".join(ch for ch in s.lower() if not (ch.isascii() and not ch.isalnum() and not ch.isspace()))
    words = [w for w in s.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def token_f1(pred, gold):
    a, b = pred.split(), gold.split()
    if not a or not b:
        return float(a == b)
    common, used = 0, [False] * len(b)
    for w in a:
        for j, g in enumerate(b):
            if not used[j] and g == w:
                used[j] = True
                common += 1
                break
    if common == 0:
        return 0.0
    p, r = common / len(a), common / len(b)
    return 2 * p * r / (p + r)


def run_multiple_choice(model, cfg, tok, settings, items, test, pool, k, seed):
    L = cfg["n_positions"]
    acc, acc_norm, acc_bytes, samples, truncated, skipped = [], [], [], [], 0, 0
    for item in test:
        it = items[item]
        context = context_of(settings, items, pool, item, k, seed)
        pairs = [encode_pair(tok, context, settings["target_delimiter"] + c) for c in it["choices"]]
        if any(len(cont) > L for _, cont in pairs):  # lm-eval asserts; fm leaves the item out and counts it
            skipped += 1
            continue
        lls, cut_any = [], False
        for ctx, cont in pairs:
            whole = (ctx + cont)[-(L + 1):]
            cut_any |= len(ctx) + len(cont) > L + 1
            lp = log_probs(model, whole[:-1])
            n_in = len(whole) - 1
            lls.append(sum(lp[n_in - len(cont) + j, cont[j]].item() for j in range(len(cont))))
        truncated += cut_any
        gold = it["gold"]
        best = max(range(len(lls)), key=lambda c: (lls[c], -c))
        best_norm = max(range(len(lls)), key=lambda c: (lls[c] / len(it["choices"][c]), -c))
        best_bytes = max(range(len(lls)), key=lambda c: (lls[c] / len(it["choices"][c].encode()), -c))
        acc.append(float(best == gold))
        acc_norm.append(float(best_norm == gold))
        acc_bytes.append(float(best_bytes == gold))
        samples.append(lls)
    return {"acc": sum(acc) / len(acc), "acc_stderr": stderr_of(acc), "acc_norm": sum(acc_norm) / len(acc_norm),
            "acc_norm_stderr": stderr_of(acc_norm), "acc_bytes": sum(acc_bytes) / len(acc_bytes),
            "acc_bytes_stderr": stderr_of(acc_bytes), "n": len(acc), "truncated": truncated, "skipped": skipped,
            "samples": samples}


def run_generate(model, cfg, tok, settings, items, test, pool, k, seed):
    L, max_gen = cfg["n_positions"], settings["max_gen_tokens"]
    eot = tok.vocab.get(EOT)
    em, f1, samples, truncated = [], [], [], 0
    for item in test:
        it = items[item]
        ids = tok.encode(context_of(settings, items, pool, item, k, seed))
        if L - max_gen < 1:
            raise ValueError(f"max_gen_tokens {max_gen} leaves no room for a prompt in a context of {L}")
        truncated += len(ids) > L - max_gen
        ids = ids[-(L - max_gen):]
        out, text = [], ""
        for _ in range(max_gen):
            nxt = int(torch.argmax(log_probs(model, ids + out)[-1]).item())
            if nxt == eot:
                break
            out.append(nxt)
            text = tok.decode(out)
            hits = [text.find(s) for s in settings["until"] if s in text]
            if hits:
                text = text[:min(hits)]
                break
        pred = normalize_answer(text)
        best_em = max(float(pred == normalize_answer(a)) for a in it["answers"])
        best_f1 = max(token_f1(pred, normalize_answer(a)) for a in it["answers"])
        em.append(best_em)
        f1.append(best_f1)
        samples.append({"text": text, "exact_match": best_em, "f1": best_f1})
    return {"exact_match": sum(em) / len(em), "exact_match_stderr": stderr_of(em), "f1": sum(f1) / len(f1),
            "f1_stderr": stderr_of(f1), "n": len(test), "truncated": truncated, "skipped": 0, "samples": samples}


def run_perplexity(model, cfg, tok, settings, items, test):
    L, eot = cfg["n_positions"], tok.vocab[EOT]
    ll_sum, n_tokens, n_bytes, n_words, samples = 0.0, 0, 0, 0, []
    for item in test:
        text = items[item]["text"]
        ids = tok.encode(text)
        ll, predicted = 0.0, 0
        while predicted < len(ids):  # lm-eval's get_rolling_token_windows, context_len 1
            pred = min(len(ids) - predicted, L)
            end = predicted + pred
            inp = [eot] + ids[:pred - 1] if predicted == 0 else ids[end - L - 1:end - 1]
            lp = log_probs(model, inp)
            ll += sum(lp[len(inp) - pred + j, ids[end - pred + j]].item() for j in range(pred))
            predicted = end
        ll_sum += ll
        n_tokens += len(ids)
        n_bytes += len(text.encode())
        n_words += len(text.split())
        samples.append(ll)
    return {"bits_per_byte": -ll_sum / (n_bytes * math.log(2)), "token_perplexity": math.exp(-ll_sum / n_tokens),
            "word_perplexity": math.exp(-ll_sum / n_words), "n": len(test), "truncated": 0, "skipped": 0,
            "samples": samples}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--shots", default="0")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    cfg, model = gpt2_reference.load_model(args.model_dir)
    model.eval()
    tok = Tokenizer(os.path.join(args.model_dir, "tokenizer.json"))
    results = {}
    for path in args.tasks.split(","):
        settings, items, test, pool = load_task(path)
        per_shot = {}
        for k in [int(s) for s in args.shots.split(",")]:
            if k > 0 and settings["type"] != "perplexity" and k > len(pool):
                continue  # more shots than the few-shot split holds: fm refuses these
            if settings["type"] == "multiple_choice":
                per_shot[str(k)] = run_multiple_choice(model, cfg, tok, settings, items, test, pool, k, args.seed)
            elif settings["type"] == "generate":
                per_shot[str(k)] = run_generate(model, cfg, tok, settings, items, test, pool, k, args.seed)
            elif k == 0:
                per_shot["0"] = run_perplexity(model, cfg, tok, settings, items, test)
        results[settings["task"]] = per_shot
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
