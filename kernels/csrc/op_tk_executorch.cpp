// ExecuTorch registration of the dcx training ops (a thin shell over tk_op_impl.h): the .out
// kernels that to_executorch emits for the ops of op_tk_aten.cpp. Boxed by hand (the stack holds
// the schema's arguments in order, the out tensors last), since the unboxing helper of the
// executorch wheel takes a single out tensor and several of these ops return two or three.
// Built against an executorch wheel's headers and libexecutorch.so (host or aarch64); load the
// library once per process. Errors (bad shapes, dtypes, indices) log one line and fail the call,
// never the process.
#include <executorch/runtime/core/event_tracer_hooks.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <array>
#include <string>

#include "tk_op_impl.h"

namespace dcx {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::EValue;
using executorch::runtime::Error;
using executorch::runtime::Kernel;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

tk::Arg arg(const Tensor& t, const char* name) {
  tk::Arg a;
  a.name = name;
  const ScalarType st = t.scalar_type();
  a.dtype = st == ScalarType::Float ? tk::DType::Float : st == ScalarType::Int ? tk::DType::Int32
          : st == ScalarType::Long  ? tk::DType::Int64 : tk::DType::Other;
  a.contiguous = executorch::runtime::tensor_is_contiguous(t);
  a.dim = static_cast<int>(t.dim());
  for (int i = 0; i < a.dim && i < 8; i++) a.sizes[i] = t.size(i);
  a.data = a.dtype == tk::DType::Other ? nullptr : const_cast<void*>(t.const_data_ptr());
  return a;
}

// Argument i of the stack.
struct Stack {
  KernelRuntimeContext& ctx;
  Span<EValue*> s;
  tk::Arg tensor(size_t i, const char* name) const { return arg(s[i]->toTensor(), name); }
  tk::Arg optional(size_t i, const char* name) const {
    return s[i]->isNone() ? tk::absent(name) : arg(s[i]->toTensor(), name);
  }
  int64_t integer(size_t i) const { return s[i]->toInt(); }
  double real(size_t i) const { return s[i]->toDouble(); }
  bool flag(size_t i) const { return s[i]->toBool(); }
  void pair(size_t i, int64_t out[2]) const {
    auto list = s[i]->toIntList();
    out[0] = list.size() > 0 ? list[0] : 0;
    out[1] = list.size() > 1 ? list[1] : out[0];
  }
  Tensor& out(size_t i) const { return s[i]->toTensor(); }

  // false (and the call failed, with the message logged) when err is not empty
  bool ok(const std::string& err) const {
    if (err.empty()) return true;
    ET_LOG(Error, "%s", err.c_str());
    ctx.fail(Error::InvalidArgument);
    return false;
  }
  // resize out i to shape and check its dtype
  bool prepare(size_t i, const tk::Shape& shape, ScalarType dtype = ScalarType::Float) const {
    Tensor& t = out(i);
    std::array<SizesType, 8> sizes{};
    for (int d = 0; d < shape.dim; d++) sizes[d] = static_cast<SizesType>(shape.s[d]);
    if (t.scalar_type() != dtype || t.dim() != shape.dim ||
        executorch::runtime::resize_tensor(t, {sizes.data(), static_cast<size_t>(shape.dim)}) != Error::Ok) {
      ET_LOG(Error, "dcx: an out tensor (dim %d) cannot take the result (dim %d)", static_cast<int>(t.dim()), shape.dim);
      ctx.fail(Error::InvalidArgument);
      return false;
    }
    return true;
  }
  float* f(size_t i) const { return out(i).mutable_data_ptr<float>(); }
};

tk::ConvParams conv_params(const Stack& a, size_t first) {
  tk::ConvParams p;
  a.pair(first, p.stride);
  a.pair(first + 1, p.padding);
  a.pair(first + 2, p.dilation);
  p.groups = a.integer(first + 3);
  return p;
}

tk::PoolParams pool_params(const Stack& a, size_t first, bool count_include_pad) {
  tk::PoolParams p;
  a.pair(first, p.kernel);
  a.pair(first + 1, p.stride);
  a.pair(first + 2, p.padding);
  p.count_include_pad = count_include_pad;
  return p;
}

// linear.out(x, weight, bias?, relu, *, out)
void linear_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg x = a.tensor(0, "x"), w = a.tensor(1, "weight"), b = a.optional(2, "bias");
  tk::Shape y;
  if (a.ok(tk::linear_check(x, w, b, &y)) && a.prepare(4, y)) a.ok(tk::linear_run(x, w, b, a.flag(3), a.f(4)));
}

