// Registers one library's rows of kernels/ops.def with PyTorch (op_aten.h). The including file names
// its library by defining DCX_IF_<library>(...) as its arguments and the other libraries' as nothing,
// DCX_LIBRARY_OPS as the namespace of its ops, and DCX_DENSE_COPIES (see aten::Call).
TORCH_LIBRARY_FRAGMENT(dcx, m) {
#define DCX_OP(library, family, name, arguments, returns) DCX_IF_##library(dcx::aten::define(m, #name, arguments, returns);)
#include "ops.def"
#undef DCX_OP
}

TORCH_LIBRARY_IMPL(dcx, CPU, m) {
#define DCX_OP(library, family, name, arguments, returns) \
  DCX_IF_##library(dcx::aten::implement<&DCX_LIBRARY_OPS::name<dcx::aten::Call>, DCX_DENSE_COPIES>(m, #name);)
#include "ops.def"
#undef DCX_OP
}
