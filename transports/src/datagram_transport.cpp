// The selector transport of a datagram socket (asyncio's _SelectorDatagramTransport).

#include "datagram_transport.hpp"
#include "water_marks.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <deque>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "strata/core/detail/assert.hpp"
#include "strata/core/detail/io_ops.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"

namespace strata::detail {
namespace {

/// The largest datagram read in one piece; longer ones are truncated (asyncio's max_size).
constexpr std::size_t max_datagram_size = 256 * 1024;
/// Datagrams read, or buffered ones sent, per readiness event: enough to drain a burst in few
/// loop iterations, few enough that one busy endpoint cannot starve the others. Every backend
/// is level-triggered, so what is left is picked up on the next iteration.
constexpr int max_datagrams_per_event = 32;
/// The default high-water mark; the low one is a quarter of it (asyncio's).
constexpr std::size_t default_high_water = 64 * 1024;
/// sendto() calls after the endpoint closed before a warning is logged (asyncio's
/// LOG_THRESHOLD_FOR_CONNLOST_WRITES).
constexpr int lost_writes_log_threshold = 5;

/// The buffer every datagram endpoint of this thread reads into: a datagram is handed to
/// datagram_received() straight from it, valid during the call only. One read at a time runs
/// on a thread (reads happen only in readiness callbacks, which do not nest), so one buffer
/// serves every endpoint of the loop.
std::byte* read_buffer() {
  thread_local std::unique_ptr<std::byte[]> buffer;
  if (!buffer) buffer = std::make_unique_for_overwrite<std::byte[]>(max_datagram_size);
  return buffer.get();
}

bool would_block(int error) noexcept { return error == EAGAIN || error == EWOULDBLOCK; }

std::error_code errno_code(int error) noexcept { return {error, std::generic_category()}; }

/// The error_code a std::system_error carries; std::errc::invalid_argument for anything else
/// (what add_reader() throws for a descriptor select() cannot watch).
std::error_code code_of(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& error) {
    return error.code();
  } catch (...) {
    return std::make_error_code(std::errc::invalid_argument);
  }
}

/// The transport. Self-owned: it deletes itself in a loop iteration after connection_lost()
/// returned, or in loop_closing().
class SelectorDatagramTransport final : public DatagramTransport, public LoopResource {
 public:
  SelectorDatagramTransport(EventLoop& loop, int fd, std::unique_ptr<DatagramProtocol> protocol,
                            const SocketAddress& peer, Future<void> waiter)
      : loop_(loop),
        fd_(fd),
        protocol_(std::move(protocol)),
        peer_(peer),
        waiter_(std::move(waiter)) {
    sockname_ = query_sockname();
    loop_.attach_resource(*this);
  }

  /// Schedules start(): connection_made() runs in the next iteration.
  void start_soon() {
    loop_.call_soon([this] { start(); });
  }

  ~SelectorDatagramTransport() {
    loop_.detach_resource(*this);
    close_fd();
  }

  // ---- BaseTransport -------------------------------------------------------------------

  void close() override {
    if (state_ != State::open) return;
    state_ = State::closing;
    stop_reading();
    if (buffer_.empty()) schedule_connection_lost({});
    // Otherwise write_ready() sends the rest, then schedules connection_lost().
  }

  bool is_closing() const noexcept override { return state_ != State::open; }

  std::any get_extra_info(std::string_view name) const override {
    if (name == "peername") return peer_.empty() ? std::any() : std::any(peer_);
    if (name == "sockname") {
      if (fd_ >= 0) sockname_ = query_sockname();  // a first send may have bound it since
      return sockname_.empty() ? std::any() : std::any(sockname_);
    }
    if (name == "socket") return fd_ >= 0 ? std::any(fd_) : std::any();
    return {};
  }

  EventLoop& get_loop() const noexcept override { return loop_; }

  // ---- DatagramTransport ---------------------------------------------------------------

