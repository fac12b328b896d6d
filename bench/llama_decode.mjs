// llama_decode.mjs — llama.cpp's batch-1 decoding speed on a GGUF file, measured as
// `fm bench generate` measures fm's: a prompt of PROMPT token ids (fixed pseudo-random ids) fed
// at once, then GEN - 1 single-token steps, greedy (the next token chosen in llama.cpp's native
// sampler, temperature 0, so no logits cross into JavaScript); the decode-only rate is the
// single-token steps over their time. WARMUP untimed runs, then RUNS timed ones; prints one line
//   llama_bench decode_tokens_per_s=X ms_per_token=Y threads=T prompt=P gen=G runs=R
// with the median over the timed runs.
//
// What it is for: the llama.cpp side of bench/decode_bandwidth.sh (fm's decoding against
// llama.cpp on the same weights, fm's `fm export gguf`). llama.cpp is npm's node-llama-cpp at
// tests/gguf/package-lock.json's version (its prebuilt CPU build), as tests/cli_gguf_test.sh uses it;
// its own defaults otherwise (float16 key/value cache), context PROMPT + GEN.
// Usage: node llama_decode.mjs NODE_MODULES_DIR MODEL.gguf THREADS PROMPT GEN RUNS [WARMUP]
// Not for: checking llama.cpp's numbers against fm's (tests/gguf/check.mjs does that).
import path from "node:path";
import {pathToFileURL} from "node:url";

const [modulesDir, modelPath, threadsArg, promptArg, genArg, runsArg, warmupArg] = process.argv.slice(2);
const threads = Number(threadsArg), prompt = Number(promptArg), gen = Number(genArg), runs = Number(runsArg);
const warmup = warmupArg === undefined ? 1 : Number(warmupArg);
if (!modulesDir || !modelPath || ![threads, prompt, gen, runs].every((x) => Number.isInteger(x) && x >= 1) ||
    !(Number.isInteger(warmup) && warmup >= 0) || gen < 2) {
    console.error("usage: node llama_decode.mjs NODE_MODULES_DIR MODEL.gguf THREADS PROMPT GEN RUNS [WARMUP]" +
                  " (whole numbers >= 1, GEN >= 2)");
    process.exit(2);
}
process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
const entry = path.join(modulesDir, "node-llama-cpp", "dist", "index.js");
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(entry).href);

const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false, skipDownload: true,
    logLevel: LlamaLogLevel.error, logger: (level, message) => process.stderr.write(message),
});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({contextSize: prompt + gen, batchSize: prompt, sequences: 1, threads});
const seq = context.getSequence();

// the prompt: fixed pseudo-random ids (a 32-bit LCG), the same every run
const vocab = model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length;
if (!vocab) {
    console.error(`llama_decode.mjs: ${modelPath} has no tokenizer.ggml.tokens`);
    process.exit(1);
}
let state = 12345;
const ids = [];
for (let i = 0; i < prompt; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    ids.push(state % vocab);
}
const next = {generateNext: {token: true, options: {temperature: 0}}};

const rates = [];
for (let r = 0; r < warmup + runs; r++) {
    await seq.clearHistory();
    let out = await seq.controlledEvaluate([...ids.slice(0, -1), [ids[ids.length - 1], next]]);
    let token = out[out.length - 1].next.token;
    const t0 = process.hrtime.bigint();
    for (let s = 1; s < gen; s++) {
        out = await seq.controlledEvaluate([[token, next]]);
        token = out[0].next.token;
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    process.stderr.write(`run ${r + 1}${r < warmup ? " (warm-up)" : ""}: ${(1e3 * seconds / (gen - 1)).toFixed(2)} ms per token\n`);
    if (r >= warmup) rates.push((gen - 1) / seconds);
}
rates.sort((a, b) => a - b);
const mid = rates.length >> 1, median = rates.length % 2 ? rates[mid] : (rates[mid - 1] + rates[mid]) / 2;
console.log(`llama_bench decode_tokens_per_s=${median.toFixed(1)} ms_per_token=${(1e3 / median).toFixed(2)} ` +
            `threads=${threads} prompt=${prompt} gen=${gen} runs=${runs}`);
await context.dispose();
await model.dispose();
process.exit(0);
