// Cancel-safety of every awaitable of strata::core, as each header's "@par Cancellation"
// states it (docs/reliability.md, "Cancel-safety", has the table). Each test suspends a task in
// the awaitable (it sets an Event just before the await, and the test awaits that Event, so the
// task is known to be suspended), cancels it with Task::cancel(), then checks what is left:
// the item in the queue, the lock free, the semaphore's count, the futures untouched.
//
// The race shapes are here too: the awaited thing completes (an item put, the lock released, a
// unit handed over, the event set) and the cancel arrives in the same loop iteration, before
// the woken task has resumed. As in asyncio, the cancel wins: the await throws CancelledError,
// and what was handed to the task goes back (to the queue, the next waiter, the semaphore).
#include <strata/core/as_completed.hpp>
#include <strata/core/async_generator.hpp>
#include <strata/core/barrier.hpp>
#include <strata/core/condition.hpp>
#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/executor.hpp>
#include <strata/core/future.hpp>
#include <strata/core/gather.hpp>
#include <strata/core/lifo_queue.hpp>
#include <strata/core/lock.hpp>
#include <strata/core/priority_queue.hpp>
#include <strata/core/queue.hpp>
#include <strata/core/semaphore.hpp>
#include <strata/core/shield.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/core/task_group.hpp>
#include <strata/core/timeout.hpp>
#include <strata/core/wait.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cancel_test.hpp"
#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::BoundedSemaphore;
using strata::Coro;
using strata::Event;
using strata::Future;
using strata::Lock;
using strata::LockGuard;
using strata::Queue;
using strata::Semaphore;
using strata::SemaphoreGuard;
using strata::Task;
using strata::testing::name_of;
using strata::testing::suspended_in;
using strata::testing::TestLoop;

