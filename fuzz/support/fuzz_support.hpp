#pragma once
// What every fuzz target shares: the check that turns a broken invariant into a crash libFuzzer
// reports, the one event loop of the process and how to step it until nothing more happens,
// and a small deterministic PRNG for choices derived from the input (chunk sizes, drains).
//
// Everything here is deterministic for a given input: the loop is stepped one iteration at a
// time, no timer with a non-zero delay is waited for, and the PRNG is seeded from the input.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <strata/core/event_loop.hpp>
#include <strata/core/log.hpp>

namespace strata_fuzz {

/// Reports a broken invariant and aborts: libFuzzer saves the input as a crash.
[[noreturn]] inline void fail(std::string_view what, std::string_view detail = {}) {
  std::fprintf(stderr, "\n*** fuzz invariant broken: %.*s\n", static_cast<int>(what.size()),
               what.data());
  if (!detail.empty()) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(detail.size()), detail.data());
  }
  std::fflush(stderr);
  std::abort();
}

/// fail() unless @p condition holds; @p what names the invariant.
inline void check(bool condition, std::string_view what, std::string_view detail = {}) {
  if (!condition) fail(what, detail);
}

/// @p bytes quoted for a message: printable ASCII as is, the rest as \xNN; cut after @p max.
inline std::string show_bytes(std::string_view bytes, std::size_t max = 400) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  out += bytes.size() > max ? "\"..." : "\"";
  return out;
}

/// A counter of everything observable that happens (transport calls, handlers starting and
/// ending): run_until_idle() stops once it stays still. Targets bump it from their fakes.
inline std::uint64_t activity = 0;
/// Coroutines of the target alive now (handlers, stream producers): once a connection has
/// ended, none may be left.
inline std::size_t in_flight = 0;

/// Counts a coroutine of the target in in_flight for its lifetime, and its start and end as
/// activity; a local of the coroutine, so that a coroutine destroyed while suspended (its task
/// cancelled) is counted out too.
struct InFlight {
  InFlight() noexcept {
    ++in_flight;
    ++activity;
  }
  ~InFlight() {
    --in_flight;
    ++activity;
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
};

/// Loop iterations in a row without activity that make the loop idle while a coroutine of the
/// target is alive: more than any chain of callbacks and sleep(0) yields in the targets takes
/// without touching the transport (at most three sleep(0) in a row, then a done callback). With
/// none alive, what can still be pending is shorter (a done callback, a scheduled
/// connection_lost() and the protocol's destruction after it, a zero-delay timer):
/// idle_iterations.
inline constexpr int quiet_iterations = 8;
inline constexpr int idle_iterations = 3;

/// Messages the loop's exception handler received during the current input.
inline std::vector<std::string> loop_exceptions;

/// The process's event loop (epoll), made on first use, with the library's log silenced and an
/// exception handler that records what reaches it (loop_exceptions) for the target to judge.
inline strata::EventLoop& loop() {
  static const std::unique_ptr<strata::EventLoop> instance = [] {
    strata::set_log_handler([](strata::LogLevel, std::string_view) {});
    auto l = strata::new_event_loop(strata::LoopKind::epoll);
    l->set_exception_handler([](strata::EventLoop&, const strata::ExceptionContext& context) {
      loop_exceptions.push_back(context.message);
    });
    return l;
  }();
  return *instance;
}

/// Runs exactly one iteration of the loop: the callbacks ready now, the timers due now, a
/// look at I/O without waiting.
inline void step() {
  strata::EventLoop& l = loop();
  l.stop();
  l.run_forever();
}

/// Runs @p fn inside a callback of the loop, in one iteration, and returns after it: how
/// transports call their protocols. What depends on the loop running behaves then as it does
/// in production (create_eager_task() starts the task inside the call; outside a running loop
/// it would only schedule it).
template <class F>
void in_loop(F&& fn) {
  bool ran = false;
  loop().call_soon([&] {
    fn();
    ran = true;
  });
  step();
  check(ran, "a callback given to in_loop() did not run or threw");
}

/// Steps the loop until quiet_iterations (idle_iterations with no coroutine of the target
/// alive) iterations in a row change nothing. A loop that never settles (a livelock) is a
/// failure.
inline void run_until_idle() {
  int quiet = 0;
  for (int i = 0; i < 200000; ++i) {
    const std::uint64_t before = activity;
    step();
    if (activity != before) {
      quiet = 0;
    } else if (++quiet >= (in_flight > 0 ? quiet_iterations : idle_iterations)) {
      return;
    }
  }
  fail("the loop never became idle (livelock)");
}

/// splitmix64: a tiny deterministic PRNG for choices that the input seeds but does not spell
/// out byte by byte (chunk sizes, how much of the write buffer the peer takes).
class Prng {
 public:
  explicit Prng(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// A number in [lo, hi].
  std::size_t between(std::size_t lo, std::size_t hi) noexcept {
    return lo + static_cast<std::size_t>(next() % (hi - lo + 1));
  }

 private:
  std::uint64_t state_;
};

/// FNV-1a of @p data: a seed derived from a whole input.
inline std::uint64_t hash(std::span<const std::uint8_t> data) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::uint8_t b : data) h = (h ^ b) * 0x100000001b3ULL;
  return h;
}

}  // namespace strata_fuzz
