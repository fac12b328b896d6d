// page.mjs — drives fm serve's chat page (GET /) in headless Chromium with playwright-core (the
// version tests/serve_page/package-lock.json locks; it downloads no browser: it runs Debian's
// /usr/bin/chromium) and checks what a person would see: the model's id in the model list, the
// API key typed into the page letting it list the models, a message sent with Enter, the
// finished reply equal to the same greedy request answered without streaming through the API,
// the Send and Stop buttons back in their idle states, a second turn that carries the first in
// its history, an error shown, and on a slow model (STOP_URL: a server, without a key, whose
// greedy reply runs its 1000 tokens) a reply that grows in the page while its request still
// runs (streamed), then the Stop button ending it and freeing its slot. It saves screenshots (PNG):
// SCREENSHOT after two turns, SCREENSHOT less .png plus -stop.png after Stop.
// Not for: the API's own checks (tests/serve/client.mjs, tests/cli_serve_test.sh).
// Usage: node page.mjs NODE_MODULES_DIR BASE_URL API_KEY MODEL_ID SCREENSHOT.png [STOP_URL [CHROMIUM]]
// Prints "ok NAME" per check, "FAIL ..." for each failure, "all passed" at the end; exits 1 on any.
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const [modules, baseURL, apiKey, modelId, shot, stopURL = '', browserPath = '/usr/bin/chromium'] = process.argv.slice(2);
if (!shot) {
    console.error('usage: node page.mjs NODE_MODULES_DIR BASE_URL API_KEY MODEL_ID SCREENSHOT.png [STOP_URL [CHROMIUM]]');
    process.exit(2);
}
const require = createRequire(join(resolve(modules), 'index.js'));
const { chromium } = require('playwright-core');

let failed = 0;
async function check(name, fn) {
    try {
        await fn();
        console.log(`ok ${name}`);
    } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${e && e.message ? e.message.split('\n').slice(0, 3).join(' | ') : e}`);
    }
}
function assert(cond, msg) {
    if (!cond) throw new Error(msg);
}

// The same chat request, answered whole through the API: what the page must end up showing.
async function apiReply(messages, maxTokens) {
    const resp = await fetch(`${baseURL}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
        body: JSON.stringify({ model: modelId, messages, temperature: 0, max_tokens: maxTokens }),
    });
    assert(resp.ok, `the API answered ${resp.status}`);
    return (await resp.json()).choices[0].message.content;
}

const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1000, height: 640 } });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
const bubbles = page.locator('.msg.assistant');
const replyText = (i) => bubbles.nth(i).locator('.text').textContent();

