// One invocation of the runner: load, run or train, measure, write the outputs; the JSON result.
#pragma once

#include <string>

#include "options.h"

namespace dcx {

// Returns the JSON result object; throws Failure with the exit code and the one-line message.
std::string run(const Options& options);

}  // namespace dcx
