/*
 * fm.h — the one public header of libfm, a foundation-model toolkit in C.
 *
 * What it is for: everything a program needs to build, train, save and load a GPT-2 style
 * transformer: status codes, configuration, the model (forward, backward), objectives,
 * the AdamW optimizer with its schedule, random numbers and the model directory on disk.
 * What it is not for: kernels and file-format internals (src/internal.h, src/cpu/kernels.h).
 *
 * Conventions: every call that can fail returns fm_status; on failure fm_last_error() holds a
 * message naming the file/tensor/value at fault. The library never prints and never exits.
 * Objects are opaque handles with init/free pairs. Tensor shapes are given in comments:
 * B batch, T sequence length, C width (n_embd), V vocabulary size, L layers.
 */
#ifndef FM_H
#define FM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version (the installed libfm.so.MAJOR.MINOR.PATCH, fm.pc's Version): MAJOR
 * changes when a program built against an older fm.h would break. */
#define FM_VERSION_MAJOR 0
#define FM_VERSION_MINOR 1
#define FM_VERSION_PATCH 0
#define FM_VERSION "0.1.0"
/* The version of the library linked at run time, "MAJOR.MINOR.PATCH". */
const char *fm_version(void);

/* ---------------------------------------------------------------- status */

typedef enum {
    FM_OK = 0,
    FM_ERR_IO,        /* a file could not be opened, read or written */
    FM_ERR_FORMAT,    /* a file is malformed: bad header, JSON, dtype, offsets, truncation */
    FM_ERR_CONFIG,    /* a configuration value is absent, absurd or unsupported */
    FM_ERR_MISMATCH,  /* files or arguments disagree: missing/unknown tensor, wrong shape */
    FM_ERR_NOMEM,     /* an allocation failed */
    FM_ERR_ARG,       /* a caller passed an invalid argument */
    FM_ERR_NONFINITE, /* a NaN or infinity: in a file's values, or a loss or gradient norm */
} fm_status;

/* The message of the last failure on this thread ("" when none). */
const char *fm_last_error(void);
/* A short name for a status code, e.g. "format error". */
const char *fm_status_name(fm_status status);

/* Threads used by all kernels (OpenMP). n <= 0 means the OpenMP default. */
void fm_set_threads(int n);
int fm_get_threads(void);

/* Precision of the matrix products (process-wide), as PyTorch's float32 matmul precision:
 * FM_MATMUL_FP32 ("highest", the default) multiplies in float32; FM_MATMUL_BF16 ("medium")
 * rounds the factors to bfloat16 and accumulates in float32 (about 2x the products' speed on
 * CPUs with AVX512_BF16; training keeps float32 weights, gradients and optimizer state).
 * Decoding one token at a time always multiplies in float32. */
typedef enum { FM_MATMUL_FP32 = 0, FM_MATMUL_BF16 = 1 } fm_matmul_precision;
void fm_set_matmul_precision(fm_matmul_precision precision);
fm_matmul_precision fm_get_matmul_precision(void);
/* "fp32" or "bf16"; fm_matmul_precision_parse returns FM_ERR_ARG for anything else. */
const char *fm_matmul_precision_name(fm_matmul_precision precision);
fm_status fm_matmul_precision_parse(const char *name, fm_matmul_precision *out);

/* The kernels' CPU code path, chosen once at run time per process (docs/kernels.md, "Runtime
 * dispatch"): "avx512bf16", "avx512", "avx2" (AVX2 + FMA) or "generic" (x86-64 baseline, or
 * any other CPU), best first. By default the best this CPU supports; the environment variable
 * FM_CPU names a lower one (read at the first kernel call; an unknown or unsupported value
 * there is ignored, fm_cpu_select reports it). Results of every path are within float rounding
 * of each other, and on each path independent of the thread count. */
const char *fm_cpu_path(void);
/* Every path this build has and this CPU runs, best first, separated by spaces. */
const char *fm_cpu_paths_supported(void);
/* Switches to the path named (NULL, "" or "auto": the best supported). FM_ERR_ARG naming the
 * value and the supported paths when this build lacks it or this CPU cannot run it. Call it
 * before any kernel runs, or while none does: not while another thread computes. */
fm_status fm_cpu_select(const char *path);

/* ---------------------------------------------------------------- random numbers */

/* xoshiro256** generator; the state is plain data so it can be saved for exact resume. */
typedef struct {
    uint64_t s[4];
} fm_rng;

void fm_rng_seed(fm_rng *rng, uint64_t seed);
uint64_t fm_rng_u64(fm_rng *rng);
float fm_rng_uniform(fm_rng *rng); /* [0, 1) */
float fm_rng_normal(fm_rng *rng);  /* N(0, 1) */

/* ---------------------------------------------------------------- configuration */

/* GPT-2 hyper-parameters; names follow Hugging Face's GPT2Config keys. */
typedef struct {
    int n_layer;              /* L */
    int n_head;               /* heads; must divide n_embd (any head size) */
    int n_embd;               /* C */
    int vocab_size;           /* V */
    int n_positions;          /* longest context, rows of wpe */
    int n_inner;              /* MLP hidden width; 0 means 4 * n_embd */
    float layer_norm_epsilon; /* 1e-5 in GPT-2 */
} fm_config;

/* GPT-2 small (124M) defaults. */
void fm_config_default(fm_config *cfg);
/* Checks ranges and divisibility; the message names the offending key. */
fm_status fm_config_validate(const fm_config *cfg);
/* MLP hidden width actually used (n_inner or 4 * n_embd). */
int fm_config_mlp_width(const fm_config *cfg);
/* config.json in Hugging Face's GPT-2 format (plus fm's keys where needed). */
fm_status fm_config_load(fm_config *cfg, const char *path);
fm_status fm_config_save(const fm_config *cfg, const char *path); /* atomic */

/* ---------------------------------------------------------------- model */

typedef struct fm_model fm_model;

/* A new model with GPT-2's initialisation: weights N(0, 0.02), the residual projections
 * (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 L)), biases 0, LayerNorm gains 1. */
fm_status fm_model_init(fm_model **out, const fm_config *cfg, uint64_t seed);
void fm_model_free(fm_model *model);
const fm_config *fm_model_config(const fm_model *model);

/* The model's tensors, in Hugging Face GPT-2 names and layouts (e.g. "h.0.attn.c_attn.weight"
 * is (C, 3C)). The transformer's own tensors live in one allocation (fm_model_params, gradients
 * mirrored in fm_model_grads), in this order: wte, wpe, per layer ln_1, attn.c_attn, attn.c_proj,
 * ln_2, mlp.c_fc, mlp.c_proj (weight then bias), ln_f. Tensors attached later (a classification
 * or value head, adapters) have allocations of their own. Every tensor carries a trainable flag:
 * the optimizer and the training state cover the trainable ones only, and the backward computes
 * no weight gradient for a frozen matrix. */
size_t fm_model_num_params(const fm_model *model); /* the transformer's own parameters */
float *fm_model_params(fm_model *model);
float *fm_model_grads(fm_model *model);
int fm_model_num_tensors(const fm_model *model);   /* own + attached */
typedef struct {
    const char *name;
    int ndim;
    int shape[2];
    size_t offset;  /* in floats into fm_model_params / fm_model_grads; SIZE_MAX when attached */
    size_t numel;
    int decay;      /* 1 when AdamW applies weight decay (all 2-D weights) */
    int trainable;  /* 0 when frozen: no optimizer state, no weight gradient */
    int attached;   /* 1 for a tensor added by fm_model_attach */
    float *data;    /* (numel) the values */
    float *grad;    /* (numel) the gradient, accumulated by backward */
} fm_tensor_info;
const fm_tensor_info *fm_model_tensor(const fm_model *model, int index);
/* The index of a tensor by name, or -1. */
int fm_model_find_tensor(const fm_model *model, const char *name);

/* Attaches a new trainable tensor (zeros, with a zero gradient) of shape (d0) when ndim is 1 or
 * (d0, d1) when 2, e.g. a classification head "score.weight" (K, C). Its values are the caller's
 * to initialise (through fm_model_tensor(...)->data). Saved in model.safetensors with the rest,
 * and attached again by fm_model_load. decay: AdamW weight decay applies. The name must be new
 * and shorter than 64 bytes. *index (may be NULL) receives its index. */
fm_status fm_model_attach(fm_model *model, const char *name, int ndim, int d0, int d1, int decay, int *index);
/* Sets the trainable flag of every tensor whose name matches the shell pattern (fnmatch, e.g.
 * "h.*.attn.c_attn.weight" or "h.*"); *matched (may be NULL) receives how many matched. A
 * pattern that matches nothing is an error (FM_ERR_ARG naming it). */
fm_status fm_model_set_trainable(fm_model *model, const char *pattern, int trainable, int *matched);
/* Parameters in trainable tensors. */
size_t fm_model_num_trainable(const fm_model *model);

/* A copy of model with a vocabulary of vocab_size rows (larger than its own): the rows it has
 * are kept, each new one is the mean of the old rows (new tokens start as an average token, as
 * Hugging Face's resize_token_embeddings does with mean_resizing). Models with attached tensors
 * are refused. */
fm_status fm_model_resize_vocab(const fm_model *model, int vocab_size, fm_model **out);

/* Forward over tokens (B, T), 0 <= token < V, T <= n_positions. Computes the logits (B, T, V)
 * and the final hidden states (B, T, C), after the final LayerNorm as HF's GPT2Model returns
 * them. Activations are kept for backward; buffers are sized once per (B, T). */
fm_status fm_model_forward(fm_model *model, const int *tokens, int B, int T);
/* Sizes the activation arena for (B, T) now (fm_model_forward would on first use), so that a
 * batch too large for memory fails before anything else is done. */
fm_status fm_model_reserve(fm_model *model, int B, int T);
const float *fm_model_logits(const fm_model *model); /* (B, T, V) of the last forward */
const float *fm_model_hidden(const fm_model *model); /* (B, T, C) of the last forward */
/* A scratch buffer (B, T, V) owned by the model, for an objective's gradient on the logits. */
float *fm_model_dlogits(fm_model *model);

void fm_model_zero_grad(fm_model *model);
/* Backward of the last forward. dlogits (B, T, V) and dhidden (B, T, C) are the gradients of
 * the objective on the logits and on the final hidden states; either may be NULL (not both).
 * Parameter gradients are accumulated into fm_model_grads (call fm_model_zero_grad first). */
