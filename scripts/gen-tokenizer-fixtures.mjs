// gen-tokenizer-fixtures.mjs — writes the tokenizer test fixtures from the real references.
//
// Run by scripts/gen-tokenizer-fixtures.sh, which installs the npm packages. Usage:
//   node scripts/gen-tokenizer-fixtures.mjs NPM_DIR OUT_DIR [KJV_TEXT]
// Writes into OUT_DIR (tests/fixtures/tokenizer):
//   cases.txt   thousands of strings and the ids tiktoken's "gpt2" encoding gives them: random
//               mixes of words, contractions, white space, digits, punctuation, many scripts,
//               emoji, controls and random code points; long runs; real text (King James verses,
//               license texts). Each case is a header line "case SPECIAL NBYTES NIDS", the raw
//               bytes, a newline, and the ids on one line. SPECIAL 1 means <|endoftext|> is
//               allowed as a special token (tiktoken's allowedSpecial "all").
//   kjv.txt     the size, id count and FNV-1a 64 hash of the ids of the whole King James text.
// Everything is deterministic (a seeded generator), so rerunning gives the same files.
import { createRequire } from "module";
import fs from "fs";
import path from "path";

const [npmDir, outDir, kjvPath] = process.argv.slice(2);
if (!npmDir || !outDir) {
    console.error("usage: node gen-tokenizer-fixtures.mjs NPM_DIR OUT_DIR [KJV_TEXT]");
    process.exit(2);
}
const require = createRequire(path.join(path.resolve(npmDir), "package.json"));
const { get_encoding } = require("tiktoken");
const enc = get_encoding("gpt2");

// ---------------------------------------------------------------- a seeded generator (mulberry32)
let seed = 0x5eed1234;
function rand() {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1)); // [lo, hi]
const pick = (a) => a[Math.floor(rand() * a.length)];
const cp = (c) => String.fromCodePoint(c);
const range = (lo, hi) => cp(int(lo, hi));
const repeat = (f, n) => Array.from({ length: n }, f).join("");

// ---------------------------------------------------------------- atoms
const words = ("the of and to in is that it was for on are as with his they at be this from have or by one " +
    "had not but what all were when we there can an your which their said if do will each about how up out " +
    "them then she many some so these would other into has more her two like him see time could no make than " +
    "first been its who now people my made over did down only way find use may water long little very after " +
    "words called just where most know get through back much before go good new write our used me man too any " +
    "day same right look think also around another came come work three word must because does part even place " +
    "well such here take why things help put years different away again off went old number great tell men say " +
    "small every found still between name should home big give air line set own under read last never us left " +
    "end along while might next sound below saw something thought both few those always looked show large often " +
    "together asked house don world going want school important until form food keep children feet land side " +
    "without boy once animals life enough took sometimes four head above kind began almost live page got earth " +
    "need far hand high year mother light parts country father let night following picture being study second " +
    "eyes soon times story boys since white days ever paper hard near sentence better best across during today " +
    "others however sure means knew its try told young miles sun ways thing whole hear example heard several " +
    "change answer room sea against top turned learn point city play toward five using himself usually " +
    "tokenizer encoding merges vocabulary Unicode hello world GPT transformer").split(" ");
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'LL", "n't", "'", "''", "'x",
    "'l", "'r", "'v", "’s", "’ll", "`s"];
const punct = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'".split("");
const wsChars = [" ", " ", " ", "\t", "\n", "\r", "\v", "\f", "\r\n", "\u0085", "\u00a0", "\u1680", "\u2000",
    "\u2003", "\u2007", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
    // look-alikes that are not White_Space
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e", "\u001c", "\u001d", "\u001e", "\u001f"];
const letterRanges = [[0xc0, 0xff], [0x100, 0x17f], [0x180, 0x24f], [0x391, 0x3c9], [0x410, 0x44f], [0x531, 0x556],
    [0x5d0, 0x5ea], [0x627, 0x64a], [0x905, 0x939], [0xe01, 0xe2e], [0x10d0, 0x10fa], [0x1200, 0x135a],
    [0x3041, 0x3096], [0x30a1, 0x30fa], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x10330, 0x1034a],
    [0x1d400, 0x1d454], [0x20000, 0x2a6df], [0x2b0, 0x2ff], [0x1e00, 0x1eff], [0xff21, 0xff3a]];
