// Subprocess transports (issue 9): subprocess_exec(), subprocess_shell(), SubprocessTransport
// and the Stdio options, on every selector backend and with both ways of watching a child's
// exit (pidfd and SIGCHLD).
#include <strata/transports/subprocess.hpp>

#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>

#include "loop_test.hpp"
#include "stream_test_support.hpp"

using strata::Coro;
using strata::Stdio;
using strata::SubprocessOptions;
using strata::SubprocessTransport;
using strata::Transport;
using strata::detail::ChildWatchMethod;
using strata::testing::first_mismatch;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::TestLoop;

namespace {

constexpr auto npos = std::string_view::npos;

// ---- The child-watch method ----------------------------------------------------------------

const char* to_string(ChildWatchMethod m) {
  return m == ChildWatchMethod::pidfd ? "pidfd" : "sigchld";
}

/// Forces the child-watch method for a scope; back to the kernel's best after it.
class WatchMethodScope {
 public:
  explicit WatchMethodScope(ChildWatchMethod m) { strata::detail::set_child_watch_method(m); }
  ~WatchMethodScope() { strata::detail::set_child_watch_method(std::nullopt); }
  WatchMethodScope(const WatchMethodScope&) = delete;
  WatchMethodScope& operator=(const WatchMethodScope&) = delete;
};

/// Runs the rest of the test once per child-watch method.
#define FOR_EACH_CHILD_WATCH_METHOD()                               \
  const ChildWatchMethod watch_method =                             \
      GENERATE(ChildWatchMethod::pidfd, ChildWatchMethod::sigchld); \
  INFO("child watch method: " << to_string(watch_method));          \
  WatchMethodScope watch_method_scope(watch_method);                \
  REQUIRE(strata::detail::child_watch_method() == watch_method)

// ---- Children of this process ----------------------------------------------------------------

/// Whether @p pid is a child of this process (running, or a zombie not reaped yet). Does not
/// reap: waitid(WNOWAIT).
bool is_our_child(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/// Whether @p pid is a zombie child of this process (exited, not reaped). Does not reap.
bool is_zombie_child(pid_t pid) {
  siginfo_t info{};
  info.si_pid = 0;
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == pid;
}

/// The fields of /proc/<pid>/stat after the command name: [0] state, [1] ppid, [2] pgrp,
/// [3] session; empty when there is no such process.
std::vector<std::string> proc_stat_fields(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return {};
  const std::size_t close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  std::string f;
  while (rest >> f) fields.push_back(f);
  return fields;
}

/// Every child of this process (any thread's), zombies included, from /proc/<pid>/stat.
std::set<pid_t> our_children() {
  std::set<pid_t> children;
  const std::string self = std::to_string(::getpid());
  if (DIR* d = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::vector<std::string> fields =
          proc_stat_fields(std::string("/proc/") + e->d_name + "/stat");
      if (fields.size() > 1 && fields[1] == self) children.insert(std::atoi(e->d_name));
    }
    ::closedir(d);
  }
  return children;
}

std::string describe(const std::set<pid_t>& pids) {
  std::string s;
  for (pid_t p : pids) {
    s += (s.empty() ? "" : " ") + std::to_string(p);
    std::vector<std::string> fields = proc_stat_fields("/proc/" + std::to_string(p) + "/stat");
    if (!fields.empty()) s += "(" + fields[0] + ")";
  }
  return s.empty() ? "none" : s;
}

/// The children of this process that are not in @p before.
std::set<pid_t> new_children(const std::set<pid_t>& before) {
  std::set<pid_t> now = our_children();
  std::set<pid_t> added;
  for (pid_t p : now) {
    if (!before.count(p)) added.insert(p);
  }
  return added;
}

// ---- Descriptors -------------------------------------------------------------------------

struct PipeFds {
  int read = -1;
  int write = -1;
};

PipeFds make_pipe(int flags = O_CLOEXEC) {
  int fds[2];
  strata::testing::check_syscall(::pipe2(fds, flags), "pipe2");
  return {fds[0], fds[1]};
}

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

/// Everything readable now from @p fd (non-blocking), up to EOF or EAGAIN; @p eof tells
/// which (EOF: no writer of the pipe is left anywhere).
std::string drain_fd(int fd, bool* eof = nullptr) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  std::string s;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      if (eof) *eof = n == 0;
      break;
    }
    s.append(buf, static_cast<std::size_t>(n));
  }
  ::fcntl(fd, F_SETFL, flags);
  return s;
}

