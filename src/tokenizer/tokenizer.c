/*
 * tokenizer.c — byte-level BPE: the tokenizer's tables, encoding and decoding.
 *
 * What it is for: turning bytes into ids and back, as GPT-2 does. Encoding cuts the text at
 * special tokens (only when the caller allows them), pre-tokenises each ordinary stretch with
 * GPT-2's regex (tokenizer_pretok.c), and runs BPE within each piece: every byte becomes its
 * one-byte token, then the adjacent pair with the lowest merge rank is merged, leftmost first,
 * until no pair has a rule. Decoding concatenates the tokens' bytes.
 *
 * Speed: a piece that was seen before in the same call is looked up in a cache (piece bytes ->
 * ids); long inputs are cut at newlines that are safe boundaries for the pre-tokeniser and
 * encoded on several threads, each with its own cache; pieces up to PLAIN_MAX bytes merge with a
 * simple scan, longer ones with a heap (n log n, so a million spaces or digits stay fast).
 * What it is not for: reading and writing files (tokenizer_io.c) or training (tokenizer_train.c).
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/alloc.h"
#include "tokenizer/tokenizer_internal.h"

/* Threads for a long input (1 when built without OpenMP, as the fuzz target is). */
static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *const fm_tok_special_names[FM_TOK_N_SPECIAL] = {
    "<|endoftext|>", "<|image|>", "<|/image|>", "<|system|>", "<|user|>", "<|assistant|>",
};

/* ---------------------------------------------------------------- building */

fm_status fm_tok_new(fm_tokenizer **out, int n_vocab) {
    *out = NULL;
    if (n_vocab < 0 || n_vocab > FM_TOK_MAX_VOCAB)
        return fm_fail(FM_ERR_ARG, "tokenizer: %d ids is out of range [0, %d]", n_vocab, FM_TOK_MAX_VOCAB);
    fm_tokenizer *tok = fm_calloc(1, sizeof *tok);
    if (!tok) return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory");
    tok->n_vocab = n_vocab;
    tok->tok_off = fm_calloc((size_t)n_vocab + 1, sizeof *tok->tok_off);
    tok->tok_len = fm_malloc(((size_t)n_vocab + 1) * sizeof *tok->tok_len);
    if (!tok->tok_off || !tok->tok_len) {
        fm_tokenizer_free(tok);
        return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory for %d ids", n_vocab);
    }
    for (int i = 0; i < n_vocab; i++) tok->tok_len[i] = -1;
    for (int b = 0; b < 256; b++) tok->byte_id[b] = -1;
    *out = tok;
    return FM_OK;
}

void fm_tokenizer_free(fm_tokenizer *tok) {
    if (!tok) return;
    fm_free(tok->tok_off);
    fm_free(tok->tok_len);
    fm_free(tok->pool);
    fm_free(tok->merges);
    fm_free(tok->pair_keys);
    fm_free(tok->pair_rank);
    fm_free(tok->special_ids);
    fm_free(tok);
}

fm_status fm_tok_set_token(fm_tokenizer *tok, int id, const void *bytes, size_t len) {
    if (id < 0 || id >= tok->n_vocab) return fm_fail(FM_ERR_ARG, "token id %d is out of range", id);
    if (tok->tok_len[id] >= 0) return fm_fail(FM_ERR_FORMAT, "id %d is given to two tokens", id);
    if (len > (1u << 30)) return fm_fail(FM_ERR_FORMAT, "token %d is longer than 1 GiB", id);
    if (tok->pool_len + len > tok->pool_cap) {
        size_t cap = tok->pool_cap ? tok->pool_cap : 4096;
        while (cap < tok->pool_len + len) cap *= 2;
        uint8_t *grown = fm_realloc(tok->pool, cap);
        if (!grown) return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory for token bytes");
        tok->pool = grown;
        tok->pool_cap = cap;
    }
    if (len) memcpy(tok->pool + tok->pool_len, bytes, len);
    tok->tok_off[id] = (int64_t)tok->pool_len;
    tok->tok_len[id] = (int32_t)len;
    tok->pool_len += len;
    return FM_OK;
}

