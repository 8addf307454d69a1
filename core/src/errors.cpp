#include "strata/core/errors.hpp"

#include <typeinfo>

namespace strata {

const char* CancelledError::what() const noexcept {
  if (what_.empty()) {
    what_ = message_.empty() ? "cancelled" : "cancelled: " + message_;
  }
  return what_.c_str();
}

std::string describe_exception(const std::exception_ptr& e) {
  if (!e) return "no exception";
  try {
    std::rethrow_exception(e);
  } catch (const CancelledError& c) {
    return std::string("CancelledError: ") + c.what();
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception of a type not derived from std::exception";
  }
}

namespace {
std::string group_what(const std::string& message, const std::vector<std::exception_ptr>& es) {
  std::string out = message + " (" + std::to_string(es.size()) + " sub-exception" +
                    (es.size() == 1 ? "" : "s") + ")";
  for (const auto& e : es) out += "\n  - " + describe_exception(e);
  return out;
}
}  // namespace

ExceptionGroup::ExceptionGroup(std::string message, std::vector<std::exception_ptr> exceptions)
    : message_(std::move(message)),
      exceptions_(std::move(exceptions)),
      what_(group_what(message_, exceptions_)) {}

namespace {
class StrataCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "strata"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::cancelled: return "operation cancelled";
      case errc::timed_out: return "operation timed out";
      case errc::loop_closed: return "event loop closed";
      case errc::callback_failed: return "a callback threw (see the loop's exception handler)";
    }
    return "unknown strata error " + std::to_string(value);
  }
};
}  // namespace

const std::error_category& strata_category() noexcept {
  static const StrataCategory category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), strata_category()}; }

}  // namespace strata
