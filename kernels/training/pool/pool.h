/* Max and average pooling, forward and backward (pure C, float32, NCHW, floor mode). */
#ifndef DCX_TRAINING_POOL_H
#define DCX_TRAINING_POOL_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

struct training_pool2d {
  int64_t n, c, h, w;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w;
  int count_include_pad; /* average pooling: divide by the full window (1) or the in-bounds part */
};
int64_t training_pool2d_out_h(const struct training_pool2d* s);
int64_t training_pool2d_out_w(const struct training_pool2d* s);
/* Eligibility too: DCX_OK when the kernels take this geometry (PyTorch's: padding at most half the window). */
DCX_API int training_pool2d_check(const struct training_pool2d* s);

/* indices: flat h*w position of the maximum within its plane, as PyTorch returns them. */
int training_max_pool2d_forward(const struct training_pool2d* s, const float* x, float* y, int64_t* indices);
int training_max_pool2d_backward(const struct training_pool2d* s, const float* grad_y, const int64_t* indices,
                                 float* gx);
int training_avg_pool2d_forward(const struct training_pool2d* s, const float* x, float* y);
int training_avg_pool2d_backward(const struct training_pool2d* s, const float* grad_y, float* gx);

/* The function table each ISA build of pool-impl.h defines (the entry points above, after their checks). */
struct training_pool_isa {
  int (*max_forward)(const struct training_pool2d* s, const float* x, float* y, int64_t* indices);
  int (*max_backward)(const struct training_pool2d* s, const float* grad_y, const int64_t* indices, float* gx);
  int (*avg_forward)(const struct training_pool2d* s, const float* x, float* y);
  int (*avg_backward)(const struct training_pool2d* s, const float* grad_y, float* gx);
};
DCX_ISA_TABLES(struct training_pool_isa, training_pool_isa);

#ifdef __cplusplus
}
#endif

#endif
