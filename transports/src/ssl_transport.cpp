// The TLS transport: OpenSSL over in-memory BIOs, stacked on any stream transport.
//
// One TlsConnection object plays two roles, as asyncio's SSLProtocol does with its
// _SSLProtocolTransport:
// - below, it is the BufferedProtocol of the stream transport (TCP, Unix socket, or another
//   TLS transport): ciphertext arrives through get_buffer()/buffer_updated() and leaves
//   through the stream transport's write();
// - above, it is the Transport of the application's protocol: plaintext in write(),
//   plaintext out through data_received() or the application's own buffer.
//
// OpenSSL never sees a descriptor. Its BIO is an in-memory one of our own (the semantics of a
// pair of OpenSSL memory BIOs, without their copies and their per-connection buffers):
// - reading, it takes ciphertext straight from the buffer the stream transport just filled
//   (one per thread, shared by every connection), and only what the application is not
//   ready to take (it paused reading) is kept per connection;
// - writing, it appends records to a per-connection output buffer that is handed to the stream
//   transport in one write() at the end of each step (a handshake flight, an application
//   write, the replies the application wrote while data was being delivered).
//
// Flow control is end to end: the application's water marks are the stream transport's, and
// the application is paused while what it wrote and the network has not taken (plaintext held
// back during the handshake, plus ciphertext queued below) is above its high-water mark. When
// the application pauses reading, the stream transport stops reading too; nothing grows in
// either direction that the application did not ask for.
//
// sendfile() takes the fallback here (it cannot splice a file through OpenSSL): it writes the
// file in chunks through sendfile_write() and waits, whenever what is buffered is above the
// high-water mark, until update_flow() sees it at the low-water mark. Meanwhile the application
// cannot write and hears no pause_writing()/resume_writing(): the bytes are not its own.
//
// Lifetime: the stream transport owns this object (its protocol) and destroys it in a loop
// iteration after connection_lost(); this object owns the application's protocol.

#include "ssl_transport.hpp"
#include "stream_transport.hpp"
#include "water_marks.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"
#include "strata/core/task.hpp"

namespace strata::detail {

namespace {

constexpr std::size_t cipher_buffer_size = 64 * 1024;  // what one read of the stream may bring
constexpr std::size_t plain_buffer_size = 64 * 1024;   // what one data_received() may carry
constexpr std::size_t kept_output_capacity = 17 * 1024;  // one full record; more is freed

// ---- Per-thread buffers ------------------------------------------------------------------

/// A buffer per thread, made on first use: a connection uses it only within one callback.
struct ThreadBuffer {
  std::unique_ptr<std::byte[]> data;
  bool busy = false;  // lent out (a TLS transport stacked on another borrows its own)

  std::byte* get(std::size_t size) {
    if (!data) data.reset(new std::byte[size]);
    return data.get();
  }
};

thread_local ThreadBuffer cipher_buffer;
thread_local ThreadBuffer plain_buffer;

// A large output buffer that a connection gave back after a flush, for the next connection of
// the thread that writes more than one record: bulk writers do not allocate per step, and an
// idle connection keeps no more than one record's worth.
thread_local std::vector<std::byte> spare_output;

/// Marks a ThreadBuffer busy for a scope.
class Borrow {
 public:
  explicit Borrow(ThreadBuffer& b) noexcept : b_(b) { b_.busy = true; }
  ~Borrow() { b_.busy = false; }
  Borrow(const Borrow&) = delete;
  Borrow& operator=(const Borrow&) = delete;

 private:
  ThreadBuffer& b_;
};

// ---- OpenSSL errors ---------------------------------------------------------------------

/// OpenSSL's reasons for the last failure, oldest first ("wrong version number"); clears the
/// thread's error queue.
std::string take_openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string text = reason != nullptr ? reason : "error " + std::to_string(ERR_GET_REASON(e));
    if (out.find(text) != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

std::string print_name(X509_NAME* name) {
  if (name == nullptr) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return {};
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(std::max(len, 0L)));
  BIO_free(bio);
  return out;
}

std::string print_time(const ASN1_TIME* t) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return {};
  ASN1_TIME_print(bio, t);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(std::max(len, 0L)));
  BIO_free(bio);
  return out;
}

SslCertificate describe_certificate(X509* cert) {
  SslCertificate c;
  c.subject = print_name(X509_get_subject_name(cert));
  c.issuer = print_name(X509_get_issuer_name(cert));
  c.not_before = print_time(X509_get0_notBefore(cert));
  c.not_after = print_time(X509_get0_notAfter(cert));
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      c.serial_number = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS) {
      const ASN1_STRING* s = name->d.dNSName;
      c.subject_alt_names.push_back(
          "DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                               static_cast<std::size_t>(ASN1_STRING_length(s))));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* s = name->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      const int family = ASN1_STRING_length(s) == 4 ? AF_INET : AF_INET6;
      if (inet_ntop(family, ASN1_STRING_get0_data(s), text, sizeof text) != nullptr) {
        c.subject_alt_names.push_back(std::string("IP Address:") + text);
      }
    }
  }
  GENERAL_NAMES_free(names);
  const int len = i2d_X509(cert, nullptr);
  if (len > 0) {
    c.der.resize(static_cast<std::size_t>(len));
    auto* p = reinterpret_cast<unsigned char*>(c.der.data());
    i2d_X509(cert, &p);
  }
  return c;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string duration_text(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
}

// ---- The connection ---------------------------------------------------------------------

