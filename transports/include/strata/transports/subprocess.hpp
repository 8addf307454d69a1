#pragma once
/// @file
/// Child processes as transports: subprocess_exec() and subprocess_shell() (asyncio's
/// loop.subprocess_exec and loop.subprocess_shell), SubprocessTransport and the options of
/// each standard stream.
///
/// @par How a child is started
/// With posix_spawn(3): the child gets the standard streams the options ask for, an empty
/// signal mask, SIGPIPE and SIGXFSZ at their default disposition (as Python's
/// restore_signals), and no other descriptor of this process: every descriptor from 3 up is
/// closed in the child (as Python's close_fds=True), whether or not it is close-on-exec. A
/// program that cannot be run (not found, not executable, a bad working directory) makes the
/// call throw, and leaves no child behind.
///
/// @par How its exit is watched
/// With a pidfd (pidfd_open(2), Linux 5.3) where the kernel has it: the loop watches the
/// pidfd like any descriptor and reaps the child with waitpid(pid) once it is readable. Else,
/// with SIGCHLD: a process-wide handler wakes every loop that has children, and each one
/// calls waitpid(pid, WNOHANG) for its own children only. Either way only the children this
/// library started are reaped, never another child of the process (no waitpid(-1)), and none
/// is left a zombie: a child still running when its transport is closed is killed and then
/// reaped as usual; one still running when its loop closes is killed and reaped on the spot.
/// Signals go through the pidfd where there is one, so they never reach a recycled pid.
///
/// @par SIGCHLD
/// While the SIGCHLD watcher has children, a handler of SIGCHLD is installed (the loop's own
/// signal machinery, see EventLoop::add_signal_handler); a loop may still add its own handler
/// of SIGCHLD, and both are served. A program that sets SIGCHLD to SIG_IGN (or SA_NOCLDWAIT)
/// asks the kernel to reap every child at once: exit statuses are then lost, and a child's
/// returncode is 255, as in asyncio (a warning is logged).

#include <csignal>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "strata/core/coro.hpp"
#include "strata/transports/protocol.hpp"
#include "strata/transports/transport.hpp"

namespace strata {

class SubprocessTransport;

/// What a child process's protocol hears (asyncio.SubprocessProtocol).
///
/// @par Grammar
/// `connection_made (pipe_data_received | pipe_connection_lost | process_exited)* connection_lost`
///
/// pipe_connection_lost comes once for each piped stream; process_exited once;
/// connection_lost last, once the process has exited and every pipe is closed.
/// pause_writing() and resume_writing() (the stdin pipe's flow control) may come between
/// connection_made and connection_lost.
///
/// @par Lifetime  The transport owns its protocol, as for the other transports.
class SubprocessProtocol : public BaseProtocol {
 public:
  /// The process runs and its pipes are connected; @p transport stays valid until
  /// connection_lost() returns.
  virtual void connection_made(SubprocessTransport& transport) { (void)transport; }
  /// The child wrote @p data to its stdout (@p fd 1) or stderr (@p fd 2). @p data is valid
  /// only during the call.
  virtual void pipe_data_received(int fd, std::span<const std::byte> data) {
    (void)fd;
    (void)data;
  }
  /// The pipe of the child's @p fd (0, 1 or 2) closed: @p ec is empty after EOF or close(),
  /// else the error (e.g. std::errc::broken_pipe: the child closed its stdin while data was
  /// still buffered for it; strata::errc::loop_closed when the loop closed under it).
  virtual void pipe_connection_lost(int fd, std::error_code ec) {
    (void)fd;
    (void)ec;
  }
  /// The child exited; SubprocessTransport::get_returncode() has its status.
  virtual void process_exited() {}
};

/// How one of the child's standard streams is set up (asyncio's stdin=, stdout=, stderr=).
class Stdio {
 public:
  /// Which setup: the factory functions below make each.
  enum class Kind {
    inherit,    ///< the child shares this process's descriptor (subprocess's None)
    pipe,       ///< a pipe to this process, served by a pipe transport (PIPE)
    devnull,    ///< /dev/null (DEVNULL)
    to_stdout,  ///< stderr only: the same as the child's stdout (STDOUT)
    fd,         ///< a descriptor of this process, duplicated into the child
  };

  /// The child shares this process's stream: the default.
  static constexpr Stdio inherit() noexcept { return Stdio(Kind::inherit); }
  /// A pipe between this process and the child.
  static constexpr Stdio pipe() noexcept { return Stdio(Kind::pipe); }
  /// /dev/null, opened for reading and writing.
  static constexpr Stdio devnull() noexcept { return Stdio(Kind::devnull); }
  /// For stderr: whatever the child's stdout is (asyncio.subprocess.STDOUT).
  static constexpr Stdio to_stdout() noexcept { return Stdio(Kind::to_stdout); }
  /// The descriptor @p fd of this process (a file, a socket, a pipe end), duplicated onto the
  /// child's stream. @p fd stays this process's and open.
  static constexpr Stdio from_fd(int fd) noexcept { return Stdio(Kind::fd, fd); }

