// dcx::sgd_update (param - lr * grad), written once against Views and an adapter's Call
// (base/op_aten.h, base/op_executorch.h).
#pragma once

#include <algorithm>

#include "base/op_args.h"
#include "training/sgd/sgd.h"

namespace dcx::training {

template <class Call>
void sgd_update(Call& c) {
  const auto [p, g] = read_alike(c, "param", "grad");
  const double lr = c.real();
  float* out = c.ok() ? c.out(shape_of(p)) : nullptr;
  if (!out) return;
  if (out != p.f()) std::copy(p.f(), p.f() + p.numel(), out);  // the update runs in place on the output
  c.kernel(training_sgd_update(out, g.f(), p.numel(), static_cast<float>(lr)));
}

}  // namespace dcx::training