/// Where the TLS session is (asyncio's SSLProtocolState).
enum class TlsState : std::uint8_t {
  unwrapped,    ///< before connection_made() from below
  handshaking,  ///< the handshake is under way
  wrapped,      ///< application data flows
  flushing,     ///< close() was called; sending what the handshake held back
  shutdown,     ///< our close_notify is sent; waiting for the peer's, or its EOF
  closed,       ///< the stream transport is closing or gone
};

class TlsConnection final : public BufferedProtocol, public Transport, public SendfileHost {
 public:
  TlsConnection(EventLoop& loop, const SslOptions& options, bool server_side,
                std::unique_ptr<BaseProtocol> app, Future<void> handshake_done,
                bool app_already_connected);
  ~TlsConnection() override;

  // ---- BufferedProtocol: the stream transport below ----
  void connection_made(Transport& transport) override;
  std::span<std::byte> get_buffer(std::size_t size_hint) override;
  void buffer_updated(std::size_t nbytes) override;
  bool eof_received() override;
  void connection_lost(std::error_code ec) override;
  void pause_writing() override;
  void resume_writing() override;

  // ---- Transport: the application above ----
  void close() override;
  bool is_closing() const noexcept override { return closing_; }
  std::any get_extra_info(std::string_view name) const override;
  EventLoop& get_loop() const noexcept override { return *loop_; }
  using Transport::write;
  void write(std::span<const std::byte> data) override;
  void writelines(std::span<const std::span<const std::byte>> buffers) override;
  void write_eof() override;
  bool can_write_eof() const noexcept override { return false; }  // as asyncio's
  void abort() override;
  std::size_t get_write_buffer_size() const noexcept override;
  void set_write_buffer_limits(std::optional<std::size_t> high,
                               std::optional<std::size_t> low) override;
  std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept override {
    return {low_water_, high_water_};
  }
  void pause_reading() override;
  void resume_reading() override;
  bool is_reading() const noexcept override {
    return !app_reading_paused_ && !closing_ && state_ == TlsState::wrapped;
  }
  void set_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  std::unique_ptr<BaseProtocol> exchange_protocol(std::unique_ptr<BaseProtocol> protocol) override;
  BaseProtocol& get_protocol() const noexcept override { return *app_; }

  // ---- SendfileHost: sendfile()'s fallback ----
  void attach_sendfile(SendfileJob& job) override;
  void detach_sendfile() noexcept override;
  bool start_native_sendfile() override { return false; }
  bool sendfile_write(std::span<const std::byte> data) override;

  // ---- The BIO's side ----
  int bio_read(char* out, std::size_t len, std::size_t* got) noexcept;
  void bio_write(const char* data, std::size_t len);
  bool bio_eof() const noexcept { return input_.empty() && stream_eof_; }
  std::size_t bio_pending() const noexcept { return input_.size(); }

 private:
  void adopt_app(std::unique_ptr<BaseProtocol> app);

  // Steps.
  void do_handshake();
  void handshake_failed(const std::exception_ptr& error, std::error_code reason);
  void handshake_succeeded();
  void process_input();
  void process_kept();
  void deliver_plaintext();
  void peer_sent_close_notify();
  /// write() past the guard of a sendfile in progress.
  void write_unguarded(std::span<const std::byte> data);
  [[noreturn]] void throw_sendfile_in_progress(const char* method) const;
  /// The connection ends under a sendfile(): lets go of its job with @p ec.
  void drop_sendfile(std::error_code ec) noexcept;
  void encrypt(std::span<const std::byte> data);
  void flush() noexcept;
  void start_shutdown();
  void send_close_notify();
  void update_flow() noexcept;
  void schedule_resume();
  /// After kept_ changed: schedule_resume() if the application is reading.
  void resume_if_unpaused();

  /// Ends the connection with @p reason (what the application's connection_lost() reports).
  void fail(std::error_code reason) noexcept;
  /// An application callback threw: report it, abort with callback_failed.
  void callback_failed(const char* callback) noexcept;
  /// OpenSSL failed on a live session: close with protocol_error (or truncated).
  void session_failed(int ssl_error) noexcept;

  EventLoop* loop_;
  SslContext context_;
  SSL* ssl_ = nullptr;
  Transport* stream_ = nullptr;  // the transport below; set by connection_made()
  std::unique_ptr<BaseProtocol> app_;
  Protocol* app_plain_ = nullptr;
  BufferedProtocol* app_buffered_ = nullptr;
  Future<void> handshake_done_;
  std::string server_hostname_;
  Duration handshake_timeout_;
  Duration shutdown_timeout_;
  TimerHandle timer_;   // the handshake or the shutdown deadline
  Handle resume_;       // the delivery that resume_reading() scheduled
  SendfileJob* sendfile_ = nullptr;  // the sendfile() in progress, or null
  std::error_code lost_reason_;  // why we ended the connection, for connection_lost()

  // Ciphertext not yet consumed by OpenSSL: during buffer_updated(), a view of what the
  // stream transport just read (in a per-thread buffer or in kept_); what is left when the
  // application pauses reading is copied into kept_.
  std::span<const std::byte> input_;
  std::vector<std::byte> kept_;  // the first kept_size_ bytes are kept ciphertext
  std::size_t kept_size_ = 0;
  // Ciphertext OpenSSL produced and not yet handed to the stream transport.
  std::vector<std::byte> output_;
  // Plaintext the application wrote before the handshake ended.
  std::vector<std::byte> held_;

