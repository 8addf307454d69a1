#pragma once
// Test support for the stream transport tests: recording protocols whose observations outlive
// them, descriptor pairs made with plain blocking system calls, and the callback grammar.

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/log.hpp>
#include <strata/core/sleep.hpp>
#include <strata/transports/accepted_socket.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

namespace strata::testing {

/// Yields one loop iteration (an ordering step, not a timed wait).
inline Coro<void> next_iteration() { co_await strata::sleep(std::chrono::seconds(0)); }

/// @p n bytes of a pattern that catches loss, duplication and reordering: not periodic in any
/// power of two below 2^16.
inline std::string pattern(std::size_t n, unsigned seed = 0) {
  std::string s(n, '\0');
  std::uint32_t x = 0x9e3779b9u ^ seed;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

inline std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

/// The open descriptors of this process (entries of /proc/self/fd).
inline int count_open_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
  }
  return n - 1;  // the DIR's own descriptor
}

/// Two connected stream sockets.
struct FdPair {
  int a = -1;
  int b = -1;
};

inline void check_syscall(int rc, const char* what) {
  if (rc < 0) throw std::system_error(errno, std::system_category(), what);
}

/// socketpair(AF_UNIX, SOCK_STREAM), blocking.
inline FdPair unix_pair() {
  int fds[2];
  check_syscall(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), "socketpair");
  return {fds[0], fds[1]};
}

/// A TCP connection over 127.0.0.1 made with blocking calls: a is the connecting side, b the
/// accepted one. @p rcvbuf, if not 0, is set on both before connecting (shrinks the window).
inline FdPair tcp_pair(int rcvbuf = 0) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  check_syscall(listener, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  check_syscall(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind");
  check_syscall(::listen(listener, 1), "listen");
  socklen_t len = sizeof addr;
  check_syscall(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
  if (rcvbuf != 0) {
    check_syscall(::setsockopt(listener, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), "rcvbuf");
  }
  int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  check_syscall(client, "socket");
  if (rcvbuf != 0) {
    check_syscall(::setsockopt(client, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), "rcvbuf");
  }
  check_syscall(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), "connect");
  int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  check_syscall(server, "accept");
  ::close(listener);
  return {client, server};
}

enum class PairKind { unix_socket, tcp };
inline const char* to_string(PairKind k) { return k == PairKind::tcp ? "tcp" : "unix"; }
/// A pair of @p k; with @p small, small kernel buffers on both sides (4 KiB requested), so that
/// a few hundred KiB written without reading stay in the transport's own buffer.
inline FdPair make_pair(PairKind k, bool small = false) {
  FdPair p = k == PairKind::tcp ? tcp_pair(small ? 4096 : 0) : unix_pair();
  if (small) {
    int size = 4096;
    for (int fd : {p.a, p.b}) {
      check_syscall(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size), "sndbuf");
      check_syscall(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size), "rcvbuf");
    }
  }
  return p;
}

/// Returns "" when @p events follow the stream protocol grammar
/// `made (data)* eof? lost`, with pause/resume alternating from pause anywhere after made and
/// before lost; otherwise what is wrong.
inline std::string grammar_error(const std::vector<std::string>& events) {
  if (events.empty() || events.front() != "made") return "does not start with made";
  bool eof = false;
  bool lost = false;
  bool paused = false;
  for (std::size_t i = 1; i < events.size(); ++i) {
    const std::string& e = events[i];
    if (lost) return "'" + e + "' after lost";
    if (e == "made") return "made twice";
    if (e == "data") {
      if (eof) return "data after eof";
    } else if (e == "eof") {
      if (eof) return "eof twice";
      eof = true;
    } else if (e == "lost") {
      lost = true;
    } else if (e == "pause") {
      if (paused) return "pause twice";
      paused = true;
    } else if (e == "resume") {
      if (!paused) return "resume without pause";
      paused = false;
    } else {
      return "unknown event '" + e + "'";
    }
  }
  return lost ? "" : "no lost";
}

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : " ") + e;
  return s;
}

/// What a recording protocol observed. It lives in the test, outside the protocol, which the
/// transport destroys; declare it before the TestLoop so that it outlives the loop's close.
struct Record {
  std::vector<std::string>
      events;  // made, data (consecutive ones merged), eof, pause, resume, lost
  std::string received;
  std::error_code lost_ec;
  bool lost = false;
  bool eof = false;
  Transport* transport = nullptr;
  int alive = 0;    // protocol objects of this record not yet destroyed
  int created = 0;  // protocol objects made
  std::vector<std::size_t> pause_sizes;   // write buffer size at each pause_writing()
  std::vector<std::size_t> resume_sizes;  // write buffer size at each resume_writing()
  std::size_t get_buffer_calls = 0;
  std::size_t min_hint = SIZE_MAX;
  bool echo = false;              // write back what arrives
  bool keep_open_on_eof = false;  // what eof_received() returns
  bool pause_on_made = false;     // pause_reading() in connection_made()
  std::function<void(Transport&)> on_made;
  std::function<void(Transport&, std::string_view)> on_data;
  std::function<void(Transport&)> on_eof;
  std::function<void(std::error_code)> on_lost;
  std::function<void()> on_pause;
  Event changed;  // set at every callback

