#pragma once
// Test support for the TLS tests: a throwaway PKI made with OpenSSL's C API (a CA and the
// leaves it signs, EC P-256 keys, SHA-256, valid from an hour ago for a day) in PEM files
// under a fresh temporary directory, and the server and client contexts most tests use.

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <strata/transports/ssl.hpp>

namespace strata::testing {

/// A leaf's certificate and private key files (PEM).
struct TlsFiles {
  std::string cert_file, key_file;
};

namespace detail {

struct PkeyFree {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
struct X509Free {
  void operator()(X509* cert) const noexcept { X509_free(cert); }
};
struct BioFree {
  void operator()(BIO* bio) const noexcept { BIO_free(bio); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

/// Throws std::runtime_error with @p what and OpenSSL's last error, emptying its queue.
[[noreturn]] inline void throw_openssl(const std::string& what) {
  char reason[256] = "unknown OpenSSL error";
  if (const unsigned long error = ERR_peek_last_error()) {
    ERR_error_string_n(error, reason, sizeof reason);
  }
  ERR_clear_error();
  throw std::runtime_error("test PKI: " + what + ": " + reason);
}

inline void check(int ok, const char* what) {
  if (ok != 1) throw_openssl(what);
}

/// A new EC P-256 key.
inline Pkey new_key() {
  Pkey key(EVP_EC_gen("P-256"));
  if (!key) throw_openssl("EVP_EC_gen");
  return key;
}

/// A serial number no other certificate of this process has.
inline std::uint64_t next_serial() {
  static std::atomic<std::uint64_t> serial{1};
  return serial++;
}

/// Adds the extension @p nid with OpenSSL's config syntax @p value ("critical,CA:TRUE").
inline void add_extension(X509* cert, X509V3_CTX& ctx, int nid, const char* value) {
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (extension == nullptr) throw_openssl(std::string("extension ") + value);
  const int ok = X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
  check(ok, "X509_add_ext");
}

/// A v3 certificate for @p key, CN=@p common_name,O=Strata tests, valid from an hour ago for
/// a day; signed by @p issuer_key under @p issuer (itself when null: self-signed).
/// @p extensions are (nid, value) pairs added after the key identifiers.
inline Cert make_certificate(EVP_PKEY* key, const std::string& common_name, X509* issuer,
                             EVP_PKEY* issuer_key,
                             const std::vector<std::pair<int, std::string>>& extensions) {
  Cert cert(X509_new());
  if (!cert) throw_openssl("X509_new");
  check(X509_set_version(cert.get(), X509_VERSION_3), "X509_set_version");
  check(ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), next_serial()),
        "ASN1_INTEGER_set_uint64");
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60L * 60) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24L * 60 * 60) == nullptr) {
    throw_openssl("X509_gmtime_adj");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>("Strata tests"), -1,
                                   -1, 0),
        "X509_NAME_add_entry_by_txt O");
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()),
                                   -1, -1, 0),
        "X509_NAME_add_entry_by_txt CN");
  X509* signer = issuer != nullptr ? issuer : cert.get();
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)), "X509_set_issuer_name");
  check(X509_set_pubkey(cert.get(), key), "X509_set_pubkey");

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, signer, cert.get(), nullptr, nullptr, 0);
  // The subject key identifier first: a self-signed certificate's authority key identifier
  // is copied from it.
  add_extension(cert.get(), ctx, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), ctx, NID_authority_key_identifier, "keyid:always");
  for (const auto& [nid, value] : extensions) add_extension(cert.get(), ctx, nid, value.c_str());

  if (X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) <= 0) {
    throw_openssl("X509_sign");
  }
  return cert;
}

/// The extensions of a leaf: a TLS server or client for the names @p sans.
inline std::vector<std::pair<int, std::string>> leaf_extensions(
    const std::vector<std::string>& sans) {
  std::string san_value;
  for (const std::string& san : sans) san_value += (san_value.empty() ? "" : ",") + san;
  std::vector<std::pair<int, std::string>> extensions = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, "serverAuth,clientAuth"},
  };
  if (!san_value.empty()) extensions.emplace_back(NID_subject_alt_name, san_value);
  return extensions;
}

inline void write_certificate(const std::string& path, X509* cert) {
  const std::unique_ptr<BIO, BioFree> bio(BIO_new_file(path.c_str(), "w"));
  if (!bio) throw_openssl("cannot write " + path);
  check(PEM_write_bio_X509(bio.get(), cert), "PEM_write_bio_X509");
}

/// Writes @p key as PKCS#8 PEM, encrypted with AES-256-CBC under @p password if one is given.
inline void write_key(const std::string& path, EVP_PKEY* key, const std::string& password) {
  const std::unique_ptr<BIO, BioFree> bio(BIO_new_file(path.c_str(), "w"));
  if (!bio) throw_openssl("cannot write " + path);
  const EVP_CIPHER* cipher = password.empty() ? nullptr : EVP_aes_256_cbc();
  check(PEM_write_bio_PrivateKey(bio.get(), key, cipher,
                                 reinterpret_cast<const unsigned char*>(password.data()),
                                 static_cast<int>(password.size()), nullptr, nullptr),
        "PEM_write_bio_PrivateKey");
}

