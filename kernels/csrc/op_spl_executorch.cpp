// ExecuTorch registration of the fused shuffled partitioned linear (a thin shell over spl_kernel.h):
//   dcx::shuffled_partitioned_linear.out                 (inference)
//   dcx::shuffled_partitioned_linear_grad_input.out      (on-device training)
//   dcx::shuffled_partitioned_linear_grad_weight.out
//   dcx::shuffled_partitioned_linear_grad_bias.out
// Built against an executorch wheel's headers and libexecutorch.so (host or aarch64). Load the
// library once per process (ctypes.CDLL(path, RTLD_GLOBAL) from Python, or link it with
// --no-as-needed into a runner); a second registration of the same op aborts ExecuTorch.
// Errors (bad shapes, dtypes) log a message and fail the kernel call; they never crash.
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include <array>
#include <optional>
#include <string>

#include "spl_kernel.h"
#include "spl_op_impl.h"

namespace dcx {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

spl::View view(const Tensor& t, const char* name) {
  spl::View v;
  v.name = name;
  v.is_float32 = t.scalar_type() == ScalarType::Float;
  v.contiguous = executorch::runtime::tensor_is_contiguous(t);
  v.dim = static_cast<int>(t.dim());
  for (int i = 0; i < v.dim && i < 8; i++) v.sizes[i] = t.size(i);
  v.data = v.is_float32 ? const_cast<float*>(t.const_data_ptr<float>()) : nullptr;
  return v;
}

spl::View absent() {
  spl::View v;
  v.present = false;
  return v;
}

bool ok(KernelRuntimeContext& ctx, const std::string& err) {
  if (err.empty()) return true;
  ET_LOG(Error, "%s", err.c_str());
  ctx.fail(Error::InvalidArgument);
  return false;
}

// Resize out to `sizes` (dynamic shapes) and check it can take the result.
bool prepare_out(KernelRuntimeContext& ctx, Tensor& out, const int64_t* sizes, int dim,
                 const char* op) {
  std::array<SizesType, 8> s{};
  for (int i = 0; i < dim; i++) s[i] = static_cast<SizesType>(sizes[i]);
  if (out.dim() != dim ||
      executorch::runtime::resize_tensor(out, {s.data(), static_cast<size_t>(dim)}) != Error::Ok) {
    ET_LOG(Error, "%s: cannot resize out (dim %d) to the result's shape (dim %d)", op,
           static_cast<int>(out.dim()), dim);
    ctx.fail(Error::InvalidArgument);
    return false;
  }
  return ok(ctx, spl::check_tensor(op, view(out, "out")));
}

bool kernel_ok(KernelRuntimeContext& ctx, int rc, const char* op) {
  if (rc == SPL_OK) return true;
  ET_LOG(Error, "%s: kernel failed: %s", op, spl_strerror(rc));
  ctx.fail(rc == SPL_ENOMEM ? Error::MemoryAllocationFailed : Error::InvalidArgument);
  return false;
}

Tensor& forward_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight,
                    const std::optional<Tensor>& bias, bool shuffle, Tensor& out) {
  spl::View vx = view(x, "x"), vw = view(weight, "weight");
  spl::View vb = bias.has_value() ? view(*bias, "bias") : absent();
  spl::Dims d;
  if (!ok(ctx, spl::check_forward(vx, vw, vb, &d))) return out;
  int64_t sizes[8];
  for (int i = 0; i < vx.dim; i++) sizes[i] = vx.sizes[i];
  sizes[vx.dim - 1] = d.d_out;
  if (!prepare_out(ctx, out, sizes, vx.dim, spl::kOp)) return out;
  kernel_ok(ctx,
            spl_forward(vx.data, vw.data, vb.present ? vb.data : nullptr, d.n, d.d_in, d.d_out, d.p,
                        shuffle, out.mutable_data_ptr<float>()),
            spl::kOp);
  return out;
}

