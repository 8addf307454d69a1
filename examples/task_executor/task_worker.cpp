// task_worker: runs jobs for a task_coordinator (README.md). It registers with the number of
// jobs it runs at once (--slots), runs what it is sent, each job as a task of its own, returns
// each result, and sends a HEARTBEAT every interval the coordinator asked for. When the
// coordinator goes away (the connection ends, or it is silent for its heartbeat interval times
// its miss count), the running jobs are cancelled and the worker connects again, with an
// exponential back-off (--backoff doubling up to --max-backoff, with jitter).
//
//   task_worker --connect 127.0.0.1:7100 --slots 8
//
// Written on the streams layer: open_connection(), a StreamReader read frame by frame (its
// limit is --max-frame: a longer frame ends the session), and a StreamWriter fed by one writer
// task that batches the frames queued meanwhile and waits in send() while the coordinator does
// not read.
//
// Jobs (job_spec.hpp): `sleep MS` on the loop; `fib N` on the loop's default executor
// (run_in_executor(): CPU work never runs on the loop thread), stopped through a flag when it
// is cancelled; `sha256 TEXT` (OpenSSL's EVP_Digest); `run CMD` with /bin/sh -c through
// create_subprocess_shell(): stdin /dev/null, stdout read (the first 64 KiB kept), stderr
// /dev/null, in a process group of its own that is killed when the job is cancelled.
//
// SIGINT or SIGTERM: the worker sends QUIT (no new jobs), lets its running jobs finish for up
// to --grace (then cancels them), sends their results, closes and exits 0. A second signal
// ends it at once. A bad option prints one line to stderr and exits 2.
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/executor.hpp>
#include <strata/core/queue.hpp>
#include <strata/core/run.hpp>
#include <strata/core/sleep.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>
#include <strata/streams/process.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/subprocess.hpp>

#include "example_options.hpp"
#include "job_spec.hpp"
#include "wire.hpp"

#include <openssl/evp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;
namespace te = task_executor;

/// The default of --slots: the number of CPUs (1 when unknown).
std::size_t cpu_count() { return std::max(1u, std::thread::hardware_concurrency()); }

void print_usage() {
  std::printf(
      "usage: task_worker --connect HOST:PORT [options]\n"
      "  --connect HOST:PORT   the coordinator ([v6addr]:PORT for IPv6)\n"
      "  --slots N             run up to N jobs at once (default: the number of CPUs, %zu)\n"
      "  --name NAME           how the coordinator and the results name this worker (default\n"
      "                        HOSTNAME-PID; 1 to 64 of A-Z a-z 0-9 _ . : @ + -)\n"
      "  --loop selector|proactor|epoll|poll|select   the event loop (default selector)\n"
      "  --backoff D           the first wait before connecting again (default 100ms); it\n"
      "  --max-backoff D       doubles after each failure, up to this (default 5s)\n"
      "  --connect-timeout D   the most a connection and its greeting may take (default 5s)\n"
      "  --grace D             on SIGINT or SIGTERM, how long running jobs may still run\n"
      "                        (default 5s)\n"
      "  --max-frame BYTES     the longest frame read, \"\\n\" included (default 262144)\n"
      "  --help                print this and exit\n"
      "Durations are whole numbers with a unit: 250ms, 30s, 2m (a bare number is seconds).\n"
      "Jobs: sleep MS | fib N (0..93, on the executor) | sha256 TEXT | run CMD (/bin/sh -c;\n"
      "its exit status and stdout, the first 64 KiB, are returned).\n"
      "Runs until SIGINT or SIGTERM: then it takes no new job, lets the running ones finish\n"
      "within --grace, and exits 0.\n",
      cpu_count());
}

struct Options {
  std::optional<te::Endpoint> coordinator;
  std::size_t slots = cpu_count();
  std::string name;
  std::optional<strata::LoopKind> loop;
  strata::Duration backoff = 100ms;
  strata::Duration max_backoff = 5s;
  strata::Duration connect_timeout = 5s;
  strata::Duration grace = 5s;
  std::size_t max_frame = te::default_max_frame;
};

