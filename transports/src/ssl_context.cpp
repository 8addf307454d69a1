#include "strata/transports/ssl.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <climits>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "strata/core/event_loop.hpp"
#include "strata/core/log.hpp"

namespace strata {

// ---- Errors -----------------------------------------------------------------------------

namespace {

class SslCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "strata.ssl"; }

  std::string message(int value) const override {
    switch (static_cast<ssl_errc>(value)) {
      case ssl_errc::handshake_failed:
        return "TLS handshake failed";
      case ssl_errc::certificate_verify_failed:
        return "certificate verify failed";
      case ssl_errc::handshake_timeout:
        return "TLS handshake timed out";
      case ssl_errc::shutdown_timeout:
        return "TLS shutdown timed out: the peer did not answer close_notify";
      case ssl_errc::truncated:
        return "TLS connection truncated: the peer closed it without close_notify";
      case ssl_errc::protocol_error:
        return "TLS protocol error";
      case ssl_errc::bad_configuration:
        return "TLS context could not be configured";
    }
    return "unknown strata.ssl error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& ssl_category() noexcept {
  static const SslCategory category;
  return category;
}

SslCertVerificationError::SslCertVerificationError(long verify_code, std::string verify_message)
    : SslError(ssl_errc::certificate_verify_failed,
               "certificate verify failed: " + verify_message),
      verify_code_(verify_code),
      verify_message_(std::move(verify_message)) {}

// ---- SslContext::State ------------------------------------------------------------------

/// What Strata keeps beside an SSL_CTX: the settings OpenSSL has no place for, and the data
/// its callbacks read.
///
/// The SSL_CTX owns its State (in its ex_data, deleted by free_state() when the SSL_CTX's
/// last reference goes), and every SslContext handle holds one SSL_CTX reference. So a
/// callback that OpenSSL calls with a State* can never outlive it: the SSL that runs the
/// handshake holds the SSL_CTX, even when every SslContext is gone, or when an SNI callback
/// switched the SSL to a context that the application did not keep.
struct SslContext::State {
  explicit State(SSL_CTX* native) noexcept : ctx(native) {}

  SSL_CTX* const ctx;  ///< not owned: the SSL_CTX owns this State
  /// Whether a client checks the server's name; the TLS transport reads it and calls
  /// SSL_set1_host() on its SSL, as Python's _ssl does.
  bool check_hostname = false;
  /// The ALPN protocols, most preferred first: what select_alpn() picks from.
  std::vector<std::string> alpn_protocols;
  /// Called by on_server_name(). It must not capture an SslContext of this same context:
  /// that would be a reference cycle, and neither would ever be freed.
  SniCallback sni_callback;
};

namespace {

using State = SslContext::State;

/// The cipher list of every context for TLS 1.2: forward secrecy and AEAD only. TLS 1.3's
/// suites are all of that already, and keep OpenSSL's default.
constexpr const char* default_ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS";

/// Sent in every session; OpenSSL refuses to resume a session of a server that verifies
/// clients unless one is set.
constexpr unsigned char session_id_context[] = "strata";
constexpr unsigned int session_id_length = sizeof session_id_context - 1;

/// The ex_data free callback of the State slot: runs when an SSL_CTX is freed.
void free_state(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*index*/,
                long /*argl*/, void* /*argp*/) {
  delete static_cast<State*>(ptr);
}

/// The ex_data slot of SSL_CTX that holds its State (-1 if OpenSSL refused one).
int state_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_state);
  return index;
}

/// OpenSSL's reason for the failure just reported, and empties this thread's error queue.
/// The oldest error in the queue is the root cause ("No such file or directory", "bad
/// decrypt"); the later ones only say which layer passed it on ("PEM lib").
std::string take_openssl_reason() {
  const unsigned long first = ERR_peek_error();
  std::string reason;
  if (first != 0 && ERR_SYSTEM_ERROR(first)) {
    reason = std::generic_category().message(ERR_GET_REASON(first));
  } else if (first != 0) {
    if (const char* text = ERR_reason_error_string(first)) {
      reason = text;
    } else {
      char buffer[256];
      ERR_error_string_n(first, buffer, sizeof buffer);
      reason = buffer;
    }
  }
  ERR_clear_error();
  return reason.empty() ? "unknown OpenSSL error" : reason;
}

/// Throws SslError(bad_configuration) with @p what and OpenSSL's reason.
[[noreturn]] void throw_openssl(const std::string& what) {
  throw SslError(ssl_errc::bad_configuration, what + ": " + take_openssl_reason());
}

