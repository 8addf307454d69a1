#pragma once
// CompletionChannel: what a proactor's socket channel does whatever starts its operations. A
// receive is always in flight while the transport reads. Where the loop has a pool of receive
// buffers that the kernel picks from when bytes arrive (io_uring's provided buffers), it goes
// there: an idle connection then holds no receive memory, and a buffer is held only from the
// completion until its bytes are delivered. Such a receive may be multishot: it stays in
// flight and completes once per arrival, each time in a buffer of its own; arrivals that come
// before the last is delivered wait in order behind it (the backlog, linked through the pool),
// each delivered in a callback of its own. stop_reading() cancels it, so that a paused
// connection does not go on filling the shared pool: its peer's bytes wait in the kernel's
// buffers, which fill and stop the peer (the bytes that came before the cancellation took
// effect wait in the backlog). Otherwise, and for a connection whose receives fill
// a pool buffer (or that found the pool empty), it goes to the channel's own buffer (4 KiB, or
// twice a pool buffer, doubled up to 64 KiB while receives fill it), given back to the pool
// after a run of small receives. A send is in flight while bytes wait, from a buffer that
// nothing moves meanwhile (writes made during a send go to a second one, swapped in when it
// completes). Completions arrive as results in the io_uring style (a byte count, or a negative
// errno value) and reach the transport in the loop's callback phase.
//
// Derived (CRTP) starts the operations and queues handles; it takes a reference (ref()) per
// operation in flight and gives it back (unref()) after handing its last completion to
// received(), sent() or waited():
//   static constexpr std::size_t pool_buffer_size;             // 0: the loop has no pool
//   PoolRecv submit_recv_pooled();    // a receive into the pool, multishot where the loop can
//   void give_back(int id) noexcept;                           // a pool buffer, delivered
//   PoolLink& pool_link(int id) noexcept; // a held buffer's place in its channel's backlog
//   bool grow_pool() noexcept;        // more buffers in the pool, after ENOBUFS; false: full
//   bool pool_roomy() const noexcept; // whether most of the pool's buffers are free
//   bool cancel_recv() noexcept;      // cancels the receive in flight now; false: the ring refused
//   void multishot_refused() noexcept; // the kernel has no multishot receive: single from now
//   void submit_recv(std::byte* buf, std::size_t len);         // may throw std::system_error
//   int submit_send(const std::byte* data, std::size_t len) noexcept; // 0, or why not (errno)
//   bool try_submit_send(const std::byte* data, std::size_t len) noexcept;
//                       // submit_send() where it needs no call; false: not started, nothing done
//   void submit_wait(bool read);                               // a readiness wait; likewise
//   void queue(HandleImpl* h);                                 // onto the loop's ready queue
//   void destroy() noexcept;                                   // the last reference went
// Used by uring_event_loop.cpp (io_uring) and proactor_event_loop.cpp (Asio's reactor).

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <span>
#include <system_error>
#include <utility>

#include "channel_io.hpp"
#include "strata/core/detail/io_channel.hpp"
#include "strata/core/event_loop.hpp"

namespace strata::detail {

/// How a receive into the loop's pool started.
enum class PoolRecv : std::uint8_t {
  none,      // it did not: the loop has no pool
  single,    // one completion
  multishot  // a completion per arrival, until one without IORING_CQE_F_MORE ends it
};

/// A held pool buffer in its channel's backlog: the next one, and how many bytes it holds.
struct PoolLink {
  int next;
  unsigned size;
};

template <class Derived>
class CompletionChannel : public IoChannel {
 public:
  void start_reading() override {
    if (reading_ || closed_) return;
    reading_ = true;
    if (has_result_) {
      self().queue(read_handle_);  // bytes that arrived while stopped: in a later callback
    } else if (!read_in_flight_ && !delivering_) {
      // (During a delivery the receive starts when it ends: the protocol may still be reading
      // the bytes of the last one, in the memory the next one would write to.)
      try {
        submit_read();
      } catch (...) {
        reading_ = false;
        throw;
      }
    }
  }
  void stop_reading() noexcept override {
    reading_ = false;
    // A multishot receive would go on taking pool buffers, as much as the peer sends (and
    // the socket's buffer would not fill up to stop it): it ends, with what came meanwhile.
    if (recv_multishot_) stop_multishot();
  }

