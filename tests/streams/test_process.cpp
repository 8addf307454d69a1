// create_subprocess_exec / create_subprocess_shell and Process on every backend, with real
// children (cat, head, sh, sleep, env, pwd): lines through cat, communicate() with 16 MiB each
// way and with 16 MiB on stdout and stderr at once, exit codes and signals, merged and
// /dev/null streams, a program that does not exist, children that close a pipe early,
// cancellation of wait() and of communicate(), misuse, handles dropped early, a loop closed
// under a child, 50 children at once, env and cwd, the reader's limit against a child that
// writes a lot, and a subset again with the SIGCHLD watcher forced.
#include <strata/streams/process.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/gather.hpp>
#include <strata/core/task.hpp>
#include <strata/streams/stream_reader.hpp>
#include <strata/streams/stream_writer.hpp>
#include <strata/transports/subprocess.hpp>

#include "../transports/net_test_support.hpp"
#include "../transports/stream_test_support.hpp"
#include "loop_test.hpp"

using namespace std::chrono_literals;
using strata::Coro;
using strata::InvalidStateError;
using strata::Process;
using strata::ProcessOutput;
using strata::Stdio;
using strata::SubprocessOptions;
using strata::Task;
using strata::Transport;
using strata::testing::count_open_fds;
using strata::testing::first_mismatch;
using strata::testing::next_iteration;
using strata::testing::pattern;
using strata::testing::TempDir;
using strata::testing::TestLoop;

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * 1024;
constexpr std::size_t npos = std::string::npos;
/// The most a read pipe transport reads in one go (stream_transport.cpp's read buffer).
constexpr std::size_t pipe_read_chunk = 64 * KiB;

/// Options with a pipe on each stream asked for, the others inherited.
SubprocessOptions pipes(bool in, bool out, bool err) {
  SubprocessOptions options;
  if (in) options.stdin = Stdio::pipe();
  if (out) options.stdout = Stdio::pipe();
  if (err) options.stderr = Stdio::pipe();
  return options;
}

/// Yields @p n loop iterations.
Coro<void> iterations(int n) {
  for (int i = 0; i < n; ++i) {
    auto step = next_iteration();
    co_await step;
  }
}

/// Yields loop iterations until @p pred() holds (true) or @p limit passes (false).
template <class P>
Coro<bool> iterate_until(P pred, strata::Duration limit) {
  strata::EventLoop& loop = strata::get_running_loop();
  const strata::TimePoint end = loop.time() + limit;
  for (;;) {
    if (pred()) co_return true;
    if (loop.time() > end) co_return false;
    auto step = next_iteration();
    co_await step;
  }
}

/// Whether the process's transport is gone (Process::transport() throws).
bool transport_gone(const Process& process) {
  try {
    (void)process.transport();
    return false;
  } catch (const InvalidStateError&) {
    return true;
  }
}

/// The error send_signal(@p sig) threw, or an empty code.
std::error_code signal_error(Process& process, int sig) {
  try {
    process.send_signal(sig);
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

/// The pids of this process's children, zombies included: every thread's
/// /proc/self/task/<tid>/children.
std::vector<int> children_of_this_process() {
  std::vector<int> pids;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "children");
    int pid = 0;
    while (in >> pid) pids.push_back(pid);
  }
  return pids;
}

/// Whether a child of this process has exited and waits to be reaped (without reaping it).
bool has_zombie_child() {
  siginfo_t info{};
  if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;  // ECHILD
  return info.si_pid != 0;
}

/// Forces the SIGCHLD watcher on the children started in its scope.
class ForceSigchldWatcher {
 public:
  ForceSigchldWatcher() {
    strata::detail::set_child_watch_method(strata::detail::ChildWatchMethod::sigchld);
  }
  ~ForceSigchldWatcher() { strata::detail::set_child_watch_method(std::nullopt); }
  ForceSigchldWatcher(const ForceSigchldWatcher&) = delete;
  ForceSigchldWatcher& operator=(const ForceSigchldWatcher&) = delete;
};

// ---- The behaviours, as coroutines that the test cases run (some twice: both watchers) ----