int protocol_version(TlsVersion version) noexcept {
  return version == TlsVersion::tls1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
}

const char* version_name(TlsVersion version) noexcept {
  return version == TlsVersion::tls1_2 ? "TLS 1.2" : "TLS 1.3";
}

int verify_flags(VerifyMode mode) noexcept {
  switch (mode) {
    case VerifyMode::none:
      return SSL_VERIFY_NONE;
    case VerifyMode::optional:
      return SSL_VERIFY_PEER;
    case VerifyMode::required:
      break;
  }
  return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
}

/// Sets the verify flags, keeping a verify callback set through native_handle().
void set_verify_flags(SSL_CTX* ctx, VerifyMode mode) noexcept {
  SSL_CTX_set_verify(ctx, verify_flags(mode), SSL_CTX_get_verify_callback(ctx));
}

/// A new SSL_CTX with Strata's defaults, and its State.
std::shared_ptr<State> new_state() {
  const int index = state_index();
  if (index < 0) throw_openssl("cannot create an SslContext");
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) throw_openssl("cannot create an SslContext");
  State* state = new (std::nothrow) State(ctx);
  if (state == nullptr || SSL_CTX_set_ex_data(ctx, index, state) != 1) {
    delete state;
    SSL_CTX_free(ctx);
    ERR_clear_error();
    throw std::bad_alloc();  // the only way either can fail
  }
  // From here the SSL_CTX owns the State. The handle holds one reference to the SSL_CTX,
  // which the deleter drops (if the control block cannot be allocated, the deleter runs at
  // once and frees both).
  std::shared_ptr<State> handle(state, [](State* s) { SSL_CTX_free(s->ctx); });

  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    throw_openssl("cannot limit an SslContext to TLS 1.2 and 1.3");
  }
  // No renegotiation (a DoS lever, and a source of surprises for the transport), no
  // compression (CRIME); the server's cipher order, not the client's.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // SSL_write() may report part of a buffer written, and be retried with a buffer that has
  // moved: the transport writes from its own queue. Idle connections free their read and
  // write buffers (about 34 KiB each).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // OpenSSL's default, said for the reader
  const bool configured =
      SSL_CTX_set_session_id_context(ctx, session_id_context, session_id_length) == 1 &&
      SSL_CTX_set_cipher_list(ctx, default_ciphers) == 1;
  if (!configured) throw_openssl("cannot set up an SslContext");
  // "*.example.com" matches "www.example.com", but "w*.example.com" matches nothing.
  X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return handle;
}

/// The SSL_CTX_set_alpn_select_cb callback: the server's most preferred protocol that the
/// client offers (@p in is the client's list in wire format), or no ALPN at all.
int select_alpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen,
                const unsigned char* in, unsigned int inlen, void* arg) {
  const State& state = *static_cast<const State*>(arg);
  for (const std::string& ours : state.alpn_protocols) {
    for (unsigned int i = 0; i < inlen;) {
      const unsigned int length = in[i];
      if (length == 0 || length > inlen - i - 1) break;  // malformed; OpenSSL checked already
      if (length == ours.size() && std::memcmp(in + i + 1, ours.data(), length) == 0) {
        *out = in + i + 1;  // into the client's list, which outlives the callback
        *outlen = static_cast<unsigned char>(length);
        return SSL_TLSEXT_ERR_OK;
      }
      i += 1 + length;
    }
  }
  return SSL_TLSEXT_ERR_NOACK;  // no protocol in common: no ALPN, the handshake goes on
}

/// Hands an exception of the SNI callback to the running loop's exception handler, or to the
/// log without a loop. Never throws: we are inside OpenSSL's handshake.
void report_sni_exception(std::string_view server_name) noexcept {
  try {
    const std::string message = "Exception in the SNI callback of an SslContext (server name '" +
                                std::string(server_name) +
                                "'); the handshake was aborted with unrecognized_name";
    if (EventLoop* loop = try_get_running_loop()) {
      ExceptionContext context;
      context.message = message;
      context.exception = std::current_exception();
      context.callback = "SslContext::set_sni_callback";
      loop->call_exception_handler(context);
    } else {
      std::string text = message;
      try {
        std::rethrow_exception(std::current_exception());
      } catch (const std::exception& e) {
        text += ": ";
        text += e.what();
      } catch (...) {
      }
      log(LogLevel::error, text);
    }
  } catch (...) {
    // Out of memory while reporting: the alert still goes out.
  }
}