  int write_rest(std::span<const std::byte> data, ssize_t /*sent*/) override {
    // Nothing is sent inline here (direct_fd_ is -1). With no send in flight, the bytes go
    // straight into the buffer that the send reads from.
    if (!send_in_flight_ && !discarded_ && werr_ == 0) [[likely]] {
      if constexpr (Derived::pool_buffer_size != 0) {
        if (in_pool_buffer(data) && self().pool_roomy()) {
          // Bytes of the receive being delivered (an echo, a proxy): sent from the pool buffer
          // they arrived in, which stays out of the pool until the send is done. Only while
          // most of the pool is free: a send to a peer that does not read may hold its buffer
          // for long, and such sends must not empty the pool.
          inflight_.borrow(data.data(), data.size());
          lent_id_ = std::exchange(pool_id_, -1);
          buffered_ += data.size();
          return send_now();
        }
      }
      return copy_and_send(data);
    }
    return copy_for_later(data);
  }
  int writev(std::span<const std::span<const std::byte>> buffers) override {
    const bool now = !send_in_flight_ && !discarded_ && werr_ == 0;
    WriteBuffer& to = now ? inflight_ : pending_;
    for (const auto& b : buffers) {
      to.append(b.data(), b.size());
      buffered_ += b.size();
    }
    return now && !inflight_.empty() ? send_now() : 0;
  }
  void discard_writes() noexcept override {
    pending_.clear();  // (never borrowed: only inflight_ borrows)
    buffered_ = 0;
    discarded_ = true;  // the send in flight completes unreported
  }
  void shutdown_write() noexcept override { ::shutdown(fd_, SHUT_WR); }
  ssize_t send_file(int file_fd, std::uint64_t& offset, std::size_t count) noexcept override {
    const ssize_t n = send_file_suppressed(fd_, file_fd, offset, count);
    if (n > 0) loop_->stats().bytes_written += static_cast<std::size_t>(n);
    return n;
  }

  void watch_writable(bool on) override {
    watch_write_ = on;
    if (on) arm_wait(false);
  }
  void watch_readable(bool on) override {
    watch_read_ = on;
    if (on) arm_wait(true);
  }

  int fd() const noexcept override { return closed_ ? -1 : fd_; }

 protected:
  CompletionChannel(EventLoop& loop, BlockCache& blocks, int fd, IoClient& client)
      : loop_(&loop),
        client_(&client),
        fd_(fd),
        read_handle_(HandleImpl::create([this] { deliver_read(); })),
        write_handle_(HandleImpl::create([this] { deliver_write(); })),
        readable_handle_(HandleImpl::create([this] { report_ready(true); })),
        writable_handle_(HandleImpl::create([this] { report_ready(false); })) {
    // Every write goes through these two: their storage comes from the loop's blocks rather
    // than from an allocation per request, and goes back there while the connection is quiet.
    pending_.use_cache(&blocks);
    inflight_.use_cache(&blocks);
  }
  ~CompletionChannel() override = default;

  Derived& self() noexcept { return static_cast<Derived&>(*this); }

  void ref() noexcept { ++refs_; }
  void unref() noexcept {
    if (--refs_ == 0) self().destroy();
  }

  /// Whether an operation of this channel is in flight.
  bool in_flight() const noexcept {
    return read_in_flight_ || send_in_flight_ || wait_read_in_flight_ || wait_write_in_flight_;
  }

  /// Stops everything the client hears of (close() and release()).
  void end() noexcept {
    closed_ = true;
    if (!delivering_) give_back_held();  // (during a delivery: when it ends)
    reading_ = watch_read_ = watch_write_ = false;
    for (HandleImpl** h : {&read_handle_, &write_handle_, &readable_handle_, &writable_handle_}) {
      (*h)->cancel();  // already queued: does not run
      (*h)->release();
      *h = nullptr;
    }
  }

  /// A receive completed with @p res: bytes, 0 at the end of the stream, or -errno. A receive
  /// into the pool names the buffer it took as @p id (-1: none, as at the end of the stream);
  /// @p more: a multishot receive that goes on.
  void received(int res, int id = -1, bool more = false) noexcept {
    if (res > 0 && !closed_ && !has_result_) [[likely]] {
      if (!more) recv_over();
      loop_->stats().bytes_read += static_cast<std::size_t>(res);
      if (id >= 0) {
        rdata_ = self().pool_buffer(id);
        rsize_ = Derived::pool_buffer_size;
      } else {
        rdata_ = rbuf_.get();
        rsize_ = rcap_;
      }
      pool_id_ = id;
      roff_ = 0;
      rlen_ = static_cast<std::size_t>(res);
      has_result_ = true;
      // (Only a multishot receive's arrivals are into the pool: id >= 0.)
      whole_ = more && static_cast<std::size_t>(res) < Derived::pool_buffer_size;
      if (reading_) {
        self().queue(read_handle_);
      } else if (more) {
        stop_multishot();  // paused: the pool is not for bytes that nobody reads now
      }
      return;
    }
    received_more(res, id, more);
  }

