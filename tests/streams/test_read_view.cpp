// StreamReader::read_view(), fed by hand, on every backend: a view of what is buffered or of
// the next data, no more than asked or than max_view; valid until the next read starts, even
// while more data arrives or another task tries to read; EOF, the connection's error, and
// cancellation (nothing consumed). Over real connections: tests/streams/test_streams.cpp.
#include <strata/streams/stream_reader.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>

#include "cancel_test.hpp"
#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::InvalidStateError;
using strata::StreamReader;
using strata::Task;
using strata::testing::suspended_in;
using strata::testing::TestLoop;

namespace {

constexpr std::size_t KiB = 1024;

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

/// @p n bytes of a pattern that differs from one @p seed to the next.
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + seed * 13) % 26);
  return s;
}

/// read_view(@p n) in a task, copying what it returns (or the exception's name) when it
/// returns, and keeping the view to look at later.
struct ViewReader {
  std::string copy;
  std::string_view view;
  std::string error;
};
Coro<void> read_view_into(StreamReader reader, std::size_t n, ViewReader* out) {
  try {
    auto op = reader.read_view(n);
    out->view = co_await op;
    out->copy = std::string(out->view);
  } catch (const strata::CancelledError&) {
    out->error = "CancelledError";
    throw;
  } catch (const std::exception& e) {
    out->error = e.what();
  }
}

}  // namespace

