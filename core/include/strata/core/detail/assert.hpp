#pragma once
/// @file
/// STRATA_ASSERT: internal invariants only, never input from users or peers.

namespace strata::detail {
[[noreturn]] void assert_failed(const char* expr, const char* file, int line) noexcept;
}

#if defined(NDEBUG) && !defined(STRATA_ASSERTIONS)
#define STRATA_ASSERT(expr) static_cast<void>(0)
#else
#define STRATA_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : ::strata::detail::assert_failed(#expr, __FILE__, __LINE__))
#endif