try {
    await check('the page loads', async () => {
        const resp = await page.goto(`${baseURL}/`);
        assert(resp.status() === 200, `GET / answered ${resp.status()}`);
        assert((await page.title()).startsWith('fm chat'), `title '${await page.title()}'`);
    });
    await check('the API key lets the page list the models', async () => {
        await page.fill('#key', apiKey);
        await page.locator('#key').dispatchEvent('change');
        await page.waitForFunction((id) => document.querySelector('#model').value === id, modelId, { timeout: 10000 });
        assert((await page.title()) === `fm chat: ${modelId}`, `title '${await page.title()}'`);
    });
    await page.fill('#temperature', '0');
    await page.fill('#max_tokens', '24');
    const first = [{ role: 'user', content: 'Hello' }];
    await check('a message gets its streamed reply in the page', async () => {
        await page.fill('#input', 'Hello');
        await page.press('#input', 'Enter');
        await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 30000 });
        const shown = await replyText(0);
        const want = await apiReply(first, 24);
        assert(want.length > 0, 'the API gave an empty reply');
        assert(shown === want, `the page shows ${JSON.stringify(shown)}, the API gave ${JSON.stringify(want)}`);
        assert(await page.locator('.msg.user .text').first().textContent() === 'Hello', 'the user bubble');
    });
    await check('the buttons are idle again', async () => {
        assert(!(await page.isDisabled('#send')), 'Send is disabled');
        assert(await page.isDisabled('#stop'), 'Stop is enabled');
        assert((await page.inputValue('#input')) === '', 'the input was not cleared');
    });
    await check('a second turn carries the first', async () => {
        const firstReply = await replyText(0);
        await page.fill('#input', 'And then?');
        await page.click('#send');
        await page.waitForSelector('.msg.assistant:nth-of-type(4)[data-state="done"]', { timeout: 30000 });
        const want = await apiReply([...first, { role: 'assistant', content: firstReply },
                                     { role: 'user', content: 'And then?' }], 24);
        const shown = await replyText(1);
        assert(shown === want, `the page shows ${JSON.stringify(shown)}, the API gave ${JSON.stringify(want)}`);
    });
    await check('no script errors', async () => assert(pageErrors.length === 0, pageErrors.join('; ')));
    await page.screenshot({ path: shot });
    await check('an error is shown in the page', async () => {
        await page.fill('#max_tokens', '1');
        await page.fill('#key', 'wrong-key');
        await page.fill('#input', 'Hello');
        await page.press('#input', 'Enter');
        await page.waitForSelector('.msg.error', { timeout: 10000 });
        const text = await page.locator('.msg.error .text').textContent();
        assert(text.startsWith('401:'), `the error reads '${text}'`);
    });
    if (stopURL) {
        await check('a long reply grows as it streams, Stop ends it at once and frees its slot', async () => {
            // the slow model's greedy reply runs its 1000 tokens (seconds); Stop once it streams
            const resp = await fetch(`${stopURL}/v1/chat/completions`, {
                method: 'POST',
                body: JSON.stringify({ messages: [{ role: 'user', content: 'Tell me a long story' }], temperature: 0,
                                       max_tokens: 1000 }),
            });
            const full = (await resp.json()).choices[0];
            assert(full.finish_reason === 'length', `the slow model's greedy reply ends by itself (${full.finish_reason})`);
            await page.goto(`${stopURL}/`);
            await page.fill('#temperature', '0');
            await page.fill('#max_tokens', '1000');
            await page.fill('#input', 'Tell me a long story');
            await page.press('#input', 'Enter');
            const shownLength = () => document.querySelector('.msg.assistant .text').textContent.length;
            await page.waitForFunction(shownLength, null, { timeout: 10000 });
            // streamed: the reply grows in the page while it is still running (the whole takes seconds)
            const first = await page.evaluate(shownLength);
            await page.waitForFunction((n) => document.querySelector('.msg.assistant .text').textContent.length > n, first,
                                       { timeout: 10000 });
            assert(await page.isEnabled('#stop'), 'the reply ended before it could be stopped');
            await page.click('#stop');
            await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 5000 });
            const note = await page.locator('.msg.assistant .note').textContent();
            const text = await replyText(0);
            assert(note.includes('[stopped]'), `the reply's note reads '${note}'`);
            assert(text.length > 0 && full.message.content.startsWith(text) && text.length < full.message.content.length,
                   `the stopped reply (${text.length} characters) is not a beginning of the whole (${full.message.content.length})`);
            assert(!(await page.isDisabled('#send')) && (await page.isDisabled('#stop')), 'the buttons after Stop');
            let running = -1;
            for (let i = 0; i < 50 && running !== 0; i++) {
                const metrics = await (await fetch(`${stopURL}/metrics`)).text();
                running = Number(/^fm_running_sequences (\d+)$/m.exec(metrics)[1]);
                if (running) await new Promise((r) => setTimeout(r, 100));
            }
            assert(running === 0, `${running} sequences still run 5 s after Stop`);
            console.log(`   (stopped after ${text.length} of ${full.message.content.length} characters)`);
            await page.screenshot({ path: shot.replace(/\.png$/, '') + '-stop.png' });
        });
    }
} finally {
    await browser.close();
}
console.log(failed ? `${failed} failed` : 'all passed');
process.exit(failed ? 1 : 0);
