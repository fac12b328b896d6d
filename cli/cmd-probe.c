/*
 * cmd-probe.c — `fm probe`: linear-probe accuracy of a model's frozen image features beside raw
 * pixels and a randomly initialised model of the same shape, with 10, 100 or all labels per class.
 *
 * What it is for: parsing the flags, reading the IDX pairs, encoding the images with the model
 * directory's image tokenizer, computing each feature set (a layer's hidden states averaged over
 * the image's positions, or of each position's state normalised first with --pool normed:
 * fm_session_pooled_states_normed; the pixels), drawing the same labeled subsets
 * for every feature set, running the probe (fm_probe_run: the layer and strength chosen on
 * training labels only) and printing a table or one JSON object, with the paired differences.
 * What it is not for: the regression or the choices themselves (src/eval/probe.c, logreg.c).
 *
 * With N labels per class, each of --draws draws takes N training images of each class (seeded
 * from --seed, N and the draw; the same rows for every feature set) and chooses by 5-fold
 * cross-validation inside them; with all labels there is one result, chosen on 1 training image
 * in 10 held out, then refit on all. The test images are only ever scored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMD "probe"

extern const cli_command cmd_probe;
#define MAX_SETTINGS 8
#define MAX_DRAWS 100

enum { SET_PRETRAINED, SET_PIXELS, SET_RANDOM, N_SETS };
static const char *const set_names[N_SETS] = {"pretrained", "pixels", "random"};

/* How a layer's states become C numbers: their mean over the positions, or the mean of each
 * position's state normalised over its C numbers first (Image GPT's features). */
enum { POOL_MEAN, POOL_NORMED, N_POOLS };
static const char *const pool_names[N_POOLS] = {"mean", "normed"};

typedef struct {
    double acc[MAX_DRAWS], lambda[MAX_DRAWS];
    int layer[MAX_DRAWS], pool[MAX_DRAWS], converged[MAX_DRAWS];
    int n;
} setting_result;

static uint64_t mix(uint64_t x) { /* splitmix64's finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0.0, q = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : 0.0;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

/* The paired comparison of two feature sets over the same draws: *mean the mean of a's accuracy
 * minus b's, *se its standard error (0 with one draw); returns the number of draws. */
static int paired_difference(const setting_result *a, const setting_result *b, double *mean, double *se) {
    double diff[MAX_DRAWS], sd;
    for (int j = 0; j < a->n; j++) diff[j] = a->acc[j] - b->acc[j];
    mean_sd(diff, a->n, mean, &sd);
    *se = a->n > 1 ? sd / sqrt(a->n) : 0.0;
    return a->n;
}

/* --per-class: comma-separated positive counts or "all" (0), each once. */
static int parse_per_class(const char *text, int *out) {
    int n = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int v;
        if (len == 3 && !strncmp(p, "all", 3)) v = 0;
        else {
            char buf[16], *stop;
            if (len == 0 || len >= sizeof buf) cli_usage_error(CMD, "--per-class '%s': give counts or 'all', e.g. 10,100,all", text);
            memcpy(buf, p, len), buf[len] = 0;
            long l = strtol(buf, &stop, 10);
            if (*stop || l < 1 || l > 1000000)
                cli_usage_error(CMD, "--per-class '%s': '%s' is not a count of labels per class (1 to 1000000) or 'all'",
                                text, buf);
            v = (int)l;
        }
        for (int i = 0; i < n; i++)
            if (out[i] == v) cli_usage_error(CMD, "--per-class '%s': %.*s appears twice", text, (int)len, p);
        if (n == MAX_SETTINGS) cli_usage_error(CMD, "--per-class '%s': at most %d settings", text, MAX_SETTINGS);
        out[n++] = v;
        if (!end) break;
        p = end + 1;
        if (!*p) cli_usage_error(CMD, "--per-class '%s' ends with a comma", text);
    }
    if (n == 0) cli_usage_error(CMD, "--per-class is empty; give counts or 'all', e.g. 10,100,all");
    return n;
}