/// Lines go through cat and back; closing stdin ends cat with 0; the descriptors are freed.
Coro<void> echo_lines_through_cat() {
  const int fds_before = count_open_fds();
  auto starting = strata::create_subprocess_exec("cat", {}, pipes(true, true, false));
  Process proc = co_await starting;
  REQUIRE(proc.stdin.has_value());
  REQUIRE(proc.stdout.has_value());
  CHECK_FALSE(proc.stderr.has_value());
  CHECK(proc.pid() > 0);
  CHECK(proc.transport().get_pid() == proc.pid());
  CHECK_FALSE(proc.returncode().has_value());

  const std::string first = "hello\n";
  const std::string second = "a second, longer line\n";
  proc.stdin->write(first);
  auto drained = proc.stdin->drain();
  co_await drained;
  auto line1 = proc.stdout->readline();
  std::string got1 = co_await line1;
  CHECK(got1 == first);
  auto sent = proc.stdin->send(second);
  co_await sent;
  auto line2 = proc.stdout->readline();
  std::string got2 = co_await line2;
  CHECK(got2 == second);
  CHECK_FALSE(proc.returncode().has_value());

  proc.stdin->close();
  auto line3 = proc.stdout->readline();
  std::string got3 = co_await line3;
  CHECK(got3.empty());
  CHECK(proc.stdout->at_eof());
  auto waiting = proc.wait();
  int rc = co_await waiting;
  CHECK(rc == 0);
  CHECK(proc.returncode() == 0);

  auto gone = iterate_until([&] { return transport_gone(proc); }, 5s);
  const bool gone_ok = co_await gone;
  CHECK(gone_ok);
  auto freed = iterate_until([&] { return count_open_fds() == fds_before; }, 5s);
  const bool all_freed = co_await freed;
  CHECK(all_freed);
  CHECK(count_open_fds() == fds_before);
}

/// The exit code of sh -c 'exit 3', and of create_subprocess_shell() with no options.
Coro<void> exit_codes() {
  auto starting = strata::create_subprocess_exec("/bin/sh", {"-c", "exit 3"}, SubprocessOptions{});
  Process proc = co_await starting;
  auto waiting = proc.wait();
  int rc = co_await waiting;
  CHECK(rc == 3);
  CHECK(proc.returncode() == 3);
  auto again = proc.wait();  // at once, and the same
  int rc2 = co_await again;
  CHECK(rc2 == 3);

  auto shell = strata::create_subprocess_shell("exit 42");
  Process sh = co_await shell;
  CHECK_FALSE(sh.stdin.has_value());
  CHECK_FALSE(sh.stdout.has_value());
  CHECK_FALSE(sh.stderr.has_value());
  auto sh_waiting = sh.wait();
  int sh_rc = co_await sh_waiting;
  CHECK(sh_rc == 42);
}

/// kill() and terminate() end `sleep 30` with -9 and -15; a reaped child cannot be signalled.
Coro<void> kill_and_terminate() {
  auto starting = strata::create_subprocess_exec("sleep", {"30"});
  Process killed = co_await starting;
  killed.kill();
  auto waiting = killed.wait();
  int rc = co_await waiting;
  CHECK(rc == -SIGKILL);
  CHECK(killed.returncode() == -SIGKILL);
  // Reaped: the transport (or, once it is gone, the Process) refuses to signal a recycled pid.
  CHECK(signal_error(killed, SIGTERM) == std::errc::no_such_process);
  auto gone = iterate_until([&] { return transport_gone(killed); }, 5s);
  const bool gone_ok = co_await gone;
  CHECK(gone_ok);
  CHECK(signal_error(killed, SIGTERM) == std::errc::no_such_process);
  CHECK_THROWS_AS(killed.transport(), InvalidStateError);

  auto starting2 = strata::create_subprocess_exec("sleep", {"30"});
  Process terminated = co_await starting2;
  terminated.terminate();
  auto waiting2 = terminated.wait();
  int rc2 = co_await waiting2;
  CHECK(rc2 == -SIGTERM);
}

/// A task in wait() is cancelled: it ends cancelled, another waiter still waits, and the
/// child runs on until killed, then is reaped (-9).
Coro<void> cancel_wait() {
  auto starting = strata::create_subprocess_exec("sleep", {"30"});
  Process proc = co_await starting;
  Task<int> cancelled = strata::create_task(proc.wait(), "cancelled-wait");
  Task<int> other = strata::create_task(proc.wait(), "other-wait");
  auto step = iterations(2);  // both tasks now wait for the exit
  co_await step;
  REQUIRE_FALSE(cancelled.done());
  CHECK(cancelled.cancel("stop waiting"));
  auto ended = iterate_until([&] { return cancelled.done(); }, 5s);
  const bool ended_ok = co_await ended;
  REQUIRE(ended_ok);
  CHECK(cancelled.cancelled());
  auto more = iterations(2);
  co_await more;
  CHECK_FALSE(other.done());
  CHECK_FALSE(proc.returncode().has_value());
  CHECK(signal_error(proc, 0) == std::error_code());  // alive: signal 0 reaches it

  proc.kill();
  auto waiting = proc.wait();
  int rc = co_await waiting;
  CHECK(rc == -SIGKILL);
  int other_rc = co_await other;
  CHECK(other_rc == -SIGKILL);
}

