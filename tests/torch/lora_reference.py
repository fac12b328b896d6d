#!/usr/bin/python3
"""PyTorch reference for LoRA on fm's GPT-2 (PEFT's adapter format, issue 14).

Writes a self-contained fixture folder (default tests/ref/lora):

  base/config.json, base/model.safetensors
      a small GPT-2 with odd shapes (2 layers, C 72, 3 heads of 24, MLP 288, V 300,
      n_positions 32), random seeded weights, fm's tensor names and Conv1D layout
      (y = x @ W + b, W [in, out]), tied output embedding, as `fm init` writes it
  adapter/adapter_config.json, adapter/adapter_model.safetensors
      a LoRA adapter as PEFT writes it for GPT-2: r 4, lora_alpha 8 (scale 2),
      target_modules c_attn, c_proj, c_fc (PEFT matches by suffix, so c_proj is both
      attn.c_proj and mlp.c_proj: all four linear layers of each block),
      fan_in_fan_out true; tensors F32
        base_model.model.transformer.h.{i}.{attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj}
            .lora_A.weight [r, in]   and   .lora_B.weight [out, r]
      A and B both random and nonzero (B nonzero so that A has a gradient)
  batch.safetensors
      tokens I32 [3, 16], targets I32 [3, 16], mask F32 [3, 16] (an SFT loss mask:
      prompt and padding 0, completion 1, a different count per row)
  expected.safetensors (computed in float64, stored F32)
      logits [3, 16, 300]       with the adapter applied (unmerged)
      base_logits [3, 16, 300]  the base model alone
      loss [1], base_loss [1]   sum(mask * nll) / sum(mask)
      grad.<adapter name>       d loss / d lora_A and d loss / d lora_B, every adapter
                                tensor, named as in adapter_model.safetensors
      merged.h.0.<module>.weight  layer 0's four merged weights W + scale * (B @ A)^T,
                                [in, out] like W (attn.c_attn, attn.c_proj, mlp.c_fc,
                                mlp.c_proj)

The LoRA math, as PEFT defines it for a Conv1D layer with fan_in_fan_out:
    y = x @ W + b + (lora_alpha / r) * (dropout(x) @ A^T) @ B^T      (dropout 0 here)

Usage:
    /usr/bin/python3 tests/torch/lora_reference.py [OUT_DIR] [--self-check]

--self-check (float64): the base forward against gpt2_reference.py's model, adapter
gradients against central finite differences, the merged model's logits against the
unmerged ones, and the float32 forward against the float64 one; exit status 1 if any
check fails.
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")  # before torch loads OpenBLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference as ref  # noqa: E402  (safetensors I/O and the plain model)

SEED = 20240514
CFG = {
    "n_layer": 2,
    "n_head": 3,
    "n_embd": 72,
    "vocab_size": 300,
    "n_positions": 32,
    "n_inner": 288,          # written as null in config.json: 4 * n_embd
    "layer_norm_epsilon": 1e-5,
}
R = 4
ALPHA = 8
SCALE = ALPHA / R
B_STD = 0.03                 # lora_B ~ N(0, B_STD); lora_A as PEFT initialises it
BATCH, SEQ = 3, 16
MODULES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
PEFT_PREFIX = "base_model.model.transformer."


# ------------------------------------------------------------------ the base model

def module_shapes(cfg):
    C, M = cfg["n_embd"], cfg["n_inner"]
    return {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C),
            "mlp.c_fc": (C, M), "mlp.c_proj": (M, C)}


def random_base(cfg, rs):
    """Random GPT-2 weights in fm's names and order (float32 numpy)."""
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    w = {"wte.weight": f32(rs.normal(0, 0.1, (V, C))),
         "wpe.weight": f32(rs.normal(0, 0.05, (P, C)))}
    stds = {"attn.c_attn": 0.08, "attn.c_proj": 0.06, "mlp.c_fc": 0.08, "mlp.c_proj": 0.05}
    shapes = module_shapes(cfg)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        for ln, mods in (("ln_1", ("attn.c_attn", "attn.c_proj")), ("ln_2", ("mlp.c_fc", "mlp.c_proj"))):
            w[p + ln + ".weight"] = f32(1.0 + rs.normal(0, 0.1, C))
            w[p + ln + ".bias"] = f32(rs.normal(0, 0.05, C))
            for m in mods:
                n_in, n_out = shapes[m]
                w[p + m + ".weight"] = f32(rs.normal(0, stds[m], (n_in, n_out)))
                w[p + m + ".bias"] = f32(rs.normal(0, 0.03, n_out))
    w["ln_f.weight"] = f32(1.0 + rs.normal(0, 0.1, C))
    w["ln_f.bias"] = f32(rs.normal(0, 0.05, C))
    return w