  std::size_t high_water_ = 64 * 1024;
  std::size_t low_water_ = 16 * 1024;
  TlsState state_ = TlsState::unwrapped;
  bool closing_ = false;             // close() or abort() was called, or the connection ended
  bool app_connected_ = false;       // the application's connection_made() was called
  bool app_lost_ = false;            // ... and its connection_lost()
  // The application's protocol saw connection_made() from the stream before start_tls(): it
  // hears connection_lost() even if the handshake fails.
  bool app_owes_lost_ = false;
  bool app_reading_paused_ = false;  // pause_reading()
  bool app_writing_paused_ = false;  // pause_writing() was called on the application
  bool stream_eof_ = false;          // the stream below reached EOF
  bool close_notify_received_ = false;
  bool in_step_ = false;             // output is flushed at the end of the current step
  bool borrowed_input_ = false;      // input_ points into the per-thread buffer
  bool sendfile_paused_reading_ = false;  // attach_sendfile() paused reading: resume after
};

// ---- The BIO ------------------------------------------------------------------------------

int bio_write_ex(BIO* bio, const char* data, std::size_t len, std::size_t* written) {
  auto* c = static_cast<TlsConnection*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  try {
    c->bio_write(data, len);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  *written = len;
  return 1;
}

int bio_read_ex(BIO* bio, char* out, std::size_t len, std::size_t* got) {
  auto* c = static_cast<TlsConnection*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  const int r = c->bio_read(out, len, got);
  if (r < 0) BIO_set_retry_read(bio);
  return r > 0 ? 1 : 0;
}

long bio_ctrl(BIO* bio, int cmd, long, void*) {
  auto* c = static_cast<TlsConnection*>(BIO_get_data(bio));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // output is flushed at the end of each step
    case BIO_CTRL_EOF:
      return c != nullptr && c->bio_eof() ? 1 : 0;
    case BIO_CTRL_PENDING:
      return c != nullptr ? static_cast<long>(c->bio_pending()) : 0;
    default:  // BIO_CTRL_WPENDING among them: nothing waits in the BIO for writing
      return 0;
  }
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "strata tls");
    if (m == nullptr || BIO_meth_set_write_ex(m, bio_write_ex) != 1 ||
        BIO_meth_set_read_ex(m, bio_read_ex) != 1 || BIO_meth_set_ctrl(m, bio_ctrl) != 1 ||
        BIO_meth_set_create(m, bio_create) != 1) {
      throw SslError(ssl_errc::handshake_failed, "cannot make the TLS transport's BIO method");
    }
    return m;
  }();
  return method;
}

int TlsConnection::bio_read(char* out, std::size_t len, std::size_t* got) noexcept {
  if (input_.empty()) {
    *got = 0;
    return stream_eof_ ? 0 : -1;  // 0: end of stream; -1: retry once more arrives
  }
  const std::size_t n = std::min(len, input_.size());
  std::memcpy(out, input_.data(), n);
  input_ = input_.subspan(n);
  *got = n;
  return 1;
}

void TlsConnection::bio_write(const char* data, std::size_t len) {
  const auto* p = reinterpret_cast<const std::byte*>(data);
  if (output_.size() + len > output_.capacity() && spare_output.capacity() > output_.capacity()) {
    spare_output.assign(output_.begin(), output_.end());
    output_.swap(spare_output);
    spare_output.clear();
  }
  output_.insert(output_.end(), p, p + len);
}

// ---- Making ------------------------------------------------------------------------------

TlsConnection::TlsConnection(EventLoop& loop, const SslOptions& options, bool server_side,
                             std::unique_ptr<BaseProtocol> app, Future<void> handshake_done,
                             bool app_already_connected)
    : loop_(&loop),
      context_(options.context),
      handshake_done_(std::move(handshake_done)),
      server_hostname_(server_side ? std::string() : options.server_hostname),
      handshake_timeout_(options.ssl_handshake_timeout),
      shutdown_timeout_(options.ssl_shutdown_timeout),
      app_owes_lost_(app_already_connected) {
  if (options.ssl_handshake_timeout <= Duration::zero() ||
      options.ssl_shutdown_timeout <= Duration::zero()) {
    throw std::invalid_argument("ssl_handshake_timeout and ssl_shutdown_timeout must be > 0");
  }
  if (!server_side && server_hostname_.empty() && context_.check_hostname()) {
    throw std::invalid_argument(
        "server_hostname is required when the SSL context checks host names");
  }
  adopt_app(std::move(app));
  BIO* bio = BIO_new(bio_method());
  ssl_ = SSL_new(context_.native_handle());
  if (ssl_ == nullptr || bio == nullptr) {
    BIO_free(bio);
    SSL_free(ssl_);
    throw SslError(ssl_errc::handshake_failed,
                   "cannot make a TLS connection: " + take_openssl_errors());
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // the SSL owns the BIO
  if (server_side) {
    SSL_set_accept_state(ssl_);
    return;
  }
  SSL_set_connect_state(ssl_);
  if (server_hostname_.empty()) return;
  const bool ip = is_ip_literal(server_hostname_);
  bool ok = true;
  if (!ip) ok = SSL_set_tlsext_host_name(ssl_, server_hostname_.c_str()) == 1;  // SNI
  if (ok && context_.check_hostname()) {
    ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), server_hostname_.c_str()) == 1
            : SSL_set1_host(ssl_, server_hostname_.c_str()) == 1;
  }
  if (!ok) {
    SSL_free(ssl_);
    ssl_ = nullptr;
    throw std::invalid_argument("invalid server_hostname '" + server_hostname_ +
                                "': " + take_openssl_errors());
  }
}

