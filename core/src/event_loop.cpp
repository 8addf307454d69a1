#include "strata/core/event_loop.hpp"

#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "proactor_event_loop.hpp"
#include "readiness_channel.hpp"
#include "selector_event_loop.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"
#include "task_registry.hpp"

namespace strata {

namespace {
bool debug_from_environment() {
  const char* v = std::getenv("STRATA_DEBUG");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

/// STRATA_STALL_MS in milliseconds, when set to a number; 100 ms otherwise.
Duration stall_threshold_from_environment() {
  Duration fallback = std::chrono::milliseconds(100);
  const char* v = std::getenv("STRATA_STALL_MS");
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  long ms = std::strtol(v, &end, 10);
  if (*end != '\0' || ms < 0) {
    log(LogLevel::warning, std::string("STRATA_STALL_MS=") + v +
                               " is not a number of milliseconds; the stall threshold stays 100 ms");
    return fallback;
  }
  return std::chrono::milliseconds(ms);
}

std::string seconds_text(Duration d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f s", std::chrono::duration<double>(d).count());
  return text;
}

/// A histogram bound: "100 us", "10 ms", "1 s".
std::string bound_text(Duration d) {
  using namespace std::chrono;
  if (d < milliseconds(1)) return std::to_string(duration_cast<microseconds>(d).count()) + " us";
  if (d < seconds(1)) return std::to_string(duration_cast<milliseconds>(d).count()) + " ms";
  return std::to_string(duration_cast<seconds>(d).count()) + " s";
}
}  // namespace

EventLoop::EventLoop()
    : debug_(debug_from_environment()), stall_threshold_(stall_threshold_from_environment()) {}

void EventLoop::report_stall(const StallReport& report) noexcept {
  ++stats_.stalls;
  try {
    if (stall_handler_) {
      stall_handler_(report);
    } else {
      log(LogLevel::warning, report.format());
    }
  } catch (...) {
    try {
      log(LogLevel::error, "Unhandled error in the stall handler: " +
                               describe_exception(std::current_exception()));
    } catch (...) {
    }
  }
}

LoopMetrics EventLoop::metrics() const {
  LoopMetrics m;
  m.iterations = stats_.iterations;
  m.callbacks = stats_.callbacks;
  m.ready_max = stats_.ready_max;
  m.lag_histogram = stats_.lag_histogram;
  m.lag_max = stats_.lag_max;
  m.stalls = stats_.stalls;
  m.tasks_alive = stats_.tasks_alive;
  for (const detail::LoopResource* r = resources_; r != nullptr; r = r->next_) {
    ++m.transports_open;
    m.write_buffered += r->write_buffered();
  }
  m.bytes_read = stats_.bytes_read;
  m.bytes_written = stats_.bytes_written;
  m.receive_buffers_held = stats_.receive_buffers_held;
  return m;
}

std::string LoopMetrics::format() const {
  std::ostringstream out;
  out << "iterations " << iterations << "\ncallbacks " << callbacks << "\nready now "
      << ready_now << "\nready max " << ready_max << "\ntimers pending " << timers_pending
      << "\nloop lag:";
  for (std::size_t i = 0; i < lag_histogram.size(); ++i) {
    if (i < lag_bounds.size()) {
      out << " <" << bound_text(lag_bounds[i]);
    } else {
      out << " >=" << bound_text(lag_bounds.back());
    }
    out << ": " << lag_histogram[i] << (i + 1 < lag_histogram.size() ? "," : "");
  }
  out << "\nloop lag max " << seconds_text(lag_max) << "\nstalls " << stalls << "\ntasks alive "
      << tasks_alive << "\ntransports open " << transports_open << "\nwrite buffered "
      << write_buffered << " bytes\nbytes read " << bytes_read << "\nbytes written "
      << bytes_written << "\nreceive buffers held " << receive_buffers_held << "\n";
  return out.str();
}

std::string StallReport::format() const {
  std::string text = "Stall: " + callback + " held the loop for " + seconds_text(held);
  if (!task.empty()) {
    if (!resumed_from.empty()) text += "\n  it resumed from " + resumed_from;
    text += now_awaiting.empty() ? "\n  the step ended the task"
                                 : "\n  it now awaits:\n" + now_awaiting;
  }
  return text;
}

EventLoop::~EventLoop() = default;

void EventLoop::set_exception_handler(ExceptionHandler handler) {
  exception_handler_ = std::move(handler);
}

void EventLoop::call_exception_handler(const ExceptionContext& context) noexcept {
  if (!exception_handler_) {
    default_exception_handler(context);
    return;
  }
  try {
    exception_handler_(*this, context);
  } catch (...) {
    try {
      log(LogLevel::error, "Unhandled error in exception handler: " +
                               describe_exception(std::current_exception()) +
                               " (while handling: " + context.message + ")");
    } catch (...) {
    }
  }
}

void EventLoop::default_exception_handler(const ExceptionContext& context) noexcept {
  try {
    std::ostringstream out;
    out << (context.message.empty() ? "Unhandled exception in event loop" : context.message);
    if (!context.task.empty()) out << "\n  task: " << context.task;
    if (!context.callback.empty()) out << "\n  callback: " << context.callback;
    if (context.exception) out << "\n  exception: " << describe_exception(context.exception);
    log(LogLevel::error, out.str());
  } catch (...) {
  }
}

void EventLoop::check_thread(const char* method) const {
  if (thread_id_ == std::thread::id{} || !is_running()) return;
  if (std::this_thread::get_id() != thread_id_) {
    std::string msg = std::string("Non-thread-safe operation ") + method +
                      "() invoked on an event loop other than the current one; use "
                      "call_soon_threadsafe() from other threads";
    log(LogLevel::error, msg);
    throw EventLoopError(msg);
  }
}

void EventLoop::check_can_run() const {
  if (is_closed()) throw EventLoopError("Event loop is closed");
  if (is_running()) throw EventLoopError("This event loop is already running");
  if (detail::current_running_loop() != nullptr) {
    throw EventLoopError("Cannot run the event loop while another loop is running on this thread");
  }
}

std::string_view to_string(LoopKind kind) noexcept {
  switch (kind) {
    case LoopKind::epoll: return "epoll";
    case LoopKind::poll: return "poll";
    case LoopKind::select: return "select";
    case LoopKind::proactor: return "proactor";
  }
  return "unknown";
}

LoopKind parse_loop_kind(std::string_view name) {
  for (LoopKind k : {LoopKind::epoll, LoopKind::poll, LoopKind::select, LoopKind::proactor}) {
    if (to_string(k) == name) return k;
  }
  throw std::invalid_argument("unknown loop kind '" + std::string(name) +
                              "'; valid kinds: epoll, poll, select, proactor");
}

const std::vector<LoopKind>& available_loop_kinds() {
  static const std::vector<LoopKind> kinds = [] {
    std::vector<LoopKind> out;
#ifdef __linux__
    try {
      detail::make_epoll_selector();
      out.push_back(LoopKind::epoll);
    } catch (const std::exception&) {
      // epoll unavailable here (e.g. a restricted sandbox): the portable backends remain.
    }
#endif
    out.push_back(LoopKind::poll);
    out.push_back(LoopKind::select);
    try {
      detail::make_proactor_event_loop()->close();
      out.push_back(LoopKind::proactor);
    } catch (const std::exception&) {
      // Not in this build, or the kernel refuses io_uring here: the selector loop remains.
    }
    return out;
  }();
  return kinds;
}

std::unique_ptr<EventLoop> new_event_loop(LoopKind kind) {
  std::unique_ptr<detail::Selector> selector;
  switch (kind) {
    case LoopKind::epoll:
#ifdef __linux__
      selector = detail::make_epoll_selector();
      break;
#else
      throw std::invalid_argument("the epoll loop needs Linux; use poll or select");
#endif
    case LoopKind::poll: selector = detail::make_poll_selector(); break;
    case LoopKind::select: selector = detail::make_select_selector(); break;
    case LoopKind::proactor: return detail::make_proactor_event_loop();
  }
  if (!selector) throw std::invalid_argument("unknown LoopKind value");
  return std::make_unique<detail::SelectorEventLoop>(std::move(selector));
}

detail::IoChannelPtr EventLoop::open_channel(int fd, detail::ChannelKind kind,
                                            detail::IoClient& client) {
  return detail::make_readiness_channel(*this, fd, kind, client);
}

EventLoop* try_get_running_loop() noexcept { return detail::current_running_loop(); }

EventLoop& get_running_loop() {
  EventLoop* loop = detail::current_running_loop();
  if (!loop) throw EventLoopError("no running event loop on this thread");
  return *loop;
}

namespace detail {

std::string demangle(const char* mangled) {
  int status = 0;
  char* out = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) return mangled;
  std::string result(out);
  std::free(out);
  return result;
}

void assert_failed(const char* expr, const char* file, int line) noexcept {
  log(LogLevel::error, std::string("assertion failed: ") + expr + " at " + file + ":" +
                           std::to_string(line));
  std::abort();
}

void HandleImpl::cancel() noexcept {
  if (cancelled_.exchange(true, std::memory_order_relaxed)) return;
  if (is_timer_) {
    auto* t = static_cast<TimerHandleImpl*>(this);
    if (t->queued_) t->owner_->timer_cancelled(*t);
  }
  if (!threadsafe_ && !running_) callback_.reset();  // a threadsafe one: the loop may be running it
}

void HandleImpl::destroy() noexcept {
  if (embedded_) {
    release_embedded_handle(*this);  // may free the owner, and this handle with it
  } else if (is_timer_) {
    static_cast<TimerHandleImpl*>(this)->~TimerHandleImpl();
    small_deallocate(this, sizeof(TimerHandleImpl));
  } else if (threadsafe_) {
    this->~HandleImpl();
    ::operator delete(this);
  } else {
    this->~HandleImpl();
    small_deallocate(this, sizeof(HandleImpl));
  }
}

}  // namespace detail

void EventLoop::attach_resource(detail::LoopResource& resource) noexcept {
  resource.prev_ = nullptr;
  resource.next_ = resources_;
  if (resources_) resources_->prev_ = &resource;
  resources_ = &resource;
}

void EventLoop::detach_resource(detail::LoopResource& resource) noexcept {
  if (resource.prev_) {
    resource.prev_->next_ = resource.next_;
  } else if (resources_ == &resource) {
    resources_ = resource.next_;
  } else {
    return;  // not attached
  }
  if (resource.next_) resource.next_->prev_ = resource.prev_;
  resource.prev_ = resource.next_ = nullptr;
}

void EventLoop::close_resources() noexcept {
  // Each loop_closing() detaches its resource (and may free it, or attach or free others).
  while (detail::LoopResource* r = resources_) {
    r->loop_closing();
    if (resources_ == r) detach_resource(*r);  // it forgot to: never loop forever
  }
}

}  // namespace strata
