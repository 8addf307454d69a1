// The selector transport of a connected stream descriptor: asyncio's
// selector_events._SelectorSocketTransport and unix_events._UnixReadPipeTransport /
// _UnixWritePipeTransport in one class (see stream_transport.hpp).
//
// The transport is written once, against the loop's I/O interface (detail::IoChannel): it
// asks its channel for reads and hands it bytes to write, and keeps the protocol's grammar,
// flow control, the closing handshake and sendfile(). How the bytes move is the loop's: the
// selector loop waits for readiness and calls recv()/send() (readiness_channel.cpp in core),
// the proactor loop starts completion operations (proactor_event_loop.cpp).
//
// Costs: what the channel costs, plus two indirect calls per request; an idle connection is
// this object, its channel and its names. sendfile() on a socket (asyncio's _sendfile_native):
// sendfile(2) straight from the file to the socket, one call per writability report; the
// file's bytes never enter the write buffer. What the protocol wrote before goes first: the
// native send starts once the buffer is empty. The write path pays nothing for it: a sendfile
// in progress sets cannot_write_, which write() tests anyway.

#include "stream_transport.hpp"
#include "water_marks.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "strata/core/detail/assert.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"

namespace strata::detail {

namespace {

constexpr std::size_t read_buffer_size = 64 * 1024;  // asked of a BufferedProtocol
constexpr std::size_t default_high_water = 64 * 1024;
constexpr std::uint32_t dropped_writes_warning = 5;   // asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES

// ---- Errors ----------------------------------------------------------------------------

std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

/// Whether sendfile(2) failed on the file's side (the connection is fine): a read error, or a
/// file that the kernel cannot splice. Everything else is the socket's and ends the connection.
bool is_file_error(int e) noexcept {
  switch (e) {
    case EIO:
    case EINVAL:
    case EOVERFLOW:
    case ESPIPE:
    case EBADF:
    case ENOSYS:
    case EOPNOTSUPP:
    case ENOMEM:
    case EFAULT:
    case EISDIR:
    case ENXIO:
      return true;
    default:
      return false;
  }
}

/// Whether sendfile(2) failing with @p e before it sent anything means that this file cannot
/// be sent natively at all (asyncio's SendfileNotAvailableError): the fallback takes over.
bool is_sendfile_unavailable(int e) noexcept {
  return e == EINVAL || e == ENOSYS || e == EOPNOTSUPP;
}

/// The most one sendfile(2) call moves (Linux caps a call at this anyway).
constexpr std::uint64_t max_sendfile_call = 0x7ffff000;

// ---- The transport ----------------------------------------------------------------------

/// Where the protocol is in its grammar, `connection_made (data_received | buffer_updated)*
/// eof_received? connection_lost` (asyncio's AppProtocolState); debug builds assert each
/// transition.
enum class ProtocolState : std::uint8_t {
  made,       ///< connection_made() is scheduled
  connected,  ///< connection_made() was called
  eof,        ///< eof_received() was called
  lost,       ///< connection_lost() was called; the transport is about to be destroyed
};

class StreamTransport final : public Transport,
                              public LoopResource,
                              public SendfileHost,
                              private IoClient {
 public:
  StreamTransport(EventLoop& loop, int fd, StreamKind kind, std::unique_ptr<BaseProtocol> protocol,
                  Future<void> waiter, ConnectionTracker* tracker)
      : loop_(&loop),
        tracker_(tracker),
        waiter_(std::move(waiter)),
        fd_(fd),
        kind_(kind),
        cannot_write_(kind == StreamKind::read_pipe) {
    adopt_protocol(std::move(protocol));
  }

  ~StreamTransport() {
    if (fd_ >= 0 && !channel_) ::close(fd_);
  }

  /// Registers with the loop and schedules connection_made(). On an exception nothing is
  /// registered and the descriptor is left open (the caller still owns it).
  void start();

  // ---- BaseTransport ----
  void close() override;
  bool is_closing() const noexcept override { return closing_; }
  std::any get_extra_info(std::string_view name) const override;
  EventLoop& get_loop() const noexcept override { return *loop_; }

  // ---- Transport ----
  void write(std::span<const std::byte> data) override;
  void writelines(std::span<const std::span<const std::byte>> buffers) override;
  void write_eof() override;
  bool can_write_eof() const noexcept override { return kind_ != StreamKind::read_pipe; }
  void abort() override { force_close(std::make_error_code(std::errc::operation_canceled)); }
  std::size_t get_write_buffer_size() const noexcept override { return buffered(); }
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override;
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_water_, high_water_};
  }
  void pause_reading() override;
  void resume_reading() override;
  bool is_reading() const noexcept override {
    return kind_ != StreamKind::write_pipe && !reading_paused_ && !closing_ && !eof_received_;
  }
  void set_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  std::unique_ptr<BaseProtocol> exchange_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  BaseProtocol& get_protocol() const noexcept override { return *protocol_; }

