// check.mjs — runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build) and prints, as
// one JSON object on stdout, what tests/cli_gguf_test.sh compares with fm:
//   metadata   the file's general.architecture, general.name, file type, tokenizer.ggml.pre,
//              tokenizer.chat_template, vocabulary size, as llama.cpp read them
//   prompts    per prompt: llama.cpp's token ids of its text (fm's tokenizer in the file), the
//              greedy continuation (top-1 logit each step, `tokens` steps, no penalties), and
//              for `forced` ids (prompt ids + fm's continuation): the top-1 at each position
//              from the prompt's last token on (teacher-forced), with the margin of the top two
//              logits, and the text llama.cpp gives back for the forced continuation ids
//   texts      llama.cpp's token ids of each of `texts`
// Usage: node check.mjs NODE_MODULES_DIR MODEL.gguf CASES.json
//   CASES.json: {"tokens": 32, "prompts": [{"text": "...", "forced": [ids], "forced_from": i}, ...],
//                "texts": ["...", ...]}   (forced_from: the index of the prompt's last token)
// Nothing is downloaded or built: the prebuilt binary (@node-llama-cpp/linux-x64) must be there.
import path from "node:path";
import fs from "node:fs";
import {pathToFileURL} from "node:url";

const [modulesDir, modelPath, casesPath] = process.argv.slice(2);
if (!modulesDir || !modelPath || !casesPath) {
    console.error("usage: node check.mjs NODE_MODULES_DIR MODEL.gguf CASES.json");
    process.exit(2);
}
process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
const entry = path.join(modulesDir, "node-llama-cpp", "dist", "index.js");
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(entry).href);
const cases = JSON.parse(fs.readFileSync(casesPath, "utf8"));
const steps = cases.tokens ?? 32;

const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false, skipDownload: true,
    logLevel: LlamaLogLevel.error, logger: (level, message) => process.stderr.write(message),
});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const ctxLen = model.trainContextSize;
// float32 keys and values (llama.cpp's default is float16), no flash attention: as close to fm's
// float32 arithmetic as llama.cpp goes; one thread (on a busy machine two spin against each other,
// 100x slower)
const context = await model.createContext({
    contextSize: ctxLen, batchSize: ctxLen, sequences: 1, flashAttention: false, threads: 1,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const seq = context.getSequence();

// The top two logits after the input items; each item is evaluated, the last one asks for logits.
const top2 = (out) => {
    const it = out.next.logits.entries();
    const [a, la] = it.next().value;
    const second = it.next().value;
    return {token: a, margin: second ? la - second[1] : Infinity};
};
const ask = {generateNext: {logits: true}};

const meta = model.fileInfo.metadata;
const result = {
    metadata: {
        architecture: meta.general?.architecture,
        name: meta.general?.name,
        file_type: meta.general?.file_type,
        pre: meta.tokenizer?.ggml?.pre,
        chat_template: meta.tokenizer?.chat_template ?? null,
        vocab: meta.tokenizer?.ggml?.tokens?.length ?? null,
        context: ctxLen,
    },
    prompts: [],
};

for (const c of cases.prompts) {
    const ids = Array.from(model.tokenize(c.text, false));
    const r = {ids, greedy: [], greedy_margins: []};
    // greedy: the prompt, then one token at a time
    await seq.clearHistory();
    let input = [...ids.slice(0, -1), [ids[ids.length - 1], ask]];
    for (let s = 0; s < steps; s++) {
        const out = await seq.controlledEvaluate(input);
        const t = top2(out[out.length - 1]);
        r.greedy.push(t.token);
        r.greedy_margins.push(t.margin);
        input = [[t.token, ask]];
    }
    if (c.forced) {
        // teacher-forced: the whole sequence in one pass, logits from the prompt's last token on
        await seq.clearHistory();
        const first = c.forced_from ?? ids.length - 1;
        const input = c.forced.slice(0, -1).map((tok, i) => (i >= first ? [tok, ask] : tok));
        const out = await seq.controlledEvaluate(input);
        r.forced_top1 = [];
        r.forced_margins = [];
        for (let i = first; i < c.forced.length - 1; i++) {
            const t = top2(out[i]);
            r.forced_top1.push(t.token);
            r.forced_margins.push(t.margin);
        }
        r.forced_text = model.detokenize(c.forced.slice(first + 1));
    }
    result.prompts.push(r);
}
// texts to tokenize only (the pre-tokenizer and the byte-level alphabet on harder text)
result.texts = (cases.texts ?? []).map((text) => Array.from(model.tokenize(text, false)));
process.stdout.write(JSON.stringify(result) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
