#include <strata/transports/pipe.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"

using strata::Connection;
using strata::Coro;
using strata::Transport;
using strata::testing::first_mismatch;
using strata::testing::grammar_error;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::Record;
using strata::testing::RecordingBufferedProtocol;
using strata::testing::RecordingProtocol;
using strata::testing::TestLoop;

namespace {

constexpr auto npos = std::string_view::npos;

struct PipeFds {
  int read = -1;
  int write = -1;
};

PipeFds make_pipe() {
  int fds[2];
  strata::testing::check_syscall(::pipe2(fds, O_CLOEXEC), "pipe2");
  return {fds[0], fds[1]};
}

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

Coro<Transport*> read_pipe(Record& r, int fd, bool buffered = false) {
  if (buffered) {
    auto factory = [&r] { return std::make_unique<RecordingBufferedProtocol>(r, 4096); };
    auto op = strata::connect_read_pipe(factory, fd);
    Connection<RecordingBufferedProtocol> c = co_await op;
    co_return c.transport;
  }
  auto factory = [&r] { return std::make_unique<RecordingProtocol>(r); };
  auto op = strata::connect_read_pipe(factory, fd);
  Connection<RecordingProtocol> c = co_await op;
  co_return c.transport;
}

Coro<Transport*> write_pipe(Record& r, int fd) {
  auto factory = [&r] { return std::make_unique<RecordingProtocol>(r); };
  auto op = strata::connect_write_pipe(factory, fd);
  Connection<RecordingProtocol> c = co_await op;
  co_return c.transport;
}

bool sigpipe_pending() {
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  return sigismember(&pending, SIGPIPE) == 1;
}

}  // namespace

STRATA_LOOP_TEST_CASE("Pipe: 4 MiB from a write pipe to a read pipe, then write_eof ends both",
                      "[transports][pipe]") {
  for (bool buffered : {false, true}) {
    INFO("buffered reader: " << buffered);
    Record reader;
    Record writer;
    std::string data = pattern(4u << 20, 5);
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      PipeFds p = make_pipe();
      Transport* rt = co_await read_pipe(reader, p.read, buffered);
      Transport* wt = co_await write_pipe(writer, p.write);
      CHECK((::fcntl(p.read, F_GETFL) & O_NONBLOCK) != 0);
      CHECK((::fcntl(p.write, F_GETFL) & O_NONBLOCK) != 0);
      // What each end can do.
      CHECK(rt->get_extra_info_as<int>("pipe") == p.read);
      CHECK(wt->get_extra_info_as<int>("pipe") == p.write);
      CHECK_FALSE(rt->get_extra_info("socket").has_value());
      CHECK_FALSE(rt->can_write_eof());
      CHECK(wt->can_write_eof());
      CHECK_THROWS_AS(rt->write("x"), strata::InvalidStateError);
      CHECK_THROWS_AS(rt->write_eof(), strata::InvalidStateError);
      CHECK(rt->is_reading());
      CHECK_FALSE(wt->is_reading());
      wt->pause_reading();  // does nothing on a write pipe
      wt->resume_reading();
      CHECK_FALSE(wt->is_reading());
      wt->write(data);
      CHECK(wt->get_write_buffer_size() > 0);  // a pipe holds 64 KiB
      wt->write_eof();  // closes once the buffer is written
      CHECK(wt->is_closing());
      CHECK_THROWS_AS(wt->write("late"), strata::InvalidStateError);
      co_await writer.wait_lost();
      co_await reader.wait_lost();
      CHECK_FALSE(fd_is_open(p.read));
      CHECK_FALSE(fd_is_open(p.write));
    };
    loop.run(body());
    CHECK(reader.received.size() == data.size());
    CHECK(first_mismatch(reader.received, data) == npos);
    CHECK(reader.events == std::vector<std::string>{"made", "data", "eof", "lost"});
    CHECK(writer.events == std::vector<std::string>{"made", "pause", "resume", "lost"});
    CHECK(!reader.lost_ec);
    CHECK(!writer.lost_ec);
    CHECK(reader.alive == 0);
    CHECK(writer.alive == 0);
  }
}

STRATA_LOOP_TEST_CASE("Pipe: writing to a pipe whose reader closed reports broken_pipe without "
                      "SIGPIPE",
                      "[transports][pipe]") {
  struct sigaction before {};
  ::sigaction(SIGPIPE, nullptr, &before);
  REQUIRE(before.sa_handler == SIG_DFL);  // a SIGPIPE would end the test run
  Record writer;
  writer.on_made = [](Transport& t) { t.write("into the void"); };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    PipeFds p = make_pipe();
    ::close(p.read);
    co_await write_pipe(writer, p.write);
    co_await writer.wait_lost();
  };
  loop.run(body());
  CHECK(writer.lost_ec == std::errc::broken_pipe);
  CHECK(writer.events == std::vector<std::string>{"made", "lost"});
  struct sigaction after {};
  ::sigaction(SIGPIPE, nullptr, &after);
  CHECK(after.sa_handler == SIG_DFL);  // the disposition was not changed
  CHECK_FALSE(sigpipe_pending());      // and the signal raised was consumed
  sigset_t mask;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  CHECK(sigismember(&mask, SIGPIPE) == 0);  // nor left blocked
}

