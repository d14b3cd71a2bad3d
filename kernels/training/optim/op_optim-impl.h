// dcx::sgd_update, dcx::sgd_momentum_update and dcx::adam_update, written once against Views and an
// adapter's Call (base/op_aten.h, base/op_executorch.h). Each returns the updated parameter and optimizer
// state; the kernels update in place, so each output starts as a copy of its input (none when the
// runtime hands the input itself as the out tensor).
#pragma once

#include <algorithm>
#include <cstdint>

#include "base/op_args.h"
#include "training/optim/optim.h"

namespace dcx::training {

// the next output, shaped and filled like t
template <class Call>
float* updated(Call& c, const View& t) {
  float* out = c.ok() ? c.out(shape_of(t)) : nullptr;
  if (out && out != t.f()) std::copy(t.f(), t.f() + t.numel(), out);
  return out;
}

// the next tensor argument: optimizer state of param's shape
template <class Call>
View read_state(Call& c, const char* name, const View& param) {
  const View s = read_checked(c, name);
  c.ok(c.op().same_shape(s, param));
  return s;
}

template <class Call>
void sgd_update(Call& c) {
  const auto [p, g] = read_alike(c, "param", "grad");
  const double lr = c.real();
  if (float* po = updated(c, p)) c.kernel(training_sgd_update(po, g.f(), p.numel(), static_cast<float>(lr)));
}

template <class Call>
void sgd_momentum_update(Call& c) {
  const auto [p, g] = read_alike(c, "param", "grad");
  const View buf = read_state(c, "momentum_buffer", p);
  const double lr = c.real(), momentum = c.real();
  const bool nesterov = c.flag();
  const double weight_decay = c.real();
  const bool first_step = c.flag();
  float* po = updated(c, p);
  float* bo = updated(c, buf);
  if (c.ok())
    c.kernel(training_sgd_momentum_update(po, g.f(), bo, p.numel(), static_cast<float>(lr),
                                          static_cast<float>(momentum), nesterov, static_cast<float>(weight_decay),
                                          first_step));
}

template <class Call>
void adam_update(Call& c) {
  const auto [p, g] = read_alike(c, "param", "grad");
  const View m = read_state(c, "exp_avg", p), v = read_state(c, "exp_avg_sq", p);
  const double lr = c.real(), beta1 = c.real(), beta2 = c.real(), eps = c.real(), weight_decay = c.real();
  const bool decoupled = c.flag();
  const int64_t step = c.integer();
  if (step < 1) return (void)c.ok(c.op().fail("step counts from 1, got " + std::to_string(step)));
  float* po = updated(c, p);
  float* mo = updated(c, m);
  float* vo = updated(c, v);
  if (c.ok())
    c.kernel(training_adam_update(po, g.f(), mo, vo, p.numel(), lr, beta1, beta2, eps, weight_decay, decoupled, step));
}

}  // namespace dcx::training
