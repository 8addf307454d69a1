// sendfile() over TCP and Unix sockets (sendfile(2)), TLS and pipes (the fallback through the
// transport's buffer) and a transport of the test's own (the polling fallback), on every
// backend: byte order around the file, offsets and counts, the guard against writes, flow
// control, connection loss, close(), cancellation and bad descriptors.
#include <strata/transports/sendfile.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <any>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/task.hpp>
#include <strata/transports/pipe.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/tcp.hpp>

#include "loop_test.hpp"
#include "net_test_support.hpp"
#include "stream_test_support.hpp"
#include "tls_test_support.hpp"

using strata::ConnectOptions;
using strata::Connection;
using strata::Coro;
using strata::InvalidStateError;
using strata::Server;
using strata::ServerOptions;
using strata::SslOptions;
using strata::Task;
using strata::Transport;
using strata::testing::Accepted;
using strata::testing::check_syscall;
using strata::testing::connect_record;
using strata::testing::describe_failure;
using strata::testing::exception_of;
using strata::testing::Failure;
using strata::testing::FdPair;
using strata::testing::first_mismatch;
using strata::testing::grammar_error;
using strata::testing::join;
using strata::testing::next_iteration;
using strata::testing::PairKind;
using strata::testing::pattern;
using strata::testing::Record;
using strata::testing::recorder;
using strata::testing::RecordingProtocol;
using strata::testing::tcp_pair;
using strata::testing::test_client_context;
using strata::testing::test_server_context;
using strata::testing::TestLoop;
using strata::testing::unix_pair;

namespace {

constexpr std::size_t npos = std::string_view::npos;
constexpr std::size_t mib = 1024 * 1024;

/// A temporary regular file (mkstemp under $TMPDIR or /tmp) holding @p content, open for
/// reading and writing; closed and removed on destruction.
class TempFile {
 public:
  explicit TempFile(std::string content) : content_(std::move(content)) {
    const char* base = std::getenv("TMPDIR");
    path_ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
            "/strata-sendfile-XXXXXX";
    fd_ = ::mkstemp(path_.data());
    check_syscall(fd_, "mkstemp");
    std::size_t done = 0;
    while (done < content_.size()) {
      const ssize_t n = ::write(fd_, content_.data() + done, content_.size() - done);
      check_syscall(static_cast<int>(n), "write");
      done += static_cast<std::size_t>(n);
    }
  }
  ~TempFile() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const noexcept { return fd_; }
  const std::string& content() const noexcept { return content_; }
  std::uint64_t size() const noexcept { return content_.size(); }
  const std::string& path() const noexcept { return path_; }
  /// The descriptor's own file offset (which sendfile() must leave alone).
  off_t position() const { return ::lseek(fd_, 0, SEEK_CUR); }

 private:
  std::string content_;
  std::string path_;
  int fd_ = -1;
};

/// A connected pair of @p kind whose kernel buffers are about @p size bytes on both sides, so
/// that a file of a few MiB cannot pass without the receiver reading.
FdPair pair_with_buffers(PairKind kind, int size) {
  FdPair p = kind == PairKind::tcp ? tcp_pair(size) : unix_pair();
  for (int fd : {p.a, p.b}) {
    check_syscall(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size), "sndbuf");
    check_syscall(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size), "rcvbuf");
  }
  return p;
}

/// Fixed 64 KiB kernel buffers (no autotuning) under the TLS transports @p a and @p b, so that
/// a peer that does not read stops a few MiB.
void limit_kernel_buffers(Transport& a, Transport& b) {
  int size = 64 * 1024;
  for (Transport* t : {&a, &b}) {
    const std::optional<int> fd = t->get_extra_info_as<int>("socket");
    REQUIRE(fd.has_value());
    check_syscall(::setsockopt(*fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size), "sndbuf");
    check_syscall(::setsockopt(*fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size), "rcvbuf");
  }
}

/// The receiving side of a slow peer: its protocol pauses reading after every read.
void make_slow(Record& r) {
  r.pause_on_made = true;
  r.on_data = [](Transport& t, std::string_view) { t.pause_reading(); };
}

/// Lets the slow reader @p r read once per round until @p n bytes arrived (or the connection
/// ended), calling @p each after every round.
Coro<void> read_slowly(Record* r, std::size_t n, std::function<void()> each = {}) {
  for (;;) {
    if (r->received.size() >= n || r->lost) break;
    r->transport->resume_reading();
    const std::size_t before = r->received.size();
    auto waiting = r->wait_received(before + 1);
    co_await waiting;
    if (each) each();
  }
}

