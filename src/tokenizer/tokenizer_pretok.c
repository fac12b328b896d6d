/*
 * tokenizer_pretok.c — GPT-2's pre-tokenisation as a hand-written scanner (no regex library).
 *
 * What it is for: cutting text into the pieces that BPE then merges within, exactly as GPT-2's
 * regex (and tiktoken's "gpt2" encoding) does:
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * The alternatives are tried in order at each position (leftmost-first, as a backtracking regex
 * does). \p{L} is the general category L (Lu Ll Lt Lm Lo), \p{N} is N (Nd Nl No), both from
 * utf8proc; \s is Unicode's White_Space property. " ?" is U+0020 only. The last two alternatives
 * together mean: a run of white space that reaches the end of the text is one piece; a longer run
 * followed by something else gives up its last character (which then starts the next piece,
 * e.g. " world" after "   "); a single white-space character is a piece of its own.
 *
 * Bytes that are not valid UTF-8 (stray continuation bytes, truncated or overlong sequences,
 * surrogates, code points past U+10FFFF) are each a piece of one byte, and count as \S for the
 * lookahead. What it is not for: merging (tokenizer.c).
 */
#include <utf8proc.h>

#include "tokenizer/tokenizer_internal.h"

enum { C_INVALID = 0, C_LETTER, C_NUMBER, C_OTHER, C_SPACE };

/* Class of each ASCII byte (bytes >= 0x80 are decoded first). */
static const uint8_t ascii_class[128] = {
    /* 0x00-0x08 controls */ C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    /* \t \n \v \f \r */ C_SPACE, C_SPACE, C_SPACE, C_SPACE, C_SPACE,
    /* 0x0e-0x1f: controls, not White_Space (0x1c-0x1f included) */
    C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    /* ' ' */ C_SPACE,
    /* !"#$%&'()*+,-./ */ C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    /* 0-9 */ C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER, C_NUMBER,
    /* :;<=>?@ */ C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    /* A-Z */ C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER,
    C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER,
    C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER,
    /* [\]^_` */ C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
    /* a-z */ C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER,
    C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER,
    C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER, C_LETTER,
    /* {|}~ DEL */ C_OTHER, C_OTHER, C_OTHER, C_OTHER, C_OTHER,
};

/* Class of a code point >= 0x80. */
static int codepoint_class(int32_t cp) {
    switch (cp) { /* White_Space outside ASCII */
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return C_SPACE;
    }
    if (cp >= 0x2000 && cp <= 0x200A) return C_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return C_LETTER;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return C_NUMBER;
    default:
        return C_OTHER;
    }
}

/* The class of the character at s[i] (i < n) and its length in bytes (*len); an invalid byte
 * is C_INVALID with length 1. UTF-8 is checked strictly (shortest form, no surrogates). */
static inline int char_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t b0 = s[i];
    if (b0 < 0x80) {
        *len = 1;
        return ascii_class[b0];
    }
    *len = 1;
    size_t left = n - i;
    int32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (left < 2 || (s[i + 1] & 0xC0) != 0x80) return C_INVALID;
        cp = (b0 & 0x1F) << 6 | (s[i + 1] & 0x3F);
        *len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left < 3 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return C_INVALID;
        cp = (b0 & 0x0F) << 12 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
        if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return C_INVALID;
        *len = 3;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left < 4 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
            return C_INVALID;
        cp = (b0 & 0x07) << 18 | (s[i + 1] & 0x3F) << 12 | (s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
        if (cp < 0x10000 || cp > 0x10FFFF) return C_INVALID;
        *len = 4;
    } else {
        return C_INVALID; /* a continuation byte, 0xC0, 0xC1 or 0xF5..0xFF */
    }
    return codepoint_class(cp);
}

/* The end of the run of characters of class cls that continues at j. */
static inline size_t run_end(const uint8_t *s, size_t n, size_t j, int cls) {
    while (j < n) {
        if (s[j] < 0x80) { /* fast path: ASCII */
            if (ascii_class[s[j]] != cls) return j;
            j++;
            continue;
        }
        size_t len;
        if (char_at(s, n, j, &len) != cls) return j;
        j += len;
    }
    return j;
}

size_t fm_tok_pretok_next(const uint8_t *s, size_t n, size_t i) {
    size_t len0;
    int c0 = char_at(s, n, i, &len0);
    if (c0 == C_INVALID) return i + 1;

    /* 's 't 're 've 'm 'll 'd (case-sensitive, ASCII apostrophe only) */
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }

    /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': a space may lead a run of the next class */
    if (s[i] == ' ' && i + 1 < n) {
        size_t len1;
        int c1 = char_at(s, n, i + 1, &len1);
        if (c1 == C_LETTER || c1 == C_NUMBER || c1 == C_OTHER) return run_end(s, n, i + 1 + len1, c1);
    }
    if (c0 != C_SPACE) return run_end(s, n, i + len0, c0);

    /* '\s+(?!\S)|\s+': the white-space run [i, j); last is where its last character starts */
    size_t j = i + len0, last = i, count = 1;
    while (j < n) {
        size_t len;
        if (char_at(s, n, j, &len) != C_SPACE) break;
        last = j;
        j += len;
        count++;
    }
    if (j == n || count == 1) return j;
    return last;
}
