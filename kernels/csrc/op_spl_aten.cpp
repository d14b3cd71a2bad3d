// PyTorch registration of the fused shuffled partitioned linear (a thin shell over spl_kernel.h):
//   dcx::shuffled_partitioned_linear(x, weight, bias=None, shuffle=True)        (+ .out)
//   dcx::shuffled_partitioned_linear_grad_input(grad_y, weight, shuffle=True)   (+ .out)
//   dcx::shuffled_partitioned_linear_grad_weight(grad_y, x, partitions, shuffle=True) (+ .out)
//   dcx::shuffled_partitioned_linear_grad_bias(grad_y, partitions, shuffle=True)      (+ .out)
// The forward has an Autograd kernel whose backward calls the three grad ops, so training and
// torch.export (joint graphs included) see single nodes. Fake kernels live in Python
// (dcx/kernels/_ops.py). Registered in C++ so that a call costs one dispatch, not a Python hop.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/native/Resize.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "spl_kernel.h"
#include "spl_op_impl.h"

namespace dcx {
namespace {

spl::View view(const at::Tensor& t, const char* name) {
  spl::View v;
  v.name = name;
  v.present = t.defined();
  if (!v.present) return v;
  TORCH_CHECK(t.device().is_cpu(), spl::kOp, ": ", name, " must be a CPU tensor, got ", t.device());
  v.is_float32 = t.scalar_type() == at::kFloat;
  v.contiguous = t.is_contiguous();
  v.dim = static_cast<int>(t.dim());
  for (int i = 0; i < v.dim && i < 8; i++) v.sizes[i] = t.size(i);
  v.data = v.is_float32 ? const_cast<float*>(t.const_data_ptr<float>()) : nullptr;
  return v;
}

void fail_if(const std::string& err) { TORCH_CHECK(err.empty(), err); }

void check_kernel(int rc, const char* op) {
  TORCH_CHECK(rc == SPL_OK, op, ": kernel failed: ", spl_strerror(rc));
}

void prepare_out(at::Tensor& out, at::IntArrayRef sizes, const char* op,
                 std::initializer_list<const at::Tensor*> inputs) {
  TORCH_CHECK(out.scalar_type() == at::kFloat, op, ": out must be float32, got ", out.scalar_type());
  TORCH_CHECK(out.device().is_cpu(), op, ": out must be a CPU tensor");
  at::native::resize_output(out, sizes);
  TORCH_CHECK(out.is_contiguous(), op, ": out must be contiguous");
  for (const at::Tensor* t : inputs)
    if (t->defined() && t->numel() > 0 && out.numel() > 0) at::assert_no_overlap(out, *t);
}

// ---------------------------------------------------------------- forward

std::vector<int64_t> forward_sizes(const at::Tensor& x, int64_t d_out) {
  std::vector<int64_t> s = x.sizes().vec();
  s.back() = d_out;
  return s;
}

at::Tensor& forward_out(const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, bool shuffle, at::Tensor& out) {
  const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
  spl::View vx = view(x, "x"), vw = view(weight, "weight"), vb = view(b, "bias");
  spl::Dims d;
  fail_if(spl::check_forward(vx, vw, vb, &d));
  prepare_out(out, forward_sizes(x, d.d_out), spl::kOp, {&x, &weight, &b});
  const char* err = spl::run_forward(vx, vw, vb, d, shuffle, out.data_ptr<float>());
  TORCH_CHECK(!err, spl::kOp, ": kernel failed: ", err ? err : "");
  return out;
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, bool shuffle) {
  at::Tensor out = at::empty({0}, x.options().dtype(at::kFloat));
  return forward_out(x, weight, bias, shuffle, out);
}

// ---------------------------------------------------------------- backward kernels

constexpr const char* kGradInput = "dcx::shuffled_partitioned_linear_grad_input";
constexpr const char* kGradWeight = "dcx::shuffled_partitioned_linear_grad_weight";
constexpr const char* kGradBias = "dcx::shuffled_partitioned_linear_grad_bias";

at::Tensor& grad_input_out(const at::Tensor& grad_y, const at::Tensor& weight, bool shuffle,
                           at::Tensor& out) {
  spl::View vw = view(weight, "weight");
  fail_if(spl::check_tensor(kGradInput, vw));
  TORCH_CHECK(vw.dim == 3, kGradInput, ": weight must have shape [P, d_out/P, d_in/P], got ",
              weight.sizes());
  const int64_t P = vw.sizes[0], bo = vw.sizes[1], bi = vw.sizes[2];
  spl::Dims d;
  fail_if(spl::check_grad(kGradInput, view(grad_y, "grad_y"), P, P * bo, &d));
  std::vector<int64_t> sizes = grad_y.sizes().vec();
  sizes.back() = P * bi;
  prepare_out(out, sizes, kGradInput, {&grad_y, &weight});
  check_kernel(spl_backward_input(grad_y.const_data_ptr<float>(), vw.data, d.n, P * bi, d.d_out, P,
                                  shuffle, out.data_ptr<float>()),
               kGradInput);
  return out;
}

at::Tensor grad_input(const at::Tensor& grad_y, const at::Tensor& weight, bool shuffle) {
  at::Tensor out = at::empty({0}, grad_y.options().dtype(at::kFloat));
  return grad_input_out(grad_y, weight, shuffle, out);
}

at::Tensor& grad_weight_out(const at::Tensor& grad_y, const at::Tensor& x, int64_t partitions,
                            bool shuffle, at::Tensor& out) {
  spl::View vx = view(x, "x");
  fail_if(spl::check_tensor(kGradWeight, vx));
  spl::Dims d;
  fail_if(spl::check_grad(kGradWeight, view(grad_y, "grad_y"), partitions, -1, &d));
  TORCH_CHECK(vx.dim >= 1 && vx.size(-1) % partitions == 0, kGradWeight, ": x's last dim must be ",
              "divisible by partitions=", partitions, ", got x of shape ", x.sizes());
  const int64_t d_in = vx.size(-1);
  TORCH_CHECK(vx.numel() / std::max<int64_t>(d_in, 1) == d.n, kGradWeight, ": x ", x.sizes(),
              " and grad_y ", grad_y.sizes(), " have different numbers of rows");
  prepare_out(out, {partitions, d.d_out / partitions, d_in / partitions}, kGradWeight,
              {&grad_y, &x});
  check_kernel(spl_backward_weight(grad_y.const_data_ptr<float>(), vx.data, d.n, d_in, d.d_out,
                                   partitions, shuffle, out.data_ptr<float>()),
               kGradWeight);
  return out;
}

at::Tensor grad_weight(const at::Tensor& grad_y, const at::Tensor& x, int64_t partitions,
                       bool shuffle) {
  at::Tensor out = at::empty({0}, grad_y.options().dtype(at::kFloat));
  return grad_weight_out(grad_y, x, partitions, shuffle, out);
}

at::Tensor& grad_bias_out(const at::Tensor& grad_y, int64_t partitions, bool shuffle,
                          at::Tensor& out) {
  spl::Dims d;
  fail_if(spl::check_grad(kGradBias, view(grad_y, "grad_y"), partitions, -1, &d));
  prepare_out(out, {d.d_out}, kGradBias, {&grad_y});
  check_kernel(spl_backward_bias(grad_y.const_data_ptr<float>(), d.n, d.d_out, partitions, shuffle,
                                 out.data_ptr<float>()),
               kGradBias);
  return out;
}

at::Tensor grad_bias(const at::Tensor& grad_y, int64_t partitions, bool shuffle) {
  at::Tensor out = at::empty({0}, grad_y.options().dtype(at::kFloat));
  return grad_bias_out(grad_y, partitions, shuffle, out);
}

// ---------------------------------------------------------------- autograd

class SPLFunction : public torch::autograd::Function<SPLFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            bool shuffle) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dcx::shuffled_partitioned_linear", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const std::optional<at::Tensor>&, bool)>();
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

at::Tensor forward_autograd(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, bool shuffle) {
  return SPLFunction::apply(x, weight, bias, shuffle);
}

std::string kernel_isa(c10::string_view isa) {
  if (!isa.empty()) {
    int found = -1;
    for (int i = SPL_ISA_AUTO; i <= SPL_ISA_NEON; i++)
      if (isa == spl_isa_name(i)) found = i;
    TORCH_CHECK(found >= 0, "dcx::_kernel_isa: unknown implementation '", std::string(isa),
                "'; use auto, portable, x86-64-v3 or neon");
    TORCH_CHECK(spl_set_isa(found) == SPL_OK, "dcx::_kernel_isa: '", std::string(isa),
                "' is not available on this build or CPU");
  }
  return spl_isa_name(spl_active_isa());
}

}  // namespace