/// Waits until @p r received bytes ending with @p marker (or the connection ended).
Coro<void> wait_marker(Record* r, std::string marker) {
  for (;;) {
    const std::string& got = r->received;
    if (r->lost || (got.size() >= marker.size() &&
                    got.compare(got.size() - marker.size(), marker.size(), marker) == 0)) {
      break;
    }
    r->changed.clear();
    co_await r->changed.wait();
  }
}

/// How `co_await aw` failed.
template <class A>
Coro<Failure> failure_of(A aw) {
  auto ended = exception_of(std::move(aw));
  std::exception_ptr e = co_await ended;
  co_return describe_failure(e);
}

/// sendfile() as a task of the running loop.
Task<std::uint64_t> start_sendfile(Transport& t, int fd, std::uint64_t offset,
                                   std::uint64_t count) {
  return strata::get_running_loop().create_task(strata::sendfile(t, fd, offset, count),
                                                "sendfile");
}

/// Yields until @p task is suspended for good: a few iterations in which it did not finish.
Coro<void> let_run(std::size_t iterations = 3) {
  for (std::size_t i = 0; i < iterations; ++i) co_await next_iteration();
}

int count_of(const std::vector<std::string>& events, const std::string& e) {
  return static_cast<int>(std::count(events.begin(), events.end(), e));
}

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

/// A transport that is not this library's: it buffers every write until drain(), reports the
/// buffer's size, and calls its protocol's pause_writing()/resume_writing() at the marks.
class FakeTransport final : public Transport {
 public:
  explicit FakeTransport(strata::EventLoop& loop) : loop_(loop) {}

  std::string pending;    // written, not yet "sent"
  std::string delivered;  // "sent"
  std::size_t max_pending = 0;
  bool reading = true;
  bool closing = false;
  int pauses = 0;
  int resumes = 0;

  void drain() {
    delivered += pending;
    pending.clear();
  }

  void write(std::span<const std::byte> data) override {
    if (closing) return;
    pending.append(reinterpret_cast<const char*>(data.data()), data.size());
    max_pending = std::max(max_pending, pending.size());
  }
  using Transport::write;
  void writelines(std::span<const std::span<const std::byte>> buffers) override {
    for (auto b : buffers) write(b);
  }
  void write_eof() override {}
  bool can_write_eof() const noexcept override { return true; }
  void abort() override { closing = true; }
  void close() override { closing = true; }
  bool is_closing() const noexcept override { return closing; }
  std::any get_extra_info(std::string_view) const override { return {}; }
  strata::EventLoop& get_loop() const noexcept override { return loop_; }
  std::size_t get_write_buffer_size() const noexcept override { return pending.size(); }
  void set_write_buffer_limits(std::optional<std::size_t>, std::optional<std::size_t>) override {}
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {16 * 1024, 64 * 1024};
  }
  void pause_reading() override {
    reading = false;
    ++pauses;
  }
  void resume_reading() override {
    reading = true;
    ++resumes;
  }
  bool is_reading() const noexcept override { return reading && !closing; }
  void set_protocol(std::unique_ptr<strata::BaseProtocol>) override {
    throw std::logic_error("FakeTransport: no protocol swap");
  }
  std::unique_ptr<strata::BaseProtocol> exchange_protocol(
      std::unique_ptr<strata::BaseProtocol>) override {
    throw std::logic_error("FakeTransport: no protocol swap");
  }
  strata::BaseProtocol& get_protocol() const noexcept override { return protocol_; }

 private:
  strata::EventLoop& loop_;
  mutable strata::Protocol protocol_;
};

}  // namespace

// ---- The native path: TCP and Unix sockets ----------------------------------------------------

