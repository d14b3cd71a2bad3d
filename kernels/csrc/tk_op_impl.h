// The training ops written once against plain tensor views: argument checks with the one-line
// messages users see, output shapes, and the calls into the C kernels (tk_kernels.h).
// op_tk_aten.cpp (PyTorch) and op_tk_executorch.cpp (ExecuTorch) are thin shells: they turn
// their tensors into Args, allocate or resize the outputs to the shapes a check returns, and run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "tk_kernels.h"

namespace dcx {
namespace tk {

enum class DType { Float, Int32, Int64, Other };

// A tensor as the checks see it.
struct Arg {
  const char* name = "";
  bool present = true;
  DType dtype = DType::Float;
  bool contiguous = true;
  int dim = 0;
  int64_t sizes[8] = {0};
  void* data = nullptr;
  int64_t size(int i) const { return sizes[i < 0 ? dim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < dim; i++) n *= sizes[i];
    return n;
  }
  float* f() const { return present ? static_cast<float*>(data) : nullptr; }
};

inline Arg absent(const char* name) {
  Arg a;
  a.name = name;
  a.present = false;
  return a;
}

struct Shape {
  int dim = 0;
  int64_t s[8] = {0};
};

inline Shape shape_of(const Arg& a) {
  Shape r;
  r.dim = a.dim;
  for (int i = 0; i < a.dim; i++) r.s[i] = a.sizes[i];
  return r;
}
inline Shape shape(std::initializer_list<int64_t> dims) {
  Shape r;
  for (int64_t d : dims) r.s[r.dim++] = d;
  return r;
}

inline std::string shape_str(const Arg& t) {
  std::string s = "[";
  for (int i = 0; i < t.dim; i++) s += (i ? ", " : "") + std::to_string(t.sizes[i]);
  return s + "]";
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float: return "float32";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    default: return "another dtype";
  }
}

// The op's qualified name, prefixed to every message.
struct Op {
  const char* name;
  std::string fail(const std::string& what) const { return std::string(name) + ": " + what; }
  // present, contiguous, float32 (or one of the index dtypes when index), at most 8 dims
  std::string tensor(const Arg& t, bool index = false) const {
    if (!t.present) return "";
    if (t.dim > 8) return fail(std::string(t.name) + " has more than 8 dims");
    if (index ? (t.dtype != DType::Int32 && t.dtype != DType::Int64) : t.dtype != DType::Float)
      return fail(std::string(t.name) + " must be " + (index ? "int32 or int64" : "float32") + ", got " +
                  dtype_name(t.dtype));
    if (!t.contiguous) return fail(std::string(t.name) + " must be contiguous; call .contiguous() on it first");
    return "";
  }
  std::string dims(const Arg& t, int want, const char* layout) const {
    if (t.dim != want) return fail(std::string(t.name) + " must be " + layout + ", got " + shape_str(t));
    return "";
  }
  std::string same_shape(const Arg& a, const Arg& b) const {
    if (!a.present || !b.present) return "";
    bool same = a.dim == b.dim;
    for (int i = 0; same && i < a.dim; i++) same = a.sizes[i] == b.sizes[i];
    if (!same) return fail(std::string(a.name) + " " + shape_str(a) + " and " + b.name + " " + shape_str(b) + " must have the same shape");
    return "";
  }
  std::string kernel(int rc) const { return rc == TK_OK ? "" : fail(std::string("kernel failed: ") + tk_strerror(rc)); }
};

#define TK_TRY(expr)                 \
  do {                               \
    std::string e_ = (expr);         \
    if (!e_.empty()) return e_;      \
  } while (0)

// ------------------------------------------------------------------------------------ linear

constexpr Op kLinear{"dcx::linear"};
constexpr Op kLinearBackward{"dcx::linear_backward"};

// x [n, in], weight [out, in], bias [out] or absent -> y [n, out]
inline std::string linear_check(const Arg& x, const Arg& w, const Arg& b, Shape* y) {
  const Op& op = kLinear;
  for (const Arg* t : {&x, &w, &b}) TK_TRY(op.tensor(*t));
  TK_TRY(op.dims(x, 2, "[n, in]"));
  TK_TRY(op.dims(w, 2, "[out, in]"));
  if (x.size(1) != w.size(1))
    return op.fail("x " + shape_str(x) + " and weight " + shape_str(w) + " disagree on in (x.shape[1] vs weight.shape[1])");
  if (b.present && (b.dim != 1 || b.size(0) != w.size(0)))
    return op.fail("bias must have shape [" + std::to_string(w.size(0)) + "], got " + shape_str(b));
  *y = shape({x.size(0), w.size(0)});
  return "";
}
inline std::string linear_run(const Arg& x, const Arg& w, const Arg& b, bool relu, float* y) {
  return kLinear.kernel(tk_linear_forward(x.f(), w.f(), b.f(), x.size(0), x.size(1), w.size(0), relu, y));
}

// grad_y [n, out], x [n, in], weight [out, in], relu_out like grad_y or absent ->
// grad_x [n, in] (or [0]), grad_weight [out, in], grad_bias [out] (or [0])
inline std::string linear_backward_check(const Arg& gy, const Arg& x, const Arg& w, const Arg& relu_out,
                                         bool input_grad, bool bias_grad, Shape out[3]) {
  const Op& op = kLinearBackward;
  for (const Arg* t : {&gy, &x, &w, &relu_out}) TK_TRY(op.tensor(*t));
  TK_TRY(op.dims(gy, 2, "[n, out]"));
  TK_TRY(op.dims(x, 2, "[n, in]"));
  TK_TRY(op.dims(w, 2, "[out, in]"));
  if (x.size(1) != w.size(1) || gy.size(0) != x.size(0) || gy.size(1) != w.size(0))
    return op.fail("grad_y " + shape_str(gy) + ", x " + shape_str(x) + " and weight " + shape_str(w) +
                   " do not fit [n, out], [n, in], [out, in]");
  TK_TRY(op.same_shape(relu_out, gy));
  out[0] = input_grad ? shape_of(x) : shape({0});
  out[1] = shape_of(w);
  out[2] = bias_grad ? shape({w.size(0)}) : shape({0});
  return "";
}
inline std::string linear_backward_run(const Arg& gy, const Arg& x, const Arg& w, const Arg& relu_out, bool input_grad,
                                       bool bias_grad, float* gx, float* gw, float* gb) {
  return kLinearBackward.kernel(tk_linear_backward(gy.f(), x.f(), w.f(), relu_out.f(), x.size(0), x.size(1), w.size(0),
                                                   input_grad ? gx : nullptr, gw, bias_grad ? gb : nullptr));
}

// ------------------------------------------------------------------------------------ conv2d

constexpr Op kConv{"dcx::conv2d"};
constexpr Op kConvBackward{"dcx::conv2d_backward"};

struct ConvParams {
  int64_t stride[2], padding[2], dilation[2], groups;
};

inline std::string conv_geometry(const Op& op, const Arg& x, const Arg& w, const ConvParams& p, tk_conv2d* s) {
  TK_TRY(op.dims(x, 4, "[n, c_in, h, w]"));
  TK_TRY(op.dims(w, 4, "[c_out, c_in / groups, kh, kw]"));
  for (int i = 0; i < 2; i++)
    if (p.stride[i] < 1 || p.dilation[i] < 1 || p.padding[i] < 0)
      return op.fail("stride and dilation must be >= 1 and padding >= 0");
  if (p.groups < 1 || x.size(1) % p.groups || w.size(0) % p.groups || w.size(1) * p.groups != x.size(1))
    return op.fail("x " + shape_str(x) + " and weight " + shape_str(w) + " do not fit groups=" + std::to_string(p.groups) +
                   " (weight.shape[1] * groups must be c_in, and groups must divide c_out)");
  *s = tk_conv2d{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3),
                 p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups};
  if (tk_conv2d_check(s) != TK_OK)
    return op.fail("the kernel window " + shape_str(w) + " does not fit the padded input " + shape_str(x));
  return "";
}

