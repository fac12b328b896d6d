#!/usr/bin/env python3
"""fuzz.py — malformed and hostile requests against a running `fm serve`, over raw sockets.

For tests/cli_serve_fuzz_test.sh (short: a few hundred requests) and bench/serve_fuzz.sh (long:
--rounds N). Standard library only. Each case sends bytes, reads the whole answer (every request
says "Connection: close") and checks it:
  - the server answered with an HTTP status line, or closed the connection where the bytes were
    not HTTP at all (libmicrohttpd's own 400/413/431 pages answer broken HTTP, not fm's);
  - every answer fm gives to a well-formed HTTP request with a status >= 400 is OpenAI's error
    object {"error": {"message": str, "type": str, "param": str|null, "code": str}};
  - every 200 of a completion is JSON with "choices" (or server-sent events ending "data: [DONE]");
  - the status is one the case allows (say, 400 for a wrong type; 200 or 400 for a mutated body);
  - GET /health answers 200 after every case.
Cases: bad JSON (every prefix of a valid body, garbage, deep nesting, NUL bytes, invalid UTF-8,
lone surrogates), every request field with values of every JSON type, absurd numbers (max_tokens,
n, logprobs, top_logprobs, seed), bodies shorter and longer than Content-Length, huge bodies and
headers, chunked bodies, a client sending one byte at a time, idle half-sent requests held open,
clients that disconnect before the answer and in the middle of a stream (the slot must free),
unknown routes and methods, and random mutations of valid bodies (seeded: the same run each time).
Not for: checking the API's right answers (tests/serve/client.mjs, tests/cli_serve_test.sh).

Usage: fuzz.py HOST PORT [--rounds N] [--seed S] [--key KEY]
Prints "ok NAME" per group, "FAIL ..." per failure (at most 20 shown per group), a count, and
exits 1 on any failure.
"""
import json
import random
import socket
import sys
import time

args = sys.argv[1:]
if len(args) < 2:
    print(__doc__.split("\n\n")[-1], file=sys.stderr)
    sys.exit(2)
HOST, PORT = args[0], int(args[1])
ROUNDS, SEED, KEY = 300, 1, None
i = 2
while i < len(args):
    if args[i] == "--rounds":
        ROUNDS = int(args[i + 1])
    elif args[i] == "--seed":
        SEED = int(args[i + 1])
    elif args[i] == "--key":
        KEY = args[i + 1]
    else:
        print(f"fuzz.py: unknown argument {args[i]}", file=sys.stderr)
        sys.exit(2)
    i += 2
rng = random.Random(SEED)
failures = 0
sent = 0


class Fail(Exception):
    pass


def connect(timeout=30.0):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, limit=1 << 24):
    """Everything until the server closes (or limit bytes)."""
    out = bytearray()
    try:
        while len(out) < limit:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (ConnectionResetError, socket.timeout):
        pass
    return bytes(out)


def dechunk(body):
    out, i = bytearray(), 0
    while i < len(body):
        j = body.find(b"\r\n", i)
        if j < 0:
            raise Fail("a chunked answer ends inside a chunk size")
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[j + 2:j + 2 + size]
        i = j + 2 + size + 2
    raise Fail("a chunked answer has no last chunk")


def parse(raw):
    """(status, headers dict lower-case, body) of one HTTP answer; None when the server closed."""
    if not raw:
        return None
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        raise Fail(f"not an HTTP answer: {raw[:80]!r}")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    elif "content-length" in headers and len(body) != int(headers["content-length"]):
        headers["x-length-mismatch"] = f"the body has {len(body)} bytes, Content-Length says {headers['content-length']}"
    return status, headers, body


def request(method, path, body=b"", headers=None, raw=None, timeout=30.0):
    """Sends one request (or raw bytes) and returns parse() of the answer."""
    global sent
    sent += 1
    if raw is None:
        h = {"Host": f"{HOST}:{PORT}", "Connection": "close"}
        if KEY:
            h["Authorization"] = f"Bearer {KEY}"
        if body or method == "POST":
            h["Content-Type"] = "application/json"
            h["Content-Length"] = str(len(body))
        h.update(headers or {})
        raw = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in h.items() if v is not None) + b"\r\n" + body
    s = connect(timeout)
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) and closed before the whole body was sent
        return parse(read_all(s))
    finally:
        s.close()


