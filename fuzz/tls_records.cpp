// Fuzz target tls_records: the TLS transport (transports/src/ssl_transport.cpp, through the public
// start_tls()) on the server side of a connection, fed records after a real handshake. A client
// and a server TLS transport, each stacked on an in-memory MemoryStream, complete a handshake
// in memory (TLS 1.3, or 1.2; an EC P-256 certificate made once at start-up, verified by the
// client with its host name). Then the input writes application data on the genuine client,
// whose records join the wire to the server, and tampers with that wire: raw bytes, forged
// record headers, bytes flipped, bytes dropped, old records replayed; it delivers the wire in
// input-chosen chunks, key-updates the client (TLS 1.3), closes the client (close_notify) or
// the server, ends the stream (EOF), and has the server's protocol pause and resume reading.
// The server's protocol is a Protocol or a BufferedProtocol with a tiny or a large buffer, and
// may echo what it receives (its write buffer then fills while the client does not read, and
// it pauses reading until the client does).
//
// What it checks, knowing which wire bytes are the genuine client's (G, all it wrote after the
// handshake) and which plaintext the client's protocol wrote (P), with q the first wire byte
// delivered to the server that differs from G (or the bytes delivered, if none does):
// - The server's protocol receives exactly a prefix of P, never other bytes; no more than the
//   writes that began before q, and (unless it closed the connection itself) at the end at least
//   the writes whose records all lie before q. With an echo, the client receives a prefix of
//   what the server received.
// - At the end (the rest of the wire delivered, then EOF) the server's protocol has had exactly
//   one connection_lost(), with no error if the client's genuine close_notify lies before q
//   (then eof_received() once, and all of P), else with ssl_errc::protocol_error or
//   ssl_errc::truncated (truncated if every byte delivered was genuine). When the server's
//   protocol closed first any outcome is allowed, still exactly once.
// - No data after connection_lost() or eof_received(), none while reading is paused; the stream
//   below is closed or aborted by the TLS layer when the connection ends (never left open);
//   nothing is written to it after close(). The stream's write buffer never holds more than
//   the high-water mark plus what one delivery of 64 KiB echoes. No exception reaches the loop;
//   every protocol and TLS layer is destroyed at the end (ASan reports leaks).
//
// Input: 1 configuration byte, then commands.
//   [0] bit 0: TLS 1.2 (else 1.3); bit 1: the server's protocol is a BufferedProtocol; bits 2-3:
//       its buffer, 1, 7, 100 or 65536 bytes; bit 4: it echoes what it receives; bit 5: it
//       pauses reading after each delivery (until a command resumes it); bit 6: the client
//       reads what the server sends only when a command says (else at once); bit 7: the
//       server's write buffer high-water mark is 256 (low 64) instead of 64 KiB.
//   Each command is one byte c; op = c & 15, a = c >> 4 (0..15):
//     0: the client's protocol writes the next a + 1 input bytes
//     1: the client's protocol writes a x 1100 + 1 bytes of a pattern (records of up to 16 KiB)
//     2: the next 1, 2, 3, 5, 8, 13, 21, 64, 100, 300, 1000, 5000, 17000 or all (a = 13..15)
//        bytes of the wire are delivered to the server
//     3: the next a + 1 input bytes join the wire as they are
//     4: a forged record joins the wire: the next input byte t gives its type (20..23, t & 3)
//        and version (t >> 2 & 3: 3.3, 3.1, 3.4, or the byte itself); its body is the next
//        a + 1 input bytes; with t & 0x80 its length field is the next 2 input bytes instead
//        of the body's length
//     5: the byte at offset (next 2 input bytes) of the wire not yet delivered is XORed with
//        a + 1
//     6: a + 1 bytes at offset (next 2 input bytes) of the wire not yet delivered are dropped
//     7: the (next input byte)-th last genuine record is appended to the wire again (a replay)
//     8: the server's protocol pauses reading      9: the server's protocol resumes reading
//    10: the client reads everything the server sent
//    11: the client closes (close_notify)
//    12: the client updates its keys (TLS 1.3; a odd: and requests the server's update),
//        then writes "k" (which sends the KeyUpdate)
//    13: the stream to the server ends (EOF)
//    14: the server's protocol closes its transport
//    15: everything left on the wire is delivered
//   At the end the server's protocol resumes reading, the wire is delivered, the client reads,
//   and the stream to the server ends if it has not.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <strata/core/coro.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/task.hpp>
#include <strata/transports/protocol.hpp>
#include <strata/transports/ssl.hpp>
#include <strata/transports/transport.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "memory_stream.hpp"

