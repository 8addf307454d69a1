// crawler: crawls a web site from a start URL with strata::HttpClient, following the links of
// its HTML pages that stay on the start URL's host and port, at most --concurrency fetches at
// once (a strata::Semaphore bounds them) and at most --max-pages fetches in all, and prints a
// summary.
//
//   $ crawler http://127.0.0.1:8080/ --concurrency 8 --max-pages 100
//   crawler: 42 pages fetched, 0 errors, 183204 bytes, 0.093 s, 451.6 pages/s
//
// Links are the href="..." (or '...', or unquoted) attributes of a page whose Content-Type is
// HTML (or absent), resolved against the page's final URL (after redirects), without their
// #fragment, each fetched once. Other schemes (mailto:, javascript:) and other hosts are not
// followed. With --verbose, each page prints `STATUS URL` when fetched, and each failure
// `crawler: URL: ERROR` to stderr.
//
// Exits 0 when the start URL was fetched (whatever else failed), 1 when it was not, 2 on a bad
// option, 130 on Ctrl-C.
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/run.hpp>
#include <strata/core/semaphore.hpp>
#include <strata/core/task_group.hpp>
#include <strata/protocols/http_client.hpp>
#include <strata/transports/ssl.hpp>

#include "example_options.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace ex = strata::examples;

void print_usage() {
  std::fputs(
      "usage: crawler URL [options]\n"
      "  URL                the http:// or https:// page to start from\n"
      "  --concurrency N    fetches at once (default 4)\n"
      "  --max-pages M      fetch at most M pages (default 100)\n"
      "  --timeout SECONDS  the most one page may take (default 30)\n"
      "  --verbose          print `STATUS URL` for each page fetched\n"
      "  --cafile FILE      trust only the CA certificates in FILE (PEM) for https\n"
      "  --insecure         do not verify https servers (tests only)\n"
      "  --loop selector|proactor|epoll|poll|select   the loop (default selector)\n"
      "  --help             print this and exit\n"
      "Follows the links of HTML pages that stay on URL's host and port, each once, and prints\n"
      "`crawler: N pages fetched, E errors, B bytes, T s, R pages/s`. Exits 0 when the start\n"
      "URL was fetched, 1 when not, 2 on a bad option.\n",
      stdout);
}

struct Options {
  std::string url;
  std::size_t concurrency = 4;
  std::size_t max_pages = 100;
  double timeout_s = 30;
  bool verbose = false;
  std::optional<strata::LoopKind> loop;
  std::optional<strata::SslContext> ssl;  // with --cafile or --insecure
};

/// Parses argv into @p options; returns an exit status when the program should stop.
std::optional<int> parse_options(int argc, char** argv, Options& options) {
  ex::ClientTlsOptions tls;
  try {
    ex::ArgumentCursor args(argc, argv, {"--help", "-h", "--insecure", "--verbose", "-v"});
    args.allow_positionals();
    bool has_url = false;
    while (const std::optional<ex::Argument> arg = args.next()) {
      const std::string_view name = arg->name;
      const char* value = arg->value;
      if (name == "--help" || name == "-h") {
        print_usage();
        ex::print_loop_backends();
        return 0;
      }
      if (name.empty()) {
        if (has_url) {
          throw std::invalid_argument("unexpected argument '" + std::string(value) +
                                      "' (one start URL only)");
        }
        has_url = true;
        options.url = value;
      } else if (name == "--concurrency") {
        options.concurrency = ex::parse_number(name, value, 1, 10000);
      } else if (name == "--max-pages") {
        options.max_pages = ex::parse_number(name, value, 1, 100000000);
      } else if (name == "--timeout") {
        options.timeout_s = static_cast<double>(ex::parse_number(name, value, 1, 86400));
      } else if (name == "--verbose" || name == "-v") {
        options.verbose = true;
      } else if (name == "--loop") {
        options.loop = ex::parse_loop(value, ex::UnknownLoop::loop_kind);
      } else if (name == "--cafile" || name == "--insecure") {
        tls.take(name, value);
      } else {
        throw ex::unknown_option(name);
      }
    }
    if (!has_url) throw std::invalid_argument("no start URL given (see --help)");
    (void)strata::HttpUrl::parse(options.url);  // a bad URL is a bad option
    if (std::optional<strata::SslOptions> ssl = tls.load()) options.ssl = ssl->context;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crawler: %s\n", e.what());
    return 2;
  }
  return std::nullopt;
}

