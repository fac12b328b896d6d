/*
 * test_sft_data.c — fine-tuning files (src/train/sft_data.c): format detection, each format's ids
 * and loss masks (positions checked exactly), every validation error with its file and line, the
 * held-out split, truncation counts, and the data source: padded rows, the held-out walk, each
 * epoch a permutation, and a resumed stream equal to the uninterrupted one.
 */
#include "test_util.h"

#include "core/alloc.h"

#define TOKENIZER "tests/ref/tasks/tokenizer.json" /* 300 tokens with the chat markers */

static fm_tokenizer *tok;
static char *dir;
static int END, SYS, USR, AST;

static int setup(void **state) {
    (void)state;
    if (fm_tokenizer_load(&tok, TOKENIZER)) return -1;
    END = fm_tokenizer_special_id(tok, "<|endoftext|>");
    SYS = fm_tokenizer_special_id(tok, "<|system|>");
    USR = fm_tokenizer_special_id(tok, "<|user|>");
    AST = fm_tokenizer_special_id(tok, "<|assistant|>");
    dir = make_temp_dir();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    fm_tokenizer_free(tok);
    remove_dir_recursive(dir);
    free(dir);
    return 0;
}

/* Writes text to DIR/name; returns the path (malloc'd). */
static char *put(const char *name, const char *text) {
    char *path = test_path(dir, name);
    write_file_bytes(path, text, strlen(text));
    return path;
}

/* encode(text) with specials off. */
static int *enc(const char *s, size_t *n) {
    int *ids = NULL;
    assert_int_equal(fm_tokenizer_encode(tok, s, strlen(s), 0, &ids, n), FM_OK);
    return ids;
}

static fm_sft_data *load_ok(const char *path, const char *format, int loss_on_all) {
    fm_sft_data *d = NULL;
    fm_status st = fm_sft_data_load(&d, path, format, tok, loss_on_all, NULL, 0);
    if (st) fail_msg("%s: %s", path, fm_last_error());
    return d;
}

/* ---------------------------------------------------------------- detection */