namespace {

using namespace strata_fuzz;

// ---- The certificate and the contexts (made once) ---------------------------------------

/// fail() unless an OpenSSL call of the set-up succeeded.
void require(bool ok, const char* what) {
  if (ok) return;
  char reason[256] = "unknown";
  if (const unsigned long e = ERR_peek_last_error()) ERR_error_string_n(e, reason, sizeof reason);
  fail(std::string("TLS set-up: ") + what, reason);
}

struct Contexts {
  strata::SslContext server;
  strata::SslContext client13;
  strata::SslContext client12;
};

/// A self-signed EC P-256 certificate for DNS:localhost; the server's context serves it (set
/// on its SSL_CTX, no file), the clients' trust it and check the host name.
Contexts make_contexts() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  require(key != nullptr, "EVP_EC_gen");
  X509* cert = X509_new();
  require(cert != nullptr, "X509_new");
  require(X509_set_version(cert, X509_VERSION_3) == 1, "X509_set_version");
  require(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) == 1, "serial");
  require(X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != nullptr &&
              X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600) != nullptr,
          "validity");
  X509_NAME* name = X509_get_subject_name(cert);
  require(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>("localhost"), -1, -1,
                                     0) == 1,
          "CN");
  require(X509_set_issuer_name(cert, name) == 1, "issuer");
  require(X509_set_pubkey(cert, key) == 1, "X509_set_pubkey");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                                   std::pair{NID_subject_alt_name, "DNS:localhost"},
                                   std::pair{NID_subject_key_identifier, "hash"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    require(ext != nullptr && X509_add_ext(cert, ext, -1) == 1, value);
    X509_EXTENSION_free(ext);
  }
  require(X509_sign(cert, key, EVP_sha256()) > 0, "X509_sign");
  BIO* bio = BIO_new(BIO_s_mem());
  require(bio != nullptr && PEM_write_bio_X509(bio, cert) == 1, "PEM_write_bio_X509");
  char* pem_data = nullptr;
  const long pem_size = BIO_get_mem_data(bio, &pem_data);
  const std::string pem(pem_data, static_cast<std::size_t>(pem_size));
  BIO_free(bio);

  Contexts c;
  SSL_CTX* server = c.server.native_handle();
  require(SSL_CTX_use_certificate(server, cert) == 1, "SSL_CTX_use_certificate");
  require(SSL_CTX_use_PrivateKey(server, key) == 1, "SSL_CTX_use_PrivateKey");
  // No session state across inputs, and no tickets to send: every input starts afresh.
  SSL_CTX_set_session_cache_mode(server, SSL_SESS_CACHE_OFF);
  require(SSL_CTX_set_num_tickets(server, 0) == 1, "SSL_CTX_set_num_tickets");
  X509_free(cert);
  EVP_PKEY_free(key);
  for (strata::SslContext* client : {&c.client13, &c.client12}) {
    client->load_verify_locations({}, {}, pem);
    client->set_check_hostname(true);
  }
  c.client12.set_maximum_version(strata::TlsVersion::tls1_2);
  ERR_clear_error();
  return c;
}

const Contexts& contexts() {
  static const Contexts c = make_contexts();
  return c;
}

// ---- The protocols ------------------------------------------------------------------------

/// What a protocol saw; outlives it (the TLS layer owns and destroys the protocol).
struct Seen {
  std::string received;
  int made = 0;
  int eofs = 0;
  int lost = 0;
  std::error_code lost_error;
  strata::Transport* transport = nullptr;  // from connection_made() to connection_lost()
  bool pause_each = false;                 // pause reading after each delivery
  bool script_paused = false;              // the input paused reading (or pause_each did)
  bool flow_paused = false;                // paused reading while its writing is paused
  bool reading_paused = false;             // what it told the transport
};

/// The behaviour both kinds of protocol share.
class Logic {
 public:
  Logic(std::shared_ptr<Seen> seen, bool echo, std::optional<std::size_t> high)
      : seen_(std::move(seen)), echo_(echo), high_(high) {}