// linear_backward.out(grad_y, x, weight, relu_out?, input_grad, bias_grad, *, out0, out1, out2)
void linear_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x"), w = a.tensor(2, "weight"), r = a.optional(3, "relu_out");
  const bool ig = a.flag(4), bg = a.flag(5);
  tk::Shape o[3];
  if (a.ok(tk::linear_backward_check(gy, x, w, r, ig, bg, o)) && a.prepare(6, o[0]) && a.prepare(7, o[1]) &&
      a.prepare(8, o[2]))
    a.ok(tk::linear_backward_run(gy, x, w, r, ig, bg, a.f(6), a.f(7), a.f(8)));
}

// conv2d.out(x, weight, bias?, stride, padding, dilation, groups, relu, *, out)
void conv2d_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg x = a.tensor(0, "x"), w = a.tensor(1, "weight"), b = a.optional(2, "bias");
  tk::Shape y;
  tk_conv2d g;
  if (a.ok(tk::conv2d_check(x, w, b, conv_params(a, 3), &y, &g)) && a.prepare(8, y))
    a.ok(tk::conv2d_run(g, x, w, b, a.flag(7), a.f(8)));
}

// conv2d_backward.out(grad_y, x, weight, relu_out?, stride, padding, dilation, groups, input_grad,
//                     bias_grad, *, out0, out1, out2)
void conv2d_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x"), w = a.tensor(2, "weight"), r = a.optional(3, "relu_out");
  const bool ig = a.flag(8), bg = a.flag(9);
  tk::Shape o[3];
  tk_conv2d g;
  if (a.ok(tk::conv2d_backward_check(gy, x, w, r, conv_params(a, 4), ig, bg, o, &g)) && a.prepare(10, o[0]) &&
      a.prepare(11, o[1]) && a.prepare(12, o[2]))
    a.ok(tk::conv2d_backward_run(g, gy, x, w, r, ig, bg, a.f(10), a.f(11), a.f(12)));
}

// max_pool2d.out(x, kernel, stride, padding, *, out0, out1)
void max_pool2d_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg x = a.tensor(0, "x");
  tk::Shape y;
  tk_pool2d g;
  if (a.ok(tk::pool_geometry(tk::kMaxPool, x, pool_params(a, 1, false), &g, &y)) && a.prepare(4, y) &&
      a.prepare(5, y, ScalarType::Long))
    a.ok(tk::max_pool2d_run(g, x, a.f(4), a.out(5).mutable_data_ptr<int64_t>()));
}

// max_pool2d_backward.out(grad_y, x, indices, kernel, stride, padding, *, out)
void max_pool2d_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x"), idx = a.tensor(2, "indices");
  tk_pool2d g;
  if (a.ok(tk::max_pool2d_backward_check(gy, x, idx, pool_params(a, 3, false), &g)) && a.prepare(6, tk::shape_of(x)))
    a.ok(tk::max_pool2d_backward_run(g, gy, idx, a.f(6)));
}

// avg_pool2d.out(x, kernel, stride, padding, count_include_pad, *, out)
void avg_pool2d_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg x = a.tensor(0, "x");
  tk::Shape y;
  tk_pool2d g;
  if (a.ok(tk::pool_geometry(tk::kAvgPool, x, pool_params(a, 1, a.flag(4)), &g, &y)) && a.prepare(5, y))
    a.ok(tk::avg_pool2d_run(g, x, a.f(5)));
}

// avg_pool2d_backward.out(grad_y, x, kernel, stride, padding, count_include_pad, *, out)
void avg_pool2d_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x");
  tk_pool2d g;
  if (a.ok(tk::avg_pool2d_backward_check(gy, x, pool_params(a, 2, a.flag(5)), &g)) && a.prepare(6, tk::shape_of(x)))
    a.ok(tk::avg_pool2d_backward_run(g, gy, a.f(6)));
}

