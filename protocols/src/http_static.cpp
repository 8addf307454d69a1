// Static files: path normalisation, content types, byte ranges, and the handler that opens
// files below a root with openat2(2) so that the kernel keeps every lookup beneath it.
#include "strata/protocols/http_static.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "strata/protocols/http_date.hpp"
#include "strata/protocols/http_parser.hpp"

namespace strata {
namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// Percent-decodes one path segment (no raw '/' in it) into @p out; false for a bad escape
/// or a byte that no name may hold: NUL, '/', '\\'.
bool decode_segment(std::string_view raw, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size()) return false;
      const int hi = hex_value(raw[i + 1]);
      const int lo = hex_value(raw[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0' || c == '/' || c == '\\') return false;
    out.push_back(c);
  }
  return true;
}

char ascii_lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

/// 1*DIGIT, the whole of @p s, saturating at the largest value; nullopt for anything else.
std::optional<std::uint64_t> parse_digits(std::string_view s) noexcept {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  constexpr std::uint64_t max = ~std::uint64_t{0};
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<std::uint64_t>(c - '0');
    v = v > (max - d) / 10 ? max : v * 10 + d;
  }
  return v;
}

/// @p path percent-encoded for a Location field: every byte but unreserved, sub-delims, ':',
/// '@' and '/' (RFC 3986's pchar and the separator) becomes %XX.
std::string encode_path(std::string_view path) {
  static constexpr std::string_view keep = "-._~!$&'()*+,;=:@/";
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(path.size());
  for (const char c : path) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (alnum || keep.find(c) != std::string_view::npos) {
      out.push_back(c);
    } else {
      const auto b = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(hex[b >> 4]);
      out.push_back(hex[b & 15]);
    }
  }
  return out;
}

bool openat2_enabled = true;  // detail::static_files_use_openat2

/// A file descriptor closed on destruction unless released.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) noexcept : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

/// What one static_files() handler shares among its copies: the root's descriptor and how to
/// open below it.
class StaticRoot {
 public:
  StaticRoot(std::string root, StaticFilesOptions options) : options_(std::move(options)) {
    root_fd_ = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd_ < 0) {
      throw std::system_error(errno, std::system_category(), "static_files: open " + root);
    }
    use_openat2_ = openat2_enabled && probe_openat2();
    if (!use_openat2_) {
      // The fallback checks each opened file's real path against the root's.
      char buffer[PATH_MAX];
      if (::realpath(root.c_str(), buffer) == nullptr) {
        const int error = errno;
        ::close(root_fd_);
        throw std::system_error(error, std::system_category(), "static_files: realpath " + root);
      }
      root_real_ = buffer;
      if (root_real_ != "/") root_real_ += '/';
    }
  }
  ~StaticRoot() { ::close(root_fd_); }
  StaticRoot(const StaticRoot&) = delete;
  StaticRoot& operator=(const StaticRoot&) = delete;

  HttpResponse respond(HttpServerRequest& request) const;

 private:
  bool probe_openat2() const noexcept {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH;
    const long fd = ::syscall(SYS_openat2, root_fd_, ".", &how, sizeof how);
    if (fd >= 0) {
      ::close(static_cast<int>(fd));
      return true;
    }
    return false;  // ENOSYS (before Linux 5.6), EPERM or ENOSYS from a seccomp filter
  }

  /// Opens @p relative (no leading '/', no "." or ".." segment, not empty) below the root;
  /// returns the descriptor, or -errno.
  int open_below(const std::string& relative) const noexcept;

  StaticFilesOptions options_;
  int root_fd_ = -1;
  bool use_openat2_ = true;
  std::string root_real_;  // fallback only: the root's real path, ending in '/'
};

int StaticRoot::open_below(const std::string& relative) const noexcept {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, on the loop's
  // thread. O_NOCTTY: a terminal below the root never becomes the controlling one.
  constexpr int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  if (use_openat2_) {
    open_how how{};
    how.flags = flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    if (!options_.follow_symlinks) how.resolve |= RESOLVE_NO_SYMLINKS;
    for (int attempt = 0;; ++attempt) {
      const long fd = ::syscall(SYS_openat2, root_fd_, relative.c_str(), &how, sizeof how);
      if (fd >= 0) return static_cast<int>(fd);
      // EAGAIN: a rename or mount raced the lookup (RESOLVE_BENEATH); try again, a little.
      if ((errno == EAGAIN || errno == EINTR) && attempt < 3) continue;
      return -errno;
    }
  }

  // Fallback: open, then check where the descriptor really leads. Without follow_symlinks the
  // real path must be exactly the one asked for (no link anywhere on the way).
  int fd;
  do {
    fd = ::openat(root_fd_, relative.c_str(), flags | (options_.follow_symlinks ? 0 : O_NOFOLLOW));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  UniqueFd owned(fd);
  char link[32];
  char real[PATH_MAX];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = ::readlink(link, real, sizeof real);
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof real) return -EXDEV;  // cannot tell: refuse
  const std::string_view real_path(real, static_cast<std::size_t>(n));
  const std::string_view root_path = root_real_;
  const bool beneath = options_.follow_symlinks
                           ? real_path.substr(0, root_path.size()) == root_path ||
                                 real_path == root_path.substr(0, root_path.size() - 1)
                           : real_path.size() == root_path.size() + relative.size() &&
                                 real_path.substr(0, root_path.size()) == root_path &&
                                 real_path.substr(root_path.size()) == relative;
  if (!beneath) return -EXDEV;
  return owned.release();
}