  void made(strata::Transport& transport) {
    check(seen_->made++ == 0, "connection_made() twice");
    seen_->transport = &transport;
    if (high_) transport.set_write_buffer_limits(*high_, *high_ / 4);
  }
  void data(std::span<const std::byte> bytes) {
    check(seen_->made == 1 && seen_->lost == 0,
          "data outside connection_made()..connection_lost()");
    check(seen_->eofs == 0, "data after eof_received()");
    check(!seen_->reading_paused, "data while reading is paused");
    check(!bytes.empty(), "an empty delivery");
    seen_->received.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    ++activity;
    if (echo_) seen_->transport->write(bytes);
    if (seen_->pause_each && seen_->transport != nullptr) {
      seen_->script_paused = true;
      update_reading(*seen_);
    }
  }
  bool eof() {
    check(seen_->made == 1 && seen_->lost == 0, "eof_received() outside the connection");
    check(seen_->eofs++ == 0, "eof_received() twice");
    ++activity;
    return false;
  }
  void lost(std::error_code ec) {
    check(seen_->lost++ == 0, "connection_lost() twice");
    check(seen_->made == 1, "connection_lost() without connection_made()");
    seen_->lost_error = ec;
    seen_->transport = nullptr;
    ++activity;
  }
  void pause_writing() {
    check(!seen_->flow_paused, "pause_writing() twice");
    seen_->flow_paused = true;
    if (echo_) update_reading(*seen_);
  }
  void resume_writing() {
    check(seen_->flow_paused, "resume_writing() without pause_writing()");
    seen_->flow_paused = false;
    if (echo_) update_reading(*seen_);
  }

  /// Tells the transport to read or not, as the input and the flow say.
  static void update_reading(Seen& s) {
    if (s.transport == nullptr) return;
    const bool pause = s.script_paused || s.flow_paused;
    if (pause == s.reading_paused) return;
    s.reading_paused = pause;
    if (pause) {
      s.transport->pause_reading();
    } else {
      s.transport->resume_reading();
    }
  }

 private:
  std::shared_ptr<Seen> seen_;
  bool echo_;
  std::optional<std::size_t> high_;
};

class PlainApp final : public strata::Protocol {
 public:
  explicit PlainApp(Logic logic) : logic_(std::move(logic)) {}
  void connection_made(strata::Transport& t) override { logic_.made(t); }
  void data_received(std::span<const std::byte> data) override { logic_.data(data); }
  bool eof_received() override { return logic_.eof(); }
  void connection_lost(std::error_code ec) override { logic_.lost(ec); }
  void pause_writing() override { logic_.pause_writing(); }
  void resume_writing() override { logic_.resume_writing(); }

 private:
  Logic logic_;
};

class BufferedApp final : public strata::BufferedProtocol {
 public:
  BufferedApp(Logic logic, std::size_t size) : logic_(std::move(logic)), buffer_(size) {}
  void connection_made(strata::Transport& t) override { logic_.made(t); }
  std::span<std::byte> get_buffer(std::size_t) override { return buffer_; }
  void buffer_updated(std::size_t n) override {
    check(n <= buffer_.size(), "buffer_updated() past the buffer");
    logic_.data(std::span(buffer_).first(n));
  }
  bool eof_received() override { return logic_.eof(); }
  void connection_lost(std::error_code ec) override { logic_.lost(ec); }
  void pause_writing() override { logic_.pause_writing(); }
  void resume_writing() override { logic_.resume_writing(); }

 private:
  Logic logic_;
  std::vector<std::byte> buffer_;
};

// ---- The run ----------------------------------------------------------------------------------

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

struct Options {
  bool tls12 = false;
  bool buffered = false;
  std::size_t buffer_size = 65536;
  bool echo = false;
  bool pause_each = false;
  bool client_reads_on_command = false;
  std::optional<std::size_t> server_high;
};

/// One genuine write of the client's protocol: where its records lie in G, and its size.
struct GenuineWrite {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size = 0;
};