/// One cat through communicate(): returns what it printed, checks it exited with 0.
Coro<std::string> cat_round_trip(std::string input) {
  auto starting = strata::create_subprocess_exec("cat", {}, pipes(true, true, false));
  Process proc = co_await starting;
  auto talking = proc.communicate(std::move(input));
  ProcessOutput output = co_await talking;
  CHECK(output.err.empty());
  CHECK(proc.returncode() == 0);
  co_return std::move(output.out);
}

/// 50 cats at once, each given its own input.
Coro<void> fifty_children() {
  constexpr int n = 50;
  std::vector<std::string> inputs;
  std::vector<Coro<std::string>> runs;
  for (int i = 0; i < n; ++i) {
    inputs.push_back(pattern(1000 * static_cast<std::size_t>(i) + 1, static_cast<unsigned>(i)));
    runs.push_back(cat_round_trip(inputs.back()));
  }
  auto all = strata::gather(std::move(runs));
  std::vector<std::string> outputs = co_await all;
  REQUIRE(outputs.size() == inputs.size());
  int right = 0;
  for (int i = 0; i < n; ++i) {
    if (outputs[i] == inputs[i]) ++right;
  }
  CHECK(right == n);
}

/// 16 MiB through cat with communicate().
Coro<void> communicate_16_mib_through_cat() {
  const std::string input = pattern(16 * MiB, 11);
  auto round_trip = cat_round_trip(input);
  std::string output = co_await round_trip;
  CHECK(output.size() == input.size());
  CHECK(first_mismatch(output, input) == npos);
}

/// A child writes 16 MiB to stdout and 16 MiB to stderr at the same time: communicate()
/// reads both at once, so neither pipe fills up while the other is read.
Coro<void> communicate_16_mib_on_stdout_and_stderr() {
  // The shell keeps both pipes open until both heads end: reading one pipe to its end before
  // the other would deadlock.
  const std::string cmd = "head -c 16777216 /dev/zero & head -c 16777216 /dev/zero >&2; wait";
  auto starting = strata::create_subprocess_shell(cmd, pipes(false, true, true));
  Process proc = co_await starting;
  auto talking = proc.communicate();
  ProcessOutput output = co_await talking;
  CHECK(output.out.size() == 16 * MiB);
  CHECK(output.err.size() == 16 * MiB);
  CHECK(output.out.find_first_not_of('\0') == npos);
  CHECK(output.err.find_first_not_of('\0') == npos);
  CHECK(proc.returncode() == 0);
}

}  // namespace

// ---- Test cases ----------------------------------------------------------------------------

