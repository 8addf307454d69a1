// SslContext, the errors of the TLS layer, and handshakes between two SSLs made from
// SslContexts, over a pair of memory BIOs: no event loop, so not per backend.
#include <strata/transports/ssl.hpp>

#include <catch2/catch.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/core/log.hpp>

#include "tls_test_support.hpp"

using strata::SslCertVerificationError;
using strata::SslContext;
using strata::SslError;
using strata::ssl_errc;
using strata::SslPurpose;
using strata::TlsVersion;
using strata::VerifyMode;
using strata::testing::shared_pki;
using strata::testing::test_client_context;
using strata::testing::test_server_context;
using strata::testing::TestPki;
using strata::testing::TlsFiles;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

struct SslFree {
  void operator()(SSL* ssl) const noexcept { SSL_free(ssl); }
};
using UniqueSsl = std::unique_ptr<SSL, SslFree>;

/// One side of a handshake, and how it ended.
struct Side {
  UniqueSsl ssl;
  bool done = false;
  bool failed = false;
  unsigned long error = 0;  ///< the first OpenSSL error of the failure
  std::string reason;       ///< its text

  /// One SSL_do_handshake() step; whatever it cannot finish waits for the other side.
  void step() {
    if (done || failed) return;
    ERR_clear_error();
    const int result = SSL_do_handshake(ssl.get());
    if (result == 1) {
      done = true;
      return;
    }
    const int code = SSL_get_error(ssl.get(), result);
    if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return;
    failed = true;
    error = ERR_peek_error();
    char text[256] = "no OpenSSL error";
    if (error != 0) ERR_error_string_n(error, text, sizeof text);
    reason = text;
    ERR_clear_error();
  }
};

/// A client SSL and a server SSL joined by a BIO pair, so that each one's writes are the
/// other's reads: a TLS connection in memory.
class TlsPair {
 public:
  TlsPair(SSL_CTX* client_ctx, SSL_CTX* server_ctx) {
    client.ssl.reset(SSL_new(client_ctx));
    server.ssl.reset(SSL_new(server_ctx));
    REQUIRE(client.ssl);
    REQUIRE(server.ssl);
    BIO* client_bio = nullptr;
    BIO* server_bio = nullptr;
    REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
    SSL_set_bio(client.ssl.get(), client_bio, client_bio);  // each SSL owns its end
    SSL_set_bio(server.ssl.get(), server_bio, server_bio);
    SSL_set_connect_state(client.ssl.get());
    SSL_set_accept_state(server.ssl.get());
  }
  TlsPair(const SslContext& client_context, const SslContext& server_context)
      : TlsPair(client_context.native_handle(), server_context.native_handle()) {}

  /// The client checks the server's certificate for @p host (as the TLS transport does when
  /// check_hostname is on) and sends it in SNI.
  TlsPair& host(const std::string& name) {
    REQUIRE(SSL_set1_host(client.ssl.get(), name.c_str()) == 1);
    return sni(name);
  }
  /// The client sends @p name in SNI only.
  TlsPair& sni(const std::string& name) {
    REQUIRE(SSL_set_tlsext_host_name(client.ssl.get(), name.c_str()) == 1);
    return *this;
  }

  /// Runs both handshakes until both finished or one failed (and the other had the chance to
  /// read its alert); returns whether both finished.
  bool handshake() {
    int rounds_after_failure = 0;
    for (int round = 0; round < 100; ++round) {
      client.step();
      server.step();
      if (client.done && server.done) return true;
      if ((client.failed || server.failed) && ++rounds_after_failure > 2) break;
    }
    return false;
  }

  /// The protocol ALPN chose, as the client sees it ("" for none).
  std::string alpn() const {
    const unsigned char* data = nullptr;
    unsigned int length = 0;
    SSL_get0_alpn_selected(client.ssl.get(), &data, &length);
    return {reinterpret_cast<const char*>(data), length};
  }

  Side client;
  Side server;
};

/// The common name of the certificate the peer of @p ssl presented ("" when none).
std::string peer_common_name(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return {};
  char name[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof name);
  return name;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out);
}

/// A server context serving the @p files leaf.
SslContext server_context(const TlsFiles& files) {
  SslContext context = SslContext::create_default_context(SslPurpose::client_auth);
  context.load_cert_chain(files.cert_file, files.key_file);
  return context;
}