fm_status fm_tok_add_merge(fm_tokenizer *tok, int left, int right, int result) {
    if (tok->n_merges == tok->merges_cap) {
        int cap = tok->merges_cap ? tok->merges_cap * 2 : 1024;
        fm_tok_merge *grown = fm_realloc(tok->merges, (size_t)cap * sizeof *grown);
        if (!grown) return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory for merges");
        tok->merges = grown;
        tok->merges_cap = cap;
    }
    tok->merges[tok->n_merges++] = (fm_tok_merge){left, right, result};
    return FM_OK;
}

fm_status fm_tok_add_special(fm_tokenizer *tok, int id) {
    for (int i = 0; i < tok->n_special; i++)
        if (tok->special_ids[i] == id) return FM_OK;
    int *grown = fm_realloc(tok->special_ids, (size_t)(tok->n_special + 1) * sizeof *grown);
    if (!grown) return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory for special tokens");
    tok->special_ids = grown;
    tok->special_ids[tok->n_special++] = id;
    return FM_OK;
}

static const uint8_t *token_ptr(const fm_tokenizer *tok, int id) { return tok->pool + tok->tok_off[id]; }

fm_status fm_tok_finish(fm_tokenizer *tok, const char *name) {
    uint8_t *special = fm_calloc((size_t)tok->n_vocab + 1, 1); /* (n_vocab) 1 for a special token */
    if (!special) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", name);
    for (int s = 0; s < tok->n_special; s++) {
        int id = tok->special_ids[s];
        if (id < 0 || id >= tok->n_vocab || tok->tok_len[id] <= 0) {
            fm_free(special);
            return fm_fail(FM_ERR_FORMAT, "%s: special token id %d has no text", name, id);
        }
        special[id] = 1;
        tok->special_first[token_ptr(tok, id)[0]] = 1;
    }
    /* the one-byte token of each byte (the lowest such id that is not a special token) */
    for (int id = tok->n_vocab - 1; id >= 0; id--)
        if (tok->tok_len[id] == 1 && !special[id]) tok->byte_id[token_ptr(tok, id)[0]] = id;
    for (int b = 0; b < 256; b++) {
        if (tok->byte_id[b] < 0) {
            fm_free(special);
            return fm_fail(FM_ERR_FORMAT, "%s: no token for the byte 0x%02x (a byte-level BPE vocabulary needs all 256)",
                           name, b);
        }
    }

    /* the pair map, at most half full */
    uint64_t slots = 16;
    while (slots < 2 * (uint64_t)tok->n_merges + 2) slots *= 2;
    tok->pair_keys = fm_malloc(slots * sizeof *tok->pair_keys);
    tok->pair_rank = fm_malloc(slots * sizeof *tok->pair_rank);
    if (!tok->pair_keys || !tok->pair_rank) {
        fm_free(special);
        return fm_fail(FM_ERR_NOMEM, "%s: out of memory for the merges", name);
    }
    memset(tok->pair_keys, 0xFF, slots * sizeof *tok->pair_keys);
    tok->pair_mask = slots - 1;
    for (int r = 0; r < tok->n_merges; r++) {
        fm_tok_merge m = tok->merges[r];
        if (m.left < 0 || m.left >= tok->n_vocab || m.right < 0 || m.right >= tok->n_vocab ||
            m.result < 0 || m.result >= tok->n_vocab || tok->tok_len[m.left] < 0 ||
            tok->tok_len[m.right] < 0 || tok->tok_len[m.result] < 0) {
            fm_free(special);
            return fm_fail(FM_ERR_FORMAT, "%s: merge %d refers to an id without a token", name, r);
        }
        size_t ll = (size_t)tok->tok_len[m.left], lr = (size_t)tok->tok_len[m.right];
        if ((size_t)tok->tok_len[m.result] != ll + lr ||
            memcmp(token_ptr(tok, m.result), token_ptr(tok, m.left), ll) != 0 ||
            memcmp(token_ptr(tok, m.result) + ll, token_ptr(tok, m.right), lr) != 0) {
            fm_free(special);
            return fm_fail(FM_ERR_FORMAT, "%s: merge %d (ids %d + %d) does not give the bytes of id %d", name, r,
                           m.left, m.right, m.result);
        }
        if (special[m.result]) continue; /* ordinary text never turns into a special token */
        uint64_t key = (uint64_t)(uint32_t)m.left << 32 | (uint32_t)m.right;
        uint64_t h = (key * 0x9E3779B97F4A7C15ull) >> 20;
        for (;;) {
            h &= tok->pair_mask;
            if (tok->pair_keys[h] == UINT64_MAX) {
                tok->pair_keys[h] = key;
                tok->pair_rank[h] = r;
                break;
            }
            if (tok->pair_keys[h] == key) break; /* a repeated rule never applies: keep the first */
            h++;
        }
    }
    fm_free(special);
    return FM_OK;
}

