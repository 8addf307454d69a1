// line_filter: pipes text through a filter program (sort, by default) and prints what comes
// back with line numbers, as `cat -n` does: proof that every line went through the program.
// Written on the streams layer's subprocess API (strata::create_subprocess_exec()).
//
//   $ printf 'pear\napple\nfig\n' | line_filter
//        1	apple
//        2	fig
//        3	pear
//   $ line_filter words.txt -- -r -n              sort -r -n words.txt, numbered
//   $ line_filter --filter grep notes.txt -- -i todo
//   $ line_filter --filter tr -- a-z A-Z < notes.txt
//
// The point of the example: it writes the input to the filter's stdin while it reads the
// filter's stdout, in two tasks of one TaskGroup. A filter that answers as it reads (cat, grep,
// sed, tr) fills its stdout pipe long before the input ends; a program that first wrote all of
// the input and only then read would wait for the filter to read, while the filter waits for
// it to read: a deadlock, as soon as the data exceeds the pipes' buffers. (sort reads all of
// its input before it writes, so with sort alone the naive order happens to work.)
// Process::communicate() does the same for input and output held in memory; this streams
// both ends, so memory stays bounded whatever the size of the input.
//
// The filter is run directly (searched in PATH, no shell); the arguments after `--` are its
// arguments. Its stderr is line_filter's. Exits 0 when the filter exited 0; 1 when it could not
// be started (`line_filter: cannot run 'PROGRAM': No such file or directory`), exited with
// another status, or the input could not be read; 2 on a bad option; 130 on Ctrl-C.
#include <strata/core/errors.hpp>
#include <strata/core/run.hpp>
#include <strata/core/task_group.hpp>
#include <strata/streams/process.hpp>
#include <strata/streams/stream_reader.hpp>
#include <strata/streams/stream_writer.hpp>
#include <strata/transports/pipe.hpp>
#include <strata/transports/subprocess.hpp>

#include "example_options.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
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

namespace {

namespace ex = strata::examples;

/// The most bytes of input read, and sent to the filter, at once.
constexpr std::size_t chunk_size = 64 * 1024;

void print_usage() {
  std::fputs(
      "usage: line_filter [options] [FILE] [-- FILTER-ARG...]\n"
      "Writes FILE (default: stdin) to a filter program's stdin while reading its stdout, and\n"
      "prints what the filter writes with line numbers (as cat -n).\n"
      "  --filter PROGRAM   the filter, searched in PATH and run without a shell (default\n"
      "                     sort); the arguments after -- are its arguments\n"
      "  --loop selector|proactor|epoll|poll|select   the loop (default selector)\n"
      "  --help             print this and exit\n"
      "Exits 0 when the filter exited 0; 1 when it could not be started or exited otherwise,\n"
      "or the input could not be read; 2 on a bad option.\n",
      stdout);
}

struct Options {
  std::string filter = "sort";
  std::vector<std::string> filter_args;
  std::optional<std::string> file;
  std::optional<strata::LoopKind> loop;
};

/// Parses argv into @p options; returns an exit status when the program should stop.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  try {
    // The arguments after "--" are the filter's; ArgumentCursor walks what comes before.
    int end = 1;
    while (end < argc && std::string_view(argv[end]) != "--") ++end;
    ex::ArgumentCursor args(end, argv, {"--help", "-h"});
    args.allow_positionals();
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      if (name.empty()) {
        if (options.file) throw std::invalid_argument("one FILE at most (see --help)");
        options.file = arg->value;
      } else if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      } else if (name == "--filter") {
        options.filter = arg->value;
        if (options.filter.empty()) throw std::invalid_argument("--filter must not be empty");
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(arg->value);
      } else {
        throw ex::unknown_option(name);
      }
    }
    for (int i = end + 1; i < argc; ++i) options.filter_args.emplace_back(argv[i]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "line_filter: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- The input ------------------------------------------------------------------------------

/// The input: a descriptor, and whether reading it can make us wait.
///
/// A pipe or a terminal can keep a read() waiting for its writer, so the loop must watch it:
/// connect_read_pipe() and a StreamReader. A regular file (or /dev/null) answers every read()
/// at once, and the loop could not watch it anyway (epoll refuses files), so it is read in
/// place.
struct Input {
  int fd = -1;
  bool watch = false;
};

/// Opens @p file (stdin when empty) as an Input.
/// @throws std::system_error  it cannot be opened; what() names it.
Input open_input(const std::optional<std::string>& file) {
  const std::string name = file ? "'" + *file + "'" : "stdin";
  int fd = STDIN_FILENO;
  if (file) {
    fd = ::open(file->c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::system_category(), "cannot open " + name);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw std::system_error(errno, std::system_category(), name);
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return Input{fd, true};
  if (::isatty(fd)) {
    // connect_read_pipe() sets O_NONBLOCK, which belongs to the open file description. A
    // terminal's is shared with the shell, and with our own stdout: opening the terminal
    // again gives us one of our own to set it on.
    const char* tty = ::ttyname(fd);
    const int own = tty != nullptr ? ::open(tty, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;
    if (own < 0) throw std::system_error(errno, std::system_category(), "cannot open the terminal");
    if (fd != STDIN_FILENO) ::close(fd);
    return Input{own, true};
  }
  return Input{fd, false};
}

/// Feeds what a read pipe delivers to a StreamReader (what asyncio's StreamReaderProtocol does
/// for `loop.connect_read_pipe(lambda: StreamReaderProtocol(reader), pipe)`). The reader
/// pauses the pipe while more than twice its limit is buffered.
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
      reader_.set_exception(std::make_exception_ptr(std::system_error(ec, "reading the input")));
    } else {
      reader_.feed_eof();
    }
    reader_.clear_transport();
  }

 private:
  strata::StreamReader reader_;
};

