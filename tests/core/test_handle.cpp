#include <strata/core/handle.hpp>

#include <catch2/catch.hpp>

#include <malloc.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include <strata/core/event_loop.hpp>
#include <strata/core/future.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using strata::Clock;
using strata::Duration;
using strata::Handle;
using strata::TimePoint;
using strata::TimerHandle;
using strata::testing::TestLoop;

namespace {

/// Runs exactly one iteration of @p loop: what is ready (and what is due) runs, nothing more.
void run_one_iteration(strata::EventLoop& loop) {
  loop.stop();
  loop.run_forever();
}

/// Runs @p loop until a timer the test sets fires after @p d.
void run_for(strata::EventLoop& loop, Duration d) {
  TimerHandle t = loop.call_later(d, [&loop] { loop.stop(); });
  loop.run_forever();
  t.cancel();
}

/// What a Counted callable reports: constructions (of any kind), destructions, runs, and
/// destructions of an object that was already destroyed.
struct Counts {
  int constructed = 0;
  int destroyed = 0;
  int runs = 0;
  int destroyed_twice = 0;
};

/// A callable with @p Payload bytes of captured state that counts its lifecycle.
template <std::size_t Payload, bool NothrowMove = true>
struct Counted {
  static constexpr std::uint32_t alive = 0xA11FE;
  static constexpr std::uint32_t dead = 0xDEAD;

  Counts* counts;
  std::uint32_t tag = alive;
  std::array<char, Payload> payload{};

