// dcx::layer_norm_backward and dcx::batch_norm_frozen_backward, written once against Views and an
// adapter's Call (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/view.h"
#include "training/norm/norm.h"

namespace dcx::training {

// over the last dim: x [..., d], mean and rstd [...] or [..., 1], weight [d] or absent ->
// grad_x like x (or [0]), grad_weight [d], grad_bias [d] (or [0] each without affine_grad)
template <class Call>
void layer_norm_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x"), mean = c.tensor("mean"), rstd = c.tensor("rstd"),
             w = c.optional("weight");
  const bool input_grad = c.flag(), affine_grad = c.flag();
  for (const View* t : {&gy, &x, &mean, &rstd, &w})
    if (!c.ok(op.tensor(*t))) return;
  if (!c.ok(op.same_shape(x, gy))) return;
  if (x.dim < 1 || x.size(-1) < 1) return (void)c.ok(op.fail("x must have a non-empty last dim"));
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  if (mean.numel() != rows || rstd.numel() != rows)
    return (void)c.ok(op.fail("mean and rstd must hold one value per row (" + std::to_string(rows) + "), got " +
                              shape_str(mean) + " and " + shape_str(rstd)));
  if (w.present && w.numel() != cols)
    return (void)c.ok(op.fail("weight must have shape [" + std::to_string(cols) + "], got " + shape_str(w)));
  float* gx = c.out(input_grad ? shape_of(x) : shape({0}));
  float* gw = c.out(affine_grad ? shape({cols}) : shape({0}));
  float* gb = c.out(affine_grad ? shape({cols}) : shape({0}));
  if (c.ok())
    c.kernel(training_layer_norm_backward(gy.f(), x.f(), mean.f(), rstd.f(), w.f(), rows, cols, input_grad ? gx : nullptr,
                                          affine_grad ? gw : nullptr, affine_grad ? gb : nullptr));
}

// eval-mode batch norm over dim 1 of x [n, c, ...]: running_mean, running_var [c], weight [c] or absent
template <class Call>
void batch_norm_frozen_backward(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x"), w = c.optional("weight"), mean = c.tensor("running_mean"),
             var = c.tensor("running_var");
  const double eps = c.real();
  const bool input_grad = c.flag(), affine_grad = c.flag();
  for (const View* t : {&gy, &x, &w, &mean, &var})
    if (!c.ok(op.tensor(*t))) return;
  if (!c.ok(op.same_shape(x, gy))) return;
  if (x.dim < 2) return (void)c.ok(op.fail("x must be [n, c, ...], got " + shape_str(x)));
  const int64_t n = x.size(0), channels = x.size(1), hw = channels ? x.numel() / (n * channels) : 0;
  for (const View* t : {&w, &mean, &var})
    if (t->present && (t->dim != 1 || t->size(0) != channels))
      return (void)c.ok(op.fail(std::string(t->name) + " must have shape [" + std::to_string(channels) + "], got " +
                                shape_str(*t)));
  float* gx = c.out(input_grad ? shape_of(x) : shape({0}));
  float* gw = c.out(affine_grad ? shape({channels}) : shape({0}));
  float* gb = c.out(affine_grad ? shape({channels}) : shape({0}));
  if (c.ok())
    c.kernel(training_batch_norm_frozen_backward(gy.f(), x.f(), w.f(), mean.f(), var.f(), static_cast<float>(eps), n,
                                                 channels, hw > 0 ? hw : 1, input_grad ? gx : nullptr,
                                                 affine_grad ? gw : nullptr, affine_grad ? gb : nullptr));
}

}  // namespace dcx::training
