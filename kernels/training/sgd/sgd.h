/* The plain SGD update of on-device training (pure C, float32). */
#ifndef DCX_TRAINING_SGD_H
#define DCX_TRAINING_SGD_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* In place: p -= lr * g. */
int training_sgd_update(float* p, const float* g, int64_t numel, float lr);

/* The function table each ISA build of sgd-impl.h defines (the entry point above, after its checks). */
struct training_sgd_isa {
  int (*update)(float* p, const float* g, int64_t numel, float lr);
};
DCX_ISA_TABLES(struct training_sgd_isa, training_sgd_isa);

#ifdef __cplusplus
}
#endif

#endif
