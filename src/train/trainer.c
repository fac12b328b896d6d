/*
 * trainer.c — the step loop every training command runs: micro-batches from a data source,
 * an objective's loss and gradients, the one backward, AdamW over the trainable tensors,
 * held-out evaluation and checkpoints on a schedule and on request, metrics and a loss curve.
 *
 * What it is for: fm pretrain today, fine-tuning, reward models and the rest later; each is a
 * data source and an objective. A step draws its grad_accum micro-batches first, so every one is
 * normalised by the whole step's weight (the sum of the loss masks for cross-entropy): K
 * micro-batches give the gradient of one batch K times the size. The batches come from the
 * trainer's rng and data position, which checkpoints save with the optimizer, so a resumed run
 * repeats the uninterrupted one's losses bit for bit. Not for: signals or printing (the
 * caller's on_step callback prints; fm_trainer_stop is safe to call from a signal handler).
 *
 * Data parallel (cfg.comm of N > 1 ranks, docs/distributed.md): the hooks marked "data
 * parallel" below. Every rank draws each global micro-batch whole (the same stream and the same
 * normaliser on every rank, whatever N), runs forward and backward on its rows alone, then the
 * gradients and the loss sums are summed across ranks before the optimizer, which so makes the
 * same step everywhere. The sums of a block's gradients start (non-blocking) as the last
 * backward finishes the block, when cfg.overlap. With one process none of it runs: today's
 * path, bit for bit.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "dist/comm.h"
#include "train/optim.h"

/* Data parallel: gradients are summed across ranks in pieces of at most this many floats
 * (16 MiB), one all-reduce each. */
#define GRAD_BUCKET ((size_t)1 << 22)

/* Data parallel, overlap: a stretch of gradients adjoining in memory, of one block's tensors (or
 * of the tensors outside the blocks). */
typedef struct {
    float *grad;
    size_t n;
} grad_span;

/* The loss curve so far: per-step losses and held-out losses. */
typedef struct {
    double *steps, *loss, *val_steps, *val_loss;
    int n, n_val, cap, cap_val;
} curve;

struct fm_trainer {
    fm_model *model;
    fm_optimizer *opt;
    fm_train_state *state;
    fm_data_source data;
    fm_objective obj;
    fm_trainer_config cfg;
    fm_batch *micro;       /* (grad_accum) the step's micro-batches */
    uint64_t *drop_seed;   /* (grad_accum) each micro-batch's dropout seed (drawn when the model drops) */
    fm_batch eval;         /* one held-out batch */
    float *dhidden;        /* (B*T, C) when the objective uses it */
    volatile sig_atomic_t stop;
    FILE *metrics;
    curve curve;
    double t_run;          /* clock at fm_trainer_run's start */
    int64_t saved_step;    /* the step of this trainer's last checkpoint, -1 before one */
    double best_val;       /* the lowest held-out loss so far (metrics.jsonl's on a resume) */
    fm_comm *comm;         /* data parallel: cfg.comm, NULL for one process */
    int rank, size;        /* 0 and 1 for one process */
    int stop_all;          /* data parallel: some rank was asked to stop by the last step's end */
    /* data parallel, overlap (cfg.overlap 1): block l's gradient spans are
     * spans[layer_first[l] .. layer_first[l + 1]), those outside the blocks follow up to n_spans */
    grad_span *spans;
    int n_spans, n_layers, *layer_first;
    int overlap_now;       /* this step's last backward starts the blocks' sums */
    int next_layer;        /* the highest block whose sum is not started yet; -1: all are */
    fm_status overlap_st;  /* the first failure to start one (the hook cannot return it) */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ batches */

static fm_status batch_alloc(fm_batch *b, int B, int T) {
    size_t n = (size_t)B * T;
    b->B = B, b->T = T, b->rows = 0;
    b->tokens = fm_malloc(sizeof(int) * n);
    b->targets = fm_malloc(sizeof(int) * n);
    b->mask = fm_malloc(sizeof(float) * n);
    if (!b->tokens || !b->targets || !b->mask) return fm_fail(FM_ERR_NOMEM, "out of memory for a batch of %d x %d", B, T);
    return FM_OK;
}

static void batch_free(fm_batch *b) {
    fm_free(b->tokens);
    fm_free(b->targets);
    fm_free(b->mask);
}

/* A fresh batch for the source: all rows, mask all ones. */
static void batch_reset(fm_batch *b) {
    b->rows = b->B;
    b->read_first = b->read_end = 0;
    for (size_t i = 0; i < (size_t)b->B * b->T; i++) b->mask[i] = 1.0f;
}

/* ------------------------------------------------------------ metrics */

static fm_status curve_add(double **xs, double **ys, int *n, int *cap, double x, double y) {
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 256;
        double *nx = fm_realloc(*xs, sizeof(double) * c);
        if (!nx) return fm_fail(FM_ERR_NOMEM, "out of memory for the loss curve");
        *xs = nx;
        double *ny = fm_realloc(*ys, sizeof(double) * c);
        if (!ny) return fm_fail(FM_ERR_NOMEM, "out of memory for the loss curve");
        *ys = ny;
        *cap = c;
    }
    (*xs)[*n] = x;
    (*ys)[(*n)++] = y;
    return FM_OK;
}

