/*
 * test_resize.c — special tokens added to a tokenizer, and the model's vocabulary grown to match
 * (what fm finetune --add-chat-tokens does for a tokenizer without the chat markers).
 */
#include <math.h>

#include "test_util.h"

#define REF "tests/ref/tasks" /* a 2-layer GPT-2 of vocabulary 300 with its tokenizer */

static void test_add_special_and_resize(void **state) {
    (void)state;
    fm_tokenizer *tok = NULL;
    assert_int_equal(fm_tokenizer_load(&tok, REF "/tokenizer.json"), FM_OK);
    int V = fm_tokenizer_vocab_size(tok), id = -1, again = -1;
    assert_int_equal(fm_tokenizer_add_special(tok, "<|user|>", &id), FM_OK); /* already there */
    assert_int_equal(id, fm_tokenizer_special_id(tok, "<|user|>"));
    assert_int_equal(fm_tokenizer_vocab_size(tok), V);
    assert_int_equal(fm_tokenizer_add_special(tok, "<|tool|>", &id), FM_OK);
    assert_int_equal(id, V);
    assert_int_equal(fm_tokenizer_vocab_size(tok), V + 1);
    assert_int_equal(fm_tokenizer_add_special(tok, "<|tool|>", &again), FM_OK);
    assert_int_equal(again, V);
    /* the new token is one id where specials are allowed, ordinary text where they are not */
    int *ids = NULL;
    size_t n = 0;
    const char *text = "<|tool|>hi";
    assert_int_equal(fm_tokenizer_encode(tok, text, strlen(text), 1, &ids, &n), FM_OK);
    assert_true(n >= 2);
    assert_int_equal(ids[0], V);
    free(ids);
    assert_int_equal(fm_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n), FM_OK);
    for (size_t i = 0; i < n; i++) assert_int_not_equal(ids[i], V);
    free(ids);
    /* saved and loaded again, it keeps the token */
    char *dir = make_temp_dir(), *path = test_path(dir, "tokenizer.json");
    assert_int_equal(fm_tokenizer_save(tok, path), FM_OK);
    fm_tokenizer *back = NULL;
    assert_int_equal(fm_tokenizer_load(&back, path), FM_OK);
    assert_int_equal(fm_tokenizer_special_id(back, "<|tool|>"), V);
    assert_int_equal(fm_tokenizer_fingerprint(back), fm_tokenizer_fingerprint(tok));
    fm_tokenizer_free(back);

    /* the model grows a row: the old logits stay, the new row is the mean embedding */
    fm_model *m = NULL, *r = NULL;
    assert_int_equal(fm_model_load(&m, REF), FM_OK);
    assert_int_equal(fm_model_resize_vocab(m, V - 1, &r), FM_ERR_ARG);
    assert_int_equal(fm_model_resize_vocab(m, V + 1, &r), FM_OK);
    const fm_config *c = fm_model_config(r);
    assert_int_equal(c->vocab_size, V + 1);
    int C = c->n_embd, tokens[6] = {1, 5, 9, 33, 100, 7};
    assert_int_equal(fm_model_forward(m, tokens, 1, 6), FM_OK);
    assert_int_equal(fm_model_forward(r, tokens, 1, 6), FM_OK);
    for (int t = 0; t < 6; t++)
        for (int v = 0; v < V; v++)
            assert_true(fm_model_logits(r)[(size_t)t * (V + 1) + v] == fm_model_logits(m)[(size_t)t * V + v]);
    const float *wte = fm_model_tensor(r, fm_model_find_tensor(r, "wte.weight"))->data;
    for (int ch = 0; ch < C; ch++) {
        double mean = 0;
        for (int v = 0; v < V; v++) mean += wte[(size_t)v * C + ch];
        assert_true(fabs(mean / V - wte[(size_t)V * C + ch]) < 1e-6);
    }
    fm_model_free(m);
    fm_model_free(r);
    fm_tokenizer_free(tok);
    remove_dir_recursive(dir);
    free(dir), free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_add_special_and_resize)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