def base_config_json(cfg):
    """config.json as fm writes it (tests/ref/tiny/config.json's keys)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": cfg["n_layer"],
        "n_head": cfg["n_head"],
        "n_embd": cfg["n_embd"],
        "vocab_size": cfg["vocab_size"],
        "n_positions": cfg["n_positions"],
        "n_ctx": cfg["n_positions"],
        "n_inner": None,
        "layer_norm_epsilon": cfg["layer_norm_epsilon"],
        "activation_function": "gelu_new",
        "initializer_range": 0.02,
        "resid_pdrop": 0,
        "embd_pdrop": 0,
        "attn_pdrop": 0,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "torch_dtype": "float32",
        "fm_format_version": 1,
    }


# ------------------------------------------------------------------ the adapter

def peft_name(layer, module, ab):
    return f"{PEFT_PREFIX}h.{layer}.{module}.lora_{ab}.weight"


def random_adapter(cfg, rs):
    """lora_A [r, in] as PEFT's kaiming_uniform_(a=sqrt(5)) draws it (U(-1/sqrt(in), 1/sqrt(in))),
    lora_B [out, r] ~ N(0, B_STD) instead of PEFT's zeros, so that the adapter does something."""
    shapes = module_shapes(cfg)
    ad = {}
    for i in range(cfg["n_layer"]):
        for m in MODULES:
            n_in, n_out = shapes[m]
            bound = 1.0 / math.sqrt(n_in)
            ad[peft_name(i, m, "A")] = rs.uniform(-bound, bound, (R, n_in)).astype(np.float32)
            ad[peft_name(i, m, "B")] = rs.normal(0, B_STD, (n_out, R)).astype(np.float32)
    return ad


def adapter_config_json():
    """adapter_config.json with the keys PEFT's LoraConfig writes (sorted, indent 2, as
    PEFT's save_pretrained does)."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "base",
        "bias": "none",
        "fan_in_fan_out": True,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": R,
        "rank_pattern": {},
        "revision": None,
        "target_modules": ["c_attn", "c_proj", "c_fc"],
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def peft_target_matches(module_path, targets):
    """PEFT's rule for a list of target_modules: the module's full name equals a target or
    ends with "." + target."""
    return any(module_path == t or module_path.endswith("." + t) for t in targets)


# ------------------------------------------------------------------ functional forward

def forward(w, tokens, cfg, adapter=None, scale=SCALE, hidden=False):
    """Logits [B, T, V] of GPT-2 with weights w (fm names -> tensors); adapter maps fm module
    names ("h.0.attn.c_attn") to (A [r, in], B [out, r]) applied unmerged.  hidden=True
    returns ln_f's output [B, T, C] instead of the logits."""
    B, T = tokens.shape
    C, nh, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hs = C // nh

    def linear(x, name):
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        if adapter is not None and name in adapter:
            A, Bm = adapter[name]
            y = y + scale * ((x @ A.t()) @ Bm.t())
        return y

    def ln(x, name):
        return F.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"], eps)

    x = w["wte.weight"][tokens] + w["wpe.weight"][:T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        q, k, v = linear(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
        q, k, v = [t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v)]
        s = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        a = F.softmax(s.masked_fill(future, float("-inf")), dim=-1) @ v
        x = x + linear(a.transpose(1, 2).reshape(B, T, C), p + "attn.c_proj")
        h = F.gelu(linear(ln(x, p + "ln_2"), p + "mlp.c_fc"), approximate="tanh")
        x = x + linear(h, p + "mlp.c_proj")
    x = ln(x, "ln_f")
    return x if hidden else x @ w["wte.weight"].t()


def to_torch(d, dtype, grad=False):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=grad) for k, v in d.items()}


def adapter_by_module(ad_t, cfg):
    return {f"h.{i}.{m}": (ad_t[peft_name(i, m, "A")], ad_t[peft_name(i, m, "B")])
            for i in range(cfg["n_layer"]) for m in MODULES}


def merged_weights(w, adapter, scale=SCALE):
    """W + scale * (B @ A)^T for every adapted module, in W's [in, out] layout."""
    out = dict(w)
    for name, (A, Bm) in adapter.items():
        out[name + ".weight"] = w[name + ".weight"] + scale * (Bm @ A).t()
    return out


# ------------------------------------------------------------------ data

def make_batch(cfg, rs):
    V = cfg["vocab_size"]
    eot = V - 1
    stream = rs.randint(0, V - 1, size=(BATCH, SEQ + 1))
    tokens = stream[:, :SEQ].astype(np.int32)
    targets = stream[:, 1:].astype(np.int32)
    mask = np.zeros((BATCH, SEQ), dtype=np.float32)
    # (prompt length, completion length incl. the closing <|endoftext|>); the rest is padding
    for row, (p, c) in enumerate(((5, 11), (9, 5), (2, 10))):
        mask[row, p - 1:p - 1 + c] = 1.0          # targets of positions p-1 .. predict completion
        targets[row, p - 1 + c - 1] = eot          # the completion ends with <|endoftext|>
        tokens[row, p + c - 1:] = eot              # <|endoftext|>, then padding with it
        targets[row, p + c - 1:] = eot
    return tokens, targets, mask


