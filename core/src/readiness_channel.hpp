#pragma once
// The readiness channel: IoChannel on the loop's add_reader()/add_writer() and non-blocking
// system calls (see readiness_channel.cpp).

#include "strata/core/detail/io_channel.hpp"

namespace strata::detail {

/// A channel that waits for readiness, then reads or writes @p fd (owned from now on).
IoChannelPtr make_readiness_channel(EventLoop& loop, int fd, ChannelKind kind, IoClient& client);

}  // namespace strata::detail
