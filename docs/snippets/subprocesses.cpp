// The code of docs/guides/subprocesses.md: child processes on the streams layer
// (create_subprocess_exec, create_subprocess_shell, Process) and on the transports layer
// (subprocess_exec with a SubprocessProtocol). The children are standard tools (sort, tr,
// sleep, /bin/sh); the program exits 0 when every result is the expected one.
#include <strata/core/errors.hpp>
#include <strata/core/future.hpp>
#include <strata/core/run.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>
#include <strata/streams/process.hpp>
#include <strata/transports/subprocess.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "subprocesses: FAILED: %s\n", what);
    ++failures;
  }
}

strata::Coro<void> communicate_demo() {
  // [snippet:communicate]
  strata::SubprocessOptions options;  // every stream is inherited unless asked otherwise
  options.stdin = strata::Stdio::pipe();
  options.stdout = strata::Stdio::pipe();
  auto starting = strata::create_subprocess_exec("sort", {"-r"}, options);
  strata::Process sort = co_await starting;
  auto talking = sort.communicate("pear\napple\nfig\n");
  strata::ProcessOutput output = co_await talking;  // output.out == "pear\nfig\napple\n"
  auto waiting = sort.wait();
  int status = co_await waiting;  // 0
  // [/snippet:communicate]
  expect(output.out == "pear\nfig\napple\n" && output.err.empty(), "communicate: output");
  expect(status == 0 && sort.returncode() == 0, "communicate: status");
}

strata::Coro<void> shell_demo() {
  // [snippet:shell]
  strata::SubprocessOptions options;
  options.stdout = strata::Stdio::pipe();
  options.stderr = strata::Stdio::to_stdout();  // 2>&1: one stream, in the order written
  auto starting = strata::create_subprocess_shell("echo out; echo err >&2; exit 3", options);
  strata::Process shell = co_await starting;
  auto talking = shell.communicate();  // no input: stdin is inherited here
  strata::ProcessOutput output = co_await talking;  // output.out == "out\nerr\n"
  auto waiting = shell.wait();
  int status = co_await waiting;  // 3
  // [/snippet:shell]
  expect(output.out == "out\nerr\n", "shell: output");
  expect(status == 3, "shell: exit status");
}

strata::Coro<void> environment_demo() {
  // [snippet:environment]
  strata::SubprocessOptions options;
  options.stdout = strata::Stdio::pipe();
  options.env = std::map<std::string, std::string>{{"GREETING", "hi"}};  // the whole environment
  options.cwd = "/";
  auto starting = strata::create_subprocess_shell("echo \"$GREETING from $(pwd)\"", options);
  strata::Process shell = co_await starting;
  auto talking = shell.communicate();
  strata::ProcessOutput output = co_await talking;  // output.out == "hi from /\n"
  // [/snippet:environment]
  auto waiting = shell.wait();
  co_await waiting;
  expect(output.out == "hi from /\n", "environment: output");
}

// [snippet:feed]
/// Writes @p lines to a child's stdin, then closes it: the child reads end of file.
strata::Coro<void> feed(std::vector<std::string> lines, strata::StreamWriter to) {
  for (const std::string& line : lines) {
    auto sending = to.send(line + "\n");  // waits only while the pipe is full
    co_await sending;
  }
  to.close();
}
// [/snippet:feed]

strata::Coro<void> streaming_demo() {
  // [snippet:streaming]
  strata::SubprocessOptions options;
  options.stdin = strata::Stdio::pipe();
  options.stdout = strata::Stdio::pipe();
  auto starting = strata::create_subprocess_exec("tr", {"a-z", "A-Z"}, options);
  strata::Process tr = co_await starting;

  std::vector<std::string> words(10000, "strata");
  strata::Task<void> feeding = strata::create_task(feed(words, *tr.stdin));
  std::size_t lines = 0;
  auto output = tr.stdout->lines();  // read while the task writes: neither side blocks
  for (;;) {
    auto next = output.next();
    std::optional<std::string> line = co_await next;
    if (!line) break;  // tr closed its stdout
    if (*line == "STRATA\n") ++lines;
  }
  co_await feeding;
  auto waiting = tr.wait();
  int status = co_await waiting;  // 0; lines == 10000
  // [/snippet:streaming]
  expect(lines == words.size(), "streaming: every line");
  expect(status == 0, "streaming: status");
}

