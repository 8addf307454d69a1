#include <strata/protocols/http_static.hpp>

#include <catch2/catch.hpp>

#include "loop_test.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/protocols/http_date.hpp>
#include <strata/protocols/http_server.hpp>

namespace {

namespace fs = std::filesystem;

using strata::ByteRange;
using strata::HttpField;
using strata::HttpHandler;
using strata::HttpResponse;
using strata::HttpServerRequest;
using strata::StaticFilesOptions;
using Kind = ByteRange::Kind;

// ---- the pure functions --------------------------------------------------------------------

std::string show(const std::optional<std::string>& s) { return s ? "\"" + *s + "\"" : "nullopt"; }

}  // namespace

TEST_CASE("normalize_request_path: decodes, collapses and resolves dot segments",
          "[protocols][http_static]") {
  const auto [raw, expected] = GENERATE(table<std::string_view, std::string_view>({
      {"/", "/"},
      {"/index.html", "/index.html"},
      {"/a/b/c", "/a/b/c"},
      {"/a/b/", "/a/b/"},
      {"//a///b//", "/a/b/"},
      {"//", "/"},
      {"/a/./b", "/a/b"},
      {"/a/.", "/a/"},
      {"/a/..", "/"},
      {"/a/../", "/"},
      {"/a/../b", "/b"},
      {"/a/b/../../c", "/c"},
      {"/./", "/"},
      {"/.", "/"},
      {"/a/%2e/b", "/a/b"},
      {"/a/%2e%2e/b", "/b"},
      {"/a/%2E%2E/b", "/b"},
      {"/a/.%2e/b", "/b"},
      {"/a/%2e./b", "/b"},
      {"/%41%42c", "/ABc"},
      {"/a%20b", "/a b"},
      {"/caf%C3%A9", "/caf\xC3\xA9"},
      {"/a+b", "/a+b"},                        // '+' is no space in a path
      {"/%252e", "/%2e"},                      // double encoding stays a literal name
      {"/%252e%252e/x", "/%2e%2e/x"},
      {"/%25%32%65%25%32%65/x", "/%2e%2e/x"},  // so does this spelling of it
      {"/%252F", "/%2F"},
      {"/...", "/..."},
      {"/..a", "/..a"},
      {"/a..", "/a.."},
      {"/a..b/", "/a..b/"},
      {"/.hidden", "/.hidden"},
      {"/a?x=/../..", "/a"},                   // the query is not part of the path
      {"/a/b?", "/a/b"},
  }));
  INFO("raw: " << raw);
  CHECK(show(strata::normalize_request_path(raw)) == show(std::string(expected)));
}

TEST_CASE("normalize_request_path: refuses escapes, encoded separators, NUL and bad escapes",
          "[protocols][http_static]") {
  const std::string_view raw = GENERATE(as<std::string_view>{},
      "",
      "a",
      "*",
      "http://host/x",     // not a path
      "/..",
      "/../",
      "/../a",
      "/a/../..",
      "/a/../../b",
      "/./../x",
      "//../x",
      "/%2e%2e",
      "/%2E%2E/",
      "/.%2e/etc/passwd",
      "/%2e%2e/%2e%2e/etc/passwd",
      "/a/%2e%2e/%2e%2e/b",
      "/%2E%2E%2Fetc%2Fpasswd",  // encoded separator
      "/..%2f",
      "/..%2Fetc/passwd",
      "/a%2fb",
      "/%2F",
      "/a\\b",                   // backslash, plain or encoded
      "/..\\",
      "/..\\etc\\passwd",
      "/a%5cb",
      "/..%5C..%5Cetc",
      "/a%00",                   // NUL
      "/%00/x",
      "/%",                      // bad escapes
      "/%2",
      "/a%2",
      "/%g0",
      "/%0g",
      "/%%32%65",
      "/% 2e");
  INFO("raw: " << raw);
  CHECK(show(strata::normalize_request_path(raw)) == "nullopt");
}