STRATA_LOOP_TEST_CASE("StreamReader: read_view views what is buffered, up to n and max_view",
                      "[streams][reader][read_view]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    bool ran = false;
    loop->call_soon([&ran] { ran = true; });  // runs at the first suspension of this task
    reader.feed_data("abcdef");
    auto a = reader.read_view(4);
    std::string_view v1 = co_await a;
    CHECK(v1 == "abcd");
    CHECK(reader.buffered() == 2);
    auto b = reader.read_view();
    std::string_view v2 = co_await b;
    CHECK(v2 == "ef");
    CHECK(reader.buffered() == 0);
    reader.feed_data("g");
    auto c = reader.read_view(0);
    std::string_view v3 = co_await c;
    CHECK(v3.empty());  // n = 0 reads nothing, at once
    CHECK(reader.buffered() == 1);
    // More than max_view buffered: one view holds max_view, the next the rest.
    const std::string big = pattern(StreamReader::max_view + 5 * KiB, 1);
    reader.feed_data(big);
    auto d = reader.read_view(1 << 20);
    std::string_view v4 = co_await d;
    CHECK(v4.size() == StreamReader::max_view);
    CHECK(v4 == "g" + big.substr(0, StreamReader::max_view - 1));
    auto e = reader.read_view(1 << 20);
    std::string_view v5 = co_await e;
    CHECK(v5 == std::string_view(big).substr(StreamReader::max_view - 1));
    reader.feed_eof();
    auto f = reader.read_view();
    std::string_view v6 = co_await f;
    CHECK(v6.empty());  // EOF
    CHECK(reader.at_eof());
    CHECK_FALSE(ran);  // all completed without suspending
    auto step = next_iteration();
    co_await step;
    CHECK(ran);
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a waiting read_view gets the next data; the rest stays, in order",
                      "[streams][reader][read_view]") {
  // Fed 1 byte, a block's worth, and more than any block: the view's memory grows to fit.
  const std::size_t size = GENERATE(std::size_t{1}, 4 * KiB, 20 * KiB, 100 * KiB);
  INFO("fed " << size << " bytes");
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    ViewReader got;
    Task<void> task = loop->create_task(read_view_into(reader, StreamReader::max_view, &got));
    auto step = next_iteration();
    co_await step;
    REQUIRE_FALSE(task.done());
    const std::string data = pattern(size, 2);
    reader.feed_data(data);
    reader.feed_data("tail");  // in the same iteration, after the read was woken
    co_await task;
    // At least what the first feed brought (up to max_view); maybe "tail" too, as read(n) takes
    // what is there when it resumes, where the view's block has room for it.
    const std::string all = data + "tail";
    CHECK(got.copy.size() >= std::min(size, StreamReader::max_view));
    CHECK(got.copy.size() <= StreamReader::max_view);
    CHECK(got.copy == all.substr(0, got.copy.size()));
    reader.feed_eof();
    auto rest = reader.read(-1);
    std::string after = co_await rest;
    CHECK(got.copy + after == all);
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a view stays valid until the next read starts",
                      "[streams][reader][read_view]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  StreamReader other;
  auto body = [&]() -> Coro<void> {
    // Received while the read waited, and from the buffer.
    for (const bool waited : {true, false}) {
      INFO((waited ? "the read waited" : "from the buffer"));
      const std::string first = pattern(3 * KiB, 3);
      ViewReader got;
      if (waited) {
        Task<void> task = loop->create_task(read_view_into(reader, 64 * KiB, &got));
        auto step = next_iteration();
        co_await step;
        reader.feed_data(first);
        co_await task;
      } else {
        reader.feed_data(first);
        auto op = reader.read_view();
        got.view = co_await op;
      }
      CHECK(got.view == first);
      // More data, large enough to move any buffer, and another reader's views of their own:
      // this view's bytes do not change.
      reader.feed_data(pattern(200 * KiB, 4));
      other.feed_data(pattern(8 * KiB, 5));
      auto theirs = other.read_view();
      std::string_view other_view = co_await theirs;
      CHECK(other_view == pattern(8 * KiB, 5));
      CHECK(got.view == first);
      // A read created but not awaited is not a read that started.
      auto unstarted = reader.read(10);
      CHECK(got.view == first);
      // The next read gets what came after, in order.
      auto next = reader.readexactly(200 * KiB);
      std::string rest = co_await next;
      CHECK(rest == pattern(200 * KiB, 4));
    }
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a second task's read while a read_view waits throws; the view is whole",
                      "[streams][reader][read_view]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  StreamReader other;
  auto body = [&]() -> Coro<void> {
    ViewReader got;
    Task<void> waiting = loop->create_task(read_view_into(reader, 64 * KiB, &got));
    auto step = next_iteration();
    co_await step;
    const std::string data = pattern(2 * KiB, 6);
    reader.feed_data(data);  // the read is woken, not yet resumed
    // Another task's reads of every kind are refused, and leave the woken read's bytes alone.
    int refused = 0;
    try {
      auto line = reader.readline();
      co_await line;
    } catch (const InvalidStateError&) {
      ++refused;
    }
    try {
      auto view = reader.read_view();
      co_await view;
    } catch (const InvalidStateError&) {
      ++refused;
    }
    CHECK(refused == 2);
    // A view block let go of would be the next one another reader takes, and overwritten.
    other.feed_data(pattern(2 * KiB, 7));
    auto theirs = other.read_view();
    std::string_view other_view = co_await theirs;
    CHECK(other_view == pattern(2 * KiB, 7));
    co_await waiting;
    CHECK(got.error.empty());
    CHECK(got.copy == data);
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: read_view throws the connection's error, with data buffered or not",
                      "[streams][reader][read_view]") {
  const bool buffered = GENERATE(false, true);
  INFO((buffered ? "data buffered" : "nothing buffered, the read waits"));
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    ViewReader got;
    if (buffered) reader.feed_data("kept");
    Task<void> task = loop->create_task(read_view_into(reader, 16, &got));
    if (!buffered) {
      auto step = next_iteration();
      co_await step;
      CHECK_FALSE(task.done());
    }
    reader.set_exception(std::make_exception_ptr(std::runtime_error("connection reset")));
    co_await task;
    CHECK(got.error == "connection reset");
    CHECK(reader.buffered() == (buffered ? 4 : 0));  // an error loses no data
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a read_view cancelled while waiting, or once woken, consumes nothing",
                      "[streams][reader][read_view][cancel]") {
  const bool woken = GENERATE(false, true);
  INFO((woken ? "woken by data first" : "while waiting"));
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    auto starting = suspended_in([&] { return reader.read_view(4); }, "reader");
    Task<std::string> task = co_await starting;
    if (woken) reader.feed_data("abcdef");  // "abcd" into the view's block, "ef" buffered
    task.cancel();                          // before the read resumes
    std::string outcome = co_await task;
    CHECK(outcome == "CancelledError");
    CHECK(reader.buffered() == (woken ? 6 : 0));
    reader.feed_data("gh");
    auto next = reader.read_view();
    std::string_view got = co_await next;
    CHECK(got == (woken ? "abcdefgh" : "gh"));
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a read_view under timeout() that times out consumes nothing",
                      "[streams][reader][read_view][cancel]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    bool timed_out = false;
    try {
      auto op = strata::timeout(20ms, reader.read_view(16));
      co_await op;
    } catch (const strata::TimeoutError&) {
      timed_out = true;
    }
    CHECK(timed_out);
    reader.feed_data("late");
    auto op = strata::timeout(5s, reader.read_view(16));
    std::string_view got = co_await op;
    CHECK(got == "late");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: read_view between reads of other kinds keeps the order",
                      "[streams][reader][read_view]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    reader.feed_data("line one\nline two\n0123456789rest");
    auto line = reader.readline();
    std::string l1 = co_await line;
    CHECK(l1 == "line one\n");
    auto view = reader.read_view(5);
    std::string_view v = co_await view;
    CHECK(v == "line ");
    auto until = reader.readuntil("\n");
    std::string l2 = co_await until;
    CHECK(l2 == "two\n");
    std::array<char, 4> span{};
    auto into = reader.read_into(std::span<char>(span));
    std::size_t n = co_await into;
    CHECK(std::string_view(span.data(), n) == "0123");
    auto view2 = reader.read_view(6);
    std::string_view v2 = co_await view2;
    CHECK(v2 == "456789");
    reader.feed_eof();
    auto all = reader.read(-1);
    std::string tail = co_await all;
    CHECK(tail == "rest");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a reader that outlives its thread's view block cache frees its block",
                      "[streams][reader][read_view]") {
  // A thread_local reader made before the thread's cache of view blocks is destroyed after it:
  // its block must not go into the destroyed cache (AddressSanitizer's leak check sees it).
  bool read_ok = false;
  std::thread worker([&read_ok] {
    thread_local std::optional<StreamReader> kept;
    kept.emplace();
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      StreamReader& reader = *kept;
      reader.feed_data("abcdef");
      auto a = reader.read_view(2);
      std::string_view v1 = co_await a;
      const bool first = v1 == "ab";  // (v1 is gone with the next read)
      auto b = reader.read(2);        // gives the block to the cache
      std::string s = co_await b;
      auto c = reader.read_view(2);  // takes it again, and keeps it
      std::string_view v2 = co_await c;
      read_ok = first && s == "cd" && v2 == "ef";
    };
    loop.run(body(), 5s);
  });
  worker.join();
  CHECK(read_ok);
}
