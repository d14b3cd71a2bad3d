#include "runtime_log.h"

#include <algorithm>
#include <cstdio>
#include <deque>

#include <executorch/runtime/platform/platform.h>

namespace dcx::runtime_log {

namespace {

constexpr size_t kKeep = 256;  // enough for every missing operator of a large program
constexpr char kMissingOperator[] = "Missing operator: [";

struct Captured {
  bool echo = false;
  std::deque<std::string> messages;
  std::string last_error;
};

Captured& captured() {
  static Captured c;
  return c;
}

void emit(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
          const char* message, size_t length) {
  Captured& c = captured();
  std::string text(message, length);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  for (char& ch : text)  // messages may quote bytes of a damaged file
    if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7e) ch = '?';
  if (c.echo) std::fprintf(stderr, "[executorch %c %s:%zu] %s\n", static_cast<char>(level), filename, line, text.c_str());
  if (level == kError || level == kFatal) c.last_error = text;
  c.messages.push_back(std::move(text));
  if (c.messages.size() > kKeep) c.messages.pop_front();
}

}  // namespace

void install(bool echo) {
  captured().echo = echo;
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit, __FILE__));
}

std::vector<std::string> missing_operators() {
  std::vector<std::string> ops;
  for (const std::string& m : captured().messages) {
    auto at = m.find(kMissingOperator);
    if (at == std::string::npos) continue;
    auto close = m.find("] ", at);
    if (close == std::string::npos) continue;
    std::string op = m.substr(close + 2);
    if (std::find(ops.begin(), ops.end(), op) == ops.end()) ops.push_back(op);
  }
  return ops;
}

std::string last_error() { return captured().last_error; }

}  // namespace dcx::runtime_log
