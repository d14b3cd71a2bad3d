// dcx::max_pool2d, dcx::avg_pool2d and their backward, written once against Views and an adapter's Call
// (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/op_args.h"
#include "training/pool/pool.h"

namespace dcx::training {

struct PoolParams {
  int64_t kernel[2], stride[2], padding[2];
};

// kernel, stride and padding (int[2] each): the next three arguments of a pooling op
template <class Call>
PoolParams pool_params(Call& c) {
  PoolParams p;
  read_pairs(c, p.kernel, p.stride, p.padding);
  return p;
}

inline std::string pool_geometry(const Op& op, const View& x, const PoolParams& p, bool count_include_pad,
                                 training_pool2d* s, Shape* y) {
  DCX_TRY(op.tensor(x));
  DCX_TRY(op.dims(x, 4, "[n, c, h, w]"));
  for (int i = 0; i < 2; i++)
    if (p.kernel[i] < 1 || p.stride[i] < 1 || p.padding[i] < 0)
      return op.fail("kernel and stride must be >= 1 and padding >= 0");
  *s = training_pool2d{x.size(0), x.size(1), x.size(2), x.size(3), p.kernel[0], p.kernel[1], p.stride[0], p.stride[1],
                       p.padding[0], p.padding[1], count_include_pad ? 1 : 0};
  if (training_pool2d_check(s) != DCX_OK)
    return op.fail("the window [" + std::to_string(p.kernel[0]) + ", " + std::to_string(p.kernel[1]) +
                   "] with its padding does not fit x " + shape_str(x) + " (padding may be at most half the window)");
  *y = shape({s->n, s->c, training_pool2d_out_h(s), training_pool2d_out_w(s)});
  return "";
}

inline std::string pool_grad_check(const Op& op, const View& gy, const Shape& y) {
  DCX_TRY(op.tensor(gy));
  bool fits = gy.dim == y.dim;
  for (int i = 0; fits && i < y.dim; i++) fits = gy.sizes[i] == y.s[i];
  if (!fits) return op.fail("grad_y " + shape_str(gy) + " is not the pooled shape of x");
  return "";
}

// -> y and indices (int64), of the same shape
template <class Call>
void max_pool2d(Call& c) {
  const View x = c.tensor("x");
  const PoolParams p = pool_params(c);
  training_pool2d s;
  Shape y;
  if (!c.ok(pool_geometry(c.op(), x, p, false, &s, &y))) return;
  float* out = c.out(y);
  int64_t* indices = c.out_index(y);
  if (c.ok()) c.kernel(training_max_pool2d_forward(&s, x.f(), out, indices));
}

template <class Call>
void max_pool2d_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x"), indices = c.tensor("indices");
  const PoolParams p = pool_params(c);
  training_pool2d s;
  Shape y;
  if (!c.ok(pool_geometry(op, x, p, false, &s, &y)) || !c.ok(pool_grad_check(op, gy, y))) return;
  if (indices.dtype != DType::Int64)
    return (void)c.ok(op.fail("indices must be int64, got " + std::string(dtype_name(indices.dtype))));
  if (!c.ok(op.tensor(indices, true)) || !c.ok(op.same_shape(indices, gy))) return;
  if (float* gx = c.out(shape_of(x)))
    c.kernel(training_max_pool2d_backward(&s, gy.f(), static_cast<const int64_t*>(indices.data), gx));
}

template <class Call>
void avg_pool2d(Call& c) {
  const View x = c.tensor("x");
  const PoolParams p = pool_params(c);
  const bool count_include_pad = c.flag();
  training_pool2d s;
  Shape y;
  if (!c.ok(pool_geometry(c.op(), x, p, count_include_pad, &s, &y))) return;
  if (float* out = c.out(y)) c.kernel(training_avg_pool2d_forward(&s, x.f(), out));
}

template <class Call>
void avg_pool2d_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x");
  const PoolParams p = pool_params(c);
  const bool count_include_pad = c.flag();
  training_pool2d s;
  Shape y;
  if (!c.ok(pool_geometry(op, x, p, count_include_pad, &s, &y)) || !c.ok(pool_grad_check(op, gy, y))) return;
  if (float* gx = c.out(shape_of(x))) c.kernel(training_avg_pool2d_backward(&s, gy.f(), gx));
}

}  // namespace dcx::training
