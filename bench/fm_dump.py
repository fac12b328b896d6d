"""fm_dump.py — reads what `fm bench train --dump DIR` writes, for the PyTorch peers in bench/.

DIR/model holds config.json and model.safetensors (float32, GPT-2's names, Conv1D weights stored
(in, out)); DIR/tokens.bin holds the run's token stream as int32: step s reads tokens
[s*B*T, (s+1)*B*T) and its targets one further. Used by torch_peer.py (full training) and
torch_lora.py (LoRA), so that a peer runs on fm's own weights and batches and its step-0 loss can
be compared with fm's.
"""

import json
import os
import struct


def read_safetensors(path):
    """dict name -> float32 torch tensor of an F32 safetensors file."""
    import torch
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {t['dtype']}, not F32")
        b, e = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(t["shape"])
    return out


def read_config(dump):
    """The model's config.json as a dict."""
    with open(os.path.join(dump, "model", "config.json")) as f:
        return json.load(f)


def read_weights(dump):
    """The model's tensors by GPT-2 name without a "transformer." prefix (wte.weight, h.0.ln_1.weight, ...)."""
    w = read_safetensors(os.path.join(dump, "model", "model.safetensors"))
    return {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in w.items()}


def read_stream(dump, need, who):
    """The token stream as a 1-D int64 tensor of at least `need` ids; exits naming `who` if shorter."""
    import sys
    import torch
    with open(os.path.join(dump, "tokens.bin"), "rb") as f:
        stream = torch.frombuffer(bytearray(f.read()), dtype=torch.int32).long()
    if stream.numel() < need:
        sys.exit(f"{who}: tokens.bin holds {stream.numel()} tokens, {need} needed")
    return stream