/* ---------------------------------------------------------------- queries */

int fm_tokenizer_vocab_size(const fm_tokenizer *tok) { return tok ? tok->n_vocab : 0; }

const char *fm_tokenizer_token_bytes(const fm_tokenizer *tok, int id, size_t *len) {
    if (len) *len = 0;
    if (!tok || id < 0 || id >= tok->n_vocab || tok->tok_len[id] < 0) return NULL;
    if (len) *len = (size_t)tok->tok_len[id];
    return (const char *)token_ptr(tok, id);
}

fm_status fm_tokenizer_add_special(fm_tokenizer *tok, const char *name, int *id) {
    int have = fm_tokenizer_special_id(tok, name);
    if (have >= 0) {
        if (id) *id = have;
        return FM_OK;
    }
    size_t len = strlen(name);
    if (len == 0 || len > 256) return fm_fail(FM_ERR_ARG, "special token '%s': 1 to 256 bytes", name);
    if (tok->n_vocab >= FM_TOK_MAX_VOCAB) return fm_fail(FM_ERR_ARG, "tokenizer: the vocabulary is full");
    int64_t *off = fm_realloc(tok->tok_off, (size_t)(tok->n_vocab + 1) * sizeof *off);
    if (!off) return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory for a new token");
    tok->tok_off = off;
    int32_t *lens = fm_realloc(tok->tok_len, (size_t)(tok->n_vocab + 1) * sizeof *lens);
    if (!lens) return fm_fail(FM_ERR_NOMEM, "tokenizer: out of memory for a new token");
    tok->tok_len = lens;
    int new_id = tok->n_vocab;
    tok->tok_len[new_id] = -1;
    tok->n_vocab++;
    fm_status st = fm_tok_set_token(tok, new_id, name, len);
    if (!st) st = fm_tok_add_special(tok, new_id);
    if (st) { /* the vocabulary as it was */
        tok->n_vocab--;
        return st;
    }
    tok->special_first[(uint8_t)name[0]] = 1;
    if (id) *id = new_id;
    return FM_OK;
}

int fm_tokenizer_special_id(const fm_tokenizer *tok, const char *name) {
    if (!tok || !name) return -1;
    size_t n = strlen(name);
    for (int s = 0; s < tok->n_special; s++) {
        int id = tok->special_ids[s];
        if ((size_t)tok->tok_len[id] == n && memcmp(token_ptr(tok, id), name, n) == 0) return id;
    }
    return -1;
}

/* ---------------------------------------------------------------- BPE within one piece */

size_t fm_tok_bpe_plain(const fm_tokenizer *tok, int32_t *ids, size_t n) {
    while (n > 1) {
        int best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            int r = fm_tok_pair_rank(tok, ids[i], ids[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) best = r, at = i;
        }
        if (best < 0) break;
        ids[at] = tok->merges[best].result;
        memmove(ids + at + 1, ids + at + 2, (n - at - 2) * sizeof *ids);
        n--;
    }
    return n;
}

/* Pieces up to this many bytes merge with a scan that keeps each pair's rank (n^2 at worst). */
#define PLAIN_MAX 48

