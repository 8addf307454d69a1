// task_coordinator: the hub of the distributed task executor (README.md). Workers and
// submitters connect to one port; the coordinator keeps a queue of jobs, hands each to a free
// slot of a worker, watches the workers' heartbeats, re-queues the jobs of a worker that dies,
// bounds each attempt by a timeout and each job by a retry limit, and reports every job to its
// submitter exactly once.
//
//   task_coordinator --port 7100
//   task_worker --connect 127.0.0.1:7100 --slots 8        (as many as you like)
//   task_submit --connect 127.0.0.1:7100 'fib 30' 'sha256 hello' 'run uname -a'
//
// Written on the protocol layer: one strata::Protocol (Peer) per connection, fed by
// data_received() and writing through its Transport, with flow control both ways. A submitter
// with --max-pending jobs unreported, or one that does not read its results (pause_writing()),
// is no longer read from (pause_reading()) until that changes, so that it waits in its own
// drain() and memory stays bounded; a worker that does not read gets no new job until
// resume_writing(). Frames are bounded by --max-frame; a malformed one is answered with an
// ERROR frame and the connection is closed.
//
// It follows the example-server contract of DESIGN.md: prints `listening on HOST:PORT` once
// ready; SIGINT or SIGTERM stops accepting connections and new jobs (a SUBMIT then gets a
// `rejected` result), lets the accepted jobs finish for up to --grace (5 s), reports those
// still unfinished as `cancelled`, closes every connection and exits 0. A start-up failure
// prints one line to stderr and exits 1 (2 for a bad option). The job queue lives on one loop:
// --threads is accepted for the contract's sake, and must be 1.
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/timeout.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/server.hpp>
#include <strata/transports/tcp.hpp>
#include <strata/transports/transport.hpp>

#include "example_options.hpp"
#include "job_spec.hpp"
#include "server_runner.hpp"
#include "wire.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;
namespace te = task_executor;

/// How long a new connection may take to say HELLO.
constexpr strata::Duration hello_timeout = 10s;
/// After the grace period: how long close_clients() gets to flush before abort_clients().
constexpr strata::Duration close_period = 1s;
/// The most slots a worker may announce.
constexpr std::uint64_t max_slots = 1024;

void print_usage() {
  std::fputs(
      "usage: task_coordinator [options]\n"
      "  --host H                 address to listen on (default 127.0.0.1)\n"
      "  --port P                 port; 0 picks a free one (default 0)\n"
      "  --loop selector|proactor|epoll|poll|select\n"
      "                           the event loop (default selector, on its best backend)\n"
      "  --threads 1              the job queue lives on one loop: only 1 is accepted\n"
      "  --job-timeout D          the most one attempt of a job may run (default 60s)\n"
      "  --retries N              attempts after the first, when one times out or its worker\n"
      "                           is lost (default 2); a job that fails on its own is not retried\n"
      "  --heartbeat-interval D   how often workers and the coordinator send HEARTBEAT\n"
      "                           (default 1s)\n"
      "  --heartbeat-misses N     a worker silent for N intervals is dropped as dead (default 3)\n"
      "  --grace D                on SIGINT or SIGTERM, how long accepted jobs may still run\n"
      "                           (default 5s)\n"
      "  --max-frame BYTES        the longest frame read, \"\\n\" included (default 262144)\n"
      "  --max-pending N          a submitter with N jobs unreported is not read from until\n"
      "                           half of them are reported (default 1000)\n"
      "  --max-jobs N             jobs accepted and unfinished, all submitters together; more\n"
      "                           are rejected (default 100000)\n"
      "  --verbose                log every dispatch, retry and result to stderr\n"
      "  --help                   print this and exit\n"
      "Durations are whole numbers with a unit: 250ms, 30s, 2m (a bare number is seconds).\n"
      "Prints `listening on HOST:PORT` once ready. SIGINT or SIGTERM: no new connections or\n"
      "jobs, accepted jobs finish within --grace (else they are reported cancelled), exit 0.\n"
      "The wire protocol is in examples/task_executor/README.md.\n",
      stdout);
}

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::optional<strata::LoopKind> loop;  // the best available when empty
  strata::Duration job_timeout = 60s;
  std::uint32_t retries = 2;
  strata::Duration heartbeat = 1s;
  std::uint32_t heartbeat_misses = 3;
  strata::Duration grace = 5s;
  std::size_t max_frame = te::default_max_frame;
  std::size_t max_pending = 1000;
  std::size_t max_jobs = 100000;
  bool verbose = false;
};

/// The options: read-only once main() has parsed them. (A function's static, not a global: its
/// construction may throw, which nothing could catch before main().)
Options& options() {
  static Options value;
  return value;
}

