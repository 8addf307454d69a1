// The code of docs/guides/tls.md: TLS servers and clients on the streams layer, certificate
// verification and its failures, SNI, client certificates and STARTTLS (start_tls). The
// certificates are made when the program starts, with the openssl command (as
// scripts/make_cert.sh does), in a temporary directory. Every server listens on 127.0.0.1
// (port 0) and is driven by a client in this program; it exits 0 when every answer is the
// expected one.
#include <strata/core/errors.hpp>
#include <strata/core/run.hpp>
#include <strata/streams/process.hpp>
#include <strata/streams/streams.hpp>
#include <strata/transports/ssl.hpp>

#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tls: FAILED: %s\n", what);
    ++failures;
  }
}

/// A certificate file and its private key file (PEM).
struct CertFiles {
  std::string cert;
  std::string key;
};

/// A self-signed certificate for CN=@p name with the subjectAltName @p san (EC P-256, valid
/// for a day), made in @p dir with the openssl command, as scripts/make_cert.sh makes one.
strata::Coro<CertFiles> make_certificate(std::string dir, std::string name, std::string san) {
  CertFiles files{dir + "/" + name + ".pem", dir + "/" + name + ".key"};
  std::vector<std::string> args{"req", "-x509", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                                "-subj", "/CN=" + name, "-keyout", files.key, "-out", files.cert};
  if (!san.empty()) {
    args.emplace_back("-addext");
    args.push_back("subjectAltName=" + san);
  }
  strata::SubprocessOptions options;
  options.stdout = strata::Stdio::devnull();
  options.stderr = strata::Stdio::pipe();
  auto start = strata::create_subprocess_exec("openssl", std::move(args), options);
  strata::Process openssl = co_await start;
  auto talking = openssl.communicate();
  strata::ProcessOutput output = co_await talking;
  auto waiting = openssl.wait();
  if (co_await waiting != 0) throw std::runtime_error("openssl req failed: " + output.err);
  co_return files;
}

// [snippet:contexts]
/// A server's context: its certificate chain and private key.
strata::SslContext server_context(const CertFiles& files) {
  auto context = strata::SslContext::create_default_context(strata::SslPurpose::client_auth);
  context.load_cert_chain(files.cert, files.key);  // throws SslError: missing, wrong key...
  return context;
}

/// A client's context: verifies the server's certificate and name, trusting the system's CA
/// store and the certificates in @p cafile.
strata::SslContext client_context(const std::string& cafile) {
  auto context = strata::SslContext::create_default_context();  // SslPurpose::server_auth
  context.load_verify_locations(cafile);
  return context;
}
// [/snippet:contexts]

// [snippet:handler]
/// Greets the client by the name it sends, saying which TLS version carries the greeting.
strata::Coro<void> hello_tls(strata::StreamReader reader, strata::StreamWriter writer) {
  auto reading = reader.readline();
  std::string name = co_await reading;
  auto cipher = writer.get_extra_info_as<strata::SslCipher>("cipher");
  writer.write("hello " + name.substr(0, name.find('\n')) + " over " + cipher->protocol + "\n");
}  // returning closes the connection: TLS's close_notify, then TCP's end
// [/snippet:handler]