  void note(const char* e) {
    changed.set();
    if (std::string_view(e) == "data" && !events.empty() && events.back() == "data") return;
    events.emplace_back(e);
  }

  /// Waits until at least @p n bytes arrived, or the connection was lost.
  Coro<void> wait_received(std::size_t n) {
    for (;;) {
      if (received.size() >= n || lost) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until connection_lost().
  Coro<void> wait_lost() {
    for (;;) {
      if (lost) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until eof_received() or connection_lost().
  Coro<void> wait_eof() {
    for (;;) {
      if (eof || lost) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until the event @p name was recorded (or connection_lost()).
  Coro<void> wait_event(std::string name) {
    for (;;) {
      bool seen = lost;
      for (const auto& e : events) seen = seen || e == name;
      if (seen) break;
      changed.clear();
      co_await changed.wait();
    }
  }
};

/// Callbacks shared by both recording protocols.
template <class Base>
class Recording : public Base {
 public:
  explicit Recording(Record& r) : r_(r) {
    ++r_.alive;
    ++r_.created;
  }
  ~Recording() override { --r_.alive; }

  void connection_made(Transport& t) override {
    r_.transport = &t;
    r_.note("made");
    if (r_.pause_on_made) t.pause_reading();
    if (r_.on_made) r_.on_made(t);
  }
  bool eof_received() override {
    r_.eof = true;
    r_.note("eof");
    if (r_.on_eof) r_.on_eof(*r_.transport);
    return r_.keep_open_on_eof;
  }
  void connection_lost(std::error_code ec) override {
    r_.lost = true;
    r_.lost_ec = ec;
    r_.transport = nullptr;
    r_.note("lost");
    if (r_.on_lost) r_.on_lost(ec);
  }
  void pause_writing() override {
    r_.pause_sizes.push_back(r_.transport ? r_.transport->get_write_buffer_size() : 0);
    r_.note("pause");
    if (r_.on_pause) r_.on_pause();
  }
  void resume_writing() override {
    r_.resume_sizes.push_back(r_.transport ? r_.transport->get_write_buffer_size() : 0);
    r_.note("resume");
  }

 protected:
  void got(std::string_view data) {
    r_.received.append(data);
    r_.note("data");
    if (r_.echo) r_.transport->write(data);
    if (r_.on_data) r_.on_data(*r_.transport, data);
  }

  Record& r_;
};

/// A Protocol that records into a Record.
class RecordingProtocol : public Recording<Protocol> {
 public:
  using Recording::Recording;
  void data_received(std::span<const std::byte> data) override {
    got(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
  }
};

/// A BufferedProtocol that records into a Record, lending a buffer of @p size bytes.
class RecordingBufferedProtocol : public Recording<BufferedProtocol> {
 public:
  RecordingBufferedProtocol(Record& r, std::size_t size) : Recording(r), buffer_(size) {}
  std::span<std::byte> get_buffer(std::size_t hint) override {
    ++r_.get_buffer_calls;
    r_.min_hint = std::min(r_.min_hint, hint);
    return std::span(buffer_);
  }
  void buffer_updated(std::size_t n) override {
    REQUIRE(n <= buffer_.size());
    got(std::string_view(reinterpret_cast<const char*>(buffer_.data()), n));
  }

 private:
  std::vector<std::byte> buffer_;
};

/// Wraps @p fd (a connected stream socket) with connect_accepted_socket() and a recording
/// protocol: a Protocol, or with @p buffered a BufferedProtocol lending @p buffer_size bytes.
inline Coro<void> connect_record(int fd, Record& r, bool buffered = false,
                                 std::size_t buffer_size = 1000) {
  if (buffered) {
    auto factory = [&r, buffer_size] {
      return std::make_unique<RecordingBufferedProtocol>(r, buffer_size);
    };
    auto op = connect_accepted_socket(factory, fd);
    co_await op;
  } else {
    auto factory = [&r] { return std::make_unique<RecordingProtocol>(r); };
    auto op = connect_accepted_socket(factory, fd);
    co_await op;
  }
}

/// connect_record() on both ends of @p p.
inline Coro<void> connect_records(FdPair p, Record& a, Record& b, bool b_buffered = false,
                                  std::size_t b_buffer_size = 1000) {
  co_await connect_record(p.a, a);
  co_await connect_record(p.b, b, b_buffered, b_buffer_size);
}

/// The index of the first difference between @p a and @p b, or npos when equal.
inline std::size_t first_mismatch(std::string_view a, std::string_view b) {
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return i;
  }
  return a.size() == b.size() ? std::string_view::npos : n;
}

/// Replaces the log handler for a scope, keeping the records.
class LogCapture {
 public:
  LogCapture() {
    strata::set_log_handler([this](LogLevel level, std::string_view message) {
      records.emplace_back(level, std::string(message));
    });
  }
  ~LogCapture() { strata::set_log_handler({}); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  std::vector<std::pair<LogLevel, std::string>> records;
};

}  // namespace strata::testing
