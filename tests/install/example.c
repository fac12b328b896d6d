/*
 * example.c — a program built against an installed libfm (tests/cli_install_test.sh), the way a
 * user's would be: `cc example.c $(pkg-config --cflags --libs fm)`. It checks that the header and
 * the library agree on the version, trains a small tokenizer, makes a small GPT, scores a text,
 * saves the model and loads it again, and prints one line the test reads:
 *   example: version V, vocabulary N, tokens T, loss L, reloaded loss L
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fm.h>

static int check(fm_status st, const char *what) {
    if (st == FM_OK) return 0;
    fprintf(stderr, "example: %s: %s (%s)\n", what, fm_last_error(), fm_status_name(st));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: example DIR (a folder to save a model into)\n");
        return 2;
    }
    if (strcmp(fm_version(), FM_VERSION) != 0) {
        fprintf(stderr, "example: header %s, library %s\n", FM_VERSION, fm_version());
        return 1;
    }
    const char *text = "In the beginning was the word, and the word was with the model. "
                       "The model read the word and wrote the next one, and the next one after it.";
    size_t len = strlen(text);
    fm_tokenizer *tok = NULL;
    if (check(fm_tokenizer_train(&tok, &text, &len, 1, 300), "tokenizer")) return 1;
    int *ids = NULL;
    size_t n = 0;
    if (check(fm_tokenizer_encode(tok, text, len, 0, &ids, &n), "encode")) return 1;
    fm_config cfg;
    fm_config_default(&cfg);
    cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 48, cfg.n_positions = 64;
    cfg.vocab_size = fm_tokenizer_vocab_size(tok);
    fm_model *model = NULL, *again = NULL;
    double nll = 0.0, nll_again = 0.0;
    size_t use = n < 64 ? n : 64;
    if (check(fm_model_init(&model, &cfg, 42), "init") || check(fm_score_tokens(model, ids, use, NULL, &nll), "score") ||
        check(fm_model_save(model, argv[1]), "save") || check(fm_model_load(&again, argv[1]), "load") ||
        check(fm_score_tokens(again, ids, use, NULL, &nll_again), "score again"))
        return 1;
    printf("example: version %s, vocabulary %d, tokens %zu, loss %.6f, reloaded loss %.6f\n", fm_version(),
           cfg.vocab_size, use, nll / (double)(use - 1), nll_again / (double)(use - 1));
    int ok = isfinite(nll) && nll == nll_again;
    free(ids);
    fm_model_free(model), fm_model_free(again), fm_tokenizer_free(tok);
    return ok ? 0 : 1;
}