namespace {

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

// ---- Queue, LifoQueue, PriorityQueue --------------------------------------------------------

/// A get cancelled while the queue is empty: a later put is not taken by it.
template <class Q>
Coro<void> get_cancelled_while_waiting() {
  Q q;
  auto starting = suspended_in([&q] { return q.get(); }, "getter");
  Task<std::string> getter = co_await starting;
  getter.cancel();
  std::string outcome = co_await getter;
  CHECK(outcome == "CancelledError");
  q.put_nowait(7);
  CHECK(q.qsize() == 1);  // the cancelled get took nothing
  CHECK(q.get_nowait() == 7);
}

/// A get woken by a put and cancelled in the same iteration: the item stays in the queue, and
/// the next getter (if any) is woken for it.
template <class Q>
Coro<void> get_woken_then_cancelled(bool second_getter) {
  Q q;
  auto first = suspended_in([&q] { return q.get(); }, "getter 1");
  Task<std::string> g1 = co_await first;
  Task<std::string> g2;
  if (second_getter) {
    auto second = suspended_in([&q] { return q.get(); }, "getter 2");
    g2 = co_await second;
  }
  q.put_nowait(7);  // wakes g1...
  g1.cancel();      // ...which is cancelled before it resumes
  std::string outcome1 = co_await g1;
  CHECK(outcome1 == "CancelledError");
  if (second_getter) {
    std::string outcome2 = co_await g2;  // hangs if the wake-up was lost with g1
    CHECK(outcome2 == "ok 7");
    CHECK(q.empty());
  } else {
    CHECK(q.qsize() == 1);
    CHECK(q.get_nowait() == 7);
  }
}

/// A put cancelled while the queue is full: its item is not put and it holds no slot.
template <class Q>
Coro<void> put_cancelled_while_waiting() {
  Q q(1);
  q.put_nowait(1);
  auto starting = suspended_in([&q] { return q.put(2); }, "putter");
  Task<std::string> putter = co_await starting;
  putter.cancel();
  std::string outcome = co_await putter;
  CHECK(outcome == "CancelledError");
  CHECK(q.qsize() == 1);
  CHECK(q.get_nowait() == 1);
  CHECK(q.empty());
  q.put_nowait(3);  // the slot is free
  CHECK(q.full());
}

/// A put woken by a get (a slot freed) and cancelled in the same iteration: its item is not
/// put, and the slot goes to the next putter (if any).
template <class Q>
Coro<void> put_woken_then_cancelled(bool second_putter) {
  Q q(1);
  q.put_nowait(1);
  auto first = suspended_in([&q] { return q.put(2); }, "putter 1");
  Task<std::string> p1 = co_await first;
  Task<std::string> p2;
  if (second_putter) {
    auto second = suspended_in([&q] { return q.put(3); }, "putter 2");
    p2 = co_await second;
  }
  CHECK(q.get_nowait() == 1);  // frees the slot and wakes p1...
  p1.cancel();                 // ...which is cancelled before it resumes
  std::string outcome1 = co_await p1;
  CHECK(outcome1 == "CancelledError");
  if (second_putter) {
    std::string outcome2 = co_await p2;  // hangs if the slot's wake-up was lost with p1
    CHECK(outcome2 == "ok");
    REQUIRE(q.qsize() == 1);
    CHECK(q.get_nowait() == 3);
  } else {
    CHECK(q.empty());
    CHECK_FALSE(q.full());
  }
}

/// A cancelled join changes nothing: task_done() still wakes the other joiner.
template <class Q>
Coro<void> join_cancelled() {
  Q q;
  q.put_nowait(1);
  auto first = suspended_in([&q] { return q.join(); }, "joiner 1");
  Task<std::string> j1 = co_await first;
  auto second = suspended_in([&q] { return q.join(); }, "joiner 2");
  Task<std::string> j2 = co_await second;
  j1.cancel();
  std::string outcome1 = co_await j1;
  CHECK(outcome1 == "CancelledError");
  CHECK(q.get_nowait() == 1);
  CHECK_FALSE(j2.done());
  q.task_done();
  std::string outcome2 = co_await j2;
  CHECK(outcome2 == "ok");
}

/// Runs @p scenario for each of the three queues.
template <template <class> class Scenario>
void for_each_queue(TestLoop& loop) {
  SECTION("Queue") { loop.run(Scenario<Queue<int>>::run()); }
  SECTION("LifoQueue") { loop.run(Scenario<strata::LifoQueue<int>>::run()); }
  SECTION("PriorityQueue") { loop.run(Scenario<strata::PriorityQueue<int>>::run()); }
}

template <class Q>
struct GetCancelledWhileWaiting {
  static Coro<void> run() { return get_cancelled_while_waiting<Q>(); }
};
template <class Q>
struct GetWokenThenCancelled {
  static Coro<void> run() { return get_woken_then_cancelled<Q>(true); }
};
template <class Q>
struct GetWokenThenCancelledAlone {
  static Coro<void> run() { return get_woken_then_cancelled<Q>(false); }
};
template <class Q>
struct PutCancelledWhileWaiting {
  static Coro<void> run() { return put_cancelled_while_waiting<Q>(); }
};
template <class Q>
struct PutWokenThenCancelled {
  static Coro<void> run() { return put_woken_then_cancelled<Q>(true); }
};
template <class Q>
struct PutWokenThenCancelledAlone {
  static Coro<void> run() { return put_woken_then_cancelled<Q>(false); }
};
template <class Q>
struct JoinCancelled {
  static Coro<void> run() { return join_cancelled<Q>(); }
};

}  // namespace

STRATA_LOOP_TEST_CASE(
    "Queue, LifoQueue, PriorityQueue: a get cancelled while waiting takes no item",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<GetCancelledWhileWaiting>(loop);
}

STRATA_LOOP_TEST_CASE(
    "Queue, LifoQueue, PriorityQueue: a get woken by a put then cancelled in "
    "the same iteration leaves the item to the next getter",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<GetWokenThenCancelled>(loop);
}

STRATA_LOOP_TEST_CASE(
    "Queue, LifoQueue, PriorityQueue: a get woken by a put then cancelled in "
    "the same iteration leaves the item in the queue",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<GetWokenThenCancelledAlone>(loop);
}

