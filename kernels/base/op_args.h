// Readers of the argument groups several ops share, written once against any adapter's Call
// (base/op_aten.h, base/op_executorch.h) and used by the families' op_<op>-impl.h. A failed check is the
// call's: c.ok() is false after it (ATen raises at once) and c.out gives no buffer.
#pragma once

#include <array>

#include "base/view.h"

namespace dcx {

// The next two tensor arguments, float32 and contiguous, the second of the first one's shape (a
// gradient and the tensor it belongs to, a parameter and its gradient, logits and their targets).
template <class Call>
std::array<View, 2> read_alike(Call& c, const char* first, const char* second) {
  const Op& op = c.op();
  const View a = c.tensor(first), b = c.tensor(second);
  (void)(c.ok(op.tensor(a)) && c.ok(op.tensor(b)) && c.ok(op.same_shape(b, a)));
  return {a, b};
}

// The next tensor argument, checked: float32 (or int32 / int64 when index) and contiguous.
template <class Call>
View read_checked(Call& c, const char* name, bool index = false) {
  const View v = c.tensor(name);
  c.ok(c.op().tensor(v, index));
  return v;
}

// x, weight, an optional bias and a flag (relu, shuffle): the arguments of a linear layer's forward
// (dcx::linear, dcx::shuffled_partitioned_linear).
struct LinearArgs {
  View x, w, b;
  bool flag;
};
template <class Call>
LinearArgs read_linear(Call& c) {
  LinearArgs a;
  a.x = c.tensor("x");
  a.w = c.tensor("weight");
  a.b = c.optional("bias");
  a.flag = c.flag();
  return a;
}

// The next int[2] arguments (a window's kernel, stride, padding, dilation), in order, one per out.
template <class Call, class... Pairs>
void read_pairs(Call& c, Pairs&... out) {
  (c.pair(out), ...);
}

}  // namespace dcx