STRATA_LOOP_TEST_CASE("Process: lines echo through cat; closing stdin ends it with 0",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(echo_lines_through_cat());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: communicate sends 16 MiB through cat and gets it back whole",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(communicate_16_mib_through_cat(), 60s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: communicate reads 16 MiB of stdout and of stderr written at once",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(communicate_16_mib_on_stdout_and_stderr(), 60s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: wait returns the child's exit code", "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(exit_codes());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: kill and terminate end the child with -9 and -15",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(kill_and_terminate());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: cancelling a task in wait cancels the wait only",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(cancel_wait());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: 50 children at once each get their own output",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  loop.run(fifty_children(), 60s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: stderr = Stdio::to_stdout() merges stderr into stdout",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    SubprocessOptions options = pipes(false, true, false);
    options.stderr = Stdio::to_stdout();
    auto starting = strata::create_subprocess_exec(
        "/bin/sh", {"-c", "echo out; echo err >&2; echo out2"}, options);
    Process proc = co_await starting;
    CHECK_FALSE(proc.stdin.has_value());
    CHECK(proc.stdout.has_value());
    CHECK_FALSE(proc.stderr.has_value());
    auto talking = proc.communicate();
    ProcessOutput output = co_await talking;
    CHECK(output.out == "out\nerr\nout2\n");
    CHECK(output.err.empty());
    CHECK(proc.returncode() == 0);
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: Stdio::devnull() gives the child /dev/null and no stream",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    // stdin from /dev/null: cat reads EOF at once.
    SubprocessOptions null_in = pipes(false, true, false);
    null_in.stdin = Stdio::devnull();
    auto starting = strata::create_subprocess_exec("cat", {}, null_in);
    Process cat = co_await starting;
    CHECK_FALSE(cat.stdin.has_value());
    auto talking = cat.communicate();
    ProcessOutput output = co_await talking;
    CHECK(output.out.empty());
    CHECK(cat.returncode() == 0);

    // stdout to /dev/null: only stderr comes back.
    SubprocessOptions null_out = pipes(false, false, true);
    null_out.stdout = Stdio::devnull();
    auto starting2 = strata::create_subprocess_shell("echo out; echo err >&2", null_out);
    Process sh = co_await starting2;
    CHECK_FALSE(sh.stdout.has_value());
    CHECK(sh.stderr.has_value());
    auto talking2 = sh.communicate();
    ProcessOutput output2 = co_await talking2;
    CHECK(output2.out.empty());
    CHECK(output2.err == "err\n");
    CHECK(sh.returncode() == 0);
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: a program that does not exist throws ENOENT and leaves no child",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  // Children run only inside test cases, one test case at a time, and each is reaped before
  // its test ends: there is none now.
  REQUIRE(children_of_this_process().empty());
  auto body = []() -> Coro<void> {
    const std::string program = "strata-no-such-program-3f9d";
    bool threw = false;
    try {
      auto starting = strata::create_subprocess_exec(program, {"arg"}, pipes(true, true, true));
      Process proc = co_await starting;
      FAIL_CHECK("started pid " << proc.pid());
    } catch (const std::system_error& e) {
      threw = true;
      CHECK(e.code() == std::errc::no_such_file_or_directory);
      CHECK(std::string(e.what()).find(program) != npos);
    }
    CHECK(threw);
    // A path with a '/' is not searched in PATH; this one does not exist either.
    threw = false;
    try {
      auto starting = strata::create_subprocess_exec("/nonexistent/" + program, {},
                                                     SubprocessOptions{});
      Process proc = co_await starting;
      FAIL_CHECK("started pid " << proc.pid());
    } catch (const std::system_error& e) {
      threw = true;
      CHECK(e.code() == std::errc::no_such_file_or_directory);
    }
    CHECK(threw);
  };
  const int fds_before = count_open_fds();
  loop.run(body());
  CHECK(loop.errors().empty());
  CHECK(children_of_this_process().empty());
  CHECK_FALSE(has_zombie_child());
  CHECK(count_open_fds() == fds_before);
}

STRATA_LOOP_TEST_CASE("Process: a child that closes its stdout gives EOF while it still runs",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    // The child closes stdout, then waits for a line on stdin: it cannot have exited when
    // the EOF arrives.
    auto starting = strata::create_subprocess_shell("exec 1>&-; read line; exit 0",
                                                    pipes(true, true, false));
    Process proc = co_await starting;
    auto reading = proc.stdout->read();
    std::string got = co_await reading;
    CHECK(got.empty());
    CHECK(proc.stdout->at_eof());
    CHECK_FALSE(proc.returncode().has_value());
    CHECK(proc.transport().get_pipe_transport(1) == nullptr);
    auto sent = proc.stdin->send("go\n");
    co_await sent;
    auto waiting = proc.wait();
    int rc = co_await waiting;
    CHECK(rc == 0);
    // The child's end of stdin closed with it: the write pipe ends, then the transport.
    auto gone = iterate_until([&] { return transport_gone(proc); }, 5s);
    const bool gone_ok = co_await gone;
    CHECK(gone_ok);
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: communicate ignores a child that exits without reading its input",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    // Reads nothing.
    auto starting = strata::create_subprocess_exec("true", {}, pipes(true, true, false));
    Process none = co_await starting;
    auto talking = none.communicate(pattern(16 * MiB, 5));
    ProcessOutput output = co_await talking;
    CHECK(output.out.empty());
    CHECK(none.returncode() == 0);

    // Reads 10 bytes of 4 MiB, prints them and exits.
    const std::string input = pattern(4 * MiB, 6);
    auto starting2 = strata::create_subprocess_exec("head", {"-c", "10"}, pipes(true, true, false));
    Process head = co_await starting2;
    auto talking2 = head.communicate(input);
    ProcessOutput output2 = co_await talking2;
    CHECK(output2.out == input.substr(0, 10));
    CHECK(head.returncode() == 0);
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: misuse is refused: input without a stdin pipe, a zero limit",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    SubprocessOptions options = pipes(false, true, false);
    options.stdin = Stdio::devnull();
    auto starting = strata::create_subprocess_exec("cat", {}, options);
    Process proc = co_await starting;
    CHECK_THROWS_AS(proc.communicate("input"), InvalidStateError);  // at the call
    auto talking = proc.communicate();  // with no input, it is fine
    ProcessOutput output = co_await talking;
    CHECK(output.out.empty());
    CHECK(proc.returncode() == 0);

    bool threw = false;
    try {
      auto zero = strata::create_subprocess_exec("cat", {}, pipes(true, true, false), 0);
      Process never = co_await zero;
      FAIL_CHECK("started pid " << never.pid());
    } catch (const std::invalid_argument& e) {
      threw = true;
      CHECK(std::string(e.what()).find("limit") != npos);
    }
    CHECK(threw);
  };
  loop.run(body());
  CHECK(loop.errors().empty());
  CHECK(children_of_this_process().empty());  // the refused call started nothing
}

