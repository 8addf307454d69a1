#pragma once
// The protocol of a stream connection (asyncio's StreamReaderProtocol); the state it shares
// with the connection's StreamReader and StreamWriter handles, StreamConnection, is in
// stream_writer.hpp.

#include <memory>
#include <system_error>

#include "strata/core/detail/waiter_queue.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/streams/streams.hpp"
#include "strata/transports/protocol.hpp"

namespace strata::detail {

/// The protocol of a stream connection: feeds the reader, tracks flow control and the end of
/// the connection, and on a server starts the handler once connected.
class StreamProtocol final : public Protocol {
 public:
  StreamProtocol(Ref<StreamConnection> connection,
                 std::shared_ptr<const ClientConnected> on_client) noexcept
      : connection_(std::move(connection)), on_client_(std::move(on_client)) {}

  void connection_made(Transport& transport) override;
  void data_received(std::span<const std::byte> data) override;
  bool eof_received() override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override;
  void resume_writing() override;

 private:
  Ref<StreamConnection> connection_;
  std::shared_ptr<const ClientConnected> on_client_;  // server side only
};

/// A reader and writer over @p connection.
Streams make_streams(const Ref<StreamConnection>& connection);

}  // namespace strata::detail