static void test_detect(void **state) {
    (void)state;
    struct {
        const char *text;
        fm_sft_format want;
    } cases[] = {
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", FM_SFT_CHAT},
        {"\n  \n{\"prompt\": \"a\", \"completion\": \"b\"}\n", FM_SFT_PROMPT_COMPLETION},
        {"great movie\tpos\n", FM_SFT_TSV},
        {"Call me Ishmael.\nSome years ago\n", FM_SFT_TEXT},
        {"{not json at all\n", FM_SFT_TEXT},
        {"", FM_SFT_TEXT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = put("detect.txt", cases[i].text);
        fm_sft_format f = (fm_sft_format)-1;
        assert_int_equal(fm_sft_detect_format(path, &f), FM_OK);
        assert_int_equal(f, cases[i].want);
        free(path);
    }
    /* a JSON object of neither kind: the caller must say */
    char *path = put("other.jsonl", "\n{\"text\": \"hello\"}\n");
    fm_sft_format f;
    assert_error_contains(fm_sft_detect_format(path, &f), FM_ERR_FORMAT, "other.jsonl:2:");
    fm_sft_data *d = NULL;
    assert_error_contains(fm_sft_data_load(&d, path, NULL, tok, 0, NULL, 0), FM_ERR_FORMAT, "give the format");
    d = load_ok(path, "text", 0); /* as text it is fine */
    assert_int_equal(fm_sft_data_format(d), FM_SFT_TEXT);
    fm_sft_data_free(d);
    free(path);
    /* names */
    for (int k = 0; k < 4; k++) {
        fm_sft_format back;
        assert_int_equal(fm_sft_format_parse(fm_sft_format_name((fm_sft_format)k), &back), FM_OK);
        assert_int_equal(back, k);
    }
    assert_error_contains(fm_sft_format_parse("jsonl", &f), FM_ERR_ARG, "\"jsonl\"");
    assert_error_contains(fm_sft_data_load(&d, "/nonexistent/x.jsonl", NULL, tok, 0, NULL, 0), FM_ERR_IO,
                          "/nonexistent/x.jsonl");
}

/* ---------------------------------------------------------------- each format */

static void test_chat(void **state) {
    (void)state;
    char *path = put("chat.jsonl",
                     "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
                     "\"content\": \"the cat\"}, {\"role\": \"assistant\", \"content\": \"sat\"}], \"id\": 7}\n"
                     "\n"
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\\"b\\\\\"}, {\"role\": \"assistant\", "
                     "\"content\": \"one\"}, {\"role\": \"user\", \"content\": \"more\"}, {\"role\": \"assistant\", "
                     "\"content\": \"two\"}]}\r\n");
    fm_sft_data *d = load_ok(path, NULL, 0);
    assert_int_equal(fm_sft_data_format(d), FM_SFT_CHAT);
    assert_int_equal(fm_sft_data_num_examples(d), 2);
    assert_int_equal(fm_sft_data_line(d, 0), 1);
    assert_int_equal(fm_sft_data_line(d, 1), 3); /* the blank line is skipped, lines still counted */
    assert_int_equal(fm_sft_data_pad_id(d), END);
    /* example 0 exactly: <sys> Be brief. <end> <usr> the cat <end> <ast> sat <end> */
    size_t ns, nu, na;
    int *s = enc("Be brief.", &ns), *u = enc("the cat", &nu), *a = enc("sat", &na);
    const int *ids;
    const float *mask;
    size_t n;
    int label;
    fm_sft_data_example(d, 0, &ids, &mask, &n, &label);
    assert_int_equal(label, -1);
    assert_int_equal(n, ns + nu + na + 6);
    size_t k = 0;
    assert_int_equal(ids[k], SYS), assert_true(mask[k++] == 0);
    for (size_t i = 0; i < ns; i++) assert_int_equal(ids[k], s[i]), assert_true(mask[k++] == 0);
    assert_int_equal(ids[k], END), assert_true(mask[k++] == 0);
    assert_int_equal(ids[k], USR), assert_true(mask[k++] == 0);
    for (size_t i = 0; i < nu; i++) assert_int_equal(ids[k], u[i]), assert_true(mask[k++] == 0);
    assert_int_equal(ids[k], END), assert_true(mask[k++] == 0);
    assert_int_equal(ids[k], AST), assert_true(mask[k++] == 0);
    for (size_t i = 0; i < na; i++) assert_int_equal(ids[k], a[i]), assert_true(mask[k++] == 1);
    assert_int_equal(ids[k], END), assert_true(mask[k++] == 1);
    assert_int_equal(k, n);
    /* example 1 equals fm_chat_encode of its messages, both assistant turns learned */
    fm_chat_message m[4] = {{"user", "a\"b\\"}, {"assistant", "one"}, {"user", "more"}, {"assistant", "two"}};
    int *want = NULL;
    float *want_mask = NULL;
    size_t n_want = 0;
    assert_int_equal(fm_chat_encode(tok, m, 4, 0, 0, &want, &want_mask, &n_want), FM_OK);
    fm_sft_data_example(d, 1, &ids, &mask, &n, NULL);
    assert_int_equal(n, n_want);
    assert_memory_equal(ids, want, n * sizeof *ids);
    assert_memory_equal(mask, want_mask, n * sizeof *mask);
    float learned = 0;
    for (size_t i = 0; i < n; i++) learned += mask[i];
    size_t n1, n2;
    free(enc("one", &n1)), free(enc("two", &n2));
    assert_true(learned == (float)(n1 + n2 + 2));
    assert_int_equal(fm_sft_data_num_tokens(d), n + ns + nu + na + 6);
    free(want), free(want_mask);
    fm_sft_data_free(d);
    /* loss on all: every token */
    d = load_ok(path, "chat", 1);
    fm_sft_data_example(d, 0, &ids, &mask, &n, NULL);
    for (size_t i = 0; i < n; i++) assert_true(mask[i] == 1);
    fm_sft_data_free(d);
    free(s), free(u), free(a), free(path);
}

static void test_prompt_completion(void **state) {
    (void)state;
    char *path = put("pc.jsonl", "{\"prompt\": \"Q: 2+2?\\nA:\", \"completion\": \" 4\"}\n"
                                 "{\"prompt\": \"\", \"completion\": \"<|endoftext|>x\"}\n");
    fm_sft_data *d = load_ok(path, NULL, 0);
    assert_int_equal(fm_sft_data_format(d), FM_SFT_PROMPT_COMPLETION);
    assert_int_equal(fm_sft_data_num_examples(d), 2);
    size_t np, nc;
    int *p = enc("Q: 2+2?\nA:", &np), *c = enc(" 4", &nc);
    const int *ids;
    const float *mask;
    size_t n;
    fm_sft_data_example(d, 0, &ids, &mask, &n, NULL);
    assert_int_equal(n, np + nc + 1);
    for (size_t i = 0; i < np; i++) assert_int_equal(ids[i], p[i]), assert_true(mask[i] == 0);
    for (size_t i = 0; i < nc; i++) assert_int_equal(ids[np + i], c[i]), assert_true(mask[np + i] == 1);
    assert_int_equal(ids[n - 1], END), assert_true(mask[n - 1] == 1);
    /* special-token text in a completion is text: one <|endoftext|> id, the last */
    fm_sft_data_example(d, 1, &ids, &mask, &n, NULL);
    for (size_t i = 0; i + 1 < n; i++) assert_int_not_equal(ids[i], END), assert_true(mask[i] == 1);
    assert_int_equal(ids[n - 1], END);
    fm_sft_data_free(d);
    d = load_ok(path, NULL, 1);
    fm_sft_data_example(d, 0, &ids, &mask, &n, NULL);
    for (size_t i = 0; i < n; i++) assert_true(mask[i] == 1);
    fm_sft_data_free(d);
    free(p), free(c), free(path);
}

static void test_tsv(void **state) {
    (void)state;
    char *path = put("train.tsv", "great film\tpos\nawful\tneg\n  \nmeh\tneutral\r\nloved it\tpos\n");
    fm_sft_data *d = load_ok(path, NULL, 0);
    assert_int_equal(fm_sft_data_format(d), FM_SFT_TSV);
    assert_int_equal(fm_sft_data_num_examples(d), 4);
    assert_int_equal(fm_sft_data_num_labels(d), 3);
    const char *const *labels = fm_sft_data_labels(d);
    assert_string_equal(labels[0], "neg"); /* sorted by bytes */
    assert_string_equal(labels[1], "neutral");
    assert_string_equal(labels[2], "pos");
    int want[4] = {2, 0, 1, 2}, lines[4] = {1, 2, 4, 5};
    for (size_t i = 0; i < 4; i++) {
        const int *ids;
        const float *mask;
        size_t n, n_text;
        int label;
        fm_sft_data_example(d, i, &ids, &mask, &n, &label);
        assert_int_equal(label, want[i]);
        assert_null(mask);
        assert_int_equal(fm_sft_data_line(d, i), lines[i]);
        const char *texts[4] = {"great film", "awful", "meh", "loved it"};
        int *e = enc(texts[i], &n_text);
        assert_int_equal(n, n_text);
        assert_memory_equal(ids, e, n * sizeof *ids);
        free(e);
    }
    /* a held-out file read with the training set's labels: indices follow it; a new label fails */
    char *test = put("test.tsv", "fine\tneutral\nbad\tneg\n");
    fm_sft_data *t = NULL;
    assert_int_equal(fm_sft_data_load(&t, test, NULL, tok, 0, labels, 3), FM_OK);
    int label;
    fm_sft_data_example(t, 0, NULL, NULL, NULL, &label);
    assert_int_equal(label, 1);
    fm_sft_data_example(t, 1, NULL, NULL, NULL, &label);
    assert_int_equal(label, 0);
    /* the source accepts the pair */
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, d, t, 8, 1, 0), FM_OK);
    fm_sft_source_free(&src);
    fm_sft_data_free(t);
    free(test);
    test = put("test2.tsv", "fine\tneutral\n\nwow\tmixed\n");
    assert_error_contains(fm_sft_data_load(&t, test, NULL, tok, 0, labels, 3), FM_ERR_MISMATCH,
                          "test2.tsv:3: the label \"mixed\" is not among the 3 labels");
    assert_null(t);
    /* a file's own labels differ from the training set's: the source refuses the pair */
    assert_int_equal(fm_sft_data_load(&t, test, NULL, tok, 0, NULL, 0), FM_OK);
    assert_error_contains(fm_sft_source_init(&src, d, t, 8, 1, 0), FM_ERR_MISMATCH, "different label sets");
    fm_sft_data_free(t);
    /* a label set with a repeat, or for another format */
    const char *twice[2] = {"a", "a"};
    assert_error_contains(fm_sft_data_load(&t, test, NULL, tok, 0, twice, 2), FM_ERR_ARG, "twice");
    free(test);
    fm_sft_data_free(d);
    free(path);
}