/// Parses argv into options; returns an exit status when the program should stop there.
std::optional<int> parse_options(int argc, char** argv) {
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h", "--verbose"});
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name == "--verbose") {
        options().verbose = true;
      } else if (name == "--host") {
        options().host = value;
      } else if (name == "--port") {
        options().port = static_cast<std::uint16_t>(ex::parse_number(name, value, 0, 65535));
      } else if (name == "--threads") {
        if (ex::parse_number(name, value, 1, 1024) != 1) {
          throw std::invalid_argument(
              "--threads must be 1: the job queue lives on one loop, got '" + std::string(value) +
              "'");
        }
      } else if (name == "--loop") {
        options().loop = ex::parse_loop(value);
      } else if (name == "--job-timeout") {
        options().job_timeout = te::parse_duration(name, value);
      } else if (name == "--retries") {
        options().retries = static_cast<std::uint32_t>(ex::parse_number(name, value, 0, 100));
      } else if (name == "--heartbeat-interval") {
        options().heartbeat = te::parse_duration(name, value, 10);
      } else if (name == "--heartbeat-misses") {
        options().heartbeat_misses =
            static_cast<std::uint32_t>(ex::parse_number(name, value, 1, 100));
      } else if (name == "--grace") {
        options().grace = te::parse_duration(name, value, 0);
      } else if (name == "--max-frame") {
        options().max_frame = ex::parse_number(name, value, 1024, 64 * 1024 * 1024);
      } else if (name == "--max-pending") {
        options().max_pending = ex::parse_number(name, value, 1, 10'000'000);
      } else if (name == "--max-jobs") {
        options().max_jobs = ex::parse_number(name, value, 1, 100'000'000);
      } else {
        throw ex::unknown_option(name);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "task_coordinator: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

void note(const std::string& message) {
  std::fprintf(stderr, "task_coordinator: %s\n", message.c_str());
}

class Coordinator;

// ---- One connection ---------------------------------------------------------------------------

/// What the coordinator knows of a worker.
struct WorkerInfo {
  std::string name;
  std::size_t slots = 0;
  /// The attempts (job id, attempt) it runs, or was told to cancel and has not answered for:
  /// each holds a slot until its RESULT comes.
  std::set<std::pair<std::uint64_t, std::uint32_t>> running;
  strata::TimePoint last_seen{};
  bool quitting = false;  // it sent QUIT: no new job
};

/// What the coordinator knows of a submitter.
struct SubmitterInfo {
  /// Its unreported jobs: its job id → the coordinator's.
  std::unordered_map<std::string, std::uint64_t> jobs;
  bool eof = false;  // it sent its last job: close once every job is reported
};

/// One connection, on the protocol layer: splits what arrives into frames, hands them to the
/// Coordinator, and writes what the Coordinator sends, batched per loop iteration.
///
/// Roles: unknown until HELLO, then a worker or a submitter for good. All calls on the loop
/// thread; the transport owns the Peer and destroys it after connection_lost().
class Peer final : public strata::Protocol {
 public:
  enum class Role { unknown, worker, submitter };

  explicit Peer(Coordinator& coordinator) : coordinator_(coordinator) {}

  void connection_made(strata::Transport& transport) override;
  void data_received(std::span<const std::byte> data) override;
  bool eof_received() override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override;
  void resume_writing() override;

  /// Queues @p frame (with its "\n") to be written at the end of this loop iteration, with
  /// whatever else is sent to this peer meanwhile: one write() per iteration.
  void send(std::string_view frame);
  /// Sends `ERROR REASON` and closes the connection (after what is queued is written).
  void fail(std::string_view reason);
  /// Closes the connection once what is queued is written.
  void close();
  /// Drops the connection at once; @p why is what the coordinator logs for it.
  void abort(std::string why);
  /// For a submitter: the coordinator reported its job @p client_id.
  void job_reported(const std::string& client_id);

  Role role() const noexcept { return role_; }
  bool is_closing() const noexcept { return closing_; }
  WorkerInfo& worker() noexcept { return worker_; }
  SubmitterInfo& submitter() noexcept { return submitter_; }
  const std::string& name() const noexcept { return worker_.name; }
  /// Whether a job may be dispatched to this worker now.
  bool can_take_job() const noexcept {
    return role_ == Role::worker && !closing_ && !write_paused_ && !worker_.quitting &&
           worker_.running.size() < worker_.slots;
  }

 private:
  void process_buffer();
  void handle_frame(std::string_view line);
  void handle_hello(std::string_view line);
  void handle_worker_frame(std::string_view verb, std::string_view args);
  void handle_submitter_frame(std::string_view verb, std::string_view args);
  /// A submitter is read while it has fewer than --max-pending jobs unreported and reads what
  /// it is sent; pauses or resumes the transport to match.
  void update_reading();
  /// A submitter that sent its last job and has every result: close (or complain about a
  /// frame left unterminated).
  void maybe_finish_submitter();
  void flush();

  Coordinator& coordinator_;
  strata::Transport* transport_ = nullptr;  // from connection_made() to connection_lost()
  Role role_ = Role::unknown;
  std::string buffer_;       // received, not yet handled
  std::size_t scanned_ = 0;  // buffer_ holds no "\n" before this (past the frames handled)
  std::string out_;          // to write at the end of the iteration
  strata::Handle flush_handle_;
  strata::Handle process_handle_;  // process_buffer() after resume_reading()
  strata::TimerHandle hello_timer_;
  bool flush_scheduled_ = false;
  bool process_scheduled_ = false;
  bool closing_ = false;
  bool write_paused_ = false;    // pause_writing() came, resume_writing() not yet
  bool reading_paused_ = false;  // we paused the transport's reading
  std::string peername_;
  std::string drop_reason_;  // why we aborted it, if we did
  WorkerInfo worker_;
  SubmitterInfo submitter_;
};

// ---- The coordinator --------------------------------------------------------------------------

/// The job queue, the workers and the jobs in flight: one per loop (the runner's L::State),
/// made before the loop starts and destroyed after it closed, so that the Peers and timers that
/// refer to it never outlive it.
class Coordinator {
 public:
  Coordinator() = default;
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;
  ~Coordinator() = default;

  /// Starts the heartbeat timer; on the loop's thread, once the server listens.
  void start(strata::EventLoop& loop) {
    loop_ = &loop;
    tick_ = loop.call_later(options().heartbeat, [this] { tick(); });
  }

  strata::EventLoop& loop() const noexcept { return *loop_; }

  /// The graceful end: no new jobs; the accepted ones get --grace to finish, the rest are
  /// reported cancelled; then every connection of @p server is closed.
  strata::Coro<void> shut_down(strata::Server* server);

  // ---- From the peers --------------------------------------------------------------------

  /// Every open connection, so that the shutdown can flush and close them all.
  void peer_opened(Peer& peer) { peers_.insert(&peer); }
  void peer_closed(Peer& peer) { peers_.erase(&peer); }

  void worker_joined(Peer& worker) {
    workers_.push_back(&worker);
    note("worker " + worker.name() + " joined (" + std::to_string(worker.worker().slots) +
         " slots)");
    schedule_dispatch();
  }

  /// @p worker's connection ended: its attempts are retried (or reported lost).
  void worker_left(Peer& worker, const std::string& why);

  /// @p submitter's connection ended: its unreported jobs are dropped (those running are
  /// cancelled on their workers).
  void submitter_left(Peer& submitter);

  /// SUBMIT @p client_id @p spec (escaped) from @p submitter.
  void submit(Peer& submitter, std::string_view client_id, std::string_view spec);

  /// RESULT from @p worker for attempt @p attempt of job @p id; @p output is escaped.
  void result(Peer& worker, std::uint64_t id, std::uint32_t attempt, std::string_view status,
              std::string_view output);

  /// Runs dispatch() at the end of this loop iteration (once, however often it is asked).
  void schedule_dispatch() {
    if (dispatch_scheduled_ || loop_ == nullptr) return;
    dispatch_scheduled_ = true;
    dispatch_handle_ = loop_->call_soon([this] { dispatch(); });
  }

  bool is_draining() const noexcept { return draining_; }

 private:
  struct Job {
    std::uint64_t id = 0;
    Peer* submitter = nullptr;   // null once it left
    std::string client_id;       // the submitter's id for it
    std::string spec;            // as on the wire (escaped)
    std::uint32_t attempts = 0;  // started so far
    bool running = false;
    Peer* worker = nullptr;  // the running attempt's
    std::string last_worker = "-";
    strata::TimerHandle timer;  // the running attempt's timeout
  };

  /// Hands queued jobs to free worker slots, round-robin over the workers.
  void dispatch();
  Peer* pick_worker();
  void start_attempt(Job& job, Peer& worker);
  void timed_out(std::uint64_t id, std::uint32_t attempt);
  /// The running attempt of @p job ended without a result (@p status: timeout or lost): queue
  /// it again at the front if it has attempts left, else report it with @p reason.
  void retry_or_finish(Job& job, std::string_view status, const std::string& reason);
  /// Reports @p job to its submitter (if still there) and forgets it. @p output is escaped.
  void finish(Job& job, std::string_view status, std::string_view output);
  /// Every heartbeat interval: drops the workers silent for too long, pings the others.
  void tick();

  static std::string result_frame(std::string_view client_id, std::string_view status,
                                  std::uint32_t attempts, std::string_view worker,
                                  std::string_view output) {
    std::string frame;
    frame.reserve(32 + client_id.size() + worker.size() + output.size());
    frame.append("RESULT ").append(client_id).append(" ").append(status).append(" ");
    frame.append(std::to_string(attempts)).append(" ").append(worker).append(" ");
    frame.append(output).append("\n");
    return frame;
  }

  strata::EventLoop* loop_ = nullptr;
  std::unordered_map<std::uint64_t, Job> jobs_;  // accepted, not yet reported
  /// Job ids waiting for a slot, oldest first (retries go to the front). An id whose job is
  /// gone, or running, is skipped.
  std::deque<std::uint64_t> queue_;
  std::vector<Peer*> workers_;
  std::unordered_set<Peer*> peers_;  // every connection, whatever its role
  std::size_t next_worker_ = 0;
  std::uint64_t next_id_ = 1;
  strata::Handle dispatch_handle_;
  bool dispatch_scheduled_ = false;
  strata::TimerHandle tick_;
  bool draining_ = false;
  strata::Event idle_;  // set while draining once no job is left
  // Counts, for the summary at exit.
  std::uint64_t reported_ = 0;
  std::uint64_t reported_ok_ = 0;
  std::uint64_t retried_ = 0;
};

void Coordinator::submit(Peer& submitter, std::string_view client_id, std::string_view spec) {
  SubmitterInfo& info = submitter.submitter();
  if (!te::is_token(client_id)) {
    submitter.fail("bad job id: 1 to 64 of A-Z a-z 0-9 _ . : @ + -");
    return;
  }
  std::string id_text(client_id);
  if (info.jobs.contains(id_text)) {
    submitter.fail("duplicate job id " + id_text + " (it is not reported yet)");
    return;
  }
  const std::optional<std::string> text = te::unescape(spec);
  if (!text) {
    submitter.fail("bad escape in the job of " + id_text);
    return;
  }
  if (draining_) {
    submitter.send(result_frame(id_text, "rejected", 0, "-", "coordinator shutting down"));
    ++reported_;
    return;
  }
  std::string error;
  if (!te::parse_job(*text, error)) {
    submitter.send(result_frame(id_text, "failed", 0, "-", te::escape("bad job: " + error)));
    ++reported_;
    return;
  }
  if (jobs_.size() >= options().max_jobs) {
    submitter.send(result_frame(
        id_text, "rejected", 0, "-",
        "too many jobs queued (--max-jobs " + std::to_string(options().max_jobs) + ")"));
    ++reported_;
    return;
  }
  const std::uint64_t id = next_id_++;
  Job& job = jobs_[id];
  job.id = id;
  job.submitter = &submitter;
  job.client_id = id_text;
  job.spec = std::string(spec);
  info.jobs.emplace(std::move(id_text), id);
  queue_.push_back(id);
  schedule_dispatch();
}

void Coordinator::result(Peer& worker, std::uint64_t id, std::uint32_t attempt,
                         std::string_view status, std::string_view output) {
  if (worker.worker().running.erase({id, attempt}) == 0) {
    worker.fail("RESULT for job " + std::to_string(id) + " attempt " + std::to_string(attempt) +
                ", which it does not run");
    return;
  }
  schedule_dispatch();  // a slot is free
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return;  // its submitter left
  Job& job = it->second;
  if (!job.running || job.worker != &worker || job.attempts != attempt) return;  // a stale one
  job.timer.cancel();
  job.running = false;
  job.worker = nullptr;
  if (status == "cancelled") {
    // The worker gave it back unasked (it is quitting): that attempt does not count.
    --job.attempts;
    queue_.push_front(id);
    return;
  }
  if (options().verbose) {
    note("job " + std::to_string(id) + " attempt " + std::to_string(attempt) + ": " +
         std::string(status) + " on " + worker.name());
  }
  finish(job, status, output);
}

void Coordinator::worker_left(Peer& worker, const std::string& why) {
  std::erase(workers_, &worker);
  WorkerInfo& info = worker.worker();
  const auto running = std::move(info.running);
  info.running.clear();
  std::size_t requeued = 0;
  for (const auto& [id, attempt] : running) {
    const auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    Job& job = it->second;
    if (!job.running || job.worker != &worker || job.attempts != attempt) continue;
    job.timer.cancel();
    job.running = false;
    job.worker = nullptr;
    ++requeued;
    retry_or_finish(job, "lost", "worker " + info.name + " lost: " + why);
  }
  note("worker " + info.name + " left (" + why + "); " + std::to_string(requeued) +
       " running job(s) to retry or report");
  schedule_dispatch();
}

void Coordinator::submitter_left(Peer& submitter) {
  SubmitterInfo& info = submitter.submitter();
  for (const auto& [client_id, id] : info.jobs) {
    const auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    Job& job = it->second;
    if (job.running && job.worker != nullptr) {
      // Nobody wants its result: stop it. Its slot stays taken until the worker answers.
      job.worker->send("CANCEL " + std::to_string(id) + " " + std::to_string(job.attempts) + "\n");
    }
    job.timer.cancel();
    jobs_.erase(it);  // a queued one's id stays in queue_, and is skipped
  }
  info.jobs.clear();
  if (draining_ && jobs_.empty()) idle_.set();
}

void Coordinator::dispatch() {
  dispatch_scheduled_ = false;
  while (!queue_.empty()) {
    Peer* worker = pick_worker();
    if (worker == nullptr) break;
    const std::uint64_t id = queue_.front();
    queue_.pop_front();
    const auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.running) continue;
    start_attempt(it->second, *worker);
  }
}

