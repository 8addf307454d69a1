// StreamWriter and the protocol under both streams (asyncio.StreamWriter and
// StreamReaderProtocol).

#include "strata/streams/stream_writer.hpp"

#include <memory>
#include <span>
#include <string>
#include <utility>

#include "stream_connection.hpp"
#include "strata/core/detail/assert.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"
#include "strata/core/socket_address.hpp"
#include "strata/core/task.hpp"

namespace strata {

namespace detail {

namespace {
/// A writer's buffer above this many times the high-water mark means drain() is forgotten.
constexpr std::size_t forgotten_drain_factor = 16;
}  // namespace

std::exception_ptr StreamConnection::lost_exception() const {
  if (!lost) return nullptr;
  const std::error_code ec = lost_error ? lost_error : std::make_error_code(std::errc::connection_reset);
  return std::make_exception_ptr(std::system_error(ec, "Connection lost"));
}

StreamWriter make_writer(Ref<StreamConnection> connection) noexcept {
  return StreamWriter(std::move(connection));
}

Streams make_streams(const Ref<StreamConnection>& connection) {
  return Streams{connection->reader, make_writer(connection)};
}

// ---- The protocol ------------------------------------------------------------------------

namespace {

/// The handler of one server connection: the connection closes when it returns or throws.
Coro<void> run_handler(std::shared_ptr<const ClientConnected> on_client,
                       Ref<StreamConnection> connection) {
  Streams streams = make_streams(connection);
  try {
    Coro<void> handler = (*on_client)(streams.reader, streams.writer);
    co_await handler;
  } catch (const CancelledError&) {
    streams.writer.close();
    throw;
  } catch (...) {
    connection->loop->call_exception_handler(
        {"Unhandled exception in client_connected_cb", std::current_exception(), "StreamWriter",
         {}});
  }
  streams.writer.close();
}

}  // namespace

void StreamProtocol::connection_made(Transport& transport) {
  StreamConnection& c = *connection_;
  c.transport = &transport;
  c.reader.clear_transport();  // start_tls() makes the connection again, over TLS
  c.reader.set_transport(transport);
  if (std::exchange(c.made, true)) return;
  if (on_client_) create_task(run_handler(on_client_, connection_));
}

void StreamProtocol::data_received(std::span<const std::byte> data) {
  connection_->reader.feed(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()),
                           /*resume_now=*/true);
}

bool StreamProtocol::eof_received() {
  StreamConnection& c = *connection_;
  c.reader.feed_eof();
  // Stay half-open so that the writer may still send (asyncio, except over TLS, which cannot).
  return c.transport != nullptr && c.transport->can_write_eof();
}

void StreamProtocol::connection_lost(std::error_code ec) {
  StreamConnection& c = *connection_;
  c.lost = true;
  c.lost_error = ec;
  c.transport = nullptr;
  c.reader.clear_transport();
  if (ec) {
    c.reader.set_exception(std::make_exception_ptr(std::system_error(ec, "Connection lost")));
  } else if (!c.reader.at_eof()) {
    c.reader.feed_eof();
  }
  for (Waiter* w = c.drain_waiters.front(); w != nullptr; w = WaiterQueue::next(*w)) {
    if (!w->done()) w->wake();
  }
  for (Waiter* w = c.close_waiters.front(); w != nullptr; w = WaiterQueue::next(*w)) {
    if (!w->done()) w->wake();
  }
}

// ---- BufferedStreamProtocol --------------------------------------------------------------

namespace {
/// Where the bytes that no waiting read lends memory for are received, before the reader
/// copies them: one per thread, as a transport's own receive buffer is one per loop.
std::span<std::byte> scratch_buffer() {
  constexpr std::size_t size = 64 * 1024;
  thread_local std::unique_ptr<std::byte[]> scratch;
  if (!scratch) scratch.reset(new std::byte[size]);
  return {scratch.get(), size};
}
}  // namespace

BufferedStreamProtocol::BufferedStreamProtocol(Ref<StreamConnection> connection,
                                               std::shared_ptr<const ClientConnected> on_client) noexcept
    : plain_(std::move(connection), std::move(on_client)),
      state_(plain_.connection().reader.state_.get()) {}

std::span<std::byte> BufferedStreamProtocol::get_buffer(std::size_t /*size_hint*/) {
  // A read_into() of a span or a read_view() waits, not woken yet (so nothing is buffered, and
  // neither EOF nor an error came), for min_lend bytes or more: its own memory. (A small read
  // would make the socket give up only that much, and the rest would wait in the kernel for a
  // loop iteration per read, where the scratch buffer takes it all at once. A view's block may
  // be smaller than the read: it grows after a receive fills it.)
  ReadIntoOp* into = state_->waiting_into;
  if (into == nullptr || into->into_string_ != nullptr || into->waiter_.done() ||
      into->n_ < min_lend || state_->size() != 0) [[unlikely]] {
    return get_scratch();
  }
  STRATA_ASSERT(!state_->eof && !state_->exception);
  if (into->view_ && into->into_ == nullptr) into->take_view_block(0);
  target_ = into;
  return {reinterpret_cast<std::byte*>(into->into_ + into->filled_), into->n_ - into->filled_};
}

void BufferedStreamProtocol::buffer_updated(std::size_t nbytes) {
  ReadIntoOp* into = target_;
  if (into == nullptr) [[unlikely]] {
    scratch_updated(nbytes);
    return;
  }
  // Nothing ran since get_buffer(): the read still waits, with its memory where it lent it.
  target_ = nullptr;
  into->filled_ += nbytes;
  if (into->view_) state_->note_view_fill(into->filled_);
  into->waiter_.wake_now();
}

std::span<std::byte> BufferedStreamProtocol::get_scratch() noexcept {
  target_ = nullptr;
  return scratch_buffer();
}

void BufferedStreamProtocol::scratch_updated(std::size_t nbytes) {
  plain_.connection().reader.feed(
      std::string_view(reinterpret_cast<const char*>(scratch_buffer().data()), nbytes),
      /*resume_now=*/true);
}

std::unique_ptr<BaseProtocol> make_stream_protocol(const EventLoop& loop,
                                                   Ref<StreamConnection> connection,
                                                   std::shared_ptr<const ClientConnected> on_client) {
  if (loop.kind() == LoopKind::proactor) {
    return std::make_unique<StreamProtocol>(std::move(connection), std::move(on_client));
  }
  return std::make_unique<BufferedStreamProtocol>(std::move(connection), std::move(on_client));
}

void StreamProtocol::pause_writing() { connection_->write_paused = true; }

void StreamProtocol::resume_writing() {
  StreamConnection& c = *connection_;
  c.write_paused = false;
  for (Waiter* w = c.drain_waiters.front(); w != nullptr; w = WaiterQueue::next(*w)) {
    if (!w->done()) w->wake();
  }
}

// ---- DrainOp -----------------------------------------------------------------------------

void DrainOp::await_suspend(std::coroutine_handle<> h) {
  StreamConnection& c = *connection_;
  c.drain_waiters.suspend(waiter_, h);
  waiting_ = true;
  if (!c.write_paused) {
    yielding_ = true;
    waiter_.wake();  // resumes in the next iteration, never inside this call
  }
}

void DrainOp::await_resume() {
  if (clear_) return;  // await_ready() found nothing to wait for and nothing wrong
  StreamConnection& c = *connection_;
  if (std::exchange(waiting_, false)) {
    c.drain_waiters.resume(waiter_);
    // Woken by the end of the connection while paused: a clean end lets this drain return
    // (asyncio). After a yield on a closing connection, a lost one throws.
    if (c.lost && !c.lost_error && !yielding_) return;
  }
  if (std::exception_ptr e = c.reader.exception()) std::rethrow_exception(e);
  if (std::exception_ptr e = c.lost_exception()) std::rethrow_exception(e);
}

}  // namespace detail