/// The SSL_CTX_set_tlsext_servername_callback callback: asks the application's SNI callback
/// which context serves this connection and switches the SSL to it. No exception may cross
/// back into OpenSSL's C frames: one aborts the handshake with an alert instead.
int on_server_name(SSL* ssl, int* alert, void* arg) {
  const State& state = *static_cast<const State*>(arg);
  if (!state.sni_callback) return SSL_TLSEXT_ERR_OK;
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  const std::string_view server_name = name != nullptr ? name : "";
  try {
    const std::optional<SslContext> other = state.sni_callback(server_name);
    // SSL_set_SSL_CTX() takes a reference to the new SSL_CTX (and so to its State) for as
    // long as the SSL lives, and switches the certificate and key.
    if (other && other->native_handle() != SSL_get_SSL_CTX(ssl) &&
        SSL_set_SSL_CTX(ssl, other->native_handle()) == nullptr) {
      *alert = SSL_AD_INTERNAL_ERROR;
      return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
  } catch (...) {
    report_sni_exception(server_name);
  }
  *alert = SSL_AD_UNRECOGNIZED_NAME;
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/// What password_callback() answers OpenSSL, and what it was asked.
struct KeyPassword {
  const std::string& password;
  bool asked = false;
  bool too_long = false;
};

/// The pem_password_cb for reading a private key: gives the password, and never prompts on
/// the terminal (which OpenSSL's default callback would do).
int password_callback(char* buffer, int size, int /*rwflag*/, void* userdata) {
  auto& key = *static_cast<KeyPassword*>(userdata);
  key.asked = true;
  if (key.password.empty()) return -1;
  if (key.password.size() > static_cast<std::size_t>(size)) {
    key.too_long = true;
    return -1;
  }
  std::memcpy(buffer, key.password.data(), key.password.size());
  return static_cast<int>(key.password.size());
}

/// For PEM reads that must not prompt either: certificates are never encrypted.
int no_password_callback(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) {
  return -1;
}

struct BioFree {
  void operator()(BIO* bio) const noexcept { BIO_free(bio); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
struct X509Free {
  void operator()(X509* cert) const noexcept { X509_free(cert); }
};

/// The first private key in the PEM file at @p path, decrypted with @p password.
std::unique_ptr<EVP_PKEY, PkeyFree> read_private_key(const std::string& path,
                                                     const std::string& password) {
  const std::unique_ptr<BIO, BioFree> bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) throw_openssl("cannot read the private key file '" + path + "'");
  KeyPassword key{password};
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, password_callback, &key));
  if (pkey) return pkey;
  if (key.asked && password.empty()) {
    ERR_clear_error();
    throw SslError(ssl_errc::bad_configuration,
                   "the private key in '" + path + "' is encrypted: give its password");
  }
  if (key.too_long) {
    ERR_clear_error();
    throw SslError(ssl_errc::bad_configuration,
                   "the password of the private key in '" + path + "' is too long for OpenSSL");
  }
  if (key.asked) {
    throw_openssl("cannot decrypt the private key in '" + path + "' (wrong password?)");
  }
  // OpenSSL 3's decoders say only "unsupported" when the file holds no key they know.
  const unsigned long error = ERR_peek_error();
  if (ERR_GET_LIB(error) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(error) == ERR_R_UNSUPPORTED) {
    ERR_clear_error();
    throw SslError(ssl_errc::bad_configuration, "no PEM private key in '" + path + "'");
  }
  throw_openssl("cannot load a private key from '" + path + "'");
}

/// Adds every certificate of the PEM text @p pem to @p store.
void add_pem_certificates(X509_STORE* store, std::string_view pem) {
  if (pem.size() > static_cast<std::size_t>(INT_MAX)) {
    throw SslError(ssl_errc::bad_configuration, "cadata is too large");
  }
  const std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) throw_openssl("cannot read cadata");
  int added = 0;
  for (;;) {
    const std::unique_ptr<X509, X509Free> cert(
        PEM_read_bio_X509(bio.get(), nullptr, no_password_callback, nullptr));
    if (!cert) break;
    if (X509_STORE_add_cert(store, cert.get()) != 1) {  // the store takes its own reference
      throw_openssl("cannot trust certificate " + std::to_string(added + 1) + " of cadata");
    }
    ++added;
  }
  // The loop ends at the first read that finds no certificate: at the end of the text, that
  // is "no start line"; anything else is a damaged certificate.
  const unsigned long last = ERR_peek_last_error();
  const bool at_end = last == 0 || (ERR_GET_LIB(last) == ERR_LIB_PEM &&
                                    ERR_GET_REASON(last) == PEM_R_NO_START_LINE);
  if (added == 0) {
    if (at_end) {
      ERR_clear_error();
      throw SslError(ssl_errc::bad_configuration, "cadata holds no PEM certificate");
    }
    throw_openssl("cannot read the certificates of cadata");
  }
  if (!at_end) {
    throw_openssl("cannot read certificate " + std::to_string(added + 1) + " of cadata");
  }
  ERR_clear_error();
}

}  // namespace