Peer* Coordinator::pick_worker() {
  const std::size_t n = workers_.size();
  for (std::size_t i = 0; i < n; ++i) {
    Peer* worker = workers_[(next_worker_ + i) % n];
    if (worker->can_take_job()) {
      next_worker_ = (next_worker_ + i + 1) % n;
      return worker;
    }
  }
  return nullptr;
}

void Coordinator::start_attempt(Job& job, Peer& worker) {
  const std::uint64_t id = job.id;
  const std::uint32_t attempt = ++job.attempts;
  job.running = true;
  job.worker = &worker;
  job.last_worker = worker.name();
  worker.worker().running.emplace(id, attempt);
  std::string frame;
  frame.reserve(32 + job.spec.size());
  frame.append("JOB ").append(std::to_string(id)).append(" ").append(std::to_string(attempt));
  frame.append(" ").append(job.spec).append("\n");
  worker.send(frame);
  job.timer =
      loop_->call_later(options().job_timeout, [this, id, attempt] { timed_out(id, attempt); });
  if (options().verbose) {
    note("job " + std::to_string(id) + " (submitted as " + job.client_id + ") attempt " +
         std::to_string(attempt) + " -> " + worker.name());
  }
}

void Coordinator::timed_out(std::uint64_t id, std::uint32_t attempt) {
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  if (!job.running || job.attempts != attempt) return;
  Peer* worker = job.worker;
  job.running = false;
  job.worker = nullptr;
  // The worker stops it and answers `cancelled`; the slot stays taken until then.
  worker->send("CANCEL " + std::to_string(id) + " " + std::to_string(attempt) + "\n");
  retry_or_finish(job, "timeout",
                  "timed out after " + std::to_string(te::to_ms(options().job_timeout)) + "ms on " +
                      worker->name());
}