STRATA_LOOP_TEST_CASE("sendfile: 4 MiB to a slow reader over TCP and a Unix socket arrive "
                      "byte-exact, after what was written before and before what is written "
                      "after",
                      "[transports][sendfile]") {
  for (PairKind kind : {PairKind::tcp, PairKind::unix_socket}) {
    INFO("over " << to_string(kind));
    TempFile file(pattern(4 * mib, 1));
    REQUIRE(::lseek(file.fd(), 12345, SEEK_SET) == 12345);
    const std::string head = pattern(512 * 1024, 2);  // more than the kernel takes at once
    const std::string tail = "the end";
    Record sender;
    Record receiver;
    make_slow(receiver);
    std::uint64_t sent = 0;
    std::vector<std::string> events_during;
    std::size_t largest_buffer_during = 0;
    bool suspended = false;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      FdPair p = pair_with_buffers(kind, 64 * 1024);
      co_await connect_record(p.a, sender);
      co_await connect_record(p.b, receiver);
      Transport& t = *sender.transport;
      t.write(head);
      CHECK(t.get_write_buffer_size() > 0);  // the file must wait for it
      CHECK(t.is_reading());
      Task<std::uint64_t> task = start_sendfile(t, file.fd(), 0, file.size());
      co_await let_run();
      suspended = !task.done();  // 4 MiB cannot pass without the receiver reading: EAGAIN
      CHECK_FALSE(t.is_reading());  // paused while the file is sent
      // Once the head is through, the file's bytes never enter the write buffer.
      auto reading = read_slowly(&receiver, head.size() + file.size(), [&] {
        if (receiver.received.size() > head.size() && !task.done()) {
          largest_buffer_during = std::max(largest_buffer_during, t.get_write_buffer_size());
          events_during = sender.events;
        }
      });
      co_await reading;
      sent = co_await task;
      CHECK(t.is_reading());  // resumed
      t.write(tail);
      receiver.on_data = {};
      receiver.transport->resume_reading();
      auto rest = receiver.wait_received(head.size() + file.size() + tail.size());
      co_await rest;
      t.close();
      co_await sender.wait_lost();
      co_await receiver.wait_lost();
    };
    loop.run(body(), std::chrono::seconds(30));
    CHECK(suspended);
    CHECK(sent == file.size());
    CHECK(receiver.received.size() == head.size() + file.size() + tail.size());
    CHECK(first_mismatch(receiver.received, head + file.content() + tail) == npos);
    CHECK(file.position() == 12345);  // the descriptor's own offset is untouched
    CHECK(largest_buffer_during == 0);
    // The head paused the protocol; the buffer drained during the sendfile, but the protocol
    // hears resume_writing() only once the sendfile ended.
    CHECK(join(events_during) == "made pause");
    CHECK(join(sender.events) == "made pause resume lost");
    CHECK(grammar_error(receiver.events) == "");
    CHECK(!sender.lost_ec);
    CHECK(loop.errors().empty());
  }
}

