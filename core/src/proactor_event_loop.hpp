#pragma once
// ProactorEventLoop: the completion loop, on Asio's io_context (asyncio's ProactorEventLoop).
// Operations are started on the io_context and their completions queued on the ready queue;
// with liburing present at configure time, Asio's io_uring backend carries them. The ready
// queue, timers, signals and the thread-safe inbox are BaseEventLoop's, as on the selector
// loop: the two loops differ only in how they wait for I/O.
//
// Asio stays out of every header but proactor_event_loop.cpp and proactor_channel.cpp: this
// one only names the types.

#include <memory>
#include <string_view>

#include "base_event_loop.hpp"

namespace strata::detail {

/// The proactor loop's backend_name(): "proactor/io_uring" (Asio on io_uring), "proactor/epoll"
/// (Asio's own reactor, without liburing), or empty when this build has no proactor loop.
std::string_view proactor_backend() noexcept;

/// A new ProactorEventLoop.
/// @throws std::system_error  the kernel refused the backend (io_uring disabled, out of memory).
std::unique_ptr<EventLoop> make_proactor_event_loop();

}  // namespace strata::detail