/// A temporary directory, removed (with the files made in it by the tests) at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/strata-subprocess-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::system_error(errno, std::system_category());
    char real[PATH_MAX];
    path_ = ::realpath(tmpl, real) ? real : tmpl;
  }
  ~TempDir() {
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }
  /// Makes the file @p name holding @p content with @p mode; returns its path.
  std::string file(const std::string& name, const std::string& content, mode_t mode) {
    std::string p = path_ + "/" + name;
    {
      std::ofstream out(p);
      out << content;
    }
    ::chmod(p.c_str(), mode);
    files_.push_back(p);
    return p;
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

bool sigpipe_pending() {
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  return sigismember(&pending, SIGPIPE) == 1;
}

// ---- The recording protocol -----------------------------------------------------------------

/// What a RecordingSubprocessProtocol observed; lives in the test, outside the protocol (which
/// the transport destroys). Declare it before the TestLoop so that it outlives the loop.
struct SubRecord {
  /// made, data1, data2 (consecutive ones of one fd merged), pipe_lost0/1/2, exited, pause,
  /// resume, lost.
  std::vector<std::string> events;
  std::string out;  // what came on fd 1
  std::string err;  // what came on fd 2
  std::map<int, std::error_code> pipe_lost_ec;
  std::error_code lost_ec;
  bool made = false;
  bool exited = false;
  bool lost = false;
  bool paused = false;
  std::optional<int> returncode_at_exit;     // get_returncode() in process_exited()
  std::optional<int> returncode_at_lost;     // get_returncode() in connection_lost()
  std::optional<int> returncode_at_made;     // get_returncode() in connection_made()
  int pid = -1;                              // get_pid() in connection_made()
  SubprocessTransport* transport = nullptr;  // from connection_made to connection_lost
  const void* protocol = nullptr;            // the protocol object
  int alive = 0;
  int created = 0;
  /// Contract breaches seen inside callbacks (a pipe transport still there after its
  /// pipe_connection_lost, no returncode in process_exited, ...).
  std::vector<std::string> violations;
  std::function<void(SubprocessTransport&)> on_made;
  std::function<void(SubprocessTransport&, int, std::string_view)> on_data;
  std::function<void(SubprocessTransport&, int, std::error_code)> on_pipe_lost;
  std::function<void(SubprocessTransport&)> on_exited;
  std::function<void(SubprocessTransport&)> on_lost;
  std::function<void()> on_pause;
  std::function<void()> on_resume;
  strata::Event changed;  // set at every callback

  void note(std::string e) {
    changed.set();
    if (e.rfind("data", 0) == 0 && !events.empty() && events.back() == e) return;
    events.push_back(std::move(e));
  }
  bool seen(const std::string& e) const {
    return std::find(events.begin(), events.end(), e) != events.end();
  }

  /// Waits until connection_lost().
  Coro<void> wait_lost() {
    for (;;) {
      if (lost) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until process_exited() (or connection_lost()).
  Coro<void> wait_exited() {
    for (;;) {
      if (exited || lost) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until the event @p name was recorded (or connection_lost()).
  Coro<void> wait_event(std::string name) {
    for (;;) {
      if (lost || seen(name)) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until at least @p n bytes came on fd 1 (or connection_lost()).
  Coro<void> wait_out(std::size_t n) {
    for (;;) {
      if (lost || out.size() >= n) break;
      changed.clear();
      co_await changed.wait();
    }
  }
  /// Waits until resume_writing() after a pause_writing() (or connection_lost()).
  Coro<void> wait_resumed() {
    for (;;) {
      if (lost || !paused) break;
      changed.clear();
      co_await changed.wait();
    }
  }
};

class RecordingSubprocessProtocol : public strata::SubprocessProtocol {
 public:
  explicit RecordingSubprocessProtocol(SubRecord& r) : r_(r) {
    ++r_.alive;
    ++r_.created;
    r_.protocol = this;
  }
  ~RecordingSubprocessProtocol() override { --r_.alive; }

  void connection_made(SubprocessTransport& t) override {
    r_.made = true;
    r_.transport = &t;
    r_.pid = t.get_pid();
    r_.returncode_at_made = t.get_returncode();
    r_.note("made");
    if (r_.on_made) r_.on_made(t);
  }
  void pipe_data_received(int fd, std::span<const std::byte> data) override {
    std::string_view s(reinterpret_cast<const char*>(data.data()), data.size());
    if (fd == 1) {
      r_.out.append(s);
    } else if (fd == 2) {
      r_.err.append(s);
    } else {
      r_.violations.push_back("pipe_data_received on fd " + std::to_string(fd));
    }
    if (data.empty()) r_.violations.push_back("empty pipe_data_received");
    r_.note("data" + std::to_string(fd));
    if (r_.on_data && r_.transport) r_.on_data(*r_.transport, fd, s);
  }
  void pipe_connection_lost(int fd, std::error_code ec) override {
    r_.pipe_lost_ec[fd] = ec;
    r_.note("pipe_lost" + std::to_string(fd));
    if (r_.on_pipe_lost && r_.transport) r_.on_pipe_lost(*r_.transport, fd, ec);
  }
  void process_exited() override {
    r_.exited = true;
    if (r_.transport) {
      r_.returncode_at_exit = r_.transport->get_returncode();
      if (!r_.returncode_at_exit) r_.violations.push_back("no returncode in process_exited");
      check_closed_pipes("process_exited");
    }
    r_.note("exited");
    if (r_.on_exited && r_.transport) r_.on_exited(*r_.transport);
  }
  void pause_writing() override {
    r_.paused = true;
    r_.note("pause");
    if (r_.on_pause) r_.on_pause();
  }
  void resume_writing() override {
    r_.paused = false;
    r_.note("resume");
    if (r_.on_resume) r_.on_resume();
  }
  void connection_lost(std::error_code ec) override {
    r_.lost = true;
    r_.lost_ec = ec;
    if (r_.transport) {
      r_.returncode_at_lost = r_.transport->get_returncode();
      check_closed_pipes("connection_lost");
      if (&r_.transport->get_protocol() != this) {
        r_.violations.push_back("get_protocol() is not the protocol in connection_lost");
      }
    }
    r_.note("lost");
    if (r_.on_lost && r_.transport) r_.on_lost(*r_.transport);
    r_.transport = nullptr;
  }

 private:
  // get_pipe_transport(fd) is null once that pipe's pipe_connection_lost() came.
  void check_closed_pipes(const char* where) {
    for (const auto& [fd, ec] : r_.pipe_lost_ec) {
      (void)ec;
      if (r_.transport->get_pipe_transport(fd) != nullptr) {
        r_.violations.push_back(std::string("get_pipe_transport(") + std::to_string(fd) +
                                ") not null in " + where + " after pipe_connection_lost");
      }
    }
  }

  SubRecord& r_;
};

/// Returns "" when @p events follow SubprocessProtocol's grammar for a child whose piped
/// streams are @p piped; otherwise what is wrong.
std::string sub_grammar_error(const std::vector<std::string>& events, const std::set<int>& piped) {
  if (events.empty() || events.front() != "made") return "does not start with made";
  std::map<int, int> pipe_lost;
  int exited = 0;
  int lost = 0;
  bool paused = false;
  for (std::size_t i = 1; i < events.size(); ++i) {
    const std::string& e = events[i];
    if (lost) return "'" + e + "' after lost";
    if (e == "made") return "made twice";
    if (e == "lost") {
      ++lost;
    } else if (e == "exited") {
      if (++exited > 1) return "exited twice";
    } else if (e == "pause") {
      if (paused) return "pause twice";
      paused = true;
    } else if (e == "resume") {
      if (!paused) return "resume without pause";
      paused = false;
    } else if (e.rfind("data", 0) == 0) {
      const int fd = e.back() - '0';
      if (fd != 1 && fd != 2) return "data on fd " + std::to_string(fd);
      if (!piped.count(fd)) return "data on fd " + std::to_string(fd) + ", not a pipe";
      if (pipe_lost[fd]) return "data on fd " + std::to_string(fd) + " after its pipe_lost";
    } else if (e.rfind("pipe_lost", 0) == 0) {
      const int fd = e.back() - '0';
      if (!piped.count(fd)) return "pipe_lost on fd " + std::to_string(fd) + ", not a pipe";
      if (++pipe_lost[fd] > 1) return "pipe_lost" + std::to_string(fd) + " twice";
    } else {
      return "unknown event '" + e + "'";
    }
  }
  if (!lost) return "no lost";
  if (!exited) return "lost without exited";
  for (int fd : piped) {
    if (!pipe_lost[fd]) return "lost without pipe_lost" + std::to_string(fd);
  }
  return "";
}

/// Checks what every finished child's record must show: the grammar, no violations, the
/// protocol destroyed, the return code seen at process_exited.
void check_finished(const SubRecord& r, const std::set<int>& piped) {
  INFO("events: " << strata::testing::join(r.events));
  CHECK(sub_grammar_error(r.events, piped) == "");
  CHECK(strata::testing::join(r.violations) == "");
  CHECK(r.alive == 0);
  CHECK(r.created == 1);
  CHECK(r.returncode_at_exit.has_value());
  CHECK(r.returncode_at_lost == r.returncode_at_exit);
}

// ---- Starting children ----------------------------------------------------------------------

/// Options with a pipe (true) or /dev/null (false) for each stream.
SubprocessOptions pipes(bool in, bool out, bool err) {
  SubprocessOptions o;
  o.stdin = in ? Stdio::pipe() : Stdio::devnull();
  o.stdout = out ? Stdio::pipe() : Stdio::devnull();
  o.stderr = err ? Stdio::pipe() : Stdio::devnull();
  return o;
}

Coro<SubprocessTransport*> spawn(SubRecord& r, std::string program, std::vector<std::string> args,
                                 SubprocessOptions options) {
  auto factory = [&r] { return std::make_unique<RecordingSubprocessProtocol>(r); };
  auto op =
      strata::subprocess_exec(factory, std::move(program), std::move(args), std::move(options));
  strata::SubprocessConnection<RecordingSubprocessProtocol> c = co_await op;
  if (c.transport == nullptr) r.violations.push_back("subprocess_exec returned no transport");
  if (c.protocol != r.protocol) r.violations.push_back("the connection's protocol is not ours");
  if (!r.made) r.violations.push_back("subprocess_exec returned before connection_made");
  co_return c.transport;
}

Coro<SubprocessTransport*> spawn_shell(SubRecord& r, std::string cmd, SubprocessOptions options) {
  auto factory = [&r] { return std::make_unique<RecordingSubprocessProtocol>(r); };
  auto op = strata::subprocess_shell(factory, std::move(cmd), std::move(options));
  strata::SubprocessConnection<RecordingSubprocessProtocol> c = co_await op;
  if (!r.made) r.violations.push_back("subprocess_shell returned before connection_made");
  co_return c.transport;
}

/// What a failed start threw.
struct SpawnFailure {
  bool threw = false;
  std::string type;  // "system_error", "invalid_argument", "other"
  std::error_code ec;
  std::string what;
};

Coro<SpawnFailure> spawn_failure(SubRecord& r, std::string program, std::vector<std::string> args,
                                 SubprocessOptions options) {
  SpawnFailure f;
  try {
    auto op = spawn(r, std::move(program), std::move(args), std::move(options));
    co_await op;
  } catch (const std::system_error& e) {
    f.threw = true;
    f.type = "system_error";
    f.ec = e.code();
    f.what = e.what();
  } catch (const std::invalid_argument& e) {
    f.threw = true;
    f.type = "invalid_argument";
    f.what = e.what();
  } catch (const std::exception& e) {
    f.threw = true;
    f.type = "other";
    f.what = e.what();
  }
  co_return f;
}

struct SignalCase {
  int sig;
  int expected;
  int how;  // 0 kill(), 1 terminate(), 2 send_signal()
};

struct RunFailureCase {
  std::string name;
  std::string program;
  std::string cwd;
  std::errc expected;
};

struct InvalidCase {
  std::string name;
  std::string program;
  std::vector<std::string> args;
  SubprocessOptions options;
};

}  // namespace

// ================================================================================================

TEST_CASE(
    "Subprocess test helpers: a child of ours is seen running, as a zombie, and gone once "
    "reaped",
    "[transports][subprocess]") {
  PipeFds gate = make_pipe();
  const std::set<pid_t> before = our_children();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char c;
    ::close(gate.write);
    while (::read(gate.read, &c, 1) > 0) {
    }
    ::_exit(0);
  }
  ::close(gate.read);
  CHECK(is_our_child(pid));
  CHECK_FALSE(is_zombie_child(pid));
  CHECK(new_children(before) == std::set<pid_t>{pid});
  ::close(gate.write);
  siginfo_t info{};
  REQUIRE(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0);
  CHECK(is_our_child(pid));
  CHECK(is_zombie_child(pid));
  CHECK(new_children(before) == std::set<pid_t>{pid});
  CHECK(describe(new_children(before)).find("(Z)") != npos);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK_FALSE(is_our_child(pid));
  CHECK(describe(new_children(before)) == "none");
  CHECK(sub_grammar_error({"made", "data1", "pipe_lost1", "exited", "lost"}, {1}) == "");
  CHECK(sub_grammar_error({"made", "exited", "pipe_lost1", "lost"}, {1}) == "");
  CHECK(sub_grammar_error({"made", "pipe_lost1", "lost"}, {1}) == "lost without exited");
  CHECK(sub_grammar_error({"made", "exited", "lost"}, {1}) == "lost without pipe_lost1");
  CHECK(sub_grammar_error({"made", "exited", "lost", "data1"}, {1}) == "'data1' after lost");
  CHECK(sub_grammar_error({"made", "pipe_lost1", "data1", "exited", "lost"}, {1}) ==
        "data on fd 1 after its pipe_lost");
  CHECK(sub_grammar_error({"exited", "lost"}, {}) == "does not start with made");
}

STRATA_LOOP_TEST_CASE("Subprocess: bytes written to cat's stdin come back on its stdout",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  const std::string data = "hello, child\n" + pattern(1000, 1);
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "cat", {}, pipes(true, true, true));
    SubprocessTransport* t = co_await op;
    REQUIRE(t != nullptr);
    CHECK(t->get_pid() > 0);
    CHECK(t->get_pid() == r.pid);
    CHECK(is_our_child(t->get_pid()));
    CHECK(&t->get_loop() == &loop.get());
    CHECK(&t->get_protocol() == r.protocol);
    CHECK_FALSE(t->is_closing());
    Transport* in = t->get_pipe_transport(0);
    Transport* out = t->get_pipe_transport(1);
    Transport* err = t->get_pipe_transport(2);
    REQUIRE(in != nullptr);
    REQUIRE(out != nullptr);
    REQUIRE(err != nullptr);
    CHECK(t->get_pipe_transport(3) == nullptr);
    CHECK(t->get_pipe_transport(-1) == nullptr);
    CHECK(in->can_write_eof());
    CHECK(out->is_reading());
    CHECK_THROWS_AS(out->write("x"), strata::InvalidStateError);
    in->write(data);
    in->write_eof();
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {0, 1, 2});
  CHECK(r.out.size() == data.size());
  CHECK(first_mismatch(r.out, data) == npos);
  CHECK(r.err.empty());
  CHECK(r.returncode_at_exit == 0);
  CHECK(r.lost_ec == std::error_code());
  for (int fd : {0, 1, 2}) {
    INFO("fd " << fd);
    CHECK(r.pipe_lost_ec.count(fd) == 1);
    CHECK(r.pipe_lost_ec[fd] == std::error_code());
  }
  CHECK_FALSE(is_our_child(r.pid));  // reaped
}

STRATA_LOOP_TEST_CASE("Subprocess: a finished child leaves no descriptor open behind it",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  constexpr int rounds = 4;
  std::vector<std::unique_ptr<SubRecord>> records;
  records.reserve(rounds);
  for (int i = 0; i < rounds; ++i) records.push_back(std::make_unique<SubRecord>());
  std::vector<int> fds;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    for (auto& r : records) {
      auto op = spawn(*r, "cat", {}, pipes(true, true, true));
      SubprocessTransport* t = co_await op;
      t->get_pipe_transport(0)->write("x");
      t->get_pipe_transport(0)->write_eof();
      co_await r->wait_lost();
      // The transport is destroyed in a later iteration.
      for (int i = 0; i < 3; ++i) co_await next_iteration();
      fds.push_back(strata::testing::count_open_fds());
    }
  };
  loop.run(body());
  for (auto& r : records) {
    check_finished(*r, {0, 1, 2});
    CHECK(r->out == "x");
  }
  // The first child may make what the loop keeps for all (a SIGCHLD wake-up); after it, the
  // count stays flat.
  REQUIRE(fds.size() == static_cast<std::size_t>(rounds));
  CHECK(fds[1] == fds[0]);
  CHECK(fds[rounds - 1] == fds[0]);
}

STRATA_LOOP_TEST_CASE("Subprocess: 16 MiB through cat both ways with flow control, byte-exact",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  const std::string data = pattern(16u << 20, 9);
  constexpr std::size_t chunk = 64 * 1024;
  std::size_t pauses = 0;
  std::size_t max_buffer = 0;
  std::size_t high = 0;
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "cat", {}, pipes(true, true, false));
    SubprocessTransport* t = co_await op;
    Transport* in = t->get_pipe_transport(0);
    REQUIRE(in != nullptr);
    high = in->get_write_buffer_limits().second;  // {low, high}
    std::size_t offset = 0;
    while (offset < data.size()) {
      if (r.paused) {
        ++pauses;
        max_buffer = std::max(max_buffer, in->get_write_buffer_size());
        co_await r.wait_resumed();
        REQUIRE_FALSE(r.lost);
        REQUIRE(t->get_pipe_transport(0) == in);
        continue;
      }
      const std::size_t n = std::min(chunk, data.size() - offset);
      in->write(std::string_view(data).substr(offset, n));
      offset += n;
    }
    in->write_eof();
    co_await r.wait_lost();
  };
  loop.run(body(), std::chrono::seconds(30));
  check_finished(r, {0, 1});
  CHECK(pauses > 0);  // the writer outran cat at least once
  CHECK(max_buffer <= high + chunk);
  CHECK(r.out.size() == data.size());
  CHECK(first_mismatch(r.out, data) == npos);
  CHECK(r.returncode_at_exit == 0);
  CHECK(r.pipe_lost_ec[0] == std::error_code());
  CHECK(r.pipe_lost_ec[1] == std::error_code());
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: pausing the stdout pipe stops reading; the child blocks and "
    "stdin's buffer fills up to pause_writing",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  r.on_made = [](SubprocessTransport& t) { t.get_pipe_transport(1)->pause_reading(); };
  TestLoop loop(TestType::kind);
  const std::string data = pattern(2u << 20, 3);
  std::size_t out_at_pause = npos;
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "cat", {}, pipes(true, true, false));
    SubprocessTransport* t = co_await op;
    Transport* in = t->get_pipe_transport(0);
    Transport* out = t->get_pipe_transport(1);
    CHECK_FALSE(out->is_reading());
    in->write(data);  // more than two pipes and cat hold
    if (!r.paused) {
      // The buffer was small enough to drain: wait for it to fill (cat blocks on its stdout).
      auto wait = r.wait_event("pause");
      co_await wait;
    }
    // pause_writing came while we did not read: cat is stuck, nothing was delivered.
    CHECK(r.seen("pause"));
    out_at_pause = r.out.size();
    out->resume_reading();
    co_await r.wait_out(data.size());
    in->write_eof();
    co_await r.wait_lost();
  };
  loop.run(body(), std::chrono::seconds(20));
  check_finished(r, {0, 1});
  CHECK(out_at_pause == 0);
  CHECK(r.out.size() == data.size());
  CHECK(first_mismatch(r.out, data) == npos);
  CHECK(r.returncode_at_exit == 0);
}