STRATA_LOOP_TEST_CASE("Process: cancelling communicate stops its tasks; the child runs on",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    // sleep keeps its stdout and stderr open: communicate() waits for their end.
    auto starting = strata::create_subprocess_exec("sleep", {"30"}, pipes(true, true, true));
    Process proc = co_await starting;
    Task<ProcessOutput> talking = strata::create_task(proc.communicate(), "communicate");
    auto step = iterations(3);
    co_await step;
    REQUIRE_FALSE(talking.done());
    CHECK(proc.stdin->is_closing());  // communicate() closed stdin already
    talking.cancel();
    auto ended = iterate_until([&] { return talking.done(); }, 5s);
    const bool ended_ok = co_await ended;
    REQUIRE(ended_ok);
    CHECK(talking.cancelled());
    CHECK(strata::all_tasks().size() == 1);  // this one: communicate's own tasks are done
    CHECK_FALSE(proc.returncode().has_value());

    proc.kill();
    auto waiting = proc.wait();
    int rc = co_await waiting;
    CHECK(rc == -SIGKILL);
    auto gone = iterate_until([&] { return transport_gone(proc); }, 5s);
    const bool gone_ok = co_await gone;
    CHECK(gone_ok);  // its pipes ended with it
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: dropping every handle leaves the child running, and reaped",
                      "[streams][process]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    int pid = -1;
    {
      auto starting = strata::create_subprocess_exec("sleep", {"30"});
      Process proc = co_await starting;
      pid = proc.pid();
    }
    auto step = iterations(3);
    co_await step;
    const std::vector<int> children = children_of_this_process();
    CHECK(std::find(children.begin(), children.end(), pid) != children.end());
    CHECK(::kill(pid, 0) == 0);
    // Its transport still watches it: ended from outside, it is reaped all the same.
    REQUIRE(::kill(pid, SIGKILL) == 0);
    auto reaped = iterate_until([] { return children_of_this_process().empty(); }, 5s);
    const bool reaped_ok = co_await reaped;
    CHECK(reaped_ok);
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: a loop closed under a running child kills it; the handle says so",
                      "[streams][process]") {
  std::optional<Process> kept;
  {
    TestLoop loop(TestType::kind);
    auto body = [&]() -> Coro<void> {
      auto starting = strata::create_subprocess_exec("sleep", {"30"}, pipes(true, true, false));
      Process proc = co_await starting;
      kept = proc;
    };
    loop.run(body());
    CHECK(loop.errors().empty());
    REQUIRE(kept.has_value());
    CHECK_FALSE(kept->returncode().has_value());
  }  // the loop closes here, with the child still running
  CHECK(kept->returncode() == -SIGKILL);
  CHECK_THROWS_AS(kept->transport(), InvalidStateError);
  CHECK(signal_error(*kept, SIGTERM) == std::errc::no_such_process);
  CHECK(kept->stdout->has_exception());  // strata::errc::loop_closed
  CHECK(kept->stdin->is_closing());
  CHECK(children_of_this_process().empty());
}

