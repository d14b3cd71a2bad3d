// Writing a result file so that no reader ever sees it half-written.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dcx {

// Writes `parts` one after the other to a temporary file beside `path`, then renames it to `path`.
// Returns "" on success, else the reason (strerror) after removing the temporary file.
std::string write_atomically(const std::string& path, const std::vector<std::string_view>& parts);

}  // namespace dcx
