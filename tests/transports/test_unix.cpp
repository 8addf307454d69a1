// create_unix_connection() and create_unix_server(), in a temporary directory and in the
// abstract namespace, on every backend.
#include <strata/transports/unix.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>
#include <strata/transports/server.hpp>

#include "loop_test.hpp"
#include "net_test_support.hpp"
#include "stream_test_support.hpp"

using namespace std::chrono_literals;
using strata::Connection;
using strata::Coro;
using strata::Server;
using strata::SocketAddress;
using strata::UnixConnectOptions;
using strata::UnixServerOptions;
using strata::testing::Accepted;
using strata::testing::check_syscall;
using strata::testing::count_open_fds;
using strata::testing::describe_failure;
using strata::testing::exception_of;
using strata::testing::exists;
using strata::testing::Failure;
using strata::testing::grammar_error;
using strata::testing::next_iteration;
using strata::testing::Record;
using strata::testing::recorder;
using strata::testing::RecordingProtocol;
using strata::testing::TempDir;
using strata::testing::TestLoop;

namespace {

template <class A>
Coro<Failure> failure_of(A aw) {
  auto ended = exception_of(std::move(aw));
  std::exception_ptr e = co_await ended;
  co_return describe_failure(e);
}

Coro<std::unique_ptr<Server>> serve(Accepted& accepted, std::string path,
                                    UnixServerOptions options = {}) {
  auto serving = strata::create_unix_server(accepted.factory(), std::move(path), options);
  std::unique_ptr<Server> server = co_await serving;
  co_return server;
}

Coro<Connection<RecordingProtocol>> connect(Record& r, std::string path) {
  auto connecting = strata::create_unix_connection(recorder(r), std::move(path));
  Connection<RecordingProtocol> c = co_await connecting;
  co_return c;
}

Coro<void> check_echo(Connection<RecordingProtocol> c, Record* r, std::string text) {
  const std::size_t before = r->received.size();
  c.transport->write(text);
  co_await r->wait_received(before + text.size());
  CHECK(r->received.substr(before) == text);
}

bool is_socket_file(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

/// Leaves a socket file at @p path with nobody listening: what a crashed server leaves.
void leave_stale_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  check_syscall(fd, "socket");
  SocketAddress address = SocketAddress::unix_path(path);
  check_syscall(::bind(fd, address.data(), address.size()), "bind");
  ::close(fd);
}

/// A name in the abstract namespace, unique to this process and test.
std::string abstract_name(const std::string& tag) {
  return std::string(1, '\0') + "strata-test-" + std::to_string(::getpid()) + "-" + tag;
}

}  // namespace

STRATA_LOOP_TEST_CASE("create_unix_connection: an echo round trip through create_unix_server",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("echo.sock");
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted, path);
    std::unique_ptr<Server> server = co_await serving;
    REQUIRE(server->sockets().size() == 1);
    CHECK(server->sockets()[0].address == SocketAddress::unix_path(path));
    CHECK(is_socket_file(path));
    auto connecting = connect(client, path);
    Connection<RecordingProtocol> c = co_await connecting;
    CHECK(c.transport == client.transport);
    CHECK(c.transport->get_extra_info_as<SocketAddress>("peername") ==
          SocketAddress::unix_path(path));
    auto echo = check_echo(c, &client, "over a Unix socket");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
    server->close();
    auto closing = server->wait_closed();
    co_await closing;
  };
  loop.run(body());
  CHECK(grammar_error(client.events) == "");
  CHECK(grammar_error(accepted.records[0]->events) == "");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("create_unix_connection: an abstract name works, and leaves no file",
                      "[transports][unix]") {
  const std::string name = abstract_name("abstract");
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted, name);
    std::unique_ptr<Server> server = co_await serving;
    CHECK(server->sockets()[0].address.is_abstract());
    CHECK(server->sockets()[0].address.path() == name);
    auto connecting = connect(client, name);
    Connection<RecordingProtocol> c = co_await connecting;
    auto echo = check_echo(c, &client, "abstract");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
    server->close();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_unix_server: a stale socket file is removed before binding",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("stale.sock");
  leave_stale_socket(path);
  REQUIRE(is_socket_file(path));
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted, path);
    std::unique_ptr<Server> server = co_await serving;
    auto connecting = connect(client, path);
    Connection<RecordingProtocol> c = co_await connecting;
    auto echo = check_echo(c, &client, "fresh");
    co_await echo;
    c.transport->close();
    co_await accepted.wait_all_lost();
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_unix_server: a regular file at the path is left alone, and bind "
                      "fails with EADDRINUSE naming the path",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("not-a-socket");
  std::ofstream(path) << "precious data\n";
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    const int fds = count_open_fds();
    auto serving = serve(accepted, path);
    auto failing = failure_of(std::move(serving));
    Failure f = co_await failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::address_in_use);
    CHECK(f.what == "bind " + path + ": Address already in use");
    CHECK(count_open_fds() == fds);
  };
  loop.run(body());
  CHECK(is_regular_file(path));
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  CHECK(line == "precious data");
}