  /// Which setup this is.
  constexpr Kind kind() const noexcept { return kind_; }
  /// The descriptor of from_fd(); -1 otherwise.
  constexpr int fd() const noexcept { return fd_; }
  friend constexpr bool operator==(const Stdio&, const Stdio&) = default;

 private:
  constexpr explicit Stdio(Kind kind, int fd = -1) noexcept : kind_(kind), fd_(fd) {}
  Kind kind_;
  int fd_;
};

/// How subprocess_exec() and subprocess_shell() (and the streams' create_subprocess_*) start
/// the child.
///
/// Each standard stream is inherited unless asked otherwise, as with subprocess.Popen and
/// asyncio.create_subprocess_exec: ask for Stdio::pipe() on the streams you want to talk over.
/// (asyncio's loop.subprocess_exec alone defaults to pipes; one default for every call here.)
struct SubprocessOptions {
  Stdio stdin = Stdio::inherit();   ///< pipe, devnull, inherit or from_fd (not to_stdout)
  Stdio stdout = Stdio::inherit();  ///< pipe, devnull, inherit or from_fd (not to_stdout)
  Stdio stderr = Stdio::inherit();  ///< any, to_stdout included
  /// The child's whole environment when set (name → value; an empty map is an empty
  /// environment); this process's environment, as it is at the call, when std::nullopt.
  std::optional<std::map<std::string, std::string>> env;
  /// The child's working directory; this process's when empty. A relative program path
  /// ("./tool") is looked up from this directory (the change happens before the exec).
  std::string cwd;
  /// Run the child in a new session (setsid), away from this process's terminal and
  /// process group: a Ctrl-C in the terminal then does not reach it.
  bool start_new_session = false;
};

/// A running (or finished) child process with its pipes (asyncio.SubprocessTransport).
///
/// close() closes every pipe and, if the child still runs, kills it (SIGKILL; asyncio does
/// the same); the child is still reaped as usual, then connection_lost() follows. Idempotent.
/// get_extra_info("pid") is the child's process id, as an int.
///
/// @par The loop closing  A child still running is killed and reaped on the spot; the
/// protocol then hears pipe_connection_lost(fd, strata::errc::loop_closed) for each pipe still
/// open, process_exited() (returncode -9), and connection_lost(strata::errc::loop_closed). If
/// the loop closes before connection_made() ran, the protocol hears nothing.
///
/// @par Lifetime  The loop keeps it alive until after its protocol's connection_lost(),
/// which comes once the child has exited and every pipe is closed; it is destroyed in a later
/// iteration.
class SubprocessTransport : public BaseTransport {
 public:
  /// The child's process id.
  virtual int get_pid() const noexcept = 0;
  /// The child's exit status once it exited: its exit code, or -N when signal N ended it (as
  /// Popen.returncode); std::nullopt while it runs.
  virtual std::optional<int> get_returncode() const noexcept = 0;
  /// The transport of the pipe on the child's @p fd: 0 (a write pipe to its stdin), 1 or 2
  /// (read pipes from its stdout, stderr); null when that stream is not a pipe, or once its
  /// pipe is closed (from the pipe_connection_lost() call on; a pipe that closed before
  /// connection_made() is already null there, and its pending events follow that call). Flow control of a pipe goes through it
  /// (pause_reading() on the stdout pipe stops reading what the child writes).
  virtual Transport* get_pipe_transport(int fd) const noexcept = 0;
  /// Sends signal @p sig to the child (through its pidfd when there is one).
  /// @throws std::system_error  std::errc::no_such_process: the child has already been reaped
  /// (asyncio's ProcessLookupError); another errno if the kernel refused.
  virtual void send_signal(int sig) = 0;
  /// send_signal(SIGTERM).
  void terminate() { send_signal(SIGTERM); }
  /// send_signal(SIGKILL).
  void kill() { send_signal(SIGKILL); }
  /// The protocol.
  virtual SubprocessProtocol& get_protocol() const noexcept = 0;