constexpr const char* kGradInput = "dcx::shuffled_partitioned_linear_grad_input";
constexpr const char* kGradWeight = "dcx::shuffled_partitioned_linear_grad_weight";
constexpr const char* kGradBias = "dcx::shuffled_partitioned_linear_grad_bias";

Tensor& grad_input_out(KernelRuntimeContext& ctx, const Tensor& grad_y, const Tensor& weight,
                       bool shuffle, Tensor& out) {
  spl::View vw = view(weight, "weight"), vg = view(grad_y, "grad_y");
  if (!ok(ctx, spl::check_tensor(kGradInput, vw))) return out;
  if (vw.dim != 3)
    return ok(ctx, std::string(kGradInput) + ": weight must have shape [P, d_out/P, d_in/P]"), out;
  const int64_t P = vw.sizes[0], bo = vw.sizes[1], bi = vw.sizes[2];
  spl::Dims d;
  if (!ok(ctx, spl::check_grad(kGradInput, vg, P, P * bo, &d))) return out;
  int64_t sizes[8];
  for (int i = 0; i < vg.dim; i++) sizes[i] = vg.sizes[i];
  sizes[vg.dim - 1] = P * bi;
  if (!prepare_out(ctx, out, sizes, vg.dim, kGradInput)) return out;
  kernel_ok(ctx,
            spl_backward_input(vg.data, vw.data, d.n, P * bi, d.d_out, P, shuffle,
                               out.mutable_data_ptr<float>()),
            kGradInput);
  return out;
}

Tensor& grad_weight_out(KernelRuntimeContext& ctx, const Tensor& grad_y, const Tensor& x,
                        int64_t partitions, bool shuffle, Tensor& out) {
  spl::View vx = view(x, "x"), vg = view(grad_y, "grad_y");
  spl::Dims d;
  if (!ok(ctx, spl::check_tensor(kGradWeight, vx))) return out;
  if (!ok(ctx, spl::check_grad(kGradWeight, vg, partitions, -1, &d))) return out;
  if (vx.dim < 1 || vx.size(-1) % partitions || vx.numel() / vx.size(-1) != d.n)
    return ok(ctx, std::string(kGradWeight) + ": x must be [..., d_in] with d_in divisible by P and "
                                              "as many rows as grad_y"),
           out;
  const int64_t d_in = vx.size(-1);
  const int64_t sizes[3] = {partitions, d.d_out / partitions, d_in / partitions};
  if (!prepare_out(ctx, out, sizes, 3, kGradWeight)) return out;
  kernel_ok(ctx,
            spl_backward_weight(vg.data, vx.data, d.n, d_in, d.d_out, partitions, shuffle,
                                out.mutable_data_ptr<float>()),
            kGradWeight);
  return out;
}

Tensor& grad_bias_out(KernelRuntimeContext& ctx, const Tensor& grad_y, int64_t partitions,
                      bool shuffle, Tensor& out) {
  spl::View vg = view(grad_y, "grad_y");
  spl::Dims d;
  if (!ok(ctx, spl::check_grad(kGradBias, vg, partitions, -1, &d))) return out;
  const int64_t sizes[1] = {d.d_out};
  if (!prepare_out(ctx, out, sizes, 1, kGradBias)) return out;
  kernel_ok(ctx,
            spl_backward_bias(vg.data, d.n, d.d_out, partitions, shuffle,
                              out.mutable_data_ptr<float>()),
            kGradBias);
  return out;
}

}  // namespace
}  // namespace dcx

EXECUTORCH_LIBRARY(dcx, "shuffled_partitioned_linear.out", dcx::forward_out);
EXECUTORCH_LIBRARY(dcx, "shuffled_partitioned_linear_grad_input.out", dcx::grad_input_out);
EXECUTORCH_LIBRARY(dcx, "shuffled_partitioned_linear_grad_weight.out", dcx::grad_weight_out);
EXECUTORCH_LIBRARY(dcx, "shuffled_partitioned_linear_grad_bias.out", dcx::grad_bias_out);