/// This host's name and our pid, as a token.
std::string default_name() {
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  std::string name = host.data();
  for (char& c : name) {
    if (!te::is_token(std::string_view(&c, 1))) c = '_';
  }
  if (name.empty()) name = "worker";
  const std::string pid = "-" + std::to_string(::getpid());
  name.resize(std::min(name.size(), te::max_token - pid.size()));
  return name + pid;
}

/// Parses argv into @p options; returns an exit status when the program should stop there.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h"});
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name == "--connect") {
        options.coordinator = te::parse_endpoint(name, value);
      } else if (name == "--slots") {
        options.slots = ex::parse_number(name, value, 1, 1024);
      } else if (name == "--name") {
        if (!te::is_token(value)) {
          throw std::invalid_argument("--name must be 1 to 64 of A-Z a-z 0-9 _ . : @ + -, got '" +
                                      std::string(value) + "'");
        }
        options.name = value;
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value);
      } else if (name == "--backoff") {
        options.backoff = te::parse_duration(name, value);
      } else if (name == "--max-backoff") {
        options.max_backoff = te::parse_duration(name, value);
      } else if (name == "--connect-timeout") {
        options.connect_timeout = te::parse_duration(name, value);
      } else if (name == "--grace") {
        options.grace = te::parse_duration(name, value, 0);
      } else if (name == "--max-frame") {
        options.max_frame = ex::parse_number(name, value, 1024, 64 * 1024 * 1024);
      } else {
        throw ex::unknown_option(name);
      }
    }
    if (!options.coordinator) throw std::invalid_argument("--connect HOST:PORT is required");
    if (options.max_backoff < options.backoff) {
      throw std::invalid_argument("--max-backoff must not be below --backoff");
    }
    if (options.name.empty()) options.name = default_name();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "task_worker: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

void note(const std::string& message) {
  std::fprintf(stderr, "task_worker: %s\n", message.c_str());
}

/// What @p error says.
std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

// ---- The jobs ---------------------------------------------------------------------------------

/// What a job gives back: its status (ok or failed) and its output.
struct Outcome {
  std::string status;
  std::string output;
};

/// Thrown on the executor's thread when a fib job is cancelled.
class Stopped : public std::runtime_error {
 public:
  Stopped() : std::runtime_error("stopped") {}
};

/// fib(@p n) by the naive recursion (CPU work on purpose); throws Stopped soon after @p stop
/// is set (checked once per subtree of n > 24: every few hundred microseconds).
std::uint64_t fib(std::uint64_t n, const std::atomic<bool>& stop) {
  if (n < 2) return n;
  if (n > 24 && stop.load(std::memory_order_relaxed)) throw Stopped();
  return fib(n - 1, stop) + fib(n - 2, stop);
}

std::string sha256_hex(std::string_view text) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest failed");
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 0xF];
  }
  return out;
}

/// `run CMD`: runs @p command with /bin/sh -c in a process group of its own, reads its stdout
/// to the end (keeping the first max_output bytes), and waits for its exit. Cancelled, it
/// kills the group.
strata::Coro<Outcome> run_command(std::string command) {
  strata::SubprocessOptions how;
  how.stdin = strata::Stdio::devnull();
  how.stdout = strata::Stdio::pipe();
  how.stderr = strata::Stdio::devnull();
  how.start_new_session = true;  // killpg() reaches what the shell started too
  strata::Coro<strata::Process> start =
      strata::create_subprocess_shell(std::move(command), std::move(how));
  strata::Process process = co_await start;
  std::string out;
  bool cut = false;
  int code = 0;
  try {
    for (;;) {
      auto read =
          process.stdout->read(static_cast<std::ptrdiff_t>(strata::StreamReader::default_limit));
      std::string chunk = co_await read;
      if (chunk.empty()) break;  // EOF
      const std::size_t room = te::max_output - std::min(out.size(), te::max_output);
      if (chunk.size() > room) cut = true;
      out.append(chunk, 0, std::min(room, chunk.size()));
    }
    strata::Coro<int> wait = process.wait();
    code = co_await wait;
  } catch (...) {
    // Cancelled (or the pipe failed): kill the command and what it started, then go on
    // unwinding. The transport reaps the child when it exits.
    ::killpg(process.pid(), SIGKILL);
    throw;
  }
  if (out.ends_with('\n')) out.pop_back();
  std::string output =
      code >= 0 ? "exit " + std::to_string(code) : "signal " + std::to_string(-code);
  if (!out.empty()) output += ": " + out;
  if (cut) output += " [output cut at " + std::to_string(te::max_output) + " bytes]";
  co_return Outcome{code == 0 ? "ok" : "failed", std::move(output)};
}