TEST_CASE("normalize_request_path: a raw NUL byte is refused", "[protocols][http_static]") {
  using namespace std::string_view_literals;
  CHECK_FALSE(strata::normalize_request_path("/a\0b"sv));
  CHECK_FALSE(strata::normalize_request_path("/\0"sv));
}

TEST_CASE("content_type_for: by extension, case-insensitive, octet-stream otherwise",
          "[protocols][http_static]") {
  const auto [path, type] = GENERATE(table<std::string_view, std::string_view>({
      {"/a.html", "text/html; charset=utf-8"},
      {"/A.HTML", "text/html; charset=utf-8"},
      {"/x.htm", "text/html; charset=utf-8"},
      {"/s.css", "text/css"},
      {"/a.js", "text/javascript"},
      {"/m.MJS", "text/javascript"},
      {"/d.json", "application/json"},
      {"/r.txt", "text/plain; charset=utf-8"},
      {"/x.xml", "application/xml"},
      {"/i.svg", "image/svg+xml"},
      {"/p.png", "image/png"},
      {"/p.jpg", "image/jpeg"},
      {"/p.JPEG", "image/jpeg"},
      {"/g.gif", "image/gif"},
      {"/w.webp", "image/webp"},
      {"/favicon.ico", "image/x-icon"},
      {"/m.wasm", "application/wasm"},
      {"/d.pdf", "application/pdf"},
      {"/f.woff", "font/woff"},
      {"/f.woff2", "font/woff2"},
      {"/v.mp4", "video/mp4"},
      {"/v.webm", "video/webm"},
      {"/a.mp3", "audio/mpeg"},
      {"/z.zip", "application/zip"},
      {"/t.tar.gz", "application/gzip"},
      {"/t.tar", "application/x-tar"},
      {"index.html", "text/html; charset=utf-8"},  // no directory at all
      {"/dir.html/", "application/octet-stream"},  // the last segment is empty
      {"/README", "application/octet-stream"},
      {"/.profile", "application/octet-stream"},   // a leading dot is no extension
      {"/.html", "application/octet-stream"},
      {"/dir.d/file", "application/octet-stream"},
      {"/a.", "application/octet-stream"},
      {"/a.exe", "application/octet-stream"},
      {"/a.htmlx", "application/octet-stream"},
      {"/a.verylongextension", "application/octet-stream"},
      {"", "application/octet-stream"},
      {"/", "application/octet-stream"},
  }));
  INFO("path: " << path);
  CHECK(strata::content_type_for(path) == type);
}

TEST_CASE("parse_range: one byte range of RFC 9110 §14.1.1, clamped to the size",
          "[protocols][http_static]") {
  const auto [value, size, kind, first, last] =
      GENERATE(table<std::string_view, std::uint64_t, Kind, std::uint64_t, std::uint64_t>({
          {"bytes=0-499", 10000, Kind::partial, 0, 499},
          {"bytes=500-999", 10000, Kind::partial, 500, 999},
          {"bytes=-500", 10000, Kind::partial, 9500, 9999},
          {"bytes=9500-", 10000, Kind::partial, 9500, 9999},
          {"bytes=0-0", 10000, Kind::partial, 0, 0},
          {"bytes=-1", 10000, Kind::partial, 9999, 9999},
          {"bytes=9999-9999", 10000, Kind::partial, 9999, 9999},
          {"bytes=0-99999", 10000, Kind::partial, 0, 9999},
          {"bytes=-20000", 10000, Kind::partial, 0, 9999},
          {"bytes=-10000", 10000, Kind::partial, 0, 9999},
          {"bytes=0-99999999999999999999999", 10000, Kind::partial, 0, 9999},
          {"bytes=-99999999999999999999999", 10000, Kind::partial, 0, 9999},
          {"bytes=18446744073709551614-", 18446744073709551615u, Kind::partial,
           18446744073709551614u, 18446744073709551614u},
          {"BYTES=0-1", 10000, Kind::partial, 0, 1},
          {"Bytes=2-3", 10000, Kind::partial, 2, 3},
          {"  bytes=0-1 \t", 10000, Kind::partial, 0, 1},  // OWS around the field value
          {"bytes= 0-1 ", 10000, Kind::partial, 0, 1},     // and around list elements
          {"bytes=,0-1", 10000, Kind::partial, 0, 1},      // empty list elements
          {"bytes=0-1,,", 10000, Kind::partial, 0, 1},
          {"bytes= , 0-1 ,\t", 10000, Kind::partial, 0, 1},
          {"bytes=0-", 1, Kind::partial, 0, 0},
          {"bytes=-5", 1, Kind::partial, 0, 0},
      }));
  INFO("Range: " << value << ", size " << size);
  CHECK(strata::parse_range(value, size) == ByteRange{kind, first, last});
  CHECK(strata::parse_range(value, size).length() == last - first + 1);
}

