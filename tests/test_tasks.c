/*
 * test_tasks.c — evaluation tasks (src/eval/task.c, harness.c): reading task files and their
 * errors, lm-eval's prompt and scoring rules, and results that do not depend on the cache, the
 * batch or the thread count.
 *
 * The model is a small random GPT over a tokenizer trained here, so log-likelihoods differ from
 * choice to choice; what is checked is the harness's arithmetic against plain computations, not
 * the model's knowledge.
 */
#include "test_util.h"

#include <ctype.h>
#include <math.h>

static fm_tokenizer *tok;
static fm_model *model; /* context 48: long prompts are cut */
static char *tmp;

static const char *corpus =
    "The cat sat on the mat. The dog ran to the park. A bird sang in the tree. "
    "Water is wet and fire is hot. The sun is bright; the moon is pale. One, two, three, four. "
    "Question: what color is the sky? Answer: blue. Question: what is two and two? Answer: four.";

static int setup(void **state) {
    (void)state;
    const char *texts[1] = {corpus};
    size_t lens[1] = {strlen(corpus)};
    if (fm_tokenizer_train(&tok, texts, lens, 1, 300) != FM_OK) fail_msg("tokenizer: %s", fm_last_error());
    fm_config c;
    fm_config_default(&c);
    c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.vocab_size = fm_tokenizer_vocab_size(tok), c.n_positions = 48;
    if (fm_model_init(&model, &c, 7) != FM_OK) fail_msg("model: %s", fm_last_error());
    tmp = make_temp_dir();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    fm_model_free(model);
    fm_tokenizer_free(tok);
    remove_dir_recursive(tmp);
    free(tmp);
    return 0;
}

/* Writes text as tmp/name and returns the path (static buffer per call site is not enough:
 * malloc'd, freed by the caller). */
static char *write_task(const char *name, const char *text) {
    char *path = test_path(tmp, name);
    write_file_bytes(path, text, strlen(text));
    return path;
}

static fm_task *load_ok(const char *name, const char *text) {
    char *path = write_task(name, text);
    fm_task *t;
    if (fm_task_load(&t, path) != FM_OK) fail_msg("%s: %s", path, fm_last_error());
    free(path);
    return t;
}

static void expect_load_error(const char *text, const char *phrase) {
    char *path = write_task("bad.jsonl", text);
    fm_task *t = NULL;
    fm_status st = fm_task_load(&t, path);
    if (st == FM_OK) {
        fm_task_free(t);
        fail_msg("loading succeeded; expected an error with \"%s\"", phrase);
    }
    if (!strstr(fm_last_error(), phrase)) fail_msg("error \"%s\" lacks \"%s\"", fm_last_error(), phrase);
    if (!strstr(fm_last_error(), path)) fail_msg("error \"%s\" does not name %s", fm_last_error(), path);
    free(path);
}

/* ------------------------------------------------------------ task files */

static void test_bad_task_files(void **state) {
    (void)state;
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n{\"query\": \"b\", \"choices\": [\"x\"\n",
                      ":2: not valid JSON");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 2}\n", ":1: \"gold\" 2 is outside the 2 choices");
    expect_load_error("\n\n{\"query\": \"a\", \"choices\": [], \"gold\": 0}\n", ":3: \"choices\" is empty");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\", \"\"], \"gold\": 0}\n", ":1: \"choices\"[1] is empty");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\"], \"gold\": 0, \"colour\": 1}\n", ":1: unknown field \"colour\"");
    expect_load_error("{\"task\": \"t\", \"type\": \"ranking\"}\n{\"query\": \"a\"}\n", ":1: \"type\" must be");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\"], \"gold\": 0} trailing\n", ":1: text after the JSON");
    expect_load_error("[1, 2]\n", ":1: not a JSON object");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\"], \"gold\": 0, \"split\": \"dev\"}\n", "\"split\" must be");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\"], \"gold\": 0, \"split\": \"fewshot\"}\n", "no test items");
    expect_load_error("", "no items");
    expect_load_error("{\"task\": \"g\", \"type\": \"generate\"}\n{\"query\": \"a\", \"answers\": []}\n", ":2: \"answers\" is empty");
    expect_load_error("{\"query\": \"a\", \"choices\": [\"x\"], \"gold\": 0}\n{\"task\": \"late\"}\n", ":2: settings must be the first line");
    char *missing = test_path(tmp, "absent.jsonl");
    fm_task *t;
    assert_int_equal(fm_task_load(&t, missing), FM_ERR_IO);
    free(missing);
}

