// Fuzz target static_path: the static file server's path handling. The input's first line is a
// request target, what follows the line break a `Range` field value.
//
// What it checks:
// - normalize_request_path() (the public normaliser of http_static.hpp) equals a reference
//   written here from its documentation (percent-decoding per segment, "." and ".." resolved
//   after decoding, refusals for NUL, backslash, %2F, bad escapes, climbing above the root);
//   its result starts with '/', holds no NUL or backslash, no empty, "." or ".." segment (but
//   a trailing '/'), and re-normalising it, percent-encoded, gives it back.
// - The static_files() handler, on a directory made once per process (files, a subdirectory,
//   symbolic links that lead out of the root, absolutely and through "..", one that loops, one
//   inside the root), answers every target without escaping the root: a file it serves is
//   one of the regular files below the root, never the secret file beside it; without
//   follow_symlinks, one reached through no link; a path the normaliser refuses is a 400; a
//   301's Location holds no control byte. Four handlers: openat2(2) and the openat(2)
//   fallback, each following symbolic links or not. Targets with bytes llhttp never lets
//   through (control bytes, space) go to the normaliser only.
// - parse_range() on the Range value, for a few sizes: a partial range lies inside the
//   representation (first <= last < size).
#include <strata/core/coro.hpp>
#include <strata/core/task.hpp>
#include <strata/protocols/http_server.hpp>
#include <strata/protocols/http_static.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using namespace strata_fuzz;
namespace fs = std::filesystem;

// ---- The reference normaliser ------------------------------------------------------------------

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> reference_normalize(std::string_view raw) {
  raw = raw.substr(0, raw.find('?'));
  if (raw.empty() || raw.front() != '/') return std::nullopt;
  std::vector<std::string> segments;  // decoded
  std::size_t begin = 1;
  for (;;) {
    const std::size_t slash = raw.find('/', begin);
    const std::string_view s = raw.substr(begin, slash == std::string_view::npos ? std::string_view::npos
                                                                                  : slash - begin);
    std::string decoded;
    for (std::size_t i = 0; i < s.size(); ++i) {
      char c = s[i];
      if (c == '%') {
        if (i + 2 >= s.size()) return std::nullopt;  // not two more bytes
        const int hi = hex_value(s[i + 1]);
        const int lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        c = static_cast<char>(hi * 16 + lo);
        i += 2;
      }
      if (c == '\0' || c == '/' || c == '\\') return std::nullopt;
      decoded += c;
    }
    segments.push_back(std::move(decoded));
    if (slash == std::string_view::npos) break;
    begin = slash + 1;
  }
  std::vector<std::string> stack;
  bool trailing_slash = false;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::string& s = segments[i];
    const bool last = i + 1 == segments.size();
    if (s.empty() || s == ".") {
      trailing_slash = last;
    } else if (s == "..") {
      if (stack.empty()) return std::nullopt;  // above the root
      stack.pop_back();
      trailing_slash = last;
    } else {
      stack.push_back(s);
      trailing_slash = false;
    }
  }
  std::string out = "/";
  for (std::size_t i = 0; i < stack.size(); ++i) {
    out += stack[i];
    if (i + 1 < stack.size() || trailing_slash) out += '/';
  }
  return out;
}

/// @p path with every byte but unreserved ones and '/' percent-encoded.
std::string encode(std::string_view path) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : path) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '-' || c == '_' || c == '~' || c == '/';
    if (plain) {
      out += c;
    } else {
      const auto b = static_cast<unsigned char>(c);
      out += '%';
      out += hex[b >> 4];
      out += hex[b & 15];
    }
  }
  return out;
}

void check_normalize(std::string_view target) {
  const std::optional<std::string> got = strata::normalize_request_path(target);
  const std::optional<std::string> expected = reference_normalize(target);
  const std::string where = "target " + show_bytes(target) + "\ngot      " +
                            (got ? show_bytes(*got) : std::string("nullopt")) + "\nexpected " +
                            (expected ? show_bytes(*expected) : std::string("nullopt"));
  check(got == expected, "normalize_request_path() differs from the reference", where);
  if (!got) return;
  const std::string& p = *got;
  check(!p.empty() && p.front() == '/', "a normalised path that does not start with '/'", where);
  check(p.find('\0') == std::string::npos, "a NUL in a normalised path", where);
  check(p.find('\\') == std::string::npos, "a backslash in a normalised path", where);
  // Segments between the slashes: none empty (a trailing '/' aside), "." or "..".
  std::size_t begin = 1;
  while (begin < p.size()) {
    const std::size_t slash = std::min(p.find('/', begin), p.size());
    const std::string_view s = std::string_view(p).substr(begin, slash - begin);
    check(!s.empty() && s != "." && s != "..", "an empty, \".\" or \"..\" segment survived", where);
    begin = slash + 1;
  }
  const std::optional<std::string> again = strata::normalize_request_path(encode(p));
  check(again == got, "normalising the encoded result does not give it back",
        where + "\nagain    " + (again ? show_bytes(*again) : std::string("nullopt")));
}

// ---- The static files handler --------------------------------------------------------------------

/// The directory the handlers serve, made once: ROOT/{index.html, a.txt, sub/b.txt,
/// sub/index.html, link-out -> ../secret.txt, abs-out -> BASE/secret.txt, sub/up -> .., loop -> loop,
/// in-link -> a.txt}, and BASE/secret.txt beside ROOT.
struct Tree {
  std::string base;
  std::string root;
  std::set<std::pair<dev_t, ino_t>> files;  // the regular files below the root
  std::pair<dev_t, ino_t> secret{};
  std::vector<strata::HttpHandler> handlers;  // openat2 and fallback, following links or not
  std::vector<bool> follows;