void Coordinator::retry_or_finish(Job& job, std::string_view status, const std::string& reason) {
  if (job.attempts <= options().retries) {
    ++retried_;
    if (options().verbose) {
      note("job " + std::to_string(job.id) + " attempt " + std::to_string(job.attempts) + ": " +
           reason + "; retrying");
    }
    queue_.push_front(job.id);
    schedule_dispatch();
    return;
  }
  if (options().verbose) {
    note("job " + std::to_string(job.id) + " attempt " + std::to_string(job.attempts) + ": " +
         reason + "; no attempt left");
  }
  finish(job, status,
         te::escape(reason + " (attempt " + std::to_string(job.attempts) + " of " +
                    std::to_string(options().retries + 1) + ")"));
}

void Coordinator::finish(Job& job, std::string_view status, std::string_view output) {
  const std::uint64_t id = job.id;
  job.timer.cancel();
  ++reported_;
  if (status == "ok") ++reported_ok_;
  if (Peer* submitter = job.submitter) {
    submitter->send(result_frame(job.client_id, status, job.attempts, job.last_worker, output));
    const std::string client_id = std::move(job.client_id);
    jobs_.erase(id);
    submitter->job_reported(client_id);
  } else {
    jobs_.erase(id);
  }
  if (draining_ && jobs_.empty()) idle_.set();
}

