#!/usr/bin/env python3
# inspect_gguf.py — reads a GGUF file that `fm export gguf` wrote, byte by byte with the standard
# library only, and checks it against the model directory it came from (tests/cli_gguf_test.sh):
#   structure  magic "GGUF", version 3, the counts, every metadata value's type, the tensor infos,
#              offsets from 0 in order, each padded to general.alignment (32), the data section
#              aligned, the file's size exactly the data section's end
#   metadata   general.architecture "gpt2", the gpt2.* hyper-parameters = config.json's,
#              general.file_type, the tokenizer (tokens = tokenizer.json's byte-level vocabulary,
#              special tokens CONTROL and the rest NORMAL, merges in order, bos/eos/padding =
#              <|endoftext|>), tokenizer.chat_template = tokenizer_config.json's (or absent)
#   tensors    llama.cpp's gpt2 names and shapes, the types (1-D f32; matrices TYPE, q8_0 rows that
#              are not whole blocks f16), and every value against model.safetensors: f32 exact,
#              f16 the nearest half, q8_0 each block's scale = f16(max|w| / 127) and |w - d q| <= d / 2
# Usage: inspect_gguf.py FILE.gguf MODEL_DIR f32|f16|q8_0     Prints one line; exit 1 on a problem.
import json
import math
import os
import struct
import sys
from array import array

path, model_dir, want_type = sys.argv[1:4]
problems = []


def fail(msg):
    problems.append(msg)


data = open(path, "rb").read()
pos = 0


def take(fmt):
    global pos
    vals = struct.unpack_from("<" + fmt, data, pos)
    pos += struct.calcsize("<" + fmt)
    return vals[0] if len(vals) == 1 else vals


def take_str():
    global pos
    n = take("Q")
    s = data[pos:pos + n]
    pos += n
    return s.decode("utf-8")


SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
kv_types = {}


def take_value(t):
    if t in SCALARS:
        return take(SCALARS[t])
    if t == 8:
        return take_str()
    if t == 9:
        et, n = take("I"), take("Q")
        return [take_value(et) for _ in range(n)], et
    raise ValueError("unknown value type %d" % t)


# ---- header, metadata, tensor infos
if data[:4] != b"GGUF":
    sys.exit("FAIL %s: magic %r" % (path, data[:4]))
pos = 4
version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
if version != 3:
    fail("version %d" % version)
kv = {}
for _ in range(n_kv):
    key = take_str()
    t = take("I")
    if key in kv:
        fail("key %s twice" % key)
    kv[key], kv_types[key] = take_value(t), t
infos = []
for _ in range(n_tensors):
    name = take_str()
    nd = take("I")
    ne = [take("Q") for _ in range(nd)]
    infos.append((name, ne, take("I"), take("Q")))
align = kv.get("general.alignment", 32)
if kv_types.get("general.alignment", 4) != 4 or align != 32:
    fail("general.alignment %r (type %r)" % (align, kv_types.get("general.alignment")))
pad = lambda n: (n + align - 1) // align * align
start = pad(pos)
if any(data[pos:start]):
    fail("non-zero padding before the data section")

TYPES = {0: "f32", 1: "f16", 8: "q8_0"}


def nbytes(ne, t):
    rows = math.prod(ne[1:])
    return {0: 4 * ne[0], 1: 2 * ne[0], 8: ne[0] // 32 * 34}[t] * rows


offset = 0
for name, ne, t, off in infos:
    if t not in TYPES:
        fail("%s: type %d" % (name, t))
        continue
    if off != offset:
        fail("%s: offset %d, expected %d" % (name, off, offset))
    offset = off + pad(nbytes(ne, t))
if start + offset != len(data):
    fail("file size %d, the data section ends at %d" % (len(data), start + offset))

# ---- metadata against config.json, tokenizer.json, tokenizer_config.json
cfg = json.load(open(os.path.join(model_dir, "config.json")))
C, L, NH, V = cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]
P = cfg.get("n_positions", cfg.get("n_ctx"))
H = cfg.get("n_inner") or 4 * C
want_kv = {"general.architecture": "gpt2", "gpt2.context_length": P, "gpt2.embedding_length": C,
           "gpt2.feed_forward_length": H, "gpt2.block_count": L, "gpt2.attention.head_count": NH,
           "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[want_type],
           "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
           "tokenizer.ggml.add_bos_token": False}
for k, v in want_kv.items():
    if kv.get(k) != v:
        fail("%s = %r, expected %r" % (k, kv.get(k), v))
eps = kv.get("gpt2.attention.layer_norm_epsilon")
if kv_types.get("gpt2.attention.layer_norm_epsilon") != 6 or abs(eps - cfg["layer_norm_epsilon"]) > 1e-12:
    fail("layer_norm_epsilon %r" % eps)

tj = json.load(open(os.path.join(model_dir, "tokenizer.json")))
tokens, tt = kv["tokenizer.ggml.tokens"][0], kv["tokenizer.ggml.token_type"][0]
want_tokens = ["[PAD%d]" % i for i in range(V)]
for text, i in tj["model"]["vocab"].items():
    want_tokens[i] = text
special = {a["id"]: a["content"] for a in tj["added_tokens"] if a.get("special")}
for i, text in special.items():
    want_tokens[i] = text
if tokens != want_tokens:
    bad = [i for i in range(min(len(tokens), V)) if tokens[i] != want_tokens[i]]
    fail("tokens differ from tokenizer.json (%d tokens, first difference at %s)" % (len(tokens), bad[:3]))
