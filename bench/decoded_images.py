#!/usr/bin/python3
"""decoded_images.py — an IDX image file as an image tokenizer sees it: every patch replaced by its
nearest code's centroid (what `fm complete` would draw from the tokens), written as a plain IDX file.

What it is for: measuring how much a tokenizer's lossy codes cost a linear probe, by running
`fm probe --features pixels` on the decoded training and test images beside the raw ones
(docs/probe.md, "What the tokenizer keeps"). The nearest code is found in squared distance as
src/tokenizer/image_tokenizer.c does; pixels are rounded to 0..255.
Usage: /usr/bin/python3 bench/decoded_images.py TOKENIZER_DIR IN.idx[.gz] OUT.idx   (needs numpy)
Prints the mean squared error per pixel (0..255 units).
"""
import gzip
import json
import struct
import sys

import numpy as np


def main():
    tok_dir, src, dst = sys.argv[1:4]
    t = json.load(open(tok_dir + "/image_tokenizer.json"))
    P = t["patch"]
    centroids = np.array(t["codebook"], dtype=np.float32)  # (K, P * P)
    raw = (gzip.open if src.endswith(".gz") else open)(src, "rb").read()
    magic, n, R, C = struct.unpack(">IIII", raw[:16])
    if magic != 0x803 or R % P or C % P:
        sys.exit(f"{src}: not IDX images whose sides {P} divides")
    images = np.frombuffer(raw, np.uint8, offset=16, count=n * R * C).reshape(n, R, C).astype(np.float32)
    # (n, R/P, P, C/P, P) -> (n * R/P * C/P, P * P): each patch's pixels in raster order
    patches = images.reshape(n, R // P, P, C // P, P).transpose(0, 1, 3, 2, 4).reshape(-1, P * P)
    norms = (centroids * centroids).sum(1)
    decoded = np.empty_like(patches)
    for i in range(0, len(patches), 200000):
        part = patches[i:i + 200000]
        nearest = (norms[None, :] - 2 * part @ centroids.T).argmin(1)
        decoded[i:i + 200000] = centroids[nearest]
    out = decoded.reshape(n, R // P, C // P, P, P).transpose(0, 1, 3, 2, 4).reshape(n, R, C)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    print(f"{dst}: {n} images, MSE {((out.astype(np.float32) - images) ** 2).mean():.2f} per pixel")
    open(dst, "wb").write(struct.pack(">IIII", magic, n, R, C) + out.tobytes())


if __name__ == "__main__":
    main()
