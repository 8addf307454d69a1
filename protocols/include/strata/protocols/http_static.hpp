#pragma once
/// @file
/// Static files for the HTTP server: static_files() makes an HttpHandler that answers GET and
/// HEAD from the files below a directory, and the pure pieces it is made of, each usable on its
/// own: normalize_request_path() (percent-decoding and dot segments, refusing any escape),
/// content_type_for() (by extension) and parse_range() (the `Range` header field).
///
/// ```
/// strata::HttpRouter router;
/// router.get("/plaintext", plaintext);
/// router.route_prefix("GET", "/", strata::static_files("/srv/www"));  // HEAD comes with GET
/// ```

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "strata/protocols/http_server.hpp"

namespace strata {

/// The canonical form of the path of a request target (the part before '?'), or nullopt when
/// it must not name a file.
///
/// Percent-escapes are decoded, repeated '/' collapse into one, and "." and ".." segments are
/// resolved as RFC 3986 §5.2.4 does, after decoding: `/a/%2e%2e/b` is `/b`. A path ending in
/// '/', "." or ".." keeps (or gets) a trailing '/'. The result starts with '/', holds no empty,
/// "." or ".." segment, and is decoded: a name that was double-encoded (`%252e`) stays the
/// literal name `%2e`, never a dot.
///
/// @param raw_path  the path as received (HttpServerRequest::path()); anything from a '?' on
///   is ignored.
/// @return nullopt when @p raw_path does not start with '/'; holds a '%' not followed by two
///   hex digits; holds a NUL byte, plain or as `%00`; holds a backslash, plain or as `%5C`
///   (it separates names on other systems); holds `%2F` (an encoded '/' would join two names
///   into one name, which no file has; nginx refuses it the same way); or has a ".." that
///   would climb above the root (`/..`, `/a/../..`, `/%2e%2e/`, `/..%2f`). The caller answers
///   400 or 404, never a file.
/// @par Thread safety  A pure function.
std::optional<std::string> normalize_request_path(std::string_view raw_path);

/// The Content-Type for a file by the extension of its last path segment, compared without
/// regard to case: `text/html; charset=utf-8` for .html and .htm, `text/css`, `text/javascript`
/// for .js and .mjs, `application/json`, `text/plain; charset=utf-8` for .txt,
/// `application/xml`, `image/svg+xml`, `image/png`, `image/jpeg` for .jpg and .jpeg,
/// `image/gif`, `image/webp`, `image/x-icon`, `application/wasm`, `application/pdf`,
/// `font/woff`, `font/woff2`, `video/mp4`, `video/webm`, `audio/mpeg` for .mp3,
/// `application/zip`, `application/gzip` for .gz, `application/x-tar`; anything else
/// (no extension, a name that only starts with a dot like `.profile`, an unknown extension)
/// is `application/octet-stream`.
/// @return a view of static storage.
/// @par Thread safety  A pure function.
std::string_view content_type_for(std::string_view path) noexcept;

/// What a `Range` header field asks of a representation of a known size (RFC 9110 §14).
struct ByteRange {
  /// How to answer.
  enum class Kind {
    whole,          ///< no usable range: send the whole representation, 200
    partial,        ///< one satisfiable range: 206, `Content-Range: bytes first-last/size`
    unsatisfiable,  ///< 416, `Content-Range: bytes */size`
  };
  Kind kind = Kind::whole;  ///< how to answer; first and last matter only for partial
  std::uint64_t first = 0;  ///< partial: offset of the first byte
  std::uint64_t last = 0;   ///< partial: offset of the last byte (inclusive), below size

