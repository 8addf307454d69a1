// The test kit's MockTransport: a protocol driven by a scripted peer, without sockets.

#include <chrono>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <strata/core/errors.hpp>
#include <strata/core/sleep.hpp>
#include <strata/testing/mock_transport.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::testing::ConnectionEndedError;
using strata::testing::MockTransport;
using strata::testing::TestClock;
using strata::testing::TestLoop;

namespace {

/// What the protocol under test saw.
struct Record {
  std::vector<std::string> chunks;
  int made = 0;
  int eofs = 0;
  int lost = 0;
  std::error_code lost_error;
  int pauses = 0;
  int resumes = 0;
};

/// Answers each line with "<line in upper case>\n"; pauses reading after a line "PAUSE" and
/// writes a big reply for "BIG"; closes after "BYE" or an idle period.
class LineProtocol final : public strata::Protocol {
 public:
  LineProtocol(Record& record, strata::Duration idle) : record_(record), idle_(idle) {}

  void connection_made(strata::Transport& transport) override {
    transport_ = &transport;
    ++record_.made;
    arm_idle();
  }
  void data_received(std::span<const std::byte> data) override {
    std::string chunk(reinterpret_cast<const char*>(data.data()), data.size());
    record_.chunks.push_back(chunk);
    line_ += chunk;
    arm_idle();
    for (auto end = line_.find('\n'); end != std::string::npos; end = line_.find('\n')) {
      std::string line = line_.substr(0, end);
      line_.erase(0, end + 1);
      if (line == "PAUSE") transport_->pause_reading();
      if (line == "BIG") {
        transport_->write(std::string(100 * 1024, 'x'));
        continue;
      }
      for (char& c : line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      transport_->write(line + "\n");
      if (line == "BYE") transport_->close();
    }
  }
  bool eof_received() override {
    ++record_.eofs;
    return false;
  }
  void connection_lost(std::error_code ec) override {
    ++record_.lost;
    record_.lost_error = ec;
    idle_timer_.cancel();
  }
  void pause_writing() override { ++record_.pauses; }
  void resume_writing() override { ++record_.resumes; }

 private:
  void arm_idle() {
    idle_timer_.cancel();
    if (idle_ > strata::Duration::zero()) {
      idle_timer_ = transport_->get_loop().call_later(idle_, [this] { transport_->close(); });
    }
  }

  Record& record_;
  strata::Duration idle_;
  strata::Transport* transport_ = nullptr;
  std::string line_;
  strata::TimerHandle idle_timer_;
};

std::unique_ptr<MockTransport> make(strata::EventLoop& loop, Record& record,
                                    strata::Duration idle = strata::Duration::zero()) {
  return std::make_unique<MockTransport>(loop, std::make_unique<LineProtocol>(record, idle));
}

}  // namespace

STRATA_LOOP_TEST_CASE("MockTransport: bytes arrive in the chunking the test chose",
                      "[testing][mock]") {
  TestLoop loop(TestType::kind);
  Record record;
  auto t = make(*loop, record);
  CHECK(record.made == 0);  // connection_made() runs on the next iteration
  t->feed("hello\nwor", {1, 3});
  t->feed("ld\n");
  loop.run([](MockTransport& tr) -> Coro<void> {
    auto first = tr.read_until("\n");
    const std::string hello = co_await first;
    CHECK(hello == "HELLO\n");
    auto second = tr.read_exactly(6);
    const std::string world = co_await second;
    CHECK(world == "WORLD\n");
  }(*t));
  CHECK(record.made == 1);
  CHECK(record.chunks ==
        std::vector<std::string>{"h", "ell", "o", "\nwo", "r", "ld\n"});
  CHECK(t->fed());
  CHECK(t->received().empty());
}

STRATA_LOOP_TEST_CASE("MockTransport: nothing is delivered while the protocol pauses reading",
                      "[testing][mock]") {
  TestLoop loop(TestType::kind);
  Record record;
  auto t = make(*loop, record);
  t->feed("PAUSE\n");
  t->feed("later\n");
  loop.run([](MockTransport& tr) -> Coro<void> {
    auto first = tr.read_until("\n");
    const std::string pause = co_await first;
    CHECK(pause == "PAUSE\n");
    for (int i = 0; i < 5; ++i) co_await strata::sleep(0s);
    CHECK_FALSE(tr.fed());
    CHECK_FALSE(tr.is_reading());
    tr.resume_reading();
    auto second = tr.read_until("\n");
    const std::string later = co_await second;
    CHECK(later == "LATER\n");
  }(*t));
  CHECK(record.chunks == std::vector<std::string>{"PAUSE\n", "later\n"});
}

STRATA_LOOP_TEST_CASE("MockTransport: a peer that does not read drives the write flow control",
                      "[testing][mock]") {
  TestLoop loop(TestType::kind);
  Record record;
  auto t = make(*loop, record);
  t->set_peer_receiving(false);
  t->feed("BIG\nBYE\n");
  loop.run([](MockTransport& tr, Record& rec) -> Coro<void> {
    while (!tr.close_called()) co_await strata::sleep(0s);
    CHECK(rec.pauses == 1);
    CHECK(tr.get_write_buffer_size() == 100 * 1024 + 4);
    for (int i = 0; i < 3; ++i) co_await strata::sleep(0s);
    CHECK_FALSE(tr.lost());  // close() waits for the buffer to drain
    tr.set_peer_receiving(true);
    co_await tr.wait_lost();
    CHECK(rec.resumes == 1);
    CHECK(tr.received().size() == 100 * 1024 + 4);
  }(*t, record));
  CHECK(record.lost == 1);
  CHECK_FALSE(record.lost_error);
  CHECK(t->pause_writing_calls() == 1);
  CHECK(t->resume_writing_calls() == 1);
}

STRATA_LOOP_TEST_CASE("MockTransport: EOF, reset and a failed write end the connection",
                      "[testing][mock]") {
  TestLoop loop(TestType::kind);
  SECTION("EOF: eof_received() returns false, so the transport closes") {
    Record record;
    auto t = make(*loop, record);
    t->feed("a\n");
    t->feed_eof();
    loop.run(t->wait_lost());
    CHECK(record.eofs == 1);
    CHECK(t->close_called());
    CHECK(t->take_received() == "A\n");
    CHECK_FALSE(record.lost_error);
  }
  SECTION("reset: connection_lost(ECONNRESET); a read waiting for more fails") {
    Record record;
    auto t = make(*loop, record);
    t->feed("a\n");
    t->reset();
    loop.run([](MockTransport& tr) -> Coro<void> {
      auto first = tr.read_until("\n");
      const std::string a = co_await first;
      CHECK(a == "A\n");
      bool ended = false;
      try {
        auto second = tr.read_until("\n");
        co_await second;
      } catch (const ConnectionEndedError&) {
        ended = true;
      }
      CHECK(ended);
    }(*t));
    CHECK(record.lost_error == std::errc::connection_reset);
    CHECK(t->lost_error() == std::make_error_code(std::errc::connection_reset));
  }
  SECTION("a failed write: connection_lost() with the write's error") {
    Record record;
    auto t = make(*loop, record);
    t->fail_next_write(std::make_error_code(std::errc::broken_pipe));
    t->feed("a\n");
    loop.run(t->wait_lost());
    CHECK(record.lost == 1);
    CHECK(record.lost_error == std::errc::broken_pipe);
    CHECK(t->received().empty());
  }
}

STRATA_LOOP_TEST_CASE("MockTransport on virtual time: a 30 s idle timeout, tested at once",
                      "[testing][mock][virtual-time]") {
  TestLoop loop(TestType::kind, TestClock::virtual_);
  Record record;
  auto t = make(*loop, record, 30s);
  const strata::TimePoint start = loop->time();
  t->feed("x\n");
  loop.run([](MockTransport& tr) -> Coro<void> {
    auto first = tr.read_until("\n");
    const std::string x = co_await first;
    CHECK(x == "X\n");
    co_await strata::sleep(29s);
    CHECK_FALSE(tr.close_called());
    co_await tr.wait_lost();
  }(*t));
  CHECK(t->close_called());
  // The timer was re-armed by the data, delivered in the first iterations at the start.
  CHECK(loop->time() - start == 30s);
}
