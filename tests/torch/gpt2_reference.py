#!/usr/bin/python3
"""PyTorch reference for fm's GPT-2: forward, gradients and AdamW training.

The C tests of fm compare their own results against the numbers this script
writes.  It loads a GPT-2 model written by fm (config.json with the Hugging
Face GPT-2 keys, plus model.safetensors in F32 with the Hugging Face Conv1D
layout, i.e. y = x @ W + b with W stored as [in, out]), rebuilds the network in
plain PyTorch, and records:

  tokens, targets, mask     the deterministic data, I32/I32/F32 [S, B, T]
  logits, hidden, loss      forward of batch 0 with the initial weights
  grad.<name>               d(masked cross-entropy of batch 0) / d(parameter)
  hidden_weights, hgrad.<n> R ~ N(0, 1) [B, T, C] and d(sum(hidden * R)) / d(p)
  losses, grad_norms, lrs   10 AdamW steps (loss before update, pre-clip norm,
                            learning rate used at each step)
  final.<name>              every parameter after the 10 steps
  adam.m.<n>, adam.v.<n>    AdamW's moments after the 10 steps (exp_avg and
                            exp_avg_sq; fm's checkpoint names)

The hyper-parameters are written as strings in the output's "__metadata__".

Usage:
    /usr/bin/python3 tests/torch/gpt2_reference.py MODEL_DIR OUT_FILE [--self-check]

--self-check first verifies the attention against a naive per-head loop, a
few gradients by central finite differences in float64, and the first AdamW
step against a hand-written update; it exits with status 1 if any check fails.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 1234
STEPS = 10          # S: number of batches / optimizer steps
BATCH = 3           # B
MAX_SEQ = 17        # T = min(MAX_SEQ, n_positions)
MASK_KEEP = 0.8     # probability that a mask entry is 1

HPARAMS = {
    "lr": 3e-3,
    "min_lr": 3e-4,
    "warmup_steps": 3,
    "total_steps": 10,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
}


# --------------------------------------------------------------------------
# safetensors reading and writing (no external package)
# --------------------------------------------------------------------------

# safetensors dtype name -> little-endian numpy dtype
ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
}


def read_safetensors(path):
    """Return (dict name -> numpy array, metadata dict) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        raise ValueError(f"{path}: header length {header_len} past end of file")
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in ST_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        np_dtype = np.dtype(ST_DTYPES[dtype])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * np_dtype.itemsize or end > len(data):
            raise ValueError(f"{path}: tensor {name} has bad data_offsets {begin},{end}")
        arr = np.frombuffer(data[begin:end], dtype=np_dtype).reshape(shape)
        tensors[name] = arr.copy()
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """Write dict name -> numpy array (float32 or int32) to a safetensors file.

    Tensors are stored contiguously in the order given; the JSON header is
    padded with spaces so that 8 + header length is a multiple of 8.
    """
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    chunks = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float32:
            dtype = "F32"
        elif arr.dtype == np.int32:
            dtype = "I32"
        else:
            raise TypeError(f"tensor {name}: unexpected dtype {arr.dtype}")
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * ((-(8 + len(header_bytes))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for raw in chunks:
            f.write(raw)


# --------------------------------------------------------------------------
# The model.  Parameter names (named_parameters) match the safetensors names.
# --------------------------------------------------------------------------

class Table(nn.Module):
    """An embedding table holding just `weight` [rows, C]."""

    def __init__(self, rows, cols):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(rows, cols))


class LayerNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class Conv1D(nn.Module):
    """Hugging Face's GPT-2 linear layer: y = x @ weight + bias, weight [in, out]."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = n_head
        self.c_attn = Conv1D(n_embd, 3 * n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)

    def heads(self, x):
        """Return q, k, v, each [B, nh, T, hs], from the block input x [B, T, C]."""
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        return [t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v)]

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.heads(x)
        hs = q.shape[-1]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v                 # [B, nh, T, hs]
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # merge heads
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd, n_inner):
        super().__init__()
        self.c_fc = Conv1D(n_embd, n_inner)
        self.c_proj = Conv1D(n_inner, n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg["n_embd"], cfg["layer_norm_epsilon"])
        self.attn = Attention(cfg["n_embd"], cfg["n_head"])
        self.ln_2 = LayerNorm(cfg["n_embd"], cfg["layer_norm_epsilon"])
        self.mlp = MLP(cfg["n_embd"], cfg["n_inner"])

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = Table(cfg["vocab_size"], cfg["n_embd"])
        self.wpe = Table(cfg["n_positions"], cfg["n_embd"])
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])])
        self.ln_f = LayerNorm(cfg["n_embd"], cfg["layer_norm_epsilon"])

    def forward(self, tokens):
        """tokens [B, T] (int64) -> (logits [B, T, V], hidden [B, T, C])."""
        T = tokens.shape[1]
        x = self.wte.weight[tokens] + self.wpe.weight[:T]
        for block in self.h:
            x = block(x)
        hidden = self.ln_f(x)
        logits = hidden @ self.wte.weight.t()  # tied output embedding
        return logits, hidden


def masked_loss(logits, targets, mask):
    """sum(mask * nll) / sum(mask), nll = per-token cross-entropy."""
    V = logits.shape[-1]
    nll = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    mask = mask.reshape(-1)
    return (mask * nll).sum() / mask.sum()


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    cfg = {}
    for key in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions"):
        cfg[key] = int(raw[key])
    cfg["layer_norm_epsilon"] = float(raw.get("layer_norm_epsilon", 1e-5))
    n_inner = raw.get("n_inner")
    cfg["n_inner"] = 4 * cfg["n_embd"] if n_inner is None else int(n_inner)
    return cfg


def canonical_name(name):
    """Strip an optional "transformer." prefix; None for buffers to ignore."""
    if name.startswith("transformer."):
        name = name[len("transformer."):]
    # Hugging Face's causal-mask buffers h.i.attn.bias / h.i.attn.masked_bias
    # are not parameters (careful: h.i.attn.c_attn.bias is one).
    if name.split(".")[-2:] in (["attn", "bias"], ["attn", "masked_bias"]):
        return None
    return name


def load_model(model_dir):
    cfg = load_config(model_dir)
    model = GPT2(cfg)
    tensors, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    params = dict(model.named_parameters())
    seen = set()
    for name, arr in tensors.items():
        key = canonical_name(name)
        if key is None:
            continue
        if key not in params:
            raise KeyError(f"model.safetensors: unexpected tensor {name}")
        if tuple(arr.shape) != tuple(params[key].shape):
            raise ValueError(f"{name}: shape {arr.shape}, expected {tuple(params[key].shape)}")
        with torch.no_grad():
            params[key].copy_(torch.from_numpy(arr.astype(np.float32)))
        seen.add(key)
    missing = sorted(set(params) - seen)
    if missing:
        raise KeyError(f"model.safetensors: missing tensors {missing}")
    return cfg, model


# --------------------------------------------------------------------------
# Data, schedule, optimizer
# --------------------------------------------------------------------------

def make_data(cfg):
    """Deterministic tokens, targets (I32) and mask (F32), each [S, B, T]."""
    rs = np.random.RandomState(SEED)
    T = min(MAX_SEQ, cfg["n_positions"])
    V = cfg["vocab_size"]
    shape = (STEPS, BATCH, T)
    tokens = rs.randint(0, V, size=shape).astype(np.int32)
    targets = rs.randint(0, V, size=shape).astype(np.int32)
    mask = (rs.random_sample(shape) < MASK_KEEP).astype(np.float32)
    mask[:, 0, 0] = 0.0  # always exercise a masked-out position
    for s in range(STEPS):
        if mask[s].sum() == 0:
            mask[s, -1, -1] = 1.0
    hidden_weights = rs.standard_normal((BATCH, T, cfg["n_embd"])).astype(np.float32)
    return tokens, targets, mask, hidden_weights


def lr_at(step, hp):
    """Linear warmup to lr, then cosine decay to min_lr at total_steps."""
    if step < hp["warmup_steps"]:
        return hp["lr"] * (step + 1) / hp["warmup_steps"]
    if step >= hp["total_steps"]:
        return hp["min_lr"]
    ratio = (step - hp["warmup_steps"]) / (hp["total_steps"] - hp["warmup_steps"])
    return hp["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (hp["lr"] - hp["min_lr"])


def make_optimizer(model, hp):
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    groups = [
        {"params": decay, "weight_decay": hp["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                             eps=hp["eps"], foreach=False)


def train(model, data, hp, steps=STEPS):
    """Run `steps` AdamW steps in place; return (losses, pre-clip norms, lrs, optimizer)."""
    tokens, targets, mask, _ = data
    params = list(model.parameters())
    opt = make_optimizer(model, hp)
    losses, norms, lrs = [], [], []
    for s in range(steps):
        opt.zero_grad(set_to_none=False)
        logits, _ = model(torch.from_numpy(tokens[s]).long())
        loss = masked_loss(logits, torch.from_numpy(targets[s]).long(),
                           torch.from_numpy(mask[s]))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, hp["grad_clip"])
        lr = lr_at(s, hp)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=False)
        losses.append(loss.item())
        norms.append(norm.item())
        lrs.append(lr)
    return losses, norms, lrs, opt


def gradients(model, objective):
    """Fresh gradients of objective(model) -> dict name -> numpy array."""
    model.zero_grad(set_to_none=True)
    objective(model).backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


# --------------------------------------------------------------------------
# Self-check (--self-check)
# --------------------------------------------------------------------------

def naive_attention(attn, x):
    """Attention of one block computed head by head, row by row."""
    B, T, C = x.shape
    q, k, v = attn.heads(x)
    hs = q.shape[-1]
    out = torch.zeros(B, attn.n_head, T, hs, dtype=x.dtype)
    for b in range(B):
        for h in range(attn.n_head):
            for t in range(T):
                s = torch.stack([(q[b, h, t] * k[b, h, j]).sum() / math.sqrt(hs)
                                 for j in range(t + 1)])
                w = torch.exp(s - s.max())
                w = w / w.sum()
                out[b, h, t] = (w[:, None] * v[b, h, :t + 1]).sum(0)
    y = out.transpose(1, 2).reshape(B, T, C)
    return y @ attn.c_proj.weight + attn.c_proj.bias


def self_check(cfg, model, data):
    """Return True if every check passes; prints one line per check."""
    ok = True

    def report(what, err, tol):
        nonlocal ok
        good = err <= tol
        ok = ok and good
        print(f"  self-check {what:<40s} max err {err:.3e} (tol {tol:.0e}) "
              f"{'ok' if good else 'FAIL'}")

    tokens, targets, mask, hidden_weights = data
    m64 = GPT2(cfg).double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    tok = torch.from_numpy(tokens[0][:2, :7]).long()
    tgt = torch.from_numpy(targets[0][:2, :7]).long()
    msk = torch.from_numpy(mask[0][:2, :7]).double()
    msk[1, 3] = 0.0

    # 1. attention against a naive loop, on a float64 copy
    with torch.no_grad():
        x = m64.wte.weight[tok] + m64.wpe.weight[:tok.shape[1]]
        a = m64.h[0].ln_1(x)
        err = (m64.h[0].attn(a) - naive_attention(m64.h[0].attn, a)).abs().max().item()
    report("attention vs per-head loop", err, 1e-12)

    # 2. finite differences of the masked loss and of the hidden objective
    R = torch.from_numpy(hidden_weights[:2, :7]).double()
    objectives = {
        "loss": lambda m: masked_loss(m(tok)[0], tgt, msk),
        "hidden": lambda m: (m(tok)[1] * R).sum(),
    }
    rng = np.random.RandomState(SEED + 1)
    params = dict(m64.named_parameters())
    for obj_name, objective in objectives.items():
        grads = gradients(m64, objective)
        worst = 0.0
        for name, p in params.items():
            for _ in range(2):
                idx = tuple(int(rng.randint(0, d)) for d in p.shape)
                if name == "wte.weight" and obj_name == "hidden":
                    idx = (int(tok[0, 0]),) + idx[1:]  # a row that is used
                h = 1e-6
                with torch.no_grad():
                    orig = p[idx].item()
                    p[idx] = orig + h
                    up = objective(m64).item()
                    p[idx] = orig - h
                    down = objective(m64).item()
                    p[idx] = orig
                fd = (up - down) / (2 * h)
                an = float(grads[name][idx])
                worst = max(worst, abs(fd - an) / max(1.0, abs(fd)))
        report(f"{obj_name} gradients vs finite differences", worst, 1e-6)

    # 3. the first optimizer step (clip + AdamW) against a hand-written update
    hp = dict(HPARAMS, grad_clip=0.5)
    m32 = GPT2(cfg)
    m32.load_state_dict(model.state_dict())
    tok0 = torch.from_numpy(tokens[0]).long()
    obj = lambda m: masked_loss(m(tok0)[0], torch.from_numpy(targets[0]).long(),
                                torch.from_numpy(mask[0]))
    grads = {n: g.astype(np.float64) for n, g in gradients(m32, obj).items()}
    before = {n: p.detach().numpy().astype(np.float64) for n, p in m32.named_parameters()}
    total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    coef = min(1.0, hp["grad_clip"] / (total + 1e-6))
    lr = lr_at(0, hp)
    expected = {}
    for n, w in before.items():
        g = grads[n] * coef
        wd = hp["weight_decay"] if w.ndim == 2 else 0.0
        m = (1 - hp["beta1"]) * g
        v = (1 - hp["beta2"]) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - hp["beta2"]) + hp["eps"]
        expected[n] = w * (1 - lr * wd) - (lr / (1 - hp["beta1"])) * m / denom
    train(m32, data, hp, steps=1)
    err = max(float(np.abs(p.detach().numpy() - expected[n]).max())
              for n, p in m32.named_parameters())
    report("first AdamW step vs hand-written", err, 1e-6)
    return ok


# --------------------------------------------------------------------------

def to_np(t):
    return t.detach().numpy().astype(np.float32).copy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("out_file")
    parser.add_argument("--self-check", action="store_true",
                        help="verify attention, gradients and one AdamW step first")
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    torch.set_default_dtype(torch.float32)

    cfg, model = load_model(args.model_dir)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = make_data(cfg)
    tokens, targets, mask, hidden_weights = data

    if args.self_check and not self_check(cfg, model, data):
        print("self-check FAILED", file=sys.stderr)
        return 1

    out = {
        "tokens": tokens,
        "targets": targets,
        "mask": mask,
    }

    # forward + gradients of batch 0 with the initial weights
    tok0 = torch.from_numpy(tokens[0]).long()
    tgt0 = torch.from_numpy(targets[0]).long()
    mask0 = torch.from_numpy(mask[0])
    model.zero_grad(set_to_none=True)
    logits, hidden = model(tok0)
    loss = masked_loss(logits, tgt0, mask0)
    loss.backward()
    out["logits"] = to_np(logits)
    out["hidden"] = to_np(hidden)
    out["loss"] = np.array([loss.item()], dtype=np.float32)
    for name, p in model.named_parameters():
        out["grad." + name] = to_np(p.grad)
    first_norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
    model.zero_grad(set_to_none=True)

    # gradients of sum(hidden * R), the hidden objective alone
    R = torch.from_numpy(hidden_weights)
    out["hidden_weights"] = hidden_weights
    hgrads = gradients(model, lambda m: (m(tok0)[1] * R).sum())
    for name, g in hgrads.items():
        out["hgrad." + name] = g.astype(np.float32)

    # training; the clip must be active at least on the first step
    hp = dict(HPARAMS)
    if first_norm <= hp["grad_clip"]:
        trial_norms = train(model, data, hp)[1]
        model.load_state_dict(initial)
        hp["grad_clip"] = float(f"{0.5 * min(trial_norms):.2g}")
    losses, norms, lrs, opt = train(model, data, hp)
    assert norms[0] > hp["grad_clip"], "grad_clip does not clip the first step"
    out["losses"] = np.array(losses, dtype=np.float32)
    out["grad_norms"] = np.array(norms, dtype=np.float32)
    out["lrs"] = np.array(lrs, dtype=np.float32)
    # where the 10 steps leave every parameter and both moments
    for name, p in model.named_parameters():
        state = opt.state[p]
        out["final." + name] = to_np(p)
        out["adam.m." + name] = to_np(state["exp_avg"])
        out["adam.v." + name] = to_np(state["exp_avg_sq"])

    meta = {k: repr(v) if isinstance(v, float) else str(v) for k, v in hp.items()}
    meta.update({
        "steps": str(STEPS),
        "batch": str(BATCH),
        "seq": str(tokens.shape[2]),
        "generator": "tests/torch/gpt2_reference.py",
        "torch_version": torch.__version__,
    })
    write_safetensors(args.out_file, out, meta)

    clipped = sum(n > hp["grad_clip"] for n in norms)
    print(f"gpt2_reference: {cfg['n_layer']} layers, C={cfg['n_embd']}, "
          f"heads={cfg['n_head']}, V={cfg['vocab_size']}, S={STEPS} B={BATCH} "
          f"T={tokens.shape[2]}, torch {torch.__version__}")
    print(f"  loss (batch 0, initial weights) {loss.item():.6f}")
    print(f"  grad_clip {hp['grad_clip']} (clipped {clipped}/{STEPS} steps)")
    for s in range(STEPS):
        print(f"  step {s}: loss {losses[s]:.6f}  grad_norm {norms[s]:.6f}  lr {lrs[s]:.6e}")
    print(f"  wrote {args.out_file} ({len(out)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