static void test_text(void **state) {
    (void)state;
    const char *text = "It was the best of times, it was the worst of times.\n\n<|endoftext|> and more\tthings\n";
    char *path = put("book.txt", text);
    fm_sft_data *d = load_ok(path, "text", 0);
    assert_int_equal(fm_sft_data_num_examples(d), 1);
    size_t n_want;
    int *want = enc(text, &n_want);
    const int *ids;
    const float *mask;
    size_t n;
    fm_sft_data_example(d, 0, &ids, &mask, &n, NULL);
    assert_null(mask);
    assert_int_equal(n, n_want);
    assert_memory_equal(ids, want, n * sizeof *ids);
    assert_int_equal(fm_sft_data_num_bytes(d), strlen(text));
    free(want);
    fm_sft_data_free(d);
    free(path);
    path = put("empty.txt", "");
    assert_error_contains(fm_sft_data_load(&d, path, NULL, tok, 0, NULL, 0), FM_ERR_FORMAT, "empty.txt");
    free(path);
}

/* ---------------------------------------------------------------- validation */

static void test_validation_errors(void **state) {
    (void)state;
    const char *good_chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
                            "\"content\": \"yo\"}]}\n";
    struct {
        const char *format, *line, *want;
        fm_status status;
    } cases[] = {
        {"chat", "{\"messages\": [}\n", "not valid JSON", FM_ERR_FORMAT},
        {"chat", "[1, 2]\n", "not a JSON object", FM_ERR_FORMAT},
        {"chat", "{\"messages\": []} extra\n", "text after the JSON value", FM_ERR_FORMAT},
        {"chat", "{\"conversation\": []}\n", "\"messages\" is missing", FM_ERR_FORMAT},
        {"chat", "{\"messages\": \"hi\"}\n", "\"messages\" must be a list", FM_ERR_FORMAT},
        {"chat", "{\"messages\": []}\n", "\"messages\" is empty", FM_ERR_FORMAT},
        {"chat", "{\"messages\": [\"hi\"]}\n", "message 1 is not a JSON object", FM_ERR_FORMAT},
        {"chat", "{\"messages\": [{\"content\": \"hi\"}]}\n", "message 1: \"role\" is missing", FM_ERR_FORMAT},
        {"chat", "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n", "message 1: \"content\" must be a string",
         FM_ERR_FORMAT},
        {"chat", "{\"messages\": [{\"role\": \"user\", \"content\": null}]}\n", "message 1: \"content\" must be a string",
         FM_ERR_FORMAT},
        {"chat",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}\n",
         "message 2 has the unknown role \"bot\"", FM_ERR_FORMAT},
        {"chat", "{\"messages\": [{\"role\": \"system\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}\n",
         "the conversation has no assistant message", FM_ERR_FORMAT},
        {"prompt-completion", "{\"prompt\": \"a\"}\n", "\"completion\" is missing", FM_ERR_FORMAT},
        {"prompt-completion", "{\"prompt\": 1, \"completion\": \"b\"}\n", "\"prompt\" must be a string", FM_ERR_FORMAT},
        {"prompt-completion", "{\"prompt\": \"a\", \"completion\": \"\"}\n", "\"completion\" is empty", FM_ERR_FORMAT},
        {"prompt-completion", "{\"prompt\": \"a\", \"completion\": [\"b\"]}\n", "\"completion\" must be a string",
         FM_ERR_FORMAT},
        {"tsv", "no tab here\n", "no TAB", FM_ERR_FORMAT},
        {"tsv", "a\tb\tc\n", "more than one TAB", FM_ERR_FORMAT},
        {"tsv", "text\t\n", "the label is empty", FM_ERR_FORMAT},
        {"tsv", "\tlabel\n", "the text is empty", FM_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* line 3 is bad: two good lines before it (one blank), a good one after */
        const char *good = !strcmp(cases[i].format, "chat") ? good_chat
                           : !strcmp(cases[i].format, "tsv") ? "fine\tpos\n"
                                                               : "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
        char text[1024];
        snprintf(text, sizeof text, "%s\n%s%s", good, cases[i].line, good);
        char *path = put("bad.data", text), want[256];
        snprintf(want, sizeof want, "%s:3: %s", path, cases[i].want);
        fm_sft_data *d = (fm_sft_data *)1;
        assert_error_contains(fm_sft_data_load(&d, path, cases[i].format, tok, 0, NULL, 0), cases[i].status, want);
        assert_null(d);
        free(path);
    }
    /* a NUL byte inside a JSONL line */
    char *path = test_path(dir, "nul.jsonl");
    const char nul[] = "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\0\", \"completion\": \"b\"}\n";
    write_file_bytes(path, nul, sizeof nul - 1);
    fm_sft_data *d = NULL;
    assert_error_contains(fm_sft_data_load(&d, path, "prompt-completion", tok, 0, NULL, 0), FM_ERR_FORMAT,
                          "nul.jsonl:2: a NUL byte");
    free(path);
    /* a blank-only JSONL file has no examples */
    path = put("blank.jsonl", "\n   \n\t\n");
    assert_error_contains(fm_sft_data_load(&d, path, "chat", tok, 0, NULL, 0), FM_ERR_FORMAT, "no examples");
    free(path);
}