/// The SslError that @p f throws (fails the test if it throws none, or another type).
template <class F>
SslError ssl_error_of(F&& f) {
  try {
    f();
  } catch (const SslError& e) {
    return e;
  }
  FAIL("no SslError was thrown");
  throw std::logic_error("unreachable");
}

/// Log records for a scope.
class LogCapture {
 public:
  LogCapture() {
    strata::set_log_handler(
        [this](strata::LogLevel, std::string_view message) { messages.emplace_back(message); });
  }
  ~LogCapture() { strata::set_log_handler({}); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<std::string> messages;
};

}  // namespace

// ---- Errors -----------------------------------------------------------------------------

TEST_CASE("ssl_category: named strata.ssl, with its own message for each ssl_errc", "[ssl]") {
  const std::error_category& category = strata::ssl_category();
  CHECK(std::string(category.name()) == "strata.ssl");
  CHECK(&category == &strata::ssl_category());

  std::set<std::string> messages;
  for (const ssl_errc code :
       {ssl_errc::handshake_failed, ssl_errc::certificate_verify_failed,
        ssl_errc::handshake_timeout, ssl_errc::shutdown_timeout, ssl_errc::truncated,
        ssl_errc::protocol_error, ssl_errc::bad_configuration}) {
    const std::error_code ec = code;  // is_error_code_enum: converts implicitly
    CHECK(ec.category() == category);
    CHECK(ec == strata::make_error_code(code));
    CHECK(ec);
    CHECK_FALSE(ec.message().empty());
    messages.insert(ec.message());
  }
  CHECK(messages.size() == 7);
  CHECK(std::error_code(ssl_errc::truncated).message() ==
        "TLS connection truncated: the peer closed it without close_notify");
  CHECK_THAT(category.message(99), Contains("99"));
}

TEST_CASE("SslError and SslCertVerificationError carry their code, reason and what()",
          "[ssl]") {
  const SslError error(ssl_errc::handshake_failed, "TLS handshake failed: wrong version number");
  CHECK(error.code() == ssl_errc::handshake_failed);
  CHECK_THAT(error.what(), Contains("wrong version number"));

  const SslCertVerificationError verify(X509_V_ERR_HOSTNAME_MISMATCH, "Hostname mismatch");
  CHECK(verify.code() == ssl_errc::certificate_verify_failed);
  CHECK(verify.verify_code() == 62);
  CHECK(verify.verify_message() == "Hostname mismatch");
  // std::system_error appends ": " + code().message() to what(); the documented text leads.
  CHECK_THAT(verify.what(), StartsWith("certificate verify failed: Hostname mismatch"));
  const SslError& as_ssl_error = verify;  // catchable as SslError and std::system_error
  CHECK(as_ssl_error.code() == ssl_errc::certificate_verify_failed);
}

// ---- Settings ---------------------------------------------------------------------------

TEST_CASE("SslContext: a bare context allows TLS 1.2 and 1.3, verifies nothing, and has the "
          "defaults of every context",
          "[ssl]") {
  const SslContext context;
  CHECK(context.minimum_version() == TlsVersion::tls1_2);
  CHECK(context.maximum_version() == TlsVersion::tls1_3);
  CHECK(context.verify_mode() == VerifyMode::none);
  CHECK_FALSE(context.check_hostname());
  CHECK_FALSE(context.allow_truncation());

  SSL_CTX* ctx = context.native_handle();
  REQUIRE(ctx != nullptr);
  CHECK(SSL_CTX_get_min_proto_version(ctx) == TLS1_2_VERSION);
  CHECK(SSL_CTX_get_max_proto_version(ctx) == TLS1_3_VERSION);
  const std::uint64_t options = SSL_CTX_get_options(ctx);
  CHECK((options & SSL_OP_NO_RENEGOTIATION) != 0);
  CHECK((options & SSL_OP_NO_COMPRESSION) != 0);
  const long mode = SSL_CTX_get_mode(ctx);
  CHECK((mode & SSL_MODE_ENABLE_PARTIAL_WRITE) != 0);
  CHECK((mode & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) != 0);
  CHECK((mode & SSL_MODE_RELEASE_BUFFERS) != 0);
}