def masked_loss(logits, targets, mask):
    V = logits.shape[-1]
    nll = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    m = mask.reshape(-1)
    return (m * nll).sum() / m.sum()


# ------------------------------------------------------------------ self-check

def self_check(cfg, base_dir, w_np, ad_np, batch):
    ok = True

    def report(what, err, tol):
        nonlocal ok
        good = err <= tol
        ok = ok and good
        print(f"  self-check {what:<46s} max err {err:.3e} (tol {tol:.0e}) "
              f"{'ok' if good else 'FAIL'}")

    tokens, targets, mask = batch
    tok = torch.from_numpy(tokens).long()
    tgt = torch.from_numpy(targets).long()
    msk = torch.from_numpy(mask).double()
    w = to_torch(w_np, torch.float64)
    ad = to_torch(ad_np, torch.float64, grad=True)
    adm = adapter_by_module(ad, cfg)

    # 0. PEFT's suffix rule picks exactly the four linear layers of each block
    module_paths = [f"transformer.h.{i}.{m}" for i in range(cfg["n_layer"])
                    for m in ("ln_1", "attn", "attn.c_attn", "attn.c_proj", "ln_2", "mlp",
                              "mlp.c_fc", "mlp.c_proj")] + ["transformer.wte", "transformer.ln_f"]
    picked = sorted(p[len("transformer."):] for p in module_paths
                    if peft_target_matches(p, adapter_config_json()["target_modules"]))
    report("PEFT target_modules pick the 4 linears/block",
           0.0 if picked == sorted(adm) else 1.0, 0)

    # 1. the base forward against gpt2_reference.py's model loaded from base/
    cfg_loaded, model = ref.load_model(base_dir)
    model = model.double()
    with torch.no_grad():
        err = (model(tok)[0] - forward(w, tok, cfg)).abs().max().item()
    report("base forward vs gpt2_reference.GPT2", err, 1e-12)

    # 2. adapter gradients against central finite differences (float64)
    loss = masked_loss(forward(w, tok, cfg, adm), tgt, msk)
    grads = torch.autograd.grad(loss, list(ad.values()))
    grads = dict(zip(ad.keys(), grads))
    rng = np.random.RandomState(SEED + 1)
    worst = 0.0
    for name, p in ad.items():
        for _ in range(3):
            idx = tuple(int(rng.randint(0, d)) for d in p.shape)
            h = 1e-6
            with torch.no_grad():
                orig = p[idx].item()
                p[idx] = orig + h
                up = masked_loss(forward(w, tok, cfg, adm), tgt, msk).item()
                p[idx] = orig - h
                down = masked_loss(forward(w, tok, cfg, adm), tgt, msk).item()
                p[idx] = orig
            fd = (up - down) / (2 * h)
            worst = max(worst, abs(fd - grads[name][idx].item()) / max(1.0, abs(fd)))
    report(f"adapter gradients vs finite differences ({3 * len(ad)})", worst, 1e-7)

    # 3. merged model == unmerged adapter
    with torch.no_grad():
        unmerged = forward(w, tok, cfg, adm)
        merged = forward(merged_weights(w, adm), tok, cfg)
        err = (unmerged - merged).abs().max().item()
    report("merged vs unmerged logits (float64)", err, 1e-10)
    w32 = to_torch(w_np, torch.float32)
    adm32 = adapter_by_module(to_torch(ad_np, torch.float32), cfg)
    with torch.no_grad():
        un32 = forward(w32, tok, cfg, adm32)
        me32 = forward(merged_weights(w32, adm32), tok, cfg)
        err = (un32 - me32).abs().max().item()
    report("merged vs unmerged logits (float32)", err, 1e-5)

    # 4. float32 against float64: the noise floor a float32 implementation can expect
    err = (un32.double() - unmerged).abs().max().item()
    report("float32 vs float64 logits", err, 1e-4)
    ad32 = to_torch(ad_np, torch.float32, grad=True)
    loss32 = masked_loss(forward(w32, tok, cfg, adapter_by_module(ad32, cfg)), tgt,
                         torch.from_numpy(mask))
    g32 = dict(zip(ad32.keys(), torch.autograd.grad(loss32, list(ad32.values()))))
    rel = max(((g32[n].double() - grads[n]).abs().max() / grads[n].abs().max()).item()
              for n in ad)
    report("float32 vs float64 adapter grads (rel. to max)", rel, 1e-4)
    report("float32 vs float64 loss", abs(loss32.item() - loss.item()), 1e-5)
    return ok


