-- serve_load.lua — wrk's script for bench/serve_load.sh: every request POSTs one completion to
-- fm serve (a prompt from a small list, a fixed number of tokens with ignore_eos, so each 200
-- carries the same count), counts the answers by status, and prints at the end one machine-
-- readable line: requests, non-2xx answers, socket errors, p50/p90/p99/max latency (ms).
-- Not for: anything but wrk (wrk -s bench/serve_load.lua). GEN (env) sets the tokens per request.
local gen = tonumber(os.getenv("GEN") or "32")
local prompts = { "In the beginning", "And God said", "The LORD is my shepherd", "Blessed are the",
                  "And it came to pass", "Now the serpent was", "Let there be", "In my Father's house" }
local n = 0
request = function()
    n = n + 1
    local body = string.format('{"prompt":"%s","max_tokens":%d,"temperature":0.8,"seed":%d,"ignore_eos":true}',
                                prompts[n % #prompts + 1], gen, n)
    return wrk.format("POST", "/v1/completions", { ["Content-Type"] = "application/json" }, body)
end
local statuses = {}
response = function(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("serve_load requests=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeout_err=%d " ..
                           "status_err=%d duration_s=%.2f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f\n",
                           summary.requests, e.status, e.connect, e.read, e.write, e.timeout, e.status,
                           summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
                           latency:percentile(99) / 1e3, latency.max / 1e3))
end