STRATA_LOOP_TEST_CASE("sendfile: offset and count pick a slice; a count past the end sends to "
                      "the end; at or past the end and a count of 0 send nothing",
                      "[transports][sendfile]") {
  TempFile file(pattern(100 * 1024, 3));
  const std::string& c = file.content();
  const std::uint64_t size = file.size();
  Record sender;
  Record receiver;
  std::vector<std::uint64_t> results;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = unix_pair();
    co_await connect_record(p.a, sender);
    co_await connect_record(p.b, receiver);
    Transport& t = *sender.transport;
    t.write("A");
    auto middle = strata::sendfile(t, file.fd(), 1000, 5000);
    results.push_back(co_await middle);
    t.write("B");
    auto past_end = strata::sendfile(t, file.fd(), size - 100, 1000);
    results.push_back(co_await past_end);
    t.write("C");
    auto beyond = strata::sendfile(t, file.fd(), size + 10, 10);
    results.push_back(co_await beyond);
    auto at_end = strata::sendfile(t, file.fd(), size, 1);
    results.push_back(co_await at_end);
    auto nothing = strata::sendfile(t, file.fd(), 0, 0);
    results.push_back(co_await nothing);
    auto whole = strata::sendfile(t, file.fd(), 0, UINT64_MAX);  // asyncio's count=None
    results.push_back(co_await whole);
    t.write("D");
    auto waiting = receiver.wait_received(1 + 5000 + 1 + 100 + 1 + size + 1);
    co_await waiting;
    t.close();
    co_await sender.wait_lost();
  };
  loop.run(body());
  CHECK(results == std::vector<std::uint64_t>{5000, 100, 0, 0, 0, size});
  CHECK(receiver.received ==
        "A" + c.substr(1000, 5000) + "B" + c.substr(size - 100) + "C" + c + "D");
  CHECK(file.position() == static_cast<off_t>(size));  // where writing the file left it
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: while it runs, write(), writelines(), write_eof() and another "
                      "sendfile() throw InvalidStateError; afterwards the transport writes again",
                      "[transports][sendfile]") {
  TempFile file(pattern(2 * mib, 4));
  REQUIRE(::lseek(file.fd(), 7, SEEK_SET) == 7);
  Record sender;
  Record receiver;
  make_slow(receiver);
  std::vector<std::string> failures;
  off_t position_during = -1;
  std::uint64_t sent = 0;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = pair_with_buffers(PairKind::tcp, 64 * 1024);
    co_await connect_record(p.a, sender);
    co_await connect_record(p.b, receiver);
    Transport& t = *sender.transport;
    Task<std::uint64_t> task = start_sendfile(t, file.fd(), 0, file.size());
    co_await let_run();
    REQUIRE_FALSE(task.done());
    position_during = file.position();
    for (const char* what : {"write", "writelines", "write_eof"}) {
      try {
        if (what == std::string("write")) {
          t.write("x");
        } else if (what == std::string("writelines")) {
          std::array<std::span<const std::byte>, 1> one{bytes_of("x")};
          t.writelines(one);
        } else {
          t.write_eof();
        }
        failures.push_back(std::string(what) + ": no exception");
      } catch (const InvalidStateError& e) {
        failures.push_back(e.what());
      }
    }
    auto second = failure_of(strata::sendfile(t, file.fd(), 0, 10));
    Failure f = co_await second;
    failures.push_back(f.kind + ": " + f.what);
    receiver.on_data = {};
    receiver.transport->resume_reading();
    sent = co_await task;
    t.write("after");
    auto waiting = receiver.wait_received(file.size() + 5);
    co_await waiting;
    t.close();
    co_await sender.wait_lost();
  };
  loop.run(body());
  REQUIRE(failures.size() == 4);
  CHECK(failures[0] == "write() while a sendfile is in progress on this transport: await the "
                       "sendfile() first (asyncio raises RuntimeError)");
  CHECK(failures[1].rfind("writelines() while a sendfile is in progress", 0) == 0);
  CHECK(failures[2].rfind("write_eof() while a sendfile is in progress", 0) == 0);
  CHECK(failures[3].rfind("InvalidStateError: sendfile: another sendfile is in progress", 0) == 0);
  CHECK(position_during == 7);
  CHECK(file.position() == 7);
  CHECK(sent == file.size());
  CHECK(first_mismatch(receiver.received, file.content() + "after") == npos);
  CHECK(loop.errors().empty());
}

// ---- The connection ends during the send --------------------------------------------------

STRATA_LOOP_TEST_CASE("sendfile: the peer resetting the connection mid-transfer throws its "
                      "error, and connection_lost() is called once with it",
                      "[transports][sendfile]") {
  TempFile file(pattern(4 * mib, 5));
  Record sender;
  Record receiver;
  receiver.pause_on_made = true;  // reads nothing: its abort() with unread data sends a RST
  Failure failure;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = pair_with_buffers(PairKind::tcp, 64 * 1024);
    co_await connect_record(p.a, sender);
    co_await connect_record(p.b, receiver);
    Task<std::uint64_t> task = start_sendfile(*sender.transport, file.fd(), 0, file.size());
    co_await let_run();
    REQUIRE_FALSE(task.done());
    receiver.transport->abort();
    auto ended = failure_of(std::move(task));
    failure = co_await ended;
    co_await sender.wait_lost();
  };
  loop.run(body());
  CHECK(failure.kind == "system_error");
  INFO(failure.what);
  CHECK((failure.code == std::errc::connection_reset || failure.code == std::errc::broken_pipe));
  CHECK(failure.what.rfind("sendfile: the connection was closed or lost after ", 0) == 0);
  CHECK(sender.lost_ec == failure.code);
  CHECK(count_of(sender.events, "lost") == 1);
  CHECK(grammar_error(sender.events) == "");
  CHECK(sender.alive == 0);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: abort() mid-transfer throws operation_canceled; close() "
                      "throws connection_aborted, sends what was sent, and closes cleanly",
                      "[transports][sendfile]") {
  for (bool use_close : {false, true}) {
    INFO((use_close ? "close()" : "abort()"));
    TempFile file(pattern(4 * mib, 6));
    Record sender;
    Record receiver;
    receiver.pause_on_made = true;
    Failure failure;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      FdPair p = pair_with_buffers(PairKind::unix_socket, 64 * 1024);
      co_await connect_record(p.a, sender);
      co_await connect_record(p.b, receiver);
      Task<std::uint64_t> task = start_sendfile(*sender.transport, file.fd(), 0, file.size());
      co_await let_run();
      REQUIRE_FALSE(task.done());
      if (use_close) {
        sender.transport->close();
      } else {
        sender.transport->abort();
      }
      auto ended = failure_of(std::move(task));
      failure = co_await ended;
      co_await sender.wait_lost();
      receiver.transport->resume_reading();
      co_await receiver.wait_lost();  // the rest of what was sent, then EOF
    };
    loop.run(body());
    CHECK(failure.kind == "system_error");
    CHECK(failure.code == (use_close ? std::errc::connection_aborted
                                     : std::errc::operation_canceled));
    CHECK(count_of(sender.events, "lost") == 1);
    CHECK(grammar_error(sender.events) == "");
    CHECK(sender.lost_ec == (use_close ? std::error_code()
                                       : std::make_error_code(std::errc::operation_canceled)));
    // A prefix of the file, and less than all of it.
    CHECK(receiver.received.size() < file.size());
    CHECK(file.content().compare(0, receiver.received.size(), receiver.received) == 0);
    if (use_close) CHECK(receiver.eof);
    CHECK(loop.errors().empty());
  }
}

