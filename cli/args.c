/*
 * args.c — the option parser and error exits shared by every fm subcommand.
 *
 * Numbers are checked whole (no trailing junk) and against each option's range, so an absurd
 * flag is refused with a message naming it instead of being half-read.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fm %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'fm %s --help')\n", cmd);
    exit(2);
}

void cli_fail(const char *cmd, fm_status status) {
    fprintf(stderr, "fm %s: %s: %s\n", cmd, fm_status_name(status), fm_last_error());
    exit(1);
}

static void print_help(const cli_command *cmd, const cli_option *opts, int n_opts) {
    printf("usage: fm %s %s\n\n%s\n\noptions:\n", cmd->name, cmd->usage, cmd->summary);
    for (int i = 0; i < n_opts; i++) {
        const cli_option *o = &opts[i];
        const char *arg = o->type == OPT_FLAG ? "" : o->type == OPT_STRING || o->type == OPT_LIST ? " S" : " N";
        printf("  --%s%-*s %s\n", o->name, (int)(18 - strlen(o->name)), arg, o->help);
    }
}

static void set_value(const cli_command *cmd, const cli_option *o, const char *text) {
    char *end = NULL;
    errno = 0;
    if (o->type == OPT_STRING) {
        *(const char **)o->value = text;
        return;
    }
    if (o->type == OPT_LIST) {
        cli_list *list = o->value;
        if (list->n >= CLI_LIST_MAX) cli_usage_error(cmd->name, "--%s: at most %d values", o->name, CLI_LIST_MAX);
        list->items[list->n++] = text;
        return;
    }
    if (o->type == OPT_U64) { /* all 64 bits: decimal digits, read as an integer, never via a double */
        size_t digits = strspn(text, "0123456789");
        unsigned long long u = digits ? strtoull(text, &end, 10) : 0;
        if (!digits || text[digits] != '\0' || errno == ERANGE)
            cli_usage_error(cmd->name, "--%s: '%s' is not a whole number in decimal digits", o->name, text);
        if ((double)u < o->min || (double)u > o->max)
            cli_usage_error(cmd->name, "--%s: %s is out of range [%.0f, %.0f]", o->name, text, o->min, o->max);
        *(uint64_t *)o->value = u;
        return;
    }
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno || !isfinite(v))
        cli_usage_error(cmd->name, "--%s: '%s' is not a number", o->name, text);
    if (o->type == OPT_INT && v != floor(v))
        cli_usage_error(cmd->name, "--%s: '%s' is not a whole number", o->name, text);
    if (v < o->min || v > o->max) /* checked before narrowing: every int option's range fits an int */
        cli_usage_error(cmd->name, "--%s: %s is out of range [%g, %g]", o->name, text, o->min, o->max);
    if (o->type == OPT_INT) *(int *)o->value = (int)v;
    else *(float *)o->value = (float)v;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, const cli_option *opts, int n_opts,
              char **positional, int max_positional) {
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(cmd, opts, n_opts);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (n_pos >= max_positional) cli_usage_error(cmd->name, "unexpected argument '%s'", arg);
            positional[n_pos++] = argv[i];
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_option *o = NULL;
        for (int j = 0; j < n_opts; j++)
            if (strlen(opts[j].name) == len && strncmp(opts[j].name, name, len) == 0) o = &opts[j];
        if (!o) cli_usage_error(cmd->name, "unknown option '--%.*s'", (int)len, name);
        if (o->type == OPT_FLAG) {
            if (eq) cli_usage_error(cmd->name, "--%s takes no value", o->name);
            *(int *)o->value = 1;
            continue;
        }
        const char *text = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!text) cli_usage_error(cmd->name, "--%s needs a value", o->name);
        set_value(cmd, o, text);
    }
    return n_pos;
}