  void sendto(std::span<const std::byte> data, const SocketAddress& addr) override {
    if (!peer_.empty()) {
      if (!addr.empty() && addr != peer_) {
        throw std::invalid_argument("sendto: the endpoint is connected to " + peer_.to_string() +
                                    "; pass no address (or that one), not " + addr.to_string());
      }
    } else if (addr.empty()) {
      throw std::invalid_argument(
          "sendto: the endpoint is not connected; pass the address to send to");
    }
    if (state_ != State::open) {
      if (++lost_writes_ == lost_writes_log_threshold) {
        log(LogLevel::warning, "sendto() on a closed datagram endpoint: the data is dropped");
      }
      return;
    }
    // A connected endpoint sends with send(): the kernel knows the peer.
    const SocketAddress& to = peer_.empty() ? addr : no_address_;
    if (buffer_.empty()) {
      const ssize_t n = send_one(data, to);
      if (n >= 0) return;
      const int error = errno;
      if (!would_block(error)) {
        // Reported in a later iteration: no callback runs inside the call that caused it.
        loop_.call_soon([this, ec = errno_code(error)] {
          if (state_ == State::open || state_ == State::closing) deliver_error(ec);
        });
        return;
      }
    }
    buffer_.push_back(Pending{std::vector<std::byte>(data.begin(), data.end()), to});
    buffer_size_ += data.size();
    if (!writing_) {
      watch().set_writer([this] { write_ready(); });
      writing_ = true;
    }
    maybe_pause_protocol();
  }

  void abort() override { force_close(std::make_error_code(std::errc::operation_canceled)); }

