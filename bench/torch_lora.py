#!/usr/bin/python3
"""torch_lora.py — fm's LoRA training step beside a PyTorch LoRA peer of our own, same weights, same batch.

What it is for: issue 14's "fm at least 1.5x a PyTorch LoRA peer's tokens/s" on shape (ii)
(L6 C384 H6 V50257, B8 T128), measured so that the two sides provably do the same work:

 1. `fm bench train --lora R --dump DIR` makes the model (random GPT-2 weights from fm's seed), its
    LoRA adapter (A from fm's seed, B zero) and the token stream, and writes them: DIR/model
    (config.json, model.safetensors), DIR/adapter (PEFT's layout), DIR/tokens.bin (int32).
 2. The peer (this file with --worker DIR) reads exactly those: GPT-2 in plain PyTorch (no peft):
    pre-LayerNorm blocks, learned positions, tanh GELU, tied head; every base weight frozen
    (requires_grad False), a LoRA branch scale * (x A^T) B^T on each targeted product
    (scale = alpha / r = 1 for r 8, alpha 8, PEFT's GPT-2 default: c_attn only). A step is what
    fm bench's is: zero_grad, forward, mean cross-entropy over B*T tokens, backward,
    clip_grad_norm_(adapters, 1.0), AdamW over the adapters only (betas 0.9/0.95, eps 1e-8,
    weight decay 0.1, foreach). Step s reads tokens [s*B*T, (s+1)*B*T) of the stream and its
    targets one further, as fm does.
 3. Step-0 losses (before any update, so the base and the A matrices as written) must agree within
    1e-4 in every round; otherwise no ratio is reported (exit status 1).
 4. ROUNDS rounds, fm and the peer alternating which runs first, each a fresh process timing STEPS
    steps after WARMUP; each side's figure is the median step; the ratio reported is the median
    over the rounds of fm tokens/s / peer tokens/s.

The peer is written to be fair to PyTorch as bench/torch_peer.py is: F.linear on (out, in)
weights, a precomputed causal mask, fused cross-entropy, set_to_none gradients, torch's threads
set to --threads, flushed denormals, OpenBLAS's OpenMP build with OPENBLAS_CORETYPE=SkylakeX.

Usage:
  /usr/bin/python3 bench/torch_lora.py [--fm build/fm] [--rounds 5] [--steps 5] [--warmup 2] [--threads 2]
      [--layers 6 --dim 384 --heads 6 --vocab 50257 --batch 8 --seq 128] [--rank 8] [--targets c_attn]
  /usr/bin/python3 bench/torch_lora.py --worker DIR --batch B --seq T --steps N --warmup W --threads N
      (one peer run on a dump; prints a torch_lora line)
Prints the machine (CPU, FMA peak and triad bandwidth, before and after), each round, and
  torch_lora_compare rounds=... fm_tokens_per_s=... torch_tokens_per_s=... ratio=... loss0_fm=... loss0_torch=...
"""

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")  # before torch loads OpenBLAS
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from fm_dump import read_config, read_safetensors, read_stream, read_weights  # noqa: E402

BLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


# ---------------------------------------------------------------- the peer (worker)