STRATA_LOOP_TEST_CASE(
    "Queue, LifoQueue, PriorityQueue: a put cancelled while waiting puts "
    "nothing and holds no slot",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<PutCancelledWhileWaiting>(loop);
}

STRATA_LOOP_TEST_CASE(
    "Queue, LifoQueue, PriorityQueue: a put woken by a get then cancelled in "
    "the same iteration passes the slot to the next putter",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<PutWokenThenCancelled>(loop);
}

STRATA_LOOP_TEST_CASE(
    "Queue, LifoQueue, PriorityQueue: a put woken by a get then cancelled in "
    "the same iteration leaves the slot free",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<PutWokenThenCancelledAlone>(loop);
}

STRATA_LOOP_TEST_CASE("Queue, LifoQueue, PriorityQueue: a cancelled join changes nothing",
                      "[core][cancel]") {
  TestLoop loop(TestType::kind);
  for_each_queue<JoinCancelled>(loop);
}

// ---- Lock -----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Lock: an acquire cancelled while queued holds nothing", "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Lock lock;
    auto taking = lock.acquire();
    LockGuard held = co_await taking;
    auto starting = suspended_in([&lock] { return lock.acquire(); }, "acquirer");
    Task<std::string> acquirer = co_await starting;
    acquirer.cancel();
    std::string outcome = co_await acquirer;
    CHECK(outcome == "CancelledError");
    CHECK(lock.locked());  // still ours
    held.unlock();
    CHECK_FALSE(lock.locked());
    auto step = next_iteration();
    co_await step;
    CHECK_FALSE(lock.locked());  // nobody took it meanwhile
    auto again = lock.acquire();
    LockGuard mine = co_await again;
    CHECK(lock.locked());
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "Lock: an acquire woken by release() then cancelled in the same iteration "
    "leaves the lock free, or passes it to the next waiter",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  const bool second_waiter = GENERATE(false, true);
  INFO("a second waiter: " << second_waiter);
  auto body = [second_waiter]() -> Coro<void> {
    Lock lock;
    auto taking = lock.acquire();
    LockGuard held = co_await taking;
    auto first = suspended_in([&lock] { return lock.acquire(); }, "acquirer 1");
    Task<std::string> a1 = co_await first;
    Task<std::string> a2;
    if (second_waiter) {
      auto second = suspended_in([&lock] { return lock.acquire(); }, "acquirer 2");
      a2 = co_await second;
    }
    held.unlock();  // hands the lock to a1...
    a1.cancel();    // ...which is cancelled before it resumes
    std::string outcome1 = co_await a1;
    CHECK(outcome1 == "CancelledError");
    if (second_waiter) {
      std::string outcome2 = co_await a2;  // hangs if the lock was lost with a1
      CHECK(outcome2 == "ok");
    }
    CHECK_FALSE(lock.locked());
    auto again = lock.acquire();
    LockGuard mine = co_await again;
    CHECK(lock.locked());
  };
  loop.run(body());
}

// ---- Semaphore, BoundedSemaphore ------------------------------------------------------------

