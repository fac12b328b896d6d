/*
 * test_data.c — token shards' header and the tokenizer fingerprint they record.
 *
 * - every bit of the 64-byte header, flipped alone, makes fm_shard_open refuse the file, naming it
 *   (the magic and the version by name, every other field through the header checksum): before the
 *   header checksum a flip in the source-bytes field changed the bits per byte silently;
 * - a version 1 shard (from an older fm) is refused, saying to run fm data prepare again;
 * - fm_tokenizer_fingerprint: equal for a tokenizer saved and loaded again, for its tokenizer.json
 *   printed in another JSON layout, and for GPT-2's own files against the tokenizer.json made from
 *   them; different for one merge swapped, one special token added, one token made special;
 * - fm_shard_check_tokenizer refuses a shard of another tokenizer naming the shard, both
 *   fingerprints and the tokenizer, and a shard that records none; the shard data source refuses a
 *   training and a held-out shard of two tokenizers.
 */
#include "test_util.h"

#include <cjson/cJSON.h>

/* Two corpora of a few kilobytes: tokenizers of one vocabulary size trained on them differ. */
static char corpus_a[16384], corpus_b[16384];

static void make_corpora(void) {
    size_t na = 0, nb = 0;
    for (int i = 1; i <= 150; i++) {
        na += (size_t)snprintf(corpus_a + na, sizeof corpus_a - na, "Line %d: the %d lambs and %d sheep went %s the hill.\n",
                               i, i % 7, i % 5, i % 3 ? "down" : "up");
        nb += (size_t)snprintf(corpus_b + nb, sizeof corpus_b - nb, "fox %d jumps over %d lazy dogs, quickly %s.\n",
                               i * 3, i % 9, i % 2 ? "far away" : "near");
    }
}

static fm_tokenizer *train_on(const char *text, int vocab) {
    fm_tokenizer *tok;
    size_t len = strlen(text);
    assert_int_equal(fm_tokenizer_train(&tok, &text, &len, 1, vocab), FM_OK);
    assert_int_equal(fm_tokenizer_vocab_size(tok), vocab);
    return tok;
}

static char *hex(uint64_t v) {
    static char buf[4][17];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%016llx", (unsigned long long)v);
    return buf[k];
}

/* ---------------------------------------------------------------- the header */

static void test_header_bit_flips(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *path = test_path(dir, "val.bin");
    int tokens[500];
    for (int wide = 0; wide < 2; wide++) {
        int V = wide ? 70000 : 300;
        for (int i = 0; i < 500; i++) tokens[i] = (i * 7919) % V;
        assert_int_equal(fm_shard_write_with_fingerprint(path, tokens, 500, V, 1600, 0x1a2b3c4d5e6f7081ull), FM_OK);
        fm_shard *s;
        assert_int_equal(fm_shard_open(&s, path), FM_OK);
        assert_int_equal(fm_shard_source_bytes(s), 1600);
        assert_int_equal(fm_shard_vocab_size(s), V);
        assert_true(fm_shard_tokenizer_fingerprint(s) == 0x1a2b3c4d5e6f7081ull);
        fm_shard_close(s);
        size_t size;
        unsigned char *bytes = read_file_bytes(path, &size);
        assert_int_equal(size, 64 + 500 * (wide ? 4 : 2));
        for (int at = 0; at < 64; at++) {
            for (int bit = 0; bit < 8; bit++) {
                bytes[at] ^= (unsigned char)(1u << bit);
                write_file_bytes(path, bytes, size);
                const char *want = at < 8 ? "bad magic" : at < 12 ? "version" : "header checksum mismatch";
                fm_status st = fm_shard_open(&s, path);
                if (st != FM_ERR_FORMAT || !strstr(fm_last_error(), want) || !strstr(fm_last_error(), path))
                    fail_msg("byte %d bit %d (%s shard): got %s \"%s\", want a format error naming %s and \"%s\"",
                             at, bit, wide ? "wide" : "narrow", fm_status_name(st), fm_last_error(), path, want);
                assert_null(s);
                bytes[at] ^= (unsigned char)(1u << bit);
            }
        }
        write_file_bytes(path, bytes, size);
        assert_int_equal(fm_shard_open(&s, path), FM_OK);
        fm_shard_close(s);
        /* a version 1 shard (what fm wrote before the header checksum) */
        bytes[8] = 1;
        write_file_bytes(path, bytes, size);
        assert_error_contains(fm_shard_open(&s, path), FM_ERR_FORMAT, "version 1");
        assert_true(strstr(fm_last_error(), "fm data prepare") != NULL);
        free(bytes);
    }
    remove_dir_recursive(dir);
    free(dir), free(path);
}