inline std::string conv2d_check(const Arg& x, const Arg& w, const Arg& b, const ConvParams& p, Shape* y, tk_conv2d* s) {
  const Op& op = kConv;
  for (const Arg* t : {&x, &w, &b}) TK_TRY(op.tensor(*t));
  TK_TRY(conv_geometry(op, x, w, p, s));
  if (b.present && (b.dim != 1 || b.size(0) != w.size(0)))
    return op.fail("bias must have shape [" + std::to_string(w.size(0)) + "], got " + shape_str(b));
  *y = shape({s->n, s->c_out, tk_conv2d_out_h(s), tk_conv2d_out_w(s)});
  return "";
}
inline std::string conv2d_run(const tk_conv2d& s, const Arg& x, const Arg& w, const Arg& b, bool relu, float* y) {
  return kConv.kernel(tk_conv2d_forward(&s, x.f(), w.f(), b.f(), relu, y));
}

inline std::string conv2d_backward_check(const Arg& gy, const Arg& x, const Arg& w, const Arg& relu_out,
                                         const ConvParams& p, bool input_grad, bool bias_grad, Shape out[3],
                                         tk_conv2d* s) {
  const Op& op = kConvBackward;
  for (const Arg* t : {&gy, &x, &w, &relu_out}) TK_TRY(op.tensor(*t));
  TK_TRY(conv_geometry(op, x, w, p, s));
  const Shape y = shape({s->n, s->c_out, tk_conv2d_out_h(s), tk_conv2d_out_w(s)});
  bool fits = gy.dim == 4;
  for (int i = 0; fits && i < 4; i++) fits = gy.sizes[i] == y.s[i];
  if (!fits)
    return op.fail("grad_y " + shape_str(gy) + " is not the output shape [" + std::to_string(y.s[0]) + ", " +
                   std::to_string(y.s[1]) + ", " + std::to_string(y.s[2]) + ", " + std::to_string(y.s[3]) + "]");
  TK_TRY(op.same_shape(relu_out, gy));
  out[0] = input_grad ? shape_of(x) : shape({0});
  out[1] = shape_of(w);
  out[2] = bias_grad ? shape({w.size(0)}) : shape({0});
  return "";
}
inline std::string conv2d_backward_run(const tk_conv2d& s, const Arg& gy, const Arg& x, const Arg& w,
                                       const Arg& relu_out, bool input_grad, bool bias_grad, float* gx, float* gw,
                                       float* gb) {
  return kConvBackward.kernel(tk_conv2d_backward(&s, gy.f(), x.f(), w.f(), relu_out.f(), input_grad ? gx : nullptr, gw,
                                                 bias_grad ? gb : nullptr));
}