TEST_CASE("parse_range: a range past the end, or an empty suffix, is unsatisfiable",
          "[protocols][http_static]") {
  const auto [value, size] = GENERATE(table<std::string_view, std::uint64_t>({
      {"bytes=10000-", 10000},
      {"bytes=10000-10001", 10000},
      {"bytes=20000-30000", 10000},
      {"bytes=-0", 10000},
      {"bytes=-000", 10000},
      {"bytes=99999999999999999999999-", 10000},
      {"bytes=0-", 0},  // an empty file has no first byte
      {"bytes=0-0", 0},
      {"bytes=-0", 0},
  }));
  INFO("Range: " << value << ", size " << size);
  CHECK(strata::parse_range(value, size).kind == Kind::unsatisfiable);
}

TEST_CASE("parse_range: malformed, invalid, other units and several ranges mean the whole",
          "[protocols][http_static]") {
  const auto [value, size] = GENERATE(table<std::string_view, std::uint64_t>({
      {"", 10000},
      {"bytes", 10000},
      {"bytes=", 10000},
      {"bytes=,", 10000},
      {"bytes= , ", 10000},
      {"=0-1", 10000},
      {"items=0-1", 10000},
      {"byte=0-1", 10000},
      {"bytes =0-1", 10000},  // no white space around '=' or '-'
      {"bytes= 0 -1", 10000},
      {"bytes=0- 1", 10000},
      {"bytes=abc", 10000},
      {"bytes=1", 10000},
      {"bytes=-", 10000},
      {"bytes=--1", 10000},
      {"bytes=+1-2", 10000},
      {"bytes=1-+2", 10000},
      {"bytes=1--2", 10000},
      {"bytes=-1-2", 10000},
      {"bytes=1-2-3", 10000},
      {"bytes=0x10-", 10000},
      {"bytes=1.5-2", 10000},
      {"bytes=5-2", 10000},  // last before first: an invalid range-spec
      {"bytes=0-1,2-3", 10000},  // several ranges: no multipart here
      {"bytes=0-1, -5", 10000},
      {"bytes=0-1,0-1", 10000},
      {"bytes=0-1;2-3", 10000},
      {"bytes=-5", 0},  // a suffix of an empty file: nothing to name in Content-Range
  }));
  INFO("Range: '" << value << "', size " << size);
  CHECK(strata::parse_range(value, size) == ByteRange{});
}

// ---- the handler ---------------------------------------------------------------------------