void Coordinator::tick() {
  const strata::TimePoint now = loop_->time();
  const strata::Duration dead_after = options().heartbeat * options().heartbeat_misses;
  for (Peer* worker : std::vector<Peer*>(workers_)) {  // abort() does not call back at once
    if (worker->is_closing()) continue;
    if (now - worker->worker().last_seen > dead_after) {
      note("worker " + worker->name() + " missed " + std::to_string(options().heartbeat_misses) +
           " heartbeats: dropping it");
      worker->abort("missed heartbeats");  // connection_lost() follows, and worker_left()
    } else {
      worker->send("HEARTBEAT\n");
    }
  }
  tick_ = loop_->call_later(options().heartbeat, [this] { tick(); });
}

/// Waits for @p event (a coroutine, for wait_for()).
strata::Coro<void> wait_set(strata::Event* event) { co_await event->wait(); }

strata::Coro<void> Coordinator::shut_down(strata::Server* server) {
  draining_ = true;
  note("shutting down: " + std::to_string(jobs_.size()) + " job(s) to finish (grace " +
       std::to_string(te::to_ms(options().grace)) + "ms)");
  if (!jobs_.empty()) {
    try {
      strata::Coro<void> wait = wait_set(&idle_);
      co_await strata::wait_for(std::move(wait), options().grace);
    } catch (const strata::TimeoutError&) {
    }
  }
  if (!jobs_.empty()) {
    note(std::to_string(jobs_.size()) + " job(s) unfinished after the grace period: cancelled");
    std::vector<std::uint64_t> ids;
    ids.reserve(jobs_.size());
    for (const auto& [id, job] : jobs_) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    for (const std::uint64_t id : ids) {
      Job& job = jobs_.at(id);
      if (job.running && job.worker != nullptr) {
        job.worker->send("CANCEL " + std::to_string(id) + " " + std::to_string(job.attempts) +
                         "\n");
      }
      finish(job, "cancelled", "coordinator shut down");
    }
  }
  tick_.cancel();
  // Every result is queued on its connection: close them all once written (Peer::close()
  // writes what it has batched first).
  for (Peer* peer : std::vector<Peer*>(peers_.begin(), peers_.end())) peer->close();
  bool closed = false;
  try {
    strata::Coro<void> wait = server->wait_closed();
    co_await strata::wait_for(std::move(wait), close_period);
    closed = true;
  } catch (const strata::TimeoutError&) {
  }
  if (!closed) {
    server->abort_clients();
    strata::Coro<void> wait = server->wait_closed();
    co_await wait;
  }
  dispatch_handle_.cancel();
  note("stopped: " + std::to_string(reported_) + " job(s) reported, " +
       std::to_string(reported_ok_) + " ok, " + std::to_string(retried_) + " retries");
}