// ------------------------------------------------------------------------------------ conv2d + frozen batch norm

constexpr Op kConvBn{"dcx::conv2d_bn"};
constexpr Op kConvBnBackward{"dcx::conv2d_bn_backward"};

// bn_weight, bn_bias [c_out] or absent, running_mean, running_var [c_out]
inline std::string bn_check(const Op& op, const tk_conv2d& s, std::initializer_list<const Arg*> per_channel) {
  for (const Arg* t : per_channel) {
    TK_TRY(op.tensor(*t));
    if (t->present && (t->dim != 1 || t->size(0) != s.c_out))
      return op.fail(std::string(t->name) + " must have shape [" + std::to_string(s.c_out) + "], got " + shape_str(*t));
  }
  return "";
}

// conv2d -> batch norm (eval) -> clamp(low, high): conv_out (or [0] without keep_conv) and y
inline std::string conv2d_bn_check(const Arg& x, const Arg& w, const Arg& b, const Arg& bn_w, const Arg& bn_b,
                                   const Arg& mean, const Arg& var, const ConvParams& p, bool keep_conv, Shape out[2],
                                   tk_conv2d* s) {
  const Op& op = kConvBn;
  for (const Arg* t : {&x, &w, &b}) TK_TRY(op.tensor(*t));
  TK_TRY(conv_geometry(op, x, w, p, s));
  if (!mean.present || !var.present) return op.fail("running_mean and running_var are required");
  TK_TRY(bn_check(op, *s, {&b, &bn_w, &bn_b, &mean, &var}));
  out[1] = shape({s->n, s->c_out, tk_conv2d_out_h(s), tk_conv2d_out_w(s)});
  out[0] = keep_conv ? out[1] : shape({0});
  return "";
}
inline std::string conv2d_bn_run(const tk_conv2d& s, const Arg& x, const Arg& w, const Arg& b, const Arg& bn_w,
                                 const Arg& bn_b, const Arg& mean, const Arg& var, double eps, double low, double high,
                                 bool keep_conv, bool conv_only_for_backward, float* conv_out, float* y) {
  const tk_bn bn{bn_w.f(), bn_b.f(), mean.f(), var.f(), static_cast<float>(eps)};
  return kConvBn.kernel(tk_conv2d_bn_forward(&s, x.f(), w.f(), b.f(), &bn, static_cast<float>(low),
                                             static_cast<float>(high), keep_conv ? conv_out : nullptr, y,
                                             conv_only_for_backward));
}