class Run {
 public:
  explicit Run(const Options& options) : options_(options) {}
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  /// The handshake, in memory (a failure of it breaks an invariant).
  void handshake() {
    const Contexts& c = contexts();
    strata::SslOptions client_ssl(options_.tls12 ? c.client12 : c.client13);
    client_ssl.server_hostname = "localhost";
    const strata::SslOptions server_ssl(c.server);
    auto client_app = std::make_unique<PlainApp>(Logic(client_, false, std::nullopt));
    std::unique_ptr<strata::BaseProtocol> server_app;
    server_->pause_each = options_.pause_each;
    Logic server_logic(server_, options_.echo, options_.server_high);
    if (options_.buffered) {
      server_app = std::make_unique<BufferedApp>(std::move(server_logic), options_.buffer_size);
    } else {
      server_app = std::make_unique<PlainApp>(std::move(server_logic));
    }
    strata::Task<strata::Transport*> client_task = loop().create_task(
        strata::start_tls(client_stream_, client_ssl, false, std::move(client_app)));
    strata::Task<strata::Transport*> server_task = loop().create_task(
        strata::start_tls(server_stream_, server_ssl, true, std::move(server_app)));
    for (int i = 0; i < 64 && !(client_task.done() && server_task.done()); ++i) {
      run_until_idle();
      server_stream_.receive(bytes_of(client_stream_.take(SIZE_MAX)));
      client_stream_.receive(bytes_of(server_stream_.take(SIZE_MAX)));
    }
    run_until_idle();
    for (strata::Task<strata::Transport*>* task : {&client_task, &server_task}) {
      check(task->done(), "the in-memory handshake did not complete");
      try {
        (void)task->result();
      } catch (const std::exception& e) {
        fail("the in-memory handshake failed", e.what());
      }
    }
    check(client_->transport != nullptr && server_->transport != nullptr,
          "connection_made() not called after the handshake");
    check(client_stream_.pending() == 0, "the client has more to say after its handshake");
    settle();
  }

  // ---- The commands

  void client_write(std::string_view data) {
    strata::Transport* t = client_->transport;
    if (t == nullptr || t->is_closing() || data.empty()) return;
    log("client writes " + std::to_string(data.size()));
    const std::size_t begin = genuine_.size();
    in_loop([&] { t->write(bytes_of(data)); });
    collect();
    writes_.push_back({begin, genuine_.size(), data.size()});
    plaintext_.append(data);
    settle();
  }
  void deliver(std::size_t n) {
    if (!server_stream_.can_receive() || delivered_ >= wire_.size()) return;
    const std::string_view part = std::string_view(wire_).substr(delivered_, n);
    log("deliver " + std::to_string(part.size()) + " at " + std::to_string(delivered_));
    delivered_ += server_stream_.receive(bytes_of(part));
    settle();
  }
  void inject(std::string_view bytes) {
    log("inject " + show_bytes(bytes, 64));
    wire_.append(bytes);
    check_now();
  }
  void flip(std::size_t offset, unsigned mask) {
    if (delivered_ >= wire_.size()) return;
    const std::size_t at = delivered_ + offset % (wire_.size() - delivered_);
    log("flip " + std::to_string(at) + " ^ " + std::to_string(mask));
    wire_[at] = static_cast<char>(static_cast<unsigned char>(wire_[at]) ^ mask);
  }
  void drop(std::size_t offset, std::size_t n) {
    if (delivered_ >= wire_.size()) return;
    const std::size_t at = delivered_ + offset % (wire_.size() - delivered_);
    log("drop " + std::to_string(n) + " at " + std::to_string(at));
    wire_.erase(at, n);
  }
  void replay(std::size_t back) {
    if (records_.empty()) return;
    const auto [begin, size] = records_[records_.size() - 1 - back % records_.size()];
    log("replay the record at " + std::to_string(begin));
    wire_.append(genuine_, begin, size);
  }
  void server_pause(bool pause) {
    if (server_->transport == nullptr) return;
    log(pause ? "server pauses reading" : "server resumes reading");
    in_loop([&] {
      server_->script_paused = pause;
      Logic::update_reading(*server_);
    });
    settle();
  }
  void client_reads() {
    log("client reads");
    to_client();
    settle();
  }
  void client_close() {
    strata::Transport* t = client_->transport;
    if (t == nullptr || t->is_closing()) return;
    log("client closes");
    client_closing_ = true;
    in_loop([&] { t->close(); });
    settle();
  }
  void key_update(bool request) {
    strata::Transport* t = client_->transport;
    if (t == nullptr || t->is_closing() || options_.tls12) return;
    log(request ? "key update, requested" : "key update");
    SSL* ssl = t->get_extra_info_as<SSL*>("ssl_object").value_or(nullptr);
    check(ssl != nullptr, "no ssl_object on the client");
    if (SSL_key_update(ssl, request ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED) !=
        1) {
      ERR_clear_error();  // one is pending already
    }
    // OpenSSL sends the KeyUpdate with the next SSL_write(), and until then refuses
    // SSL_shutdown() ("shutdown while in init"): the client writes a byte at once.
    client_write("k");
  }
  void eof() {
    if (!server_stream_.can_receive()) return;
    log("EOF to the server");
    server_stream_.receive_eof();
    settle();
  }
  void server_close() {
    strata::Transport* t = server_->transport;
    if (t == nullptr) return;
    log("server closes");
    server_closed_ = true;
    in_loop([&] { t->close(); });
    settle();
  }

