// The loop's I/O interface beneath the transports (DESIGN.md, "The two loops"): on the proactor
// loop on io_uring, no transport registers add_reader()/add_writer(); listening, datagram and
// pipe descriptors are driven by operations the loop starts (multishot accept, poll
// operations that the transports' watches own). On the selector loop they are readiness
// registrations, as they should be.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string_view>

#include <strata/core/coro.hpp>
#include <strata/transports/datagram.hpp>
#include <strata/transports/pipe.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"

using strata::Coro;
using strata::testing::check_syscall;
using strata::testing::TestLoop;

namespace {

class QuietProtocol final : public strata::Protocol {};
class QuietDatagramProtocol final : public strata::DatagramProtocol {};

}  // namespace

STRATA_LOOP_TEST_CASE("EventLoop I/O interface: a server, a datagram endpoint and a read pipe "
                      "register add_reader() on the selector loop only",
                      "[transports][loop_io]") {
  TestLoop loop(TestType::kind);
  const bool readiness = !loop->backend_name().starts_with("proactor/io_uring");
  int pipe_fds[2] = {-1, -1};
  auto body = [&]() -> Coro<void> {
    auto serving = strata::create_server([] { return std::make_unique<QuietProtocol>(); },
                                         "127.0.0.1", 0);
    std::unique_ptr<strata::Server> server = co_await serving;
    const int listen_fd = server->sockets().at(0).fd;

    strata::DatagramOptions options;
    options.local_addr = strata::DatagramAddress("127.0.0.1", 0);
    auto opening = strata::create_datagram_endpoint(
        [] { return std::make_unique<QuietDatagramProtocol>(); }, std::move(options));
    auto endpoint = co_await opening;
    const std::optional<int> udp_fd = endpoint.transport->template get_extra_info_as<int>("socket");
    REQUIRE(udp_fd.has_value());

    check_syscall(::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC), "pipe2");
    auto connecting = strata::connect_read_pipe(
        [] { return std::make_unique<QuietProtocol>(); }, pipe_fds[0]);
    auto pipe = co_await connecting;
    pipe_fds[0] = -1;  // the transport's now

    // remove_reader() tells whether a reader was registered (and removes it: the checks come
    // last, and everything closes right after).
    CHECK(loop->remove_reader(listen_fd) == readiness);
    CHECK(loop->remove_reader(*udp_fd) == readiness);
    CHECK(loop->remove_reader(pipe.transport->template get_extra_info_as<int>("pipe").value_or(-1)) ==
          readiness);

    pipe.transport->close();
    endpoint.transport->close();
    server->close();
    auto closed = server->wait_closed();
    co_await closed;
  };
  loop.run(body());
  for (int fd : pipe_fds) {
    if (fd >= 0) ::close(fd);
  }
}
