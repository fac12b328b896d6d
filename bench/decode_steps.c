/*
 * decode_steps.c — batched decoding through the session API: B sequences (default 8) of GPT-2
 * 124M shapes (random weights, float32; a second argument "int8" quantizes first), each given a
 * 16-token prompt, then steps of B rows (fm_session_step), 24 steps twice; printed as ms per step
 * and tokens/s.
 *
 * What it is for: the decoding step of fm serve's continuous batching without HTTP or the
 * scheduler (bench/serve_speed.sh measures the server): docs/serve.md and docs/kernels.md quote it.
 * Build and run: make bench-decode (B 1 and 8), or build/bench_decode_steps B [int8].
 * Not for: prompts (fm bench generate) or sampling.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm.h"

int main(int argc, char **argv) {
    int B = argc > 1 ? atoi(argv[1]) : 8, steps = 24;
    if (B < 1 || B > 64) {
        fprintf(stderr, "usage: decode_steps [B 1..64] [int8]\n");
        return 2;
    }
    fm_config cfg = {.n_layer = 12, .n_head = 12, .n_embd = 768, .vocab_size = 50257, .n_positions = 1024,
                     .layer_norm_epsilon = 1e-5f};
    fm_model *m;
    fm_session *s;
    if (fm_model_init(&m, &cfg, 1) != FM_OK) return 1;
    if (argc > 2 && strcmp(argv[2], "int8") == 0 && fm_model_quantize(m) != FM_OK) return 1;
    if (fm_session_init(&s, m, B, 16 + 2 * steps) != FM_OK) return 1;
    int prompt[16], seqs[64], tokens[64];
    const float *logits;
    for (int i = 0; i < 16; i++) prompt[i] = i * 31 + 7;
    for (int b = 0; b < B; b++) {
        if (fm_session_feed(s, b, prompt, 16, &logits) != FM_OK) return 1;
        seqs[b] = b, tokens[b] = b + 100;
    }
    for (int rep = 0; rep < 2; rep++) {
        double t = omp_get_wtime();
        for (int k = 0; k < steps; k++)
            if (fm_session_step(s, seqs, tokens, B, &logits) != FM_OK) return 1;
        t = omp_get_wtime() - t;
        printf("decode_steps rows=%d weights=%s ms_per_step=%.2f tokens_per_s=%.1f\n", B, argc > 2 ? argv[2] : "f32",
               t * 1e3 / steps, B * steps / t);
    }
    fm_session_free(s);
    fm_model_free(m);
    return 0;
}
