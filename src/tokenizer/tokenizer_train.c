/*
 * tokenizer_train.c — learning byte-level BPE merges from a corpus.
 *
 * What it is for: fm_tokenizer_train. The corpus is cut at special-token strings, pre-tokenised
 * with GPT-2's regex, and the distinct pieces are counted ("words" with frequencies). Every word
 * starts as its bytes (ids 0..255 are the bytes themselves). Then, until the vocabulary is full:
 * take the most frequent adjacent pair (ties: the smaller left id, then the smaller right id),
 * make it a merge rule, and apply it in the words that hold it. Pair counts are updated
 * incrementally (only around each replaced pair) and kept in a max-heap with lazy deletion, and
 * each pair remembers the words it occurs in, so a merge touches only those words instead of
 * recounting the corpus. Merging stops early when no pair occurs twice.
 *
 * A merge whose bytes equal an existing token reuses that token's id (as Hugging Face's trainer
 * does), so ids stay unique by bytes. The six special tokens take the last ids.
 * What it is not for: encoding (tokenizer.c) or files (tokenizer_io.c).
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/tokenizer_internal.h"

/* A distinct piece of the corpus and its current symbols. */
typedef struct {
    const uint8_t *bytes; /* points into the caller's text */
    size_t len;
    int64_t freq;
    size_t sym;           /* its symbols are syms[sym .. sym + n) */
    size_t n;
    int64_t stamp;        /* the last merge that visited it */
} word;

/* An adjacent pair of ids, its weighted count, and the words it may occur in (a word may be
 * listed twice, or still be listed after the pair left it: visits check). */
typedef struct {
    int32_t left, right;
    int64_t count;
    int32_t *where;
    size_t n_where, cap_where;
    int dirty;            /* its count changed during the current merge */
} pair;

typedef struct {
    int64_t count;
    int32_t pair;
} heap_entry;

typedef struct {
    /* words and a map piece bytes -> word */
    word *words;
    size_t n_words, cap_words;
    uint64_t *word_hash;  /* (word_mask + 1) hash of the slot's piece, 0 when empty */
    int32_t *word_slot;   /* (word_mask + 1) word index */
    size_t word_mask;
    int32_t *syms;
    /* pairs and a map (left, right) -> pair */
    pair *pairs;
    size_t n_pairs, cap_pairs;
    uint64_t *pair_key;   /* (pair_mask + 1), UINT64_MAX when empty */
    int32_t *pair_slot;
    size_t pair_mask;
    int32_t *dirty;       /* pairs changed by the current merge */
    size_t n_dirty, cap_dirty;
    heap_entry *heap;
    size_t n_heap, cap_heap;
    /* tokens: bytes of each id and a map bytes -> id */
    uint8_t *tok_bytes;
    size_t tok_bytes_len, tok_bytes_cap;
    size_t *tok_off, *tok_len;
    size_t cap_off, cap_len;
    int n_tokens;
    uint64_t *tok_hash;   /* (tok_mask + 1), 0 when empty */
    int32_t *tok_slot;
    size_t tok_mask;
    fm_tok_merge *merges;
    int n_merges;
    size_t cap_merges;
    int oom;
} trainer;

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
    h ^= h >> 31;
    return h | 1;
}

/* Grows *array (of elem bytes each) to hold at least need elements. */
static int grow(void *array, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *p = fm_realloc(*(void **)array, c * elem);
    if (!p) return 0;
    *(void **)array = p;
    *cap = c;
    return 1;
}

/* ---------------------------------------------------------------- counting words */

static int word_map_resize(trainer *t, size_t slots) {
    uint64_t *h = fm_calloc(slots, sizeof *h);
    int32_t *w = fm_malloc(slots * sizeof *w);
    if (!h || !w) {
        fm_free(h), fm_free(w);
        return 0;
    }
    for (size_t i = 0; t->word_hash && i <= t->word_mask; i++) {
        if (!t->word_hash[i]) continue;
        size_t s = t->word_hash[i] & (slots - 1);
        while (h[s]) s = (s + 1) & (slots - 1);
        h[s] = t->word_hash[i];
        w[s] = t->word_slot[i];
    }
    fm_free(t->word_hash), fm_free(t->word_slot);
    t->word_hash = h, t->word_slot = w, t->word_mask = slots - 1;
    return 1;
}

