#!/usr/bin/env bash
# base-corpus.sh OUT_DIR — the English base model's corpus (docs/base-model.md), from text Debian
# installs (scripts/install-deps.sh --base): the King James Bible, WordNet's glosses, the GCIDE
# dictionary and the fortunes. Writes OUT_DIR/train.txt and OUT_DIR/val.txt (the held-out text:
# the last 5% of the King James verses, as `make demo` holds out, 5% of the WordNet synsets, 2% of
# the GCIDE articles, 5% of the fortunes) and OUT_DIR/sources.tsv (documents, lines and bytes per
# source and split). Deterministic: the same packages give the same bytes. The work is done by
# scripts/textdata.py (python3, standard library only), which scripts/make-tasks.sh shares, so the
# tasks' test items come from exactly what is held out here.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: scripts/base-corpus.sh OUT_DIR" >&2
    exit 2
fi
exec /usr/bin/python3 "$(dirname "$0")/textdata.py" corpus "$1"
