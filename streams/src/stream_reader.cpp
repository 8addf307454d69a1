// StreamReader: asyncio.StreamReader's semantics, with reads that complete from the buffer
// without suspending.
//
// A read is an awaitable (ReadOp), not a coroutine: when the buffer already answers it, the
// co_await costs a check and a copy. Otherwise the task waits, and feed_data() wakes it only
// once the read can complete (asyncio wakes the reader on every feed and lets it loop). While
// a task waits, no other read may run: that keeps the woken read's data from being taken by a
// read of another task before it resumes.

#include "strata/streams/stream_reader.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "strata/core/detail/assert.hpp"
#include "strata/core/errors.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

IncompleteReadError::IncompleteReadError(std::string partial, std::optional<std::size_t> expected)
    : std::runtime_error(std::to_string(partial.size()) + " bytes read on a total of " +
                         (expected ? std::to_string(*expected) : std::string("undefined")) +
                         " expected bytes"),
      partial_(std::make_shared<const std::string>(std::move(partial))),
      expected_(expected) {}

namespace detail {

namespace {
constexpr std::size_t npos = std::string::npos;
constexpr std::size_t compact_after = 64 * 1024;  // consumed bytes kept before moving the rest

/// The view blocks that one thread's readers let go of (ReaderState::new_view_block()): a
/// reader that changes block size, or stops reading views, or ends, leaves its block here for
/// the next reader that needs one. Up to max_cached of each size wait; more are freed.
///
/// Trivially destructible, so that a reader that outlives the thread's other thread-locals
/// (one kept in a static) still finds it: ViewBlockCacheOwner frees the blocks when the
/// thread ends, and from then on the cache frees what it is given.
struct ViewBlockCache {
  static constexpr std::size_t max_cached = 8;

  std::byte* take(std::size_t cls) {
    if (count[cls] == 0) return new std::byte[ReaderState::view_block_size(cls)];
    return blocks[cls][--count[cls]];
  }
  void give(std::byte* block, std::size_t cls) noexcept;
  void free_all() noexcept {
    for (std::size_t c = 0; c != ReaderState::view_classes; ++c) {
      for (std::size_t i = 0; i != count[c]; ++i) delete[] blocks[c][i];
      count[c] = 0;
    }
  }