fm_status fm_model_backward(fm_model *model, const float *dlogits, const float *dhidden);
/* During fm_model_backward, layer_done(ctx, l) is called as soon as block l's gradients (its
 * tensors "h.l.*", adapters included) are final: l = n_layer-1 first, down to 0 (the data-parallel
 * trainer starts their all-reduce then). NULL removes it. */
void fm_model_set_backward_hook(fm_model *model, void (*layer_done)(void *ctx, int layer), void *ctx);

/* ---------------------------------------------------------------- LoRA adapters */

/* Low-rank adapters (Hu et al. 2021, as PEFT defines them for GPT-2's Conv1D): a product
 * y = x W + b of a block gains scale * (dropout(x) A^T) B^T with A (r, in), B (out, r) and
 * scale = alpha / r (alpha / sqrt(r) with rsLoRA). Targets are the block's four products. */
#define FM_LORA_C_ATTN 1u    /* attn.c_attn (C -> 3C) */
#define FM_LORA_ATTN_PROJ 2u /* attn.c_proj (C -> C) */
#define FM_LORA_C_FC 4u      /* mlp.c_fc (C -> H) */
#define FM_LORA_MLP_PROJ 8u  /* mlp.c_proj (H -> C) */
typedef struct {
    int r;            /* rank */
    float alpha;      /* scale = alpha / r */
    float dropout;    /* on the adapter's input while training */
    unsigned targets; /* FM_LORA_* bits */
    int use_rslora;   /* scale = alpha / sqrt(r) */
    char base_model[1024]; /* adapter_config.json's base_model_name_or_path ("" when unknown) */
} fm_lora_config;
/* PEFT's defaults for GPT-2: r 8, alpha 8, dropout 0, c_attn only. */
void fm_lora_config_default(fm_lora_config *cfg);
/* A comma-separated target list: "c_attn", "attn.c_proj", "c_fc" or "mlp.c_fc", "mlp.c_proj",
 * "c_proj" (both projections, PEFT's suffix rule), "all". FM_ERR_ARG names an unknown entry. */
fm_status fm_lora_parse_targets(const char *list, unsigned *targets);
/* The targets as PEFT's target_modules names, comma-separated, into buf. */
void fm_lora_targets_text(unsigned targets, char *buf, size_t size);

/* Attaches trainable adapters to every targeted product: "h.L.attn.c_attn.lora_A.weight" (r, in)
 * initialised as PEFT does (Kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in)), drawn
 * from seed) and "...lora_B.weight" (out, r) zero, so the model starts as the base; every tensor
 * of the model itself is frozen. A rank above a product's smaller side is refused. */
fm_status fm_model_add_lora(fm_model *model, const fm_lora_config *cfg, uint64_t seed);
/* The model's trainable LoRA configuration, or NULL when it has none. */
const fm_lora_config *fm_model_lora(const fm_model *model);
/* Dropout in the training forward (the adapters' dropout): on for the next fm_model_forward calls
 * with a nonzero seed, which picks the masks (the trainer draws one per micro-batch); 0 turns it
 * off (evaluation). Inference sessions never drop. */
void fm_model_set_dropout_seed(fm_model *model, uint64_t seed);
float fm_model_dropout(const fm_model *model); /* the largest dropout rate in use, 0 for none */
/* GPT-2's dropout in the training forward at rate p (its resid_pdrop and embd_pdrop): on each
 * block's attention and MLP output before the residual add, and on the embedding sum; active
 * only with a dropout seed (fm_model_set_dropout_seed). Attention-probability dropout
 * (attn_pdrop) is not implemented. 0 (the default) turns it off. */
fm_status fm_model_set_dropout(fm_model *model, float p);
/* A 64-bit checksum of the model's own weights (attached tensors excluded): what an adapter
 * records of the base it was trained on. */
uint64_t fm_model_base_fingerprint(const fm_model *model);

/* A LoRA adapter read from a PEFT directory (adapter_config.json, adapter_model.safetensors),
 * checked against base: every tensor's layer, product and shape, and the base's fingerprint when
 * the file records one (fm's do). Applied unmerged, so several adapters can share one base. */
typedef struct fm_adapter fm_adapter;
fm_status fm_adapter_load(fm_adapter **out, const char *dir, const fm_model *base);
void fm_adapter_free(fm_adapter *adapter);
const fm_lora_config *fm_adapter_config(const fm_adapter *adapter);
/* The base model an adapter directory names (adapter_config.json's base_model_name_or_path) into
 * base; an error naming the file when it is absent or empty. */
fm_status fm_adapter_base_name(const char *dir, char *base, size_t size);
/* Sessions made from model after this call apply adapter (NULL: none); the adapter must outlive
 * them. Without one, sessions apply the model's own trainable LoRA, if any. */
void fm_model_use_adapter(fm_model *model, const fm_adapter *adapter);
/* Folds the adapter into the base weights: W += scale (B A)^T per product (fm merge). */
fm_status fm_model_merge_adapter(fm_model *model, const fm_adapter *adapter);
/* Attaches the adapter's matrices to model as its trainable LoRA (resuming a LoRA run). */
fm_status fm_model_attach_adapter(fm_model *model, const fm_adapter *adapter);
/* Writes the model's trainable LoRA as a PEFT directory: adapter_config.json (with the
 * configuration's base_model as base_model_name_or_path) and adapter_model.safetensors (F32,
 * PEFT's names, the base's fingerprint in the metadata), and nothing else; both files are
 * written whole before either replaces what dir held. */
fm_status fm_lora_save(const fm_model *model, const char *dir);

/* ---------------------------------------------------------------- objectives */

/* Next-token cross-entropy with a per-token loss mask.
 * logits (N, V), targets (N) in [0, V), mask (N) weights or NULL for all ones.
 * loss = sum_i mask_i * nll_i / sum_i mask_i (0 when the mask is all zero).
 * When dlogits (N, V) is not NULL it receives d loss / d logits (may alias logits). */
fm_status fm_cross_entropy(const float *logits, const int *targets, const float *mask,
                           int N, int V, float *loss, float *dlogits);

/* The same with the normaliser given: *loss_sum = sum_i mask_i * nll_i, and dlogits (when not
 * NULL) = d(loss_sum / norm) / d logits; norm > 0 (gradient accumulation passes the whole
 * step's mask sum). */
fm_status fm_cross_entropy_sum(const float *logits, const int *targets, const float *mask, int N, int V,
                               double norm, double *loss_sum, float *dlogits);

/* Forward, masked cross-entropy and backward in one call; gradients accumulate.
 * tokens, targets, mask: (B, T); mask may be NULL. */
fm_status fm_model_train_loss(fm_model *model, const int *tokens, const int *targets,
                              const float *mask, int B, int T, float *loss);

/* ---------------------------------------------------------------- optimizer */

typedef struct {
    float lr;           /* peak learning rate */
    float min_lr;       /* floor reached at the end of the cosine decay */
    int warmup_steps;   /* linear warm-up from lr/warmup to lr */
    int total_steps;    /* cosine decay from lr (at warmup_steps) to min_lr (at total_steps) */
    float beta1, beta2, eps;
    float weight_decay; /* decoupled; applied to tensors with decay = 1 (the 2-D weights) */
    float grad_clip;    /* global-norm clip; <= 0 disables */
} fm_adamw_config;

void fm_adamw_config_default(fm_adamw_config *cfg);
/* Learning rate of step s (0-based). */
float fm_lr_at(const fm_adamw_config *cfg, int64_t step);

typedef struct fm_optimizer fm_optimizer;
/* AdamW over the model's trainable tensors as they are now (moments for those only). */
fm_status fm_optimizer_init(fm_optimizer **out, const fm_model *model, const fm_adamw_config *cfg);
void fm_optimizer_free(fm_optimizer *opt);
/* Clip the model's gradients to the global norm, then one AdamW update at the scheduled
 * learning rate. Optional outputs: the pre-clip gradient norm and the learning rate used. */
fm_status fm_optimizer_step(fm_optimizer *opt, fm_model *model, float *grad_norm, float *lr);
int64_t fm_optimizer_steps_done(const fm_optimizer *opt);
const fm_adamw_config *fm_optimizer_config(const fm_optimizer *opt);
/* Parameters the optimizer updates (those of the trainable tensors when it was made). */
size_t fm_optimizer_num_params(const fm_optimizer *opt);
struct fm_comm;
/* ZeRO-1 (docs/distributed.md): this rank keeps AdamW's moments of its 1/N stretch of the
 * trainable elements only (the others' freed), updates those elements alone at each step and
 * all-gathers the parameters after, so every rank ends the step with the same weights, the same
 * bits as without sharding. A trainer given this optimizer gathers the moments onto rank 0 for
 * each checkpoint, which so holds the whole moments (any number of ranks resumes it). Call it on
 * every rank, with the same comm the trainer gets, after fm_optimizer_init or a checkpoint load.
 * *held and *whole (optional): this rank's moment bytes now, and without sharding. A comm of one
 * process changes nothing. */
fm_status fm_optimizer_shard(fm_optimizer *opt, struct fm_comm *comm, size_t *held, size_t *whole);

/* ---------------------------------------------------------------- trainer */

typedef struct fm_shard fm_shard; /* token shards, below */

/* What a trainer needs, besides the optimizer, to continue exactly where it stopped. */
typedef struct {
    fm_rng rng;             /* the trainer's random stream (batch sampling, dropout, ...) */
    uint64_t data_position; /* where the data loader stands */
    uint64_t seed;          /* the run's seed, for the record */
} fm_train_state;

/* One micro-batch of B sequences of T positions (buffers owned by the trainer). */
typedef struct {
    int B, T;
    int rows;      /* sequences filled, 1..B (a held-out pass's last batch may be short) */
    int *tokens;   /* (B, T) inputs */
    int *targets;  /* (B, T) next-token targets, or what the objective reads (e.g. labels) */
    float *mask;   /* (B, T) loss weights >= 0; a source that leaves them sets all ones */
    /* read_end 0 (a zeroed batch): every row is used. Else only rows [read_first, read_end)
     * are (data parallel: this rank's share; read_first == read_end: none): a source whose
     * masks are all ones may leave the other rows' tokens unread (it still draws their
     * randomness and counts them in rows), so that each rank reads only its share of the
     * corpus; any source may fill every row. */
    int read_first, read_end;
} fm_batch;

