/*
 * cmd-info.c — `fm info`: what a model directory holds (configuration, parameters, state).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* dir holds a training state in some form: a checkpoint link or folder, or the flat file. */
static int has_training_state(const char *dir) {
    const char *names[] = {"checkpoint", "checkpoints", "training_state.safetensors"};
    struct stat sb;
    int found = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = cli_path(dir, names[i]);
        found |= lstat(path, &sb) == 0;
        free(path);
    }
    return found;
}

static int run(int argc, char **argv) {
    const char *dir = NULL;
    int cpu_only = 0;
    cli_option opts[] = {{"model", OPT_STRING, &dir, 0, 0, "model directory (required unless --cpu)"},
                         {"cpu", OPT_FLAG, &cpu_only, 0, 0, "only the kernels' CPU code path (FM_CPU forces a lower one)"}};
    char *positional[1];
    cli_parse(&cmd_info, argc, argv, opts, 2, positional, 0);
    if (cpu_only) {
        printf("cpu path      %s (this CPU runs: %s)\n", fm_cpu_path(), fm_cpu_paths_supported());
        return 0;
    }
    if (!dir) cli_usage_error("info", "--model DIR is required");
    /* a LoRA adapter (a LoRA run, or its best/): the base its config names, and the adapter */
    char *adapter_config = cli_path(dir, "adapter_config.json"), base[1024];
    int is_adapter = access(adapter_config, F_OK) == 0;
    free(adapter_config);
    fm_status st = is_adapter ? fm_adapter_base_name(dir, base, sizeof base) : FM_OK;
    if (st) cli_fail("info", st);
    fm_model *model = NULL;
    if ((st = fm_model_load(&model, is_adapter ? base : dir))) cli_fail("info", st);
    const fm_config *c = fm_model_config(model);
    printf("model         %s%s%s\n", dir, is_adapter ? ", a LoRA adapter of " : "", is_adapter ? base : "");
    printf("parameters    %zu\n", fm_model_num_params(model));
    printf("cpu path      %s (this CPU runs: %s)\n", fm_cpu_path(), fm_cpu_paths_supported());
    if (is_adapter) {
        fm_adapter *adapter = NULL;
        if ((st = fm_adapter_load(&adapter, dir, model))) cli_fail("info", st);
        const fm_lora_config *lc = fm_adapter_config(adapter);
        char targets[128];
        fm_lora_targets_text(lc->targets, targets, sizeof targets);
        printf("adapter       LoRA rank %d, alpha %g (scale %g), dropout %g, on %s\n", lc->r, lc->alpha,
               lc->use_rslora ? lc->alpha / sqrt(lc->r) : lc->alpha / lc->r, lc->dropout, targets);
        fm_adapter_free(adapter);
    }
    printf("layers        %d\nwidth         %d\nheads         %d (head size %d)\n", c->n_layer,
           c->n_embd, c->n_head, c->n_embd / c->n_head);
    printf("mlp width     %d\nvocabulary    %d\ncontext       %d\n", fm_config_mlp_width(c),
           c->vocab_size, c->n_positions);
    char *tok_path = cli_path(dir, "tokenizer.json");
    if (is_adapter && access(tok_path, F_OK) != 0) free(tok_path), tok_path = cli_path(base, "tokenizer.json");
    fm_tokenizer *tok = NULL;
    if (access(tok_path, F_OK) != 0) {
        printf("tokenizer     none (no tokenizer.json)\n");
    } else if (fm_tokenizer_load(&tok, tok_path) != FM_OK) {
        printf("tokenizer     unreadable: %s\n", fm_last_error());
    } else {
        printf("tokenizer     byte-level BPE, %d tokens%s; specials:", fm_tokenizer_vocab_size(tok),
               fm_tokenizer_vocab_size(tok) == c->vocab_size ? "" : " (DOES NOT MATCH the model)");
        const char *specials[] = {"<|endoftext|>", "<|image|>", "<|/image|>", "<|system|>", "<|user|>", "<|assistant|>"};
        for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
            int id = fm_tokenizer_special_id(tok, specials[i]);
            if (id >= 0) printf(" %s=%d", specials[i], id);
        }
        printf("\n");
        fm_tokenizer_free(tok);
    }
    free(tok_path);
    fm_model *ckpt = NULL;
    fm_optimizer *opt = NULL;
    fm_train_state state;
    fm_checkpoint_report report;
    int status = 0;
    if (!has_training_state(dir)) {
        printf("training      no training state\n");
    } else if (fm_checkpoint_load_report(dir, &ckpt, &opt, &state, &report) == FM_OK) {
        const fm_adamw_config *a = fm_optimizer_config(opt);
        printf("checkpoint    %s\n", report.used);
        if (report.skipped[0]) printf("passed over   %s\n", report.skipped);
        printf("training      step %lld of %d, lr %g (min %g, warm-up %d), data position %llu, seed %llu\n",
               (long long)fm_optimizer_steps_done(opt), a->total_steps, a->lr, a->min_lr,
               a->warmup_steps, (unsigned long long)state.data_position,
               (unsigned long long)state.seed);
        printf("optimizer     AdamW, betas (%g, %g), eps %g, weight decay %g, grad clip %g\n", a->beta1, a->beta2,
               a->eps, a->weight_decay, a->grad_clip);
    } else {
        /* a training state is there but no checkpoint loads: say why, and fail */
        printf("training      BROKEN: %s\n", fm_last_error());
        if (report.skipped[0]) printf("passed over   %s\n", report.skipped);
        fprintf(stderr, "fm info: %s: no loadable checkpoint: %s\n", dir, fm_last_error());
        status = 1;
    }
    fm_optimizer_free(opt);
    fm_model_free(ckpt);
    fm_model_free(model);
    return status;
}

const cli_command cmd_info = {"info", "--model DIR | --cpu", "Show a model directory's configuration and training state.", run};