STRATA_LOOP_TEST_CASE("Subprocess: stdout and stderr both piped and read at once",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    // Each stream gets more than a pipe holds: a reader that served only one would deadlock.
    auto op = spawn(r, "sh",
                    {"-c",
                     "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2; "
                     "head -c 100000 /dev/zero; echo done >&2"},
                    pipes(false, true, true));
    co_await op;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {1, 2});
  CHECK(r.out == std::string(400000, '\0'));
  CHECK(r.err == std::string(200000, '\0') + "done\n");
  CHECK(r.returncode_at_exit == 0);
}

STRATA_LOOP_TEST_CASE("Subprocess: exit codes, and subprocess_shell runs /bin/sh -c",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SECTION("sh -c 'exit 7' through subprocess_exec") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    std::optional<int> returncode;
    auto body = [&]() -> Coro<void> {
      auto op = spawn(r, "sh", {"-c", "exit 7"}, pipes(false, false, false));
      SubprocessTransport* t = co_await op;
      co_await r.wait_lost();
      (void)t;
      returncode = r.returncode_at_lost;
    };
    loop.run(body());
    check_finished(r, {});
    CHECK(returncode == 7);
    CHECK(r.events == std::vector<std::string>{"made", "exited", "lost"});
  }
  SECTION("subprocess_shell: exit 7, output, and 127 for a command the shell cannot find") {
    SubRecord a;
    SubRecord b;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto op1 = spawn_shell(a, "echo \"$0\" && exit 7", pipes(false, true, false));
      co_await op1;
      auto op2 = spawn_shell(b, "strata-no-such-command-4711", pipes(false, false, false));
      co_await op2;
      co_await a.wait_lost();
      co_await b.wait_lost();
    };
    loop.run(body());
    check_finished(a, {1});
    check_finished(b, {});
    CHECK(a.out == "/bin/sh\n");
    CHECK(a.returncode_at_exit == 7);
    CHECK(b.returncode_at_exit == 127);
  }
  SECTION("exit 0 with the default options (every stream inherited)") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto factory = [&r] { return std::make_unique<RecordingSubprocessProtocol>(r); };
      auto op = strata::subprocess_exec(factory, "true", {});
      auto c = co_await op;
      CHECK(c.protocol == r.protocol);
      CHECK(c.transport->get_pipe_transport(0) == nullptr);
      CHECK(c.transport->get_pipe_transport(1) == nullptr);
      CHECK(c.transport->get_pipe_transport(2) == nullptr);
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {});
    CHECK(r.returncode_at_exit == 0);
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: kill, terminate and send_signal end the child with -N",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  std::vector<SignalCase> cases;
  cases.push_back(SignalCase{SIGKILL, -9, 0});
  cases.push_back(SignalCase{SIGTERM, -15, 1});
  cases.push_back(SignalCase{SIGUSR1, -10, 2});
  for (const SignalCase& c : cases) {
    INFO("signal " << c.sig);
    SubRecord r;
    TestLoop loop(TestType::kind);
    std::optional<int> before;
    auto body = [&]() -> Coro<void> {
      auto op = spawn(r, "sleep", {"30"}, pipes(false, false, false));
      SubprocessTransport* t = co_await op;
      before = t->get_returncode();
      if (c.how == 0) {
        t->kill();
      } else if (c.how == 1) {
        t->terminate();
      } else {
        t->send_signal(c.sig);
      }
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {});
    CHECK_FALSE(before.has_value());  // sleep 30 still ran
    CHECK(r.returncode_at_exit == c.expected);
    CHECK_FALSE(is_our_child(r.pid));
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: send_signal after the child was reaped throws no_such_process",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  std::vector<std::error_code> codes;
  std::vector<std::string> wrong;
  auto attempt = [&](SubprocessTransport& t, int how) {
    try {
      if (how == 0) t.send_signal(SIGTERM);
      if (how == 1) t.kill();
      if (how == 2) t.send_signal(0);
      wrong.push_back("no exception, how=" + std::to_string(how));
    } catch (const std::system_error& e) {
      codes.push_back(e.code());
    } catch (...) {
      wrong.push_back("another exception, how=" + std::to_string(how));
    }
  };
  r.on_exited = [&](SubprocessTransport& t) {
    attempt(t, 0);
    attempt(t, 1);
  };
  r.on_lost = [&](SubprocessTransport& t) { attempt(t, 2); };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "sh", {"-c", "exit 0"}, pipes(false, true, false));
    co_await op;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {1});
  CHECK(strata::testing::join(wrong) == "");
  REQUIRE(codes.size() == 3);
  for (const auto& ec : codes) CHECK(ec == std::errc::no_such_process);
}

