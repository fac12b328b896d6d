/*
 * training.c — what the training commands (fm pretrain, fm finetune) share around the library's
 * trainer: stopping on Ctrl-C or SIGTERM, the progress lines, samples written as training goes,
 * atomic settings files, and the data-parallel job's communicator under mpirun.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static fm_trainer *running; /* the trainer a signal asks to stop */

static void on_signal(int sig) {
    if (running) fm_trainer_stop(running);
    signal(sig, SIG_DFL); /* a second one stops at once */
}

void cli_stop_on_signals(fm_trainer *trainer) {
    running = trainer;
    signal(SIGINT, trainer ? on_signal : SIG_DFL);
    signal(SIGTERM, trainer ? on_signal : SIG_DFL);
}

int cli_holds_checkpoint(const char *dir) {
    struct stat sb;
    char *link = cli_path(dir, "checkpoint"), *flat = cli_path(dir, "training_state.safetensors");
    int found = lstat(link, &sb) == 0 || lstat(flat, &sb) == 0;
    free(link), free(flat);
    return found;
}

void cli_write_text_atomic(const char *cmd, const char *path, const char *text) {
    size_t n = strlen(path) + 5;
    char *tmp = cli_alloc(cmd, n, 1);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    if (fp && fclose(fp) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        fprintf(stderr, "fm %s: %s: cannot write it\n", cmd, path);
        exit(1);
    }
    free(tmp);
}

static void format_time(char *buf, size_t n, double s) {
    if (s < 0 || !isfinite(s)) s = 0;
    int m = (int)(s / 60);
    snprintf(buf, n, "%dm%02ds", m, (int)(s - 60 * m));
}

/* A sample continuing the progress's prompt (temperature 0.8, top-k 40, its own seed: training's
 * rng is untouched) appended to samples.txt and printed. */
static void write_sample(const cli_progress *p, int64_t step) {
    const fm_config *mc = fm_model_config(p->model);
    int eos = fm_tokenizer_special_id(p->tok, "<|endoftext|>");
    int room = mc->n_positions - p->n_sample_prompt;
    int n_tokens = p->sample_tokens < room ? p->sample_tokens : room;
    if (p->n_sample_prompt < 1 || n_tokens < 1) return;
    fm_session *session;
    if (fm_session_init(&session, p->model, 1, mc->n_positions)) return;
    fm_generate_config gc;
    fm_generate_config_default(&gc);
    gc.sampler.temperature = 0.8f;
    gc.sampler.top_k = 40;
    gc.max_tokens = n_tokens;
    gc.seed = p->seed ^ (uint64_t)step;
    gc.eos = eos;
    gc.tok = p->tok;
    const int *prompt = p->sample_prompt;
    int n_prompt = p->n_sample_prompt;
    fm_generate_result r = {0};
    if (fm_generate(session, &gc, &prompt, &n_prompt, 1, NULL, NULL, &r) == FM_OK && r.text) {
        char *path = cli_path(p->out, "samples.txt");
        FILE *fp = fopen(path, "a");
        if (fp) {
            fprintf(fp, "--- step %lld\n%s%s\n", (long long)step, p->sample_prompt_text ? p->sample_prompt_text : "",
                    r.text);
            fclose(fp);
        }
        printf("--- sample at step %lld:\n%s%s\n---\n", (long long)step,
               p->sample_prompt_text ? p->sample_prompt_text : "", r.text);
        free(path);
    }
    fm_generate_result_free(&r);
    fm_session_free(session);
}

void cli_on_step(void *user, const fm_step_report *r) {
    const cli_progress *p = user;
    double eta = r->elapsed_s / (double)(r->step - p->first_step) * (double)(r->total_steps - r->step);
    char eta_text[32];
    format_time(eta_text, sizeof eta_text, eta);
    if (p->tty)
        fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s   ", (long long)r->step,
                (long long)r->total_steps, r->loss, r->lr, r->tokens_per_s, eta_text);
    if (r->evaluated) {
        if (p->tty) fputc('\n', stderr);
        printf("step %lld/%lld | loss %.4f | held-out %.4f", (long long)r->step, (long long)r->total_steps, r->loss,
               r->val_loss);
        if (p->bytes_per_token > 0) printf(" (~%.3f bits/byte)", r->val_loss / log(2.0) / p->bytes_per_token);
        printf(" | %.0f tok/s | ETA %s%s\n", r->tokens_per_s, eta_text, r->new_best ? " | best so far, saved" : "");
    }
    int sample_every = p->sample_every;
    if (sample_every && (r->step % sample_every == 0 || r->step == r->total_steps)) write_sample(p, r->step);
}

int cli_run_trainer(const char *cmd, fm_trainer *trainer, const fm_optimizer *opt, int tty, const char *out) {
    cli_stop_on_signals(trainer);
    int stopped = 0;
    fm_status st = fm_trainer_run(trainer, &stopped);
    cli_stop_on_signals(NULL);
    if (tty) fputc('\n', stderr);
    if (st) cli_fail(cmd, st);
    if (stopped)
        printf("interrupted: checkpoint saved at step %lld; continue with: fm %s --out %s --resume\n",
               (long long)fm_optimizer_steps_done(opt), cmd, out);
    return stopped;
}

/* ------------------------------------------------------------ data parallel */

static fm_comm *job;     /* cli_dist_init's */
static int job_finished; /* cli_dist_finish ran */

/* atexit: a rank that exits before cli_dist_finish (a failure, a usage error) takes the job
 * down, rather than leaving the others waiting in a collective */
static void abort_unfinished_job(void) {
    if (job && !job_finished) fm_comm_abort(job, 1);
}

fm_comm *cli_dist_init(const char *cmd, int threads) {
    fm_status st = fm_comm_init(&job);
    if (st) cli_fail(cmd, st);
    if (fm_comm_size(job) == 1) return job;
    atexit(abort_unfinished_job);
    if (fm_comm_rank(job) != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "fm %s: rank %d: cannot silence stdout\n", cmd, fm_comm_rank(job));
        exit(1);
    }
    if (threads == 0) { /* the machine's cores shared among its ranks */
        fm_set_threads(0);
        int n = fm_get_threads() / fm_comm_local_size(job);
        fm_set_threads(n < 1 ? 1 : n);
    }
    return job;
}

void cli_dist_finish(void) {
    job_finished = 1;
    fm_comm_free(job);
    job = NULL;
}

void cli_dist_zero(const char *cmd, fm_optimizer *opt, fm_comm *comm, int zero) {
    if (!zero) return;
    int size = fm_comm_size(comm);
    if (size == 1) {
        printf("ZeRO-1: one process, nothing to shard (AdamW's moments stay whole)\n");
        return;
    }
    size_t held, whole;
    fm_status st = fm_optimizer_shard(opt, comm, &held, &whole);
    if (st) cli_fail(cmd, st);
    const double mib = 1024.0 * 1024.0;
    printf("ZeRO-1: AdamW's moments sharded over %d ranks: %.2f MiB on rank 0 instead of %.2f MiB "
           "(%.2f MiB saved per rank, %.2f MiB over the job)\n",
           size, held / mib, whole / mib, (whole - held) / mib, whole / mib * (size - 1));
}
