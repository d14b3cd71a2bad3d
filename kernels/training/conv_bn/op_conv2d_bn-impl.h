// dcx::conv2d_bn and dcx::conv2d_bn_backward (convolution -> batch norm in eval mode -> clamp(low,
// high)), written once against Views and an adapter's Call (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/view.h"
#include "training/conv/op_conv2d-impl.h"
#include "training/conv_bn/conv_bn.h"

namespace dcx::training {

// running_mean and running_var present; each of per_channel [c_out] or absent
inline std::string bn_check(const Op& op, const training_conv2d& s, const View& mean, const View& var,
                            std::initializer_list<const View*> per_channel) {
  if (!mean.present || !var.present) return op.fail("running_mean and running_var are required");
  for (const View* t : per_channel) {
    DCX_TRY(op.tensor(*t));
    if (t->present && (t->dim != 1 || t->size(0) != s.c_out))
      return op.fail(std::string(t->name) + " must have shape [" + std::to_string(s.c_out) + "], got " + shape_str(*t));
  }
  return "";
}

// -> conv_out (or [0] without keep_conv) and y
template <class Call>
void conv2d_bn(Call& c) {
  const Op& op = c.op();
  const View x = c.tensor("x"), w = c.tensor("weight"), b = c.optional("bias"), bn_w = c.optional("bn_weight"),
             bn_b = c.optional("bn_bias"), mean = c.tensor("running_mean"), var = c.tensor("running_var");
  const double eps = c.real();
  const ConvParams p = conv_params(c);
  const double low = c.real(), high = c.real();
  const bool keep_conv = c.flag(), conv_only_for_backward = c.flag();
  for (const View* t : {&x, &w, &b})
    if (!c.ok(op.tensor(*t))) return;
  training_conv2d s;
  if (!c.ok(conv_geometry(op, x, w, p, &s)) || !c.ok(bn_check(op, s, mean, var, {&b, &bn_w, &bn_b, &mean, &var}))) return;
  const Shape y = conv_output(s);
  float* conv_out = c.out(keep_conv ? y : shape({0}));
  float* out = c.out(y);
  const training_bn bn{bn_w.f(), bn_b.f(), mean.f(), var.f(), static_cast<float>(eps)};
  if (c.ok())
    c.kernel(training_conv2d_bn_forward(&s, x.f(), w.f(), b.f(), &bn, static_cast<float>(low),
                                        static_cast<float>(high), keep_conv ? conv_out : nullptr, out,
                                        conv_only_for_backward));
}

// -> grad_x (or [0]), grad_weight, grad_bias (or [0]), grad_bn_weight, grad_bn_bias (or [0] each without bn_grad)
template <class Call>
void conv2d_bn_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), y = c.tensor("y"), conv_out = c.tensor("conv_out"), x = c.tensor("x"),
             w = c.tensor("weight"), bn_w = c.optional("bn_weight"), bn_b = c.optional("bn_bias"),
             mean = c.tensor("running_mean"), var = c.tensor("running_var");
  const double eps = c.real();
  const ConvParams p = conv_params(c);
  const double low = c.real(), high = c.real();
  const bool input_grad = c.flag(), bias_grad = c.flag(), bn_grad = c.flag();
  for (const View* t : {&gy, &y, &conv_out, &x, &w})
    if (!c.ok(op.tensor(*t))) return;
  training_conv2d s;
  if (!c.ok(conv_geometry(op, x, w, p, &s)) || !c.ok(bn_check(op, s, mean, var, {&bn_w, &bn_b, &mean, &var}))) return;
  if (!c.ok(conv_grad_check(op, gy, s)) || !c.ok(op.same_shape(y, gy)) || !c.ok(op.same_shape(conv_out, gy))) return;
  const Shape channel = shape({s.c_out}), none = shape({0});
  float* gx = c.out(input_grad ? shape_of(x) : none);
  float* gw = c.out(shape_of(w));
  float* gb = c.out(bias_grad ? channel : none);
  float* gbw = c.out(bn_grad ? channel : none);
  float* gbb = c.out(bn_grad ? channel : none);
  const training_bn bn{bn_w.f(), bn_b.f(), mean.f(), var.f(), static_cast<float>(eps)};
  if (c.ok())
    c.kernel(training_conv2d_bn_backward(&s, gy.f(), y.f(), conv_out.f(), x.f(), w.f(), &bn, static_cast<float>(low),
                                         static_cast<float>(high), input_grad ? gx : nullptr, gw,
                                         bias_grad ? gb : nullptr, bn_grad ? gbw : nullptr, bn_grad ? gbb : nullptr));
}

}  // namespace dcx::training
