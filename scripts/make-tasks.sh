#!/usr/bin/env bash
# make-tasks.sh OUT_DIR — the built-in evaluation tasks (docs/tasks.md) as JSONL files in OUT_DIR:
# kjv_cloze, kjv_book, kjv_next, kjv_heldout (the King James verses `make demo` holds out) and
# wn_define, wn_word, wn_hypernym, wn_antonym (the WordNet synsets `make base` holds out). Needs
# bible-kjv and wordnet-base (scripts/install-deps.sh --base). Deterministic: fixed seeds; the
# work is done by scripts/textdata.py (python3, standard library only), which
# scripts/base-corpus.sh shares.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: scripts/make-tasks.sh OUT_DIR" >&2
    exit 2
fi
exec /usr/bin/python3 "$(dirname "$0")/textdata.py" tasks "$1"
