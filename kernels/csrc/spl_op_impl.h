// The operator written once against plain shapes: argument checks with the messages users see,
// and the calls into the C kernels. op_spl_aten.cpp (PyTorch) and op_spl_executorch.cpp
// (ExecuTorch) are thin shells that turn their tensors into these views.
#pragma once

#include <cstdint>
#include <string>

#include "spl_kernel.h"

namespace dcx {
namespace spl {

constexpr const char* kOp = "dcx::shuffled_partitioned_linear";

// A tensor as the checks see it.
struct View {
  const char* name = "";
  bool present = true;
  bool is_float32 = true;
  bool contiguous = true;
  int dim = 0;
  int64_t sizes[8] = {0};
  float* data = nullptr;
  int64_t size(int i) const { return sizes[i < 0 ? dim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < dim; i++) n *= sizes[i];
    return n;
  }
};

struct Dims {
  int64_t n = 0, d_in = 0, d_out = 0, p = 0;
};

inline std::string shape_str(const View& t) {
  std::string s = "[";
  for (int i = 0; i < t.dim; i++) s += (i ? ", " : "") + std::to_string(t.sizes[i]);
  return s + "]";
}

inline std::string check_tensor(const char* op, const View& t) {
  if (!t.is_float32)
    return std::string(op) + ": " + t.name + " must be float32; convert it with .float()";
  if (!t.contiguous)
    return std::string(op) + ": " + t.name + " must be contiguous; call .contiguous() on it first";
  if (t.dim > 8) return std::string(op) + ": " + t.name + " has more than 8 dims";
  return "";
}

// x [..., d_in], weight [P, d_out/P, d_in/P], bias [d_out] or absent.
inline std::string check_forward(const View& x, const View& w, const View& b, Dims* d) {
  for (const View* t : {&x, &w, &b}) {
    if (!t->present) continue;
    std::string e = check_tensor(kOp, *t);
    if (!e.empty()) return e;
  }
  if (w.dim != 3)
    return std::string(kOp) + ": weight must have shape [P, d_out/P, d_in/P], got " + shape_str(w);
  if (x.dim < 1) return std::string(kOp) + ": x must have at least 1 dim [..., d_in], got a scalar";
  const int64_t P = w.sizes[0], bo = w.sizes[1], bi = w.sizes[2];
  if (P < 1 || bo < 1 || bi < 1)
    return std::string(kOp) + ": weight " + shape_str(w) + " has an empty dim";
  const int64_t d_in = x.size(-1);
  if (d_in % P)
    return std::string(kOp) + ": x's last dim " + std::to_string(d_in) +
           " is not divisible by P=" + std::to_string(P) + " (weight.shape[0]); choose P dividing d_in";
  if (d_in != P * bi)
    return std::string(kOp) + ": x's last dim " + std::to_string(d_in) + " does not match weight " +
           shape_str(w) + ", which expects d_in = P * d_in/P = " + std::to_string(P * bi);
  if (b.present && (b.dim != 1 || b.sizes[0] != P * bo))
    return std::string(kOp) + ": bias must have shape [d_out] = [" + std::to_string(P * bo) +
           "] for weight " + shape_str(w) + ", got " + shape_str(b);
  d->d_in = d_in;
  d->d_out = P * bo;
  d->p = P;
  d->n = x.numel() / d_in;
  return "";
}

// grad_y [..., d_out] against weight [P, bo, bi] (grad input), or against x [..., d_in] and P.
inline std::string check_grad(const char* op, const View& gy, int64_t p, int64_t d_out_expected,
                              Dims* d) {
  std::string e = check_tensor(op, gy);
  if (!e.empty()) return e;
  if (gy.dim < 1) return std::string(op) + ": grad_y must have at least 1 dim";
  if (p < 1) return std::string(op) + ": partitions must be >= 1, got " + std::to_string(p);
  const int64_t d_out = gy.size(-1);
  if (d_out % p)
    return std::string(op) + ": grad_y's last dim " + std::to_string(d_out) +
           " is not divisible by P=" + std::to_string(p);
  if (d_out_expected >= 0 && d_out != d_out_expected)
    return std::string(op) + ": grad_y's last dim " + std::to_string(d_out) + " does not match d_out=" +
           std::to_string(d_out_expected);
  d->d_out = d_out;
  d->p = p;
  d->n = gy.numel() / d_out;
  return "";
}

inline const char* run_forward(const View& x, const View& w, const View& b, const Dims& d,
                               bool shuffle, float* y) {
  int rc = spl_forward(x.data, w.data, b.present ? b.data : nullptr, d.n, d.d_in, d.d_out, d.p,
                       shuffle, y);
  return rc ? spl_strerror(rc) : nullptr;
}

}  // namespace spl
}  // namespace dcx
