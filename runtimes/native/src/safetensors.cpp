#include "safetensors.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>

#include "atomic_file.h"
#include "json.h"

namespace dcx::safetensors {

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2}, {DType::I8, "I8", 1},   {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& info(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i;
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

}  // namespace

size_t dtype_size(DType d) { return info(d).size; }

const char* dtype_name(DType d) { return info(d).name; }

std::optional<DType> dtype_from_name(const std::string& name) {
  for (const auto& i : kDTypes)
    if (name == i.name) return i.dtype;
  return std::nullopt;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

File File::read(const std::string& path) {
  File f;
  f.path_ = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  f.bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  auto bad = [&](const std::string& why) { return Error(path + ": not a safetensors file: " + why); };
  if (f.bytes_.size() < 8) throw bad("shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | f.bytes_[i];
  if (n > kMaxHeader || n > f.bytes_.size() - 8) throw bad("header length " + std::to_string(n) + " exceeds the file");
  json::Value header;
  try {
    header = json::parse(std::string(reinterpret_cast<const char*>(f.bytes_.data()) + 8, n));
  } catch (const json::ParseError& e) {
    throw bad(std::string("header is not JSON: ") + e.what());
  }
  if (!header.is(json::Value::Kind::Object)) throw bad("header is not a JSON object");
  const uint8_t* data = f.bytes_.data() + 8 + n;
  const size_t data_size = f.bytes_.size() - 8 - n;
  for (const auto& [name, entry] : header.object) {
    if (name == "__metadata__") {
      if (!entry.is(json::Value::Kind::Object)) throw bad("__metadata__ is not an object");
      for (const auto& [key, value] : entry.object) {
        if (!value.is(json::Value::Kind::String)) throw bad("metadata '" + key + "' is not a string");
        f.metadata_[key] = value.string;
      }
      continue;
    }
    const json::Value* dtype = entry.find("dtype");
    const json::Value* shape = entry.find("shape");
    const json::Value* offsets = entry.find("data_offsets");
    if (!dtype || !dtype->is(json::Value::Kind::String) || !shape || !shape->is(json::Value::Kind::Array) ||
        !offsets || !offsets->is(json::Value::Kind::Array) || offsets->array.size() != 2)
      throw bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    auto dt = dtype_from_name(dtype->string);
    if (!dt) throw bad("tensor '" + name + "' has unsupported dtype " + dtype->string);
    TensorView view{*dt, {}, nullptr, 0};
    size_t numel = 1;
    for (const json::Value& d : shape->array) {
      if (!d.is(json::Value::Kind::Integer) || d.integer < 0) throw bad("tensor '" + name + "' has a bad shape");
      view.shape.push_back(d.integer);
      numel *= static_cast<size_t>(d.integer);
    }
    const json::Value& b = offsets->array[0];
    const json::Value& e = offsets->array[1];
    if (!b.is(json::Value::Kind::Integer) || !e.is(json::Value::Kind::Integer) || b.integer < 0 ||
        e.integer < b.integer || static_cast<uint64_t>(e.integer) > data_size)
      throw bad("tensor '" + name + "' has data_offsets outside the file");
    view.nbytes = static_cast<size_t>(e.integer - b.integer);
    if (view.nbytes != numel * dtype_size(*dt))
      throw bad("tensor '" + name + "' has " + std::to_string(view.nbytes) + " bytes for shape " +
                shape_text(view.shape) + " " + dtype->string);
    view.data = data + b.integer;
    f.tensors_.emplace(name, std::move(view));
  }
  return f;
}

const TensorView* File::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const std::string* File::metadata(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

void Writer::add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data, size_t nbytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  entries_.push_back({name, dtype, std::move(shape), std::vector<uint8_t>(p, p + nbytes)});
}

void Writer::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void Writer::write(const std::string& path) const {
  json::Writer header;
  header.begin_object();
  if (!metadata_.empty()) {
    header.begin_object("__metadata__");
    for (const auto& [k, v] : metadata_) header.value(k, v);
    header.end_object();
  }
  size_t offset = 0;
  for (const Entry& e : entries_) {
    header.begin_object(e.name).value("dtype", dtype_name(e.dtype)).begin_array("shape");
    for (int64_t d : e.shape) header.value("", d);
    header.end_array().begin_array("data_offsets").value("", offset).value("", offset + e.data.size());
    header.end_array().end_object();
    offset += e.data.size();
  }
  header.end_object();
  std::string text = header.str();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the tensor data 8-byte aligned

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  std::vector<std::string_view> parts{{reinterpret_cast<const char*>(len), 8}, text};
  for (const Entry& e : entries_) parts.emplace_back(reinterpret_cast<const char*>(e.data.data()), e.data.size());
  std::string why = write_atomically(path, parts);
  if (!why.empty()) throw Error(path + ": cannot write (" + why + ")");
}

}  // namespace dcx::safetensors