STRATA_LOOP_TEST_CASE("sendfile: cancelling the task stops the file at once, leaves the "
                      "transport writable and reading, and throws CancelledError",
                      "[transports][sendfile]") {
  for (PairKind kind : {PairKind::tcp, PairKind::unix_socket}) {
    INFO("over " << to_string(kind));
    TempFile file(pattern(4 * mib, 7));
    Record sender;
    Record receiver;
    receiver.pause_on_made = true;
    Failure failure;
    bool reading_after = false;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      FdPair p = pair_with_buffers(kind, 64 * 1024);
      co_await connect_record(p.a, sender);
      co_await connect_record(p.b, receiver);
      Transport& t = *sender.transport;
      Task<std::uint64_t> task = start_sendfile(t, file.fd(), 0, file.size());
      co_await let_run();
      REQUIRE_FALSE(task.done());
      task.cancel();
      auto ended = failure_of(std::move(task));
      failure = co_await ended;
      reading_after = t.is_reading();
      // Had the file gone on after the cancel, its bytes would come before this marker once
      // the receiver reads: the receiver gets only what the kernel held at the cancel.
      receiver.transport->resume_reading();
      co_await let_run(5);
      t.write("after");
      auto marker = wait_marker(&receiver, "after");
      co_await marker;
      t.close();
      co_await sender.wait_lost();
    };
    loop.run(body());
    CHECK(failure.kind == "CancelledError");
    CHECK(reading_after);
    const std::size_t prefix = receiver.received.size() - 5;
    CHECK(prefix < 1 * mib);  // the kernel buffers on both sides, not the file
    CHECK(receiver.received == file.content().substr(0, prefix) + "after");
    CHECK(join(sender.events) == "made lost");
    CHECK(loop.errors().empty());
  }
}

// ---- The fallback: TLS, pipes, a transport of one's own -------------------------------------