  // ---- LoopResource ----
  void loop_closing() noexcept override;
  std::size_t write_buffered() const noexcept override { return buffered(); }

  // ---- SendfileHost ----
  void attach_sendfile(SendfileJob& job) override;
  void detach_sendfile() noexcept override;
  bool start_native_sendfile() override;
  bool sendfile_write(std::span<const std::byte> data) override {
    send_or_buffer(data);  // a failure ends the job at once (force_close())
    return buffered() > high_water_;
  }

  void detach_tracker() noexcept { tracker_ = nullptr; }
  /// For a failed start(): the destructor must leave the descriptor open.
  void disown_descriptor() noexcept {
    if (channel_) static_cast<void>(channel_.release()->release());
    fd_ = -1;
  }

 private:
  static std::pair<Protocol*, BufferedProtocol*> classify(BaseProtocol* p) noexcept {
    // A BufferedProtocol wins, as in asyncio (isinstance(protocol, BufferedProtocol)).
    if (auto* b = dynamic_cast<BufferedProtocol*>(p)) return {nullptr, b};
    return {dynamic_cast<Protocol*>(p), nullptr};
  }
  void adopt_protocol(std::unique_ptr<BaseProtocol> protocol) noexcept {
    std::tie(plain_, buffered_) = classify(protocol.get());
    protocol_ = std::move(protocol);
    if (channel_) channel_->set_client_buffers(buffered_ != nullptr);
  }

  std::size_t buffered() const noexcept { return channel_ ? channel_->buffered() : 0; }

  // What the channel reports (IoClient).
  std::span<std::byte> read_target() noexcept override;
  void read_done(std::span<const std::byte> data) noexcept override;
  void read_ended(std::error_code ec) noexcept override;
  void write_done(std::error_code ec) noexcept override;
  void writable() noexcept override;
  void readable() noexcept override;
  void on_eof() noexcept;
  void on_write_pipe_hangup() noexcept;

  // Protocol callbacks and the end of the connection.
  void call_connection_made() noexcept;
  void call_connection_lost(std::error_code ec) noexcept;
  void schedule_connection_lost(std::error_code ec) noexcept;
  /// asyncio's _force_close: drops the buffer, stops I/O, schedules connection_lost(ec).
  void force_close(std::error_code ec) noexcept;
  /// A protocol callback threw: report it to the loop, then abort with callback_failed.
  void callback_failed(const char* callback) noexcept;
  /// read_target() after get_buffer() returned an empty buffer: aborts; returns it.
  [[gnu::cold]] std::span<std::byte> empty_read_target() noexcept;
  void report(const char* callback, std::exception_ptr e) noexcept;
  void destroy() noexcept;
  void release_descriptor() noexcept;

  // Writing.
  [[noreturn, gnu::cold]] void throw_cannot_write(const char* method) const;
  /// write() past its guard: the channel sends what it can now and buffers the rest.
  [[gnu::always_inline]] inline void send_or_buffer(std::span<const std::byte> data);
  void start_writer() noexcept;
  void maybe_pause_protocol() noexcept;
  void maybe_resume_protocol() noexcept;
  /// Tells the channel whether write_done() must hear of every send: only while something
  /// waits for the buffer to shrink (IoChannel::report_sends()).
  void update_send_reports() noexcept {
    if (channel_) {
      channel_->report_sends(protocol_paused_ || closing_ || eof_written_ || sendfile_ != nullptr);
    }
  }
  void drop_write() noexcept;

  // sendfile().
  /// One sendfile(2) of the native job (the buffer is empty): then waits for writability, or
  /// completes the job, or ends the connection.
  void sendfile_step() noexcept;
  /// on_writable() with a job and an empty buffer.
  void sendfile_writable() noexcept;
  /// The connection ends under the job: lets go of it with @p ec (no protocol calls).
  void drop_sendfile(std::error_code ec) noexcept;

