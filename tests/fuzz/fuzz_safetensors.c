/*
 * fuzz_safetensors.c — the safetensors reader's fuzz target (libFuzzer's entry point).
 *
 * An input is a safetensors file. It is opened with fm_st_open (src/io/safetensors.c) and
 * every tensor is read: floating ones with fm_st_read_f32, integer ones with fm_st_read_i32,
 * and every metadata key looked up. Whatever opens must be consistent: numel and nbytes agree
 * with the shape and dtype, the data lies inside the file, names are found by fm_st_find.
 * Then the same bytes are the model.safetensors of a folder whose config.json is the fixed small
 * model of fuzz_common.h (1 layer, width 8, an attached head), loaded with fm_model_load: the
 * model loader (src/io/checkpoint.c load_weights, attach_listed; src/model/quant.c for int8
 * files). A model that loads must hold finite weights.
 * Errors are fine; crashes, sanitizer reports, leaks and failed checks (abort) are not.
 * Seeds: tests/fuzz/gen_seeds.c; `make fuzz` runs it under libFuzzer, `make test` replays the
 * committed corpus (tests/fuzz/corpus/safetensors) with tests/fuzz/replay.c.
 */
#include "fuzz_common.h"

#include <math.h>

static void read_all(const fm_safetensors *st) {
    const unsigned char *begin = st->map, *end = begin + st->map_size;
    for (int i = 0; i < st->n_tensors; i++) {
        const fm_st_tensor *t = &st->tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        fuzz_check(numel == t->numel && t->nbytes == numel * fm_dtype_size(t->dtype), "numel or nbytes disagree with the shape");
        fuzz_check((const unsigned char *)t->data >= begin + 8 && t->nbytes <= (size_t)(end - (const unsigned char *)t->data),
                   "a tensor's data is outside the file");
        fuzz_check(fm_st_find(st, t->name) != NULL, "fm_st_find misses a tensor");
        /* an exact-size output, so that writing past numel is caught */
        void *out = malloc(t->numel ? 4 * t->numel : 1);
        if (t->dtype == FM_DTYPE_F32 || t->dtype == FM_DTYPE_F16 || t->dtype == FM_DTYPE_BF16 || t->dtype == FM_DTYPE_F64) {
            fuzz_check(fm_st_read_f32(st, t, out) == FM_OK, "fm_st_read_f32 refused a floating tensor");
            fuzz_check(fm_st_read_i32(st, t, out) != FM_OK, "fm_st_read_i32 read a floating tensor");
        } else {
            fm_st_read_i32(st, t, out); /* fails when an I64 value overflows an int */
            fuzz_check(fm_st_read_f32(st, t, out) != FM_OK, "fm_st_read_f32 read an integer tensor");
        }
        free(out);
    }
    for (int i = 0; i < st->n_meta; i++)
        fuzz_check(fm_st_meta(st, st->meta_keys[i]) != NULL, "fm_st_meta misses a key");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *file, *model_dir, *weights;
    if (!file) {
        file = fuzz_path("fuzz.safetensors");
        model_dir = fuzz_path("model");
        fuzz_check(fm_mkdir(model_dir) == FM_OK, "cannot make the model folder");
        char *config = fuzz_path("model/config.json");
        fuzz_check(fm_config_save(&fuzz_cfg, config) == FM_OK, "cannot write config.json");
        free(config);
        weights = fuzz_path("model/model.safetensors");
    }
    fuzz_write(file, data, size);
    fm_safetensors st;
    fm_status status = fm_st_open(&st, file);
    fuzz_note("fm_st_open", status);
    if (status == FM_OK) {
        read_all(&st);
        fm_st_close(&st);
    }

    fuzz_write(weights, data, size);
    fm_model *m;
    status = fm_model_load(&m, model_dir);
    fuzz_note("fm_model_load", status);
    if (status == FM_OK) {
        for (int i = 0; i < fm_model_num_tensors(m); i++) {
            const fm_tensor_info *t = fm_model_tensor(m, i);
            for (size_t k = 0; k < t->numel; k++) fuzz_check(isfinite(t->data[k]), "a loaded weight is not finite");
        }
        fm_model_free(m);
    }
    return 0;
}
