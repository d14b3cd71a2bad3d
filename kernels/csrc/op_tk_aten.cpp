// PyTorch registration of the dcx training ops (a thin shell over tk_op_impl.h): each op and its
// .out variant (the form ExecuTorch's to_executorch emits), CPU kernels only. The ops appear in
// joint forward+backward graphs through the fast-training export pass, not through autograd, so
// none has an autograd formula. Fake kernels for torch.export live in Python
// (dcx/kernels/_training_fake.py). A fragment of the dcx namespace that libdcx_spl_aten.so
// defines; load that library first.
#include <ATen/ATen.h>
#include <ATen/native/Resize.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "tk_op_impl.h"

namespace dcx {
namespace {

using Tensor = at::Tensor;
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor3Ref = std::tuple<Tensor&, Tensor&, Tensor&>;

tk::Arg view(const Tensor& t, const char* name) {
  if (!t.defined()) return tk::absent(name);
  TORCH_CHECK(t.device().is_cpu(), "dcx training ops run on CPU tensors; ", name, " is on ", t.device());
  tk::Arg a;
  a.name = name;
  const auto st = t.scalar_type();
  a.dtype = st == at::kFloat ? tk::DType::Float : st == at::kInt ? tk::DType::Int32 : st == at::kLong ? tk::DType::Int64
                                                                                                        : tk::DType::Other;
  a.contiguous = t.is_contiguous();
  a.dim = static_cast<int>(t.dim());
  for (int i = 0; i < a.dim && i < 8; i++) a.sizes[i] = t.size(i);
  a.data = a.dtype == tk::DType::Other ? nullptr : const_cast<void*>(t.const_data_ptr());
  return a;
}
// The inputs of one call, made contiguous (a copy only when they are not): the kernels read
// dense row-major memory, and a graph run eagerly may hand them strided views.
struct Inputs {
  std::vector<Tensor> keep;
  tk::Arg operator()(const Tensor& t, const char* name) {
    if (!t.defined()) return tk::absent(name);
    keep.push_back(t.contiguous());
    return view(keep.back(), name);
  }
  tk::Arg operator()(const std::optional<Tensor>& t, const char* name) {
    return t.has_value() ? (*this)(*t, name) : tk::absent(name);
  }
};

void fail_if(const std::string& err) { TORCH_CHECK(err.empty(), err); }

std::vector<int64_t> dims(const tk::Shape& s) { return std::vector<int64_t>(s.s, s.s + s.dim); }

// Resize out to s; it must be a contiguous CPU tensor of dtype.
void prepare(Tensor& out, const tk::Shape& s, at::ScalarType dtype = at::kFloat) {
  TORCH_CHECK(out.scalar_type() == dtype, "dcx: out must be ", dtype, ", got ", out.scalar_type());
  TORCH_CHECK(out.device().is_cpu(), "dcx: out must be a CPU tensor");
  at::native::resize_output(out, dims(s));
  TORCH_CHECK(out.is_contiguous(), "dcx: out must be contiguous");
}

Tensor empty_like_float(const Tensor& t) { return at::empty({0}, t.options().dtype(at::kFloat)); }
float* f(Tensor& t) { return t.data_ptr<float>(); }

tk::ConvParams conv_params(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "dcx::conv2d: stride, padding and dilation need 2 values each");
  return {{stride[0], stride[1]}, {padding[0], padding[1]}, {dilation[0], dilation[1]}, groups};
}

tk::PoolParams pool_params(at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding, bool count_include_pad) {
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2,
              "dcx pooling: kernel, stride and padding need 2 values each");
  return {{kernel[0], kernel[1]}, {stride[0], stride[1]}, {padding[0], padding[1]}, count_include_pad};
}

// ------------------------------------------------------------------------------------ linear

Tensor& linear_out(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, bool relu, Tensor& out) {
  Inputs in;
  tk::Shape y;
  const tk::Arg ax = in(x, "x"), aw = in(w, "weight"), ab = in(b, "bias");
  fail_if(tk::linear_check(ax, aw, ab, &y));
  prepare(out, y);
  fail_if(tk::linear_run(ax, aw, ab, relu, f(out)));
  return out;
}
Tensor linear(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, bool relu) {
  Tensor out = empty_like_float(x);
  return linear_out(x, w, b, relu, out);
}