strata::Coro<void> tls_demo(CertFiles localhost) {
  // [snippet:server-client]
  strata::ServerOptions server_options;
  server_options.ssl = server_context(localhost);  // an SslContext converts to SslOptions
  auto starting = strata::start_server(hello_tls, "127.0.0.1", 0, server_options);
  std::unique_ptr<strata::Server> server = co_await starting;
  const std::uint16_t port = server->sockets().front().address.port();

  strata::ConnectOptions options;
  options.ssl = client_context(localhost.cert);  // checks the name "127.0.0.1", the host
  auto connecting = strata::open_connection("127.0.0.1", port, options);
  strata::Streams client = co_await connecting;  // the handshake is done
  auto cert = client.writer.get_extra_info_as<strata::SslCertificate>("peercert");
  // cert->subject == "CN=localhost"; cert->subject_alt_names holds "IP Address:127.0.0.1"

  client.writer.write("ada\n");
  auto reading = client.reader.readline();
  std::string reply = co_await reading;  // "hello ada over TLSv1.3\n"
  client.writer.close();
  auto closing = client.writer.wait_closed();
  co_await closing;
  // [/snippet:server-client]
  expect(cert.has_value() && cert->subject == "CN=localhost", "tls: peercert subject");
  expect(reply == "hello ada over TLSv1.3\n", "tls: reply");

  // [snippet:verify-failures]
  std::vector<std::string> reasons;
  strata::ConnectOptions system_cas_only;
  system_cas_only.ssl = strata::SslContext::create_default_context();
  strata::ConnectOptions wrong_name;
  strata::SslOptions wrong_name_ssl(client_context(localhost.cert));
  wrong_name_ssl.server_hostname = "example.com";  // not a name the certificate has
  wrong_name.ssl = wrong_name_ssl;

  std::vector<strata::ConnectOptions> attempts{system_cas_only, wrong_name};
  for (const strata::ConnectOptions& attempt : attempts) {
    try {
      auto refused = strata::open_connection("127.0.0.1", port, attempt);
      co_await refused;
    } catch (const strata::SslCertVerificationError& e) {
      // e.what(): "certificate verify failed: self-signed certificate"
      reasons.push_back(e.verify_message());
    }
  }
  // reasons: "self-signed certificate", "hostname mismatch"
  // [/snippet:verify-failures]
  expect(reasons == std::vector<std::string>{"self-signed certificate", "hostname mismatch"},
         "tls: verification failures");

  server->close();
  auto server_closing = server->wait_closed();
  co_await server_closing;
}

strata::Coro<void> sni_demo(CertFiles localhost, CertFiles api) {
  // [snippet:sni]
  strata::SslContext default_context = server_context(localhost);
  strata::SslContext api_context = server_context(api);
  default_context.set_sni_callback(
      [api_context](std::string_view name) -> std::optional<strata::SslContext> {
        if (name == "api.test") return api_context;
        return std::nullopt;  // keep the default context and its certificate
      });
  strata::ServerOptions server_options;
  server_options.ssl = default_context;
  auto starting = strata::start_server(hello_tls, "127.0.0.1", 0, server_options);
  std::unique_ptr<strata::Server> server = co_await starting;
  const std::uint16_t port = server->sockets().front().address.port();

  strata::SslOptions to_api(client_context(api.cert));
  to_api.server_hostname = "api.test";  // sent in SNI, and checked against the certificate
  strata::ConnectOptions options;
  options.ssl = to_api;
  auto connecting = strata::open_connection("127.0.0.1", port, options);
  strata::Streams client = co_await connecting;
  auto cert = client.writer.get_extra_info_as<strata::SslCertificate>("peercert");
  // cert->subject == "CN=api.test"
  // [/snippet:sni]
  expect(cert.has_value() && cert->subject == "CN=api.test", "sni: the api.test certificate");
  client.writer.close();
  auto closing = client.writer.wait_closed();
  co_await closing;
  server->close();
  auto server_closing = server->wait_closed();
  co_await server_closing;
}

// [snippet:client-certificates-handler]
/// Greets the client by the name in the certificate it presented.
strata::Coro<void> hello_peer(strata::StreamReader /*reader*/, strata::StreamWriter writer) {
  auto cert = writer.get_extra_info_as<strata::SslCertificate>("peercert");
  writer.write("hello " + (cert ? cert->subject : std::string("stranger")) + "\n");
  co_return;
}
// [/snippet:client-certificates-handler]

