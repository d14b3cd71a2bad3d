// ExecuTorch's log, captured instead of printed: the runner's stderr stays one line per failure, and
// the log's "Missing operator" lines let a load failure name the operator a kernel library lacks.
#pragma once

#include <string>
#include <vector>

namespace dcx::runtime_log {

// Routes ExecuTorch's log through the runner; with echo, every line also goes to stderr.
void install(bool echo);

// The operators the last failed method load could not find, e.g. "dcx::shuffled_partitioned_linear.out".
std::vector<std::string> missing_operators();

// The last error-level message ExecuTorch logged, or "" if none.
std::string last_error();

}  // namespace dcx::runtime_log
