// check_template.mjs — renders fm's chat_template (from a tokenizer_config.json) with npm's
// @huggingface/jinja for each conversation of a JSON file that holds fm_chat_render's text, and
// exits 1 on any difference, printing it (tests/cli_chat_template_test.sh; the files come from
// build/.../tests/test_chat_template --write DIR).
// Usage: node check_template.mjs NODE_MODULES_DIR tokenizer_config.json conversations.json
// conversations.json: [{"name", "messages": [{"role", "content"}], "add_generation_prompt",
// "render"} | {..., "error": true}] — an "error" entry must fail to render (an unknown role).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const [modules, configPath, convPath] = process.argv.slice(2);
if (!modules || !configPath || !convPath) {
    console.error('usage: node check_template.mjs NODE_MODULES_DIR tokenizer_config.json conversations.json');
    process.exit(2);
}
const require = createRequire(join(resolve(modules), 'index.js'));
const { Template } = require('@huggingface/jinja');

const config = JSON.parse(readFileSync(configPath, 'utf8'));
const conversations = JSON.parse(readFileSync(convPath, 'utf8'));
if (typeof config.chat_template !== 'string') {
    console.error(`${configPath}: no chat_template string`);
    process.exit(1);
}
const template = new Template(config.chat_template);
const show = (s) => JSON.stringify(s);
let failed = 0, checked = 0;
for (const c of conversations) {
    // what transformers passes besides the messages
    const context = {
        messages: c.messages,
        add_generation_prompt: c.add_generation_prompt,
        bos_token: config.bos_token,
        eos_token: config.eos_token,
    };
    let out, err = null;
    try {
        out = template.render(context);
    } catch (e) {
        err = e;
    }
    checked++;
    const label = `${c.name} (add_generation_prompt ${c.add_generation_prompt})`;
    if (c.error) {
        if (!err) {
            failed++;
            console.error(`${label}: rendered ${show(out)}, but fm refuses it`);
        }
        continue;
    }
    if (err) {
        failed++;
        console.error(`${label}: the template failed: ${err.message}`);
    } else if (out !== c.render) {
        failed++;
        let i = 0;
        while (i < out.length && out[i] === c.render[i]) i++;
        console.error(`${label}: differs at character ${i}\n  fm:    ${show(c.render)}\n  jinja: ${show(out)}`);
    }
}
if (checked === 0) {
    console.error(`${convPath}: no conversations`);
    process.exit(1);
}
console.log(`${checked - failed} of ${checked} conversations render identically with @huggingface/jinja`);
process.exit(failed ? 1 : 0);
