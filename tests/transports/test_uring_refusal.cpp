// The io_uring proactor when its ring refuses: io_uring_submit() and the other submitting
// calls are interposed here (this executable's definitions win over liburing's). They refuse
// submissions while a test asks them to, and can make the kernel refuse multishot receives as
// one before Linux 6.0 does (uring_interpose.hpp). On the other backends the same traffic must
// simply arrive.
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <unistd.h>

#if __has_include(<liburing.h>)
#include <liburing.h>
#define STRATA_TEST_HAS_LIBURING 1
#else
struct io_uring;
#endif

#include <cerrno>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/transports/transport.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"
#include "uring_interpose.hpp"

using strata::Coro;
using strata::testing::connect_record;
using strata::testing::connect_records;
using strata::testing::FdPair;
using strata::testing::first_mismatch;
using strata::testing::KernelWithoutMultishot;
using strata::testing::make_pair;
using strata::testing::multishot_receives_submitted;
using strata::testing::next_iteration;
using strata::testing::PairKind;
using strata::testing::pattern;
using strata::testing::Record;
using strata::testing::TestLoop;

namespace {

bool refuse_submissions = false;  // the submitting calls below fail with EBUSY while set
bool refuse_multishot = false;
std::size_t multishot_submitted = 0;

/// Before a submission: counts the multishot receives prepared since the last one and, while
/// refuse_multishot is set, gives them a flag that the kernel does not know.
void look_at_prepared(io_uring* ring) noexcept {
#ifdef STRATA_TEST_HAS_LIBURING
  for (unsigned i = ring->sq.sqe_head; i != ring->sq.sqe_tail; ++i) {
    io_uring_sqe& s = ring->sq.sqes[i & ring->sq.ring_mask];
    if (s.opcode == IORING_OP_RECV && (s.ioprio & IORING_RECV_MULTISHOT) != 0) {
      ++multishot_submitted;
      if (refuse_multishot) s.ioprio |= 0x8000;
    }
  }
#else
  static_cast<void>(ring);
#endif
}

/// liburing's definition of @p name.
template <class Fn>
Fn real(const char* name) noexcept {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

void strata::testing::refuse_multishot_receives(bool on) noexcept { refuse_multishot = on; }
std::size_t strata::testing::multishot_receives_submitted() noexcept {
  return multishot_submitted;
}

extern "C" int io_uring_submit(struct io_uring* ring) {
  using Fn = int (*)(struct io_uring*);
  static const auto fn = real<Fn>("io_uring_submit");
  if (refuse_submissions || fn == nullptr) return -EBUSY;
  look_at_prepared(ring);
  return fn(ring);
}

extern "C" int io_uring_submit_and_wait(struct io_uring* ring, unsigned wait_nr) {
  using Fn = int (*)(struct io_uring*, unsigned);
  static const auto fn = real<Fn>("io_uring_submit_and_wait");
  if (refuse_submissions || fn == nullptr) return -EBUSY;
  look_at_prepared(ring);
  return fn(ring, wait_nr);
}

extern "C" int io_uring_submit_and_get_events(struct io_uring* ring) {
  using Fn = int (*)(struct io_uring*);
  static const auto fn = real<Fn>("io_uring_submit_and_get_events");
  if (refuse_submissions || fn == nullptr) return -EBUSY;
  look_at_prepared(ring);
  return fn(ring);
}

struct io_uring_cqe;
struct __kernel_timespec;
extern "C" int io_uring_submit_and_wait_timeout(struct io_uring* ring, struct io_uring_cqe** cqe,
                                                unsigned wait_nr, struct __kernel_timespec* ts,
                                                sigset_t* sigmask) {
  using Fn = int (*)(struct io_uring*, struct io_uring_cqe**, unsigned, struct __kernel_timespec*,
                     sigset_t*);
  static const auto fn = real<Fn>("io_uring_submit_and_wait_timeout");
  if (refuse_submissions || fn == nullptr) return -EBUSY;
  look_at_prepared(ring);
  return fn(ring, cqe, wait_nr, ts, sigmask);
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

STRATA_LOOP_TEST_CASE("StreamTransport: on a kernel that refuses multishot receives, the loop "
                      "falls back to single ones and loses nothing",
                      "[transports][stream_transport][receive_buffers]") {
  // Linux 5.19 has provided buffers but not multishot receives, and refuses them with EINVAL.
  // Each connection's first receive is refused here; the loop must then receive once per
  // submission, for every connection, and deliver every byte in order.
  for (const bool refused : {false, true}) {
    INFO((refused ? "multishot refused" : "multishot allowed"));
    KernelWithoutMultishot kernel(refused);
    Record client;
    Record server;
    server.echo = true;
    std::size_t after_first = 0;
    std::size_t at_start = multishot_receives_submitted();
    bool uring = false;
    {
      TestLoop loop(TestType::kind);
      uring = loop->backend_name() == "proactor/io_uring";
      auto body = [&]() -> Coro<void> {
        co_await connect_records(make_pair(PairKind::tcp), client, server);
        std::string expected;
        for (unsigned round = 0; round != 50; ++round) {
          // Sizes that fit a pool buffer, then one that fills a few (a connection's own buffer).
          const std::string message = pattern(round == 25 ? 100'000 : 100 + round * 37, round);
          client.transport->write(message);
          expected += message;
          co_await client.wait_received(expected.size());
          REQUIRE(client.received.size() == expected.size());
          if (round == 0) after_first = multishot_receives_submitted();
        }
        CHECK(first_mismatch(client.received, expected) == std::string_view::npos);
        client.transport->close();
        co_await server.wait_lost();
      };
      loop.run(body());
      CHECK(loop.errors().empty());
    }
    const std::size_t at_end = multishot_receives_submitted();
    if (!uring) {
      CHECK(at_end == at_start);
    } else if (refused) {
      CHECK(after_first > at_start);    // tried, and refused
      CHECK(at_end == after_first);     // never again on this loop
    } else {
      CHECK(after_first > at_start);
      // A multishot receive per connection goes on (the large message moves one connection
      // to its own buffer and back: a few more).
      CHECK(at_end - at_start <= 8);
    }
    CHECK(server.alive == 0);
  }
}

STRATA_LOOP_TEST_CASE("StreamTransport: a connection whose first receive the ring refuses fails "
                      "to start and leaves its socket to the caller",
                      "[transports][stream_transport][receive_buffers]") {
  // The transport starts reading as it starts. On io_uring, with the submission queue full and
  // the ring refusing, that receive cannot start: connect_accepted_socket() must fail, and the
  // channel it opened must go with nothing of it left, the socket open and the caller's. On
  // the other backends the connection simply starts.
  Record record;
  std::deque<Record> fillers(300);  // their sends fill the submission queue
  std::vector<int> peers;
  FdPair pair{};
  bool uring = false;
  bool refused = false;
  {
    TestLoop loop(TestType::kind);
    uring = loop->backend_name() == "proactor/io_uring";
    auto body = [&]() -> Coro<void> {
      for (Record& f : fillers) {
        FdPair p = make_pair(PairKind::unix_socket);
        peers.push_back(p.b);
        co_await connect_record(p.a, f);
      }
      pair = make_pair(PairKind::unix_socket);
      refuse_submissions = true;
      for (Record& f : fillers) {
        f.transport->write(std::string_view("x"));
        if (f.transport->is_closing()) break;  // this one's send could not start
      }
      try {
        co_await connect_record(pair.a, record);  // (throws before it waits for anything)
      } catch (const std::system_error&) {
        refused = true;
      }
      refuse_submissions = false;
      if (record.transport != nullptr) record.transport->close();
      for (Record& f : fillers) {
        if (f.transport != nullptr) f.transport->close();  // (null once lost)
      }
      for (int fd : peers) ::close(fd);
      for (Record& f : fillers) {
        if (!f.events.empty()) co_await f.wait_lost();
      }
      if (!record.events.empty()) co_await record.wait_lost();
    };
    loop.run(body());
  }
  CHECK(refused == uring);
  if (refused) {
    // Still open, and still a working socket: the caller's to use or close.
    const char hello[] = "hello";
    CHECK(::write(pair.a, hello, sizeof hello) == static_cast<ssize_t>(sizeof hello));
    char got[sizeof hello] = {};
    CHECK(::read(pair.b, got, sizeof got) == static_cast<ssize_t>(sizeof hello));
    CHECK(std::string_view(got) == "hello");
    ::close(pair.a);
  }
  ::close(pair.b);
}
