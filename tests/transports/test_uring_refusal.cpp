// The io_uring proactor when its ring takes no more submissions: io_uring_submit() is
// interposed here (this executable's definition wins over liburing's), and refuses while a
// test asks it to. On the other backends the same traffic must simply arrive.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <string_view>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/transports/transport.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"

using strata::Coro;
using strata::testing::connect_record;
using strata::testing::connect_records;
using strata::testing::FdPair;
using strata::testing::make_pair;
using strata::testing::next_iteration;
using strata::testing::PairKind;
using strata::testing::Record;
using strata::testing::TestLoop;

namespace {
bool refuse_submissions = false;  // io_uring_submit() below fails with EBUSY while set
}  // namespace

struct io_uring;

extern "C" int io_uring_submit(struct io_uring* ring) {
  using Fn = int (*)(struct io_uring*);
  static const auto real = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, "io_uring_submit"));
  if (refuse_submissions || real == nullptr) return -EBUSY;
  return real(ring);
}

STRATA_LOOP_TEST_CASE("StreamTransport: an echo whose send cannot start keeps the bytes it was "
                      "handed until data_received() returns",
                      "[transports][stream_transport][receive_buffers]") {
  // On io_uring the echo's write would send from the pool buffer the bytes arrived in. Here
  // the submission queue is full and the ring refuses: the send cannot start, and the buffer
  // must stay held (data_received() may still read it) until the delivery ends.
  Record client;
  Record server;
  std::deque<Record> fillers(300);  // their sends fill the submission queue
  std::vector<int> peers;
  strata::EventLoop* loop_ptr = nullptr;
  bool armed = true;
  long before = -1;
  long after = -1;
  long at_end = -1;
  bool echo_failed = false;
  bool uring = false;
  server.on_data = [&](strata::Transport& t, std::string_view data) {
    if (!armed) return;
    armed = false;
    before = static_cast<long>(loop_ptr->metrics().receive_buffers_held);
    refuse_submissions = true;
    for (Record& f : fillers) {
      f.transport->write(std::string_view("x"));
      if (f.transport->is_closing()) break;  // this one's send could not start
    }
    t.write(data);
    echo_failed = t.is_closing();
    after = static_cast<long>(loop_ptr->metrics().receive_buffers_held);
    refuse_submissions = false;
  };
  {
    TestLoop loop(TestType::kind);
    loop_ptr = &*loop;
    uring = loop->backend_name() == "proactor/io_uring";
    auto body = [&]() -> Coro<void> {
      co_await connect_records(make_pair(PairKind::tcp), client, server);
      for (Record& f : fillers) {
        FdPair p = make_pair(PairKind::unix_socket);
        peers.push_back(p.b);
        co_await connect_record(p.a, f);
      }
      client.transport->write(std::string_view("hello, echo"));
      co_await server.wait_received(11);
      for (int i = 0; i != 20; ++i) co_await next_iteration();
      for (Record& f : fillers) {
        if (f.transport != nullptr) f.transport->close();  // (null once lost)
      }
      for (int fd : peers) ::close(fd);
      if (client.transport != nullptr) client.transport->close();
      co_await client.wait_lost();
      co_await server.wait_lost();
      for (int i = 0; i != 1000 && loop->metrics().receive_buffers_held != 0; ++i) {
        co_await next_iteration();
      }
      at_end = static_cast<long>(loop->metrics().receive_buffers_held);
    };
    loop.run(body());
  }
  INFO("receive buffers held before the echo " << before << ", after it failed to start "
                                                 << after);
  if (uring) {
    CHECK(echo_failed);     // the ring refused the echo's send
    CHECK(after == before);  // the buffer of the bytes being delivered is still held
  } else {
    CHECK_FALSE(echo_failed);  // no ring: the refusal changes nothing
  }
  CHECK(at_end == 0);
}