STRATA_LOOP_TEST_CASE("create_unix_server: close() removes the socket file, unless cleanup_socket "
                      "is false",
                      "[transports][unix]") {
  TempDir dir;
  const std::string cleaned = dir.path("cleaned.sock");
  const std::string kept = dir.path("kept.sock");
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted, cleaned);
    std::unique_ptr<Server> one = co_await serving;
    UnixServerOptions options;
    options.cleanup_socket = false;
    auto serving_kept = serve(accepted, kept, options);
    std::unique_ptr<Server> two = co_await serving_kept;
    CHECK(is_socket_file(cleaned));
    CHECK(is_socket_file(kept));
    one->close();
    two->close();
    CHECK_FALSE(exists(cleaned));
    CHECK(is_socket_file(kept));
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_unix_server: close() leaves a socket file that replaced its own",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("replaced.sock");
  Accepted accepted;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted, path);
    std::unique_ptr<Server> server = co_await serving;
    REQUIRE(::unlink(path.c_str()) == 0);
    leave_stale_socket(path);  // another server's file now
    server->close();
    CHECK(is_socket_file(path));
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_unix_connection: a missing path throws system_error naming it",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("nobody.sock");
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    const int fds = count_open_fds();
    auto connecting = connect(r, path);
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::no_such_file_or_directory);
    CHECK(f.what == "connect " + path + ": No such file or directory");
    CHECK(count_open_fds() == fds);

    leave_stale_socket(path);  // a file, nobody listening
    auto refused = connect(r, path);
    auto refused_failing = failure_of(std::move(refused));
    Failure g = co_await refused_failing;
    CHECK(g.code == std::errc::connection_refused);
    CHECK(g.what == "connect " + path + ": Connection refused");
  };
  loop.run(body());
  CHECK(r.created == 0);
}

STRATA_LOOP_TEST_CASE("create_unix_connection: a full backlog fails at once with EAGAIN",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("full.sock");
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    // A listener with backlog 0 that never accepts, and connections until the queue is full.
    int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SocketAddress address = SocketAddress::unix_path(path);
    check_syscall(::bind(listener, address.data(), address.size()), "bind");
    check_syscall(::listen(listener, 0), "listen");
    std::vector<int> fillers;
    for (int i = 0; i < 16; ++i) {
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      fillers.push_back(fd);
      if (::connect(fd, address.data(), address.size()) != 0 && errno == EAGAIN) break;
    }
    REQUIRE(errno == EAGAIN);
    const int fds = count_open_fds();
    auto connecting = connect(r, path);
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "system_error");
    CHECK(f.code == std::errc::resource_unavailable_try_again);
    CHECK(f.what == "connect " + path + ": Resource temporarily unavailable");
    CHECK(count_open_fds() == fds);
    for (int fd : fillers) ::close(fd);
    ::close(listener);
  };
  loop.run(body());
}

STRATA_LOOP_TEST_CASE("create_unix_connection: an expired timeout throws TimeoutError and closes "
                      "the connection",
                      "[transports][unix]") {
  TempDir dir;
  const std::string path = dir.path("timeout.sock");
  Accepted accepted;
  Record client;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto serving = serve(accepted, path);
    std::unique_ptr<Server> server = co_await serving;
    const int fds = count_open_fds();
    UnixConnectOptions options;
    options.timeout = 0ms;
    auto connecting = strata::create_unix_connection(recorder(client), path, options);
    auto failing = failure_of(std::move(connecting));
    Failure f = co_await failing;
    CHECK(f.kind == "TimeoutError");
    CHECK(f.what == "connect " + path + ": timed out after 0 ms");
    // Whatever got made is closed: the client either never had a transport or saw it end.
    if (client.created > 0) co_await client.wait_lost();
    co_await accepted.wait_all_lost();
    co_await next_iteration();
    co_await next_iteration();
    CHECK(count_open_fds() == fds);
  };
  loop.run(body());
  if (!client.events.empty()) CHECK(grammar_error(client.events) == "");
}

STRATA_LOOP_TEST_CASE("create_unix_server: misuse fails at the call", "[transports][unix]") {
  Accepted accepted;
  Record r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    CHECK_THROWS_AS(strata::create_unix_server(accepted.factory(), ""), std::invalid_argument);
    CHECK_THROWS_AS(strata::create_unix_server(accepted.factory(), std::string(200, 'x')),
                    std::invalid_argument);
    CHECK_THROWS_AS(strata::create_unix_connection(recorder(r), ""), std::invalid_argument);
    UnixServerOptions negative;
    negative.backlog = -1;
    CHECK_THROWS_AS(strata::create_unix_server(accepted.factory(), "/tmp/x.sock", negative),
                    std::invalid_argument);
    co_return;
  };
  loop.run(body());
}