namespace {

constexpr std::time_t hello_mtime = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT
constexpr std::string_view hello_text = "Hello, static!\n";
constexpr std::string_view secret_text = "outside the root\n";

void write_file(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  REQUIRE(out.good());
}

std::string data_bytes() {
  std::string data(1000, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i % 251);
  return data;
}

/// A temporary tree: BASE/root is served, BASE/outside is its sibling that must never be.
///
///   root/hello.txt (mtime hello_mtime)   root/page.html   root/App.JS   root/data.bin (1000 B)
///   root/empty.txt   root/a b.txt   root/%2e (a file named so)   root/pipe (a FIFO)
///   root/sub/index.html   root/sub/other.css   root/noindex/   root/odd dir/index.html
///   root/link-in.txt -> hello.txt   root/link-sub -> sub   root/sub/up.txt -> ../hello.txt
///   root/link-out.txt -> ../outside/secret.txt   root/link-outdir -> ../outside
///   root/link-abs -> BASE/outside/secret.txt     root/link-passwd -> /etc/passwd
///   root/link-proc -> /proc/self/root/etc/passwd
///   outside/secret.txt
class StaticTree {
 public:
  StaticTree() {
    std::string templ = (fs::temp_directory_path() / "strata-static-XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    base = templ;
    root = base / "root";
    const fs::path outside = base / "outside";
    fs::create_directories(root / "sub");
    fs::create_directories(root / "noindex");
    fs::create_directories(root / "odd dir");
    fs::create_directories(outside);

    write_file(root / "hello.txt", hello_text);
    write_file(root / "page.html", "<p>page</p>\n");
    write_file(root / "App.JS", "console.log(1);\n");
    write_file(root / "data.bin", data_bytes());
    write_file(root / "empty.txt", "");
    write_file(root / "a b.txt", "spaced\n");
    write_file(root / "%2e", "double-encoded name\n");
    write_file(root / "sub" / "index.html", "<p>sub index</p>\n");
    write_file(root / "sub" / "other.css", "p {}\n");
    write_file(root / "odd dir" / "index.html", "<p>odd</p>\n");
    write_file(outside / "secret.txt", secret_text);
    REQUIRE(::mkfifo((root / "pipe").c_str(), 0644) == 0);

    fs::create_symlink("hello.txt", root / "link-in.txt");
    fs::create_directory_symlink("sub", root / "link-sub");
    fs::create_symlink("../hello.txt", root / "sub" / "up.txt");
    fs::create_symlink("../outside/secret.txt", root / "link-out.txt");
    fs::create_directory_symlink("../outside", root / "link-outdir");
    fs::create_symlink(outside / "secret.txt", root / "link-abs");
    fs::create_symlink("/etc/passwd", root / "link-passwd");
    fs::create_symlink("/proc/self/root/etc/passwd", root / "link-proc");

    const timespec times[2] = {{hello_mtime, 0}, {hello_mtime, 0}};
    REQUIRE(::utimensat(AT_FDCWD, (root / "hello.txt").c_str(), times, 0) == 0);
  }
  ~StaticTree() {
    std::error_code ec;
    fs::permissions(root / "locked.txt", fs::perms::owner_all, ec);
    fs::remove_all(base, ec);
  }
  StaticTree(const StaticTree&) = delete;
  StaticTree& operator=(const StaticTree&) = delete;

  fs::path base;
  fs::path root;
};

/// Sets whether static_files() may use openat2 for as long as it lives.
class Openat2Guard {
 public:
  explicit Openat2Guard(bool enabled) { strata::detail::static_files_use_openat2(enabled); }
  ~Openat2Guard() { strata::detail::static_files_use_openat2(true); }
  Openat2Guard(const Openat2Guard&) = delete;
  Openat2Guard& operator=(const Openat2Guard&) = delete;
};

/// Calls @p handler with a request made by hand, on @p loop.
HttpResponse call(strata::testing::TestLoop& loop, const HttpHandler& handler,
                  std::string_view method, std::string target,
                  std::vector<HttpField> headers = {}) {
  HttpServerRequest request(method, std::move(target), std::move(headers));
  return loop.run(handler(request));
}

HttpResponse get(strata::testing::TestLoop& loop, const HttpHandler& handler, std::string target,
                 std::vector<HttpField> headers = {}) {
  return call(loop, handler, "GET", std::move(target), std::move(headers));
}

/// The value of the first header field named @p name, or nullopt.
std::optional<std::string> header(const HttpResponse& response, std::string_view name) {
  for (const HttpField& field : response.headers) {
    if (strata::http_iequals(field.name, name)) return field.value;
  }
  return std::nullopt;
}

/// The bytes the file body names, read back with pread(2).
std::string file_bytes(const HttpResponse& response) {
  REQUIRE(response.file);
  std::string out(response.file.length(), '\0');
  const ssize_t n = ::pread(response.file.fd(), out.data(), out.size(),
                            static_cast<off_t>(response.file.offset()));
  const int error = errno;
  INFO("pread(fd " << response.file.fd() << "): "
                   << (n < 0 ? std::strerror(error) : "read " + std::to_string(n) + " bytes"));
  REQUIRE(n == static_cast<ssize_t>(out.size()));
  return out;
}

/// The response serves nothing from outside the root (and no file at all).
void check_refused(const HttpResponse& response, std::initializer_list<int> statuses) {
  INFO("status " << response.status);
  CHECK(std::find(statuses.begin(), statuses.end(), response.status) != statuses.end());
  CHECK_FALSE(response.file);
  CHECK(response.body.find("outside the root") == std::string::npos);
  CHECK(response.body.find("root:") == std::string::npos);
}

}  // namespace

STRATA_LOOP_TEST_CASE("static_files: a file is served with its type, Last-Modified and length",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());