/* Where batches come from. next: fills the next training micro-batch (rows = B), drawing from
 * rng and advancing *position; both are the trainer's and saved with every checkpoint, so a
 * resumed run draws the same stream. eval_next: fills held-out batch number index (0, 1, ...)
 * in a fixed order, setting rows = 0 past the last; NULL when there is no held-out data. */
typedef struct {
    void *ctx;
    fm_status (*next)(void *ctx, fm_batch *batch, fm_rng *rng, uint64_t *position);
    fm_status (*eval_next)(void *ctx, fm_batch *batch, uint64_t index);
} fm_data_source;

/* An objective turns the forward's outputs into a loss and the gradients that feed the one
 * backward. weight: the batch's share of the step's normaliser (e.g. the sum of its loss mask).
 * loss: called after fm_model_forward on the batch's tokens (rows x T); sets *loss_sum, the
 * loss summed over the batch (not averaged), and, when dlogits (rows*T, V) / dhidden (rows*T, C)
 * are not NULL, overwrites them with d(loss_sum / norm) on the logits / the final hidden states,
 * and adds the gradients of the attached tensors it owns (a head) to their grad. A step over K
 * micro-batches normalises by the sum of all K weights, so it equals one batch K times the
 * size. uses_logits / uses_hidden: which of the two gradients it produces. */
typedef struct {
    void *ctx;
    const char *name;
    int uses_logits, uses_hidden;
    double (*weight)(void *ctx, const fm_model *model, const fm_batch *batch);
    fm_status (*loss)(void *ctx, fm_model *model, const fm_batch *batch, double norm, double *loss_sum,
                      float *dlogits, float *dhidden);
} fm_objective;

/* Next-token cross-entropy on batch->targets with batch->mask (pre-training, fine-tuning). */
void fm_objective_cross_entropy(fm_objective *out);

/* Pre-training data from token shards (shard_source.c): each training row is seq tokens from a
 * uniformly random offset of train (drawn from the trainer's rng; position advances by
 * B * seq tokens) with their successors as targets; held-out batches are consecutive windows
 * of val from its start, covering at most eval_tokens tokens. The shards must outlive it. */
fm_status fm_shard_source_init(fm_data_source *out, const fm_shard *train, const fm_shard *val, int seq,
                               size_t eval_tokens);
/* The same with windows that start only at multiples of align tokens (training offsets drawn
 * uniformly among them; held-out window w at w * ceil(seq / align) * align): image data, whose
 * every image is align tokens (fm_image_tokenizer_sequence_length), so that each row starts at
 * an image's <|image|>. align 1 is fm_shard_source_init. */
fm_status fm_shard_source_init_aligned(fm_data_source *out, const fm_shard *train, const fm_shard *val, int seq,
                                       size_t eval_tokens, int align);
void fm_shard_source_free(fm_data_source *source);

typedef struct {
    int64_t step, total_steps; /* step: updates done, counting this one */
    float loss;                /* the step's loss: sum of loss_sum / sum of weights */
    float grad_norm, lr;
    double tokens_per_s;       /* of this step */
    double elapsed_s;          /* since fm_trainer_run started */
    int evaluated;             /* a held-out evaluation ran after this step */
    double val_loss;
    int new_best;              /* the held-out loss is the lowest so far; saved in best_dir */
    double comm_s;             /* data parallel: seconds this rank spent in the gradient sums' calls
                                  after the backward (the wait the overlap did not hide) */
} fm_step_report;

typedef struct {
    int batch, seq;      /* micro-batch shape B x T */
    int grad_accum;      /* micro-batches per optimizer step (>= 1) */
    int total_steps;     /* the run's length (the optimizer's schedule should agree) */
    int eval_every;      /* held-out evaluation interval, and after the last step; 0 = never */
    int save_every;      /* checkpoint interval, and after the last step; 0 = only at the end */
    const char *checkpoint_dir; /* NULL: no checkpoints */
    const char *best_dir;       /* NULL, or where the model (a LoRA run: its adapter) with the lowest
                                   held-out loss so far is kept, with best.json {"step", "val_loss"} */
    const char *metrics_path;   /* NULL, or metrics.jsonl: a JSON line per step and per evaluation */
    const char *plot_path;      /* NULL, or an SVG loss curve redrawn at each evaluation */
    double bytes_per_token;     /* > 0: metrics add the held-out bits per byte this implies */
    void *user;          /* for the callback */
    /* After each step (and its evaluation), before its checkpoint. */
    void (*on_step)(void *user, const fm_step_report *report);
    /* NULL or a communicator of one process: today's single process. Of N > 1 processes:
     * data-parallel (docs/distributed.md): batch is the global batch, every rank draws it whole
     * and computes rows rank*rows/N.. of it, gradients and losses are summed across ranks
     * before the (identical) optimizer step, held-out batches are shared out. Only rank 0
     * should be given the paths (checkpoints, metrics, best, plot) and on_step. */
    struct fm_comm *comm;
    /* Data parallel: 0 (default) sums all gradients after the whole backward; 1 starts each
     * block's gradient all-reduce (non-blocking) as the last micro-batch's backward finishes the
     * block, overlapping it with the rest of the backward. The same sums either way. The overlap
     * pays only when the sums take long against the backward and the transport progresses them
     * in the background; on the setups measured (docs/distributed.md) it made the step slower. */
    int overlap;
} fm_trainer_config;

typedef struct fm_trainer fm_trainer;
/* A trainer over model (its trainable tensors), opt and state (rng, data position: restored by
 * fm_checkpoint_load for a resume), all outliving it. Allocates every buffer now. When
 * metrics_path exists, its lines past the optimizer's step are dropped (a resumed run). */
fm_status fm_trainer_init(fm_trainer **out, fm_model *model, fm_optimizer *opt, fm_train_state *state,
                          const fm_data_source *data, const fm_objective *objective,
                          const fm_trainer_config *cfg);
void fm_trainer_free(fm_trainer *t);
/* One optimizer step: grad_accum micro-batches drawn, forward, objective, backward, AdamW. */
fm_status fm_trainer_step(fm_trainer *t, fm_step_report *report);
/* The held-out loss: sum of loss_sum over every eval batch / sum of their weights. */
fm_status fm_trainer_evaluate(fm_trainer *t, double *loss);
/* Steps until total_steps, evaluating and saving on the schedule, or until fm_trainer_stop was
 * called (then it saves and returns with *stopped = 1). */
fm_status fm_trainer_run(fm_trainer *t, int *stopped);
/* Asks fm_trainer_run to save and return after the current step (async-signal-safe). */
void fm_trainer_stop(fm_trainer *t);
/* Seconds one step of this trainer takes (forward, objective, backward, and an AdamW estimate):
 * the fastest of a few steps on batches drawn from fm_rng_seed(seed), so the run's stream is
 * untouched; gradients are zeroed after. For turning a time budget into a step count. */
fm_status fm_trainer_time_step(fm_trainer *t, uint64_t seed, double *seconds);

/* ---------------------------------------------------------------- data-parallel communication */

/* The processes of a data-parallel job (src/dist/): MPI under a launcher in a build with MPI
 * (make MPI=1), a single process otherwise; another backend (NCCL) would sit behind the same
 * calls. Every call but rank, size and abort is collective: each rank makes it, in the same
 * order. The backend's own errors end the whole job (no hang). */
typedef struct fm_comm fm_comm;
/* The job's communicator. Under mpirun (its environment: OMPI_COMM_WORLD_SIZE, PMIX_RANK,
 * PMI_SIZE) in an MPI build: MPI's world, MPI initialised here. Otherwise one process, and no
 * MPI call is ever made. A launcher with more than one process and a build without MPI: FM_ERR_CONFIG. */
fm_status fm_comm_init(fm_comm **out);
/* Finalises (MPI_Finalize) and frees; NULL is fine. */
void fm_comm_free(fm_comm *comm);
int fm_comm_rank(const fm_comm *comm);       /* 0..size-1; 0 for NULL */
int fm_comm_size(const fm_comm *comm);       /* 1 for NULL */
int fm_comm_local_size(const fm_comm *comm); /* ranks on this machine */
/* x[0..n) summed element-wise over the ranks, in place, the same bits on every rank. */
fm_status fm_comm_allreduce_sum_f32(fm_comm *comm, float *x, size_t n);
fm_status fm_comm_allreduce_sum_f64(fm_comm *comm, double *x, size_t n);
/* root's bytes[0..n) copied to every rank. */
fm_status fm_comm_bcast(fm_comm *comm, void *bytes, size_t n, int root);
fm_status fm_comm_barrier(fm_comm *comm);
/* Ends every process of the job with exit status code (not collective: one rank's failure). */
_Noreturn void fm_comm_abort(fm_comm *comm, int code);
/* "mpi" when this build has MPI, "none" otherwise. */
const char *fm_comm_backend(void);

/* ---------------------------------------------------------------- int8 weights (quant.c) */

/* Quantizes the matrix weights (wte and every c_attn, c_proj, c_fc weight) to Q8_0: blocks of
 * 32 weights along the input dimension, one float16 scale each (max|w| / 127). The float
 * parameters become the dequantized values, so every computation sees the quantized model;
 * the decoder multiplies the int8 blocks directly (4.5x less memory per token). fm_model_save
 * then writes the int8 form, and fm_model_load reads it back. Training the model (a backward)
 * returns it to float32. */
fm_status fm_model_quantize(fm_model *model);
/* "f32", or "q8_0" for a quantized model. */
const char *fm_model_weight_format(const fm_model *model);

/* ---------------------------------------------------------------- inference sessions */

/* A session holds what one user of a model needs for inference (session.c): key/value caches
 * for up to max_seqs sequences of up to max_len positions each, the activations of a block of
 * rows, and scratch; all allocated by fm_session_init. The model is only read: any number of
 * sessions may use one model at once, from different threads, and each gives exactly what it
 * gives alone. The model must outlive its sessions and not be trained or quantized meanwhile.
 * Products run in float32 (the Q8_0 blocks for a quantized model) whatever
 * fm_set_matmul_precision says, and every row is computed on its own: a sequence's logits do not
 * depend on the other sequences stepped with it (batched decoding), bit for bit. */
typedef struct fm_session fm_session;

