/*
 * gguf_export.c — a model and its tokenizer as a GGUF file for llama.cpp's "gpt2" architecture.
 *
 * What it is for: deciding what llama.cpp's gpt2 loader (src/models/gpt2.cpp and llama-vocab.cpp
 * in llama.cpp) needs and handing it to the writer (gguf.c): the gpt2.* hyper-parameters, the
 * tokenizer as tokenizer.ggml.* (byte-level BPE: model "gpt2", pre-tokenizer "gpt-2", whose regex
 * is fm's), the chat template, and the tensors under llama.cpp's names in ggml's layout. GGUF
 * dimensions are listed fastest first, so a matrix of R rows of K values is {K, R}; llama.cpp
 * multiplies y = W x with W's rows the outputs, which is PyTorch's Linear layout, so GPT-2's
 * Conv1D weights, stored (in, out), are transposed:
 *
 *   token_embd.weight        {C, V}   wte (V, C) as it is; also the output head (tied: no output.weight)
 *   position_embd.weight     {C, P}   wpe (P, C)
 *   blk.N.attn_norm.*        {C}      h.N.ln_1
 *   blk.N.attn_qkv.weight    {C, 3C}  h.N.attn.c_attn.weight (C, 3C) transposed; .bias {3C}
 *   blk.N.attn_output.weight {C, C}   h.N.attn.c_proj.weight transposed; .bias {C}
 *   blk.N.ffn_norm.*         {C}      h.N.ln_2
 *   blk.N.ffn_up.weight      {C, H}   h.N.mlp.c_fc.weight (C, H) transposed; .bias {H}
 *   blk.N.ffn_down.weight    {H, C}   h.N.mlp.c_proj.weight (H, C) transposed; .bias {C}
 *   output_norm.*            {C}      ln_f
 *
 * The matrices take the requested type (f32, f16 or q8_0); 1-D tensors stay f32. A Q8_0 row must
 * be whole blocks of 32, so a matrix whose rows are not (a width of 48, say) is stored f16, as
 * llama.cpp's own converter falls back. Also the chat template of a model directory's
 * tokenizer_config.json. What it is not for: the file format itself (gguf.c).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"
#include "core/internal.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer_internal.h"

/* llama.cpp's token types (llama_token_type) and file types (llama_ftype). */
enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_UNUSED = 5 };
enum { FTYPE_ALL_F32 = 0, FTYPE_MOSTLY_F16 = 1, FTYPE_MOSTLY_Q8_0 = 7 };

const char *fm_gguf_type_name(fm_gguf_type type) {
    switch (type) {
    case FM_GGUF_F32: return "f32";
    case FM_GGUF_F16: return "f16";
    case FM_GGUF_Q8_0: return "q8_0";
    }
    return "unknown";
}

fm_status fm_gguf_type_parse(const char *name, fm_gguf_type *out) {
    static const fm_gguf_type types[] = {FM_GGUF_F32, FM_GGUF_F16, FM_GGUF_Q8_0};
    for (size_t i = 0; name && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(name, fm_gguf_type_name(types[i])) == 0) {
            *out = types[i];
            return FM_OK;
        }
    return fm_fail(FM_ERR_ARG, "'%s' is not a GGUF type (f32, f16 or q8_0)", name ? name : "");
}

/* ---------------------------------------------------------------- the chat template */

