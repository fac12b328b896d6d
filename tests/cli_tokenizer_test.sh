#!/usr/bin/env bash
# cli_tokenizer_test.sh — `fm tokenizer train|encode|decode` from the outside: flags, exit codes,
# messages, exact round trips through files and pipes, and GPT-2's files.
# Usage: tests/cli_tokenizer_test.sh PATH/TO/fm    Prints "N passed, N failed"; exits non-zero on failure.
set -u
FM=${1:?usage: cli_tokenizer_test.sh PATH/TO/fm}
tmp=$(mktemp -d /tmp/fm_cli_tok_XXXXXX)
trap 'cleanup_unwritable; rm -rf "$tmp"' EXIT
source "$(dirname "$0")/cli_lib.sh"

# check NAME COMMAND...: the command succeeds
check() {
    local name=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL $name"; fi
}

expect "help lists tokenizer" 0 "tokenizer" -- "$FM" help
expect "no subcommand" 2 "expected 'train', 'encode' or 'decode'" -- "$FM" tokenizer
expect "unknown subcommand" 2 "'frob' is not one of train, encode, decode" -- "$FM" tokenizer frob
expect "tokenizer help" 0 "fm tokenizer train --vocab N" -- "$FM" tokenizer --help
expect "train help" 0 "--vocab" -- "$FM" tokenizer train --help

# a corpus: a few sentences many times over
for i in $(seq 1 200); do echo "The quick brown fox $i jumps over the lazy dog's back; it's $((i * 7)) o'clock."; done >"$tmp/corpus.txt"
expect "train needs --vocab" 2 "--vocab N is required" -- "$FM" tokenizer train --out "$tmp/t.json" "$tmp/corpus.txt"
expect "train needs --out" 2 "--out FILE is required" -- "$FM" tokenizer train --vocab 300 "$tmp/corpus.txt"
expect "train needs a corpus" 2 "no corpus files given" -- "$FM" tokenizer train --vocab 300 --out "$tmp/t.json"
expect "vocab too small" 2 "--vocab: 261 is out of range \[262, 1.67772e\+07\]" -- \
    "$FM" tokenizer train --vocab 261 --out "$tmp/t.json" "$tmp/corpus.txt"
expect "vocab huge" 2 "--vocab: 99999999999 is out of range" -- \
    "$FM" tokenizer train --vocab 99999999999 --out "$tmp/t.json" "$tmp/corpus.txt"
expect "vocab not a number" 2 "--vocab: 'many' is not a number" -- \
    "$FM" tokenizer train --vocab many --out "$tmp/t.json" "$tmp/corpus.txt"
expect "missing corpus" 1 "$tmp/none.txt: cannot open" -- \
    "$FM" tokenizer train --vocab 300 --out "$tmp/t.json" "$tmp/none.txt"
: >"$tmp/empty.txt"
expect "empty corpus" 1 "the corpus is empty" -- "$FM" tokenizer train --vocab 300 --out "$tmp/t.json" "$tmp/empty.txt"
expect "out in a missing folder" 1 "$tmp/no/dir/t.json" -- \
    "$FM" tokenizer train --vocab 300 --out "$tmp/no/dir/t.json" "$tmp/corpus.txt"
[ -e "$tmp/t.json" ] && { failed=$((failed + 1)); echo "FAIL a refused train left $tmp/t.json"; }
# a folder nobody may write into, root included (unwritable in cli_lib.sh)
mkdir "$tmp/ro"
if unwritable "$tmp/ro"; then
    expect "out in a read-only folder ($unwritable_how)" 1 "$tmp/ro/t.json.*($why_unwritable)" -- \
        "${as_writer[@]}" "$FM" tokenizer train --vocab 300 --out "$tmp/ro/t.json" "$tmp/corpus.txt"
    writable "$tmp/ro"
    check "a refused train leaves the read-only folder empty" test -z "$(ls -A "$tmp/ro")"
else
    skip_case "out in a read-only folder" "$unwritable_why"
fi

expect "train" 0 "trained 300 tokens from .* bytes in 2 files" -- \
    "$FM" tokenizer train --vocab 300 --out "$tmp/t.json" "$tmp/corpus.txt" "$tmp/corpus.txt"
check "no temporary files" test -z "$(ls "$tmp" | grep '\.tmp\.')"
expect "train stops early" 0 "fewer than the 100000 asked for" -- \
    "$FM" tokenizer train --vocab 100000 --out "$tmp/big.json" "$tmp/corpus.txt"

