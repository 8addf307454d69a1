#pragma once
/// @file
/// @cond INTERNAL
/// SIGCHLD for the child watcher of the transports layer (its fallback where the kernel has no
/// pidfd): defined in src/signals.cpp, beside the signal table it shares.

namespace strata::detail {

/// Has @p write_fd, the write end of a non-blocking pipe, receive one byte on each SIGCHLD
/// until remove_sigchld_listener(@p write_fd). While a listener exists SIGCHLD is caught
/// (SA_NOCLDSTOP), and a loop's own add_signal_handler(SIGCHLD) works alongside: both hear
/// it, and the disposition SIGCHLD had before either is restored once neither needs it.
/// @throws std::system_error  64 listeners exist already (too_many_files_open), or
/// sigaction() failed.
/// @par Thread safety  Any thread.
void add_sigchld_listener(int write_fd);

/// Stops writing to @p write_fd; once this returns, no signal handler writes to it any more,
/// so it may be closed. A no-op for a descriptor that is not a listener.
void remove_sigchld_listener(int write_fd) noexcept;

}  // namespace strata::detail
/// @endcond
