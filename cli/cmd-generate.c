/*
 * cmd-generate.c — `fm generate`: continue a prompt with an inference session, streaming the
 * text as it is made; or continue many prompts (--prompts FILE, one a line) decoded together,
 * one JSON line each. Sampling order (fm.h): repetition penalty, temperature, top-k, top-p,
 * min-p. Same seed, same text, alone or beside other prompts. Few-shot prompting is a prompt
 * file with the examples in it. Generation itself is the library's (fm_generate); this file
 * reads the arguments and prints.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* What the streaming callback needs. */
typedef struct {
    int print;       /* stream the text (or the ids) to stdout */
    int ids_printed; /* ids mode: ids written so far */
    double t0, t_first; /* start; the first piece's time (0 until then) */
} stream;

/* Streams a piece; a write error on stdout stops the generation (main reports it at exit). */
static int on_piece(void *user, int index, const int *ids, int n_ids, const char *text, size_t len) {
    (void)index;
    stream *out = user;
    if (!out->t_first) out->t_first = cli_now();
    if (!out->print) return 0;
    if (text) {
        fwrite(text, 1, len, stdout);
    } else {
        for (int i = 0; i < n_ids; i++) printf("%s%d", out->ids_printed++ ? " " : "", ids[i]);
    }
    return fflush(stdout) != 0 || ferror(stdout);
}

static void *xmalloc(size_t n) { return cli_alloc("generate", n, 1); }


/* One JSON line for prompt index: prompt text (or ids text), ids, text, logprobs (null where not
 * finite), finish reason. Printed directly: nothing to allocate, so nothing left out. */
static void print_json(int index, const char *prompt, size_t prompt_len, const fm_generate_result *r) {
    printf("{\"index\":%d,\"prompt\":", index);
    cli_print_json_string(prompt, prompt_len);
    printf(",\"ids\":[");
    for (int i = 0; i < r->n_tokens; i++) printf("%s%d", i ? "," : "", r->tokens[i]);
    printf("],\"text\":");
    if (r->text) cli_print_json_string(r->text, r->text_len);
    else printf("null");
    printf(",\"logprobs\":[");
    for (int i = 0; i < r->n_tokens; i++) {
        if (i) putchar(',');
        cli_print_json_number("%.9g", r->logprobs[i]);
    }
    printf("],\"finish_reason\":\"%s\"}\n", fm_finish_reason_name(r->finish));
}

