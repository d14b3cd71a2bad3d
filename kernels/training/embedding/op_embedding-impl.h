// dcx::embedding_backward, written once against Views and an adapter's Call (base/op_aten.h,
// base/op_executorch.h).
#pragma once

#include "base/op_args.h"
#include "training/embedding/embedding.h"

namespace dcx::training {

// grad_y [..., dim], indices [...] int32/int64 -> grad_weight [num_weights, dim]
template <class Call>
void embedding_backward(Call& c) {
  const Op& op = c.op();
  const View gy = read_checked(c, "grad_y"), idx = read_checked(c, "indices", true);
  const int64_t num_weights = c.integer(), padding_idx = c.integer();
  if (!c.ok()) return;
  if (gy.dim != idx.dim + 1 || gy.numel() / (gy.dim ? gy.size(-1) : 1) != idx.numel())
    return (void)c.ok(op.fail("grad_y " + shape_str(gy) + " must be indices' shape " + shape_str(idx) +
                              " plus the embedding dim"));
  if (num_weights < 1 || gy.size(-1) < 1) return (void)c.ok(op.fail("num_weights and the embedding dim must be >= 1"));
  if (float* gw = c.out(shape({num_weights, gy.size(-1)})))
    c.kernel(training_embedding_backward(gy.f(), idx.data, idx.dtype == DType::Int32, idx.numel(), num_weights,
                                         gy.size(-1), padding_idx, gw));
}

}  // namespace dcx::training