  /// received() of bytes behind others not yet delivered, or of no bytes: the end of the
  /// stream, a failure, or a receive to start again.
  [[gnu::noinline]] void received_more(int res, int id, bool more) noexcept {
    whole_ = false;  // something behind the result, or the receive's end
    const bool multishot = recv_multishot_;
    if (!more) recv_over();
    if constexpr (Derived::pool_buffer_size != 0) {
      if (res > 0 && id >= 0 && !closed_) {
        // Behind the bytes being delivered (only a multishot receive brings more meanwhile; a
        // single receive starts again only once they are delivered).
        loop_->stats().bytes_read += static_cast<std::size_t>(res);
        self().pool_link(id) = PoolLink{-1, static_cast<unsigned>(res)};
        if (backlog_tail_ >= 0) {
          self().pool_link(backlog_tail_).next = id;
        } else {
          backlog_head_ = id;
        }
        backlog_tail_ = id;
        if (more && !reading_) stop_multishot();
        return;
      }
    }
    if (id >= 0) self().give_back(id);  // bytes that nobody reads any more
    if (closed_ || more) return;  // (a multishot receive reports its end later)
    if constexpr (Derived::pool_buffer_size != 0) {
      if (res == -ENOBUFS && (!own_buffer_ || multishot)) {
        // The pool had no buffer free: more in it, or this connection uses its own from now on.
        // (A multishot receive may run into it after a delivery moved the connection to its
        // own buffer, before its cancellation took effect: receive again, there.)
        if (!own_buffer_ && !self().grow_pool()) {
          own_buffer_ = true;
          own_receives_ = std::min(own_receives_ * 2, 1024u);  // the next return waits longer
        }
        res = -EAGAIN;
      } else if (res == -EINVAL && multishot) {
        self().multishot_refused();  // a kernel before 6.0: single receives from now on
        res = -EAGAIN;
      }
    }
    // Nothing after all, or cancelled (by the channel, pausing; or by the kernel: on io_uring,
    // the thread that submitted it has exited and another runs the loop now): receive again,
    // when reading and once the bytes that came before are delivered.
    if (res == -EAGAIN || res == -EINTR || res == -ECANCELED) {
      if (!reading_ || delivering_ || has_result_) return;  // (then: at the delivery's end)
      try {
        submit_read();
        return;
      } catch (const std::system_error& e) {
        res = -e.code().value();
      } catch (const std::bad_alloc&) {
        res = -ENOMEM;
      }
    }
    // The end: after the bytes before it.
    rerr_ = res < 0 ? -res : 0;
    ended_ = true;
    if (!has_result_) {
      roff_ = 0;
      rlen_ = 0;
      has_result_ = true;
    }
    if (reading_) self().queue(read_handle_);
  }

  /// sent() of the common case, inline and without calls that return: all of it went, and
  /// nothing waits behind it or for its report. @return false: nothing done, sent() does it
  bool sent_quietly(int res) noexcept {
    if (static_cast<std::size_t>(res) != inflight_.size() || closed_ || discarded_ ||
        !pending_.empty() || report_sends_ || werr_ != 0) {
      return false;
    }
    send_in_flight_ = false;
    sent_whole();
    return true;
  }

  /// A send completed with @p res: bytes sent, or -errno.
  void sent(int res) noexcept {
    send_in_flight_ = false;
    if (static_cast<std::size_t>(res) == inflight_.size() && !closed_ && !discarded_) [[likely]] {
      // All of it went (res is never negative here: the buffer is never empty while sent).
      sent_whole();
      if (!pending_.empty() || report_sends_ || werr_ != 0) [[unlikely]] sent_then();
      return;
    }
    sent_not_all(res);
  }

  /// The bookkeeping of a send that went whole: its bytes leave the buffer, and a pool buffer
  /// that it was sent from goes back.
  void sent_whole() noexcept {
    loop_->stats().bytes_written += inflight_.size();
    buffered_ -= inflight_.size();
    inflight_.consume(inflight_.size());
    return_lent();
  }