namespace {

template <class S>
Coro<void> semaphore_acquire_cancelled_while_queued() {
  S sem(1);
  auto taking = sem.acquire();
  SemaphoreGuard held = co_await taking;
  CHECK(sem.value() == 0);
  auto starting = suspended_in([&sem] { return sem.acquire(); }, "acquirer");
  Task<std::string> acquirer = co_await starting;
  acquirer.cancel();
  std::string outcome = co_await acquirer;
  CHECK(outcome == "CancelledError");
  CHECK(sem.value() == 0);
  held.release();
  CHECK(sem.value() == 1);  // the count is back where it started
  CHECK_FALSE(sem.locked());
  if constexpr (std::is_same_v<S, BoundedSemaphore>) {
    CHECK_THROWS_AS(sem.release(), strata::InvalidStateError);
  }
}

template <class S>
Coro<void> semaphore_acquire_woken_then_cancelled(bool second_waiter) {
  S sem(1);
  auto taking = sem.acquire();
  SemaphoreGuard held = co_await taking;
  auto first = suspended_in([&sem] { return sem.acquire(); }, "acquirer 1");
  Task<std::string> a1 = co_await first;
  Task<std::string> a2;
  if (second_waiter) {
    auto second = suspended_in([&sem] { return sem.acquire(); }, "acquirer 2");
    a2 = co_await second;
  }
  held.release();  // hands the unit to a1 (value() stays 0)...
  CHECK(sem.value() == 0);
  a1.cancel();  // ...which is cancelled before it resumes
  std::string outcome1 = co_await a1;
  CHECK(outcome1 == "CancelledError");
  if (second_waiter) {
    std::string outcome2 = co_await a2;  // hangs if the unit was lost with a1
    CHECK(outcome2 == "ok");             // and a2's guard gave it back
  }
  CHECK(sem.value() == 1);
  CHECK_FALSE(sem.locked());
  if constexpr (std::is_same_v<S, BoundedSemaphore>) {
    // The count is exact: a unit given back twice would pass the bound here.
    CHECK_THROWS_AS(sem.release(), strata::InvalidStateError);
  }
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "Semaphore, BoundedSemaphore: an acquire cancelled while queued takes no unit",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  SECTION("Semaphore") { loop.run(semaphore_acquire_cancelled_while_queued<Semaphore>()); }
  SECTION("BoundedSemaphore") {
    loop.run(semaphore_acquire_cancelled_while_queued<BoundedSemaphore>());
  }
}

STRATA_LOOP_TEST_CASE(
    "Semaphore, BoundedSemaphore: an acquire woken by release() then cancelled "
    "in the same iteration gives the unit back, or to the next waiter",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  const bool second_waiter = GENERATE(false, true);
  INFO("a second waiter: " << second_waiter);
  SECTION("Semaphore") {
    loop.run(semaphore_acquire_woken_then_cancelled<Semaphore>(second_waiter));
  }
  SECTION("BoundedSemaphore") {
    loop.run(semaphore_acquire_woken_then_cancelled<BoundedSemaphore>(second_waiter));
  }
}

// ---- Event ----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "Event: a cancelled wait leaves the event and the other waiters as they "
    "were",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Event event;
    auto first = suspended_in([&event] { return event.wait(); }, "waiter 1");
    Task<std::string> w1 = co_await first;
    auto second = suspended_in([&event] { return event.wait(); }, "waiter 2");
    Task<std::string> w2 = co_await second;
    w1.cancel();
    std::string outcome1 = co_await w1;
    CHECK(outcome1 == "CancelledError");
    CHECK_FALSE(event.is_set());
    CHECK_FALSE(w2.done());
    event.set();
    std::string outcome2 = co_await w2;
    CHECK(outcome2 == "ok");
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "Event: a wait woken by set() then cancelled in the same iteration throws "
    "CancelledError; the event stays set",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Event event;
    auto starting = suspended_in([&event] { return event.wait(); }, "waiter");
    Task<std::string> waiter = co_await starting;
    event.set();
    waiter.cancel();
    std::string outcome = co_await waiter;
    CHECK(outcome == "CancelledError");
    CHECK(event.is_set());
  };
  loop.run(body());
}

// ---- Condition ------------------------------------------------------------------------------

