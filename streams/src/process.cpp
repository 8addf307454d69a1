// create_subprocess_exec / create_subprocess_shell and Process (asyncio.subprocess): a
// SubprocessProtocol that drives one StreamProtocol per piped stream by hand, as asyncio's
// SubprocessStreamProtocol does.
//
// Ownership: the subprocess transport owns the ProcessProtocol, which owns the stream
// protocols; the Process handles and the protocol share the ProcessState (the exit status,
// the wait() waiters, the transport while it lives), and the readers and writer share each
// stream's StreamConnection with its stream protocol. So either side may go first.

#include "strata/streams/process.hpp"

#include <array>
#include <csignal>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

#include "stream_connection.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/event_loop.hpp"
#include "strata/core/gather.hpp"
#include "strata/core/task.hpp"

namespace strata {

namespace detail {

/// What a Process's handles share with the protocol its transport owns.
struct ProcessState {
  /// The child's standard streams 0, 1, 2: a connection for each Stdio::pipe() one, else null.
  std::array<Ref<StreamConnection>, 3> pipes;
  /// The transport, from connection_made() until connection_lost().
  SubprocessTransport* transport = nullptr;
  int pid = -1;
  /// Set by process_exited(): the child's exit status.
  std::optional<int> returncode;
  /// connection_lost() came: the transport is gone.
  bool lost = false;
  /// The tasks in wait(); woken by process_exited() (or connection_lost()).
  WaiterQueue exit_waiters;

  /// A handle on @p state, with a stream for each piped standard stream.
  static Process make_process(const std::shared_ptr<ProcessState>& state) {
    Process process(state);
    if (state->pipes[0]) process.stdin = make_writer(state->pipes[0]);
    if (state->pipes[1]) process.stdout = state->pipes[1]->reader;
    if (state->pipes[2]) process.stderr = state->pipes[2]->reader;
    return process;
  }

  /// Wakes every task in wait().
  void wake_waiters() {
    for (Waiter* w = exit_waiters.front(); w != nullptr; w = WaiterQueue::next(*w)) {
      if (!w->done()) w->wake();
    }
  }
};

namespace {

/// The protocol of a child process: routes each pipe's events to that stream's protocol,
/// and records the exit.
///
/// Each stream protocol sees its pipe transport as if it were its own connection:
/// connection_made() with the real pipe transport (so that a full StreamReader pauses the
/// very pipe it reads), data_received() for pipe_data_received(), connection_lost() for
/// pipe_connection_lost(); the stdin pipe's pause_writing()/resume_writing() go to the stdin
/// stream's protocol, for StreamWriter::drain().
class ProcessProtocol final : public SubprocessProtocol {
 public:
  explicit ProcessProtocol(std::shared_ptr<ProcessState> state) : state_(std::move(state)) {
    for (int fd = 0; fd < 3; ++fd) {
      if (state_->pipes[fd]) {
        streams_[fd] = std::make_unique<StreamProtocol>(state_->pipes[fd], nullptr);
      }
    }
  }

  void connection_made(SubprocessTransport& transport) override {
    state_->transport = &transport;
    state_->pid = transport.get_pid();
    for (int fd = 0; fd < 3; ++fd) {
      if (!streams_[fd]) continue;
      // A pipe that closed before this call has no transport any more; its data and its
      // pipe_connection_lost() are queued, and the transport delivers them as soon as this
      // returns, before any task runs. (Should they never come, connection_lost() ends it.)
      if (Transport* pipe = transport.get_pipe_transport(fd)) streams_[fd]->connection_made(*pipe);
    }
  }

  void pipe_data_received(int fd, std::span<const std::byte> data) override {
    if (fd == 1 || fd == 2) {
      if (streams_[fd] && !stream_lost_[fd]) streams_[fd]->data_received(data);
    }
  }

  void pipe_connection_lost(int fd, std::error_code ec) override {
    if (fd >= 0 && fd < 3) lose_stream(fd, ec);
  }

  void pause_writing() override {
    if (streams_[0] && !stream_lost_[0]) streams_[0]->pause_writing();
  }

  void resume_writing() override {
    if (streams_[0] && !stream_lost_[0]) streams_[0]->resume_writing();
  }

  void process_exited() override {
    if (state_->transport != nullptr) state_->returncode = state_->transport->get_returncode();
    state_->wake_waiters();
  }