/* Bare items are a zero-shot multiple-choice task with lm-eval's defaults. */
static void test_bare_items(void **state) {
    (void)state;
    fm_task *t = load_ok("bare.jsonl", "{\"query\": \"The cat sat on the\", \"choices\": [\"mat\", \"sun\", \"tree\"], \"gold\": 0}\n"
                                       "{\"query\": \"Water is\", \"choices\": [\"wet\", \"hot\"], \"gold\": 0}\n");
    assert_string_equal(fm_task_name(t), "bare");
    assert_int_equal(fm_task_kind(t), FM_TASK_MULTIPLE_CHOICE);
    assert_int_equal(fm_task_num_test(t), 2);
    assert_true(fabs(fm_task_chance(t) - (1.0 / 3 + 1.0 / 2) / 2) < 1e-12);
    fm_task_free(t);
}

/* ------------------------------------------------------------ multiple choice */

static const char *mc_task =
    "{\"task\": \"mc\", \"type\": \"multiple_choice\", \"instruction\": \"Answer.\\n\\n\"}\n"
    "{\"query\": \"Question: what color is the sky?\\nAnswer:\", \"choices\": [\"blue\", \"red\", \"green\"], \"gold\": 0, \"split\": \"fewshot\"}\n"
    "{\"query\": \"Question: what is two and two?\\nAnswer:\", \"choices\": [\"four\", \"three\"], \"gold\": 0, \"split\": \"fewshot\"}\n"
    "{\"query\": \"Question: is water wet?\\nAnswer:\", \"choices\": [\"yes\", \"no\"], \"gold\": 0, \"split\": \"fewshot\"}\n"
    "{\"query\": \"Question: is fire hot?\\nAnswer:\", \"choices\": [\"yes\", \"no\"], \"gold\": 0, \"split\": \"fewshot\"}\n"
    "{\"query\": \"The cat sat on the\", \"choices\": [\"mat\", \"sun\", \"bird\", \"park\"], \"gold\": 0}\n"
    "{\"query\": \"The dog ran to the \", \"choices\": [\"park\", \"moon\"], \"gold\": 0}\n"
    "{\"query\": \"A bird sang in the\", \"choices\": [\"tree\", \"water in the park today\", \"cat\"], \"gold\": 0}\n"
    "{\"query\": \"One, two, three,\", \"choices\": [\"four\", \"five\", \"one\", \"sun\", \"dog\"], \"gold\": 0}\n"
    "{\"query\": \"The sun is\", \"choices\": [\"bright\", \"pale\"], \"gold\": 1}\n"
    "{\"query\": \"\", \"choices\": [\"The moon is pale.\", \"Pale the is moon.\"], \"gold\": 0}\n";

typedef struct {
    double v[64][8];
    int n[64];
    int items;
} item_values;

static void collect(void *user, int index, const double *values, int n, const char *text) {
    (void)text;
    item_values *iv = user;
    assert_true(index < 64 && n <= 8);
    memcpy(iv->v[index], values, sizeof(double) * n);
    iv->n[index] = n;
    if (index + 1 > iv->items) iv->items = index + 1;
}

static void run_task(const fm_task *t, int shots, int max_seqs, int plain, item_values *iv, fm_task_result *r) {
    fm_task_config c;
    fm_task_config_default(&c);
    c.shots = shots, c.max_seqs = max_seqs, c.plain = plain, c.on_item = collect, c.user = iv;
    memset(iv, 0, sizeof *iv);
    if (fm_task_evaluate(t, model, tok, &c, r) != FM_OK) fail_msg("evaluate: %s", fm_last_error());
}

/* The cached, batched scores are the plain full-forward scores (to float rounding), the same
 * bits for any batch size and thread count, and give the same accuracies. */