/* Keeps the lines of metrics_path up to step `upto` (a resumed run drops those past its
 * checkpoint), rewriting the file with just those, and loads them into the curve. */
static fm_status reload_metrics(fm_trainer *t, int64_t upto) {
    const char *path = t->cfg.metrics_path;
    FILE *fp = fopen(path, "r");
    if (!fp) return FM_OK; /* a new run */
    fm_atomic_file af;
    fm_status st = fm_atomic_open(&af, path);
    if (st) {
        fclose(fp);
        return st;
    }
    char *line = NULL;
    size_t cap = 0;
    while (!st && getline(&line, &cap, fp) > 0) {
        unsigned long failures = fm_alloc_failures();
        cJSON *o = cJSON_Parse(line);
        if (!o && fm_alloc_failures() != failures) { /* not a bad line: keeping it needs memory */
            st = fm_fail(FM_ERR_NOMEM, "%s: out of memory reading the metrics", path);
            break;
        }
        cJSON *step = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(step) && step->valuedouble <= (double)upto) {
            cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
            cJSON *val = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
            curve *c = &t->curve;
            if (cJSON_IsNumber(loss))
                st = curve_add(&c->steps, &c->loss, &c->n, &c->cap, step->valuedouble, loss->valuedouble);
            if (!st && cJSON_IsNumber(val))
                st = curve_add(&c->val_steps, &c->val_loss, &c->n_val, &c->cap_val, step->valuedouble,
                               val->valuedouble);
            fm_atomic_write(&af, line, strlen(line));
        }
        cJSON_Delete(o);
    }
    free(line); /* getline's own buffer */
    fclose(fp);
    if (st) {
        fm_atomic_abort(&af);
        return st;
    }
    return fm_atomic_commit(&af);
}

static void plot(fm_trainer *t) {
    if (!t->cfg.plot_path) return;
    const curve *c = &t->curve;
    fm_series s[2] = {{"train (per step)", c->steps, c->loss, c->n, "#1f77b4"},
                      {"held-out", c->val_steps, c->val_loss, c->n_val, "#d62728"}};
    /* a picture that cannot be drawn does not stop training; the next evaluation redraws it */
    fm_plot_svg(t->cfg.plot_path, "next-token loss", "step", "loss (nats per token)", s, 2, 0);
}

/* The step's metrics line (and the evaluation's), flushed so a kill loses nothing written. */
static fm_status log_step(fm_trainer *t, const fm_step_report *r) {
    curve *c = &t->curve;
    fm_status st = curve_add(&c->steps, &c->loss, &c->n, &c->cap, (double)r->step, r->loss);
    if (!st && r->evaluated)
        st = curve_add(&c->val_steps, &c->val_loss, &c->n_val, &c->cap_val, (double)r->step, r->val_loss);
    if (st || !t->metrics) return st;
    fprintf(t->metrics, "{\"step\":%lld,\"loss\":%.9g,\"lr\":%.6g,\"grad_norm\":%.4f,\"tokens_per_s\":%.0f",
            (long long)r->step, r->loss, r->lr, r->grad_norm, r->tokens_per_s);
    if (t->size > 1) fprintf(t->metrics, ",\"allreduce_s\":%.6f", r->comm_s); /* data parallel */
    fprintf(t->metrics, "}\n");
    if (r->evaluated) {
        fprintf(t->metrics, "{\"step\":%lld,\"val_loss\":%.9g", (long long)r->step, r->val_loss);
        if (t->cfg.bytes_per_token > 0)
            fprintf(t->metrics, ",\"val_bpb_estimate\":%.4f", r->val_loss / log(2.0) / t->cfg.bytes_per_token);
        fprintf(t->metrics, "}\n");
        plot(t);
    }
    if (fflush(t->metrics) != 0 || ferror(t->metrics))
        return fm_fail(FM_ERR_IO, "%s: cannot write the metrics", t->cfg.metrics_path);
    return FM_OK;
}

