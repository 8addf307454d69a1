#pragma once
// The readiness channel: IoChannel on the loop's add_reader()/add_writer() and non-blocking
// system calls (see readiness_channel.cpp).

#include "strata/core/detail/io_channel.hpp"
#include "strata/core/detail/io_ops.hpp"

namespace strata::detail {

/// A channel that waits for readiness, then reads or writes @p fd (owned from now on): through
/// @p watch (the proactor's poll operations, open on @p fd) or, without one, through the
/// loop's add_reader()/add_writer() (the selector loop).
IoChannelPtr make_readiness_channel(EventLoop& loop, int fd, ChannelKind kind, IoClient& client,
                                    IoWatchPtr watch = {});

}  // namespace strata::detail