  /// Reads (a write pipe: watches for the read end closing).
  void add_reader() {
    if (kind_ == StreamKind::write_pipe) {
      channel_->watch_readable(true);
    } else {
      channel_->start_reading();
    }
    reader_ = true;
  }
  void remove_reader() noexcept {
    if (reader_) {
      if (kind_ == StreamKind::write_pipe) {
        try {
          channel_->watch_readable(false);
        } catch (...) {  // turning a watch off does not fail
        }
      } else {
        channel_->stop_reading();
      }
      reader_ = false;
    }
  }
  /// Stops the writability reports of a native sendfile.
  void remove_writer() noexcept {
    if (writer_) {
      try {
        channel_->watch_writable(false);
      } catch (...) {  // turning a watch off does not fail
      }
      writer_ = false;
    }
  }

  void store_names() noexcept;
  std::any name_at(std::size_t which) const;

  EventLoop* loop_;
  std::unique_ptr<BaseProtocol> protocol_;
  Protocol* plain_ = nullptr;            // protocol_ as a Protocol, or null
  BufferedProtocol* buffered_ = nullptr;  // protocol_ as a BufferedProtocol, or null
  ConnectionTracker* tracker_;
  SendfileJob* sendfile_ = nullptr;  // the sendfile() in progress, or null
  Future<void> waiter_;  // completed after connection_made(); then released
  // The peer and socket addresses, taken at creation (getpeername fails once the peer has
  // gone): [peer length][socket length][peer bytes][socket bytes], lengths in one byte each.
  std::unique_ptr<std::byte[]> names_;
  IoChannelPtr channel_;  // from start() until connection_lost() (or the loop closing)
  std::size_t high_water_ = default_high_water;
  std::size_t low_water_ = default_high_water / 4;
  int fd_;
  std::uint32_t dropped_writes_ = 0;
  StreamKind kind_;
  ProtocolState state_ = ProtocolState::made;
  bool closing_ = false;          // close(), abort() or an error: no more reading or writing
  bool conn_lost_ = false;        // connection_lost() is scheduled (asyncio's _conn_lost)
  bool eof_written_ = false;      // write_eof() was called
  bool cannot_write_ = false;     // a read pipe, or write_eof() was called: write() throws
  bool eof_received_ = false;     // the peer ended its side
  bool reading_paused_ = false;   // pause_reading()
  bool protocol_paused_ = false;  // pause_writing() was called, resume_writing() not yet
  bool reader_ = false;           // the channel reads (or, on a write pipe, watches)
  bool writer_ = false;           // the channel watches for writability (native sendfile)
  bool is_socket_ = false;        // recv/send rather than read/write
  bool sendfile_paused_reading_ = false;  // attach_sendfile() paused reading: resume after
};

// ---- Creation ----------------------------------------------------------------------------

void StreamTransport::start() {
  if (kind_ == StreamKind::socket) {
    is_socket_ = true;
    store_names();
  }
  bool watch = kind_ != StreamKind::write_pipe;
  if (kind_ != StreamKind::socket) {
    struct stat st {};
    if (::fstat(fd_, &st) == 0) {
      is_socket_ = S_ISSOCK(st.st_mode);
      // A write pipe watches for reading too: its descriptor turns readable (an error or a
      // hang-up) when the read end closes, which ends the connection at once rather than at
      // the next write. Not for character devices, which turn readable with input.
      if (kind_ == StreamKind::write_pipe) watch = is_socket_ || S_ISFIFO(st.st_mode);
    }
  }
  channel_ = loop_->open_channel(fd_, is_socket_ ? ChannelKind::socket : ChannelKind::pipe, *this);
  channel_->set_client_buffers(buffered_ != nullptr);
  update_send_reports();
  // Reading from now, rather than after connection_made(), makes a refusal (a descriptor past
  // FD_SETSIZE on select) throw here, before any callback is scheduled. The loop cannot report
  // a read before connection_made() runs: that is already in its ready queue.
  try {
    if (watch) add_reader();
    loop_->call_soon([this] { call_connection_made(); });
  } catch (...) {
    remove_reader();
    throw;  // make_stream_transport() takes the descriptor back from the channel
  }
  loop_->attach_resource(*this);
  if (tracker_ != nullptr) tracker_->connection_opened(*this);
}