if tt != [3 if i in special else 1 for i in range(V)]:
    fail("token types: specials must be CONTROL (3), the rest NORMAL (1)")
merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
if kv["tokenizer.ggml.merges"][0] != merges:
    fail("merges differ from tokenizer.json")
end = [i for i, text in special.items() if text == "<|endoftext|>"]
for k in ("bos", "eos", "padding"):
    if kv.get("tokenizer.ggml.%s_token_id" % k) != (end[0] if end else None):
        fail("%s_token_id %r, <|endoftext|> is %r" % (k, kv.get("tokenizer.ggml.%s_token_id" % k), end))
template = None
tc_path = os.path.join(model_dir, "tokenizer_config.json")
if os.path.exists(tc_path):
    template = json.load(open(tc_path)).get("chat_template")
    if isinstance(template, list):
        template = [t["template"] for t in template if t.get("name") == "default"][0]
if kv.get("tokenizer.chat_template") != template:
    fail("chat_template %r, tokenizer_config.json's %r" % (kv.get("tokenizer.chat_template"), template))


# ---- tensors against model.safetensors
def read_safetensors(p):
    raw = open(p, "rb").read()
    n = struct.unpack_from("<Q", raw)[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        if h["dtype"] != "F32":
            sys.exit("inspect_gguf.py: %s is %s; only float32 models are compared" % (name, h["dtype"]))
        a = array("f")
        b, e = h["data_offsets"]
        a.frombytes(raw[8 + n + b:8 + n + e])
        out[name.removeprefix("transformer.")] = (a, h["shape"])
    return out


st = read_safetensors(os.path.join(model_dir, "model.safetensors"))
# GGUF name -> (fm name, transposed)
want = {"token_embd.weight": ("wte.weight", False), "position_embd.weight": ("wpe.weight", False),
        "output_norm.weight": ("ln_f.weight", False), "output_norm.bias": ("ln_f.bias", False)}
for l in range(L):
    for g, f, tr in (("attn_norm", "ln_1", 0), ("attn_qkv", "attn.c_attn", 1), ("attn_output", "attn.c_proj", 1),
                     ("ffn_norm", "ln_2", 0), ("ffn_up", "mlp.c_fc", 1), ("ffn_down", "mlp.c_proj", 1)):
        want["blk.%d.%s.weight" % (l, g)] = ("h.%d.%s.weight" % (l, f), bool(tr))
        want["blk.%d.%s.bias" % (l, g)] = ("h.%d.%s.bias" % (l, f), False)
names = [i[0] for i in infos]
if sorted(names) != sorted(want):
    fail("tensors %s missing, %s unexpected" % (sorted(set(want) - set(names)), sorted(set(names) - set(want))))


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f16(x):
    try:
        return struct.unpack("<e", struct.pack("<e", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


counts = {"f32": 0, "f16": 0, "q8_0": 0}
for name, ne, t, off in infos:
    if name not in want or t not in TYPES:
        continue
    src, shape = st[want[name][0]]
    transposed = want[name][1]
    rows, cols = (shape[1], shape[0]) if transposed else ((shape[0], shape[1]) if len(shape) == 2 else (1, shape[0]))
    if ne != ([cols, rows] if len(shape) == 2 else [cols]):
        fail("%s: ne %s, expected %s" % (name, ne, [cols, rows] if len(shape) == 2 else [cols]))
        continue
    expect_t = 0 if len(shape) == 1 else {"f32": 0, "f16": 1, "q8_0": 8}[want_type]
    if expect_t == 8 and cols % 32:
        expect_t = 1
    if t != expect_t:
        fail("%s: type %s, expected %s" % (name, TYPES[t], TYPES[expect_t]))
        continue
    counts[TYPES[t]] += 1
    blob = data[start + off:start + off + nbytes(ne, t)]
    value = (lambda r, c: src[c * rows + r]) if transposed else (lambda r, c: src[r * cols + c])
    worst = 0.0
    for r in range(rows):
        if t == 0:
            got = array("f")
            got.frombytes(blob[r * cols * 4:(r + 1) * cols * 4])
            if any(got[c] != value(r, c) for c in range(cols)):
                fail("%s: row %d differs" % (name, r))
                break
        elif t == 1:
            got = struct.unpack_from("<%de" % cols, blob, r * cols * 2)
            if any(got[c] != f16(value(r, c)) for c in range(cols)):
                fail("%s: row %d is not the nearest half" % (name, r))
                break
        else:
            for b in range(cols // 32):
                at = (r * (cols // 32) + b) * 34
                d = struct.unpack_from("<e", blob, at)[0]
                q = struct.unpack_from("<32b", blob, at + 2)
                w = [value(r, b * 32 + i) for i in range(32)]
                if d != f16(f32(max(abs(x) for x in w) / 127)):
                    fail("%s: row %d block %d: scale %r" % (name, r, b, d))
                err = max(abs(w[i] - d * q[i]) for i in range(32))
                worst = max(worst, err / d if d else err)
    if worst > 0.5 + 1e-3:
        fail("%s: a q8_0 weight is %.3f scales from its value" % (name, worst))

if problems:
    print("FAIL %s: %s" % (path, "; ".join(problems[:6])))
    sys.exit(1)
print("ok %s: GGUF v%d, %d metadata keys, %d tensors (%s), data at %d, %d bytes" % (
    os.path.basename(path), version, n_kv, n_tensors, ", ".join("%d %s" % (n, k) for k, n in counts.items() if n),
    start, len(data)))
