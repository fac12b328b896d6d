/*
 * cmd-generate.c — `fm generate`: continue a prompt with a KV-cached decoder, streaming the
 * text as it is made. Sampling order (fm.h): repetition penalty, temperature, top-k, top-p,
 * min-p. Same seed, same text. Few-shot prompting is a prompt file with the examples in it.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Text output that holds back what could still become a stop string. */
typedef struct {
    char *buf;
    size_t len, cap, emitted;
    const cli_list *stops;
    size_t longest_stop;
} stream;

static void stream_emit(stream *s, size_t upto) {
    if (upto > s->emitted) {
        fwrite(s->buf + s->emitted, 1, upto - s->emitted, stdout);
        fflush(stdout);
        s->emitted = upto;
    }
}

/* Appends bytes; returns 1 when a stop string has appeared (output then ends before it). */
static int stream_add(stream *s, const char *bytes, size_t n) {
    if (s->len + n + 1 > s->cap) {
        s->cap = 2 * (s->len + n + 1);
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, bytes, n);
    s->len += n;
    s->buf[s->len] = '\0';
    for (int i = 0; i < s->stops->n; i++) {
        size_t stop_len = strlen(s->stops->items[i]);
        size_t from = s->emitted;
        const char *hit = stop_len ? memmem(s->buf + from, s->len - from, s->stops->items[i], stop_len) : NULL;
        if (hit) {
            stream_emit(s, (size_t)(hit - s->buf));
            return 1;
        }
    }
    size_t hold = s->longest_stop > 0 ? s->longest_stop - 1 : 0;
    if (s->len > hold) stream_emit(s, s->len - hold);
    return 0;
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *prompt = NULL, *file = NULL, *ids_text = NULL;
    int max_tokens = 200, ignore_eos = 0, repeat_window = 64, threads = 0;
    uint64_t seed = 0;
    cli_list stops = {0};
    fm_sampler_config sc;
    fm_sampler_config_default(&sc);
    sc.temperature = 0.8f;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory (required)"},
        {"prompt", OPT_STRING, &prompt, 0, 0, "prompt text (or a positional argument)"},
        {"file", OPT_STRING, &file, 0, 0, "read the prompt from a file ('-' = stdin)"},
        {"ids", OPT_STRING, &ids_text, 0, 0, "prompt as token ids; output ids too (no tokenizer needed)"},
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
    if ((prompt != NULL) + (file != NULL) + (ids_text != NULL) > 1)
        cli_usage_error("generate", "choose one of --prompt, --file and --ids");
    if (fm_sampler_validate(&sc)) cli_usage_error("generate", "%s", fm_last_error());
    fm_set_threads(threads);

    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model("generate", dir, &model, &tok, ids_text == NULL);
    const fm_config *cfg = fm_model_config(model);
    int V = cfg->vocab_size, ctx = cfg->n_positions;

    /* the prompt as tokens */
    int *tokens = NULL;
    size_t n_prompt = 0;
    if (ids_text) {
        tokens = cli_parse_ids("generate", ids_text, V, &n_prompt);
    } else {
        size_t len = 0;
        char *owned = NULL;
        if (!prompt) {
            if (!file && isatty(0)) cli_usage_error("generate", "no prompt: give --prompt, --file or stdin");
            prompt = owned = cli_read_file("generate", file, &len);
        }
        fm_status st = fm_tokenizer_encode(tok, prompt, strlen(prompt), 0, &tokens, &n_prompt);
        if (st) cli_fail("generate", st);
        free(owned);
    }
    int eos = tok ? fm_tokenizer_special_id(tok, "<|endoftext|>") : -1;
    if (n_prompt == 0) {
        if (eos < 0) cli_usage_error("generate", "empty prompt, and the tokenizer has no <|endoftext|> to start from");
        tokens = realloc(tokens, sizeof(int));
        tokens[n_prompt++] = eos;
    }
    size_t total = n_prompt + (size_t)max_tokens;
    tokens = realloc(tokens, sizeof(int) * total);

    fm_decoder *dec;
    fm_status st = fm_decoder_init(&dec, model, ctx);
    if (st) cli_fail("generate", st);
    /* a prompt longer than the context keeps its last context - 1 tokens */
    size_t first = n_prompt >= (size_t)ctx ? n_prompt - (size_t)ctx + 1 : 0;
    const float *logits;
    double t0 = cli_now();
    if ((st = fm_decoder_feed(dec, tokens + first, (int)(n_prompt - first), &logits))) cli_fail("generate", st);
    double t_prompt = cli_now() - t0;

    fm_rng rng;
    fm_rng_seed(&rng, seed);
    float *scratch = malloc(sizeof(float) * 2 * (size_t)V);
    stream out = {.stops = &stops};
    for (int i = 0; i < stops.n; i++)
        if (strlen(stops.items[i]) > out.longest_stop) out.longest_stop = strlen(stops.items[i]);
    size_t n = n_prompt;
    int stopped = 0;
    while (n < total && !stopped) {
        size_t window = n < (size_t)repeat_window ? n : (size_t)repeat_window;
        int next = fm_sample(&sc, logits, V, tokens + n - window, (int)window, &rng, scratch);
        tokens[n++] = next;
        if (next == eos && !ignore_eos) break;
        if (ids_text) {
            printf("%s%d", n - 1 == n_prompt ? "" : " ", next);
            fflush(stdout);
        } else {
            size_t len;
            const char *bytes = fm_tokenizer_token_bytes(tok, next, &len);
            stopped = stream_add(&out, bytes, len);
        }
        if (n == total || stopped) break;
        if (fm_decoder_length(dec) == ctx) { /* full: keep the last half of the context and go on */
            int keep = ctx / 2;
            fm_decoder_reset(dec);
            if ((st = fm_decoder_feed(dec, tokens + n - keep, keep, &logits))) cli_fail("generate", st);
        } else if ((st = fm_decoder_feed(dec, &tokens[n - 1], 1, &logits))) {
            cli_fail("generate", st);
        }
    }
    if (!stopped) stream_emit(&out, out.len);
    printf("\n");
    double elapsed = cli_now() - t0;
    size_t made = n - n_prompt;
    fprintf(stderr, "[%zu prompt tokens in %.2f s; %zu tokens generated, %.1f tokens/s]\n", n_prompt - first,
            t_prompt, made, made / (elapsed - t_prompt > 0 ? elapsed - t_prompt : 1e-9));
    free(out.buf);
    free(scratch);
    free(tokens);
    fm_decoder_free(dec);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_generate = {"generate", "--model DIR [PROMPT] [--file F] [sampling options]",
                                  "Continue a prompt (argument, file or stdin), streaming the text.", run};
