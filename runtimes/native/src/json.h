// The little JSON the runner needs: a parser for safetensors headers and the JSON lists stored in
// their metadata strings, and a writer for the one result object it prints.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace dcx::json {

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A parsed JSON value. Integers without a fraction or exponent keep full int64 precision.
struct Value {
  enum class Kind { Null, Bool, Integer, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is(Kind k) const { return kind == k; }
  const Value* find(const std::string& key) const;
};

// Parses one JSON document; throws ParseError naming the byte offset of the first problem.
Value parse(const std::string& text);

// A JSON list of strings (e.g. a metadata value '["x", "y"]'); throws ParseError otherwise.
std::vector<std::string> parse_string_list(const std::string& text);

std::string quote(const std::string& s);

// Builds one compact JSON object. Keys keep their insertion order; NaN and infinities become null.
class Writer {
 public:
  Writer& begin_object(const std::string& key = "");
  Writer& end_object();
  Writer& begin_array(const std::string& key = "");
  Writer& end_array();
  Writer& value(const std::string& key, const std::string& v);
  Writer& value(const std::string& key, const char* v);
  Writer& value(const std::string& key, double v);
  Writer& value(const std::string& key, int64_t v);
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                                             !std::is_same_v<T, int64_t>, int> = 0>
  Writer& value(const std::string& key, T v) {
    return value(key, static_cast<int64_t>(v));
  }
  Writer& value(const std::string& key, bool v);
  Writer& null(const std::string& key);
  Writer& element(const std::string& v);
  Writer& element(double v);
  const std::string& str() const { return out_; }

 private:
  void prefix(const std::string& key);
  Writer& open(const std::string& key, char bracket);
  Writer& close(char bracket);
  std::string out_;
  std::vector<bool> first_;  // per open container: nothing written into it yet
};

}  // namespace dcx::json