Tensor3Ref linear_backward_out(const Tensor& gy, const Tensor& x, const Tensor& w, const std::optional<Tensor>& relu_out,
                               bool input_grad, bool bias_grad, Tensor& gx, Tensor& gw, Tensor& gb) {
  Inputs in;
  tk::Shape s[3];
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x"), aw = in(w, "weight"), ar = in(relu_out, "relu_out");
  fail_if(tk::linear_backward_check(ag, ax, aw, ar, input_grad, bias_grad, s));
  prepare(gx, s[0]);
  prepare(gw, s[1]);
  prepare(gb, s[2]);
  fail_if(tk::linear_backward_run(ag, ax, aw, ar, input_grad, bias_grad, f(gx), f(gw), f(gb)));
  return {gx, gw, gb};
}
Tensor3 linear_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const std::optional<Tensor>& relu_out,
                        bool input_grad, bool bias_grad) {
  Tensor gx = empty_like_float(gy), gw = empty_like_float(gy), gb = empty_like_float(gy);
  linear_backward_out(gy, x, w, relu_out, input_grad, bias_grad, gx, gw, gb);
  return {gx, gw, gb};
}

// ------------------------------------------------------------------------------------ conv2d

Tensor& conv2d_out(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool relu, Tensor& out) {
  Inputs in;
  tk::Shape y;
  tk_conv2d s;
  const tk::Arg ax = in(x, "x"), aw = in(w, "weight"), ab = in(b, "bias");
  fail_if(tk::conv2d_check(ax, aw, ab, conv_params(stride, padding, dilation, groups), &y, &s));
  prepare(out, y);
  fail_if(tk::conv2d_run(s, ax, aw, ab, relu, f(out)));
  return out;
}
Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool relu) {
  Tensor out = empty_like_float(x);
  return conv2d_out(x, w, b, stride, padding, dilation, groups, relu, out);
}

Tensor3Ref conv2d_backward_out(const Tensor& gy, const Tensor& x, const Tensor& w, const std::optional<Tensor>& relu_out,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                               bool input_grad, bool bias_grad, Tensor& gx, Tensor& gw, Tensor& gb) {
  Inputs in;
  tk::Shape s3[3];
  tk_conv2d s;
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x"), aw = in(w, "weight"), ar = in(relu_out, "relu_out");
  fail_if(tk::conv2d_backward_check(ag, ax, aw, ar, conv_params(stride, padding, dilation, groups), input_grad,
                                    bias_grad, s3, &s));
  prepare(gx, s3[0]);
  prepare(gw, s3[1]);
  prepare(gb, s3[2]);
  fail_if(tk::conv2d_backward_run(s, ag, ax, aw, ar, input_grad, bias_grad, f(gx), f(gw), f(gb)));
  return {gx, gw, gb};
}
Tensor3 conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const std::optional<Tensor>& relu_out,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        bool input_grad, bool bias_grad) {
  Tensor gx = empty_like_float(gy), gw = empty_like_float(gy), gb = empty_like_float(gy);
  conv2d_backward_out(gy, x, w, relu_out, stride, padding, dilation, groups, input_grad, bias_grad, gx, gw, gb);
  return {gx, gw, gb};
}

// ------------------------------------------------------------------------------------ convolution + frozen batch norm + clamp

std::tuple<Tensor&, Tensor&> conv2d_bn_out(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
                                           const std::optional<Tensor>& bn_w, const std::optional<Tensor>& bn_b,
                                           const Tensor& mean, const Tensor& var, double eps, at::IntArrayRef stride,
                                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double low,
                                           double high, bool keep_conv, bool conv_only_for_backward, Tensor& conv_out,
                                           Tensor& y) {
  Inputs in;
  tk::Shape o[2];
  tk_conv2d s;
  const tk::Arg ax = in(x, "x"), aw = in(w, "weight"), ab = in(b, "bias"), abw = in(bn_w, "bn_weight"),
                abb = in(bn_b, "bn_bias"), am = in(mean, "running_mean"), av = in(var, "running_var");
  fail_if(tk::conv2d_bn_check(ax, aw, ab, abw, abb, am, av, conv_params(stride, padding, dilation, groups), keep_conv, o,
                              &s));
  prepare(conv_out, o[0]);
  prepare(y, o[1]);
  fail_if(tk::conv2d_bn_run(s, ax, aw, ab, abw, abb, am, av, eps, low, high, keep_conv, conv_only_for_backward,
                            f(conv_out), f(y)));
  return {conv_out, y};
}