  /// The end: the server reads, the wire is delivered, EOF; then the verdict.
  void finish() {
    log("finish");
    server_->pause_each = false;
    server_pause(false);
    for (int i = 0; i < 1000; ++i) {
      const std::size_t before = delivered_;
      const std::size_t server_pending = server_stream_.pending();
      deliver(SIZE_MAX);
      to_client();
      settle();
      if (delivered_ == before && server_stream_.pending() == server_pending) break;
    }
    // An echoing server may still be paused, its reading stopped until the client takes its
    // output (the loop above ends when an iteration moves no bytes on the wire, which can
    // happen while the TLS layer still holds ciphertext it kept while paused). A paused
    // socket would not see the EOF: let the client read until the server reads again.
    for (int i = 0; i < 1000 && !server_stream_.can_receive() && server_->lost == 0; ++i) {
      to_client();
      settle();
    }
    eof();
    for (int i = 0; i < 1000 && server_stream_.pending() > 0 && !server_stream_.lost(); ++i) {
      to_client();
      settle();
    }
    check_now();
    if (std::getenv("STRATA_FUZZ_TRACE") != nullptr) {
      std::fprintf(stderr, "[tls_records] server: lost %d (%s), eof %d; %s\n", server_->lost,
                   server_->lost_error.message().c_str(), server_->eofs, context().c_str());
    }
    verdict();
    client_stream_.finish();
    server_stream_.finish();
    check(loop_exceptions.empty(), "an exception reached the loop",
          loop_exceptions.empty() ? "" : loop_exceptions.front());
  }

 private:
  void log(const std::string& line) { script_ += line + "\n"; }
  std::string context() const {
    return "server received " + std::to_string(server_->received.size()) + " of " +
           std::to_string(plaintext_.size()) + " written; wire " + std::to_string(wire_.size()) +
           ", delivered " + std::to_string(delivered_) + ", genuine " +
           std::to_string(genuine_.size()) + ", first difference " +
           std::to_string(divergence()) + "\nscript:\n" + script_;
  }

  /// What the client wrote (all of it reaches the wire at once).
  void collect() {
    const std::string out = client_stream_.take(SIZE_MAX);
    if (out.empty()) return;
    // Closing, the client writes its close_notify at once, as the last of its output.
    if (client_closing_ && !close_notify_end_) close_notify_end_ = genuine_.size() + out.size();
    genuine_ += out;
    wire_ += out;
    // The client writes whole records.
    while (parsed_ + 5 <= genuine_.size()) {
      const std::size_t length = (static_cast<unsigned char>(genuine_[parsed_ + 3]) << 8) |
                                 static_cast<unsigned char>(genuine_[parsed_ + 4]);
      if (parsed_ + 5 + length > genuine_.size()) break;
      records_.emplace_back(parsed_, 5 + length);
      parsed_ += 5 + length;
    }
    check(parsed_ == genuine_.size(), "the client wrote part of a record");
  }
  /// What the server sent, to the client (or into the void once the client is gone).
  void to_client() {
    for (int i = 0; i < 1000 && server_stream_.pending() > 0; ++i) {
      if (client_stream_.lost()) {
        (void)server_stream_.take(SIZE_MAX);
        break;
      }
      if (!client_stream_.can_receive()) break;
      const bool had_eof = client_->eofs > 0;
      client_stream_.receive(bytes_of(server_stream_.take(SIZE_MAX)));
      // The server's close_notify: the client's protocol returned false, the client closed
      // and sent its own.
      if (!had_eof && client_->eofs > 0) client_closing_ = true;
      run_until_idle();
      collect();
    }
  }
  /// After each step: the loop runs until idle, the client's bytes join the wire, and the
  /// client reads unless it reads on command; then the checks.
  void settle() {
    run_until_idle();
    collect();
    if (!options_.client_reads_on_command) to_client();
    check_now();
  }

