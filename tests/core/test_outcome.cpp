#include <strata/core/outcome.hpp>

#include <catch2/catch.hpp>

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace {

/// What value() throws, as a string; "nothing" when it returns.
template <class T>
std::string what_value_throws(strata::Outcome<T>& outcome) {
  try {
    outcome.value();
  } catch (const strata::CancelledError& e) {
    return std::string("CancelledError: ") + e.message();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "nothing";
}

}  // namespace

TEST_CASE("Outcome: the value type of a void outcome is std::monostate", "[core][outcome]") {
  STATIC_REQUIRE(std::is_same_v<strata::Outcome<void>::value_type, std::monostate>);
  STATIC_REQUIRE(std::is_same_v<strata::Outcome<int>::value_type, int>);
  STATIC_REQUIRE(std::is_same_v<strata::value_or_monostate_t<void>, std::monostate>);
  STATIC_REQUIRE(std::is_same_v<strata::value_or_monostate_t<std::string>, std::string>);
}

TEST_CASE("Outcome: an outcome made from a value holds that value and no exception",
          "[core][outcome]") {
  strata::Outcome<int> outcome = 42;
  CHECK(outcome.has_value());
  CHECK_FALSE(outcome.has_exception());
  CHECK_FALSE(outcome.cancelled());
  CHECK(outcome.exception() == nullptr);
  CHECK(outcome.value() == 42);

  outcome.value() = 7;  // value() is a reference into the outcome
  CHECK(outcome.value() == 7);
}

TEST_CASE("Outcome: an outcome made from an exception rethrows it from value()",
          "[core][outcome]") {
  strata::Outcome<int> outcome = std::make_exception_ptr(std::runtime_error("disk on fire"));
  CHECK(outcome.has_exception());
  CHECK_FALSE(outcome.has_value());
  CHECK_FALSE(outcome.cancelled());
  REQUIRE(outcome.exception() != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(outcome.exception()), std::runtime_error);
  CHECK(what_value_throws(outcome) == "disk on fire");
}

TEST_CASE("Outcome: an outcome holding a CancelledError reports cancelled()", "[core][outcome]") {
  strata::Outcome<std::string> outcome =
      std::make_exception_ptr(strata::CancelledError("shutting down"));
  CHECK(outcome.cancelled());
  CHECK(outcome.has_exception());
  CHECK_FALSE(outcome.has_value());
  CHECK(what_value_throws(outcome) == "CancelledError: shutting down");
}

TEST_CASE("Outcome: a void outcome holds std::monostate as its value", "[core][outcome]") {
  strata::Outcome<void> done = std::monostate{};
  CHECK(done.has_value());
  CHECK(what_value_throws(done) == "nothing");

  strata::Outcome<void> failed = std::make_exception_ptr(std::logic_error("bad"));
  CHECK(failed.has_exception());
  CHECK(what_value_throws(failed) == "bad");
}

TEST_CASE("Outcome: value() on an rvalue outcome moves a move-only value out",
          "[core][outcome]") {
  strata::Outcome<std::unique_ptr<int>> outcome = std::make_unique<int>(5);
  std::unique_ptr<int> taken = std::move(outcome).value();
  REQUIRE(taken != nullptr);
  CHECK(*taken == 5);
  CHECK(outcome.has_value());
  CHECK(outcome.value() == nullptr);  // moved from
}