def check_error(status, headers, body):
    """An OpenAI-shaped error object."""
    if not headers.get("content-type", "").startswith("application/json"):
        raise Fail(f"{status} with Content-Type {headers.get('content-type')!r}: {body[:120]!r}")
    try:
        j = json.loads(body)
    except ValueError:
        raise Fail(f"{status} with a body that is not JSON: {body[:120]!r}")
    e = j.get("error") if isinstance(j, dict) else None
    if not (isinstance(e, dict) and isinstance(e.get("message"), str) and e["message"] and isinstance(e.get("type"), str)
            and isinstance(e.get("code"), str) and "param" in e and (e["param"] is None or isinstance(e["param"], str))):
        raise Fail(f"{status} is not OpenAI's error object: {body[:200]!r}")


def check_answer(ans, allowed, http_ok=True):
    """ans from request(); allowed: the statuses the case may get. http_ok: the request was
    well-formed HTTP, so fm (not libmicrohttpd) answers and errors must be OpenAI's objects."""
    if ans is None:
        if http_ok:
            raise Fail("the server closed the connection without an answer")
        return None
    status, headers, body = ans
    if http_ok and "x-length-mismatch" in headers:
        raise Fail(headers["x-length-mismatch"])
    if status not in allowed:
        raise Fail(f"status {status}, want one of {sorted(allowed)}: {body[:200]!r}")
    if status >= 400 and (http_ok or headers.get("content-type", "").startswith("application/json")):
        check_error(status, headers, body)
    if status == 200 and headers.get("content-type", "").startswith("application/json"):
        try:
            j = json.loads(body)
        except ValueError:
            raise Fail(f"200 with a body that is not JSON: {body[:120]!r}")
        if not isinstance(j, dict):
            raise Fail(f"200 with {body[:120]!r}")
    if status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
        events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
        if not events or events[-1] != b"data: [DONE]":
            raise Fail(f"a stream that does not end with data: [DONE]: {body[-120:]!r}")
        for ev in events[:-1]:
            json.loads(ev[6:])
    return status


def health():
    ans = request("GET", "/health", timeout=10)
    if not ans or ans[0] != 200 or b'"ok"' not in ans[2]:
        raise Fail(f"/health after the case: {ans}")


def metric(name):
    ans = request("GET", "/metrics", timeout=10)
    for line in ans[2].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise Fail(f"/metrics has no {name}")


def group(name, cases):
    """Runs (label, fn) cases; each fn raises Fail; /health after each."""
    global failures
    bad = 0
    for label, fn in cases:
        try:
            fn()
            health()
        except (Fail, OSError, ValueError) as e:
            bad += 1
            if bad <= 20:
                print(f"FAIL {name}: {label}: {type(e).__name__}: {e}")
    failures += bad
    print(f"{'ok' if not bad else 'FAIL'} {name} ({len(cases)} cases{', %d failed' % bad if bad else ''})")


C, CHAT = "/v1/completions", "/v1/chat/completions"
valid_c = {"prompt": "In the beginning", "max_tokens": 3, "temperature": 0}
valid_chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}


def post(path, obj_or_bytes, allowed, **kw):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return lambda: check_answer(request("POST", path, body, **kw), allowed)


# ---- bad JSON
vb = json.dumps({**valid_c, "stop": ["\n"], "logprobs": 2}).encode()
cases = [(f"prefix {n}", post(C, vb[:n], {400})) for n in range(0, len(vb))]
cases += [(repr(b[:40]), post(C, b, {400})) for b in [
    b"{", b"}", b"nul", b"[]", b"\"x\"", b"1", b"{\"prompt\": \"x\",}", b"{\"prompt\" \"x\"}", b"{'prompt': 'x'}",
    b"{\"prompt\": \"x\"} {}", b"{\"prompt\": \"x\"}garbage", b"\x00", b"{\"prompt\":\"a\x00b\"}",
    b"[" * 100000, b"{\"a\":" * 5000 + b"1" + b"}" * 5000, b"\xff\xfe{\"prompt\":\"x\"}",
    b"{\"prompt\": \"x\", \"max_tokens\": 1e999}", b"{\"prompt\": \"\\u12\"}",
    bytes(rng.randrange(256) for _ in range(2000))]]
cases += [(repr(b[:40]), post(C, b, {200, 400})) for b in [
    b"{\"prompt\": \"\\ud800\", \"max_tokens\": 2}", b"{\"prompt\": \"\xff\xfe\xc3\", \"max_tokens\": 2}",
    b"{\"prompt\": \"\xed\xa0\x80 x\", \"max_tokens\": 2}", b"{\"prompt\": \"ok\", \"stop\": \"\xc3\", \"max_tokens\": 2}",
    b"{\"prompt\":\"x\",\"max_tokens\":2,\"prompt\":\"y\"}", b" \n\t{\"prompt\":\"x\",\"max_tokens\":2} \n",
    b"\xef\xbb\xbf{\"prompt\":\"x\",\"max_tokens\":2}"]]  # cJSON skips a byte-order mark
