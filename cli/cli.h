/*
 * cli.h — what the fm command's subcommands share: the option parser and error exits.
 *
 * Each subcommand lives in cli/cmd-NAME.c and is listed in main.c's dispatch table. Only cli/
 * prints errors and exits; the library returns fm_status.
 */
#ifndef FM_CLI_H
#define FM_CLI_H

#include "fm.h"

typedef enum { OPT_INT, OPT_FLOAT, OPT_STRING, OPT_FLAG, OPT_U64 } cli_opt_type;

typedef struct {
    const char *name;  /* without the leading "--" */
    cli_opt_type type;
    void *value;       /* int*, float*, const char**, int* (flag), uint64_t* */
    double min, max;   /* accepted range for numbers */
    const char *help;
} cli_option;

typedef struct {
    const char *name;
    const char *usage; /* one line: arguments after the command name */
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

/* Parses "--name value" / "--name=value" options; the rest go to positional (up to
 * max_positional). "--help" prints the usage and exits 0; any error prints and exits 2. */
int cli_parse(const cli_command *cmd, int argc, char **argv, const cli_option *opts, int n_opts,
              char **positional, int max_positional);
/* Prints "fm CMD: message" to stderr and exits with status 2 (usage) or 1 (failure). */
_Noreturn void cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void cli_fail(const char *cmd, fm_status status);

extern const cli_command cmd_init, cmd_info;

#endif /* FM_CLI_H */