namespace {

/// Waits on @p cond (after setting @p ready) and reports how it ended, and whether the lock
/// was held as the wait ended.
Coro<std::string> condition_waiter(strata::Condition* cond, std::shared_ptr<Event> ready) {
  auto taking = cond->acquire();
  LockGuard held = co_await taking;
  ready->set();
  std::string out = "ok";
  try {
    auto waiting = cond->wait();
    co_await waiting;
  } catch (...) {
    out = name_of(std::current_exception());
  }
  co_return out + (cond->locked() ? ", locked" : ", unlocked");
}

Coro<Task<std::string>> start_condition_waiter(strata::Condition* cond, std::string name) {
  auto ready = std::make_shared<Event>();
  Task<std::string> task = strata::create_task(condition_waiter(cond, ready), std::move(name));
  auto started = ready->wait();
  co_await started;
  REQUIRE_FALSE(task.done());
  co_return task;
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "Condition: a wait cancelled while waiting holds the lock again when "
    "CancelledError leaves it",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    strata::Condition cond;
    auto starting = start_condition_waiter(&cond, "waiter");
    Task<std::string> waiter = co_await starting;
    CHECK_FALSE(cond.locked());  // wait() released it
    auto taking = cond.acquire();
    LockGuard held = co_await taking;  // the waiter must re-acquire behind us
    waiter.cancel();
    auto step = next_iteration();
    co_await step;
    CHECK_FALSE(waiter.done());  // waiting for the lock, which we hold
    held.unlock();
    std::string outcome = co_await waiter;
    CHECK(outcome == "CancelledError, locked");
    CHECK_FALSE(cond.locked());  // its guard released it as it ended
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "Condition: a wait notified then cancelled in the same iteration passes "
    "the notification to the next waiter",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    strata::Condition cond;
    auto first = start_condition_waiter(&cond, "waiter 1");
    Task<std::string> w1 = co_await first;
    auto second = start_condition_waiter(&cond, "waiter 2");
    Task<std::string> w2 = co_await second;
    {
      auto taking = cond.acquire();
      LockGuard held = co_await taking;
      cond.notify(1);  // wakes w1...
      w1.cancel();     // ...which is cancelled before it resumes
    }
    std::string outcome1 = co_await w1;
    CHECK(outcome1 == "CancelledError, locked");
    std::string outcome2 = co_await w2;  // hangs if the notification was lost with w1
    CHECK(outcome2 == "ok, locked");
    CHECK_FALSE(cond.locked());
  };
  loop.run(body());
}

// ---- Barrier --------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "Barrier: a wait cancelled while waiting leaves the cycle; later parties pass",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    strata::Barrier barrier(2);
    auto starting = suspended_in([&barrier] { return barrier.wait(); }, "party");
    Task<std::string> party = co_await starting;
    CHECK(barrier.n_waiting() == 1);
    party.cancel();
    std::string outcome = co_await party;
    CHECK(outcome == "CancelledError");
    CHECK(barrier.n_waiting() == 0);
    CHECK_FALSE(barrier.broken());
    // A full cycle of two new parties still passes.
    auto other = suspended_in([&barrier] { return barrier.wait(); }, "party 2");
    Task<std::string> p2 = co_await other;
    auto passing = barrier.wait();
    std::int64_t index = co_await passing;
    CHECK(index == 1);
    std::string outcome2 = co_await p2;
    CHECK(outcome2 == "ok 0");
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "Barrier: a wait cancelled in the iteration the barrier passes throws "
    "CancelledError; the pass stands and the barrier is reusable",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    strata::Barrier barrier(2);
    auto starting = suspended_in([&barrier] { return barrier.wait(); }, "party");
    Task<std::string> party = co_await starting;
    auto passing = barrier.wait();  // the last party: passes without suspending...
    std::int64_t index = co_await passing;
    CHECK(index == 1);
    party.cancel();  // ...and the woken party is cancelled before it resumes
    std::string outcome = co_await party;
    CHECK(outcome == "CancelledError");
    CHECK(barrier.n_waiting() == 0);
    CHECK_FALSE(barrier.broken());
    auto other = suspended_in([&barrier] { return barrier.wait(); }, "party 2");
    Task<std::string> p2 = co_await other;
    auto again = barrier.wait();
    std::int64_t index2 = co_await again;
    CHECK(index2 == 1);
    std::string outcome2 = co_await p2;
    CHECK(outcome2 == "ok 0");
  };
  loop.run(body());
}

// ---- sleep ----------------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("sleep: a cancelled sleep ends at once, long before its delay",
                      "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto starting = suspended_in([] { return strata::sleep(std::chrono::hours(1)); }, "sleeper");
    Task<std::string> sleeper = co_await starting;
    sleeper.cancel();
    std::string outcome = co_await sleeper;  // within the test's deadline, not in an hour
    CHECK(outcome == "CancelledError");
  };
  loop.run(body(), 5s);
}

