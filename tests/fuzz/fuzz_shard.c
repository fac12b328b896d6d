/*
 * fuzz_shard.c — the token shard reader's fuzz target (libFuzzer's entry point).
 *
 * An input is a token shard (format in fm.h), opened with fm_shard_open (src/io/data.c) twice:
 * as it is, and, when it has a header, with the tokens' checksum (bytes 24..31) and then the
 * header's (56..63) replaced by the right ones, so that mutations get past the checksums to the
 * checks behind them. A shard that opens must read
 * back tokens inside its vocabulary, and feeds the pre-training data source
 * (src/train/shard_source.c) as training and held-out shard: a few random batches and every
 * held-out batch, their tokens and targets inside the vocabulary. Errors are fine; crashes,
 * sanitizer reports, leaks and failed checks (abort) are not. Seeds: tests/fuzz/gen_seeds.c;
 * `make fuzz` runs it under libFuzzer, `make test` replays the committed corpus
 * (tests/fuzz/corpus/shard) with tests/fuzz/replay.c.
 */
#include "fuzz_common.h"

#define HEADER 64

static void check_batch(const fm_batch *b, int vocab) {
    fuzz_check(b->rows >= 0 && b->rows <= b->B, "a batch has too many rows");
    for (int i = 0; i < b->rows * b->T; i++)
        fuzz_check(b->tokens[i] >= 0 && b->tokens[i] < vocab && b->targets[i] >= 0 && b->targets[i] < vocab,
                   "a batch holds a token outside the vocabulary");
}

static void exercise(fm_shard *s, uint8_t knob) {
    size_t n = fm_shard_length(s);
    int vocab = fm_shard_vocab_size(s);
    fuzz_check(vocab >= 1, "a shard's vocabulary is empty");
    int buf[256];
    for (size_t at = 0; at < n; at += 256) {
        size_t k = n - at < 256 ? n - at : 256;
        fm_shard_read(s, at, k, buf);
        for (size_t i = 0; i < k; i++) fuzz_check(buf[i] >= 0 && buf[i] < vocab, "a token is outside the vocabulary");
    }
    /* the data source over it: seq 1..8 from the knob; refused when the shard is too short */
    int T = 1 + knob % 8, B = 2;
    fm_data_source src;
    if (fm_shard_source_init(&src, s, s, T, (size_t)(knob % 5) * T + 1) != FM_OK) {
        fuzz_check(n <= (size_t)T + 1, "the data source refused a long enough shard");
        return;
    }
    int tokens[2 * 8], targets[2 * 8];
    fm_batch b = {.B = B, .T = T, .tokens = tokens, .targets = targets};
    fm_rng rng;
    fm_rng_seed(&rng, knob);
    uint64_t position = 0;
    for (int i = 0; i < 3; i++) {
        fuzz_check(src.next(src.ctx, &b, &rng, &position) == FM_OK, "a training batch failed");
        check_batch(&b, vocab);
    }
    for (uint64_t i = 0; i < 64; i++) {
        fuzz_check(src.eval_next(src.ctx, &b, i) == FM_OK, "a held-out batch failed");
        check_batch(&b, vocab);
        if (b.rows < B) break;
    }
    fm_shard_source_free(&src);
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *file;
    if (!file) file = fuzz_path("shard.bin");
    uint8_t knob = size > 48 ? data[48] : 0; /* the tokenizer fingerprint's low byte */
    for (int fixed = 0; fixed < 2; fixed++) {
        if (fixed) {
            if (size < HEADER) break;
            uint8_t *copy = malloc(size);
            memcpy(copy, data, size);
            uint64_t sum = fnv1a(copy + HEADER, size - HEADER);
            memcpy(copy + 24, &sum, 8);
            sum = fnv1a(copy, 56);
            memcpy(copy + 56, &sum, 8);
            fuzz_write(file, copy, size);
            free(copy);
        } else {
            fuzz_write(file, data, size);
        }
        fm_shard *s;
        fm_status st = fm_shard_open(&s, file);
        fuzz_note(fixed ? "fm_shard_open, checksums made right" : "fm_shard_open", st);
        if (st != FM_OK) continue;
        exercise(s, knob);
        fm_shard_close(s);
    }
    return 0;
}