# encode / decode: exact bytes back, from a file and from a pipe, invalid UTF-8 included
printf 'Hello \xff\xfe world\r\n\t caf\xc3\xa9 \xe2\x82 <|endoftext|> 123456789\n\n' >"$tmp/text.bin"
expect "encode needs --tokenizer" 2 "--tokenizer F is required" -- "$FM" tokenizer encode "$tmp/text.bin"
expect "encode missing tokenizer" 1 "cannot open $tmp/none.json" -- "$FM" tokenizer encode --tokenizer "$tmp/none.json" "$tmp/text.bin"
printf '{"model": {"vocab": ' >"$tmp/bad.json"
expect "encode corrupt tokenizer" 1 "bad.json: invalid JSON" -- "$FM" tokenizer encode --tokenizer "$tmp/bad.json" "$tmp/text.bin"
expect "encode missing input" 1 "$tmp/none.txt: cannot open" -- "$FM" tokenizer encode --tokenizer "$tmp/t.json" "$tmp/none.txt"
expect "encode extra argument" 2 "unexpected argument" -- "$FM" tokenizer encode --tokenizer "$tmp/t.json" "$tmp/text.bin" x
expect "encode prints ids" 0 "^[0-9]+( [0-9]+)+$" -- "$FM" tokenizer encode --tokenizer "$tmp/t.json" "$tmp/text.bin"
"$FM" tokenizer encode --tokenizer "$tmp/t.json" "$tmp/text.bin" >"$tmp/ids.txt"
"$FM" tokenizer decode --tokenizer "$tmp/t.json" "$tmp/ids.txt" >"$tmp/back.bin"
check "round trip through files" cmp -s "$tmp/text.bin" "$tmp/back.bin"
"$FM" tokenizer encode --tokenizer "$tmp/t.json" <"$tmp/text.bin" | "$FM" tokenizer decode --tokenizer "$tmp/t.json" >"$tmp/back2.bin"
check "round trip through pipes" cmp -s "$tmp/text.bin" "$tmp/back2.bin"
head -c 30000 /dev/urandom >"$tmp/random.bin"
"$FM" tokenizer encode --tokenizer "$tmp/t.json" "$tmp/random.bin" | "$FM" tokenizer decode --tokenizer "$tmp/t.json" - >"$tmp/random.back"
check "round trip of random bytes" cmp -s "$tmp/random.bin" "$tmp/random.back"
expect "special token not allowed" 0 "^([0-9]+ ){3,}[0-9]+$" -- \
    sh -c "printf '<|endoftext|>' | '$FM' tokenizer encode --tokenizer '$tmp/t.json'"
expect "special token allowed" 0 "^294$" -- \
    sh -c "printf '<|endoftext|>' | '$FM' tokenizer encode --allow-special --tokenizer '$tmp/t.json'"
expect "empty input" 0 "^$" -- sh -c "'$FM' tokenizer encode --tokenizer '$tmp/t.json' <'$tmp/empty.txt'"
expect "decode bad id" 2 "token id '300' is not in \[0, 300\)" -- \
    sh -c "echo '1 2 300' | '$FM' tokenizer decode --tokenizer '$tmp/t.json'"
expect "decode not a number" 2 "token id 'abc' is not in" -- \
    sh -c "echo '1 abc' | '$FM' tokenizer decode --tokenizer '$tmp/t.json'"
expect "decode special" 0 "^<\|user\|>$" -- sh -c "echo 298 | '$FM' tokenizer decode --tokenizer '$tmp/t.json'"

# GPT-2's own files (committed gzip-compressed), as a folder
mkdir -p "$tmp/gpt2"
fixtures=$(dirname "$0")/fixtures/tokenizer/gpt2
gzip -dc "$fixtures/encoder.json.gz" >"$tmp/gpt2/encoder.json"
gzip -dc "$fixtures/vocab.bpe.gz" >"$tmp/gpt2/vocab.bpe"
expect "gpt2 encode" 0 "^15496 995 0 632 338 220 50256$" -- \
    sh -c "printf 'Hello world! It'\''s <|endoftext|>' | '$FM' tokenizer encode --allow-special --tokenizer '$tmp/gpt2'"
expect "gpt2 decode" 0 "^Hello world$" -- sh -c "echo 15496,995 | '$FM' tokenizer decode --tokenizer '$tmp/gpt2'"
expect "missing tokenizer folder" 1 "cannot open $tmp/no-such: No such file" -- \
    "$FM" tokenizer encode --tokenizer "$tmp/no-such" "$tmp/text.bin"
mkdir -p "$tmp/emptydir"
expect "folder without tokenizer" 1 "emptydir holds no tokenizer.json, encoder.json \+ vocab.bpe" -- "$FM" tokenizer encode --tokenizer "$tmp/emptydir" "$tmp/text.bin"

summary "cli tokenizer"