cases += [("chat " + repr(b[:40]), post(CHAT, b, {200, 400})) for b in [
    b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}], \"max_tokens\": 2}",
    b"{\"messages\": [{\"role\": \"us\xc3er\", \"content\": \"x\"}], \"max_tokens\": 2}"]]
group("bad JSON and invalid UTF-8", cases)

# ---- every field with every type
values = [None, True, False, 0, -1, 1, 2, 1.5, -0.0, 1e308, -1e308, 2 ** 31, 2 ** 63, 2 ** 64 + 1, "", "x", "\x00",
          [], [1], [-1], ["a"], [[1]], [None], {}, {"a": 1}, [1] * 1000, "y" * 10000]
fields = ["model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "stream_options",
          "logprobs", "echo", "top_k", "min_p", "repeat_penalty", "ignore_eos", "presence_penalty",
          "frequency_penalty", "suffix", "user", "logit_bias", "best_of"]
chat_fields = ["model", "messages", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs", "n", "stop",
               "stream", "temperature", "seed"]
cases = []
for f in fields:
    for v in values:
        cases.append((f"completions {f}={json.dumps(v)[:30]}", post(C, {**valid_c, f: v}, {200, 400, 404})))
for f in chat_fields:
    for v in values:
        cases.append((f"chat {f}={json.dumps(v)[:30]}", post(CHAT, {**valid_chat, f: v}, {200, 400, 404})))
for v in values + [[{"role": "user"}], [{"content": "x"}], [{"role": "user", "content": [{"type": "image"}]}],
                   [{"role": "user", "content": [{"type": "text", "text": 5}]}], [1, 2], [[]]]:
    cases.append((f"messages={json.dumps(v)[:30]}", post(CHAT, {"messages": v, "max_tokens": 2}, {200, 400})))
for v in values:
    cases.append((f"tokenize content={json.dumps(v)[:30]}", post("/tokenize", {"content": v}, {200, 400})))
    cases.append((f"detokenize tokens={json.dumps(v)[:30]}", post("/detokenize", {"tokens": v}, {200, 400})))
# the whole body of each type
for v in values:
    for path in (C, CHAT, "/tokenize", "/detokenize"):
        cases.append((f"{path} body={json.dumps(v)[:30]}", post(path, json.dumps(v).encode(), {200, 400})))
group("wrong types for every field", cases)

# ---- absurd numbers: each must be refused (or served cheaply), never run for ages
cases = [(f"{k}={v}", post(C, {**valid_c, k: v}, {400})) for k, v in [
    ("max_tokens", 10 ** 9), ("max_tokens", 2 ** 31), ("max_tokens", -5), ("max_tokens", 10 ** 30), ("n", 10 ** 9),
    ("n", 65), ("n", 0), ("logprobs", 10 ** 6), ("logprobs", 21), ("logprobs", -1), ("temperature", 1e9),
    ("top_p", 0), ("top_p", 2), ("seed", 1e30), ("seed", 0.5), ("repeat_penalty", 0), ("min_p", 5),
    ("top_k", -1), ("top_k", 1e12)]]
cases += [(f"chat {k}={v}", post(CHAT, {"messages": valid_chat["messages"], "logprobs": True, k: v}, {400})) for k, v in [
    ("top_logprobs", 1000), ("top_logprobs", 21), ("top_logprobs", -1), ("max_completion_tokens", 10 ** 9),
    ("max_tokens", 10 ** 9)]]
cases += [("64 prompts x n 1", post(C, {**valid_c, "prompt": ["a"] * 64, "max_tokens": 1}, {200})),
          ("65 prompts", post(C, {**valid_c, "prompt": ["a"] * 65}, {400})),
          ("8 prompts x n 8 with logprobs 20 and echo", post(C, {**valid_c, "prompt": ["In the"] * 8, "n": 8,
                                                                 "logprobs": 20, "echo": True, "max_tokens": 1}, {200})),
          ("a 100000-token id list", post(C, {**valid_c, "prompt": [5] * 100000}, {400, 413})),
          ("100 stop strings", post(C, {**valid_c, "stop": ["a"] * 100}, {400})),
          ("a 60000-byte stop string", post(C, {**valid_c, "stop": "s" * 60000}, {200, 400}))]
