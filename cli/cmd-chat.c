/*
 * cmd-chat.c — `fm chat`: a conversation with a chat model in the terminal.
 *
 * Each turn renders the whole conversation with the pinned chat template (src/tokenizer/
 * chat_template.c: "<|ROLE|>" + content + "<|endoftext|>" per message, ending "<|assistant|>")
 * and streams the reply until the model's <|endoftext|>. On a terminal it prompts for each
 * line; with piped input each line is one user turn and the end of input ends the chat (exit 0).
 * When the conversation no longer fits the context with room for a reply, the oldest turns are
 * forgotten (the system message stays) and the user is told so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Streams each piece of the reply as it becomes final text. */
static int print_piece(void *user, int index, const int *ids, int n_ids, const char *text, size_t len) {
    (void)user, (void)index, (void)ids, (void)n_ids;
    if (text && len) fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* One line of stdin without its newline (malloc'd), or NULL at the end of input. */
static char *read_line(void) {
    size_t cap = 256, n = 0;
    char *line = cli_alloc("chat", cap, 1);
    int ch;
    while ((ch = getchar()) != EOF && ch != '\n') {
        if (n + 1 == cap) line = cli_realloc("chat", line, cap *= 2, 1);
        line[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) {
        free(line);
        return NULL;
    }
    if (n && line[n - 1] == '\r') n--;
    line[n] = '\0';
    return line;
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *adapter_dir = NULL, *system = NULL;
    int max_tokens = 256, repeat_window = 64, threads = 0;
    uint64_t seed = 0;
    fm_sampler_config sc;
    fm_sampler_config_default(&sc);
    sc.temperature = 0.7f;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory with a chat tokenizer (required)"},
        {"adapter", OPT_STRING, &adapter_dir, 0, 0, "a LoRA adapter directory (PEFT's files) applied to the model"},
        {"system", OPT_STRING, &system, 0, 0, "a system message opening the conversation"},
        {"max-tokens", OPT_INT, &max_tokens, 1, 1e7, "tokens per reply at most (default 256)"},
        {"temperature", OPT_FLOAT, &sc.temperature, 0, 100, "0 = greedy (default 0.7)"},
        {"top-k", OPT_INT, &sc.top_k, 0, 1e8, "keep the k most likely (0 = off)"},
        {"top-p", OPT_FLOAT, &sc.top_p, 1e-6, 1, "nucleus: smallest set reaching p (1 = off)"},
        {"min-p", OPT_FLOAT, &sc.min_p, 0, 1, "drop tokens below min-p x the most likely (0 = off)"},
        {"repeat-penalty", OPT_FLOAT, &sc.repeat_penalty, 1e-3, 100, "penalise recent tokens (1 = off)"},
        {"repeat-window", OPT_INT, &repeat_window, 0, 1e7, "recent tokens the penalty looks at (64)"},
        {"seed", OPT_U64, &seed, 0, 1.8e19, "random seed (default 0); each reply draws from seed + its turn"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_chat, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir) cli_usage_error("chat", "--model DIR is required");
    if (fm_sampler_validate(&sc)) cli_usage_error("chat", "%s", fm_last_error());
    fm_set_threads(threads);
    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model("chat", dir, &model, &tok, 1);
    fm_adapter *adapter = cli_use_adapter("chat", model, adapter_dir);
    fm_status st = fm_chat_check_tokenizer(tok);
    if (st) {
        fprintf(stderr, "fm chat: %s: %s\n", dir, fm_last_error());
        return 1;
    }
    int ctx = fm_model_config(model)->n_positions, eos = fm_tokenizer_special_id(tok, "<|endoftext|>");
    if (max_tokens > ctx / 2) max_tokens = ctx / 2 > 0 ? ctx / 2 : 1; /* room for the conversation */
    fm_session *session;
    if ((st = fm_session_init(&session, model, 1, ctx))) cli_fail("chat", st);
    int tty = isatty(0);
    size_t cap = 16, n = 0;
    fm_chat_message *msgs = cli_alloc("chat", cap, sizeof *msgs);
    if (system) msgs[n++] = (fm_chat_message){"system", cli_strdup("chat", system)};
    int first = system ? 1 : 0; /* the oldest message that may be forgotten */
    if (tty) fprintf(stderr, "chatting with %s (context %d tokens); end with Ctrl-D\n", dir, ctx);
    for (int turn = 0;; turn++) {
        if (tty) fputs("> ", stderr);
        char *line = read_line();
        if (!line) break;
        if (!line[0]) {
            free(line);
            continue;
        }
        if (n + 2 > cap) msgs = cli_realloc("chat", msgs, cap *= 2, sizeof *msgs);
        msgs[n++] = (fm_chat_message){"user", line};
        int *ids = NULL;
        size_t n_ids = 0;
        int forgot = 0;
        for (;;) { /* the conversation as a prompt, the oldest turns dropped until a reply fits */
            free(ids);
            ids = NULL;
            if ((st = fm_chat_encode(tok, msgs, n, 1, 0, &ids, NULL, &n_ids))) cli_fail("chat", st);
            if (n_ids + (size_t)max_tokens <= (size_t)ctx || (int)n - first <= 1) break;
            free((char *)msgs[first].content);
            memmove(msgs + first, msgs + first + 1, sizeof *msgs * (n - first - 1));
            n--, forgot++;
        }
        if (forgot) fprintf(stderr, "[context full: the %d oldest message%s forgotten]\n", forgot, forgot > 1 ? "s" : "");
        if (n_ids + 1 > (size_t)ctx) {
            fprintf(stderr, "[your message is %zu tokens with the template; the context holds %d: not sent]\n", n_ids,
                    ctx);
            free((char *)msgs[--n].content);
            free(ids);
            continue;
        }
        fm_generate_config gc;
        fm_generate_config_default(&gc);
        gc.sampler = sc;
        gc.max_tokens = (int)(ctx - n_ids) < max_tokens ? (int)(ctx - n_ids) : max_tokens;
        gc.repeat_window = repeat_window;
        gc.seed = seed + (uint64_t)turn;
        gc.eos = eos;
        gc.tok = tok;
        const int *prompt = ids;
        int n_prompt = (int)n_ids;
        fm_generate_result r = {0};
        fm_session_reset(session, 0);
        if ((st = fm_generate(session, &gc, &prompt, &n_prompt, 1, print_piece, NULL, &r))) cli_fail("chat", st);
        fputc('\n', stdout);
        fflush(stdout);
        if (r.finish == FM_FINISH_LENGTH) fprintf(stderr, "[the reply reached %d tokens and was cut]\n", gc.max_tokens);
        msgs[n++] = (fm_chat_message){"assistant", cli_strdup("chat", r.text ? r.text : "")};
        fm_generate_result_free(&r);
        free(ids);
    }
    for (size_t i = 0; i < n; i++) free((char *)msgs[i].content);
    free(msgs);
    fm_session_free(session);
    fm_tokenizer_free(tok);
    fm_adapter_free(adapter);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_chat = {"chat", "--model DIR [--adapter DIR] [--system TEXT] [sampling options]",
                              "Chat with a model in the terminal (one user turn a line when piped).", run};