  /// After a send that went whole: the next one, and the report that the transport asked for.
  /// (Out of line: an echo's send completion then saves no registers.)
  [[gnu::noinline]] void sent_then() noexcept {
    if (!pending_.empty()) next_send();
    if (report_sends_ || werr_ != 0) self().queue(write_handle_);
  }

  /// sent() of less than the whole buffer, or on a closed or discarded channel.
  [[gnu::noinline]] void sent_not_all(int res) noexcept {
    if (closed_) return;  // (a lent pool buffer goes back with the channel: return_lent())
    if (discarded_) {
      inflight_.clear();
      return_lent();
      return;
    }
    // Nothing went (or the kernel cancelled it: see received()): send the same again.
    if (res == -EAGAIN || res == -EINTR || res == -ECANCELED) res = 0;
    if (res >= 0) {
      const auto n = static_cast<std::size_t>(res);
      loop_->stats().bytes_written += n;
      buffered_ -= n;
      inflight_.consume(n);
      if (!inflight_.empty()) {
        werr_ = send_inflight();  // a short send: the rest, from where it stopped
        if (werr_ == 0 && n == 0) return;  // no progress to report
      } else {
        return_lent();
        next_send();
      }
    } else {
      // The buffer is dropped when the failure is delivered, not before: until then the
      // transport must still see bytes waiting (a close() meanwhile waits for them, and hears
      // the failure).
      werr_ = -res;
    }
    if (report_sends_ || werr_ != 0) self().queue(write_handle_);
  }

  /// A readiness wait (@p read, or for writing) completed with @p res (-ECANCELED: cancelled).
  void waited(bool read, int res) noexcept {
    (read ? wait_read_in_flight_ : wait_write_in_flight_) = false;
    if (closed_) return;
    if (res != -ECANCELED) {
      self().queue(read ? readable_handle_ : writable_handle_);
    } else if (read ? watch_read_ : watch_write_) {
      try {
        arm_wait(read);  // cancelled by the kernel (see received()): wait again
      } catch (const std::system_error&) {
        self().queue(read ? readable_handle_ : writable_handle_);  // let the client look
      }
    }
  }

  /// Clears the in-flight flag of an operation whose completion is dropped (a closing loop).
  void drop_recv() noexcept { recv_over(); }
  void drop_send() noexcept { send_in_flight_ = false; }
  void drop_wait(bool read) noexcept {
    (read ? wait_read_in_flight_ : wait_write_in_flight_) = false;
  }

  bool reading_in_flight() const noexcept { return read_in_flight_; }
  bool sending_in_flight() const noexcept { return send_in_flight_; }
  bool waiting_in_flight(bool read) const noexcept {
    return read ? wait_read_in_flight_ : wait_write_in_flight_;
  }
  bool closed() const noexcept { return closed_; }

  /// Gives back the pool buffer that the send in flight was sending from, once done with it
  /// (at the latest when the channel goes: its owner calls this from its destructor). A send
  /// that could not start hands it back to the delivery instead (send_now()).
  void return_lent() noexcept {
    if (lent_id_ >= 0) self().give_back(std::exchange(lent_id_, -1));
  }

  EventLoop* loop_;
  IoClient* client_;
  int fd_;
  unsigned refs_ = 1;  // the owner's, and one per operation in flight

 private:
  void submit_read() {
    if (!own_buffer_) {
      const PoolRecv started = self().submit_recv_pooled();
      if (started != PoolRecv::none) {
        read_in_flight_ = true;
        recv_multishot_ = started == PoolRecv::multishot;
        return;
      }
      own_buffer_ = true;  // the loop has no pool (a kernel without provided buffers)
      no_pool_ = true;
    }
    if (!rbuf_) {
      if (rcap_ == 0) rcap_ = 4 * 1024;
      rbuf_.reset(new std::byte[rcap_]);
    }
    self().submit_recv(rbuf_.get(), rcap_);
    read_in_flight_ = true;
  }

  /// Gives the pool buffer of the last receive back, its bytes delivered or dropped; on a
  /// closed channel, the backlog's too.
  void give_back_held() noexcept {
    if (pool_id_ >= 0) self().give_back(std::exchange(pool_id_, -1));
    if (closed_) {
      if constexpr (Derived::pool_buffer_size != 0) {
        while (backlog_head_ >= 0) {
          const int id = std::exchange(backlog_head_, self().pool_link(backlog_head_).next);
          self().give_back(id);
        }
        backlog_tail_ = -1;
      }
    }
  }