STRATA_LOOP_TEST_CASE("Pipe: the reader closing is noticed at once: broken_pipe with data "
                      "buffered, a clean end without",
                      "[transports][pipe]") {
  SECTION("data buffered") {
    Record writer;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      PipeFds p = make_pipe();
      Transport* wt = co_await write_pipe(writer, p.write);
      wt->write(pattern(1u << 20));
      REQUIRE(wt->get_write_buffer_size() > 0);
      co_await next_iteration();
      ::close(p.read);
      co_await writer.wait_lost();
    };
    loop.run(body());
    CHECK(writer.lost_ec == std::errc::broken_pipe);
    CHECK(grammar_error(writer.events) == "");
    CHECK_FALSE(sigpipe_pending());
  }
  SECTION("nothing buffered") {
    Record writer;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      PipeFds p = make_pipe();
      co_await write_pipe(writer, p.write);
      ::close(p.read);
      co_await writer.wait_lost();
    };
    loop.run(body());
    CHECK(!writer.lost_ec);
    CHECK(writer.events == std::vector<std::string>{"made", "lost"});
  }
}

STRATA_LOOP_TEST_CASE("Pipe: a read pipe ends at EOF whatever eof_received returns, and pauses",
                      "[transports][pipe]") {
  Record reader;
  reader.keep_open_on_eof = true;  // ignored: a read pipe cannot stay half-open
  Record probe;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    PipeFds p = make_pipe();
    PipeFds q = make_pipe();
    Transport* rt = co_await read_pipe(reader, p.read);
    co_await read_pipe(probe, q.read);
    rt->pause_reading();
    CHECK_FALSE(rt->is_reading());
    REQUIRE(::write(p.write, "abc", 3) == 3);
    REQUIRE(::write(q.write, "p", 1) == 1);
    co_await probe.wait_received(1);
    co_await next_iteration();
    CHECK(reader.received.empty());
    rt->resume_reading();
    co_await reader.wait_received(3);
    ::close(p.write);
    ::close(q.write);
    co_await reader.wait_lost();
    co_await probe.wait_lost();
  };
  loop.run(body());
  CHECK(reader.received == "abc");
  CHECK(reader.events == std::vector<std::string>{"made", "data", "eof", "lost"});
  CHECK(!reader.lost_ec);
}

STRATA_LOOP_TEST_CASE("Pipe: close on a read pipe ends it; the writer then sees a clean end",
                      "[transports][pipe]") {
  Record reader;
  Record writer;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    PipeFds p = make_pipe();
    Transport* rt = co_await read_pipe(reader, p.read);
    co_await write_pipe(writer, p.write);
    rt->close();
    CHECK(rt->is_closing());
    CHECK_FALSE(rt->is_reading());
    co_await reader.wait_lost();
    co_await writer.wait_lost();
  };
  loop.run(body());
  CHECK(reader.events == std::vector<std::string>{"made", "lost"});
  CHECK(writer.events == std::vector<std::string>{"made", "lost"});
  CHECK(!reader.lost_ec);
  CHECK(!writer.lost_ec);
}

STRATA_LOOP_TEST_CASE("Pipe: refuses a regular file, leaving the descriptor open and blocking",
                      "[transports][pipe]") {
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    int file = ::memfd_create("strata-test", MFD_CLOEXEC);
    REQUIRE(file >= 0);
    auto factory = [&r] { return std::make_unique<RecordingProtocol>(r); };
    {
      auto op = strata::connect_read_pipe(factory, file);
      CHECK_THROWS_AS(co_await op, std::invalid_argument);
    }
    {
      auto op = strata::connect_write_pipe(factory, file);
      CHECK_THROWS_AS(co_await op, std::invalid_argument);
    }
    CHECK(fd_is_open(file));
    CHECK((::fcntl(file, F_GETFL) & O_NONBLOCK) == 0);
    ::close(file);
    {
      auto op = strata::connect_read_pipe(factory, file);  // closed now
      CHECK_THROWS_AS(co_await op, std::system_error);
    }
  };
  loop.run(body());
  CHECK(r.alive == 0);
  CHECK(r.events.empty());
}

STRATA_LOOP_TEST_CASE("Pipe: a socket works as a write pipe and as a read pipe",
                      "[transports][pipe]") {
  Record reader;
  Record writer;
  std::string data = pattern(1u << 20, 11);
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    strata::testing::FdPair p = strata::testing::unix_pair();
    co_await read_pipe(reader, p.a);
    Transport* wt = co_await write_pipe(writer, p.b);
    wt->write(data);
    wt->close();
    co_await reader.wait_lost();
    co_await writer.wait_lost();
  };
  loop.run(body());
  CHECK(first_mismatch(reader.received, data) == npos);
  CHECK(!writer.lost_ec);
  CHECK(grammar_error(reader.events) == "");
  CHECK(grammar_error(writer.events) == "");
}

STRATA_LOOP_TEST_CASE("Pipe: closing the loop ends pipe transports with loop_closed and closes "
                      "their descriptors",
                      "[transports][pipe]") {
  const int fds_before = strata::testing::count_open_fds();
  Record reader;
  Record writer;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      PipeFds p = make_pipe();
      co_await read_pipe(reader, p.read);
      Transport* wt = co_await write_pipe(writer, p.write);
      wt->write("some");
      co_await reader.wait_received(4);
    };
    loop.run(body());
  }
  CHECK(reader.lost_ec == strata::errc::loop_closed);
  CHECK(writer.lost_ec == strata::errc::loop_closed);
  CHECK(reader.events == std::vector<std::string>{"made", "data", "lost"});
  CHECK(writer.events == std::vector<std::string>{"made", "lost"});
  CHECK(reader.alive == 0);
  CHECK(writer.alive == 0);
  CHECK(strata::testing::count_open_fds() == fds_before);
}