/* ---------------------------------------------------------------- the fingerprint */

/* tok's tokenizer.json as a cJSON tree */
static cJSON *as_json(const fm_tokenizer *tok, const char *path) {
    assert_int_equal(fm_tokenizer_save(tok, path), FM_OK);
    char *text = (char *)read_file_bytes(path, NULL);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    free(text);
    return root;
}

/* the tokenizer of a JSON tree (printed compactly or formatted) */
static fm_tokenizer *from_json(const cJSON *root, const char *path, int formatted) {
    char *text = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    write_file_bytes(path, text, strlen(text));
    free(text);
    fm_tokenizer *tok;
    fm_status st = fm_tokenizer_load(&tok, path);
    if (st) fail_msg("loading the edited tokenizer: %s", fm_last_error());
    return tok;
}

static void test_fingerprint(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *path = test_path(dir, "tokenizer.json"), *edited = test_path(dir, "edited.json");
    fm_tokenizer *a = train_on(corpus_a, 300), *b = train_on(corpus_b, 300), *back;
    uint64_t fa = fm_tokenizer_fingerprint(a);
    assert_true(fa != 0);
    assert_true(fm_tokenizer_fingerprint(a) == fa); /* a function of the content */
    assert_int_equal(fm_tokenizer_vocab_size(a), fm_tokenizer_vocab_size(b));
    assert_true(fm_tokenizer_fingerprint(b) != fa); /* same size, other merges */

    /* saved and loaded again; printed in other JSON layouts */
    assert_int_equal(fm_tokenizer_save(a, path), FM_OK);
    assert_int_equal(fm_tokenizer_load(&back, path), FM_OK);
    assert_true(fm_tokenizer_fingerprint(back) == fa);
    fm_tokenizer_free(back);
    cJSON *root = as_json(a, path);
    for (int formatted = 0; formatted < 2; formatted++) {
        back = from_json(root, edited, formatted);
        assert_true(fm_tokenizer_fingerprint(back) == fa);
        fm_tokenizer_free(back);
    }
    /* the vocabulary's keys in reverse order: the same tokenizer */
    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *reversed = cJSON_CreateObject(), *it;
    int n_keys = cJSON_GetArraySize(vocab);
    for (int i = n_keys - 1; i >= 0; i--) {
        it = cJSON_GetArrayItem(vocab, i);
        cJSON_AddItemToObject(reversed, it->string, cJSON_CreateNumber(it->valuedouble));
    }
    cJSON_ReplaceItemInObjectCaseSensitive(model, "vocab", reversed);
    back = from_json(root, edited, 1);
    assert_true(fm_tokenizer_fingerprint(back) == fa);
    fm_tokenizer_free(back);

    /* one merge swapped with the next (two merges that do not build on each other) */
    cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    int n_merges = cJSON_GetArraySize(merges), swapped = 0;
    for (int r = 0; r + 1 < n_merges && !swapped; r++) {
        cJSON *m1 = cJSON_GetArrayItem(merges, r), *m2 = cJSON_GetArrayItem(merges, r + 1);
        char *s1 = strdup(m1->valuestring), *s2 = strdup(m2->valuestring);
        char joined[256];
        snprintf(joined, sizeof joined, "%s", s1);
        char *space = strchr(joined, ' ');
        if (space) memmove(space, space + 1, strlen(space)); /* the first merge's result */
        if (!strstr(s2, joined)) {
            cJSON_ReplaceItemInArray(merges, r, cJSON_CreateString(s2));
            cJSON_ReplaceItemInArray(merges, r + 1, cJSON_CreateString(s1));
            swapped = 1;
            back = from_json(root, edited, 1);
            assert_int_equal(fm_tokenizer_vocab_size(back), 300);
            assert_true(fm_tokenizer_fingerprint(back) != fa);
            fm_tokenizer_free(back);
            cJSON_ReplaceItemInArray(merges, r, cJSON_CreateString(s1));
            cJSON_ReplaceItemInArray(merges, r + 1, cJSON_CreateString(s2));
        }
        free(s1), free(s2);
    }
    assert_true(swapped);
    back = from_json(root, edited, 1); /* restored */
    assert_true(fm_tokenizer_fingerprint(back) == fa);
    fm_tokenizer_free(back);

    /* one special token added (a new id), and an ordinary token made special (same size) */
    cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    cJSON *extra = cJSON_CreateObject();
    cJSON_AddNumberToObject(extra, "id", 300);
    cJSON_AddStringToObject(extra, "content", "<|extra|>");
    cJSON_AddBoolToObject(extra, "special", 1);
    cJSON_AddItemToArray(added, extra);
    back = from_json(root, edited, 1);
    assert_int_equal(fm_tokenizer_vocab_size(back), 301);
    assert_true(fm_tokenizer_fingerprint(back) != fa);
    fm_tokenizer_free(back);
    cJSON_DeleteItemFromArray(added, cJSON_GetArraySize(added) - 1);
    cJSON *ordinary = NULL; /* the first merge's result, id 256 */
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(model, "vocab"))
        if (it->valuedouble == 256) ordinary = it;
    assert_non_null(ordinary);
    extra = cJSON_CreateObject();
    cJSON_AddNumberToObject(extra, "id", ordinary->valuedouble);
    cJSON_AddStringToObject(extra, "content", ordinary->string);
    cJSON_AddBoolToObject(extra, "special", 1);
    cJSON_AddItemToArray(added, extra);
    fm_tokenizer *made_special = from_json(root, edited, 1);
    assert_int_equal(fm_tokenizer_vocab_size(made_special), 300);
    assert_true(fm_tokenizer_fingerprint(made_special) != fa);
    fm_tokenizer_free(made_special);
    cJSON_Delete(root);

    /* GPT-2's own files and the tokenizer.json fm makes from them: one tokenizer */
    char *gpt2 = test_path(dir, "gpt2"), cmd[1024];
    mkdir(gpt2, 0755);
    snprintf(cmd, sizeof cmd, "gzip -dc tests/fixtures/tokenizer/gpt2/encoder.json.gz >%s/encoder.json && "
             "gzip -dc tests/fixtures/tokenizer/gpt2/vocab.bpe.gz >%s/vocab.bpe", gpt2, gpt2);
    if (system(cmd) == 0) {
        fm_tokenizer *g;
        assert_int_equal(fm_tokenizer_load(&g, gpt2), FM_OK);
        assert_int_equal(fm_tokenizer_save(g, path), FM_OK);
        assert_int_equal(fm_tokenizer_load(&back, path), FM_OK);
        assert_true(fm_tokenizer_fingerprint(back) == fm_tokenizer_fingerprint(g));
        assert_true(fm_tokenizer_fingerprint(g) != fa);
        fm_tokenizer_free(back), fm_tokenizer_free(g);
    } else {
        fail_msg("cannot unpack GPT-2's files (%s)", cmd);
    }
    free(gpt2);
    fm_tokenizer_free(a), fm_tokenizer_free(b);
    remove_dir_recursive(dir);
    free(dir), free(path), free(edited);
}