// ---- Future, Task ---------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "Future: a task cancelled while awaiting a Future cancels it; a Future done "
    "before the task resumes keeps its result",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Future<int> pending(strata::get_running_loop());
    auto first = suspended_in([pending] { return pending; }, "awaiter 1");
    Task<std::string> a1 = co_await first;
    a1.cancel();
    std::string outcome1 = co_await a1;
    CHECK(outcome1 == "CancelledError");
    CHECK(pending.cancelled());  // the cancel reached the Future (asyncio)

    Future<int> racing(strata::get_running_loop());
    auto second = suspended_in([racing] { return racing; }, "awaiter 2");
    Task<std::string> a2 = co_await second;
    racing.set_result(4);  // wakes a2...
    a2.cancel();           // ...which is cancelled before it resumes
    std::string outcome2 = co_await a2;
    CHECK(outcome2 == "CancelledError");
    REQUIRE_FALSE(racing.cancelled());
    CHECK(racing.result() == 4);  // the value stays in the Future for its other holders
  };
  loop.run(body());
}

namespace {
Coro<int> value_when_set(std::shared_ptr<Event> go, int value) {
  auto waiting = go->wait();
  co_await waiting;
  co_return value;
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "Task: a task cancelled while awaiting a Task cancels it; a Task done "
    "before the awaiter resumes keeps its result",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto go = std::make_shared<Event>();
    Task<int> inner = strata::create_task(value_when_set(go, 1), "inner 1");
    auto first = suspended_in([inner] { return Future<int>(inner); }, "outer 1");
    Task<std::string> o1 = co_await first;
    o1.cancel();
    std::string outcome1 = co_await o1;
    CHECK(outcome1 == "CancelledError");
    CHECK(inner.cancelled());

    auto go2 = std::make_shared<Event>();
    Task<int> inner2 = strata::create_task(value_when_set(go2, 2), "inner 2");
    Task<std::string> o2;
    // Registered before o2 awaits inner2, this runs when inner2 is done and before o2 resumes.
    inner2.add_done_callback([&o2](Future<int>&) { o2.cancel(); });
    auto second = suspended_in([inner2] { return Future<int>(inner2); }, "outer 2");
    o2 = co_await second;
    go2->set();
    std::string outcome2 = co_await o2;
    CHECK(outcome2 == "CancelledError");
    REQUIRE_FALSE(inner2.cancelled());
    CHECK(inner2.result() == 2);
  };
  loop.run(body());
}

// ---- wait, gather, shield -------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("wait: a cancelled wait() leaves the futures untouched and pending",
                      "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Future<int> a(strata::get_running_loop());
    Future<int> b(strata::get_running_loop());
    auto starting = suspended_in(
        [a, b] {
          return strata::wait(std::vector<Future<int>>{a, b});
        },
        "waiter");
    Task<std::string> waiter = co_await starting;
    waiter.cancel();
    std::string outcome = co_await waiter;
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(a.done());
    CHECK_FALSE(b.done());
    a.set_result(1);
    b.set_result(2);
    CHECK(a.result() + b.result() == 3);
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "gather: cancelling its awaiter cancels the children not done; a child done "
    "already keeps its result in its Task",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto now = std::make_shared<Event>();
    now->set();
    auto never = std::make_shared<Event>();
    Task<int> done_child = strata::create_task(value_when_set(now, 1), "done child");
    Task<int> pending_child = strata::create_task(value_when_set(never, 2), "pending child");
    auto starting = suspended_in(
        [done_child, pending_child] { return strata::gather(done_child, pending_child); },
        "gatherer");
    Task<std::string> gatherer = co_await starting;
    auto step = next_iteration();
    co_await step;
    REQUIRE(done_child.done());
    gatherer.cancel();
    std::string outcome = co_await gatherer;
    CHECK(outcome == "CancelledError");
    CHECK(pending_child.cancelled());
    CHECK(done_child.result() == 1);  // lost to the gatherer, kept by the Task
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "shield: cancelling its awaiter leaves the shielded task running; its "
    "result stays in its Task",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto go = std::make_shared<Event>();
    Task<int> inner = strata::create_task(value_when_set(go, 5), "shielded");
    auto starting = suspended_in([inner] { return strata::shield(inner); }, "awaiter");
    Task<std::string> awaiter = co_await starting;
    awaiter.cancel();
    std::string outcome = co_await awaiter;
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(inner.done());
    go->set();
    int value = co_await inner;
    CHECK(value == 5);
  };
  loop.run(body());
}