/* The test tokenizer without the chat markers: chat data is refused with the way out. */
static void test_tokenizer_without_markers(void **state) {
    (void)state;
    size_t size = 0;
    char *json = (char *)read_file_bytes(TOKENIZER, &size);
    /* rename the markers in both places so that they are ordinary (unknown) specials */
    for (char *p = json; (p = strstr(p, "<|assistant|>")); p++) memcpy(p, "<|assistent|>", 13);
    char *tpath = test_path(dir, "tok-no-chat.json");
    write_file_bytes(tpath, json, size);
    free(json);
    fm_tokenizer *t = NULL;
    assert_int_equal(fm_tokenizer_load(&t, tpath), FM_OK);
    char *path = put("c.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
                                "\"content\": \"yo\"}]}\n");
    fm_sft_data *d = NULL;
    assert_error_contains(fm_sft_data_load(&d, path, NULL, t, 0, NULL, 0), FM_ERR_MISMATCH, "--add-chat-tokens");
    assert_non_null(strstr(fm_last_error(), "c.jsonl"));
    fm_tokenizer_free(t);
    free(tpath), free(path);
}

/* ---------------------------------------------------------------- split, truncation, batches */

/* n prompt-completion lines whose completion grows with i: "p<i>" -> "c c c ..." (i words). */
static char *pc_file(const char *name, int n) {
    size_t cap = 64 + (size_t)n * (size_t)(n + 40) * 3;
    char *text = malloc(cap);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        used += (size_t)snprintf(text + used, cap - used, "{\"prompt\": \"p%d:\", \"completion\": \"", i);
        for (int w = 0; w <= i % 7; w++) used += (size_t)snprintf(text + used, cap - used, " c%d", w);
        used += (size_t)snprintf(text + used, cap - used, "\"}\n");
    }
    char *path = put(name, text);
    free(text);
    return path;
}

static void test_split(void **state) {
    (void)state;
    char *path = pc_file("split.jsonl", 10);
    fm_sft_data *all = load_ok(path, NULL, 0), *train = NULL, *val = NULL;
    assert_int_equal(fm_sft_data_split(all, 3, &train, &val), FM_OK);
    /* held out: i % 3 == 2, i.e. examples 2, 5, 8 (lines 3, 6, 9) */
    assert_int_equal(fm_sft_data_num_examples(val), 3);
    assert_int_equal(fm_sft_data_num_examples(train), 7);
    int held[3] = {3, 6, 9};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fm_sft_data_line(val, (size_t)i), held[i]);
        const int *a, *b;
        const float *ma, *mb;
        size_t na, nb;
        fm_sft_data_example(val, (size_t)i, &a, &ma, &na, NULL);
        fm_sft_data_example(all, (size_t)held[i] - 1, &b, &mb, &nb, NULL);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof *a);
        assert_memory_equal(ma, mb, na * sizeof *ma);
    }
    assert_int_equal(fm_sft_data_line(train, 2), 4);
    assert_int_equal(fm_sft_data_num_tokens(train) + fm_sft_data_num_tokens(val), fm_sft_data_num_tokens(all));
    assert_int_equal(fm_sft_data_num_bytes(train) + fm_sft_data_num_bytes(val), fm_sft_data_num_bytes(all));
    fm_sft_data_free(train), fm_sft_data_free(val);
    assert_error_contains(fm_sft_data_split(all, 11, &train, &val), FM_ERR_ARG, "too few");
    assert_error_contains(fm_sft_data_split(all, 1, &train, &val), FM_ERR_ARG, "every 1");
    fm_sft_data_free(all);
    free(path);
    /* text: the last floor(n / every) tokens */
    path = put("t.txt", "one two three four five six seven eight nine ten eleven twelve thirteen\n");
    all = load_ok(path, NULL, 0);
    size_t n = fm_sft_data_num_tokens(all);
    assert_int_equal(fm_sft_data_split(all, 4, &train, &val), FM_OK);
    assert_int_equal(fm_sft_data_num_tokens(val), n / 4);
    assert_int_equal(fm_sft_data_num_tokens(train), n - n / 4);
    const int *a, *b;
    fm_sft_data_example(all, 0, &a, NULL, NULL, NULL);
    fm_sft_data_example(val, 0, &b, NULL, NULL, NULL);
    assert_memory_equal(a + n - n / 4, b, (n / 4) * sizeof *a);
    assert_int_equal(fm_sft_data_num_bytes(train) + fm_sft_data_num_bytes(val), fm_sft_data_num_bytes(all));
    fm_sft_data_free(train), fm_sft_data_free(val), fm_sft_data_free(all);
    free(path);
}

