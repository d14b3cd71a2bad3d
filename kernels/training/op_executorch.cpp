// The training ops in ExecuTorch: the training rows of kernels/ops.def, through the shared ExecuTorch
// adapter. Built against an executorch wheel's headers and libexecutorch.so (host or aarch64); load the
// library once per process.
#include "base/op_executorch.h"
#include "training/ops.h"

#define DCX_IF_training(...) __VA_ARGS__
#define DCX_IF_partitioned_linear(...)
#define DCX_LIBRARY_OPS dcx::training
#include "base/op_executorch-library.h"