void StreamTransport::store_names() noexcept {
  SocketAddress peer;
  SocketAddress self;
  socklen_t peer_len = SocketAddress::capacity();
  if (::getpeername(fd_, peer.mutable_data(), &peer_len) != 0) peer_len = 0;
  socklen_t self_len = SocketAddress::capacity();
  if (::getsockname(fd_, self.mutable_data(), &self_len) != 0) self_len = 0;
  peer_len = std::min<socklen_t>(peer_len, 255);  // every family's address fits in one byte
  self_len = std::min<socklen_t>(self_len, 255);
  try {
    names_.reset(new std::byte[2 + peer_len + self_len]);
  } catch (const std::bad_alloc&) {
    return;  // get_extra_info() then reports no names
  }
  names_[0] = static_cast<std::byte>(peer_len);
  names_[1] = static_cast<std::byte>(self_len);
  std::memcpy(names_.get() + 2, peer.data(), peer_len);
  std::memcpy(names_.get() + 2 + peer_len, self.data(), self_len);
  // TCP: no Nagle delay (asyncio's _set_nodelay, done by every socket transport).
  if (self_len != 0 && (self.data()->sa_family == AF_INET || self.data()->sa_family == AF_INET6)) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

std::any StreamTransport::name_at(std::size_t which) const {
  if (!names_) return {};
  const auto peer_len = static_cast<socklen_t>(names_[0]);
  const auto self_len = static_cast<socklen_t>(names_[1]);
  const std::byte* p = names_.get() + 2 + (which == 0 ? 0 : peer_len);
  const socklen_t len = which == 0 ? peer_len : self_len;
  if (len == 0) return {};
  try {
    return SocketAddress::from_native(reinterpret_cast<const sockaddr*>(p), len);
  } catch (const std::invalid_argument&) {
    return {};
  }
}

std::any StreamTransport::get_extra_info(std::string_view name) const {
  if (name == "peername") return name_at(0);
  if (name == "sockname") return name_at(1);
  if (channel_) {
    if (name == "socket" && kind_ == StreamKind::socket) return channel_->fd();
    if (name == "pipe" && kind_ != StreamKind::socket) return channel_->fd();
  }
  return {};
}

// ---- Protocol callbacks --------------------------------------------------------------------

void StreamTransport::report(const char* callback, std::exception_ptr e) noexcept {
  std::string message = "Fatal error: protocol ";
  message += callback;
  message += "() threw; the connection is aborted";
  loop_->call_exception_handler({std::move(message), std::move(e), "StreamTransport", {}});
}

void StreamTransport::callback_failed(const char* callback) noexcept {
  report(callback, std::current_exception());
  force_close(make_error_code(errc::callback_failed));
}

void StreamTransport::call_connection_made() noexcept {
  STRATA_ASSERT(state_ == ProtocolState::made);
  state_ = ProtocolState::connected;
  try {
    if (buffered_ != nullptr) {
      buffered_->connection_made(*this);
    } else {
      plain_->connection_made(*this);
    }
  } catch (...) {
    // The creator awaiting the waiter gets the exception; with no waiter, the loop's handler.
    if (waiter_.valid() && !waiter_.done()) {
      waiter_.set_exception(std::current_exception());
      waiter_ = {};
      force_close(make_error_code(errc::callback_failed));
    } else {
      waiter_ = {};
      callback_failed("connection_made");
    }
    return;
  }
  if (waiter_.valid()) {
    // Nobody waits for a cancelled waiter, so nobody would close the transport: close it.
    if (!waiter_.done()) {
      waiter_.set_result();
    } else if (waiter_.cancelled()) {
      close();
    }
    waiter_ = {};
  }
}

void StreamTransport::schedule_connection_lost(std::error_code ec) noexcept {
  try {
    loop_->call_soon([this, ec] { call_connection_lost(ec); });
  } catch (...) {
    // The loop refused (out of memory): report now rather than never.
    call_connection_lost(ec);
  }
}

void StreamTransport::call_connection_lost(std::error_code ec) noexcept {
  STRATA_ASSERT(conn_lost_);
  STRATA_ASSERT(state_ == ProtocolState::connected || state_ == ProtocolState::eof);
  STRATA_ASSERT(sendfile_ == nullptr);
  state_ = ProtocolState::lost;
  try {
    protocol_->connection_lost(ec);
  } catch (...) {
    report("connection_lost", std::current_exception());
  }
  release_descriptor();
  if (ConnectionTracker* t = std::exchange(tracker_, nullptr)) t->connection_closed(*this);
  // Destroyed in a later iteration, as is the protocol: the protocol's own connection_lost()
  // may still be on the stack when this runs from inside one of its calls.
  try {
    loop_->call_soon([this] { destroy(); });
  } catch (...) {
    // Left attached: loop_closing() frees it.
  }
}

void StreamTransport::release_descriptor() noexcept {
  remove_reader();
  remove_writer();
  channel_.reset();  // closes the descriptor
  fd_ = -1;
}

void StreamTransport::destroy() noexcept {
  loop_->detach_resource(*this);
  delete this;
}

void StreamTransport::loop_closing() noexcept {
  if (state_ == ProtocolState::lost) {  // connection_lost() returned: only the delete is due
    destroy();
    return;
  }
  if (channel_) channel_->discard_writes();
  closing_ = true;
  conn_lost_ = true;
  drop_sendfile(make_error_code(errc::loop_closed));
  if (waiter_.valid() && !waiter_.done()) waiter_.cancel("event loop closed");
  waiter_ = {};
  if (state_ != ProtocolState::made) {
    // connection_lost() directly: the loop is closing and will not run what is scheduled.
    call_connection_lost(make_error_code(errc::loop_closed));
  } else {
    // connection_made() never ran, so the protocol hears nothing (asyncio's
    // _protocol_connected); the tracker still hears that the transport is gone.
    state_ = ProtocolState::lost;
    release_descriptor();
    if (ConnectionTracker* t = std::exchange(tracker_, nullptr)) t->connection_closed(*this);
  }
  destroy();
}

// ---- Closing ---------------------------------------------------------------------------

void StreamTransport::close() {
  if (closing_) return;
  closing_ = true;
  update_send_reports();
  // A sendfile() in progress stops where it is and throws: close() does not wait for the rest
  // of a file as it waits for the buffer (asyncio's fallback raises ConnectionError too).
  if (sendfile_ != nullptr) [[unlikely]] {
    drop_sendfile(std::make_error_code(std::errc::connection_aborted));
  }
  // A write pipe keeps watching for a closed read end while its buffer drains.
  if (kind_ != StreamKind::write_pipe || buffered() == 0) remove_reader();
  if (buffered() == 0) {
    conn_lost_ = true;
    remove_writer();
    schedule_connection_lost({});
  }
  // Otherwise write_done() calls connection_lost() once the buffer is sent.
}

void StreamTransport::force_close(std::error_code ec) noexcept {
  if (conn_lost_) return;
  drop_sendfile(ec);
  if (channel_) channel_->discard_writes();
  remove_writer();
  closing_ = true;
  remove_reader();
  conn_lost_ = true;
  schedule_connection_lost(ec);
}

// ---- Reading ---------------------------------------------------------------------------

std::span<std::byte> StreamTransport::read_target() noexcept {
  std::span<std::byte> buf;
  if (buffered_ == nullptr) return buf;  // the protocol was swapped for a plain one
  try {
    buf = buffered_->get_buffer(read_buffer_size);
  } catch (...) {
    callback_failed("get_buffer");
    return {};
  }
  if (buf.empty()) [[unlikely]] return empty_read_target();
  return buf;
}

std::span<std::byte> StreamTransport::empty_read_target() noexcept {
  log(LogLevel::warning, "BufferedProtocol::get_buffer() returned an empty buffer; the "
                         "connection is aborted (return at least one byte)");
  force_close(std::make_error_code(std::errc::no_buffer_space));
  return {};
}

void StreamTransport::read_done(std::span<const std::byte> data) noexcept {
  if (conn_lost_) [[unlikely]] return;
  STRATA_ASSERT(state_ == ProtocolState::connected);
  if (buffered_ != nullptr) {
    try {
      buffered_->buffer_updated(data.size());
    } catch (...) {
      callback_failed("buffer_updated");
    }
    return;
  }
  try {
    plain_->data_received(data);
  } catch (...) {
    callback_failed("data_received");
  }
}

void StreamTransport::read_ended(std::error_code ec) noexcept {
  if (conn_lost_) return;
  reader_ = false;  // the channel stopped reading at the end or the failure
  if (ec) {
    force_close(ec);
  } else {
    on_eof();
  }
}

void StreamTransport::readable() noexcept {
  if (conn_lost_ || state_ == ProtocolState::made) return;
  on_write_pipe_hangup();
}

void StreamTransport::on_eof() noexcept {
  STRATA_ASSERT(state_ == ProtocolState::connected);
  state_ = ProtocolState::eof;
  eof_received_ = true;
  remove_reader();  // nothing more to read; the write side may stay open
  bool keep_open = false;
  try {
    keep_open = buffered_ != nullptr ? buffered_->eof_received() : plain_->eof_received();
  } catch (...) {
    callback_failed("eof_received");
    return;
  }
  // A read pipe has nothing left to do: it closes whatever eof_received() says (asyncio).
  if (!keep_open || kind_ == StreamKind::read_pipe) close();
}

void StreamTransport::on_write_pipe_hangup() noexcept {
  // The read end closed: what is still buffered, or a file being sent, can never be delivered
  // (asyncio's _UnixWritePipeTransport._read_ready).
  if (buffered() != 0 || sendfile_ != nullptr) {
    force_close(std::make_error_code(std::errc::broken_pipe));
  } else {
    close();
  }
}

void StreamTransport::pause_reading() {
  if (!is_reading()) return;
  reading_paused_ = true;
  remove_reader();
}

void StreamTransport::resume_reading() {
  if (kind_ == StreamKind::write_pipe || closing_ || !reading_paused_) return;
  reading_paused_ = false;
  if (!eof_received_ && !reader_) add_reader();
}

// ---- Writing ---------------------------------------------------------------------------

void StreamTransport::throw_cannot_write(const char* method) const {
  if (sendfile_ != nullptr) {
    throw InvalidStateError(std::string(method) +
                            "() while a sendfile is in progress on this transport: await the "
                            "sendfile() first (asyncio raises RuntimeError)");
  }
  if (kind_ == StreamKind::read_pipe) {
    throw InvalidStateError(std::string(method) + "() on a read pipe's transport: it cannot write");
  }
  throw InvalidStateError(std::string(method) + "() after write_eof(): the sending side is closed");
}

void StreamTransport::start_writer() noexcept {
  if (writer_) return;
  try {
    channel_->watch_writable(true);
    writer_ = true;
  } catch (const std::system_error& e) {
    force_close(e.code());
  } catch (...) {
    force_close(std::make_error_code(std::errc::not_enough_memory));
  }
}

void StreamTransport::drop_write() noexcept {
  // asyncio warns from the fifth write after the loss on; this warns on the fifth, then at
  // each power of two, so that a program stuck writing cannot flood the log.
  ++dropped_writes_;
  if (dropped_writes_ == dropped_writes_warning ||
      (dropped_writes_ > dropped_writes_warning &&
       (dropped_writes_ & (dropped_writes_ - 1)) == 0)) {
    log(LogLevel::warning, std::to_string(dropped_writes_) +
                               " writes dropped on a closed transport; stop writing once "
                               "is_closing() is true or connection_lost() was called");
  }
}

inline void StreamTransport::send_or_buffer(std::span<const std::byte> data) {
  if (data.empty()) return;
  if (closing_) [[unlikely]] {
    drop_write();
    return;
  }
  if (const int e = channel_->write(data)) [[unlikely]] {
    force_close(errno_code(e));
    return;
  }
  if (channel_->buffered() > high_water_) [[unlikely]] maybe_pause_protocol();
}

void StreamTransport::write(std::span<const std::byte> data) {
  if (cannot_write_) [[unlikely]] throw_cannot_write("write");  // a sendfile() sets it too
  send_or_buffer(data);
}

void StreamTransport::writelines(std::span<const std::span<const std::byte>> buffers) {
  if (cannot_write_) throw_cannot_write("writelines");
  std::size_t total = 0;
  for (const auto& b : buffers) total += b.size();
  if (total == 0) return;
  if (closing_) {
    drop_write();
    return;
  }
  if (const int e = channel_->writev(buffers)) {
    force_close(errno_code(e));
    return;
  }
  maybe_pause_protocol();
}

void StreamTransport::write_done(std::error_code ec) noexcept {
  if (conn_lost_) return;
  if (ec) {
    force_close(ec);
    return;
  }
  maybe_resume_protocol();  // may write, close or abort; with a sendfile(), may wake it instead
  if (conn_lost_ || buffered() != 0) return;
  if (sendfile_ != nullptr) [[unlikely]] {
    sendfile_writable();  // a native send waiting for the buffer starts now
    return;
  }
  if (closing_) {
    // close() was waiting for the buffer: the connection ends now (we are in a loop callback,
    // not inside a protocol call, so connection_lost() may run directly, as in asyncio).
    conn_lost_ = true;
    remove_reader();
    call_connection_lost({});
  } else if (eof_written_) {
    channel_->shutdown_write();
  }
}

void StreamTransport::writable() noexcept {
  if (conn_lost_ || sendfile_ == nullptr) {
    remove_writer();
    return;
  }
  if (buffered() == 0) sendfile_writable();
}

void StreamTransport::write_eof() {
  if (kind_ == StreamKind::read_pipe) {
    throw InvalidStateError("write_eof() on a read pipe's transport: can_write_eof() is false");
  }
  if (sendfile_ != nullptr) throw_cannot_write("write_eof");
  if (closing_ || eof_written_) return;
  eof_written_ = true;
  update_send_reports();
  cannot_write_ = true;
  if (kind_ == StreamKind::write_pipe) {
    close();  // a pipe's only way to signal the end: close it once the buffer is sent
  } else if (buffered() == 0) {
    channel_->shutdown_write();
  }
}

// ---- Flow control --------------------------------------------------------------------------

void StreamTransport::maybe_pause_protocol() noexcept {
  if (buffered() <= high_water_ || protocol_paused_) return;
  // A sendfile() fallback filled the buffer, not the protocol, which cannot write meanwhile: it
  // hears of the water marks when the sendfile ends (detach_sendfile()).
  if (sendfile_ != nullptr) return;
  protocol_paused_ = true;
  update_send_reports();
  try {
    protocol_->pause_writing();
  } catch (...) {
    callback_failed("pause_writing");
  }
}

void StreamTransport::maybe_resume_protocol() noexcept {
  if (sendfile_ != nullptr) [[unlikely]] {
    // The sendfile() fallback waits for the low-water mark in the protocol's place.
    if (sendfile_->waiting && buffered() <= low_water_) sendfile_->notify();
    return;
  }
  if (!protocol_paused_ || buffered() > low_water_) return;
  protocol_paused_ = false;
  update_send_reports();
  try {
    protocol_->resume_writing();
  } catch (...) {
    callback_failed("resume_writing");
  }
}

void StreamTransport::set_write_buffer_limits(std::optional<std::size_t> high,
                                              std::optional<std::size_t> low) {
  const WaterMarks marks = resolve_water_marks(high, low, default_high_water);
  high_water_ = marks.high;
  low_water_ = marks.low;
  maybe_pause_protocol();
}

// ---- sendfile() --------------------------------------------------------------------------

void StreamTransport::attach_sendfile(SendfileJob& job) {
  if (sendfile_ != nullptr) {
    throw InvalidStateError("sendfile: another sendfile is in progress on this transport; await "
                            "it first (asyncio raises RuntimeError)");
  }
  if (cannot_write_) throw_cannot_write("sendfile");
  if (closing_) throw InvalidStateError("sendfile: the transport is closing");
  sendfile_ = &job;
  update_send_reports();
  job.host = this;
  cannot_write_ = true;  // write(), writelines() and write_eof() throw until the job ends
  // Nothing reaches the protocol meanwhile, so the peer cannot provoke it into writing
  // (asyncio's _sendfile_native pauses reading too).
  sendfile_paused_reading_ = is_reading();
  if (sendfile_paused_reading_) pause_reading();
}

void StreamTransport::drop_sendfile(std::error_code ec) noexcept {
  SendfileJob* job = std::exchange(sendfile_, nullptr);
  if (job == nullptr) return;
  cannot_write_ = kind_ == StreamKind::read_pipe || eof_written_;
  sendfile_paused_reading_ = false;  // the connection is ending: nothing to resume
  job->end(ec);
}

void StreamTransport::detach_sendfile() noexcept {
  SendfileJob* job = std::exchange(sendfile_, nullptr);
  if (job == nullptr) return;
  job->host = nullptr;
  job->native = false;
  job->waiting = false;
  cannot_write_ = kind_ == StreamKind::read_pipe || eof_written_;
  update_send_reports();
  remove_writer();  // a native send may have left its watch on
  if (std::exchange(sendfile_paused_reading_, false)) {
    try {
      resume_reading();  // a no-op once closing
    } catch (const std::system_error& e) {
      force_close(e.code());
      return;
    } catch (...) {
      force_close(std::make_error_code(std::errc::not_enough_memory));
      return;
    }
  }
  // What the protocol missed while the job held the transport: the fallback's writes may have
  // crossed a water mark, or a buffer the protocol filled may have drained meanwhile.
  maybe_pause_protocol();
  maybe_resume_protocol();
}

bool StreamTransport::start_native_sendfile() {
  STRATA_ASSERT(sendfile_ != nullptr);
  if (!is_socket_) return false;  // a pipe: the fallback, through the buffer
  sendfile_->native = true;
  // Behind bytes the protocol wrote: write_done() starts the send once they are out.
  if (buffered() == 0) sendfile_step();
  return true;
}

void StreamTransport::sendfile_writable() noexcept {
  if (sendfile_->native) {
    sendfile_step();
  } else {
    remove_writer();  // the fallback writes through the buffer, which is empty
  }
}

void StreamTransport::sendfile_step() noexcept {
  SendfileJob& job = *sendfile_;
  STRATA_ASSERT(job.native && buffered() == 0);
  if (job.wake.done()) {
    // Its task was cancelled: not one more byte. The task lets go of the job when it resumes.
    job.native = false;
    remove_writer();
    return;
  }
  for (;;) {
    if (job.remaining == 0) break;
    const auto size = static_cast<std::size_t>(std::min(job.remaining, max_sendfile_call));
    const ssize_t n = channel_->send_file(job.file_fd, job.offset, size);  // advances offset
    if (n > 0) {
      job.sent += static_cast<std::uint64_t>(n);
      job.remaining -= static_cast<std::uint64_t>(n);
      if (job.remaining == 0) break;
      // One call per writability report, as the channel sends its buffer: the next report
      // comes at once (level-triggered) if the socket can still take more.
      start_writer();
      return;
    }
    if (n == 0) {  // the file ends before offset + count: what there was is sent
      job.remaining = 0;
      break;
    }
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      start_writer();
      return;
    }
    if (job.sent == 0 && is_sendfile_unavailable(e)) {
      job.unavailable = true;  // the fallback sends it, from the same offset
    } else if (is_file_error(e)) {
      job.file_error = errno_code(e);  // the connection stays open; the caller decides
    } else {
      force_close(errno_code(e));  // the socket's error: the connection ends, the job with it
      return;
    }
    break;
  }
  job.native = false;
  remove_writer();
  job.notify();
}

