// task_submit: submits jobs to a task_coordinator and prints each result as it arrives
// (README.md).
//
//   $ task_submit --connect 127.0.0.1:7100 'fib 30' 'sha256 abc' 'run echo hi' 'sleep x'
//   2 ok ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
//   3 ok exit 0: hi
//   4 failed bad job: sleep needs a whole number from 0 to 86400000
//   1 ok 832040
//
// The jobs are the arguments, or without any, the lines of stdin (blank lines skipped), read
// as they come: a pipe may feed jobs for as long as it likes. They are numbered from 1 in that
// order; the number is the job's id on the wire and the first word of its result line:
// `ID STATUS OUTPUT`, or with --details `ID STATUS ATTEMPTS WORKER OUTPUT`. OUTPUT is escaped
// as on the wire ("\n" for a newline, "\\" for a backslash), so that each result is one line.
//
// Written on the streams layer: open_connection(); one task sends the jobs with send(), which
// waits while the coordinator does not read (it stops reading a submitter with --max-pending
// jobs unreported), while the main task reads and prints the results. After the last job it
// half-closes the connection (write_eof()); the coordinator closes it after the last result.
//
// Exits 0 when every job ended `ok`; 1 when one did not (failed, timeout, lost, rejected,
// cancelled), or the connection ended before every job was reported; 2 on a bad option; 130 on
// Ctrl-C.
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/run.hpp>
#include <strata/core/task.hpp>
#include <strata/core/timeout.hpp>
#include <strata/streams/stream_reader.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/pipe.hpp>

#include "example_options.hpp"
#include "wire.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

namespace ex = strata::examples;
namespace te = task_executor;

void print_usage() {
  std::fputs(
      "usage: task_submit --connect HOST:PORT [options] [JOB...] [-- JOB...]\n"
      "Submits each JOB (without any: each line of stdin) to a task_coordinator and prints\n"
      "each result as it arrives: `ID STATUS OUTPUT`, ID counting from 1 in the order given,\n"
      "OUTPUT escaped (\\n, \\\\) to stay on one line.\n"
      "  --connect HOST:PORT   the coordinator ([v6addr]:PORT for IPv6)\n"
      "  --details             print `ID STATUS ATTEMPTS WORKER OUTPUT`\n"
      "  --quiet               print no result lines (see --summary)\n"
      "  --summary             at the end, print a summary line to stderr (jobs, ok, time,\n"
      "                        jobs/s)\n"
      "  --loop selector|proactor|epoll|poll|select   the event loop (default selector)\n"
      "  --connect-timeout D   the most the connection and its greeting may take (default 5s)\n"
      "  --max-frame BYTES     the longest frame read or job sent (default 262144)\n"
      "  --help                print this and exit\n"
      "  --                    every argument after it is a JOB\n"
      "Jobs: sleep MS | fib N | sha256 TEXT | run CMD. Statuses: ok, failed (the job failed,\n"
      "or was malformed), timeout and lost (its last attempt timed out, or its worker died),\n"
      "rejected (the coordinator is shutting down or full), cancelled (shut down first).\n"
      "Exits 0 when every job is ok, 1 otherwise or when the connection ends first, 2 on a bad\n"
      "option.\n",
      stdout);
}

struct Options {
  std::optional<te::Endpoint> coordinator;
  std::vector<std::string> jobs;  // empty: read stdin
  bool details = false;
  bool quiet = false;
  bool summary = false;
  std::optional<strata::LoopKind> loop;
  strata::Duration connect_timeout = 5s;
  std::size_t max_frame = te::default_max_frame;
};