TEST_CASE("SslContext: create_default_context verifies servers for clients, and asks nothing "
          "of clients for servers",
          "[ssl]") {
  const SslContext client = SslContext::create_default_context();
  CHECK(client.verify_mode() == VerifyMode::required);
  CHECK(client.check_hostname());
  CHECK(SSL_CTX_get_verify_mode(client.native_handle()) ==
        (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT));
  CHECK(client.minimum_version() == TlsVersion::tls1_2);
  CHECK(client.maximum_version() == TlsVersion::tls1_3);

  const SslContext server = SslContext::create_default_context(SslPurpose::client_auth);
  CHECK(server.verify_mode() == VerifyMode::none);
  CHECK_FALSE(server.check_hostname());
}

TEST_CASE("SslContext: copies share one SSL_CTX; separate contexts do not", "[ssl]") {
  SslContext a;
  SslContext copy = a;
  const SslContext b;
  CHECK(copy == a);
  CHECK(copy.native_handle() == a.native_handle());
  CHECK_FALSE(a == b);
  copy.set_allow_truncation(true);
  CHECK(a.allow_truncation());
  CHECK((SSL_CTX_get_options(a.native_handle()) & SSL_OP_IGNORE_UNEXPECTED_EOF) != 0);
  a.set_allow_truncation(false);
  CHECK_FALSE(copy.allow_truncation());
  CHECK_FALSE(b.allow_truncation());
}

TEST_CASE("SslContext: verify_mode maps to OpenSSL's flags; none is refused while "
          "check_hostname is on",
          "[ssl]") {
  SslContext context;
  context.set_verify_mode(VerifyMode::optional);
  CHECK(context.verify_mode() == VerifyMode::optional);
  CHECK(SSL_CTX_get_verify_mode(context.native_handle()) == SSL_VERIFY_PEER);
  context.set_verify_mode(VerifyMode::required);
  CHECK(SSL_CTX_get_verify_mode(context.native_handle()) ==
        (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT));
  context.set_verify_mode(VerifyMode::none);
  CHECK(SSL_CTX_get_verify_mode(context.native_handle()) == SSL_VERIFY_NONE);

  SECTION("check_hostname raises none to required") {
    context.set_check_hostname(true);
    CHECK(context.check_hostname());
    CHECK(context.verify_mode() == VerifyMode::required);
    CHECK_THROWS_AS(context.set_verify_mode(VerifyMode::none), std::invalid_argument);
    CHECK_THROWS_WITH(context.set_verify_mode(VerifyMode::none), Contains("check_hostname"));
    CHECK(context.verify_mode() == VerifyMode::required);
    context.set_check_hostname(false);
    context.set_verify_mode(VerifyMode::none);
    CHECK(context.verify_mode() == VerifyMode::none);
  }
  SECTION("check_hostname keeps optional") {
    context.set_verify_mode(VerifyMode::optional);
    context.set_check_hostname(true);
    CHECK(context.verify_mode() == VerifyMode::optional);
  }
}

TEST_CASE("SslContext: the minimum version may not pass the maximum", "[ssl]") {
  SslContext context;
  context.set_minimum_version(TlsVersion::tls1_3);
  CHECK(context.minimum_version() == TlsVersion::tls1_3);
  CHECK(SSL_CTX_get_min_proto_version(context.native_handle()) == TLS1_3_VERSION);
  CHECK_THROWS_AS(context.set_maximum_version(TlsVersion::tls1_2), std::invalid_argument);
  CHECK(context.maximum_version() == TlsVersion::tls1_3);

  context.set_minimum_version(TlsVersion::tls1_2);
  context.set_maximum_version(TlsVersion::tls1_2);
  CHECK(context.maximum_version() == TlsVersion::tls1_2);
  CHECK(SSL_CTX_get_max_proto_version(context.native_handle()) == TLS1_2_VERSION);
  CHECK_THROWS_AS(context.set_minimum_version(TlsVersion::tls1_3), std::invalid_argument);
  CHECK_THROWS_WITH(context.set_minimum_version(TlsVersion::tls1_3), Contains("TLS 1.3"));
  CHECK(context.minimum_version() == TlsVersion::tls1_2);
}