/* The scan for short pieces: rank[i] is the rank of (ids[i], ids[i+1]), INT32_MAX for none. */
static size_t bpe_short(const fm_tokenizer *tok, int32_t *ids, size_t n) {
    int32_t rank[PLAIN_MAX];
    for (size_t i = 0; i + 1 < n; i++) {
        int r = fm_tok_pair_rank(tok, ids[i], ids[i + 1]);
        rank[i] = r < 0 ? INT32_MAX : r;
    }
    while (n > 1) {
        int32_t best = INT32_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (rank[i] < best) best = rank[i], at = i;
        if (best == INT32_MAX) break;
        ids[at] = tok->merges[best].result;
        for (size_t i = at + 1; i + 1 < n; i++) ids[i] = ids[i + 1];
        for (size_t i = at + 1; i + 2 < n; i++) rank[i] = rank[i + 1];
        n--;
        if (at > 0) {
            int r = fm_tok_pair_rank(tok, ids[at - 1], ids[at]);
            rank[at - 1] = r < 0 ? INT32_MAX : r;
        }
        if (at + 1 < n) {
            int r = fm_tok_pair_rank(tok, ids[at], ids[at + 1]);
            rank[at] = r < 0 ? INT32_MAX : r;
        }
    }
    return n;
}

/* Heap entries order by (rank, position): the lowest rank first, the leftmost among equals. */
typedef struct {
    int32_t rank;
    int32_t pos;
} heap_item;

static int heap_less(heap_item a, heap_item b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_item *heap, size_t *n, heap_item x) {
    size_t i = (*n)++;
    while (i > 0 && heap_less(x, heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = x;
}

static heap_item heap_pop(heap_item *heap, size_t *n) {
    heap_item top = heap[0], x = heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(heap[c + 1], heap[c])) c++;
        if (!heap_less(heap[c], x)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n > 0) heap[i] = x;
    return top;
}

/* The heap version: symbols stay at their first byte's position in a doubly linked list; a heap
 * holds candidate merges (rank, left position), checked when popped (stale ones are dropped). */
size_t fm_tok_bpe_heap(const fm_tokenizer *tok, int32_t *ids, size_t n) {
    if (n < 2) return n;
    /* positions are int32: a single piece over 1 GiB (one run of letters or spaces that long) stays
     * as bytes, an encoding that still decodes exactly, though not the one BPE would give */
    if (n > INT32_MAX / 2) return n;
    int32_t *next = fm_malloc(n * sizeof *next), *prev = fm_malloc(n * sizeof *prev);
    heap_item *heap = fm_malloc(n * 2 * sizeof *heap);
    if (!next || !prev || !heap) { /* out of memory: fall back to the scan (slow but correct) */
        fm_free(next), fm_free(prev), fm_free(heap);
        return fm_tok_bpe_plain(tok, ids, n);
    }
    size_t hn = 0, cap = n * 2;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int r = fm_tok_pair_rank(tok, ids[i], ids[i + 1]);
        if (r >= 0) heap_push(heap, &hn, (heap_item){r, (int32_t)i});
    }
    while (hn > 0) {
        heap_item top = heap_pop(heap, &hn);
        int32_t p = top.pos, q = next[p];
        if (ids[p] < 0 || q < 0) continue; /* merged away, or now the last symbol */
        fm_tok_merge m = tok->merges[top.rank];
        if (ids[p] != m.left || ids[q] != m.right) continue; /* stale */
        ids[p] = m.result;
        ids[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        /* the two new pairs; each merge adds at most two entries, and there are < n merges */
        if (prev[p] >= 0 && hn < cap) {
            int r = fm_tok_pair_rank(tok, ids[prev[p]], ids[p]);
            if (r >= 0) heap_push(heap, &hn, (heap_item){r, prev[p]});
        }
        if (next[p] >= 0 && hn < cap) {
            int r = fm_tok_pair_rank(tok, ids[p], ids[next[p]]);
            if (r >= 0) heap_push(heap, &hn, (heap_item){r, p});
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) ids[k++] = ids[i];
    fm_free(next), fm_free(prev), fm_free(heap);
    return k;
}

/* ---------------------------------------------------------------- the encoder of one thread */

/* A cache entry: a piece (its bytes are at text + off) and its ids (at ids_pool + ids_off). */
typedef struct {
    uint64_t hash; /* 0 marks an empty slot */
    size_t off;
    uint32_t len;
    uint32_t n_ids;
    size_t ids_off;
} cache_entry;

#define CACHE_MAX_PIECE 64        /* longer pieces are not cached */
#define CACHE_MAX_SLOTS (1u << 20) /* the cache stops growing here (about 40 MB) */

typedef struct {
    const fm_tokenizer *tok;
    const uint8_t *text; /* the whole input: cache keys point into it */
    cache_entry *cache;
    size_t cache_mask, cache_used;
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
    size_t cache_first; /* slots of the first cache: small for a short text */
    int32_t *scratch;   /* symbols of one piece */
    size_t scratch_cap;
    int failed;       /* out of memory */
} encoder;

/* A growable list of ids (one per job). */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} id_list;

static int list_reserve(id_list *l, size_t more) {
    if (l->n + more <= l->cap) return 1;
    size_t cap = l->cap ? l->cap : 256;
    while (cap < l->n + more) cap *= 2;
    int32_t *grown = fm_realloc(l->ids, cap * sizeof *grown);
    if (!grown) return 0;
    l->ids = grown;
    l->cap = cap;
    return 1;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8, n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    }
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    return h | 1; /* never 0, the empty mark */
}