// ---- StreamWriter ------------------------------------------------------------------------

namespace {

/// Logs the forgotten-drain warning when the buffer has just passed 16 x the high-water mark.
void check_forgotten_drain(detail::StreamConnection& c) {
  const std::size_t size = c.transport->get_write_buffer_size();
  const std::size_t high = c.transport->get_write_buffer_limits().second;
  if (size > detail::forgotten_drain_factor * high) [[unlikely]] {
    if (c.over_warning) return;
    c.over_warning = true;
    if (c.warned && !c.loop->get_debug()) return;
    c.warned = true;
    std::string peer = "a connection";
    if (auto addr = c.transport->get_extra_info_as<SocketAddress>("peername")) {
      peer = "the connection to " + addr->to_string();
    }
    log(LogLevel::warning, "StreamWriter: " + std::to_string(size) + " bytes wait to be sent on " +
                               peer + ", over 16 x the high-water mark of " +
                               std::to_string(high) +
                               ": the writer does not drain (co_await writer.drain() after "
                               "writing, or use co_await writer.send(data))");
  } else if (c.over_warning && size <= high) {
    c.over_warning = false;
  }
}

}  // namespace

void StreamWriter::write(std::span<const std::byte> data) {
  detail::StreamConnection& c = *connection_;
  if (c.transport == nullptr) return;  // the connection is gone: dropped, as the transport would
  c.transport->write(data);
  // Below the high-water mark the transport is not paused, and the check cannot fire.
  if (c.write_paused || c.over_warning) check_forgotten_drain(c);
}

