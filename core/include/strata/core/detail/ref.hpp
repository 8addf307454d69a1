#pragma once
/// @file
/// Ref<T>: an intrusive reference for objects with add_ref()/release() (loop-thread counts).

#include <cstddef>
#include <utility>

namespace strata::detail {

template <class T>
class Ref {
 public:
  Ref() noexcept = default;
  Ref(std::nullptr_t) noexcept {}
  /// Takes a new reference to @p p.
  explicit Ref(T* p) noexcept : p_(p) {
    if (p_) p_->add_ref();
  }
  template <class U>
  Ref(const Ref<U>& other) noexcept : Ref(other.get()) {}
  Ref(const Ref& other) noexcept : Ref(other.p_) {}
  Ref(Ref&& other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  Ref& operator=(Ref other) noexcept {
    std::swap(p_, other.p_);
    return *this;
  }
  ~Ref() {
    if (p_) p_->release();
  }

  T* get() const noexcept { return p_; }
  T* operator->() const noexcept { return p_; }
  T& operator*() const noexcept { return *p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  friend bool operator==(const Ref& a, const Ref& b) noexcept { return a.p_ == b.p_; }

 private:
  T* p_ = nullptr;
};

}  // namespace strata::detail