// threshold_backward.out(grad_y, x, low, high, *, out)
void threshold_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x");
  if (a.ok(tk::threshold_backward_check(gy, x)) && a.prepare(4, tk::shape_of(gy)))
    a.ok(tk::threshold_backward_run(gy, x, a.real(2), a.real(3), a.f(4)));
}

// softmax_backward.out(grad_y, y, log, *, out)
void softmax_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), y = a.tensor(1, "y");
  if (a.ok(tk::softmax_backward_check(gy, y)) && a.prepare(3, tk::shape_of(gy)))
    a.ok(tk::softmax_backward_run(gy, y, a.flag(2), a.f(3)));
}

// cross_entropy_loss.out(logits, target, ignore_index, *, out0, out1)
void cross_entropy_loss_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg z = a.tensor(0, "logits"), t = a.tensor(1, "target");
  if (a.ok(tk::cross_entropy_check(z, t)) && a.prepare(3, tk::Shape{}) && a.prepare(4, tk::shape_of(z)))
    a.ok(tk::cross_entropy_run(z, t, a.integer(2), a.f(3), a.f(4)));
}

// bce_with_logits_loss.out(logits, target, *, out0, out1)
void bce_with_logits_loss_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg z = a.tensor(0, "logits"), t = a.tensor(1, "target");
  if (a.ok(tk::bce_check(z, t)) && a.prepare(2, tk::Shape{}) && a.prepare(3, tk::shape_of(z)))
    a.ok(tk::bce_run(z, t, a.f(2), a.f(3)));
}

// layer_norm_backward.out(grad_y, x, mean, rstd, weight?, input_grad, affine_grad, *, out0, out1, out2)
void layer_norm_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x"), m = a.tensor(2, "mean"), r = a.tensor(3, "rstd"),
                w = a.optional(4, "weight");
  const bool ig = a.flag(5), ag = a.flag(6);
  tk::Shape o[3];
  if (a.ok(tk::layer_norm_backward_check(gy, x, m, r, w, ig, ag, o)) && a.prepare(7, o[0]) && a.prepare(8, o[1]) &&
      a.prepare(9, o[2]))
    a.ok(tk::layer_norm_backward_run(gy, x, m, r, w, ig, ag, a.f(7), a.f(8), a.f(9)));
}

// batch_norm_frozen_backward.out(grad_y, x, weight?, running_mean, running_var, eps, input_grad,
//                                affine_grad, *, out0, out1, out2)
void batch_norm_frozen_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), x = a.tensor(1, "x"), w = a.optional(2, "weight"),
                m = a.tensor(3, "running_mean"), v = a.tensor(4, "running_var");
  const bool ig = a.flag(6), ag = a.flag(7);
  tk::Shape o[3];
  if (a.ok(tk::batch_norm_backward_check(gy, x, w, m, v, ig, ag, o)) && a.prepare(8, o[0]) && a.prepare(9, o[1]) &&
      a.prepare(10, o[2]))
    a.ok(tk::batch_norm_backward_run(gy, x, w, m, v, a.real(5), ig, ag, a.f(8), a.f(9), a.f(10)));
}

// embedding_backward.out(grad_y, indices, num_weights, padding_idx, *, out)
void embedding_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), idx = a.tensor(1, "indices");
  tk::Shape gw;
  if (a.ok(tk::embedding_backward_check(gy, idx, a.integer(2), &gw)) && a.prepare(4, gw))
    a.ok(tk::embedding_backward_run(gy, idx, a.integer(2), a.integer(3), a.f(4)));
}

// sgd_update.out(param, grad, lr, *, out)
void sgd_update_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg p = a.tensor(0, "param"), g = a.tensor(1, "grad");
  if (a.ok(tk::sgd_check(p, g)) && a.prepare(3, tk::shape_of(p))) a.ok(tk::sgd_run(p, g, a.real(2), a.f(3)));
}

