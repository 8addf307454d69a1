#pragma once
// MemoryStream: an in-memory stream transport for fuzz targets that stack a protocol on a
// stream the target controls byte by byte, as the TLS transport stacks itself on TCP. Unlike
// FakeTransport (http_harness.hpp), it takes any kind of protocol and lets it be replaced
// (start_tls() swaps in its TLS layer with set_protocol()), and it feeds a BufferedProtocol
// through get_buffer()/buffer_updated() as StreamTransport does.
//
// The target plays the peer and the socket: receive() delivers bytes while the protocol lets
// the transport read (and says how many it took), receive_eof() and reset() end the peer's
// side, take() consumes what the protocol wrote. Every call reaches the protocol from inside a
// loop callback (in_loop()); the end is as StreamTransport's: close() waits until the written
// bytes are taken, connection_lost() runs in a later loop iteration, and the protocol is
// destroyed in the iteration after that.

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/transport.hpp>

#include "fuzz_support.hpp"

namespace strata_fuzz {

class MemoryStream final : public strata::Transport {
 public:
  /// @p name labels the trace (STRATA_FUZZ_TRACE); the protocol until set_protocol() is an
  /// inert placeholder.
  explicit MemoryStream(std::string name)
      : name_(std::move(name)), protocol_(std::make_unique<strata::Protocol>()) {}
  MemoryStream(const MemoryStream&) = delete;
  MemoryStream& operator=(const MemoryStream&) = delete;
  /// The protocol must be gone already (finish() makes sure of it).
  ~MemoryStream() {
    if (protocol_) fail("MemoryStream destroyed with its protocol still alive");
  }

  // ---- The peer's side ---------------------------------------------------------------------

  /// Whether data may be delivered now: reading is not paused and the connection is open.
  bool can_receive() const noexcept {
    return reading_ && !closing_ && !eof_received_ && !lost_scheduled_ && protocol_;
  }
  /// Delivers @p data as the socket would, as long as the protocol lets the transport read;
  /// returns how many bytes were delivered (what is left stays "in the kernel").
  std::size_t receive(std::span<const std::byte> data) {
    std::size_t done = 0;
    while (done < data.size() && can_receive()) {
      const std::span<const std::byte> rest = data.subspan(done);
      trace("receive", rest);
      ++activity;
      std::size_t n = 0;
      in_loop([&] {
        if (auto* buffered = dynamic_cast<strata::BufferedProtocol*>(protocol_.get())) {
          const std::span<std::byte> buf = buffered->get_buffer(rest.size());
          check(!buf.empty(), "MemoryStream: get_buffer() returned an empty buffer");
          n = std::min(buf.size(), rest.size());
          std::memcpy(buf.data(), rest.data(), n);
          buffered->buffer_updated(n);
        } else if (auto* plain = dynamic_cast<strata::Protocol*>(protocol_.get())) {
          n = rest.size();
          plain->data_received(rest);
        } else {
          fail("MemoryStream: the protocol is neither a Protocol nor a BufferedProtocol");
        }
      });
      done += n;
    }
    return done;
  }
  /// The peer ended its sending side; a protocol that returns false is closed (as
  /// StreamTransport does).
  void receive_eof() {
    check(can_receive(), "MemoryStream: receive_eof() while the transport does not read");
    trace("receive_eof");
    ++activity;
    eof_received_ = true;
    in_loop([&] {
      bool keep_open = false;
      if (auto* buffered = dynamic_cast<strata::BufferedProtocol*>(protocol_.get())) {
        keep_open = buffered->eof_received();
      } else if (auto* plain = dynamic_cast<strata::Protocol*>(protocol_.get())) {
        keep_open = plain->eof_received();
      }
      if (!keep_open) close();
    });
  }
  /// The peer takes up to @p n of the bytes written (all: SIZE_MAX) and gets them.
  std::string take(std::size_t n) {
    if (out_.empty() || lost_scheduled_) return {};
    const std::size_t k = std::min(n, out_.size());
    std::string taken = out_.substr(0, k);
    out_.erase(0, k);
    trace("take " + std::to_string(k));
    ++activity;
    if (write_paused_ && out_.size() <= low_) {
      write_paused_ = false;
      in_loop([&] { protocol_->resume_writing(); });
    }
    if (closing_ && out_.empty()) schedule_lost({});
    return taken;
  }
  /// The peer vanished (ECONNRESET): what was written is dropped, connection_lost() follows.
  void reset() {
    if (lost_scheduled_) return;
    trace("reset");
    closing_ = true;
    out_.clear();
    schedule_lost(std::make_error_code(std::errc::connection_reset));
  }
  /// Ends the connection if it is not ended (reset()) and runs the loop until the protocol is
  /// destroyed.
  void finish() {
    reset();
    run_until_idle();
    check(!protocol_, "the protocol was not destroyed after connection_lost()");
  }