  /// A multishot receive's last completion came: none is in flight.
  void recv_over() noexcept {
    read_in_flight_ = false;
    recv_multishot_ = false;
    recv_cancelling_ = false;
  }
  /// Ends the multishot receive in flight: its last completion comes with what arrived
  /// before, and a receive starts again when reading and once they are delivered. (Out of
  /// line: received() ends with it, and saves no registers for it.)
  [[gnu::noinline]] void stop_multishot() noexcept {
    if constexpr (Derived::pool_buffer_size != 0) {
      if (recv_cancelling_) return;
      recv_cancelling_ = self().cancel_recv();  // (refused: it goes on, and is asked again)
    }
  }

  /// After a receive's bytes are all delivered: the memory for the next. A receive that
  /// filled a pool buffer moves the connection to a buffer of its own, twice as large; one that
  /// filled its own doubles it (up to 64 KiB); a run of receives that a pool buffer holds
  /// twice over (16, doubled each time the connection found the pool empty) gives it back to
  /// the pool, once most of the pool is free (a connection that found it empty would
  /// otherwise find it empty again at once).
  void size_receives(std::size_t got, bool filled, bool pooled) noexcept {
    if (pooled) {
      if (filled) {
        own_buffer_ = true;
        rcap_ = 2 * Derived::pool_buffer_size;
        small_receives_ = 0;
      }
      return;
    }
    if (filled && rcap_ < 64 * 1024) {
      if (auto* bigger = new (std::nothrow) std::byte[rcap_ * 2]) {
        rbuf_.reset(bigger);
        rcap_ *= 2;
      }
    }
    if constexpr (Derived::pool_buffer_size != 0) {
      if (no_pool_) return;
      if (filled || got > Derived::pool_buffer_size / 2) {
        small_receives_ = 0;
      } else if (++small_receives_ >= own_receives_ && self().pool_roomy()) {
        small_receives_ = 0;
        own_buffer_ = false;
        rbuf_.reset();
        rcap_ = 0;
      }
    }
  }

  /// Starts the send of inflight_. @return 0, or why it could not start (errno)
  int send_inflight() noexcept {
    const int error = self().submit_send(inflight_.data(), send_size());
    if (error == 0) send_in_flight_ = true;
    return error;
  }
  /// How much of inflight_ one send takes: at most 1 GiB (io_uring's length is 32 bits); the
  /// rest goes as a short send's.
  std::size_t send_size() const noexcept {
    return std::min<std::size_t>(inflight_.size(), 1u << 30);
  }
  /// send_inflight() for write(): a failure to start it is write()'s, with the bytes taken
  /// back (nothing buffered, as write() promises). The common case makes no call, so that a
  /// write saves no registers: the rest is out of line.
  int send_now() noexcept {
    if (self().try_submit_send(inflight_.data(), send_size())) [[likely]] {
      send_in_flight_ = true;
      return 0;
    }
    return send_now_slowly();
  }
  [[gnu::noinline]] int send_now_slowly() noexcept {
    const int error = send_inflight();
    return error == 0 ? 0 : send_refused(error);
  }
  [[gnu::noinline]] int send_refused(int error) noexcept {
    buffered_ -= inflight_.size();
    inflight_.consume(inflight_.size());
    // A lent buffer is the delivery's again: the protocol may still read it, until the
    // delivery ends and gives it back.
    if (lent_id_ >= 0) pool_id_ = std::exchange(lent_id_, -1);
    return error;
  }
  /// write_rest() with nothing being sent: a copy of @p data, sent now. (Out of line, as
  /// copy_for_later(): an inlined copy would make the lent send save registers.)
  [[gnu::noinline]] int copy_and_send(std::span<const std::byte> data) {
    inflight_.append(data.data(), data.size());  // empty before: nothing is being sent
    buffered_ += data.size();
    return send_now();
  }
  /// write_rest() while a send is in flight (or none may start): a copy of @p data, sent when
  /// the send in flight completes.
  [[gnu::noinline]] int copy_for_later(std::span<const std::byte> data) {
    pending_.append(data.data(), data.size());
    buffered_ += data.size();
    return 0;
  }
  /// Whether @p data lies in the pool buffer of the receive being delivered.
  bool in_pool_buffer(std::span<const std::byte> data) const noexcept {
    const auto at = reinterpret_cast<std::uintptr_t>(data.data());
    const auto from = reinterpret_cast<std::uintptr_t>(rdata_);
    return pool_id_ >= 0 && delivering_ && at >= from && at - from + data.size() <= rsize_;
  }
  /// After a send: what was written meanwhile goes next.
  void next_send() noexcept {
    if (pending_.empty() || discarded_ || werr_ != 0) return;
    pending_.swap(inflight_);
    werr_ = send_inflight();
  }