// ---- timeout, wait_for: as cancel-safe as what they await -----------------------------------

STRATA_LOOP_TEST_CASE(
    "timeout_at: a queue get whose item arrives in the iteration the deadline "
    "passes times out and leaves the item in the queue",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    strata::EventLoop& l = strata::get_running_loop();
    Queue<int> q;
    const strata::TimePoint when = l.time() + 20ms;
    // Due at the same time, the put runs first (timers due together run in the order they
    // were made): it wakes the getter, then the deadline cancels it before it resumes.
    strata::TimerHandle put = l.call_at(when, [&q] { q.put_nowait(9); });
    auto starting =
        suspended_in([&q, when] { return strata::timeout_at(when, q.get()); }, "getter");
    Task<std::string> getter = co_await starting;
    std::string outcome = co_await getter;
    CHECK(outcome == "TimeoutError");
    REQUIRE(q.qsize() == 1);  // the item stays for the next get
    CHECK(q.get_nowait() == 9);
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE(
    "wait_for: cancelling its awaiter cancels what it awaits: a queue get "
    "takes nothing, an awaited Task ends cancelled",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Queue<int> q;
    auto first =
        suspended_in([&q] { return strata::wait_for(q.get(), std::chrono::hours(1)); }, "getter");
    Task<std::string> getter = co_await first;
    getter.cancel();
    std::string outcome = co_await getter;
    CHECK(outcome == "CancelledError");  // not TimeoutError: the cancel came from outside
    q.put_nowait(1);
    CHECK(q.qsize() == 1);

    auto never = std::make_shared<Event>();
    Task<int> inner = strata::create_task(value_when_set(never, 1), "inner");
    auto second = suspended_in(
        [inner] { return strata::wait_for(Future<int>(inner), std::chrono::hours(1)); }, "awaiter");
    Task<std::string> awaiter = co_await second;
    awaiter.cancel();
    std::string outcome2 = co_await awaiter;
    CHECK(outcome2 == "CancelledError");
    CHECK(inner.cancelled());
  };
  loop.run(body());
}

// ---- as_completed, AsyncGenerator -----------------------------------------------------------

STRATA_LOOP_TEST_CASE("as_completed: a cancelled next() ends the iteration and cancels no future",
                      "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    Future<int> a(strata::get_running_loop());
    Future<int> b(strata::get_running_loop());
    auto gen = strata::as_completed(std::vector<Future<int>>{a, b});
    auto starting = suspended_in([&gen] { return gen.next(); }, "consumer");
    Task<std::string> consumer = co_await starting;
    consumer.cancel();
    std::string outcome = co_await consumer;
    CHECK(outcome == "CancelledError");
    CHECK(gen.done());
    auto after = gen.next();
    std::optional<Future<int>> next = co_await after;
    CHECK_FALSE(next.has_value());  // the iteration is over...
    CHECK_FALSE(a.done());          // ...but the futures run on
    CHECK_FALSE(b.done());
    a.set_result(1);
    b.set_result(2);
  };
  loop.run(body());
}

