#!/usr/bin/python3
"""torch_peer.py — the PyTorch peer of `fm bench`: the same GPT-2, the same step, timed the same way.

What it is for: side-by-side speed comparisons (bench/compare.sh). The model is fm's
architecture (pre-LayerNorm blocks, learned positions, tanh-GELU MLP of width 4C, tied output
head); the step is zero_grad, forward, cross-entropy, backward, clip_grad_norm_(1.0) and AdamW
with weight decay on the 2-D weights, on random tokens from a fixed seed. It is written to be
fair to PyTorch: nn.Linear (PyTorch's fastest dense path), a precomputed causal mask, fused
cross-entropy, foreach AdamW, set_to_none gradients, 2 threads, flushed denormals, and
OpenBLAS with the SkylakeX kernels. Generation (batch 1, a prompt then greedy tokens) uses a preallocated key/value cache per layer
under torch.inference_mode(). Prints one line:
  torch_bench mode=train tokens_per_s=... ms_per_step=... peak_rss_mb=... threads=...
  torch_bench mode=generate decode_tokens_per_s=... total_tokens_per_s=... ...
With --dump DIR (train: what `fm bench train --dump DIR` wrote, bench/fm_dump.py) the model's
weights and the token stream are fm's own (step s reads tokens [s*B*T, (s+1)*B*T), targets one
further, as fm bench does), and the line carries loss0=, the step-0 loss, which a comparison
checks against fm's (same weights, same batch) before it counts the peer's speed.
Not for: correctness (tests/torch/gpt2_reference.py is the parity reference).

Usage: /usr/bin/python3 bench/torch_peer.py train|generate --layers 4 --dim 256 --heads 4 --vocab 4096 \
           [--batch 16 --seq 128 | --prompt 16 --gen 128] [--threads 2 --steps 10 --warmup 3 --context 1024]
           [--dump DIR]
"""

import argparse
import math
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")  # before torch loads OpenBLAS

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fm_dump import read_config, read_stream, read_weights  # noqa: E402


