// http_get: fetches URLs with strata::HttpClient and prints, for each, one line
// `URL STATUS BODY_BYTES`: the status of the last response (after redirects) and the size of
// its body. https is verified against the system's CA store (or --cafile).
//
//   $ http_get http://127.0.0.1:8080/plaintext https://example.com/
//   http://127.0.0.1:8080/plaintext 200 13
//   https://example.com/ 200 1256
//
// The URLs are fetched concurrently (up to --concurrency at once, over keep-alive connections,
// per host at most that many) and printed in the order given, each as soon as it and those
// before it are done. A URL that fails prints `http_get: URL: ERROR` to stderr instead. Exits
// 0 when every URL was fetched (whatever its status), 1 when one failed, 2 on a bad option,
// 130 on Ctrl-C.
#include <strata/core/errors.hpp>
#include <strata/core/run.hpp>
#include <strata/core/semaphore.hpp>
#include <strata/core/task.hpp>
#include <strata/protocols/http_client.hpp>
#include <strata/transports/ssl.hpp>

#include "example_options.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace ex = strata::examples;

void print_usage() {
  std::fputs(
      "usage: http_get URL... [options]\n"
      "  URL                an http:// or https:// URL; several may be given\n"
      "  --concurrency N    URLs fetched at once (default 4; 1 fetches them one by one)\n"
      "  --timeout SECONDS  the most one URL may take, redirects and body included (default 30)\n"
      "  --max-redirects N  redirects followed per URL (default 10)\n"
      "  --no-redirects     print the redirect itself instead of following it\n"
      "  --cafile FILE      trust only the CA certificates in FILE (PEM) for https\n"
      "  --insecure         do not verify https servers (tests only)\n"
      "  --loop selector|proactor|epoll|poll|select   the loop (default selector)\n"
      "  --help             print this and exit\n"
      "Prints `URL STATUS BODY_BYTES` per URL, in the order given; a URL that fails prints\n"
      "`http_get: URL: ERROR` to stderr. Exits 0 when every URL was fetched, 1 when one\n"
      "failed, 2 on a bad option.\n",
      stdout);
}

struct Options {
  std::vector<std::string> urls;
  std::size_t concurrency = 4;
  double timeout_s = 30;
  int max_redirects = 10;
  bool follow_redirects = true;
  std::optional<strata::LoopKind> loop;
  std::optional<strata::SslContext> ssl;  // with --cafile or --insecure
};

/// Parses argv into @p options; returns an exit status when the program should stop.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  ex::ClientTlsOptions tls;
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h", "--insecure", "--no-redirects"});
    args.allow_positionals();
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name.empty()) {
        options.urls.emplace_back(value);
      } else if (name == "--concurrency") {
        options.concurrency = ex::parse_number(name, value, 1, 10000);
      } else if (name == "--timeout") {
        options.timeout_s = static_cast<double>(ex::parse_number(name, value, 1, 86400));
      } else if (name == "--max-redirects") {
        options.max_redirects = static_cast<int>(ex::parse_number(name, value, 0, 1000));
      } else if (name == "--no-redirects") {
        options.follow_redirects = false;
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value, ex::UnknownLoop::loop_kind);
      } else if (name == "--cafile" || name == "--insecure") {
        tls.take(name, value);
      } else {
        throw ex::unknown_option(name);
      }
    }
    if (options.urls.empty()) throw std::invalid_argument("no URL given (see --help)");
    if (std::optional<strata::SslOptions> ssl = tls.load()) options.ssl = ssl->context;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_get: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

/// What fetching one URL gave: the line for stdout, or the error for stderr.
struct Result {
  bool done = false;
  bool ok = false;
  int status = 0;
  std::uint64_t bytes = 0;
  std::string error;
};

/// The state of a run: the client, the results in argument order, and how many are printed.
struct Run {
  explicit Run(const Options& o, strata::HttpClientOptions client_options)
      : options(o), client(std::move(client_options)), results(o.urls.size()) {}

  /// Prints the results that are done, in order, up to the first that is not.
  void print_ready() {
    while (printed < results.size() && results[printed].done) {
      const Result& r = results[printed];
      const std::string& url = options.urls[printed];
      if (r.ok) {
        std::printf("%s %d %llu\n", url.c_str(), r.status,
                    static_cast<unsigned long long>(r.bytes));
        std::fflush(stdout);
      } else {
        std::fprintf(stderr, "http_get: %s: %s\n", url.c_str(), r.error.c_str());
        failed = true;
      }
      ++printed;
    }
  }

  const Options& options;
  strata::HttpClient client;
  std::vector<Result> results;
  std::size_t printed = 0;
  bool failed = false;
};

/// Fetches URL @p index and counts its body, keeping none of it; @p slot is its unit of the
/// concurrency semaphore, given back when done.
strata::Coro<void> fetch(Run& run, std::size_t index, strata::SemaphoreGuard slot) {
  Result& result = run.results[index];
  try {
    strata::HttpRequestOptions request;
    request.follow_redirects = run.options.follow_redirects;
    request.max_redirects = run.options.max_redirects;
    strata::Coro<strata::HttpClientResponse> get =
        run.client.get(run.options.urls[index], std::move(request));
    strata::HttpClientResponse response = co_await get;
    result.status = response.status();
    for (;;) {
      std::string chunk = co_await response.read_chunk();
      if (chunk.empty()) break;
      result.bytes += chunk.size();
    }
    result.ok = true;
  } catch (const std::exception& e) {
    result.error = e.what();
  }
  result.done = true;
  slot.release();
  run.print_ready();
}

strata::Coro<int> main_task(const Options& options) {
  strata::HttpClientOptions client_options;
  client_options.total_timeout = std::chrono::duration_cast<strata::Duration>(
      std::chrono::duration<double>(options.timeout_s));
  client_options.connect_timeout = client_options.total_timeout;
  client_options.max_connections_per_host = options.concurrency;
  client_options.ssl_context = options.ssl;
  Run run(options, std::move(client_options));

  // A semaphore bounds the fetches in flight: each takes a unit before it starts.
  strata::Semaphore slots(static_cast<std::int64_t>(options.concurrency));
  std::vector<strata::Task<void>> tasks;
  tasks.reserve(options.urls.size());
  for (std::size_t i = 0; i < options.urls.size(); ++i) {
    strata::SemaphoreGuard slot = co_await slots.acquire();
    tasks.push_back(strata::create_task(fetch(run, i, std::move(slot))));
  }
  for (auto& task : tasks) co_await task;
  run.print_ready();
  run.client.close();
  co_await run.client.wait_closed();
  co_return run.failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto status = parse_options(argc, argv, options)) return *status;
  strata::RunOptions run_options;
  run_options.loop = options.loop;
  try {
    return strata::run(main_task(options), run_options);
  } catch (const strata::KeyboardInterrupt&) {
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_get: %s\n", e.what());
    return 1;
  }
}
