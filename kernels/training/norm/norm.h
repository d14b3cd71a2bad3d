/* The norms' backward (pure C, float32, contiguous). */
#ifndef DCX_TRAINING_NORM_H
#define DCX_TRAINING_NORM_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Layer norm over the last `cols` of [rows, cols] with saved mean/rstd [rows]; w, gx, gw, gb may be
 * NULL (no affine / not wanted). */
int training_layer_norm_backward(const float* grad_y, const float* x, const float* mean, const float* rstd,
                                 const float* w, int64_t rows, int64_t cols, float* gx, float* gw, float* gb);
/* Batch norm with frozen statistics (eval mode) on [n, c, hw]: y = (x - mean) * rsqrt(var + eps) * w + b.
 * w may be NULL; gx, gw, gb may be NULL. */
int training_batch_norm_frozen_backward(const float* grad_y, const float* x, const float* w, const float* mean,
                                        const float* var, float eps, int64_t n, int64_t c, int64_t hw, float* gx,
                                        float* gw, float* gb);

/* The function table each ISA build of norm-impl.h defines (the entry points above, after their checks). */
struct training_norm_isa {
  int (*layer_norm_backward)(const float* grad_y, const float* x, const float* mean, const float* rstd,
                             const float* w, int64_t rows, int64_t cols, float* gx, float* gw, float* gb);
  int (*batch_norm_frozen_backward)(const float* grad_y, const float* x, const float* w, const float* mean,
                                    const float* var, float eps, int64_t n, int64_t c, int64_t hw, float* gx,
                                    float* gw, float* gb);
};
DCX_ISA_TABLES(struct training_norm_isa, training_norm_isa);

#ifdef __cplusplus
}
#endif

#endif
