#pragma once
/// @file
/// TLS on OpenSSL: SslContext (Python's ssl.SSLContext), the errors of the TLS layer, the
/// certificate and cipher descriptions a TLS transport reports, and start_tls() (asyncio's
/// loop.start_tls).
///
/// A TLS transport wraps any stream transport (TCP, Unix socket) and presents the ordinary
/// Transport to the application's protocol: pass `ssl` in ConnectOptions, ServerOptions or
/// the Unix options, or upgrade a live connection with start_tls(). Only
/// Transport::get_extra_info() tells it from plain TCP:
/// - "ssl_object": `ssl_st*` (OpenSSL's SSL*, still owned by the transport);
/// - "peercert": SslCertificate (the peer's verified certificate; absent when it sent none);
/// - "cipher": SslCipher;
/// - "compression": std::string, the compression method; absent when none (always, with
///   OpenSSL 3's defaults);
/// - "alpn_protocol": std::string; absent when ALPN chose none;
/// - "server_hostname": std::string, client side, when one was given;
/// - "sslcontext": SslContext;
/// and whatever the wrapped transport reports ("peername", "sockname", "socket").

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "strata/core/clock.hpp"
#include "strata/core/coro.hpp"
#include "strata/transports/protocol.hpp"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX
struct ssl_st;      // OpenSSL's SSL

namespace strata {

class Transport;

// ---- Errors -----------------------------------------------------------------------------

/// Why the TLS layer ended a connection or refused an operation; the error_code of
/// connection_lost() and of SslError.
enum class ssl_errc {
  handshake_failed = 1,          ///< the handshake failed (protocol error, no shared cipher...)
  certificate_verify_failed,     ///< the peer's certificate or host name did not verify
  handshake_timeout,             ///< the handshake did not finish within ssl_handshake_timeout
  shutdown_timeout,              ///< the peer did not answer close_notify within ssl_shutdown_timeout
  truncated,                     ///< the peer closed the connection without close_notify
  protocol_error,                ///< a TLS error after the handshake (bad record, MAC failure...)
  bad_configuration,             ///< an SslContext could not be set up (file, password, key...)
};

/// The category of ssl_errc: name "strata.ssl".
const std::error_category& ssl_category() noexcept;
/// @p e as a std::error_code of ssl_category(); lets `std::error_code ec = ssl_errc::...`
/// compile (with the std::is_error_code_enum specialisation below).
inline std::error_code make_error_code(ssl_errc e) noexcept {
  return {static_cast<int>(e), ssl_category()};
}

/// An error of the TLS layer (Python's ssl.SSLError). what() is the text given, which carries
/// OpenSSL's reason, e.g. "TLS handshake failed: wrong version number" (unlike
/// std::system_error's, it does not repeat code().message()).
class SslError : public std::system_error {
 public:
  /// An error of code @p code whose what() is @p what.
  SslError(ssl_errc code, const std::string& what)
      : std::system_error(make_error_code(code)), what_(what) {}
  /// The text given to the constructor.
  const char* what() const noexcept override { return what_.what(); }

 private:
  std::runtime_error what_;  // a reference-counted string: copying cannot throw
};

/// The peer's certificate did not verify (Python's ssl.SSLCertVerificationError): code()
/// is ssl_errc::certificate_verify_failed, what() is "certificate verify failed: <reason>".
class SslCertVerificationError : public SslError {
 public:
  /// A verification failure with OpenSSL's @p verify_code and its text @p verify_message.
  SslCertVerificationError(long verify_code, std::string verify_message);
  /// OpenSSL's X509_V_ERR_* code, e.g. 62 (X509_V_ERR_HOSTNAME_MISMATCH).
  long verify_code() const noexcept { return verify_code_; }
  /// OpenSSL's text for verify_code(), e.g. "hostname mismatch".
  const std::string& verify_message() const noexcept { return verify_message_; }

