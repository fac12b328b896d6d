#!/usr/bin/env bash
# cli_serve_page_test.sh — fm serve's chat page at "/" (src/serve/chat.html, built into the
# binary). With curl: GET / gives the page as text/html without the API key (the page asks for
# the key itself), other methods 405, and the API still wants the key. Then in headless Chromium
# (Debian's chromium, driven by npm's playwright-core at the version tests/serve_page/package-lock.json
# locks, installed with `npm ci` into BUILD/npm-serve-page): tests/serve_page/page.mjs types the
# key, sends messages, waits for the streamed replies and checks them against the API's greedy
# answers, shows an error, and stops a long reply of a slow model (fm init, random weights) with
# the Stop button, whose slot frees at once. Screenshots: BUILD/serve-page.png and
# BUILD/serve-page-stop.png. The browser part is skipped, saying why, without node or chromium
# (scripts/install-deps.sh --node --chromium installs them).
# Usage: tests/cli_serve_page_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_serve_page_test.sh PATH/TO/fm}")
BUILD=$(dirname "$FM")
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
source "$ROOT/tests/cli_lib.sh"
tmp=$(mktemp -d /tmp/fm_serve_page_XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

# start_server NAME ARGS...: fm serve ARGS --port 0 in the background; sets NAME's port in $port
start_server() {
    local name=$1
    shift
    "$FM" serve --port 0 --threads 1 --quiet "$@" 2>"$name.err" &
    pids+=("$!")
    for _ in $(seq 300); do
        port=$(sed -n 's/^listening on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$name.err")
        [ -n "$port" ] && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    bad "$name: the server did not start: $(head -3 "$name.err")"
    return 1
}

cp -r "$ROOT/tests/ref/tasks" m
start_server small --model m --api-key sk-test || { summary "cli_serve_page_test"; exit; }
small=$port
code=$(curl -s -o page.html -D headers.txt -w '%{http_code}' "http://127.0.0.1:$small/")
[ "$code" = 200 ] && grep -qi '^Content-Type: text/html; charset=utf-8' headers.txt && grep -q '<title>fm chat</title>' page.html &&
    cmp -s page.html "$ROOT/src/serve/chat.html" && ok || bad "GET / without the key: $code, $(head -c 200 page.html)"
code=$(curl -s -o /dev/null -D headers.txt -w '%{http_code}' -X POST "http://127.0.0.1:$small/" -d '{}')
[ "$code" = 405 ] && grep -qi '^Allow: GET' headers.txt && ok || bad "POST /: $code (want 405 with Allow: GET)"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$small/v1/models")
[ "$code" = 401 ] && ok || bad "/v1/models without the key beside the open page: $code (want 401)"

chromium=${CHROMIUM:-$(command -v chromium || true)}
if ! command -v node >/dev/null; then
    skip_case "the chat page in headless Chromium" "node is not installed (scripts/install-deps.sh --node)"
elif [ -z "$chromium" ]; then
    skip_case "the chat page in headless Chromium" "chromium is not installed (scripts/install-deps.sh --chromium)"
else
    npm_dir=$BUILD/npm-serve-page
    if ! cmp -s "$ROOT/tests/serve_page/package-lock.json" "$npm_dir/package-lock.json" ||
        [ ! -d "$npm_dir/node_modules/playwright-core" ]; then
        rm -rf "$npm_dir"
        mkdir -p "$npm_dir"
        cp "$ROOT/tests/serve_page/package.json" "$ROOT/tests/serve_page/package-lock.json" "$npm_dir/"
        if ! out=$(cd "$npm_dir" && npm ci --no-audit --no-fund 2>&1); then
            bad "npm ci in $npm_dir failed (the npm registry must be reachable once):"
            sed 's/^/    /' <<<"$out" | tail -5
            rm -rf "$npm_dir"
        fi
    fi
    # the slow model: random weights whose greedy reply runs all its 1000 tokens (seconds)
    "$FM" init --out slow --layers 4 --dim 512 --heads 8 --vocab 300 --context 1024 --threads 1 >/dev/null 2>&1 &&
        cp "$ROOT/tests/ref/tasks/tokenizer.json" slow/ || bad "fm init of the slow model failed"
    if [ -d "$npm_dir/node_modules/playwright-core" ] && start_server slow --model slow --parallel 2; then
        rm -f "$BUILD/serve-page.png" "$BUILD/serve-page-stop.png"
        expect "the chat page in headless Chromium (tests/serve_page/page.mjs)" 0 "all passed" -- \
            node "$ROOT/tests/serve_page/page.mjs" "$npm_dir/node_modules" "http://127.0.0.1:$small" sk-test m \
            "$BUILD/serve-page.png" "http://127.0.0.1:$port" "$chromium"
        [ -s "$BUILD/serve-page.png" ] && [ -s "$BUILD/serve-page-stop.png" ] &&
            [ "$(head -c 8 "$BUILD/serve-page.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok ||
            bad "no PNG screenshots in $BUILD"
    fi
fi
for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null && { wait "$p" && ok || bad "SIGTERM: a server did not exit 0"; }
done
pids=()
summary "cli_serve_page_test"