TlsConnection::~TlsConnection() {
  timer_.cancel();
  resume_.cancel();
  SSL_free(ssl_);
}

void TlsConnection::adopt_app(std::unique_ptr<BaseProtocol> app) {
  if (!app) throw std::invalid_argument("the TLS transport's protocol must not be null");
  auto* buffered = dynamic_cast<BufferedProtocol*>(app.get());
  auto* plain = buffered == nullptr ? dynamic_cast<Protocol*>(app.get()) : nullptr;
  if (buffered == nullptr && plain == nullptr) {
    throw std::invalid_argument("a TLS transport needs a Protocol or a BufferedProtocol");
  }
  app_buffered_ = buffered;
  app_plain_ = plain;
  app_ = std::move(app);
}

// ---- Below: the stream transport's callbacks ----------------------------------------------

void TlsConnection::connection_made(Transport& transport) {
  stream_ = &transport;
  if (state_ == TlsState::closed) {  // start_tls() was cancelled before the layer started
    transport.abort();
    return;
  }
  stream_->set_write_buffer_limits(high_water_, low_water_);
  state_ = TlsState::handshaking;
  TlsConnection* self = this;
  timer_ = loop_->call_later(handshake_timeout_, [self] {
    if (self->state_ != TlsState::handshaking) return;
    self->handshake_failed(std::make_exception_ptr(TimeoutError(
                               "TLS handshake is taking longer than " +
                               duration_text(self->handshake_timeout_) + ": connection aborted")),
                           make_error_code(ssl_errc::handshake_timeout));
  });
  in_step_ = true;
  do_handshake();  // a client speaks first
  in_step_ = false;
  flush();
}

std::span<std::byte> TlsConnection::get_buffer(std::size_t) {
  if (kept_size_ != 0 || cipher_buffer.busy) {
    // Behind kept bytes (or when this transport is stacked inside another and the thread's
    // buffer is in use): append to kept_. The read may bring nothing; kept_size_ moves only in
    // buffer_updated().
    kept_.resize(kept_size_ + 16 * 1024);
    borrowed_input_ = false;
    return {kept_.data() + kept_size_, 16 * 1024};
  }
  borrowed_input_ = true;
  return {cipher_buffer.get(cipher_buffer_size), cipher_buffer_size};
}

void TlsConnection::buffer_updated(std::size_t nbytes) {
  if (borrowed_input_) {
    Borrow borrow(cipher_buffer);
    input_ = {cipher_buffer.data.get(), nbytes};
    process_input();
    // What the application did not take (it paused reading) is kept for resume_reading().
    if (!input_.empty()) {
      kept_.assign(input_.begin(), input_.end());
      kept_size_ = kept_.size();
    }
    input_ = {};
    resume_if_unpaused();
    return;
  }
  kept_size_ += nbytes;  // appended to kept_ by get_buffer()
  process_kept();
  resume_if_unpaused();
}

void TlsConnection::resume_if_unpaused() {
  // The application paused reading while data was being delivered and resumed before the
  // step ended (its writes drained at once): resume_reading() ran while the rest of the input
  // was not kept yet, so it scheduled nothing. Without this the kept bytes would wait for the
  // socket to bring more, which an echoing peer never sends.
  if (kept_size_ != 0 && !app_reading_paused_ && !closing_ && state_ == TlsState::wrapped) {
    schedule_resume();
  }
}

void TlsConnection::process_kept() {
  input_ = {kept_.data(), kept_size_};
  process_input();
  // Move what is left to the front; free the memory once all is consumed.
  const std::size_t left = input_.size();
  if (left == 0) {
    kept_ = {};
  } else if (left != kept_size_) {
    std::memmove(kept_.data(), input_.data(), left);
  }
  kept_size_ = left;
  input_ = {};
}

bool TlsConnection::eof_received() {
  stream_eof_ = true;
  if (state_ == TlsState::handshaking || state_ == TlsState::wrapped) {
    process_input();  // OpenSSL sees the end: a clean close_notify before it, or a truncation
  } else if (state_ == TlsState::flushing || state_ == TlsState::shutdown) {
    // We are closing: the peer's EOF (with or without its close_notify) ends it cleanly.
    state_ = TlsState::closed;
    flush();
    stream_->close();
  }
  // Keep the stream open while the application, told of the peer's close_notify, keeps its
  // side open; else the stream transport closes itself.
  return state_ == TlsState::wrapped && close_notify_received_ && !closing_;
}

void TlsConnection::connection_lost(std::error_code ec) {
  timer_.cancel();
  resume_.cancel();
  const std::error_code reason = lost_reason_ ? lost_reason_ : ec;
  const TlsState was = std::exchange(state_, TlsState::closed);
  closing_ = true;
  drop_sendfile(reason ? reason : std::make_error_code(std::errc::connection_reset));
  if (was == TlsState::handshaking || was == TlsState::unwrapped) {
    if (handshake_done_.valid() && !handshake_done_.done()) {
      const std::error_code why = ec ? ec : make_error_code(std::errc::connection_reset);
      handshake_done_.set_exception(std::make_exception_ptr(
          std::system_error(why, "TLS handshake: the connection was lost")));
    }
    handshake_done_ = {};
  }
  if (app_lost_ || (!app_connected_ && !app_owes_lost_)) return;
  app_lost_ = true;
  try {
    app_->connection_lost(reason);
  } catch (...) {
    loop_->call_exception_handler({"Exception in the protocol's connection_lost() of a TLS "
                                   "transport",
                                   std::current_exception(), "TlsTransport", {}});
  }
}