  HttpResponse r = get(loop, handler, "/hello.txt");
  CHECK(r.status == 200);
  CHECK(r.content_type == "text/plain; charset=utf-8");
  CHECK(header(r, "Last-Modified") == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(header(r, "Accept-Ranges") == "bytes");
  CHECK_FALSE(header(r, "Content-Range"));
  CHECK(r.body.empty());
  CHECK(r.file.offset() == 0);
  CHECK(r.file.length() == hello_text.size());
  CHECK(file_bytes(r) == hello_text);

  // HEAD: the handler answers as for GET; the server leaves the body out.
  r = call(loop, handler, "HEAD", "/hello.txt");
  CHECK(r.status == 200);
  CHECK(r.file.length() == hello_text.size());
  CHECK(header(r, "Last-Modified") == "Sun, 06 Nov 1994 08:49:37 GMT");

  r = get(loop, handler, "/page.html");
  CHECK(r.status == 200);
  CHECK(r.content_type == "text/html; charset=utf-8");
  r = get(loop, handler, "/App.JS");
  CHECK(r.content_type == "text/javascript");
  r = get(loop, handler, "/data.bin");
  CHECK(r.content_type == "application/octet-stream");
  CHECK(file_bytes(r) == data_bytes());

  r = get(loop, handler, "/empty.txt");
  CHECK(r.status == 200);
  CHECK(r.file);
  CHECK(r.file.length() == 0);

  // Names that take decoding, and spellings of /hello.txt that normalise to it.
  CHECK(file_bytes(get(loop, handler, "/a%20b.txt")) == "spaced\n");
  CHECK(file_bytes(get(loop, handler, "/%252e")) == "double-encoded name\n");
  for (const char* target : {"/hello.txt?x=1", "//hello.txt", "/./hello.txt", "/sub/../hello.txt",
                             "/sub/%2e%2e/hello.txt", "/%68ello.txt", "/nope/../hello.txt"}) {
    INFO(target);
    r = get(loop, handler, target);
    CHECK(r.status == 200);
    CHECK(file_bytes(r) == hello_text);
  }
}

STRATA_LOOP_TEST_CASE("static_files: a directory serves its index, and 301 adds the slash",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());

  HttpResponse r = get(loop, handler, "/sub/");
  CHECK(r.status == 200);
  CHECK(r.content_type == "text/html; charset=utf-8");
  CHECK(file_bytes(r) == "<p>sub index</p>\n");
  CHECK(file_bytes(get(loop, handler, "/odd%20dir/")) == "<p>odd</p>\n");