# ------------------------------------------------------------------ main

def flush_roundoff(g):
    """Entries below 1e-12 of the tensor's largest are set to 0: they are zeros in exact
    arithmetic (e.g. the key bias's gradient, since q . b_k shifts a whole softmax row) whose
    float64 round-off (~1e-17) depends on BLAS's summation order, so that a re-run writes the
    same bytes."""
    g = g.detach().clone()
    g[g.abs() < 1e-12 * g.abs().max()] = 0.0
    return g


def f32(t):
    return t.detach().numpy().astype(np.float32).copy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "ref", "lora"))
    parser.add_argument("--self-check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    cfg = dict(CFG)
    rs = np.random.RandomState(SEED)
    w_np = random_base(cfg, rs)
    ad_np = random_adapter(cfg, rs)
    tokens, targets, mask = make_batch(cfg, rs)

    out = os.path.normpath(args.out_dir)
    base_dir = os.path.join(out, "base")
    adapter_dir = os.path.join(out, "adapter")
    os.makedirs(base_dir, exist_ok=True)
    os.makedirs(adapter_dir, exist_ok=True)
    with open(os.path.join(base_dir, "config.json"), "w") as f:
        json.dump(base_config_json(cfg), f, indent=2)
        f.write("\n")
    ref.write_safetensors(os.path.join(base_dir, "model.safetensors"), w_np, {"format": "pt"})
    with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
        json.dump(adapter_config_json(), f, indent=2, sort_keys=True)
        f.write("\n")
    # safetensors' own writer orders tensors by name (all F32 here)
    ref.write_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"),
                          {k: ad_np[k] for k in sorted(ad_np)}, {"format": "pt"})
    ref.write_safetensors(os.path.join(out, "batch.safetensors"),
                          {"tokens": tokens, "targets": targets, "mask": mask},
                          {"generator": "tests/torch/lora_reference.py"})

    if args.self_check and not self_check(cfg, base_dir, w_np, ad_np, (tokens, targets, mask)):
        print("self-check FAILED", file=sys.stderr)
        return 1

    # the expected values, in float64
    tok = torch.from_numpy(tokens).long()
    tgt = torch.from_numpy(targets).long()
    msk = torch.from_numpy(mask).double()
    w = to_torch(w_np, torch.float64)
    ad = to_torch(ad_np, torch.float64, grad=True)
    adm = adapter_by_module(ad, cfg)
    logits = forward(w, tok, cfg, adm)
    loss = masked_loss(logits, tgt, msk)
    grads = dict(zip(ad.keys(), torch.autograd.grad(loss, list(ad.values()))))
    with torch.no_grad():
        base_logits = forward(w, tok, cfg)
        base_loss = masked_loss(base_logits, tgt, msk)
        merged = merged_weights(w, adm)
    exp = {
        "logits": f32(logits),
        "base_logits": f32(base_logits),
        "loss": np.array([loss.item()], dtype=np.float32),
        "base_loss": np.array([base_loss.item()], dtype=np.float32),
    }
    for name in sorted(ad_np):
        exp["grad." + name] = f32(flush_roundoff(grads[name]))
    for m in MODULES:
        exp[f"merged.h.0.{m}.weight"] = f32(merged[f"h.0.{m}.weight"])
    meta = {"generator": "tests/torch/lora_reference.py", "precision": "float64, stored F32",
            "r": str(R), "lora_alpha": str(ALPHA), "scale": repr(SCALE),
            "torch_version": torch.__version__}
    ref.write_safetensors(os.path.join(out, "expected.safetensors"), exp, meta)

    d = (logits - base_logits).detach()
    print(f"lora_reference: L={cfg['n_layer']} C={cfg['n_embd']} heads={cfg['n_head']} "
          f"V={cfg['vocab_size']} r={R} alpha={ALPHA} B={BATCH} T={SEQ}, torch {torch.__version__}")
    print(f"  loss {loss.item():.6f} (base {base_loss.item():.6f}); mask per row "
          f"{mask.sum(1).astype(int).tolist()}")
    print(f"  adapter changes logits: max |d| {d.abs().max().item():.4f}, rms d "
          f"{d.pow(2).mean().sqrt().item():.4f} vs rms base "
          f"{base_logits.pow(2).mean().sqrt().item():.4f}; top-1 changed at "
          f"{(logits.argmax(-1) != base_logits.argmax(-1)).sum().item()}/{BATCH * SEQ}")
    gA = max(grads[n].abs().max().item() for n in grads if "lora_A" in n)
    gB = max(grads[n].abs().max().item() for n in grads if "lora_B" in n)
    print(f"  max |grad| lora_A {gA:.4e}, lora_B {gB:.4e}")
    print(f"  wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