  std::byte* blocks[ReaderState::view_classes][max_cached];
  std::size_t count[ReaderState::view_classes];
  bool owned;  // ViewBlockCacheOwner is registered for this thread
  bool ended;  // the thread's thread-locals are being destroyed
};

constinit thread_local ViewBlockCache view_blocks{};

/// Frees a thread's cached view blocks when the thread ends.
struct ViewBlockCacheOwner {
  ~ViewBlockCacheOwner() {
    view_blocks.free_all();
    view_blocks.ended = true;
  }
};
thread_local ViewBlockCacheOwner view_block_owner;

void ViewBlockCache::give(std::byte* block, std::size_t cls) noexcept {
  if (ended || count[cls] == max_cached) {
    delete[] block;
    return;
  }
  if (!owned) {
    owned = true;
    [[maybe_unused]] volatile auto* owner = &view_block_owner;  // registers its destructor
  }
  blocks[cls][count[cls]++] = block;
}
}  // namespace

// ---- ReaderState -------------------------------------------------------------------------

std::string ReaderState::take(std::size_t n) {
  if (n == 0) return {};
  if (head == 0 && n == data.size()) {
    std::string out = std::move(data);  // all of it: hand the buffer over, no copy
    data = std::string();
    return out;
  }
  std::string out = data.substr(head, n);
  head += n;
  if (head == data.size()) {
    data.clear();
    head = 0;
  } else if (head >= compact_after && head * 2 >= data.size()) {
    data.erase(0, head);
    head = 0;
  }
  return out;
}

void ReaderState::take_into(char* out, std::size_t n) noexcept {
  if (n == 0) return;
  std::memcpy(out, data.data() + head, n);
  head += n;
  if (head == data.size()) {
    data.clear();  // keeps the capacity for the next feed
    head = 0;
  }
}

void ReaderState::take_into(std::string& out, std::size_t n) {
  if (n == 0) return;
  out.append(data, head, n);
  head += n;
  if (head == data.size()) {
    data.clear();
    head = 0;
  }
}

std::byte* ReaderState::new_view_block(std::size_t at_least, std::size_t& size) {
  STRATA_ASSERT(at_least <= StreamReader::max_view);
  std::size_t cls = view_class;
  while (view_block_size(cls) < at_least) ++cls;
  std::byte* block = view_blocks.take(cls);  // first, in case it throws
  if (view_block != nullptr) view_blocks.give(view_block, view_block_class);
  view_block = block;
  view_block_class = view_class = static_cast<std::uint8_t>(cls);
  size = view_block_size(cls);
  return view_block;
}

void ReaderState::release_view_block() noexcept {
  if (waiting_into != nullptr && waiting_into->view_) return;  // the waiting read_view()'s
  view_blocks.give(std::exchange(view_block, nullptr), view_block_class);
}

void ReaderState::give_back(std::string_view bytes) {
  data = std::string(bytes) + std::string(view());
  head = 0;
}

void ReaderState::before_wait() {
  if (has_waiter()) {
    throw InvalidStateError(
        "StreamReader: a read was called while another task is already waiting for incoming "
        "data");
  }
  if (paused) {
    // This read needs more than the buffer holds: let the transport bring it (asyncio's
    // _wait_for_data).
    paused = false;
    if (transport != nullptr) transport->resume_reading();
  }
}

void ReaderState::maybe_resume_transport() noexcept {
  if (paused && size() <= limit) {
    paused = false;
    if (transport != nullptr) transport->resume_reading();
  }
}

bool ReaderState::feed_read_to_eof() {
  if (waiting == nullptr || waiting->kind_ != ReadOp::Kind::read || waiting->n_ >= 0) return false;
  waiting->accumulated_ += take(size());
  return true;
}

void ReaderState::wake_if_ready() {
  if (waiting_into != nullptr && !waiting_into->waiter_.done() &&
      (size() > 0 || eof || exception)) {
    waiting_into->waiter_.wake();
  }
  if (waiting != nullptr && !waiting->waiter_.done() && waiting->can_complete()) {
    waiting->waiter_.wake();
  }
}

// ---- ReadOp ------------------------------------------------------------------------------

ReadOp::ReadOp(Ref<ReaderState> state, Kind kind, std::ptrdiff_t n,
               std::vector<std::string> separators) noexcept
    : state_(std::move(state)), separators_(std::move(separators)), n_(n), kind_(kind) {}

ReadOp::ReadOp(ReadOp&& other) noexcept
    : state_(std::move(other.state_)),
      separators_(std::move(other.separators_)),
      accumulated_(std::move(other.accumulated_)),
      n_(other.n_),
      searched_(other.searched_),
      kind_(other.kind_) {
  STRATA_ASSERT(!other.waiting_);
}

ReadOp::~ReadOp() {
  if (!waiting_ || !state_) return;
  // Destroyed while suspended (its task was destroyed): give back what it took.
  ReaderState& st = *state_;
  if (st.waiting == this) st.waiting = nullptr;
  if (!accumulated_.empty()) st.give_back(accumulated_);
}

std::size_t ReadOp::search_start() const noexcept { return searched_; }

std::pair<std::size_t, std::size_t> ReadOp::find_separator() const noexcept {
  const std::string_view buffer = state_->view();
  std::size_t best_start = npos;
  std::size_t best_end = npos;
  // separators_ is sorted by length, so that of matches ending at the same place the
  // shortest wins (asyncio 3.13).
  for (const std::string& sep : separators_) {
    const std::size_t at = buffer.find(sep, searched_);
    if (at == npos) continue;
    if (best_end == npos || at + sep.size() < best_end) {
      best_start = at;
      best_end = at + sep.size();
    }
  }
  return {best_start, best_end};
}

bool ReadOp::can_complete() const noexcept {
  const ReaderState& st = *state_;
  if (st.exception || st.eof) return true;
  switch (kind_) {
    case Kind::read:
      return n_ == 0 || (n_ > 0 && st.size() > 0);
    case Kind::readexactly:
      return st.size() >= static_cast<std::size_t>(n_);
    case Kind::readline:
    case Kind::readuntil: {
      if (find_separator().first != npos) return true;
      // Nothing before this offset can start a match any more (asyncio's offset).
      const std::size_t longest = separators_.back().size();
      searched_ = st.size() + 1 > longest ? st.size() + 1 - longest : 0;
      return searched_ > st.limit;
    }
  }
  return true;
}

bool ReadOp::await_ready() {
  state_->release_view();  // a read of another kind than read_view() starts: the view block goes
  // While another task waits, a read must wait too (and await_suspend() refuses it).
  if (state_->has_waiter()) return false;
  return can_complete();
}

void ReadOp::await_suspend(std::coroutine_handle<> h) {
  ReaderState& st = *state_;
  st.before_wait();
  st.queue.suspend(waiter_, h);
  st.waiting = this;
  waiting_ = true;
}

std::string ReadOp::await_resume() {
  ReaderState& st = *state_;
  if (waiting_) {
    waiting_ = false;
    if (st.waiting == this) st.waiting = nullptr;
    try {
      st.queue.resume(waiter_);
    } catch (...) {
      // Cancelled: nothing is consumed; what read(-1) took goes back to the buffer.
      if (!accumulated_.empty()) {
        st.give_back(accumulated_);
        accumulated_.clear();
      }
      throw;
    }
  }
  return complete();
}

// ---- ReadIntoOp --------------------------------------------------------------------------

void ReadIntoOp::suspend_checked(std::coroutine_handle<> h) {
  ReaderState& st = *state_;
  TaskCore* task = TaskCore::current();
  if (task == nullptr) {
    throw InvalidStateError(
        "StreamReader::read_into() or read_view() awaited outside a Task; run the coroutine with "
        "create_task(), run_until_complete() or strata::run()");
  }
  st.before_wait();
  task->park(waiter_, h);
  st.waiting_into = this;
  waiting_ = true;
}

void ReadIntoOp::end_wait() {
  ReaderState& st = *state_;
  waiting_ = false;
  if (st.waiting_into == this) st.waiting_into = nullptr;
  // What WaiterQueue::resume() does, for a node in no queue.
  try {
    TaskCore* task = TaskCore::current();  // the task resuming from this wait
    task->deliver_pending_cancel();
    if (waiter_.cancelled()) task->throw_parked_cancel();
  } catch (...) {
    give_back_filled();  // cancelled: nothing is consumed
    throw;
  }
}

void ReadIntoOp::abandon() noexcept {
  ReaderState& st = *state_;
  if (st.waiting_into == this) st.waiting_into = nullptr;
  waiting_ = false;
  try {
    give_back_filled();
  } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for them; the task is gone anyway
  }
}