  void arm_wait(bool read) {
    bool& in_flight = read ? wait_read_in_flight_ : wait_write_in_flight_;
    if (in_flight || closed_) return;
    self().submit_wait(read);
    in_flight = true;
  }

  void deliver_read() noexcept {
    if (!has_result_ || !reading_ || closed_) return;
    if (whole_ && !own_buffer_ && !client_buffers_) [[likely]] {
      deliver_whole();
    } else {
      deliver_in_parts();
    }
  }

  /// deliver_read() of the common case (whole_): one arrival of a multishot receive into the
  /// pool, which did not fill its buffer, with nothing behind it, and that receive still in
  /// flight. Its reference keeps the channel alive through the call (its last completion is
  /// reaped in a later wait, never during a callback), the next arrival needs no receive
  /// started, and the arrival's size leaves the connection on the pool: what is left is to give
  /// the buffer back.
  void deliver_whole() noexcept {
    delivering_ = true;
    has_result_ = whole_ = false;
    const std::size_t n = std::exchange(rlen_, 0);
    roff_ = n;
    client_->read_done(std::span<const std::byte>(rdata_, n));
    delivering_ = false;
    // (Unless a write lent the buffer to its send. Closed meanwhile or not: nothing waits
    // behind it.)
    if (pool_id_ >= 0) self().give_back(std::exchange(pool_id_, -1));
  }

  /// deliver_read() of everything else: bytes behind others, the end of the stream, bytes
  /// that the client takes into its own buffers, a receive to start again.
  [[gnu::noinline]] void deliver_in_parts() noexcept {
    whole_ = false;
    ref();  // the client may close the channel: it stays valid until this returns
    delivering_ = true;
    struct Done {
      CompletionChannel* c;
      ~Done() {
        c->delivering_ = false;
        if (c->closed_) c->give_back_held();
        c->unref();
      }
    } done{this};
    if (rlen_ == 0) {  // the end of the stream, or a failure, after every byte before it
      has_result_ = ended_ = false;
      reading_ = false;
      client_->read_ended(rerr_ != 0 ? errno_code(rerr_) : std::error_code());
      return;
    }
    const std::size_t got = roff_ + rlen_;  // what the receive brought
    const bool filled = got == rsize_;
    const bool pooled = pool_id_ >= 0;  // (a write may lend the buffer to a send meanwhile)
    while (rlen_ != 0) {
      std::span<const std::byte> chunk;
      if (client_buffers_) {
        const std::span<std::byte> target = client_->read_target();
        if (closed_ || !reading_ || target.empty()) return;  // the rest: at start_reading()
        const std::size_t m = std::min(target.size(), rlen_);
        std::memcpy(target.data(), rdata_ + roff_, m);
        chunk = target.first(m);
      } else {
        chunk = std::span<const std::byte>(rdata_ + roff_, rlen_);
      }
      roff_ += chunk.size();
      rlen_ -= chunk.size();
      const bool last = rlen_ == 0 && backlog_head_ < 0 && !ended_;
      if (last) has_result_ = false;
      client_->read_done(chunk);
      if (closed_ || !reading_) {
        if (rlen_ == 0 && !closed_) {
          give_back_held();
          if (has_result_) take_next();  // what waits behind: at start_reading()
        }
        return;
      }
    }
    // (Not while a receive into the channel's own buffer is in flight: that one started
    // before a stop_reading(), and its memory must stay where it is.)
    if (pooled || !read_in_flight_) size_receives(got, filled, pooled);
    give_back_held();
    if (has_result_) {
      // What waits behind it (or the end): in a later callback, as another connection's
      // arrival would be.
      take_next();
      self().queue(read_handle_);
      return;
    }
    if (read_in_flight_) {
      // A multishot receive goes on, unless this connection moves to its own buffer.
      if (own_buffer_ && recv_multishot_) stop_multishot();
      return;
    }
    try {
      submit_read();
    } catch (const std::system_error& e) {  // a ring that takes nothing
      reading_ = false;
      client_->read_ended(e.code());
    } catch (const std::bad_alloc&) {
      reading_ = false;
      client_->read_ended(std::make_error_code(std::errc::not_enough_memory));
    }
  }