// ---- Peer -------------------------------------------------------------------------------------

void Peer::connection_made(strata::Transport& transport) {
  transport_ = &transport;
  coordinator_.peer_opened(*this);
  if (const auto peer = transport.get_extra_info_as<strata::SocketAddress>("peername")) {
    peername_ = peer->to_string();
  }
  hello_timer_ = transport.get_loop().call_later(hello_timeout, [this] {
    if (role_ == Role::unknown)
      fail("no HELLO within " + std::to_string(te::to_ms(hello_timeout)) + "ms");
  });
}

void Peer::data_received(std::span<const std::byte> data) {
  if (closing_) return;
  if (role_ == Role::worker) worker_.last_seen = transport_->get_loop().time();
  buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
  process_buffer();
}

void Peer::process_buffer() {
  process_scheduled_ = false;
  std::size_t start = 0;  // the first byte not handled yet
  bool partial = false;   // stopped at a frame without its "\n"
  while (!closing_ && !reading_paused_) {
    const std::size_t newline = buffer_.find('\n', scanned_);
    if (newline == std::string::npos) {
      scanned_ = buffer_.size();
      partial = true;
      break;
    }
    if (newline - start >= options().max_frame) {
      fail("frame too long (over " + std::to_string(options().max_frame) + " bytes)");
      break;
    }
    const std::string_view line =
        te::chomp(std::string_view(buffer_).substr(start, newline - start));
    start = scanned_ = newline + 1;
    handle_frame(line);  // may close, or pause reading; never touches buffer_
  }
  if (closing_) {
    buffer_.clear();
    scanned_ = 0;
    return;
  }
  buffer_.erase(0, start);
  scanned_ -= start;
  if (partial && buffer_.size() >= options().max_frame) {
    fail("frame too long (no newline within " + std::to_string(options().max_frame) + " bytes)");
    return;
  }
  if (role_ == Role::submitter) maybe_finish_submitter();
}

void Peer::handle_frame(std::string_view line) {
  const std::size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view args =
      space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
  switch (role_) {
    case Role::unknown:
      if (verb != "HELLO") {
        fail("expected HELLO worker SLOTS NAME or HELLO submitter");
        return;
      }
      handle_hello(args);
      return;
    case Role::worker:
      handle_worker_frame(verb, args);
      return;
    case Role::submitter:
      handle_submitter_frame(verb, args);
      return;
  }
}