 protected:
  SubprocessTransport() = default;
  ~SubprocessTransport() = default;
};

/// The transport and protocol that subprocess_exec() and subprocess_shell() return.
template <class P>
struct SubprocessConnection {
  SubprocessTransport* transport = nullptr;  ///< never null; see SubprocessTransport's lifetime
  P* protocol = nullptr;                     ///< owned by the transport; never null
};

/// A callable that makes a subprocess protocol: returns std::unique_ptr<P>, P derived from
/// SubprocessProtocol.
template <class F>
concept SubprocessProtocolFactory =
    std::invocable<F&> &&
    std::is_same_v<std::invoke_result_t<F&>,
                   std::unique_ptr<typename std::invoke_result_t<F&>::element_type>> &&
    std::derived_from<typename std::invoke_result_t<F&>::element_type, SubprocessProtocol>;

namespace detail {
/// The untyped part of subprocess_exec(); defined in src/subprocess.cpp. @p argv[0] is the
/// program (searched in PATH when it has no '/'); @p what names the call in errors.
Coro<SubprocessTransport*> spawn_subprocess(std::unique_ptr<SubprocessProtocol> protocol,
                                            std::vector<std::string> argv,
                                            SubprocessOptions options, const char* what);
}  // namespace detail

/// Runs @p program with the arguments @p args (argv[1] on; argv[0] is @p program), with a
/// protocol from @p factory, on the running loop (asyncio's loop.subprocess_exec).
///
/// The program is searched in this process's PATH when it has no '/'. Starts the child, makes
/// a pipe transport for each Stdio::pipe() stream, then calls the protocol's
/// connection_made() and returns once it has returned. The arguments are passed as they are:
/// no shell sees them.
///
/// @throws std::system_error  the child could not be started, naming the program and the
/// reason: e.g. std::errc::no_such_file_or_directory for a program that does not exist
/// (asyncio's FileNotFoundError), permission_denied, not_a_directory for a bad cwd. No child
/// is left behind.
/// @throws std::invalid_argument  @p program is empty, an argument or environment entry holds
/// a NUL byte, a name in env holds '=', stdin or stdout is Stdio::to_stdout(), a from_fd()
/// descriptor is negative, or the factory returned null.
/// @throws what the factory or connection_made() threw (the child is then killed and reaped).
/// @par Thread safety  Loop thread only (needs a running loop).
/// @par Cancellation  Cancel-safe: no child is left behind. Cancelled while waiting for
/// connection_made(), the transport is closed (the child killed and reaped); the protocol
/// still hears connection_made() and connection_lost().
template <SubprocessProtocolFactory F>
Coro<SubprocessConnection<typename std::invoke_result_t<F&>::element_type>> subprocess_exec(
    F factory, std::string program, std::vector<std::string> args, SubprocessOptions options) {
  using P = typename std::invoke_result_t<F&>::element_type;
  std::unique_ptr<P> protocol = factory();
  P* raw = protocol.get();
  std::vector<std::string> argv;
  argv.reserve(args.size() + 1);
  argv.push_back(std::move(program));
  for (std::string& arg : args) argv.push_back(std::move(arg));
  Coro<SubprocessTransport*> spawn =
      detail::spawn_subprocess(std::move(protocol), std::move(argv), std::move(options),
                               "subprocess_exec");
  SubprocessTransport* transport = co_await spawn;
  SubprocessConnection<P> connection{transport, raw};
  co_return connection;
}

/// subprocess_exec() with the default options (every stream inherited).
/// @par Cancellation  As subprocess_exec(): no child is left behind.
template <SubprocessProtocolFactory F>
Coro<SubprocessConnection<typename std::invoke_result_t<F&>::element_type>> subprocess_exec(
    F factory, std::string program, std::vector<std::string> args) {
  return subprocess_exec(std::move(factory), std::move(program), std::move(args),
                         SubprocessOptions{});
}

/// Runs @p cmd with the shell, `/bin/sh -c cmd` (asyncio's loop.subprocess_shell). Quote
/// what comes from outside: the shell interprets @p cmd whole. A command that the shell cannot
/// find still starts (the shell does) and exits with 127.
/// @throws as subprocess_exec(); std::invalid_argument when @p cmd is empty.
/// @par Cancellation  As subprocess_exec(): no child is left behind.
template <SubprocessProtocolFactory F>
Coro<SubprocessConnection<typename std::invoke_result_t<F&>::element_type>> subprocess_shell(
    F factory, std::string cmd, SubprocessOptions options) {
  using P = typename std::invoke_result_t<F&>::element_type;
  if (cmd.empty()) throw std::invalid_argument("subprocess_shell: the command is empty");
  std::unique_ptr<P> protocol = factory();
  P* raw = protocol.get();
  std::vector<std::string> argv{"/bin/sh", "-c", std::move(cmd)};
  Coro<SubprocessTransport*> spawn = detail::spawn_subprocess(
      std::move(protocol), std::move(argv), std::move(options), "subprocess_shell");
  SubprocessTransport* transport = co_await spawn;
  SubprocessConnection<P> connection{transport, raw};
  co_return connection;
}

/// subprocess_shell() with the default options (every stream inherited).
/// @par Cancellation  As subprocess_exec(): no child is left behind.
template <SubprocessProtocolFactory F>
Coro<SubprocessConnection<typename std::invoke_result_t<F&>::element_type>> subprocess_shell(
    F factory, std::string cmd) {
  return subprocess_shell(std::move(factory), std::move(cmd), SubprocessOptions{});
}

namespace detail {
/// How children's exits are watched; see the file's documentation.
enum class ChildWatchMethod { pidfd, sigchld };
/// The method new children get: pidfd when this kernel has pidfd_open(2), else sigchld.
ChildWatchMethod child_watch_method() noexcept;
/// Forces the method of the children started from now on (tests run both); std::nullopt
/// goes back to the kernel's best. Children already started keep theirs.
/// @throws std::system_error  pidfd asked for and this kernel has no pidfd_open(2).
void set_child_watch_method(std::optional<ChildWatchMethod> method);
}  // namespace detail

}  // namespace strata