fm_status fm_gguf_chat_template(const char *dir, char **out) {
    *out = NULL;
    char *path = fm_path_join(dir, "tokenizer_config.json");
    if (!path) return fm_fail(FM_ERR_NOMEM, "%s: out of memory", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) { /* no tokenizer_config.json: no template */
        fm_free(path);
        return FM_OK;
    }
    cJSON *root = NULL;
    fm_status st = fm_json_load(path, &root);
    if (!st) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
        const char *text = NULL;
        if (cJSON_IsArray(t)) { /* transformers' named templates: the one called "default" */
            const cJSON *item;
            cJSON_ArrayForEach(item, t) {
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
                const cJSON *body = cJSON_GetObjectItemCaseSensitive(item, "template");
                if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 && cJSON_IsString(body))
                    text = body->valuestring;
            }
            if (!text) st = fm_fail(FM_ERR_FORMAT, "%s: chat_template is a list without a \"default\" template", path);
        } else if (cJSON_IsString(t)) {
            text = t->valuestring;
        } else if (t && !cJSON_IsNull(t)) {
            st = fm_fail(FM_ERR_FORMAT, "%s: chat_template is neither a string nor a list of named templates", path);
        }
        if (!st && text && !(*out = fm_strdup(text))) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    }
    cJSON_Delete(root);
    fm_free(path);
    return st;
}

/* ---------------------------------------------------------------- tensors */

/* Where a GGUF tensor's values come from: rows of cols floats; src is (rows, cols) row-major,
 * or (cols, rows) when transposed (GGUF row r is then src's column r). */
typedef struct {
    const float *src;
    int64_t rows, cols;
    int transposed;
    fm_gguf_type type;
} source;

/* fm_gguf_fill: the rows converted to the tensor's type, one at a time. */
static fm_status fill(void *user, void *dst, size_t nbytes) {
    const source *s = user;
    size_t row_bytes = fm_gguf_row_bytes(s->type, s->cols);
    if (row_bytes * (size_t)s->rows != nbytes) return fm_fail(FM_ERR_ARG, "%zu bytes expected, not %zu", nbytes,
                                                              row_bytes * (size_t)s->rows);
    float *row = fm_malloc(sizeof(float) * (size_t)s->cols);
    if (!row) return fm_fail(FM_ERR_NOMEM, "out of memory");
    for (int64_t r = 0; r < s->rows; r++) {
        if (s->transposed)
            for (int64_t c = 0; c < s->cols; c++) row[c] = s->src[c * s->rows + r];
        else
            memcpy(row, s->src + r * s->cols, sizeof(float) * (size_t)s->cols);
        uint8_t *out = (uint8_t *)dst + (size_t)r * row_bytes;
        if (s->type == FM_GGUF_F32) {
            memcpy(out, row, row_bytes);
        } else if (s->type == FM_GGUF_F16) {
            for (int64_t c = 0; c < s->cols; c++) {
                uint16_t h = fm_gguf_f16(row[c]);
                memcpy(out + 2 * c, &h, 2);
            }
        } else {
            fm_gguf_quantize_q8_0(row, s->cols, out);
        }
    }
    fm_free(row);
    return FM_OK;
}

typedef struct {
    const fm_model *model;
    fm_gguf *g;
    fm_gguf_type type;
    source *sources; /* one per tensor, alive until the file is written */
    int n;
    fm_gguf_report *report;
} exporter;

/* Adds GGUF tensor gname from the model's tensor fname: 1-D (stays f32), a matrix as it is
 * (rows = fm's rows), or a matrix transposed (rows = fm's columns). */
static fm_status add(exporter *e, const char *gname, const char *fname, int transpose) {
    int idx = fm_model_find_tensor(e->model, fname);
    if (idx < 0) return fm_fail(FM_ERR_MISMATCH, "the model has no tensor %s", fname);
    const fm_tensor_info *t = fm_model_tensor(e->model, idx);
    source *s = &e->sources[e->n++];
    s->src = t->data;
    s->transposed = transpose;
    int64_t ne[2];
    int ndim = t->ndim;
    if (ndim == 1) {
        s->rows = 1, s->cols = t->shape[0], s->type = FM_GGUF_F32;
        ne[0] = t->shape[0];
    } else {
        s->rows = transpose ? t->shape[1] : t->shape[0];
        s->cols = transpose ? t->shape[0] : t->shape[1];
        s->type = e->type;
        if (s->type == FM_GGUF_Q8_0 && s->cols % FM_GGUF_Q8_BLOCK) {
            s->type = FM_GGUF_F16; /* rows that are not whole blocks */
            e->report->n_fallback++;
        } else {
            e->report->n_typed++;
        }
        ne[0] = s->cols, ne[1] = s->rows;
    }
    e->report->n_tensors++;
    return fm_gguf_tensor(e->g, gname, s->type, ndim, ne, fill, s);
}