void ReadIntoOp::give_back_filled() {
  const std::string_view bytes = into_string_ != nullptr ? std::string_view(*into_string_)
                                                         : std::string_view(into_, filled_);
  if (bytes.empty()) return;
  state_->give_back(bytes);
  if (into_string_ != nullptr) into_string_->clear();
  filled_ = 0;
}

std::size_t ReadIntoOp::complete() {
  ReaderState& st = *state_;
  if (st.exception) {
    give_back_filled();  // the bytes stay in the reader: an error loses no data
    std::rethrow_exception(st.exception);
  }
  const std::size_t more = std::min(room(), st.size());
  if (into_string_ != nullptr) {
    st.take_into(*into_string_, more);
  } else {
    if (view_ && into_ == nullptr && more > 0) take_view_block(more);
    st.take_into(into_ + filled_, more);
    filled_ += more;
  }
  st.maybe_resume_transport();
  return filled();
}

std::string ReadOp::complete() {
  ReaderState& st = *state_;
  if (st.exception) std::rethrow_exception(st.exception);
  std::string out;
  switch (kind_) {
    case Kind::read:
      if (n_ == 0) return {};
      if (n_ < 0) {
        out = std::move(accumulated_);
        out += st.take(st.size());
      } else {
        out = st.take(std::min(static_cast<std::size_t>(n_), st.size()));
      }
      break;
    case Kind::readexactly: {
      const auto n = static_cast<std::size_t>(n_);
      if (st.size() < n) {
        std::string partial = st.take(st.size());
        st.maybe_resume_transport();
        throw IncompleteReadError(std::move(partial), n);
      }
      out = st.take(n);
      break;
    }
    case Kind::readuntil:
      out = complete_readuntil();
      break;
    case Kind::readline:
      try {
        out = complete_readuntil();
      } catch (IncompleteReadError& e) {
        return e.partial();  // the last line, without "\n"
      } catch (const LimitOverrunError& e) {
        // asyncio: drop the overlong line (through its "\n" if there is one), then ValueError.
        const bool ends_here = st.view().substr(e.consumed()).starts_with('\n');
        st.take(ends_here ? e.consumed() + 1 : st.size());
        st.maybe_resume_transport();
        throw std::length_error(e.what());
      }
      break;
  }
  st.maybe_resume_transport();
  return out;
}

std::string ReadOp::complete_readuntil() {
  ReaderState& st = *state_;
  const auto [start, end] = find_separator();
  if (start != npos) {
    if (start > st.limit) {
      throw LimitOverrunError("Separator is found, but chunk is longer than limit", start);
    }
    return st.take(end);
  }
  const std::size_t longest = separators_.back().size();
  const std::size_t offset = st.size() + 1 > longest ? st.size() + 1 - longest : 0;
  if (offset > st.limit) {
    throw LimitOverrunError("Separator is not found, and chunk exceed the limit", offset);
  }
  // At EOF with no separator: everything, as the partial read.
  std::string partial = st.take(st.size());
  throw IncompleteReadError(std::move(partial), std::nullopt);
}

}  // namespace detail

// ---- StreamReader ------------------------------------------------------------------------

using detail::ReadOp;

