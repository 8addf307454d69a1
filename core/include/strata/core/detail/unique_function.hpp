#pragma once
/// @file
/// A move-only type-erased callable with inline storage: what the loop stores per callback.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

namespace strata::detail {

/// The demangled form of a type name from std::type_info::name().
std::string demangle(const char* mangled);

/// Names a callable for logs: its `describe()` member where it has one, else its type.
template <class F>
std::string describe_callable(const F& f) {
  if constexpr (requires { { f.describe() } -> std::convertible_to<std::string>; }) {
    return f.describe();
  } else {
    return demangle(typeid(F).name());
  }
}

template <class Signature, std::size_t InlineSize = 48>
class UniqueFunction;

/// Like std::move_only_function (C++23): holds any callable of the signature. Callables of up
/// to InlineSize bytes that are nothrow-movable live inside the object, so scheduling a
/// lambda that captures a few pointers allocates nothing.
template <class R, class... Args, std::size_t InlineSize>
class UniqueFunction<R(Args...), InlineSize> {
 public:
  UniqueFunction() noexcept = default;
  UniqueFunction(std::nullptr_t) noexcept {}

  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, UniqueFunction> &&
             std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
  UniqueFunction(F&& f) {  // NOLINT(google-explicit-constructor): a callable converts
    using D = std::decay_t<F>;
    if constexpr (fits_inline<D>) {
      ::new (static_cast<void*>(storage_)) D(std::forward<F>(f));
    } else {
      *reinterpret_cast<D**>(storage_) = new D(std::forward<F>(f));
    }
    ops_ = &ops_for<D>;
  }

  UniqueFunction(UniqueFunction&& other) noexcept : ops_(other.ops_) {
    if (ops_) {
      move_from(other);
      other.ops_ = nullptr;
    }
  }

  UniqueFunction& operator=(UniqueFunction&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = other.ops_;
      if (ops_) {
        move_from(other);
        other.ops_ = nullptr;
      }
    }
    return *this;
  }

  UniqueFunction(const UniqueFunction&) = delete;
  UniqueFunction& operator=(const UniqueFunction&) = delete;

  ~UniqueFunction() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  R operator()(Args... args) { return ops_->invoke(storage_, std::forward<Args>(args)...); }

  /// Destroys the held callable (and what it captured) now.
  void reset() noexcept {
    if (ops_) {
      if (ops_->destroy) ops_->destroy(storage_);
      ops_ = nullptr;
    }
  }

  /// A name for logs: the callable's describe() or its demangled type.
  std::string describe() const { return ops_ ? ops_->describe(storage_) : "empty callback"; }

 private:
  struct Ops {
    R (*invoke)(void*, Args&&...);
    void (*relocate)(void* dst, void* src) noexcept;  // null: relocate by memcpy
    void (*destroy)(void*) noexcept;                  // null: nothing to destroy
    std::string (*describe)(const void*);
  };

  static_assert(InlineSize % sizeof(std::uintptr_t) == 0);
  template <class D>
  static constexpr bool fits_inline = sizeof(D) <= InlineSize &&
                                      alignof(D) <= alignof(void*) &&
                                      std::is_nothrow_move_constructible_v<D>;

  template <class D>
  static D& get(void* p) noexcept {
    if constexpr (fits_inline<D>) {
      return *std::launder(reinterpret_cast<D*>(p));
    } else {
      return **reinterpret_cast<D**>(p);
    }
  }

  template <class D>
  static constexpr Ops ops_for{
      [](void* p, Args&&... args) -> R { return get<D>(p)(std::forward<Args>(args)...); },
      (fits_inline<D> && !std::is_trivially_copyable_v<D>)
          ? +[](void* dst, void* src) noexcept {
              D& s = *std::launder(reinterpret_cast<D*>(src));
              ::new (dst) D(std::move(s));
              s.~D();
            }
          : nullptr,
      fits_inline<D>
          ? (std::is_trivially_destructible_v<D> ? nullptr
                                                 : +[](void* p) noexcept { get<D>(p).~D(); })
          : +[](void* p) noexcept { delete *reinterpret_cast<D**>(p); },
      [](const void* p) -> std::string { return describe_callable(get<D>(const_cast<void*>(p))); },
  };

  void move_from(UniqueFunction& other) noexcept {
    if (ops_->relocate) {
      ops_->relocate(storage_, other.storage_);
    } else {
      // Word by word, not memcpy: a fixed, small copy the compiler keeps inline.
      auto* dst = reinterpret_cast<std::uintptr_t*>(storage_);
      const auto* src = reinterpret_cast<const std::uintptr_t*>(other.storage_);
      for (std::size_t i = 0; i < InlineSize / sizeof(std::uintptr_t); ++i) dst[i] = src[i];
    }
  }

  const Ops* ops_ = nullptr;
  alignas(void*) std::byte storage_[InlineSize];
};

}  // namespace strata::detail