/* ------------------------------------------------------------ the trainer */

/* The block a tensor named "h.L.*" belongs to, or -1. */
static int tensor_layer(const char *name, int n_layers) {
    int l = -1, used = 0;
    if (sscanf(name, "h.%d.%n", &l, &used) == 1 && used > 0 && l >= 0 && l < n_layers) return l;
    return -1;
}

/* Data parallel, overlap: the trainable gradients grouped by block, each block's (and then the
 * rest's) cut into spans adjoining in memory. */
static fm_status plan_overlap(fm_trainer *t) {
    int nt = fm_model_num_tensors(t->model), L = fm_model_config(t->model)->n_layer;
    t->n_layers = L;
    t->spans = fm_calloc(nt > 0 ? nt : 1, sizeof *t->spans);
    t->layer_first = fm_calloc(L + 2, sizeof *t->layer_first);
    if (!t->spans || !t->layer_first) return fm_fail(FM_ERR_NOMEM, "out of memory for the trainer");
    for (int l = 0; l <= L; l++) { /* l == L: the tensors outside the blocks */
        t->layer_first[l] = t->n_spans;
        for (int i = 0; i < nt; i++) {
            const fm_tensor_info *ti = fm_model_tensor(t->model, i);
            int tl = tensor_layer(ti->name, L);
            if (!ti->trainable || (l < L ? tl != l : tl >= 0)) continue;
            grad_span *last = t->n_spans > t->layer_first[l] ? &t->spans[t->n_spans - 1] : NULL;
            if (last && ti->grad == last->grad + last->n) last->n += ti->numel;
            else t->spans[t->n_spans++] = (grad_span){ti->grad, ti->numel};
        }
    }
    t->layer_first[L + 1] = t->n_spans;
    return FM_OK;
}

/* Data parallel, overlap: starts the sums of spans [first, last), in buckets. */
static fm_status start_spans(fm_trainer *t, int first, int last) {
    fm_status st = FM_OK;
    for (int s = first; !st && s < last; s++)
        for (size_t j = 0; !st && j < t->spans[s].n; j += GRAD_BUCKET)
            st = fm_comm_iallreduce_sum_f32(t->comm, t->spans[s].grad + j,
                                            t->spans[s].n - j < GRAD_BUCKET ? t->spans[s].n - j : GRAD_BUCKET);
    return st;
}

/* fm_model_set_backward_hook's: block l's gradients are final, so its sum (and any of a higher
 * block's not started yet) starts now, and the sums in flight are given a turn to progress. */
static void layer_done(void *ctx, int l) {
    fm_trainer *t = ctx;
    for (; !t->overlap_st && t->next_layer >= l; t->next_layer--)
        t->overlap_st = start_spans(t, t->layer_first[t->next_layer], t->layer_first[t->next_layer + 1]);
    if (!t->overlap_st) t->overlap_st = fm_comm_progress(t->comm);
}

