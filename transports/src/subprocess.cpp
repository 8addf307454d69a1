// subprocess_exec and subprocess_shell (see subprocess.hpp): posix_spawn the child with its
// standard streams, a stream transport per pipe, a ChildWatch for its exit, and the
// SubprocessTransport that ties them to one SubprocessProtocol (asyncio's
// BaseSubprocessTransport).

#include "strata/transports/subprocess.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "child_watch.hpp"
#include "stream_transport.hpp"
#include "strata/core/errors.hpp"
#include "strata/core/future.hpp"

extern char** environ;

namespace strata::detail {

namespace {

// ---- Starting the child ------------------------------------------------------------------

/// A descriptor closed on destruction unless released.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

std::system_error os_error(int error, const std::string& what) {
  return std::system_error(error, std::generic_category(), what);
}

/// The three standard streams of a child about to start: for each, the descriptor the child
/// gets (ours: the pipe's far end, /dev/null, or a copy of the caller's), and our end of a
/// pipe.
struct ChildStreams {
  std::array<Fd, 3> parent;  ///< our end of each pipe: [0] writes to stdin, [1] [2] read
  std::array<Fd, 3> child;   ///< the descriptor to duplicate onto the child's 0, 1, 2
  bool stderr_to_stdout = false;
};

/// A copy of @p fd at 3 or above (close-on-exec): the child's descriptors are duplicated onto
/// 0, 1 and 2 one after the other, and a source below 3 would be overwritten by an earlier
/// one.
Fd above_stdio(Fd fd, const char* what) {
  if (fd.get() >= 3) return fd;
  const int copy = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (copy < 0) throw os_error(errno, std::string(what) + ": fcntl F_DUPFD_CLOEXEC");
  return Fd(copy);
}

ChildStreams prepare_streams(const SubprocessOptions& options, const char* what) {
  ChildStreams streams;
  const Stdio stdio[3] = {options.stdin, options.stdout, options.stderr};
  Fd devnull;
  for (int i = 0; i < 3; ++i) {
    switch (stdio[i].kind()) {
      case Stdio::Kind::inherit:
        break;
      case Stdio::Kind::to_stdout:
        streams.stderr_to_stdout = true;
        break;
      case Stdio::Kind::pipe: {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw os_error(errno, std::string(what) + ": pipe2");
        // The child reads its stdin and writes its stdout and stderr; we hold the other end.
        Fd ours(fds[i == 0 ? 1 : 0]);
        Fd theirs(fds[i == 0 ? 0 : 1]);
        streams.parent[i] = std::move(ours);
        streams.child[i] = above_stdio(std::move(theirs), what);
        break;
      }
      case Stdio::Kind::devnull:
        if (!devnull) {
          devnull.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
          if (!devnull) throw os_error(errno, std::string(what) + ": open /dev/null");
          devnull = above_stdio(std::move(devnull), what);
        }
        streams.child[i].reset(::fcntl(devnull.get(), F_DUPFD_CLOEXEC, 3));
        if (!streams.child[i]) throw os_error(errno, std::string(what) + ": fcntl F_DUPFD_CLOEXEC");
        break;
      case Stdio::Kind::fd:
        streams.child[i].reset(::fcntl(stdio[i].fd(), F_DUPFD_CLOEXEC, 3));
        if (!streams.child[i]) {
          throw os_error(errno, std::string(what) + ": descriptor " + std::to_string(stdio[i].fd()) +
                                    " given for the child's " + std::to_string(i));
        }
        break;
    }
  }
  return streams;
}

void check_options(const std::vector<std::string>& argv, const SubprocessOptions& options,
                   const char* what) {
  auto fail = [what](const std::string& why) {
    throw std::invalid_argument(std::string(what) + ": " + why);
  };
  if (argv.empty() || argv[0].empty()) fail("the program is empty");
  for (const std::string& arg : argv) {
    if (arg.find('\0') != std::string::npos) fail("an argument holds a NUL byte");
  }
  if (options.stdin.kind() == Stdio::Kind::to_stdout) fail("stdin cannot be Stdio::to_stdout()");
  if (options.stdout.kind() == Stdio::Kind::to_stdout) fail("stdout cannot be Stdio::to_stdout()");
  for (const Stdio& stdio : {options.stdin, options.stdout, options.stderr}) {
    if (stdio.kind() == Stdio::Kind::fd && stdio.fd() < 0) {
      fail("Stdio::from_fd(" + std::to_string(stdio.fd()) + "): the descriptor is negative");
    }
  }
  if (options.cwd.find('\0') != std::string::npos) fail("cwd holds a NUL byte");
  if (options.env) {
    for (const auto& [name, value] : *options.env) {
      if (name.empty() || name.find('=') != std::string::npos || name.find('\0') != std::string::npos) {
        fail("the environment name '" + name + "' is empty or holds '=' or a NUL byte");
      }
      if (value.find('\0') != std::string::npos) fail("the value of " + name + " holds a NUL byte");
    }
  }
}

/// posix_spawn_file_actions_t and posix_spawnattr_t, destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  SpawnSetup() {
    if (int e = ::posix_spawn_file_actions_init(&actions); e != 0) {
      throw os_error(e, "posix_spawn_file_actions_init");
    }
    if (int e = ::posix_spawnattr_init(&attributes); e != 0) {
      ::posix_spawn_file_actions_destroy(&actions);
      throw os_error(e, "posix_spawnattr_init");
    }
  }
  ~SpawnSetup() {
    ::posix_spawnattr_destroy(&attributes);
    ::posix_spawn_file_actions_destroy(&actions);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

void check(int error, const char* call) {
  if (error != 0) throw os_error(error, call);
}

/// Why the child could not start, as clearly as we can tell: a bad working directory is named
/// as such (posix_spawn reports its errno the same way as the program's).
std::system_error spawn_error(int error, const std::vector<std::string>& argv,
                              const SubprocessOptions& options, const char* what) {
  if (!options.cwd.empty()) {
    struct stat st {};
    if (::stat(options.cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
        ::access(options.cwd.c_str(), X_OK) != 0) {
      const int cwd_error = ::stat(options.cwd.c_str(), &st) != 0 ? errno
                            : !S_ISDIR(st.st_mode)                ? ENOTDIR
                                                                  : EACCES;
      return os_error(cwd_error, std::string(what) + ": cannot run '" + argv[0] +
                                     "' in the directory '" + options.cwd + "'");
    }
  }
  return os_error(error, std::string(what) + ": cannot run '" + argv[0] + "'");
}

/// Starts the child; returns its pid. The child's copies of its descriptors are closed in
/// this process on return (by @p streams' destructor, later).
pid_t spawn(const std::vector<std::string>& argv, const SubprocessOptions& options,
            const ChildStreams& streams, const char* what) {
  SpawnSetup setup;
  for (int i = 0; i < 3; ++i) {
    if (streams.child[i]) {
      check(::posix_spawn_file_actions_adddup2(&setup.actions, streams.child[i].get(), i),
            "posix_spawn_file_actions_adddup2");
    }
  }
  if (streams.stderr_to_stdout) {
    check(::posix_spawn_file_actions_adddup2(&setup.actions, 1, 2),
          "posix_spawn_file_actions_adddup2");
  }
  // No descriptor of ours beyond the standard streams, close-on-exec or not.
  check(::posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3),
        "posix_spawn_file_actions_addclosefrom_np");
  if (!options.cwd.empty()) {
    check(::posix_spawn_file_actions_addchdir_np(&setup.actions, options.cwd.c_str()),
          "posix_spawn_file_actions_addchdir_np");
  }
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (options.start_new_session) flags |= POSIX_SPAWN_SETSID;
  check(::posix_spawnattr_setflags(&setup.attributes, flags), "posix_spawnattr_setflags");
  sigset_t mask;
  sigemptyset(&mask);
  check(::posix_spawnattr_setsigmask(&setup.attributes, &mask), "posix_spawnattr_setsigmask");
  // As Python's restore_signals: a program that ignores SIGPIPE does not pass that on.
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGXFSZ);
  check(::posix_spawnattr_setsigdefault(&setup.attributes, &defaults),
        "posix_spawnattr_setsigdefault");

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);

