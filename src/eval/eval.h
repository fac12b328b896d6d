/*
 * eval.h — what eval.c shares with the rest of src/eval.
 */
#ifndef FM_EVAL_EVAL_H
#define FM_EVAL_EVAL_H

/* log softmax(z)[target] for one row of logits z (V), in double. */
double fm_log_prob(const float *z, int V, int target);

#endif
