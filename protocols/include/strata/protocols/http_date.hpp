#pragma once
/// @file
/// HTTP dates (RFC 9110 §5.6.7): the IMF-fixdate a server sends in `Date` and
/// `Last-Modified`, and the three formats a recipient must accept in `If-Modified-Since`.

#include <ctime>
#include <optional>
#include <string_view>

namespace strata {

/// Length of an IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
inline constexpr std::size_t http_date_length = 29;

/// Writes @p t (seconds since the epoch, UTC) as an IMF-fixdate into @p out, which must hold
/// http_date_length bytes (no terminating NUL is written); returns the view of them.
std::string_view format_http_date(std::time_t t, char* out) noexcept;

/// Parses an HTTP date in any of the three formats RFC 9110 §5.6.7 names: IMF-fixdate
/// ("Sun, 06 Nov 1994 08:49:37 GMT"), the obsolete RFC 850 form ("Sunday, 06-Nov-94 08:49:37
/// GMT", two-digit years read as within 50 years of now per RFC 9110) and asctime
/// ("Sun Nov  6 08:49:37 1994"). Surrounding whitespace is ignored; the weekday is checked
/// for form only. Returns nullopt for anything else (an invalid If-Modified-Since is ignored,
/// as the RFC requires).
std::optional<std::time_t> parse_http_date(std::string_view text) noexcept;

/// The Date header's value for now, formatted at most once per second per thread; the view
/// stays valid until the next call on the same thread.
std::string_view http_date_now() noexcept;

}  // namespace strata