static void test_multiple_choice_cache_batch_threads(void **state) {
    (void)state;
    fm_task *t = load_ok("mc.jsonl", mc_task);
    for (int shots = 0; shots <= 4; shots += 2) {
        item_values plain, one, three, wide, two_threads;
        fm_task_result rp, r1, r3, rw, rt;
        run_task(t, shots, 1, 1, &plain, &rp);
        run_task(t, shots, 1, 0, &one, &r1);
        run_task(t, shots, 5, 0, &three, &r3);
        run_task(t, shots, 32, 0, &wide, &rw);
        fm_set_threads(2);
        run_task(t, shots, 32, 0, &two_threads, &rt);
        fm_set_threads(1);
        assert_int_equal(rp.n, 6);
        assert_int_equal(plain.items, 6);
        for (int i = 0; i < 6; i++)
            for (int c = 0; c < plain.n[i]; c++) {
                double a = plain.v[i][c], b = wide.v[i][c];
                if (!(fabs(a - b) <= 1e-4 * fmax(1.0, fabs(a))))
                    fail_msg("%d shots, item %d choice %d: plain %.9g, cached %.9g", shots, i, c, a, b);
            }
        assert_memory_equal(one.v, wide.v, sizeof one.v);
        assert_memory_equal(three.v, wide.v, sizeof one.v);
        assert_memory_equal(two_threads.v, wide.v, sizeof one.v);
        for (int m = 0; m < 3; m++) {
            assert_true(rp.metrics[m].value == rw.metrics[m].value);
            assert_true(r1.metrics[m].value == rw.metrics[m].value && r3.metrics[m].value == rw.metrics[m].value);
        }
        /* the metrics from the scores, as lm-eval takes them */
        const int gold[6] = {0, 0, 0, 0, 1, 0};
        const char *choices[6][5] = {{"mat", "sun", "bird", "park"}, {"park", "moon"},
                                     {"tree", "water in the park today", "cat"},
                                     {"four", "five", "one", "sun", "dog"}, {"bright", "pale"},
                                     {"The moon is pale.", "Pale the is moon."}};
        double acc = 0, acc_norm = 0;
        for (int i = 0; i < 6; i++) {
            int best = 0, best_norm = 0;
            for (int c = 1; c < wide.n[i]; c++) {
                if (wide.v[i][c] > wide.v[i][best]) best = c;
                if (wide.v[i][c] / strlen(choices[i][c]) > wide.v[i][best_norm] / strlen(choices[i][best_norm]))
                    best_norm = c;
            }
            acc += best == gold[i], acc_norm += best_norm == gold[i];
        }
        assert_true(rw.metrics[0].value == acc / 6 && rw.metrics[1].value == acc_norm / 6);
        double p = acc / 6;
        assert_true(fabs(rw.metrics[0].std_error - sqrt(p * (1 - p) / 5)) < 1e-12);
        assert_string_equal(rw.metrics[0].name, "acc");
        assert_string_equal(rw.metrics[1].name, "acc_norm");
        assert_string_equal(rw.metrics[2].name, "acc_bytes");
    }
    fm_task_free(t);
}

/* The summed log-likelihood of cont (nk tokens) after ctx (nc tokens), the plain way: one
 * session forward over ctx + cont less its last token, cut from the left as the harness cuts
 * (the last 49 tokens: the context of 48 and the one predicted). */
static double plain_ll(const int *ctx, size_t nc, const int *cont, size_t nk) {
    int in[256], n = 0, cut = nc + nk > 49 ? (int)(nc + nk) - 49 : 0;
    assert_true(nc + nk <= 256 && (size_t)cut < nc);
    for (size_t i = cut; i < nc; i++) in[n++] = ctx[i];
    for (size_t i = 0; i + 1 < nk; i++) in[n++] = cont[i];
    fm_session *s;
    assert_int_equal(fm_session_init(&s, model, 1, 48), FM_OK);
    const float *logits;
    assert_int_equal(fm_session_forward(s, in, 1, n, &logits), FM_OK);
    int V = fm_tokenizer_vocab_size(tok);
    double ll = 0.0;
    for (size_t k = 0; k < nk; k++) {
        const float *z = logits + (nc - 1 - cut + k) * V;
        double m = z[0], sum = 0;
        for (int v = 1; v < V; v++) m = fmax(m, z[v]);
        for (int v = 0; v < V; v++) sum += exp(z[v] - m);
        ll += z[cont[k]] - m - log(sum);
    }
    fm_session_free(s);
    return ll;
}

/* The log-likelihood of one continuation, computed the plain way here: the token sequence is
 * built by hand (context encoded alone, continuation = whole minus the context's tokens). */
