// tiktoken_bench.cjs — tiktoken's "gpt2" encoding on a file, for bench/tokenizer/run.sh.
// Usage: node tiktoken_bench.cjs NPM_DIR FILE
// Prints "key value" lines: load time, encoding throughput (best of 5), id count, FNV-1a 64 of the ids.
const path = require("path");
const fs = require("fs");
const { createRequire } = require("module");
const req = createRequire(path.join(path.resolve(process.argv[2]), "package.json"));
const t0 = process.hrtime.bigint();
const { get_encoding } = req("tiktoken");
const enc = get_encoding("gpt2");
console.log(`load_s ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(4)}`);
const text = fs.readFileSync(process.argv[3], "utf8");
const bytes = Buffer.byteLength(text, "utf8");
let best = Infinity, ids;
for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    ids = enc.encode(text, [], []);
    best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9);
}
let h = 0xcbf29ce484222325n;
const mask = (1n << 64n) - 1n;
for (const id of ids) h = ((h ^ BigInt(id)) * 0x100000001b3n) & mask;
console.log(`bytes ${bytes}\nids ${ids.length}\nfnv1a64 ${h.toString(16).padStart(16, "0")}`);
console.log(`mbps ${(bytes / best / 1e6).toFixed(2)}`);
enc.free();
