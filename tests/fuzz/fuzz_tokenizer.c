/*
 * fuzz_tokenizer.c — the tokenizer's fuzz target (libFuzzer's entry point).
 *
 * The first byte of an input picks what the rest is:
 *   0  a tokenizer.json: load it; when it loads, it must encode the input and decode it back
 *      exactly, and save to a file that loads again with the same ids
 *   1  GPT-2's pair: encoder.json, a NUL byte, vocab.bpe; when they load, the same checks
 *   2  text for a small trained tokenizer: encode (special tokens allowed when the second byte
 *      is odd) and decode back exactly
 *   3  token ids (4 bytes each) to decode: out-of-range ids must fail cleanly
 * Errors are fine; crashes, sanitizer reports and failed round trips (abort) are not.
 * `make fuzz` runs it under libFuzzer; `make test` replays the committed corpus
 * (tests/fuzz/corpus/tokenizer) through the same function with tests/fuzz/replay.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

/* encode(text) then decode gives text back, with and without special tokens. */
static void roundtrip(const fm_tokenizer *tok, const uint8_t *text, size_t len) {
    for (int allow = 0; allow < 2; allow++) {
        int *ids;
        size_t n, back_len;
        char *back;
        check(fm_tokenizer_encode(tok, (const char *)text, len, allow, &ids, &n) == FM_OK, "encode failed");
        check(fm_tokenizer_decode(tok, ids, n, &back, &back_len) == FM_OK, "decode of encoded ids failed");
        check(back_len == len && memcmp(back, text, len) == 0, "decode(encode(text)) != text");
        free(ids);
        free(back);
    }
}

/* A loaded tokenizer: round trips, and its tokenizer.json loads again with the same tokens. */
static void exercise(fm_tokenizer *tok, const uint8_t *text, size_t len) {
    static const char sample[] = "Hello, world! It's 2024 \xe2\x80\x94 caf\xc3\xa9 \xf0\x9f\x98\x80  \n\n<|endoftext|>x\xff";
    roundtrip(tok, (const uint8_t *)sample, sizeof sample - 1);
    roundtrip(tok, text, len);
    char *json;
    size_t json_len;
    check(fm_tok_save_buffer(tok, &json, &json_len) == FM_OK, "save failed");
    fm_tokenizer *again;
    if (fm_tok_load_json_buffer(&again, json, json_len, "saved.json") != FM_OK) {
        fprintf(stderr, "reload: %s\n", fm_last_error());
        check(0, "a saved tokenizer does not load");
    }
    check(fm_tokenizer_vocab_size(again) == fm_tokenizer_vocab_size(tok), "vocabulary size changed on reload");
    int *a, *b;
    size_t na, nb;
    check(fm_tokenizer_encode(tok, (const char *)text, len, 1, &a, &na) == FM_OK, "encode failed");
    check(fm_tokenizer_encode(again, (const char *)text, len, 1, &b, &nb) == FM_OK, "encode failed");
    check(na == nb && memcmp(a, b, na * sizeof(int)) == 0, "a reloaded tokenizer encodes differently");
    free(a), free(b), free(json);
    fm_tokenizer_free(again);
}

static fm_tokenizer *small_tokenizer(void) {
    static fm_tokenizer *tok;
    if (tok) return tok;
    static const char corpus[] =
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        "and darkness was upon the face of the deep. It's 1234 o'clock; they'll say we're 'here'.\n\n"
        "  Indented   text\twith\ttabs \xe2\x80\x94 na\xc3\xafve caf\xc3\xa9 \xce\xb1\xce\xb2\xce\xb3 "
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80\xf0\x9f\x98\x80 <|endoftext|> <|user|>hi<|assistant|>";
    const char *texts[3] = {corpus, corpus, corpus};
    size_t lens[3] = {sizeof corpus - 1, sizeof corpus - 1, sizeof corpus - 1};
    check(fm_tokenizer_train(&tok, texts, lens, 3, 400) == FM_OK, "training the small tokenizer failed");
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] % 4;
    data++, size--;
    fm_tokenizer *tok = NULL;
    if (mode == 0) {
        if (fm_tok_load_json_buffer(&tok, (const char *)data, size, "fuzz.json") == FM_OK) {
            exercise(tok, data, size < 512 ? size : 512);
            fm_tokenizer_free(tok);
        }
    } else if (mode == 1) {
        const uint8_t *nul = memchr(data, 0, size);
        size_t enc_len = nul ? (size_t)(nul - data) : size;
        const uint8_t *merges = nul ? nul + 1 : data + size;
        size_t merges_len = size - enc_len - (nul ? 1 : 0);
        if (fm_tok_load_gpt2_buffers(&tok, (const char *)data, enc_len, "encoder.json", (const char *)merges,
                                     merges_len, "vocab.bpe") == FM_OK) {
            exercise(tok, data, size < 512 ? size : 512);
            fm_tokenizer_free(tok);
        }
    } else if (mode == 2) {
        roundtrip(small_tokenizer(), data, size);
    } else {
        fm_tokenizer *small = small_tokenizer();
        size_t n = size / 4;
        int *ids = malloc(sizeof(int) * (n + 1));
        int all_valid = 1;
        for (size_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, data + 4 * i, 4);
            ids[i] = (int)(v % 1000u) - 100; /* some negative, some past the vocabulary */
            all_valid &= ids[i] >= 0 && ids[i] < fm_tokenizer_vocab_size(small);
        }
        char *out;
        size_t out_len;
        fm_status st = fm_tokenizer_decode(small, ids, n, &out, &out_len);
        check((st == FM_OK) == all_valid, "decode accepted a bad id or refused a good one");
        if (st == FM_OK) {
            size_t total = 0;
            for (size_t i = 0; i < n; i++) {
                size_t l;
                check(fm_tokenizer_token_bytes(small, ids[i], &l) != NULL, "token_bytes of a valid id is NULL");
                total += l;
            }
            check(total == out_len && out[out_len] == '\0', "decoded length is wrong");
            free(out);
        }
        free(ids);
    }
    return 0;
}