fm_status fm_session_init(fm_session **out, const fm_model *model, int max_seqs, int max_len);
void fm_session_free(fm_session *s);
const fm_model *fm_session_model(const fm_session *s);
int fm_session_max_seqs(const fm_session *s);
int fm_session_max_len(const fm_session *s);
int fm_session_max_rows(const fm_session *s); /* rows computed in one pass: max(128, max_seqs) */
/* Forgets sequence seq's positions (a new sequence in that slot). */
void fm_session_reset(fm_session *s, int seq);
/* Positions of sequence seq filled so far. */
int fm_session_length(const fm_session *s, int seq);
/* Sequence `to` becomes a copy of sequence `from` (its cached positions): a shared prefix is
 * computed once and continued several ways, each as if fed from the start. */
fm_status fm_session_copy(fm_session *s, int from, int to);
/* Appends n tokens to sequence seq (a prompt: fed in blocks of 128 positions, each block one
 * batch of rows through the products). *logits (V) receives the next-token logits after the
 * last token (valid until the next call on this session). Fails if the sequence would pass
 * max_len. */
fm_status fm_session_feed(fm_session *s, int seq, const int *tokens, int n, const float **logits);
/* Several prompts at once: appends lens[i] tokens (tokens[i]) to sequence seqs[i] for i < n
 * (distinct sequences), all the rows cut into blocks of 128 or more, whatever sequence they
 * belong to; *logits (n, V): row i is sequence seqs[i]'s next-token logits after its last token.
 * Each sequence gets what fm_session_feed gives it alone, bit for bit. */
fm_status fm_session_feed_many(fm_session *s, int n, const int *seqs, const int *const *tokens, const int *lens,
                               const float **logits);
/* Batched decoding: appends tokens[i] to sequence seqs[i] for i < n (distinct sequences of any
 * lengths), all in one step. *logits (n, V): row i is sequence seqs[i]'s next-token logits. */
fm_status fm_session_step(fm_session *s, const int *seqs, const int *tokens, int n, const float **logits);
/* Appends n rows in one pass: tokens[r] to sequence seqs[r], a sequence appearing several times
 * taking consecutive positions in the order given (n up to the session's row block, 128 or
 * max_seqs if more). *logits (n, V): row r is the next-token logits after row r. Scoring many
 * continuations at once: each row gets what appending it alone gives, bit for bit. */
fm_status fm_session_append(fm_session *s, const int *seqs, const int *tokens, int n, const float **logits);
/* A forward over tokens (B, T) without caches, for scoring: *logits (B, T, V), each row of a
 * batch attending causally within it. Its buffers are sized per (B, T) (no gradients, no
 * backward scratch); T <= n_positions. */
fm_status fm_session_forward(fm_session *s, const int *tokens, int B, int T, const float **logits);

/* How the next token is chosen from the logits, applied in this order:
 * 1. repetition penalty: for every id in recent (the context), a positive logit is divided by
 *    repeat_penalty, a negative one multiplied (1 = off);
 * 2. temperature: logits / temperature; temperature 0 means greedy (argmax; steps 3-5 skipped);
 * 3. top-k: keep the k most likely (0 = off);
 * 4. top-p: keep the smallest set whose probability reaches top_p (1 = off);
 * 5. min-p: drop tokens whose probability is below min_p times the largest (0 = off);
 * then the kept probabilities are renormalised and one id is drawn with rng. */
typedef struct {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float repeat_penalty;
} fm_sampler_config;

void fm_sampler_config_default(fm_sampler_config *cfg); /* 1.0, 0, 1.0, 0, 1.0: plain sampling */
fm_status fm_sampler_validate(const fm_sampler_config *cfg);
/* logits (V) are not modified; scratch: 2 * V floats or NULL (allocated per call). */
int fm_sample(const fm_sampler_config *cfg, const float *logits, int V, const int *recent, int n_recent,
              fm_rng *rng, float *scratch);

/* ---------------------------------------------------------------- generation */

typedef struct fm_tokenizer fm_tokenizer; /* (below) */

/* Why a sequence ended: max_tokens reached, a stop string, the end-of-text token, or the
 * streaming callback asked to stop. fm_finish_reason_name: "length", "stop", "eos", "callback". */
typedef enum { FM_FINISH_LENGTH = 0, FM_FINISH_STOP, FM_FINISH_EOS, FM_FINISH_CALLBACK } fm_finish_reason;
const char *fm_finish_reason_name(fm_finish_reason reason);

typedef struct {
    fm_sampler_config sampler;
    int max_tokens;          /* tokens to generate per prompt */
    int repeat_window;       /* recent tokens the repetition penalty looks at (64) */
    uint64_t seed;           /* every prompt's sampler starts from fm_rng_seed(seed) */
    int eos;                 /* the id that ends a sequence, or -1 for none */
    const fm_tokenizer *tok; /* turns ids into streamed text and finds stop strings; may be NULL */
    const char *const *stops; /* n_stops stop strings (need tok): the text ends before the first */
    int n_stops;
} fm_generate_config;
/* Plain sampling, 200 tokens, window 64, seed 0, no eos, no tokenizer, no stops. */
void fm_generate_config_default(fm_generate_config *cfg);

typedef struct {
    int *tokens;             /* (n_tokens) the generated ids (a stop string's tokens excluded) */
    int n_tokens;
    float *logprobs;         /* (n_tokens) log p of each chosen id under the model: log softmax of
                                the raw logits, before any sampling transformation */
    char *text;              /* the generated text, NUL-terminated (NULL without a tokenizer) */
    size_t text_len;
    fm_finish_reason finish;
} fm_generate_result;
void fm_generate_result_free(fm_generate_result *result);

/* Streaming: called for prompt `index` with each new piece of final text (held back while it
 * may still begin a stop string; text NULL without a tokenizer) and the ids that completed it.
 * Returning nonzero ends that sequence (finish reason "callback"). */
typedef int (*fm_generate_callback)(void *user, int index, const int *ids, int n_ids, const char *text,
                                    size_t len);

/* Continues each of n prompts (prompts[i]: n_prompts[i] >= 1 tokens) with the session, up to
 * fm_session_max_seqs(s) sequences decoding together in batched steps: a prompt joins when a
 * sequence slot is free and leaves when it finishes. Each prompt's result (results[i]) is
 * exactly what it gets when generated alone, greedy or seeded. A sequence that fills the
 * session's length keeps the last half of its positions and goes on. cb may be NULL. */
fm_status fm_generate(fm_session *s, const fm_generate_config *cfg, const int *const *prompts,
                      const int *n_prompts, int n, fm_generate_callback cb, void *user,
                      fm_generate_result *results);

/* ---------------------------------------------------------------- token shards and evaluation */

/* A token shard (data.c) is a 64-byte little-endian header then the tokens:
 *   0  "FMTOKENS"        magic
 *   8  u32 version (2)   12 u32 token width in bytes (2 when vocab_size <= 65536, else 4)
 *  16  u64 token count   24 u64 FNV-1a 64 checksum of the token bytes
 *  32  u32 vocab_size    36 u32 zero
 *  40  u64 source bytes  (UTF-8 bytes of the text the tokens encode; bits per byte use it)
 *  48  u64 tokenizer fingerprint (fm_tokenizer_fingerprint of the tokenizer that made the
 *      tokens; 0: not recorded)
 *  56  u64 FNV-1a 64 checksum of header bytes 0..55, so every header field is checked
 *  64  tokens
 * Version 1 (no header checksum, no fingerprint) is refused: re-run fm data prepare. */
typedef struct fm_shard fm_shard;

/* Writes a shard that records no tokenizer (fingerprint 0); fm's commands refuse to feed such a
 * shard to a model, since nothing says whose ids they are. */
fm_status fm_shard_write(const char *path, const int *tokens, size_t n, int vocab_size,
                         uint64_t source_bytes); /* atomic */
/* The same, recording the fingerprint of the tokenizer that made the tokens. */
fm_status fm_shard_write_with_fingerprint(const char *path, const int *tokens, size_t n, int vocab_size,
                                          uint64_t source_bytes, uint64_t tokenizer_fingerprint); /* atomic */
/* Opens (mmap) and checks magic, version, the header checksum, width, length against the file,
 * the tokens' checksum and that every token is below vocab_size. */
fm_status fm_shard_open(fm_shard **out, const char *path);
/* n shards (each checked as fm_shard_open does, all of one vocabulary and tokenizer) read as one:
 * their tokens one after another (a window may span two), their source bytes summed, the
 * checksum a hash of theirs. Each is mapped, none read into memory. */
fm_status fm_shard_open_parts(fm_shard **out, const char *const *paths, int n);
void fm_shard_close(fm_shard *shard);
size_t fm_shard_length(const fm_shard *shard);
int fm_shard_vocab_size(const fm_shard *shard);
uint64_t fm_shard_source_bytes(const fm_shard *shard);
/* The header's checksum of the tokens (FNV-1a 64), verified by fm_shard_open: names the data. */
uint64_t fm_shard_checksum(const fm_shard *shard);
/* The fingerprint of the tokenizer that made the tokens, 0 when the shard records none. */
uint64_t fm_shard_tokenizer_fingerprint(const fm_shard *shard);
/* FM_OK when the shard was made by tok (tok_name: how messages call it, e.g. "RUN/tokenizer.json");
 * otherwise FM_ERR_FORMAT with a message naming the shard, both fingerprints and tok_name. hint:
 * NULL, or a tokenizer file to mention beside the shard's fingerprint (the data directory's
 * tokenizer.json: said to be the shard's tokenizer when it is, or a third one). */
fm_status fm_shard_check_tokenizer(const fm_shard *shard, const fm_tokenizer *tok, const char *tok_name,
                                   const char *hint);
/* Copies tokens [offset, offset + n) into out; the caller keeps offset + n <= length. */
void fm_shard_read(const fm_shard *shard, size_t offset, size_t n, int *out);

/* Numbered shards written as a stream (shard_stream.c): DIR/PREFIX-00000.bin, -00001.bin, ...,
 * each of shard_tokens tokens (the last of fewer), in fm_shard_write's format, each atomic (NAME.tmp
 * renamed when whole). Appends may span shards; a shard's source bytes are the appends' shared
 * out in proportion to their tokens. Memory: a 1 MiB buffer, whatever the length. */
typedef struct fm_shard_series fm_shard_series;
fm_status fm_shard_series_open(fm_shard_series **out, const char *dir, const char *prefix, size_t shard_tokens,
                               int vocab_size, uint64_t tokenizer_fingerprint);
