#include <strata/protocols/http_date.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <ctime>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>

namespace {

using strata::format_http_date;
using strata::http_date_length;
using strata::parse_http_date;

std::string format(std::time_t t) {
  char out[http_date_length];
  return std::string(format_http_date(t, out));
}

/// The same instant as the C library writes it, in the C locale (the test never sets one).
std::string strftime_utc(std::time_t t, const char* pattern) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[64];
  const std::size_t n = std::strftime(out, sizeof out, pattern, &tm);
  return std::string(out, n);
}

}  // namespace

TEST_CASE("format_http_date: known instants are written as IMF-fixdate",
          "[protocols][http_date]") {
  const auto [t, text] = GENERATE(table<std::time_t, std::string_view>({
      {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
      {784111777, "Sun, 06 Nov 1994 08:49:37 GMT"},   // RFC 9110's example
      {951782400, "Tue, 29 Feb 2000 00:00:00 GMT"},   // leap day of a year divisible by 400
      {1709208000, "Thu, 29 Feb 2024 12:00:00 GMT"},  // an ordinary leap day
      {2147483647, "Tue, 19 Jan 2038 03:14:07 GMT"},  // the last second of 32-bit time_t
      {2147483648, "Tue, 19 Jan 2038 03:14:08 GMT"},
      {4102444800, "Fri, 01 Jan 2100 00:00:00 GMT"},
      {4107542400, "Mon, 01 Mar 2100 00:00:00 GMT"},  // 2100 has no 29 February
      {253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"},
      {-1, "Wed, 31 Dec 1969 23:59:59 GMT"},  // before the epoch
  }));
  INFO("t = " << t);
  CHECK(format(t) == text);
}

TEST_CASE("format_http_date: writes exactly http_date_length bytes and no terminator",
          "[protocols][http_date]") {
  char out[http_date_length + 1];
  out[http_date_length] = '#';
  const std::string_view text = format_http_date(784111777, out);
  CHECK(text.data() == out);
  CHECK(text.size() == http_date_length);
  CHECK(out[http_date_length] == '#');
}

TEST_CASE("parse_http_date: reads RFC 9110's three formats of one instant",
          "[protocols][http_date]") {
  const std::string_view text = GENERATE(as<std::string_view>{},
                                         "Sun, 06 Nov 1994 08:49:37 GMT",    // IMF-fixdate
                                         "Sunday, 06-Nov-94 08:49:37 GMT",   // RFC 850
                                         "Sun Nov  6 08:49:37 1994",         // asctime
                                         "  Sun, 06 Nov 1994 08:49:37 GMT\t",  // surrounding OWS
                                         "Sun Nov  6 08:49:37 1994 ");
  INFO(text);
  CHECK(parse_http_date(text) == std::optional<std::time_t>(784111777));
}

TEST_CASE("parse_http_date: asctime takes a two-digit day too", "[protocols][http_date]") {
  CHECK(parse_http_date("Wed Nov 16 08:49:37 1994") == std::optional<std::time_t>(784975777));
  CHECK(parse_http_date("Sun Nov 06 08:49:37 1994") == std::optional<std::time_t>(784111777));
}

TEST_CASE("parse_http_date: an RFC 850 two-digit year is within 50 years of now",
          "[protocols][http_date]") {
  // 94 is 1994 (2094 is more than 50 years ahead); 30 is 2030 (not more than 50 ahead).
  CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == std::optional<std::time_t>(784111777));
  CHECK(parse_http_date("Tuesday, 01-Jan-30 00:00:00 GMT") ==
        std::optional<std::time_t>(1893456000));
}

TEST_CASE("parse_http_date: leap days exist only in leap years", "[protocols][http_date]") {
  CHECK(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT") == std::optional<std::time_t>(951782400));
  CHECK(parse_http_date("Thu, 29 Feb 2024 12:00:00 GMT") == std::optional<std::time_t>(1709208000));
  CHECK_FALSE(parse_http_date("Mon, 29 Feb 2100 00:00:00 GMT"));
  CHECK_FALSE(parse_http_date("Wed, 29 Feb 2023 00:00:00 GMT"));
}

TEST_CASE("parse_http_date: a leap second is read as the first second of the next minute",
          "[protocols][http_date]") {
  CHECK(parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == std::optional<std::time_t>(1483228800));
}

TEST_CASE("parse_http_date: the weekday is checked for form, not against the date",
          "[protocols][http_date]") {
  CHECK(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT") == std::optional<std::time_t>(784111777));
  CHECK_FALSE(parse_http_date("Xyz, 06 Nov 1994 08:49:37 GMT"));
}

TEST_CASE("parse_http_date: anything but the three formats is nullopt", "[protocols][http_date]") {
  const std::string_view text = GENERATE(as<std::string_view>{},
      "",
      "   ",
      "Sat, 31 Feb 2015 00:00:00 GMT",      // no 31 February
      "Sun, 31 Nov 1994 08:49:37 GMT",      // no 31 November
      "Sun, 00 Nov 1994 08:49:37 GMT",      // no day 0
      "Sun, 06 Nov 1994 08:49:37",          // GMT missing
      "Sun, 06 Nov 1994 08:49:37 UTC",      // only GMT
      "Sun, 06 Nov 1994 08:49:37 gmt",      // case matters
      "sun, 06 Nov 1994 08:49:37 GMT",
      "Sun, 06 nov 1994 08:49:37 GMT",
      "Sun, 06 Nov 1994 08:49:37 GMT junk",  // trailing junk
      "Sun, 06 Nov 1994 08:49:37 GMTX",
      "Sun, 6 Nov 1994 08:49:37 GMT",       // IMF-fixdate's day has two digits
      "Sun, 06 Nov 94 08:49:37 GMT",        // and its year four
      "Sun, 06 Nov 1994 24:00:00 GMT",      // hour 24
      "Sun, 06 Nov 1994 08:60:37 GMT",      // minute 60
      "Sun, 06 Nov 1994 08:49:61 GMT",      // second 61
      "Sun, 06 Nov 1994 8:49:37 GMT",
      "Sun,  06 Nov 1994 08:49:37 GMT",     // two spaces
      "Sun, 06 Nov 1994 08:49:37 +0000",
      "Sun, 06-Nov-94 08:49:37 GMT",        // RFC 850 wants the long day name
      "Sunday, 06-Nov-1994 08:49:37 GMT",   // and a two-digit year
      "Sunday, 06 Nov 94 08:49:37 GMT",
      "Sun Nov 6 08:49:37 1994",            // asctime pads a one-digit day with a space
      "Sun Nov  6 08:49:37 94",
      "Sun Nov  6 08:49:37 1994 GMT",
      "1994-11-06T08:49:37Z",
      "784111777");
  INFO("'" << text << "'");
  CHECK_FALSE(parse_http_date(text));
}

TEST_CASE("format_http_date and parse_http_date: agree with the C library and round-trip",
          "[protocols][http_date]") {
  std::mt19937_64 random(20240229);
  std::uniform_int_distribution<std::int64_t> any_second(0, 253402300799);  // to 9999-12-31
  for (int i = 0; i < 20000; ++i) {
    // Mostly random instants, and every day boundary of some years around the epoch and 2100.
    const std::time_t t = i < 10000 ? static_cast<std::time_t>(any_second(random))
                          : i < 15000 ? static_cast<std::time_t>(i - 10000) * 86400 - 1
                                      : 4102444800 + static_cast<std::time_t>(i - 17500) * 86400;
    INFO("t = " << t);
    const std::string text = format(t);
    REQUIRE(text == strftime_utc(t, "%a, %d %b %Y %H:%M:%S GMT"));
    REQUIRE(parse_http_date(text) == std::optional<std::time_t>(t));
    REQUIRE(parse_http_date(strftime_utc(t, "%a %b %e %H:%M:%S %Y")) ==
            std::optional<std::time_t>(t));
  }
}

TEST_CASE("http_date_now: is an IMF-fixdate of the current second", "[protocols][http_date]") {
  const std::time_t before = std::time(nullptr);
  const std::string now(strata::http_date_now());
  const std::time_t after = std::time(nullptr);
  CHECK(now.size() == http_date_length);
  const std::optional<std::time_t> parsed = parse_http_date(now);
  REQUIRE(parsed);
  CHECK(*parsed >= before - 1);
  CHECK(*parsed <= after + 1);
}
