/*
 * tokenizer_fingerprint.c — a 64-bit name for a tokenizer's content.
 *
 * What it is for: token shards record the fingerprint of the tokenizer that made them, and the
 * commands that feed shards to a model compare it with the fingerprint of the model's
 * tokenizer.json, so ids made by one tokenizer are never read as another's text (two tokenizers
 * of one vocabulary size give the same shapes and train "fine" on each other's ids).
 *
 * The content hashed (FNV-1a 64 over a canonical byte stream, every integer little-endian):
 *   "fm tokenizer 1\0", u32 number of ids; per id in order: u8 kind (0 a hole, 1 an ordinary
 *   token, 2 a special token) and, unless a hole, u32 length and the token's bytes; u32 number of
 *   merges; per merge in rank order: u32 left, right, result.
 * So it depends on what the tokenizer does (every token's bytes and id, the merges and their
 * order, which ids are special) and on nothing of how a file spelled it (JSON whitespace, key
 * order, GPT-2's files or tokenizer.json): a tokenizer saved and loaded again keeps it.
 * Not cryptographic: it tells tokenizers apart, it does not resist a forger.
 * Self-contained (no core/hash.c) so that the tokenizer's fuzz build links without it.
 */
#include "tokenizer/tokenizer_internal.h"

typedef struct {
    uint64_t h;
} fp_state;

static void fp_bytes(fp_state *s, const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t h = s->h;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    s->h = h;
}

static void fp_u32(fp_state *s, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    fp_bytes(s, b, 4);
}

uint64_t fm_tokenizer_fingerprint(const fm_tokenizer *tok) {
    fp_state s = {0xcbf29ce484222325ull};
    static const char tag[] = "fm tokenizer 1"; /* hashed with its NUL */
    fp_bytes(&s, tag, sizeof tag);
    if (!tok) return s.h;
    fp_u32(&s, (uint32_t)tok->n_vocab);
    for (int id = 0; id < tok->n_vocab; id++) {
        uint8_t kind = tok->tok_len[id] < 0 ? 0 : 1;
        for (int k = 0; kind && k < tok->n_special; k++)
            if (tok->special_ids[k] == id) kind = 2;
        fp_bytes(&s, &kind, 1);
        if (!kind) continue;
        fp_u32(&s, (uint32_t)tok->tok_len[id]);
        fp_bytes(&s, tok->pool + tok->tok_off[id], (size_t)tok->tok_len[id]);
    }
    fp_u32(&s, (uint32_t)tok->n_merges);
    for (int r = 0; r < tok->n_merges; r++) {
        fp_u32(&s, (uint32_t)tok->merges[r].left);
        fp_u32(&s, (uint32_t)tok->merges[r].right);
        fp_u32(&s, (uint32_t)tok->merges[r].result);
    }
    return s.h;
}