strata::Coro<void> timeout_demo() {
  // [snippet:timeout]
  auto starting = strata::create_subprocess_exec("sleep", {"10"});
  strata::Process sleeper = co_await starting;
  bool timed_out = false;
  try {
    auto waiting = strata::wait_for(sleeper.wait(), 100ms);
    co_await waiting;
  } catch (const strata::TimeoutError&) {
    timed_out = true;  // only the wait was cancelled: the child runs on
  }
  if (timed_out) sleeper.kill();  // SIGKILL (terminate() sends SIGTERM)
  auto reaping = sleeper.wait();
  int status = co_await reaping;  // -9: killed by signal 9
  // [/snippet:timeout]
  expect(timed_out, "timeout: TimeoutError");
  expect(status == -9, "timeout: killed");
}

strata::Coro<void> not_found_demo() {
  // [snippet:not-found]
  std::error_code error;
  try {
    auto starting = strata::create_subprocess_exec("no-such-program", {});
    co_await starting;
  } catch (const std::system_error& e) {
    error = e.code();  // std::errc::no_such_file_or_directory; no child is left behind
  }
  auto starting = strata::create_subprocess_shell("no-such-program 2>/dev/null");
  strata::Process shell = co_await starting;  // the shell starts, and cannot find it
  auto waiting = shell.wait();
  int status = co_await waiting;  // 127
  // [/snippet:not-found]
  expect(error == std::errc::no_such_file_or_directory, "not found: ENOENT");
  expect(status == 127, "not found: the shell's 127");
}

// [snippet:protocol]
/// Collects what a child writes to its stdout and stderr, and hands both over through
/// @p done once the child has exited and its pipes are closed.
class Collect : public strata::SubprocessProtocol {
 public:
  explicit Collect(strata::Future<strata::ProcessOutput> done) : done_(std::move(done)) {}

  void pipe_data_received(int fd, std::span<const std::byte> data) override {
    std::string& to = fd == 1 ? output_.out : output_.err;
    to.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  void process_exited() override {}  // the pipes may still hold data: wait for the end
  void connection_lost(std::error_code /*ec*/) override { done_.set_result(output_); }

 private:
  strata::Future<strata::ProcessOutput> done_;
  strata::ProcessOutput output_;
};
// [/snippet:protocol]

strata::Coro<void> protocol_demo() {
  // [snippet:protocol-use]
  strata::Future<strata::ProcessOutput> done(strata::get_running_loop());
  strata::SubprocessOptions options;
  options.stdout = strata::Stdio::pipe();
  options.stderr = strata::Stdio::pipe();
  auto starting = strata::subprocess_exec([done] { return std::make_unique<Collect>(done); },
                                          "sh", {"-c", "echo to stdout; echo to stderr >&2"},
                                          options);
  strata::SubprocessConnection<Collect> child = co_await starting;
  const int pid = child.transport->get_pid();
  strata::ProcessOutput output = co_await done;  // out "to stdout\n", err "to stderr\n"
  // [/snippet:protocol-use]
  expect(pid > 0, "protocol: pid");
  expect(output.out == "to stdout\n" && output.err == "to stderr\n", "protocol: output");
}

strata::Coro<int> main_task() {
  auto communicating = communicate_demo();
  co_await communicating;
  auto shell = shell_demo();
  co_await shell;
  auto environment = environment_demo();
  co_await environment;
  auto streaming = streaming_demo();
  co_await streaming;
  auto timing = timeout_demo();
  co_await timing;
  auto missing = not_found_demo();
  co_await missing;
  auto protocol = protocol_demo();
  co_await protocol;
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  try {
    return strata::run(main_task());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "subprocesses: %s\n", e.what());
    return 1;
  }
}
