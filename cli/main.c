/*
 * main.c — the fm command: a dispatch table of subcommands, one file each (cli/cmd-NAME.c).
 *
 * Standard output is checked when the process exits, however it exits: a write error there (a
 * full disk, `> /dev/full`, a closed descriptor) is an error, so the exit status is 1 with a
 * message, never 0 with the output silently lost.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

extern const cli_command cmd_export; /* cmd-export.c */
extern const cli_command cmd_serve;  /* cmd-serve.c */
extern const cli_command cmd_probe;  /* cmd-probe.c */
extern const cli_command cmd_complete; /* cmd-complete.c */
static const cli_command *const commands[] = {&cmd_init, &cmd_info, &cmd_data, &cmd_pretrain, &cmd_generate, &cmd_score, &cmd_eval, &cmd_bench, &cmd_quantize, &cmd_tokenizer, &cmd_merge, &cmd_finetune, &cmd_chat, &cmd_classify, &cmd_export, &cmd_serve, &cmd_probe, &cmd_complete};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

const char *cli_command_name;

static void usage(FILE *out) {
    fprintf(out, "usage: fm COMMAND [options]   (fm COMMAND --help for its options; fm --version)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
}

/* At exit: flushes and closes stdout; on any write error says so and exits 1. The error may be
 * an earlier write's (ferror) whose errno is gone, hence the plain "write error" then. */
static void check_stdout(void) {
    errno = 0;
    int failed = ferror(stdout), err = 0;
    if (fflush(stdout) != 0) failed = 1, err = errno;
    if (fclose(stdout) != 0) {
        failed = 1;
        if (!err) err = errno;
    }
    if (!failed) return;
    const char *name = cli_command_name;
    fprintf(stderr, "fm%s%s: standard output: %s\n", name ? " " : "", name ? name : "",
            err ? strerror(err) : "write error (output lost)");
    _exit(1);
}

int main(int argc, char **argv) {
    atexit(check_stdout);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    /* FM_CPU forces a lower code path for the kernels (fm.h, fm_cpu_select): a value this
     * build or CPU cannot run is an error here, not a silent fall-back */
    const char *cpu = getenv("FM_CPU");
    if (cpu && *cpu && fm_cpu_select(cpu) != FM_OK) {
        fprintf(stderr, "fm: FM_CPU: %s\n", fm_last_error());
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0) {
        printf("fm %s\n", fm_version());
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0) {
            cli_command_name = commands[i]->name;
            return commands[i]->run(argc - 1, argv + 1);
        }
    fprintf(stderr, "fm: '%s' is not a command\n", name);
    usage(stderr);
    return 2;
}