  std::vector<std::string> env_strings;
  std::vector<char*> env;
  char** envp = environ;
  if (options.env) {
    env_strings.reserve(options.env->size());
    for (const auto& [name, value] : *options.env) {
      std::string entry = name;
      entry += '=';
      entry += value;
      env_strings.push_back(std::move(entry));
    }
    for (std::string& entry : env_strings) env.push_back(entry.data());
    env.push_back(nullptr);
    envp = env.data();
  }

  pid_t pid = -1;
  // glibc's posix_spawn reports a failed exec (and a failed file action) as its result, and
  // reaps the child that failed: nothing is left behind.
  const int error =
      ::posix_spawnp(&pid, args[0], &setup.actions, &setup.attributes, args.data(), envp);
  if (error != 0) throw spawn_error(error, argv, options, what);
  return pid;
}

/// Kills and reaps @p pid, waiting for it: for a child that no transport took.
void kill_and_reap(pid_t pid) noexcept {
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

class SubprocessTransportImpl;

// ---- The pipes' protocol -----------------------------------------------------------------

/// The protocol of one pipe: hands everything to the subprocess transport, with the child's
/// descriptor number. Detached (owner null) when the subprocess transport goes first (the loop
/// closing).
class PipeProtocol final : public Protocol {
 public:
  PipeProtocol(SubprocessTransportImpl& owner, int fd) noexcept : owner_(&owner), fd_(fd) {}
  void data_received(std::span<const std::byte> data) override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override;
  void resume_writing() override;
  void detach() noexcept { owner_ = nullptr; }

 private:
  SubprocessTransportImpl* owner_;
  int fd_;
};

// ---- The transport -----------------------------------------------------------------------

class SubprocessTransportImpl final : public SubprocessTransport, public LoopResource {
 public:
  SubprocessTransportImpl(EventLoop& loop, std::unique_ptr<SubprocessProtocol> protocol,
                          pid_t pid) noexcept
      : loop_(&loop), protocol_(std::move(protocol)), pid_(pid) {}

  /// Watches the child and makes the pipe transports from @p parent (taken as they are
  /// used); schedules connection_made(). On a throw, the caller calls abandon().
  void start(std::array<Fd, 3>& parent) {
    watch_ = std::make_unique<ChildWatch>(*loop_, pid_, [this](int rc) { on_exit(rc); });
    for (int fd = 0; fd < 3; ++fd) {
      if (!parent[fd]) continue;
      const int flags = ::fcntl(parent[fd].get(), F_GETFL);
      if (flags < 0 || ::fcntl(parent[fd].get(), F_SETFL, flags | O_NONBLOCK) < 0) {
        throw os_error(errno, "fcntl O_NONBLOCK on a pipe to the child");
      }
      auto protocol = std::make_unique<PipeProtocol>(*this, fd);
      PipeProtocol* raw = protocol.get();
      Transport& transport = make_stream_transport(
          *loop_, parent[fd].get(), fd == 0 ? StreamKind::write_pipe : StreamKind::read_pipe,
          std::move(protocol));
      parent[fd].release();
      pipes_[fd] = {&transport, raw};
    }
    waiter_ = loop_->create_future<void>();
    // After the pipes' own connection_made(), which are scheduled already.
    loop_->call_soon([this] { call_connection_made(); });
    loop_->attach_resource(*this);
  }

  /// start() failed: ends the pipes made so far (their protocols hear nothing more of us),
  /// kills and reaps the child, and deletes this. The protocol hears nothing.
  void abandon() noexcept {
    for (Pipe& pipe : pipes_) {
      if (pipe.transport == nullptr) continue;
      pipe.protocol->detach();
      pipe.transport->abort();
    }
    if (!watch_) kill_and_reap(pid_);
    watch_.reset();  // kills and reaps a child not reaped yet
    delete this;
  }

  Future<void> waiter() const { return waiter_; }

  // ---- BaseTransport ------------------------------------------------------------------
  void close() override {
    if (closing_) return;
    closing_ = true;
    for (Pipe& pipe : pipes_) {
      if (pipe.transport != nullptr) pipe.transport->close();
    }
    if (!returncode_ && watch_ && !watch_->reaped()) {
      try {
        watch_->send_signal(SIGKILL);
      } catch (const std::system_error&) {
        // It exited meanwhile: its reaping is on its way.
      }
    }
  }
  bool is_closing() const noexcept override { return closing_; }
  std::any get_extra_info(std::string_view name) const override {
    if (name == "pid") return static_cast<int>(pid_);
    return {};
  }
  EventLoop& get_loop() const noexcept override { return *loop_; }

  // ---- SubprocessTransport -------------------------------------------------------------
  int get_pid() const noexcept override { return pid_; }
  std::optional<int> get_returncode() const noexcept override { return returncode_; }
  Transport* get_pipe_transport(int fd) const noexcept override {
    if (fd < 0 || fd > 2) return nullptr;
    return pipes_[fd].transport;
  }
  void send_signal(int sig) override {
    if (!watch_ || watch_->reaped()) {
      throw std::system_error(std::make_error_code(std::errc::no_such_process),
                              "send_signal: process " + std::to_string(pid_) + " has exited");
    }
    watch_->send_signal(sig);
  }
  SubprocessProtocol& get_protocol() const noexcept override { return *protocol_; }

  // ---- From the pipes ------------------------------------------------------------------
  void pipe_data(int fd, std::span<const std::byte> data) {
    if (state_ == State::starting) {
      // Not expected (the pipes read only after this transport's connection_made() is
      // scheduled), but kept in order if it happens.
      std::vector<std::byte> copy(data.begin(), data.end());
      pending_.emplace_back([this, fd, copy = std::move(copy)] {
        call("pipe_data_received", [&] { protocol_->pipe_data_received(fd, copy); });
      });
      return;
    }
    call("pipe_data_received", [&] { protocol_->pipe_data_received(fd, data); });
  }
  void pipe_lost(int fd, std::error_code ec) {
    pipes_[fd] = {};
    deliver([this, fd, ec] {
      call("pipe_connection_lost", [&] { protocol_->pipe_connection_lost(fd, ec); });
    });
    try_finish();
  }
  void pipe_pause_writing(bool pause) {
    deliver([this, pause] {
      if (pause) {
        call("pause_writing", [&] { protocol_->pause_writing(); });
      } else {
        call("resume_writing", [&] { protocol_->resume_writing(); });
      }
    });
  }

  // ---- LoopResource --------------------------------------------------------------------
  void loop_closing() noexcept override {
    if (state_ == State::lost) {  // connection_lost() returned: only the delete is due
      destroy();
      return;
    }
    closing_ = true;
    const std::error_code ec = make_error_code(errc::loop_closed);
    for (int fd = 0; fd < 3; ++fd) {
      Pipe pipe = std::exchange(pipes_[fd], {});
      if (pipe.transport == nullptr) continue;
      pipe.protocol->detach();  // the pipe hears of the loop's closing by itself
      if (state_ == State::made) {
        call("pipe_connection_lost", [&] { protocol_->pipe_connection_lost(fd, ec); });
      }
    }
    if (watch_) {
      if (std::optional<int> returncode = watch_->kill_and_reap()) {
        returncode_ = returncode;
        if (state_ == State::made) call("process_exited", [&] { protocol_->process_exited(); });
      }
      watch_.reset();
    }
    if (waiter_.valid() && !waiter_.done()) waiter_.cancel("event loop closed");
    if (state_ == State::made || state_ == State::finishing) {
      state_ = State::lost;
      try {
        protocol_->connection_lost(ec);
      } catch (...) {
        report("connection_lost", std::current_exception());
      }
    }
    destroy();
  }

 private:
  struct Pipe {
    Transport* transport = nullptr;  // alive until its connection_lost(), which clears this
    PipeProtocol* protocol = nullptr;
  };
  enum class State {
    starting,   ///< connection_made() is scheduled
    made,       ///< connection_made() was called
    finishing,  ///< connection_lost() is scheduled
    lost,       ///< connection_lost() was called; the transport is about to be destroyed
  };

  void report(const char* callback, std::exception_ptr e) noexcept {
    std::string message = "Exception in SubprocessProtocol::";
    message += callback;
    message += "(); the process is killed";
    loop_->call_exception_handler({std::move(message), std::move(e), "SubprocessTransport", {}});
  }

  /// Runs a protocol callback: one that throws is reported, and the transport closed (the
  /// child killed) with connection_lost(callback_failed) to come.
  template <class F>
  void call(const char* callback, F&& f) noexcept {
    try {
      f();
    } catch (...) {
      report(callback, std::current_exception());
      lost_error_ = make_error_code(errc::callback_failed);
      close();
    }
  }

  /// Runs @p event now, or after connection_made() when that has not run yet.
  template <class F>
  void deliver(F event) {
    if (state_ == State::starting) {
      pending_.emplace_back(std::move(event));
    } else {
      event();
    }
  }

  void call_connection_made() noexcept {
    state_ = State::made;
    try {
      protocol_->connection_made(*this);
    } catch (...) {
      lost_error_ = make_error_code(errc::callback_failed);
      if (waiter_.valid() && !waiter_.done()) {
        waiter_.set_exception(std::current_exception());
      } else {
        report("connection_made", std::current_exception());
      }
      waiter_ = {};
      close();
    }
    if (waiter_.valid()) {
      // Nobody waits for a cancelled waiter, so nobody would close the transport: close it.
      if (!waiter_.done()) {
        waiter_.set_result();
      } else if (waiter_.cancelled()) {
        close();
      }
      waiter_ = {};
    }
    std::vector<UniqueFunction<void()>> pending = std::move(pending_);
    for (auto& event : pending) event();
    try_finish();
  }

  void on_exit(int returncode) {
    returncode_ = returncode;
    deliver([this] { call("process_exited", [&] { protocol_->process_exited(); }); });
    try_finish();
  }

  /// Schedules connection_lost() once the child has exited and every pipe is closed.
  void try_finish() noexcept {
    if (state_ != State::made || !returncode_) return;
    for (const Pipe& pipe : pipes_) {
      if (pipe.transport != nullptr) return;
    }
    state_ = State::finishing;
    try {
      loop_->call_soon([this] { call_connection_lost(); });
    } catch (...) {
      call_connection_lost();  // the loop refused (out of memory): report now, not never
    }
  }

  void call_connection_lost() noexcept {
    state_ = State::lost;
    try {
      protocol_->connection_lost(lost_error_);
    } catch (...) {
      report("connection_lost", std::current_exception());
    }
    // Destroyed in a later iteration: the protocol's connection_lost() may be on the stack.
    try {
      loop_->call_soon([this] { destroy(); });
    } catch (...) {
      // Left attached: loop_closing() frees it.
    }
  }

  void destroy() noexcept {
    loop_->detach_resource(*this);
    delete this;
  }

  EventLoop* loop_;
  std::unique_ptr<SubprocessProtocol> protocol_;
  pid_t pid_;
  std::optional<int> returncode_;
  std::unique_ptr<ChildWatch> watch_;
  std::array<Pipe, 3> pipes_{};
  Future<void> waiter_;
  std::vector<UniqueFunction<void()>> pending_;  // events that came before connection_made()
  std::error_code lost_error_;
  State state_ = State::starting;
  bool closing_ = false;
};

void PipeProtocol::data_received(std::span<const std::byte> data) {
  if (owner_ != nullptr) owner_->pipe_data(fd_, data);
}
void PipeProtocol::connection_lost(std::error_code ec) {
  if (owner_ != nullptr) owner_->pipe_lost(fd_, ec);
}
void PipeProtocol::pause_writing() {
  if (owner_ != nullptr) owner_->pipe_pause_writing(true);
}
void PipeProtocol::resume_writing() {
  if (owner_ != nullptr) owner_->pipe_pause_writing(false);
}

/// Waits for connection_made(); closes the transport (killing the child) if the awaiting task
/// is cancelled.
Coro<void> wait_made(Future<void> waiter, SubprocessTransportImpl* transport) {
  try {
    co_await waiter;
  } catch (const CancelledError&) {
    transport->close();
    throw;
  }
}

}  // namespace

Coro<SubprocessTransport*> spawn_subprocess(std::unique_ptr<SubprocessProtocol> protocol,
                                            std::vector<std::string> argv,
                                            SubprocessOptions options, const char* what) {
  EventLoop& loop = get_running_loop();
  if (!protocol) throw std::invalid_argument(std::string(what) + ": the factory returned null");
  check_options(argv, options, what);
  ChildStreams streams = prepare_streams(options, what);
  const pid_t pid = spawn(argv, options, streams, what);
  for (Fd& fd : streams.child) fd.reset();  // the child's now, not ours

  SubprocessTransportImpl* transport = nullptr;
  try {
    transport = new SubprocessTransportImpl(loop, std::move(protocol), pid);
  } catch (...) {
    kill_and_reap(pid);
    throw;
  }
  try {
    transport->start(streams.parent);
  } catch (...) {
    transport->abandon();
    throw;
  }
  Coro<void> wait = wait_made(transport->waiter(), transport);
  co_await wait;
  co_return transport;
}

}  // namespace strata::detail
