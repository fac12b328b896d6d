/*
 * cmd-merge.c — `fm merge`: a LoRA adapter folded into its base, written as a plain model
 * directory.
 *
 * Each adapted product's weight becomes W + scale (B A)^T (W (in, out), GPT-2's Conv1D layout);
 * the result computes what the base with the adapter computes, needs no adapter to load, and is
 * read by every fm command and by Hugging Face's GPT-2 code. The base's tokenizer goes along.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int run(int argc, char **argv) {
    const char *dir = NULL, *adapter_dir = NULL, *out = NULL;
    int force = 0;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "the base model directory (required)"},
        {"adapter", OPT_STRING, &adapter_dir, 0, 0, "the LoRA adapter directory, PEFT's files (required)"},
        {"out", OPT_STRING, &out, 0, 0, "model directory to write (required)"},
        {"force", OPT_FLAG, &force, 0, 0, "replace a model already in --out"},
    };
    char *positional[1];
    cli_parse(&cmd_merge, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir || !adapter_dir || !out) cli_usage_error("merge", "--model DIR, --adapter DIR and --out DIR are required");
    cli_check_out_dir("merge", out, dir, force);
    cli_check_out_dir("merge", out, adapter_dir, 1);
    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    cli_load_model("merge", dir, &model, &tok, 0);
    fm_adapter *adapter = NULL;
    fm_status st = fm_adapter_load(&adapter, adapter_dir, model);
    if (!st) st = fm_model_merge_adapter(model, adapter);
    if (st) cli_fail("merge", st);
    cli_mkdir_p("merge", out);
    int lock = cli_lock_dir("merge", out);
    if ((st = fm_model_save(model, out))) cli_fail("merge", st);
    if (tok) {
        char *path = cli_path(out, "tokenizer.json");
        if ((st = fm_tokenizer_save(tok, path))) cli_fail("merge", st);
        free(path);
    }
    if ((st = fm_image_tokenizer_copy(dir, out, NULL))) cli_fail("merge", st); /* an image model's */
    char targets[128];
    fm_lora_targets_text(fm_adapter_config(adapter)->targets, targets, sizeof targets);
    printf("merged %s (LoRA rank %d on %s) into %s: %s\n", adapter_dir, fm_adapter_config(adapter)->r, targets, dir,
           out);
    fm_dir_unlock(lock);
    fm_adapter_free(adapter);
    fm_tokenizer_free(tok);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_merge = {"merge", "--model BASE --adapter DIR --out DIR",
                               "Fold a LoRA adapter into its base model: a plain model directory.", run};