fm_status fm_trainer_init(fm_trainer **out, fm_model *model, fm_optimizer *opt, fm_train_state *state,
                          const fm_data_source *data, const fm_objective *obj, const fm_trainer_config *cfg) {
    *out = NULL;
    if (cfg->batch < 1 || cfg->seq < 1 || cfg->grad_accum < 1 || cfg->total_steps < 1 || cfg->eval_every < 0 ||
        cfg->save_every < 0)
        return fm_fail(FM_ERR_ARG, "trainer: batch %d, seq %d, grad_accum %d, total_steps %d must be >= 1",
                       cfg->batch, cfg->seq, cfg->grad_accum, cfg->total_steps);
    const fm_config *mc = fm_model_config(model);
    if (cfg->seq > mc->n_positions)
        return fm_fail(FM_ERR_ARG, "sequence length %d exceeds the model's context (%d)", cfg->seq, mc->n_positions);
    if (!data->next || !obj->weight || !obj->loss || (!obj->uses_logits && !obj->uses_hidden))
        return fm_fail(FM_ERR_ARG, "trainer: the data source needs next, the objective weight, loss and a gradient");
    if (cfg->batch < fm_comm_size(cfg->comm))
        return fm_fail(FM_ERR_ARG, "the global batch %d is smaller than the %d data-parallel ranks: each needs a row",
                       cfg->batch, fm_comm_size(cfg->comm));
    fm_alloc_install_json_hooks();
    fm_trainer *t = fm_calloc(1, sizeof *t);
    if (!t) return fm_fail(FM_ERR_NOMEM, "out of memory for the trainer");
    t->model = model, t->opt = opt, t->state = state, t->data = *data, t->obj = *obj, t->cfg = *cfg;
    t->saved_step = -1;
    t->comm = cfg->comm, t->rank = fm_comm_rank(cfg->comm), t->size = fm_comm_size(cfg->comm);
    fm_status st = FM_OK;
    t->best_val = INFINITY;
    t->micro = fm_calloc(cfg->grad_accum, sizeof *t->micro);
    t->drop_seed = fm_calloc(cfg->grad_accum, sizeof *t->drop_seed);
    if (!t->micro || !t->drop_seed) st = fm_fail(FM_ERR_NOMEM, "out of memory for the trainer");
    for (int k = 0; !st && k < cfg->grad_accum; k++) st = batch_alloc(&t->micro[k], cfg->batch, cfg->seq);
    if (!st) st = batch_alloc(&t->eval, cfg->batch, cfg->seq);
    if (!st && obj->uses_hidden) {
        t->dhidden = fm_alloc_big(sizeof(float) * (size_t)cfg->batch * cfg->seq * mc->n_embd, 0);
        if (!t->dhidden) st = fm_fail(FM_ERR_NOMEM, "out of memory for the hidden states' gradient");
    }
    if (!st && t->size > 1 && cfg->overlap) st = plan_overlap(t);
    if (!st && cfg->metrics_path) {
        st = reload_metrics(t, fm_optimizer_steps_done(opt));
        for (int i = 0; !st && i < t->curve.n_val; i++)
            if (t->curve.val_loss[i] < t->best_val) t->best_val = t->curve.val_loss[i];
        if (!st && !(t->metrics = fopen(cfg->metrics_path, "a")))
            st = fm_fail(FM_ERR_IO, "%s: cannot open for appending", cfg->metrics_path);
    }
    if (st) {
        fm_trainer_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

void fm_trainer_free(fm_trainer *t) {
    if (!t) return;
    if (t->micro)
        for (int k = 0; k < t->cfg.grad_accum; k++) batch_free(&t->micro[k]);
    fm_free(t->micro);
    fm_free(t->drop_seed);
    batch_free(&t->eval);
    fm_free_big(t->dhidden);
    fm_free(t->spans);
    fm_free(t->layer_first);
    if (t->metrics) fclose(t->metrics);
    fm_free(t->curve.steps), fm_free(t->curve.loss), fm_free(t->curve.val_steps), fm_free(t->curve.val_loss);
    fm_free(t);
}

void fm_trainer_stop(fm_trainer *t) { t->stop = 1; }

/* Data parallel: this rank's rows of a batch of `rows`: [*first, *first + *count). */
static void rank_rows(const fm_trainer *t, int rows, int *first, int *count) {
    *first = (int)((int64_t)t->rank * rows / t->size);
    *count = (int)((int64_t)(t->rank + 1) * rows / t->size) - *first;
}

/* Data parallel: *view = this rank's rows of b (pointers into b's buffers). */
static void rank_view(const fm_trainer *t, const fm_batch *b, fm_batch *view, int *first) {
    int count;
    rank_rows(t, b->rows, first, &count);
    size_t off = (size_t)*first * b->T;
    *view = (fm_batch){.B = count, .T = b->T, .rows = count, .tokens = b->tokens + off, .targets = b->targets + off,
                       .mask = b->mask + off};
}

/* Forward, objective and backward of one micro-batch normalised by norm; adds its loss_sum.
 * Data parallel: only this rank's rows (none: nothing to add); norm is the whole batch's. */
static fm_status micro_step(fm_trainer *t, int k, double norm, double *loss_sum) {
    fm_model *m = t->model;
    const fm_batch *b = &t->micro[k];
    uint64_t drop_seed = t->drop_seed[k];
    fm_batch view;
    if (t->size > 1) {
        int first;
        rank_view(t, b, &view, &first);
        if (view.rows == 0) return FM_OK;
        b = &view;
        /* dropout masks hash the element's index within the forward's rows: a slice that does
         * not start at row 0 mixes its first row into the seed, so that ranks drop differently */
        if (drop_seed && first) drop_seed = (drop_seed ^ ((uint64_t)first * 0x9E3779B97F4A7C15ull)) | 1;
    }
    fm_model_set_dropout_seed(m, drop_seed);
    fm_status st = fm_model_forward(m, b->tokens, b->rows, b->T);
    fm_model_set_dropout_seed(m, 0);
    if (st) return st;
    float *dlogits = t->obj.uses_logits ? fm_model_dlogits(m) : NULL;
    float *dhidden = t->obj.uses_hidden ? t->dhidden : NULL;
    double part = 0.0;
    if ((st = t->obj.loss(t->obj.ctx, m, b, norm, &part, dlogits, dhidden))) return st;
    *loss_sum += part;
    fm_model_set_dropout_seed(m, drop_seed); /* the backward recomputes the forward's masks */
    /* data parallel, overlap: the step's last backward starts each block's sum as it ends */
    int hook = t->overlap_now && k == t->cfg.grad_accum - 1;
    if (hook) fm_model_set_backward_hook(m, layer_done, t);
    st = fm_model_backward(m, dlogits, dhidden);
    if (hook) fm_model_set_backward_hook(m, NULL, NULL);
    fm_model_set_dropout_seed(m, 0);
    return st;
}

/* Draws the step's micro-batches and returns their total weight. */
static fm_status draw(fm_trainer *t, fm_rng *rng, uint64_t *position, double *norm) {
    *norm = 0.0;
    for (int k = 0; k < t->cfg.grad_accum; k++) {
        fm_batch *b = &t->micro[k];
        batch_reset(b);
        if (t->size > 1) { /* this rank reads its rows alone (a share is never empty: B >= N) */
            int count;
            rank_rows(t, b->B, &b->read_first, &count);
            b->read_end = b->read_first + count;
        }
        fm_status st = t->data.next(t->data.ctx, b, rng, position);
        if (st) return st;
        if (b->rows < 1 || b->rows > b->B)
            return fm_fail(FM_ERR_ARG, "the data source filled %d rows of a batch of %d", b->rows, b->B);
        *norm += t->obj.weight(t->obj.ctx, t->model, b);
        /* dropout masks from the run's stream, so a resumed run drops alike; a model without
         * dropout draws nothing (its stream is what it always was) */
        t->drop_seed[k] = fm_model_dropout(t->model) > 0.0f ? fm_rng_u64(rng) | 1 : 0;
    }
    if (!(*norm > 0.0) || !isfinite(*norm))
        return fm_fail(FM_ERR_ARG, "the step's batches weigh %g (an all-zero loss mask?)", *norm);
    return FM_OK;
}

/* Data parallel, after the backward: every trainable tensor's gradient (each already divided by
 * the global batch's normaliser, so the sum is the global batch's gradient) summed over the
 * ranks in place, in buckets of at most GRAD_BUCKET floats over runs of adjoining tensors; with
 * the overlap, the blocks' sums were started during the backward (layer_done) and are waited for
 * here after those of the tensors outside the blocks. Then *loss_sum summed likewise and
 * t->stop_all set when any rank was asked to stop, so that all stop after the same step. A rank
 * that fails before this leaves the others waiting here: the caller must end the job
 * (fm_comm_abort) on any failure. */
static fm_status sum_across_ranks(fm_trainer *t, double *loss_sum) {
    int nt = fm_model_num_tensors(t->model);
    float *run = NULL;
    size_t run_n = 0;
    fm_status st = FM_OK;
    if (t->overlap_now) { /* the blocks' sums not started by the backward (a rank without rows), the rest's */
        nt = -1; /* not the loop below */
        st = t->overlap_st;
        for (; !st && t->next_layer >= 0; t->next_layer--)
            st = start_spans(t, t->layer_first[t->next_layer], t->layer_first[t->next_layer + 1]);
        if (!st) st = start_spans(t, t->layer_first[t->n_layers], t->layer_first[t->n_layers + 1]);
        if (!st) st = fm_comm_wait_all(t->comm);
    }
    for (int i = 0; !st && i <= nt; i++) {
        const fm_tensor_info *ti = i < nt ? fm_model_tensor(t->model, i) : NULL;
        if (ti && !ti->trainable) continue;
        if (ti && run && ti->grad == run + run_n) { /* adjoining the run: grow it */
            run_n += ti->numel;
            continue;
        }
        for (size_t j = 0; !st && j < run_n; j += GRAD_BUCKET)
            st = fm_comm_allreduce_sum_f32(t->comm, run + j, run_n - j < GRAD_BUCKET ? run_n - j : GRAD_BUCKET);
        run = ti ? ti->grad : NULL, run_n = ti ? ti->numel : 0;
    }
    double sums[2] = {*loss_sum, t->stop ? 1.0 : 0.0};
    if (!st) st = fm_comm_allreduce_sum_f64(t->comm, sums, 2);
    *loss_sum = sums[0];
    t->stop_all = sums[1] > 0.0;
    return st;
}

fm_status fm_trainer_step(fm_trainer *t, fm_step_report *r) {
    double t0 = now(), norm, loss_sum = 0.0;
    /* a step that runs out of memory (e.g. for the activations) leaves the stream where it was,
     * so that trying it again draws the same batches */
    fm_train_state before = *t->state;
    fm_status st = draw(t, &t->state->rng, &t->state->data_position, &norm);
    if (!st) fm_model_zero_grad(t->model);
    t->overlap_now = t->spans != NULL, t->next_layer = t->n_layers - 1, t->overlap_st = FM_OK;
    for (int k = 0; !st && k < t->cfg.grad_accum; k++) st = micro_step(t, k, norm, &loss_sum);
    double t_comm = now();
    if (!st && t->size > 1) st = sum_across_ranks(t, &loss_sum);
    t_comm = now() - t_comm;
    t->overlap_now = 0;
    memset(r, 0, sizeof *r);
    r->comm_s = t->size > 1 ? t_comm : 0.0;
    /* a non-finite loss or gradient norm is never applied: the weights and moments stay as the
     * last good step left them */
    if (!st && !isfinite(loss_sum))
        st = fm_fail(FM_ERR_NONFINITE, "step %lld: the loss is %g; the update was not applied",
                     (long long)fm_optimizer_steps_done(t->opt) + 1, loss_sum / norm);
    if (!st) st = fm_optimizer_step(t->opt, t->model, &r->grad_norm, &r->lr);
    if (st) {
        if (st == FM_ERR_NOMEM || st == FM_ERR_NONFINITE) *t->state = before;
        return st;
    }
    double dt = now() - t0;
    r->step = fm_optimizer_steps_done(t->opt);
    r->total_steps = t->cfg.total_steps;
    r->loss = (float)(loss_sum / norm);
    r->tokens_per_s = (double)t->cfg.grad_accum * t->cfg.batch * t->cfg.seq / (dt > 0 ? dt : 1e-9);
    r->elapsed_s = t->t_run > 0 ? now() - t->t_run : dt;
    return FM_OK;
}

/* Data parallel: held-out batch i is rank i % N's to compute. Every rank reads every batch (to
 * count them and weigh them), computes its own batches' means, and the (mean x weight, weight)
 * pairs, each from one rank and zeros from the others, are summed across ranks; the total is
 * then added up in batch order, so the held-out loss has the single process's bits. */
static fm_status evaluate_shared(fm_trainer *t, double *loss) {
    double *pairs = NULL;
    size_t n = 0, cap = 0;
    fm_status st = FM_OK;
    for (uint64_t i = 0; !st; i++) {
        fm_batch *b = &t->eval;
        batch_reset(b);
        int mine = (int)(i % (uint64_t)t->size) == t->rank;
        if (!mine) b->read_first = b->read_end = b->B; /* counted and weighed, not computed here */
        if ((st = t->data.eval_next(t->data.ctx, b, i))) break;
        if (b->rows == 0) break;
        if (b->rows < 0 || b->rows > b->B) {
            st = fm_fail(FM_ERR_ARG, "the data source filled %d rows of a batch of %d", b->rows, b->B);
            break;
        }
        if (n == cap) {
            size_t c = cap ? 2 * cap : 64;
            double *np = fm_realloc(pairs, sizeof(double) * 2 * c);
            if (!np) {
                st = fm_fail(FM_ERR_NOMEM, "out of memory for the held-out losses");
                break;
            }
            pairs = np, cap = c;
        }
        double w = t->obj.weight(t->obj.ctx, t->model, b), sum = 0.0;
        pairs[2 * n] = pairs[2 * n + 1] = 0.0;
        if (w > 0.0 && mine) {
            if ((st = fm_model_forward(t->model, b->tokens, b->rows, b->T))) break;
            if ((st = t->obj.loss(t->obj.ctx, t->model, b, w, &sum, NULL, NULL))) break;
            pairs[2 * n] = (double)(float)(sum / w) * w;
            pairs[2 * n + 1] = w;
        }
        n++;
    }
    if (!st) st = fm_comm_allreduce_sum_f64(t->comm, pairs, 2 * n);
    double total = 0.0, weight = 0.0;
    for (size_t i = 0; !st && i < n; i++)
        if (pairs[2 * i + 1] > 0.0) total += pairs[2 * i], weight += pairs[2 * i + 1];
    fm_free(pairs);
    if (st) return st;
    *loss = weight > 0.0 ? total / weight : NAN;
    return FM_OK;
}

fm_status fm_trainer_evaluate(fm_trainer *t, double *loss) {
    if (!t->data.eval_next) return fm_fail(FM_ERR_ARG, "the data source has no held-out data");
    if (t->size > 1) return evaluate_shared(t, loss);
    double total = 0.0, weight = 0.0;
    for (uint64_t i = 0;; i++) {
        fm_batch *b = &t->eval;
        batch_reset(b);
        fm_status st = t->data.eval_next(t->data.ctx, b, i);
        if (st) return st;
        if (b->rows == 0) break;
        if (b->rows < 0 || b->rows > b->B)
            return fm_fail(FM_ERR_ARG, "the data source filled %d rows of a batch of %d", b->rows, b->B);
        double w = t->obj.weight(t->obj.ctx, t->model, b), sum = 0.0;
        if (!(w > 0.0)) continue;
        if ((st = fm_model_forward(t->model, b->tokens, b->rows, b->T))) return st;
        if ((st = t->obj.loss(t->obj.ctx, t->model, b, w, &sum, NULL, NULL))) return st;
        /* each batch's mean as the step reports it, weighted by its share */
        total += (double)(float)(sum / w) * w;
        weight += w;
    }
    *loss = weight > 0.0 ? total / weight : NAN;
    return FM_OK;
}

/* The model as it is now into cfg.best_dir (a model directory, or a LoRA run's adapter
 * directory), then best.json naming the step and its held-out loss. */
static fm_status save_best(fm_trainer *t, int64_t step, double val_loss) {
    const char *dir = t->cfg.best_dir;
    fm_status st = fm_model_lora(t->model) ? fm_lora_save(t->model, dir) : fm_model_save(t->model, dir);
    if (st) return fm_fail_prefix(st, "saving the best model so far: ");
    char *path = fm_path_join(dir, "best.json");
    if (!path) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    char text[128];
    int len = snprintf(text, sizeof text, "{\"step\": %lld, \"val_loss\": %.9g}\n", (long long)step, val_loss);
    fm_atomic_file af;
    st = fm_atomic_open(&af, path);
    if (!st) {
        fm_atomic_write(&af, text, (size_t)len);
        st = fm_atomic_commit(&af);
    }
    fm_free(path);
    return st;
}

/* Data parallel: the ranks' parameters must be the same bits (the same summed gradients, the
 * same update); a hash of them, rank 0's broadcast, any difference counted across ranks. A
 * collective: every rank calls it at every checkpoint. */
static fm_status check_replicas(fm_trainer *t) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < fm_model_num_tensors(t->model); i++) {
        const fm_tensor_info *ti = fm_model_tensor(t->model, i);
        const uint32_t *bits = (const uint32_t *)ti->data;
        for (size_t j = 0; j < ti->numel; j++) h = (h ^ bits[j]) * 0x100000001b3ull;
    }
    uint64_t h0 = h;
    fm_status st = fm_comm_bcast(t->comm, &h0, sizeof h0, 0);
    double differ = h0 != h;
    if (!st) st = fm_comm_allreduce_sum_f64(t->comm, &differ, 1);
    if (!st && differ > 0.0)
        st = fm_fail(FM_ERR_MISMATCH, "step %lld: the parameters of %g data-parallel ranks differ from rank 0's",
                     (long long)fm_optimizer_steps_done(t->opt), differ);
    return st;
}