 private:
  long verify_code_;
  std::string verify_message_;
};

// ---- What a TLS transport reports -------------------------------------------------------

/// A certificate, as get_extra_info("peercert") describes it (Python's getpeercert()).
struct SslCertificate {
  /// RFC 2253 distinguished names, e.g. "CN=localhost,O=Strata tests".
  std::string subject;
  std::string issuer;  ///< the issuer's distinguished name, in the same form
  /// subjectAltName entries as "DNS:example.com", "IP Address:127.0.0.1".
  std::vector<std::string> subject_alt_names;
  /// Validity, as OpenSSL prints it: "Dec  4 16:00:00 2026 GMT".
  std::string not_before;
  std::string not_after;  ///< the end of the validity period, in the same form
  /// The serial number in upper-case hex.
  std::string serial_number;
  /// The whole certificate, DER-encoded.
  std::vector<std::byte> der;
};

/// The negotiated cipher, as get_extra_info("cipher") reports it (Python's cipher()).
struct SslCipher {
  std::string name;      ///< OpenSSL's name, e.g. "TLS_AES_256_GCM_SHA384"
  std::string protocol;  ///< "TLSv1.2" or "TLSv1.3"
  int secret_bits = 0;   ///< the bits of the symmetric key, e.g. 256
};

// ---- SslContext -------------------------------------------------------------------------

/// TLS protocol versions, for the minimum and maximum an SslContext allows.
enum class TlsVersion { tls1_2, tls1_3 };

/// Whether and how the peer's certificate is checked (Python's ssl.CERT_*).
enum class VerifyMode {
  none,      ///< not requested (server) / not checked (client)
  optional,  ///< server: requested, checked if sent; client: as required
  required,  ///< must be sent and verify, or the handshake fails
};

/// What a context is for (Python's ssl.Purpose): a client authenticating servers, or a
/// server (that may authenticate clients).
enum class SslPurpose {
  server_auth,  ///< a client's context: verifies the server (Python's Purpose.SERVER_AUTH)
  client_auth,  ///< a server's context (Python's Purpose.CLIENT_AUTH)
};

/// The settings, certificates and trust of TLS connections (Python's ssl.SSLContext), over
/// OpenSSL's SSL_CTX.
///
/// A cheap, copyable handle: copies share one SSL_CTX, so a setting changed through one is
/// seen through all. Set it up before the connections that use it; a connection takes the
/// settings when its handshake starts.
///
/// Every context allows TLS 1.2 and TLS 1.3 only, refuses renegotiation, and has no
/// compression. A failing OpenSSL call throws SslError with OpenSSL's reason.
///
/// @par Thread safety  Configure from one thread; once configured, connections on any
/// number of loops and threads may use it (OpenSSL's SSL_CTX is thread-safe for that).
class SslContext {
 public:
  /// A context for @p purpose with secure defaults (Python's ssl.create_default_context()):
  /// server_auth: verify_mode required, check_hostname on, the system's CA store loaded;
  /// client_auth: verify_mode none (clients are not asked for certificates), check_hostname
  /// off, no certificate yet (call load_cert_chain()).
  static SslContext create_default_context(SslPurpose purpose = SslPurpose::server_auth);
  /// A bare context: verify_mode none, check_hostname off, nothing loaded. As in Python, one
  /// context may serve both sides: the side is chosen where it is used (create_connection
  /// is a client, create_server a server, start_tls says).
  SslContext();

  /// Loads this side's certificate chain (PEM: the certificate first, then its
  /// intermediates) and its private key (PEM; from @p certfile when @p keyfile is empty),
  /// decrypting the key with @p password if it is encrypted.
  /// @throws SslError  a file is missing or unreadable, the password is wrong, or the key
  /// does not match the certificate.
  void load_cert_chain(const std::string& certfile, const std::string& keyfile = {},
                       const std::string& password = {});
  /// Trusts the CA certificates of @p cafile (PEM, several allowed) and/or the hashed
  /// directory @p capath, and/or the PEM text @p cadata.
  /// @throws SslError  nothing was given, or a source cannot be read.
  void load_verify_locations(const std::string& cafile = {}, const std::string& capath = {},
                             std::string_view cadata = {});
  /// Trusts the system's CA store (Debian: /etc/ssl/certs).
  void load_default_certs();

  /// The ALPN protocols this side offers (client) or accepts (server), most preferred first,
  /// e.g. {"h2", "http/1.1"}. A server picks its most preferred one the client offers, and
  /// no protocol if there is none in common (the handshake goes on).
  /// @throws std::invalid_argument  an empty name or one longer than 255 bytes.
  void set_alpn_protocols(const std::vector<std::string>& protocols);
  /// The TLS 1.2 cipher list, in OpenSSL's syntax ("ECDHE+AESGCM:!aNULL").
  /// @throws SslError  no cipher matches.
  void set_ciphers(const std::string& ciphers);
  /// The TLS 1.3 cipher suites, in OpenSSL's syntax ("TLS_AES_128_GCM_SHA256").
  /// @throws SslError  no suite matches.
  void set_ciphersuites(const std::string& suites);

  /// The oldest and newest versions allowed; default TLS 1.2 and TLS 1.3.
  /// @throws std::invalid_argument  minimum > maximum.
  /// @throws SslError  OpenSSL refused the version.
  void set_minimum_version(TlsVersion version);
  /// The newest version allowed.
  /// @throws std::invalid_argument  maximum < minimum.  @throws SslError  OpenSSL refused it.
  void set_maximum_version(TlsVersion version);
  /// The oldest version allowed.
  TlsVersion minimum_version() const noexcept;
  /// The newest version allowed.
  TlsVersion maximum_version() const noexcept;