std::tuple<Tensor, Tensor> conv2d_bn(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
                                     const std::optional<Tensor>& bn_w, const std::optional<Tensor>& bn_b,
                                     const Tensor& mean, const Tensor& var, double eps, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, double low,
                                     double high, bool keep_conv, bool conv_only_for_backward) {
  Tensor conv_out = empty_like_float(x), y = empty_like_float(x);
  conv2d_bn_out(x, w, b, bn_w, bn_b, mean, var, eps, stride, padding, dilation, groups, low, high, keep_conv,
                conv_only_for_backward, conv_out, y);
  return {conv_out, y};
}

using Tensor5 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using Tensor5Ref = std::tuple<Tensor&, Tensor&, Tensor&, Tensor&, Tensor&>;

Tensor5Ref conv2d_bn_backward_out(const Tensor& gy, const Tensor& y, const Tensor& conv_out, const Tensor& x,
                                  const Tensor& w, const std::optional<Tensor>& bn_w,
                                  const std::optional<Tensor>& bn_b, const Tensor& mean, const Tensor& var, double eps, at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups, double low, double high, bool input_grad,
                                  bool bias_grad, bool bn_grad, Tensor& gx, Tensor& gw, Tensor& gb, Tensor& gbw,
                                  Tensor& gbb) {
  Inputs in;
  tk::Shape o[5];
  tk_conv2d s;
  const tk::Arg ag = in(gy, "grad_y"), ay = in(y, "y"), ac = in(conv_out, "conv_out"), ax = in(x, "x"),
                aw = in(w, "weight"), abw = in(bn_w, "bn_weight"), abb = in(bn_b, "bn_bias"),
                am = in(mean, "running_mean"), av = in(var, "running_var");
  fail_if(tk::conv2d_bn_backward_check(ag, ay, ac, ax, aw, abw, abb, am, av, conv_params(stride, padding, dilation, groups),
                                       input_grad, bias_grad, bn_grad, o, &s));
  Tensor* outs[5] = {&gx, &gw, &gb, &gbw, &gbb};
  float* p[5];
  for (int i = 0; i < 5; i++) {
    prepare(*outs[i], o[i]);
    p[i] = f(*outs[i]);
  }
  fail_if(tk::conv2d_bn_backward_run(s, ag, ay, ac, ax, aw, abw, abb, am, av, eps, low, high, input_grad, bias_grad, bn_grad, p));
  return {gx, gw, gb, gbw, gbb};
}

Tensor5 conv2d_bn_backward(const Tensor& gy, const Tensor& y, const Tensor& conv_out, const Tensor& x, const Tensor& w,
                           const std::optional<Tensor>& bn_w, const std::optional<Tensor>& bn_b, const Tensor& mean,
                           const Tensor& var, double eps,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           double low, double high, bool input_grad, bool bias_grad, bool bn_grad) {
  Tensor o[5];
  for (Tensor& t : o) t = empty_like_float(gy);
  conv2d_bn_backward_out(gy, y, conv_out, x, w, bn_w, bn_b, mean, var, eps, stride, padding, dilation, groups, low, high,
                         input_grad, bias_grad, bn_grad, o[0], o[1], o[2], o[3], o[4]);
  return {o[0], o[1], o[2], o[3], o[4]};
}

// ------------------------------------------------------------------------------------ pooling

std::tuple<Tensor&, Tensor&> max_pool2d_out(const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                                            at::IntArrayRef padding, Tensor& y, Tensor& indices) {
  Inputs in;
  tk::Shape ys;
  tk_pool2d s;
  const tk::Arg ax = in(x, "x");
  fail_if(tk::pool_geometry(tk::kMaxPool, ax, pool_params(kernel, stride, padding, false), &s, &ys));
  prepare(y, ys);
  prepare(indices, ys, at::kLong);
  fail_if(tk::max_pool2d_run(s, ax, f(y), indices.data_ptr<int64_t>()));
  return {y, indices};
}
std::tuple<Tensor, Tensor> max_pool2d(const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                                      at::IntArrayRef padding) {
  Tensor y = empty_like_float(x), indices = at::empty({0}, x.options().dtype(at::kLong));
  max_pool2d_out(x, kernel, stride, padding, y, indices);
  return {y, indices};
}

