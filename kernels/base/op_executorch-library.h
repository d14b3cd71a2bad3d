// Registers one library's rows of kernels/ops.def with ExecuTorch (op_executorch.h). The including file
// names its library by defining DCX_IF_<library>(...) as its arguments and the other libraries' as
// nothing, and DCX_LIBRARY_OPS as the namespace of its ops. Each call is a profiled event named like the
// stock kernels' (native_call_<op>), so ETDump and dcx.targets.runner.top_operators see the dcx ops.
namespace {

#define DCX_ET_KERNEL(name, arguments)                                                                    \
  ::executorch::runtime::Kernel(                                                                          \
      "dcx::" #name ".out",                                                                               \
      [](::executorch::runtime::KernelRuntimeContext& ctx, ::executorch::runtime::Span<::executorch::runtime::EValue*> s) { \
        ::executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(),    \
                                                                         "native_call_dcx::" #name ".out"); \
        constexpr int kArguments = dcx::schema_arguments(arguments); /* counted as it compiles */        \
        dcx::executorch::Call c(ctx, s, "dcx::" #name, kArguments);                                        \
        DCX_LIBRARY_OPS::name(c);                                                                         \
      }),
#define DCX_OP(library, family, name, arguments, returns) DCX_IF_##library(DCX_ET_KERNEL(name, arguments))

const ::executorch::runtime::Kernel kKernels[] = {
#include "ops.def"
};
#undef DCX_OP
#undef DCX_ET_KERNEL

const auto registered = ::executorch::runtime::register_kernels({kKernels, sizeof kKernels / sizeof kKernels[0]});

}  // namespace