static void test_truncation(void **state) {
    (void)state;
    /* a long prompt with a short completion: cut short, the completion lost */
    char text[4096];
    int used = snprintf(text, sizeof text, "{\"prompt\": \"");
    for (int i = 0; i < 60; i++) used += snprintf(text + used, sizeof text - (size_t)used, "word%d ", i);
    snprintf(text + used, sizeof text - (size_t)used,
             "\", \"completion\": \"end\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n");
    char *path = put("long.jsonl", text);
    fm_sft_data *d = load_ok(path, NULL, 0);
    size_t n0, n1, no_loss = 99;
    fm_sft_data_example(d, 0, NULL, NULL, &n0, NULL);
    fm_sft_data_example(d, 1, NULL, NULL, &n1, NULL);
    assert_true(n0 > 40 && n1 < 10);
    assert_int_equal(fm_sft_data_truncated(d, (int)n0 - 1, &no_loss), 0); /* n0 = seq + 1 fits */
    assert_int_equal(no_loss, 0);
    assert_int_equal(fm_sft_data_truncated(d, (int)n0 - 2, &no_loss), 1);
    assert_int_equal(no_loss, 0); /* the last token (the end) lost, "end" kept */
    assert_int_equal(fm_sft_data_truncated(d, 16, &no_loss), 1);
    assert_int_equal(no_loss, 1);
    assert_int_equal(fm_sft_data_truncated(d, 4, NULL), 1); /* n1 <= 5 */
    fm_sft_data_free(d);
    free(path);
}

/* A batch of B rows of T (malloc'd buffers). */
static fm_batch batch_new(int B, int T) {
    fm_batch b = {.B = B, .T = T};
    b.tokens = calloc((size_t)B * T, sizeof(int));
    b.targets = calloc((size_t)B * T, sizeof(int));
    b.mask = calloc((size_t)B * T, sizeof(float));
    return b;
}
static void batch_free(fm_batch *b) { free(b->tokens), free(b->targets), free(b->mask); }

/* Row r of b is example i of d, padded (LM formats). */
static void assert_row_is(const fm_batch *b, int r, const fm_sft_data *d, size_t i) {
    const int *ids;
    const float *mask;
    size_t n;
    fm_sft_data_example(d, i, &ids, &mask, &n, NULL);
    int T = b->T;
    size_t m = n < (size_t)T + 1 ? n : (size_t)T + 1;
    for (int t = 0; t < T; t++) {
        const int *tok_row = b->tokens + (size_t)r * T, *tgt_row = b->targets + (size_t)r * T;
        float mk = b->mask[(size_t)r * T + t];
        if ((size_t)t + 1 < m) {
            assert_int_equal(tok_row[t], ids[t]);
            assert_int_equal(tgt_row[t], ids[t + 1]);
            assert_true(mk == mask[t + 1]);
        } else {
            assert_int_equal(tok_row[t], (size_t)t < m ? ids[t] : END);
            assert_int_equal(tgt_row[t], END);
            assert_true(mk == 0.0f);
        }
    }
}

static void test_padded_rows_and_eval(void **state) {
    (void)state;
    char *path = put("two.jsonl", "{\"prompt\": \"ab\", \"completion\": \"c\"}\n{\"prompt\": \"x\", \"completion\": \"y\"}\n");
    fm_sft_data *d = load_ok(path, NULL, 0);
    /* example 0 by hand: [a b c <end>] mask [0 0 1 1] -> row with T = 6:
     * tokens a b c <end> <end> <end>, targets b c <end> <end> <end> <end>, mask 0 1 1 0 0 0 */
    const int *ids;
    size_t n;
    fm_sft_data_example(d, 0, &ids, NULL, &n, NULL);
    assert_int_equal(n, 4); /* "ab" is two tokens, "c" one, then <|endoftext|> */
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, d, d, 6, 42, 0), FM_OK);
    fm_batch b = batch_new(3, 6);
    assert_int_equal(src.eval_next(src.ctx, &b, 0), FM_OK);
    assert_int_equal(b.rows, 2); /* fewer rows than B in the last batch */
    int want_tokens[6] = {ids[0], ids[1], ids[2], END, END, END};
    int want_targets[6] = {ids[1], ids[2], END, END, END, END};
    float want_mask[6] = {0, 1, 1, 0, 0, 0};
    for (int t = 0; t < 6; t++) {
        assert_int_equal(b.tokens[t], want_tokens[t]);
        assert_int_equal(b.targets[t], want_targets[t]);
        assert_true(b.mask[t] == want_mask[t]);
    }
    assert_row_is(&b, 1, d, 1);
    assert_int_equal(src.eval_next(src.ctx, &b, 1), FM_OK);
    assert_int_equal(b.rows, 0); /* past the end */
    assert_int_equal(src.eval_next(src.ctx, &b, 1000), FM_OK);
    assert_int_equal(b.rows, 0);
    fm_sft_source_free(&src);
    /* at most eval_rows rows per pass */
    assert_int_equal(fm_sft_source_init(&src, d, d, 6, 42, 1), FM_OK);
    assert_int_equal(src.eval_next(src.ctx, &b, 0), FM_OK);
    assert_int_equal(b.rows, 1);
    fm_sft_source_free(&src);
    /* cut rows: T = 2 keeps tokens a b, targets b c */
    fm_batch s = batch_new(1, 2);
    assert_int_equal(fm_sft_source_init(&src, d, d, 2, 42, 0), FM_OK);
    assert_int_equal(src.eval_next(src.ctx, &s, 0), FM_OK);
    assert_int_equal(s.tokens[0], ids[0]), assert_int_equal(s.tokens[1], ids[1]);
    assert_int_equal(s.targets[0], ids[1]), assert_int_equal(s.targets[1], ids[2]);
    assert_true(s.mask[0] == 0 && s.mask[1] == 1);
    /* a batch of another width is refused */
    assert_error_contains(src.eval_next(src.ctx, &b, 0), FM_ERR_ARG, "6 positions");
    fm_sft_source_free(&src);
    batch_free(&s);
    /* no held-out data: no eval_next */
    assert_int_equal(fm_sft_source_init(&src, d, NULL, 6, 42, 0), FM_OK);
    assert_null(src.eval_next);
    fm_sft_source_free(&src);
    batch_free(&b);
    fm_sft_data_free(d);
    free(path);
}

