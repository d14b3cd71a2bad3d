/* The checked entry points of the fused shuffled partitioned linear; the kernels are in
 * partitioned_linear-impl.h. */
#include "partitioned_linear/partitioned_linear.h"

#include <string.h>

#define IMPL DCX_ISA_PICK(partitioned_linear_isa)

static int check_shape(int64_t n, int64_t d_in, int64_t d_out, int64_t p) {
  if (n < 0 || d_in < 1 || d_out < 1 || p < 1 || d_in % p || d_out % p) return DCX_EINVAL_SHAPE;
  return DCX_OK;
}

int partitioned_linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t d_in,
                               int64_t d_out, int64_t p, int shuffle, float* y) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (n == 0) return DCX_OK;
  if (!x || !w || !y) return DCX_EINVAL_PTR;
  return IMPL->forward(x, w, NULL, bias, n, d_in, d_out, p, shuffle != 0, y);
}

size_t partitioned_linear_packed_size(int64_t d_in, int64_t d_out, int64_t p, int shuffle) {
  if (check_shape(0, d_in, d_out, p)) return 0;
  return IMPL->packed_size(d_in, d_out, p, shuffle != 0);
}

int partitioned_linear_pack_weight(const float* w, int64_t d_in, int64_t d_out, int64_t p, int shuffle,
                                   float* packed) {
  int rc = check_shape(0, d_in, d_out, p);
  if (rc) return rc;
  if (!w || !packed) return DCX_EINVAL_PTR;
  IMPL->pack_weight(w, d_in, d_out, p, shuffle != 0, packed);
  return DCX_OK;
}

int partitioned_linear_forward_packed(const float* x, const float* packed, const float* bias, int64_t n,
                                      int64_t d_in, int64_t d_out, int64_t p, int shuffle, float* y) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (n == 0) return DCX_OK;
  if (!x || !packed || !y) return DCX_EINVAL_PTR;
  return IMPL->forward(x, NULL, packed, bias, n, d_in, d_out, p, shuffle != 0, y);
}

int partitioned_linear_backward_input(const float* grad_y, const float* w, int64_t n, int64_t d_in, int64_t d_out,
                                      int64_t p, int shuffle, float* grad_x) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (n == 0) return DCX_OK;
  if (!grad_y || !w || !grad_x) return DCX_EINVAL_PTR;
  return IMPL->backward_input(grad_y, w, n, d_in, d_out, p, shuffle != 0, grad_x);
}

int partitioned_linear_backward_weight(const float* grad_y, const float* x, int64_t n, int64_t d_in, int64_t d_out,
                                       int64_t p, int shuffle, float* grad_w) {
  int rc = check_shape(n, d_in, d_out, p);
  if (rc) return rc;
  if (!grad_w || (n > 0 && (!grad_y || !x))) return DCX_EINVAL_PTR;
  if (n == 0) {
    memset(grad_w, 0, sizeof(float) * (size_t)(d_in / p * d_out));
    return DCX_OK;
  }
  return IMPL->backward_weight(grad_y, x, n, d_in, d_out, p, shuffle != 0, grad_w);
}

int partitioned_linear_backward_bias(const float* grad_y, int64_t n, int64_t d_out, int64_t p, int shuffle,
                                     float* grad_b) {
  int rc = check_shape(n, d_out, d_out, p);
  if (rc) return rc;
  if (!grad_b || (n > 0 && !grad_y)) return DCX_EINVAL_PTR;
  return IMPL->backward_bias(grad_y, n, d_out, p, shuffle != 0, grad_b);
}
