// StreamReader::read_into(), fed by hand, on every backend: a span or a reused string filled
// from the buffer or straight from incoming data, the order of bytes around a read that waits,
// EOF and the connection's error, one waiter at a time, and cancellation (nothing consumed:
// bytes already copied into the caller's buffer go back to the reader).
#include <strata/streams/stream_reader.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
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

/// Yields one loop iteration (an ordering step, not a timed wait).
Coro<void> next_iteration() { co_await strata::sleep(0s); }

std::string_view text(std::span<const char> bytes, std::size_t n) {
  return {bytes.data(), n};
}

/// Which buffer a test reads into.
enum class Into { chars, bytes, string };
const char* to_string(Into into) {
  return into == Into::chars ? "span<char>" : into == Into::bytes ? "span<std::byte>" : "string";
}

/// A caller's buffer of @p size bytes, read into in each of the three ways.
class Buffer {
 public:
  Buffer(Into into, std::size_t size) : into_(into), fixed_(size), size_(size) {}
  strata::detail::ReadIntoOp read(StreamReader& reader) {
    switch (into_) {
      case Into::chars:
        return reader.read_into(std::span<char>(fixed_));
      case Into::bytes:
        return reader.read_into(std::as_writable_bytes(std::span<char>(fixed_)));
      case Into::string:
        break;
    }
    return reader.read_into(string_, size_);
  }
  /// The first @p n bytes read.
  std::string_view got(std::size_t n) const {
    return into_ == Into::string ? std::string_view(string_).substr(0, n) : text(fixed_, n);
  }
  const std::string& string() const { return string_; }

 private:
  Into into_;
  std::vector<char> fixed_;
  std::string string_;
  std::size_t size_;
};

}  // namespace

