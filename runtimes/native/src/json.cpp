#include "json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace dcx::json {

const Value* Value::find(const std::string& key) const {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &it->second;
}

namespace {

struct Escape {
  char raw, code;  // '\n' is written as backslash + 'n'
};

constexpr Escape kEscapes[] = {{'"', '"'}, {'\\', '\\'}, {'\b', 'b'}, {'\f', 'f'}, {'\n', 'n'}, {'\r', 'r'}, {'\t', 't'}};

const Escape* escape_for_code(char code) {
  for (const Escape& e : kEscapes)
    if (e.code == code) return &e;
  return nullptr;
}

const Escape* escape_for_raw(char raw) {
  for (const Escape& e : kEscapes)
    if (e.raw == raw) return &e;
  return nullptr;
}

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(const std::string& what) const {
    throw ParseError(what + " at byte " + std::to_string(pos_));
  }

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }

  bool consume(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!consume(c)) fail(std::string("expected '") + c + "'");
  }

  bool literal(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    Value v;
    char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      v.kind = Value::Kind::Object;
      if (consume('}')) return v;
      do {
        skip_space();
        std::string key = string();
        expect(':');
        v.object[key] = value(depth + 1);
      } while (consume(','));
      expect('}');
    } else if (c == '[') {
      ++pos_;
      v.kind = Value::Kind::Array;
      if (consume(']')) return v;
      do {
        v.array.push_back(value(depth + 1));
      } while (consume(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Value::Kind::String;
      v.string = string();
    } else if (literal("true")) {
      v.kind = Value::Kind::Bool;
      v.boolean = true;
    } else if (literal("false")) {
      v.kind = Value::Kind::Bool;
    } else if (literal("null")) {
      v.kind = Value::Kind::Null;
    } else {
      number(v);
    }
    return v;
  }

  void number(Value& v) {
    size_t start = pos_;
    bool integral = true;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c >= '0' && c <= '9') {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        integral = false;
        ++pos_;
      } else {
        break;
      }
    }
    if (pos_ == start) fail("unexpected character");
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    if (integral) {
      auto [end, ec] = std::from_chars(first, last, v.integer);
      if (ec != std::errc() || end != last) fail("bad integer");
      v.kind = Value::Kind::Integer;
      v.number = static_cast<double>(v.integer);
    } else {
      std::string text(first, last);
      char* end = nullptr;
      v.number = std::strtod(text.c_str(), &end);
      if (end != text.c_str() + text.size()) fail("bad number");
      v.kind = Value::Kind::Number;
    }
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      cp <<= 4;
      if (c >= '0' && c <= '9') cp |= c - '0';
      else if (c >= 'a' && c <= 'f') cp |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') cp |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return cp;
  }

  std::string string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      if (e == 'u') {
        uint32_t cp = hex4();
        if (cp >= 0xD800 && cp < 0xDC00 && literal("\\u")) {  // a surrogate pair
          uint32_t low = hex4();
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, cp);
      } else if (e == '/') {
        out += '/';
      } else if (const Escape* esc = escape_for_code(e)) {
        out += esc->raw;
      } else {
        fail("bad escape");
      }
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

std::string number_text(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest text that reads back as v
  return ec == std::errc() ? std::string(buf, end) : "null";
}

}  // namespace

Value parse(const std::string& text) { return Parser(text).document(); }

std::vector<std::string> parse_string_list(const std::string& text) {
  Value v = parse(text);
  if (!v.is(Value::Kind::Array)) throw ParseError("expected a JSON list of strings");
  std::vector<std::string> out;
  for (const Value& e : v.array) {
    if (!e.is(Value::Kind::String)) throw ParseError("expected a JSON list of strings");
    out.push_back(e.string);
  }
  return out;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (const Escape* esc = escape_for_raw(static_cast<char>(c))) {
      out += '\\';
      out += esc->code;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

void Writer::prefix(const std::string& key) {
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
  if (!key.empty()) out_ += quote(key) + ":";
}

Writer& Writer::open(const std::string& key, char bracket) {
  prefix(key);
  out_ += bracket;
  first_.push_back(true);
  return *this;
}

Writer& Writer::close(char bracket) {
  out_ += bracket;
  first_.pop_back();
  return *this;
}

Writer& Writer::begin_object(const std::string& key) { return open(key, '{'); }
Writer& Writer::end_object() { return close('}'); }
Writer& Writer::begin_array(const std::string& key) { return open(key, '['); }
Writer& Writer::end_array() { return close(']'); }

Writer& Writer::value(const std::string& key, const std::string& v) {
  prefix(key);
  out_ += quote(v);
  return *this;
}

Writer& Writer::value(const std::string& key, const char* v) { return value(key, std::string(v)); }

Writer& Writer::value(const std::string& key, double v) {
  prefix(key);
  out_ += number_text(v);
  return *this;
}

Writer& Writer::value(const std::string& key, int64_t v) {
  prefix(key);
  out_ += std::to_string(v);
  return *this;
}

Writer& Writer::value(const std::string& key, bool v) {
  prefix(key);
  out_ += v ? "true" : "false";
  return *this;
}

Writer& Writer::null(const std::string& key) {
  prefix(key);
  out_ += "null";
  return *this;
}

Writer& Writer::element(const std::string& v) { return value("", v); }

Writer& Writer::element(double v) { return value("", v); }

}  // namespace dcx::json