static double direct_ll(const char *context, const char *continuation) {
    size_t lc = strlen(context), lk = strlen(continuation);
    char whole[512];
    snprintf(whole, sizeof whole, "%s%s", context, continuation);
    int *w, *c;
    size_t nw, nc;
    assert_int_equal(fm_tokenizer_encode(tok, whole, lc + lk, 0, &w, &nw), FM_OK);
    assert_int_equal(fm_tokenizer_encode(tok, context, lc, 0, &c, &nc), FM_OK);
    double ll = plain_ll(c, nc, w + nc, nw - nc);
    free(w), free(c);
    return ll;
}

/* lm-eval's _encode_pair: the context's trailing space moves to the continuation (item 2's
 * query ends in a space), and the prompt is instruction + query at 0 shots. */
static void test_encode_pair(void **state) {
    (void)state;
    fm_task *t = load_ok("mc.jsonl", mc_task);
    item_values iv;
    fm_task_result r;
    run_task(t, 0, 32, 0, &iv, &r);
    double want = direct_ll("Answer.\n\nThe dog ran to the", "  park");
    if (fabs(iv.v[1][0] - want) > 1e-4) fail_msg("item 1: %.9g, want %.9g", iv.v[1][0], want);
    want = direct_ll("Answer.\n\nThe cat sat on the", " mat");
    if (fabs(iv.v[0][0] - want) > 1e-4) fail_msg("item 0: %.9g, want %.9g", iv.v[0][0], want);
    fm_task_free(t);
}

/* The generated text of the last item evaluated (generate tasks). */
static char generated[1024];
static void keep_text(void *user, int index, const double *values, int n, const char *text) {
    (void)user, (void)index, (void)values, (void)n;
    snprintf(generated, sizeof generated, "%s", text ? text : "");
}

/* The chat template (cfg.chat): at 2 shots a choice is scored after the system message (the
 * instruction), two example exchanges and the query as the last user turn, then <|assistant|>,
 * and is encoded on its own (no target delimiter); checked against a plain forward over ids made
 * here with fm_chat_encode, and the same for any batch. */
static void test_chat_template_prompts(void **state) {
    (void)state;
    fm_task *t = load_ok("mc.jsonl", mc_task);
    fm_task_config c;
    fm_task_config_default(&c);
    item_values wide, one;
    fm_task_result r;
    c.shots = 2, c.chat = 1, c.on_item = collect;
    for (int pass = 0; pass < 2; pass++) {
        item_values *iv = pass ? &one : &wide;
        memset(iv, 0, sizeof *iv);
        c.user = iv, c.max_seqs = pass ? 1 : 32;
        if (fm_task_evaluate(t, model, tok, &c, &r) != FM_OK) fail_msg("evaluate: %s", fm_last_error());
    }
    assert_memory_equal(one.v, wide.v, sizeof one.v);
    /* item 1 ("The dog ran to the "), choice "moon": its two examples are the harness's draw,
     * found by trying every ordered pair of the four few-shot items against the score */
    const char *q[4] = {"Question: what color is the sky?\nAnswer:", "Question: what is two and two?\nAnswer:",
                        "Question: is water wet?\nAnswer:", "Question: is fire hot?\nAnswer:"};
    const char *a[4] = {"blue", "four", "yes", "yes"};
    int found = 0;
    for (int i = 0; i < 4 && !found; i++)
        for (int j = 0; j < 4 && !found; j++) {
            if (i == j) continue;
            fm_chat_message m[6] = {{"system", "Answer.\n\n"}, {"user", q[i]}, {"assistant", a[i]},
                                    {"user", q[j]}, {"assistant", a[j]}, {"user", "The dog ran to the "}};
            int *ctx, *cont;
            size_t nc, nk;
            assert_int_equal(fm_chat_encode(tok, m, 6, 1, 0, &ctx, NULL, &nc), FM_OK);
            assert_int_equal(ctx[nc - 1], fm_tokenizer_special_id(tok, "<|assistant|>"));
            assert_int_equal(fm_tokenizer_encode(tok, "moon", 4, 0, &cont, &nk), FM_OK);
            double ll = plain_ll(ctx, nc, cont, nk);
            free(ctx), free(cont);
            found = fabs(ll - wide.v[1][1]) <= 1e-4 * fmax(1.0, fabs(ll));
        }
    if (!found) fail_msg("no pair of examples gives the harness's chat score %.9g", wide.v[1][1]);
    fm_task_free(t);
    /* generation through the template stops at <|endoftext|>, which the answer does not hold */
    t = load_ok("genchat.jsonl", "{\"task\": \"g\", \"type\": \"generate\", \"max_gen_tokens\": 8}\n"
                                 "{\"query\": \"Is water wet?\", \"answers\": [\"yes\"]}\n");
    c.shots = 0, c.max_seqs = 4, c.user = NULL, c.on_item = keep_text;
    generated[0] = '\0';
    assert_int_equal(fm_task_evaluate(t, model, tok, &c, &r), FM_OK);
    assert_int_equal(r.n, 1);
    assert_null(strstr(generated, "<|endoftext|>"));
    fm_task_free(t);
}

