// dcx::conv2d and dcx::conv2d_backward, written once against Views and an adapter's Call
// (base/op_aten.h, base/op_executorch.h); the geometry check the convolution + batch norm ops share.
#pragma once

#include "base/op_args.h"
#include "training/conv/conv.h"

namespace dcx::training {

struct ConvParams {
  int64_t stride[2], padding[2], dilation[2], groups;
};

// stride, padding, dilation (int[2] each) and groups: the next four arguments of a convolution op
template <class Call>
ConvParams conv_params(Call& c) {
  ConvParams p;
  read_pairs(c, p.stride, p.padding, p.dilation);
  p.groups = c.integer();
  return p;
}

inline std::string conv_geometry(const Op& op, const View& x, const View& w, const ConvParams& p,
                                 training_conv2d* s) {
  DCX_TRY(op.dims(x, 4, "[n, c_in, h, w]"));
  DCX_TRY(op.dims(w, 4, "[c_out, c_in / groups, kh, kw]"));
  for (int i = 0; i < 2; i++)
    if (p.stride[i] < 1 || p.dilation[i] < 1 || p.padding[i] < 0)
      return op.fail("stride and dilation must be >= 1 and padding >= 0");
  if (p.groups < 1 || x.size(1) % p.groups || w.size(0) % p.groups || w.size(1) * p.groups != x.size(1))
    return op.fail("x " + shape_str(x) + " and weight " + shape_str(w) + " do not fit groups=" + std::to_string(p.groups) +
                   " (weight.shape[1] * groups must be c_in, and groups must divide c_out)");
  *s = training_conv2d{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3),
                       p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups};
  if (training_conv2d_check(s) != DCX_OK)
    return op.fail("the kernel window " + shape_str(w) + " does not fit the padded input " + shape_str(x));
  return "";
}

inline Shape conv_output(const training_conv2d& s) {
  return shape({s.n, s.c_out, training_conv2d_out_h(&s), training_conv2d_out_w(&s)});
}

// grad_y must have the convolution's output shape
inline std::string conv_grad_check(const Op& op, const View& gy, const training_conv2d& s) {
  const Shape y = conv_output(s);
  bool fits = gy.dim == 4;
  for (int i = 0; fits && i < 4; i++) fits = gy.sizes[i] == y.s[i];
  if (!fits)
    return op.fail("grad_y " + shape_str(gy) + " is not the output shape [" + std::to_string(y.s[0]) + ", " +
                   std::to_string(y.s[1]) + ", " + std::to_string(y.s[2]) + ", " + std::to_string(y.s[3]) + "]");
  return "";
}

template <class Call>
void conv2d(Call& c) {
  const Op& op = c.op();
  const View x = c.tensor("x"), w = c.tensor("weight"), b = c.optional("bias");
  const ConvParams p = conv_params(c);
  const bool relu = c.flag();
  for (const View* t : {&x, &w, &b})
    if (!c.ok(op.tensor(*t))) return;
  training_conv2d s;
  if (!c.ok(conv_geometry(op, x, w, p, &s))) return;
  if (b.present && (b.dim != 1 || b.size(0) != w.size(0)))
    return (void)c.ok(op.fail("bias must have shape [" + std::to_string(w.size(0)) + "], got " + shape_str(b)));
  if (float* y = c.out(conv_output(s))) c.kernel(training_conv2d_forward(&s, x.f(), w.f(), b.f(), relu, y));
}

template <class Call>
void conv2d_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x"), w = c.tensor("weight"), r = c.optional("relu_out");
  const ConvParams p = conv_params(c);
  const bool input_grad = c.flag(), bias_grad = c.flag();
  for (const View* t : {&gy, &x, &w, &r})
    if (!c.ok(op.tensor(*t))) return;
  training_conv2d s;
  if (!c.ok(conv_geometry(op, x, w, p, &s)) || !c.ok(conv_grad_check(op, gy, s)) || !c.ok(op.same_shape(r, gy))) return;
  float* gx = c.out(input_grad ? shape_of(x) : shape({0}));
  float* gw = c.out(shape_of(w));
  float* gb = c.out(bias_grad ? shape({w.size(0)}) : shape({0}));
  if (c.ok())
    c.kernel(training_conv2d_backward(&s, gy.f(), x.f(), w.f(), r.f(), input_grad ? gx : nullptr, gw,
                                      bias_grad ? gb : nullptr));
}

}  // namespace dcx::training