// -> grad_x (or [0]), grad_weight, grad_bias (or [0]), grad_bn_weight, grad_bn_bias (or [0] each without bn_grad)
inline std::string conv2d_bn_backward_check(const Arg& gy, const Arg& y, const Arg& conv_out, const Arg& x, const Arg& w,
                                            const Arg& bn_w, const Arg& bn_b, const Arg& mean, const Arg& var,
                                            const ConvParams& p,
                                            bool input_grad, bool bias_grad, bool bn_grad, Shape out[5], tk_conv2d* s) {
  const Op& op = kConvBnBackward;
  for (const Arg* t : {&gy, &y, &conv_out, &x, &w}) TK_TRY(op.tensor(*t));
  TK_TRY(conv_geometry(op, x, w, p, s));
  if (!mean.present || !var.present) return op.fail("running_mean and running_var are required");
  TK_TRY(bn_check(op, *s, {&bn_w, &bn_b, &mean, &var}));
  const Shape ys = shape({s->n, s->c_out, tk_conv2d_out_h(s), tk_conv2d_out_w(s)});
  bool fits = gy.dim == 4;
  for (int i = 0; fits && i < 4; i++) fits = gy.sizes[i] == ys.s[i];
  if (!fits) return op.fail("grad_y " + shape_str(gy) + " is not the output shape of the convolution");
  TK_TRY(op.same_shape(y, gy));
  TK_TRY(op.same_shape(conv_out, gy));
  out[0] = input_grad ? shape_of(x) : shape({0});
  out[1] = shape_of(w);
  out[2] = bias_grad ? shape({s->c_out}) : shape({0});
  out[3] = bn_grad ? shape({s->c_out}) : shape({0});
  out[4] = bn_grad ? shape({s->c_out}) : shape({0});
  return "";
}
inline std::string conv2d_bn_backward_run(const tk_conv2d& s, const Arg& gy, const Arg& y, const Arg& conv_out,
                                          const Arg& x, const Arg& w, const Arg& bn_w, const Arg& bn_b, const Arg& mean,
                                          const Arg& var, double eps, double low, double high, bool input_grad,
                                          bool bias_grad, bool bn_grad, float* out[5]) {
  const tk_bn bn{bn_w.f(), bn_b.f(), mean.f(), var.f(), static_cast<float>(eps)};
  return kConvBnBackward.kernel(tk_conv2d_bn_backward(
      &s, gy.f(), y.f(), conv_out.f(), x.f(), w.f(), &bn, static_cast<float>(low), static_cast<float>(high),
      input_grad ? out[0] : nullptr, out[1], bias_grad ? out[2] : nullptr, bn_grad ? out[3] : nullptr,
      bn_grad ? out[4] : nullptr));
}

// ------------------------------------------------------------------------------------ pooling

constexpr Op kMaxPool{"dcx::max_pool2d"};
constexpr Op kMaxPoolBackward{"dcx::max_pool2d_backward"};
constexpr Op kAvgPool{"dcx::avg_pool2d"};
constexpr Op kAvgPoolBackward{"dcx::avg_pool2d_backward"};

struct PoolParams {
  int64_t kernel[2], stride[2], padding[2];
  bool count_include_pad;
};

