#pragma once
// What test_uring_refusal.cpp's io_uring_submit*() interposers offer the other tests of this
// executable: they see every submission of the io_uring proactor (the executable's definitions
// win over liburing's), and can make its kernel look older. On the other backends nothing
// calls them.

#include <cstddef>

namespace strata::testing {

/// While @p on, multishot receives are refused by the kernel as before Linux 6.0 does (EINVAL:
/// a flag it does not know), so that the loop falls back to single receives.
void refuse_multishot_receives(bool on) noexcept;

/// How many multishot receives were submitted since the process started.
std::size_t multishot_receives_submitted() noexcept;

/// refuse_multishot_receives() for a scope.
class KernelWithoutMultishot {
 public:
  explicit KernelWithoutMultishot(bool on) noexcept { refuse_multishot_receives(on); }
  KernelWithoutMultishot(const KernelWithoutMultishot&) = delete;
  KernelWithoutMultishot& operator=(const KernelWithoutMultishot&) = delete;
  ~KernelWithoutMultishot() { refuse_multishot_receives(false); }
};

}  // namespace strata::testing