/* --features: a comma-separated subset of pretrained, pixels, random. */
static void parse_features(const char *text, int *on) {
    for (int s = 0; s < N_SETS; s++) on[s] = 0;
    char *copy = cli_strdup(CMD, text), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int s = 0; s < N_SETS; s++)
            if (!strcmp(t, set_names[s])) on[s] = found = 1;
        if (!found) cli_usage_error(CMD, "--features: unknown feature set '%s' (pretrained, pixels, random)", t);
    }
    free(copy);
    if (!on[0] && !on[1] && !on[2]) cli_usage_error(CMD, "--features is empty (pretrained, pixels, random)");
}

/* The candidate features of model over the images' token sequences ids (n, T): (n, n_cand, C),
 * candidate j = pool pools[j / n_layers] of layer layers[j % n_layers] (pools and layers from
 * fm_session_pooled_states_normed), for the rows with need[i] set (NULL: all; the others stay
 * zero), in batches of `batch` images. */
static float *model_features(fm_model *model, const int *ids, int n, int T, int batch, const unsigned char *need,
                             const int *pools, int n_pools, const int *layers, int n_layers) {
    const fm_config *c = fm_model_config(model);
    int C = c->n_embd, n_cand = n_pools * n_layers;
    size_t per = (size_t)(c->n_layer + 1) * C, per_out = (size_t)n_cand * C;
    int want[N_POOLS] = {0};
    for (int p = 0; p < n_pools; p++) want[pools[p]] = 1;
    float *out = cli_alloc(CMD, (size_t)n, per_out * sizeof(float));
    memset(out, 0, (size_t)n * per_out * sizeof(float));
    int *batch_ids = cli_alloc(CMD, (size_t)batch * T, sizeof(int)), *which = cli_alloc(CMD, (size_t)batch, sizeof(int));
    float *pooled[N_POOLS];
    for (int p = 0; p < N_POOLS; p++) pooled[p] = want[p] ? cli_alloc(CMD, (size_t)batch, per * sizeof(float)) : NULL;
    fm_session *s;
    fm_status st = fm_session_init(&s, model, 1, T);
    if (st) cli_fail(CMD, st);
    for (int i = 0; i < n;) {
        int b = 0;
        for (; i < n && b < batch; i++) {
            if (need && !need[i]) continue;
            memcpy(batch_ids + (size_t)b * T, ids + (size_t)i * T, sizeof(int) * (size_t)T);
            which[b++] = i;
        }
        if (!b) break;
        if ((st = fm_session_pooled_states_normed(s, batch_ids, b, T, pooled[POOL_MEAN], pooled[POOL_NORMED])))
            cli_fail(CMD, st);
        for (int j = 0; j < b; j++)
            for (int q = 0; q < n_cand; q++)
                memcpy(out + (size_t)which[j] * per_out + (size_t)q * C,
                       pooled[pools[q / n_layers]] + (size_t)j * per + (size_t)layers[q % n_layers] * C,
                       sizeof(float) * (size_t)C);
    }
    fm_session_free(s);
    free(batch_ids), free(which);
    for (int p = 0; p < N_POOLS; p++) free(pooled[p]);
    return out;
}

/* The labels of an IDX label file as ints, each below k (else an error naming the file). */
static int *labels_of(const fm_idx *idx, const char *path, int k) {
    int *y = cli_alloc(CMD, (size_t)idx->count, sizeof(int));
    for (int i = 0; i < idx->count; i++) {
        y[i] = idx->data[i];
        if (y[i] >= k) {
            fprintf(stderr, "fm " CMD ": %s: label %d of item %d is not among the training labels 0 to %d\n", path, y[i],
                    i, k - 1);
            exit(1);
        }
    }
    return y;
}

static void print_setting_name(int per_class, char *buf, size_t size) {
    if (per_class) snprintf(buf, size, "%d", per_class);
    else snprintf(buf, size, "all");
}