group("absurd values", cases)


# ---- HTTP framing: Content-Length lies, huge bodies and headers, chunked bodies
def short_body():
    """Content-Length says 100, 10 bytes come, then the client half-closes and waits."""
    s = connect(10)
    try:
        s.sendall(f"POST {C} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n".encode() +
                  b'{"prompt":')
        s.shutdown(socket.SHUT_WR)
        ans = read_all(s)
        if ans:  # whatever libmicrohttpd says to a body cut short; fm must not have answered 200
            if parse(ans)[0] == 200:
                raise Fail("200 to a body shorter than its Content-Length")
    finally:
        s.close()


def long_body():
    """Content-Length 20, 200 bytes: the rest is no HTTP request."""
    body = json.dumps({**valid_c, "max_tokens": 1}).encode()
    raw = (f"POST {C} HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n".encode() + body + b"x" * 150)
    s = connect(10)
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = read_all(s)
        first = parse(data)
        if first is None or first[0] != 400:
            raise Fail(f"the first 20 bytes of JSON: {first and first[0]}")
        check_error(*first)
    finally:
        s.close()


def chunked(body, allowed):
    def run():
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        raw = (f"POST {C} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
               + chunks + b"0\r\n\r\n")
        check_answer(request("POST", C, raw=raw), allowed)
    return run


