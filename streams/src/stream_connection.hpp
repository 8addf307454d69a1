#pragma once
// The protocols of a stream connection (asyncio's StreamReaderProtocol), a plain one and a
// buffered one; the state they share with the connection's StreamReader and StreamWriter
// handles, StreamConnection, is in stream_writer.hpp.

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

  StreamConnection& connection() const noexcept { return *connection_; }

 private:
  Ref<StreamConnection> connection_;
  std::shared_ptr<const ClientConnected> on_client_;  // server side only
};

/// StreamProtocol as a BufferedProtocol: the socket receives straight into the memory of the
/// read that waits for it, a read_into() span or a read_view() block, when it asks for
/// min_lend bytes or more, so those bytes are never copied. Bytes that no such read waits for are received into a per-thread scratch
/// buffer and fed to the reader, as StreamProtocol's data_received() feeds them.
///
/// For the selector loop, whose sockets receive into what get_buffer() returns. A proactor's
/// receive completes into the loop's own buffers and would be copied into get_buffer()'s
/// memory, and then again into the reader's: start_server() and open_connection() give its
/// connections a StreamProtocol.
class BufferedStreamProtocol final : public BufferedProtocol {
 public:
  BufferedStreamProtocol(Ref<StreamConnection> connection,
                         std::shared_ptr<const ClientConnected> on_client) noexcept;

  void connection_made(Transport& transport) override { plain_.connection_made(transport); }
  std::span<std::byte> get_buffer(std::size_t size_hint) override;
  void buffer_updated(std::size_t nbytes) override;
  bool eof_received() override { return plain_.eof_received(); }
  void connection_lost(std::error_code ec) override { plain_.connection_lost(ec); }
  void pause_writing() override { plain_.pause_writing(); }
  void resume_writing() override { plain_.resume_writing(); }

  /// The fewest bytes a waiting read must ask for, for the socket to receive into it.
  static constexpr std::size_t min_lend = 16 * 1024;

 private:
  /// get_buffer() when no read lends its memory: the scratch buffer.
  std::span<std::byte> get_scratch() noexcept;
  /// buffer_updated() into the scratch buffer: feeds the reader.
  void scratch_updated(std::size_t nbytes);

  StreamProtocol plain_;          // the rest of the protocol
  ReaderState* state_;            // the reader's (plain_'s connection keeps it)
  ReadIntoOp* target_ = nullptr;  // the read whose memory the last get_buffer() lent, or null
};

/// The protocol of a connection of @p loop: a BufferedStreamProtocol on the selector loop, a
/// StreamProtocol on the proactor.
std::unique_ptr<BaseProtocol> make_stream_protocol(const EventLoop& loop,
                                                   Ref<StreamConnection> connection,
                                                   std::shared_ptr<const ClientConnected> on_client);

/// A reader and writer over @p connection.
Streams make_streams(const Ref<StreamConnection>& connection);

}  // namespace strata::detail