/* ---------------------------------------------------------------- shards against tokenizers */

static void test_check_tokenizer(void **state) {
    (void)state;
    char *dir = make_temp_dir(), *train_path = test_path(dir, "train.bin"), *val_path = test_path(dir, "val.bin");
    char *a_json = test_path(dir, "tokenizer.json"), *c_json = test_path(dir, "third.json");
    fm_tokenizer *a = train_on(corpus_a, 300), *b = train_on(corpus_b, 300), *c = train_on(corpus_a, 280);
    assert_int_equal(fm_tokenizer_save(a, a_json), FM_OK);
    assert_int_equal(fm_tokenizer_save(c, c_json), FM_OK);
    uint64_t fa = fm_tokenizer_fingerprint(a), fb = fm_tokenizer_fingerprint(b), fc = fm_tokenizer_fingerprint(c);
    int *ids;
    size_t n;
    assert_int_equal(fm_tokenizer_encode(a, corpus_a, strlen(corpus_a), 0, &ids, &n), FM_OK);
    assert_int_equal(fm_shard_write_with_fingerprint(train_path, ids, n, 300, strlen(corpus_a), fa), FM_OK);
    fm_shard *s;
    assert_int_equal(fm_shard_open(&s, train_path), FM_OK);
    assert_true(fm_shard_tokenizer_fingerprint(s) == fa);
    assert_int_equal(fm_shard_check_tokenizer(s, a, "A.json", NULL), FM_OK);
    /* another tokenizer of the same size: both fingerprints, the shard and the tokenizer named */
    assert_error_contains(fm_shard_check_tokenizer(s, b, "RUN/tokenizer.json", NULL), FM_ERR_FORMAT, train_path);
    assert_non_null(strstr(fm_last_error(), hex(fa)));
    assert_non_null(strstr(fm_last_error(), hex(fb)));
    assert_non_null(strstr(fm_last_error(), "RUN/tokenizer.json"));
    /* with the data's tokenizer.json as a hint: said to be the shard's, or a third one */
    assert_error_contains(fm_shard_check_tokenizer(s, b, "RUN/tokenizer.json", a_json), FM_ERR_FORMAT, "(that of");
    assert_non_null(strstr(fm_last_error(), a_json));
    assert_error_contains(fm_shard_check_tokenizer(s, b, "RUN/tokenizer.json", c_json), FM_ERR_FORMAT, "third");
    assert_non_null(strstr(fm_last_error(), hex(fc)));

    /* a shard that records no tokenizer */
    fm_shard *anon;
    assert_int_equal(fm_shard_write(val_path, ids, n, 300, strlen(corpus_a)), FM_OK);
    assert_int_equal(fm_shard_open(&anon, val_path), FM_OK);
    assert_true(fm_shard_tokenizer_fingerprint(anon) == 0);
    assert_error_contains(fm_shard_check_tokenizer(anon, a, "A.json", NULL), FM_ERR_FORMAT, "records no tokenizer");
    /* training and held-out shards of two tokenizers */
    fm_data_source src;
    assert_error_contains(fm_shard_source_init(&src, s, anon, 8, 64), FM_ERR_FORMAT, hex(fa));
    fm_shard_close(anon);
    assert_int_equal(fm_shard_write_with_fingerprint(val_path, ids, n, 300, strlen(corpus_a), fb), FM_OK);
    assert_int_equal(fm_shard_open(&anon, val_path), FM_OK);
    assert_error_contains(fm_shard_source_init(&src, s, anon, 8, 64), FM_ERR_FORMAT, hex(fb));
    fm_shard_close(anon);
    assert_int_equal(fm_shard_write_with_fingerprint(val_path, ids, n, 300, strlen(corpus_a), fa), FM_OK);
    assert_int_equal(fm_shard_open(&anon, val_path), FM_OK);
    assert_int_equal(fm_shard_source_init(&src, s, anon, 8, 64), FM_OK);
    fm_shard_source_free(&src);
    fm_shard_close(anon);
    fm_shard_close(s);
    free(ids);
    fm_tokenizer_free(a), fm_tokenizer_free(b), fm_tokenizer_free(c);
    remove_dir_recursive(dir);
    free(dir), free(train_path), free(val_path), free(a_json), free(c_json);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_bit_flips),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_check_tokenizer),
    };
    make_corpora();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