StreamReader::StreamReader(std::size_t limit) {
  if (limit == 0) throw std::invalid_argument("StreamReader: limit must be > 0");
  state_ = detail::Ref<detail::ReaderState>(new detail::ReaderState(limit));
}

ReadOp StreamReader::read(std::ptrdiff_t n) {
  return ReadOp(state_, ReadOp::Kind::read, n, {});
}

ReadOp StreamReader::readline() {
  std::vector<std::string> separators;
  separators.emplace_back("\n");
  return ReadOp(state_, ReadOp::Kind::readline, 0, std::move(separators));
}

ReadOp StreamReader::readexactly(std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max())) {
    throw std::invalid_argument("readexactly: n is too large");
  }
  return ReadOp(state_, ReadOp::Kind::readexactly, static_cast<std::ptrdiff_t>(n), {});
}

ReadOp StreamReader::readuntil(std::string separator) {
  std::vector<std::string> separators;
  separators.push_back(std::move(separator));
  return readuntil(std::move(separators));
}

ReadOp StreamReader::readuntil(std::vector<std::string> separators) {
  if (separators.empty()) throw std::invalid_argument("readuntil: no separator given");
  for (const std::string& s : separators) {
    if (s.empty()) throw std::invalid_argument("readuntil: a separator must not be empty");
  }
  std::stable_sort(separators.begin(), separators.end(),
                   [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
  return ReadOp(state_, ReadOp::Kind::readuntil, 0, std::move(separators));
}

namespace {
AsyncGenerator<std::string> lines_of(StreamReader reader) {
  for (;;) {
    std::string line = co_await reader.readline();
    if (line.empty()) break;
    co_yield std::move(line);
  }
}
}  // namespace

AsyncGenerator<std::string> StreamReader::lines() { return lines_of(*this); }

bool StreamReader::at_eof() const noexcept { return state_->eof && state_->size() == 0; }
std::size_t StreamReader::buffered() const noexcept { return state_->size(); }
std::size_t StreamReader::limit() const noexcept { return state_->limit; }

void StreamReader::feed_data(std::string_view data) { feed(data, /*resume_now=*/false); }

void StreamReader::feed(std::string_view data, bool resume_now) {
  detail::ReaderState& st = *state_;
  // The common case of a connection read by a read_into() loop: all of @p data fits the
  // waiting read's buffer. Kept small, so that it costs no more than the copy and the wake-up.
  if (detail::ReadIntoOp* into = st.waiting_into; into != nullptr && !data.empty() &&
                                                  data.size() <= into->room() && st.size() == 0 &&
                                                  !st.eof && !st.exception) {
    into->fill(data);
    if (into->waiter_.done()) return;
    // From data_received, the task resumes here: a stream handler's read_into() loop then
    // costs one loop iteration per read, as a Protocol's data_received does.
    if (resume_now) {
      into->waiter_.wake_now();
    } else {
      into->waiter_.wake();
    }
    return;
  }
  feed_more(data);
}

void StreamReader::feed_more(std::string_view data) {
  detail::ReaderState& st = *state_;
  if (st.eof) throw InvalidStateError("feed_data() after feed_eof()");
  if (data.empty()) return;
  if (detail::ReadIntoOp* into = st.waiting_into; into != nullptr && st.size() == 0 && !st.exception) {
    // A read_into() waits on an empty buffer: the bytes go straight into the caller's.
    const std::size_t n = std::min(into->room(), data.size());
    into->fill(data.substr(0, n));
    data.remove_prefix(n);
    if (n > 0 && !into->waiter_.done()) into->waiter_.wake();
    if (data.empty()) return;
  }
  st.data.append(data);
  if (st.waiting != nullptr) {
    if (st.feed_read_to_eof()) return;
    st.wake_if_ready();
  }
  ReadOp* waiting = st.waiting;
  // Stop the transport while more than twice the limit waits, unless a waiting read needs it.
  if (st.transport != nullptr && !st.paused && st.size() > 2 * st.limit &&
      (waiting == nullptr || waiting->can_complete())) {
    st.paused = true;
    st.transport->pause_reading();
  }
}

void StreamReader::feed_data(std::span<const std::byte> data) {
  feed_data(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

void StreamReader::feed_eof() {
  state_->eof = true;
  state_->wake_if_ready();
}

void StreamReader::set_exception(std::exception_ptr error) {
  state_->exception = std::move(error);
  state_->wake_if_ready();
}

std::exception_ptr StreamReader::exception() const noexcept { return state_->exception; }

void StreamReader::set_transport(Transport& transport) {
  if (state_->transport != nullptr) {
    throw InvalidStateError("StreamReader::set_transport(): a transport is already set");
  }
  state_->transport = &transport;
}

void StreamReader::clear_transport() noexcept {
  state_->transport = nullptr;
  state_->paused = false;
}

}  // namespace strata