  void connection_lost(std::error_code ec) override {
    // Every pipe was closed before this, by the grammar; end any stream that was not, so that
    // no reader or drain() waits forever.
    for (int fd = 0; fd < 3; ++fd) lose_stream(fd, ec);
    state_->transport = nullptr;
    state_->lost = true;
    state_->wake_waiters();  // none is left unless process_exited() never came
  }

 private:
  /// Ends the stream on @p fd, once. For a read pipe, connection_lost() alone feeds the EOF
  /// (a clean end) or sets the error, as eof_received() then connection_lost() would.
  /// eof_received() is not called: it asks the stream's transport, and a pipe that closed
  /// before connection_made() never had one here.
  void lose_stream(int fd, std::error_code ec) {
    if (!streams_[fd] || stream_lost_[fd]) return;
    stream_lost_[fd] = true;
    streams_[fd]->connection_lost(ec);
  }

  std::shared_ptr<ProcessState> state_;
  std::array<std::unique_ptr<StreamProtocol>, 3> streams_;
  std::array<bool, 3> stream_lost_{};
};

/// The state of a child about to be started with @p options, its readers limited to @p limit.
std::shared_ptr<ProcessState> new_state(const SubprocessOptions& options, std::size_t limit) {
  EventLoop& loop = get_running_loop();
  auto state = std::make_shared<ProcessState>();
  const Stdio streams[3] = {options.stdin, options.stdout, options.stderr};
  for (int fd = 0; fd < 3; ++fd) {
    if (streams[fd].kind() == Stdio::Kind::pipe) {
      // The reader of the stdin connection is never fed; it holds the limit all the same.
      state->pipes[fd] = StreamConnection::make(loop, limit);
    }
  }
  return state;
}

/// The protocol factory for subprocess_exec() and subprocess_shell().
auto protocol_factory(const std::shared_ptr<ProcessState>& state) {
  return [state] { return std::make_unique<ProcessProtocol>(state); };
}

/// Waits for process_exited(); see Process::wait().
Coro<int> wait_exit(std::shared_ptr<ProcessState> state) {
  if (!state->returncode && !state->lost) {
    struct Awaiter {
      ProcessState& s;
      Waiter waiter;
      bool await_ready() const noexcept { return s.returncode.has_value() || s.lost; }
      void await_suspend(std::coroutine_handle<> h) { s.exit_waiters.suspend(waiter, h); }
      void await_resume() { s.exit_waiters.resume(waiter); }
    };
    Awaiter exited{*state, {}};
    co_await exited;
  }
  if (!state->returncode) {
    throw InvalidStateError("Process::wait(): the transport closed without reporting the exit");
  }
  co_return *state->returncode;
}

/// Whether @p ec says that the child closed its stdin: what communicate() ignores, as
/// asyncio ignores BrokenPipeError and ConnectionResetError.
bool is_closed_by_child(std::error_code ec) noexcept {
  return ec == std::errc::broken_pipe || ec == std::errc::connection_reset;
}

/// How much of communicate()'s input is handed to the stdin pipe at a time: the transports'
/// default high-water mark, so that the input is not copied whole into the transport's
/// buffer (nor trips the writer's forgotten-drain warning).
constexpr std::size_t stdin_piece = 64 * 1024;

/// Writes @p input to @p in, then closes it and waits until it is closed; a child that
/// closed its stdin first is not an error.
Coro<void> feed_stdin(std::optional<StreamWriter> in, std::string input) {
  if (!in) co_return;
  try {
    const std::string_view all(input);
    for (std::size_t at = 0; at < all.size(); at += stdin_piece) {
      auto sent = in->send(all.substr(at, stdin_piece));  // waits while the pipe is full
      co_await sent;
    }
  } catch (const std::system_error& e) {
    if (!is_closed_by_child(e.code())) throw;
  }
  try {
    in->close();
    auto closed = in->wait_closed();
    co_await closed;
  } catch (const std::system_error& e) {
    if (!is_closed_by_child(e.code())) throw;
  }
}

/// Reads everything @p reader gives until EOF into @p into (which stays empty when there is
/// no reader). The caller owns the result this way, without a copy out of a future.
Coro<void> read_to_eof(std::optional<StreamReader> reader, std::shared_ptr<std::string> into) {
  if (!reader) co_return;
  auto all = reader->read(-1);
  *into = co_await all;
}

/// See Process::communicate().
Coro<ProcessOutput> run_communicate(std::shared_ptr<ProcessState> state,
                                    std::optional<StreamWriter> in,
                                    std::optional<StreamReader> out,
                                    std::optional<StreamReader> err, std::string input) {
  // Three tasks, so that a child that writes a lot before it reads (or reads a lot before it
  // writes) never waits for us.
  auto out_data = std::make_shared<std::string>();
  auto err_data = std::make_shared<std::string>();
  Task<void> feeding = create_task(feed_stdin(std::move(in), std::move(input)));
  Task<void> reading_out = create_task(read_to_eof(std::move(out), out_data));
  Task<void> reading_err = create_task(read_to_eof(std::move(err), err_data));
  std::exception_ptr failure;
  try {
    auto io = gather(feeding, reading_out, reading_err);
    co_await io;  // a cancel of this task cancels the three, and waits for them
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    // One part failed: the others would wait for a child that may never end its side. Stop
    // them, and let them finish, so that no task outlives this call.
    feeding.cancel();
    reading_out.cancel();
    reading_err.cancel();
    auto settled = gather(return_exceptions, feeding, reading_out, reading_err);
    co_await settled;
    std::rethrow_exception(failure);
  }
  auto exited = wait_exit(std::move(state));
  co_await exited;
  ProcessOutput output{std::move(*out_data), std::move(*err_data)};
  co_return output;
}

/// Starts a child and returns its handle: with subprocess_shell(@p command) when @p shell,
/// else with subprocess_exec(@p command, @p args).
Coro<Process> start_process(bool shell, std::string command, std::vector<std::string> args,
                    SubprocessOptions options, std::size_t limit) {
  if (limit == 0) throw std::invalid_argument("create_subprocess: limit must be > 0, got 0");
  std::shared_ptr<ProcessState> state = new_state(options, limit);
  if (shell) {
    auto starting = subprocess_shell(protocol_factory(state), std::move(command),
                                     std::move(options));
    co_await starting;
  } else {
    auto starting = subprocess_exec(protocol_factory(state), std::move(command),
                                    std::move(args), std::move(options));
    co_await starting;
  }
  co_return ProcessState::make_process(state);
}

}  // namespace

}  // namespace detail

// ---- Process -----------------------------------------------------------------------------

Process::Process(std::shared_ptr<detail::ProcessState> state) noexcept
    : state_(std::move(state)) {}

int Process::pid() const noexcept { return state_->pid; }

std::optional<int> Process::returncode() const noexcept { return state_->returncode; }

Coro<int> Process::wait() { return detail::wait_exit(state_); }

Coro<ProcessOutput> Process::communicate(std::string input) {
  if (!input.empty() && !stdin) {
    throw InvalidStateError(
        "Process::communicate(): input given but the child's stdin is not a pipe (start it "
        "with SubprocessOptions::stdin = Stdio::pipe())");
  }
  return detail::run_communicate(state_, stdin, stdout, stderr, std::move(input));
}

Coro<ProcessOutput> Process::communicate() { return communicate(std::string()); }

void Process::send_signal(int sig) {
  if (state_->transport == nullptr) {
    throw std::system_error(std::make_error_code(std::errc::no_such_process),
                            "Process::send_signal(" + std::to_string(sig) + ") to pid " +
                                std::to_string(state_->pid) + ": the child was reaped already");
  }
  state_->transport->send_signal(sig);
}

void Process::terminate() { send_signal(SIGTERM); }

void Process::kill() { send_signal(SIGKILL); }

SubprocessTransport& Process::transport() const {
  if (state_->transport == nullptr) {
    throw InvalidStateError(
        "Process::transport(): the transport is gone (the child exited and its pipes closed)");
  }
  return *state_->transport;
}

// ---- Starting ----------------------------------------------------------------------------

Coro<Process> create_subprocess_exec(std::string program, std::vector<std::string> args,
                                     SubprocessOptions options, std::size_t limit) {
  return detail::start_process(false, std::move(program), std::move(args), std::move(options),
                               limit);
}

Coro<Process> create_subprocess_exec(std::string program, std::vector<std::string> args) {
  return create_subprocess_exec(std::move(program), std::move(args), SubprocessOptions{});
}

Coro<Process> create_subprocess_shell(std::string cmd, SubprocessOptions options,
                                      std::size_t limit) {
  return detail::start_process(true, std::move(cmd), {}, std::move(options), limit);
}

Coro<Process> create_subprocess_shell(std::string cmd) {
  return create_subprocess_shell(std::move(cmd), SubprocessOptions{});
}

}  // namespace strata