// ---- SslContext -------------------------------------------------------------------------

SslContext::SslContext() : state_(new_state()) {}

SslContext SslContext::create_default_context(SslPurpose purpose) {
  SslContext context;
  if (purpose == SslPurpose::server_auth) {
    context.set_check_hostname(true);  // and so verify_mode required
    context.load_default_certs();
  }
  // As Python 3.13's create_default_context(): RFC 5280's rules in full (a CA must say it is
  // one, key identifiers present...), and an intermediate CA may be trusted on its own.
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(context.state_->ctx),
                              X509_V_FLAG_X509_STRICT | X509_V_FLAG_PARTIAL_CHAIN);
  return context;
}

void SslContext::load_cert_chain(const std::string& certfile, const std::string& keyfile,
                                 const std::string& password) {
  SSL_CTX* ctx = state_->ctx;
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, certfile.c_str()) != 1) {
    throw_openssl("cannot load the certificate chain from '" + certfile + "'");
  }
  const std::string& key_path = keyfile.empty() ? certfile : keyfile;
  const std::unique_ptr<EVP_PKEY, PkeyFree> key = read_private_key(key_path, password);
  // SSL_CTX_use_PrivateKey() checks the key against a certificate of its type;
  // SSL_CTX_check_private_key() catches a key of another type than the certificate.
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    throw_openssl("the private key in '" + key_path + "' does not match the certificate in '" +
                  certfile + "'");
  }
}

void SslContext::load_verify_locations(const std::string& cafile, const std::string& capath,
                                       std::string_view cadata) {
  if (cafile.empty() && capath.empty() && cadata.empty()) {
    throw SslError(ssl_errc::bad_configuration,
                   "load_verify_locations: give cafile, capath or cadata");
  }
  SSL_CTX* ctx = state_->ctx;
  ERR_clear_error();
  if (!cafile.empty() && SSL_CTX_load_verify_file(ctx, cafile.c_str()) != 1) {
    throw_openssl("cannot load CA certificates from '" + cafile + "'");
  }
  if (!capath.empty()) {
    // OpenSSL looks into the directory only during verification; say now if it is missing.
    std::error_code ec;
    if (!std::filesystem::is_directory(capath, ec)) {
      throw SslError(ssl_errc::bad_configuration,
                     "cannot use CA directory '" + capath + "': " +
                         (ec ? ec.message() : std::string("not a directory")));
    }
    if (SSL_CTX_load_verify_dir(ctx, capath.c_str()) != 1) {
      throw_openssl("cannot use CA directory '" + capath + "'");
    }
  }
  if (!cadata.empty()) add_pem_certificates(SSL_CTX_get_cert_store(ctx), cadata);
}

void SslContext::load_default_certs() {
  ERR_clear_error();
  if (SSL_CTX_set_default_verify_paths(state_->ctx) != 1) {
    throw_openssl("cannot load the system's CA certificates");
  }
}

void SslContext::set_alpn_protocols(const std::vector<std::string>& protocols) {
  // The wire format of the extension: each name preceded by its length in one byte.
  std::string wire;
  for (std::size_t i = 0; i < protocols.size(); ++i) {
    const std::string& name = protocols[i];
    if (name.empty() || name.size() > 255) {
      throw std::invalid_argument("ALPN protocol names must be 1 to 255 bytes long; protocols[" +
                                  std::to_string(i) + "] is " + std::to_string(name.size()) +
                                  " bytes");
    }
    wire += static_cast<char>(name.size());
    wire += name;
  }
  if (wire.size() > 65535) {
    throw std::invalid_argument("the ALPN protocols take " + std::to_string(wire.size()) +
                                " bytes; at most 65535 fit in the TLS extension");
  }
  SSL_CTX* ctx = state_->ctx;
  ERR_clear_error();
  // The client's offer. Beware: SSL_CTX_set_alpn_protos() returns 0 on success.
  if (SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned int>(wire.size())) != 0) {
    throw_openssl("cannot set the ALPN protocols");
  }
  // The server's choice.
  state_->alpn_protocols = protocols;
  SSL_CTX_set_alpn_select_cb(ctx, protocols.empty() ? nullptr : select_alpn, state_.get());
}

