#include "strata/core/log.hpp"

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

namespace strata {

namespace {
std::mutex& handler_mutex() {
  static std::mutex m;
  return m;
}
std::shared_ptr<const LogHandler>& handler_slot() {
  static std::shared_ptr<const LogHandler> h;
  return h;
}
}  // namespace

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "unknown";
}

void set_log_handler(LogHandler handler) {
  auto next = handler ? std::make_shared<const LogHandler>(std::move(handler)) : nullptr;
  std::lock_guard lock(handler_mutex());
  handler_slot() = std::move(next);
}

void log(LogLevel level, std::string_view message) {
  std::shared_ptr<const LogHandler> h;
  {
    std::lock_guard lock(handler_mutex());
    h = handler_slot();
  }
  if (h) {
    (*h)(level, message);
    return;
  }
  std::string line = "strata: ";
  line += to_string(level);
  line += ": ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace strata