/// @p name with anything but letters, digits, '.' and '-' replaced, for a file name.
inline std::string file_stem(const std::string& name) {
  std::string stem;
  for (const char c : name) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       (c >= '0' && c <= '9') || c == '.' || c == '-';
    stem += plain ? c : '_';
  }
  return stem;
}

}  // namespace detail

/// A throwaway certificate authority and the leaves it issues, as PEM files in a temporary
/// directory that goes away with it.
class TestPki {
 public:
  /// Makes the CA (CN "Strata Test CA") and writes ca_file().
  TestPki() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                          "/strata-pki-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    }
    dir_ = pattern;
    try {
      ca_key_ = detail::new_key();
      ca_cert_ = detail::make_certificate(
          ca_key_.get(), "Strata Test CA", nullptr, nullptr,
          {{NID_basic_constraints, "critical,CA:TRUE"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"}});
      ca_file_ = dir_ + "/ca.pem";
      detail::write_certificate(ca_file_, ca_cert_.get());
    } catch (...) {
      remove_dir();
      throw;
    }
  }
  ~TestPki() { remove_dir(); }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  /// The CA's certificate (PEM).
  const std::string& ca_file() const { return ca_file_; }
  /// The directory holding every file of this PKI.
  const std::string& dir() const { return dir_; }

  /// A leaf signed by the CA, for the subjectAltName entries @p sans ("DNS:localhost",
  /// "IP:127.0.0.1"). With @p key_password, the key file is encrypted (AES-256-CBC).
  TlsFiles issue(const std::string& common_name, const std::vector<std::string>& sans,
                 const std::string& key_password = {}) {
    detail::Pkey key = detail::new_key();
    detail::Cert cert = detail::make_certificate(key.get(), common_name, ca_cert_.get(),
                                                 ca_key_.get(), detail::leaf_extensions(sans));
    return write_leaf(common_name, cert.get(), key.get(), key_password);
  }

  /// A self-signed leaf (not from the CA): no one trusts it.
  TlsFiles self_signed(const std::string& common_name, const std::vector<std::string>& sans) {
    detail::Pkey key = detail::new_key();
    detail::Cert cert = detail::make_certificate(key.get(), common_name, nullptr, nullptr,
                                                 detail::leaf_extensions(sans));
    return write_leaf(common_name, cert.get(), key.get(), {});
  }

 private:
  TlsFiles write_leaf(const std::string& common_name, X509* cert, EVP_PKEY* key,
                      const std::string& key_password) {
    const std::string stem =
        dir_ + "/" + std::to_string(++leaves_) + "-" + detail::file_stem(common_name);
    TlsFiles files{stem + ".crt", stem + ".key"};
    detail::write_certificate(files.cert_file, cert);
    detail::write_key(files.key_file, key, key_password);
    return files;
  }

  /// Removes the directory, unless this is a forked child exiting: the files are its
  /// parent's.
  void remove_dir() noexcept {
    std::error_code ec;
    if (!dir_.empty() && ::getpid() == owner_) std::filesystem::remove_all(dir_, ec);
  }

  pid_t owner_ = ::getpid();
  std::string dir_;
  std::string ca_file_;
  detail::Pkey ca_key_;
  detail::Cert ca_cert_;
  int leaves_ = 0;
};

/// The PKI shared by the tests of a process: the CA, and leaves for "localhost"
/// (DNS:localhost, IP:127.0.0.1), "other.test" (DNS:other.test) and "wrong.example"
/// (DNS:wrong.example).
struct SharedPki {
  TestPki pki;
  TlsFiles localhost = pki.issue("localhost", {"DNS:localhost", "IP:127.0.0.1"});
  TlsFiles other = pki.issue("other.test", {"DNS:other.test"});
  TlsFiles wrong = pki.issue("wrong.example", {"DNS:wrong.example"});
};

/// The process's SharedPki, made on first use (thread-safe) and removed at exit.
inline SharedPki& shared_pki() {
  static SharedPki shared;
  return shared;
}

/// A server context (SslPurpose::client_auth) serving the "localhost" leaf of shared_pki().
inline SslContext test_server_context() {
  const SharedPki& shared = shared_pki();
  SslContext context = SslContext::create_default_context(SslPurpose::client_auth);
  context.load_cert_chain(shared.localhost.cert_file, shared.localhost.key_file);
  return context;
}

/// A client context with create_default_context()'s settings (verify_mode required,
/// check_hostname on) that also trusts the test CA of shared_pki().
inline SslContext test_client_context() {
  SslContext context = SslContext::create_default_context(SslPurpose::server_auth);
  context.load_verify_locations(shared_pki().pki.ca_file());
  return context;
}

}  // namespace strata::testing