// Each kernel call is a profiled event named like the stock kernels' (native_call_<op>), so ETDump
// and dcx.targets.runner.top_operators see the dcx ops by name.
// conv2d_bn.out(x, weight, bias?, bn_weight?, bn_bias?, running_mean, running_var, eps, stride, padding,
//               dilation, groups, low, high, keep_conv, conv_only_for_backward, *, out0, out1)
void conv2d_bn_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg x = a.tensor(0, "x"), w = a.tensor(1, "weight"), b = a.optional(2, "bias"),
                bw = a.optional(3, "bn_weight"), bb = a.optional(4, "bn_bias"), m = a.tensor(5, "running_mean"),
                v = a.tensor(6, "running_var");
  const bool keep = a.flag(14), lazy = a.flag(15);
  tk::Shape o[2];
  tk_conv2d g;
  if (a.ok(tk::conv2d_bn_check(x, w, b, bw, bb, m, v, conv_params(a, 8), keep, o, &g)) && a.prepare(16, o[0]) &&
      a.prepare(17, o[1]))
    a.ok(tk::conv2d_bn_run(g, x, w, b, bw, bb, m, v, a.real(7), a.real(12), a.real(13), keep, lazy, a.f(16), a.f(17)));
}

// conv2d_bn_backward.out(grad_y, y, conv_out, x, weight, bn_weight?, bn_bias?, running_mean, running_var, eps,
//                        stride, padding, dilation, groups, low, high, input_grad, bias_grad, bn_grad, *, out0 .. out4)
void conv2d_bn_backward_out(KernelRuntimeContext& ctx, Span<EValue*> s) {
  const Stack a{ctx, s};
  const tk::Arg gy = a.tensor(0, "grad_y"), y = a.tensor(1, "y"), c = a.tensor(2, "conv_out"), x = a.tensor(3, "x"),
                w = a.tensor(4, "weight"), bw = a.optional(5, "bn_weight"), bb = a.optional(6, "bn_bias"),
                m = a.tensor(7, "running_mean"), v = a.tensor(8, "running_var");
  const bool ig = a.flag(16), bg = a.flag(17), ng = a.flag(18);
  tk::Shape o[5];
  tk_conv2d g;
  if (!a.ok(tk::conv2d_bn_backward_check(gy, y, c, x, w, bw, bb, m, v, conv_params(a, 10), ig, bg, ng, o, &g))) return;
  float* p[5];
  for (size_t i = 0; i < 5; i++) {
    if (!a.prepare(19 + i, o[i])) return;
    p[i] = a.f(19 + i);
  }
  a.ok(tk::conv2d_bn_backward_run(g, gy, y, c, x, w, bw, bb, m, v, a.real(9), a.real(14), a.real(15), ig, bg, ng, p));
}

#define DCX_KERNEL(op, fn)                                                                       \
  Kernel("dcx::" op, [](KernelRuntimeContext& ctx, Span<EValue*> s) {                           \
    executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(),  \
                                                                   "native_call_dcx::" op);      \
    fn(ctx, s);                                                                                  \
  })

const Kernel kKernels[] = {
    DCX_KERNEL("conv2d_bn.out", conv2d_bn_out),
    DCX_KERNEL("conv2d_bn_backward.out", conv2d_bn_backward_out),
    DCX_KERNEL("linear.out", linear_out),
    DCX_KERNEL("linear_backward.out", linear_backward_out),
    DCX_KERNEL("conv2d.out", conv2d_out),
    DCX_KERNEL("conv2d_backward.out", conv2d_backward_out),
    DCX_KERNEL("max_pool2d.out", max_pool2d_out),
    DCX_KERNEL("max_pool2d_backward.out", max_pool2d_backward_out),
    DCX_KERNEL("avg_pool2d.out", avg_pool2d_out),
    DCX_KERNEL("avg_pool2d_backward.out", avg_pool2d_backward_out),
    DCX_KERNEL("threshold_backward.out", threshold_backward_out),
    DCX_KERNEL("softmax_backward.out", softmax_backward_out),
    DCX_KERNEL("cross_entropy_loss.out", cross_entropy_loss_out),
    DCX_KERNEL("bce_with_logits_loss.out", bce_with_logits_loss_out),
    DCX_KERNEL("layer_norm_backward.out", layer_norm_backward_out),
    DCX_KERNEL("batch_norm_frozen_backward.out", batch_norm_frozen_backward_out),
    DCX_KERNEL("embedding_backward.out", embedding_backward_out),
    DCX_KERNEL("sgd_update.out", sgd_update_out),
};

const auto registered = executorch::runtime::register_kernels({kKernels, sizeof kKernels / sizeof kKernels[0]});

}  // namespace
}  // namespace dcx
