// hf_check.cjs — Hugging Face tokenizers (npm "tokenizers", the Rust library) reads a tokenizer.json
// that fm wrote and encodes a file; prints the id count and FNV-1a 64 of the ids.
// Usage: node hf_check.cjs NPM_DIR TOKENIZER_JSON FILE
const path = require("path");
const fs = require("fs");
const { createRequire } = require("module");
const req = createRequire(path.join(path.resolve(process.argv[2]), "package.json"));
const { Tokenizer } = req("tokenizers");
(async () => {
    const tok = Tokenizer.fromFile(process.argv[3]);
    const text = fs.readFileSync(process.argv[4], "utf8");
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    const ids = enc.getIds();
    let h = 0xcbf29ce484222325n;
    const mask = (1n << 64n) - 1n;
    for (const id of ids) h = ((h ^ BigInt(id)) * 0x100000001b3n) & mask;
    console.log(`ids ${ids.length}\nfnv1a64 ${h.toString(16).padStart(16, "0")}`);
})();