static fm_status add_tensors(exporter *e) {
    const fm_config *cfg = fm_model_config(e->model);
    char g[64], f[64];
    fm_status st = add(e, "token_embd.weight", "wte.weight", 0);
    if (!st) st = add(e, "position_embd.weight", "wpe.weight", 0);
    static const struct {
        const char *gguf, *fm;
        int transpose;
    } block[] = {
        {"attn_norm.weight", "ln_1.weight", 0},           {"attn_norm.bias", "ln_1.bias", 0},
        {"attn_qkv.weight", "attn.c_attn.weight", 1},     {"attn_qkv.bias", "attn.c_attn.bias", 0},
        {"attn_output.weight", "attn.c_proj.weight", 1}, {"attn_output.bias", "attn.c_proj.bias", 0},
        {"ffn_norm.weight", "ln_2.weight", 0},            {"ffn_norm.bias", "ln_2.bias", 0},
        {"ffn_up.weight", "mlp.c_fc.weight", 1},          {"ffn_up.bias", "mlp.c_fc.bias", 0},
        {"ffn_down.weight", "mlp.c_proj.weight", 1},      {"ffn_down.bias", "mlp.c_proj.bias", 0},
    };
    for (int l = 0; !st && l < cfg->n_layer; l++)
        for (size_t i = 0; !st && i < sizeof block / sizeof block[0]; i++) {
            snprintf(g, sizeof g, "blk.%d.%s", l, block[i].gguf);
            snprintf(f, sizeof f, "h.%d.%s", l, block[i].fm);
            st = add(e, g, f, block[i].transpose);
        }
    if (!st) st = add(e, "output_norm.weight", "ln_f.weight", 0);
    if (!st) st = add(e, "output_norm.bias", "ln_f.bias", 0);
    return st;
}

/* ---------------------------------------------------------------- the tokenizer */

/* The code point GPT-2's byte-level alphabet writes byte b as: printable bytes stand for
 * themselves; the 68 others, in order, are 0x00-0x20 (U+0100-U+0120), 0x7F-0xA0 (U+0121-U+0142)
 * and 0xAD (U+0143). */
static int byte_char(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    if (b <= 0x20) return 256 + b;
    if (b <= 0xA0) return 289 + (b - 0x7F);
    return 323;
}

/* Appends bytes as their byte-level string (UTF-8). */
static void put_bytelevel(fm_text *t, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int cp = byte_char(s[i]);
        if (cp < 0x80) {
            char c = (char)cp;
            fm_text_append(t, &c, 1);
        } else {
            char u[2] = {(char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F))};
            fm_text_append(t, u, 2);
        }
    }
}

static int is_special(const fm_tokenizer *tok, int id) {
    for (int s = 0; s < tok->n_special; s++)
        if (tok->special_ids[s] == id) return 1;
    return 0;
}

/* n strings kept in one text: pieces i is text[off[i] .. off[i + 1]). */
typedef struct {
    fm_text text;
    size_t *off;
    const char **ptr;
    size_t *len;
} strings;

static void strings_free(strings *s) {
    fm_free(s->text.data);
    fm_free(s->off);
    fm_free(s->ptr);
    fm_free(s->len);
}

/* Points ptr/len at the n pieces once the text is complete. */
static fm_status strings_finish(strings *s, size_t n) {
    s->ptr = fm_malloc(sizeof(char *) * (n ? n : 1));
    s->len = fm_malloc(sizeof(size_t) * (n ? n : 1));
    if (s->text.failed || !s->ptr || !s->len) return fm_fail(FM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        s->ptr[i] = s->text.data + s->off[i];
        s->len[i] = s->off[i + 1] - s->off[i];
    }
    return FM_OK;
}