  /// After the last receive's bytes are delivered: the next bytes that wait in the backlog
  /// (or the end, with rlen_ 0), as the result being delivered.
  void take_next() noexcept {
    whole_ = false;
    roff_ = 0;
    if (backlog_head_ < 0) {
      rlen_ = 0;  // the end (ended_)
      return;
    }
    if constexpr (Derived::pool_buffer_size != 0) {
      const int id = std::exchange(backlog_head_, self().pool_link(backlog_head_).next);
      if (backlog_head_ < 0) backlog_tail_ = -1;
      pool_id_ = id;
      rdata_ = self().pool_buffer(id);
      rsize_ = Derived::pool_buffer_size;
      rlen_ = self().pool_link(id).size;
    }
  }

  void deliver_write() noexcept {
    if (closed_) return;
    if (werr_ != 0) {
      inflight_.clear();
      return_lent();
      pending_.clear();
      buffered_ = 0;
      discarded_ = true;  // nothing more is sent on a failed socket
    }
    client_->write_done(werr_ != 0 ? errno_code(std::exchange(werr_, 0)) : std::error_code());
  }

  /// A watch_readable() (@p read) or watch_writable() report, in the callback phase.
  void report_ready(bool read) {
    if (!(read ? watch_read_ : watch_write_)) return;
    ref();  // the client may close the channel
    struct Unref {
      CompletionChannel* c;
      ~Unref() { c->unref(); }
    } keep{this};
    if (read) {
      client_->readable();
    } else {
      client_->writable();
    }
    if (read ? watch_read_ : watch_write_) arm_wait(read);
  }

  HandleImpl* read_handle_;
  HandleImpl* write_handle_;
  HandleImpl* readable_handle_;
  HandleImpl* writable_handle_;
  std::unique_ptr<std::byte[]> rbuf_;  // the channel's own receive buffer, while it has one
  std::size_t rcap_ = 0;
  std::byte* rdata_ = nullptr;  // where the last receive's bytes are: rbuf_ or a pool buffer
  std::size_t rsize_ = 0;       // its size
  std::size_t roff_ = 0;  // the undelivered bytes of the last receive: [roff_, roff_ + rlen_)
  std::size_t rlen_ = 0;
  int pool_id_ = -1;      // the pool buffer that holds them, or -1
  int lent_id_ = -1;      // the pool buffer that the send in flight sends from, or -1
  unsigned small_receives_ = 0;  // receives in a row of own buffer that a pool buffer holds twice
  unsigned own_receives_ = 16;   // how many of them return a connection to the pool
  int rerr_ = 0;          // how the last receive ended, when it brought nothing (errno)
  WriteBuffer pending_;   // written since the send in flight started
  WriteBuffer inflight_;  // what the send in flight sends; never moved meanwhile
  int werr_ = 0;
  bool closed_ = false;
  bool reading_ = false;
  bool own_buffer_ = false;  // receives go to rbuf_, not to the pool
  bool no_pool_ = false;     // the loop turned the pool down: rbuf_ for good
  int backlog_head_ = -1;  // pool buffers received behind the one being delivered, in order
  int backlog_tail_ = -1;
  bool read_in_flight_ = false;
  bool recv_multishot_ = false;   // the receive in flight is multishot
  bool recv_cancelling_ = false;  // and its cancellation is asked for
  bool has_result_ = false;  // bytes received and not delivered (or the end, not reported)
  // The result is one arrival of the multishot receive in flight, alone, untouched, and smaller
  // than its pool buffer: deliver_whole()'s case. Cleared by anything that comes behind it.
  bool whole_ = false;
  bool ended_ = false;       // the receives ended (rerr_) behind bytes still to deliver
  bool delivering_ = false;  // deliver_read() is handing bytes over
  bool send_in_flight_ = false;
  bool discarded_ = false;
  bool watch_read_ = false;
  bool watch_write_ = false;
  bool wait_read_in_flight_ = false;
  bool wait_write_in_flight_ = false;
};

}  // namespace strata::detail