/* More shots than the few-shot split holds; a context too short for the longest prompt cuts
 * it from the left and counts it. */
static void test_shots_and_truncation(void **state) {
    (void)state;
    fm_task *t = load_ok("mc.jsonl", mc_task);
    fm_task_config c;
    fm_task_config_default(&c);
    fm_task_result r;
    c.shots = 5;
    assert_int_equal(fm_task_evaluate(t, model, tok, &c, &r), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "5 shots asked, its few-shot split holds 4"));
    c.shots = 0;
    assert_int_equal(fm_task_evaluate(t, model, tok, &c, &r), FM_OK);
    assert_int_equal(r.truncated, 0);
    c.shots = 4; /* four examples of ~15 tokens each: past the context of 48 */
    assert_int_equal(fm_task_evaluate(t, model, tok, &c, &r), FM_OK);
    assert_true(r.truncated > 0);
    assert_int_equal(r.shots, 4);
    fm_task_free(t);
    /* a choice longer than the whole context (48): that item is left out and counted */
    char text[2048], longest[1200] = "";
    for (int i = 0; i < 60; i++) strcat(longest, "The cat sat. ");
    snprintf(text, sizeof text,
             "{\"query\": \"The dog ran to the\", \"choices\": [\"park\", \"%s\"], \"gold\": 0}\n"
             "{\"query\": \"The sun is\", \"choices\": [\"bright\", \"pale\"], \"gold\": 0}\n", longest);
    t = load_ok("long.jsonl", text);
    c.shots = 0;
    assert_int_equal(fm_task_evaluate(t, model, tok, &c, &r), FM_OK);
    assert_int_equal(r.skipped, 1);
    assert_int_equal(r.n, 1);
    fm_task_free(t);
}

/* ------------------------------------------------------------ generation and perplexity */

static void test_generate_metrics(void **state) {
    (void)state;
    /* what the model generates greedily for the prompt, found first */
    const char *query = "Question: what is two and two?\nAnswer:";
    int *ids;
    size_t n;
    assert_int_equal(fm_tokenizer_encode(tok, query, strlen(query), 0, &ids, &n), FM_OK);
    fm_session *s;
    assert_int_equal(fm_session_init(&s, model, 1, 48), FM_OK);
    fm_generate_config g;
    fm_generate_config_default(&g);
    g.sampler.temperature = 0.0f, g.max_tokens = 4, g.tok = tok;
    g.eos = fm_tokenizer_special_id(tok, "<|endoftext|>");
    const char *stop = "\n\n";
    g.stops = &stop, g.n_stops = 1;
    const int *prompts[1] = {ids};
    int lens[1] = {(int)n};
    fm_generate_result res;
    assert_int_equal(fm_generate(s, &g, prompts, lens, 1, NULL, NULL, &res), FM_OK);
    fm_session_free(s);
    free(ids);
    /* an answer equal to it up to case, punctuation, articles and spaces; one sharing nothing */
    char text[1024], answer[600];
    size_t k = 0;
    for (const char *p = res.text; *p && k < sizeof answer - 8; p++) answer[k++] = (char)toupper((unsigned char)*p);
    answer[k] = '\0';
    snprintf(text, sizeof text,
             "{\"task\": \"gen\", \"type\": \"generate\", \"max_gen_tokens\": 4}\n"
             "{\"query\": \"Question: what is two and two?\\nAnswer:\", \"answers\": [\"zzz qqq\", \" the %s!! \"]}\n"
             "{\"query\": \"Question: what is two and two?\\nAnswer:\", \"answers\": [\"zzz qqq\"]}\n",
             answer);
    for (char *p = text; *p; p++)
        if (*p == '\n' && p[1] && p[1] != '{') *p = ' '; /* keep one item a line */
    fm_generate_result_free(&res);
    fm_task *t = load_ok("gen.jsonl", text);
    item_values iv;
    fm_task_result r;
    run_task(t, 0, 8, 0, &iv, &r);
    assert_string_equal(r.metrics[0].name, "exact_match");
    assert_true(iv.v[0][0] == 1.0 && iv.v[0][1] == 1.0); /* exact match, F1 */
    assert_true(iv.v[1][0] == 0.0 && iv.v[1][1] == 0.0);
    assert_true(r.metrics[0].value == 0.5 && r.metrics[1].value == 0.5);
    fm_task_free(t);
}