TORCH_LIBRARY(dcx, m) {
  m.def("shuffled_partitioned_linear(Tensor x, Tensor weight, Tensor? bias=None, bool shuffle=True) -> Tensor");
  m.def("shuffled_partitioned_linear.out(Tensor x, Tensor weight, Tensor? bias=None, bool shuffle=True, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("shuffled_partitioned_linear_grad_input(Tensor grad_y, Tensor weight, bool shuffle=True) -> Tensor");
  m.def("shuffled_partitioned_linear_grad_input.out(Tensor grad_y, Tensor weight, bool shuffle=True, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("shuffled_partitioned_linear_grad_weight(Tensor grad_y, Tensor x, int partitions, bool shuffle=True) -> Tensor");
  m.def("shuffled_partitioned_linear_grad_weight.out(Tensor grad_y, Tensor x, int partitions, bool shuffle=True, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("shuffled_partitioned_linear_grad_bias(Tensor grad_y, int partitions, bool shuffle=True) -> Tensor");
  m.def("shuffled_partitioned_linear_grad_bias.out(Tensor grad_y, int partitions, bool shuffle=True, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("_kernel_isa(str isa=\"\") -> str");
  m.impl("_kernel_isa", kernel_isa);
}

TORCH_LIBRARY_IMPL(dcx, CPU, m) {
  m.impl("shuffled_partitioned_linear", forward);
  m.impl("shuffled_partitioned_linear.out", forward_out);
  m.impl("shuffled_partitioned_linear_grad_input", grad_input);
  m.impl("shuffled_partitioned_linear_grad_input.out", grad_input_out);
  m.impl("shuffled_partitioned_linear_grad_weight", grad_weight);
  m.impl("shuffled_partitioned_linear_grad_weight.out", grad_weight_out);
  m.impl("shuffled_partitioned_linear_grad_bias", grad_bias);
  m.impl("shuffled_partitioned_linear_grad_bias.out", grad_bias_out);
}

TORCH_LIBRARY_IMPL(dcx, Autograd, m) {
  m.impl("shuffled_partitioned_linear", forward_autograd);
}

}  // namespace dcx