static void encoder_init(encoder *e, const fm_tokenizer *tok, const uint8_t *text, size_t len) {
    memset(e, 0, sizeof *e);
    e->tok = tok;
    e->text = text;
    e->cache_first = 64;
    while (e->cache_first < 4096 && e->cache_first < len / 4) e->cache_first *= 2;
}

static void encoder_free(encoder *e) {
    fm_free(e->cache);
    fm_free(e->cache_ids);
    fm_free(e->scratch);
}

/* Doubles the cache (or makes the first one); returns 0 when it cannot grow. */
static int cache_grow(encoder *e) {
    size_t slots = e->cache ? (e->cache_mask + 1) * 2 : e->cache_first;
    if (slots > CACHE_MAX_SLOTS) return 0;
    cache_entry *fresh = fm_calloc(slots, sizeof *fresh);
    if (!fresh) return 0;
    for (size_t i = 0; e->cache && i <= e->cache_mask; i++) {
        if (!e->cache[i].hash) continue;
        size_t h = e->cache[i].hash & (slots - 1);
        while (fresh[h].hash) h = (h + 1) & (slots - 1);
        fresh[h] = e->cache[i];
    }
    fm_free(e->cache);
    e->cache = fresh;
    e->cache_mask = slots - 1;
    return 1;
}

/* Appends the ids of the piece text[off, off + len) to out. */
static void encode_piece(encoder *e, size_t off, size_t len, id_list *out) {
    const fm_tokenizer *tok = e->tok;
    const uint8_t *p = e->text + off;
    if (len == 1) {
        if (!list_reserve(out, 1)) { e->failed = 1; return; }
        out->ids[out->n++] = tok->byte_id[p[0]];
        return;
    }
    uint64_t h = 0;
    size_t slot = 0;
    int cacheable = len <= CACHE_MAX_PIECE;
    if (cacheable) {
        h = hash_bytes(p, len);
        if (e->cache) {
            for (slot = h & e->cache_mask; e->cache[slot].hash; slot = (slot + 1) & e->cache_mask) {
                cache_entry *c = &e->cache[slot];
                if (c->hash == h && c->len == len && memcmp(e->text + c->off, p, len) == 0) {
                    if (!list_reserve(out, c->n_ids)) { e->failed = 1; return; }
                    memcpy(out->ids + out->n, e->cache_ids + c->ids_off, c->n_ids * sizeof(int32_t));
                    out->n += c->n_ids;
                    return;
                }
            }
        }
    }
    /* not cached: merge */
    if (len > e->scratch_cap) {
        size_t cap = len < 256 ? 256 : len;
        int32_t *grown = fm_realloc(e->scratch, cap * sizeof *grown);
        if (!grown) { e->failed = 1; return; }
        e->scratch = grown;
        e->scratch_cap = cap;
    }
    int32_t *sym = e->scratch;
    for (size_t i = 0; i < len; i++) sym[i] = tok->byte_id[p[i]];
    size_t n = len <= PLAIN_MAX ? bpe_short(tok, sym, len) : fm_tok_bpe_heap(tok, sym, len);
    if (!list_reserve(out, n)) { e->failed = 1; return; }
    memcpy(out->ids + out->n, sym, n * sizeof *sym);
    out->n += n;
    if (!cacheable) return;

    /* remember it; the cache doubles when half full, and simply stops remembering at its limit */
    if (!e->cache || 2 * (e->cache_used + 1) > e->cache_mask + 1) {
        if (!cache_grow(e)) return;
        for (slot = h & e->cache_mask; e->cache[slot].hash; slot = (slot + 1) & e->cache_mask) {}
    }
    if (e->cache_ids_len + n > e->cache_ids_cap) {
        size_t cap = e->cache_ids_cap ? e->cache_ids_cap * 2 : 4096;
        while (cap < e->cache_ids_len + n) cap *= 2;
        int32_t *grown = fm_realloc(e->cache_ids, cap * sizeof *grown);
        if (!grown) return;
        e->cache_ids = grown;
        e->cache_ids_cap = cap;
    }
    memcpy(e->cache_ids + e->cache_ids_len, sym, n * sizeof *sym);
    e->cache[slot] = (cache_entry){h, off, (uint32_t)len, (uint32_t)n, e->cache_ids_len};
    e->cache_ids_len += n;
    e->cache_used++;
}

