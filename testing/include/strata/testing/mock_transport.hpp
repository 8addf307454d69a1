#pragma once
/// @file
/// MockTransport: test a Protocol without sockets, the test playing the peer.

#include <any>
#include <cstddef>
#include <deque>
#include <map>
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
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/handle.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

namespace strata::testing {

/// Thrown by MockTransport's read_until() and read_exactly() when the connection ends before
/// the bytes they wait for arrive.
class ConnectionEndedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An in-memory stream transport for testing a protocol (a Protocol or a BufferedProtocol)
/// without sockets: the test plays the peer through a script of events, and sees what the
/// protocol wrote.
///
/// The peer's side is a queue, delivered in order, one event per loop iteration (as a socket
/// delivers one read per iteration) and only while the protocol lets the transport read:
/// feed() queues bytes in the chunking the test chooses, feed_eof() the end of the peer's
/// data, reset() and lose() the end of the connection with an error. Writes go to the peer at
/// once unless the test stops it receiving (set_peer_receiving(false)): then they stay in the
/// transport's buffer, the protocol gets pause_writing() past the high-water mark and
/// resume_writing() once the peer receives again and the buffer falls to the low-water mark.
/// fail_next_write() makes the next write() fail as a socket write would.
///
/// The ends are those of Strata's socket transports: connection_made() runs on the loop's
/// iteration after construction; close() lets the buffer drain first; connection_lost() runs
/// once, in a later iteration; the protocol is destroyed with the transport.
///
/// @par Thread safety  Loop thread only.
/// @par Lifetime  The test owns it; destroying it cancels what it has scheduled and destroys
/// the protocol (without connection_lost() if that has not run).
class MockTransport final : public Transport {
 public:
  /// A transport on @p loop for @p protocol; connection_made() runs on the next iteration.
  MockTransport(EventLoop& loop, std::unique_ptr<BaseProtocol> protocol);
  MockTransport(const MockTransport&) = delete;
  MockTransport& operator=(const MockTransport&) = delete;
  ~MockTransport();

  // ---- The peer: what it sends ----------------------------------------------------------

  /// Queues @p data as one read.
  void feed(std::string_view data);
  /// Queues @p data split into reads of the sizes in @p chunking, used in turn and repeated
  /// (e.g. {1} delivers byte by byte). @throws std::invalid_argument  a size is 0 or none.
  void feed(std::string_view data, const std::vector<std::size_t>& chunking);
  /// Queues the end of the peer's data: eof_received(); if it returns false, close().
  void feed_eof();
  /// Queues a connection reset: connection_lost(ECONNRESET), what was written is dropped.
  void reset();
  /// Queues the loss of the connection with @p error (std::error_code{}: a clean loss).
  void lose(std::error_code error);
  /// Whether the queued events have all been delivered.
  bool fed() const noexcept { return script_.empty(); }

  // ---- The peer: what it receives -------------------------------------------------------

  /// Whether the peer takes what the protocol writes (true at first). While false, writes
  /// stay in the transport's buffer, which drives pause_writing()/resume_writing().
  void set_peer_receiving(bool receiving);
  /// The bytes the peer has received and the test not yet taken.
  const std::string& received() const noexcept { return received_; }
  /// Takes (and returns) everything received so far.
  std::string take_received() { return std::exchange(received_, {}); }
  /// Waits until the received bytes contain @p separator and takes them up to and including
  /// it. @throws ConnectionEndedError  the connection ended first (the bytes stay in received()).
  Coro<std::string> read_until(std::string separator);
  /// Waits until @p n bytes have been received and takes them.
  /// @throws ConnectionEndedError  the connection ended first (the bytes stay in received()).
  Coro<std::string> read_exactly(std::size_t n);
  /// Waits until connection_lost() has run.
  Coro<void> wait_lost();
  /// The next write() fails with @p error, as a socket write would: the buffer is dropped and
  /// connection_lost(error) follows.
  void fail_next_write(std::error_code error) { write_error_ = error; }

  // ---- What happened --------------------------------------------------------------------

  /// Whether connection_made() has run.
  bool made() const noexcept { return made_; }
  /// Whether connection_lost() has run, and with what.
  bool lost() const noexcept { return lost_; }
  /// The error given to connection_lost(); empty before it ran.
  std::optional<std::error_code> lost_error() const noexcept { return lost_error_; }
  /// Whether the protocol called close().
  bool close_called() const noexcept { return close_called_; }
  /// Whether the protocol called abort().
  bool abort_called() const noexcept { return abort_called_; }
  /// Whether the protocol called write_eof().
  bool eof_written() const noexcept { return eof_written_; }
  /// How often the transport called pause_writing() on the protocol.
  int pause_writing_calls() const noexcept { return pause_calls_; }
  /// How often the transport called resume_writing() on the protocol.
  int resume_writing_calls() const noexcept { return resume_calls_; }
  /// Sets what get_extra_info(@p name) returns ("peername", "sockname", ...).
  void set_extra_info(std::string name, std::any value);

  // ---- strata::Transport ----------------------------------------------------------------

  using Transport::write;
  void write(std::span<const std::byte> data) override;
  void writelines(std::span<const std::span<const std::byte>> buffers) override;
  void write_eof() override;
  bool can_write_eof() const noexcept override { return true; }
  void abort() override;
  void close() override;
  bool is_closing() const noexcept override { return closing_; }
  std::size_t get_write_buffer_size() const noexcept override { return buffer_.size(); }
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override;
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_, high_};
  }
  void pause_reading() override { reading_ = false; }
  void resume_reading() override;
  bool is_reading() const noexcept override { return reading_ && !closing_; }
  void set_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  std::unique_ptr<BaseProtocol> exchange_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  BaseProtocol& get_protocol() const noexcept override { return *protocol_; }
  std::any get_extra_info(std::string_view name) const override;
  EventLoop& get_loop() const noexcept override { return *loop_; }

 private:
  struct Step {
    enum class Kind { data, eof, lost } kind;
    std::string data;
    std::error_code error;
  };

  void queue(Step step);
  /// Schedules pump() unless it is scheduled.
  void schedule();
  /// One loop iteration's work: connection_made(), one queued event, or the end.
  void pump();
  void deliver(const std::string& data);
  /// Ends the connection: connection_lost(@p error) on a later iteration.
  void end(std::error_code error);
  /// Moves the buffer to the peer while it receives; resume_writing() when due.
  void flush();
  void changed() { activity_.set(); }

  EventLoop* loop_;
  std::unique_ptr<BaseProtocol> protocol_;
  std::unique_ptr<BaseProtocol> retired_;  // replaced by set_protocol(), freed on the next pump
  std::deque<Step> script_;
  std::string buffer_;    // written, not yet received by the peer
  std::string received_;  // received by the peer, not yet taken by the test
  std::map<std::string, std::any, std::less<>> extra_;
  Event activity_;  // set on every change a read_until()/wait_lost() may wait for
  Handle pump_handle_;
  bool pump_scheduled_ = false;
  std::optional<std::error_code> end_error_;  // the connection ends with it once flushed
  std::optional<std::error_code> lost_error_;
  std::optional<std::error_code> write_error_;
  std::size_t high_ = 64 * 1024;
  std::size_t low_ = 16 * 1024;
  int pause_calls_ = 0;
  int resume_calls_ = 0;
  bool made_ = false;
  bool lost_ = false;
  bool reading_ = true;
  bool peer_receiving_ = true;
  bool write_paused_ = false;
  bool closing_ = false;
  bool close_called_ = false;
  bool abort_called_ = false;
  bool eof_written_ = false;
};

}  // namespace strata::testing
