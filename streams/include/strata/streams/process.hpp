#pragma once
/// @file
/// Child processes with stream pipes: create_subprocess_exec() and create_subprocess_shell()
/// return a Process (asyncio.subprocess), whose stdin is a StreamWriter and whose stdout and
/// stderr are StreamReaders.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/streams/stream_reader.hpp"
#include "strata/streams/stream_writer.hpp"
#include "strata/transports/subprocess.hpp"

namespace strata {

namespace detail {
struct ProcessState;
}

/// What Process::communicate() collected: everything the child wrote to its piped stdout and
/// stderr (empty for a stream that was not piped).
struct ProcessOutput {
  std::string out;  ///< the child's stdout
  std::string err;  ///< the child's stderr
};

/// A child process started by create_subprocess_exec() or create_subprocess_shell()
/// (asyncio.subprocess.Process).
///
/// A handle: copies refer to the same process. The streams are there for the standard
/// streams that were Stdio::pipe(); std::nullopt for the others. Reading stdout or stderr
/// respects the reader's limit: a reader nobody reads stops reading its pipe, and the child
/// then blocks writing, so read what you piped (or use communicate()).
///
/// @par Lifetime  The process's transport stays alive on the loop until the child has exited
/// and every pipe is closed, whether or not a handle remains: dropping every handle does not
/// kill the child (as asyncio); close its stdin, read its output, or kill() it.
/// @par Thread safety  Loop thread only.
class Process {
 public:
  /// The child's stdin, when Stdio::pipe(). close() it (or write_eof()) to send EOF.
  std::optional<StreamWriter> stdin;
  /// The child's stdout, when Stdio::pipe().
  std::optional<StreamReader> stdout;
  /// The child's stderr, when Stdio::pipe().
  std::optional<StreamReader> stderr;

  /// The child's process id.
  int pid() const noexcept;
  /// The exit status once the child has exited (and wait() could return it): its exit code,
  /// or -N when signal N ended it; std::nullopt while it runs.
  std::optional<int> returncode() const noexcept;

  /// Waits for the child to exit and returns its returncode(); at once if it has exited.
  /// Waits for the exit only, not for the pipes: a grandchild that keeps the child's stdout
  /// open does not hold it up (asyncio 3.12 waits for the pipes too).
  /// @par Cancellation  Cancel-safe: cancelling the awaiting task cancels the wait only; the
  /// child runs on, is still reaped when it exits, and a later wait() returns its status.
  Coro<int> wait();

  /// Sends @p input to stdin (then closes it), reads stdout and stderr to their end, waits
  /// for the exit, and returns what was read (asyncio's communicate()). Writing and reading
  /// run concurrently, so large input and large output at once do not deadlock. A child that
  /// exits without reading all of its input is not an error (as asyncio, the broken pipe is
  /// ignored).
  /// @throws InvalidStateError  @p input is not empty and stdin is not a pipe (at the call).
  /// @throws std::system_error  reading a pipe failed (the other pipes' work is stopped first).
  /// @par Cancellation  Not cancel-safe. The writing and the reading are cancelled, and
  /// CancelledError leaves once they have stopped; the child runs on (wait() or kill() it).
  /// What a pipe still open had given stays in its reader (stdout, stderr) for a later read;
  /// the whole output of a pipe that had reached its end is lost. Of the input, the pieces
  /// handed to the pipe (64 KiB each) are sent and the rest dropped; stdin is closed if all
  /// of it had been handed over, else it stays open (close it yourself).
  Coro<ProcessOutput> communicate(std::string input);
  /// communicate() with no input: stdin, if piped, is closed.
  Coro<ProcessOutput> communicate();

  /// Sends signal @p sig to the child.
  /// @throws std::system_error  std::errc::no_such_process: the child was reaped already.
  void send_signal(int sig);
  /// send_signal(SIGTERM).
  void terminate();
  /// send_signal(SIGKILL).
  void kill();

  /// The process's transport; valid until the child has exited and every pipe closed.
  /// @throws InvalidStateError  the transport is gone.
  SubprocessTransport& transport() const;

 private:
  friend struct detail::ProcessState;
  explicit Process(std::shared_ptr<detail::ProcessState> state) noexcept;
  std::shared_ptr<detail::ProcessState> state_;
};

/// Starts @p program with @p args (as subprocess_exec()) and returns its Process, on the
/// running loop (asyncio.create_subprocess_exec).
///
/// @param program  the program to run; searched in PATH when it has no '/'.
/// @param args  its arguments, without argv[0].
/// @param options  the standard streams, environment and working directory; see
/// SubprocessOptions (Stdio::pipe() for the streams to talk over).
/// @param limit  the buffer limit of the stdout and stderr readers (see StreamReader).
/// @throws as subprocess_exec(); std::invalid_argument when @p limit is 0.
/// @par Cancellation  Cancel-safe: no child is left behind; one started already is killed
/// (as subprocess_exec()).
Coro<Process> create_subprocess_exec(std::string program, std::vector<std::string> args,
                                     SubprocessOptions options,
                                     std::size_t limit = StreamReader::default_limit);
/// create_subprocess_exec() with every stream inherited.
Coro<Process> create_subprocess_exec(std::string program, std::vector<std::string> args);

/// Runs @p cmd with `/bin/sh -c` (as subprocess_shell()) and returns its Process
/// (asyncio.create_subprocess_shell).
/// @throws as subprocess_shell(); std::invalid_argument when @p limit is 0.
/// @par Cancellation  As create_subprocess_exec(): no child is left behind.
Coro<Process> create_subprocess_shell(std::string cmd, SubprocessOptions options,
                                      std::size_t limit = StreamReader::default_limit);
/// create_subprocess_shell() with every stream inherited.
Coro<Process> create_subprocess_shell(std::string cmd);

}  // namespace strata
