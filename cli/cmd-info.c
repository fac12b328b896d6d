/*
 * cmd-info.c — `fm info`: what a model directory holds (configuration, parameters, state).
 */
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
    cli_option opts[] = {{"model", OPT_STRING, &dir, 0, 0, "model directory (required)"}};
    char *positional[1];
    cli_parse(&cmd_info, argc, argv, opts, 1, positional, 0);
    if (!dir) cli_usage_error("info", "--model DIR is required");
    fm_model *model = NULL;
    fm_status st = fm_model_load(&model, dir);
    if (st) cli_fail("info", st);
    const fm_config *c = fm_model_config(model);
    printf("model         %s\n", dir);
    printf("parameters    %zu\n", fm_model_num_params(model));
    printf("layers        %d\nwidth         %d\nheads         %d (head size %d)\n", c->n_layer,
           c->n_embd, c->n_head, c->n_embd / c->n_head);
    printf("mlp width     %d\nvocabulary    %d\ncontext       %d\n", fm_config_mlp_width(c),
           c->vocab_size, c->n_positions);
    char *tok_path = cli_path(dir, "tokenizer.json");
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

const cli_command cmd_info = {"info", "--model DIR", "Show a model directory's configuration and training state.", run};