static void test_tsv_rows(void **state) {
    (void)state;
    char *path = put("cls.tsv", "a b c d e f g h i j k l\tlong\nhi\tshort\n");
    fm_sft_data *d = load_ok(path, NULL, 0);
    size_t n0, n1;
    const int *ids0, *ids1;
    fm_sft_data_example(d, 0, &ids0, NULL, &n0, NULL);
    fm_sft_data_example(d, 1, &ids1, NULL, &n1, NULL);
    int T = 5;
    assert_true(n0 > (size_t)T && n1 < (size_t)T);
    assert_int_equal(fm_sft_data_truncated(d, T, NULL), 1);
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, d, d, T, 1, 0), FM_OK);
    fm_batch b = batch_new(2, T);
    assert_int_equal(src.eval_next(src.ctx, &b, 0), FM_OK);
    assert_int_equal(b.rows, 2);
    for (int t = 0; t < T; t++) { /* row 0: cut to T tokens, read at the last */
        assert_int_equal(b.tokens[t], ids0[t]);
        assert_int_equal(b.targets[t], 0); /* "long" is label 0 */
        assert_true(b.mask[t] == (t == T - 1 ? 1.0f : 0.0f));
    }
    for (int t = 0; t < T; t++) { /* row 1: padded, read at its last token */
        assert_int_equal(b.tokens[T + t], (size_t)t < n1 ? ids1[t] : END);
        assert_int_equal(b.targets[T + t], 1);
        assert_true(b.mask[T + t] == ((size_t)t == n1 - 1 ? 1.0f : 0.0f));
    }
    batch_free(&b);
    fm_sft_source_free(&src);
    fm_sft_data_free(d);
    free(path);
}

/* Labeled sequences made in memory (fm finetune --train-images): tsv data whose rows are the
 * sequences, read at their last token with their label; a label out of range is refused. */
static void test_from_ids(void **state) {
    (void)state;
    const int ids[3 * 4] = {7, 1, 2, 8, 7, 3, 4, 8, 7, 5, 6, 8};
    const int labels[3] = {1, 0, 1}, bad_labels[3] = {1, 2, 0};
    const char *const names[2] = {"0", "1"};
    fm_sft_data *d = NULL;
    assert_int_equal(fm_sft_data_from_ids(&d, "images", ids, 3, 4, labels, names, 2, 9), FM_OK);
    assert_int_equal(fm_sft_data_format(d), FM_SFT_TSV);
    assert_int_equal(fm_sft_data_num_examples(d), 3);
    assert_int_equal(fm_sft_data_num_labels(d), 2);
    assert_string_equal(fm_sft_data_labels(d)[1], "1");
    assert_int_equal(fm_sft_data_pad_id(d), 9);
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, d, d, 4, 1, 0), FM_OK);
    fm_batch b = batch_new(3, 4);
    assert_int_equal(src.eval_next(src.ctx, &b, 0), FM_OK);
    assert_int_equal(b.rows, 3);
    for (int r = 0; r < 3; r++)
        for (int t = 0; t < 4; t++) {
            assert_int_equal(b.tokens[r * 4 + t], ids[r * 4 + t]);
            assert_int_equal(b.targets[r * 4 + t], labels[r]);
            assert_true(b.mask[r * 4 + t] == (t == 3 ? 1.0f : 0.0f));
        }
    batch_free(&b);
    fm_sft_source_free(&src);
    fm_sft_data_free(d);
    d = NULL;
    assert_int_equal(fm_sft_data_from_ids(&d, "images", ids, 3, 4, bad_labels, names, 2, 9), FM_ERR_ARG);
    assert_non_null(strstr(fm_last_error(), "example 1 has label 2"));
    assert_null(d);
    assert_int_equal(fm_sft_data_from_ids(&d, "images", ids, 0, 4, labels, names, 2, 9), FM_ERR_ARG);
    assert_null(d);
}

/* Draws k training batches from (rng, position) into out rows (k * B * T tokens, targets, masks). */
static void draw(fm_data_source *src, fm_batch *b, fm_rng *rng, uint64_t *pos, int k, int *tokens, float *masks) {
    size_t per = (size_t)b->B * b->T;
    for (int i = 0; i < k; i++) {
        assert_int_equal(src->next(src->ctx, b, rng, pos), FM_OK);
        assert_int_equal(b->rows, b->B);
        memcpy(tokens + i * per, b->tokens, per * sizeof *tokens);
        memcpy(masks + i * per, b->mask, per * sizeof *masks);
    }
}