static fm_status add_tokenizer(fm_gguf *g, const fm_tokenizer *tok) {
    int n = tok->n_vocab;
    strings tokens = {0}, merges = {0};
    int32_t *types = fm_malloc(sizeof(int32_t) * (size_t)n);
    tokens.off = fm_malloc(sizeof(size_t) * ((size_t)n + 1));
    merges.off = fm_malloc(sizeof(size_t) * ((size_t)tok->n_merges + 1));
    fm_status st = types && tokens.off && merges.off ? FM_OK : fm_fail(FM_ERR_NOMEM, "out of memory");
    /* tokens: ordinary ones in the byte-level alphabet (as tokenizer.json's vocab), special ones
     * as their text (CONTROL), ids without a token as "[PAD<id>]" (UNUSED) */
    for (int id = 0; !st && id < n; id++) {
        tokens.off[id] = tokens.text.len;
        const uint8_t *bytes = tok->pool + (tok->tok_len[id] >= 0 ? tok->tok_off[id] : 0);
        if (tok->tok_len[id] < 0) {
            fm_text_printf(&tokens.text, "[PAD%d]", id);
            types[id] = TOKEN_UNUSED;
        } else if (is_special(tok, id)) {
            fm_text_append(&tokens.text, bytes, (size_t)tok->tok_len[id]);
            types[id] = TOKEN_CONTROL;
        } else {
            put_bytelevel(&tokens.text, bytes, (size_t)tok->tok_len[id]);
            types[id] = TOKEN_NORMAL;
        }
    }
    if (!st) tokens.off[n] = tokens.text.len;
    /* merges: "left right" in the byte-level alphabet, in rank order */
    for (int r = 0; !st && r < tok->n_merges; r++) {
        fm_tok_merge m = tok->merges[r];
        merges.off[r] = merges.text.len;
        put_bytelevel(&merges.text, tok->pool + tok->tok_off[m.left], (size_t)tok->tok_len[m.left]);
        fm_text_append(&merges.text, " ", 1);
        put_bytelevel(&merges.text, tok->pool + tok->tok_off[m.right], (size_t)tok->tok_len[m.right]);
    }
    if (!st) merges.off[tok->n_merges] = merges.text.len;
    if (!st) st = strings_finish(&tokens, (size_t)n);
    if (!st) st = strings_finish(&merges, (size_t)tok->n_merges);

    if (!st) st = fm_gguf_kv_str(g, "tokenizer.ggml.model", "gpt2", 4);
    if (!st) st = fm_gguf_kv_str(g, "tokenizer.ggml.pre", "gpt-2", 5);
    if (!st) st = fm_gguf_kv_strs(g, "tokenizer.ggml.tokens", tokens.ptr, tokens.len, (size_t)n);
    if (!st) st = fm_gguf_kv_i32s(g, "tokenizer.ggml.token_type", types, (size_t)n);
    if (!st) st = fm_gguf_kv_strs(g, "tokenizer.ggml.merges", merges.ptr, merges.len, (size_t)tok->n_merges);
    int end = fm_tokenizer_special_id(tok, "<|endoftext|>");
    if (!st && end >= 0) st = fm_gguf_kv_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)end);
    if (!st && end >= 0) st = fm_gguf_kv_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)end);
    if (!st && end >= 0) st = fm_gguf_kv_u32(g, "tokenizer.ggml.padding_token_id", (uint32_t)end);
    /* GPT-2 adds nothing around a text (neither does fm) */
    if (!st) st = fm_gguf_kv_bool(g, "tokenizer.ggml.add_bos_token", 0);
    if (!st) st = fm_gguf_kv_bool(g, "tokenizer.ggml.add_eos_token", 0);
    strings_free(&tokens);
    strings_free(&merges);
    fm_free(types);
    return st;
}

/* ---------------------------------------------------------------- the export */

