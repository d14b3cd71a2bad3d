// dcx_runner: runs or trains one ExecuTorch program on the device and reports one JSON object.
// The CLI and the JSON result are described in runtimes/native/README.md.
#include <cstdio>
#include <exception>

#include "failure.h"
#include "options.h"
#include "runner.h"
#include "runtime_log.h"

int main(int argc, char** argv) {
  try {
    const auto options = dcx::parse_options(argc, argv);
    if (!options) return dcx::kExitOk;
    dcx::runtime_log::install(options->verbose);
    const std::string result = dcx::run(*options);
    std::printf("%s\n", result.c_str());
    return dcx::kExitOk;
  } catch (const dcx::Failure& f) {
    std::fprintf(stderr, "dcx_runner: %s\n", f.what());
    return f.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dcx_runner: internal error: %s\n", e.what());
    return dcx::kExitInternal;
  }
}