void Peer::handle_hello(std::string_view args) {
  if (args == "submitter") {
    role_ = Role::submitter;
    hello_timer_.cancel();
    send("WELCOME submitter\n");
    return;
  }
  const auto hello = te::split<3>(args, true);
  const std::optional<std::uint64_t> slots =
      hello ? te::parse_u64(hello->fields[1], 1, max_slots) : std::nullopt;
  if (!hello || hello->fields[0] != "worker" || !slots || !te::is_token(hello->fields[2])) {
    fail("bad HELLO: expected HELLO worker SLOTS NAME (SLOTS 1 to " + std::to_string(max_slots) +
         ", NAME a token) or HELLO submitter");
    return;
  }
  role_ = Role::worker;
  hello_timer_.cancel();
  worker_.name = std::string(hello->fields[2]);
  worker_.slots = *slots;
  worker_.last_seen = transport_->get_loop().time();
  send("WELCOME worker " + std::to_string(te::to_ms(options().heartbeat)) + " " +
       std::to_string(options().heartbeat_misses) + "\n");
  coordinator_.worker_joined(*this);
}

void Peer::handle_worker_frame(std::string_view verb, std::string_view args) {
  if (verb == "HEARTBEAT" && args.empty()) return;  // data_received() noted the time
  if (verb == "RESULT") {
    const auto result = te::split<3>(args, false);
    const std::optional<std::uint64_t> id =
        result ? te::parse_u64(result->fields[0], 1, UINT64_MAX) : std::nullopt;
    const std::optional<std::uint64_t> attempt =
        result ? te::parse_u64(result->fields[1], 1, UINT32_MAX) : std::nullopt;
    if (!id || !attempt) {
      fail("bad RESULT: expected RESULT JOB ATTEMPT STATUS OUTPUT");
      return;
    }
    const std::string_view status = result->fields[2];
    if (status != "ok" && status != "failed" && status != "cancelled") {
      fail("bad RESULT status '" + std::string(status.substr(0, te::max_token)) +
           "': expected ok, failed or cancelled");
      return;
    }
    if (!te::is_escaped(result->rest)) {
      fail("bad escape in RESULT output");
      return;
    }
    coordinator_.result(*this, *id, static_cast<std::uint32_t>(*attempt), status, result->rest);
    if (worker_.quitting && worker_.running.empty()) close();  // its last one
    return;
  }
  if (verb == "QUIT" && args.empty()) {
    // No new job for it; once every job sent to it is answered (a JOB may be crossing the
    // QUIT), close: the worker waits for that.
    worker_.quitting = true;
    note("worker " + worker_.name + " is quitting: no new jobs for it");
    if (worker_.running.empty()) close();
    return;
  }
  fail("unexpected frame from a worker: expected RESULT, HEARTBEAT or QUIT");
}

void Peer::handle_submitter_frame(std::string_view verb, std::string_view args) {
  if (verb == "SUBMIT") {
    const auto submit = te::split<1>(args, false);
    if (!submit) {
      fail("bad SUBMIT: expected SUBMIT ID JOB");
      return;
    }
    coordinator_.submit(*this, submit->fields[0], submit->rest);
    update_reading();
    return;
  }
  fail("unexpected frame from a submitter: expected SUBMIT");
}

bool Peer::eof_received() {
  if (role_ != Role::submitter) return false;  // a worker or a stranger that leaves: close
  submitter_.eof = true;
  maybe_finish_submitter();
  return true;  // keep sending its results
}

void Peer::maybe_finish_submitter() {
  if (!submitter_.eof || closing_ || !submitter_.jobs.empty()) return;
  if (buffer_.find('\n') != std::string::npos) return;  // frames still to handle
  if (!buffer_.empty()) {
    fail("the last frame has no newline");
    return;
  }
  close();
}

void Peer::job_reported(const std::string& client_id) {
  submitter_.jobs.erase(client_id);
  update_reading();
  maybe_finish_submitter();
}

void Peer::update_reading() {
  if (role_ != Role::submitter || closing_ || transport_ == nullptr) return;
  // Paused at --max-pending jobs unreported, resumed at half that: a hysteresis, as the
  // transport's water marks have, so that a submitter that keeps the window full is read in
  // batches rather than a frame per result.
  const std::size_t pending = submitter_.jobs.size();
  const bool over =
      reading_paused_ ? pending > options().max_pending / 2 : pending >= options().max_pending;
  const bool pause = write_paused_ || over;
  if (pause && !reading_paused_) {
    reading_paused_ = true;
    transport_->pause_reading();
  } else if (!pause && reading_paused_) {
    reading_paused_ = false;
    transport_->resume_reading();
    if (!buffer_.empty() && !process_scheduled_) {
      // Frames that came before the pause: handle them in a later iteration, not inside the
      // coordinator's call that got us here.
      process_scheduled_ = true;
      process_handle_ = transport_->get_loop().call_soon([this] { process_buffer(); });
    }
  }
}

