// dcx::cross_entropy_loss and dcx::bce_with_logits_loss (the mean loss and its gradient), written once
// against Views and an adapter's Call (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/op_args.h"
#include "training/loss/loss.h"

namespace dcx::training {

// logits [n, c], target [n] int64 -> loss [] and grad_logits [n, c]
template <class Call>
void cross_entropy_loss(Call& c) {
  const Op& op = c.op();
  const View z = c.tensor("logits"), t = c.tensor("target");
  const int64_t ignore_index = c.integer();
  if (!c.ok(op.tensor(z)) || !c.ok(op.dims(z, 2, "[n, classes]"))) return;
  if (t.dtype != DType::Int64)
    return (void)c.ok(op.fail("target must be int64 class indices, got " + std::string(dtype_name(t.dtype))));
  if (!c.ok(op.tensor(t, true))) return;
  if (t.dim != 1 || t.size(0) != z.size(0))
    return (void)c.ok(op.fail("target must have shape [" + std::to_string(z.size(0)) + "], got " + shape_str(t)));
  if (z.size(0) < 1 || z.size(1) < 1) return (void)c.ok(op.fail("logits " + shape_str(z) + " are empty"));
  float* loss = c.out(Shape{});
  float* grad = c.out(shape_of(z));
  if (c.ok())
    c.kernel(training_cross_entropy(z.f(), static_cast<const int64_t*>(t.data), z.size(0), z.size(1), ignore_index,
                                    loss, grad));
}

// logits [n], target [n] float -> loss [] and grad_logits [n]
template <class Call>
void bce_with_logits_loss(Call& c) {
  const auto [z, t] = read_alike(c, "logits", "target");
  if (!c.ok() || !c.ok(c.op().dims(z, 1, "[n]"))) return;
  if (z.size(0) < 1) return (void)c.ok(c.op().fail("logits are empty"));
  float* loss = c.out(Shape{});
  float* grad = c.out(shape_of(z));
  if (c.ok()) c.kernel(training_bce_with_logits(z.f(), t.f(), z.size(0), loss, grad));
}

}  // namespace dcx::training
