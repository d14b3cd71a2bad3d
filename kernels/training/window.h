/* The output length of a sliding window (convolution, pooling) along one dim; 0 for a bad geometry. */
#ifndef DCX_TRAINING_WINDOW_H
#define DCX_TRAINING_WINDOW_H

#include <stdint.h>

static inline int64_t window_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  if (stride < 1 || dil < 1 || pad < 0 || k < 1) return 0;
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

#endif
