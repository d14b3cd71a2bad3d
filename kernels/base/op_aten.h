// The ATen adapter: PyTorch's side of every dcx op. A boxed kernel reads the dispatcher's stack into
// Views (a Call), runs the op (written once, in its family's op_<op>-impl.h) and leaves the outputs on
// the stack. One kernel serves both forms of an op: the functional one allocates its outputs, the .out
// one (what ExecuTorch's to_executorch emits) resizes the out tensors it is given. op_aten-library.h
// registers a library's rows of kernels/ops.def with it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/native/Resize.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "base/view.h"

namespace dcx::aten {

class Call {
 public:
  // dense_copies: read strided inputs through contiguous copies (a graph run eagerly may hand an op
  // transposed or expanded views) rather than refuse them.
  Call(const c10::OperatorHandle& handle, torch::jit::Stack* stack, bool dense_copies)
      : stack_(stack), dense_copies_(dense_copies) {
    const c10::FunctionSchema& schema = handle.schema();
    op_.name = schema.name().c_str();
    out_variant_ = schema.overload_name() == "out";
    arguments_ = schema.arguments().size();
    outputs_ = schema.returns().size();
    first_ = stack->size() - arguments_;
  }

  const Op& op() const { return op_; }
  View tensor(const char* name) { return view(next().toTensor(), name); }
  View optional(const char* name) {
    const c10::IValue& v = next();
    return v.isNone() ? absent(name) : view(v.toTensor(), name);
  }
  int64_t integer() { return next().toInt(); }
  double real() { return next().toDouble(); }
  bool flag() { return next().toBool(); }
  void pair(int64_t out[2]) {
    const std::vector<int64_t> v = next().toIntVector();
    TORCH_CHECK(v.size() == 2, op_.name, ": an int[2] argument has ", v.size(), " values");
    out[0] = v[0];
    out[1] = v[1];
  }

  // false never: an error raises (one line, the RuntimeError PyTorch shows)
  bool ok() const { return true; }
  bool ok(const std::string& err) {
    TORCH_CHECK(err.empty(), err);
    return true;
  }
  bool kernel(int rc) { return ok(op_.kernel(rc)); }

  float* out(const Shape& s) { return output(s, at::kFloat).data_ptr<float>(); }
  int64_t* out_index(const Shape& s) { return output(s, at::kLong).data_ptr<int64_t>(); }

  // the arguments off the stack, the outputs on it
  void finish() {
    TORCH_CHECK(results_.size() == outputs_, op_.name, ": made ", results_.size(), " of ", outputs_, " outputs");
    torch::jit::drop(*stack_, arguments_);
    for (at::Tensor& t : results_) torch::jit::push(*stack_, std::move(t));
  }

 private:
  const c10::IValue& next() {
    TORCH_CHECK(read_ < arguments_ - (out_variant_ ? outputs_ : 0), op_.name, ": read past its arguments");
    return (*stack_)[first_ + read_++];
  }

  View view(const at::Tensor& given, const char* name) {
    TORCH_CHECK(given.device().is_cpu(), op_.name, ": ", name, " must be a CPU tensor, got ", given.device());
    inputs_.push_back(given);
    const at::Tensor& t = dense_copies_ && !given.is_contiguous() ? copies_.emplace_back(given.contiguous()) : given;
    View v;
    v.name = name;
    const auto st = t.scalar_type();
    v.dtype = st == at::kFloat ? DType::Float : st == at::kInt ? DType::Int32 : st == at::kLong ? DType::Int64
                                                                                                : DType::Other;
    v.contiguous = t.is_contiguous();
    v.dim = static_cast<int>(t.dim());
    for (int i = 0; i < v.dim && i < 8; i++) v.sizes[i] = t.size(i);
    v.data = v.dtype == DType::Other ? nullptr : const_cast<void*>(t.const_data_ptr());
    return v;
  }

  at::Tensor& output(const Shape& s, at::ScalarType dtype) {
    const std::vector<int64_t> sizes(s.s, s.s + s.dim);
    if (!out_variant_) return results_.emplace_back(at::empty(sizes, at::TensorOptions().dtype(dtype)));
    TORCH_CHECK(results_.size() < outputs_, op_.name, ": more outputs than its schema returns");
    at::Tensor& out = (*stack_)[first_ + arguments_ - outputs_ + results_.size()].toTensor();
    TORCH_CHECK(out.scalar_type() == dtype, op_.name, ": out must be ", c10::getDtypeNames(dtype).first, ", got ",
                c10::getDtypeNames(out.scalar_type()).first);
    TORCH_CHECK(out.device().is_cpu(), op_.name, ": out must be a CPU tensor");
    at::native::resize_output(out, sizes);
    TORCH_CHECK(out.is_contiguous(), op_.name, ": out must be contiguous");
    for (const at::Tensor& in : inputs_)
      if (in.numel() > 0 && out.numel() > 0) at::assert_no_overlap(out, in);
    return results_.emplace_back(out);
  }

  torch::jit::Stack* stack_;
  bool dense_copies_;
  Op op_{};
  bool out_variant_ = false;
  size_t arguments_ = 0, outputs_ = 0, first_ = 0, read_ = 0;
  std::vector<at::Tensor> inputs_, copies_, results_;
};

template <void (*Run)(Call&), bool DenseCopies>
void boxed(const c10::OperatorHandle& handle, torch::jit::Stack* stack) {
  Call c(handle, stack, DenseCopies);
  Run(c);
  c.finish();
}

// name(arguments) -> returns, and name.out(arguments, *, Tensor(a!) out...) -> its out tensors
inline void define(torch::Library& m, const std::string& name, const std::string& arguments,
                   const std::string& returns) {
  int outputs = 0;
  for (size_t at = returns.find("Tensor"); at != std::string::npos; at = returns.find("Tensor", at + 1)) outputs++;
  std::string outs, results;
  for (int i = 0; i < outputs; i++) {
    const std::string alias = std::string("Tensor(") + static_cast<char>('a' + i) + "!)";
    outs += ", " + alias + " out" + (outputs > 1 ? std::to_string(i) : "");
    results += (i ? ", " : "") + alias;
  }
  const std::string functional = name + "(" + arguments + ") -> " + returns;
  const std::string out = name + ".out(" + arguments + ", *" + outs + ") -> " +
                          (outputs > 1 ? "(" + results + ")" : results);
  m.def(torch::schema(functional.c_str(), c10::AliasAnalysisKind::FROM_SCHEMA));
  m.def(torch::schema(out.c_str(), c10::AliasAnalysisKind::FROM_SCHEMA));
}

template <void (*Run)(Call&), bool DenseCopies>
void implement(torch::Library& m, const std::string& name) {
  m.impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&boxed<Run, DenseCopies>>());
  m.impl((name + ".out").c_str(), torch::CppFunction::makeFromBoxedFunction<&boxed<Run, DenseCopies>>());
}

}  // namespace dcx::aten
