// The partitioned linear in PyTorch: its rows of kernels/ops.def through the shared ATen adapter, and an
// Autograd kernel for the forward whose backward calls the three gradient ops, so that training and
// torch.export (joint graphs included) see single nodes. Registered in C++ so that a call costs one
// dispatch, not a Python hop; the fake kernels are Python's (dcx.kernels.ops). Strided inputs are
// refused, with the fix in the message.
#include <torch/autograd.h>

#include "base/op_aten.h"
#include "partitioned_linear/op_partitioned_linear-impl.h"

#define DCX_IF_training(...)
#define DCX_IF_partitioned_linear(...) __VA_ARGS__
#define DCX_LIBRARY_OPS dcx::partitioned_linear
#define DCX_DENSE_COPIES false
#include "base/op_aten-library.h"

namespace dcx::partitioned_linear {
namespace {

class Function : public torch::autograd::Function<Function> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, bool shuffle) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dcx::shuffled_partitioned_linear", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, bool)>();
    ctx->save_for_backward({x, weight});
    ctx->saved_data["shuffle"] = shuffle;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return op.call(x, weight, bias, shuffle);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto gi = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dcx::shuffled_partitioned_linear_grad_input", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, bool)>();
    static auto gw = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dcx::shuffled_partitioned_linear_grad_weight", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool)>();
    static auto gb = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dcx::shuffled_partitioned_linear_grad_bias", "")
                         .typed<at::Tensor(const at::Tensor&, int64_t, bool)>();
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const bool shuffle = ctx->saved_data["shuffle"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const int64_t P = weight.size(0);
    at::Tensor g = grads[0].contiguous();
    at::Tensor gx, gwt, gbs;
    if (ctx->needs_input_grad(0)) gx = gi.call(g, weight, shuffle);
    if (ctx->needs_input_grad(1)) gwt = gw.call(g, x, P, shuffle);
    if (has_bias && ctx->needs_input_grad(2)) gbs = gb.call(g, P, shuffle);
    return {gx, gwt, gbs, at::Tensor()};
  }
};

at::Tensor forward_autograd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            bool shuffle) {
  return Function::apply(x, weight, bias, shuffle);
}

}  // namespace
}  // namespace dcx::partitioned_linear

TORCH_LIBRARY_IMPL(dcx, Autograd, m) { m.impl("shuffled_partitioned_linear", dcx::partitioned_linear::forward_autograd); }
