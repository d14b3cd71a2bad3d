/* The losses (mean reduction) with their gradient, in one pass (pure C, float32). */
#ifndef DCX_TRAINING_LOSS_H
#define DCX_TRAINING_LOSS_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Cross entropy of logits [n, c] against class targets (rows with target == ignore_index do not
 * count): loss (one float) and its gradient dloss/dlogits [n, c]. */
int training_cross_entropy(const float* logits, const int64_t* target, int64_t n, int64_t c, int64_t ignore_index,
                           float* loss, float* grad);
/* Binary cross entropy with logits z [n] against targets t [n]: loss and dloss/dz [n]. */
int training_bce_with_logits(const float* z, const float* t, int64_t n, float* loss, float* grad);

/* The function table each ISA build of loss-impl.h defines (the entry points above, after their checks). */
struct training_loss_isa {
  int (*cross_entropy)(const float* logits, const int64_t* target, int64_t n, int64_t c, int64_t ignore_index,
                       float* loss, float* grad);
  int (*bce_with_logits)(const float* z, const float* t, int64_t n, float* loss, float* grad);
};
DCX_ISA_TABLES(struct training_loss_isa, training_loss_isa);

#ifdef __cplusplus
}
#endif

#endif