inline std::string pool_geometry(const Op& op, const Arg& x, const PoolParams& p, tk_pool2d* s, Shape* y) {
  TK_TRY(op.tensor(x));
  TK_TRY(op.dims(x, 4, "[n, c, h, w]"));
  for (int i = 0; i < 2; i++)
    if (p.kernel[i] < 1 || p.stride[i] < 1 || p.padding[i] < 0)
      return op.fail("kernel and stride must be >= 1 and padding >= 0");
  *s = tk_pool2d{x.size(0), x.size(1), x.size(2), x.size(3), p.kernel[0], p.kernel[1], p.stride[0], p.stride[1],
                 p.padding[0], p.padding[1], p.count_include_pad ? 1 : 0};
  if (tk_pool2d_check(s) != TK_OK)
    return op.fail("the window [" + std::to_string(p.kernel[0]) + ", " + std::to_string(p.kernel[1]) +
                   "] with its padding does not fit x " + shape_str(x) + " (padding may be at most half the window)");
  *y = shape({s->n, s->c, tk_pool2d_out_h(s), tk_pool2d_out_w(s)});
  return "";
}

inline std::string pool_grad_check(const Op& op, const Arg& gy, const Shape& y) {
  TK_TRY(op.tensor(gy));
  bool fits = gy.dim == y.dim;
  for (int i = 0; fits && i < y.dim; i++) fits = gy.sizes[i] == y.s[i];
  if (!fits) return op.fail("grad_y " + shape_str(gy) + " is not the pooled shape of x");
  return "";
}

// max_pool2d: y and indices (int64) of the same shape
inline std::string max_pool2d_run(const tk_pool2d& s, const Arg& x, float* y, int64_t* indices) {
  return kMaxPool.kernel(tk_max_pool2d_forward(&s, x.f(), y, indices));
}
inline std::string max_pool2d_backward_check(const Arg& gy, const Arg& x, const Arg& indices, const PoolParams& p,
                                             tk_pool2d* s) {
  const Op& op = kMaxPoolBackward;
  Shape y;
  TK_TRY(pool_geometry(op, x, p, s, &y));
  TK_TRY(pool_grad_check(op, gy, y));
  if (indices.dtype != DType::Int64) return op.fail("indices must be int64, got " + std::string(dtype_name(indices.dtype)));
  TK_TRY(op.tensor(indices, true));
  TK_TRY(op.same_shape(indices, gy));
  return "";
}
inline std::string max_pool2d_backward_run(const tk_pool2d& s, const Arg& gy, const Arg& indices, float* gx) {
  return kMaxPoolBackward.kernel(tk_max_pool2d_backward(&s, gy.f(), static_cast<const int64_t*>(indices.data), gx));
}
inline std::string avg_pool2d_run(const tk_pool2d& s, const Arg& x, float* y) {
  return kAvgPool.kernel(tk_avg_pool2d_forward(&s, x.f(), y));
}
inline std::string avg_pool2d_backward_check(const Arg& gy, const Arg& x, const PoolParams& p, tk_pool2d* s) {
  const Op& op = kAvgPoolBackward;
  Shape y;
  TK_TRY(pool_geometry(op, x, p, s, &y));
  return pool_grad_check(op, gy, y);
}
inline std::string avg_pool2d_backward_run(const tk_pool2d& s, const Arg& gy, float* gx) {
  return kAvgPoolBackward.kernel(tk_avg_pool2d_backward(&s, gy.f(), gx));
}

// ------------------------------------------------------------------------------------ activations

constexpr Op kThreshold{"dcx::threshold_backward"};
constexpr Op kSoftmaxBackward{"dcx::softmax_backward"};

// gx = grad_y where low < x < high, else 0
inline std::string threshold_backward_check(const Arg& gy, const Arg& x) {
  TK_TRY(kThreshold.tensor(gy));
  TK_TRY(kThreshold.tensor(x));
  return kThreshold.same_shape(x, gy);
}
inline std::string threshold_backward_run(const Arg& gy, const Arg& x, double low, double high, float* gx) {
  return kThreshold.kernel(tk_threshold_backward(gy.f(), x.f(), gy.numel(), static_cast<float>(low),
                                                 static_cast<float>(high), gx));
}