  /// The first wire byte that is not the genuine stream's.
  std::size_t divergence() const {
    const std::size_t n = std::min(wire_.size(), genuine_.size());
    const auto end = wire_.begin() + static_cast<std::ptrdiff_t>(n);
    return static_cast<std::size_t>(std::mismatch(wire_.begin(), end, genuine_.begin()).first -
                                    wire_.begin());
  }
  /// Plaintext of the writes whose records begin before @p q / end at or before @p q.
  std::size_t upper(std::size_t q) const {
    std::size_t n = 0;
    for (const GenuineWrite& w : writes_) n += w.begin < q ? w.size : 0;
    return n;
  }
  std::size_t lower(std::size_t q) const {
    std::size_t n = 0;
    for (const GenuineWrite& w : writes_) n += w.end <= q ? w.size : 0;
    return n;
  }

  void check_now() {
    const std::string& s = server_->received;
    check(plaintext_.compare(0, s.size(), s) == 0 && s.size() <= plaintext_.size(),
          "the server received bytes the client did not send",
          "received " + show_bytes(s, 200) + "\n" + context());
    const std::size_t q = std::min(divergence(), delivered_);
    check(s.size() <= upper(q),
          "the server received data of records it had not been delivered intact", context());
    check(s.starts_with(client_->received),
          "the client received other bytes than the server's echo",
          "client received " + show_bytes(client_->received, 200) + "\n" + context());
    if (!options_.echo)
      check(client_->received.empty(), "the client received data it was not sent");
    if (server_->lost > 0) {
      check(
          server_stream_.lost() && (server_stream_.close_called() || server_stream_.abort_called()),
          "the connection ended but the TLS layer did not close the stream below", context());
    }
    check(server_stream_.writes_after_close() == 0,
          "the TLS layer wrote to its stream after close()");
    check(client_stream_.writes_after_close() == 0, "the client's TLS layer wrote after close()");
    const std::size_t high = options_.server_high.value_or(64 * 1024);
    check(server_stream_.peak_buffered() <= high + 64 * 1024 + 4096,
          "the server's stream buffered more than the high-water mark and one delivery's echo",
          std::to_string(server_stream_.peak_buffered()) + "\n" + context());
  }

  void verdict() {
    const Seen& s = *server_;
    const std::string where = context();
    check(s.lost == 1, "the server's connection did not end after the wire and EOF", where);
    const std::size_t q = std::min(divergence(), delivered_);
    if (!server_closed_) {
      check(s.received.size() >= lower(q), "the server did not receive data of intact records",
            where);
    }
    if (server_closed_) return;  // it dropped what came after its close: any end is fine
    if (close_notify_end_ && q >= *close_notify_end_) {
      check(!s.lost_error, "the genuine close_notify did not end the connection cleanly",
            s.lost_error.message() + "\n" + where);
      check(s.eofs == 1, "the genuine close_notify did not reach eof_received()", where);
      check(s.received == plaintext_, "not all data before close_notify was received", where);
      return;
    }
    check(s.lost_error == strata::ssl_errc::protocol_error ||
              s.lost_error == strata::ssl_errc::truncated,
          "a tampered or cut stream did not end with protocol_error or truncated",
          s.lost_error.message() + "\n" + where);
    if (q == delivered_) {
      check(s.lost_error == strata::ssl_errc::truncated,
            "genuine records then EOF did not end as truncated",
            s.lost_error.message() + "\n" + where);
    }
  }