Tensor& max_pool2d_backward_out(const Tensor& gy, const Tensor& x, const Tensor& indices, at::IntArrayRef kernel,
                                at::IntArrayRef stride, at::IntArrayRef padding, Tensor& gx) {
  Inputs in;
  tk_pool2d s;
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x"), ai = in(indices, "indices");
  fail_if(tk::max_pool2d_backward_check(ag, ax, ai, pool_params(kernel, stride, padding, false), &s));
  prepare(gx, tk::shape_of(ax));
  fail_if(tk::max_pool2d_backward_run(s, ag, ai, f(gx)));
  return gx;
}
Tensor max_pool2d_backward(const Tensor& gy, const Tensor& x, const Tensor& indices, at::IntArrayRef kernel,
                           at::IntArrayRef stride, at::IntArrayRef padding) {
  Tensor gx = empty_like_float(gy);
  return max_pool2d_backward_out(gy, x, indices, kernel, stride, padding, gx);
}

Tensor& avg_pool2d_out(const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                       bool count_include_pad, Tensor& y) {
  Inputs in;
  tk::Shape ys;
  tk_pool2d s;
  const tk::Arg ax = in(x, "x");
  fail_if(tk::pool_geometry(tk::kAvgPool, ax, pool_params(kernel, stride, padding, count_include_pad), &s, &ys));
  prepare(y, ys);
  fail_if(tk::avg_pool2d_run(s, ax, f(y)));
  return y;
}
Tensor avg_pool2d(const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                  bool count_include_pad) {
  Tensor y = empty_like_float(x);
  return avg_pool2d_out(x, kernel, stride, padding, count_include_pad, y);
}

Tensor& avg_pool2d_backward_out(const Tensor& gy, const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                                at::IntArrayRef padding, bool count_include_pad, Tensor& gx) {
  Inputs in;
  tk_pool2d s;
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x");
  fail_if(tk::avg_pool2d_backward_check(ag, ax, pool_params(kernel, stride, padding, count_include_pad), &s));
  prepare(gx, tk::shape_of(ax));
  fail_if(tk::avg_pool2d_backward_run(s, ag, f(gx)));
  return gx;
}
Tensor avg_pool2d_backward(const Tensor& gy, const Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                           at::IntArrayRef padding, bool count_include_pad) {
  Tensor gx = empty_like_float(gy);
  return avg_pool2d_backward_out(gy, x, kernel, stride, padding, count_include_pad, gx);
}

// ------------------------------------------------------------------------------------ activations

Tensor& threshold_backward_out(const Tensor& gy, const Tensor& x, double low, double high, Tensor& gx) {
  Inputs in;
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x");
  fail_if(tk::threshold_backward_check(ag, ax));
  prepare(gx, tk::shape_of(ag));
  fail_if(tk::threshold_backward_run(ag, ax, low, high, f(gx)));
  return gx;
}
Tensor threshold_backward(const Tensor& gy, const Tensor& x, double low, double high) {
  Tensor gx = empty_like_float(gy);
  return threshold_backward_out(gy, x, low, high, gx);
}

Tensor& softmax_backward_out(const Tensor& gy, const Tensor& y, bool log, Tensor& gx) {
  Inputs in;
  const tk::Arg ag = in(gy, "grad_y"), ay = in(y, "y");
  fail_if(tk::softmax_backward_check(ag, ay));
  prepare(gx, tk::shape_of(ag));
  fail_if(tk::softmax_backward_run(ag, ay, log, f(gx)));
  return gx;
}
Tensor softmax_backward(const Tensor& gy, const Tensor& y, bool log) {
  Tensor gx = empty_like_float(gy);
  return softmax_backward_out(gy, y, log, gx);
}

// ------------------------------------------------------------------------------------ losses