def worker(args):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = read_config(args.worker)
    L, C, NH, V = cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["vocab_size"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    w = read_weights(args.worker)
    with open(os.path.join(args.worker, "adapter", "adapter_config.json")) as f:
        acfg = json.load(f)
    r, alpha = acfg["r"], acfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    aw = read_safetensors(os.path.join(args.worker, "adapter", "adapter_model.safetensors"))
    prefix = "base_model.model.transformer."

    def frozen(t):  # a base tensor: frozen, contiguous
        return t.contiguous().requires_grad_(False)

    def linear(name):  # Conv1D (in, out) -> F.linear's (out, in)
        return frozen(w[name + ".weight"].t()), frozen(w[name + ".bias"])

    adapters = {}  # (layer, product) -> (A (r, in), B (out, r)), trainable
    for l in range(L):
        for k in TARGETS:
            a_name = f"{prefix}h.{l}.{k}.lora_A.weight"
            if a_name in aw:
                adapters[(l, k)] = (aw[a_name].clone().requires_grad_(True),
                                    aw[f"{prefix}h.{l}.{k}.lora_B.weight"].clone().requires_grad_(True))
    if not adapters:
        sys.exit("torch_lora.py: the adapter has no LoRA matrices")
    params = [p for ab in adapters.values() for p in ab]
    wte, wpe = frozen(w["wte.weight"]), frozen(w["wpe.weight"])
    layers = []
    for l in range(L):
        h = f"h.{l}."
        layers.append({
            "ln1": (frozen(w[h + "ln_1.weight"]), frozen(w[h + "ln_1.bias"])),
            "ln2": (frozen(w[h + "ln_2.weight"]), frozen(w[h + "ln_2.bias"])),
            "attn.c_attn": linear(h + "attn.c_attn"), "attn.c_proj": linear(h + "attn.c_proj"),
            "mlp.c_fc": linear(h + "mlp.c_fc"), "mlp.c_proj": linear(h + "mlp.c_proj"),
        })
    lnf = (frozen(w["ln_f.weight"]), frozen(w["ln_f.bias"]))
    B, T = args.batch, args.seq
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    hs = C // NH

    def product(l, k, x):
        y = F.linear(x, *layers[l][k])
        ab = adapters.get((l, k))
        if ab is not None:
            y = y + F.linear(F.linear(x, ab[0]) * scale, ab[1])
        return y

    def forward(tokens):
        x = wte[tokens] + wpe[:T]
        for l in range(L):
            a = F.layer_norm(x, (C,), *layers[l]["ln1"], eps)
            q, k, v = product(l, "attn.c_attn", a).split(C, dim=2)
            q, k, v = [t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v)]
            s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            y = F.softmax(s.masked_fill(future, float("-inf")), dim=-1) @ v
            x = x + product(l, "attn.c_proj", y.transpose(1, 2).reshape(B, T, C))
            m = F.gelu(product(l, "mlp.c_fc", F.layer_norm(x, (C,), *layers[l]["ln2"], eps)), approximate="tanh")
            x = x + product(l, "mlp.c_proj", m)
        return F.linear(F.layer_norm(x, (C,), *lnf, eps), wte)

    n, total = B * T, args.warmup + args.steps
    stream = read_stream(args.worker, n * total + 1, "torch_lora.py")
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=True)
    times, loss0, loss = [], None, None
    for s in range(total):
        tokens = stream[s * n:(s + 1) * n].view(B, T)
        targets = stream[s * n + 1:(s + 1) * n + 1].view(B, T)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(tokens).view(n, V), targets.reshape(n))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s == 0:
            loss0 = loss.item()
        if s >= args.warmup:
            times.append(dt)
        print(f"step {s + 1}{' (warm-up)' if s < args.warmup else ''}: loss {loss.item():.4f}, {1e3 * dt:.1f} ms",
              file=sys.stderr)
    step = statistics.median(times)
    n_params = sum(t.numel() for t in w.values())
    print(f"torch_lora mode=train tokens_per_s={n / step:.1f} ms_per_step={1e3 * step:.2f} params={n_params} "
          f"trainable={sum(p.numel() for p in params)} "
          f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} threads={torch.get_num_threads()} "
          f"batch={B} seq={T} lora_r={r} loss={loss.item():.4f} loss0={loss0:.7f} torch={torch.__version__}")


# ---------------------------------------------------------------- the comparison (driver)

def field(line, key):
    for item in line.split():
        if item.startswith(key + "="):
            return item[len(key) + 1:]
    raise ValueError(f"no {key}= in: {line}")


