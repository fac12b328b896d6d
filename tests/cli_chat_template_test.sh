#!/usr/bin/env bash
# cli_chat_template_test.sh — the chat_template fm writes into tokenizer_config.json renders, with
# npm's @huggingface/jinja (what transformers.js and the Hugging Face Hub use), exactly what
# fm_chat_render gives: BUILD/tests/test_chat_template --write DIR writes the config and hard
# conversations (quotes, backslashes, newlines, unicode, "{{", "<|endoftext|>" in content, empty
# content, a system message first, many turns) with fm's text, and tests/jinja/check_template.mjs
# renders each with add_generation_prompt false and true and fails on any difference; an unknown
# role must fail in both.
# The npm package is installed with `npm ci` from tests/jinja/package-lock.json into BUILD/npm-jinja
# (never into the repository). Skipped, saying so, only when node is not installed; CI installs
# nodejs and npm (scripts/install-deps.sh --node).
# Usage: tests/cli_chat_template_test.sh PATH/TO/fm     Prints "N passed, N failed".
set -u
FM=$(realpath "${1:?usage: cli_chat_template_test.sh PATH/TO/fm}")
BUILD=$(dirname "$FM")
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
source "$ROOT/tests/cli_lib.sh"
tmp=$(mktemp -d /tmp/fm_chat_template_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if ! command -v node >/dev/null; then
    echo "SKIP: node is not installed (apt-get install nodejs npm, or scripts/install-deps.sh --node)"
    skipped=$((skipped + 1))
    summary "cli_chat_template_test"
    exit
fi

prog=$BUILD/tests/test_chat_template
[ -x "$prog" ] || make -C "$ROOT" --no-print-directory BUILD="$BUILD" "$prog" >/dev/null ||
    { bad "cannot build $prog"; summary "cli_chat_template_test"; exit; }

# @huggingface/jinja at the locked version, installed once per build folder
npm_dir=$BUILD/npm-jinja
if ! cmp -s "$ROOT/tests/jinja/package-lock.json" "$npm_dir/package-lock.json" ||
    [ ! -d "$npm_dir/node_modules/@huggingface/jinja" ]; then
    rm -rf "$npm_dir"
    mkdir -p "$npm_dir"
    cp "$ROOT/tests/jinja/package.json" "$ROOT/tests/jinja/package-lock.json" "$npm_dir/"
    if ! out=$(cd "$npm_dir" && npm ci --no-audit --no-fund 2>&1); then
        bad "npm ci in $npm_dir failed (the npm registry must be reachable once):"
        sed 's/^/    /' <<<"$out" | tail -5
        rm -rf "$npm_dir"
        summary "cli_chat_template_test"
        exit
    fi
fi

expect "test_chat_template --write" 0 "" -- "$prog" --write "$tmp"
expect "the Jinja template renders as fm_chat_render" 0 "render identically" -- \
    node "$ROOT/tests/jinja/check_template.mjs" "$npm_dir/node_modules" "$tmp/tokenizer_config.json" \
    "$tmp/conversations.json"

# the check does catch a difference: one rendering changed by a character
sed '/"render"/s/Hello there\./Hello there!/' "$tmp/conversations.json" >"$tmp/changed.json"
expect "a changed rendering is reported" 1 "differs at character" -- \
    node "$ROOT/tests/jinja/check_template.mjs" "$npm_dir/node_modules" "$tmp/tokenizer_config.json" \
    "$tmp/changed.json"

summary "cli_chat_template_test"