void StreamWriter::write(std::string_view data) {
  write(std::as_bytes(std::span(data.data(), data.size())));
}

void StreamWriter::writelines(std::span<const std::span<const std::byte>> buffers) {
  detail::StreamConnection& c = *connection_;
  if (c.transport == nullptr) return;
  c.transport->writelines(buffers);
  if (c.write_paused || c.over_warning) check_forgotten_drain(c);
}

detail::DrainOp StreamWriter::drain() { return detail::DrainOp(connection_); }

detail::DrainOp StreamWriter::send(std::span<const std::byte> data) {
  write(data);
  return detail::DrainOp(connection_);
}

detail::DrainOp StreamWriter::send(std::string_view data) {
  write(data);
  return detail::DrainOp(connection_);
}

void StreamWriter::write_eof() {
  // After the connection is gone there is nothing to end (asyncio's write_eof() on a closing
  // transport returns).
  if (connection_->transport != nullptr) connection_->transport->write_eof();
}

bool StreamWriter::can_write_eof() const noexcept {
  const detail::StreamConnection& c = *connection_;
  return c.transport != nullptr && c.transport->can_write_eof();
}

void StreamWriter::close() {
  if (connection_->transport != nullptr) connection_->transport->close();
}

bool StreamWriter::is_closing() const noexcept {
  const detail::StreamConnection& c = *connection_;
  return c.transport == nullptr || c.transport->is_closing();
}

namespace {
Coro<void> wait_lost(detail::Ref<detail::StreamConnection> connection) {
  if (!connection->lost) {
    struct Awaiter {
      detail::StreamConnection& c;
      detail::Waiter waiter;
      bool await_ready() const noexcept { return c.lost; }
      void await_suspend(std::coroutine_handle<> h) { c.close_waiters.suspend(waiter, h); }
      void await_resume() { c.close_waiters.resume(waiter); }
    };
    Awaiter closed{*connection, {}};
    co_await closed;
  }
  if (connection->lost_error) {
    throw std::system_error(connection->lost_error, "Connection lost");
  }
}
}  // namespace

Coro<void> StreamWriter::wait_closed() { return wait_lost(connection_); }

std::any StreamWriter::get_extra_info(std::string_view name) const {
  const detail::StreamConnection& c = *connection_;
  if (c.transport == nullptr) return {};
  return c.transport->get_extra_info(name);
}

namespace {
Coro<void> upgrade(detail::Ref<detail::StreamConnection> connection, SslOptions ssl,
                   bool server_side) {
  detail::DrainOp drained(connection);
  co_await drained;
  if (connection->transport == nullptr) {
    throw InvalidStateError("start_tls(): the connection is closed");
  }
  // The stream protocol stays: the TLS transport calls its connection_made() again, which
  // points the reader and this writer at the TLS transport.
  Coro<Transport*> upgrading = strata::start_tls(*connection->transport, std::move(ssl),
                                                 server_side);
  co_await upgrading;
}
}  // namespace

Coro<void> StreamWriter::start_tls(SslOptions ssl, bool server_side) {
  return upgrade(connection_, std::move(ssl), server_side);
}

Transport& StreamWriter::transport() const {
  if (connection_->transport == nullptr) {
    throw InvalidStateError("StreamWriter::transport(): the connection is gone");
  }
  return *connection_->transport;
}

}  // namespace strata
