#pragma once
/// @file
/// Allocation for the loop's small, short-lived objects (handles, future states, coroutine
/// frames): per-thread free lists per 16-byte size class up to 512 bytes, refilled from
/// 64 KiB chunks, so that the hot paths neither call malloc nor pay its per-block header.
/// Freed blocks are kept for reuse, never returned to the system: memory is bounded by the
/// peak number of live objects. Builds with AddressSanitizer or ThreadSanitizer use plain
/// new/delete so that use-after-free stays detectable. Objects made on threads that may be
/// short-lived (call_soon_threadsafe's handles) do not come from here.

#include <cstddef>

namespace strata::detail {

void* small_allocate(std::size_t size);
void small_deallocate(void* p, std::size_t size) noexcept;

/// Base that routes a class's operator new/delete through small_allocate. With a virtual
/// destructor, sized delete receives the dynamic type's size, as it must.
struct SmallObject {
  static void* operator new(std::size_t size) { return small_allocate(size); }
  static void operator delete(void* p, std::size_t size) noexcept { small_deallocate(p, size); }
};

}  // namespace strata::detail