fm_status fm_gguf_export(const fm_model *model, const fm_tokenizer *tok, const fm_gguf_options *opt,
                         const char *path, fm_gguf_report *report) {
    fm_gguf_report unused;
    if (!report) report = &unused;
    memset(report, 0, sizeof *report);
    if (!model || !tok || !opt || !path || !path[0])
        return fm_fail(FM_ERR_ARG, "fm_gguf_export: a model, a tokenizer, options and a path are needed");
    if (!fm_gguf_row_bytes(opt->type, FM_GGUF_Q8_BLOCK))
        return fm_fail(FM_ERR_ARG, "fm_gguf_export: unknown type %d (f32, f16 or q8_0)", (int)opt->type);
    const fm_config *cfg = fm_model_config(model);
    for (int i = 0; i < fm_model_num_tensors(model); i++) {
        const fm_tensor_info *t = fm_model_tensor(model, i);
        if (t->attached)
            return fm_fail(FM_ERR_ARG, "%s: the model has the attached tensor %s (a head or an adapter); llama.cpp's "
                           "gpt2 holds the language model alone (fm merge folds an adapter in)", path, t->name);
    }
    if (tok->n_vocab != cfg->vocab_size)
        return fm_fail(FM_ERR_MISMATCH, "%s: the tokenizer has %d tokens but the model's vocab_size is %d", path,
                       tok->n_vocab, cfg->vocab_size);

    fm_gguf *g;
    fm_status st = fm_gguf_new(&g, 32);
    if (st) return st;
    int per_layer = 12, n_tensors = 2 + cfg->n_layer * per_layer + 2;
    exporter e = {model, g, opt->type, fm_calloc((size_t)n_tensors, sizeof(source)), 0, report};
    if (!e.sources) st = fm_fail(FM_ERR_NOMEM, "%s: out of memory", path);
    const char *name = opt->name && opt->name[0] ? opt->name : "fm";
    uint32_t ftype = opt->type == FM_GGUF_F16 ? FTYPE_MOSTLY_F16 : opt->type == FM_GGUF_Q8_0 ? FTYPE_MOSTLY_Q8_0
                                                                                             : FTYPE_ALL_F32;
    if (!st) st = fm_gguf_kv_str(g, "general.architecture", "gpt2", 4);
    if (!st) st = fm_gguf_kv_str(g, "general.name", name, strlen(name));
    if (!st) st = fm_gguf_kv_u32(g, "general.file_type", ftype);
    if (!st && opt->type == FM_GGUF_Q8_0) st = fm_gguf_kv_u32(g, "general.quantization_version", 2);
    if (!st) st = fm_gguf_kv_u32(g, "general.alignment", 32);
    if (!st) st = fm_gguf_kv_u32(g, "gpt2.context_length", (uint32_t)cfg->n_positions);
    if (!st) st = fm_gguf_kv_u32(g, "gpt2.embedding_length", (uint32_t)cfg->n_embd);
    if (!st) st = fm_gguf_kv_u32(g, "gpt2.feed_forward_length", (uint32_t)fm_config_mlp_width(cfg));
    if (!st) st = fm_gguf_kv_u32(g, "gpt2.block_count", (uint32_t)cfg->n_layer);
    if (!st) st = fm_gguf_kv_u32(g, "gpt2.attention.head_count", (uint32_t)cfg->n_head);
    if (!st) st = fm_gguf_kv_f32(g, "gpt2.attention.layer_norm_epsilon", cfg->layer_norm_epsilon);
    if (!st) st = add_tokenizer(g, tok);
    if (!st && opt->chat_template)
        st = fm_gguf_kv_str(g, "tokenizer.chat_template", opt->chat_template, strlen(opt->chat_template));
    if (!st) st = add_tensors(&e);
    if (st) fm_fail_prefix(st, "%s: ", path);
    else st = fm_gguf_write(g, path, &report->bytes);
    fm_free(e.sources);
    fm_gguf_free(g);
    return st;
}
