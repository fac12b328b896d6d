/*
 * fuzz_config.c — config.json's reader's fuzz target (libFuzzer's entry point).
 *
 * An input is a config.json, loaded with fm_config_load (src/io/config.c). What loads must pass
 * fm_config_validate and round-trip: saved with fm_config_save and loaded again, it gives the
 * same configuration. Errors are fine; crashes, sanitizer reports, leaks and failed checks
 * (abort) are not. Seeds: tests/fuzz/gen_seeds.c; `make fuzz` runs it under libFuzzer,
 * `make test` replays the committed corpus (tests/fuzz/corpus/config) with tests/fuzz/replay.c.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *file, *saved;
    if (!file) file = fuzz_path("config.json"), saved = fuzz_path("saved.json");
    fuzz_write(file, data, size);
    fm_config cfg, again;
    memset(&cfg, 0, sizeof cfg);
    fm_status st = fm_config_load(&cfg, file);
    fuzz_note("fm_config_load", st);
    if (st != FM_OK) return 0;
    fuzz_check(fm_config_validate(&cfg) == FM_OK, "a loaded configuration does not validate");
    fuzz_check(fm_config_mlp_width(&cfg) > 0, "the MLP width is not positive");
    fuzz_check(fm_config_save(&cfg, saved) == FM_OK, "a loaded configuration does not save");
    fuzz_check(fm_config_load(&again, saved) == FM_OK, "a saved configuration does not load");
    fuzz_check(again.n_layer == cfg.n_layer && again.n_head == cfg.n_head && again.n_embd == cfg.n_embd &&
                   again.vocab_size == cfg.vocab_size && again.n_positions == cfg.n_positions &&
                   again.n_inner == cfg.n_inner && again.layer_norm_epsilon == cfg.layer_norm_epsilon,
               "a saved configuration loads differently");
    return 0;
}