STRATA_LOOP_TEST_CASE("Subprocess: stderr = Stdio::to_stdout() merges into the stdout pipe",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  bool no_err_pipe = false;
  auto body = [&]() -> Coro<void> {
    SubprocessOptions o = pipes(false, true, false);
    o.stderr = Stdio::to_stdout();
    auto op = spawn(r, "sh", {"-c", "echo out; echo err >&2; echo out2"}, o);
    SubprocessTransport* t = co_await op;
    no_err_pipe = t->get_pipe_transport(2) == nullptr;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {1});
  CHECK(no_err_pipe);
  CHECK(r.out == "out\nerr\nout2\n");
  CHECK(r.err.empty());
  CHECK(r.returncode_at_exit == 0);
}

STRATA_LOOP_TEST_CASE("Subprocess: Stdio::devnull() is /dev/null, readable and writable",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord links;
  SubRecord cat;
  SubRecord rw;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto op1 =
        spawn(links, "readlink", {"/proc/self/fd/0", "/proc/self/fd/2"}, pipes(false, true, false));
    co_await op1;
    auto op2 = spawn(cat, "cat", {}, pipes(false, true, false));  // EOF at once
    co_await op2;
    // Written to stdin and read from stdout: both work on /dev/null opened O_RDWR.
    auto op3 = spawn(rw, "sh", {"-c", "echo x >&0 && echo written"}, pipes(false, true, false));
    co_await op3;
    co_await links.wait_lost();
    co_await cat.wait_lost();
    co_await rw.wait_lost();
  };
  loop.run(body());
  check_finished(links, {1});
  check_finished(cat, {1});
  check_finished(rw, {1});
  CHECK(links.out == "/dev/null\n/dev/null\n");
  CHECK(links.returncode_at_exit == 0);
  CHECK(cat.out.empty());
  CHECK(cat.returncode_at_exit == 0);
  CHECK(rw.out == "written\n");
  CHECK(rw.returncode_at_exit == 0);
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: Stdio::from_fd() duplicates our descriptor onto the child's "
    "stream and leaves ours open",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord writer;
  SubRecord reader;
  TestLoop loop(TestType::kind);
  PipeFds to_us = make_pipe();
  PipeFds to_child = make_pipe();
  strata::testing::check_syscall(static_cast<int>(::write(to_child.write, "from our pipe\n", 14)),
                                 "write");
  ::close(to_child.write);
  std::string got;
  bool ours_open_after_spawn = false;
  auto body = [&]() -> Coro<void> {
    SubprocessOptions o1 = pipes(false, false, false);
    o1.stdout = Stdio::from_fd(to_us.write);
    o1.stderr = Stdio::from_fd(to_us.write);
    auto op1 = spawn(writer, "sh", {"-c", "echo to-fd; echo to-fd-err >&2"}, o1);
    co_await op1;
    SubprocessOptions o2 = pipes(false, true, false);
    o2.stdin = Stdio::from_fd(to_child.read);
    auto op2 = spawn(reader, "cat", {}, o2);
    co_await op2;
    ours_open_after_spawn = fd_is_open(to_us.write) && fd_is_open(to_child.read);
    co_await writer.wait_lost();
    co_await reader.wait_lost();
  };
  loop.run(body());
  check_finished(writer, {});
  check_finished(reader, {1});
  CHECK(ours_open_after_spawn);
  CHECK(fd_is_open(to_us.write));
  CHECK(fd_is_open(to_child.read));
  CHECK(Stdio::from_fd(to_us.write).fd() == to_us.write);
  CHECK(Stdio::pipe().fd() == -1);
  ::close(to_us.write);  // the child's copies are gone, and no other was kept: EOF after the data
  bool eof = false;
  got = drain_fd(to_us.read, &eof);
  CHECK(eof);
  ::close(to_us.read);
  ::close(to_child.read);
  CHECK(got == "to-fd\nto-fd-err\n");
  CHECK(writer.returncode_at_exit == 0);
  CHECK(reader.out == "from our pipe\n");
  CHECK(reader.returncode_at_exit == 0);
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: a program that cannot run throws std::system_error naming it, "
    "and leaves no child and no protocol call",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  TempDir dir;
  const std::string not_executable = dir.file("not-executable", "#!/bin/sh\nexit 0\n", 0644);
  const std::string a_file = dir.file("plain-file", "x", 0644);
  std::vector<RunFailureCase> cases;
  const std::string none;
  const std::string missing = dir.path() + "/missing";
  const std::string true_program = "true";
  cases.push_back(RunFailureCase{"not in PATH", "strata-no-such-program-4711", none,
                                 std::errc::no_such_file_or_directory});
  cases.push_back(RunFailureCase{"no such path", "/nonexistent/strata-no-such-program", none,
                                 std::errc::no_such_file_or_directory});
  cases.push_back(
      RunFailureCase{"not executable", not_executable, none, std::errc::permission_denied});
  cases.push_back(RunFailureCase{"cwd does not exist", true_program, missing,
                                 std::errc::no_such_file_or_directory});
  cases.push_back(
      RunFailureCase{"cwd is a file", true_program, a_file, std::errc::not_a_directory});
  for (const RunFailureCase& c : cases) {
    INFO(c.name);
    SubRecord warm_up;
    SubRecord r;
    TestLoop loop(TestType::kind);
    std::set<pid_t> before;
    SpawnFailure f;
    int fds_before = -1;
    int fds_after = -1;
    auto body = [&]() -> Coro<void> {
      // A child first, so that whatever the loop sets up once for children exists already.
      auto warm = spawn(warm_up, "true", {}, pipes(true, true, true));
      co_await warm;
      co_await warm_up.wait_lost();
      for (int i = 0; i < 3; ++i) co_await next_iteration();
      before = our_children();
      fds_before = strata::testing::count_open_fds();
      SubprocessOptions o = pipes(true, true, true);
      o.cwd = c.cwd;
      auto op = spawn_failure(r, c.program, {"arg"}, o);
      f = co_await op;
      for (int i = 0; i < 3; ++i) co_await next_iteration();
      fds_after = strata::testing::count_open_fds();
    };
    loop.run(body());
    CHECK(f.threw);
    CHECK(f.type == "system_error");
    CHECK(f.ec == c.expected);
    INFO("what(): " << f.what);
    CHECK(f.what.find(c.program) != npos);
    CHECK(r.events.empty());  // the protocol heard nothing
    CHECK(r.created == 1);
    CHECK(r.alive == 0);  // and was destroyed
    const std::set<pid_t> left = new_children(before);
    CHECK(describe(left) == "none");
    CHECK(fds_after == fds_before);  // no pipe end left open
    check_finished(warm_up, {0, 1, 2});
  }
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: a child that closes its stdout early: pipe_connection_lost(1) "
    "before process_exited",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  bool out_pipe_gone = false;
  std::optional<int> returncode_then;
  auto body = [&]() -> Coro<void> {
    // The child closes stdout, then waits for a line on stdin that we send only once we saw
    // the pipe close: the order is forced, not timed.
    auto op =
        spawn(r, "sh", {"-c", "echo bye; exec 1>&-; read line; exit 3"}, pipes(true, true, false));
    SubprocessTransport* t = co_await op;
    auto w = r.wait_event("pipe_lost1");
    co_await w;
    out_pipe_gone = t->get_pipe_transport(1) == nullptr;
    returncode_then = t->get_returncode();
    CHECK_FALSE(r.exited);
    t->get_pipe_transport(0)->write("go\n");
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {0, 1});
  CHECK(out_pipe_gone);
  CHECK_FALSE(returncode_then.has_value());
  CHECK(r.out == "bye\n");
  CHECK(r.pipe_lost_ec[1] == std::error_code());
  CHECK(r.returncode_at_exit == 3);
  const auto lost1 = std::find(r.events.begin(), r.events.end(), "pipe_lost1");
  const auto exited = std::find(r.events.begin(), r.events.end(), "exited");
  CHECK(lost1 < exited);
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: data left for a child that closed its stdin ends the stdin "
    "pipe with broken_pipe, without SIGPIPE here",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  r.on_made = [](SubprocessTransport& t) { t.get_pipe_transport(0)->write(pattern(1u << 20)); };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "sh", {"-c", "exec 0<&-; echo closed"}, pipes(true, true, false));
    co_await op;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {0, 1});
  CHECK(r.pipe_lost_ec[0] == std::errc::broken_pipe);
  CHECK(r.out == "closed\n");
  CHECK(r.returncode_at_exit == 0);
  CHECK_FALSE(sigpipe_pending());
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: closing our end of the stdout pipe: the child dies of SIGPIPE "
    "(its SIGPIPE is at the default even when ours is ignored)",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction saved {};
  ::sigaction(SIGPIPE, &ignore, &saved);
  struct Restore {
    struct sigaction* saved;
    ~Restore() { ::sigaction(SIGPIPE, saved, nullptr); }
  } restore{&saved};
  SubRecord r;
  r.on_data = [](SubprocessTransport& t, int fd, std::string_view) {
    if (fd == 1 && t.get_pipe_transport(1) != nullptr) t.get_pipe_transport(1)->close();
  };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "yes", {}, pipes(false, true, false));
    co_await op;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {1});
  CHECK(r.pipe_lost_ec[1] == std::error_code());
  CHECK(r.returncode_at_exit == -SIGPIPE);
  CHECK(r.out.rfind("y\n", 0) == 0);
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: the child starts with an empty signal mask and SIGPIPE, "
    "SIGXFSZ at the default",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  // This thread blocks SIGUSR2 and this process ignores SIGPIPE and SIGXFSZ while the child
  // starts.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction saved_pipe {};
  struct sigaction saved_xfsz {};
  ::sigaction(SIGPIPE, &ignore, &saved_pipe);
  ::sigaction(SIGXFSZ, &ignore, &saved_xfsz);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  sigset_t saved_mask;
  ::pthread_sigmask(SIG_BLOCK, &block, &saved_mask);
  struct Restore {
    struct sigaction* pipe;
    struct sigaction* xfsz;
    sigset_t* mask;
    ~Restore() {
      ::sigaction(SIGPIPE, pipe, nullptr);
      ::sigaction(SIGXFSZ, xfsz, nullptr);
      ::pthread_sigmask(SIG_SETMASK, mask, nullptr);
    }
  } restore{&saved_pipe, &saved_xfsz, &saved_mask};
  SubRecord r;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto op =
        spawn(r, "grep", {"-E", "^Sig(Blk|Ign):", "/proc/self/status"}, pipes(false, true, false));
    co_await op;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {1});
  INFO(r.out);
  unsigned long long blocked = ~0ull;
  unsigned long long ignored = ~0ull;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("SigBlk:", 0) == 0) blocked = std::stoull(line.substr(7), nullptr, 16);
    if (line.rfind("SigIgn:", 0) == 0) ignored = std::stoull(line.substr(7), nullptr, 16);
  }
  CHECK(blocked == 0);
  CHECK((ignored & (1ull << (SIGPIPE - 1))) == 0);
  CHECK((ignored & (1ull << (SIGXFSZ - 1))) == 0);
}

