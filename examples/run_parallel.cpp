// run_parallel: runs shell commands side by side, at most --jobs at a time, and streams what
// they print line by line as it comes, each line tagged with its command's number; at the end
// it reports how each command ended. Written on the streams layer's subprocess API
// (strata::create_subprocess_shell()), with a Semaphore for the bound and a TaskGroup for the
// commands.
//
//   $ run_parallel 'echo one; echo oops >&2' 'sleep 1; echo two' 'exit 3'
//   [1] one
//   [1!] oops
//   [2] two
//   [1] exit 0
//   [2] exit 0
//   [3] exit 3
//
// Each CMD argument is one command line, run with `/bin/sh -c CMD` (as asyncio's
// create_subprocess_shell, GNU parallel and xargs -I do): pipes, redirections and `;` work, and
// a command with spaces is quoted as one argument. Commands are numbered from 1 in the order
// given and start in that order as slots free up.
//
// Output, all on run_parallel's stdout (one stream, so the order in which lines arrived is
// kept): `[N] LINE` for a line of command N's stdout, `[N!] LINE` for a line of its stderr. A
// line longer than the reader's limit (64 KiB) is not read whole: it is printed in pieces of
// what was buffered, the first tagged as usual and the rest `[N+]` (stderr `[N!+]`), so that
// memory stays bounded whatever a command prints. A last line without "\n" gets one. Then one
// line per command, in order: `[N] exit CODE`, `[N] killed by signal SIG`, `[N] not started`
// (run_parallel was interrupted first) or `[N] could not start: REASON`.
//
// Exits 0 when every command exited 0, 1 otherwise, 2 on a bad option. SIGINT (Ctrl-C) or
// SIGTERM kills the running commands with SIGKILL, starts no more, prints the report and exits
// 128 + the signal (130, 143); a second signal ends run_parallel at once.
//
// The commands get /dev/null as stdin (they run side by side: none may take run_parallel's
// input), and each runs in a session of its own (SubprocessOptions::start_new_session): its
// process group holds the shell and everything it started, which run_parallel kills together,
// and a Ctrl-C in the terminal reaches run_parallel only.
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/gather.hpp>
#include <strata/core/run.hpp>
#include <strata/core/semaphore.hpp>
#include <strata/core/task_group.hpp>
#include <strata/streams/process.hpp>
#include <strata/streams/stream_reader.hpp>
#include <strata/transports/subprocess.hpp>

#include "example_options.hpp"

#include <signal.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace ex = strata::examples;

/// The default of --jobs: the number of CPUs (1 when unknown).
std::size_t cpu_count() { return std::max(1u, std::thread::hardware_concurrency()); }

void print_usage() {
  std::printf(
      "usage: run_parallel [options] CMD... [-- CMD...]\n"
      "Runs each CMD with /bin/sh -c, at most --jobs at a time, and prints what they print as\n"
      "it comes: `[N] LINE` for a line of command N's stdout, `[N!] LINE` for its stderr (N\n"
      "counts from 1; a line over 64 KiB comes in pieces, the rest tagged `[N+]`/`[N!+]`).\n"
      "Then one line per command: `[N] exit CODE`, `[N] killed by signal SIG`, `[N] not\n"
      "started` or `[N] could not start: REASON`.\n"
      "  --jobs N        run at most N commands at once (default: the number of CPUs, %zu)\n"
      "  --loop selector|proactor|epoll|poll|select   the loop (default selector)\n"
      "  --help          print this and exit\n"
      "  --              every argument after it is a CMD, even one like --jobs\n"
      "The commands' stdin is /dev/null. Exits 0 when every command exited 0, 1 otherwise, 2 on\n"
      "a bad option; SIGINT or SIGTERM kills the running commands (and what they started),\n"
      "reports, and exits 130 or 143.\n",
      cpu_count());
}

struct Options {
  std::size_t jobs = cpu_count();
  std::optional<strata::LoopKind> loop;
  std::vector<std::string> commands;
};