void TlsConnection::pause_writing() { update_flow(); }
void TlsConnection::resume_writing() { update_flow(); }

// ---- The handshake -----------------------------------------------------------------------

void TlsConnection::do_handshake() {
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    handshake_succeeded();
    return;
  }
  const int error = SSL_get_error(ssl_, r);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return;
  }
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    ERR_clear_error();
    handshake_failed(std::make_exception_ptr(SslCertVerificationError(
                         verify, X509_verify_cert_error_string(verify))),
                     make_error_code(ssl_errc::certificate_verify_failed));
    return;
  }
  std::string reason = take_openssl_errors();
  if (reason.empty()) {
    reason = error == SSL_ERROR_ZERO_RETURN || stream_eof_ ? "the peer closed the connection"
                                                           : "error " + std::to_string(error);
  }
  handshake_failed(std::make_exception_ptr(
                       SslError(ssl_errc::handshake_failed, "TLS handshake failed: " + reason)),
                   make_error_code(ssl_errc::handshake_failed));
}

void TlsConnection::handshake_failed(const std::exception_ptr& error, std::error_code reason) {
  timer_.cancel();
  const bool timed_out = reason == ssl_errc::handshake_timeout;
  state_ = TlsState::closed;
  closing_ = true;
  lost_reason_ = reason;
  if (handshake_done_.valid() && !handshake_done_.done()) {
    handshake_done_.set_exception(error);
  } else if (loop_->get_debug()) {
    // A server's connection: the client's problem, not the server's; asyncio too logs it in
    // debug mode only.
    std::string what;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    }
    std::string peer;
    if (auto addr = stream_->get_extra_info_as<SocketAddress>("peername")) {
      peer = " with " + addr->to_string();
    }
    log(LogLevel::debug, "TLS connection" + peer + " closed: " + what);
  }
  handshake_done_ = {};
  if (timed_out) {
    output_.clear();
    stream_->abort();
  } else {
    flush();  // the alert OpenSSL wrote, so that the peer learns why
    stream_->close();
  }
}

void TlsConnection::handshake_succeeded() {
  timer_.cancel();
  state_ = TlsState::wrapped;
  app_connected_ = true;
  try {
    if (app_buffered_ != nullptr) {
      app_buffered_->connection_made(*this);
    } else {
      app_plain_->connection_made(*this);
    }
  } catch (...) {
    if (handshake_done_.valid() && !handshake_done_.done()) {
      handshake_done_.set_exception(std::current_exception());
      handshake_done_ = {};
      app_lost_ = true;  // the creator hears of it through the exception
      fail(make_error_code(errc::callback_failed));
    } else {
      callback_failed("connection_made");
    }
    return;
  }
  if (handshake_done_.valid()) {
    if (!handshake_done_.done()) {
      handshake_done_.set_result();
    } else if (handshake_done_.cancelled()) {
      close();  // nobody is left to use the connection
    }
    handshake_done_ = {};
  }
  // Plaintext the application wrote from connection_made(), or before (start_tls).
  if (!held_.empty() && state_ == TlsState::wrapped) {
    std::vector<std::byte> held = std::move(held_);
    held_.clear();
    encrypt(held);
  }
  update_flow();
}

// ---- Reading -----------------------------------------------------------------------------

void TlsConnection::process_input() {
  in_step_ = true;
  if (state_ == TlsState::handshaking) do_handshake();
  if (state_ == TlsState::wrapped) deliver_plaintext();
  if (state_ == TlsState::shutdown) {
    // Waiting for the peer's close_notify: data that still arrives is dropped.
    char sink[4096];
    for (;;) {
      const int n = SSL_read(ssl_, sink, sizeof sink);
      if (n > 0) continue;
      const int error = SSL_get_error(ssl_, n);
      ERR_clear_error();
      if (error == SSL_ERROR_ZERO_RETURN || error == SSL_ERROR_SSL ||
          error == SSL_ERROR_SYSCALL) {
        state_ = TlsState::closed;
        timer_.cancel();
        flush();
        stream_->close();
      }
      break;
    }
  }
  in_step_ = false;
  flush();
}

void TlsConnection::deliver_plaintext() {
  while (state_ == TlsState::wrapped && !app_reading_paused_ && !closing_) {
    std::span<std::byte> buf;
    if (app_buffered_ != nullptr) {
      try {
        buf = app_buffered_->get_buffer(plain_buffer_size);
      } catch (...) {
        callback_failed("get_buffer");
        return;
      }
      if (buf.empty()) {
        log(LogLevel::warning, "BufferedProtocol::get_buffer() returned an empty buffer; the "
                               "TLS connection is aborted (return at least one byte)");
        fail(std::make_error_code(std::errc::no_buffer_space));
        return;
      }
    } else {
      if (plain_buffer.busy) {
        throw std::logic_error("TLS transports stacked more than two deep deliver no data");
      }
      buf = {plain_buffer.get(plain_buffer_size), plain_buffer_size};
    }
    // Fill the buffer from as many records as are here: one callback for a burst.
    std::size_t filled = 0;
    int error = SSL_ERROR_NONE;  // taken at once: the application's writes reset it
    while (filled < buf.size()) {
      std::size_t n = 0;
      const int r = SSL_read_ex(ssl_, buf.data() + filled, buf.size() - filled, &n);
      if (r != 1) {
        error = SSL_get_error(ssl_, r);
        break;
      }
      filled += n;
    }
    if (filled > 0) {
      try {
        if (app_buffered_ != nullptr) {
          app_buffered_->buffer_updated(filled);
        } else {
          Borrow borrow(plain_buffer);
          app_plain_->data_received(std::span<const std::byte>(buf.data(), filled));
        }
      } catch (...) {
        callback_failed(app_buffered_ != nullptr ? "buffer_updated" : "data_received");
        return;
      }
    }
    if (error == SSL_ERROR_NONE) continue;  // the buffer filled up: there may be more
    if (error == SSL_ERROR_WANT_READ) return;  // leaves nothing in the error queue
    if (error == SSL_ERROR_ZERO_RETURN) {
      ERR_clear_error();
      peer_sent_close_notify();
      return;
    }
    session_failed(error);
    return;
  }
}

