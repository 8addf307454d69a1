#include "selector.hpp"

#include <chrono>

namespace strata::detail {

int timeout_ms(std::optional<Duration> timeout) noexcept {
  if (!timeout) return -1;
  if (*timeout <= Duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(*timeout).count();
  return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

}  // namespace strata::detail