STRATA_LOOP_TEST_CASE("Subprocess: the child inherits no descriptor beyond 0, 1 and 2",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  // Descriptors of ours without O_CLOEXEC, one low and one high: close_fds must close them
  // all the same.
  PipeFds leaky = make_pipe(0);
  const int high = ::fcntl(leaky.read, F_DUPFD, 200);  // F_DUPFD: no FD_CLOEXEC
  REQUIRE(high >= 200);
  REQUIRE((::fcntl(leaky.write, F_GETFD) & FD_CLOEXEC) == 0);
  REQUIRE((::fcntl(high, F_GETFD) & FD_CLOEXEC) == 0);
  SubRecord all_pipes;
  SubRecord no_pipes;
  TestLoop loop(TestType::kind);
  PipeFds result = make_pipe();
  std::string via_fd;
  auto body = [&]() -> Coro<void> {
    // The shell lists its own /proc/self/fd with a glob: reading the directory opens one more
    // descriptor, the lowest free one. With 0, 1 and 2 open and nothing else, that is 3; any
    // inherited descriptor shows up as itself (and pushes the directory's to 4 or above).
    auto op1 =
        spawn(all_pipes, "sh", {"-c", "cd /proc/self/fd && echo *"}, pipes(true, true, true));
    SubprocessTransport* t = co_await op1;
    t->get_pipe_transport(0)->write_eof();
    SubprocessOptions o = pipes(false, false, false);
    o.stdout = Stdio::from_fd(result.write);
    auto op2 = spawn(no_pipes, "sh", {"-c", "cd /proc/self/fd && echo *"}, o);
    co_await op2;
    co_await all_pipes.wait_lost();
    co_await no_pipes.wait_lost();
  };
  loop.run(body());
  ::close(result.write);
  via_fd = drain_fd(result.read);
  ::close(result.read);
  ::close(leaky.read);
  ::close(leaky.write);
  ::close(high);
  check_finished(all_pipes, {0, 1, 2});
  check_finished(no_pipes, {});
  CHECK(all_pipes.out == "0 1 2 3\n");
  CHECK(all_pipes.err.empty());
  CHECK(via_fd == "0 1 2 3\n");
}

