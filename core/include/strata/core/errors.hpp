#pragma once
/// @file
/// Exception types thrown by the core layer, and Strata's own error category.

#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace strata {

/// Thrown into a coroutine whose Task was cancelled (asyncio.CancelledError).
///
/// Like asyncio's, which derives from BaseException rather than Exception, it deliberately
/// does not derive from std::exception: a `catch (const std::exception&)` written for
/// ordinary errors does not swallow a cancellation. Catch it by name to clean up, and rethrow.
class CancelledError {
 public:
  CancelledError() = default;
  /// A cancellation carrying @p message (the one given to cancel()).
  explicit CancelledError(std::string message) : message_(std::move(message)) {}

  /// The message given to cancel(), or empty.
  const std::string& message() const noexcept { return message_; }
  /// "cancelled", or "cancelled: <message>".
  const char* what() const noexcept;

 private:
  std::string message_;
  mutable std::string what_;
};

/// strata::run() was interrupted by SIGINT (Ctrl-C): the signal cancelled the main task, and
/// the task ended cancelled (Python's KeyboardInterrupt).
///
/// Like CancelledError it does not derive from std::exception, so that handlers of ordinary
/// errors let it through. A program that wants the shell to see the interruption catches it
/// in main() and exits with status 130 (128 + SIGINT).
class KeyboardInterrupt {
 public:
  /// "interrupted by SIGINT".
  const char* what() const noexcept { return "interrupted by SIGINT"; }
};

/// A deadline passed: thrown by timeout(), wait_for() and the waits that take a timeout.
class TimeoutError : public std::runtime_error {
 public:
  TimeoutError() : std::runtime_error("timed out") {}
  using std::runtime_error::runtime_error;
};

/// An operation was called in a state that does not allow it (asyncio.InvalidStateError):
/// set_result() on a done Future, result() of a pending one, a Coro awaited twice.
class InvalidStateError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// The event loop was used in a state that does not allow it: run while running, closed while
/// running, used after close, or no loop running where one is needed (asyncio's RuntimeError).
class EventLoopError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A job was submitted to an executor after its shutdown() (asyncio's RuntimeError "cannot
/// schedule new futures after shutdown"). Nothing was scheduled.
class ExecutorShutdownError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A Barrier was aborted, or reset or aborted while the caller waited in it
/// (asyncio.BrokenBarrierError).
class BrokenBarrierError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Several exceptions raised together, as by the children of a TaskGroup
/// (Python's ExceptionGroup). what() lists each one's message.
class ExceptionGroup : public std::exception {
 public:
  /// Groups @p exceptions under @p message; what() is built here, once.
  ExceptionGroup(std::string message, std::vector<std::exception_ptr> exceptions);

  /// "<message> (N sub-exceptions)", then one line per exception (describe_exception()).
  const char* what() const noexcept override { return what_.c_str(); }
  /// The message given to the constructor, without the list.
  const std::string& message() const noexcept { return message_; }
  /// The grouped exceptions, in the order they were raised.
  const std::vector<std::exception_ptr>& exceptions() const noexcept { return exceptions_; }

 private:
  std::string message_;
  std::vector<std::exception_ptr> exceptions_;
  std::string what_;
};

/// Describes an exception_ptr in one line: its what() where it has one, else its kind.
std::string describe_exception(const std::exception_ptr& e);

/// Failures that are not the operating system's; they share the strata_category().
enum class errc {
  cancelled = 1,  ///< the operation was cancelled
  timed_out,      ///< the operation's deadline passed
  loop_closed,    ///< the event loop was closed under the operation
  callback_failed,  ///< a user callback (e.g. a protocol's) threw; the exception went to the
                    ///< loop's exception handler
};

/// The error category of errc: its name() is "strata". One instance for the program.
const std::error_category& strata_category() noexcept;
/// @p e as a std::error_code of strata_category(); lets `std::error_code ec = errc::...`
/// compile (with the std::is_error_code_enum specialisation below).
std::error_code make_error_code(errc e) noexcept;

}  // namespace strata

/// @cond INTERNAL
template <>
struct std::is_error_code_enum<strata::errc> : std::true_type {};
/// @endcond