static void test_stream_epochs_and_resume(void **state) {
    (void)state;
    char *path = pc_file("stream.jsonl", 7);
    fm_sft_data *d = load_ok(path, NULL, 0);
    int B = 3, T = 12, K = 7; /* 21 rows: three epochs of 7 */
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, d, NULL, T, 1234, 0), FM_OK);
    fm_batch b = batch_new(B, T);
    size_t per = (size_t)B * T;
    int *tokens = malloc(K * per * sizeof *tokens), *again = malloc(K * per * sizeof *again);
    float *masks = malloc(K * per * sizeof *masks), *again_m = malloc(K * per * sizeof *again_m);
    fm_rng rng;
    fm_rng_seed(&rng, 5);
    uint64_t pos = 0;
    draw(&src, &b, &rng, &pos, K, tokens, masks);
    assert_int_equal(pos, (uint64_t)K * B);
    /* each epoch of 7 rows holds every example once (a row is known by its tokens) */
    for (int e = 0; e < 3; e++) {
        int seen[7] = {0};
        for (int r = e * 7; r < e * 7 + 7; r++) {
            int found = -1;
            for (size_t i = 0; i < 7; i++) {
                const int *ids;
                size_t n;
                fm_sft_data_example(d, i, &ids, NULL, &n, NULL);
                size_t m = n < (size_t)T + 1 ? n - 1 : (size_t)T;
                if (!memcmp(tokens + (size_t)r * T, ids, m * sizeof *ids)) found = (int)i;
            }
            assert_true(found >= 0);
            seen[found]++;
        }
        for (int i = 0; i < 7; i++) assert_int_equal(seen[i], 1);
    }
    /* the order differs between epochs (a fresh permutation each) */
    assert_memory_not_equal(tokens, tokens + 7 * (size_t)T, 7 * (size_t)T * sizeof *tokens);
    /* resume after 3 batches: a new source, the saved rng and position, the same stream */
    fm_rng_seed(&rng, 5);
    pos = 0;
    draw(&src, &b, &rng, &pos, 3, again, again_m);
    fm_rng saved = rng;
    uint64_t saved_pos = pos;
    fm_sft_source_free(&src);
    assert_int_equal(fm_sft_source_init(&src, d, NULL, T, 1234, 0), FM_OK);
    draw(&src, &b, &saved, &saved_pos, K - 3, again + 3 * per, again_m + 3 * per);
    assert_memory_equal(again, tokens, K * per * sizeof *tokens);
    assert_memory_equal(again_m, masks, K * per * sizeof *masks);
    /* each drawn row is its example padded: check the first batch's rows */
    fm_rng_seed(&rng, 5);
    pos = 0;
    assert_int_equal(src.next(src.ctx, &b, &rng, &pos), FM_OK);
    for (int r = 0; r < B; r++) {
        for (size_t i = 0; i < 7; i++) {
            const int *ids;
            fm_sft_data_example(d, i, &ids, NULL, NULL, NULL);
            if (b.tokens[(size_t)r * T] == ids[0] && b.tokens[(size_t)r * T + 1] == ids[1] &&
                b.tokens[(size_t)r * T + 2] == ids[2])
                assert_row_is(&b, r, d, i);
        }
    }
    /* another seed: another order */
    fm_sft_source_free(&src);
    assert_int_equal(fm_sft_source_init(&src, d, NULL, T, 99, 0), FM_OK);
    fm_rng_seed(&rng, 5);
    pos = 0;
    draw(&src, &b, &rng, &pos, K, again, again_m);
    assert_memory_not_equal(again, tokens, K * per * sizeof *tokens);
    fm_sft_source_free(&src);
    free(tokens), free(again), free(masks), free(again_m);
    batch_free(&b);
    fm_sft_data_free(d);
    free(path);
}

static void test_text_source(void **state) {
    (void)state;
    char text[8192];
    size_t used = 0;
    for (int i = 0; i < 300; i++) used += (size_t)snprintf(text + used, sizeof text - used, "w%d ", i % 37);
    char *path = put("corpus.txt", text);
    fm_sft_data *all = load_ok(path, NULL, 0), *train, *val;
    assert_int_equal(fm_sft_data_split(all, 5, &train, &val), FM_OK);
    int T = 8, B = 2;
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, train, val, T, 0, 0), FM_OK);
    fm_batch b = batch_new(B, T);
    /* training rows: windows of the text, all targets counted; position counts tokens */
    const int *ids;
    size_t n;
    fm_sft_data_example(train, 0, &ids, NULL, &n, NULL);
    fm_rng rng, copy;
    fm_rng_seed(&rng, 11);
    copy = rng;
    uint64_t pos = 0;
    assert_int_equal(src.next(src.ctx, &b, &rng, &pos), FM_OK);
    assert_int_equal(pos, (uint64_t)B * T);
    for (int r = 0; r < B; r++) {
        size_t off = fm_rng_u64(&copy) % (n - (size_t)T);
        assert_memory_equal(b.tokens + (size_t)r * T, ids + off, (size_t)T * sizeof(int));
        assert_memory_equal(b.targets + (size_t)r * T, ids + off + 1, (size_t)T * sizeof(int));
        for (int t = 0; t < T; t++) assert_true(b.mask[(size_t)r * T + t] == 1.0f);
    }
    /* held-out windows: consecutive, T apart */
    const int *v;
    size_t nv;
    fm_sft_data_example(val, 0, &v, NULL, &nv, NULL);
    size_t windows = (nv - 1) / (size_t)T, seen = 0;
    for (uint64_t i = 0;; i++) {
        assert_int_equal(src.eval_next(src.ctx, &b, i), FM_OK);
        if (b.rows == 0) break;
        for (int r = 0; r < b.rows; r++, seen++) {
            assert_memory_equal(b.tokens + (size_t)r * T, v + seen * (size_t)T, (size_t)T * sizeof(int));
            assert_memory_equal(b.targets + (size_t)r * T, v + seen * (size_t)T + 1, (size_t)T * sizeof(int));
        }
    }
    assert_int_equal(seen, windows);
    fm_sft_source_free(&src);
    /* too short for the rows */
    assert_error_contains(fm_sft_source_init(&src, train, val, (int)n, 0, 0), FM_ERR_ARG, "fewer than seq + 2");
    batch_free(&b);
    fm_sft_data_free(train), fm_sft_data_free(val), fm_sft_data_free(all);
    free(path);
}

