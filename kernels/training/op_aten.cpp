// The training ops in PyTorch: the training rows of kernels/ops.def, through the shared ATen adapter.
// The ops appear in joint forward+backward graphs through the fast-training export pass, not through
// autograd, so none has an autograd formula; their fake kernels are Python's (dcx.kernels.ops). Strided
// inputs are read through contiguous copies: a graph run eagerly may hand them transposed views.
#include "base/op_aten.h"
#include "training/ops.h"

#define DCX_IF_training(...) __VA_ARGS__
#define DCX_IF_partitioned_linear(...)
#define DCX_LIBRARY_OPS dcx::training
#define DCX_DENSE_COPIES true
#include "base/op_aten-library.h"