static fm_status save(fm_trainer *t) {
    if (t->size > 1) { /* data parallel: every rank checks, rank 0 alone has a checkpoint_dir */
        fm_status st = check_replicas(t);
        if (st) return st;
    }
    /* ZeRO-1: the moments gathered whole onto rank 0 for the while (a collective; no-op
     * unsharded), so that the checkpoint holds them as one process would */
    fm_status st = fm_optim_gather_moments(t->opt, 0);
    if (st) return st;
    if (t->cfg.checkpoint_dir) {
        if (t->metrics) fflush(t->metrics);
        st = fm_checkpoint_save(t->cfg.checkpoint_dir, t->model, t->opt, t->state);
        if (!st) t->saved_step = fm_optimizer_steps_done(t->opt);
    }
    fm_optim_release_moments(t->opt);
    return st;
}

/* A step that failed on a NaN or infinity ends the run; what is on disk is the last good
 * checkpoint, and the error says which. */
static fm_status nonfinite_stop(fm_trainer *t, fm_status st) {
    if (st != FM_ERR_NONFINITE || !t->cfg.checkpoint_dir) return st;
    if (t->saved_step >= 0)
        return fm_fail_prefix(st, "stopped; %s keeps the checkpoint of step %lld, the last good one: ",
                              t->cfg.checkpoint_dir, (long long)t->saved_step);
    return fm_fail_prefix(st, "stopped; %s keeps its last checkpoint: ", t->cfg.checkpoint_dir);
}