TEST_CASE("SslContext: cipher strings that match nothing throw SslError", "[ssl]") {
  SslContext context;
  context.set_ciphers("ECDHE+AESGCM");
  context.set_ciphersuites("TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");

  const SslError ciphers = ssl_error_of([&] { context.set_ciphers("NO-SUCH-CIPHER"); });
  CHECK(ciphers.code() == ssl_errc::bad_configuration);
  CHECK_THAT(ciphers.what(), Contains("NO-SUCH-CIPHER") && Contains("no cipher match"));
  const SslError suites = ssl_error_of([&] { context.set_ciphersuites("TLS_NO_SUCH_SUITE"); });
  CHECK(suites.code() == ssl_errc::bad_configuration);
  CHECK_THAT(suites.what(), Contains("TLS_NO_SUCH_SUITE"));
  CHECK(ERR_peek_error() == 0);  // the error queue is left empty
}

TEST_CASE("SslContext: set_alpn_protocols refuses empty and over-long names", "[ssl]") {
  SslContext context;
  CHECK_THROWS_AS(context.set_alpn_protocols({"h2", ""}), std::invalid_argument);
  CHECK_THROWS_WITH(context.set_alpn_protocols({"h2", ""}), Contains("protocols[1]"));
  CHECK_THROWS_AS(context.set_alpn_protocols({std::string(256, 'x')}), std::invalid_argument);
  CHECK_NOTHROW(context.set_alpn_protocols({std::string(255, 'x'), "h2"}));
  CHECK_NOTHROW(context.set_alpn_protocols({}));
}

// ---- Certificates and keys --------------------------------------------------------------

TEST_CASE("SslContext: load_cert_chain loads a certificate and its key", "[ssl]") {
  TestPki& pki = shared_pki().pki;

  SECTION("from two files") {
    SslContext context;
    context.load_cert_chain(shared_pki().localhost.cert_file, shared_pki().localhost.key_file);
    CHECK(SSL_CTX_get0_certificate(context.native_handle()) != nullptr);
  }
  SECTION("from one file holding both") {
    const std::string both = pki.dir() + "/both.pem";
    write_file(both, read_file(shared_pki().other.cert_file) +
                         read_file(shared_pki().other.key_file));
    SslContext context;
    context.load_cert_chain(both);
    CHECK(SSL_CTX_check_private_key(context.native_handle()) == 1);
  }
  SECTION("with an encrypted key and its password") {
    const TlsFiles files = pki.issue("secret.test", {"DNS:secret.test"}, "s3cret pass");
    CHECK_THAT(read_file(files.key_file), Contains("ENCRYPTED"));
    SslContext context;
    context.load_cert_chain(files.cert_file, files.key_file, "s3cret pass");
    CHECK(SSL_CTX_check_private_key(context.native_handle()) == 1);
  }
}