void TlsConnection::peer_sent_close_notify() {
  close_notify_received_ = true;
  bool keep_open = false;
  try {
    keep_open = app_buffered_ != nullptr ? app_buffered_->eof_received() : app_plain_->eof_received();
  } catch (...) {
    callback_failed("eof_received");
    return;
  }
  if (!keep_open) close();
}

void TlsConnection::session_failed(int ssl_error) noexcept {
  std::string reason = take_openssl_errors();
  const bool truncated = stream_eof_ && !close_notify_received_;
  if (truncated) {
    // The peer closed the TCP connection without close_notify: an attacker could have cut the
    // data short, so the application hears of it unless the context allows it.
    fail(make_error_code(ssl_errc::truncated));
    return;
  }
  if (reason.empty()) reason = "SSL_get_error " + std::to_string(ssl_error);
  if (loop_->get_debug()) log(LogLevel::debug, "TLS session failed: " + reason);
  state_ = TlsState::closed;
  closing_ = true;
  lost_reason_ = make_error_code(ssl_errc::protocol_error);
  drop_sendfile(lost_reason_);
  flush();  // the fatal alert
  stream_->close();
}

// ---- Writing -----------------------------------------------------------------------------

void TlsConnection::write(std::span<const std::byte> data) {
  if (sendfile_ != nullptr) [[unlikely]] throw_sendfile_in_progress("write");
  write_unguarded(data);
}

void TlsConnection::throw_sendfile_in_progress(const char* method) const {
  throw InvalidStateError(std::string(method) +
                          "() while a sendfile is in progress on this transport: await the "
                          "sendfile() first (asyncio raises RuntimeError)");
}

void TlsConnection::write_unguarded(std::span<const std::byte> data) {
  if (data.empty()) return;
  if (closing_ || state_ > TlsState::wrapped) return;  // dropped after close, as asyncio's
  if (state_ != TlsState::wrapped || !held_.empty()) {
    held_.insert(held_.end(), data.begin(), data.end());
    update_flow();
    return;
  }
  encrypt(data);
  if (!in_step_) flush();
  update_flow();
}

void TlsConnection::writelines(std::span<const std::span<const std::byte>> buffers) {
  if (sendfile_ != nullptr) [[unlikely]] throw_sendfile_in_progress("writelines");
  const bool outer = !in_step_;
  in_step_ = true;  // one flush, one system call below, for all of them
  try {
    for (std::span<const std::byte> b : buffers) write(b);
  } catch (...) {
    in_step_ = !outer;
    throw;
  }
  if (outer) {
    in_step_ = false;
    flush();
  }
}

void TlsConnection::encrypt(std::span<const std::byte> data) {
  while (!data.empty()) {
    std::size_t n = 0;
    if (SSL_write_ex(ssl_, data.data(), data.size(), &n) != 1) {
      session_failed(SSL_get_error(ssl_, 0));
      return;
    }
    data = data.subspan(n);
  }
}

void TlsConnection::flush() noexcept {
  if (output_.empty() || stream_ == nullptr) return;
  if (!stream_->is_closing()) {
    try {
      stream_->write(std::span<const std::byte>(output_));
    } catch (...) {
      // A stream that cannot be written any more (write_eof() below us): nothing to deliver.
    }
  }
  output_.clear();
  if (output_.capacity() > kept_output_capacity) {
    if (output_.capacity() > spare_output.capacity()) output_.swap(spare_output);
    output_ = {};
  }
  // What the application wrote within a step counted as buffered until now: it may have been
  // paused for it, and the stream, which took it all, will not call resume_writing().
  update_flow();
}

void TlsConnection::write_eof() {
  throw InvalidStateError("write_eof(): a TLS transport cannot half-close (can_write_eof() is "
                          "false); use close()");
}

std::size_t TlsConnection::get_write_buffer_size() const noexcept {
  return held_.size() + output_.size() + (stream_ != nullptr ? stream_->get_write_buffer_size() : 0);
}

void TlsConnection::set_write_buffer_limits(std::optional<std::size_t> high,
                                            std::optional<std::size_t> low) {
  const WaterMarks marks = resolve_water_marks(high, low, 64 * 1024);
  high_water_ = marks.high;
  low_water_ = marks.low;
  if (stream_ != nullptr) stream_->set_write_buffer_limits(marks.high, marks.low);
  update_flow();
}