// ---- Protocol swap -------------------------------------------------------------------------

std::unique_ptr<BaseProtocol> StreamTransport::exchange_protocol(
    std::unique_ptr<BaseProtocol> protocol) {
  if (!protocol) throw std::invalid_argument("set_protocol: protocol must not be null");
  auto [plain, buffered] = classify(protocol.get());
  if (plain == nullptr && buffered == nullptr) {
    throw std::invalid_argument(
        "set_protocol: a stream transport needs a Protocol or a BufferedProtocol");
  }
  plain_ = plain;
  buffered_ = buffered;
  if (channel_) channel_->set_client_buffers(buffered_ != nullptr);
  return std::exchange(protocol_, std::move(protocol));
}

void StreamTransport::set_protocol(std::unique_ptr<BaseProtocol> protocol) {
  // The old protocol may be the caller: destroy it in a later iteration.
  std::unique_ptr<BaseProtocol> old = exchange_protocol(std::move(protocol));
  loop_->call_soon([old = std::move(old)]() mutable { old.reset(); });
}

// An idle connection must cost at most 1 KiB of user-space memory in all: this object, its
// names, the loop's reader handle and descriptor entry, and the protocol.
static_assert(sizeof(StreamTransport) <= 256, "keep the per-connection footprint small");

}  // namespace

