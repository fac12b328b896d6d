#!/usr/bin/env bash
# cli_serve_test.sh — `fm serve`, the OpenAI-compatible server, from the outside. The 300-token
# model of tests/ref/tasks (context 96, with the chat tokens) is served with --port 0 and checked
# with curl: routes, the API key, errors (400 naming the field, 401, 404, 405, 413, 503, 504),
# tokenize/detokenize, /metrics, an adapter by its model id (tests/ref/lora, greedy text equal to
# fm generate --adapter), a client that disconnects freeing its slot, and SIGTERM letting a running
# stream finish before exiting 0. A slower model made with fm init (4 x 512, random weights)
# serves the queue, disconnect, time-limit and SIGTERM cases. Then OpenAI's official npm client
# (tests/serve/client.mjs) checks completions, chat, streaming, logprobs, echo against fm score
# (1e-5), n, stop and seeded determinism alone and among 8 concurrent requests. The npm package is
# installed with `npm ci` from tests/serve/package-lock.json into BUILD/npm-serve (never into the
# repository); that part is skipped, saying so, only when node is not installed (CI installs it:
# scripts/install-deps.sh --node).
# Usage: tests/cli_serve_test.sh PATH/TO/fm     Prints "N passed, N failed[, N skipped]".
set -u
FM=$(realpath "${1:?usage: cli_serve_test.sh PATH/TO/fm}")
BUILD=$(dirname "$FM")
ROOT=$(dirname "$(dirname "$(realpath "$0")")")
source "$ROOT/tests/cli_lib.sh"
tmp=$(mktemp -d /tmp/fm_serve_test_XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

# start_server NAME ARGS...: fm serve ARGS --port 0 in the background (stderr in NAME.err);
# sets server_pid and port once it prints "listening on", or returns 1
start_server() {
    local name=$1
    shift
    "$FM" serve --port 0 --threads 1 "$@" 2>"$name.err" &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 300); do
        port=$(sed -n 's/^listening on http:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$name.err")
        [ -n "$port" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    bad "$name: the server did not start: $(head -3 "$name.err")"
    return 1
}
# req METHOD PATH [curl args...]: the body in $body, the status in $code
req() {
    local method=$1 path=$2
    shift 2
    code=$(curl -s -o "$tmp/body" -w '%{http_code}' -X "$method" "http://127.0.0.1:$port$path" "$@")
    body=$(cat "$tmp/body")
}
# want NAME CODE PATTERN: the last req's status and a pattern (grep -E) in its body
want() {
    if [ "$code" = "$2" ] && grep -qE -- "$3" <<<"$body"; then ok; else bad "$1: status $code (want $2): ${body:0:300}"; fi
}
key=(-H "Authorization: Bearer sk-test")
json=(-H "Content-Type: application/json")
metric() { curl -s "${key[@]}" "http://127.0.0.1:$port/metrics" | sed -n "s/^$1 //p"; }

cp -r "$ROOT/tests/ref/tasks" m
expect "--help" 0 "OpenAI-compatible" -- "$FM" serve --help
expect "no model" 2 "--model" -- "$FM" serve
expect "a bad --adapter" 2 "NAME=DIR" -- "$FM" serve --model m --adapter nothing

# ---- the small model, with a key and a small body limit
start_server small --model m --parallel 8 --api-key sk-test --max-body 4096 || { summary "cli_serve_test"; exit; }
grep -q "listening on http://127.0.0.1:$port " small.err && ok || bad "no listening line: $(cat small.err)"
expect "a port in use" 1 "cannot listen on 127.0.0.1 port $port" -- "$FM" serve --model m --port "$port" --threads 1
req GET /health
want "/health without the key" 200 '"status":"ok"'
req GET /v1/models
want "/v1/models without the key" 401 '"type":"authentication_error"'
req GET /v1/models -H "Authorization: Bearer wrong"
want "a wrong key" 401 'invalid_api_key'
req GET /v1/models "${key[@]}"
want "/v1/models" 200 '"id":"m","object":"model"'
req POST /v1/completions "${key[@]}" "${json[@]}" -d '{"prompt":"In the beginning","max_tokens":5,"temperature":0}'
want "completion" 200 '"object":"text_completion".*"finish_reason":"length".*"completion_tokens":5'
req POST /v1/chat/completions "${key[@]}" -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":4}'
want "chat" 200 '"object":"chat.completion".*"role":"assistant"'
req POST /v1/completions "${key[@]}" -d '{"prompt":[5,17,42],"max_tokens":3,"temperature":0}'
want "a prompt of token ids" 200 '"prompt_tokens":3'
stream=$(curl -sN "${key[@]}" "http://127.0.0.1:$port/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":6,"stream":true}')
grep -q '^data: {.*"object":"chat.completion.chunk".*"delta":{"role":"assistant"' <<<"$stream" &&
    grep -q '"finish_reason":"\(stop\|length\)"' <<<"$stream" && [ "$(tail -1 <<<"$stream")" = "data: [DONE]" ] && ok ||
    bad "chat stream: $stream"

# errors: each in OpenAI's shape, and the server serves on
req POST /v1/completions "${key[@]}" -d '{"prompt": "x", '
want "malformed JSON" 400 '"error":\{"message":"the body is not valid JSON.*"type":"invalid_request_error"'
req POST /v1/completions "${key[@]}" -d '[1, 2]'
want "not an object" 400 'must be a JSON object'
req POST /v1/completions "${key[@]}" -d '{"prompt":"x","max_tokens":"ten"}'
want "a wrong type names the field" 400 "'max_tokens' must be an integer.*\"param\":\"max_tokens\""
req POST /v1/completions "${key[@]}" -d '{"prompt":"x","temperature":-1}'
want "a value out of range" 400 '"param":"temperature"'
req POST /v1/completions "${key[@]}" -d '{"prompt":"x","stop":[1]}'
want "stop of the wrong type" 400 '"param":"stop"'
req POST /v1/completions "${key[@]}" -d '{"max_tokens":3}'
want "no prompt" 400 "'prompt' is required"
req POST /v1/completions "${key[@]}" -d '{"prompt":[5, 300]}'
want "a token id outside the vocabulary" 400 '"param":"prompt"'
req POST /v1/completions "${key[@]}" -d '{"prompt":"x","max_tokens":0}'
want "max_tokens 0 without echo" 400 "echo"
req POST /v1/completions "${key[@]}" -d '{"prompt":"In the beginning","max_tokens":90}'
want "prompt + max_tokens past the context" 400 "context is 96 tokens"
req POST /v1/chat/completions "${key[@]}" -d '{"messages":[{"role":"robot","content":"x"}]}'
want "an unknown role" 400 "role 'robot'"
req POST /v1/completions "${key[@]}" -d '{"prompt":"x","model":"gpt-4"}'
want "an unknown model" 404 '"code":"model_not_found"'
req GET /v1/nothing "${key[@]}"
want "an unknown route" 404 '"type":"not_found_error"'
code=$(curl -s -o /dev/null -D headers.txt -w '%{http_code}' "${key[@]}" "http://127.0.0.1:$port/v1/completions")
[ "$code" = 405 ] && grep -qi '^Allow: POST' headers.txt && ok || bad "GET /v1/completions: $code (want 405 with Allow)"
head -c 10000 /dev/zero | tr '\0' 'a' | sed 's/^/{"prompt":"/; s/$/"}/' >big.json
req POST /v1/completions "${key[@]}" --data-binary @big.json
want "a body over --max-body" 413 'request_too_large'
req POST /v1/completions "${key[@]}" -H "Transfer-Encoding: chunked" --data-binary @big.json
want "a chunked body over --max-body" 413 'request_too_large'
req POST /tokenize "${key[@]}" -d '{"content":"In the beginning"}'
want "tokenize" 200 '^\{"tokens":\[[0-9,]+\]\}$'
ids=$(sed 's/.*\[\(.*\)\].*/\1/' <<<"$body")
req POST /detokenize "${key[@]}" -d "{\"tokens\":[$ids]}"
want "detokenize" 200 '^\{"content":"In the beginning"\}$'
req POST /detokenize "${key[@]}" -d '{"tokens":"1 2"}'
want "detokenize of a string" 400 '"param":"tokens"'
req POST /v1/completions "${key[@]}" -d '{"prompt":"In the","max_tokens":2}'
want "serving after the errors" 200 '"text_completion"'
metrics=$(curl -s "${key[@]}" "http://127.0.0.1:$port/metrics")
for pat in 'fm_requests_total\{status="200"\} [0-9]+' 'fm_requests_total\{status="400"\} [0-9]+' \
    'fm_requests_total\{status="413"\} 2' 'fm_prompt_tokens_total [1-9]' 'fm_generated_tokens_total [1-9]' \
    'fm_queue_length 0' 'fm_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]' 'fm_time_per_token_seconds_count [1-9]'; do
    grep -qE "^$pat" <<<"$metrics" && ok || bad "/metrics has no line like $pat"
done

# OpenAI's npm client against the same server
if ! command -v node >/dev/null; then
    skip_case "openai npm client" "node is not installed (apt-get install nodejs npm, or scripts/install-deps.sh --node)"
else
    npm_dir=$BUILD/npm-serve
    if ! cmp -s "$ROOT/tests/serve/package-lock.json" "$npm_dir/package-lock.json" ||
        [ ! -d "$npm_dir/node_modules/openai" ]; then
        rm -rf "$npm_dir"
        mkdir -p "$npm_dir"
        cp "$ROOT/tests/serve/package.json" "$ROOT/tests/serve/package-lock.json" "$npm_dir/"
        if ! out=$(cd "$npm_dir" && npm ci --no-audit --no-fund 2>&1); then
            bad "npm ci in $npm_dir failed (the npm registry must be reachable once):"
            sed 's/^/    /' <<<"$out" | tail -5
            rm -rf "$npm_dir"
        fi
    fi
    if [ -d "$npm_dir/node_modules/openai" ]; then
        text="In the beginning God created the heaven and the earth."
        "$FM" score --model m --text "$text" --json >score.json
        expect "the openai npm client (tests/serve/client.mjs)" 0 "all passed" -- \
            node "$ROOT/tests/serve/client.mjs" "$npm_dir/node_modules" "http://127.0.0.1:$port/v1" sk-test m score.json "$text"
        grep -q "FAIL" <<<"$(node "$ROOT/tests/serve/client.mjs" "$npm_dir/node_modules" "http://127.0.0.1:$port/v1" \
            wrong-key m score.json "$text" 2>&1)" && ok || bad "client.mjs passed with a wrong key"
    fi
fi
kill -TERM "$server_pid"
wait "$server_pid"
status=$?
[ $status -eq 0 ] && grep -q "^stopped" small.err && ok || bad "SIGTERM on an idle server: exit $status, $(tail -2 small.err)"

# ---- an adapter by its model id: greedy text equal to fm generate --adapter
cp -r "$ROOT/tests/ref/lora/base" base && cp "$ROOT/tests/ref/tasks/tokenizer.json" base/
cp -r "$ROOT/tests/ref/lora/adapter" adapter
if start_server lora --model base --adapter ft=adapter --alias gpt; then
    req GET /v1/models
    want "models lists the adapter" 200 '"id":"gpt".*"id":"ft","object":"model"'
    "$FM" generate --model base --adapter adapter --prompt "In the" --max-tokens 8 --temperature 0 --ignore-eos \
        --threads 1 >gen_ft.txt 2>/dev/null
    text_of() { sed -n 's/.*"choices":\[{"index":0,"text":"\([^"]*\)".*/\1/p' <<<"$body"; }
    req POST /v1/completions -d '{"model":"ft","prompt":"In the","max_tokens":8,"temperature":0,"ignore_eos":true}'
    srv_ft=$(text_of)
    req POST /v1/completions -d '{"model":"gpt","prompt":"In the","max_tokens":8,"temperature":0,"ignore_eos":true}'
    srv_base=$(text_of)
    # (the adapter's greedy text is plain ASCII; the base's holds bytes that are not UTF-8 alone,
    # which JSON carries as U+FFFD: only told apart from the adapter's)
    [ -n "$srv_ft" ] && [ "$srv_ft" = "$(cat gen_ft.txt)" ] && [ "$srv_base" != "$srv_ft" ] && ok ||
        bad "greedy text with the adapter: server '$srv_ft', fm generate '$(cat gen_ft.txt)'; base '$srv_base'"
    kill -TERM "$server_pid"
    wait "$server_pid" && ok || bad "SIGTERM: the adapter server did not exit 0"
fi

# ---- a slower model: the queue, a client that leaves, the time limit, SIGTERM while streaming
"$FM" init --out slow --layers 4 --dim 512 --heads 8 --vocab 300 --context 1024 --threads 1 >/dev/null 2>&1 &&
    cp "$ROOT/tests/ref/tasks/tokenizer.json" slow/ || bad "fm init of the slow model failed"
long='{"prompt":"In the","max_tokens":1000,"ignore_eos":true,"stream":true}'
# wait_metric NAME VALUE: up to 10 s for /metrics to show it
wait_metric() {
    for _ in $(seq 100); do [ "$(metric "$1")" = "$2" ] && return 0; sleep 0.1; done
    return 1
}
if start_server slow --model slow --parallel 1 --max-queue 1; then
    curl -sN "http://127.0.0.1:$port/v1/completions" -d "$long" >a.txt &
    a=$!
    wait_metric fm_running_sequences 1 && ok || bad "the long request is not running"
    curl -s -o b.txt -w '%{http_code}' "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"In","max_tokens":3}' >b.code &
    b=$!
    wait_metric fm_queue_length 1 && ok || bad "the second request is not queued"
    req POST /v1/completions -d '{"prompt":"In","max_tokens":3}'
    want "a full queue" 503 'queue is full.*"type":"unavailable_error"'
    t0=$(date +%s.%N)
    kill "$a" # the client leaves: its slot frees at once and the queued request runs
    wait "$b"
    t1=$(date +%s.%N)
    [ "$(cat b.code)" = 200 ] && awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 5) }' && ok ||
        bad "after the client left, the queued request: $(cat b.code) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s"
    wait_metric fm_running_sequences 0 && ok || bad "a slot still runs after its client left"
    # SIGTERM while a stream runs: it finishes, then the server exits 0
    curl -sN "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"In the","max_tokens":150,"ignore_eos":true,"stream":true}' >d.txt &
    d=$!
    wait_metric fm_running_sequences 1 || bad "the stream before SIGTERM is not running"
    kill -TERM "$server_pid"
    wait "$server_pid"
    status=$?
    wait "$d"
    [ $status -eq 0 ] && [ "$(grep -v '^$' d.txt | tail -1)" = "data: [DONE]" ] && grep -q '"finish_reason":"length"' d.txt && ok ||
        bad "SIGTERM while streaming: exit $status, stream ends with: $(tail -c 200 d.txt)"
fi
if start_server limit --model slow --parallel 1 --timeout 1; then
    req POST /v1/completions -d '{"prompt":"In the","max_tokens":1000,"ignore_eos":true}'
    want "past the time limit" 504 '"type":"timeout_error"'
    req GET /health
    want "serving after a timeout" 200 'ok'
    kill -TERM "$server_pid"
    wait "$server_pid" && ok || bad "SIGTERM: the limit server did not exit 0"
fi

summary "cli_serve_test"
