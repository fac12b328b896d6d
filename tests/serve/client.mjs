// client.mjs — talks to a running `fm serve` with OpenAI's official npm client (the `openai`
// package at the version tests/serve/package-lock.json locks) and checks what comes back:
// models, completions, chat, streaming (completions and chat, with usage), logprobs in both
// shapes, echo's prompt log-probabilities against `fm score --json` (1e-5), n, stop, seeded
// determinism alone and among 8 concurrent requests, and errors (404, 400 naming the field, 401).
// Usage: node client.mjs NODE_MODULES_DIR BASE_URL API_KEY MODEL_ID SCORE_JSON PROMPT
// (SCORE_JSON: `fm score --model M --text PROMPT --json`). Prints "ok NAME" per check, "FAIL ..."
// for each failure, and exits 1 on any.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const [modules, baseURL, apiKey, modelId, scorePath, scorePrompt] = process.argv.slice(2);
if (!scorePrompt) {
    console.error('usage: node client.mjs NODE_MODULES_DIR BASE_URL API_KEY MODEL_ID SCORE_JSON PROMPT');
    process.exit(2);
}
const require = createRequire(join(resolve(modules), 'index.js'));
const OpenAI = require('openai').default ?? require('openai');
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });

let failed = 0;
async function check(name, fn) {
    try {
        await fn();
        console.log(`ok ${name}`);
    } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
    }
}
function assert(cond, msg) {
    if (!cond) throw new Error(msg);
}
const eq = (a, b, what) => assert(JSON.stringify(a) === JSON.stringify(b), `${what}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);

const prompt = 'In the beginning God created';
const base = { model: modelId, prompt, max_tokens: 20, temperature: 1, seed: 42, ignore_eos: true };

await check('models.list', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert(ids.includes(modelId), `no ${modelId} in ${ids}`);
});

let plain;
await check('completions', async () => {
    plain = await client.completions.create(base);
    eq(plain.object, 'text_completion', 'object');
    eq(plain.choices.length, 1, 'choices');
    assert(typeof plain.choices[0].text === 'string' && plain.choices[0].text.length > 0, 'no text');
    eq(plain.choices[0].finish_reason, 'length', 'finish_reason');
    eq(plain.usage.completion_tokens, 20, 'completion_tokens');
    assert(plain.usage.prompt_tokens > 0, 'prompt_tokens');
    eq(plain.usage.total_tokens, plain.usage.prompt_tokens + 20, 'total_tokens');
});

await check('completions stream = non-stream (same seed)', async () => {
    const stream = await client.completions.create({ ...base, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null, chunks = 0;
    for await (const c of stream) {
        chunks++;
        if (c.usage) usage = c.usage;
        for (const ch of c.choices) {
            text += ch.text;
            if (ch.finish_reason) finish = ch.finish_reason;
        }
    }
    eq(text, plain.choices[0].text, 'streamed text');
    eq(finish, 'length', 'finish_reason');
    assert(chunks > 2, `only ${chunks} chunks`);
    assert(usage && usage.completion_tokens === 20, `usage ${JSON.stringify(usage)}`);
});

await check('completions logprobs', async () => {
    const r = await client.completions.create({ ...base, logprobs: 3 });
    const lp = r.choices[0].logprobs;
    eq(r.choices[0].text, plain.choices[0].text, 'text with logprobs');
    eq(lp.tokens.length, 20, 'tokens');
    eq(lp.token_logprobs.length, 20, 'token_logprobs');
    eq(lp.top_logprobs.length, 20, 'top_logprobs');
    eq(lp.text_offset.length, 20, 'text_offset');
    eq(lp.tokens.join(''), r.choices[0].text, 'tokens joined');
    for (let i = 0; i < 20; i++) {
        assert(lp.token_logprobs[i] <= 0, 'a log-prob above 0');
        const top = Object.values(lp.top_logprobs[i]);
        assert(top.length >= 1 && top.length <= 3, `top_logprobs[${i}] has ${top.length}`);
        assert(Math.max(...top) >= lp.token_logprobs[i] - 1e-6, 'the best is below the chosen');
        if (i) assert(lp.text_offset[i] === lp.text_offset[i - 1] + lp.tokens[i - 1].length || lp.text_offset[i] > lp.text_offset[i - 1], 'offsets');
    }
});

await check('echo log-probs = fm score (1e-5)', async () => {
    const score = JSON.parse(readFileSync(scorePath, 'utf8'));
    const r = await client.completions.create({ model: modelId, prompt: scorePrompt, max_tokens: 0, echo: true, logprobs: 0 });
    const lp = r.choices[0].logprobs;
    eq(r.choices[0].text, scorePrompt, 'echoed text');
    eq(lp.token_logprobs.length, score.logprobs.length, 'token count');
    eq(lp.token_logprobs[0], null, 'the first log-prob');
    let worst = 0;
    for (let i = 1; i < score.logprobs.length; i++) worst = Math.max(worst, Math.abs(lp.token_logprobs[i] - score.logprobs[i]));
    assert(worst <= 1e-5, `largest difference ${worst}`);
    eq(r.usage.completion_tokens, 0, 'completion_tokens');
});

await check('echo with tokens generated', async () => {
    const r = await client.completions.create({ ...base, echo: true, logprobs: 1 });
    eq(r.choices[0].text, prompt + plain.choices[0].text, 'echo + completion');
    const lp = r.choices[0].logprobs;
    eq(lp.tokens.join(''), r.choices[0].text, 'tokens joined');
    eq(lp.token_logprobs[0], null, 'first');
});

await check('n = 3 and a list of prompts', async () => {
    const r = await client.completions.create({ ...base, n: 3 });
    eq(r.choices.map((c) => c.index), [0, 1, 2], 'indices');
    eq(r.choices[0].text, plain.choices[0].text, 'choice 0 = the request alone');
    assert(r.choices[1].text !== r.choices[0].text || r.choices[2].text !== r.choices[0].text, 'all choices alike');
    eq(r.usage.completion_tokens, 60, 'completion_tokens');
    const two = await client.completions.create({ ...base, prompt: [prompt, 'And the earth'] });
    eq(two.choices.length, 2, 'two prompts');
    eq(two.choices[0].text, plain.choices[0].text, 'prompt 0 = alone');
});

await check('stop', async () => {
    const greedy = await client.completions.create({ ...base, temperature: 0, max_tokens: 40 });
    const text = greedy.choices[0].text;
    let k = 1;
    while (k < text.length - 2 && text.indexOf(text.slice(k, k + 2)) !== k) k++;
    assert(k < text.length - 2, `no usable stop string in ${JSON.stringify(text)}`);
    const stop = text.slice(k, k + 2);
    const r = await client.completions.create({ ...base, temperature: 0, max_tokens: 40, stop: [stop, '\u0000never'] });
    eq(r.choices[0].text, text.slice(0, k), `text before the stop ${JSON.stringify(stop)}`);
    eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
    const s = await client.completions.create({ ...base, temperature: 0, max_tokens: 40, stop, stream: true });
    let streamed = '';
    for await (const c of s) for (const ch of c.choices) streamed += ch.text;
    eq(streamed, text.slice(0, k), 'streamed text before the stop');
});

await check('seeded: alone = among 8 concurrent', async () => {
    const req = { ...base, max_tokens: 30, seed: 7, temperature: 0.9, top_k: 40, top_p: 0.95, repeat_penalty: 1.1 };
    const alone = (await client.completions.create(req)).choices[0].text;
    const others = [1, 2, 3].map((s) => client.completions.create({ ...req, seed: 100 + s, prompt: 'And God said' }));
    const same = [1, 2, 3, 4, 5].map(() => client.completions.create(req));
    const all = await Promise.all([...same, ...others]);
    for (let i = 0; i < 5; i++) eq(all[i].choices[0].text, alone, `concurrent ${i}`);
});

await check('chat', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Who made the earth?' }];
    const r = await client.chat.completions.create({ model: modelId, messages, max_tokens: 12, seed: 5, logprobs: true, top_logprobs: 2 });
    eq(r.object, 'chat.completion', 'object');
    const c = r.choices[0];
    eq(c.message.role, 'assistant', 'role');
    assert(['stop', 'length'].includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
    const content = c.logprobs.content;
    eq(content.length, r.usage.completion_tokens, 'logprobs per token');
    for (const t of content) {
        assert(typeof t.token === 'string' && t.logprob <= 0 && Array.isArray(t.bytes), 'entry shape');
        eq(t.top_logprobs.length, 2, 'top_logprobs');
    }
    if (c.finish_reason === 'length') eq(r.usage.completion_tokens, 12, 'length');
    const s = await client.chat.completions.create({ model: modelId, messages, max_tokens: 12, seed: 5, stream: true });
    let text = '', role = null, finish = null;
    for await (const ch of s) {
        const d = ch.choices[0];
        if (!d) continue;
        if (d.delta.role) role = d.delta.role;
        if (d.delta.content) text += d.delta.content;
        if (d.finish_reason) finish = d.finish_reason;
    }
    eq(role, 'assistant', 'streamed role');
    eq(text, c.message.content, 'streamed chat text');
    eq(finish, c.finish_reason, 'streamed finish_reason');
});

async function status(fn) {
    try {
        await fn();
        return 200;
    } catch (e) {
        return e.status ?? String(e);
    }
}
await check('errors through the client', async () => {
    eq(await status(() => client.completions.create({ ...base, model: 'nope' })), 404, 'unknown model');
    let param = null;
    try {
        await client.completions.create({ ...base, temperature: 'hot' });
    } catch (e) {
        param = e.param ?? e.error?.param;
        eq(e.status, 400, 'wrong type');
    }
    eq(param, 'temperature', 'the field named');
    const wrongKey = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
    eq(await status(() => wrongKey.completions.create(base)), 401, 'wrong key');
    eq(await status(() => client.completions.create({ ...base, max_tokens: 100000 })), 400, 'past the context');
    const ok = await client.completions.create({ ...base, max_tokens: 2 });
    eq(ok.choices.length, 1, 'serving after errors');
});

console.log(failed ? `client.mjs: ${failed} failed` : 'client.mjs: all passed');
process.exit(failed ? 1 : 0);