fm_status fm_trainer_run(fm_trainer *t, int *stopped) {
    *stopped = 0;
    t->t_run = now();
    fm_status st = FM_OK;
    while (fm_optimizer_steps_done(t->opt) < t->cfg.total_steps) {
        fm_step_report r;
        if ((st = fm_trainer_step(t, &r))) return nonfinite_stop(t, st);
        int last = r.step == t->cfg.total_steps;
        if (t->data.eval_next && t->cfg.eval_every > 0 && (r.step % t->cfg.eval_every == 0 || last)) {
            if ((st = fm_trainer_evaluate(t, &r.val_loss))) return st;
            r.evaluated = 1;
            if (t->cfg.best_dir && r.val_loss < t->best_val) {
                if ((st = save_best(t, r.step, r.val_loss))) return st;
                t->best_val = r.val_loss;
                r.new_best = 1;
            }
        }
        if ((st = log_step(t, &r))) return st;
        if (t->cfg.on_step) t->cfg.on_step(t->cfg.user, &r);
        int stop = (t->size > 1 ? t->stop_all : t->stop) && !last; /* data parallel: every rank's */
        if ((t->cfg.save_every > 0 && r.step % t->cfg.save_every == 0) || last || stop)
            if ((st = save(t))) return st;
        if (stop) {
            *stopped = 1;
            break;
        }
    }
    if (t->curve.n) plot(t);
    return FM_OK;
}

fm_status fm_trainer_time_step(fm_trainer *t, uint64_t seed, double *seconds) {
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    uint64_t position = 0;
    double best = INFINITY;
    for (int i = 0; i < 5; i++) {
        double norm, loss_sum = 0.0;
        fm_status st = draw(t, &rng, &position, &norm);
        double t0 = now();
        fm_model_zero_grad(t->model);
        for (int k = 0; !st && k < t->cfg.grad_accum; k++) st = micro_step(t, k, norm, &loss_sum);
        if (st) return st;
        if (i > 0 && now() - t0 < best) best = now() - t0; /* the first touches fresh memory */
    }
    fm_model_zero_grad(t->model);
    /* AdamW reads and writes four arrays of the trainable parameters */
    *seconds = best + 16.0 * fm_optimizer_num_params(t->opt) / 5e9;
    return FM_OK;
}