/// Parses argv into @p options; returns an exit status when the program should stop.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  try {
    // Everything after "--" is a command; ArgumentCursor walks what comes before.
    int end = 1;
    while (end < argc && std::string_view(argv[end]) != "--") ++end;
    ex::ArgumentCursor args(end, argv, {"--help", "-h"});
    args.allow_positionals();
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      if (name.empty()) {
        options.commands.emplace_back(arg->value);
      } else if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      } else if (name == "--jobs") {
        options.jobs = ex::parse_number(name, arg->value, 1, 100000);
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(arg->value);
      } else {
        throw ex::unknown_option(name);
      }
    }
    for (int i = end + 1; i < argc; ++i) options.commands.emplace_back(argv[i]);
    if (options.commands.empty()) throw std::invalid_argument("no command given (see --help)");
    for (std::size_t i = 0; i < options.commands.size(); ++i) {
      if (options.commands[i].empty()) {
        throw std::invalid_argument("command " + std::to_string(i + 1) + " is empty");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run_parallel: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

/// One command, and how it ended.
struct Job {
  std::string command;
  std::optional<strata::Process> process;  // from its start until its end
  bool started = false;
  std::optional<int> returncode;  // its exit code, or -N: killed by signal N
  std::string error;              // why it could not start
};

/// Runs the commands; see the top of the file.
class Runner {
 public:
  Runner(std::vector<std::string> commands, std::size_t jobs)
      : slots_(static_cast<std::int64_t>(jobs)) {
    jobs_.resize(commands.size());  // never resized again: run_job() refers to its Job
    for (std::size_t i = 0; i < commands.size(); ++i) jobs_[i].command = std::move(commands[i]);
  }

  /// Runs every command, prints the report and returns the exit status.
  strata::Coro<int> run() {
    strata::EventLoop& loop = strata::get_running_loop();
    loop_ = &loop;
    loop.add_signal_handler(SIGINT, [this] { interrupt(SIGINT); });
    loop.add_signal_handler(SIGTERM, [this] { interrupt(SIGTERM); });
    struct RemoveHandlers {  // they refer to this Runner
      strata::EventLoop& loop;
      ~RemoveHandlers() {
        loop.remove_signal_handler(SIGINT);
        loop.remove_signal_handler(SIGTERM);
      }
    } remove_handlers{loop};

    // One task per command; the semaphore lets --jobs of them run at once (FIFO, so they
    // start in order). run_job() records its failures instead of throwing them: one command
    // going wrong must not cancel the others, as a failing task of a TaskGroup would.
    auto body = [this](strata::TaskGroup& group) -> strata::Coro<void> {
      for (std::size_t i = 0; i < jobs_.size(); ++i) group.create_task(run_job(i));
      co_return;
    };
    co_await strata::task_group(std::move(body));

    std::fflush(stdout);
    bool all_ok = true;
    for (std::size_t i = 0; i < jobs_.size(); ++i) {
      const Job& job = jobs_[i];
      std::string line = "[" + std::to_string(i + 1) + "] ";
      if (!job.error.empty()) {
        line += "could not start: " + job.error;
      } else if (!job.started) {
        line += "not started";
      } else if (!job.returncode) {
        line += "exit status unknown";
      } else if (*job.returncode >= 0) {
        line += "exit " + std::to_string(*job.returncode);
      } else {
        line += "killed by signal " + std::to_string(-*job.returncode);
      }
      std::printf("%s\n", line.c_str());
      all_ok = all_ok && job.returncode == 0;
    }
    std::fflush(stdout);
    if (signal_ != 0) co_return 128 + signal_;
    co_return all_ok ? 0 : 1;
  }

 private:
  /// Runs command @p index once a slot is free: prints its output as it comes, then waits for
  /// its exit.
  strata::Coro<void> run_job(std::size_t index) {
    strata::SemaphoreAcquire acquire = slots_.acquire();
    strata::SemaphoreGuard slot = co_await acquire;  // released when this returns
    Job& job = jobs_[index];
    if (signal_ != 0) co_return;  // interrupted before its turn: not started

    strata::SubprocessOptions options;
    options.stdin = strata::Stdio::devnull();
    options.stdout = strata::Stdio::pipe();
    options.stderr = strata::Stdio::pipe();
    options.start_new_session = true;  // its own process group: see kill_group()
    try {
      strata::Coro<strata::Process> start = strata::create_subprocess_shell(
          job.command, std::move(options), strata::StreamReader::default_limit);
      job.process.emplace(co_await start);
    } catch (const std::exception& e) {
      job.error = e.what();
    }
    if (!job.process) {
      if (job.error.empty()) job.error = "unknown error";
      co_return;
    }
    job.started = true;
    if (signal_ != 0) kill_group(job);  // the signal came while it was starting

    // Both pipes at once: a command blocks when the pipe nobody reads fills up.
    strata::Process& process = *job.process;
    strata::Coro<void> out = print_lines(index + 1, *process.stdout, false);
    strata::Coro<void> err = print_lines(index + 1, *process.stderr, true);
    auto both = strata::gather(std::move(out), std::move(err));
    co_await both;
    // The pipes are at their end; now the exit status (wait() does not wait for the pipes).
    strata::Coro<int> wait = process.wait();
    job.returncode = co_await wait;
    job.process.reset();
  }

  /// Prints what @p reader (command @p number's stdout, or stderr) delivers, a line at a time,
  /// until its end.
  static strata::Coro<void> print_lines(std::size_t number, strata::StreamReader reader,
                                        bool is_stderr) {
    const std::string tag = "[" + std::to_string(number) + (is_stderr ? "!" : "");
    bool continued = false;  // the last piece printed was part of a line too long to read whole
    for (;;) {
      std::string piece;
      std::size_t overlong = 0;  // the bytes of an overlong line buffered so far
      bool at_end = false;
      try {
        auto line = reader.readuntil();  // through "\n"
        piece = co_await line;
      } catch (const strata::IncompleteReadError& e) {
        piece = e.partial();  // the end of the pipe: the last bytes, without "\n" (or none)
        at_end = true;
      } catch (const strata::LimitOverrunError& e) {
        // No "\n" within the limit. The bytes stay buffered: take what may be taken and print
        // it as a piece (a co_await cannot go in a handler, hence the flag).
        overlong = std::max<std::size_t>(e.consumed(), 1);
      }
      if (overlong != 0) {
        auto part = reader.read(static_cast<std::ptrdiff_t>(overlong));
        piece = co_await part;
      }
      if (at_end && piece.empty()) break;
      if (continued && piece == "\n") {  // the overlong line ended with the last piece
        continued = false;
        continue;
      }
      if (!piece.empty() && piece.back() == '\n') piece.pop_back();
      std::string out = tag;
      if (continued) out += '+';
      out += "] ";
      out += piece;
      out += '\n';
      std::fwrite(out.data(), 1, out.size(), stdout);
      // Flush once what this pipe had is printed: each line shows without delay, and a burst
      // of lines costs one write.
      if (reader.buffered() == 0) std::fflush(stdout);
      continued = overlong != 0;
      if (at_end) break;
    }
  }

  /// SIGINT or SIGTERM: start nothing more, and kill what runs.
  void interrupt(int sig) {
    if (signal_ == 0) signal_ = sig;
    // Back to the default disposition: a second signal ends the program at once.
    loop_->remove_signal_handler(SIGINT);
    loop_->remove_signal_handler(SIGTERM);
    for (Job& job : jobs_) {
      if (job.process) kill_group(job);
    }
  }

  /// Kills @p job's process group: the shell and whatever it started (a pipeline, a
  /// background job), which would otherwise keep its pipes open. Process::kill() would reach
  /// the shell alone. The group id is the shell's pid (start_new_session); the shell may be
  /// reaped already, but while a process of its group lives, the id is not reused.
  static void kill_group(Job& job) { ::killpg(job.process->pid(), SIGKILL); }

  strata::Semaphore slots_;
  std::vector<Job> jobs_;
  strata::EventLoop* loop_ = nullptr;
  int signal_ = 0;  // the signal that interrupted the run; 0 if none
};

strata::Coro<int> main_task(Options options) {
  Runner runner(std::move(options.commands), options.jobs);
  strata::Coro<int> run = runner.run();
  co_return co_await run;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  run_options.handle_sigint = false;  // Runner handles SIGINT and SIGTERM itself
  try {
    return strata::run(main_task(std::move(options)), run_options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run_parallel: %s\n", e.what());
    return 1;
  }
}
