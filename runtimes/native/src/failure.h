// How the runner fails: one line on stderr and an exit code that says which kind of failure it was.
#pragma once

#include <stdexcept>
#include <string>

namespace dcx {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,  // a bug in the runner
  kExitUsage = 2,     // bad flags or flag values
  kExitLoad = 3,      // a named file (model, reference, kernel library) is missing, malformed or unusable
  kExitRun = 4,       // the program loaded but failed while running, or its results could not be written
};

struct Failure : std::runtime_error {
  Failure(ExitCode c, const std::string& message) : std::runtime_error(message), code(c) {}
  ExitCode code;
};

[[noreturn]] inline void fail(ExitCode code, const std::string& message) { throw Failure(code, message); }

}  // namespace dcx