/// Runs @p job. @p stop is set when the job is cancelled (for the executor's thread, which a
/// task cancellation does not reach).
strata::Coro<Outcome> execute(te::JobSpec job, std::shared_ptr<std::atomic<bool>> stop) {
  switch (job.kind) {
    case te::JobKind::sleep: {
      co_await strata::sleep(std::chrono::milliseconds(job.number));
      co_return Outcome{"ok", "slept " + std::to_string(job.number) + "ms"};
    }
    case te::JobKind::fib: {
      strata::EventLoop& loop = strata::get_running_loop();
      const std::uint64_t n = job.number;
      strata::Future<std::uint64_t> value =
          loop.run_in_executor(nullptr, [n, stop] { return fib(n, *stop); });
      const std::uint64_t result = co_await value;
      co_return Outcome{"ok", std::to_string(result)};
    }
    case te::JobKind::sha256:
      co_return Outcome{"ok", sha256_hex(job.text)};
    case te::JobKind::run: {
      strata::Coro<Outcome> run = run_command(std::move(job.text));
      co_return co_await run;
    }
  }
  co_return Outcome{"failed", "unknown job kind"};
}

// ---- One connection to the coordinator -------------------------------------------------------

/// How a session ended.
struct SessionEnd {
  bool welcomed = false;  // the coordinator accepted us: the back-off starts over
  std::string why;
};

/// One connection to the coordinator, from HELLO to its end. Held by a shared_ptr: the done
/// callbacks of its jobs keep it alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(const Options& options, strata::StreamReader reader, strata::StreamWriter writer)
      : options_(options), reader_(std::move(reader)), writer_(std::move(writer)) {}

  /// Greets the coordinator, then runs what it sends until the connection ends; then cancels
  /// the jobs still running and waits for them.
  strata::Coro<SessionEnd> serve();

  /// SIGINT or SIGTERM: QUIT, then wait for the coordinator to close the connection, which it
  /// does once the running jobs have ended (those still running after --grace are cancelled,
  /// and the connection closed from this side).
  void quit();

 private:
  using Key = std::pair<std::uint64_t, std::uint32_t>;  // job id, attempt
  struct RunningJob {
    strata::Task<Outcome> task;
    std::shared_ptr<std::atomic<bool>> stop;
  };

  /// Handles one frame; returns false (with why_ set) when the session must end.
  bool handle(std::string_view line);
  bool start_job(std::string_view args);
  void cancel_job(const Key& key);
  void job_done(const Key& key, strata::Future<Outcome>& task);
  /// Queues @p frame for the writer task; an empty frame closes the connection once the
  /// frames before it are sent.
  void send(std::string frame);
  /// Writes the queued frames, several at once when they are there, waiting in send() while
  /// the coordinator does not read.
  strata::Coro<void> write_frames();
  strata::Coro<void> heartbeats(strata::Duration interval);
  bool protocol_error(const std::string& what) {
    send("ERROR " + te::escape(what) + "\n");
    why_ = "protocol error: " + what;
    return false;
  }

  const Options& options_;
  strata::StreamReader reader_;
  strata::StreamWriter writer_;
  strata::Queue<std::string> outbox_;
  std::map<Key, RunningJob> jobs_;
  strata::TimerHandle grace_timer_;
  std::string why_;
  bool welcomed_ = false;
  bool quitting_ = false;
  bool grace_over_ = false;  // quitting, and the grace period is over: close when idle
  bool ended_ = false;
};