big = b'{"prompt":"' + b"a" * (3 << 20) + b'"}'
cases = [("a body shorter than Content-Length", short_body),
         ("a body longer than Content-Length", long_body),
         ("Content-Length past the limit, no body sent", lambda: check_answer(
             request("POST", C, raw=f"POST {C} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                                    f"{10 ** 12}\r\n\r\n".encode()), {413})),
         ("Content-Length that is not a number", lambda: check_answer(
             request("POST", C, raw=f"POST {C} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                                    f"abc\r\n\r\n{{}}".encode()), {400, 413}, http_ok=False)),
         ("a negative Content-Length", lambda: check_answer(
             request("POST", C, raw=f"POST {C} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                                    f"-5\r\n\r\n{{}}".encode()), {400, 413}, http_ok=False)),
         ("a 3 MiB body", lambda: check_answer(request("POST", C, big), {413})),
         ("a 3 MiB chunked body", chunked(big, {413})),
         ("a chunked body", chunked(json.dumps({**valid_c, "max_tokens": 1}).encode(), {200})),
         ("a chunked bad body", chunked(b'{"prompt": [1, 2', {400})),
         ("a 64 KiB header", lambda: check_answer(request("GET", "/health", headers={"X-Big": "h" * 65536}),
                                                   {200, 400, 413, 431}, http_ok=False)),
         ("a 10 KiB path", lambda: check_answer(request("GET", "/" + "p" * 10240), {404, 414, 400, 431}, http_ok=False)),
         ("garbage instead of HTTP", lambda: check_answer(request("GET", "/", raw=b"\x16\x03\x01\x02\x00\x01\x00"
                                                                  + bytes(range(256)) + b"\r\n\r\n"),
                                                          {400, 505}, http_ok=False)),
         ("HTTP/9.9", lambda: check_answer(request("GET", "/", raw=b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"),
                                           {200, 400, 505}, http_ok=False)),
         ("no Host", lambda: check_answer(request("GET", "/", raw=b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"),
                                          {200, 400}, http_ok=False)),
         ("a header with no colon", lambda: check_answer(
             request("GET", "/", raw=b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\nConnection: close\r\n\r\n"),
             {200, 400}, http_ok=False)),
         ("NUL in the path", lambda: check_answer(
             request("GET", "/", raw=b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
             {400, 404}, http_ok=False)),
         ("a bad chunk size", lambda: check_answer(request("POST", C, raw=(
             f"POST {C} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n")
             .encode()), {400, 413}, http_ok=False)),
         ("an empty body", post(C, b"", {400})),
         ("a 3 MiB tokenize", lambda: check_answer(request("POST", "/tokenize", big), {413}))]
group("HTTP framing", cases)

# ---- routes and methods
cases = []
for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]:
    for path in ["/", "/health", "/v1/models", "/metrics", C, CHAT, "/tokenize", "/detokenize", "/v1", "/v1/",
                 "/v1/completions/", "/v1/completions/x", "//health", "/%2e%2e/health", "/v1/engines", "/HEALTH",
                 "/health?x=1&y", "/v1/chat/completions#frag"]:
        allowed = {200, 400, 404, 405}

        def run(method=method, path=path, allowed=allowed):
            body = json.dumps(valid_c).encode() if method in ("POST", "PUT", "PATCH") else b""
            ans = request(method, path, body)
            if method == "HEAD":  # no body to check
                if ans is None:
                    raise Fail("no answer to HEAD")
                return
            check_answer(ans, allowed)
        cases.append((f"{method} {path}", run))
group("routes and methods", cases)


# ---- slow clients, idle half-sent requests, disconnects
def slow_client(path, obj, allowed, gap):
    def run():
        body = json.dumps(obj).encode()
        raw = (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
               .encode() + body)
        s = connect(60)
        try:
            for b in raw:
                s.send(bytes([b]))
                time.sleep(gap)
            check_answer(parse(read_all(s)), allowed)
        finally:
            s.close()
    return run


def idle_clients():
    """Twenty connections each send half a request and wait, while other requests are served."""
    held = []
    try:
        for k in range(20):
            s = connect(10)
            s.sendall((f"POST {C} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n" if k % 2 else "GET /heal")
                      .encode())
            held.append(s)
        check_answer(request("POST", C, json.dumps(valid_c).encode()), {200})
        health()
    finally:
        for s in held:
            s.close()


def leave_before_answer():
    """Ten clients send a long completion and close at once; the slots must free."""
    body = json.dumps({"prompt": "In the", "max_tokens": 60, "ignore_eos": True}).encode()
    for _ in range(10):
        s = connect(10)
        s.sendall(f"POST {C} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        s.close()
    wait_idle()


def leave_mid_stream(path, obj):
    def run():
        body = json.dumps(obj).encode()
        s = connect(10)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        got = b""
        while b"data: {" not in got:
            b = s.recv(4096)
            if not b:
                raise Fail("the stream ended before its first event")
            got += b
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # a reset
        s.close()
        wait_idle()
    return run


def wait_idle():
    for _ in range(100):
        if metric("fm_running_sequences") == 0 and metric("fm_queue_length") == 0:
            return
        time.sleep(0.1)
    raise Fail("sequences still run 10 s after their clients left")


long_c = {"prompt": "In the", "max_tokens": 80, "ignore_eos": True, "stream": True}
long_chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 80, "stream": True}
cases = [("a completion a byte at a time", slow_client(C, valid_c, {200}, 0.002)),
         ("a bad body a byte at a time", slow_client(C, {"prompt": 5}, {400}, 0.002)),
         ("a stream a byte at a time", slow_client(CHAT, {**valid_chat, "stream": True}, {200}, 0.002)),
         ("twenty idle half-sent requests", idle_clients),
         ("ten clients leave before the answer", leave_before_answer),
         ("a client leaves in the middle of a completions stream", leave_mid_stream(C, long_c)),
         ("a client leaves in the middle of a chat stream", leave_mid_stream(CHAT, long_chat)),
         ("a client leaves a stream with logprobs and n 4",
          leave_mid_stream(C, {**long_c, "n": 4, "logprobs": 5, "echo": True}))]
group("slow clients and disconnects", cases)

# ---- random mutations of valid bodies
seeds = [json.dumps(x).encode() for x in [
    valid_c, {**valid_c, "stream": True}, {**valid_c, "logprobs": 3, "echo": True, "n": 2, "stop": ["\n", "the"]},
    {"prompt": [[5, 17, 42], [7]], "max_tokens": 2, "seed": 3}, valid_chat,
    {**valid_chat, "logprobs": True, "top_logprobs": 2, "stream": True, "stream_options": {"include_usage": True}}]]
tokens = [b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"\\u0000", b"null", b"true", b"-", b"1e400", b"0.5",
          b"\xff", b"\xc3", b"\x00", b'"prompt"', b'"messages"', b'"n"', b'"max_tokens"', b"99999999999"]


def mutate(b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(at, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[at:at] = rng.choice(tokens)
        elif op == 2 and b:
            del b[at:at + rng.randint(1, 8)]
        elif op == 3:
            other = rng.choice(seeds)
            k = rng.randrange(len(other))
            b[at:] = other[k:]
        else:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(b)


cases = []
for r in range(ROUNDS):
    body = mutate(rng.choice(seeds))
    path = CHAT if b"messages" in body else C
    cases.append((f"mutation {r}: {body[:60]!r}", post(path, body, {200, 400, 404})))
group(f"random mutations (seed {SEED})", cases)

print(f"{sent} requests; {'all passed' if not failures else f'{failures} failed'}")
sys.exit(1 if failures else 0)