/* Counts one piece. */
static void count_piece(trainer *t, const uint8_t *p, size_t len) {
    if (len < 2) return; /* a one-byte piece holds no pair */
    uint64_t h = hash_bytes(p, len);
    size_t s = h & t->word_mask;
    for (; t->word_hash[s]; s = (s + 1) & t->word_mask) {
        word *w = &t->words[t->word_slot[s]];
        if (t->word_hash[s] == h && w->len == len && memcmp(w->bytes, p, len) == 0) {
            w->freq++;
            return;
        }
    }
    if (t->n_words >= INT32_MAX - 1 || !grow(&t->words, &t->cap_words, t->n_words + 1, sizeof(word))) {
        t->oom = 1;
        return;
    }
    t->words[t->n_words] = (word){p, len, 1, 0, len, -1};
    t->word_hash[s] = h;
    t->word_slot[s] = (int32_t)t->n_words++;
    if (2 * t->n_words > t->word_mask + 1 && !word_map_resize(t, 2 * (t->word_mask + 1))) t->oom = 1;
}

/* Pre-tokenises text[0, n) (an ordinary stretch) and counts its pieces. */
static void count_text(trainer *t, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n && !t->oom;) {
        size_t j = fm_tok_pretok_next(s, n, i);
        count_piece(t, s + i, j - i);
        i = j;
    }
}

/* Counts a whole text, cut at the special-token strings (they are not learned). */
static void count_corpus_text(trainer *t, const uint8_t *s, size_t n) {
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '<') continue;
        for (int k = 0; k < FM_TOK_N_SPECIAL; k++) {
            size_t len = strlen(fm_tok_special_names[k]);
            if (len <= n - i && memcmp(s + i, fm_tok_special_names[k], len) == 0) {
                count_text(t, s + start, i - start);
                i += len - 1;
                start = i + 1;
                break;
            }
        }
    }
    count_text(t, s + start, n - start);
}

/* ---------------------------------------------------------------- pairs */

static int pair_map_resize(trainer *t, size_t slots) {
    uint64_t *k = fm_malloc(slots * sizeof *k);
    int32_t *p = fm_malloc(slots * sizeof *p);
    if (!k || !p) {
        fm_free(k), fm_free(p);
        return 0;
    }
    memset(k, 0xFF, slots * sizeof *k);
    for (size_t i = 0; t->pair_key && i <= t->pair_mask; i++) {
        if (t->pair_key[i] == UINT64_MAX) continue;
        size_t s = (t->pair_key[i] * 0x9E3779B97F4A7C15ull >> 17) & (slots - 1);
        while (k[s] != UINT64_MAX) s = (s + 1) & (slots - 1);
        k[s] = t->pair_key[i];
        p[s] = t->pair_slot[i];
    }
    fm_free(t->pair_key), fm_free(t->pair_slot);
    t->pair_key = k, t->pair_slot = p, t->pair_mask = slots - 1;
    return 1;
}

/* The pair (left, right), created with count 0 when new; -1 when out of memory. */
static int32_t get_pair(trainer *t, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t s = (key * 0x9E3779B97F4A7C15ull >> 17) & t->pair_mask;
    for (; t->pair_key[s] != UINT64_MAX; s = (s + 1) & t->pair_mask)
        if (t->pair_key[s] == key) return t->pair_slot[s];
    if (t->n_pairs >= INT32_MAX - 1 || !grow(&t->pairs, &t->cap_pairs, t->n_pairs + 1, sizeof(pair))) {
        t->oom = 1;
        return -1;
    }
    t->pairs[t->n_pairs] = (pair){left, right, 0, NULL, 0, 0, 0};
    t->pair_key[s] = key;
    t->pair_slot[s] = (int32_t)t->n_pairs++;
    if (2 * t->n_pairs > t->pair_mask + 1 && !pair_map_resize(t, 2 * (t->pair_mask + 1))) t->oom = 1;
    return (int32_t)t->n_pairs - 1;
}