void TlsConnection::update_flow() noexcept {
  if (sendfile_ != nullptr) [[unlikely]] {
    // The sendfile() fallback waits for the low-water mark in the application's place; the
    // application hears of the water marks when it ends (detach_sendfile()).
    if (sendfile_->waiting && get_write_buffer_size() <= low_water_) sendfile_->notify();
    return;
  }
  if (!app_connected_ || app_lost_) return;
  const std::size_t size = get_write_buffer_size();
  try {
    if (!app_writing_paused_ && size > high_water_) {
      app_writing_paused_ = true;
      app_->pause_writing();
    } else if (app_writing_paused_ && size <= low_water_) {
      app_writing_paused_ = false;
      app_->resume_writing();
    }
  } catch (...) {
    callback_failed(app_writing_paused_ ? "pause_writing" : "resume_writing");
  }
}

// ---- Reading control ---------------------------------------------------------------------

void TlsConnection::pause_reading() {
  if (app_reading_paused_) return;
  app_reading_paused_ = true;
  // Once closing, the stream reads on for the peer's close_notify (send_close_notify()).
  if (stream_ != nullptr && !closing_) stream_->pause_reading();
}

void TlsConnection::resume_reading() {
  if (!app_reading_paused_) return;
  app_reading_paused_ = false;
  if (closing_ || stream_ == nullptr) return;
  stream_->resume_reading();
  schedule_resume();
}

void TlsConnection::schedule_resume() {
  // Ciphertext kept while paused, or plaintext OpenSSL already decrypted, arrives without
  // the stream reading again: deliver it in the next iteration (never inside the call).
  if (kept_size_ == 0 && SSL_has_pending(ssl_) == 0) return;
  resume_.cancel();
  TlsConnection* self = this;
  resume_ = loop_->call_soon([self] {
    if (self->closing_ || self->app_reading_paused_) return;
    self->process_kept();
  });
}

// ---- Closing -----------------------------------------------------------------------------

void TlsConnection::close() {
  if (closing_) return;
  closing_ = true;
  // A sendfile() in progress stops where it is and throws; what it wrote is still sent, before
  // the close_notify.
  drop_sendfile(std::make_error_code(std::errc::connection_aborted));
  if (state_ == TlsState::wrapped) {
    start_shutdown();
  } else if (state_ == TlsState::handshaking || state_ == TlsState::unwrapped) {
    fail(std::make_error_code(std::errc::operation_canceled));
  }
}

void TlsConnection::start_shutdown() {
  state_ = TlsState::flushing;
  if (!held_.empty()) {
    std::vector<std::byte> held = std::move(held_);
    held_.clear();
    encrypt(held);
  }
  send_close_notify();
}

void TlsConnection::send_close_notify() {
  if (state_ == TlsState::closed) return;
  state_ = TlsState::shutdown;
  const int r = SSL_shutdown(ssl_);  // writes close_notify into output_
  ERR_clear_error();
  flush();
  if (r == 1 || close_notify_received_ || stream_eof_) {
    // Both close_notify sent: the stream may close (after sending what it holds).
    state_ = TlsState::closed;
    stream_->close();
    return;
  }
  TlsConnection* self = this;
  timer_.cancel();
  timer_ = loop_->call_later(shutdown_timeout_, [self] {
    if (self->state_ != TlsState::shutdown) return;
    self->fail(make_error_code(ssl_errc::shutdown_timeout));
  });
  // The peer's close_notify (or its EOF) ends the shutdown, so read for it whatever the
  // application asked: its pause_reading() only held back application data, which is dropped
  // from here on. Ciphertext kept while it was paused may hold that close_notify already.
  if (app_reading_paused_) stream_->resume_reading();
  if (kept_size_ != 0) {
    resume_.cancel();
    resume_ = loop_->call_soon([self] {
      if (self->state_ == TlsState::shutdown && self->kept_size_ != 0) self->process_kept();
    });
  }
}

void TlsConnection::abort() { fail(std::make_error_code(std::errc::operation_canceled)); }

void TlsConnection::fail(std::error_code reason) noexcept {
  closing_ = true;
  drop_sendfile(lost_reason_ ? lost_reason_ : reason);
  if (state_ == TlsState::closed && lost_reason_) return;
  state_ = TlsState::closed;
  if (!lost_reason_) lost_reason_ = reason;
  timer_.cancel();
  output_.clear();
  held_.clear();
  if (stream_ != nullptr) stream_->abort();
}

void TlsConnection::callback_failed(const char* callback) noexcept {
  std::string message = "Fatal error: protocol ";
  message += callback;
  message += "() threw on a TLS transport; the connection is aborted";
  loop_->call_exception_handler({std::move(message), std::current_exception(), "TlsTransport", {}});
  fail(make_error_code(errc::callback_failed));
}

// ---- sendfile() ---------------------------------------------------------------------------

void TlsConnection::attach_sendfile(SendfileJob& job) {
  if (sendfile_ != nullptr) {
    throw InvalidStateError("sendfile: another sendfile is in progress on this transport; await "
                            "it first (asyncio raises RuntimeError)");
  }
  if (closing_ || state_ != TlsState::wrapped) {
    throw InvalidStateError("sendfile: the TLS transport is closing");
  }
  sendfile_ = &job;
  job.host = this;
  // As the stream transport does: nothing reaches the application meanwhile.
  sendfile_paused_reading_ = !app_reading_paused_;
  if (sendfile_paused_reading_) pause_reading();
}

bool TlsConnection::sendfile_write(std::span<const std::byte> data) {
  write_unguarded(data);
  // A stream that failed a send is going down, and takes the bytes no more: its
  // connection_lost() will end the job with the error. Until then the fallback waits, rather
  // than encrypting the rest of the file into nothing and reporting it sent.
  if (stream_ != nullptr && stream_->is_closing()) return true;
  return get_write_buffer_size() > high_water_;
}