TEST_CASE("SslContext: load_cert_chain throws SslError naming the file that failed", "[ssl]") {
  TestPki& pki = shared_pki().pki;
  const TlsFiles& localhost = shared_pki().localhost;
  SslContext context;

  SECTION("a missing certificate file") {
    const std::string missing = pki.dir() + "/missing.crt";
    const SslError error =
        ssl_error_of([&] { context.load_cert_chain(missing, localhost.key_file); });
    CHECK(error.code() == ssl_errc::bad_configuration);
    CHECK_THAT(error.what(), Contains(missing) && Contains("No such file or directory"));
  }
  SECTION("a missing key file") {
    const std::string missing = pki.dir() + "/missing.key";
    const SslError error =
        ssl_error_of([&] { context.load_cert_chain(localhost.cert_file, missing); });
    CHECK_THAT(error.what(), Contains(missing));
  }
  SECTION("an encrypted key") {
    const TlsFiles files = pki.issue("locked.test", {"DNS:locked.test"}, "right");
    SECTION("with the wrong password") {
      const SslError error = ssl_error_of(
          [&] { context.load_cert_chain(files.cert_file, files.key_file, "wrong"); });
      CHECK(error.code() == ssl_errc::bad_configuration);
      CHECK_THAT(error.what(), Contains(files.key_file) && Contains("password"));
    }
    SECTION("without a password (and no prompt on the terminal)") {
      const SslError error =
          ssl_error_of([&] { context.load_cert_chain(files.cert_file, files.key_file); });
      CHECK_THAT(error.what(), Contains(files.key_file) && Contains("password"));
    }
  }
  SECTION("a key of another certificate") {
    const SslError error = ssl_error_of(
        [&] { context.load_cert_chain(localhost.cert_file, shared_pki().other.key_file); });
    CHECK(error.code() == ssl_errc::bad_configuration);
    CHECK_THAT(error.what(), Contains(shared_pki().other.key_file) &&
                                 Contains(localhost.cert_file) && Contains("does not match"));
  }
  SECTION("a file that is no certificate") {
    const std::string junk = pki.dir() + "/junk.pem";
    write_file(junk, "not a certificate\n");
    const SslError error = ssl_error_of([&] { context.load_cert_chain(junk); });
    CHECK_THAT(error.what(), Contains(junk));
  }
  SECTION("a key file that holds no key") {
    const SslError error = ssl_error_of(
        [&] { context.load_cert_chain(localhost.cert_file, localhost.cert_file); });
    CHECK_THAT(error.what(), Contains("no PEM private key") && Contains(localhost.cert_file));
  }
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("SslContext: load_verify_locations trusts PEM files, directories and text", "[ssl]") {
  TestPki& pki = shared_pki().pki;
  SslContext context;
  X509_STORE* store = SSL_CTX_get_cert_store(context.native_handle());
  const auto certificates_in_store = [&] {
    return sk_X509_OBJECT_num(X509_STORE_get0_objects(store));
  };

  SECTION("cadata with several certificates") {
    TestPki second;
    const std::string cadata = read_file(pki.ca_file()) + "\n" + read_file(second.ca_file());
    context.load_verify_locations({}, {}, cadata);
    CHECK(certificates_in_store() == 2);
    context.load_verify_locations({}, {}, cadata);  // again: no duplicates, no error
    CHECK(certificates_in_store() == 2);
    CHECK(ERR_peek_error() == 0);
  }
  SECTION("a cafile") {
    context.load_verify_locations(pki.ca_file());
    CHECK(certificates_in_store() == 1);
  }
  SECTION("a capath") {
    CHECK_NOTHROW(context.load_verify_locations({}, pki.dir()));
  }
  SECTION("nothing, or what cannot be read: SslError") {
    CHECK(ssl_error_of([&] { context.load_verify_locations(); }).code() ==
          ssl_errc::bad_configuration);
    const std::string missing = pki.dir() + "/missing-ca.pem";
    CHECK_THAT(ssl_error_of([&] { context.load_verify_locations(missing); }).what(),
               Contains(missing));
    CHECK_THAT(ssl_error_of([&] { context.load_verify_locations({}, missing); }).what(),
               Contains(missing));
    CHECK_THAT(ssl_error_of([&] { context.load_verify_locations({}, {}, "no PEM here"); }).what(),
               Contains("cadata"));
    std::string damaged = read_file(pki.ca_file());
    damaged.insert(damaged.find('\n') + 10, "!!!!");
    CHECK_THROWS_AS(context.load_verify_locations({}, {}, damaged), SslError);
    CHECK(ERR_peek_error() == 0);
  }
}

TEST_CASE("SslContext: load_default_certs loads the system's store", "[ssl]") {
  SslContext context;
  CHECK_NOTHROW(context.load_default_certs());
}

// ---- Handshakes -------------------------------------------------------------------------

TEST_CASE("SslContext handshake: the test contexts verify the localhost certificate",
          "[ssl][handshake]") {
  const SslContext client = test_client_context();
  const SslContext server = test_server_context();

  SECTION("by name") {
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(SSL_get_verify_result(pair.client.ssl.get()) == X509_V_OK);
    CHECK(SSL_version(pair.client.ssl.get()) == TLS1_3_VERSION);
    CHECK(peer_common_name(pair.client.ssl.get()) == "localhost");
    CHECK(pair.alpn().empty());
  }
  SECTION("by IP address") {
    TlsPair pair(client, server);
    REQUIRE(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(pair.client.ssl.get()), "127.0.0.1") == 1);
    REQUIRE(pair.handshake());
    CHECK(SSL_get_verify_result(pair.client.ssl.get()) == X509_V_OK);
  }
  SECTION("not for another name") {
    TlsPair pair(client, server);
    pair.host("wrong.example");
    CHECK_FALSE(pair.handshake());
    CHECK(pair.client.failed);
    CHECK(SSL_get_verify_result(pair.client.ssl.get()) == X509_V_ERR_HOSTNAME_MISMATCH);
    CHECK(ERR_GET_REASON(pair.client.error) == SSL_R_CERTIFICATE_VERIFY_FAILED);
    CHECK(pair.server.failed);  // it received the client's alert
  }
}

