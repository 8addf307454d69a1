#include "strata/testing/mock_transport.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <strata/core/errors.hpp>

namespace strata::testing {

MockTransport::MockTransport(EventLoop& loop, std::unique_ptr<BaseProtocol> protocol)
    : loop_(&loop), protocol_(std::move(protocol)) {
  if (!protocol_) throw std::invalid_argument("MockTransport needs a protocol");
  schedule();  // connection_made()
}

MockTransport::~MockTransport() { pump_handle_.cancel(); }

// ---- The peer's script ---------------------------------------------------------------------

void MockTransport::queue(Step step) {
  script_.push_back(std::move(step));
  schedule();
}

void MockTransport::feed(std::string_view data) {
  if (!data.empty()) queue({Step::Kind::data, std::string(data), {}});
}

void MockTransport::feed(std::string_view data, const std::vector<std::size_t>& chunking) {
  if (chunking.empty() || std::find(chunking.begin(), chunking.end(), 0) != chunking.end()) {
    throw std::invalid_argument("MockTransport::feed(): chunk sizes must be given and above 0");
  }
  std::size_t i = 0;
  while (!data.empty()) {
    const std::size_t n = std::min(chunking[i++ % chunking.size()], data.size());
    feed(data.substr(0, n));
    data.remove_prefix(n);
  }
}

void MockTransport::feed_eof() { queue({Step::Kind::eof, {}, {}}); }

void MockTransport::reset() {
  queue({Step::Kind::lost, {}, std::make_error_code(std::errc::connection_reset)});
}

void MockTransport::lose(std::error_code error) { queue({Step::Kind::lost, {}, error}); }

void MockTransport::schedule() {
  if (lost_ || pump_scheduled_) return;
  pump_scheduled_ = true;
  pump_handle_ = loop_->call_soon([this] {
    pump_scheduled_ = false;
    pump();
  });
}

void MockTransport::pump() {
  retired_.reset();
  if (!made_) {
    made_ = true;
    if (auto* p = dynamic_cast<Protocol*>(protocol_.get())) {
      p->connection_made(*this);
    } else if (auto* b = dynamic_cast<BufferedProtocol*>(protocol_.get())) {
      b->connection_made(*this);
    } else {
      throw std::invalid_argument("MockTransport: a stream transport needs a Protocol or a "
                                  "BufferedProtocol");
    }
    changed();
  } else if (end_error_ && (buffer_.empty() || *end_error_)) {
    // The end: after the buffer drained (close), or at once (an error).
    lost_ = true;
    lost_error_ = *end_error_;
    changed();
    protocol_->connection_lost(*end_error_);
    return;
  } else if (!script_.empty() && is_reading()) {
    Step step = std::move(script_.front());
    script_.pop_front();
    switch (step.kind) {
      case Step::Kind::data:
        deliver(step.data);
        break;
      case Step::Kind::eof: {
        bool keep_open = false;
        if (auto* p = dynamic_cast<Protocol*>(protocol_.get())) {
          keep_open = p->eof_received();
        } else if (auto* b = dynamic_cast<BufferedProtocol*>(protocol_.get())) {
          keep_open = b->eof_received();
        }
        if (!keep_open) close();
        break;
      }
      case Step::Kind::lost:
        buffer_.clear();
        closing_ = true;
        end(step.error);
        break;
    }
    changed();
  } else {
    return;  // nothing to do until the protocol reads again or the peer receives
  }
  if (!lost_ && (end_error_ || (!script_.empty() && is_reading()))) schedule();
}

void MockTransport::deliver(const std::string& data) {
  if (auto* p = dynamic_cast<Protocol*>(protocol_.get())) {
    p->data_received(std::as_bytes(std::span(data.data(), data.size())));
    return;
  }
  auto* b = dynamic_cast<BufferedProtocol*>(protocol_.get());
  std::size_t done = 0;
  while (done < data.size()) {
    const std::span<std::byte> buf = b->get_buffer(data.size() - done);
    if (buf.empty()) throw std::logic_error("MockTransport: get_buffer() returned no space");
    const std::size_t n = std::min(buf.size(), data.size() - done);
    std::memcpy(buf.data(), data.data() + done, n);
    b->buffer_updated(n);
    done += n;
  }
}

void MockTransport::end(std::error_code error) {
  if (end_error_) return;
  end_error_ = error;
  schedule();
}

// ---- The peer's receiving side ---------------------------------------------------------------

void MockTransport::set_peer_receiving(bool receiving) {
  peer_receiving_ = receiving;
  flush();
}

void MockTransport::flush() {
  if (!peer_receiving_ || buffer_.empty()) return;
  received_ += buffer_;
  buffer_.clear();
  changed();
  if (write_paused_ && !lost_) {
    write_paused_ = false;
    ++resume_calls_;
    protocol_->resume_writing();
  }
  if (end_error_) schedule();
}

Coro<std::string> MockTransport::read_until(std::string separator) {
  for (;;) {
    const std::size_t at = received_.find(separator);
    if (at != std::string::npos) {
      std::string out = received_.substr(0, at + separator.size());
      received_.erase(0, at + separator.size());
      co_return out;
    }
    if (lost_) {
      throw ConnectionEndedError("MockTransport::read_until(): the connection ended before '" +
                                 separator + "' was written");
    }
    activity_.clear();
    co_await activity_.wait();
  }
}

Coro<std::string> MockTransport::read_exactly(std::size_t n) {
  for (;;) {
    if (received_.size() >= n) {
      std::string out = received_.substr(0, n);
      received_.erase(0, n);
      co_return out;
    }
    if (lost_) {
      throw ConnectionEndedError("MockTransport::read_exactly(): the connection ended after " +
                                 std::to_string(received_.size()) + " of " + std::to_string(n) +
                                 " bytes");
    }
    activity_.clear();
    co_await activity_.wait();
  }
}

Coro<void> MockTransport::wait_lost() {
  while (!lost_) {
    activity_.clear();
    co_await activity_.wait();
  }
}

void MockTransport::set_extra_info(std::string name, std::any value) {
  extra_[std::move(name)] = std::move(value);
}

std::any MockTransport::get_extra_info(std::string_view name) const {
  auto it = extra_.find(name);
  return it == extra_.end() ? std::any{} : it->second;
}

// ---- strata::Transport -----------------------------------------------------------------------

void MockTransport::write(std::span<const std::byte> data) {
  if (eof_written_) throw InvalidStateError("MockTransport: write() after write_eof()");
  if (data.empty() || closing_) return;
  if (write_error_) {
    closing_ = true;
    buffer_.clear();
    end(*std::exchange(write_error_, std::nullopt));
    return;
  }
  buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
  if (peer_receiving_) {
    flush();
    return;
  }
  if (!write_paused_ && buffer_.size() > high_) {
    write_paused_ = true;
    ++pause_calls_;
    protocol_->pause_writing();
  }
}

void MockTransport::writelines(std::span<const std::span<const std::byte>> buffers) {
  for (auto b : buffers) write(b);
}

void MockTransport::write_eof() {
  if (closing_) return;
  eof_written_ = true;
  changed();
}

void MockTransport::abort() {
  abort_called_ = true;
  closing_ = true;
  buffer_.clear();
  end({});
}

void MockTransport::close() {
  close_called_ = true;
  if (closing_) return;
  closing_ = true;
  end({});
}

void MockTransport::set_write_buffer_limits(std::optional<std::size_t> high,
                                            std::optional<std::size_t> low) {
  const std::size_t h = high.value_or(low ? 4 * *low : 64 * 1024);
  const std::size_t l = low.value_or(h / 4);
  if (l > h) throw std::invalid_argument("set_write_buffer_limits(): low is above high");
  high_ = h;
  low_ = l;
}

void MockTransport::resume_reading() {
  if (reading_) return;
  reading_ = true;
  schedule();
}

void MockTransport::set_protocol(std::unique_ptr<BaseProtocol> protocol) {
  retired_ = exchange_protocol(std::move(protocol));
}

std::unique_ptr<BaseProtocol> MockTransport::exchange_protocol(
    std::unique_ptr<BaseProtocol> protocol) {
  if (!protocol) throw std::invalid_argument("MockTransport: a null protocol");
  return std::exchange(protocol_, std::move(protocol));
}

}  // namespace strata::testing