/* Pre-tokenises text[a, b) (an ordinary stretch: its end is the end of the text for the regex)
 * and appends the ids of every piece to out. */
static void encode_ordinary(encoder *e, size_t a, size_t b, id_list *out) {
    const uint8_t *s = e->text;
    size_t i = a;
    while (i < b && !e->failed) {
        size_t j = fm_tok_pretok_next(s + a, b - a, i - a) + a;
        encode_piece(e, i, j - i, out);
        i = j;
    }
}

/* ---------------------------------------------------------------- encoding a whole text */

/* A job: an ordinary stretch [a, b) to encode, or one special token (special >= 0). */
typedef struct {
    size_t a, b;
    int special;
    id_list out;
} job;

typedef struct {
    job *jobs;
    size_t n, cap;
} job_list;

static int add_job(job_list *jl, size_t a, size_t b, int special) {
    if (jl->n == jl->cap) {
        size_t cap = jl->cap ? jl->cap * 2 : 16;
        job *grown = fm_realloc(jl->jobs, cap * sizeof *grown);
        if (!grown) return 0;
        jl->jobs = grown;
        jl->cap = cap;
    }
    jl->jobs[jl->n++] = (job){a, b, special, {NULL, 0, 0}};
    return 1;
}

/* The special token that starts at s[i] (the longest when several do), or -1. */
static int special_at(const fm_tokenizer *tok, const uint8_t *s, size_t n, size_t i) {
    int best = -1;
    size_t best_len = 0;
    for (int k = 0; k < tok->n_special; k++) {
        int id = tok->special_ids[k];
        size_t len = (size_t)tok->tok_len[id];
        if (len > best_len && len <= n - i && memcmp(s + i, token_ptr(tok, id), len) == 0) best = id, best_len = len;
    }
    return best;
}

/* Stretches shorter than this are not split for threads. */
#define SPLIT_MIN ((size_t)1 << 16)

/* Adds the ordinary stretch [a, b) as jobs of about chunk bytes, cut just before a '\n' that
 * follows an ASCII byte that is not white space. Such a cut is invisible to the pre-tokeniser:
 * the piece before it (a letter, number, symbol or contraction piece) cannot take in a '\n', and
 * the '\n' starts a piece either way, so pieces never depend on what lies across it. */
static int add_ordinary(job_list *jl, const uint8_t *s, size_t a, size_t b, size_t chunk) {
    while (b - a > chunk + chunk / 2) {
        size_t cut = 0;
        for (size_t p = a + chunk; p < b; p++) {
            if (s[p] == '\n' && s[p - 1] < 0x80 && s[p - 1] != ' ' && (s[p - 1] < '\t' || s[p - 1] > '\r')) {
                cut = p;
                break;
            }
            if (p - (a + chunk) > chunk) break; /* no cut nearby: keep the rest whole */
        }
        if (!cut) break;
        if (!add_job(jl, a, cut, -1)) return 0;
        a = cut;
    }
    return a == b || add_job(jl, a, b, -1);
}