/// Writes the input to @p to (the filter's stdin), then closes it: the end of the input,
/// which tells sort to start writing.
strata::Coro<void> feed_filter(Input input, strata::StreamWriter to) {
  std::optional<strata::StreamReader> pipe;
  if (input.watch) {
    strata::StreamReader reader;
    auto factory = [reader] { return std::make_unique<FeedReader>(reader); };
    auto connect = strata::connect_read_pipe(std::move(factory), input.fd);  // owns fd now
    co_await connect;
    pipe.emplace(std::move(reader));
  }
  std::string chunk(chunk_size, '\0');
  for (;;) {
    if (pipe) {
      auto read = pipe->read(static_cast<std::ptrdiff_t>(chunk_size));
      chunk = co_await read;  // waits for the writer
    } else {
      chunk.resize(chunk_size);
      const ssize_t n = ::read(input.fd, chunk.data(), chunk.size());  // never waits long
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::system_error(errno, std::system_category(), "reading the input");
      chunk.resize(static_cast<std::size_t>(n));
    }
    if (chunk.empty()) break;  // the end of the input
    // send(): write, then wait only while the pipe and the transport's buffer are full, that
    // is while the filter does not read. Meanwhile print_numbered() runs.
    try {
      auto send = to.send(chunk);
      co_await send;
    } catch (const std::system_error&) {
      // The filter closed its stdin (it exited, as `head -n 1` does once it has its line): it
      // wants no more input. As for communicate(), that is no error.
      break;
    }
  }
  if (!input.watch && input.fd != STDIN_FILENO) ::close(input.fd);
  to.close();
}

// ---- The output -----------------------------------------------------------------------------

