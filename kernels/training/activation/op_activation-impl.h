// dcx::threshold_backward and dcx::softmax_backward, written once against Views and an adapter's Call
// (base/op_aten.h, base/op_executorch.h).
#pragma once

#include "base/op_args.h"
#include "training/activation/activation.h"

namespace dcx::training {

// gx = grad_y where low < x < high, else 0
template <class Call>
void threshold_backward(Call& c) {
  const auto [gy, x] = read_alike(c, "grad_y", "x");
  const double low = c.real(), high = c.real();
  if (!c.ok()) return;
  if (float* gx = c.out(shape_of(gy)))
    c.kernel(training_threshold_backward(gy.f(), x.f(), gy.numel(), static_cast<float>(low), static_cast<float>(high), gx));
}

// along the last dim: y = softmax(x) (or log_softmax when log)
template <class Call>
void softmax_backward(Call& c) {
  const auto [gy, y] = read_alike(c, "grad_y", "y");
  const bool log = c.flag();
  if (!c.ok()) return;
  if (gy.dim < 1 || gy.size(-1) < 1) return (void)c.ok(c.op().fail("grad_y must have a non-empty last dim"));
  const int64_t cols = gy.size(-1);
  if (float* gx = c.out(shape_of(gy))) c.kernel(training_softmax_backward(gy.f(), y.f(), gy.numel() / cols, cols, log, gx));
}

}  // namespace dcx::training
