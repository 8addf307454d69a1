// HTTP dates: formatting with no libc locale or allocation, and a strict parser of the three
// formats of RFC 9110 §5.6.7.
#include "strata/protocols/http_date.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <ctime>

namespace strata {
namespace {

constexpr std::array<const char*, 7> day_names = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<const char*, 7> long_day_names = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                                       "Thursday", "Friday", "Saturday"};
constexpr std::array<const char*, 12> month_names = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/// Days since 1970-01-01 of a proleptic Gregorian civil date (Howard Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void put2(char* p, unsigned v) noexcept {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
}

/// A cursor over the text being parsed; every read fails softly (ok() turns false).
class Cursor {
 public:
  explicit Cursor(std::string_view s) noexcept : s_(s) {}
  bool ok() const noexcept { return ok_; }
  bool at_end() const noexcept { return i_ == s_.size(); }
  void literal(std::string_view lit) noexcept {
    if (s_.substr(i_, lit.size()) == lit) {
      i_ += lit.size();
    } else {
      ok_ = false;
    }
  }
  /// Exactly @p n digits.
  unsigned digits(std::size_t n) noexcept {
    unsigned v = 0;
    for (std::size_t k = 0; k < n; ++k) {
      if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') {
        ok_ = false;
        return 0;
      }
      v = v * 10 + static_cast<unsigned>(s_[i_++] - '0');
    }
    return v;
  }
  /// One of @p names (exact case); returns its index.
  template <std::size_t N>
  unsigned name(const std::array<const char*, N>& names) noexcept {
    for (std::size_t k = 0; k < N; ++k) {
      const std::string_view n = names[k];
      if (s_.substr(i_, n.size()) == n) {
        i_ += n.size();
        return static_cast<unsigned>(k);
      }
    }
    ok_ = false;
    return 0;
  }
  /// "HH:MM:SS"
  unsigned time_of_day() noexcept {
    const unsigned h = digits(2);
    literal(":");
    const unsigned m = digits(2);
    literal(":");
    const unsigned s = digits(2);
    if (h > 23 || m > 59 || s > 60) ok_ = false;  // 60: a leap second, read as :59 + 1
    return h * 3600 + m * 60 + s;
  }
  char peek() const noexcept { return i_ < s_.size() ? s_[i_] : '\0'; }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
  bool ok_ = true;
};

unsigned days_in_month(unsigned year, unsigned month) noexcept {
  static constexpr std::array<unsigned, 12> days = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[month - 1];
}

std::optional<std::time_t> make_time(unsigned year, unsigned month, unsigned day,
                                     unsigned seconds) noexcept {
  if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return std::nullopt;
  return static_cast<std::time_t>(days_from_civil(year, month, day) * 86400 + seconds);
}

}  // namespace

std::string_view format_http_date(std::time_t t, char* out) noexcept {
  std::int64_t days = t / 86400;
  std::int64_t secs = t % 86400;
  if (secs < 0) {
    secs += 86400;
    --days;
  }
  // civil_from_days (Howard Hinnant's algorithm).
  const std::int64_t z = days + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned day = doy - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  const auto year = static_cast<unsigned>(static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2));
  const auto weekday = static_cast<unsigned>(((days % 7) + 11) % 7);  // 1970-01-01 was a Thursday

  std::copy_n(day_names[weekday], 3, out);
  std::copy_n(", ", 2, out + 3);
  put2(out + 5, day);
  out[7] = ' ';
  std::copy_n(month_names[month - 1], 3, out + 8);
  out[11] = ' ';
  put2(out + 12, (year / 100) % 100);
  put2(out + 14, year % 100);
  out[16] = ' ';
  put2(out + 17, static_cast<unsigned>(secs / 3600));
  out[19] = ':';
  put2(out + 20, static_cast<unsigned>(secs / 60 % 60));
  out[22] = ':';
  put2(out + 23, static_cast<unsigned>(secs % 60));
  std::copy_n(" GMT", 4, out + 25);
  return {out, http_date_length};
}

std::optional<std::time_t> parse_http_date(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);

  if (text.size() > 3 && text[3] == ',') {  // IMF-fixdate
    Cursor c(text);
    c.name(day_names);
    c.literal(", ");
    const unsigned day = c.digits(2);
    c.literal(" ");
    const unsigned month = c.name(month_names) + 1;
    c.literal(" ");
    const unsigned year = c.digits(4);
    c.literal(" ");
    const unsigned seconds = c.time_of_day();
    c.literal(" GMT");
    if (!c.ok() || !c.at_end()) return std::nullopt;
    return make_time(year, month, day, seconds);
  }
  if (text.size() > 3 && text[3] == ' ') {  // asctime: "Sun Nov  6 08:49:37 1994"
    Cursor c(text);
    c.name(day_names);
    c.literal(" ");
    const unsigned month = c.name(month_names) + 1;
    c.literal(" ");
    unsigned day = 0;
    if (c.peek() == ' ') {
      c.literal(" ");
      day = c.digits(1);
    } else {
      day = c.digits(2);
    }
    c.literal(" ");
    const unsigned seconds = c.time_of_day();
    c.literal(" ");
    const unsigned year = c.digits(4);
    if (!c.ok() || !c.at_end()) return std::nullopt;
    return make_time(year, month, day, seconds);
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  Cursor c(text);
  c.name(long_day_names);
  c.literal(", ");
  const unsigned day = c.digits(2);
  c.literal("-");
  const unsigned month = c.name(month_names) + 1;
  c.literal("-");
  const unsigned yy = c.digits(2);
  c.literal(" ");
  const unsigned seconds = c.time_of_day();
  c.literal(" GMT");
  if (!c.ok() || !c.at_end()) return std::nullopt;
  // RFC 9110: a two-digit year more than 50 years in the future is in the past century.
  const std::time_t now = std::time(nullptr);
  std::tm now_utc{};
  ::gmtime_r(&now, &now_utc);
  const auto this_year = static_cast<unsigned>(now_utc.tm_year + 1900);
  unsigned year = (this_year / 100) * 100 + yy;
  if (year > this_year + 50) year -= 100;
  return make_time(year, month, day, seconds);
}

std::string_view http_date_now() noexcept {
  struct Cache {
    std::time_t second = -1;
    char text[http_date_length];
  };
  thread_local Cache cache;
  const std::time_t now = std::time(nullptr);
  if (now != cache.second) {
    cache.second = now;
    format_http_date(now, cache.text);
  }
  return {cache.text, http_date_length};
}

}  // namespace strata