/* ---------------------------------------------------------------- out of memory */

/* Loading each format, splitting and making a source with the k-th allocation failing, for
 * every k until one run reaches no failure: each fails as out of memory, or recovers. */
static void test_out_of_memory(void **state) {
    (void)state;
    const char *files[4][2] = {
        {"oom-chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
                           "\"content\": \"yo yo\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                           "{\"role\": \"assistant\", \"content\": \"b\"}]}\n"},
        {"oom-pc.jsonl", "{\"prompt\": \"p\", \"completion\": \"c d\"}\n{\"prompt\": \"q\", \"completion\": \"e\"}\n"},
        {"oom.tsv", "good film\tpos\nbad\tneg\nok\tmeh\n"},
        {"oom.txt", "a few words of plain text for the text format, long enough for rows\n"},
    };
    for (int f = 0; f < 4; f++) {
        char *path = put(files[f][0], files[f][1]);
        for (long k = 1;; k++) {
            fm_sft_data *d = NULL, *train = NULL, *val = NULL;
            fm_data_source src = {0};
            fm_alloc_fail_at(k, 0);
            fm_status st = fm_sft_data_load(&d, path, NULL, tok, 0, NULL, 0);
            if (!st) st = fm_sft_data_split(d, 2, &train, &val);
            if (!st) st = fm_sft_source_init(&src, train, val, 2, 1, 0);
            int failed = fm_alloc_failed();
            fm_alloc_fail_at(0, 0);
            if (st && (st != FM_ERR_NOMEM || !strstr(fm_last_error(), "out of memory")))
                fail_msg("%s, allocation %ld failing: %s (\"%s\")", path, k, fm_status_name(st), fm_last_error());
            if (!st) fm_sft_source_free(&src);
            fm_sft_data_free(train), fm_sft_data_free(val), fm_sft_data_free(d);
            if (!failed) {
                assert_int_equal(st, FM_OK);
                break;
            }
        }
        free(path);
    }
}

/* ---------------------------------------------------------------- with the trainer */

/* The source drives fm's trainer: a small model learns prompt-completion data (the held-out
 * loss falls), and the data position is the rows consumed. */
static void test_trainer_steps(void **state) {
    (void)state;
    char *path = pc_file("train.jsonl", 12);
    fm_sft_data *d = load_ok(path, NULL, 0);
    fm_config cfg = {.n_layer = 1, .n_head = 2, .n_embd = 16, .vocab_size = fm_tokenizer_vocab_size(tok),
                     .n_positions = 32, .layer_norm_epsilon = 1e-5f};
    fm_model *m = NULL;
    fm_optimizer *o = NULL;
    fm_trainer *t = NULL;
    assert_int_equal(fm_model_init(&m, &cfg, 7), FM_OK);
    fm_adamw_config ac;
    fm_adamw_config_default(&ac);
    ac.lr = 1e-2f, ac.min_lr = 1e-2f, ac.warmup_steps = 0, ac.total_steps = 30;
    assert_int_equal(fm_optimizer_init(&o, m, &ac), FM_OK);
    fm_data_source src;
    assert_int_equal(fm_sft_source_init(&src, d, d, 16, 3, 0), FM_OK);
    fm_objective xent;
    fm_objective_cross_entropy(&xent);
    fm_train_state st = {0};
    fm_rng_seed(&st.rng, 1);
    fm_trainer_config tc = {.batch = 4, .seq = 16, .grad_accum = 1, .total_steps = 30};
    assert_int_equal(fm_trainer_init(&t, m, o, &st, &src, &xent, &tc), FM_OK);
    double before, after;
    assert_int_equal(fm_trainer_evaluate(t, &before), FM_OK);
    fm_step_report r;
    for (int i = 0; i < 30; i++) assert_int_equal(fm_trainer_step(t, &r), FM_OK);
    assert_int_equal(st.data_position, 30 * 4);
    assert_int_equal(fm_trainer_evaluate(t, &after), FM_OK);
    assert_true(after < before);
    fm_trainer_free(t);
    fm_optimizer_free(o);
    fm_model_free(m);
    fm_sft_source_free(&src);
    fm_sft_data_free(d);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_prompt_completion),
        cmocka_unit_test(test_tsv),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_tokenizer_without_markers),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_padded_rows_and_eval),
        cmocka_unit_test(test_tsv_rows),
        cmocka_unit_test(test_from_ids),
        cmocka_unit_test(test_stream_epochs_and_resume),
        cmocka_unit_test(test_text_source),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_trainer_steps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