  Options options_;
  std::shared_ptr<Seen> client_ = std::make_shared<Seen>();
  std::shared_ptr<Seen> server_ = std::make_shared<Seen>();
  MemoryStream client_stream_{"client stream"};
  MemoryStream server_stream_{"server stream"};
  std::string genuine_;  // G: every byte the client wrote after the handshake
  std::string wire_;     // what goes to the server: G, tampered with
  std::size_t delivered_ = 0;
  std::vector<std::pair<std::size_t, std::size_t>> records_;  // G's records: offset, size
  std::size_t parsed_ = 0;
  std::vector<GenuineWrite> writes_;
  std::string plaintext_;  // P
  bool client_closing_ = false;
  std::optional<std::size_t> close_notify_end_;  // where G's close_notify ends
  bool server_closed_ = false;
  std::string script_;
};

/// Reads input bytes past the end as 0.
class Cursor {
 public:
  explicit Cursor(std::span<const std::uint8_t> data) : data_(data) {}
  bool done() const noexcept { return pos_ >= data_.size(); }
  std::uint8_t byte() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  std::size_t u16() {
    const std::size_t hi = byte();
    return (hi << 8) | byte();
  }
  std::string_view bytes(std::size_t n) {
    const std::size_t k = std::min(n, data_.size() - std::min(pos_, data_.size()));
    const std::string_view out(reinterpret_cast<const char*>(data_.data()) + pos_, k);
    pos_ += k;
    return out;
  }

 private:
  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)contexts();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return -1;
  Options options;
  options.tls12 = (data[0] & 1) != 0;
  options.buffered = (data[0] & 2) != 0;
  options.buffer_size = std::array<std::size_t, 4>{1, 7, 100, 65536}[(data[0] >> 2) & 3];
  options.echo = (data[0] & 0x10) != 0;
  options.pause_each = (data[0] & 0x20) != 0;
  options.client_reads_on_command = (data[0] & 0x40) != 0;
  if (data[0] & 0x80) options.server_high = 256;
  loop_exceptions.clear();

  Run run(options);
  run.handshake();
  Cursor in(std::span(data + 1, size - 1));
  while (!in.done()) {
    const std::uint8_t c = in.byte();
    const unsigned a = c >> 4;
    switch (c & 15) {
      case 0:
        run.client_write(in.bytes(a + 1));
        break;
      case 1: {
        std::string pattern(a * 1100 + 1, '\0');
        for (std::size_t i = 0; i < pattern.size(); ++i)
          pattern[i] = static_cast<char>('a' + i % 26);
        run.client_write(pattern);
        break;
      }
      case 2:
        run.deliver(std::array<std::size_t, 16>{1, 2, 3, 5, 8, 13, 21, 64, 100, 300, 1000, 5000,
                                                17000, SIZE_MAX, SIZE_MAX, SIZE_MAX}[a]);
        break;
      case 3:
        run.inject(in.bytes(a + 1));
        break;
      case 4: {
        const std::uint8_t t = in.byte();
        const std::array<std::uint16_t, 4> versions{0x0303, 0x0301, 0x0304,
                                                    static_cast<std::uint16_t>(t * 0x101)};
        const std::uint16_t version = versions[(t >> 2) & 3];
        const std::size_t claimed = (t & 0x80) != 0 ? in.u16() : SIZE_MAX;
        const std::string_view body = in.bytes(a + 1);
        const std::size_t length = claimed != SIZE_MAX ? claimed : body.size();
        std::string record;
        record += static_cast<char>(20 + (t & 3));
        record += static_cast<char>(version >> 8);
        record += static_cast<char>(version & 0xff);
        record += static_cast<char>((length >> 8) & 0xff);
        record += static_cast<char>(length & 0xff);
        record += body;
        run.inject(record);
        break;
      }
      case 5: {
        const std::size_t offset = in.u16();
        run.flip(offset, a + 1);
        break;
      }
      case 6: {
        const std::size_t offset = in.u16();
        run.drop(offset, a + 1);
        break;
      }
      case 7:
        run.replay(in.byte());
        break;
      case 8:
        run.server_pause(true);
        break;
      case 9:
        run.server_pause(false);
        break;
      case 10:
        run.client_reads();
        break;
      case 11:
        run.client_close();
        break;
      case 12:
        run.key_update((a & 1) != 0);
        break;
      case 13:
        run.eof();
        break;
      case 14:
        run.server_close();
        break;
      case 15:
        run.deliver(SIZE_MAX);
        break;
    }
  }
  run.finish();
  return 0;
}