  const auto [target, location] = GENERATE(table<std::string, std::string>({
      {"/sub", "/sub/"},
      {"/sub?q=1&r=/x", "/sub/?q=1&r=/x"},
      {"/sub?", "/sub/"},
      {"//sub", "/sub/"},                  // never "//sub/", which a browser reads as a host
      {"/hello.txt/../sub", "/sub/"},
      {"/odd%20dir", "/odd%20dir/"},       // percent-encoded again
      {"/link-sub", "/link-sub/"},
  }));
  INFO(target);
  r = get(loop, handler, target);
  CHECK(r.status == 301);
  CHECK(header(r, "Location") == location);
  CHECK_FALSE(r.file);

  // No index: 404, never a listing. "/" itself has none in this tree.
  check_refused(get(loop, handler, "/noindex/"), {404});
  check_refused(get(loop, handler, "/"), {404});
  // A file named as a directory.
  check_refused(get(loop, handler, "/hello.txt/"), {404});
}

STRATA_LOOP_TEST_CASE("static_files: the index file name is an option; empty means none",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;

  StaticFilesOptions css;
  css.index = "other.css";
  HttpResponse r = get(loop, strata::static_files(tree.root.string(), css), "/sub/");
  CHECK(r.status == 200);
  CHECK(r.content_type == "text/css");
  CHECK(file_bytes(r) == "p {}\n");

  StaticFilesOptions none;
  none.index.clear();
  const HttpHandler handler = strata::static_files(tree.root.string(), none);
  check_refused(get(loop, handler, "/sub/"), {404});
  CHECK(get(loop, handler, "/sub").status == 301);
  CHECK(get(loop, handler, "/sub/index.html").status == 200);
}

STRATA_LOOP_TEST_CASE("static_files: missing is 404, and no escape, plain or encoded, is served",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());

  check_refused(get(loop, handler, "/nope.txt"), {404});
  check_refused(get(loop, handler, "/sub/nope/"), {404});
  // Double encoding is a literal name, which does not exist.
  check_refused(get(loop, handler, "/%252e%252e/outside/secret.txt"), {404});

  const std::string target = GENERATE(as<std::string>{},
      "/../outside/secret.txt",
      "/sub/../../outside/secret.txt",
      "/%2e%2e/outside/secret.txt",
      "/%2E%2E/outside/secret.txt",
      "/.%2e/outside/secret.txt",
      "/%2e%2e%2foutside%2fsecret.txt",
      "/%2E%2E%2Foutside%2Fsecret.txt",
      "/..%2foutside/secret.txt",
      "/..%2Foutside%2Fsecret.txt",
      "/sub/%2e%2e/%2e%2e/outside/secret.txt",
      "/..\\outside\\secret.txt",
      "/%2e%2e%5coutside%5csecret.txt",
      "/hello.txt%00.html",
      "/%",
      "/%zz",
      "*");
  INFO(target);
  check_refused(get(loop, handler, target), {400, 404});
}

STRATA_LOOP_TEST_CASE("static_files: symbolic links are followed below the root, never out of it",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const bool openat2 = GENERATE(true, false);
  INFO((openat2 ? "openat2" : "fallback: openat and /proc/self/fd"));
  const Openat2Guard guard(openat2);
  const HttpHandler handler = strata::static_files(tree.root.string());

  HttpResponse r = get(loop, handler, "/link-in.txt");
  CHECK(r.status == 200);
  CHECK(file_bytes(r) == hello_text);
  CHECK(r.content_type == "text/plain; charset=utf-8");
  CHECK(file_bytes(get(loop, handler, "/link-sub/")) == "<p>sub index</p>\n");
  CHECK(file_bytes(get(loop, handler, "/link-sub/other.css")) == "p {}\n");
  CHECK(file_bytes(get(loop, handler, "/link-sub/up.txt")) == hello_text);

  for (const char* target : {"/link-out.txt", "/link-outdir/secret.txt", "/link-outdir/",
                             "/link-abs", "/link-passwd", "/link-proc"}) {
    INFO(target);
    check_refused(get(loop, handler, target), {404});
  }

  // Without follow_symlinks, no link is followed, even one that stays inside.
  StaticFilesOptions no_links;
  no_links.follow_symlinks = false;
  const HttpHandler strict = strata::static_files(tree.root.string(), no_links);
  CHECK(file_bytes(get(loop, strict, "/hello.txt")) == hello_text);
  CHECK(file_bytes(get(loop, strict, "/sub/")) == "<p>sub index</p>\n");
  for (const char* target : {"/link-in.txt", "/link-sub/", "/link-sub/other.css", "/sub/up.txt",
                             "/link-out.txt", "/link-outdir/secret.txt", "/link-passwd"}) {
    INFO(target);
    check_refused(get(loop, strict, target), {404});
  }
}

