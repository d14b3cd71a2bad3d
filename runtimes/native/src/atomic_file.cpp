#include "atomic_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <unistd.h>

namespace dcx {

std::string write_atomically(const std::string& path, const std::vector<std::string_view>& parts) {
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  FILE* out = std::fopen(tmp.c_str(), "wb");
  if (!out) return std::strerror(errno);
  int error = 0;
  for (std::string_view part : parts)
    if (!error && std::fwrite(part.data(), 1, part.size(), out) != part.size()) error = errno ? errno : EIO;
  if (std::fclose(out) != 0 && !error) error = errno ? errno : EIO;
  if (!error && std::rename(tmp.c_str(), path.c_str()) != 0) error = errno;
  if (!error) return "";
  std::remove(tmp.c_str());
  return std::strerror(error);
}

}  // namespace dcx
