/*
 * main.c — the fm command: a dispatch table of subcommands, one file each (cli/cmd-NAME.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const cli_command *const commands[] = {&cmd_init, &cmd_info, &cmd_data, &cmd_pretrain, &cmd_generate, &cmd_score, &cmd_eval, &cmd_bench, &cmd_quantize, &cmd_tokenizer};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fprintf(out, "usage: fm COMMAND [options]   (fm COMMAND --help for its options)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0) return commands[i]->run(argc - 1, argv + 1);
    fprintf(stderr, "fm: '%s' is not a command\n", name);
    usage(stderr);
    return 2;
}