namespace {
strata::AsyncGenerator<int> one_then_wait(std::shared_ptr<Event> never,
                                          std::shared_ptr<std::string> log) {
  co_yield 1;
  try {
    auto waiting = never->wait();
    co_await waiting;
  } catch (const strata::CancelledError&) {
    *log = "body cleaned up";
    throw;
  }
  co_yield 2;
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "AsyncGenerator: a cancelled next() cancels the body's await; the body "
    "cleans up and the generator ends",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto never = std::make_shared<Event>();
    auto log = std::make_shared<std::string>();
    auto gen = one_then_wait(never, log);
    auto first = gen.next();
    std::optional<int> one = co_await first;
    CHECK(one == 1);
    auto starting = suspended_in([&gen] { return gen.next(); }, "consumer");
    Task<std::string> consumer = co_await starting;
    consumer.cancel();
    std::string outcome = co_await consumer;
    CHECK(outcome == "CancelledError");
    CHECK(*log == "body cleaned up");
    CHECK(gen.done());
    auto after = gen.next();
    std::optional<int> none = co_await after;
    CHECK_FALSE(none.has_value());
  };
  loop.run(body());
}

// ---- task_group -----------------------------------------------------------------------------

namespace {
/// A child of a task group: counts itself started (setting @p all_started at @p of), waits
/// for ever, and counts its clean-up when cancelled.
Coro<void> group_child(std::shared_ptr<int> started, int of, std::shared_ptr<Event> all_started,
                       std::shared_ptr<int> cleaned) {
  if (++*started == of) all_started->set();
  try {
    Event never;
    auto waiting = never.wait();
    co_await waiting;
  } catch (const strata::CancelledError&) {
    ++*cleaned;
    throw;
  }
}

/// Runs a task group of two children; reports how it ended and how many children had
/// cleaned up by then.
Coro<std::string> run_group(std::shared_ptr<Event> all_started, std::shared_ptr<int> cleaned) {
  auto started = std::make_shared<int>(0);
  auto group_body = [started, all_started, cleaned](strata::TaskGroup& tg) -> Coro<void> {
    tg.create_task(group_child(started, 2, all_started, cleaned));
    tg.create_task(group_child(started, 2, all_started, cleaned));
    co_return;
  };
  std::string out = "ok";
  try {
    auto group = strata::task_group(std::move(group_body));
    co_await group;
  } catch (...) {
    out = name_of(std::current_exception());
  }
  co_return out + " after " + std::to_string(*cleaned) + " clean-ups";
}
}  // namespace

STRATA_LOOP_TEST_CASE(
    "task_group: cancelling its awaiter cancels every child and waits for them "
    "before CancelledError leaves",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    auto all_started = std::make_shared<Event>();
    auto cleaned = std::make_shared<int>(0);
    Task<std::string> owner = strata::create_task(run_group(all_started, cleaned), "owner");
    auto started = all_started->wait();
    co_await started;
    owner.cancel();
    std::string outcome = co_await owner;
    CHECK(outcome == "CancelledError after 2 clean-ups");
  };
  loop.run(body());
}

// ---- run_in_executor, to_thread -------------------------------------------------------------

STRATA_LOOP_TEST_CASE(
    "to_thread: a cancelled await lets fn run to its end; its result is "
    "dropped without report",
    "[core][cancel]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    strata::EventLoop& l = strata::get_running_loop();
    auto go = std::make_shared<std::promise<void>>();
    std::shared_future<void> gate = go->get_future().share();
    auto finished = std::make_shared<std::atomic<bool>>(false);
    auto fn_done = std::make_shared<Event>();
    auto fn = [gate, finished, fn_done, &l] {
      gate.wait();
      finished->store(true);
      l.call_soon_threadsafe([fn_done] { fn_done->set(); });
      return 42;
    };
    auto starting = suspended_in([fn] { return strata::to_thread(fn); }, "awaiter");
    Task<std::string> awaiter = co_await starting;
    awaiter.cancel();
    std::string outcome = co_await awaiter;  // at once, while fn is still blocked
    CHECK(outcome == "CancelledError");
    CHECK_FALSE(finished->load());
    go->set_value();
    auto ran = fn_done->wait();
    co_await ran;
    CHECK(finished->load());
    auto step = next_iteration();
    co_await step;
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}
