// The ExecuTorch adapter: the .out kernel to_executorch emits for every dcx op. Boxed by hand (the
// stack holds the schema's arguments in order, then the out tensors), since the unboxing helper of the
// executorch wheel takes a single out tensor. A Call reads the stack into Views, the op (written once,
// in its family's op_<op>-impl.h) runs on them. Errors (bad shapes, dtypes, indices) log one line and
// fail the call, never the process. op_executorch-library.h registers a library's rows of
// kernels/ops.def with it.
#pragma once

#include <executorch/runtime/core/event_tracer_hooks.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>

#include <array>
#include <string>

#include "base/view.h"

namespace dcx::executorch {

using ::executorch::aten::ScalarType;
using ::executorch::aten::SizesType;
using ::executorch::aten::Tensor;
using ::executorch::runtime::Error;
using ::executorch::runtime::EValue;
using ::executorch::runtime::KernelRuntimeContext;
using ::executorch::runtime::Span;

class Call {
 public:
  Call(KernelRuntimeContext& ctx, Span<EValue*> stack, const char* name, int arguments)
      : ctx_(ctx), s_(stack), op_{name}, arguments_(static_cast<size_t>(arguments)) {}

  const Op& op() const { return op_; }
  View tensor(const char* name) { return view(s_[read_++]->toTensor(), name); }
  View optional(const char* name) {
    EValue* v = s_[read_++];
    return v->isNone() ? absent(name) : view(v->toTensor(), name);
  }
  int64_t integer() { return s_[read_++]->toInt(); }
  double real() { return s_[read_++]->toDouble(); }
  bool flag() { return s_[read_++]->toBool(); }
  void pair(int64_t out[2]) {
    auto list = s_[read_++]->toIntList();
    out[0] = list.size() > 0 ? list[0] : 0;
    out[1] = list.size() > 1 ? list[1] : out[0];
  }

  // false (the call failed, with err logged) when err is not empty or the call failed before; ok()
  // builds no string
  bool ok() const { return !failed_; }
  bool ok(const std::string& err) {
    if (!err.empty()) fail(err, Error::InvalidArgument);
    return !failed_;
  }
  bool kernel(int rc) {
    if (rc != DCX_OK) fail(op_.kernel(rc), rc == DCX_ENOMEM ? Error::MemoryAllocationFailed : Error::InvalidArgument);
    return !failed_;
  }

  // the next out tensor, resized to s; nullptr when it cannot take the result or the call failed
  float* out(const Shape& s) { return prepare(s, ScalarType::Float) ? out_tensor().mutable_data_ptr<float>() : nullptr; }
  int64_t* out_index(const Shape& s) {
    return prepare(s, ScalarType::Long) ? out_tensor().mutable_data_ptr<int64_t>() : nullptr;
  }

 private:
  View view(const Tensor& t, const char* name) const {
    View v;
    v.name = name;
    const ScalarType st = t.scalar_type();
    v.dtype = st == ScalarType::Float ? DType::Float : st == ScalarType::Int ? DType::Int32
            : st == ScalarType::Long  ? DType::Int64 : DType::Other;
    v.contiguous = ::executorch::runtime::tensor_is_contiguous(t);
    v.dim = static_cast<int>(t.dim());
    for (int i = 0; i < v.dim && i < 8; i++) v.sizes[i] = t.size(i);
    v.data = v.dtype == DType::Other ? nullptr : const_cast<void*>(t.const_data_ptr());
    return v;
  }

  void fail(const std::string& err, Error code) {
    if (failed_) return;
    ET_LOG(Error, "%s", err.c_str());
    ctx_.fail(code);
    failed_ = true;
  }

  Tensor& out_tensor() { return s_[arguments_ + written_ - 1]->toTensor(); }

  bool prepare(const Shape& shape, ScalarType dtype) {
    if (failed_) return false;
    if (read_ != arguments_)
      return ok(op_.fail("read " + std::to_string(read_) + " of its " + std::to_string(arguments_) + " arguments"));
    Tensor& t = s_[arguments_ + written_++]->toTensor();
    std::array<SizesType, 8> sizes{};
    for (int d = 0; d < shape.dim; d++) sizes[d] = static_cast<SizesType>(shape.s[d]);
    if (t.scalar_type() != dtype || t.dim() != shape.dim ||
        ::executorch::runtime::resize_tensor(t, {sizes.data(), static_cast<size_t>(shape.dim)}) != Error::Ok)
      return ok(op_.fail("out " + std::to_string(written_ - 1) + " (dim " + std::to_string(t.dim()) +
                         ") cannot take the result (dim " + std::to_string(shape.dim) + ")"));
    return true;
  }

  KernelRuntimeContext& ctx_;
  Span<EValue*> s_;
  Op op_;
  size_t arguments_, read_ = 0, written_ = 0;
  bool failed_ = false;
};

}  // namespace dcx::executorch