strata::Coro<SessionEnd> Session::serve() {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Task<void> writer = loop.create_task(write_frames(), "writer");
  std::optional<strata::Task<void>> heartbeat;
  send("HELLO worker " + std::to_string(options_.slots) + " " + options_.name + "\n");
  strata::Duration silent_for = options_.connect_timeout;  // until WELCOME says otherwise
  for (;;) {
    std::string line;
    try {
      auto read = reader_.readuntil("\n");
      auto bounded = strata::wait_for(std::move(read), silent_for);
      line = co_await bounded;
    } catch (const strata::TimeoutError&) {
      why_ = welcomed_
                 ? "the coordinator was silent for " + std::to_string(te::to_ms(silent_for)) + "ms"
                 : "no WELCOME within " + std::to_string(te::to_ms(silent_for)) + "ms";
    } catch (const strata::IncompleteReadError& e) {
      why_ =
          e.partial().empty() ? "the connection was closed" : "the connection was closed mid-frame";
    } catch (const strata::LimitOverrunError&) {
      protocol_error("frame too long (over " + std::to_string(options_.max_frame) + " bytes)");
    } catch (const strata::CancelledError&) {
      throw;
    } catch (const std::exception& e) {
      why_ = e.what();
    }
    if (!why_.empty()) break;
    const std::string_view frame = te::chomp(line);
    if (!welcomed_) {
      if (frame.starts_with("ERROR ")) {
        why_ = "refused: " + te::unescape(frame.substr(6)).value_or(std::string(frame.substr(6)));
        break;
      }
      const auto greeting = te::split<4>(frame, true);
      const std::optional<std::uint64_t> ms =
          greeting ? te::parse_u64(greeting->fields[2], 1, 3'600'000) : std::nullopt;
      const std::optional<std::uint64_t> count =
          greeting ? te::parse_u64(greeting->fields[3], 1, 1000) : std::nullopt;
      if (!greeting || greeting->fields[0] != "WELCOME" || greeting->fields[1] != "worker" || !ms ||
          !count) {
        protocol_error("expected WELCOME worker INTERVAL_MS MISSES");
        break;
      }
      welcomed_ = true;
      const strata::Duration interval_ms = std::chrono::milliseconds(*ms);
      silent_for = interval_ms * static_cast<std::int64_t>(*count);
      heartbeat = loop.create_task(heartbeats(interval_ms), "heartbeat");
      note(options_.name + " connected to " + options_.coordinator->host + ":" +
           std::to_string(options_.coordinator->port) + " (" + std::to_string(options_.slots) +
           " slots)");
      if (quitting_) {  // the signal came during the greeting
        quitting_ = false;
        quit();
      }
      continue;
    }
    if (!handle(frame)) break;
  }

  // The end: cancel what runs, and wait for it all.
  ended_ = true;
  grace_timer_.cancel();
  std::vector<strata::Task<Outcome>> running;
  for (auto& [key, job] : jobs_) {
    job.stop->store(true);
    job.task.cancel();
    running.push_back(job.task);
  }
  for (strata::Task<Outcome>& task : running) {
    try {
      co_await task;
    } catch (...) {
    }
  }
  if (heartbeat) {
    heartbeat->cancel();
    try {
      co_await *heartbeat;
    } catch (...) {
    }
  }
  // Close once what is queued is written (the results of the cancelled jobs, the ERROR of a
  // protocol error), or after a second if the coordinator does not read.
  send("");
  try {
    auto written = strata::wait_for(writer, 1s);
    co_await written;
  } catch (...) {
  }
  writer_.close();
  co_return SessionEnd{welcomed_, why_};
}

bool Session::handle(std::string_view line) {
  const std::size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view args =
      space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
  if (verb == "HEARTBEAT" && args.empty()) return true;
  if (verb == "JOB") return start_job(args);
  if (verb == "CANCEL") {
    const auto cancel = te::split<2>(args, true);
    const std::optional<std::uint64_t> id =
        cancel ? te::parse_u64(cancel->fields[0], 1, UINT64_MAX) : std::nullopt;
    const std::optional<std::uint64_t> attempt =
        cancel ? te::parse_u64(cancel->fields[1], 1, UINT32_MAX) : std::nullopt;
    if (!id || !attempt) return protocol_error("bad CANCEL: expected CANCEL JOB ATTEMPT");
    cancel_job(Key{*id, static_cast<std::uint32_t>(*attempt)});
    return true;
  }
  if (verb == "ERROR") {
    why_ = "the coordinator said: " + te::unescape(args).value_or(std::string(args));
    return false;
  }
  return protocol_error("unexpected frame: expected JOB, CANCEL, HEARTBEAT or ERROR");
}

