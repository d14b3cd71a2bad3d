// The partitioned linear in ExecuTorch: its rows of kernels/ops.def (the forward for inference, the
// gradient ops for on-device training) through the shared ExecuTorch adapter. Built against an
// executorch wheel's headers and libexecutorch.so (host or aarch64); load the library once per process
// (ctypes.CDLL(path, RTLD_GLOBAL) from Python, or link it with --no-as-needed into a runner): a second
// registration of the same op aborts ExecuTorch.
#include "base/op_executorch.h"
#include "partitioned_linear/op_partitioned_linear-impl.h"

#define DCX_IF_training(...)
#define DCX_IF_partitioned_linear(...) __VA_ARGS__
#define DCX_LIBRARY_OPS dcx::partitioned_linear
#include "base/op_executorch-library.h"