/// Prints the lines that @p from (the filter's stdout) delivers, numbered, until its end.
strata::Coro<void> print_numbered(strata::StreamReader from) {
  std::size_t number = 0;
  bool in_line = false;  // the last bytes printed did not end their line
  for (;;) {
    std::string piece;
    std::size_t overlong = 0;
    bool at_end = false;
    try {
      auto line = from.readuntil();  // through "\n"
      piece = co_await line;
    } catch (const strata::IncompleteReadError& e) {
      piece = e.partial();  // the end: the last bytes, without "\n" (or none)
      at_end = true;
    } catch (const strata::LimitOverrunError& e) {
      // No "\n" within the reader's limit. The bytes stay buffered: print them as part of the
      // line and read on (a co_await cannot go in a handler, hence the flag). Memory stays
      // bounded, however long the line.
      overlong = std::max<std::size_t>(e.consumed(), 1);
    }
    if (overlong != 0) {
      auto part = from.read(static_cast<std::ptrdiff_t>(overlong));
      piece = co_await part;
    }
    if (!piece.empty()) {
      if (!in_line) std::printf("%6zu\t", ++number);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      in_line = piece.back() != '\n';
    }
    if (at_end) break;
    if (from.buffered() == 0) std::fflush(stdout);  // a line at a time for slow filters
  }
  if (in_line) std::putchar('\n');  // a last line without "\n" gets one
  std::fflush(stdout);
}

// ---- Main -----------------------------------------------------------------------------------

/// The first failure's message: a TaskGroup's ExceptionGroup holds one per failed task.
std::string first_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const strata::ExceptionGroup& group) {
    if (!group.exceptions().empty()) return first_error(group.exceptions().front());
    return group.what();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return strata::describe_exception(error);
  }
}

strata::Coro<int> main_task(Options options) {
  std::string error;
  std::optional<Input> input;
  try {
    input = open_input(options.file);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!input) {
    std::fprintf(stderr, "line_filter: %s\n", error.c_str());
    co_return 1;
  }

  // Start the filter with its stdin and stdout piped to us; its stderr is ours.
  strata::SubprocessOptions how;
  how.stdin = strata::Stdio::pipe();
  how.stdout = strata::Stdio::pipe();
  std::optional<strata::Process> filter;
  try {
    strata::Coro<strata::Process> start = strata::create_subprocess_exec(
        options.filter, options.filter_args, std::move(how), strata::StreamReader::default_limit);
    filter.emplace(co_await start);
  } catch (const std::system_error& e) {
    error = "cannot run '" + options.filter + "': " + e.code().message();
  } catch (const std::exception& e) {
    error = "cannot run '" + options.filter + "': " + e.what();
  }
  if (!filter) {
    std::fprintf(stderr, "line_filter: %s\n", error.c_str());
    co_return 1;
  }

  // Feed it and read it back at once: two tasks of one group. If one fails, the group
  // cancels the other.
  auto both = [&](strata::TaskGroup& group) -> strata::Coro<void> {
    group.create_task(feed_filter(*input, *filter->stdin));
    group.create_task(print_numbered(*filter->stdout));
    co_return;
  };
  try {
    co_await strata::task_group(std::move(both));
  } catch (const strata::CancelledError&) {
    throw;  // Ctrl-C: strata::run() turns it into KeyboardInterrupt
  } catch (...) {
    error = first_error(std::current_exception());
  }
  if (!error.empty()) {
    try {
      filter->kill();
    } catch (const std::system_error&) {
      // it had exited already
    }
    strata::Coro<int> reaped = filter->wait();
    co_await reaped;
    std::fprintf(stderr, "line_filter: %s\n", error.c_str());
    co_return 1;
  }

  strata::Coro<int> wait = filter->wait();
  const int status = co_await wait;
  if (status > 0) {
    std::fprintf(stderr, "line_filter: %s exited with status %d\n", options.filter.c_str(), status);
  } else if (status < 0) {
    std::fprintf(stderr, "line_filter: %s was killed by signal %d\n", options.filter.c_str(),
                 -status);
  }
  co_return status == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  try {
    return strata::run(main_task(std::move(options)), run_options);
  } catch (const strata::KeyboardInterrupt&) {
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "line_filter: %s\n", e.what());
    return 1;
  }
}
