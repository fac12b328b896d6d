/*
 * tokenizer_internal.h — what the tokenizer's source files share (tokenizer.c, tokenizer_pretok.c,
 * tokenizer_io.c, tokenizer_train.c); not part of the public API.
 *
 * What it is for: the fm_tokenizer struct, the builder calls that every way of making a tokenizer
 * (loading, training) goes through, GPT-2's pre-tokeniser, the byte-level <-> unicode mapping of
 * tokenizer.json strings, and in-memory loaders that the fuzz target calls without files.
 * What it is not for: anything outside the tokenizer.
 */
#ifndef FM_TOKENIZER_INTERNAL_H
#define FM_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* Largest vocabulary accepted anywhere (ids are int; 2^24 keeps every table small enough). */
#define FM_TOK_MAX_VOCAB (1 << 24)
/* The special tokens of a trained vocabulary, in the order they take the last ids. */
#define FM_TOK_N_SPECIAL 6
extern const char *const fm_tok_special_names[FM_TOK_N_SPECIAL];

/* One merge rule: the adjacent pair (left, right) becomes result. Its rank is its index. */
typedef struct {
    int32_t left, right, result;
} fm_tok_merge;

struct fm_tokenizer {
    int n_vocab;         /* ids are 0..n_vocab-1; an id without a token is a hole (len -1) */
    int64_t *tok_off;    /* (n_vocab) where each token's bytes start in pool */
    int32_t *tok_len;    /* (n_vocab) bytes of each token, -1 for a hole */
    uint8_t *pool;       /* every token's bytes, back to back */
    size_t pool_len, pool_cap;
    int32_t byte_id[256]; /* the id of the one-byte token of each byte value */

    fm_tok_merge *merges; /* (n_merges) in rank order: a lower index merges first */
    int n_merges, merges_cap;
    /* Open-addressing map (left, right) -> rank: keys are left << 32 | right, empty slots hold
     * UINT64_MAX; pair_mask + 1 slots, a power of two at most half full. */
    uint64_t *pair_keys;  /* (pair_mask + 1) */
    int32_t *pair_rank;   /* (pair_mask + 1) */
    uint64_t pair_mask;

    int *special_ids;     /* (n_special) ids of the special tokens, their bytes are their text */
    int n_special;
    uint8_t special_first[256]; /* 1 where some special token starts with that byte */
};

/* ---------------------------------------------------------------- building (tokenizer.c) */

/* An empty tokenizer with n_vocab ids, all holes. */
fm_status fm_tok_new(fm_tokenizer **out, int n_vocab);
/* Gives id its bytes (the id must still be a hole). */
fm_status fm_tok_set_token(fm_tokenizer *tok, int id, const void *bytes, size_t len);
fm_status fm_tok_add_merge(fm_tokenizer *tok, int left, int right, int result);
fm_status fm_tok_add_special(fm_tokenizer *tok, int id);
/* Checks and indexes a built tokenizer: every byte has a one-byte token, merges are consistent
 * (result bytes = left bytes + right bytes), and builds the pair map. name prefixes messages. */
fm_status fm_tok_finish(fm_tokenizer *tok, const char *name);

/* The rank of the pair (left, right), or -1 when no merge rule joins them. */
static inline int fm_tok_pair_rank(const fm_tokenizer *tok, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint64_t h = (key * 0x9E3779B97F4A7C15ull) >> 20;
    for (;;) {
        h &= tok->pair_mask;
        uint64_t k = tok->pair_keys[h];
        if (k == key) return tok->pair_rank[h];
        if (k == UINT64_MAX) return -1;
        h++;
    }
}

/* BPE of one piece whose symbols are ids[0..n) (initially one id per byte): merges in rank
 * order, leftmost first among equal ranks, in place. Returns the number of ids left. The plain
 * version is quadratic and is the tests' oracle; the heap version is used for long pieces. */
size_t fm_tok_bpe_plain(const fm_tokenizer *tok, int32_t *ids, size_t n);
size_t fm_tok_bpe_heap(const fm_tokenizer *tok, int32_t *ids, size_t n);

/* ---------------------------------------------------------------- pre-tokenising (tokenizer_pretok.c) */

/* GPT-2's pre-tokenisation, the regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * as a scanner over UTF-8 text s[0..n). Returns the end of the pre-token that starts at i < n.
 * A byte that is not part of valid UTF-8 is a pre-token of its own (and counts as \S). */
size_t fm_tok_pretok_next(const uint8_t *s, size_t n, size_t i);

/* ---------------------------------------------------------------- files (tokenizer_io.c) */

/* Loaders from memory, for the fuzz target and for fm_tokenizer_load: name is used in messages. */
fm_status fm_tok_load_json_buffer(fm_tokenizer **out, const char *data, size_t len, const char *name);
fm_status fm_tok_load_gpt2_buffers(fm_tokenizer **out, const char *encoder_json, size_t encoder_len,
                                   const char *encoder_name, const char *merges_txt, size_t merges_len,
                                   const char *merges_name);
/* The tokenizer.json text of tok, fm_malloc'd (*len bytes, NUL-terminated). */
fm_status fm_tok_save_buffer(const fm_tokenizer *tok, char **out, size_t *len);

#endif /* FM_TOKENIZER_INTERNAL_H */