/* Rolling windows: a short text is [eot] + text in one window; a long one (past the context of
 * 48) is scored in windows that each see up to 48 tokens; both against a plain computation. */
static void test_perplexity_rolling(void **state) {
    (void)state;
    char text[4096];
    snprintf(text, sizeof text,
             "{\"task\": \"ppl\", \"type\": \"perplexity\"}\n{\"text\": \"The cat sat on the mat.\"}\n{\"text\": \"%s %s\"}\n",
             "The cat sat on the mat. The dog ran to the park. A bird sang in the tree. Water is wet and fire is hot.",
             "The sun is bright; the moon is pale. One, two, three, four. The cat sat on the mat again and again.");
    fm_task *t = load_ok("ppl.jsonl", text);
    item_values iv;
    fm_task_result r;
    run_task(t, 0, 8, 0, &iv, &r);
    const char *docs[2] = {"The cat sat on the mat.",
                           "The cat sat on the mat. The dog ran to the park. A bird sang in the tree. Water is wet and "
                           "fire is hot. The sun is bright; the moon is pale. One, two, three, four. The cat sat on "
                           "the mat again and again."};
    int V = fm_tokenizer_vocab_size(tok), eot = fm_tokenizer_special_id(tok, "<|endoftext|>");
    double total = 0.0, bytes = 0.0;
    fm_session *s;
    assert_int_equal(fm_session_init(&s, model, 1, 48), FM_OK);
    for (int d = 0; d < 2; d++) {
        int *ids;
        size_t n;
        assert_int_equal(fm_tokenizer_encode(tok, docs[d], strlen(docs[d]), 0, &ids, &n), FM_OK);
        if (d == 1) assert_true(n > 96); /* three windows at least */
        /* token i is predicted from up to 48 tokens before it: [eot] + tokens for the first 48,
         * then the 48 tokens before it, as the window holding it gives */
        double ll = 0.0;
        for (size_t i = 0; i < n; i++) {
            int in[64], m = 0;
            size_t window_end = i < 48 ? 48 : 48 + (i - 48) / 48 * 48 + 48; /* the window i falls in */
            if (window_end > n) window_end = n;
            if (i < 48) {
                in[m++] = eot;
                for (size_t j = 0; j < i; j++) in[m++] = ids[j];
            } else {
                size_t start = window_end - 48 - 1;
                for (size_t j = start; j < i; j++) in[m++] = ids[j];
            }
            const float *logits;
            assert_int_equal(fm_session_forward(s, in, 1, m, &logits), FM_OK);
            const float *z = logits + (size_t)(m - 1) * V;
            double mx = z[0], sum = 0;
            for (int v = 1; v < V; v++) mx = fmax(mx, z[v]);
            for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
            ll += z[ids[i]] - mx - log(sum);
        }
        if (fabs(iv.v[d][0] - ll) > 1e-3) fail_msg("document %d: %.9g, want %.9g", d, iv.v[d][0], ll);
        total += ll, bytes += strlen(docs[d]);
        free(ids);
    }
    fm_session_free(s);
    assert_string_equal(r.metrics[0].name, "bits_per_byte");
    assert_true(fabs(r.metrics[0].value - (-total / bytes / log(2.0))) < 1e-6);
    fm_task_free(t);
}

int main(void) {
    fm_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_task_files),
        cmocka_unit_test(test_bare_items),
        cmocka_unit_test(test_multiple_choice_cache_batch_threads),
        cmocka_unit_test(test_encode_pair),
        cmocka_unit_test(test_chat_template_prompts),
        cmocka_unit_test(test_shots_and_truncation),
        cmocka_unit_test(test_generate_metrics),
        cmocka_unit_test(test_perplexity_rolling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