std::tuple<Tensor&, Tensor&> cross_entropy_loss_out(const Tensor& z, const Tensor& t, int64_t ignore_index,
                                                    Tensor& loss, Tensor& grad) {
  Inputs in;
  const tk::Arg az = in(z, "logits"), at_ = in(t, "target");
  fail_if(tk::cross_entropy_check(az, at_));
  prepare(loss, tk::Shape{});
  prepare(grad, tk::shape_of(az));
  fail_if(tk::cross_entropy_run(az, at_, ignore_index, f(loss), f(grad)));
  return {loss, grad};
}
std::tuple<Tensor, Tensor> cross_entropy_loss(const Tensor& z, const Tensor& t, int64_t ignore_index) {
  Tensor loss = empty_like_float(z), grad = empty_like_float(z);
  cross_entropy_loss_out(z, t, ignore_index, loss, grad);
  return {loss, grad};
}

std::tuple<Tensor&, Tensor&> bce_with_logits_loss_out(const Tensor& z, const Tensor& t, Tensor& loss, Tensor& grad) {
  Inputs in;
  const tk::Arg az = in(z, "logits"), at_ = in(t, "target");
  fail_if(tk::bce_check(az, at_));
  prepare(loss, tk::Shape{});
  prepare(grad, tk::shape_of(az));
  fail_if(tk::bce_run(az, at_, f(loss), f(grad)));
  return {loss, grad};
}
std::tuple<Tensor, Tensor> bce_with_logits_loss(const Tensor& z, const Tensor& t) {
  Tensor loss = empty_like_float(z), grad = empty_like_float(z);
  bce_with_logits_loss_out(z, t, loss, grad);
  return {loss, grad};
}

// ------------------------------------------------------------------------------------ normalization

Tensor3Ref layer_norm_backward_out(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                   const std::optional<Tensor>& w, bool input_grad, bool affine_grad, Tensor& gx,
                                   Tensor& gw, Tensor& gb) {
  Inputs in;
  tk::Shape s[3];
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x"), am = in(mean, "mean"), ar = in(rstd, "rstd"),
                aw = in(w, "weight");
  fail_if(tk::layer_norm_backward_check(ag, ax, am, ar, aw, input_grad, affine_grad, s));
  prepare(gx, s[0]);
  prepare(gw, s[1]);
  prepare(gb, s[2]);
  fail_if(tk::layer_norm_backward_run(ag, ax, am, ar, aw, input_grad, affine_grad, f(gx), f(gw), f(gb)));
  return {gx, gw, gb};
}
Tensor3 layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                            const std::optional<Tensor>& w, bool input_grad, bool affine_grad) {
  Tensor gx = empty_like_float(gy), gw = empty_like_float(gy), gb = empty_like_float(gy);
  layer_norm_backward_out(gy, x, mean, rstd, w, input_grad, affine_grad, gx, gw, gb);
  return {gx, gw, gb};
}

Tensor3Ref batch_norm_frozen_backward_out(const Tensor& gy, const Tensor& x, const std::optional<Tensor>& w,
                                          const Tensor& mean, const Tensor& var, double eps, bool input_grad,
                                          bool affine_grad, Tensor& gx, Tensor& gw, Tensor& gb) {
  Inputs in;
  tk::Shape s[3];
  const tk::Arg ag = in(gy, "grad_y"), ax = in(x, "x"), aw = in(w, "weight"), am = in(mean, "running_mean"),
                av = in(var, "running_var");
  fail_if(tk::batch_norm_backward_check(ag, ax, aw, am, av, input_grad, affine_grad, s));
  prepare(gx, s[0]);
  prepare(gw, s[1]);
  prepare(gb, s[2]);
  fail_if(tk::batch_norm_backward_run(ag, ax, aw, am, av, eps, input_grad, affine_grad, f(gx), f(gw), f(gb)));
  return {gx, gw, gb};
}
Tensor3 batch_norm_frozen_backward(const Tensor& gy, const Tensor& x, const std::optional<Tensor>& w,
                                   const Tensor& mean, const Tensor& var, double eps, bool input_grad, bool affine_grad) {
  Tensor gx = empty_like_float(gy), gw = empty_like_float(gy), gb = empty_like_float(gy);
  batch_norm_frozen_backward_out(gy, x, w, mean, var, eps, input_grad, affine_grad, gx, gw, gb);
  return {gx, gw, gb};
}