STRATA_LOOP_TEST_CASE("static_files: a FIFO is 404 at once, and an unreadable file 403",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());

  // Opening a FIFO for reading would wait for a writer; the handler must not.
  check_refused(get(loop, handler, "/pipe"), {404});

  write_file(tree.root / "locked.txt", "locked\n");
  fs::permissions(tree.root / "locked.txt", fs::perms::none);
  // Root (CAP_DAC_OVERRIDE) reads any file whatever its mode, so there is nothing to check.
  if (::geteuid() != 0) {
    check_refused(get(loop, handler, "/locked.txt"), {403});
  } else {
    CHECK(get(loop, handler, "/locked.txt").status == 200);
  }
}

STRATA_LOOP_TEST_CASE("static_files: If-Modified-Since no earlier than the mtime gives 304",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());
  const std::string modified = "Sun, 06 Nov 1994 08:49:37 GMT";

  for (const char* since : {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                            "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:38 GMT",
                            "Fri, 01 Jan 2100 00:00:00 GMT"}) {
    INFO(since);
    const HttpResponse r = get(loop, handler, "/hello.txt", {{"If-Modified-Since", since}});
    CHECK(r.status == 304);
    CHECK_FALSE(r.file);
    CHECK(r.body.empty());
    CHECK(header(r, "Last-Modified") == modified);
  }
  CHECK(call(loop, handler, "HEAD", "/hello.txt", {{"If-Modified-Since", modified}}).status ==
        304);

  // Earlier, invalid, or overridden by If-None-Match: the file.
  for (const std::vector<HttpField>& headers : std::vector<std::vector<HttpField>>{
           {{"If-Modified-Since", "Sun, 06 Nov 1994 08:49:36 GMT"}},
           {{"If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT"}},
           {{"If-Modified-Since", "yesterday"}},
           {{"If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 gmt"}},
           {{"If-Modified-Since", modified}, {"If-Modified-Since", modified}},
           {{"If-None-Match", "\"abc\""}, {"If-Modified-Since", modified}},
           {{"If-Modified-Since", modified}, {"If-None-Match", "W/\"x\", \"y\""}},
       }) {
    INFO(headers.front().name << ": " << headers.front().value);
    const HttpResponse r = get(loop, handler, "/hello.txt", headers);
    CHECK(r.status == 200);
    CHECK(file_bytes(r) == hello_text);
  }

  // If-None-Match: * matches any current representation.
  const HttpResponse star = get(loop, handler, "/hello.txt", {{"If-None-Match", " * "}});
  CHECK(star.status == 304);
  CHECK_FALSE(star.file);
  // A missing file stays 404 whatever the conditions.
  CHECK(get(loop, handler, "/nope.txt", {{"If-Modified-Since", modified}}).status == 404);
}