/// The status for a failed open or a refused path.
int status_for_errno(int error) noexcept {
  switch (error) {
    case EACCES:
    case EPERM:
      return 403;
    case ENOENT:
    case ENOTDIR:
    case ELOOP:        // a link where none may be, or too many
    case EXDEV:        // a link that leads out of the root
    case ENAMETOOLONG:
    case ENXIO:        // a socket, or a device that is not there
    case ENODEV:
    case EISDIR:
      return 404;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return 503;
    default:
      return 500;
  }
}

HttpResponse StaticRoot::respond(HttpServerRequest& request) const {
  const std::string_view method = request.method();
  const bool is_get = method == "GET";
  if (!is_get && method != "HEAD") {
    HttpResponse response = HttpResponse::error(405);
    response.add_header("Allow", "GET, HEAD");
    return response;
  }

  const std::optional<std::string> path = normalize_request_path(request.path());
  if (!path) return HttpResponse::error(400);

  const bool names_directory = path->back() == '/';
  std::string relative = path->substr(1);
  if (names_directory) {
    if (options_.index.empty()) return HttpResponse::error(404);
    relative += options_.index;
  }

  const int fd = open_below(relative);
  if (fd < 0) return HttpResponse::error(status_for_errno(-fd));
  UniqueFd file(fd);
  struct stat st{};
  if (::fstat(file.get(), &st) != 0) return HttpResponse::error(status_for_errno(errno));

  if (S_ISDIR(st.st_mode) && !names_directory) {
    HttpResponse response;
    response.status = 301;
    std::string location = encode_path(*path);
    location += '/';
    if (!request.query().empty()) {
      location += '?';
      location += request.query();
    }
    response.add_header("Location", std::move(location));
    return response;
  }
  if (!S_ISREG(st.st_mode)) return HttpResponse::error(404);
  // Reads of a regular file never wait for O_NONBLOCK's sake; clear it all the same (F_SETFL
  // leaves the access mode alone), so the descriptor is an ordinary one for whatever sends it.
  ::fcntl(file.get(), F_SETFL, 0);

  const auto size = static_cast<std::uint64_t>(st.st_size);
  char date[http_date_length];
  const std::string last_modified(format_http_date(st.st_mtim.tv_sec, date));
  const HttpHeaders& headers = request.headers();

  // Conditional requests, in the order of RFC 9110 §13.2.2 (no ETag, so If-Match and
  // If-Unmodified-Since have nothing this server would refuse; they are not evaluated).
  bool not_modified = false;
  if (const auto none_match = headers.get("If-None-Match")) {
    not_modified = trim_ows(*none_match) == "*";
  } else if (const auto since = headers.get("If-Modified-Since");
             since && headers.count("If-Modified-Since") == 1) {
    const std::optional<std::time_t> date_since = parse_http_date(*since);
    not_modified = date_since && st.st_mtim.tv_sec <= *date_since;
  }
  if (not_modified) {
    HttpResponse response;
    response.status = 304;
    response.add_header("Last-Modified", last_modified);
    return response;
  }

  ByteRange range;
  if (is_get && !headers.contains("If-Range") && headers.count("Range") == 1) {
    range = parse_range(*headers.get("Range"), size);
  }
  if (range.kind == ByteRange::Kind::unsatisfiable) {
    HttpResponse response = HttpResponse::error(416);
    response.add_header("Content-Range", "bytes */" + std::to_string(size));
    response.add_header("Accept-Ranges", "bytes");
    return response;
  }

  HttpResponse response;
  response.content_type = content_type_for(relative);  // the index file's name for a directory
  response.add_header("Last-Modified", last_modified);
  response.add_header("Accept-Ranges", "bytes");
  if (range.kind == ByteRange::Kind::partial) {
    response.status = 206;
    response.add_header("Content-Range", "bytes " + std::to_string(range.first) + '-' +
                                             std::to_string(range.last) + '/' +
                                             std::to_string(size));
    response.file = HttpFileBody(file.release(), range.first, range.length());
  } else {
    response.file = HttpFileBody(file.release(), 0, size);
  }
  return response;
}