void TlsConnection::drop_sendfile(std::error_code ec) noexcept {
  SendfileJob* job = std::exchange(sendfile_, nullptr);
  if (job == nullptr) return;
  sendfile_paused_reading_ = false;
  job->end(ec);
}

void TlsConnection::detach_sendfile() noexcept {
  SendfileJob* job = std::exchange(sendfile_, nullptr);
  if (job == nullptr) return;
  job->host = nullptr;
  job->waiting = false;
  if (std::exchange(sendfile_paused_reading_, false)) {
    try {
      resume_reading();  // a no-op once closing
    } catch (const std::system_error& e) {
      fail(e.code());
      return;
    } catch (...) {
      fail(std::make_error_code(std::errc::not_enough_memory));
      return;
    }
  }
  update_flow();  // the water marks the application did not hear of meanwhile
}

// ---- Protocol swap and information -------------------------------------------------------

void TlsConnection::set_protocol(std::unique_ptr<BaseProtocol> protocol) {
  std::unique_ptr<BaseProtocol> old = exchange_protocol(std::move(protocol));
  loop_->call_soon([old = std::move(old)]() mutable { old.reset(); });
}

std::unique_ptr<BaseProtocol> TlsConnection::exchange_protocol(
    std::unique_ptr<BaseProtocol> protocol) {
  std::unique_ptr<BaseProtocol> old = std::move(app_);
  try {
    adopt_app(std::move(protocol));
  } catch (...) {
    app_ = std::move(old);
    throw;
  }
  return old;
}

std::any TlsConnection::get_extra_info(std::string_view name) const {
  if (name == "ssl_object") return ssl_;
  if (name == "sslcontext") return context_;
  if (name == "server_hostname") {
    if (server_hostname_.empty()) return {};
    return server_hostname_;
  }
  if (name == "peercert") {
    X509* cert = SSL_get0_peer_certificate(ssl_);
    if (cert == nullptr) return {};
    return describe_certificate(cert);
  }
  if (name == "cipher") {
    const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
    if (cipher == nullptr) return {};
    return SslCipher{SSL_CIPHER_get_name(cipher), SSL_get_version(ssl_),
                     SSL_CIPHER_get_bits(cipher, nullptr)};
  }
  if (name == "compression") {
    const COMP_METHOD* comp = SSL_get_current_compression(ssl_);
    if (comp == nullptr) return {};
    return std::string(SSL_COMP_get_name(comp));
  }
  if (name == "alpn_protocol") {
    const unsigned char* data = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl_, &data, &len);
    if (len == 0) return {};
    return std::string(reinterpret_cast<const char*>(data), len);
  }
  if (stream_ == nullptr) return {};
  return stream_->get_extra_info(name);
}

}  // namespace

// ---- The internal interface --------------------------------------------------------------

TlsLayer wrap_tls(EventLoop& loop, const SslOptions& options, bool server_side,
                  std::unique_ptr<BaseProtocol> app, Future<void> handshake_done,
                  bool app_already_connected) {
  auto connection = std::make_unique<TlsConnection>(loop, options, server_side, std::move(app),
                                                    std::move(handshake_done),
                                                    app_already_connected);
  Transport* transport = connection.get();
  return TlsLayer{std::move(connection), transport};
}

Coro<void> wait_handshake(Future<void> handshake_done, Transport& transport) {
  try {
    co_await handshake_done;
  } catch (const CancelledError&) {
    transport.abort();
    throw;
  }
}

}  // namespace strata::detail

// ---- start_tls ---------------------------------------------------------------------------

namespace strata {

Coro<Transport*> start_tls(Transport& transport, SslOptions ssl, bool server_side,
                           std::unique_ptr<BaseProtocol> protocol) {
  if (transport.is_closing()) {
    throw std::invalid_argument("start_tls: the transport is closing");
  }
  EventLoop& loop = transport.get_loop();
  Future<void> done(loop);
  // Nothing more reaches the old protocol: what the peer sends now is the handshake.
  transport.pause_reading();
  std::unique_ptr<BaseProtocol> app = std::move(protocol);
  detail::TlsLayer tls;
  if (app) {
    tls = detail::wrap_tls(loop, ssl, server_side, std::move(app), done);
    transport.set_protocol(std::move(tls.layer));  // the old protocol is destroyed later
  } else {
    // Keep the current protocol: the TLS layer takes it over. A placeholder holds its place
    // for the moment that the layer does not exist yet.
    struct Placeholder final : Protocol {};
    std::unique_ptr<BaseProtocol> current = transport.exchange_protocol(std::make_unique<Placeholder>());
    try {
      tls = detail::wrap_tls(loop, ssl, server_side, std::move(current), done, true);
    } catch (...) {
      transport.resume_reading();
      throw;
    }
    std::unique_ptr<BaseProtocol> placeholder = transport.exchange_protocol(std::move(tls.layer));
  }
  auto* layer = static_cast<BufferedProtocol*>(&transport.get_protocol());
  Transport* tls_transport = tls.transport;
  // Started in the next iteration, as asyncio does: never inside the caller's callbacks.
  loop.call_soon([layer, &transport] {
    layer->connection_made(transport);
    transport.resume_reading();
  });
  Coro<void> handshake = detail::wait_handshake(std::move(done), *tls_transport);
  co_await handshake;
  co_return tls_transport;
}

}  // namespace strata