bool Session::start_job(std::string_view args) {
  const auto frame = te::split<2>(args, false);
  const std::optional<std::uint64_t> id =
      frame ? te::parse_u64(frame->fields[0], 1, UINT64_MAX) : std::nullopt;
  const std::optional<std::uint64_t> attempt =
      frame ? te::parse_u64(frame->fields[1], 1, UINT32_MAX) : std::nullopt;
  const std::optional<std::string> spec = frame ? te::unescape(frame->rest) : std::nullopt;
  if (!id || !attempt || !spec) return protocol_error("bad JOB: expected JOB ID ATTEMPT SPEC");
  const Key key{*id, static_cast<std::uint32_t>(*attempt)};
  const std::string head = "RESULT " + std::to_string(key.first) + " " + std::to_string(key.second);
  if (jobs_.contains(key)) return protocol_error("JOB " + std::to_string(key.first) + " twice");
  if (jobs_.size() >= options_.slots) {
    return protocol_error("more jobs than the " + std::to_string(options_.slots) + " slots");
  }
  if (quitting_) {
    send(head + " cancelled \n");  // it crossed our QUIT: give it back
    return true;
  }
  std::string error;
  std::optional<te::JobSpec> job = te::parse_job(*spec, error);
  if (!job) {
    send(head + " failed " + te::escape("bad job: " + error) + "\n");
    return true;
  }
  auto stop = std::make_shared<std::atomic<bool>>(false);
  strata::Task<Outcome> task =
      strata::get_running_loop().create_task(execute(std::move(*job), stop));
  // The result goes back from a done callback: it runs however the task ends, even when it is
  // cancelled before its body started.
  task.add_done_callback([self = shared_from_this(), key](strata::Future<Outcome>& done) {
    self->job_done(key, done);
  });
  jobs_.emplace(key, RunningJob{std::move(task), std::move(stop)});
  return true;
}

void Session::cancel_job(const Key& key) {
  const auto it = jobs_.find(key);
  if (it == jobs_.end()) return;  // it has ended: its result is on its way
  it->second.stop->store(true);
  it->second.task.cancel();
}

void Session::job_done(const Key& key, strata::Future<Outcome>& task) {
  jobs_.erase(key);
  Outcome outcome;
  if (task.cancelled()) {
    outcome = Outcome{"cancelled", ""};
  } else if (const std::exception_ptr error = task.exception()) {
    outcome = Outcome{"failed", describe(error)};
  } else {
    outcome = task.result();
  }
  if (outcome.output.size() > te::max_output) outcome.output.resize(te::max_output);
  send("RESULT " + std::to_string(key.first) + " " + std::to_string(key.second) + " " +
       outcome.status + " " + te::escape(outcome.output) + "\n");
  if (grace_over_ && jobs_.empty()) send("");  // the last one: close
}

void Session::quit() {
  if (quitting_ || ended_) return;
  quitting_ = true;
  if (!welcomed_) return;  // serve() quits once welcomed
  // The coordinator sends no new job after QUIT, and closes the connection once every job it
  // sent is answered (one may be crossing the QUIT: it is given back, see start_job()).
  send("QUIT\n");
  note("quitting: waiting up to " + std::to_string(te::to_ms(options_.grace)) + "ms for " +
       std::to_string(jobs_.size()) + " job(s)");
  grace_timer_ = strata::get_running_loop().call_later(options_.grace, [self = shared_from_this()] {
    // Past the grace period: cancel what still runs, and close once it has answered.
    self->grace_over_ = true;
    if (self->jobs_.empty()) self->send("");
    for (auto& [key, job] : self->jobs_) {
      job.stop->store(true);
      job.task.cancel();
    }
  });
}