  /// How the peer's certificate is checked.
  /// @throws std::invalid_argument  VerifyMode::none while check_hostname() is on (as Python).
  void set_verify_mode(VerifyMode mode);
  /// How the peer's certificate is checked.
  VerifyMode verify_mode() const noexcept;
  /// Whether a client checks that the server's certificate names server_hostname. Turning it
  /// on sets verify_mode required if it was none (as Python does).
  void set_check_hostname(bool check);
  /// Whether a client checks the server's certificate against server_hostname.
  bool check_hostname() const noexcept;

  /// Whether a peer's close without close_notify is reported as a plain EOF (eof_received(),
  /// then a clean connection_lost()) instead of ssl_errc::truncated: for peers known not to
  /// send close_notify (OpenSSL's SSL_OP_IGNORE_UNEXPECTED_EOF). Off by default.
  void set_allow_truncation(bool allow);
  /// Whether a close without close_notify counts as a plain EOF (see set_allow_truncation()).
  bool allow_truncation() const noexcept;

  /// Server side: called during the handshake with the host name the client asked for
  /// (SNI; empty when the client sent none). Return another context to serve this connection
  /// with its certificate, or std::nullopt to keep this one. An exception aborts the
  /// handshake with an unrecognized_name alert. Python's SSLContext.sni_callback.
  using SniCallback = std::function<std::optional<SslContext>(std::string_view server_name)>;
  /// Installs @p callback as the SniCallback (server side); an empty one removes it. It runs
  /// on the loop thread, inside the handshake; an exception it throws is reported to the
  /// loop's exception handler (logged when no loop runs).
  void set_sni_callback(SniCallback callback);

  /// The OpenSSL SSL_CTX, for settings Strata does not wrap; still owned by the context.
  ssl_ctx_st* native_handle() const noexcept;

  friend bool operator==(const SslContext& a, const SslContext& b) noexcept {
    return a.state_ == b.state_;
  }

  struct State;  ///< private; public so that the implementation's callbacks can reach it

 private:
  explicit SslContext(std::shared_ptr<State> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// ---- TLS options and start_tls ---------------------------------------------------------

/// How a connection uses TLS: the `ssl` option of ConnectOptions, ServerOptions and the Unix
/// options, and what start_tls() takes. Made implicitly from an SslContext, so that
/// `options.ssl = context;` turns TLS on with the defaults.
struct SslOptions {
  /// TLS with @p context and the default options (implicit, so that a context converts).
  SslOptions(SslContext context) : context(std::move(context)) {}  // NOLINT: converts

  /// The context: certificates, verification, versions. Shared, not copied.
  SslContext context;
  /// Client side: the name to send in SNI and to check the certificate against (when the
  /// context's check_hostname is on). create_connection() defaults it to its host;
  /// create_unix_connection() and start_tls() need it when check_hostname is on. A numeric
  /// IP address is checked against the certificate's IP addresses and not sent in SNI.
  std::string server_hostname;
  /// The most the handshake may take; then the connection is aborted (asyncio's
  /// ssl_handshake_timeout, default 60 s).
  Duration ssl_handshake_timeout = std::chrono::seconds(60);
  /// After close(), how long to wait for the peer's close_notify before aborting (asyncio's
  /// ssl_shutdown_timeout, default 30 s).
  Duration ssl_shutdown_timeout = std::chrono::seconds(30);
};

/// Upgrades the live connection of @p transport to TLS (asyncio's loop.start_tls; STARTTLS):
/// performs the handshake as a server (@p server_side) or a client and returns the TLS
/// transport, which from then on serves @p protocol. @p transport stays alive under it and
/// must not be used directly any more.
///
/// Reading on @p transport is paused until the TLS layer takes over, so no byte meant for the
/// handshake reaches the old protocol. The old protocol, if it is not kept, is destroyed in a
/// later iteration.
///
/// @param transport  the connected transport to upgrade; it must outlive the TLS transport.
/// @param ssl  the context and options (server_hostname for a client).
/// @param server_side  true to handshake as the server, false as the client.
/// @param protocol  the protocol of the TLS transport (a Protocol or BufferedProtocol); null
/// keeps @p transport's current protocol, which then receives connection_made() again, with
/// the TLS transport.
/// @return the TLS transport, after the handshake and the protocol's connection_made().
/// @throws SslCertVerificationError, SslError  the handshake failed (@p transport is aborted).
/// @throws TimeoutError  the handshake took longer than ssl.ssl_handshake_timeout.
/// @throws std::invalid_argument  a client without server_hostname while check_hostname is
/// on; @p transport is closing.
/// @par Cancellation  Not cancel-safe: @p transport is aborted (a kept protocol hears
/// connection_lost() with an error), as when the handshake fails.
Coro<Transport*> start_tls(Transport& transport, SslOptions ssl, bool server_side,
                           std::unique_ptr<BaseProtocol> protocol = nullptr);

}  // namespace strata

/// @cond INTERNAL
template <>
struct std::is_error_code_enum<strata::ssl_errc> : std::true_type {};
/// @endcond
