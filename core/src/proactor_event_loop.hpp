#pragma once
// ProactorEventLoop: the completion loop (asyncio's ProactorEventLoop). Operations are started
// and their completions queued on the ready queue. With liburing present at configure time it
// is Strata's own io_uring loop (uring_event_loop.cpp); without, Asio's io_context on its epoll
// reactor (proactor_event_loop.cpp). The ready queue, timers, signals and the thread-safe
// inbox are BaseEventLoop's, as on the selector loop: the loops differ only in how they wait
// for I/O.
//
// liburing and Asio stay out of every header: this one only names the entry points.

#include <memory>
#include <string_view>

#include "base_event_loop.hpp"

namespace strata::detail {

/// The proactor loop's backend_name(): "proactor/io_uring" (Strata's io_uring loop),
/// "proactor/epoll" (Asio's reactor, without liburing), or empty when this build has none.
std::string_view proactor_backend() noexcept;

/// A new ProactorEventLoop.
/// @throws std::system_error  the kernel refused the backend (io_uring disabled, out of memory).
std::unique_ptr<EventLoop> make_proactor_event_loop();

}  // namespace strata::detail
