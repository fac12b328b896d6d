/*
 * cmd-serve.c — `fm serve`: an OpenAI-compatible HTTP server over a model (and LoRA adapters, one
 * model id each) with continuous batching. The server is the library's (src/serve/, fm_server_*
 * in fm.h; docs/serve.md); this file reads the arguments, loads the model, tokenizer and
 * adapters, prints "listening on http://HOST:PORT" once it listens (with --port 0, the port it
 * got) and a line per request on stderr, and on SIGINT or SIGTERM stops taking requests, lets the
 * running ones finish and exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

extern const cli_command cmd_serve; /* (main.c lists it) */

static void log_line(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

/* The last component of a directory path ("runs/base/" -> "base"). */
static char *base_name(const char *dir) {
    char *s = cli_strdup("serve", dir);
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/') s[--n] = '\0';
    char *slash = strrchr(s, '/');
    char *name = cli_strdup("serve", slash && slash[1] ? slash + 1 : s);
    free(s);
    return name;
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *host = "127.0.0.1", *api_key = NULL, *alias = NULL;
    int port = 8080, parallel = 4, max_queue = 64, threads = 0, timeout = 600, max_body = 1 << 20, quiet = 0;
    cli_list adapter_args = {0};
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory with its tokenizer (required)"},
        {"adapter", OPT_LIST, &adapter_args, 0, 0, "NAME=DIR: a LoRA adapter served as model NAME (repeatable)"},
        {"host", OPT_STRING, &host, 0, 0, "address to listen on (default 127.0.0.1)"},
        {"port", OPT_INT, &port, 0, 65535, "port (default 8080; 0 = a free one, printed)"},
        {"parallel", OPT_INT, &parallel, 1, 4096, "sequences decoded together per model (default 4)"},
        {"max-queue", OPT_INT, &max_queue, 0, 1e6, "requests waiting for a slot before 503 (default 64)"},
        {"api-key", OPT_STRING, &api_key, 0, 0, "require Authorization: Bearer KEY (all but /health)"},
        {"alias", OPT_STRING, &alias, 0, 0, "the model's id in the API (default: the directory's name)"},
        {"timeout", OPT_INT, &timeout, 1, 1e7, "seconds a request may take (default 600)"},
        {"max-body", OPT_INT, &max_body, 1, 1e9, "largest request body in bytes (default 1048576)"},
        {"quiet", OPT_FLAG, &quiet, 0, 0, "no line per request on stderr"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_serve, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir) cli_usage_error("serve", "--model DIR is required");
    if (alias && !alias[0]) cli_usage_error("serve", "--alias: the id is empty");

    fm_model *model;
    fm_tokenizer *tok;
    cli_load_model("serve", dir, &model, &tok, 1);
    char *id = alias ? cli_strdup("serve", alias) : base_name(dir);
    int n_adapters = adapter_args.n;
    const char **names = cli_alloc("serve", n_adapters ? n_adapters : 1, sizeof *names);
    fm_adapter **adapters = cli_alloc("serve", n_adapters ? n_adapters : 1, sizeof *adapters);
    for (int i = 0; i < n_adapters; i++) {
        const char *arg = adapter_args.items[i], *eq = strchr(arg, '=');
        if (!eq || eq == arg || !eq[1]) cli_usage_error("serve", "--adapter '%s': give NAME=DIR", arg);
        char *name = cli_strdup("serve", arg);
        name[eq - arg] = '\0';
        if (strcmp(name, id) == 0) cli_usage_error("serve", "--adapter %s: the base model has that id", name);
        for (int j = 0; j < i; j++)
            if (strcmp(names[j], name) == 0) cli_usage_error("serve", "--adapter %s: given twice", name);
        names[i] = name;
        fm_status st = fm_adapter_load(&adapters[i], eq + 1, model);
        if (st) cli_fail("serve", st);
    }

    /* SIGINT and SIGTERM are taken by sigwait below: blocked in every thread the server makes */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    fm_server_config cfg;
    fm_server_config_default(&cfg);
    cfg.model = model;
    cfg.tok = tok;
    cfg.model_id = id;
    cfg.adapter_ids = names;
    cfg.adapters = (const fm_adapter *const *)adapters;
    cfg.n_adapters = n_adapters;
    cfg.host = host;
    cfg.port = port;
    cfg.parallel = parallel;
    cfg.max_queue = max_queue;
    cfg.api_key = api_key;
    cfg.max_body = (size_t)max_body;
    cfg.timeout = timeout;
    cfg.threads = threads;
    cfg.log = quiet ? NULL : log_line;
    fm_server *srv;
    fm_status st = fm_server_start(&srv, &cfg);
    if (st) {
        fprintf(stderr, "fm serve: %s\n", fm_last_error());
        return 1;
    }
    int v6 = strchr(host, ':') != NULL;
    fprintf(stderr, "listening on http://%s%s%s:%d (model %s, %d sequence%s at once, context %d)\n", v6 ? "[" : "",
            host, v6 ? "]" : "", fm_server_port(srv), id, parallel, parallel > 1 ? "s" : "",
            fm_model_config(model)->n_positions);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "%s: finishing the requests in progress, then stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fm_server_stop(srv);
    fprintf(stderr, "stopped\n");
    for (int i = 0; i < n_adapters; i++) {
        fm_adapter_free(adapters[i]);
        free((char *)names[i]);
    }
    free(adapters);
    free(names);
    free(id);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_serve = {"serve", "--model DIR [--adapter NAME=DIR ...] [--host H] [--port N] [--parallel N] ...",
                               "An OpenAI-compatible HTTP server with continuous batching.", run};