void SslContext::set_ciphers(const std::string& ciphers) {
  ERR_clear_error();
  if (SSL_CTX_set_cipher_list(state_->ctx, ciphers.c_str()) != 1) {
    throw_openssl("no TLS 1.2 cipher matches '" + ciphers + "'");
  }
}

void SslContext::set_ciphersuites(const std::string& suites) {
  ERR_clear_error();
  if (SSL_CTX_set_ciphersuites(state_->ctx, suites.c_str()) != 1) {
    throw_openssl("no TLS 1.3 cipher suite matches '" + suites + "'");
  }
}

void SslContext::set_minimum_version(TlsVersion version) {
  if (version > maximum_version()) {
    throw std::invalid_argument(std::string("the minimum version ") + version_name(version) +
                                " would be above the maximum version " +
                                version_name(maximum_version()) + "; raise the maximum first");
  }
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(state_->ctx, protocol_version(version)) != 1) {
    throw_openssl(std::string("cannot set the minimum version ") + version_name(version));
  }
}

void SslContext::set_maximum_version(TlsVersion version) {
  if (version < minimum_version()) {
    throw std::invalid_argument(std::string("the maximum version ") + version_name(version) +
                                " would be below the minimum version " +
                                version_name(minimum_version()) + "; lower the minimum first");
  }
  ERR_clear_error();
  if (SSL_CTX_set_max_proto_version(state_->ctx, protocol_version(version)) != 1) {
    throw_openssl(std::string("cannot set the maximum version ") + version_name(version));
  }
}

// Read back from OpenSSL, so that a change through native_handle() shows. 0 means "no
// limit" there: the lowest, or the highest, version this context allows.
TlsVersion SslContext::minimum_version() const noexcept {
  return SSL_CTX_get_min_proto_version(state_->ctx) >= TLS1_3_VERSION ? TlsVersion::tls1_3
                                                                      : TlsVersion::tls1_2;
}

TlsVersion SslContext::maximum_version() const noexcept {
  const long version = SSL_CTX_get_max_proto_version(state_->ctx);
  return version == 0 || version >= TLS1_3_VERSION ? TlsVersion::tls1_3 : TlsVersion::tls1_2;
}

void SslContext::set_verify_mode(VerifyMode mode) {
  if (mode == VerifyMode::none && state_->check_hostname) {
    throw std::invalid_argument(
        "cannot set verify_mode to VerifyMode::none while check_hostname is on; call "
        "set_check_hostname(false) first");
  }
  set_verify_flags(state_->ctx, mode);
}

VerifyMode SslContext::verify_mode() const noexcept {
  const int flags = SSL_CTX_get_verify_mode(state_->ctx);
  if ((flags & SSL_VERIFY_PEER) == 0) return VerifyMode::none;
  return (flags & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) != 0 ? VerifyMode::required
                                                         : VerifyMode::optional;
}

void SslContext::set_check_hostname(bool check) {
  if (check && verify_mode() == VerifyMode::none) {
    set_verify_flags(state_->ctx, VerifyMode::required);
  }
  state_->check_hostname = check;
}

bool SslContext::check_hostname() const noexcept { return state_->check_hostname; }

void SslContext::set_allow_truncation(bool allow) {
  if (allow) {
    SSL_CTX_set_options(state_->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  } else {
    SSL_CTX_clear_options(state_->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  }
}

bool SslContext::allow_truncation() const noexcept {
  return (SSL_CTX_get_options(state_->ctx) & SSL_OP_IGNORE_UNEXPECTED_EOF) != 0;
}

void SslContext::set_sni_callback(SniCallback callback) {
  SSL_CTX* ctx = state_->ctx;
  state_->sni_callback = std::move(callback);
  if (state_->sni_callback) {
    SSL_CTX_set_tlsext_servername_arg(ctx, state_.get());
    SSL_CTX_set_tlsext_servername_callback(ctx, on_server_name);
  } else {
    SSL_CTX_set_tlsext_servername_callback(ctx, nullptr);
  }
}

ssl_ctx_st* SslContext::native_handle() const noexcept { return state_ ? state_->ctx : nullptr; }

}  // namespace strata