const markRanges = [[0x300, 0x36f], [0x93e, 0x94d], [0xe31, 0xe3a], [0x64b, 0x65f], [0x20d0, 0x20f0]];
const numberRanges = [[0x660, 0x669], [0x966, 0x96f], [0xb2, 0xb3], [0xb9, 0xb9], [0xbc, 0xbe], [0x2150, 0x2189],
    [0x2460, 0x249b], [0xff10, 0xff19], [0x1d7ce, 0x1d7ff], [0x10107, 0x10133], [0x2070, 0x2079]];
const symbolRanges = [[0x2010, 0x2027], [0x2030, 0x205e], [0x20a0, 0x20c0], [0x2100, 0x214f], [0x2190, 0x21ff],
    [0x2200, 0x22ff], [0x2500, 0x257f], [0x25a0, 0x25ff], [0x2600, 0x26ff], [0xa1, 0xbf], [0x3000, 0x303f]];
const emojiRanges = [[0x1f600, 0x1f64f], [0x1f300, 0x1f5ff], [0x1f900, 0x1f9ff], [0x1fa70, 0x1faff]];

function emoji() {
    switch (int(0, 5)) {
    case 0: return range(0x1f466, 0x1f469) + range(0x1f3fb, 0x1f3ff); // skin tone
    case 1: return "\u{1f468}\u200d\u{1f469}\u200d\u{1f467}\u200d\u{1f466}"; // a family (ZWJ)
    case 2: return range(0x1f1e6, 0x1f1ff) + range(0x1f1e6, 0x1f1ff); // a flag
    case 3: return pick(["\u2764\ufe0f", "1\ufe0f\u20e3", "\u263a\ufe0f", "\u{1f3f3}\ufe0f\u200d\u{1f308}"]);
    default: return range(...pick(emojiRanges));
    }
}

function randomCodePoint() {
    for (;;) {
        const c = rand() < 0.8 ? int(0x80, 0xffff) : int(0x10000, 0x10ffff);
        if (c < 0xd800 || c > 0xdfff) return cp(c);
    }
}

function word() {
    const w = rand() < 0.7 ? pick(words) : repeat(() => range(0x61, 0x7a), int(1, 12));
    const r = rand();
    return r < 0.15 ? w[0].toUpperCase() + w.slice(1) : r < 0.2 ? w.toUpperCase() : w;
}

const atoms = [
    [30, () => word()],
    [12, () => " " + word()],
    [6, () => pick(contractions)],
    [6, () => " ".repeat(rand() < 0.8 ? int(1, 4) : int(5, 40))],
    [5, () => repeat(() => pick(wsChars), int(1, 5))],
    [4, () => "\n".repeat(int(1, 4))],
    [5, () => repeat(() => range(0x30, 0x39), rand() < 0.9 ? int(1, 8) : int(9, 60))],
    [5, () => repeat(() => pick(punct), int(1, 5))],
    [8, () => repeat(() => range(...pick(letterRanges)), int(1, 8))],
    [3, () => range(0x61, 0x7a) + repeat(() => range(...pick(markRanges)), int(1, 3))],
    [3, () => repeat(() => range(...pick(numberRanges)), int(1, 4))],
    [4, () => repeat(() => range(...pick(symbolRanges)), int(1, 3))],
    [4, () => emoji()],
    [3, () => repeat(() => randomCodePoint(), int(1, 4))],
    [2, () => pick(["<|endoftext|>", "<|image|>", "<|user|>", "<|", "|>", "<|endoftext", "endoftext|>"])],
    [2, () => cp(pick([0, 1, 2, 7, 8, 0x0e, 0x1b, 0x7f]))],
];
const atomTotal = atoms.reduce((s, a) => s + a[0], 0);
function atom() {
    let r = rand() * atomTotal;
    for (const [w, f] of atoms) {
        if ((r -= w) < 0) return f();
    }
    return atoms[0][1]();
}
const randomString = (n) => repeat(() => (rand() < 0.3 ? " " : "") + atom(), n);