  Tree() {
    char pattern[] = "/tmp/strata-fuzz-static-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made == nullptr) fail("mkdtemp failed");
    base = made;
    root = base + "/root";
    fs::create_directories(root + "/sub");
    auto write = [](const std::string& path, std::string_view text) {
      std::ofstream(path) << text;
    };
    write(base + "/secret.txt", "SECRET");
    write(root + "/index.html", "<p>index</p>");
    write(root + "/a.txt", "aaaa");
    write(root + "/sub/b.txt", "bbbbbbbbbb");
    write(root + "/sub/index.html", "<p>sub</p>");
    fs::create_symlink("../secret.txt", root + "/link-out");
    fs::create_symlink(base + "/secret.txt", root + "/abs-out");
    fs::create_symlink("..", root + "/sub/up");
    fs::create_symlink("loop", root + "/loop");
    fs::create_symlink("a.txt", root + "/in-link");
    secret = id_of(base + "/secret.txt");
    for (const char* f : {"/index.html", "/a.txt", "/sub/b.txt", "/sub/index.html"}) {
      files.insert(id_of(root + f));
    }
    for (const bool openat2 : {true, false}) {
      strata::detail::static_files_use_openat2(openat2);
      for (const bool follow : {true, false}) {
        strata::StaticFilesOptions options;
        options.follow_symlinks = follow;
        handlers.push_back(strata::static_files(root, options));
        follows.push_back(follow);
      }
    }
    strata::detail::static_files_use_openat2(true);
  }
  ~Tree() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }

  static std::pair<dev_t, ino_t> id_of(const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) fail("stat failed", path);
    return {st.st_dev, st.st_ino};
  }

  /// Whether some component of ROOT + @p normalized is a symbolic link.
  bool through_link(const std::string& normalized) const {
    std::string path = root;
    std::size_t begin = 1;
    while (begin < normalized.size()) {
      const std::size_t slash = std::min(normalized.find('/', begin), normalized.size());
      path += "/" + normalized.substr(begin, slash - begin);
      struct stat st{};
      if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return true;
      begin = slash + 1;
    }
    return false;
  }
};

Tree& tree() {
  static Tree t;
  return t;
}

/// Whether llhttp could hand the server this target: no control byte, space or DEL.
bool plausible_target(std::string_view target) {
  if (target.empty()) return false;
  for (const char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  return true;
}

void check_handlers(std::string_view target, std::string_view range) {
  Tree& t = tree();
  const std::optional<std::string> normalized = strata::normalize_request_path(target);
  std::vector<strata::HttpField> fields;
  if (!range.empty()) fields.push_back({"Range", std::string(range)});
  for (std::size_t i = 0; i < t.handlers.size(); ++i) {
    strata::HttpServerRequest request("GET", std::string(target), fields);
    const strata::HttpResponse r = loop().run_until_complete(t.handlers[i](request));
    const std::string where = "target " + show_bytes(target) + ", handler " + std::to_string(i) +
                              ", status " + std::to_string(r.status);
    static const std::set<int> statuses = {200, 206, 301, 304, 400, 403, 404, 416};
    check(statuses.count(r.status) != 0, "an unexpected status", where);
    if (!normalized) check(r.status == 400, "a path the normaliser refuses is not a 400", where);
    check((r.status == 200 || r.status == 206) == static_cast<bool>(r.file),
          "a file body without 200 or 206, or the reverse", where);
    if (r.file) {
      struct stat st{};
      check(::fstat(r.file.fd(), &st) == 0 && S_ISREG(st.st_mode), "served a non-regular file", where);
      const std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
      check(id != t.secret, "served the secret file outside the root", where);
      check(t.files.count(id) != 0, "served a file that is not below the root", where);
      if (!t.follows[i]) {
        check(!t.through_link(*normalized + (normalized->back() == '/' ? "index.html" : "")),
              "served a file through a symbolic link without follow_symlinks", where);
      }
    }
    for (const strata::HttpField& f : r.headers) {
      for (const char c : f.value) {
        const auto u = static_cast<unsigned char>(c);
        check(u >= 0x20 && u != 0x7f, "a control byte in a response field", where + " " + f.name);
      }
      if (f.name == "Location") check(f.value.starts_with('/'), "a Location not starting with '/'", where);
    }
  }
}

void check_range(std::string_view value) {
  for (const std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{100},
                                   ~std::uint64_t{0}}) {
    const strata::ByteRange r = strata::parse_range(value, size);
    if (r.kind == strata::ByteRange::Kind::partial) {
      check(r.first <= r.last && r.last < size, "a partial range outside the representation",
            show_bytes(value) + " size " + std::to_string(size) + ": " + std::to_string(r.first) + "-" +
                std::to_string(r.last));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = in.find('\n');
  const std::string_view target = in.substr(0, newline);
  const std::string_view range =
      newline == std::string_view::npos ? std::string_view{} : in.substr(newline + 1);
  check_normalize(target);
  check_range(range);
  const bool plausible_range = range.find_first_of("\r\n", 0) == std::string_view::npos;
  if (plausible_target(target)) check_handlers(target, plausible_range ? range : std::string_view{});
  return 0;
}
