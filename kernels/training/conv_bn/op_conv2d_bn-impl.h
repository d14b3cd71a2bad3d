// dcx::conv2d_bn and dcx::conv2d_bn_backward (convolution -> batch norm in eval mode -> clamp(low,
// high)) and dcx::conv2d_bn_batch_stats and its backward (the norm in training mode: the batch's
// statistics), written once against Views and an adapter's Call (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/view.h"
#include "training/conv/op_conv2d-impl.h"
#include "training/conv_bn/conv_bn.h"

namespace dcx::training {

// each of per_channel [c_out] or absent
inline std::string channel_check(const Op& op, const training_conv2d& s, std::initializer_list<const View*> per_channel) {
  for (const View* t : per_channel) {
    DCX_TRY(op.tensor(*t));
    if (t->present && (t->dim != 1 || t->size(0) != s.c_out))
      return op.fail(std::string(t->name) + " must have shape [" + std::to_string(s.c_out) + "], got " + shape_str(*t));
  }
  return "";
}

// running_mean and running_var present; each of per_channel [c_out] or absent
inline std::string bn_check(const Op& op, const training_conv2d& s, const View& mean, const View& var,
                            std::initializer_list<const View*> per_channel) {
  if (!mean.present || !var.present) return op.fail("running_mean and running_var are required");
  return channel_check(op, s, per_channel);
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

// The arguments both backward ops take (the frozen one's also bn_bias, and the running statistics where the
// other takes the batch's), checked, and their outputs: grad_x (or [0]), grad_weight, grad_bias (or [0]),
// grad_bn_weight, grad_bn_bias (or [0] each without bn_grad). False when a check failed (reported on c).
struct BnBackward {
  View gy, y, conv_out, x, w, bn_w, bn_b, mean, var;
  double eps, low, high;
  training_conv2d s;
  float *gx, *gw, *gb, *gbw, *gbb;
  training_bn bn() const { return {bn_w.f(), bn_b.f(), mean.f(), var.f(), static_cast<float>(eps)}; }
};

template <class Call>
bool bn_backward_args(Call& c, bool batch, BnBackward* a) {
  const Op& op = c.op();
  a->gy = c.tensor("grad_y"), a->y = c.tensor("y"), a->conv_out = c.tensor("conv_out"), a->x = c.tensor("x");
  a->w = c.tensor("weight"), a->bn_w = c.optional("bn_weight");
  a->bn_b = batch ? absent("bn_bias") : c.optional("bn_bias");
  a->mean = c.tensor(batch ? "mean" : "running_mean"), a->var = c.tensor(batch ? "var" : "running_var");
  a->eps = c.real();
  const ConvParams p = conv_params(c);
  a->low = c.real(), a->high = c.real();
  const bool input_grad = c.flag(), bias_grad = c.flag(), bn_grad = c.flag();
  for (const View* t : {&a->gy, &a->y, &a->conv_out, &a->x, &a->w})
    if (!c.ok(op.tensor(*t))) return false;
  training_conv2d& s = a->s;
  if (!c.ok(conv_geometry(op, a->x, a->w, p, &s)) ||
      !c.ok(bn_check(op, s, a->mean, a->var, {&a->bn_w, &a->bn_b, &a->mean, &a->var})))
    return false;
  if (!c.ok(conv_grad_check(op, a->gy, s)) || !c.ok(op.same_shape(a->y, a->gy)) ||
      !c.ok(op.same_shape(a->conv_out, a->gy)))
    return false;
  const Shape channel = shape({s.c_out}), none = shape({0});
  a->gx = c.out(input_grad ? shape_of(a->x) : none);
  a->gw = c.out(shape_of(a->w));
  a->gb = c.out(bias_grad ? channel : none);
  a->gbw = c.out(bn_grad ? channel : none);
  a->gbb = c.out(bn_grad ? channel : none);
  if (!input_grad) a->gx = nullptr;
  if (!bias_grad) a->gb = nullptr;
  if (!bn_grad) a->gbw = a->gbb = nullptr;
  return c.ok();
}

// see BnBackward
template <class Call>
void conv2d_bn_backward(Call& c) {
  BnBackward a;
  if (!bn_backward_args(c, false, &a)) return;
  const training_bn bn = a.bn();
  c.kernel(training_conv2d_bn_backward(&a.s, a.gy.f(), a.y.f(), a.conv_out.f(), a.x.f(), a.w.f(), &bn,
                                       static_cast<float>(a.low), static_cast<float>(a.high), a.gx, a.gw, a.gb, a.gbw,
                                       a.gbb));
}

// -> conv_out (or [0] without keep_conv), y, and the batch's mean and biased variance [c_out]
template <class Call>
void conv2d_bn_batch_stats(Call& c) {
  const Op& op = c.op();
  const View x = c.tensor("x"), w = c.tensor("weight"), b = c.optional("bias"), bn_w = c.optional("bn_weight"),
             bn_b = c.optional("bn_bias");
  const double eps = c.real();
  const ConvParams p = conv_params(c);
  const double low = c.real(), high = c.real();
  const bool keep_conv = c.flag();
  for (const View* t : {&x, &w, &b})
    if (!c.ok(op.tensor(*t))) return;
  training_conv2d s;
  if (!c.ok(conv_geometry(op, x, w, p, &s)) || !c.ok(channel_check(op, s, {&b, &bn_w, &bn_b}))) return;
  const Shape y = conv_output(s), channel = shape({s.c_out});
  float* conv_out = c.out(keep_conv ? y : shape({0}));
  float* out = c.out(y);
  float* mean = c.out(channel);
  float* var = c.out(channel);
  if (c.ok())
    c.kernel(training_conv2d_bn_batch_forward(&s, x.f(), w.f(), b.f(), bn_w.f(), bn_b.f(), static_cast<float>(eps),
                                              static_cast<float>(low), static_cast<float>(high),
                                              keep_conv ? conv_out : nullptr, out, mean, var));
}

// see BnBackward
template <class Call>
void conv2d_bn_batch_stats_backward(Call& c) {
  BnBackward a;
  if (!bn_backward_args(c, true, &a)) return;
  const training_bn bn = a.bn();
  c.kernel(training_conv2d_bn_batch_backward(&a.s, a.gy.f(), a.y.f(), a.conv_out.f(), a.x.f(), a.w.f(), &bn,
                                             static_cast<float>(a.low), static_cast<float>(a.high), a.gx, a.gw, a.gb,
                                             a.gbw, a.gbb));
}

}  // namespace dcx::training