STRATA_LOOP_TEST_CASE("static_files: Range gives 206 with that span, or 416, or the whole file",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());
  const std::string data = data_bytes();

  const auto [range, first, last] = GENERATE(table<std::string, std::uint64_t, std::uint64_t>({
      {"bytes=0-9", 0, 9},
      {"bytes=990-", 990, 999},
      {"bytes=-10", 990, 999},
      {"bytes=995-2000", 995, 999},
      {"Bytes=500-500", 500, 500},
      {"bytes=-5000", 0, 999},
  }));
  INFO("Range: " << range);
  HttpResponse r = get(loop, handler, "/data.bin", {{"Range", range}});
  CHECK(r.status == 206);
  CHECK(r.content_type == "application/octet-stream");
  CHECK(header(r, "Content-Range") ==
        "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/1000");
  CHECK(header(r, "Accept-Ranges") == "bytes");
  CHECK(header(r, "Last-Modified"));
  CHECK(r.file.offset() == first);
  CHECK(r.file.length() == last - first + 1);
  CHECK(file_bytes(r) == data.substr(first, last - first + 1));

  // Past the end: 416 with the size.
  r = get(loop, handler, "/data.bin", {{"Range", "bytes=1000-"}});
  CHECK(r.status == 416);
  CHECK(header(r, "Content-Range") == "bytes */1000");
  CHECK_FALSE(r.file);
  r = get(loop, handler, "/empty.txt", {{"Range", "bytes=0-"}});
  CHECK(r.status == 416);
  CHECK(header(r, "Content-Range") == "bytes */0");

  // The whole file: an invalid or multiple range, an If-Range (not evaluated: no strong
  // validator), HEAD (Range is defined for GET only), two Range fields.
  for (const auto& [method, headers] : std::vector<std::pair<std::string, std::vector<HttpField>>>{
           {"GET", {{"Range", "bytes=5-2"}}},
           {"GET", {{"Range", "bytes=0-1,5-6"}}},
           {"GET", {{"Range", "lines=1-2"}}},
           {"GET", {{"Range", range}, {"If-Range", "Sun, 06 Nov 1994 08:49:37 GMT"}}},
           {"HEAD", {{"Range", range}}},
           {"GET", {{"Range", range}, {"Range", range}}},
       }) {
    INFO(method << " " << headers.front().name << ": " << headers.front().value);
    r = call(loop, handler, method, "/data.bin", headers);
    CHECK(r.status == 200);
    CHECK_FALSE(header(r, "Content-Range"));
    CHECK(r.file.offset() == 0);
    CHECK(r.file.length() == 1000);
  }

  // A fresh If-Modified-Since wins over Range.
  r = get(loop, handler, "/hello.txt",
          {{"Range", "bytes=0-1"}, {"If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"}});
  CHECK(r.status == 304);
}

STRATA_LOOP_TEST_CASE("static_files: methods other than GET and HEAD get 405 with Allow",
                      "[protocols][http_static]") {
  strata::testing::TestLoop loop(TestType::kind);
  StaticTree tree;
  const HttpHandler handler = strata::static_files(tree.root.string());
  const HttpResponse r = call(loop, handler, "POST", "/hello.txt");
  CHECK(r.status == 405);
  CHECK(header(r, "Allow") == "GET, HEAD");
  CHECK_FALSE(r.file);
}

TEST_CASE("static_files: a root that is not a directory throws std::system_error naming it",
          "[protocols][http_static]") {
  StaticTree tree;
  const std::string missing = (tree.base / "missing").string();
  CHECK_THROWS_WITH(strata::static_files(missing), Catch::Contains(missing));
  CHECK_THROWS_AS(strata::static_files(missing), std::system_error);
  CHECK_THROWS_AS(strata::static_files((tree.root / "hello.txt").string()), std::system_error);
}

TEST_CASE("static_files: copies of a handler share the root and outlive the original",
          "[protocols][http_static]") {
  strata::testing::TestLoop loop(strata::LoopKind::epoll);
  StaticTree tree;
  HttpHandler copy;
  {
    const HttpHandler original = strata::static_files(tree.root.string());
    copy = original;
  }
  CHECK(file_bytes(get(loop, copy, "/hello.txt")) == hello_text);
}