  explicit Counted(Counts* c) noexcept : counts(c) { ++counts->constructed; }
  Counted(const Counted& o) noexcept : counts(o.counts), payload(o.payload) {
    ++counts->constructed;
  }
  Counted(Counted&& o) noexcept(NothrowMove) : counts(o.counts), payload(o.payload) {
    ++counts->constructed;
  }
  Counted& operator=(const Counted&) = delete;
  ~Counted() {
    if (tag != alive) ++counts->destroyed_twice;
    tag = dead;
    ++counts->destroyed;
  }
  void operator()() { ++counts->runs; }
};

using BigCallable = Counted<64>;                    // over the 48-byte inline buffer: heap
using SmallCallable = Counted<8>;                   // inline, relocated by its move constructor
using ThrowingMoveCallable = Counted<8, false>;     // small, but may throw on move: heap
static_assert(sizeof(BigCallable) > 48);
static_assert(sizeof(SmallCallable) <= 48);

/// A callable whose type names it.
struct NamedCallback {
  void operator()() const {}
};

/// A callable that names itself.
struct SelfDescribing {
  void operator()() const {}
  std::string describe() const { return "flush the write buffer of connection 7"; }
};

/// A large callable whose type names it (heap path).
struct BigNamedCallback {
  std::array<char, 128> data{};
  void operator()() const {}
};

/// Sets *destroyed when the (non-moved-from) object dies.
struct DeathProbe {
  bool* destroyed;
  explicit DeathProbe(bool* d) noexcept : destroyed(d) {}
  DeathProbe(DeathProbe&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
  DeathProbe(const DeathProbe&) = delete;
  DeathProbe& operator=(const DeathProbe&) = delete;
  ~DeathProbe() {
    if (destroyed) *destroyed = true;
  }
};

strata::Coro<void> sleep_for(Duration d) { co_await strata::sleep(d); }

/// Bytes the C heap has handed out and not taken back (glibc's mallinfo2).
std::int64_t heap_in_use() {
  struct mallinfo2 mi = ::mallinfo2();
  return static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
}

}  // namespace

// ---- Handle ----------------------------------------------------------------------------------

TEST_CASE("Handle: a default-constructed Handle is empty and cancelling it does nothing",
          "[core][handle]") {
  Handle h;
  CHECK_FALSE(h);
  CHECK_FALSE(h.cancelled());
  CHECK(h.describe() == "empty handle");
  h.cancel();
  CHECK_FALSE(h.cancelled());
  TimerHandle t;
  CHECK_FALSE(t);
  CHECK(t.when() == TimePoint{});
  t.cancel();
  CHECK_FALSE(t.cancelled());
}

STRATA_LOOP_TEST_CASE("Handle: cancel before the loop runs the callback prevents it",
                      "[core][handle]") {
  TestLoop loop(TestType::kind);
  bool ran = false;
  bool other_ran = false;
  Handle h = loop->call_soon([&] { ran = true; });
  loop->call_soon([&] { other_ran = true; });
  REQUIRE(h);
  CHECK_FALSE(h.cancelled());
  h.cancel();
  CHECK(h.cancelled());
  run_one_iteration(*loop);
  CHECK_FALSE(ran);
  CHECK(other_ran);
  CHECK(h.cancelled());
}

STRATA_LOOP_TEST_CASE("Handle: cancel is idempotent", "[core][handle]") {
  TestLoop loop(TestType::kind);
  bool ran = false;
  Handle h = loop->call_soon([&] { ran = true; });
  TimerHandle t = loop->call_later(1ms, [&] { ran = true; });
  h.cancel();
  h.cancel();
  t.cancel();
  t.cancel();
  Handle copy = t;
  copy.cancel();
  CHECK(h.cancelled());
  CHECK(t.cancelled());
  run_for(*loop, 10ms);
  CHECK_FALSE(ran);
  h.cancel();
  t.cancel();
  CHECK(h.cancelled());
  CHECK(t.cancelled());
}

STRATA_LOOP_TEST_CASE("Handle: cancel after the callback ran is harmless", "[core][handle]") {
  TestLoop loop(TestType::kind);
  int runs = 0;
  Handle h = loop->call_soon([&] { ++runs; });
  TimerHandle t = loop->call_later(0ms, [&] { ++runs; });
  run_for(*loop, 5ms);
  REQUIRE(runs == 2);
  CHECK_FALSE(h.cancelled());
  CHECK_FALSE(t.cancelled());
  h.cancel();
  t.cancel();
  CHECK(h.cancelled());  // asyncio: cancelled() reports that cancel() was called
  CHECK(t.cancelled());
  run_for(*loop, 5ms);
  CHECK(runs == 2);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Handle: a copy shares the callback, so cancelling the copy cancels it",
                      "[core][handle]") {
  TestLoop loop(TestType::kind);
  bool ran = false;
  Handle original = loop->call_soon([&] { ran = true; });
  Handle copy = original;
  Handle assigned;
  assigned = copy;
  assigned.cancel();
  CHECK(original.cancelled());
  CHECK(copy.cancelled());
  Handle moved = std::move(original);
  CHECK_FALSE(original);  // NOLINT(bugprone-use-after-move): moved-from is documented empty
  CHECK(moved.cancelled());
  run_one_iteration(*loop);
  CHECK_FALSE(ran);
}

STRATA_LOOP_TEST_CASE("Handle: dropping every Handle does not cancel the callback",
                      "[core][handle]") {
  TestLoop loop(TestType::kind);
  int runs = 0;
  {
    Handle h = loop->call_soon([&] { ++runs; });
    TimerHandle t = loop->call_later(1ms, [&] { ++runs; });
  }
  loop->call_soon([&] { ++runs; });     // result discarded at once
  loop->call_later(2ms, [&] { ++runs; });
  run_for(*loop, 20ms);
  CHECK(runs == 4);
}

STRATA_LOOP_TEST_CASE(
    "Handle: cancelling a handle inside its own callback is safe and keeps its captures alive "
    "until it returns",
    "[core][handle]") {
  TestLoop loop(TestType::kind);
  Handle self;
  bool destroyed = false;
  bool alive_after_cancel = false;
  bool cancelled_inside = false;
  self = loop->call_soon([&, probe = DeathProbe(&destroyed)] {
    self.cancel();
    cancelled_inside = self.cancelled();
    alive_after_cancel = !destroyed && probe.destroyed == &destroyed;
  });
  run_one_iteration(*loop);
  CHECK(cancelled_inside);
  CHECK(alive_after_cancel);
  self = Handle();  // the last reference: the callback goes now
  CHECK(destroyed);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("TimerHandle: cancelling a timer inside its own callback is safe",
                      "[core][timer_handle]") {
  TestLoop loop(TestType::kind);
  TimerHandle self;
  bool destroyed = false;
  bool alive_after_cancel = false;
  int runs = 0;
  self = loop->call_later(1ms, [&, probe = DeathProbe(&destroyed)] {
    ++runs;
    self.cancel();
    alive_after_cancel = !destroyed && probe.destroyed == &destroyed;
  });
  run_for(*loop, 10ms);
  CHECK(runs == 1);
  CHECK(alive_after_cancel);
  CHECK(self.cancelled());
  self = TimerHandle();
  CHECK(destroyed);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Handle: describe() names the callable by its type", "[core][handle]") {
  TestLoop loop(TestType::kind);
  Handle named = loop->call_soon(NamedCallback{});
  Handle big = loop->call_soon(BigNamedCallback{});
  Handle lambda = loop->call_soon([] {});
  TimerHandle timer = loop->call_later(1h, NamedCallback{});
  CHECK_THAT(named.describe(), Contains("NamedCallback"));
  CHECK_THAT(big.describe(), Contains("BigNamedCallback"));
  CHECK_THAT(lambda.describe(), Contains("lambda"));
  CHECK_THAT(timer.describe(), Contains("NamedCallback"));
  Handle copy = named;
  CHECK(copy.describe() == named.describe());
  timer.cancel();
}

STRATA_LOOP_TEST_CASE("Handle: describe() uses the callable's own describe() member",
                      "[core][handle]") {
  TestLoop loop(TestType::kind);
  Handle h = loop->call_soon(SelfDescribing{});
  CHECK(h.describe() == "flush the write buffer of connection 7");
  run_one_iteration(*loop);
  CHECK(h.describe() == "flush the write buffer of connection 7");  // still named after running
}

STRATA_LOOP_TEST_CASE(
    "Handle: a callback capturing more than 48 bytes runs once and is destroyed exactly once",
    "[core][handle]") {
  TestLoop loop(TestType::kind);
  Counts soon;
  Counts later;
  Counts threadsafe;
  Counts throwing_move;
  Counts small;
  {
    Handle h1 = loop->call_soon(BigCallable(&soon));
    TimerHandle h2 = loop->call_later(1ms, BigCallable(&later));
    Handle h3 = loop->call_soon_threadsafe(BigCallable(&threadsafe));
    Handle h4 = loop->call_soon(ThrowingMoveCallable(&throwing_move));
    Handle h5 = loop->call_soon(SmallCallable(&small));
    run_for(*loop, 10ms);
    for (Counts* c : {&soon, &later, &threadsafe, &throwing_move, &small}) {
      CHECK(c->runs == 1);
      CHECK(c->destroyed_twice == 0);
    }
  }
  for (Counts* c : {&soon, &later, &threadsafe, &throwing_move, &small}) {
    CHECK(c->runs == 1);
    CHECK(c->constructed == c->destroyed);  // every object made was destroyed...
    CHECK(c->destroyed_twice == 0);         // ...and none twice
  }
}

STRATA_LOOP_TEST_CASE("Handle: callbacks that never run are destroyed exactly once when the loop closes",
                      "[core][handle]") {
  Counts big;
  Counts small;
  Counts timer;
  {
    TestLoop loop(TestType::kind);
    Handle kept = loop->call_soon(BigCallable(&big));
    loop->call_soon(SmallCallable(&small));
    loop->call_later(1h, BigCallable(&timer));
    loop->close();
    for (Counts* c : {&small, &timer}) CHECK(c->constructed == c->destroyed);
    kept = Handle();
  }
  for (Counts* c : {&big, &small, &timer}) {
    CHECK(c->runs == 0);
    CHECK(c->constructed == c->destroyed);
    CHECK(c->destroyed_twice == 0);
  }
}

STRATA_LOOP_TEST_CASE("Handle: cancel releases the captured state at once", "[core][handle]") {
  TestLoop loop(TestType::kind);
  auto state = std::make_shared<int>(0);
  bool ran = false;
  std::array<char, 100> bulk{};  // pushes the capture over the inline buffer

  Handle small = loop->call_soon([&ran, state] { ran = true; });
  REQUIRE(state.use_count() == 2);
  small.cancel();
  CHECK(state.use_count() == 1);

  Handle big = loop->call_soon([&ran, state, bulk] { ran = bulk.size() > 0; });
  REQUIRE(state.use_count() == 2);
  big.cancel();
  CHECK(state.use_count() == 1);

  TimerHandle timer = loop->call_later(1h, [&ran, state] { ran = true; });
  REQUIRE(state.use_count() == 2);
  timer.cancel();
  CHECK(state.use_count() == 1);

  TimerHandle big_timer = loop->call_later(1h, [&ran, state, bulk] { ran = bulk.size() > 0; });
  REQUIRE(state.use_count() == 2);
  big_timer.cancel();
  CHECK(state.use_count() == 1);

  run_one_iteration(*loop);
  CHECK_FALSE(ran);
}

STRATA_LOOP_TEST_CASE(
    "Handle: a call_soon_threadsafe handle cancelled before the loop runs it never runs",
    "[core][handle]") {
  TestLoop loop(TestType::kind);
  auto state = std::make_shared<int>(0);
  bool ran = false;
  Handle h;
  std::thread([&] { h = loop->call_soon_threadsafe([&ran, state] { ran = true; }); }).join();
  REQUIRE(h);
  h.cancel();
  CHECK(h.cancelled());
  run_one_iteration(*loop);
  CHECK_FALSE(ran);
  h = Handle();
  CHECK(state.use_count() == 1);  // released by the time both the loop and the user let go
}

// ---- TimerHandle -----------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("TimerHandle: when() is the deadline on the loop's clock",
                      "[core][timer_handle]") {
  TestLoop loop(TestType::kind);
  const TimePoint at = loop->time() + 1h;
  TimerHandle a = loop->call_at(at, [] {});
  CHECK(a.when() == at);
  const TimePoint before = loop->time();
  TimerHandle b = loop->call_later(250ms, [] {});
  const TimePoint after = loop->time();
  CHECK(b.when() >= before + 250ms);
  CHECK(b.when() <= after + 250ms);
  TimerHandle copy = b;
  CHECK(copy.when() == b.when());
  Handle sliced = b;  // a TimerHandle is a Handle
  sliced.cancel();
  CHECK(b.cancelled());
  CHECK(b.when() >= before + 250ms);  // a cancelled timer keeps its deadline
  a.cancel();
}

STRATA_LOOP_TEST_CASE(
    "TimerHandle: a due timer cancelled by an earlier callback of the same iteration does not run",
    "[core][timer_handle]") {
  TestLoop loop(TestType::kind);
  const TimePoint when = loop->time() - 1s;  // both due at once, ordered by scheduling
  bool second_ran = false;
  TimerHandle second;
  loop->call_at(when, [&] { second.cancel(); });
  second = loop->call_at(when, [&] { second_ran = true; });
  run_one_iteration(*loop);
  CHECK_FALSE(second_ran);
  CHECK(second.cancelled());
}

STRATA_LOOP_TEST_CASE(
    "TimerHandle: cancelling timers anywhere in the queue leaves the rest in deadline order, "
    "ties in scheduling order",
    "[core][timer_handle]") {
  TestLoop loop(TestType::kind);
  constexpr int n = 2000;
  std::mt19937 rng(20240607);
  std::uniform_int_distribution<int> offset_ms(0, 49);  // few distinct deadlines: many ties
  const TimePoint base = loop->time() - 1h;             // all due on the first iteration
  std::vector<int> offsets(n);
  std::vector<TimerHandle> timers;
  std::vector<int> ran;
  for (int i = 0; i < n; ++i) {
    offsets[static_cast<std::size_t>(i)] = offset_ms(rng);
    timers.push_back(loop->call_at(base + std::chrono::milliseconds(offsets[static_cast<std::size_t>(i)]),
                                   [&ran, i] { ran.push_back(i); }));
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<bool> cancelled(n, false);
  for (int k = 0; k < n / 3; ++k) {
    int i = order[static_cast<std::size_t>(k)];
    timers[static_cast<std::size_t>(i)].cancel();
    cancelled[static_cast<std::size_t>(i)] = true;
  }
  std::vector<int> expected;
  for (int i = 0; i < n; ++i) {
    if (!cancelled[static_cast<std::size_t>(i)]) expected.push_back(i);
  }
  std::stable_sort(expected.begin(), expected.end(), [&](int x, int y) {
    return offsets[static_cast<std::size_t>(x)] < offsets[static_cast<std::size_t>(y)];
  });
  run_one_iteration(*loop);
  CHECK(ran == expected);
}

STRATA_LOOP_TEST_CASE(
    "TimerHandle: cancelled timers are freed at once, so a loop holding only cancelled timers "
    "neither keeps their memory nor waits for them",
    "[core][timer_handle]") {
  constexpr std::size_t n = 100'000;
  TestLoop loop(TestType::kind);
  auto state = std::make_shared<int>(0);
  std::vector<TimerHandle> timers;
  timers.reserve(n);
  std::mt19937 rng(7);
  auto schedule_and_cancel_all = [&] {
    for (std::size_t i = 0; i < n; ++i) {
      timers.push_back(loop->call_later(1h + std::chrono::microseconds(i), [state] {}));
    }
    CHECK(state.use_count() == static_cast<long>(n) + 1);
    const std::int64_t peak = heap_in_use();
    std::shuffle(timers.begin(), timers.end(), rng);  // remove from all over the queue
    for (TimerHandle& t : timers) t.cancel();
    CHECK(state.use_count() == 1);  // every callback released by cancel() itself
    timers.clear();                 // the test's own references
    return peak;
  };
  // A first round grows the loop's timer queue to its high-water mark, which it may keep.
  schedule_and_cancel_all();
  const std::int64_t baseline = heap_in_use();
  const std::int64_t peak = schedule_and_cancel_all();
  const std::int64_t after = heap_in_use();
  if (peak - baseline < static_cast<std::int64_t>(n) * 32) {
    WARN("mallinfo2() does not track this allocator (sanitizer?); memory not checked");
  } else {
    INFO("baseline " << baseline << ", peak " << peak << ", after " << after);
    CHECK(after - baseline < (peak - baseline) / 10);
  }
  const TimePoint start = Clock::now();
  loop.run(sleep_for(1ms));
  CHECK(Clock::now() - start < 1s);
}

STRATA_LOOP_TEST_CASE("TimerHandle: cancelling after the loop closed or died is harmless",
                      "[core][timer_handle]") {
  TimerHandle survivor;
  bool ran = false;
  {
    auto loop = strata::new_event_loop(TestType::kind);
    survivor = loop->call_later(1h, [&] { ran = true; });
    TimerHandle closed_first = loop->call_later(1h, [&] { ran = true; });
    loop->close();
    closed_first.cancel();
    CHECK(closed_first.cancelled());
  }  // the loop is destroyed; the handle outlives it
  survivor.cancel();
  CHECK(survivor.cancelled());
  CHECK_FALSE(ran);
}

namespace {
/// Records the thread that destroys it (the moved-from shells excepted).
struct RecordsDestroyingThread {
  std::thread::id* where;
  bool live = true;
  explicit RecordsDestroyingThread(std::thread::id* w) : where(w) {}
  RecordsDestroyingThread(RecordsDestroyingThread&& o) noexcept : where(o.where) { o.live = false; }
  ~RecordsDestroyingThread() {
    if (live) *where = std::this_thread::get_id();
  }
  void operator()() const {}
};
}  // namespace

STRATA_LOOP_TEST_CASE("Handle: a call_soon_threadsafe callback is destroyed on the loop's "
                      "thread even when the poster drops its Handle last",
                      "[core][handle]") {
  TestLoop loop(TestType::kind);
  std::thread::id ran_callback_destroyed{}, cancelled_callback_destroyed{};
  strata::Future<void> posted(*loop);
  std::promise<void> loop_done;
  std::thread poster([&] {
    Handle ran = loop->call_soon_threadsafe(RecordsDestroyingThread(&ran_callback_destroyed));
    Handle cancelled =
        loop->call_soon_threadsafe(RecordsDestroyingThread(&cancelled_callback_destroyed));
    cancelled.cancel();
    loop->call_soon_threadsafe([&] { posted.set_result(); });
    loop_done.get_future().wait();  // the loop has run (or skipped) both: drop the Handles last
  });
  loop->run_until_complete(posted);
  loop_done.set_value();
  poster.join();
  CHECK(ran_callback_destroyed == std::this_thread::get_id());
  CHECK(cancelled_callback_destroyed == std::this_thread::get_id());
}