void Peer::pause_writing() {
  write_paused_ = true;
  update_reading();
}

void Peer::resume_writing() {
  write_paused_ = false;
  update_reading();
  if (role_ == Role::worker) coordinator_.schedule_dispatch();
}

void Peer::send(std::string_view frame) {
  if (closing_ || transport_ == nullptr) return;
  out_.append(frame);
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    flush_handle_ = transport_->get_loop().call_soon([this] { flush(); });
  }
}

void Peer::flush() {
  flush_scheduled_ = false;
  if (transport_ == nullptr || out_.empty()) return;
  transport_->write(out_);
  out_.clear();
}

void Peer::fail(std::string_view reason) {
  if (closing_) return;
  if (options().verbose || role_ == Role::worker) {
    note((role_ == Role::worker ? "worker " + worker_.name : peername_) + ": " +
         std::string(reason));
  }
  send("ERROR " + te::escape(reason) + "\n");
  close();
}

void Peer::close() {
  if (closing_ || transport_ == nullptr) return;
  flush_handle_.cancel();
  flush();
  closing_ = true;
  transport_->close();
}

void Peer::abort(std::string why) {
  if (transport_ == nullptr) return;
  drop_reason_ = std::move(why);
  closing_ = true;
  transport_->abort();
}

void Peer::connection_lost(std::error_code ec) {
  closing_ = true;
  flush_handle_.cancel();
  process_handle_.cancel();
  hello_timer_.cancel();
  if (role_ == Role::worker) {
    std::string why = drop_reason_;
    if (why.empty()) why = ec ? ec.message() : "disconnected";
    coordinator_.worker_left(*this, why);
  } else if (role_ == Role::submitter) {
    coordinator_.submitter_left(*this);
  }
  coordinator_.peer_closed(*this);
  transport_ = nullptr;
}

// ---- The listener -----------------------------------------------------------------------------

/// The coordinator's listening socket, for the server runner.
class CoordinatorListener {
 public:
  using State = Coordinator;

  static strata::Coro<CoordinatorListener> open_first(Coordinator& state, bool reuse_port) {
    CoordinatorListener listener;
    listener.coordinator_ = &state;
    for (int attempt = 1;; ++attempt) {
      strata::Coro<void> open = listener.open_server(options().port, reuse_port);
      co_await open;
      // With port 0, every address of a host like "localhost" gets its own ephemeral port:
      // bind again on the first one's.
      if (options().port != 0 || listener.has_one_port()) break;
      const std::uint16_t port = listener.port();
      listener.server_.reset();
      bool opened = false;
      try {
        strata::Coro<void> again = listener.open_server(port, reuse_port);
        co_await again;
        opened = true;
      } catch (const std::system_error& e) {
        if (attempt == 10 || e.code() != std::errc::address_in_use) throw;
      }
      if (opened) break;
    }
    state.start(strata::get_running_loop());
    co_return listener;
  }

  /// Another loop's listener: never asked for, since --threads is 1.
  static strata::Coro<CoordinatorListener> open(Coordinator& state, std::uint16_t port,
                                                bool reuse_port) {
    (void)state, (void)port, (void)reuse_port;
    throw std::logic_error("task_coordinator runs on one loop");
  }

  std::uint16_t port() const { return server_->sockets().front().address.port(); }

  std::string host() const {
    std::string host = options().host;
    if (host.empty()) host = server_->sockets().front().address.host();
    return host.find(':') != std::string::npos ? "[" + host + "]" : host;
  }

  /// Stops accepting, then the coordinator's graceful end.
  strata::Coro<void> shut_down() {
    server_->close();
    strata::Coro<void> drain = coordinator_->shut_down(server_.get());
    co_await drain;
  }

 private:
  strata::Coro<void> open_server(std::uint16_t port, bool reuse_port) {
    strata::ServerOptions server_options;
    server_options.reuse_port = reuse_port;
    Coordinator* coordinator = coordinator_;
    auto factory = [coordinator] { return std::make_unique<Peer>(*coordinator); };
    strata::Coro<std::unique_ptr<strata::Server>> create =
        strata::create_server(std::move(factory), options().host, port, std::move(server_options));
    server_ = co_await create;
  }

  bool has_one_port() const {
    for (const strata::ServerSocket& socket : server_->sockets()) {
      if (socket.address.port() != port()) return false;
    }
    return true;
  }

  Coordinator* coordinator_ = nullptr;
  std::unique_ptr<strata::Server> server_;
};

}  // namespace

int main(int argc, char** argv) {
  if (auto status = parse_options(argc, argv)) return *status;
  return ex::run_server<CoordinatorListener>("task_coordinator", 1, options().loop);
}