// The handler's coroutine: everything is synchronous (metadata system calls only), but it runs
// inside the coroutine so that an exception reaches the server as a handler's exception.
Coro<HttpResponse> serve(std::shared_ptr<const StaticRoot> root, HttpServerRequest& request) {
  co_return root->respond(request);
}

}  // namespace

std::optional<std::string> normalize_request_path(std::string_view raw_path) {
  if (const auto query = raw_path.find('?'); query != std::string_view::npos) {
    raw_path = raw_path.substr(0, query);
  }
  if (raw_path.empty() || raw_path.front() != '/') return std::nullopt;

  // Invariant: before each segment, out ends with '/'.
  std::string out = "/";
  out.reserve(raw_path.size());
  std::string segment;
  std::size_t begin = 1;
  while (true) {
    std::size_t end = raw_path.find('/', begin);
    const bool last = end == std::string_view::npos;
    if (last) end = raw_path.size();
    if (!decode_segment(raw_path.substr(begin, end - begin), segment)) return std::nullopt;
    if (segment.empty() || segment == ".") {
      // "//" collapses; "." names the directory itself.
    } else if (segment == "..") {
      if (out.size() == 1) return std::nullopt;  // above the root
      out.pop_back();
      out.erase(out.rfind('/') + 1);
    } else {
      out += segment;
      if (!last) out += '/';
    }
    if (last) break;
    begin = end + 1;
  }
  return out;
}

std::string_view content_type_for(std::string_view path) noexcept {
  constexpr std::string_view fallback = "application/octet-stream";
  const std::size_t slash = path.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return fallback;
  const std::string_view extension = name.substr(dot + 1);
  std::array<char, 8> lower{};
  if (extension.empty() || extension.size() > lower.size()) return fallback;
  for (std::size_t i = 0; i < extension.size(); ++i) lower[i] = ascii_lower(extension[i]);
  const std::string_view ext(lower.data(), extension.size());

  struct Entry {
    std::string_view extension;
    std::string_view type;
  };
  static constexpr Entry table[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"css", "text/css"},
      {"js", "text/javascript"},
      {"mjs", "text/javascript"},
      {"json", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
      {"xml", "application/xml"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"wasm", "application/wasm"},
      {"pdf", "application/pdf"},
      {"woff", "font/woff"},
      {"woff2", "font/woff2"},
      {"mp4", "video/mp4"},
      {"webm", "video/webm"},
      {"mp3", "audio/mpeg"},
      {"zip", "application/zip"},
      {"gz", "application/gzip"},
      {"tar", "application/x-tar"},
  };
  for (const Entry& entry : table) {
    if (entry.extension == ext) return entry.type;
  }
  return fallback;
}

ByteRange parse_range(std::string_view header_value, std::uint64_t size) noexcept {
  const ByteRange whole;
  const std::string_view value = trim_ows(header_value);
  const std::size_t equals = value.find('=');
  if (equals == std::string_view::npos || !http_iequals(value.substr(0, equals), "bytes")) {
    return whole;
  }

  // range-set = 1#range-spec: exactly one non-empty element is served; more than one is
  // answered with the whole representation (no multipart/byteranges).
  std::string_view spec;
  std::string_view rest = value.substr(equals + 1);
  std::size_t elements = 0;
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view element = trim_ows(rest.substr(0, comma));
    if (!element.empty()) {
      ++elements;
      spec = element;
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (elements != 1) return whole;

  const std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return whole;
  if (dash == 0) {  // suffix-range = "-" suffix-length
    const std::optional<std::uint64_t> suffix = parse_digits(spec.substr(1));
    if (!suffix) return whole;
    if (*suffix == 0) return {ByteRange::Kind::unsatisfiable, 0, 0};
    if (size == 0) return whole;
    return {ByteRange::Kind::partial, *suffix >= size ? 0 : size - *suffix, size - 1};
  }
  // int-range = first-pos "-" [ last-pos ]
  const std::optional<std::uint64_t> first = parse_digits(spec.substr(0, dash));
  if (!first) return whole;
  std::uint64_t last = ~std::uint64_t{0};
  if (dash + 1 < spec.size()) {
    const std::optional<std::uint64_t> last_pos = parse_digits(spec.substr(dash + 1));
    if (!last_pos || *last_pos < *first) return whole;  // invalid: the field is ignored
    last = *last_pos;
  }
  if (*first >= size) return {ByteRange::Kind::unsatisfiable, 0, 0};
  return {ByteRange::Kind::partial, *first, last < size ? last : size - 1};
}

HttpHandler static_files(std::string root, StaticFilesOptions options) {
  auto shared = std::make_shared<const StaticRoot>(std::move(root), std::move(options));
  return [shared = std::move(shared)](HttpServerRequest& request) {
    return serve(shared, request);
  };
}

namespace detail {
void static_files_use_openat2(bool enabled) noexcept { openat2_enabled = enabled; }
}  // namespace detail

}  // namespace strata
