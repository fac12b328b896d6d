/*
 * checkpoint_layout.h — where a run directory keeps its checkpoints, and how one is switched in.
 *
 * A run directory RUN holds each checkpoint whole in RUN/checkpoints/step-NNNNNNNN/ (config.json,
 * model.safetensors, training_state.safetensors). RUN/checkpoint is a symbolic link to the
 * current one, replaced in one atomic rename; RUN/config.json, RUN/model.safetensors and
 * RUN/training_state.safetensors are links through it, so RUN reads as a plain model directory
 * to every tool. A save writes the new checkpoint beside the current one, in a temporary
 * folder, and switches the link only once every file is written, synced and re-read; the
 * previous checkpoint is removed after the switch. A kill or a full disk at any moment
 * leaves the previous checkpoint current and whole.
 */
#ifndef FM_IO_CHECKPOINT_LAYOUT_H
#define FM_IO_CHECKPOINT_LAYOUT_H

#include <stdint.h>

#include "fm.h"

#define FM_CKPT_POINTER "checkpoint"
#define FM_CKPT_FOLDER "checkpoints"

/* A checkpoint being written: the files go into tmp (RUN/checkpoints/.tmp-step-N.XXXXXX). */
typedef struct {
    char *run, *tmp;
    int64_t step;
} fm_ckpt_txn;

/* Creates RUN (one level), RUN/checkpoints and the temporary folder for step's checkpoint. */
fm_status fm_ckpt_begin(fm_ckpt_txn *t, const char *run, int64_t step);
/* Makes the written checkpoint current: syncs its folder, names it step-NNNNNNNN (with a
 * suffix -2, -3, ... when that name is taken), switches RUN/checkpoint to it, points the
 * top-level files through the link, and removes every other checkpoint. Nothing is allocated
 * from the switch on. Releases t, also on failure (the temporary folder is then removed and the
 * previous checkpoint stays current). */
fm_status fm_ckpt_publish(fm_ckpt_txn *t);
/* Removes the temporary folder and releases t. */
void fm_ckpt_abort(fm_ckpt_txn *t);

/* The checkpoints of RUN in the order loading tries them: the current one (RUN/checkpoint's
 * target) first, then every other complete-looking checkpoint folder, newest step first.
 * n = 0 when RUN has no checkpoints folder and no link (a directory written before this
 * layout, loaded as a flat model directory). */
typedef struct {
    int n;
    char **dirs;      /* fm_malloc'd paths "RUN/checkpoints/step-..." */
    int pointer;      /* RUN/checkpoint exists (as a link) */
    int pointer_ok;   /* ... and names a folder, which is dirs[0] */
    char pointer_target[256];
} fm_ckpt_list;

fm_status fm_ckpt_list_dirs(const char *run, fm_ckpt_list *l);
void fm_ckpt_list_free(fm_ckpt_list *l);

#endif