STRATA_LOOP_TEST_CASE("sendfile: over TLS, 4 MiB arrive byte-exact in order, with the buffer "
                      "bounded while the peer does not read",
                      "[transports][sendfile][tls]") {
  TempFile file(pattern(4 * mib, 8));
  Accepted accepted;
  accepted.echo = false;
  Record client;
  std::unique_ptr<Server> server;
  std::uint64_t sent = 0;
  std::uint64_t sent_short = 0;
  std::size_t largest_buffer = 0;
  std::size_t high = 0;
  std::vector<std::string> events_during;
  Failure write_failure;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions server_options;
    server_options.ssl = SslOptions(test_server_context());
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0, server_options);
    server = co_await serving;
    ConnectOptions options;
    options.ssl = SslOptions(test_client_context());
    auto connecting = strata::create_connection(recorder(client), "127.0.0.1",
                                                server->sockets().at(0).address.port(), options);
    Connection<RecordingProtocol> c = co_await connecting;
    Transport& t = *c.transport;
    auto made = accepted.wait_made(1);
    co_await made;
    Record& peer = *accepted.records.at(0);
    peer.transport->pause_reading();
    limit_kernel_buffers(t, *peer.transport);
    high = t.get_write_buffer_limits().second;
    t.write("head");
    Task<std::uint64_t> task = start_sendfile(t, file.fd(), 0, file.size());
    // The peer reads nothing: the fallback fills the buffer past the high-water mark and waits.
    for (int i = 0; i < 200 && t.get_write_buffer_size() <= high; ++i) co_await next_iteration();
    co_await let_run(5);
    CHECK_FALSE(task.done());
    largest_buffer = t.get_write_buffer_size();
    events_during = client.events;
    try {
      t.write("x");
    } catch (const InvalidStateError& e) {
      write_failure.kind = "InvalidStateError";
      write_failure.what = e.what();
    }
    peer.transport->resume_reading();
    sent = co_await task;
    t.write("tail");
    auto waiting = peer.wait_received(4 + file.size() + 4);
    co_await waiting;
    // A count past the end of the file, on the fallback.
    auto short_send = strata::sendfile(t, file.fd(), file.size() - 10, 100);
    sent_short = co_await short_send;
    auto rest = peer.wait_received(4 + file.size() + 4 + 10);
    co_await rest;
    t.close();
    co_await client.wait_lost();
    server->close();
  };
  loop.run(body(), std::chrono::seconds(30));
  CHECK(sent == file.size());
  CHECK(sent_short == 10);
  REQUIRE(accepted.records.size() == 1);
  const std::string expected =
      "head" + file.content() + "tail" + file.content().substr(file.size() - 10);
  CHECK(accepted.records[0]->received.size() == expected.size());
  CHECK(first_mismatch(accepted.records[0]->received, expected) == npos);
  // At most the high-water mark plus one 64 KiB chunk, plus the TLS framing of that chunk.
  CHECK(largest_buffer > high);
  CHECK(largest_buffer <= high + 64 * 1024 + 2048);
  CHECK(join(events_during) == "made");  // the file's bytes pause nobody
  CHECK(write_failure.kind == "InvalidStateError");
  CHECK(grammar_error(client.events) == "");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: cancelling it over TLS stops the file and leaves the TLS "
                      "transport writable",
                      "[transports][sendfile][tls]") {
  TempFile file(pattern(4 * mib, 9));
  Accepted accepted;
  accepted.echo = false;
  Record client;
  std::unique_ptr<Server> server;
  Failure failure;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions server_options;
    server_options.ssl = SslOptions(test_server_context());
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0, server_options);
    server = co_await serving;
    ConnectOptions options;
    options.ssl = SslOptions(test_client_context());
    auto connecting = strata::create_connection(recorder(client), "127.0.0.1",
                                                server->sockets().at(0).address.port(), options);
    Connection<RecordingProtocol> c = co_await connecting;
    Transport& t = *c.transport;
    auto made = accepted.wait_made(1);
    co_await made;
    Record& peer = *accepted.records.at(0);
    peer.transport->pause_reading();
    limit_kernel_buffers(t, *peer.transport);
    Task<std::uint64_t> task = start_sendfile(t, file.fd(), 0, file.size());
    co_await let_run(5);
    REQUIRE_FALSE(task.done());
    task.cancel();
    auto ended = failure_of(std::move(task));
    failure = co_await ended;
    t.write("after");
    peer.transport->resume_reading();
    auto marker = wait_marker(&peer, "after");
    co_await marker;
    t.close();
    co_await client.wait_lost();
    server->close();
  };
  loop.run(body(), std::chrono::seconds(30));
  CHECK(failure.kind == "CancelledError");
  REQUIRE(accepted.records.size() == 1);
  const std::string& got = accepted.records[0]->received;
  REQUIRE(got.size() >= 5);
  const std::size_t prefix = got.size() - 5;
  CHECK(prefix < 1 * mib);
  CHECK(got == file.content().substr(0, prefix) + "after");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: over TLS, the peer resetting the connection mid-transfer "
                      "throws its error, and connection_lost() is called once with it",
                      "[transports][sendfile][tls]") {
  TempFile file(pattern(4 * mib, 14));
  Accepted accepted;
  accepted.echo = false;
  Record client;
  std::unique_ptr<Server> server;
  Failure failure;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    ServerOptions server_options;
    server_options.ssl = SslOptions(test_server_context());
    auto serving = strata::create_server(accepted.factory(), "127.0.0.1", 0, server_options);
    server = co_await serving;
    ConnectOptions options;
    options.ssl = SslOptions(test_client_context());
    auto connecting = strata::create_connection(recorder(client), "127.0.0.1",
                                                server->sockets().at(0).address.port(), options);
    Connection<RecordingProtocol> c = co_await connecting;
    auto made = accepted.wait_made(1);
    co_await made;
    Record& peer = *accepted.records.at(0);
    peer.transport->pause_reading();
    limit_kernel_buffers(*c.transport, *peer.transport);
    Task<std::uint64_t> task = start_sendfile(*c.transport, file.fd(), 0, file.size());
    co_await let_run(5);
    REQUIRE_FALSE(task.done());
    peer.transport->abort();  // unread data: the kernel answers with a RST
    auto ended = failure_of(std::move(task));
    failure = co_await ended;
    co_await client.wait_lost();
    server->close();
  };
  loop.run(body(), std::chrono::seconds(30));
  CHECK(failure.kind == "system_error");
  INFO(failure.what);
  CHECK((failure.code == std::errc::connection_reset || failure.code == std::errc::broken_pipe));
  CHECK(client.lost_ec == failure.code);
  CHECK(count_of(client.events, "lost") == 1);
  CHECK(grammar_error(client.events) == "");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: over a pipe the fallback writes the file in order through "
                      "the transport's buffer",
                      "[transports][sendfile][pipe]") {
  TempFile file(pattern(1 * mib + 123, 10));
  Record reader;
  Record writer;
  std::uint64_t sent = 0;
  bool suspended = false;
  std::string write_failure;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    int fds[2];
    check_syscall(::pipe2(fds, O_CLOEXEC), "pipe2");
    auto rf = [&reader] { return std::make_unique<RecordingProtocol>(reader); };
    auto read_end = strata::connect_read_pipe(rf, fds[0]);
    co_await read_end;
    auto wf = [&writer] { return std::make_unique<RecordingProtocol>(writer); };
    auto write_end = strata::connect_write_pipe(wf, fds[1]);
    Connection<RecordingProtocol> w = co_await write_end;
    reader.transport->pause_reading();
    w.transport->write("head");
    Task<std::uint64_t> task = start_sendfile(*w.transport, file.fd(), 0, file.size());
    co_await let_run();
    suspended = !task.done();
    try {
      w.transport->write("x");
    } catch (const InvalidStateError& e) {
      write_failure = e.what();
    }
    reader.transport->resume_reading();
    sent = co_await task;
    w.transport->write("tail");
    w.transport->write_eof();
    co_await reader.wait_lost();
    co_await writer.wait_lost();
  };
  loop.run(body());
  CHECK(suspended);
  CHECK(sent == file.size());
  CHECK(first_mismatch(reader.received, "head" + file.content() + "tail") == npos);
  CHECK(write_failure.rfind("write() while a sendfile is in progress", 0) == 0);
  CHECK(join(writer.events) == "made lost");  // the file's bytes paused nobody
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: a transport of one's own gets the file through write(), its "
                      "buffer bounded by polling",
                      "[transports][sendfile]") {
  TempFile file(pattern(1 * mib + 5, 11));
  std::uint64_t sent = 0;
  bool reading_during = true;
  int rounds = 0;
  TestLoop loop(TestType::kind);
  FakeTransport fake(*loop);
  auto body = [&]() -> Coro<void> {
    Task<std::uint64_t> task = start_sendfile(fake, file.fd(), 0, file.size());
    while (!task.done()) {
      co_await next_iteration();
      if (fake.get_write_buffer_size() > 64 * 1024) {
        reading_during = reading_during && fake.reading;
        fake.drain();  // the "peer" takes it all
        ++rounds;
      }
    }
    sent = co_await task;
    fake.drain();
  };
  loop.run(body());
  CHECK(sent == file.size());
  CHECK(fake.delivered == file.content());
  CHECK(fake.max_pending <= 64 * 1024 + 64 * 1024);
  CHECK(rounds >= 8);
  CHECK_FALSE(reading_during);
  CHECK(fake.reading);
  CHECK(fake.pauses == 1);
  CHECK(fake.resumes == 1);
  CHECK(loop.errors().empty());
}