/// Parses argv into @p options; returns an exit status when the program should stop there.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  try {
    int end = 1;  // everything after "--" is a job
    while (end < argc && std::string_view(argv[end]) != "--") ++end;
    ex::ArgumentCursor args(end, argv, {"--help", "-h", "--details", "--quiet", "--summary"});
    args.allow_positionals();
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name.empty()) {
        options.jobs.emplace_back(value);
      } else if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      } else if (name == "--details") {
        options.details = true;
      } else if (name == "--quiet") {
        options.quiet = true;
      } else if (name == "--summary") {
        options.summary = true;
      } else if (name == "--connect") {
        options.coordinator = te::parse_endpoint(name, value);
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value);
      } else if (name == "--connect-timeout") {
        options.connect_timeout = te::parse_duration(name, value);
      } else if (name == "--max-frame") {
        options.max_frame = ex::parse_number(name, value, 1024, 64 * 1024 * 1024);
      } else {
        throw ex::unknown_option(name);
      }
    }
    for (int i = end + 1; i < argc; ++i) options.jobs.emplace_back(argv[i]);
    if (!options.coordinator) throw std::invalid_argument("--connect HOST:PORT is required");
    for (std::size_t i = 0; i < options.jobs.size(); ++i) {
      if (options.jobs[i].empty()) {
        throw std::invalid_argument("job " + std::to_string(i + 1) + " is empty");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "task_submit: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- The jobs from stdin --------------------------------------------------------------------

/// Feeds what a read pipe delivers to a StreamReader (asyncio's StreamReaderProtocol for
/// connect_read_pipe()); the reader pauses the pipe while it holds more than twice its limit.
class FeedReader final : public strata::Protocol {
 public:
  explicit FeedReader(strata::StreamReader reader) : reader_(std::move(reader)) {}
  void connection_made(strata::Transport& transport) override { reader_.set_transport(transport); }
  void data_received(std::span<const std::byte> data) override { reader_.feed_data(data); }
  bool eof_received() override {
    reader_.feed_eof();
    return false;
  }
  void connection_lost(std::error_code ec) override {
    if (ec) {
      reader_.set_exception(std::make_exception_ptr(std::system_error(ec, "reading stdin")));
    } else if (!reader_.at_eof()) {
      reader_.feed_eof();
    }
    reader_.clear_transport();
  }

 private:
  strata::StreamReader reader_;
};

/// Where the jobs come from: the arguments, or stdin's lines.
class JobSource {
 public:
  explicit JobSource(std::vector<std::string> jobs, std::size_t max_line)
      : jobs_(std::move(jobs)), max_line_(max_line) {}

  /// Opens stdin when there are no job arguments: a pipe, socket or terminal through the loop
  /// (it may make us wait), a file by plain reads (it never does).
  strata::Coro<void> open() {
    if (!jobs_.empty()) co_return;
    from_stdin_ = true;
    struct stat st {};
    if (::fstat(STDIN_FILENO, &st) != 0) {
      throw std::system_error(errno, std::system_category(), "stdin");
    }
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !::isatty(STDIN_FILENO)) co_return;
    int fd = STDIN_FILENO;
    if (::isatty(STDIN_FILENO)) {
      // connect_read_pipe() sets O_NONBLOCK on the open file description, which a terminal
      // shares with the shell: open the terminal again for one of our own.
      const char* tty = ::ttyname(STDIN_FILENO);
      fd = tty != nullptr ? ::open(tty, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;
      if (fd < 0)
        throw std::system_error(errno, std::system_category(), "cannot open the terminal");
    }
    strata::StreamReader reader(max_line_);
    auto factory = [reader] { return std::make_unique<FeedReader>(reader); };
    auto connect = strata::connect_read_pipe(std::move(factory), fd);  // owns fd now
    co_await connect;
    pipe_.emplace(std::move(reader));
  }

  /// The next job, or std::nullopt at the end.
  /// @throws std::runtime_error  a line longer than --max-frame, or stdin cannot be read.
  strata::Coro<std::optional<std::string>> next() {
    if (!from_stdin_) {
      if (index_ == jobs_.size()) co_return std::nullopt;
      co_return std::move(jobs_[index_++]);
    }
    for (;;) {
      std::string line;
      bool at_end = false;
      if (pipe_) {
        bool too_long = false;
        try {
          auto read = pipe_->readuntil("\n");
          line = co_await read;
        } catch (const strata::IncompleteReadError& e) {
          line = e.partial();  // the last line, without "\n"
          at_end = true;
        } catch (const strata::LimitOverrunError&) {
          too_long = true;
        }
        if (too_long) throw std::runtime_error("a line of stdin is longer than --max-frame");
      } else {
        at_end = !read_file_line(line);
      }
      line = std::string(te::chomp(line));
      if (line.find_first_not_of(" \t") != std::string::npos) co_return line;
      if (at_end) co_return std::nullopt;
    }
  }

 private:
  /// One line of a regular stdin; false at its end with nothing read.
  bool read_file_line(std::string& line) {
    for (;;) {
      const std::size_t newline = file_buffer_.find('\n');
      if (newline != std::string::npos) {
        line = file_buffer_.substr(0, newline + 1);
        file_buffer_.erase(0, newline + 1);
        return true;
      }
      if (file_buffer_.size() > max_line_) {
        throw std::runtime_error("a line of stdin is longer than --max-frame");
      }
      std::string chunk(64 * 1024, '\0');
      const ssize_t n = ::read(STDIN_FILENO, chunk.data(), chunk.size());  // a file: never waits
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::system_error(errno, std::system_category(), "reading stdin");
      if (n == 0) {
        line = std::move(file_buffer_);
        file_buffer_.clear();
        return !line.empty();
      }
      file_buffer_.append(chunk, 0, static_cast<std::size_t>(n));
    }
  }

  std::vector<std::string> jobs_;
  std::size_t index_ = 0;
  std::size_t max_line_;
  bool from_stdin_ = false;
  std::optional<strata::StreamReader> pipe_;
  std::string file_buffer_;
};

// ---- The submitter ----------------------------------------------------------------------------

/// What the sending task reports to the main task.
struct Sent {
  std::uint64_t count = 0;  // jobs sent
  bool all = false;         // the last one is sent, and the connection half-closed
  std::string error;        // why the sending stopped early
};

/// Sends every job of @p source as `SUBMIT N JOB`, then half-closes the connection.
strata::Coro<void> send_jobs(JobSource* source, strata::StreamWriter writer, Sent* sent,
                             std::size_t max_frame) {
  try {
    for (;;) {
      strata::Coro<std::optional<std::string>> next = source->next();
      std::optional<std::string> job = co_await next;
      if (!job) break;
      const std::string frame =
          "SUBMIT " + std::to_string(sent->count + 1) + " " + te::escape(*job) + "\n";
      if (frame.size() > max_frame) {
        throw std::runtime_error("job " + std::to_string(sent->count + 1) +
                                 " is longer than --max-frame");
      }
      ++sent->count;  // before the wait: its result may come meanwhile
      auto send = writer.send(frame);
      co_await send;  // waits while the coordinator does not read
    }
    writer.write_eof();
    sent->all = true;
  } catch (const strata::CancelledError&) {
    throw;
  } catch (const std::exception& e) {
    sent->error = e.what();
    writer.close();  // the main task sees the end, and reports
  }
}

strata::Coro<int> submit_main(Options options) {
  const te::Endpoint& coordinator = *options.coordinator;
  const std::string where = coordinator.host + ":" + std::to_string(coordinator.port);
  const strata::TimePoint start = strata::get_running_loop().time();
  JobSource source(std::move(options.jobs), options.max_frame);
  {
    strata::Coro<void> open = source.open();
    co_await open;
  }

  strata::ConnectOptions connect;
  connect.timeout = options.connect_timeout;
  strata::Coro<strata::Streams> open =
      strata::open_connection(coordinator.host, coordinator.port, connect, options.max_frame);
  strata::Streams streams = co_await open;
  strata::StreamReader& reader = streams.reader;
  strata::StreamWriter& writer = streams.writer;
  writer.write("HELLO submitter\n");
  {
    auto read = reader.readuntil("\n");
    auto bounded = strata::wait_for(std::move(read), options.connect_timeout);
    const std::string line = co_await bounded;
    if (te::chomp(line) != "WELCOME submitter") {
      throw std::runtime_error("coordinator " + where + " answered '" +
                               std::string(te::chomp(line).substr(0, 200)) +
                               "' instead of WELCOME submitter");
    }
  }

  Sent sent;
  strata::Task<void> sender = strata::get_running_loop().create_task(
      send_jobs(&source, writer, &sent, options.max_frame), "sender");
  std::uint64_t reported = 0;
  std::uint64_t ok = 0;
  std::vector<bool> seen;  // by job id: a second result for one would be a bug
  std::string error;
  for (;;) {
    std::string line;
    bool at_end = false;
    try {
      auto read = reader.readuntil("\n");
      line = co_await read;
    } catch (const strata::IncompleteReadError& e) {
      at_end = true;
      if (!e.partial().empty()) error = "the connection ended mid-frame";
    } catch (const strata::LimitOverrunError&) {
      error = "a frame from the coordinator is longer than --max-frame";
    } catch (const std::system_error& e) {
      error = e.what();
    }
    if (at_end || !error.empty()) break;
    const std::string_view frame = te::chomp(line);
    if (frame.starts_with("ERROR ")) {
      error = "the coordinator said: " +
              te::unescape(frame.substr(6)).value_or(std::string(frame.substr(6)));
      break;
    }
    const auto result =
        frame.starts_with("RESULT ") ? te::split<4>(frame.substr(7), false) : std::nullopt;
    const std::optional<std::uint64_t> id =
        result ? te::parse_u64(result->fields[0], 1, sent.count) : std::nullopt;
    if (!id || !te::parse_u64(result->fields[2], 0, UINT32_MAX) || !te::is_escaped(result->rest)) {
      error = "a malformed frame from the coordinator: '" + std::string(frame.substr(0, 200)) + "'";
      break;
    }
    if (seen.size() <= *id) seen.resize(*id + 1);
    if (seen[*id]) {
      error = "job " + std::to_string(*id) + " was reported twice";
      break;
    }
    seen[*id] = true;
    ++reported;
    const std::string_view status = result->fields[1];
    if (status == "ok") ++ok;
    if (!options.quiet) {
      std::string out;
      out.reserve(frame.size());
      out.append(result->fields[0]).append(" ").append(status).append(" ");
      if (options.details) {
        out.append(result->fields[2]).append(" ").append(result->fields[3]).append(" ");
      }
      out.append(result->rest).append("\n");
      std::fwrite(out.data(), 1, out.size(), stdout);
      if (reader.buffered() == 0) std::fflush(stdout);
    }
  }
  std::fflush(stdout);
  if (!sender.done()) sender.cancel();
  try {
    co_await sender;
  } catch (...) {
  }
  if (options.summary) {
    const double seconds =
        std::chrono::duration<double>(strata::get_running_loop().time() - start).count();
    std::fprintf(stderr,
                 "task_submit: %llu job(s), %llu ok, %llu not ok, in %.3f s (%.0f jobs/s)\n",
                 static_cast<unsigned long long>(reported), static_cast<unsigned long long>(ok),
                 static_cast<unsigned long long>(reported - ok), seconds,
                 seconds > 0 ? static_cast<double>(reported) / seconds : 0.0);
  }
  if (error.empty() && !sent.error.empty()) error = sent.error;
  if (error.empty() && (!sent.all || reported < sent.count)) {
    error = "the connection ended with " + std::to_string(sent.count - reported) + " of " +
            std::to_string(sent.count) + " job(s) unreported";
  }
  if (!error.empty()) {
    std::fprintf(stderr, "task_submit: coordinator %s: %s\n", where.c_str(), error.c_str());
    co_return 1;
  }
  co_return ok == reported ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  try {
    return strata::run(submit_main(std::move(options)), run_options);
  } catch (const strata::KeyboardInterrupt&) {
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "task_submit: %s\n", e.what());
    return 1;
  }
}
