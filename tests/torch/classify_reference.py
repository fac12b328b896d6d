#!/usr/bin/python3
"""PyTorch reference for a GPT-2 sequence-classification head (issue 14).

Writes a self-contained fixture folder (default tests/ref/classify):

  config.json, model.safetensors
      a Hugging Face GPT2ForSequenceClassification directory: the GPT-2 keys (2 layers,
      C 72, 3 heads of 24, MLP 288 (n_inner null), V 300, n_positions 32) plus
      architectures ["GPT2ForSequenceClassification"], num_labels 3,
      id2label {"0": "ham", "1": "other", "2": "spam"} (labels sorted), label2id,
      pad_token_id 299 (the last id, standing for <|endoftext|>; also bos/eos_token_id);
      tensors F32 with HF's names for that class: the transformer's with a "transformer."
      prefix ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", ...; Conv1D
      layout W [in, out]) and "score.weight" [num_labels, C] (no bias; no lm_head); the weights
      random (seeded), score.weight with the batch's common hidden direction removed so that
      the rows' predicted labels differ
  batch.safetensors
      tokens I32 [4, 12], right-padded with pad_token_id (lengths 12, 7, 3, 9), labels I32 [4]
  expected.safetensors (computed in float64, stored F32)
      logits [4, 3]       score(ln_f output) at each row's last non-padding token (HF's rule:
                          the rightmost position whose token is not pad_token_id)
      last_index I32 [4]  that position per row
      loss [1]            mean cross-entropy over the 4 rows
      grad.<name>         d loss / d tensor for every tensor of model.safetensors, under the
                          same name: grad.score.weight, grad.transformer.wte.weight,
                          grad.transformer.h.0.attn.c_attn.weight, ...; entries below 1e-12
                          of their tensor's largest are exact zeros (the key bias's gradient)
  expected_mean.safetensors (fm's mean-pooled head on the same weights and batch; float64, F32)
      logits [4, 3]       score(mean of the ln_f outputs at positions 0..last_index) per row
      loss [1]            mean cross-entropy over the 4 rows
      grad.<name>         d loss / d tensor for a few tensors only (MEAN_GRADS: the head, ln_f,
                          wpe, one LayerNorm and one bias of the blocks), to keep the file small

The network is lora_reference.py's functional GPT-2 (checked there against gpt2_reference.py).

Usage:
    /usr/bin/python3 tests/torch/classify_reference.py [OUT_DIR] [--self-check]

--self-check (float64): the transformer against gpt2_reference.py's model, gradients against
central finite differences, the padded rows against the same text run unpadded, HF's older
last-token rule (first pad - 1, modulo T) against the newer one, and float32 against float64;
for the mean head too (padded against unpadded, finite differences, float32); exit status 1 if
any check fails.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")  # before torch loads OpenBLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference as ref  # noqa: E402
import lora_reference as lr  # noqa: E402  (random_base, the functional forward)

SEED = 20240515
CFG = dict(lr.CFG)
LABELS = ["ham", "other", "spam"]     # sorted
PAD = CFG["vocab_size"] - 1           # <|endoftext|>
LENGTHS = (12, 7, 3, 9)
ROW_LABELS = (2, 0, 1, 2)
SEQ = 12
SCORE_STD = 0.3
PREFIX = "transformer."
# the tensors whose gradient under the mean head expected_mean.safetensors keeps (fm names)
MEAN_GRADS = ("score.weight", "ln_f.weight", "ln_f.bias", "wpe.weight", "h.0.ln_1.weight",
              "h.1.attn.c_attn.bias")


def config_json(cfg):
    c = lr.base_config_json(cfg)
    del c["fm_format_version"]        # written as transformers would, not fm
    c["architectures"] = ["GPT2ForSequenceClassification"]
    c["bos_token_id"] = PAD
    c["eos_token_id"] = PAD
    c["pad_token_id"] = PAD
    c["num_labels"] = len(LABELS)
    c["id2label"] = {str(i): name for i, name in enumerate(LABELS)}
    c["label2id"] = {name: i for i, name in enumerate(LABELS)}
    c["problem_type"] = "single_label_classification"
    return c


def make_batch(cfg, rs):
    tokens = np.full((len(LENGTHS), SEQ), PAD, dtype=np.int32)
    for row, n in enumerate(LENGTHS):
        tokens[row, :n] = rs.randint(0, PAD, size=n)   # never the pad id inside the text
    return tokens, np.array(ROW_LABELS, dtype=np.int32)


def centred_score(cfg, w_np, tokens, score):
    """score [num_labels, C] with its component along the batch's mean last hidden state
    removed: the hidden states share a large common direction (ln_f's bias), which would
    otherwise give every row the same predicted label."""
    with torch.no_grad():
        tok = torch.from_numpy(tokens).long()
        hidden = lr.forward(lr.to_torch(w_np, torch.float64), tok, cfg, hidden=True)
        m = hidden[torch.arange(tok.shape[0]), last_non_pad(tok)].mean(0).numpy()
    return (score - np.outer(score @ m, m) / (m @ m)).astype(np.float32)


def last_non_pad(tokens):
    """HF's current rule: the rightmost position whose token is not pad_token_id."""
    non_pad = (tokens != PAD).long()
    idx = torch.arange(tokens.shape[-1])
    return (idx * non_pad).argmax(-1)


def classify(w, tokens, cfg):
    """(logits [B, num_labels], index [B]) with w holding fm names plus score.weight."""
    hidden = lr.forward(w, tokens, cfg, hidden=True)
    scores = hidden @ w["score.weight"].t()                   # [B, T, num_labels]
    last = last_non_pad(tokens)
    return scores[torch.arange(tokens.shape[0]), last], last


def classify_mean(w, tokens, cfg):
    """fm's mean head: (logits [B, num_labels], index [B]), the logits score.weight applied to
    the mean of the final hidden states at positions 0..index (index: last_non_pad)."""
    hidden = lr.forward(w, tokens, cfg, hidden=True)          # [B, T, C]
    last = last_non_pad(tokens)
    keep = (torch.arange(tokens.shape[-1])[None, :] <= last[:, None]).to(hidden.dtype)
    pooled = (hidden * keep[:, :, None]).sum(1) / (last + 1).to(hidden.dtype)[:, None]
    return pooled @ w["score.weight"].t(), last


def loss_of(w, tokens, labels, cfg, head=classify):
    return F.cross_entropy(head(w, tokens, cfg)[0], labels)


def self_check(cfg, w_np, tokens_np, labels_np):
    ok = True

    def report(what, err, tol):
        nonlocal ok
        good = err <= tol
        ok = ok and good
        print(f"  self-check {what:<46s} max err {err:.3e} (tol {tol:.0e}) "
              f"{'ok' if good else 'FAIL'}")

    tok = torch.from_numpy(tokens_np).long()
    lab = torch.from_numpy(labels_np).long()
    w = lr.to_torch(w_np, torch.float64, grad=True)

    # 1. the transformer against gpt2_reference.py's model
    model = ref.GPT2(cfg).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(w[name])
        err = (model(tok)[1] - lr.forward(w, tok, cfg, hidden=True)).abs().max().item()
    report("transformer vs gpt2_reference.GPT2", err, 1e-12)

    # 2. HF's older rule (first pad - 1, modulo T) gives the same positions
    older = (torch.eq(tok, PAD).int().argmax(-1) - 1) % tok.shape[-1]
    err = (older - last_non_pad(tok)).abs().max().item()
    report("last token: older HF rule == newer", float(err), 0)

    # 3. a padded row's logits equal the same text run alone, unpadded
    with torch.no_grad():
        logits, _ = classify(w, tok, cfg)
        worst = 0.0
        for row, n in enumerate(LENGTHS):
            alone = lr.forward(w, tok[row:row + 1, :n], cfg, hidden=True)[0, -1] @ w["score.weight"].t()
            worst = max(worst, (alone - logits[row]).abs().max().item())
    report("padded rows vs unpadded", worst, 1e-12)

    # 4. gradients against central finite differences (2 entries per tensor)
    loss = loss_of(w, tok, lab, cfg)
    grads = dict(zip(w.keys(), torch.autograd.grad(loss, list(w.values()))))
    rng = np.random.RandomState(SEED + 1)
    worst = 0.0
    checked = 0
    for name, p in w.items():
        for _ in range(2):
            idx = tuple(int(rng.randint(0, d)) for d in p.shape)
            if name == "wte.weight":
                idx = (int(tok[0, 1]),) + idx[1:]             # a row that is used
            h = 1e-6
            with torch.no_grad():
                orig = p[idx].item()
                p[idx] = orig + h
                up = loss_of(w, tok, lab, cfg).item()
                p[idx] = orig - h
                down = loss_of(w, tok, lab, cfg).item()
                p[idx] = orig
            fd = (up - down) / (2 * h)
            worst = max(worst, abs(fd - grads[name][idx].item()) / max(1.0, abs(fd)))
            checked += 1
    report(f"gradients vs finite differences ({checked})", worst, 1e-7)

    # 5. float32 against float64
    w32 = lr.to_torch(w_np, torch.float32, grad=True)
    loss32 = loss_of(w32, tok, lab, cfg)
    g32 = dict(zip(w32.keys(), torch.autograd.grad(loss32, list(w32.values()))))
    with torch.no_grad():
        err = (classify(w32, tok, cfg)[0].double() - logits).abs().max().item()
    report("float32 vs float64 logits", err, 1e-4)
    report("float32 vs float64 loss", abs(loss32.item() - loss.item()), 1e-5)
    rel = max(((g32[n].double() - grads[n]).abs().max() / grads[n].abs().max()).item()
              for n in w)
    report("float32 vs float64 grads (rel. to each max)", rel, 1e-4)

    # 6. the mean head: padded rows against the text alone, finite differences, float32
    with torch.no_grad():
        mean_logits, _ = classify_mean(w, tok, cfg)
        worst = 0.0
        for row, n in enumerate(LENGTHS):
            alone = lr.forward(w, tok[row:row + 1, :n], cfg, hidden=True)[0].mean(0) @ w["score.weight"].t()
            worst = max(worst, (alone - mean_logits[row]).abs().max().item())
    report("mean head: padded rows vs unpadded", worst, 1e-12)
    loss = loss_of(w, tok, lab, cfg, classify_mean)
    grads = dict(zip(w.keys(), torch.autograd.grad(loss, list(w.values()))))
    worst = 0.0
    checked = 0
    for name in MEAN_GRADS:
        p = w[name]
        for _ in range(3):
            idx = tuple(int(rng.randint(0, d)) for d in p.shape)
            if name == "wpe.weight":
                idx = (int(rng.randint(0, SEQ)),) + idx[1:]   # a position the rows use
            h = 1e-6
            with torch.no_grad():
                orig = p[idx].item()
                p[idx] = orig + h
                up = loss_of(w, tok, lab, cfg, classify_mean).item()
                p[idx] = orig - h
                down = loss_of(w, tok, lab, cfg, classify_mean).item()
                p[idx] = orig
            fd = (up - down) / (2 * h)
            worst = max(worst, abs(fd - grads[name][idx].item()) / max(1.0, abs(fd)))
            checked += 1
    report(f"mean head: gradients vs finite differences ({checked})", worst, 1e-7)
    loss32 = loss_of(w32, tok, lab, cfg, classify_mean)
    g32 = dict(zip(w32.keys(), torch.autograd.grad(loss32, list(w32.values()))))
    with torch.no_grad():
        err = (classify_mean(w32, tok, cfg)[0].double() - mean_logits).abs().max().item()
    report("mean head: float32 vs float64 logits", err, 1e-4)
    report("mean head: float32 vs float64 loss", abs(loss32.item() - loss.item()), 1e-5)
    rel = max(((g32[n].double() - grads[n]).abs().max() / grads[n].abs().max()).item()
              for n in MEAN_GRADS)
    report("mean head: float32 vs float64 grads (rel.)", rel, 1e-4)
    return ok


def f32(t):
    return t.detach().numpy().astype(np.float32).copy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "ref", "classify"))
    parser.add_argument("--self-check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    cfg = dict(CFG)
    rs = np.random.RandomState(SEED)
    w_np = lr.random_base(cfg, rs)
    score = rs.normal(0, SCORE_STD, (len(LABELS), cfg["n_embd"]))
    tokens, labels = make_batch(cfg, rs)
    w_np["score.weight"] = centred_score(cfg, w_np, tokens, score)

    out = os.path.normpath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(cfg), f, indent=2)
        f.write("\n")
    hf_name = lambda n: n if n == "score.weight" else PREFIX + n  # noqa: E731
    ref.write_safetensors(os.path.join(out, "model.safetensors"),
                          {hf_name(n): a for n, a in w_np.items()}, {"format": "pt"})
    ref.write_safetensors(os.path.join(out, "batch.safetensors"),
                          {"tokens": tokens, "labels": labels},
                          {"generator": "tests/torch/classify_reference.py",
                           "pad_token_id": str(PAD)})

    if args.self_check:
        back, _ = ref.read_safetensors(os.path.join(out, "model.safetensors"))
        same = sorted(back) == sorted(hf_name(n) for n in w_np) and all(
            np.array_equal(back[hf_name(n)], a) for n, a in w_np.items())
        print(f"  self-check model.safetensors reads back with HF's names      "
              f"{'ok' if same else 'FAIL'}")
    if args.self_check and (not same or not self_check(cfg, w_np, tokens, labels)):
        print("self-check FAILED", file=sys.stderr)
        return 1

    tok = torch.from_numpy(tokens).long()
    lab = torch.from_numpy(labels).long()
    w = lr.to_torch(w_np, torch.float64, grad=True)
    logits, last = classify(w, tok, cfg)
    loss = F.cross_entropy(logits, lab)
    grads = dict(zip(w.keys(), torch.autograd.grad(loss, list(w.values()))))
    exp = {
        "logits": f32(logits),
        "last_index": last.numpy().astype(np.int32),
        "loss": np.array([loss.item()], dtype=np.float32),
    }
    for n in w_np:
        exp["grad." + hf_name(n)] = f32(lr.flush_roundoff(grads[n]))
    meta = {"generator": "tests/torch/classify_reference.py", "precision": "float64, stored F32",
            "pad_token_id": str(PAD), "labels": ",".join(LABELS),
            "torch_version": torch.__version__}
    ref.write_safetensors(os.path.join(out, "expected.safetensors"), exp, meta)

    # fm's mean head on the same weights and batch: logits, loss, a few tensors' gradients
    mean_logits, _ = classify_mean(w, tok, cfg)
    mean_loss = F.cross_entropy(mean_logits, lab)
    mean_grads = torch.autograd.grad(mean_loss, [w[n] for n in MEAN_GRADS])
    exp_mean = {"logits": f32(mean_logits), "loss": np.array([mean_loss.item()], dtype=np.float32)}
    for n, g in zip(MEAN_GRADS, mean_grads):
        exp_mean["grad." + hf_name(n)] = f32(lr.flush_roundoff(g))
    ref.write_safetensors(os.path.join(out, "expected_mean.safetensors"), exp_mean,
                          dict(meta, pooling="mean: score(mean of ln_f outputs at 0..last_index)"))

    probs = torch.softmax(logits, -1)
    print(f"classify_reference: L={cfg['n_layer']} C={cfg['n_embd']} heads={cfg['n_head']} "
          f"V={cfg['vocab_size']} labels={LABELS} pad={PAD}, torch {torch.__version__}")
    print(f"  last index {last.tolist()}, labels {labels.tolist()}, loss {loss.item():.6f}")
    for row in range(len(LENGTHS)):
        print(f"  row {row}: logits {[round(v, 4) for v in logits[row].tolist()]} "
              f"probs {[round(v, 4) for v in probs[row].tolist()]}")
    print(f"  mean head: loss {mean_loss.item():.6f}")
    for row in range(len(LENGTHS)):
        print(f"  row {row}: mean-head logits {[round(v, 4) for v in mean_logits[row].tolist()]}")
    print(f"  wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