fm_status fm_shard_series_append(fm_shard_series *series, const int *tokens, size_t n, uint64_t source_bytes);
/* From now on a shard's source bytes are the byte lengths of its tokens in tok (exact for a
 * byte-level tokenizer, and independent of how the appends were cut); source_bytes is ignored. */
void fm_shard_series_count_bytes(fm_shard_series *series, const fm_tokenizer *tok);
/* Finishes the last shard and frees the series (also on failure); optional counts written. */
fm_status fm_shard_series_finish(fm_shard_series *series, int *shards, size_t *tokens);
/* Frees an unfinished series, removing the shard it was writing. */
void fm_shard_series_free(fm_shard_series *series);

/* log p(tokens[i] | tokens[0..i-1]) into logprobs[i] for i >= 1; logprobs[0] = NAN (nothing
 * before it). Texts longer than the context are scored with sliding windows: each token sees at
 * least half a context of history. logprobs may be NULL; *nll (nats, summed over i >= 1) may be. */
fm_status fm_score_tokens(const fm_model *model, const int *tokens, size_t n, float *logprobs, double *nll);

/* A token-bigram baseline fitted on train: p(w | v) = (c(v, w) + beta p1(w)) / (c(v) + beta),
 * p1 the add-one unigram; beta chosen on the last tenth of train (fitted on the rest), then the
 * counts refitted on all of train. *nll: summed nats over eval[1..n_eval), eval[0] scored by p1. */
fm_status fm_bigram_nll(const int *train, size_t n_train, const int *eval, size_t n_eval, int vocab_size,
                        double *nll, double *beta);

/* ---------------------------------------------------------------- tokenizer */

/* Byte-level BPE as GPT-2 uses it (tokenizer.c). Ids 0..255 need not be the raw bytes: a
 * tokenizer loaded from GPT-2's files keeps GPT-2's ids. Special tokens (<|endoftext|>,
 * <|image|>, <|/image|>, <|system|>, <|user|>, <|assistant|>) sit at the end of a trained
 * vocabulary; ordinary text never produces them unless the caller allows it. */
typedef struct fm_tokenizer fm_tokenizer;

/* Learns merges from texts[i] (len[i] bytes each, any bytes) up to vocab_size ids in all
 * (256 bytes + merges + the 6 special tokens). Deterministic. */
fm_status fm_tokenizer_train(fm_tokenizer **out, const char *const *texts, const size_t *lens,
                             int n_texts, int vocab_size);
/* path: a tokenizer.json (Hugging Face format), or a folder with GPT-2's encoder.json and
 * vocab.bpe (or vocab.json and merges.txt). */
fm_status fm_tokenizer_load(fm_tokenizer **out, const char *path);
fm_status fm_tokenizer_save(const fm_tokenizer *tok, const char *path); /* tokenizer.json, atomic */
void fm_tokenizer_free(fm_tokenizer *tok);
int fm_tokenizer_vocab_size(const fm_tokenizer *tok);
/* The id of a special token such as "<|endoftext|>", or -1 when the tokenizer has none. */
int fm_tokenizer_special_id(const fm_tokenizer *tok, const char *name);
/* Adds a special token with the next free id (the vocabulary grows by one), or gives the id it
 * already has; *id (may be NULL) receives it. A model using the tokenizer needs as many rows
 * (fm_model_resize_vocab). */
fm_status fm_tokenizer_add_special(fm_tokenizer *tok, const char *name, int *id);
/* Encodes len bytes of text; *ids is malloc'd (*n_ids entries). allow_special: special-token
 * strings in the text become their ids; otherwise they are encoded as ordinary text. */
fm_status fm_tokenizer_encode(const fm_tokenizer *tok, const char *text, size_t len, int allow_special,
                              int **ids, size_t *n_ids);
/* The exact bytes of ids; *out is malloc'd and NUL-terminated (*out_len excludes the NUL). */
fm_status fm_tokenizer_decode(const fm_tokenizer *tok, const int *ids, size_t n_ids, char **out,
                              size_t *out_len);
/* The bytes of one token (not NUL-terminated), for streaming output; NULL for a bad id. */
const char *fm_tokenizer_token_bytes(const fm_tokenizer *tok, int id, size_t *len);
/* A 64-bit name of the tokenizer's content (tokenizer_fingerprint.c): every token's id and bytes,
 * which ids are special, the merges in rank order; not how a file spelled them, so a tokenizer
 * saved and loaded again keeps it. Token shards record it (fm_shard_write_with_fingerprint). */
uint64_t fm_tokenizer_fingerprint(const fm_tokenizer *tok);

/* ---------------------------------------------------------------- evaluation tasks */

/* A task (task.c): JSONL, one item a line after an optional settings line (docs/tasks.md).
 * Multiple choice items {"query", "choices", "gold"}, generation items {"query", "answers"},
 * perplexity items {"text"}; "split" test (default), fewshot or train. */
typedef enum { FM_TASK_MULTIPLE_CHOICE, FM_TASK_GENERATE, FM_TASK_PERPLEXITY } fm_task_type;
typedef struct fm_task fm_task;

/* Reads and checks a task file; every problem names the file and line. */
fm_status fm_task_load(fm_task **out, const char *path);
void fm_task_free(fm_task *task);
const char *fm_task_name(const fm_task *task);
fm_task_type fm_task_kind(const fm_task *task);
const char *fm_task_type_name(fm_task_type type); /* "multiple_choice", "generate", "perplexity" */
int fm_task_num_test(const fm_task *task);
int fm_task_num_fewshot(const fm_task *task);   /* the pool few-shot examples are drawn from */
double fm_task_chance(const fm_task *task);       /* NAN when unknown */

typedef struct {
    int shots;        /* few-shot examples before each item */
    uint64_t seed;    /* draws the examples: item i's first k are the first k for any larger k */
    int limit;        /* the first `limit` test items only; 0: all */
    int max_seqs;     /* sequences decoded at once (a question's choices share its context) */
    int plain;        /* multiple choice: one full forward per choice (no cache reuse, no batching) */
    /* prompts through the chat template (fm_chat_encode), as lm-eval's --apply_chat_template with
     * --fewshot_as_multiturn: the instruction as a system message when not empty, each example a
     * user turn (query) and an assistant turn (target), the query the last user turn, then
     * <|assistant|>; a choice or answer follows the marker without the target delimiter, and
     * generation also ends at <|endoftext|>. Perplexity tasks score their documents as text. */
    int chat;
    /* called for each item: the choices' log-likelihoods (multiple choice), exact match and F1
     * with the generated text (generate), the document's log-likelihood (perplexity) */
    void (*on_item)(void *user, int index, const double *values, int n_values, const char *text);
    void *user;
} fm_task_config;
void fm_task_config_default(fm_task_config *cfg); /* 0 shots, seed 1234, all items, 32 sequences */

#define FM_TASK_MAX_METRICS 6
typedef struct {
    const char *name; /* acc, acc_norm, acc_bytes; exact_match, f1; bits_per_byte, ... */
    double value, std_error; /* std_error: lm-eval's, NAN where it gives none */
} fm_task_metric;

typedef struct {
    int n;           /* test items evaluated */
    int shots;       /* the shots used (0 for perplexity, which takes none) */
    int truncated;   /* items whose prompt was cut from the left to fit the context */
    int skipped;     /* multiple choice: items left out, a choice being longer than the context */
    double chance;
    int n_metrics;
    fm_task_metric metrics[FM_TASK_MAX_METRICS];
} fm_task_result;

/* Runs the task's test items on the model, as lm-evaluation-harness defines each type:
 * multiple choice scores "target delimiter + choice" after the prompt (its _encode_pair) and
 * reports acc, acc_norm (log-likelihood over the choice's characters) and acc_bytes (over its
 * bytes); generation decodes greedily until a stop string (max_gen_tokens) and reports exact
 * match and token F1 of normalised answers; perplexity reports bits per byte and token and word
 * perplexity over rolling windows. A prompt longer than the context is cut from the left. */
fm_status fm_task_evaluate(const fm_task *task, const fm_model *model, const fm_tokenizer *tok,
                           const fm_task_config *cfg, fm_task_result *result);

/* ---------------------------------------------------------------- pictures */

/* One line of a chart: n points (xs[i], ys[i]); NAN ys are skipped. color: an SVG color. */
typedef struct {
    const char *name;
    const double *xs, *ys;
    int n;
    const char *color;
} fm_series;

/* Writes a line chart as an SVG file (atomic): axes with ticks, a legend, optional log-scale y. */
fm_status fm_plot_svg(const char *path, const char *title, const char *x_label, const char *y_label,
                      const fm_series *series, int n_series, int log_y);

/* ---------------------------------------------------------------- images
 * (io/idx.c, tokenizer/image_tokenizer*.c, io/png.c; the formats: docs/file-formats.md) */

/* An IDX file of the MNIST family: images (magic 0x00000803, 3 dimensions, unsigned bytes) or
 * labels (magic 0x00000801, 1 dimension). */
typedef struct fm_idx {
    int count;      /* items: images or labels */
    int rows, cols; /* image height and width in pixels; 0 and 0 for a label file */
    uint8_t *data;  /* count*rows*cols pixels, row-major, or count labels */
} fm_idx;
fm_status fm_idx_load(const char *path, fm_idx *out);  /* gzip-compressed or plain (zlib's gzread reads both) */
fm_status fm_idx_load_pair(const char *images_path, const char *labels_path, fm_idx *images, fm_idx *labels); /* both, counts must agree */
void fm_idx_free(fm_idx *idx);

/* Images as short sequences of discrete tokens (image_tokenizer.c): each image is cut into
 * patches of P x P pixels in raster order, each patch replaced by the id of its nearest codebook
 * centroid (K centroids learned by k-means), between <|image|> and <|/image|>. The codes take
 * ids code_base .. code_base + K - 1 of a text tokenizer's vocabulary (after its tokens), so one
 * model reads and writes both. Stored as image_tokenizer.json (the codebook included) in a
 * tokenizer or model directory. */