// along the last dim: y = softmax(x) (or log_softmax when log)
inline std::string softmax_backward_check(const Arg& gy, const Arg& y) {
  TK_TRY(kSoftmaxBackward.tensor(gy));
  TK_TRY(kSoftmaxBackward.tensor(y));
  if (gy.dim < 1 || gy.size(-1) < 1) return kSoftmaxBackward.fail("grad_y must have a non-empty last dim");
  return kSoftmaxBackward.same_shape(y, gy);
}
inline std::string softmax_backward_run(const Arg& gy, const Arg& y, bool log, float* gx) {
  const int64_t cols = gy.size(-1);
  return kSoftmaxBackward.kernel(tk_softmax_backward(gy.f(), y.f(), gy.numel() / cols, cols, log, gx));
}

// ------------------------------------------------------------------------------------ losses

constexpr Op kCrossEntropy{"dcx::cross_entropy_loss"};
constexpr Op kBce{"dcx::bce_with_logits_loss"};

// logits [n, c], target [n] int64 -> loss [] and grad_logits [n, c]
inline std::string cross_entropy_check(const Arg& z, const Arg& t) {
  const Op& op = kCrossEntropy;
  TK_TRY(op.tensor(z));
  TK_TRY(op.dims(z, 2, "[n, classes]"));
  if (t.dtype != DType::Int64) return op.fail("target must be int64 class indices, got " + std::string(dtype_name(t.dtype)));
  TK_TRY(op.tensor(t, true));
  if (t.dim != 1 || t.size(0) != z.size(0))
    return op.fail("target must have shape [" + std::to_string(z.size(0)) + "], got " + shape_str(t));
  if (z.size(0) < 1 || z.size(1) < 1) return op.fail("logits " + shape_str(z) + " are empty");
  return "";
}
inline std::string cross_entropy_run(const Arg& z, const Arg& t, int64_t ignore_index, float* loss, float* grad) {
  return kCrossEntropy.kernel(tk_cross_entropy(z.f(), static_cast<const int64_t*>(t.data), z.size(0), z.size(1),
                                               ignore_index, loss, grad));
}

// logits [n], target [n] float -> loss [] and grad_logits [n]
inline std::string bce_check(const Arg& z, const Arg& t) {
  TK_TRY(kBce.tensor(z));
  TK_TRY(kBce.tensor(t));
  TK_TRY(kBce.dims(z, 1, "[n]"));
  if (z.size(0) < 1) return kBce.fail("logits are empty");
  return kBce.same_shape(t, z);
}
inline std::string bce_run(const Arg& z, const Arg& t, float* loss, float* grad) {
  return kBce.kernel(tk_bce_with_logits(z.f(), t.f(), z.size(0), loss, grad));
}

// ------------------------------------------------------------------------------------ normalization

constexpr Op kLayerNormBackward{"dcx::layer_norm_backward"};
constexpr Op kBatchNormBackward{"dcx::batch_norm_frozen_backward"};

// over the last dim: x [..., d], mean and rstd [...] or [..., 1], weight [d] or absent ->
// grad_x like x (or [0]), grad_weight [d], grad_bias [d] (or [0] each without affine_grad)
inline std::string layer_norm_backward_check(const Arg& gy, const Arg& x, const Arg& mean, const Arg& rstd,
                                             const Arg& w, bool input_grad, bool affine_grad, Shape out[3]) {
  const Op& op = kLayerNormBackward;
  for (const Arg* t : {&gy, &x, &mean, &rstd, &w}) TK_TRY(op.tensor(*t));
  TK_TRY(op.same_shape(x, gy));
  if (x.dim < 1 || x.size(-1) < 1) return op.fail("x must have a non-empty last dim");
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  if (mean.numel() != rows || rstd.numel() != rows)
    return op.fail("mean and rstd must hold one value per row (" + std::to_string(rows) + "), got " + shape_str(mean) +
                   " and " + shape_str(rstd));
  if (w.present && w.numel() != cols) return op.fail("weight must have shape [" + std::to_string(cols) + "], got " + shape_str(w));
  out[0] = input_grad ? shape_of(x) : shape({0});
  out[1] = affine_grad ? shape({cols}) : shape({0});
  out[2] = affine_grad ? shape({cols}) : shape({0});
  return "";
}
inline std::string layer_norm_backward_run(const Arg& gy, const Arg& x, const Arg& mean, const Arg& rstd, const Arg& w,
                                           bool input_grad, bool affine_grad, float* gx, float* gw, float* gb) {
  const int64_t cols = x.size(-1);
  return kLayerNormBackward.kernel(tk_layer_norm_backward(gy.f(), x.f(), mean.f(), rstd.f(), w.f(), x.numel() / cols, cols,
                                                          input_grad ? gx : nullptr, affine_grad ? gw : nullptr,
                                                          affine_grad ? gb : nullptr));
}

