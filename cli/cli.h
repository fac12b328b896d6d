/*
 * cli.h — what the fm command's subcommands share: the option parser and error exits.
 *
 * Each subcommand lives in cli/cmd-NAME.c and is listed in main.c's dispatch table. Only cli/
 * prints errors and exits; the library returns fm_status.
 */
#ifndef FM_CLI_H
#define FM_CLI_H

#include "fm.h"

typedef enum { OPT_INT, OPT_FLOAT, OPT_STRING, OPT_FLAG, OPT_U64, OPT_LIST } cli_opt_type;

/* Values of a repeatable string option (OPT_LIST). */
#define CLI_LIST_MAX 16
typedef struct {
    const char *items[CLI_LIST_MAX];
    int n;
} cli_list;

typedef struct {
    const char *name;  /* without the leading "--" */
    cli_opt_type type;
    void *value;       /* int*, float*, const char**, int* (flag), uint64_t*, cli_list* */
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

/* Shared helpers (common.c). */
/* malloc (count x size, overflow checked), realloc and strdup that die with "fm CMD: out of
 * memory" (exit 1). They go through the library's allocator, so FM_FAIL_ALLOC=k (src/core/alloc.h)
 * reaches the command's own allocations too; free() releases them. */
void *cli_alloc(const char *cmd, size_t count, size_t size);
void *cli_realloc(const char *cmd, void *p, size_t count, size_t size);
char *cli_strdup(const char *cmd, const char *s);
_Noreturn void cli_out_of_memory(const char *cmd);
/* The whole of a file, or of stdin when path is NULL or "-"; NUL-terminated (the text may hold
 * NUL bytes of its own: *len counts them all); dies on error. */
char *cli_read_file(const char *cmd, const char *path, size_t *len);
/* Loads DIR's model and, if want_tokenizer, DIR/tokenizer.json (must exist when required;
 * otherwise *tok is NULL when absent). Checks that the vocabularies match. Dies on error. */
void cli_load_model(const char *cmd, const char *dir, fm_model **model, fm_tokenizer **tok, int require_tokenizer);
/* Loads the LoRA adapter in dir (PEFT's adapter_config.json and adapter_model.safetensors) for
 * model, and makes every session created after this call apply it; NULL dir: none (returns NULL). Dies on
 * error (another base, shapes). Free with fm_adapter_free after the model's last session. */
fm_adapter *cli_use_adapter(const char *cmd, fm_model *model, const char *dir);
/* dir + "/" + name, malloc'd. */
char *cli_path(const char *dir, const char *name);
/* Opens DIR/NAME as a token shard; when vocab_size > 0 it must match. Dies on error. */
/* (Without DIR/NAME, a streamed corpus's DIR/STEM-00000.bin, -00001.bin, ... read as one.) */
fm_shard *cli_open_shard(const char *cmd, const char *dir, const char *name, int vocab_size);
/* Parses space/comma-separated token ids; dies on a bad id or one >= vocab_size. */
int *cli_parse_ids(const char *cmd, const char *text, int vocab_size, size_t *n);
/* mkdir -p; dies on failure. */
void cli_mkdir_p(const char *cmd, const char *dir);
/* Before writing a model directory: refuses (exit 2) an --out that resolves to the input
 * directory (NULL: none), and (exit 1) one that already holds a model or run file unless force. */
void cli_check_out_dir(const char *cmd, const char *out, const char *input, int force);
/* Locks dir for this process (fm_dir_lock); dies naming the holder when another has it. */
int cli_lock_dir(const char *cmd, const char *dir);
/* Strict JSON: text (len bytes) must be one JSON value with nothing after it but white space,
 * and no string in it may hold a NUL (\u0000: C strings end there, so a name or a path would
 * silently be another). Dies naming path: invalid JSON (with the byte), trailing content, a NUL,
 * out of memory. Free the result with cJSON_Delete. */
struct cJSON *cli_parse_json(const char *cmd, const char *path, const char *text, size_t len);
/* Seconds on a monotonic clock. */
double cli_now(void);
/* A number for JSON on stdout, printed with fmt ("%.9g"): null when it is not finite (JSON has
 * no NaN or infinity). */
void cli_print_json_number(const char *fmt, double v);
/* Prints n bytes as a JSON string on stdout: each invalid UTF-8 sequence becomes U+FFFD; quotes,
 * backslashes and control characters (NUL included) are escaped. */
void cli_print_json_string(const char *s, size_t n);
/* Training commands (training.c). */
/* SIGINT and SIGTERM ask trainer to save and stop (a second signal kills); NULL restores the
 * default handlers. */
void cli_stop_on_signals(fm_trainer *trainer);
/* dir holds a checkpoint: the link to its current one, or a flat state from older fm. */
int cli_holds_checkpoint(const char *dir);
/* Writes text and a newline to path through a synced temporary file and a rename; dies on error. */
void cli_write_text_atomic(const char *cmd, const char *path, const char *text);
/* What the progress callback prints and samples (the trainer's user pointer). */
typedef struct {
    const char *cmd, *out;
    int tty;
    fm_model *model;
    const fm_tokenizer *tok;
    int sample_every, sample_tokens;
    uint64_t seed;
    const int *sample_prompt;       /* the tokens a sample continues */
    int n_sample_prompt;
    const char *sample_prompt_text; /* printed before the sample, or NULL */
    double bytes_per_token;         /* > 0: held-out losses also as bits per byte */
    int64_t first_step;
} cli_progress;
/* The fm_trainer_config on_step callback: a status line on a terminal, a line per evaluation,
 * and a sample every sample_every steps into OUT/samples.txt. */
void cli_on_step(void *user, const fm_step_report *report);
/* Runs the trainer to its end, or until Ctrl-C or SIGTERM saves a checkpoint (then says how to
 * resume: fm CMD --out OUT --resume); 1 when it was interrupted. Dies on a failure. */
int cli_run_trainer(const char *cmd, fm_trainer *trainer, const fm_optimizer *opt, int tty, const char *out);
/* Data parallel (training.c, docs/distributed.md): the job's communicator (one process without
 * mpirun). Under mpirun with N > 1: ranks other than 0 print nothing on stdout; --threads 0 means
 * the cores shared out among this machine's ranks; a process that exits before cli_dist_finish
 * ends the whole job. Dies on a failure. cli_dist_finish: finalises (before the command returns). */
fm_comm *cli_dist_init(const char *cmd, int threads);
void cli_dist_finish(void);
/* --zero: 0 (every rank keeps all of AdamW's moments) or 1 (ZeRO-1: each its 1/N, see
 * fm_optimizer_shard), printing the memory it saves. Call on every rank after the optimizer is
 * made or loaded and after any checkpoint written outside the trainer. Dies on a failure. */
void cli_dist_zero(const char *cmd, fm_optimizer *opt, fm_comm *comm, int zero);
/* --overlap's help: when the overlap pays, and why it is off by default (docs/distributed.md). */
#define CLI_OVERLAP_HELP                                                                                   \
    "under mpirun: 1 sums each block's gradients while the backward goes on, 0 after it (0). 1 pays only " \
    "when the sums take long against the backward and the MPI transport moves them in the background; "   \
    "off by default since on the setups measured (one machine; TCP) it made the step slower"
#define CLI_ZERO_HELP "1: ZeRO-1 under mpirun, each rank keeps AdamW's moments of 1/N of the parameters (0)"
/* "; under mpirun -np N the global batch, shared out" or, without MPI, a note saying so: --batch's help. */
#ifdef FM_MPI
#define CLI_DIST_BATCH_HELP "; under mpirun -np N the global batch, shared out (data parallel: MPI)"
#else
#define CLI_DIST_BATCH_HELP " (data parallel: not in this build, made without MPI)"
#endif

/* The command main() runs, for messages from outside it (a write error on stdout at exit). */
extern const char *cli_command_name;

extern const cli_command cmd_init, cmd_info, cmd_data, cmd_pretrain, cmd_generate, cmd_score, cmd_eval;
extern const cli_command cmd_bench; /* cmd-bench.c */
extern const cli_command cmd_quantize; /* cmd-quantize.c */
extern const cli_command cmd_merge, cmd_finetune, cmd_chat; /* cmd-merge.c, cmd-finetune.c, cmd-chat.c */
extern const cli_command cmd_tokenizer; /* cmd-tokenizer.c */
/* Images (docs/vision.md): fm tokenizer train --images (cmd-tokenizer-images.c) and fm data prepare
 * --images (cmd-data-images.c), reached from cmd-tokenizer.c and cmd-data.c; argv[0] is the
 * subcommand's word ("train", "prepare"). */
int cli_tokenizer_train_images(int argc, char **argv);
int cli_data_prepare_images(int argc, char **argv);
/* fm data prepare --shard-tokens N (data_stream.c): corpora larger than memory streamed into
 * numbered shards; argv[0] is "prepare". */
int cli_data_prepare_stream(int argc, char **argv);
extern const cli_command cmd_classify; /* cmd-classify.c */

#endif /* FM_CLI_H */