strata::Coro<void> client_certificate_demo(CertFiles localhost, CertFiles ada) {
  // [snippet:client-certificates]
  strata::SslContext server = server_context(localhost);
  server.set_verify_mode(strata::VerifyMode::required);  // a client without one is refused
  server.load_verify_locations(ada.cert);  // the CA (here: the certificate) clients must have
  strata::ServerOptions server_options;
  server_options.ssl = server;
  auto starting = strata::start_server(hello_peer, "127.0.0.1", 0, server_options);
  std::unique_ptr<strata::Server> listening = co_await starting;
  const std::uint16_t port = listening->sockets().front().address.port();

  strata::SslContext client = client_context(localhost.cert);
  client.load_cert_chain(ada.cert, ada.key);  // what the client presents
  strata::ConnectOptions options;
  options.ssl = client;
  auto connecting = strata::open_connection("127.0.0.1", port, options);
  strata::Streams streams = co_await connecting;
  auto reading = streams.reader.readline();
  std::string greeting = co_await reading;  // "hello CN=ada\n"
  // [/snippet:client-certificates]
  expect(greeting == "hello CN=ada\n", "client certificates: greeting");
  streams.writer.close();
  auto closing = streams.writer.wait_closed();
  co_await closing;
  listening->close();
  auto server_closing = listening->wait_closed();
  co_await server_closing;
}

// [snippet:starttls-server]
/// A plaintext line protocol that turns into TLS on the command STARTTLS.
strata::Coro<void> starttls_server(strata::SslContext context, strata::StreamReader reader,
                                   strata::StreamWriter writer) {
  auto reading_command = reader.readline();
  std::string command = co_await reading_command;
  if (command != "STARTTLS\n") co_return;
  writer.write("OK\n");  // still plaintext
  auto upgrading = writer.start_tls(context, /*server_side=*/true);
  co_await upgrading;  // the handshake is done: the same reader and writer now carry TLS
  auto reading_name = reader.readline();
  std::string name = co_await reading_name;
  writer.write("secrets for " + name);
}
// [/snippet:starttls-server]

strata::Coro<void> starttls_demo(CertFiles localhost) {
  strata::SslContext context = server_context(localhost);
  auto starting = strata::start_server(
      [context](strata::StreamReader reader, strata::StreamWriter writer) {
        return starttls_server(context, std::move(reader), std::move(writer));
      },
      "127.0.0.1", 0);
  std::unique_ptr<strata::Server> server = co_await starting;
  const std::uint16_t port = server->sockets().front().address.port();

  // [snippet:starttls-client]
  auto connecting = strata::open_connection("127.0.0.1", port);  // plain TCP
  strata::Streams client = co_await connecting;
  client.writer.write("STARTTLS\n");
  auto reading_ok = client.reader.readline();
  std::string ok = co_await reading_ok;  // "OK\n"

  strata::SslOptions ssl(client_context(localhost.cert));
  ssl.server_hostname = "localhost";  // start_tls has no host name to default it to
  auto upgrading = client.writer.start_tls(ssl);
  co_await upgrading;
  client.writer.write("ada\n");
  auto reading = client.reader.readline();
  std::string reply = co_await reading;  // "secrets for ada\n", over TLS
  // [/snippet:starttls-client]
  expect(ok == "OK\n", "starttls: OK");
  expect(reply == "secrets for ada\n", "starttls: reply");
  expect(client.writer.get_extra_info("cipher").has_value(), "starttls: cipher");
  client.writer.close();
  auto closing = client.writer.wait_closed();
  co_await closing;
  server->close();
  auto server_closing = server->wait_closed();
  co_await server_closing;
}

strata::Coro<int> main_task(std::string dir) {
  auto making_localhost = make_certificate(dir, "localhost", "DNS:localhost,IP:127.0.0.1");
  CertFiles localhost = co_await making_localhost;
  auto making_api = make_certificate(dir, "api.test", "DNS:api.test");
  CertFiles api = co_await making_api;
  auto making_ada = make_certificate(dir, "ada", "");
  CertFiles ada = co_await making_ada;

  auto plain = tls_demo(localhost);
  co_await plain;
  auto sni = sni_demo(localhost, api);
  co_await sni;
  auto mutual = client_certificate_demo(localhost, ada);
  co_await mutual;
  auto upgrade = starttls_demo(localhost);
  co_await upgrade;
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  char dir_template[] = "/tmp/strata-tls-guide-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return 1;
  const std::string dir = dir_template;
  int status = 1;
  try {
    status = strata::run(main_task(dir));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tls: %s\n", e.what());
  }
  std::filesystem::remove_all(dir);
  return status;
}