  // ---- What happened -----------------------------------------------------------------------

  /// Bytes written and not yet taken.
  std::size_t pending() const noexcept { return out_.size(); }
  std::size_t writes_after_close() const noexcept { return writes_after_close_; }
  bool close_called() const noexcept { return close_called_; }
  bool abort_called() const noexcept { return abort_called_; }
  /// connection_lost() has run.
  bool lost() const noexcept { return lost_; }
  /// The most bytes ever waiting to be taken.
  std::size_t peak_buffered() const noexcept { return peak_; }

  // ---- strata::Transport -----------------------------------------------------------------

  void write(std::span<const std::byte> data) override {
    if (eof_written_) throw strata::InvalidStateError("write after write_eof");
    if (data.empty()) return;
    trace("write", data);
    ++activity;
    if (closing_) {
      ++writes_after_close_;
      return;
    }
    out_.append(reinterpret_cast<const char*>(data.data()), data.size());
    peak_ = std::max(peak_, out_.size());
    if (!write_paused_ && out_.size() > high_) {
      write_paused_ = true;
      protocol_->pause_writing();
    }
  }
  using strata::Transport::write;
  void writelines(std::span<const std::span<const std::byte>> buffers) override {
    for (auto b : buffers) write(b);
  }
  void write_eof() override {
    ++activity;
    eof_written_ = true;
  }
  bool can_write_eof() const noexcept override { return true; }
  void abort() override {
    trace("abort");
    ++activity;
    abort_called_ = true;
    closing_ = true;
    out_.clear();
    schedule_lost(std::make_error_code(std::errc::operation_canceled));
  }
  void close() override {
    trace("close");
    ++activity;
    if (closing_) return;
    close_called_ = true;
    closing_ = true;
    if (out_.empty()) schedule_lost({});
  }
  bool is_closing() const noexcept override { return closing_; }
  std::size_t get_write_buffer_size() const noexcept override { return out_.size(); }
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override {
    const std::size_t h = high.value_or(64 * 1024);
    const std::size_t l = low.value_or(h / 4);
    if (l > h) throw std::invalid_argument("low > high");
    high_ = h;
    low_ = l;
  }
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_, high_};
  }
  void pause_reading() override {
    trace("pause_reading");
    ++activity;
    reading_ = false;
  }
  void resume_reading() override {
    trace("resume_reading");
    ++activity;
    reading_ = true;
  }
  bool is_reading() const noexcept override { return reading_ && !closing_; }
  void set_protocol(std::unique_ptr<strata::BaseProtocol> protocol) override {
    std::unique_ptr<strata::BaseProtocol> old = exchange_protocol(std::move(protocol));
    loop().call_soon([old = std::move(old)]() mutable { old.reset(); });
  }
  std::unique_ptr<strata::BaseProtocol> exchange_protocol(
      std::unique_ptr<strata::BaseProtocol> protocol) override {
    check(protocol != nullptr, "MemoryStream: a null protocol");
    trace("exchange_protocol");
    ++activity;
    std::unique_ptr<strata::BaseProtocol> old = std::move(protocol_);
    protocol_ = std::move(protocol);
    return old;
  }
  strata::BaseProtocol& get_protocol() const noexcept override { return *protocol_; }
  std::any get_extra_info(std::string_view) const override { return {}; }
  strata::EventLoop& get_loop() const noexcept override { return loop(); }

 private:
  /// With STRATA_FUZZ_TRACE set in the environment, logs each call to stderr.
  void trace(std::string_view what, std::span<const std::byte> bytes = {}) const {
    static const bool on = std::getenv("STRATA_FUZZ_TRACE") != nullptr;
    if (!on) return;
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    std::fprintf(stderr, "[%s] %.*s %s\n", name_.c_str(), static_cast<int>(what.size()),
                 what.data(), bytes.empty() ? "" : show_bytes(text, 120).c_str());
  }

  void schedule_lost(std::error_code ec) {
    if (lost_scheduled_) return;
    lost_scheduled_ = true;
    loop().call_soon([this, ec] {
      trace("connection_lost");
      ++activity;
      lost_ = true;
      protocol_->connection_lost(ec);
      // Destroyed in a later iteration, as StreamTransport does.
      loop().call_soon([this] {
        ++activity;
        protocol_.reset();
      });
    });
  }

  std::string name_;
  std::unique_ptr<strata::BaseProtocol> protocol_;
  std::string out_;
  std::size_t high_ = 64 * 1024;
  std::size_t low_ = 16 * 1024;
  std::size_t peak_ = 0;
  std::size_t writes_after_close_ = 0;
  bool reading_ = true;
  bool write_paused_ = false;
  bool closing_ = false;
  bool close_called_ = false;
  bool abort_called_ = false;
  bool eof_received_ = false;
  bool eof_written_ = false;
  bool lost_scheduled_ = false;
  bool lost_ = false;
};

}  // namespace strata_fuzz