TEST_CASE("SslContext handshake: a self-signed certificate does not verify, unless "
          "verify_mode is none",
          "[ssl][handshake]") {
  const TlsFiles self_signed = shared_pki().pki.self_signed("localhost", {"DNS:localhost"});
  const SslContext server = server_context(self_signed);

  TlsPair verified(test_client_context(), server);
  verified.host("localhost");
  CHECK_FALSE(verified.handshake());
  const long result = SSL_get_verify_result(verified.client.ssl.get());
  CHECK((result == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
         result == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
         result == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE));

  SslContext insecure;
  insecure.set_verify_mode(VerifyMode::none);
  TlsPair unverified(insecure, server);
  unverified.sni("localhost");
  CHECK(unverified.handshake());
}

TEST_CASE("SslContext handshake: the versions negotiated follow the contexts' limits",
          "[ssl][handshake]") {
  SslContext server = test_server_context();
  SslContext client = test_client_context();

  SECTION("a TLS 1.2-only server") {
    server.set_maximum_version(TlsVersion::tls1_2);
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(SSL_version(pair.client.ssl.get()) == TLS1_2_VERSION);
    CHECK(SSL_version(pair.server.ssl.get()) == TLS1_2_VERSION);
  }
  SECTION("a TLS 1.3-only client") {
    client.set_minimum_version(TlsVersion::tls1_3);
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(SSL_version(pair.server.ssl.get()) == TLS1_3_VERSION);
  }
  SECTION("a TLS 1.3-only client and a TLS 1.2-only server") {
    client.set_minimum_version(TlsVersion::tls1_3);
    server.set_maximum_version(TlsVersion::tls1_2);
    TlsPair pair(client, server);
    pair.host("localhost");
    CHECK_FALSE(pair.handshake());
    CHECK(pair.client.failed);
    CHECK(pair.server.failed);
  }
  SECTION("TLS 1.2 with the default cipher list: forward secrecy and AEAD") {
    server.set_maximum_version(TlsVersion::tls1_2);
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    const std::string cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(pair.client.ssl.get()));
    CHECK_THAT(cipher, Contains("ECDHE-ECDSA"));
    CHECK((cipher.find("GCM") != std::string::npos ||
           cipher.find("CHACHA20") != std::string::npos));
  }
}