fm_status fm_tokenizer_encode(const fm_tokenizer *tok, const char *text, size_t len, int allow_special,
                              int **ids, size_t *n_ids) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!tok || !ids || !n_ids || (!text && len > 0))
        return fm_fail(FM_ERR_ARG, "fm_tokenizer_encode: missing tokenizer, text or output");
    const uint8_t *s = (const uint8_t *)text;
    int threads = max_threads();
    size_t chunk = len / ((size_t)threads * 8) + 1;
    if (chunk < SPLIT_MIN) chunk = SPLIT_MIN;
    if (threads <= 1) chunk = SIZE_MAX / 4;

    /* the jobs: ordinary stretches between the special tokens (when allowed) */
    job_list jl = {NULL, 0, 0};
    int ok = 1;
    size_t start = 0;
    if (allow_special && tok->n_special > 0) {
        for (size_t i = 0; i < len && ok; i++) {
            if (!tok->special_first[s[i]]) continue;
            int id = special_at(tok, s, len, i);
            if (id < 0) continue;
            ok = add_ordinary(&jl, s, start, i, chunk) && add_job(&jl, i, i, id);
            i += (size_t)tok->tok_len[id] - 1;
            start = i + 1;
        }
    }
    ok = ok && add_ordinary(&jl, s, start, len, chunk);

    int failed = !ok;
    if (ok) {
        int parallel = threads > 1 && jl.n > 1 && len >= 2 * SPLIT_MIN;
        (void)parallel; /* unused without OpenMP */
#pragma omp parallel if (parallel)
        {
            encoder e;
            encoder_init(&e, tok, s, len);
#pragma omp for schedule(dynamic, 1)
            for (size_t k = 0; k < jl.n; k++) {
                job *jb = &jl.jobs[k];
                if (jb->special >= 0) {
                    if (list_reserve(&jb->out, 1)) jb->out.ids[jb->out.n++] = jb->special;
                    else e.failed = 1;
                } else {
                    encode_ordinary(&e, jb->a, jb->b, &jb->out);
                }
            }
            if (e.failed) {
#pragma omp atomic write
                failed = 1;
            }
            encoder_free(&e);
        }
    }

    /* concatenate the jobs' ids */
    size_t total = 0;
    for (size_t k = 0; k < jl.n; k++) total += jl.jobs[k].out.n;
    int *all = failed ? NULL : fm_malloc((total ? total : 1) * sizeof *all);
    if (all) {
        size_t at = 0;
        for (size_t k = 0; k < jl.n; k++) {
            memcpy(all + at, jl.jobs[k].out.ids, jl.jobs[k].out.n * sizeof *all);
            at += jl.jobs[k].out.n;
        }
    }
    for (size_t k = 0; k < jl.n; k++) fm_free(jl.jobs[k].out.ids);
    fm_free(jl.jobs);
    if (!all) return fm_fail(FM_ERR_NOMEM, "fm_tokenizer_encode: out of memory for %zu bytes of text", len);
    *ids = all;
    *n_ids = total;
    return FM_OK;
}

/* ---------------------------------------------------------------- decoding */

fm_status fm_tokenizer_decode(const fm_tokenizer *tok, const int *ids, size_t n_ids, char **out, size_t *out_len) {
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!tok || !out || (!ids && n_ids > 0))
        return fm_fail(FM_ERR_ARG, "fm_tokenizer_decode: missing tokenizer, ids or output");
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= tok->n_vocab || tok->tok_len[id] < 0)
            return fm_fail(FM_ERR_ARG, "token id %d (at position %zu) is not in the vocabulary of %d ids", id, i,
                           tok->n_vocab);
        total += (size_t)tok->tok_len[id];
    }
    char *buf = fm_malloc(total + 1);
    if (!buf) return fm_fail(FM_ERR_NOMEM, "fm_tokenizer_decode: out of memory for %zu bytes", total);
    size_t at = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t n = (size_t)tok->tok_len[ids[i]];
        memcpy(buf + at, token_ptr(tok, ids[i]), n);
        at += n;
    }
    buf[total] = '\0';
    *out = buf;
    if (out_len) *out_len = total;
    return FM_OK;
}
