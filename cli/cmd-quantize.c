/*
 * cmd-quantize.c — `fm quantize`: a model directory with int8 (Q8_0) weights, for generation.
 *
 * The matrices (wte and every c_attn, c_proj, c_fc weight) become blocks of 32 int8 weights with
 * one float16 scale; biases, LayerNorms and wpe stay float32. Every fm command loads the result;
 * generation runs on the int8 blocks (about 3.5x less memory than float32).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int run(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    int force = 0;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory to read (required)"},
        {"out", OPT_STRING, &out, 0, 0, "model directory to write (required; not the same as --model)"},
        {"force", OPT_FLAG, &force, 0, 0, "replace a model already in --out"},
    };
    char *positional[1];
    cli_parse(&cmd_quantize, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!dir || !out) cli_usage_error("quantize", "--model DIR and --out DIR are required");
    if (strcmp(dir, out) == 0) cli_usage_error("quantize", "--out must differ from --model (keep the float32 original)");
    cli_check_out_dir("quantize", out, dir, force);
    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    cli_load_model("quantize", dir, &model, &tok, 0); /* the tokenizer, if any, goes along */
    fm_status st = fm_model_quantize(model);
    if (st) cli_fail("quantize", st);
    cli_mkdir_p("quantize", out);
    int lock = cli_lock_dir("quantize", out);
    if ((st = fm_model_save(model, out))) cli_fail("quantize", st);
    if (tok) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", out);
        if ((st = fm_tokenizer_save(tok, path))) cli_fail("quantize", st);
        fm_tokenizer_free(tok);
    }
    if ((st = fm_image_tokenizer_copy(dir, out, NULL))) cli_fail("quantize", st); /* an image model's */
    printf("quantized %s to %s: %zu parameters, matrices in Q8_0 (blocks of 32 int8 weights + a float16 scale)\n",
           dir, out, fm_model_num_params(model));
    fm_dir_unlock(lock);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_quantize = {"quantize", "--model DIR --out DIR",
                                  "Write an int8 (Q8_0) copy of a model directory, for fast generation.", run};