TEST_CASE("SslContext handshake: ALPN picks the server's most preferred protocol that the "
          "client offers",
          "[ssl][handshake]") {
  SslContext server = test_server_context();
  SslContext client = test_client_context();

  SECTION("the server's preference wins") {
    server.set_alpn_protocols({"http/1.1", "h2"});
    client.set_alpn_protocols({"h2", "http/1.1"});
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(pair.alpn() == "http/1.1");
  }
  SECTION("one in common") {
    server.set_alpn_protocols({"spdy/3", "h2"});
    client.set_alpn_protocols({"http/1.1", "h2"});
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(pair.alpn() == "h2");
  }
  SECTION("none in common: no ALPN, and the handshake goes on") {
    server.set_alpn_protocols({"h2"});
    client.set_alpn_protocols({"http/1.1"});
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(pair.alpn().empty());
  }
  SECTION("a server without ALPN") {
    client.set_alpn_protocols({"h2"});
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(pair.alpn().empty());
  }
  SECTION("cleared again") {
    server.set_alpn_protocols({"h2"});
    server.set_alpn_protocols({});
    client.set_alpn_protocols({"h2"});
    TlsPair pair(client, server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(pair.alpn().empty());
  }
}

TEST_CASE("SslContext handshake: the SNI callback may switch the connection to another context",
          "[ssl][handshake]") {
  SslContext server = test_server_context();
  const SslContext other = server_context(shared_pki().other);
  std::vector<std::string> names;
  server.set_sni_callback([&](std::string_view name) -> std::optional<SslContext> {
    names.emplace_back(name);
    if (name == "other.test") return other;
    return std::nullopt;
  });

  SECTION("to the other certificate") {
    TlsPair pair(test_client_context(), server);
    pair.host("other.test");
    REQUIRE(pair.handshake());
    CHECK(peer_common_name(pair.client.ssl.get()) == "other.test");
    CHECK(SSL_get_SSL_CTX(pair.server.ssl.get()) == other.native_handle());
    CHECK(names == std::vector<std::string>{"other.test"});
  }
  SECTION("or keep this one") {
    TlsPair pair(test_client_context(), server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(peer_common_name(pair.client.ssl.get()) == "localhost");
    CHECK(names == std::vector<std::string>{"localhost"});
  }
  SECTION("with an empty name when the client sent none") {
    SslContext client = test_client_context();
    client.set_check_hostname(false);
    TlsPair pair(client, server);
    REQUIRE(pair.handshake());
    CHECK(peer_common_name(pair.client.ssl.get()) == "localhost");
    CHECK(names == std::vector<std::string>{""});
  }
  SECTION("removed again") {
    server.set_sni_callback(nullptr);
    TlsPair pair(test_client_context(), server);
    pair.host("localhost");
    REQUIRE(pair.handshake());
    CHECK(names.empty());
  }
}

TEST_CASE("SslContext handshake: an SNI callback that throws aborts the handshake with "
          "unrecognized_name",
          "[ssl][handshake]") {
  LogCapture log;  // no loop runs here: the exception goes to the log
  SslContext server = test_server_context();
  server.set_sni_callback([](std::string_view name) -> std::optional<SslContext> {
    throw std::runtime_error("no certificate for " + std::string(name));
  });
  TlsPair pair(test_client_context(), server);
  pair.host("localhost");
  CHECK_FALSE(pair.handshake());
  CHECK(pair.server.failed);
  CHECK(pair.client.failed);
  CHECK(ERR_GET_REASON(pair.client.error) == SSL_R_TLSV1_UNRECOGNIZED_NAME);
  REQUIRE(log.messages.size() == 1);
  CHECK_THAT(log.messages[0], Contains("SNI callback") && Contains("no certificate for localhost"));
}

TEST_CASE("SslContext handshake: a server that requires client certificates, and resumes "
          "their sessions",
          "[ssl][handshake]") {
  SslContext server = test_server_context();
  server.set_verify_mode(VerifyMode::required);
  server.load_verify_locations(shared_pki().pki.ca_file());
  server.set_maximum_version(TlsVersion::tls1_2);  // sessions without reading tickets

  SECTION("a client without a certificate is refused") {
    TlsPair pair(test_client_context(), server);
    pair.host("localhost");
    CHECK_FALSE(pair.handshake());
    CHECK(pair.server.failed);
  }
  SECTION("a client with one is let in, and its session resumed") {
    SslContext client = test_client_context();
    client.load_cert_chain(shared_pki().other.cert_file, shared_pki().other.key_file);
    TlsPair first(client, server);
    first.host("localhost");
    REQUIRE(first.handshake());
    CHECK(peer_common_name(first.server.ssl.get()) == "other.test");
    SSL_SESSION* session = SSL_get1_session(first.client.ssl.get());
    REQUIRE(session != nullptr);

    TlsPair second(client, server);
    second.host("localhost");
    REQUIRE(SSL_set_session(second.client.ssl.get(), session) == 1);
    SSL_SESSION_free(session);
    REQUIRE(second.handshake());
    CHECK(SSL_session_reused(second.client.ssl.get()) == 1);
    CHECK(peer_common_name(second.server.ssl.get()) == "other.test");
  }
}

TEST_CASE("SslContext handshake: the callbacks stay safe after every SslContext handle is gone",
          "[ssl][handshake]") {
  // The SSLs are made while the contexts exist; the handshake runs after the last handle
  // died. The SNI callback returns a context that no one keeps: the SSL does, and that
  // context's ALPN callback then picks the protocol.
  std::optional<TlsPair> pair;
  int sni_calls = 0;
  {
    SslContext server = test_server_context();
    server.set_alpn_protocols({"h2"});
    server.set_sni_callback([&sni_calls](std::string_view) -> std::optional<SslContext> {
      ++sni_calls;
      SslContext fresh = server_context(shared_pki().other);
      fresh.set_alpn_protocols({"http/1.1", "h2"});
      return fresh;
    });
    SslContext client = test_client_context();
    client.set_alpn_protocols({"h2", "http/1.1"});
    pair.emplace(client, server);
    pair->host("other.test");
  }
  REQUIRE(pair->handshake());
  CHECK(sni_calls == 1);
  CHECK(peer_common_name(pair->client.ssl.get()) == "other.test");
  CHECK(pair->alpn() == "http/1.1");
  pair.reset();  // frees the SSLs, and with them the SSL_CTXs and their State (LSan checks)
}