  /// partial: the number of bytes, last - first + 1.
  std::uint64_t length() const noexcept { return last - first + 1; }
  /// Member-wise equality.
  bool operator==(const ByteRange&) const = default;
};

/// Reads a `Range` field value for a representation of @p size bytes.
///
/// Understands one range in the `bytes` unit (compared without regard to case): `bytes=A-B`
/// (B past the end is clamped to the last byte), `bytes=A-` (from A to the end) and
/// `bytes=-N` (the last N bytes; the whole representation when N >= size), with optional
/// white space around the list's elements and empty list elements (`bytes= ,0-9`), as the
/// list syntax of RFC 9110 §5.6.1 allows; white space anywhere else is malformed.
///
/// @return Kind::whole for an empty value, another unit, a malformed or invalid range set
///   (B < A, a sign, junk) and for more than one range: RFC 9110 lets a server ignore Range,
///   and one that does not send multipart/byteranges answers these with the whole
///   representation. Kind::unsatisfiable when the one range starts at or past @p size (so any
///   int-range of an empty representation) or is a suffix of length 0. A suffix range of an
///   empty representation is Kind::whole (there is no byte to name in a Content-Range).
///   Numbers too large for 64 bits saturate, which ends in the cases above.
/// @par Thread safety  A pure function.
ByteRange parse_range(std::string_view header_value, std::uint64_t size) noexcept;

/// How static_files() serves.
struct StaticFilesOptions {
  /// The file that a path ending in '/' names inside its directory; empty: none, so every such
  /// path is 404 (there is never a directory listing).
  std::string index = "index.html";
  /// Whether symbolic links below the root are followed. Either way, no path ever resolves to
  /// a file outside the root: a link that leads out of it (absolute, or through "..") is 404.
  bool follow_symlinks = true;
};

/// A handler that serves the regular files below the directory @p root, for GET and HEAD.
///
/// Register it for GET on a prefix (`route_prefix("GET", "/", ...)`); the router gives it HEAD
/// as well. The whole request path names the file, as nginx's `root` does: on the prefix
/// "/static/", `/static/app.js` is ROOT/static/app.js.
///
/// What a client gets:
/// - A path that normalize_request_path() refuses (an escape, plain or percent-encoded; an
///   encoded '/'; a NUL): 400. A path that leaves the root through a symbolic link, or names
///   anything but a regular file or a directory (a FIFO, a socket, a device): 404. Missing:
///   404. A file the server may not open: 403.
/// - A directory named without a trailing '/': 301 with `Location` the same path (normalised,
///   percent-encoded) plus '/' and the query. With the '/': its index file as below, or 404
///   when it has none (or options.index is empty).
/// - A file: 200 with `Content-Type` by extension (content_type_for()), `Last-Modified` (its
///   mtime), `Accept-Ranges: bytes` and the file as an HttpFileBody (the server adds
///   `Content-Length` and sends it with sendfile(2); HEAD gets the head only).
/// - `If-None-Match: *` → 304; any other If-None-Match is a list of entity tags, which never
///   match (no ETag is sent), so the request goes on. If-Modified-Since, when there is no
///   If-None-Match and it is a valid HTTP date no earlier than the mtime (whole seconds) → 304
///   with `Last-Modified`, no body.
/// - `Range` on GET (HEAD ignores it, as RFC 9110 §14.2 requires), when there is no `If-Range`
///   (which would need a strong validator; the whole file is the safe answer): per
///   parse_range(), 206 with `Content-Range: bytes first-last/size` and that span of the file,
///   or 416 with `Content-Range: bytes */size`, or the whole file with 200.
///
/// Serving a request costs only metadata system calls on the loop's thread: one openat2(2)
/// (a path ending in '/' opens DIR/index directly), one fstat(2) and one fcntl(2) that clears
/// O_NONBLOCK; no byte of a file is read here. The file is
/// opened with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS against the root directory's descriptor
/// (and RESOLVE_NO_SYMLINKS without options.follow_symlinks), so the kernel, not a string
/// check, keeps every lookup below the root, also against symbolic links swapped in meanwhile.
/// Where openat2 is missing (Linux before 5.6, or refused by a seccomp filter) the file is
/// opened with openat(2) and its real path (/proc/self/fd) must be below the root's, or the
/// answer is 404. Opens are O_NONBLOCK, so a FIFO cannot stall the loop.
///
/// @param root  the directory to serve; it is opened here, once (a later rename of the
///   directory does not change what is served).
/// @param options  the index file name and whether symbolic links are followed.
/// @throws std::system_error  @p root cannot be opened as a directory (the error, and
///   "static_files: open ROOT").
/// @par Thread safety  The handler may be copied (copies share the root's descriptor, closed
///   with the last one) and called from several loops' threads at once.
HttpHandler static_files(std::string root, StaticFilesOptions options = {});

namespace detail {
/// For tests: whether handlers made from now on may use openat2(2) (true, the default) or
/// must take the openat(2) fallback. Not thread-safe; call before making handlers.
void static_files_use_openat2(bool enabled) noexcept;
}  // namespace detail

}  // namespace strata
