// One tensor view for both adapters: op_aten.h and op_executorch.h turn their tensors into Views, and
// each op (a family's op_<op>-impl.h) is written once against Views and a Call (the adapter's reader of
// the op's arguments and writer of its outputs), with the one-line messages users see.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "base/status.h"

namespace dcx {

enum class DType { Float, Int32, Int64, Other };

// A tensor as the checks and the kernels see it.
struct View {
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

inline View absent(const char* name) {
  View v;
  v.name = name;
  v.present = false;
  return v;
}

// The shape of an output.
struct Shape {
  int dim = 0;
  int64_t s[8] = {0};
};

inline Shape shape_of(const View& v) {
  Shape r;
  r.dim = v.dim;
  for (int i = 0; i < v.dim; i++) r.s[i] = v.sizes[i];
  return r;
}
inline Shape shape(std::initializer_list<int64_t> dims) {
  Shape r;
  for (int64_t d : dims) r.s[r.dim++] = d;
  return r;
}

inline std::string shape_str(const View& t) {
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

// The checks of one op call: every message starts with the op's qualified name (a string that outlives
// the call: a literal, or the registered schema's).
struct Op {
  const char* name;
  std::string fail(const std::string& what) const { return std::string(name) + ": " + what; }
  // present, contiguous, float32 (or one of the index dtypes when index), at most 8 dims
  std::string tensor(const View& t, bool index = false) const {
    if (!t.present) return "";
    if (t.dim > 8) return fail(std::string(t.name) + " has more than 8 dims");
    if (index ? (t.dtype != DType::Int32 && t.dtype != DType::Int64) : t.dtype != DType::Float)
      return fail(std::string(t.name) + " must be " + (index ? "int32 or int64" : "float32") + ", got " +
                  dtype_name(t.dtype) + (index ? "" : "; convert it with .float()"));
    if (!t.contiguous) return fail(std::string(t.name) + " must be contiguous; call .contiguous() on it first");
    return "";
  }
  std::string dims(const View& t, int want, const char* layout) const {
    if (t.dim != want) return fail(std::string(t.name) + " must be " + layout + ", got " + shape_str(t));
    return "";
  }
  std::string same_shape(const View& a, const View& b) const {
    if (!a.present || !b.present) return "";
    bool same = a.dim == b.dim;
    for (int i = 0; same && i < a.dim; i++) same = a.sizes[i] == b.sizes[i];
    if (!same)
      return fail(std::string(a.name) + " " + shape_str(a) + " and " + b.name + " " + shape_str(b) +
                  " must have the same shape");
    return "";
  }
  std::string kernel(int rc) const { return rc == DCX_OK ? "" : fail(std::string("kernel failed: ") + dcx_strerror(rc)); }
};

#define DCX_TRY(expr)            \
  do {                           \
    std::string e_ = (expr);     \
    if (!e_.empty()) return e_;  \
  } while (0)

// The number of arguments of a schema's argument list (none of dcx's has a comma inside an argument).
constexpr int schema_arguments(const char* s) {
  int n = *s ? 1 : 0;
  for (; *s; s++) n += *s == ',';
  return n;
}

}  // namespace dcx