// ---- Refused before anything is sent ------------------------------------------------------

STRATA_LOOP_TEST_CASE("sendfile: a descriptor that is not a readable regular file is refused "
                      "before anything is sent",
                      "[transports][sendfile]") {
  TempFile file(pattern(1000, 12));
  Record sender;
  Record receiver;
  std::vector<Failure> failures;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = unix_pair();
    co_await connect_record(p.a, sender);
    co_await connect_record(p.b, receiver);
    Transport& t = *sender.transport;
    int pipe_fds[2];
    check_syscall(::pipe2(pipe_fds, O_CLOEXEC), "pipe2");
    const int write_only = ::open(file.path().c_str(), O_WRONLY | O_CLOEXEC);
    check_syscall(write_only, "open O_WRONLY");
    const int directory = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check_syscall(directory, "open /");
    const int closed = ::dup(file.fd());
    ::close(closed);  // a number that names no open descriptor now
    for (int fd : {-1, pipe_fds[0], directory, p.b, closed, write_only}) {
      auto refused = failure_of(strata::sendfile(t, fd, 0, 100));
      failures.push_back(co_await refused);
    }
    auto zero = failure_of(strata::sendfile(t, -1, 0, 0));  // checked even for 0 bytes
    failures.push_back(co_await zero);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    ::close(write_only);
    ::close(directory);
    t.write("still writable");
    auto waiting = receiver.wait_received(14);
    co_await waiting;
    t.close();
    co_await sender.wait_lost();
  };
  loop.run(body());
  REQUIRE(failures.size() == 7);
  CHECK(failures[0].kind == "invalid_argument");
  CHECK(failures[0].what == "sendfile: file_fd must be an open descriptor, got -1");
  CHECK(failures[1].kind == "invalid_argument");
  CHECK(failures[1].what.find("is a pipe or FIFO, not a regular file") != npos);
  CHECK(failures[2].kind == "invalid_argument");
  CHECK(failures[2].what.find("is a directory") != npos);
  CHECK(failures[3].kind == "invalid_argument");
  CHECK(failures[3].what.find("is a socket") != npos);
  CHECK(failures[4].kind == "system_error");
  CHECK(failures[4].code == std::errc::bad_file_descriptor);
  CHECK(failures[5].kind == "system_error");
  CHECK(failures[5].code == std::errc::bad_file_descriptor);
  CHECK(failures[5].what.find("not open for reading") != npos);
  CHECK(failures[6].kind == "invalid_argument");
  CHECK(receiver.received == "still writable");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("sendfile: a closing transport, one after write_eof() and a read pipe's "
                      "refuse it with InvalidStateError",
                      "[transports][sendfile]") {
  TempFile file(pattern(1000, 13));
  Record a;
  Record b;
  Record c;
  Record d;
  Record reader;
  std::vector<Failure> failures;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    FdPair p = unix_pair();
    co_await connect_record(p.a, a);
    co_await connect_record(p.b, b);
    FdPair q = unix_pair();
    co_await connect_record(q.a, c);
    co_await connect_record(q.b, d);
    int fds[2];
    check_syscall(::pipe2(fds, O_CLOEXEC), "pipe2");
    auto rf = [&reader] { return std::make_unique<RecordingProtocol>(reader); };
    auto read_end = strata::connect_read_pipe(rf, fds[0]);
    co_await read_end;
    Transport& closing = *a.transport;
    closing.close();
    auto f1 = failure_of(strata::sendfile(closing, file.fd(), 0, 10));
    failures.push_back(co_await f1);
    Transport& half_closed = *c.transport;
    half_closed.write_eof();  // d closes at the EOF, and then c too
    auto f2 = failure_of(strata::sendfile(half_closed, file.fd(), 0, 10));
    failures.push_back(co_await f2);
    auto f3 = failure_of(strata::sendfile(*reader.transport, file.fd(), 0, 10));
    failures.push_back(co_await f3);
    ::close(fds[1]);
    co_await a.wait_lost();
    co_await c.wait_lost();
    co_await reader.wait_lost();
  };
  loop.run(body());
  REQUIRE(failures.size() == 3);
  for (const Failure& f : failures) {
    INFO(f.what);
    CHECK(f.kind == "InvalidStateError");
  }
  CHECK(failures[0].what == "sendfile: the transport is closing");
  CHECK(failures[1].what.find("write_eof") != npos);
  CHECK(failures[2].what.find("read pipe") != npos);
  CHECK(b.received.empty());
  CHECK(d.received.empty());
  CHECK(loop.errors().empty());
}
