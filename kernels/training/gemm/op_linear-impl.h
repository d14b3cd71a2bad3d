// dcx::linear and dcx::linear_backward, written once against Views and an adapter's Call
// (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/op_args.h"
#include "training/gemm/gemm.h"

namespace dcx::training {

// x [n, in], weight [out, in], bias [out] or absent -> y [n, out]
inline std::string linear_check(const Op& op, const View& x, const View& w, const View& b, Shape* y) {
  for (const View* t : {&x, &w, &b}) DCX_TRY(op.tensor(*t));
  DCX_TRY(op.dims(x, 2, "[n, in]"));
  DCX_TRY(op.dims(w, 2, "[out, in]"));
  if (x.size(1) != w.size(1))
    return op.fail("x " + shape_str(x) + " and weight " + shape_str(w) + " disagree on in (x.shape[1] vs weight.shape[1])");
  if (b.present && (b.dim != 1 || b.size(0) != w.size(0)))
    return op.fail("bias must have shape [" + std::to_string(w.size(0)) + "], got " + shape_str(b));
  *y = shape({x.size(0), w.size(0)});
  return "";
}

template <class Call>
void linear(Call& c) {
  const LinearArgs a = read_linear(c);  // flag: relu
  Shape y;
  if (!c.ok(linear_check(c.op(), a.x, a.w, a.b, &y))) return;
  if (float* out = c.out(y))
    c.kernel(training_linear_forward(a.x.f(), a.w.f(), a.b.f(), a.x.size(0), a.x.size(1), a.w.size(0), a.flag, out));
}

// grad_y [n, out], x [n, in], weight [out, in], relu_out like grad_y or absent ->
// grad_x [n, in] (or [0]), grad_weight [out, in], grad_bias [out] (or [0])
template <class Call>
void linear_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x"), w = c.tensor("weight"), r = c.optional("relu_out");
  const bool input_grad = c.flag(), bias_grad = c.flag();
  for (const View* t : {&gy, &x, &w, &r})
    if (!c.ok(op.tensor(*t))) return;
  if (!c.ok(op.dims(gy, 2, "[n, out]")) || !c.ok(op.dims(x, 2, "[n, in]")) || !c.ok(op.dims(w, 2, "[out, in]"))) return;
  if (x.size(1) != w.size(1) || gy.size(0) != x.size(0) || gy.size(1) != w.size(0))
    return (void)c.ok(op.fail("grad_y " + shape_str(gy) + ", x " + shape_str(x) + " and weight " + shape_str(w) +
                              " do not fit [n, out], [n, in], [out, in]"));
  if (!c.ok(op.same_shape(r, gy))) return;
  float* gx = c.out(input_grad ? shape_of(x) : shape({0}));
  float* gw = c.out(shape_of(w));
  float* gb = c.out(bias_grad ? shape({w.size(0)}) : shape({0}));
  if (c.ok())
    c.kernel(training_linear_backward(gy.f(), x.f(), w.f(), r.f(), x.size(0), x.size(1), w.size(0),
                                      input_grad ? gx : nullptr, gw, bias_grad ? gb : nullptr));
}

}  // namespace dcx::training