typedef struct fm_image_tokenizer fm_image_tokenizer;
fm_status fm_image_tokenizer_load(const char *dir, fm_image_tokenizer **out); /* from a model or tokenizer directory; a clear error when it holds none */
int fm_image_tokenizer_rows(const fm_image_tokenizer *t);            /* image size it encodes */
int fm_image_tokenizer_cols(const fm_image_tokenizer *t);
int fm_image_tokenizer_sequence_length(const fm_image_tokenizer *t); /* tokens per image, the <|image|> and <|/image|> markers included */
fm_status fm_image_tokenizer_encode(const fm_image_tokenizer *t, const uint8_t *pixels, int *ids);       /* pixels (rows*cols) -> ids (sequence_length) */
fm_status fm_image_tokenizer_decode(const fm_image_tokenizer *t, const int *ids, int n, uint8_t *pixels); /* ids -> pixels (rows*cols); codes past n (a partial image) left as they are in pixels */
void fm_image_tokenizer_free(fm_image_tokenizer *t);

/* The codebook and its ids: P (patch side), K (codes), code k's id (code_base + k), and the ids of
 * <|image|> and <|/image|>. */
int fm_image_tokenizer_patch(const fm_image_tokenizer *t);
int fm_image_tokenizer_codebook_size(const fm_image_tokenizer *t);
int fm_image_tokenizer_code_base(const fm_image_tokenizer *t);
int fm_image_tokenizer_image_id(const fm_image_tokenizer *t);
int fm_image_tokenizer_end_id(const fm_image_tokenizer *t);

typedef struct {
    int patch;     /* P: patches of P x P pixels; P must divide the image's rows and cols (4) */
    int codebook;  /* K: centroids, the image codes (512) */
    int iters;     /* Lloyd iterations at most (20) */
    int sample;    /* images drawn (seeded) from the file for k-means; all when fewer (10000) */
    uint64_t seed; /* picks the sample and the k-means++ starting centroids (1) */
} fm_image_tokenizer_config;
void fm_image_tokenizer_config_default(fm_image_tokenizer_config *cfg);
typedef struct {
    int sample_images;  /* images k-means learned from */
    size_t patches;     /* points: sample_images x patches per image */
    int iterations;     /* Lloyd iterations run (fewer than asked when nothing moved) */
    double sample_mse;  /* reconstruction error per pixel (0..255 units) on the sample */
    int other_images;   /* up to 2000 images of the file outside the sample ... */
    double other_mse;   /* ... and the error on them (NAN when the sample took every image) */
} fm_image_tokenizer_report;
/* Learns the codebook from images by k-means++ and Lloyd's iterations (deterministic for a seed
 * whatever the thread count) and adds the image tokens to tok as special tokens: <|image|> and
 * <|/image|> (unless it has them) and the K codes "<|patch_0|>" .. on the next K ids. The
 * tokenizer records tok's fingerprint after that: save tok beside it. report may be NULL. A
 * tokenizer that already holds image codes is refused. */
fm_status fm_image_tokenizer_train(fm_image_tokenizer **out, const fm_idx *images, const fm_image_tokenizer_config *cfg,
                                   fm_tokenizer *tok, fm_image_tokenizer_report *report);
/* Writes DIR/image_tokenizer.json (atomic). */
fm_status fm_image_tokenizer_save(const fm_image_tokenizer *t, const char *dir);
/* FM_OK when tok is the text tokenizer t was made with (its fingerprint); else FM_ERR_MISMATCH
 * naming tok_name. fm_image_tokenizer_load makes this check against DIR/tokenizer.json. */
fm_status fm_image_tokenizer_check(const fm_image_tokenizer *t, const fm_tokenizer *tok, const char *tok_name);
/* The mean squared error per pixel (0..255 units) of count images (rows*cols bytes each, back
 * to back) encoded and decoded. PSNR = 10 log10(255^2 / mse). */
fm_status fm_image_tokenizer_error(const fm_image_tokenizer *t, const uint8_t *pixels, int count, double *mse);
/* Copies from_dir's image tokenizer (checked) into to_dir when from_dir has one; *copied (may be
 * NULL) says whether it did. What commands call wherever they copy tokenizer.json. */
fm_status fm_image_tokenizer_copy(const char *from_dir, const char *to_dir, int *copied);

/* A PNG file (libpng, atomic) of 8-bit grey pixels (height, width), row-major (io/png.c). */
fm_status fm_png_write_gray(const char *path, const uint8_t *pixels, int width, int height);

/* ---------------------------------------------------------------- linear probes
 * (eval/probe.c, eval/logreg.c, infer/session.c's pooled states; docs/probe.md)
 *
 * How well frozen features serve a labeled task: a multinomial logistic regression with L2
 * regularisation (the features standardised by the training rows' mean and sd, fitted to
 * convergence by L-BFGS) whose strength, and layer, are chosen on the training labels only
 * (cross-validation inside a draw of a few labels per class, or a held-out part of all of them),
 * then scored on the whole test set. */

/* Each sequence's hidden states of every layer averaged over its T positions: pooled
 * (B, L + 1, C), entry 0 the embeddings (wte + wpe), entry l (1 <= l < L) the residual stream
 * after block l, entry L the final hidden states after ln_f (Hugging Face's hidden_states).
 * Runs the session's cache-free forward (its buffers sized per (B, T)), without the logits. */
fm_status fm_session_pooled_states(fm_session *s, const int *tokens, int B, int T, float *pooled);
/* As fm_session_pooled_states, with normed (B, L + 1, C): the average over the T positions of
 * each position's residual stream normalised to zero mean and unit variance over its C numbers
 * (LayerNorm without gain and bias, the model's layer_norm_epsilon), Image GPT's probe features;
 * entry L normalises the stream before ln_f (after the probe's standardisation, the same features
 * as pooled's entry L). Either output may be NULL (not computed). */
fm_status fm_session_pooled_states_normed(fm_session *s, const int *tokens, int B, int T, float *pooled,
                                          float *normed);

/* n rows of features, each n_layers candidate vectors of d numbers (layers of a model, or one
 * vector: pixels): x (n, n_layers, d). */
typedef struct {
    const float *x;
    int n, n_layers, d;
} fm_probe_features;

typedef struct {
    int folds;        /* cross-validation folds inside a draw's labels (5), stratified by class */
    int val_every;    /* without cross-validation: 1 training row in val_every (a seeded
                         permutation, per class) is held out to choose; then refit on all (10) */
    int layer;        /* the candidate to use, or -1 to choose it along with the strength (-1) */
    uint64_t seed;    /* the folds' and the held-out part's permutation (0) */
    int max_iter;     /* L-BFGS iterations per fit (0: 1000) */
} fm_probe_config;
void fm_probe_config_default(fm_probe_config *cfg);

/* The fixed grid of L2 strengths the probe chooses from (lambda in mean cross-entropy +
 * lambda / 2 ||W||^2, i.e. scikit-learn's C = 1 / (lambda n)): *values, weakest first. */
int fm_probe_grid(const double **values);

typedef struct {
    double accuracy;        /* on every test row */
    int layer;              /* the candidate used */
    double lambda;          /* the strength chosen */
    double select_accuracy; /* what chose them: the mean cross-validated or held-out accuracy */
    int converged;          /* the final fit reached its gradient tolerance */
} fm_probe_result;

/* per_class rows of each class 0 .. k-1 of labels (n, each in [0, k)), drawn without replacement
 * by a generator seeded with seed, into rows (k * per_class), sorted. A class with fewer rows:
 * FM_ERR_ARG naming it and its count. */
fm_status fm_probe_draw(const int *labels, int n, int k, int per_class, uint64_t seed, int *rows);
/* The generator seed of draw `draw` (0, 1, ...) of per_class labels per class under a run's seed:
 * fm probe's draws, which fm finetune's image classification takes too (the same rows). */
uint64_t fm_probe_draw_seed(uint64_t seed, int per_class, int draw);

/* One probe. The labeled rows are rows (n_rows indices into train; NULL: all train->n rows) with
 * train_labels (train->n, in [0, k)). cross_validate: the strength (and, with cfg->layer -1, the
 * layer) with the best mean accuracy over cfg->folds stratified folds of those rows (ties: the
 * lower held-out log-loss), else the best on a held-out part of them (cfg->val_every); then a
 * fit on all of them, scored on every test row. Nothing is chosen on the test rows. train and
 * test must have the same n_layers and d. */
fm_status fm_probe_run(const fm_probe_features *train, const int *train_labels, const int *rows, int n_rows,
                       int cross_validate, const fm_probe_features *test, const int *test_labels, int k,
                       const fm_probe_config *cfg, fm_probe_result *out);

/* ---------------------------------------------------------------- kernel timing */

/* While enabled, the model's forward and backward, fm_cross_entropy, zero_grad and the optimizer
 * step add each kernel call's wall time to a table under a name "kind: what" (kind: products,
 * attention or other), in the order first seen (fm bench train --profile prints it). For a model
 * driven from one thread. Off by default; reset empties the table. */
void fm_profile_enable(int on);
void fm_profile_reset(void);
int fm_profile_entries(void);
/* Entry i of the table: its name, total seconds and number of calls; 0 if i is out of range. */
int fm_profile_entry(int i, const char **name, double *seconds, long *calls);

/* ---------------------------------------------------------------- model directory */


/* A model directory holds config.json and model.safetensors; with an optimizer it also holds
 * training_state.safetensors (AdamW moments, step, schedule, RNG and data position).
 * Each file is written atomically (temporary file, fsync, rename). */
fm_status fm_model_save(const fm_model *model, const char *dir);
/* Loads config.json and model.safetensors: fm's own files and Hugging Face GPT-2 files
 * (a "transformer." prefix, F16/BF16 tensors and the attn.bias mask buffers are accepted). */
fm_status fm_model_load(fm_model **out, const char *dir);

/* An advisory lock on dir (DIR/.fm.lock, flock), held until fm_dir_unlock or the process ends;
 * holder (e.g. "fm pretrain") is recorded so that a second process's error names it. Fails
 * (FM_ERR_IO) when another process holds the lock. */
fm_status fm_dir_lock(const char *dir, const char *holder, int *fd);
void fm_dir_unlock(int fd);

/* A checkpoint (model, optimizer moments and settings, train state) saved as one unit: the
 * files are written whole into a new folder DIR/checkpoints/step-NNNNNNNN beside the current
 * one, re-read, and made current by one atomic switch of the link DIR/checkpoint; the previous
 * checkpoint is removed after that. DIR/config.json, DIR/model.safetensors and
 * DIR/training_state.safetensors are links through DIR/checkpoint, so DIR is also a plain model
 * directory. A kill or failure at any point leaves the previous checkpoint current and whole;
 * a failed save says so in its error. */