/* The lines of a prompts file: each line's bytes without its newline; no line may be empty. */
static int split_lines(const char *path, char *buf, size_t len, char ***lines, size_t **lens) {
    int n = 0, cap = 16;
    *lines = xmalloc(sizeof(char *) * cap);
    *lens = xmalloc(sizeof(size_t) * cap);
    size_t at = 0;
    while (at < len) {
        char *nl = memchr(buf + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - buf) : len;
        if (end == at) {
            fprintf(stderr, "fm generate: %s: line %d is empty (one prompt a line)\n", path ? path : "standard input",
                    n + 1);
            exit(1);
        }
        if (n == cap) {
            cap *= 2;
            *lines = cli_realloc("generate", *lines, cap, sizeof(char *));
            *lens = cli_realloc("generate", *lens, cap, sizeof(size_t));
        }
        (*lines)[n] = buf + at;
        (*lens)[n] = end - at;
        n++;
        at = end + 1;
    }
    return n;
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *adapter_dir = NULL, *prompt = NULL, *file = NULL, *ids_text = NULL, *prompts_file = NULL;
    int max_tokens = 200, ignore_eos = 0, repeat_window = 64, threads = 0, json = 0, parallel = 0;
    uint64_t seed = 0;
    cli_list stops = {0};
    fm_sampler_config sc;
    fm_sampler_config_default(&sc);
    sc.temperature = 0.8f;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory (required)"},
        {"adapter", OPT_STRING, &adapter_dir, 0, 0, "a LoRA adapter directory (PEFT's files) applied to the model"},
        {"prompt", OPT_STRING, &prompt, 0, 0, "prompt text (or a positional argument)"},
        {"file", OPT_STRING, &file, 0, 0, "read the prompt from a file ('-' = stdin)"},
        {"ids", OPT_STRING, &ids_text, 0, 0, "prompt as token ids; output ids too (no tokenizer needed)"},
        {"prompts", OPT_STRING, &prompts_file, 0, 0, "many prompts, one a line ('-' = stdin; needs --json)"},
        {"json", OPT_FLAG, &json, 0, 0, "one JSON line per prompt: ids, text, logprobs, finish_reason"},
        {"parallel", OPT_INT, &parallel, 1, 4096, "--prompts: sequences decoded together (default 4)"},
        {"max-tokens", OPT_INT, &max_tokens, 1, 1e7, "tokens to generate (default 200)"},
        {"temperature", OPT_FLOAT, &sc.temperature, 0, 100, "0 = greedy (default 0.8)"},
        {"top-k", OPT_INT, &sc.top_k, 0, 1e8, "keep the k most likely (0 = off)"},
        {"top-p", OPT_FLOAT, &sc.top_p, 1e-6, 1, "nucleus: smallest set reaching p (1 = off)"},
        {"min-p", OPT_FLOAT, &sc.min_p, 0, 1, "drop tokens below min-p x the most likely (0 = off)"},
        {"repeat-penalty", OPT_FLOAT, &sc.repeat_penalty, 1e-3, 100, "penalise recent tokens (1 = off)"},
        {"repeat-window", OPT_INT, &repeat_window, 0, 1e7, "recent tokens the penalty looks at (64)"},
        {"seed", OPT_U64, &seed, 0, 1.8e19, "random seed (default 0)"},
        {"stop", OPT_LIST, &stops, 0, 0, "stop before this string (repeatable)"},
        {"ignore-eos", OPT_FLAG, &ignore_eos, 0, 0, "keep going after <|endoftext|>"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    int n_pos = cli_parse(&cmd_generate, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 1);
    if (!dir) cli_usage_error("generate", "--model DIR is required");
    if (n_pos) {
        if (prompt) cli_usage_error("generate", "give the prompt once: as an argument or with --prompt");
        prompt = positional[0];
    }
    if ((prompt != NULL) + (file != NULL) + (ids_text != NULL) + (prompts_file != NULL) > 1)
        cli_usage_error("generate", "choose one of --prompt, --file, --ids and --prompts");
    if (prompts_file && !json) cli_usage_error("generate", "--prompts prints JSON lines: add --json");
    if (fm_sampler_validate(&sc)) cli_usage_error("generate", "%s", fm_last_error());
    fm_set_threads(threads);

    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model("generate", dir, &model, &tok, ids_text == NULL);
    fm_adapter *adapter = cli_use_adapter("generate", model, adapter_dir);
    const fm_config *cfg = fm_model_config(model);
    int V = cfg->vocab_size, ctx = cfg->n_positions;
    int eos = tok ? fm_tokenizer_special_id(tok, "<|endoftext|>") : -1;

    /* the prompts: their source text (for --json) and tokens */
    int n = 1;
    char **texts = NULL, *owned = NULL;
    size_t *text_lens = NULL;
    if (prompts_file) {
        size_t len = 0;
        owned = cli_read_file("generate", prompts_file, &len);
        n = split_lines(strcmp(prompts_file, "-") ? prompts_file : NULL, owned, len, &texts, &text_lens);
        if (n == 0) {
            fprintf(stderr, "fm generate: %s: no prompts\n", strcmp(prompts_file, "-") ? prompts_file : "standard input");
            return 1;
        }
    } else {
        texts = xmalloc(sizeof(char *));
        text_lens = xmalloc(sizeof(size_t));
        if (ids_text) {
            texts[0] = (char *)ids_text;
            text_lens[0] = strlen(ids_text);
        } else if (prompt) {
            texts[0] = (char *)prompt;
            text_lens[0] = strlen(prompt);
        } else { /* the whole file: a NUL byte is a byte of the prompt like any other */
            if (!file && isatty(0)) cli_usage_error("generate", "no prompt: give --prompt, --file or stdin");
            texts[0] = owned = cli_read_file("generate", file, &text_lens[0]);
        }
    }
    int **tokens = xmalloc(sizeof(int *) * n), *n_tokens = xmalloc(sizeof(int) * n);
    size_t prompt_tokens = 0, fed_tokens = 0;
    for (int i = 0; i < n; i++) {
        size_t count = 0;
        if (ids_text) {
            tokens[i] = cli_parse_ids("generate", ids_text, V, &count);
        } else {
            fm_status st = fm_tokenizer_encode(tok, texts[i], text_lens[i], 0, &tokens[i], &count);
            if (st) cli_fail("generate", st);
        }
        if (count == 0) { /* an empty prompt starts from <|endoftext|> */
            if (eos < 0) cli_usage_error("generate", "empty prompt, and the tokenizer has no <|endoftext|> to start from");
            free(tokens[i]);
            tokens[i] = xmalloc(sizeof(int));
            tokens[i][count++] = eos;
        }
        if (count > (size_t)INT32_MAX) {
            fprintf(stderr, "fm generate: a prompt of %zu tokens is too long\n", count);
            return 1;
        }
        n_tokens[i] = (int)count;
        prompt_tokens += count;
        size_t fit = ctx > 1 ? (size_t)ctx - 1 : 1; /* a longer prompt keeps its end (fm_generate) */
        fed_tokens += count > fit ? fit : count;
    }

    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.sampler = sc;
    gc.max_tokens = max_tokens;
    gc.repeat_window = repeat_window;
    gc.seed = seed;
    gc.eos = ignore_eos ? -1 : eos;
    gc.tok = ids_text ? NULL : tok; /* --ids: ids out, no text and no stop strings */
    if (!ids_text) {
        gc.stops = stops.items;
        gc.n_stops = stops.n;
    }
    int seqs = prompts_file ? (parallel ? parallel : 4) : 1;
    if (seqs > n) seqs = n;
    fm_session *session;
    fm_status st = fm_session_init(&session, model, seqs, ctx);
    if (st) cli_fail("generate", st);
    fm_generate_result *results = cli_alloc("generate", (size_t)n, sizeof *results);
    memset(results, 0, sizeof *results * (size_t)n);
    stream out = {.print = !json, .t0 = cli_now()};
    st = fm_generate(session, &gc, (const int *const *)tokens, n_tokens, n, on_piece, &out, results);
    if (st) cli_fail("generate", st);
    double elapsed = cli_now() - out.t0;

    size_t made = 0;
    for (int i = 0; i < n; i++) made += (size_t)results[i].n_tokens;
    if (json) {
        for (int i = 0; i < n; i++) print_json(i, texts[i], text_lens[i], &results[i]);
    } else {
        printf("\n");
    }
    fflush(stdout);
    if (prompts_file) {
        fprintf(stderr, "[%d prompts (%zu tokens), %d at a time; %zu tokens generated in %.2f s, %.1f tokens/s]\n", n,
                prompt_tokens, seqs, made, elapsed, made / (elapsed > 0 ? elapsed : 1e-9));
    } else { /* the prompt's time: until the first token came out */
        double t_prompt = (out.t_first ? out.t_first : cli_now()) - out.t0;
        fprintf(stderr, "[%zu prompt tokens in %.2f s; %zu tokens generated, %.1f tokens/s]\n", fed_tokens, t_prompt,
                made, made / (elapsed - t_prompt > 0 ? elapsed - t_prompt : 1e-9));
    }
    for (int i = 0; i < n; i++) {
        fm_generate_result_free(&results[i]);
        free(tokens[i]);
    }
    free(results);
    free(tokens);
    free(n_tokens);
    free(texts);
    free(text_lens);
    free(owned);
    fm_session_free(session);
    fm_tokenizer_free(tok);
    fm_adapter_free(adapter);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_generate = {
    "generate", "--model DIR [PROMPT] [--file F | --ids \"1 2 3\" | --prompts F --json] [sampling options]",
    "Continue a prompt (argument, file or stdin), streaming the text; or many prompts, decoded together.", run};