/* Adds delta to the count of (left, right); a pair that gains notes word w. */
static void add_pair(trainer *t, int32_t left, int32_t right, int64_t delta, int32_t w) {
    int32_t p = get_pair(t, left, right);
    if (p < 0) return;
    pair *pr = &t->pairs[p];
    pr->count += delta;
    if (delta > 0 && (pr->n_where == 0 || pr->where[pr->n_where - 1] != w)) {
        if (!grow(&pr->where, &pr->cap_where, pr->n_where + 1, sizeof(int32_t))) {
            t->oom = 1;
            return;
        }
        pr->where[pr->n_where++] = w;
    }
    if (!pr->dirty) {
        if (!grow(&t->dirty, &t->cap_dirty, t->n_dirty + 1, sizeof(int32_t))) {
            t->oom = 1;
            return;
        }
        pr->dirty = 1;
        t->dirty[t->n_dirty++] = p;
    }
}

/* ---------------------------------------------------------------- the heap */

/* a before b: the higher count, then the smaller left id, then the smaller right id */
static int before(const trainer *t, heap_entry a, heap_entry b) {
    if (a.count != b.count) return a.count > b.count;
    const pair *pa = &t->pairs[a.pair], *pb = &t->pairs[b.pair];
    if (pa->left != pb->left) return pa->left < pb->left;
    return pa->right < pb->right;
}

static void heap_push(trainer *t, heap_entry x) {
    if (!grow(&t->heap, &t->cap_heap, t->n_heap + 1, sizeof(heap_entry))) {
        t->oom = 1;
        return;
    }
    size_t i = t->n_heap++;
    while (i > 0 && before(t, x, t->heap[(i - 1) / 2])) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = x;
}

static heap_entry heap_pop(trainer *t) {
    heap_entry top = t->heap[0], x = t->heap[--t->n_heap];
    size_t i = 0, n = t->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(t, t->heap[c + 1], t->heap[c])) c++;
        if (!before(t, t->heap[c], x)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n > 0) t->heap[i] = x;
    return top;
}

/* Pushes every pair whose count changed, with its new count. */
static void push_dirty(trainer *t) {
    for (size_t i = 0; i < t->n_dirty; i++) {
        pair *pr = &t->pairs[t->dirty[i]];
        pr->dirty = 0;
        if (pr->count > 0) heap_push(t, (heap_entry){pr->count, t->dirty[i]});
    }
    t->n_dirty = 0;
}

/* ---------------------------------------------------------------- tokens */

static int tok_map_resize(trainer *t, size_t slots) {
    uint64_t *h = fm_calloc(slots, sizeof *h);
    int32_t *id = fm_malloc(slots * sizeof *id);
    if (!h || !id) {
        fm_free(h), fm_free(id);
        return 0;
    }
    for (size_t i = 0; t->tok_hash && i <= t->tok_mask; i++) {
        if (!t->tok_hash[i]) continue;
        size_t s = t->tok_hash[i] & (slots - 1);
        while (h[s]) s = (s + 1) & (slots - 1);
        h[s] = t->tok_hash[i];
        id[s] = t->tok_slot[i];
    }
    fm_free(t->tok_hash), fm_free(t->tok_slot);
    t->tok_hash = h, t->tok_slot = id, t->tok_mask = slots - 1;
    return 1;
}

/* The id of the token with these bytes (added when new); -1 when out of memory. */
static int32_t token_id(trainer *t, const uint8_t *bytes, size_t len) {
    uint64_t h = hash_bytes(bytes, len);
    size_t s = h & t->tok_mask;
    for (; t->tok_hash[s]; s = (s + 1) & t->tok_mask) {
        int32_t id = t->tok_slot[s];
        if (t->tok_hash[s] == h && t->tok_len[id] == len && memcmp(t->tok_bytes + t->tok_off[id], bytes, len) == 0)
            return id;
    }
    size_t n = (size_t)t->n_tokens;
    if (!grow(&t->tok_bytes, &t->tok_bytes_cap, t->tok_bytes_len + len, 1) ||
        !grow(&t->tok_off, &t->cap_off, n + 1, sizeof(size_t)) || !grow(&t->tok_len, &t->cap_len, n + 1, sizeof(size_t))) {
        t->oom = 1;
        return -1;
    }
    memcpy(t->tok_bytes + t->tok_bytes_len, bytes, len);
    t->tok_off[n] = t->tok_bytes_len;
    t->tok_len[n] = len;
    t->tok_bytes_len += len;
    t->tok_hash[s] = h;
    t->tok_slot[s] = (int32_t)n;
    t->n_tokens++;
    if (2 * (size_t)t->n_tokens > t->tok_mask + 1 && !tok_map_resize(t, 2 * (t->tok_mask + 1))) t->oom = 1;
    return (int32_t)n;
}