def run_line(cmd, env, prefix):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith(prefix)]
    if p.returncode or not lines:
        sys.exit(f"torch_lora.py: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return lines[-1]


def machine(tools, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    peak = subprocess.run([os.path.join(tools, "fma_peak")], env=env, stdout=subprocess.PIPE, text=True).stdout
    bw = subprocess.run([os.path.join(tools, "membw")], env=env, stdout=subprocess.PIPE, text=True).stdout
    return (peak.splitlines() or ["?"])[0] + "\n" + bw.strip()


def driver(args):
    fm = args.fm
    if not os.access(fm, os.X_OK):
        sys.exit(f"torch_lora.py: {fm} not built (make BUILD=... BUILD/fm)")
    peer_env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX")
    if os.path.exists(os.path.join(BLAS_DIR, "libblas.so.3")):
        peer_env["LD_LIBRARY_PATH"] = BLAS_DIR + (":" + os.environ["LD_LIBRARY_PATH"]
                                                 if os.environ.get("LD_LIBRARY_PATH") else "")
    else:
        print(f"torch_lora.py: warning: {BLAS_DIR} missing; PyTorch runs on the default libblas.so.3",
              file=sys.stderr)
    shape = ["--layers", str(args.layers), "--dim", str(args.dim), "--heads", str(args.heads),
             "--vocab", str(args.vocab), "--batch", str(args.batch), "--seq", str(args.seq)]
    timing = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    lora = ["--lora", str(args.rank), "--lora-targets", args.targets]
    work = tempfile.mkdtemp(prefix="torch_lora.")
    try:
        tools = os.path.join(work, "tools")
        os.mkdir(tools)
        subprocess.run(["gcc", "-O2", "-march=native", "-ffp-contract=fast", "-fopenmp",
                        os.path.join(HERE, "fma_peak.c"), "-o", os.path.join(tools, "fma_peak")], check=True)
        subprocess.run(["gcc", "-O2", "-march=native", "-fopenmp", os.path.join(HERE, "membw.c"),
                        "-o", os.path.join(tools, "membw")], check=True)
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"machine: {os.cpu_count()} cores, {cpu}; load average {open('/proc/loadavg').read().split()[:3]}")
        print("== machine before\n" + machine(tools, args.threads))
        torch_v = subprocess.run(["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"],
                                 env=peer_env, stdout=subprocess.PIPE, text=True).stdout.strip()
        print(f"peer: torch {torch_v}, OPENBLAS_CORETYPE=SkylakeX, {peer_env.get('LD_LIBRARY_PATH', '')}")
        dump = os.path.join(work, "dump")
        fm_cmd = [fm, "bench", "train", *shape, *timing, *lora]
        line = run_line(fm_cmd + ["--dump", dump], None, "fm_bench")
        print(f"dump run (not counted): {line}")
        peer_cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--worker", dump,
                    "--batch", str(args.batch), "--seq", str(args.seq), *timing]
        fm_tok, torch_tok, ratios, fm_loss0, torch_loss0 = [], [], [], [], []
        for r in range(1, args.rounds + 1):
            order = ("fm", "torch") if r % 2 else ("torch", "fm")
            got = {}
            for side in order:
                got[side] = run_line(fm_cmd, None, "fm_bench") if side == "fm" else \
                    run_line(peer_cmd, peer_env, "torch_lora")
            f, t = float(field(got["fm"], "tokens_per_s")), float(field(got["torch"], "tokens_per_s"))
            lf, lt = float(field(got["fm"], "loss0")), float(field(got["torch"], "loss0"))
            fm_tok.append(f), torch_tok.append(t), ratios.append(f / t), fm_loss0.append(lf), torch_loss0.append(lt)
            print(f"round {r} ({order[0]} first): fm {f:.1f} tok/s ({field(got['fm'], 'ms_per_step')} ms, "
                  f"RSS {field(got['fm'], 'peak_rss_mb')} MiB), torch {t:.1f} tok/s "
                  f"({field(got['torch'], 'ms_per_step')} ms, RSS {field(got['torch'], 'peak_rss_mb')} MiB), "
                  f"fm/torch {f / t:.3f}; step-0 loss fm {lf:.7f} torch {lt:.7f} (diff {abs(lf - lt):.2e})",
                  flush=True)
        print("== machine after\n" + machine(tools, args.threads))
        worst = max(abs(a - b) for a, b in zip(fm_loss0, torch_loss0))
        if worst > 1e-4:
            print(f"torch_lora.py: step-0 losses differ by {worst:.3e} > 1e-4: the peer does not reproduce fm; "
                  "no ratio reported", file=sys.stderr)
            return 1
        print(f"torch_lora_compare rounds={args.rounds} steps={args.steps} warmup={args.warmup} "
              f"threads={args.threads} shape=L{args.layers}C{args.dim}H{args.heads}V{args.vocab}B{args.batch}T{args.seq} "
              f"lora_r={args.rank} targets={args.targets} fm_tokens_per_s={statistics.median(fm_tok):.1f} "
              f"torch_tokens_per_s={statistics.median(torch_tok):.1f} ratio={statistics.median(ratios):.3f} "
              f"ratio_min={min(ratios):.3f} ratio_max={max(ratios):.3f} loss0_fm={fm_loss0[0]:.7f} "
              f"loss0_torch={torch_loss0[0]:.7f} loss0_max_diff={worst:.2e}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fm", default=os.path.join(ROOT, "build", "fm"))
    p.add_argument("--worker", metavar="DIR", help="run the peer alone on a --dump directory")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="c_attn")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
