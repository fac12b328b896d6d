/*
 * fuzz_state.c — the training state reader's fuzz target (libFuzzer's entry point).
 *
 * An input is a training_state.safetensors. It goes into two folders, each holding the
 * config.json and model.safetensors of a fixed model of fuzz_common.h at step 3 (made once, by
 * fm_checkpoint_save): one with an attached head and wpe frozen, one plain (the only kind a flat
 * "adam.m" / "adam.v" state of older fm fits). Each folder is loaded with fm_checkpoint_load
 * (src/io/checkpoint.c load_state: metadata, the recorded model size and weights checksum,
 * per-tensor or flat moments). What loads must be at the weights' step, with an optimizer
 * whose moments are finite (second moments not negative). Errors are fine; crashes, sanitizer
 * reports, leaks and failed checks (abort) are not. Seeds: tests/fuzz/gen_seeds.c (the fixed
 * checkpoint's own state and variants); `make fuzz` runs it under libFuzzer, `make test` replays
 * the committed corpus (tests/fuzz/corpus/state) with tests/fuzz/replay.c.
 */
#include "fuzz_common.h"

#include <math.h>

/* A folder holding the config.json and model.safetensors of the fixed checkpoint (plain model
 * or with a head), as plain files; returns the folder. */
static char *fixed_folder(int plain) {
    char *ckpt = fuzz_path(plain ? "ckpt-plain" : "ckpt-head"), *dir = fuzz_path(plain ? "plain" : "head");
    fm_model *m = fuzz_model(plain);
    fm_optimizer *opt = fuzz_optimizer(m);
    fm_train_state ts = fuzz_train_state();
    fuzz_check(fm_checkpoint_save(ckpt, m, opt, &ts) == FM_OK, "cannot save the fixed checkpoint");
    fm_optimizer_free(opt);
    fm_model_free(m);
    fuzz_check(fm_mkdir(dir) == FM_OK, "cannot make the state folder");
    const char *names[2] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *from = fm_path_join(ckpt, names[i]), *to = fm_path_join(dir, names[i]);
        size_t n;
        unsigned char *bytes = fuzz_read(from, &n);
        fuzz_write(to, bytes, n);
        free(bytes);
        fm_free(from);
        fm_free(to);
    }
    free(ckpt);
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *dirs[2], *files[2];
    if (!dirs[0])
        for (int plain = 0; plain < 2; plain++)
            dirs[plain] = fixed_folder(plain), files[plain] = fm_path_join(dirs[plain], "training_state.safetensors");
    for (int plain = 0; plain < 2; plain++) {
        fuzz_write(files[plain], data, size);
        fm_model *m;
        fm_optimizer *opt;
        fm_train_state ts;
        fm_status st = fm_checkpoint_load(dirs[plain], &m, &opt, &ts);
        fuzz_note(plain ? "plain model" : "model with a head", st);
        if (st != FM_OK) continue;
        fuzz_check(fm_optimizer_steps_done(opt) == FUZZ_STEP, "a state loaded at another step than its weights");
        for (size_t k = 0; k < opt->n; k++)
            fuzz_check(isfinite(opt->m[k]) && isfinite(opt->v[k]) && opt->v[k] >= 0.0f,
                       "a loaded moment is not finite, or a second moment negative");
        fuzz_check(fm_optimizer_num_params(opt) <= fm_model_num_params(m) + 4 * 2, "more moments than parameters");
        fm_optimizer_free(opt);
        fm_model_free(m);
    }
    return 0;
}