/* ---------------------------------------------------------------- one merge */

/* Replaces every (a, b) in the words that list the pair p by c, updating the counts around. */
static void apply_merge(trainer *t, int32_t p, int32_t c, int64_t stamp) {
    int32_t a = t->pairs[p].left, b = t->pairs[p].right;
    /* take over the pair's word list: other pairs' lists grow while it is walked */
    int32_t *where = t->pairs[p].where;
    size_t n_where = t->pairs[p].n_where;
    t->pairs[p].where = NULL;
    t->pairs[p].n_where = t->pairs[p].cap_where = 0;
    for (size_t k = 0; k < n_where && !t->oom; k++) {
        int32_t wi = where[k];
        word *w = &t->words[wi];
        if (w->stamp == stamp) continue;
        w->stamp = stamp;
        int32_t *s = t->syms + w->sym;
        size_t n = w->n, out = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                /* s[out-1] is the (possibly just merged) left neighbour, s[i+2] the right one */
                if (out > 0) {
                    add_pair(t, s[out - 1], a, -w->freq, wi);
                    add_pair(t, s[out - 1], c, w->freq, wi);
                }
                if (i + 2 < n) {
                    add_pair(t, b, s[i + 2], -w->freq, wi);
                    add_pair(t, c, s[i + 2], w->freq, wi);
                }
                add_pair(t, a, b, -w->freq, wi);
                s[out++] = c;
                i++;
            } else {
                s[out++] = s[i];
            }
        }
        w->n = out;
    }
    fm_free(where);
}

/* ---------------------------------------------------------------- training */

static void trainer_free(trainer *t) {
    for (size_t i = 0; i < t->n_pairs; i++) fm_free(t->pairs[i].where);
    fm_free(t->words), fm_free(t->word_hash), fm_free(t->word_slot), fm_free(t->syms);
    fm_free(t->pairs), fm_free(t->pair_key), fm_free(t->pair_slot), fm_free(t->dirty), fm_free(t->heap);
    fm_free(t->tok_bytes), fm_free(t->tok_off), fm_free(t->tok_len), fm_free(t->tok_hash), fm_free(t->tok_slot);
    fm_free(t->merges);
}

/* Makes the fm_tokenizer from the learned tokens and merges, specials last. */
static fm_status build(const trainer *t, fm_tokenizer **out) {
    fm_tokenizer *tok;
    fm_status st = fm_tok_new(&tok, t->n_tokens + FM_TOK_N_SPECIAL);
    for (int id = 0; !st && id < t->n_tokens; id++)
        st = fm_tok_set_token(tok, id, t->tok_bytes + t->tok_off[id], t->tok_len[id]);
    for (int m = 0; !st && m < t->n_merges; m++)
        st = fm_tok_add_merge(tok, t->merges[m].left, t->merges[m].right, t->merges[m].result);
    for (int k = 0; !st && k < FM_TOK_N_SPECIAL; k++) {
        int id = t->n_tokens + k;
        st = fm_tok_set_token(tok, id, fm_tok_special_names[k], strlen(fm_tok_special_names[k]));
        if (!st) st = fm_tok_add_special(tok, id);
    }
    if (!st) st = fm_tok_finish(tok, "trained tokenizer");
    if (st && tok) fm_tokenizer_free(tok);
    else *out = tok;
    return st;
}