class Block(nn.Module):
    def __init__(self, C, n_head, T_max):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj2 = nn.Linear(4 * C, C)
        mask = torch.triu(torch.ones(T_max, T_max, dtype=torch.bool), diagonal=1)
        self.register_buffer("future", mask, persistent=False)

    def attention(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = [t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v)]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        scores = scores.masked_fill(self.future[:T, :T], float("-inf"))
        y = F.softmax(scores, dim=-1) @ v  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.c_proj2(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, L, C, n_head, V, context):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(context, C)
        self.h = nn.ModuleList([Block(C, n_head, context) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "c_proj2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.wte(tokens) + self.wpe.weight[:T]
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied head: (B, T, V)


def load_dump(model, dump):
    """Copies fm's dumped weights into model (GPT-2 names; Conv1D (in, out) transposed to nn.Linear's)."""
    w = read_weights(dump)
    with torch.no_grad():
        model.wte.weight.copy_(w["wte.weight"])
        model.wpe.weight.copy_(w["wpe.weight"])
        for l, blk in enumerate(model.h):
            h = f"h.{l}."
            for mine, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
                getattr(blk, mine).weight.copy_(w[h + theirs + ".weight"])
                getattr(blk, mine).bias.copy_(w[h + theirs + ".bias"])
            for mine, theirs in (("c_attn", "attn.c_attn"), ("c_proj", "attn.c_proj"), ("c_fc", "mlp.c_fc"),
                                 ("c_proj2", "mlp.c_proj")):
                getattr(blk, mine).weight.copy_(w[h + theirs + ".weight"].t())
                getattr(blk, mine).bias.copy_(w[h + theirs + ".bias"])
        model.ln_f.weight.copy_(w["ln_f.weight"])
        model.ln_f.bias.copy_(w["ln_f.bias"])


class Decoder:
    """Batch-1 incremental decoding with a preallocated key/value cache per layer."""

    def __init__(self, model, max_len):
        self.m = model
        C = model.wte.weight.shape[1]
        self.k = [torch.zeros(blk.n_head, max_len, C // blk.n_head) for blk in model.h]
        self.v = [torch.zeros(blk.n_head, max_len, C // blk.n_head) for blk in model.h]
        self.len = 0

    def step(self, token):
        """Feeds one token id; returns the next-token logits (V)."""
        m, t = self.m, self.len
        x = m.wte.weight[token] + m.wpe.weight[t]  # (C)
        for i, blk in enumerate(m.h):
            C = x.shape[0]
            nh = blk.n_head
            hs = C // nh
            q, k, v = blk.c_attn(blk.ln_1(x)).split(C)
            self.k[i][:, t] = k.view(nh, hs)
            self.v[i][:, t] = v.view(nh, hs)
            keys, values = self.k[i][:, :t + 1], self.v[i][:, :t + 1]  # (nh, t+1, hs)
            att = torch.softmax((keys @ q.view(nh, hs, 1)).squeeze(-1) * (1.0 / math.sqrt(hs)), dim=-1)
            y = (att.unsqueeze(1) @ values).reshape(C)
            x = x + blk.c_proj(y)
            x = x + blk.c_proj2(F.gelu(blk.c_fc(blk.ln_2(x)), approximate="tanh"))
        self.len += 1
        return F.linear(m.ln_f(x), m.wte.weight)


def bench_generate(a):
    torch.manual_seed(a.seed)
    model = GPT2(a.layers, a.dim, a.heads, a.vocab, a.context)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(a.seed + 1)
    prompt = torch.randint(0, a.vocab, (a.prompt,), generator=gen).tolist()
    decode_s, whole_s, prompt_s = [], [], []
    with torch.inference_mode():
        for r in range(a.warmup + a.steps):
            dec = Decoder(model, a.prompt + a.gen)
            t0 = time.perf_counter()
            for tok in prompt:
                logits = dec.step(tok)
            t1 = time.perf_counter()
            for i in range(a.gen):
                nxt = int(torch.argmax(logits))
                if i + 1 < a.gen:
                    logits = dec.step(nxt)
            t2 = time.perf_counter()
            if r >= a.warmup:
                decode_s.append((t2 - t1) / max(a.gen - 1, 1))
                whole_s.append(t2 - t0)
                prompt_s.append(t1 - t0)
            print(f"run {r + 1}: prompt {1e3 * (t1 - t0):.1f} ms, {1e3 * (t2 - t1) / max(a.gen - 1, 1):.2f} ms per token",
                  file=sys.stderr)
    tok_s = 1.0 / statistics.median(decode_s)
    print(f"torch_bench mode=generate decode_tokens_per_s={tok_s:.1f} "
          f"total_tokens_per_s={a.gen / statistics.median(whole_s):.1f} ms_per_token={1e3 / tok_s:.2f} "
          f"prompt_ms={1e3 * statistics.median(prompt_s):.1f} params={n_params} peak_rss_mb={peak_rss_mb():.1f} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_train(a):
    torch.manual_seed(a.seed)
    if a.dump:  # fm's shapes, weights and stream
        cfg = read_config(a.dump)
        a.layers, a.dim, a.heads, a.vocab, a.context = (cfg["n_layer"], cfg["n_embd"], cfg["n_head"],
                                                        cfg["vocab_size"], cfg["n_positions"])
    model = GPT2(a.layers, a.dim, a.heads, a.vocab, a.context)
    if a.dump:
        load_dump(model, a.dump)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(a.seed + 1)
    total, n = a.warmup + a.steps, a.batch * a.seq
    if a.dump:
        flat = read_stream(a.dump, n * total + 1, "torch_peer.py")
    else:
        stream = torch.randint(0, a.vocab, (total, a.batch, a.seq + 1), generator=gen)
    times, loss0 = [], None
    for s in range(total):
        if a.dump:
            tokens = flat[s * n:(s + 1) * n].view(a.batch, a.seq)
            targets = flat[s * n + 1:(s + 1) * n + 1].view(a.batch, a.seq)
        else:
            tokens, targets = stream[s, :, :-1], stream[s, :, 1:]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model(tokens)
        loss = F.cross_entropy(logits.float().reshape(-1, a.vocab), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s == 0:
            loss0 = loss.item()
        if s >= a.warmup:
            times.append(dt)
        print(f"step {s + 1}{' (warm-up)' if s < a.warmup else ''}: loss {loss.item():.4f}, {1e3 * dt:.1f} ms",
              file=sys.stderr)
    step_s = statistics.median(times)
    tok_s = a.batch * a.seq / step_s
    flops = 6 * n_params + 6 * a.layers * a.dim * a.seq
    print(f"torch_bench mode=train tokens_per_s={tok_s:.1f} ms_per_step={1e3 * step_s:.2f} "
          f"gflops={flops * tok_s / 1e9:.1f} params={n_params} peak_rss_mb={peak_rss_mb():.1f} "
          f"threads={torch.get_num_threads()} precision={a.precision} loss0={loss0:.7f} torch={torch.__version__}")


def main():
    p = argparse.ArgumentParser(description="PyTorch peer of fm bench")
    p.add_argument("mode", choices=["train", "generate"])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="train: bf16 runs the forward under torch.autocast(cpu, bfloat16), fm's --precision bf16")
    p.add_argument("--dump", help="train: fm bench train --dump's directory (fm's weights and tokens)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    if a.mode == "train":
        bench_train(a)
    else:
        bench_generate(a)


if __name__ == "__main__":
    main()