static int run(int argc, char **argv) {
    const char *dir = NULL, *train_images = NULL, *train_labels = NULL, *test_images = NULL, *test_labels = NULL;
    const char *per_class_text = "10,100,all", *layer_text = "auto", *features_text = "pretrained,pixels,random";
    const char *pool_text = "mean";
    int draws = 5, json = 0, threads = 0, batch = 64, max_iter = 1000;
    uint64_t seed = 1;
    cli_option opts[] = {
        {"model", OPT_STRING, &dir, 0, 0, "model directory with its image tokenizer (required unless --features pixels)"},
        {"train-images", OPT_STRING, &train_images, 0, 0, "IDX images the probe learns from (required)"},
        {"train-labels", OPT_STRING, &train_labels, 0, 0, "IDX labels of the training images (required)"},
        {"test-images", OPT_STRING, &test_images, 0, 0, "IDX images it is scored on (required)"},
        {"test-labels", OPT_STRING, &test_labels, 0, 0, "IDX labels of the test images (required)"},
        {"per-class", OPT_STRING, &per_class_text, 0, 0, "labels per class: counts and/or 'all' (default 10,100,all)"},
        {"draws", OPT_INT, &draws, 1, MAX_DRAWS, "random subsets per count of labels (default 5)"},
        {"layer", OPT_STRING, &layer_text, 0, 0, "hidden states of layer L (0: embeddings .. n_layer: final) or 'auto' (default)"},
        {"pool", OPT_STRING, &pool_text, 0, 0, "positions' states averaged as they are (mean, default), normalised first (normed), or both as candidates (auto)"},
        {"features", OPT_STRING, &features_text, 0, 0, "feature sets: pretrained,pixels,random (default all three)"},
        {"seed", OPT_U64, &seed, 0, 1.8e19, "draws, folds and the random model's weights (default 1)"},
        {"json", OPT_FLAG, &json, 0, 0, "one JSON object on stdout instead of the table"},
        {"batch", OPT_INT, &batch, 1, 4096, "images per forward (default 64)"},
        {"max-iter", OPT_INT, &max_iter, 1, 100000, "L-BFGS iterations per fit at most (default 1000)"},
        {"threads", OPT_INT, &threads, 0, 1024, "threads (default: all cores)"},
    };
    char *positional[1];
    cli_parse(&cmd_probe, argc, argv, opts, sizeof opts / sizeof opts[0], positional, 0);
    if (!train_images || !train_labels || !test_images || !test_labels)
        cli_usage_error(CMD, "--train-images, --train-labels, --test-images and --test-labels are required");
    int per_class[MAX_SETTINGS], n_settings = parse_per_class(per_class_text, per_class);
    int use[N_SETS];
    parse_features(features_text, use);
    if (!dir && (use[SET_PRETRAINED] || use[SET_RANDOM])) cli_usage_error(CMD, "--model DIR is required");
    int layer = -1;
    if (strcmp(layer_text, "auto")) {
        char *stop;
        long l = strtol(layer_text, &stop, 10);
        if (!*layer_text || *stop || l < 0 || l > 100000)
            cli_usage_error(CMD, "--layer '%s': give a layer number (0 to the model's n_layer) or 'auto'", layer_text);
        layer = (int)l;
    }
    int pools[N_POOLS], n_pools = 0;
    if (!strcmp(pool_text, "auto")) pools[n_pools++] = POOL_MEAN, pools[n_pools++] = POOL_NORMED;
    for (int p = 0; p < N_POOLS && !n_pools; p++)
        if (!strcmp(pool_text, pool_names[p])) pools[n_pools++] = p;
    if (!n_pools) cli_usage_error(CMD, "--pool '%s': give mean, normed or auto", pool_text);
    fm_set_threads(threads);

    fm_idx tr_img, tr_lab, te_img, te_lab;
    fm_status st = fm_idx_load_pair(train_images, train_labels, &tr_img, &tr_lab);
    if (st) cli_fail(CMD, st);
    if ((st = fm_idx_load_pair(test_images, test_labels, &te_img, &te_lab))) cli_fail(CMD, st);
    if (tr_img.rows != te_img.rows || tr_img.cols != te_img.cols) {
        fprintf(stderr, "fm " CMD ": %s holds %dx%d images but %s holds %dx%d\n", train_images, tr_img.rows, tr_img.cols,
                test_images, te_img.rows, te_img.cols);
        return 1;
    }
    int k = 0;
    for (int i = 0; i < tr_lab.count; i++)
        if (tr_lab.data[i] + 1 > k) k = tr_lab.data[i] + 1;
    if (k < 2) {
        fprintf(stderr, "fm " CMD ": %s: every label is %d; a probe needs at least two classes\n", train_labels, k - 1);
        return 1;
    }
    int *ytr = labels_of(&tr_lab, train_labels, k), *yte = labels_of(&te_lab, test_labels, k);
    int ntr = tr_img.count, nte = te_img.count, npix = tr_img.rows * tr_img.cols;

    fm_model *model = NULL, *random = NULL;
    fm_image_tokenizer *itok = NULL;
    int L = 0, T = 0;
    if (use[SET_PRETRAINED] || use[SET_RANDOM]) {
        cli_load_model(CMD, dir, &model, NULL, 0);
        if ((st = fm_image_tokenizer_load(dir, &itok))) cli_fail(CMD, st);
        if (fm_image_tokenizer_rows(itok) != tr_img.rows || fm_image_tokenizer_cols(itok) != tr_img.cols) {
            fprintf(stderr, "fm " CMD ": %s's image tokenizer encodes %dx%d images but %s holds %dx%d\n", dir,
                    fm_image_tokenizer_rows(itok), fm_image_tokenizer_cols(itok), train_images, tr_img.rows,
                    tr_img.cols);
            return 1;
        }
        const fm_config *c = fm_model_config(model);
        L = c->n_layer;
        T = fm_image_tokenizer_sequence_length(itok);
        if (T > c->n_positions) {
            fprintf(stderr, "fm " CMD ": %s: an image is %d tokens but the model's context is %d\n", dir, T, c->n_positions);
            return 1;
        }
        if (layer > L) cli_usage_error(CMD, "--layer %d: %s has layers 0 (embeddings) to %d (final)", layer, dir, L);
        if (use[SET_RANDOM] && (st = fm_model_init(&random, c, mix(seed ^ 0x72616e646f6dULL)))) cli_fail(CMD, st);
    } else if (layer > 0) {
        cli_usage_error(CMD, "--layer %d: pixels have no layers", layer);
    }
    /* the models' candidates: every pool of --pool for --layer, or for every layer */
    int *layers = cli_alloc(CMD, (size_t)L + 1, sizeof(int)), n_layers = 0;
    for (int l = 0; l <= L; l++)
        if (layer < 0 || l == layer) layers[n_layers++] = l;

    /* the labeled rows of every draw, drawn first: the same rows for every feature set, and the
     * models' features computed only for the training rows some probe uses */
    int *draw_rows[MAX_SETTINGS][MAX_DRAWS] = {{0}};
    uint64_t draw_seed[MAX_SETTINGS][MAX_DRAWS];
    unsigned char *need = cli_alloc(CMD, (size_t)ntr, 1);
    int need_all = 0;
    memset(need, 0, (size_t)ntr);
    for (int p = 0; p < n_settings; p++) {
        int n_draws = per_class[p] ? draws : 1;
        for (int j = 0; j < n_draws; j++) {
            draw_seed[p][j] = fm_probe_draw_seed(seed, per_class[p], j);
            if (!per_class[p]) {
                need_all = 1;
                continue;
            }
            draw_rows[p][j] = cli_alloc(CMD, (size_t)per_class[p] * k, sizeof(int));
            if ((st = fm_probe_draw(ytr, ntr, k, per_class[p], draw_seed[p][j], draw_rows[p][j]))) {
                fprintf(stderr, "fm " CMD ": %s: %s\n", train_labels, fm_last_error());
                return 1;
            }
            for (int i = 0; i < per_class[p] * k; i++) need[draw_rows[p][j][i]] = 1;
        }
    }

    /* the features: (n, candidates, d) per set */
    float *ftr[N_SETS] = {0}, *fte[N_SETS] = {0};
    int cand[N_SETS] = {0}, dim[N_SETS] = {0};
    double t0 = cli_now();
    if (use[SET_PIXELS]) {
        ftr[SET_PIXELS] = cli_alloc(CMD, (size_t)ntr * npix, sizeof(float));
        fte[SET_PIXELS] = cli_alloc(CMD, (size_t)nte * npix, sizeof(float));
        for (size_t i = 0; i < (size_t)ntr * npix; i++) ftr[SET_PIXELS][i] = tr_img.data[i];
        for (size_t i = 0; i < (size_t)nte * npix; i++) fte[SET_PIXELS][i] = te_img.data[i];
        cand[SET_PIXELS] = 1, dim[SET_PIXELS] = npix;
    }
    if (model) {
        int *ids_tr = cli_alloc(CMD, (size_t)ntr * T, sizeof(int)), *ids_te = cli_alloc(CMD, (size_t)nte * T, sizeof(int));
        for (int i = 0; i < ntr; i++)
            if ((st = fm_image_tokenizer_encode(itok, tr_img.data + (size_t)i * npix, ids_tr + (size_t)i * T)))
                cli_fail(CMD, st);
        for (int i = 0; i < nte; i++)
            if ((st = fm_image_tokenizer_encode(itok, te_img.data + (size_t)i * npix, ids_te + (size_t)i * T)))
                cli_fail(CMD, st);
        fm_model *models[N_SETS] = {[SET_PRETRAINED] = use[SET_PRETRAINED] ? model : NULL, [SET_RANDOM] = random};
        for (int s = 0; s < N_SETS; s++) {
            if (!models[s]) continue;
            ftr[s] = model_features(models[s], ids_tr, ntr, T, batch, need_all ? NULL : need, pools, n_pools, layers,
                                    n_layers);
            fte[s] = model_features(models[s], ids_te, nte, T, batch, NULL, pools, n_pools, layers, n_layers);
            cand[s] = n_pools * n_layers, dim[s] = fm_model_config(models[s])->n_embd;
        }
        free(ids_tr), free(ids_te);
    }
    int n_need = 0;
    for (int i = 0; i < ntr; i++) n_need += need_all || need[i];
    fprintf(stderr, "fm " CMD ": features of %d training and %d test images in %.1f s\n", n_need, nte, cli_now() - t0);

    /* the probes: the same rows for every feature set */
    static setting_result res[N_SETS][MAX_SETTINGS];
    for (int p = 0; p < n_settings; p++) {
        int n_draws = per_class[p] ? draws : 1, n_rows = per_class[p] ? per_class[p] * k : ntr;
        for (int j = 0; j < n_draws; j++) {
            const int *rows = draw_rows[p][j];
            for (int s = 0; s < N_SETS; s++) {
                if (!ftr[s]) continue;
                fm_probe_features tr = {ftr[s], ntr, cand[s], dim[s]}, te = {fte[s], nte, cand[s], dim[s]};
                fm_probe_config cfg;
                fm_probe_config_default(&cfg);
                cfg.layer = s == SET_PIXELS ? 0 : -1; /* the models: among the candidates */
                cfg.seed = draw_seed[p][j];
                cfg.max_iter = max_iter;
                fm_probe_result r;
                double t1 = cli_now();
                if ((st = fm_probe_run(&tr, ytr, rows, n_rows, per_class[p] != 0, &te, yte, k, &cfg, &r)))
                    cli_fail(CMD, st);
                setting_result *sr = &res[s][p];
                sr->acc[sr->n] = r.accuracy, sr->lambda[sr->n] = r.lambda;
                sr->layer[sr->n] = s == SET_PIXELS ? 0 : layers[r.layer % n_layers];
                sr->pool[sr->n] = s == SET_PIXELS ? POOL_MEAN : pools[r.layer / n_layers];
                sr->converged[sr->n] = r.converged;
                char name[16];
                print_setting_name(per_class[p], name, sizeof name);
                fprintf(stderr, "fm " CMD ": %-10s %4s labels/class, draw %d: test accuracy %.4f (layer %d %s, lambda %g, "
                        "chosen at %.4f) in %.1f s%s\n", set_names[s], name, j + 1, r.accuracy, sr->layer[sr->n],
                        pool_names[sr->pool[sr->n]], r.lambda, r.select_accuracy, cli_now() - t1,
                        r.converged ? "" : " (fit not converged)");
                sr->n++;
            }
        }
    }
    for (int p = 0; p < n_settings; p++)
        for (int j = 0; j < MAX_DRAWS; j++) free(draw_rows[p][j]);
    free(need);

    /* the reported layer and pool: the pre-trained (else random) model's with all labels, else
     * the most frequent among its draws of the last setting (ties: the first candidate); -1 (null)
     * for pixels alone */
    int report_layer = -1, report_pool = POOL_MEAN;
    int ms = use[SET_PRETRAINED] ? SET_PRETRAINED : use[SET_RANDOM] ? SET_RANDOM : -1;
    if (ms >= 0) {
        int at = n_settings - 1;
        for (int p = 0; p < n_settings; p++)
            if (!per_class[p]) at = p;
        const setting_result *sr = &res[ms][at];
        int best = 0, best_count = 0;
        for (int j = 0; j < sr->n; j++) {
            int count = 0;
            for (int i = 0; i < sr->n; i++) count += sr->layer[i] == sr->layer[j] && sr->pool[i] == sr->pool[j];
            if (count > best_count) best = j, best_count = count;
        }
        report_layer = sr->layer[best], report_pool = sr->pool[best];
    }
    /* paired comparisons of the pre-trained features with each baseline */
    int pairs[2][2] = {{SET_PRETRAINED, SET_PIXELS}, {SET_PRETRAINED, SET_RANDOM}};
    if (json) {
        printf("{\"layer\": ");
        if (ms < 0) printf("null, \"pool\": null");
        else printf("%d, \"pool\": \"%s\"", report_layer, pool_names[report_pool]);
        printf(", \"classes\": %d, \"train\": %d, \"test\": %d, \"results\": {", k, ntr, nte);
        const char *sep = "";
        for (int s = 0; s < N_SETS; s++) {
            if (!use[s]) continue;
            printf("%s\"%s\": {", sep, set_names[s]);
            sep = ", ";
            for (int p = 0; p < n_settings; p++) {
                char name[16];
                print_setting_name(per_class[p], name, sizeof name);
                setting_result *sr = &res[s][p];
                double mean, sd;
                mean_sd(sr->acc, sr->n, &mean, &sd);
                printf("%s\"%s\": {\"mean\": ", p ? ", " : "", name);
                cli_print_json_number("%.6f", mean);
                printf(", \"sd\": ");
                cli_print_json_number("%.6f", sd);
                printf(", \"draws\": [");
                for (int j = 0; j < sr->n; j++) printf("%s%.6f", j ? ", " : "", sr->acc[j]);
                printf("], \"layers\": [");
                for (int j = 0; j < sr->n; j++) printf("%s%d", j ? ", " : "", sr->layer[j]);
                printf("], \"pools\": [");
                for (int j = 0; j < sr->n; j++) printf("%s\"%s\"", j ? ", " : "", pool_names[sr->pool[j]]);
                printf("], \"strengths\": [");
                for (int j = 0; j < sr->n; j++) printf("%s%g", j ? ", " : "", sr->lambda[j]);
                printf("]}");
            }
            printf("}");
        }
        printf("}, \"comparisons\": {");
        sep = "";
        for (int c = 0; c < 2; c++) {
            int a = pairs[c][0], b = pairs[c][1];
            if (!use[a] || !use[b]) continue;
            printf("%s\"%s-%s\": {", sep, set_names[a], set_names[b]);
            sep = ", ";
            for (int p = 0; p < n_settings; p++) {
                char name[16];
                print_setting_name(per_class[p], name, sizeof name);
                double mean, se;
                int n = paired_difference(&res[a][p], &res[b][p], &mean, &se);
                printf("%s\"%s\": {\"mean_diff\": ", p ? ", " : "", name);
                cli_print_json_number("%.6f", mean);
                printf(", \"se\": ");
                cli_print_json_number("%.6f", se);
                printf(", \"beats\": %s}", n > 1 && mean > 2 * se ? "true" : "false");
            }
            printf("}");
        }
        printf("}}\n");
    } else {
        printf("linear probe: %d classes, %d training and %d test images; test accuracy, mean and sd over the draws\n", k,
               ntr, nte);
        printf("%-11s %-7s %-8s %-8s %-6s %-16s %s\n", "features", "labels", "mean", "sd", "draws", "layers", "strengths");
        for (int s = 0; s < N_SETS; s++) {
            if (!use[s]) continue;
            for (int p = 0; p < n_settings; p++) {
                char name[16], chosen[96] = "", strengths[96] = "";
                print_setting_name(per_class[p], name, sizeof name);
                setting_result *sr = &res[s][p];
                double mean, sd;
                mean_sd(sr->acc, sr->n, &mean, &sd);
                size_t a = 0, b = 0;
                for (int j = 0; j < sr->n; j++) {
                    if (a < sizeof chosen)
                        a += (size_t)snprintf(chosen + a, sizeof chosen - a, "%s%d%s", j ? "," : "", sr->layer[j],
                                              sr->pool[j] == POOL_NORMED ? "n" : "");
                    if (b < sizeof strengths)
                        b += (size_t)snprintf(strengths + b, sizeof strengths - b, "%s%g", j ? "," : "", sr->lambda[j]);
                }
                printf("%-11s %-7s %-8.4f %-8.4f %-6d %-16s %s\n", set_names[s], name, mean, sd, sr->n,
                       s == SET_PIXELS ? "-" : chosen, strengths);
            }
        }
        for (int c = 0; c < 2; c++) {
            int a = pairs[c][0], b = pairs[c][1];
            if (!use[a] || !use[b]) continue;
            for (int p = 0; p < n_settings; p++) {
                char name[16];
                print_setting_name(per_class[p], name, sizeof name);
                double mean, se;
                int n = paired_difference(&res[a][p], &res[b][p], &mean, &se);
                printf("%s - %s, %s labels/class: paired mean difference %+.4f", set_names[a], set_names[b], name, mean);
                if (n > 1) printf(", standard error %.4f: %s\n", se, mean > 2 * se ? "beats (> 2 SE)" : "does not beat (<= 2 SE)");
                else printf(" (one result, no standard error)\n");
            }
        }
        if (ms >= 0)
            printf("layer: %d (0: embeddings, %d: final hidden states), pool: %s (layers marked n: each position's "
                   "state normalised before the mean)\n", report_layer, L, pool_names[report_pool]);
    }
    for (int s = 0; s < N_SETS; s++) free(ftr[s]), free(fte[s]);
    free(ytr), free(yte), free(layers);
    fm_idx_free(&tr_img), fm_idx_free(&tr_lab), fm_idx_free(&te_img), fm_idx_free(&te_lab);
    fm_image_tokenizer_free(itok);
    fm_model_free(random);
    fm_model_free(model);
    return 0;
}

const cli_command cmd_probe = {
    "probe",
    "--model DIR --train-images IDX --train-labels IDX --test-images IDX --test-labels IDX [--per-class 10,100,all] "
    "[--draws 5] [--layer L|auto] [--pool mean|normed|auto] [--seed S] [--json]",
    "Linear-probe accuracy of a model's image features beside raw pixels and a random-init model.", run};