// eval-mode batch norm over dim 1 of x [n, c, ...]: running_mean, running_var [c], weight [c] or absent
inline std::string batch_norm_backward_check(const Arg& gy, const Arg& x, const Arg& w, const Arg& mean, const Arg& var,
                                             bool input_grad, bool affine_grad, Shape out[3]) {
  const Op& op = kBatchNormBackward;
  for (const Arg* t : {&gy, &x, &w, &mean, &var}) TK_TRY(op.tensor(*t));
  TK_TRY(op.same_shape(x, gy));
  if (x.dim < 2) return op.fail("x must be [n, c, ...], got " + shape_str(x));
  const int64_t c = x.size(1);
  for (const Arg* t : {&w, &mean, &var})
    if (t->present && (t->dim != 1 || t->size(0) != c))
      return op.fail(std::string(t->name) + " must have shape [" + std::to_string(c) + "], got " + shape_str(*t));
  out[0] = input_grad ? shape_of(x) : shape({0});
  out[1] = affine_grad ? shape({c}) : shape({0});
  out[2] = affine_grad ? shape({c}) : shape({0});
  return "";
}
inline std::string batch_norm_backward_run(const Arg& gy, const Arg& x, const Arg& w, const Arg& mean, const Arg& var,
                                           double eps, bool input_grad, bool affine_grad, float* gx, float* gw, float* gb) {
  const int64_t n = x.size(0), c = x.size(1), hw = c ? x.numel() / (n * c) : 0;
  return kBatchNormBackward.kernel(tk_batch_norm_frozen_backward(
      gy.f(), x.f(), w.f(), mean.f(), var.f(), static_cast<float>(eps), n, c, hw > 0 ? hw : 1,
      input_grad ? gx : nullptr, affine_grad ? gw : nullptr, affine_grad ? gb : nullptr));
}

// ------------------------------------------------------------------------------------ embedding, SGD

constexpr Op kEmbeddingBackward{"dcx::embedding_backward"};
constexpr Op kSgd{"dcx::sgd_update"};

// grad_y [..., dim], indices [...] int32/int64 -> grad_weight [num_weights, dim]
inline std::string embedding_backward_check(const Arg& gy, const Arg& idx, int64_t num_weights, Shape* gw) {
  const Op& op = kEmbeddingBackward;
  TK_TRY(op.tensor(gy));
  TK_TRY(op.tensor(idx, true));
  if (gy.dim != idx.dim + 1 || gy.numel() / (gy.dim ? gy.size(-1) : 1) != idx.numel())
    return op.fail("grad_y " + shape_str(gy) + " must be indices' shape " + shape_str(idx) + " plus the embedding dim");
  if (num_weights < 1 || gy.size(-1) < 1) return op.fail("num_weights and the embedding dim must be >= 1");
  *gw = shape({num_weights, gy.size(-1)});
  return "";
}
inline std::string embedding_backward_run(const Arg& gy, const Arg& idx, int64_t num_weights, int64_t padding_idx,
                                          float* gw) {
  return kEmbeddingBackward.kernel(tk_embedding_backward(gy.f(), idx.data, idx.dtype == DType::Int32, idx.numel(),
                                                         num_weights, gy.size(-1), padding_idx, gw));
}

// param - lr * grad, same shape
inline std::string sgd_check(const Arg& p, const Arg& g) {
  TK_TRY(kSgd.tensor(p));
  TK_TRY(kSgd.tensor(g));
  return kSgd.same_shape(g, p);
}
inline std::string sgd_run(const Arg& p, const Arg& g, double lr, float* out) {
  if (out != p.f()) std::copy(p.f(), p.f() + p.numel(), out);
  return kSgd.kernel(tk_sgd_update(out, g.f(), p.numel(), static_cast<float>(lr)));
}

}  // namespace tk
}  // namespace dcx