STRATA_LOOP_TEST_CASE("Process: env and cwd options reach the child", "[streams][process]") {
  TestLoop loop(TestType::kind);
  TempDir dir;
  const std::string where = std::filesystem::canonical(dir.path("")).string();
  auto body = [&]() -> Coro<void> {
    // env is the child's whole environment: env(1) prints exactly these two.
    SubprocessOptions with_env = pipes(false, true, false);
    with_env.env = std::map<std::string, std::string>{{"STRATA_A", "1"},
                                                      {"STRATA_B", "two words"}};
    auto starting = strata::create_subprocess_exec("env", {}, with_env);
    Process env = co_await starting;
    auto talking = env.communicate();
    ProcessOutput output = co_await talking;
    std::vector<std::string> lines;
    for (std::size_t at = 0; at < output.out.size();) {
      const std::size_t end = output.out.find('\n', at);
      if (end == npos) break;
      lines.push_back(output.out.substr(at, end - at));
      at = end + 1;
    }
    std::sort(lines.begin(), lines.end());
    CHECK(lines == std::vector<std::string>{"STRATA_A=1", "STRATA_B=two words"});
    CHECK(env.returncode() == 0);

    // pwd(1) prints the directory it runs in (our PWD does not name it, so it asks getcwd).
    SubprocessOptions in_dir = pipes(false, true, false);
    in_dir.cwd = where;
    auto starting2 = strata::create_subprocess_exec("pwd", {}, in_dir);
    Process pwd = co_await starting2;
    auto talking2 = pwd.communicate();
    ProcessOutput output2 = co_await talking2;
    CHECK(output2.out == where + "\n");
    CHECK(pwd.returncode() == 0);
  };
  loop.run(body());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: a slow reader stops the child's stdout pipe at its limit",
                      "[streams][process][flow]") {
  TestLoop loop(TestType::kind);
  auto body = []() -> Coro<void> {
    constexpr std::size_t limit = 16 * KiB;
    constexpr std::size_t total = 4 * MiB;
    constexpr std::size_t bound = 2 * limit + pipe_read_chunk;
    auto starting = strata::create_subprocess_exec(
        "head", {"-c", std::to_string(total), "/dev/zero"}, pipes(false, true, false), limit);
    Process proc = co_await starting;
    CHECK(proc.stdout->limit() == limit);
    Transport* pipe = proc.transport().get_pipe_transport(1);
    REQUIRE(pipe != nullptr);
    auto paused = iterate_until([&] { return !pipe->is_reading(); }, 10s);
    const bool paused_ok = co_await paused;
    REQUIRE(paused_ok);
    auto idle = iterations(20);  // nothing reads: the buffer must not grow
    co_await idle;
    CHECK(proc.stdout->buffered() <= bound);
    CHECK_FALSE(pipe->is_reading());
    CHECK_FALSE(proc.returncode().has_value());  // blocked on its full pipe

    // Read slowly, one limit's worth per loop iteration, and check the bound all along.
    std::size_t got = 0;
    std::size_t most_buffered = 0;
    bool all_zero = true;
    for (;;) {
      auto reading = proc.stdout->read(static_cast<std::ptrdiff_t>(limit));
      std::string chunk = co_await reading;
      if (chunk.empty()) break;
      got += chunk.size();
      all_zero = all_zero && chunk.find_first_not_of('\0') == npos;
      most_buffered = std::max(most_buffered, proc.stdout->buffered());
      auto step = next_iteration();
      co_await step;
    }
    CHECK(got == total);
    CHECK(all_zero);
    CHECK(most_buffered <= bound);
    auto waiting = proc.wait();
    int rc = co_await waiting;
    CHECK(rc == 0);
  };
  loop.run(body(), 30s);
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("Process: with the SIGCHLD watcher forced, the same behaviours hold",
                      "[streams][process][sigchld]") {
  ForceSigchldWatcher sigchld;
  REQUIRE(strata::detail::child_watch_method() == strata::detail::ChildWatchMethod::sigchld);
  TestLoop loop(TestType::kind);
  SECTION("lines through cat") { loop.run(echo_lines_through_cat()); }
  SECTION("exit codes") { loop.run(exit_codes()); }
  SECTION("kill and terminate") { loop.run(kill_and_terminate()); }
  SECTION("cancelling wait") { loop.run(cancel_wait()); }
  SECTION("50 children") { loop.run(fifty_children(), 60s); }
  SECTION("16 MiB on stdout and stderr") {
    loop.run(communicate_16_mib_on_stdout_and_stderr(), 60s);
  }
  CHECK(loop.errors().empty());
}