void Session::send(std::string frame) {
  try {
    outbox_.put_nowait(std::move(frame));
  } catch (const strata::QueueShutDown&) {
    // The writer has ended: the connection is going.
  }
}

strata::Coro<void> Session::write_frames() {
  std::string batch;
  for (;;) {
    auto next = outbox_.get();
    std::string frame = co_await next;
    bool close = frame.empty();
    batch = std::move(frame);
    while (!close && !outbox_.empty()) {
      std::string more = outbox_.get_nowait();
      if (more.empty()) {
        close = true;
      } else {
        batch += more;
      }
    }
    try {
      if (!batch.empty()) {
        auto sent = writer_.send(batch);
        co_await sent;  // waits while the coordinator does not read
      }
    } catch (const strata::CancelledError&) {
      throw;
    } catch (const std::exception&) {
      close = true;  // the connection is gone; the reader will see it too
    }
    if (close) {
      outbox_.shutdown(true);
      writer_.close();
      co_return;
    }
  }
}

strata::Coro<void> Session::heartbeats(strata::Duration interval) {
  for (;;) {
    co_await strata::sleep(interval);
    send("HEARTBEAT\n");
  }
}

// ---- The worker -------------------------------------------------------------------------------

/// Waits for @p event (a coroutine, for wait_for()).
strata::Coro<void> wait_set(strata::Event* event) { co_await event->wait(); }

strata::Coro<int> worker_main(Options options) {
  strata::EventLoop& loop = strata::get_running_loop();
  strata::Event stop;
  bool stopping = false;
  std::shared_ptr<Session> session;  // while connected
  auto on_signal = [&] {
    stopping = true;
    stop.set();
    if (session) session->quit();
    // The default dispositions again: a second signal ends the worker at once.
    loop.remove_signal_handler(SIGINT);
    loop.remove_signal_handler(SIGTERM);
  };
  loop.add_signal_handler(SIGINT, on_signal);
  loop.add_signal_handler(SIGTERM, on_signal);
  struct RemoveHandlers {  // they refer to this frame
    strata::EventLoop& loop;
    ~RemoveHandlers() {
      loop.remove_signal_handler(SIGINT);
      loop.remove_signal_handler(SIGTERM);
    }
  } remove_handlers{loop};

  const te::Endpoint& coordinator = *options.coordinator;
  const std::string where = coordinator.host + ":" + std::to_string(coordinator.port);
  std::minstd_rand random(static_cast<std::minstd_rand::result_type>(::getpid()));
  strata::Duration backoff = options.backoff;
  while (!stopping) {
    SessionEnd end;
    try {
      strata::ConnectOptions connect;
      connect.timeout = options.connect_timeout;
      strata::Coro<strata::Streams> open =
          strata::open_connection(coordinator.host, coordinator.port, connect, options.max_frame);
      strata::Streams streams = co_await open;
      if (stopping) break;
      session =
          std::make_shared<Session>(options, std::move(streams.reader), std::move(streams.writer));
      strata::Coro<SessionEnd> serve = session->serve();
      end = co_await serve;
    } catch (const std::exception& e) {
      end.why = e.what();
    }
    session.reset();
    if (stopping) break;
    if (end.welcomed) backoff = options.backoff;  // it worked for a while: start over
    // Wait between half and all of the back-off, so that workers dropped together do not all
    // come back at the same instant.
    std::uniform_int_distribution<strata::Duration::rep> spread(0, backoff.count() / 2);
    const strata::Duration delay = backoff / 2 + strata::Duration(spread(random));
    note("coordinator " + where + ": " + end.why + "; connecting again in " +
         std::to_string(te::to_ms(delay)) + "ms");
    try {
      strata::Coro<void> wait = wait_set(&stop);
      co_await strata::wait_for(std::move(wait), delay);
    } catch (const strata::TimeoutError&) {
    }
    backoff = std::min(backoff * 2, options.max_backoff);
  }
  note(options.name + " stopped");
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  run_options.handle_sigint = false;  // worker_main handles SIGINT and SIGTERM itself
  try {
    return strata::run(worker_main(std::move(options)), run_options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "task_worker: %s\n", e.what());
    return 1;
  }
}
