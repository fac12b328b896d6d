/*
 * cmd-init.c — `fm init`: a new model directory with GPT-2's random initialisation.
 */
#include <stdio.h>

#include "cli.h"

static int run(int argc, char **argv) {
    fm_config cfg;
    fm_config_default(&cfg);
    const char *out = NULL;
    uint64_t seed = 1337;
    int threads = 0, force = 0;
    cli_option opts[] = {
        {"out", OPT_STRING, &out, 0, 0, "model directory to create (required)"},
        {"layers", OPT_INT, &cfg.n_layer, 1, 4096, "transformer blocks (n_layer, default 12)"},
        {"dim", OPT_INT, &cfg.n_embd, 1, 65536, "width (n_embd, default 768)"},
        {"heads", OPT_INT, &cfg.n_head, 1, 65536, "attention heads; must divide the width (default 12)"},
        {"vocab", OPT_INT, &cfg.vocab_size, 1, 16777216, "vocabulary size (default 50257)"},
        {"context", OPT_INT, &cfg.n_positions, 1, 1048576, "longest context (n_positions, default 1024)"},
        {"inner", OPT_INT, &cfg.n_inner, 0, 1048576, "MLP width (default 0: 4 x width)"},
        {"seed", OPT_U64, &seed, 0, 1.8e19, "random seed (default 1337)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
        {"force", OPT_FLAG, &force, 0, 0, "replace a model already in --out"},
    };
    char *positional[1];
    cli_parse(&cmd_init, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!out) cli_usage_error("init", "--out DIR is required");
    fm_set_threads(threads);
    fm_model *model = NULL;
    fm_status st = fm_config_validate(&cfg);
    if (st) cli_usage_error("init", "%s", fm_last_error());
    cli_check_out_dir("init", out, NULL, force);
    if ((st = fm_model_init(&model, &cfg, seed))) cli_fail("init", st);
    cli_mkdir_p("init", out);
    int lock = cli_lock_dir("init", out);
    if ((st = fm_model_save(model, out))) cli_fail("init", st);
    fm_dir_unlock(lock);
    printf("initialised %s: %zu parameters (%d layers, width %d, %d heads, vocabulary %d, context %d)\n",
           out, fm_model_num_params(model), cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size,
           cfg.n_positions);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_init = {"init", "--out DIR [--layers N --dim N --heads N ...]",
                              "Create a model directory with a freshly initialised GPT-2.", run};