STRATA_LOOP_TEST_CASE("Subprocess: env, cwd and the arguments reach the child as given",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  TempDir dir;
  SECTION("env and cwd through the shell") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      SubprocessOptions o = pipes(false, true, true);
      o.env = std::map<std::string, std::string>{{"FOO", "bar baz"}, {"EMPTY", ""}};
      o.cwd = dir.path();
      // "sh" without a '/': found in this process's PATH, although the child's env has none.
      auto op = spawn(r, "sh", {"-c", "echo \"$FOO\"; pwd; echo \"[${EMPTY-unset}]\""}, o);
      co_await op;
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {1, 2});
    INFO("stderr: " << r.err);
    CHECK(r.out == "bar baz\n" + dir.path() + "\n[]\n");
    CHECK(r.returncode_at_exit == 0);
  }
  SECTION("env is the whole environment") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      SubprocessOptions o = pipes(false, true, false);
      o.env = std::map<std::string, std::string>{{"B", "2"}, {"A", "1=one"}};
      auto op = spawn(r, "env", {}, o);
      co_await op;
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {1});
    std::vector<std::string> lines;
    std::istringstream in(r.out);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    std::sort(lines.begin(), lines.end());
    CHECK(lines == std::vector<std::string>{"A=1=one", "B=2"});
  }
  SECTION("an empty env map gives an empty environment") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      SubprocessOptions o = pipes(false, true, false);
      o.env = std::map<std::string, std::string>{};
      auto op = spawn(r, "env", {}, o);
      co_await op;
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {1});
    CHECK(r.out == "");
    CHECK(r.returncode_at_exit == 0);
  }
  SECTION("without env the child has this process's environment, as it is now") {
    ::setenv("STRATA_SUBPROCESS_TEST_VAR", "inherited value", 1);
    struct Unset {
      ~Unset() { ::unsetenv("STRATA_SUBPROCESS_TEST_VAR"); }
    } unset;
    SubRecord r;
    TestLoop loop(TestType::kind);
    char cwd[PATH_MAX];
    REQUIRE(::getcwd(cwd, sizeof cwd) != nullptr);
    auto body = [&]() -> Coro<void> {
      auto op = spawn(r, "sh", {"-c", "echo \"$STRATA_SUBPROCESS_TEST_VAR\"; pwd -P"},
                      pipes(false, true, false));
      co_await op;
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {1});
    char real[PATH_MAX];
    REQUIRE(::realpath(cwd, real) != nullptr);
    CHECK(r.out == "inherited value\n" + std::string(real) + "\n");
  }
  SECTION("arguments are passed as they are: no shell sees them") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto op = spawn(r, "printf", {"[%s]\\n", "a b", "", "$HOME", "*", "'q'", "\"d\";x"},
                      pipes(false, true, false));
      co_await op;
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {1});
    CHECK(r.out == "[a b]\n[]\n[$HOME]\n[*]\n['q']\n[\"d\";x]\n");
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: start_new_session puts the child in a session of its own",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  for (bool new_session : {false, true}) {
    INFO("start_new_session " << new_session);
    SubRecord r;
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      SubprocessOptions o = pipes(false, true, false);
      o.start_new_session = new_session;
      auto op = spawn(r, "cat", {"/proc/self/stat"}, o);
      co_await op;
      co_await r.wait_lost();
    };
    loop.run(body());
    check_finished(r, {1});
    const std::size_t close = r.out.rfind(')');
    REQUIRE(close != npos);
    std::istringstream rest(r.out.substr(close + 1));
    std::string state, ppid, pgrp, session;
    rest >> state >> ppid >> pgrp >> session;
    CHECK(ppid == std::to_string(::getpid()));
    if (new_session) {
      CHECK(session == std::to_string(r.pid));
      CHECK(pgrp == std::to_string(r.pid));
    } else {
      CHECK(session == std::to_string(::getsid(0)));
    }
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: close() on a running child kills it; connection_lost follows",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  bool closing = false;
  std::optional<int> returncode_before;
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "sleep", {"30"}, pipes(true, true, true));
    SubprocessTransport* t = co_await op;
    CHECK(is_our_child(t->get_pid()));
    returncode_before = t->get_returncode();
    t->close();
    closing = t->is_closing();
    t->close();  // idempotent
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {0, 1, 2});
  CHECK(closing);
  CHECK_FALSE(returncode_before.has_value());
  CHECK(r.returncode_at_exit == -SIGKILL);
  for (int fd : {0, 1, 2}) CHECK(r.pipe_lost_ec[fd] == std::error_code());
  CHECK_FALSE(is_our_child(r.pid));
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: close() after the child exited does not signal anything and "
    "still ends with connection_lost",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  // The child exits, but a grandchild that waits on stdin keeps both pipes open: the
  // transport lives on after process_exited until close() closes our ends (the grandchild
  // then reads EOF and ends).
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "sh", {"-c", "(read x; echo late) & exit 4"}, pipes(true, true, false));
    SubprocessTransport* t = co_await op;
    co_await r.wait_exited();
    CHECK(t->get_returncode() == 4);
    CHECK_FALSE(r.lost);  // the pipes are still open (the grandchild holds them)
    t->close();
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {0, 1});
  CHECK(r.returncode_at_exit == 4);
}

STRATA_LOOP_TEST_CASE("Subprocess: a child we did not start is never reaped by us",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  // A raw child, exited (a zombie) before the loop sees any child of its own.
  const pid_t raw = ::fork();
  REQUIRE(raw >= 0);
  if (raw == 0) ::_exit(5);
  siginfo_t info{};
  REQUIRE(::waitid(P_PID, static_cast<id_t>(raw), &info, WEXITED | WNOWAIT) == 0);
  // A second one that exits while our children run: it waits for EOF on a pipe.
  PipeFds gate = make_pipe();
  const pid_t raw2 = ::fork();
  REQUIRE(raw2 >= 0);
  if (raw2 == 0) {
    char c;
    ::close(gate.write);
    while (::read(gate.read, &c, 1) > 0) {
    }
    ::_exit(6);
  }
  ::close(gate.read);
  SubRecord a;
  SubRecord b;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto op1 = spawn(a, "sh", {"-c", "exit 1"}, pipes(false, false, false));
    co_await op1;
    auto op2 = spawn(b, "cat", {}, pipes(true, true, false));
    SubprocessTransport* t = co_await op2;
    co_await a.wait_lost();
    ::close(gate.write);  // raw2 exits now, while cat still runs
    siginfo_t i2{};
    CHECK(::waitid(P_PID, static_cast<id_t>(raw2), &i2, WEXITED | WNOWAIT) == 0);
    t->get_pipe_transport(0)->write("x");
    co_await b.wait_out(1);
    t->get_pipe_transport(0)->write_eof();
    co_await b.wait_lost();
  };
  loop.run(body());
  check_finished(a, {});
  check_finished(b, {0, 1});
  CHECK(a.returncode_at_exit == 1);
  CHECK(b.returncode_at_exit == 0);
  int status = 0;
  CHECK(::waitpid(raw, &status, WNOHANG) == raw);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 5);
  status = 0;
  CHECK(::waitpid(raw2, &status, 0) == raw2);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 6);
}

STRATA_LOOP_TEST_CASE("Subprocess: 50 children at once, each with its own output and exit",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  constexpr int n = 50;
  std::vector<std::unique_ptr<SubRecord>> records;  // declared before the loop: they outlive it
  records.reserve(n);
  for (int i = 0; i < n; ++i) records.push_back(std::make_unique<SubRecord>());
  TestLoop loop(TestType::kind);
  const std::set<pid_t> before = our_children();
  auto body = [&]() -> Coro<void> {
    // Started concurrently from 50 tasks, then awaited.
    std::vector<strata::Task<SubprocessTransport*>> tasks;
    for (int i = 0; i < n; ++i) {
      SubRecord& r = *records[static_cast<std::size_t>(i)];
      std::string cmd = "echo " + std::to_string(i) + "; exit " + std::to_string(i % 2);
      tasks.push_back(loop->create_task(spawn(r, "sh", {"-c", cmd}, pipes(false, true, false))));
    }
    for (auto& task : tasks) co_await task;
    for (auto& r : records) co_await r->wait_lost();
  };
  loop.run(body(), std::chrono::seconds(20));
  std::set<int> pids;
  for (int i = 0; i < n; ++i) {
    INFO("child " << i);
    const SubRecord& r = *records[static_cast<std::size_t>(i)];
    check_finished(r, {1});
    CHECK(r.out == std::to_string(i) + "\n");
    CHECK(r.returncode_at_exit == i % 2);
    pids.insert(r.pid);
  }
  CHECK(pids.size() == static_cast<std::size_t>(n));
  CHECK(describe(new_children(before)) == "none");
}

STRATA_LOOP_TEST_CASE("Subprocess: closing the loop kills and reaps a child still running",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord quiet;  // no pipes
  SubRecord piped;  // pipes on every stream
  int pid_quiet = -1;
  int pid_piped = -1;
  bool running_before_close = false;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto op1 = spawn(quiet, "sleep", {"30"}, pipes(false, false, false));
      SubprocessTransport* a = co_await op1;
      auto op2 = spawn(piped, "sleep", {"30"}, pipes(true, true, true));
      SubprocessTransport* b = co_await op2;
      pid_quiet = a->get_pid();
      pid_piped = b->get_pid();
    };
    loop.run(body());
    running_before_close = is_our_child(pid_quiet) && is_our_child(pid_piped) &&
                           !is_zombie_child(pid_quiet) && !is_zombie_child(pid_piped);
    loop->close();
    // Reaped on the spot, before close() returns.
    CHECK_FALSE(is_our_child(pid_quiet));
    CHECK_FALSE(is_our_child(pid_piped));
  }
  CHECK(running_before_close);
  for (SubRecord* r : {&quiet, &piped}) {
    INFO("events: " << strata::testing::join(r->events));
    CHECK(r->lost);
    CHECK(r->alive == 0);
    CHECK(r->events.back() == "lost");
    CHECK(std::count(r->events.begin(), r->events.end(), "lost") == 1);
    CHECK(r->lost_ec == strata::errc::loop_closed);  // BaseProtocol::connection_lost
  }
  // The grammar holds on this path too.
  CHECK(sub_grammar_error(quiet.events, {}) == "");
  CHECK(sub_grammar_error(piped.events, {0, 1, 2}) == "");
  CHECK(quiet.returncode_at_lost == -SIGKILL);
  CHECK(piped.returncode_at_lost == -SIGKILL);
}

