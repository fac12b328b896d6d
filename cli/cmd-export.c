/*
 * cmd-export.c — `fm export FORMAT`: a model directory in another program's format.
 *
 *   fm export gguf --model DIR --out FILE.gguf [--type f32|f16|q8_0]
 *
 * gguf: one GGUF file for llama.cpp (and what is built on it: llama-cli, ollama, node-llama-cpp)
 * as its "gpt2" architecture: the weights (the matrices in --type, the 1-D tensors float32), the
 * tokenizer and, when DIR has a tokenizer_config.json with one, the chat template. The library
 * does the work (fm_gguf_export); this file reads the arguments and prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const cli_command gguf_cmd = {
    "export gguf", "--model DIR --out FILE.gguf [--type f32|f16|q8_0]",
    "Write a model directory (with its tokenizer.json) as one GGUF file for llama.cpp's gpt2 architecture: "
    "the matrices in --type (q8_0: blocks of 32 int8 weights and a float16 scale; a matrix whose rows are not "
    "whole blocks is stored f16), biases and LayerNorms float32, the tokenizer, and the chat template of "
    "DIR/tokenizer_config.json when it has one.", NULL};

static int gguf(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *type_name = "f32", *name = NULL;
    int force = 0;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory to read, with its tokenizer.json (required)"},
        {"out", OPT_STRING, &out, 0, 0, "the GGUF file to write (required)"},
        {"type", OPT_STRING, &type_name, 0, 0, "the matrices' type: f32 (default), f16 or q8_0"},
        {"name", OPT_STRING, &name, 0, 0, "general.name in the file (default: the model directory's name)"},
        {"force", OPT_FLAG, &force, 0, 0, "replace a file already at --out"},
    };
    char *positional[1];
    cli_parse(&gguf_cmd, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir || !out) cli_usage_error(gguf_cmd.name, "--model DIR and --out FILE are required");
    fm_gguf_options opt = {FM_GGUF_F32, NULL, NULL};
    if (fm_gguf_type_parse(type_name, &opt.type)) cli_usage_error(gguf_cmd.name, "--type: %s", fm_last_error());
    struct stat sb;
    if (stat(out, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "fm %s: %s is a folder; --out names the file to write\n", gguf_cmd.name, out);
            return 1;
        }
        if (!force) {
            fprintf(stderr, "fm %s: %s already exists (--force replaces it)\n", gguf_cmd.name, out);
            return 1;
        }
    }

    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    cli_load_model(gguf_cmd.name, dir, &model, &tok, 1);
    char *template = NULL;
    fm_status st = fm_gguf_chat_template(dir, &template);
    if (st) cli_fail(gguf_cmd.name, st);
    opt.chat_template = template;
    /* the name: --name, else the last component of the directory's absolute path ("." included) */
    char *base = realpath(dir, NULL);
    if (!base) base = cli_strdup(gguf_cmd.name, dir);
    const char *slash = strrchr(base, '/');
    opt.name = name ? name : slash && slash[1] ? slash + 1 : base;

    fm_gguf_report report;
    if ((st = fm_gguf_export(model, tok, &opt, out, &report))) cli_fail(gguf_cmd.name, st);
    const fm_config *cfg = fm_model_config(model);
    printf("exported %s to %s: GGUF v3, llama.cpp gpt2, %d layers, width %d, %d heads, vocabulary %d, context %d; "
           "%d tensors, matrices %s", dir, out, cfg->n_layer, cfg->n_embd, cfg->n_head, cfg->vocab_size,
           cfg->n_positions, report.n_tensors, fm_gguf_type_name(opt.type));
    if (report.n_fallback)
        printf(" (%d of them f16: rows not whole blocks of 32)", report.n_fallback);
    printf(", %.2f MiB; chat template: %s\n", report.bytes / 1048576.0, template ? "yes" : "none");
    free(template);
    free(base);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

static int run(int argc, char **argv) {
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "gguf") == 0) return gguf(argc - 1, argv + 1);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        printf("usage: fm export FORMAT [options]   (formats: gguf)\n\n");
        char *help[] = {"gguf", "--help", NULL};
        return gguf(2, help);
    }
    if (!sub[0]) cli_usage_error("export", "expected a format: gguf");
    cli_usage_error("export", "'%s' is not a format fm exports (gguf)", sub);
}

const cli_command cmd_export = {"export", "gguf --model DIR --out FILE.gguf [--type f32|f16|q8_0]",
                                "Write a model in another program's format: gguf (llama.cpp).", run};