fm_status fm_checkpoint_save(const char *dir, const fm_model *model, const fm_optimizer *opt,
                             const fm_train_state *state);

/* What loading a checkpoint found. */
typedef struct {
    char used[1024];    /* the folder loaded (DIR itself for a flat directory from older fm) */
    int fell_back;      /* the current checkpoint was broken; an older complete one was loaded */
    char skipped[2048]; /* "FOLDER: why; ..." for each checkpoint passed over (newest first) */
} fm_checkpoint_report;

/* Loads model, optimizer (moments, step, hyper-parameters) and train state from dir's newest
 * complete checkpoint: the current one, else the newest older one that loads; report (may be
 * NULL) says which, and why any was passed over. A flat directory (all three files in DIR,
 * as fm wrote them before checkpoint folders) loads as it is. When none loads, the error is
 * the newest one's. */
fm_status fm_checkpoint_load_report(const char *dir, fm_model **model, fm_optimizer **opt,
                                    fm_train_state *state, fm_checkpoint_report *report);
fm_status fm_checkpoint_load(const char *dir, fm_model **model, fm_optimizer **opt,
                             fm_train_state *state);

/* ================================================================ chat template and fine-tuning data
 * (tokenizer/chat_template.c, train/sft_data.c; the formats and rules: docs/finetune-data.md) */

/* fm's pinned chat template: each message is "<|ROLE|>" + content + "<|endoftext|>", ROLE one of
 * system, user, assistant, in the order given; a prompt for generation ends with "<|assistant|>".
 * The same template serves fine-tuning, fm chat and a server. */
typedef struct {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* any text, used as it is */
} fm_chat_message;

/* The template as text: *text is malloc'd and NUL-terminated, *len (may be NULL) its length.
 * An unknown role: FM_ERR_FORMAT naming it; a NULL role or content: FM_ERR_ARG. */
fm_status fm_chat_render(const fm_chat_message *msgs, size_t n, int add_generation_prompt, char **text,
                         size_t *len);
/* FM_OK when tok has the four tokens the template needs (<|system|>, <|user|>, <|assistant|>,
 * <|endoftext|>); otherwise FM_ERR_MISMATCH naming the missing ones and --add-chat-tokens. */
fm_status fm_chat_check_tokenizer(const fm_tokenizer *tok);
/* The template as token ids, built piece by piece: each marker is its special id and each content
 * is encoded with special tokens off (text that spells "<|endoftext|>" stays text). *ids and
 * *loss_mask (n_ids each, malloc'd; loss_mask may be NULL): the mask is 1 on the tokens the
 * fine-tuning loss covers, each assistant message's content and the <|endoftext|> that closes it
 * (not its <|assistant|> marker), 0 elsewhere; loss_on_all: 1 everywhere. Errors as
 * fm_chat_check_tokenizer and fm_chat_render. For content without special-token text the ids
 * equal fm_tokenizer_encode of fm_chat_render's text with special tokens allowed. */
fm_status fm_chat_encode(const fm_tokenizer *tok, const fm_chat_message *msgs, size_t n, int add_generation_prompt,
                         int loss_on_all, int **ids, float **loss_mask, size_t *n_ids);
/* The template in Jinja (a static string), as tokenizer_config.json's "chat_template": renders
 * exactly as fm_chat_render for messages with string roles and contents and add_generation_prompt
 * (checked with @huggingface/jinja in tests/cli_chat_template_test.sh); an unknown role raises. */
const char *fm_chat_template_jinja(void);
/* Writes DIR/tokenizer_config.json (Hugging Face's keys: chat_template, bos/eos/pad/unk_token
 * "<|endoftext|>", added_tokens_decoder for every special token of tok, tokenizer_class
 * "GPT2Tokenizer", model_max_length when > 0) and DIR/generation_config.json (bos_token_id,
 * eos_token_id, pad_token_id: the <|endoftext|> id). Both are written whole before either
 * replaces what DIR held. The tokenizer must have the template's tokens. */
fm_status fm_chat_write_config(const fm_tokenizer *tok, const char *dir, int model_max_length);

/* Fine-tuning files (sft_data.c). Formats:
 *   FM_SFT_TEXT               plain text: the whole file's tokens (continued pre-training)
 *   FM_SFT_CHAT               JSONL {"messages": [{"role", "content"}, ...]}: the chat template
 *   FM_SFT_PROMPT_COMPLETION  JSONL {"prompt", "completion"}: prompt + completion + <|endoftext|>
 *   FM_SFT_TSV                "text TAB label" lines (classification)
 * An example is token ids with a per-token loss mask (1: the loss covers predicting this token),
 * or, for tsv, the text's ids and a label index. */
typedef enum { FM_SFT_TEXT = 0, FM_SFT_CHAT, FM_SFT_PROMPT_COMPLETION, FM_SFT_TSV } fm_sft_format;
/* "text", "chat", "prompt-completion", "tsv"; parse gives FM_ERR_ARG naming anything else. */
const char *fm_sft_format_name(fm_sft_format format);
fm_status fm_sft_format_parse(const char *name, fm_sft_format *out);
/* The format of a file from its first non-blank line: a JSON object with "messages": chat; with
 * "prompt" and "completion": prompt-completion; another JSON object: FM_ERR_FORMAT (give the
 * format); a line with a TAB: tsv; anything else (or an empty file): text. */
fm_status fm_sft_detect_format(const char *path, fm_sft_format *out);

typedef struct fm_sft_data fm_sft_data;
/* Reads and checks every line of path before keeping anything; the first bad line is
 * FM_ERR_FORMAT "PATH:LINE: what is wrong" (blank lines are skipped in every line format).
 * format: a name as fm_sft_format_parse takes, or NULL to detect. loss_on_all: the mask is 1 on
 * every token (chat and prompt-completion). labels (tsv, may be NULL): the label set, in index
 * order (a training set's fm_sft_data_labels, a model's id2label): a line with another label is
 * FM_ERR_MISMATCH naming file, line and label; without it the labels are the file's distinct
 * labels sorted by bytes (strcmp). The tokenizer is not kept; it must have <|endoftext|> for the
 * JSONL formats, and all of the chat template's tokens for chat. */
fm_status fm_sft_data_load(fm_sft_data **out, const char *path, const char *format, const fm_tokenizer *tok,
                           int loss_on_all, const char *const *labels, int n_labels);
void fm_sft_data_free(fm_sft_data *data);
fm_sft_format fm_sft_data_format(const fm_sft_data *data);
const char *fm_sft_data_path(const fm_sft_data *data);
/* Examples, in file order (text: one example, the whole file). */
size_t fm_sft_data_num_examples(const fm_sft_data *data);
size_t fm_sft_data_num_tokens(const fm_sft_data *data); /* over all examples */
/* UTF-8 bytes the tokens stand for (special tokens count their text): held-out bits per byte. */
uint64_t fm_sft_data_num_bytes(const fm_sft_data *data);
/* Example i < num_examples: *ids (*n_ids), *mask (*n_ids; NULL for text and tsv, which have no
 * mask), *label (tsv: an index into fm_sft_data_labels; -1 otherwise). Outputs may be NULL. */
void fm_sft_data_example(const fm_sft_data *data, size_t i, const int **ids, const float **mask, size_t *n_ids,
                         int *label);
/* The file line example i came from (text: 1). */
int fm_sft_data_line(const fm_sft_data *data, size_t i);
/* tsv: the label names by index (NULL and 0 for the other formats). */
int fm_sft_data_num_labels(const fm_sft_data *data);
const char *const *fm_sft_data_labels(const fm_sft_data *data);
/* The padding id (the tokenizer's <|endoftext|>, else 0). */
int fm_sft_data_pad_id(const fm_sft_data *data);
/* Examples cut to fit rows of seq positions: more than seq + 1 tokens (tsv: more than seq).
 * *no_loss (may be NULL) receives how many of them keep no masked target within the row. */
size_t fm_sft_data_truncated(const fm_sft_data *data, int seq, size_t *no_loss);
/* Splits a held-out part off one file: example i (0-based, file order) is held out when
 * i % every == every - 1 (every 2 to ..., e.g. 10 holds out a tenth); text: the last
 * floor(tokens / every) tokens are held out. Both parts are copies; either part empty:
 * FM_ERR_ARG. */
fm_status fm_sft_data_split(const fm_sft_data *all, int every, fm_sft_data **train, fm_sft_data **val);

/* Labeled sequences made in memory (images' token sequences, say), as tsv data: n examples of
 * len ids each (ids: n * len), labels[i] in [0, n_labels), label_names in index order (copied;
 * non-empty), pad_id the padding id (>= 0). name stands for the path in messages; bytes are not
 * counted (fm_sft_data_num_bytes is 0). FM_ERR_ARG naming the example for a label out of range. */
fm_status fm_sft_data_from_ids(fm_sft_data **out, const char *name, const int *ids, size_t n, int len,
                               const int *labels, const char *const *label_names, int n_labels, int pad_id);

/* The trainer's data source for fine-tuning (sft_data.c). Examples are padded, one per row, so no
 * example attends to another: row = the example's first seq tokens, targets its tokens shifted by
 * one, mask the loss mask of each target; after the example, padding (fm_sft_data_pad_id) with
 * mask 0; longer examples are cut (fm_sft_data_truncated counts them). Training rows follow a
 * permutation of the examples per epoch, drawn from (seed, epoch); *position counts the rows
 * consumed, so a resumed run (the trainer saves the position) draws exactly the same rows.
 * tsv rows: the text's first seq ids padded, targets the label index in every position and the
 * mask 1 only at the text's last token (where a classification head reads). text: rows are seq
 * tokens from offsets drawn uniformly from the trainer's rng (position += B * seq), as the shard
 * source's. eval_next walks val's examples in order (text: consecutive windows), at most
 * eval_rows rows per pass (0: all). val may be NULL; both must be of one format and outlive
 * the source. */
fm_status fm_sft_source_init(fm_data_source *out, const fm_sft_data *train, const fm_sft_data *val, int seq,
                             uint64_t seed, size_t eval_rows);
void fm_sft_source_free(fm_data_source *source);