// ------------------------------------------------------------------------------------ embedding, SGD

Tensor& embedding_backward_out(const Tensor& gy, const Tensor& indices, int64_t num_weights, int64_t padding_idx,
                               Tensor& gw) {
  Inputs in;
  tk::Shape s;
  const tk::Arg ag = in(gy, "grad_y"), ai = in(indices, "indices");
  fail_if(tk::embedding_backward_check(ag, ai, num_weights, &s));
  prepare(gw, s);
  fail_if(tk::embedding_backward_run(ag, ai, num_weights, padding_idx, f(gw)));
  return gw;
}
Tensor embedding_backward(const Tensor& gy, const Tensor& indices, int64_t num_weights, int64_t padding_idx) {
  Tensor gw = empty_like_float(gy);
  return embedding_backward_out(gy, indices, num_weights, padding_idx, gw);
}

Tensor& sgd_update_out(const Tensor& p, const Tensor& g, double lr, Tensor& out) {
  Inputs in;
  const tk::Arg ap = in(p, "param"), ag = in(g, "grad");
  fail_if(tk::sgd_check(ap, ag));
  prepare(out, tk::shape_of(ap));
  fail_if(tk::sgd_run(ap, ag, lr, f(out)));
  return out;
}
Tensor sgd_update(const Tensor& p, const Tensor& g, double lr) {
  Tensor out = empty_like_float(p);
  return sgd_update_out(p, g, lr, out);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dcx, m) {
  const char* out3 = ", *, Tensor(a!) out0, Tensor(b!) out1, Tensor(c!) out2) -> (Tensor(a!), Tensor(b!), Tensor(c!))";
  const char* out2 = ", *, Tensor(a!) out0, Tensor(b!) out1) -> (Tensor(a!), Tensor(b!))";
  const char* out1 = ", *, Tensor(a!) out) -> Tensor(a!)";
  const char* out5 = ", *, Tensor(a!) out0, Tensor(b!) out1, Tensor(c!) out2, Tensor(d!) out3, Tensor(e!) out4) -> "
                     "(Tensor(a!), Tensor(b!), Tensor(c!), Tensor(d!), Tensor(e!))";
  struct Def {
    const char* name;
    const char* args;
    const char* returns;
    const char* out;
  };
  const Def defs[] = {
      {"linear", "Tensor x, Tensor weight, Tensor? bias=None, bool relu=False", "Tensor", out1},
      {"linear_backward", "Tensor grad_y, Tensor x, Tensor weight, Tensor? relu_out, bool input_grad, bool bias_grad",
       "(Tensor, Tensor, Tensor)", out3},
      {"conv2d", "Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, int groups, bool relu=False",
       "Tensor", out1},
      {"conv2d_backward",
       "Tensor grad_y, Tensor x, Tensor weight, Tensor? relu_out, int[2] stride, int[2] padding, int[2] dilation, int groups, "
       "bool input_grad, bool bias_grad",
       "(Tensor, Tensor, Tensor)", out3},
      {"conv2d_bn",
       "Tensor x, Tensor weight, Tensor? bias, Tensor? bn_weight, Tensor? bn_bias, Tensor running_mean, "
       "Tensor running_var, float eps, int[2] stride, int[2] padding, int[2] dilation, int groups, float low, "
       "float high, bool keep_conv, bool conv_only_for_backward",
       "(Tensor, Tensor)", out2},
      {"conv2d_bn_backward",
       "Tensor grad_y, Tensor y, Tensor conv_out, Tensor x, Tensor weight, Tensor? bn_weight, Tensor? bn_bias, "
       "Tensor running_mean, "
       "Tensor running_var, float eps, int[2] stride, int[2] padding, int[2] dilation, int groups, float low, "
       "float high, bool input_grad, bool bias_grad, bool bn_grad",
       "(Tensor, Tensor, Tensor, Tensor, Tensor)", out5},
      {"max_pool2d", "Tensor x, int[2] kernel, int[2] stride, int[2] padding", "(Tensor, Tensor)", out2},
      {"max_pool2d_backward", "Tensor grad_y, Tensor x, Tensor indices, int[2] kernel, int[2] stride, int[2] padding", "Tensor",
       out1},
      {"avg_pool2d", "Tensor x, int[2] kernel, int[2] stride, int[2] padding, bool count_include_pad", "Tensor", out1},
      {"avg_pool2d_backward", "Tensor grad_y, Tensor x, int[2] kernel, int[2] stride, int[2] padding, bool count_include_pad",
       "Tensor", out1},
      {"threshold_backward", "Tensor grad_y, Tensor x, float low, float high", "Tensor", out1},
      {"softmax_backward", "Tensor grad_y, Tensor y, bool log", "Tensor", out1},
      {"cross_entropy_loss", "Tensor logits, Tensor target, int ignore_index=-100", "(Tensor, Tensor)", out2},
      {"bce_with_logits_loss", "Tensor logits, Tensor target", "(Tensor, Tensor)", out2},
      {"layer_norm_backward", "Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor? weight, bool input_grad, bool affine_grad",
       "(Tensor, Tensor, Tensor)", out3},
      {"batch_norm_frozen_backward",
       "Tensor grad_y, Tensor x, Tensor? weight, Tensor running_mean, Tensor running_var, float eps, bool input_grad, "
       "bool affine_grad",
       "(Tensor, Tensor, Tensor)", out3},
      {"embedding_backward", "Tensor grad_y, Tensor indices, int num_weights, int padding_idx", "Tensor", out1},
      {"sgd_update", "Tensor param, Tensor grad, float lr", "Tensor", out1},
  };
  for (const Def& d : defs) {
    const std::string functional = std::string(d.name) + "(" + d.args + ") -> " + d.returns;
    const std::string out = std::string(d.name) + ".out(" + d.args + d.out;
    m.def(torch::schema(functional.c_str(), c10::AliasAnalysisKind::FROM_SCHEMA));
    m.def(torch::schema(out.c_str(), c10::AliasAnalysisKind::FROM_SCHEMA));
  }
}