// ---- Links ------------------------------------------------------------------------------------

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/// Decodes the few character references that appear in URLs: &amp; &quot; &#39; &apos; &lt;
/// &gt;. Others are left as they are.
std::string decode_entities(std::string_view s) {
  static constexpr std::pair<std::string_view, char> entities[] = {
      {"&amp;", '&'},   {"&quot;", '"'}, {"&#39;", '\''},
      {"&apos;", '\''}, {"&lt;", '<'},   {"&gt;", '>'}};
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    bool replaced = false;
    if (s[i] == '&') {
      for (const auto& [name, c] : entities) {
        if (s.substr(i).starts_with(name)) {
          out += c;
          i += name.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += s[i++];
  }
  return out;
}

/// The values of the href attributes in @p html, in order: one linear pass, no backtracking.
/// An attribute counts when "href" (any case) follows white space (so "data-href" does not),
/// then optional white space, '=', optional white space and a value: quoted with " or ', or
/// unquoted up to white space or '>'.
std::vector<std::string> extract_links(std::string_view html) {
  std::vector<std::string> links;
  std::size_t i = 0;
  while (i + 4 < html.size()) {
    // Find the next "href", case-insensitively.
    if (ascii_lower(html[i]) != 'h' || ascii_lower(html[i + 1]) != 'r' ||
        ascii_lower(html[i + 2]) != 'e' || ascii_lower(html[i + 3]) != 'f' || i == 0 ||
        !is_space(html[i - 1])) {
      ++i;
      continue;
    }
    std::size_t j = i + 4;
    while (j < html.size() && is_space(html[j])) ++j;
    if (j >= html.size() || html[j] != '=') {
      i = j;
      continue;
    }
    ++j;
    while (j < html.size() && is_space(html[j])) ++j;
    if (j >= html.size()) break;
    std::size_t begin = j;
    std::size_t end;
    if (html[j] == '"' || html[j] == '\'') {
      begin = j + 1;
      end = html.find(html[j], begin);
      if (end == std::string_view::npos) break;  // unterminated: the rest is not a link
      i = end + 1;
    } else {
      end = j;
      while (end < html.size() && !is_space(html[end]) && html[end] != '>') ++end;
      i = end;
    }
    if (end > begin) links.push_back(decode_entities(html.substr(begin, end - begin)));
  }
  return links;
}

// ---- The crawl ------------------------------------------------------------------------------

struct Crawl {
  Crawl(const Options& o, strata::HttpClientOptions client_options)
      : options(o),
        start(strata::HttpUrl::parse(o.url)),
        client(std::move(client_options)),
        slots(static_cast<std::int64_t>(o.concurrency)) {}

  /// Queues @p url unless seen before or on another host.
  void add(const strata::HttpUrl& url) {
    if (url.host != start.host || url.port != start.port) return;
    if (seen.insert(url.to_string()).second) frontier.push_back(url.to_string());
  }

  const Options& options;
  strata::HttpUrl start;
  strata::HttpClient client;
  strata::Semaphore slots;           // bounds the fetches in flight
  std::deque<std::string> frontier;  // to fetch, in order found
  std::unordered_set<std::string> seen;
  std::size_t scheduled = 0;  // fetches started
  std::size_t in_flight = 0;
  std::size_t pages = 0;   // fetched, whatever the status
  std::size_t errors = 0;  // failed to fetch
  std::uint64_t bytes = 0;
  bool start_fetched = false;
  strata::Event changed;  // a fetch ended
};

bool is_html(const strata::HttpClientResponse& response) {
  const std::optional<std::string_view> type = response.headers().get("content-type");
  if (!type) return true;
  std::string lower(*type);
  for (char& c : lower) c = ascii_lower(c);
  return lower.find("html") != std::string::npos;
}

/// Fetches @p url, counts it, queues its links; @p slot is its unit of Crawl::slots.
strata::Coro<void> fetch(Crawl& crawl, std::string url, strata::SemaphoreGuard slot) {
  try {
    strata::Coro<strata::HttpClientResponse> get = crawl.client.get(url);
    strata::HttpClientResponse response = co_await get;
    std::string body = co_await response.text();
    ++crawl.pages;
    crawl.bytes += body.size();
    if (url == crawl.start.to_string()) crawl.start_fetched = true;
    if (crawl.options.verbose) {
      std::printf("%d %s\n", response.status(), url.c_str());
      std::fflush(stdout);
    }
    const strata::HttpUrl base = strata::HttpUrl::parse(response.url());
    crawl.seen.insert(base.to_string());  // a redirect's target is not fetched again
    if (response.status() / 100 == 2 && is_html(response)) {
      for (const std::string& link : extract_links(body)) {
        try {
          crawl.add(base.resolve(link));
        } catch (const std::invalid_argument&) {
          // mailto:, javascript:, a malformed URL: not followed.
        }
      }
    }
  } catch (const std::exception& e) {
    ++crawl.errors;
    if (crawl.options.verbose) std::fprintf(stderr, "crawler: %s: %s\n", url.c_str(), e.what());
  }
  slot.release();
  --crawl.in_flight;
  crawl.changed.set();
}

/// Starts fetches while there is something to fetch, a free slot and pages left; returns when
/// nothing is in flight and nothing more will be started.
strata::Coro<void> dispatch(Crawl& crawl, strata::TaskGroup& group) {
  for (;;) {
    while (!crawl.frontier.empty() && crawl.scheduled < crawl.options.max_pages) {
      strata::SemaphoreGuard slot = co_await crawl.slots.acquire();
      std::string url = std::move(crawl.frontier.front());
      crawl.frontier.pop_front();
      ++crawl.scheduled;
      ++crawl.in_flight;
      group.create_task(fetch(crawl, std::move(url), std::move(slot)));
    }
    if (crawl.in_flight == 0) break;
    crawl.changed.clear();
    co_await crawl.changed.wait();
  }
}

strata::Coro<int> main_task(const Options& options) {
  strata::HttpClientOptions client_options;
  client_options.total_timeout = std::chrono::duration_cast<strata::Duration>(
      std::chrono::duration<double>(options.timeout_s));
  client_options.connect_timeout = client_options.total_timeout;
  client_options.max_connections_per_host = options.concurrency;
  client_options.max_body_bytes = std::uint64_t{16} << 20;
  client_options.ssl_context = options.ssl;
  Crawl crawl(options, std::move(client_options));

  const auto started = std::chrono::steady_clock::now();
  crawl.add(crawl.start);
  auto body = [&crawl](strata::TaskGroup& group) -> strata::Coro<void> {
    strata::Coro<void> d = dispatch(crawl, group);
    co_await d;
  };
  co_await strata::task_group(std::move(body));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  crawl.client.close();
  co_await crawl.client.wait_closed();

  std::printf("crawler: %zu pages fetched, %zu errors, %llu bytes, %.3f s, %.1f pages/s\n",
              crawl.pages, crawl.errors, static_cast<unsigned long long>(crawl.bytes), seconds,
              seconds > 0 ? static_cast<double>(crawl.pages) / seconds : 0.0);
  std::fflush(stdout);
  if (!crawl.start_fetched) {
    std::fprintf(stderr, "crawler: the start URL %s could not be fetched%s\n",
                 crawl.start.to_string().c_str(), options.verbose ? "" : " (see --verbose)");
    co_return 1;
  }
  co_return 0;
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
    std::fprintf(stderr, "crawler: %s\n", e.what());
    return 1;
  }
}
