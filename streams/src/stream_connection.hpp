#pragma once
// The state one stream connection shares between its protocol (fed by the transport), its
// StreamReader and its StreamWriter handles (asyncio's StreamReaderProtocol, whose
// FlowControlMixin holds the drain waiters).

#include <memory>
#include <system_error>

#include "strata/core/detail/waiter_queue.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/streams/streams.hpp"
#include "strata/transports/protocol.hpp"

namespace strata::detail {

struct StreamConnection {
  StreamConnection(EventLoop& loop, std::size_t limit) : loop(&loop), reader(limit) {}

  EventLoop* loop;
  Transport* transport = nullptr;  // null before connection_made() and after connection_lost()
  StreamReader reader;
  std::error_code lost_error;  // the error that ended the connection, if any
  bool made = false;           // connection_made() was called (once, or again by start_tls)
  bool lost = false;           // connection_lost() was called
  bool write_paused = false;   // between pause_writing() and resume_writing()
  bool over_warning = false;   // the buffer is above the forgotten-drain threshold
  bool warned = false;         // the forgotten-drain warning was logged
  WaiterQueue drain_waiters;
  WaiterQueue close_waiters;

  /// The error drain() and wait_closed() report for a lost connection, or null.
  std::exception_ptr lost_exception() const;
};

/// The protocol of a stream connection: feeds the reader, tracks flow control and the end of
/// the connection, and on a server starts the handler once connected.
class StreamProtocol final : public Protocol {
 public:
  StreamProtocol(std::shared_ptr<StreamConnection> connection,
                 std::shared_ptr<const ClientConnected> on_client) noexcept
      : connection_(std::move(connection)), on_client_(std::move(on_client)) {}

  void connection_made(Transport& transport) override;
  void data_received(std::span<const std::byte> data) override;
  bool eof_received() override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override;
  void resume_writing() override;

 private:
  std::shared_ptr<StreamConnection> connection_;
  std::shared_ptr<const ClientConnected> on_client_;  // server side only
};

/// A reader and writer over @p connection.
Streams make_streams(const std::shared_ptr<StreamConnection>& connection);

}  // namespace strata::detail