STRATA_LOOP_TEST_CASE("StreamReader: read_into takes what is buffered, up to the buffer's size",
                      "[streams][reader][read_into]") {
  const Into into = GENERATE(Into::chars, Into::bytes, Into::string);
  INFO("into a " << to_string(into));
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    bool ran = false;
    loop->call_soon([&ran] { ran = true; });  // runs at the first suspension of this task
    Buffer buffer(into, 4);
    reader.feed_data("abcdef");
    auto a = buffer.read(reader);
    std::size_t n1 = co_await a;
    CHECK(n1 == 4);
    CHECK(buffer.got(n1) == "abcd");
    CHECK(reader.buffered() == 2);
    auto b = buffer.read(reader);
    std::size_t n2 = co_await b;
    CHECK(n2 == 2);
    CHECK(buffer.got(n2) == "ef");
    if (into == Into::string) CHECK(buffer.string() == "ef");  // replaced, not appended
    CHECK(reader.buffered() == 0);
    CHECK_FALSE(ran);  // both completed without suspending
    Buffer empty(into, 0);
    reader.feed_data("g");
    auto c = empty.read(reader);
    std::size_t n3 = co_await c;
    CHECK(n3 == 0);  // an empty buffer reads nothing, at once
    CHECK(reader.buffered() == 1);
    reader.feed_eof();
    auto d = buffer.read(reader);
    std::size_t n4 = co_await d;
    CHECK(n4 == 1);
    CHECK(buffer.got(n4) == "g");
    auto e = buffer.read(reader);
    std::size_t n5 = co_await e;
    CHECK(n5 == 0);  // EOF
    CHECK(reader.at_eof());
    CHECK_FALSE(ran);
    auto step = next_iteration();
    co_await step;
    CHECK(ran);  // the probe itself works
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a waiting read_into gets the next data; the rest stays, in order",
                      "[streams][reader][read_into]") {
  const Into into = GENERATE(Into::chars, Into::bytes, Into::string);
  INFO("into a " << to_string(into));
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    Buffer buffer(into, 3);
    auto starting = suspended_in([&] { return buffer.read(reader); }, "reader");
    Task<std::string> task = co_await starting;
    reader.feed_data("");  // no bytes: no wake-up ("" would mean EOF)
    auto step = next_iteration();
    co_await step;
    CHECK_FALSE(task.done());
    reader.feed_data("ab");    // straight into the buffer: the read is complete...
    reader.feed_data("cdef");  // ...and may take one more byte; the rest waits in the reader
    reader.feed_data("gh");
    std::string outcome = co_await task;
    CHECK(outcome == "ok 3");
    CHECK(buffer.got(3) == "abc");
    CHECK(reader.buffered() == 5);
    auto rest = reader.read(-1);
    reader.feed_eof();
    std::string tail = co_await rest;
    CHECK(tail == "defgh");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: read_into of a string reuses its capacity",
                      "[streams][reader][read_into]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    std::string buffer;
    buffer.reserve(256);
    const char* storage = buffer.data();
    for (int i = 0; i < 20; ++i) {
      const std::string message = "message " + std::to_string(i);
      auto starting = suspended_in([&] { return reader.read_into(buffer, 100); }, "reader");
      Task<std::string> task = co_await starting;
      reader.feed_data(message);
      std::string outcome = co_await task;
      CHECK(outcome == "ok " + std::to_string(message.size()));
      CHECK(buffer == message);
      CHECK(buffer.data() == storage);  // no allocation: the same storage every time
    }
    reader.feed_data("xyz");
    auto zero = reader.read_into(buffer, 0);
    CHECK(buffer.empty());  // replaced at the call
    std::size_t n = co_await zero;
    CHECK(n == 0);
    CHECK(reader.buffered() == 3);
    auto any = reader.read_into(buffer, static_cast<std::size_t>(-1));  // no bound: all there is
    std::size_t all = co_await any;
    CHECK(all == 3);
    CHECK(buffer == "xyz");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: read_into throws the connection's error, with data buffered or not",
                      "[streams][reader][read_into]") {
  const Into into = GENERATE(Into::chars, Into::bytes, Into::string);
  INFO("into a " << to_string(into));
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    Buffer buffer(into, 8);
    auto starting = suspended_in([&] { return buffer.read(reader); }, "reader");
    Task<std::string> task = co_await starting;
    reader.feed_data("abc");  // woken with the bytes in its buffer...
    reader.set_exception(std::make_exception_ptr(std::runtime_error("reset")));  // ...then this
    std::string outcome = co_await task;
    CHECK(outcome == "exception: reset");
    CHECK(reader.buffered() == 3);  // the bytes went back: an error loses no data
    CHECK(reader.has_exception());
    auto again = buffer.read(reader);
    bool threw = false;
    try {
      co_await again;
    } catch (const std::runtime_error& e) {
      threw = std::string_view(e.what()) == "reset";
    }
    CHECK(threw);
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a second task's read_into while one waits throws; the first gets the data",
                      "[streams][reader][read_into]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    std::array<char, 8> first{};
    auto starting =
        suspended_in([&] { return reader.read_into(std::span<char>(first)); }, "first");
    Task<std::string> task = co_await starting;
    std::string second;
    bool refused = false;
    try {
      auto op = reader.read_into(second);
      co_await op;
    } catch (const InvalidStateError&) {
      refused = true;
    }
    CHECK(refused);
    reader.feed_data("data");
    std::string outcome = co_await task;
    CHECK(outcome == "ok 4");
    CHECK(text(first, 4) == "data");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a read_into cancelled while waiting, or once woken, consumes nothing",
                      "[streams][reader][read_into][cancel]") {
  const Into into = GENERATE(Into::chars, Into::bytes, Into::string);
  const bool woken = GENERATE(false, true);
  INFO("into a " << to_string(into) << (woken ? ", woken by data first" : ", while waiting"));
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    Buffer buffer(into, 4);
    auto starting = suspended_in([&] { return buffer.read(reader); }, "reader");
    Task<std::string> task = co_await starting;
    if (woken) reader.feed_data("abcdef");  // "abcd" copied into the buffer, "ef" buffered
    task.cancel();                          // before the read resumes
    std::string outcome = co_await task;
    CHECK(outcome == "CancelledError");
    if (into == Into::string) CHECK(buffer.string().empty());
    CHECK(reader.buffered() == (woken ? 6 : 0));
    reader.feed_data("gh");
    reader.feed_eof();
    auto rest = reader.read(-1);
    std::string got = co_await rest;
    CHECK(got == (woken ? "abcdefgh" : "gh"));
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a read_into under timeout() that times out consumes nothing",
                      "[streams][reader][read_into][cancel]") {
  TestLoop loop(TestType::kind);
  StreamReader reader;
  auto body = [&]() -> Coro<void> {
    std::string buffer;
    bool timed_out = false;
    try {
      auto op = strata::timeout(20ms, reader.read_into(buffer, 16));
      co_await op;
    } catch (const strata::TimeoutError&) {
      timed_out = true;
    }
    CHECK(timed_out);
    reader.feed_data("late");
    auto op = reader.read_into(buffer, 16);
    std::size_t n = co_await op;
    CHECK(n == 4);
    CHECK(buffer == "late");
  };
  loop.run(body(), 5s);
}

STRATA_LOOP_TEST_CASE("StreamReader: a task destroyed in a woken read_into gives the bytes back",
                      "[streams][reader][read_into]") {
  StreamReader reader;
  std::array<char, 4> buffer{};
  {
    // A loop closed with the reading task woken but not yet run: closing destroys the task,
    // and with it the read, whose bytes were already in the task's buffer.
    std::unique_ptr<strata::EventLoop> loop = strata::new_event_loop(TestType::kind);
    std::vector<std::string> errors;
    loop->set_exception_handler([&errors](strata::EventLoop&, const strata::ExceptionContext& c) {
      errors.push_back(c.message);
    });
    auto body = [&]() -> Coro<void> {
      auto starting =
          suspended_in([&] { return reader.read_into(std::span<char>(buffer)); }, "reader");
      Task<std::string> task = co_await starting;
      reader.feed_data("wxyz!");  // "wxyz" into the buffer, "!" buffered; the task is woken
      CHECK(reader.buffered() == 1);
      loop->stop();  // after this iteration: the woken task's step would run in the next
    };
    Task<void> main = loop->create_task(body(), "main");
    loop->run_forever();
    CHECK(main.done());
    loop->close();
    CHECK(errors == std::vector<std::string>{"Task was destroyed but it is pending!"});
  }
  CHECK(reader.buffered() == 5);
  TestLoop loop(TestType::kind);
  auto rest = [&]() -> Coro<void> {
    reader.feed_eof();
    auto all = reader.read(-1);
    std::string got = co_await all;
    CHECK(got == "wxyz!");
  };
  loop.run(rest(), 5s);
}
