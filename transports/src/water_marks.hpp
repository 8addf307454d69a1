#pragma once
// The write-buffer water marks every transport resolves the same way (asyncio's
// _set_write_buffer_limits).

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace strata::detail {

struct WaterMarks {
  std::size_t high;
  std::size_t low;
};

/// The water marks for set_write_buffer_limits(@p high, @p low): a missing high is 4 x low (or
/// @p default_high), a missing low is high / 4.
/// @throws std::invalid_argument  low > high.
inline WaterMarks resolve_water_marks(std::optional<std::size_t> high,
                                      std::optional<std::size_t> low, std::size_t default_high) {
  const std::size_t h = high ? *high : (low ? 4 * *low : default_high);
  const std::size_t l = low ? *low : h / 4;
  if (l > h) {
    throw std::invalid_argument("set_write_buffer_limits: low (" + std::to_string(l) +
                                ") must not exceed high (" + std::to_string(h) + ")");
  }
  return {h, l};
}

}  // namespace strata::detail