// ---- The internal interface --------------------------------------------------------------

Transport& make_stream_transport(EventLoop& loop, int fd, StreamKind kind,
                                 std::unique_ptr<BaseProtocol> protocol, Future<void> waiter,
                                 ConnectionTracker* tracker) {
  if (fd < 0) {
    throw std::invalid_argument("make_stream_transport: fd must be >= 0, got " +
                                std::to_string(fd));
  }
  if (!protocol) throw std::invalid_argument("make_stream_transport: protocol must not be null");
  if (dynamic_cast<Protocol*>(protocol.get()) == nullptr &&
      dynamic_cast<BufferedProtocol*>(protocol.get()) == nullptr) {
    throw std::invalid_argument(
        "make_stream_transport: a stream transport needs a Protocol or a BufferedProtocol");
  }
  auto transport = std::make_unique<StreamTransport>(loop, fd, kind, std::move(protocol),
                                                     std::move(waiter), tracker);
  try {
    transport->start();
  } catch (...) {
    transport->disown_descriptor();  // it stays the caller's
    throw;
  }
  return *transport.release();
}

void detach_tracker(Transport& transport) noexcept {
  static_cast<StreamTransport&>(transport).detach_tracker();
}

Coro<void> wait_connection_made(Future<void> waiter, Transport& transport) {
  try {
    co_await waiter;
  } catch (const CancelledError&) {
    // A cancelled waiter: the transport closes itself once connection_made() returned. A waiter
    // that completed first: the transport is open and alive (it is destroyed two iterations
    // after connection_made() at the earliest, and this task resumes in the next one).
    if (!waiter.cancelled()) transport.close();
    throw;
  }
}

Coro<Transport*> connect_stream(EventLoop& loop, int fd, StreamKind kind,
                                std::unique_ptr<BaseProtocol> protocol,
                                ConnectionTracker* tracker) {
  Future<void> waiter = loop.create_future<void>();
  Transport& transport =
      make_stream_transport(loop, fd, kind, std::move(protocol), waiter, tracker);
  Coro<void> wait = wait_connection_made(std::move(waiter), transport);
  co_await wait;
  co_return &transport;
}

}  // namespace strata::detail