// ---------------------------------------------------------------- the cases
const cases = []; // [text, special]
const edge = ["", " ", "  ", "   ", "a", " a", "  a", "   a", "a ", "a  ", "a   ", "\n", "\n\n", "\n\n\n", " \n",
    "\n ", " \n ", "\t\n x", "  \n\n  x", "x \t y", "'s", "''s", "it's", "IT'S", "don't", "I'll've", "x'", "' s",
    "'s's", " 's", "1,000,000", "3.14159", "   123", " 123abc", "abc123 def", "a1b2c3", "....", " ... ", "!!!?",
    "hello world", "Hello, World!", "<|endoftext|>", " <|endoftext|> ", "a<|endoftext|>b",
    "\u00a0\u00a0x", " \u00a0x", "\u3000\u3000\u3000", "x\u2028y", "\u0085\u0085", "\u200b x", "naïve café",
    "e\u0301", "Ǆǅǆ", "ªº", "ʰʲ", "Ⅻ", "½¼", "²³", "𝟘𝟙", "١٢٣", "日本語のテキスト", "한국어", "Ελληνικά",
    "Русский текст", "עברית", "العربية", "हिन्दी", "ไทย", "👍", "👨‍👩‍👧", "🇩🇪", "❤️", "\u0000", "\u0000\u0000a",
    "\u007f", "\t\t\t", "\r\n\r\n", "   \n   \n", "a\u1680b", "x\u180ey", "\ufeffBOM"];
for (const t of edge) cases.push([t, 0]);
for (let i = 0; i < 1600; i++) cases.push([randomString(int(1, 20)), 0]);
for (let i = 0; i < 150; i++) cases.push([randomString(int(1, 12)).replace(/x/g, "<|endoftext|>"), 1]);
for (let i = 0; i < 10; i++) cases.push([randomString(int(200, 400)), 0]);
for (const n of [100, 1000, 5000]) {
    cases.push([" ".repeat(n), 0], [" ".repeat(n) + "x", 0], ["x" + " ".repeat(n) + "y", 0]);
    cases.push(["\n".repeat(n), 0], ["7".repeat(n), 0], [" " + "1234567890".repeat(n / 10), 0]);
    cases.push(["a".repeat(n), 0], ["!".repeat(n), 0], ["\u3000".repeat(n) + "x", 0], ["é".repeat(n), 0]);
    cases.push([repeat(() => pick([" ", "\t", "\n", "\u00a0"]), n) + "z", 0]);
}

// real text: King James verses and license texts on this machine
const real = [];
if (kjvPath && fs.existsSync(kjvPath)) {
    const lines = fs.readFileSync(kjvPath, "utf8").split("\n");
    cases.push([lines.slice(0, 200).join("\n") + "\n", 0]); // a slice of the text, as one case
    for (let i = 0; i < 450; i++) real.push(pick(lines));
}
const licenseDir = "/usr/share/common-licenses";
if (fs.existsSync(licenseDir)) {
    for (const name of ["GPL-3", "Apache-2.0", "Artistic", "BSD", "MPL-2.0"]) {
        const p = path.join(licenseDir, name);
        if (!fs.existsSync(p)) continue;
        const paras = fs.readFileSync(p, "utf8").split(/\n\s*\n/);
        for (let i = 0; i < 30; i++) real.push(pick(paras));
    }
}
for (const t of real) cases.push([t, 0]);

let out = [];
for (const [text, special] of cases) {
    const ids = special ? enc.encode(text, "all") : enc.encode(text, [], []);
    const bytes = Buffer.from(text, "utf8");
    out.push(Buffer.from(`case ${special} ${bytes.length} ${ids.length}\n`), bytes,
        Buffer.from("\n" + Array.from(ids).join(" ") + "\n"));
}
fs.writeFileSync(path.join(outDir, "cases.txt"), Buffer.concat(out));
console.log(`cases.txt: ${cases.length} cases (${real.length} real strings)`);

// ---------------------------------------------------------------- the whole King James text
if (kjvPath && fs.existsSync(kjvPath)) {
    const text = fs.readFileSync(kjvPath, "utf8");
    const ids = enc.encode(text, [], []);
    let h = 0xcbf29ce484222325n;
    const mask = (1n << 64n) - 1n;
    for (const id of ids) h = ((h ^ BigInt(id)) * 0x100000001b3n) & mask;
    const bytes = Buffer.byteLength(text, "utf8");
    fs.writeFileSync(path.join(outDir, "kjv.txt"),
        `# tiktoken gpt2 on the King James text (one verse a line, as scripts/gen-tokenizer-fixtures.sh makes it)\n` +
        `bytes ${bytes}\nids ${ids.length}\nfnv1a64 ${h.toString(16).padStart(16, "0")}\n`);
    console.log(`kjv.txt: ${bytes} bytes, ${ids.length} ids`);
}
enc.free();
