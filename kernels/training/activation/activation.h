/* The activations' backward (pure C, float32, contiguous). */
#ifndef DCX_TRAINING_ACTIVATION_H
#define DCX_TRAINING_ACTIVATION_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gx = grad_y where lo < x < hi, else 0 (ReLU: lo = 0, hi = +inf; ReLU6: lo = 0, hi = 6). */
int training_threshold_backward(const float* grad_y, const float* x, int64_t numel, float lo, float hi, float* gx);
/* Along the last dim of [rows, cols]: softmax backward gx = y * (gy - sum(gy * y)), or, with
 * log_softmax != 0 and y = log_softmax(x), gx = gy - exp(y) * sum(gy). */
int training_softmax_backward(const float* grad_y, const float* y, int64_t rows, int64_t cols, int log_softmax,
                              float* gx);

/* The function table each ISA build of activation-impl.h defines (the entry points above, after their checks). */
struct training_activation_isa {
  int (*threshold_backward)(const float* grad_y, const float* x, int64_t numel, float lo, float hi, float* gx);
  int (*softmax_backward)(const float* grad_y, const float* y, int64_t rows, int64_t cols, int log_softmax,
                          float* gx);
};
DCX_ISA_TABLES(struct training_activation_isa, training_activation_isa);

#ifdef __cplusplus
}
#endif

#endif