STRATA_LOOP_TEST_CASE("Subprocess: a cancelled subprocess_exec leaves no child behind",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SECTION("cancelled before it started: nothing is made") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    const std::set<pid_t> before = our_children();
    bool cancelled = false;
    auto body = [&]() -> Coro<void> {
      auto task = loop->create_task(spawn(r, "sleep", {"30"}, pipes(true, true, true)));
      task.cancel();
      try {
        co_await task;
      } catch (const strata::CancelledError&) {
        cancelled = true;
      }
      co_await next_iteration();
    };
    loop.run(body());
    CHECK(cancelled);
    CHECK(r.created == 0);
    CHECK(r.events.empty());
    CHECK(describe(new_children(before)) == "none");
  }
  SECTION("cancelled while waiting for connection_made: the child is killed and reaped") {
    SubRecord r;
    TestLoop loop(TestType::kind);
    const std::set<pid_t> before = our_children();
    bool cancelled = false;
    bool returned = false;
    strata::Task<SubprocessTransport*> task;
    auto body = [&]() -> Coro<void> {
      // The cancel is queued from inside the factory, so it runs right after the task first
      // suspends (after the child started, before connection_made can have run).
      auto factory = [&r, &task] {
        strata::get_running_loop().call_soon([&task] { task.cancel(); });
        return std::make_unique<RecordingSubprocessProtocol>(r);
      };
      auto make = [](decltype(factory) f) -> Coro<SubprocessTransport*> {
        SubprocessOptions o = pipes(true, true, true);
        auto op = strata::subprocess_exec(f, "sleep", {"30"}, o);
        auto c = co_await op;
        co_return c.transport;
      };
      task = loop->create_task(make(factory));
      try {
        co_await task;
        returned = true;
      } catch (const strata::CancelledError&) {
        cancelled = true;
      }
      if (returned) {
        // It completed before the cancel landed: close it ourselves.
        if (r.transport) r.transport->close();
      }
      if (r.made) co_await r.wait_lost();
    };
    loop.run(body());
    INFO("events: " << strata::testing::join(r.events));
    CHECK((cancelled || returned));
    CHECK(cancelled);  // the cancel came while the task waited (what this section is about)
    CHECK(r.created == 1);
    CHECK(r.alive == 0);
    // Per the header: the protocol still hears connection_made, then connection_lost.
    CHECK(r.made);
    CHECK(r.lost);
    CHECK(sub_grammar_error(r.events, {0, 1, 2}) == "");
    CHECK(r.returncode_at_lost == -SIGKILL);
    CHECK(describe(new_children(before)) == "none");
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: invalid arguments throw std::invalid_argument and start nothing",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  std::vector<InvalidCase> cases;
  {
    SubprocessOptions o = pipes(false, false, false);
    cases.push_back({"empty program", "", {}, o});
    cases.push_back({"NUL in the program", std::string("tr\0ue", 5), {}, o});
    cases.push_back({"NUL in an argument", "echo", {std::string("a\0b", 3)}, o});
    SubprocessOptions in = o;
    in.stdin = Stdio::to_stdout();
    cases.push_back({"stdin = to_stdout", "true", {}, in});
    SubprocessOptions out = o;
    out.stdout = Stdio::to_stdout();
    cases.push_back({"stdout = to_stdout", "true", {}, out});
    SubprocessOptions negative = o;
    negative.stdout = Stdio::from_fd(-1);
    cases.push_back({"from_fd(-1)", "true", {}, negative});
    SubprocessOptions eq = o;
    eq.env = std::map<std::string, std::string>{{"A=B", "c"}};
    cases.push_back({"'=' in an env name", "true", {}, eq});
    SubprocessOptions nul = o;
    nul.env = std::map<std::string, std::string>{{"A", std::string("x\0y", 3)}};
    cases.push_back({"NUL in an env value", "true", {}, nul});
  }
  for (const InvalidCase& c : cases) {
    INFO(c.name);
    SubRecord r;
    TestLoop loop(TestType::kind);
    const std::set<pid_t> before = our_children();
    SpawnFailure f;
    auto body = [&]() -> Coro<void> {
      auto op = spawn_failure(r, c.program, c.args, c.options);
      f = co_await op;
    };
    loop.run(body());
    INFO("what(): " << f.what << " (" << f.type << ")");
    CHECK(f.threw);
    CHECK(f.type == "invalid_argument");
    CHECK(r.events.empty());
    CHECK(r.alive == 0);
    CHECK(describe(new_children(before)) == "none");
  }
  SECTION("subprocess_shell with an empty command; a factory returning null") {
    TestLoop loop(TestType::kind);
    std::string shell_type;
    std::string null_type;
    auto body = [&]() -> Coro<void> {
      try {
        SubRecord r;
        auto op = spawn_shell(r, "", pipes(false, false, false));
        co_await op;
        shell_type = "none";
      } catch (const std::invalid_argument&) {
        shell_type = "invalid_argument";
      } catch (...) {
        shell_type = "other";
      }
      try {
        auto factory = [] { return std::unique_ptr<RecordingSubprocessProtocol>(); };
        SubprocessOptions o = pipes(false, false, false);
        auto op = strata::subprocess_exec(factory, "true", {}, o);
        co_await op;
        null_type = "none";
      } catch (const std::invalid_argument&) {
        null_type = "invalid_argument";
      } catch (...) {
        null_type = "other";
      }
    };
    const std::set<pid_t> before = our_children();
    loop.run(body());
    CHECK(shell_type == "invalid_argument");
    CHECK(null_type == "invalid_argument");
    CHECK(describe(new_children(before)) == "none");
  }
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: what the factory or connection_made throws propagates; the "
    "child is killed and reaped",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SECTION("the factory throws: nothing starts") {
    TestLoop loop(TestType::kind);
    const std::set<pid_t> before = our_children();
    std::string message;
    auto body = [&]() -> Coro<void> {
      auto factory = []() -> std::unique_ptr<RecordingSubprocessProtocol> {
        throw std::runtime_error("factory says no");
      };
      try {
        SubprocessOptions o = pipes(false, false, false);
        auto op = strata::subprocess_exec(factory, "sleep", {"30"}, o);
        co_await op;
      } catch (const std::runtime_error& e) {
        message = e.what();
      }
    };
    loop.run(body());
    CHECK(message == "factory says no");
    CHECK(describe(new_children(before)) == "none");
  }
  SECTION("connection_made throws: the exception reaches the caller, the child is reaped") {
    SubRecord r;
    r.on_made = [](SubprocessTransport&) { throw std::runtime_error("made says no"); };
    TestLoop loop(TestType::kind);
    const std::set<pid_t> before = our_children();
    std::string message;
    auto body = [&]() -> Coro<void> {
      try {
        auto op = spawn(r, "sleep", {"30"}, pipes(true, true, true));
        co_await op;
      } catch (const std::runtime_error& e) {
        message = e.what();
      }
      co_await r.wait_lost();
    };
    loop.run(body());
    INFO("events: " << strata::testing::join(r.events));
    CHECK(message == "made says no");
    CHECK(r.lost);
    CHECK(r.alive == 0);
    CHECK(r.returncode_at_lost == -SIGKILL);
    CHECK(describe(new_children(before)) == "none");
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: get_extra_info(\"pid\") is the child's pid, a child of ours",
                      "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  TestLoop loop(TestType::kind);
  std::optional<int> pid_info;
  bool unknown_empty = false;
  std::vector<std::string> stat;
  auto body = [&]() -> Coro<void> {
    auto op = spawn(r, "sleep", {"30"}, pipes(false, false, false));
    SubprocessTransport* t = co_await op;
    pid_info = t->get_extra_info_as<int>("pid");
    unknown_empty = !t->get_extra_info("no-such-info").has_value();
    stat = proc_stat_fields("/proc/" + std::to_string(t->get_pid()) + "/stat");
    t->kill();
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {});
  REQUIRE(pid_info.has_value());
  CHECK(*pid_info == r.pid);
  CHECK(unknown_empty);
  REQUIRE(stat.size() > 1);
  CHECK(stat[1] == std::to_string(::getpid()));
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: a loop's own SIGCHLD handler and the child watcher are both "
    "served, in either order, and the disposition is restored afterwards",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  struct sigaction before {};
  ::sigaction(SIGCHLD, nullptr, &before);
  REQUIRE(before.sa_handler == SIG_DFL);
  SubRecord longer;  // watched before the loop's handler comes, and after it goes
  SubRecord a;       // exits while both are there
  SubRecord b;       // started after the loop's handler went
  int calls = 0;
  int calls_after_a = -1;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto op0 = spawn(longer, "cat", {}, pipes(true, true, false));
      SubprocessTransport* cat = co_await op0;
      loop->add_signal_handler(SIGCHLD, [&calls] { ++calls; });
      auto op1 = spawn(a, "sh", {"-c", "exit 2"}, pipes(false, true, false));
      co_await op1;
      co_await a.wait_lost();
      // The loop's handler hears that exit too (within a few iterations: an ordering bound,
      // not a timed wait).
      for (int i = 0; i < 1000 && calls == 0; ++i) co_await next_iteration();
      calls_after_a = calls;
      CHECK(loop->remove_signal_handler(SIGCHLD));
      // Without the loop's handler, the children are still watched: the one already running...
      cat->get_pipe_transport(0)->write("still watched");
      cat->get_pipe_transport(0)->write_eof();
      co_await longer.wait_lost();
      // ...and a new one.
      auto op2 = spawn(b, "sh", {"-c", "exit 3"}, pipes(false, true, false));
      co_await op2;
      co_await b.wait_lost();
    };
    loop.run(body());
  }
  check_finished(longer, {0, 1});
  check_finished(a, {1});
  check_finished(b, {1});
  CHECK(calls_after_a > 0);
  CHECK(longer.out == "still watched");
  CHECK(longer.returncode_at_exit == 0);
  CHECK(a.returncode_at_exit == 2);
  CHECK(b.returncode_at_exit == 3);
  struct sigaction after {};
  ::sigaction(SIGCHLD, nullptr, &after);
  CHECK(after.sa_handler == SIG_DFL);
  CHECK((after.sa_flags & SA_SIGINFO) == 0);
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: a protocol callback that throws: the exception handler hears "
    "it, the child is killed, connection_lost(callback_failed)",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord r;
  r.on_data = [](SubprocessTransport&, int, std::string_view) {
    throw std::runtime_error("pipe_data_received says no");
  };
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    // Writes once, then waits on stdin: only the kill can end it.
    auto op = spawn(r, "sh", {"-c", "echo hello; read x; exit 0"}, pipes(true, true, false));
    co_await op;
    co_await r.wait_lost();
  };
  loop.run(body());
  check_finished(r, {0, 1});
  CHECK(r.lost_ec == strata::errc::callback_failed);
  CHECK(r.returncode_at_exit == -SIGKILL);
  REQUIRE(loop.errors().size() == 1);
  CHECK(strata::describe_exception(loop.errors()[0].exception).find("pipe_data_received says no") !=
        npos);
}

