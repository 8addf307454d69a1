#pragma once
/// @file
/// The one hook through which the library reports; it never prints on its own.

#include <functional>
#include <string_view>

namespace strata {

/// How serious a log record is.
enum class LogLevel { debug, info, warning, error };

/// Receives every log record of the library.
using LogHandler = std::function<void(LogLevel level, std::string_view message)>;

/// Replaces the process-wide log handler; an empty handler restores the default, which writes
/// "strata: <level>: <message>" lines to stderr.
///
/// @par Thread safety  Safe to call from any thread; records being written while the handler
/// changes go to either the old or the new one.
void set_log_handler(LogHandler handler);

/// Sends one record to the log handler.
/// @par Thread safety  Any thread.
void log(LogLevel level, std::string_view message);

/// "debug", "info", "warning" or "error".
std::string_view to_string(LogLevel level) noexcept;

}  // namespace strata
