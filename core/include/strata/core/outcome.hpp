#pragma once
/// @file
/// Outcome<T>: a value or an exception, as gather(return_exceptions, ...) reports each child.

#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

#include "strata/core/errors.hpp"

namespace strata {

/// T, or std::monostate for void: the element type of gather() results.
template <class T>
using value_or_monostate_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

/// A finished operation's outcome: its value, or the exception it raised (CancelledError
/// for a cancelled one). What Python's gather(..., return_exceptions=True) puts in its list.
template <class T>
class Outcome {
 public:
  /// T, or std::monostate when T is void.
  using value_type = value_or_monostate_t<T>;

  /// A success holding @p value (implicit, so that a value converts to an Outcome).
  Outcome(value_type value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT
  /// A failure holding @p e (implicit, so that an exception_ptr converts to an Outcome).
  Outcome(std::exception_ptr e) : v_(std::in_place_index<1>, std::move(e)) {}  // NOLINT

  /// Whether it holds a value.
  bool has_value() const noexcept { return v_.index() == 0; }
  /// Whether it holds an exception (CancelledError included).
  bool has_exception() const noexcept { return v_.index() == 1; }

  /// True when the exception is a CancelledError.
  bool cancelled() const noexcept {
    if (!has_exception()) return false;
    try {
      std::rethrow_exception(std::get<1>(v_));
    } catch (const CancelledError&) {
      return true;
    } catch (...) {
      return false;
    }
  }

  /// The value; rethrows the exception if there is one.
  value_type& value() & {
    if (has_exception()) std::rethrow_exception(std::get<1>(v_));
    return std::get<0>(v_);
  }
  /// The value, moved out; rethrows the exception if there is one.
  value_type&& value() && { return std::move(value()); }

  /// The exception, or nullptr.
  std::exception_ptr exception() const noexcept {
    return has_exception() ? std::get<1>(v_) : nullptr;
  }

 private:
  std::variant<value_type, std::exception_ptr> v_;
};

}  // namespace strata