fm_status fm_tokenizer_train(fm_tokenizer **out, const char *const *texts, const size_t *lens, int n_texts,
                             int vocab_size) {
    if (!out) return fm_fail(FM_ERR_ARG, "fm_tokenizer_train: no output given");
    *out = NULL;
    if (vocab_size < 256 + FM_TOK_N_SPECIAL || vocab_size > FM_TOK_MAX_VOCAB)
        return fm_fail(FM_ERR_ARG, "vocabulary size %d is out of range [%d, %d] (256 bytes + merges + %d special tokens)",
                       vocab_size, 256 + FM_TOK_N_SPECIAL, FM_TOK_MAX_VOCAB, FM_TOK_N_SPECIAL);
    if (n_texts < 0 || (n_texts > 0 && (!texts || !lens)))
        return fm_fail(FM_ERR_ARG, "fm_tokenizer_train: missing texts");
    for (int i = 0; i < n_texts; i++)
        if (!texts[i] && lens[i] > 0) return fm_fail(FM_ERR_ARG, "fm_tokenizer_train: text %d is NULL", i);

    trainer t;
    memset(&t, 0, sizeof t);
    t.oom = !word_map_resize(&t, 1 << 12) || !pair_map_resize(&t, 1 << 12) || !tok_map_resize(&t, 1 << 10);
    for (int b = 0; b < 256 && !t.oom; b++) {
        uint8_t byte = (uint8_t)b;
        token_id(&t, &byte, 1);
    }

    /* 1. the distinct pieces and their frequencies */
    for (int i = 0; i < n_texts && !t.oom; i++) count_corpus_text(&t, (const uint8_t *)texts[i], lens[i]);

    /* 2. their symbols (bytes) and the initial pair counts */
    size_t n_syms = 0;
    for (size_t w = 0; w < t.n_words; w++) t.words[w].sym = n_syms, n_syms += t.words[w].len;
    t.syms = fm_malloc((n_syms ? n_syms : 1) * sizeof *t.syms);
    if (!t.syms) t.oom = 1;
    for (size_t w = 0; w < t.n_words && !t.oom; w++) {
        word *wd = &t.words[w];
        for (size_t i = 0; i < wd->len; i++) t.syms[wd->sym + i] = wd->bytes[i];
        for (size_t i = 0; i + 1 < wd->len && !t.oom; i++)
            add_pair(&t, wd->bytes[i], wd->bytes[i + 1], wd->freq, (int32_t)w);
    }
    push_dirty(&t);

    /* 3. merges, most frequent pair first, until the vocabulary is full */
    int target = vocab_size - FM_TOK_N_SPECIAL;
    int64_t stamp = 0;
    while (t.n_tokens < target && t.n_heap > 0 && !t.oom) {
        heap_entry top = heap_pop(&t);
        pair *pr = &t.pairs[top.pair];
        if (top.count != pr->count) continue; /* stale: a newer entry holds its count */
        if (pr->count < 2) break;
        int32_t a = pr->left, b = pr->right;
        /* the merged bytes, built in place at the end of the byte pool */
        size_t la = t.tok_len[a], lb = t.tok_len[b];
        if (!grow(&t.tok_bytes, &t.tok_bytes_cap, t.tok_bytes_len + 2 * (la + lb), 1)) {
            t.oom = 1;
            break;
        }
        uint8_t *joined = t.tok_bytes + t.tok_bytes_len + la + lb; /* past where a new token goes */
        memcpy(joined, t.tok_bytes + t.tok_off[a], la);
        memcpy(joined + la, t.tok_bytes + t.tok_off[b], lb);
        int32_t c = token_id(&t, joined, la + lb);
        if (c < 0) break;
        if (!grow(&t.merges, &t.cap_merges, (size_t)t.n_merges + 1, sizeof(fm_tok_merge))) {
            t.oom = 1;
            break;
        }
        t.merges[t.n_merges++] = (fm_tok_merge){a, b, c};
        apply_merge(&t, top.pair, c, stamp++);
        push_dirty(&t);
    }

    fm_status st = t.oom ? fm_fail(FM_ERR_NOMEM, "fm_tokenizer_train: out of memory") : build(&t, out);
    trainer_free(&t);
    return st;
}