  std::size_t get_write_buffer_size() const noexcept override { return buffer_size_; }

  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override {
    const WaterMarks marks = resolve_water_marks(high, low, default_high_water);
    high_ = marks.high;
    low_ = marks.low;
    maybe_pause_protocol();
  }

  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_, high_};
  }

  void set_protocol(std::unique_ptr<DatagramProtocol> protocol) override {
    if (!protocol) throw std::invalid_argument("set_protocol: the protocol is null");
    // The old one may be running the callback that called this: destroy it later.
    std::unique_ptr<DatagramProtocol> old = std::exchange(protocol_, std::move(protocol));
    loop_.call_soon([old = std::move(old)]() mutable { old.reset(); });
  }

  DatagramProtocol& get_protocol() const noexcept override { return *protocol_; }

  // ---- LoopResource --------------------------------------------------------------------

  std::size_t write_buffered() const noexcept override { return buffer_size_; }
  void loop_closing() noexcept override {
    if (state_ != State::lost) {
      stop_reading();
      stop_writing();
      buffer_.clear();
      buffer_size_ = 0;
      // A connection_lost() already scheduled keeps its reason; otherwise the loop is the reason.
      const std::error_code ec =
          state_ == State::lost_pending ? lost_ec_ : make_error_code(errc::loop_closed);
      state_ = State::lost;
      // Never made (connection_made() had not run): the protocol never saw the transport.
      if (connection_made_) notify_connection_lost(ec);
    }
    delete this;  // the pending callbacks that name it are dropped by the closing loop
  }

 private:
  /// Where the endpoint is in its life: open → closing (close(), flushing) → lost_pending
  /// (connection_lost() scheduled) → lost (connection_lost() called).
  enum class State { open, closing, lost_pending, lost };

  struct Pending {
    std::vector<std::byte> data;
    SocketAddress addr;  ///< empty on a connected endpoint
  };

  SocketAddress query_sockname() const noexcept {
    SocketAddress address;
    socklen_t len = SocketAddress::capacity();
    if (::getsockname(fd_, address.mutable_data(), &len) == 0) address.set_size(len);
    return address;
  }

  ssize_t send_one(std::span<const std::byte> data, const SocketAddress& to) noexcept {
    ssize_t n;
    do {
      n = to.empty() ? ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL)
                     : ::sendto(fd_, data.data(), data.size(), MSG_NOSIGNAL, to.data(), to.size());
    } while (n < 0 && errno == EINTR);
    if (n > 0) loop_.stats().bytes_written += static_cast<std::size_t>(n);
    return n;
  }

  /// connection_made(), then reading, then the waiter (the call_soon of the constructor).
  void start() {
    STRATA_ASSERT(!connection_made_);
    connection_made_ = true;
    starting_ = true;
    std::exception_ptr failure;
    try {
      protocol_->connection_made(*this);
    } catch (...) {
      failure = std::current_exception();
    }
    starting_ = false;
    bool read_failed = false;
    if (!failure && state_ == State::open) {
      try {
        watch().set_reader([this] { read_ready(); });
        reading_ = true;
      } catch (...) {  // e.g. select() and a descriptor above FD_SETSIZE
        failure = std::current_exception();
        read_failed = true;  // not the protocol's fault
      }
    }
    if (waiter_.valid() && !waiter_.done()) {
      // The waiter's done callbacks are scheduled now: before any connection_lost() below.
      if (failure) {
        waiter_.set_exception(failure);
      } else {
        waiter_.set_result();
      }
    } else if (failure) {
      report(failure, read_failed ? "IoWatch::set_reader" : "DatagramProtocol::connection_made");
    }
    waiter_ = {};
    if (failure) {
      force_close(read_failed ? code_of(failure) : make_error_code(errc::callback_failed));
    }
    if (defer_lost_) {  // connection_made() closed the endpoint
      defer_lost_ = false;
      loop_.call_soon([this] { call_connection_lost(); });
    }
  }

  void read_ready() {
    std::byte* buffer = read_buffer();
    for (int i = 0; i < max_datagrams_per_event && state_ == State::open; ++i) {
      SocketAddress from;
      socklen_t len = SocketAddress::capacity();
      const ssize_t n = ::recvfrom(fd_, buffer, max_datagram_size, 0, from.mutable_data(), &len);
      if (n < 0) {
        const int error = errno;
        if (error == EINTR) continue;
        if (would_block(error)) return;
        // ICMP errors on a connected socket (ECONNREFUSED...) do not end the endpoint.
        deliver_error(errno_code(error));
        return;
      }
      from.set_size(len);
      loop_.stats().bytes_read += static_cast<std::size_t>(n);
      try {
        protocol_->datagram_received(std::span<const std::byte>(buffer, std::size_t(n)), from);
      } catch (...) {
        protocol_failed(std::current_exception(), "datagram_received");
        return;
      }
    }
  }

  void write_ready() {
    for (int sent = 0; sent < max_datagrams_per_event && !buffer_.empty(); ++sent) {
      Pending& next = buffer_.front();
      const ssize_t n = send_one(next.data, next.addr);
      const int error = errno;
      if (n < 0 && would_block(error)) return;
      buffer_size_ -= next.data.size();
      buffer_.pop_front();  // sent, or dropped on error (asyncio drops it too)
      if (n < 0) {
        deliver_error(errno_code(error));
        if (state_ == State::lost_pending) return;  // aborted: the buffer is gone
      }
    }
    maybe_resume_protocol();
    if (state_ == State::lost_pending) return;
    if (buffer_.empty()) {
      stop_writing();
      if (state_ == State::closing) schedule_connection_lost({});
    }
  }

  /// Ends the endpoint now: drops the buffer and schedules connection_lost(ec).
  void force_close(std::error_code ec) {
    if (state_ == State::lost_pending || state_ == State::lost) return;
    stop_writing();
    buffer_.clear();
    buffer_size_ = 0;
    stop_reading();
    schedule_connection_lost(ec);
  }

  void schedule_connection_lost(std::error_code ec) {
    STRATA_ASSERT(!reading_ && !writing_);
    state_ = State::lost_pending;
    lost_ec_ = ec;
    if (starting_) {
      defer_lost_ = true;  // start() schedules it, after the waiter's callbacks
      return;
    }
    loop_.call_soon([this] { call_connection_lost(); });
  }

  void call_connection_lost() {
    STRATA_ASSERT(state_ == State::lost_pending && connection_made_);
    state_ = State::lost;
    notify_connection_lost(lost_ec_);
    close_fd();  // after connection_lost(), as asyncio: the socket is still there during it
    loop_.call_soon([this] { delete this; });
  }

  void notify_connection_lost(std::error_code ec) noexcept {
    try {
      protocol_->connection_lost(ec);
    } catch (...) {
      report(std::current_exception(), "DatagramProtocol::connection_lost");
    }
  }

  void deliver_error(std::error_code ec) {
    try {
      protocol_->error_received(ec);
    } catch (...) {
      protocol_failed(std::current_exception(), "error_received");
    }
  }

  void maybe_pause_protocol() {
    if (buffer_size_ <= high_ || protocol_paused_) return;
    protocol_paused_ = true;
    try {
      protocol_->pause_writing();
    } catch (...) {
      protocol_failed(std::current_exception(), "pause_writing");
    }
  }

  void maybe_resume_protocol() {
    if (!protocol_paused_ || buffer_size_ > low_) return;
    protocol_paused_ = false;
    try {
      protocol_->resume_writing();
    } catch (...) {
      protocol_failed(std::current_exception(), "resume_writing");
    }
  }

  /// A protocol callback threw: report it, and abort the endpoint.
  void protocol_failed(std::exception_ptr e, const char* callback) {
    report(std::move(e), (std::string("DatagramProtocol::") + callback).c_str());
    force_close(make_error_code(errc::callback_failed));
  }

  /// Hands an exception of a protocol callback (or of starting to read) to the loop's
  /// exception handler; the caller aborts the endpoint, unless it is already lost.
  void report(std::exception_ptr e, const char* callback) noexcept {
    const std::string where = std::string(callback) + "()";
    std::string message = "Exception in " + where + " of the datagram endpoint " + describe();
    if (state_ != State::lost) message += "; the endpoint is aborted";
    loop_.call_exception_handler({std::move(message), std::move(e), where, {}});
  }

  std::string describe() const {
    std::string text = sockname_.to_string();
    if (!peer_.empty()) text += " -> " + peer_.to_string();
    return text;
  }

  /// The readiness watch of the socket, opened on first use.
  IoWatch& watch() {
    if (!watch_) watch_ = loop_.open_watch(fd_);
    return *watch_;
  }

  void stop_reading() noexcept {
    if (reading_) watch_->clear_reader();
    reading_ = false;
  }

  void stop_writing() noexcept {
    if (writing_) watch_->clear_writer();
    writing_ = false;
  }

  void close_fd() noexcept {
    if (fd_ < 0) return;
    stop_reading();
    stop_writing();
    watch_.reset();  // before the close: the proactor's polls hold the descriptor open
    ::close(fd_);
    fd_ = -1;
  }

  EventLoop& loop_;
  int fd_;
  std::unique_ptr<DatagramProtocol> protocol_;
  const SocketAddress peer_;
  mutable SocketAddress sockname_;
  const SocketAddress no_address_;
  Future<void> waiter_;

  State state_ = State::open;
  std::error_code lost_ec_;     ///< what connection_lost() gets, once scheduled
  bool connection_made_ = false;
  bool starting_ = false;       ///< inside start()'s connection_made()
  bool defer_lost_ = false;     ///< connection_lost() was requested during connection_made()
  IoWatchPtr watch_;            ///< the socket's readiness, once needed
  bool reading_ = false;        ///< the reader is registered
  bool writing_ = false;        ///< the writer is registered
  int lost_writes_ = 0;

  std::deque<Pending> buffer_;
  std::size_t buffer_size_ = 0;
  std::size_t high_ = default_high_water;
  std::size_t low_ = default_high_water / 4;
  bool protocol_paused_ = false;
};

}  // namespace

DatagramTransport& make_datagram_transport(EventLoop& loop, int fd,
                                           std::unique_ptr<DatagramProtocol> protocol,
                                           const SocketAddress& peer, Future<void> waiter) {
  if (!protocol) {
    ::close(fd);
    throw std::invalid_argument("make_datagram_transport: the protocol is null");
  }
  std::unique_ptr<SelectorDatagramTransport> transport;
  try {
    transport = std::make_unique<SelectorDatagramTransport>(loop, fd, std::move(protocol), peer,
                                                            std::move(waiter));
  } catch (...) {
    ::close(fd);
    throw;
  }
  transport->start_soon();
  return *transport.release();  // self-owned from here: see call_connection_lost()
}

}  // namespace strata::detail