/* ================================================================ classification heads
 * (model/classifier.c, train/classify.c; docs/finetune.md)
 *
 * Hugging Face's GPT2ForSequenceClassification: a head "score.weight" (K, C), no bias, on the final
 * hidden states (after ln_f), read at each sequence's last token that is not the padding id (the
 * rightmost; nothing is appended to the text). Saved as transformers saves that class: config.json
 * with architectures ["GPT2ForSequenceClassification"], num_labels, id2label, label2id and
 * pad_token_id; model.safetensors with the transformer's tensors under a "transformer." prefix
 * and "score.weight". fm_model_load reads such a directory (fm's or transformers'); fm_model_save
 * and checkpoints write one. A head of one output is a score (the reward model).
 *
 * fm's own second read-out, the mean: the head applied to the mean of the final hidden states
 * over positions 0..t, t the read position above (FM_POOL_MEAN). config.json says so with
 * "classifier_pooling": "mean" (written only for it; absent: "last"); transformers knows no such
 * key and would read such a head at the last token. */

/* How the head reads a row: FM_POOL_LAST the final hidden state at the read position t
 * (transformers' rule), FM_POOL_MEAN the mean of the final hidden states at positions 0..t. */
typedef enum { FM_POOL_LAST = 0, FM_POOL_MEAN = 1 } fm_classifier_pooling;

/* "last" or "mean" (config.json's "classifier_pooling", fm finetune --pool); NULL for another
 * value. fm_classifier_pooling_parse returns FM_ERR_ARG for any other name (NULL included). */
const char *fm_classifier_pooling_name(fm_classifier_pooling pooling);
fm_status fm_classifier_pooling_parse(const char *name, fm_classifier_pooling *out);

/* Attaches a trainable head "score.weight" (num_labels, C), N(0, 0.02) drawn from seed (as
 * transformers initialises it), with its labels: labels[i] names output i (copied; NULL:
 * "LABEL_0", "LABEL_1", ...; fine-tuning passes fm_sft_data_labels, sorted by bytes), non-empty,
 * distinct, at most 1024 bytes each; 1 <= num_labels <= 65536. pad_id: the padding id (the
 * tokenizer's <|endoftext|>), -1 for none (then every row is read at its last position). A model
 * that already has a "score.weight" is refused (FM_ERR_ARG). */
fm_status fm_model_add_classifier(fm_model *model, int num_labels, const char *const *labels, int pad_id,
                                  uint64_t seed);
/* fm_model_add_classifier with the head's read-out: FM_POOL_LAST (what fm_model_add_classifier
 * attaches) or FM_POOL_MEAN; another value: FM_ERR_ARG, nothing attached. */
fm_status fm_model_add_classifier_pooled(fm_model *model, int num_labels, const char *const *labels, int pad_id,
                                         fm_classifier_pooling pooling, uint64_t seed);
/* K, the head's outputs; 0 when the model has no classification head. */
int fm_model_num_labels(const fm_model *model);
/* Label i's name, NULL when i is out of range or there is no head. */
const char *fm_model_label(const fm_model *model, int i);
/* The index of a label name, -1 when the head has no such label. */
int fm_model_label_index(const fm_model *model, const char *label);
/* The head's padding id (config.json's pad_token_id), -1 when none or without a head. */
int fm_model_pad_id(const fm_model *model);
/* The head's read-out (config.json's classifier_pooling); FM_POOL_LAST without a head. */
fm_classifier_pooling fm_model_classifier_pooling(const fm_model *model);

/* Where a row (T tokens) is read: the rightmost position whose token is not pad_id (transformers'
 * rule); 0 when every token is pad_id; T - 1 when pad_id < 0. */
int fm_classify_last_index(const int *tokens, int T, int pad_id);
/* Forward over tokens (B, T) (right-padded with the model's padding id) and the head: logits
 * (B, K) = hidden[b, last_b] @ score.weight^T, last_b = fm_classify_last_index(row b); with a
 * mean head (FM_POOL_MEAN) logits (B, K) = (sum over t = 0..last_b of hidden[b, t]) / (last_b + 1)
 * @ score.weight^T. last (B, may be NULL) receives last_b either way. Uses the training forward's
 * buffers (sized per (B, T)). Without a head: FM_ERR_ARG. */
fm_status fm_model_classify(fm_model *model, const int *tokens, int B, int T, float *logits, int *last);

/* Cross-entropy of the head on the batch (uses_hidden): row r is read at its last position t
 * whose mask is > 0 (mask NULL: t = T - 1), its label is targets[r * T + t] (in [0, K); else
 * FM_ERR_ARG naming the row), and mask[r * T + t] weighs it; rows with no mask > 0 are skipped.
 * This is the layout fm_sft_source_init gives tsv data (each text's first seq ids, the label in
 * every target, the mask 1 at the text's last token; longer texts keep their beginning). weight:
 * the rows' weights (the number of rows); loss_sum: sum of weight * (logsumexp(z) - z_label),
 * z = hidden @ score.weight^T; dhidden: zero except at the rows' read positions; the head's
 * gradient (when it is trainable) is added to score.weight's grad. A mean head (FM_POOL_MEAN)
 * reads the mean of the hidden states at positions 0..t of row r instead (z = mean @
 * score.weight^T), and dhidden is (g @ score.weight) / (t + 1) at each of those positions (g the
 * logits' gradient), zero after them. A model without a head, or with one output (a score, not
 * classes): FM_ERR_ARG. */
fm_status fm_objective_classify(fm_objective *out, const fm_model *model);

/* ================================================================ OpenAI-compatible server
 * (serve/server.c, serve/api.c, serve/scheduler.c; endpoints, fields, batching, limits:
 * docs/serve.md)
 *
 * An HTTP server (libmicrohttpd) speaking OpenAI's completions and chat completions API over a
 * model, its tokenizer and any LoRA adapters, with continuous batching: one scheduler thread owns
 * a session of `parallel` sequences per model id (the base, each adapter); requests wait in a
 * bounded queue, take free sequence slots between decoding steps (their prompts fed then), and
 * leave when they finish; each step decodes all of a session's running sequences together. A
 * request's result depends on it alone (its seed), not on what runs beside it. */
typedef struct {
    fm_model *model;            /* required; only read while serving (sessions are made from it) */
    const fm_tokenizer *tok;    /* required: the model's tokenizer */
    const char *model_id;       /* the id clients name the base by (required) */
    const char *const *adapter_ids;   /* n_adapters ids, and the adapters (loaded for model) that */
    const fm_adapter *const *adapters; /* a request's "model" chooses by them */
    int n_adapters;
    const char *host;           /* the address to listen on ("127.0.0.1"; a name is resolved) */
    int port;                   /* 0: a free one (fm_server_port says which) */
    int parallel;               /* sequences decoded together per model id (4) */
    int max_queue;              /* requests waiting for a slot; one more is refused with 503 (64) */
    const char *api_key;        /* NULL: none; else every route but /health needs "Authorization:
                                   Bearer KEY" (401) */
    size_t max_body;            /* request bodies up to this many bytes; larger: 413 (1 MiB) */
    double timeout;             /* seconds a request may take; then it ends with 504 (600) */
    int threads;                /* the scheduler's threads for the products (0: all cores) */
    void (*log)(void *user, const char *line); /* one line per request (method, path, status,
                                                  seconds); NULL: none */
    void *log_user;
} fm_server_config;
/* The defaults above; model, tok and model_id must still be set. */
void fm_server_config_default(fm_server_config *cfg);

typedef struct fm_server fm_server;
/* Makes the sessions (fm_model_use_adapter is left at none), binds, and serves from threads of
 * its own; returns once it listens. The model, tokenizer, adapters and the config's strings must
 * outlive the server. Fails (FM_ERR_IO naming the address) when it cannot listen. */
fm_status fm_server_start(fm_server **out, const fm_server_config *cfg);
/* The port it listens on (the one chosen when cfg.port was 0). */
int fm_server_port(const fm_server *srv);
/* Stops taking connections, lets every request in progress finish (up to cfg.timeout), stops
 * the threads and frees the server. */
void fm_server_stop(fm_server *srv);

/* ================================================================ GGUF export
 * (io/gguf.c, io/gguf_export.c; the keys, names and layouts: docs/file-formats.md)
 *
 * A model and its tokenizer as one GGUF version 3 file that llama.cpp loads as its "gpt2"
 * architecture: the hyper-parameters, the byte-level BPE tokenizer (tokenizer.ggml.*), the chat
 * template, and the weights (the matrices in one type, the 1-D tensors float32). */

/* The matrices' type; the values are ggml's type numbers. Q8_0: blocks of 32 int8 weights with
 * one float16 scale (max|w| / 127); a matrix whose rows are not whole blocks is stored F16. */
typedef enum { FM_GGUF_F32 = 0, FM_GGUF_F16 = 1, FM_GGUF_Q8_0 = 8 } fm_gguf_type;
/* "f32", "f16", "q8_0"; parse returns FM_ERR_ARG for any other name. */
const char *fm_gguf_type_name(fm_gguf_type type);
fm_status fm_gguf_type_parse(const char *name, fm_gguf_type *out);

typedef struct {
    fm_gguf_type type;         /* the matrices' type */
    const char *name;          /* general.name; NULL or "": "fm" */
    const char *chat_template; /* tokenizer.chat_template (Jinja), or NULL for none */
} fm_gguf_options;

/* What an export wrote. */
typedef struct {
    int n_tensors;  /* tensors in the file */
    int n_typed;    /* matrices stored in the requested type */
    int n_fallback; /* q8_0 matrices stored f16 instead (rows not whole blocks of 32) */
    size_t bytes;   /* the file's size */
} fm_gguf_report;

/* Writes model and tok (whose vocabulary must be the model's) to path atomically (temporary file,
 * fsync, rename; on failure nothing is left there). A model with attached tensors (a
 * classification head, adapters) is refused (FM_ERR_ARG). report may be NULL. Messages name
 * path. */
fm_status fm_gguf_export(const fm_model *model, const fm_tokenizer *tok, const fm_gguf_options *opt,
                         const char *path, fm_gguf_report *report);
/* The chat template of DIR/tokenizer_config.json ("chat_template": a string, or transformers'
 * list of named templates, of which "default"); *out (fm_free / free it) is NULL when the file or
 * the key is absent. A file that is not JSON, or a template of another kind: FM_ERR_FORMAT naming
 * the file. */
fm_status fm_gguf_chat_template(const char *dir, char **out);

#ifdef __cplusplus
}
#endif
#endif /* FM_H */