TORCH_LIBRARY_IMPL(dcx, CPU, m) {
  m.impl("linear", linear);
  m.impl("linear.out", linear_out);
  m.impl("linear_backward", linear_backward);
  m.impl("linear_backward.out", linear_backward_out);
  m.impl("conv2d", conv2d);
  m.impl("conv2d.out", conv2d_out);
  m.impl("conv2d_backward", conv2d_backward);
  m.impl("conv2d_backward.out", conv2d_backward_out);
  m.impl("conv2d_bn", conv2d_bn);
  m.impl("conv2d_bn.out", conv2d_bn_out);
  m.impl("conv2d_bn_backward", conv2d_bn_backward);
  m.impl("conv2d_bn_backward.out", conv2d_bn_backward_out);
  m.impl("max_pool2d", max_pool2d);
  m.impl("max_pool2d.out", max_pool2d_out);
  m.impl("max_pool2d_backward", max_pool2d_backward);
  m.impl("max_pool2d_backward.out", max_pool2d_backward_out);
  m.impl("avg_pool2d", avg_pool2d);
  m.impl("avg_pool2d.out", avg_pool2d_out);
  m.impl("avg_pool2d_backward", avg_pool2d_backward);
  m.impl("avg_pool2d_backward.out", avg_pool2d_backward_out);
  m.impl("threshold_backward", threshold_backward);
  m.impl("threshold_backward.out", threshold_backward_out);
  m.impl("softmax_backward", softmax_backward);
  m.impl("softmax_backward.out", softmax_backward_out);
  m.impl("cross_entropy_loss", cross_entropy_loss);
  m.impl("cross_entropy_loss.out", cross_entropy_loss_out);
  m.impl("bce_with_logits_loss", bce_with_logits_loss);
  m.impl("bce_with_logits_loss.out", bce_with_logits_loss_out);
  m.impl("layer_norm_backward", layer_norm_backward);
  m.impl("layer_norm_backward.out", layer_norm_backward_out);
  m.impl("batch_norm_frozen_backward", batch_norm_frozen_backward);
  m.impl("batch_norm_frozen_backward.out", batch_norm_frozen_backward_out);
  m.impl("embedding_backward", embedding_backward);
  m.impl("embedding_backward.out", embedding_backward_out);
  m.impl("sgd_update", sgd_update);
  m.impl("sgd_update.out", sgd_update_out);
}

}  // namespace dcx
