#!/usr/bin/python3
"""probe_sklearn.py — fm's raw-pixel linear probe beside scikit-learn's LogisticRegression.

What it is for: checking that `fm probe`'s logistic regression (src/eval/logreg.c) agrees with
scikit-learn's on the same problem: all training images' pixels, standardised with the training
rows' mean and sd (StandardScaler), the L2 strength fm chose on its held-out part (lambda in
mean cross-entropy + lambda/2 ||W||^2, i.e. C = 1 / (lambda n)), scored on every test image. The
two test accuracies must agree within --tolerance (0.5 points). What it is not for: choosing
anything (the strength is fm's), or the few-labels settings (fm's draws are its own).

Usage: bench/probe_sklearn.py --fm build/fm [--fm-json FILE] [--train-images IDX ...]
  --fm-json: the output of `fm probe --features pixels --per-class all --json` already run
  (otherwise this script runs it). Needs Debian's python3-sklearn (run with /usr/bin/python3).
Prints both accuracies and their difference; exits 1 when they disagree by more than the tolerance.
"""
import argparse
import gzip
import json
import subprocess
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array: (count, rows, cols) images or (count) labels."""
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fm", default="build/fm")
    ap.add_argument("--fm-json", help="fm probe's JSON output (pixels, all labels) instead of running it")
    ap.add_argument("--train-images", default=f"{DATA}/train-images-idx3-ubyte.gz")
    ap.add_argument("--train-labels", default=f"{DATA}/train-labels-idx1-ubyte.gz")
    ap.add_argument("--test-images", default=f"{DATA}/t10k-images-idx3-ubyte.gz")
    ap.add_argument("--test-labels", default=f"{DATA}/t10k-labels-idx1-ubyte.gz")
    ap.add_argument("--tolerance", type=float, default=0.005, help="largest accuracy difference allowed (0.005)")
    ap.add_argument("--max-iter", type=int, default=1000)
    args = ap.parse_args()

    if args.fm_json:
        with open(args.fm_json) as f:
            result = json.load(f)
    else:
        cmd = [args.fm, "probe", "--features", "pixels", "--per-class", "all", "--json",
               "--train-images", args.train_images, "--train-labels", args.train_labels,
               "--test-images", args.test_images, "--test-labels", args.test_labels]
        t0 = time.time()
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        print(f"fm probe (pixels, all labels): {time.time() - t0:.1f} s")
        result = json.loads(out)
    fm_all = result["results"]["pixels"]["all"]
    fm_acc, lam = fm_all["draws"][0], fm_all["strengths"][0]

    Xtr = read_idx(args.train_images)
    Xtr = Xtr.reshape(Xtr.shape[0], -1).astype(np.float64)
    ytr = read_idx(args.train_labels).astype(np.int64)
    Xte = read_idx(args.test_images)
    Xte = Xte.reshape(Xte.shape[0], -1).astype(np.float64)
    yte = read_idx(args.test_labels).astype(np.int64)
    scaler = StandardScaler().fit(Xtr)
    n = Xtr.shape[0]
    t0 = time.time()
    clf = LogisticRegression(C=1.0 / (lam * n), max_iter=args.max_iter, tol=1e-4)  # fm's tolerance too
    clf.fit(scaler.transform(Xtr), ytr)
    sk_acc = float((clf.predict(scaler.transform(Xte)) == yte).mean())
    print(f"scikit-learn LogisticRegression (C = 1/(lambda n) = {1.0 / (lam * n):.6g}, lbfgs, "
          f"{int(clf.n_iter_[0])} iterations): {time.time() - t0:.1f} s")
    diff = fm_acc - sk_acc
    print(f"lambda {lam:g}, {n} training and {len(yte)} test images")
    print(f"fm probe test accuracy:      {fm_acc:.4f}")
    print(f"scikit-learn test accuracy:  {sk_acc:.4f}")
    print(f"difference: {100 * diff:+.2f} points (tolerance {100 * args.tolerance:.2f})")
    return 0 if abs(diff) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