STRATA_LOOP_TEST_CASE(
    "Subprocess: a child started while this process's descriptor 0 is closed "
    "still gets the streams it asked for",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  SubRecord piped;
  SubRecord nulled;
  bool zero_free_after = false;
  {
    TestLoop loop(TestType::kind);  // its own descriptors first, above 0
    const int saved = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
    const bool had_zero = saved >= 0;
    ::close(0);
    {
      auto body = [&]() -> Coro<void> {
        // The pipes made now may take descriptor 0 on our side.
        auto op1 =
            spawn(piped, "sh", {"-c", "cat; readlink /proc/self/fd/2"}, pipes(true, true, false));
        SubprocessTransport* t = co_await op1;
        t->get_pipe_transport(0)->write("through a low descriptor\n");
        t->get_pipe_transport(0)->write_eof();
        co_await piped.wait_lost();
        auto op2 = spawn(nulled, "readlink", {"/proc/self/fd/0", "/proc/self/fd/1"},
                         pipes(false, false, false));
        co_await op2;
        co_await nulled.wait_lost();
        for (int i = 0; i < 3; ++i) co_await next_iteration();
      };
      loop.run(body());
    }
    loop->close();
    zero_free_after = ::fcntl(0, F_GETFD) < 0;  // nothing of the children's was left at 0
    if (had_zero) {
      ::dup2(saved, 0);
      ::close(saved);
    }
  }
  check_finished(piped, {0, 1});
  check_finished(nulled, {});
  CHECK(zero_free_after);
  CHECK(piped.out == "through a low descriptor\n/dev/null\n");
  CHECK(piped.returncode_at_exit == 0);
  CHECK(nulled.returncode_at_exit == 0);
}

namespace {

/// What one loop on another thread saw of its children (Catch2 asserts on one thread only).
struct ThreadOutcome {
  std::vector<std::string> outs;
  std::vector<std::optional<int>> codes;
  std::vector<std::string> grammar;
  std::string error;
  /// The records outlive the loop: a transport destroys its protocol in a later iteration.
  std::vector<std::unique_ptr<SubRecord>> records;
};

Coro<void> run_children(int n, std::string tag, ThreadOutcome* outcome) {
  std::vector<std::unique_ptr<SubRecord>>& records = outcome->records;
  for (int i = 0; i < n; ++i) records.push_back(std::make_unique<SubRecord>());
  for (int i = 0; i < n; ++i) {
    std::string cmd = "echo " + tag + std::to_string(i) + "; exit " + std::to_string(i % 3);
    auto op =
        spawn(*records[static_cast<std::size_t>(i)], "sh", {"-c", cmd}, pipes(false, true, false));
    co_await op;
  }
  for (auto& r : records) co_await r->wait_lost();
  for (auto& r : records) {
    outcome->outs.push_back(r->out);
    outcome->codes.push_back(r->returncode_at_exit);
    outcome->grammar.push_back(sub_grammar_error(r->events, {1}));
  }
}

}  // namespace

STRATA_LOOP_TEST_CASE(
    "Subprocess: two loops on two threads, each with children at once: each "
    "loop hears its own",
    "[transports][subprocess]") {
  FOR_EACH_CHILD_WATCH_METHOD();
  constexpr int n = 12;
  ThreadOutcome other;
  ThreadOutcome mine;
  std::thread thread([&other] {
    try {
      std::unique_ptr<strata::EventLoop> loop = strata::new_event_loop(TestType::kind);
      auto bounded = strata::wait_for(run_children(n, "other-", &other), std::chrono::seconds(10));
      loop->run_until_complete(std::move(bounded));
      loop->close();
    } catch (const std::exception& e) {
      other.error = e.what();
    } catch (...) {
      other.error = "an exception";
    }
  });
  {
    TestLoop loop(TestType::kind);
    try {
      loop.run(run_children(n, "mine-", &mine));
    } catch (...) {
      thread.join();
      throw;
    }
  }
  thread.join();
  CHECK(other.error == "");
  for (ThreadOutcome* o : {&mine, &other}) {
    const std::string tag = o == &mine ? "mine-" : "other-";
    REQUIRE(o->outs.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      INFO(tag << i);
      const auto k = static_cast<std::size_t>(i);
      CHECK(o->outs[k] == tag + std::to_string(i) + "\n");
      CHECK(o->codes[k] == i % 3);
      CHECK(o->grammar[k] == "");
    }
  }
}

STRATA_LOOP_TEST_CASE("Subprocess: with SIGCHLD ignored the kernel reaps the child; returncode 255",
                      "[transports][subprocess]") {
  // SIG_IGN asks the kernel to reap children at exit: their status is lost. asyncio reports
  // 255 then; so do we, whether the child is gone before pidfd_open() or after.
  WatchMethodScope scope(ChildWatchMethod::pidfd);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction previous {};
  REQUIRE(::sigaction(SIGCHLD, &ignore, &previous) == 0);
  SubRecord fast;
  SubRecord slow;
  TestLoop loop(TestType::kind);
  auto body = [&]() -> Coro<void> {
    auto quick = spawn(fast, "true", {}, pipes(false, false, false));
    co_await quick;
    co_await fast.wait_lost();
    auto later = spawn_shell(slow, "read line; exit 3", pipes(true, false, false));
    SubprocessTransport* t = co_await later;
    t->get_pipe_transport(0)->write(std::string_view("go\n"));
    co_await slow.wait_lost();
  };
  loop.run(body());
  ::sigaction(SIGCHLD, &previous, nullptr);
  check_finished(fast, {});
  check_finished(slow, {0});
  CHECK(fast.returncode_at_exit == 255);
  CHECK(slow.returncode_at_exit == 255);
}
