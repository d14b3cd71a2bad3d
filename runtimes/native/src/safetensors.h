// Safetensors files: the reference the runner reads its inputs and batches from, and the file it
// writes its outputs and trained parameters to (format: docs/reference.md).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dcx::safetensors {

// A malformed or unreadable file; the message names the file.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType { F64, F32, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType d);
const char* dtype_name(DType d);
std::optional<DType> dtype_from_name(const std::string& name);

struct TensorView {
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // points into the owning File's bytes
  size_t nbytes;
};

std::string shape_text(const std::vector<int64_t>& shape);  // "[32, 1, 28, 28]"

class File {
 public:
  static File read(const std::string& path);

  const TensorView* find(const std::string& name) const;
  const std::string* metadata(const std::string& key) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

class Writer {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data, size_t nbytes);
  void set_metadata(const std::string& key, const std::string& value);
  // Writes a temporary file beside `path`, then renames it: an interrupted run leaves no partial file.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dcx::safetensors
