// Per-thread free lists for the loop's small objects (see handle.hpp).

#include <cstddef>
#include <mutex>
#include <new>
#include <vector>

#include "strata/core/handle.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRATA_SMALL_ALLOC_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define STRATA_SMALL_ALLOC_POOL 0
#endif
#endif
#ifndef STRATA_SMALL_ALLOC_POOL
#define STRATA_SMALL_ALLOC_POOL 1
#endif

namespace strata::detail {

#if STRATA_SMALL_ALLOC_POOL
namespace {

constexpr std::size_t granule = 16;
constexpr std::size_t classes = 64;             // sizes up to 1 KiB: a task with a
                                                // large result (an HTTP response) fits
constexpr std::size_t chunk_bytes = 64 * 1024;  // fresh blocks are carved from chunks

/// Chunks are process-wide and never given back: a block freed on one thread may be reused
/// by another, so no thread can know when a chunk is unused. What a program keeps is
/// bounded by its peak number of live small objects.
std::mutex chunks_mutex;
std::vector<void*>* chunks = nullptr;  // kept reachable, for leak checkers

void* new_chunk() {
  void* chunk = ::operator new(chunk_bytes);
  std::lock_guard lock(chunks_mutex);
  if (!chunks) chunks = new std::vector<void*>;
  chunks->push_back(chunk);
  return chunk;
}

struct ThreadCache {
  struct Node {
    Node* next;
  };
  Node* head[classes] = {};
  char* carve = nullptr;  // the unused tail of this thread's current chunk
  std::size_t carve_left = 0;

  // Out of line and cold: inlined, the refill makes every free-list pop save six registers.
  [[gnu::noinline, gnu::cold]] void* fresh(std::size_t bytes) {
    if (carve_left < bytes) {
      carve = static_cast<char*>(new_chunk());
      carve_left = chunk_bytes;
    }
    void* p = carve;
    carve += bytes;
    carve_left -= bytes;
    return p;
  }
};

thread_local ThreadCache cache;

std::size_t size_class(std::size_t size) noexcept { return (size + granule - 1) / granule - 1; }

}  // namespace

void* small_allocate(std::size_t size) {
  std::size_t c = size_class(size);
  if (c >= classes) return ::operator new(size);
  if (ThreadCache::Node* n = cache.head[c]) {
    cache.head[c] = n->next;
    return n;
  }
  return cache.fresh((c + 1) * granule);
}

void small_deallocate(void* p, std::size_t size) noexcept {
  std::size_t c = size_class(size);
  if (c >= classes) {
    ::operator delete(p);
    return;
  }
  auto* n = static_cast<ThreadCache::Node*>(p);
  n->next = cache.head[c];
  cache.head[c] = n;
}

#else

void* small_allocate(std::size_t size) { return ::operator new(size); }
void small_deallocate(void* p, std::size_t) noexcept { ::operator delete(p); }

#endif

}  // namespace strata::detail
