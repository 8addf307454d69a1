#!/usr/bin/env python3
"""echo_server and echo_client over TLS, against Python's ssl module and the openssl command.

Makes a throwaway CA and certificates signed by it with the openssl command, in a temporary
directory, and a self-signed pair with scripts/make_cert.sh. Every wait is bounded, every port
is ephemeral on 127.0.0.1, and every process is killed at the end. Exits 0 when every check
passes, 1 otherwise, naming each failed check.

    test_tls_interop.py --server build/examples/echo_server --client build/examples/echo_client
"""

import argparse
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The echo_server process, run() and recv_exactly() of the plain-TCP test; its `args` is ours.
import test_echo_server as echo_test
from example_support import run_checks
from test_echo_server import EXIT_TIMEOUT, recv_exactly, run

MAKE_CERT = Path(__file__).resolve().parents[2] / "scripts" / "make_cert.sh"
IO_TIMEOUT = 5.0  # for each socket operation and each answer awaited from a process
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

args = None
certs = None


# ---- Certificates -----------------------------------------------------------------------------

def version_option(version):
    """The openssl command's option for @version: "TLSv1.3" -> "-tls1_3"."""
    return "-" + version.replace("TLSv", "tls").replace(".", "_")


def openssl(*argv, cwd=None):
    result = subprocess.run(["openssl", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=30)
    assert result.returncode == 0, f"openssl {' '.join(argv)}: {result.stderr}"
    return result.stdout


class Certs:
    """A CA (ca.pem) and two server certificates it signed, each with its key (EC P-256):
    `localhost` (DNS:localhost, IP:127.0.0.1) and `wrong` (DNS:wrong.example only)."""

    EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def __init__(self, directory):
        self.dir = Path(directory)
        self.ca = self.path("ca.pem")
        openssl("req", "-x509", *self.EC, "-days", "2", "-subj", "/CN=Strata test CA",
                "-keyout", "ca.key", "-out", "ca.pem", cwd=self.dir)
        self.localhost = self.issue("localhost", "DNS:localhost,IP:127.0.0.1")
        self.wrong = self.issue("wrong", "DNS:wrong.example")

    def path(self, name):
        return str(self.dir / name)

    def issue(self, name, alt_names):
        """Makes NAME.pem and NAME.key; returns their paths."""
        (self.dir / f"{name}.ext").write_text(
            f"subjectAltName={alt_names}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
        openssl("req", "-new", *self.EC, "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=self.dir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                cwd=self.dir)
        return self.path(f"{name}.pem"), self.path(f"{name}.key")


# ---- Processes and peers ----------------------------------------------------------------------

def tls_server(*options, cert=None):
    """An echo_server serving TLS with @cert (default: the localhost pair), ready."""
    cert_file, key_file = cert or certs.localhost
    return echo_test.Server("--tls-cert", cert_file, "--tls-key", key_file, *options)


def echo_client(port, *options, timeout=30):
    return run([args.client, "--host", "127.0.0.1", "--port", str(port), *options],
               timeout=timeout)


def expect_client_ok(port, *options, over="TLSv1."):
    result = echo_client(port, *options)
    assert result.returncode == 0, f"echo_client {options}: {result.stderr!r}"
    assert result.stdout.startswith("echo_client: ok"), result.stdout
    assert f" over {over}" in result.stdout, f"not over {over}: {result.stdout!r}"
    return result


def expect_one_line_error(result, status, contains):
    assert result.returncode == status, f"status {result.returncode}, stderr {result.stderr!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"want one stderr line, got {result.stderr!r}"
    assert contains in lines[0], f"{lines[0]!r} lacks {contains!r}"
    return lines[0]


def client_context(version=None, cafile=None):
    context = ssl.create_default_context(cafile=cafile or certs.ca)
    if version:
        context.minimum_version = context.maximum_version = VERSIONS[version]
    return context


def tls_connect(port, version=None, cafile=None):
    """A verified TLS connection to 127.0.0.1:@port for localhost, with ragged EOFs reported."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        return client_context(version, cafile).wrap_socket(raw, server_hostname="localhost",
                                                           suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


def check_echo(tls, data, chunk=65536):
    """Sends @data a chunk at a time, each read back before the next, and compares."""
    for at in range(0, len(data), chunk):
        piece = data[at:at + chunk]
        tls.sendall(piece)
        got = recv_exactly(tls, len(piece))
        assert got == piece, f"the echo of bytes {at}..{at + len(piece)} differs"


def close_cleanly(tls):
    """Sends close_notify and reads the server's (unwrap() raises if it closes without one),
    then expects the end of the TCP connection."""
    raw = tls.unwrap()
    try:
        assert raw.recv(1) == b"", "data after close_notify"
    finally:
        raw.close()


class PythonTlsEchoServer:
    """A threaded TLS echo server on 127.0.0.1 (Python's ssl module). It echoes a connection
    until the client's close_notify, answers with its own, and records in `endings` how each
    connection ended: "close_notify", or the error (a ragged EOF is an error)."""

    def __init__(self, cert, version=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*cert)
        if version:
            self.context.minimum_version = self.context.maximum_version = VERSIONS[version]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.endings = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        conn.settimeout(IO_TIMEOUT)
        try:
            with self.context.wrap_socket(conn, server_side=True,
                                          suppress_ragged_eofs=False) as tls:
                while data := tls.recv(65536):
                    tls.sendall(data)
                tls.unwrap()
            ending = "close_notify"
        except OSError as e:  # ssl.SSLError included
            ending = repr(e)
        finally:
            conn.close()
        with self.lock:
            self.endings.append(ending)

    def close(self):
        """Stops accepting and waits for the connections to end."""
        self.stopping.set()
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(timeout=IO_TIMEOUT + 1)
        self.listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OpensslEchoServer:
    """`openssl s_server -quiet` made an echo server: it prints the bytes it receives, and a
    thread feeds them back to its stdin, which it sends. One connection at a time."""

    def __init__(self, cert, version):
        with socket.socket() as probe:  # s_server does not report an ephemeral port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", cert[0],
             "-key", cert[1], "-quiet", version_option(version)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._relay, daemon=True).start()
        try:
            self._wait_listening()
        except BaseException:
            self.close()
            raise

    def _wait_listening(self):
        deadline = time.monotonic() + IO_TIMEOUT
        while True:  # s_server takes this probe for a failed handshake
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, f"s_server exited: {self.proc.stderr.read()!r}"
                assert time.monotonic() < deadline, "s_server does not listen"
                time.sleep(0.05)

    def _relay(self):
        try:
            while data := os.read(self.proc.stdout.fileno(), 65536):
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it exited

    def close(self):
        self.proc.kill()
        self.proc.communicate(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def s_client(port, version, data):
    """Sends @data (one line) with `openssl s_client`, verifying against the CA for localhost;
    returns (the line echoed, exit status, stderr). Closing its stdin sends close_notify."""
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", certs.ca,
         "-verify_return_error", "-servername", "localhost", "-verify_hostname", "localhost",
         "-brief", "-nocommands", version_option(version)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], IO_TIMEOUT)
        line = proc.stdout.readline() if ready else None
        proc.stdin.close()
        proc.wait(timeout=IO_TIMEOUT)
        return line, proc.returncode, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


# ---- Checks -----------------------------------------------------------------------------------

def check_help():
    result = run([args.server, "--help"], timeout=10)
    assert result.returncode == 0
    for option in ("--tls-cert", "--tls-key"):
        assert option in result.stdout, f"echo_server --help lacks {option}"
    result = run([args.client, "--help"], timeout=10)
    assert result.returncode == 0
    for option in ("--tls", "--cafile", "--server-hostname", "--insecure"):
        assert option in result.stdout, f"echo_client --help lacks {option}"


def check_bad_tls_options():
    cert, key = certs.localhost

    def server(*options, contains):
        line = echo_test.expect_startup_failure(list(options), contains=contains, status=2)
        assert "not available" not in line, line

    server("--tls-cert", cert, contains="--tls-key")
    server("--tls-key", key, contains="--tls-cert")
    server("--tls-cert", cert, "--tls-key", key, "--udp", contains="--udp")
    missing = certs.path("missing.pem")
    server("--tls-cert", missing, "--tls-key", key, contains=missing)
    server("--tls-cert", cert, "--tls-key", certs.wrong[1], contains=certs.wrong[1])
    server("--tls-cert", certs.path("localhost.ext"), "--tls-key", key, contains="localhost.ext")

    def client(*options, contains):
        expect_one_line_error(echo_client(1, *options, timeout=10), 2, contains)

    client("--insecure", "--cafile", certs.ca, contains="--insecure")
    client("--server-hostname", "localhost", contains="--server-hostname")
    client("--tls", "--udp", contains="--udp")
    client("--cafile", missing, contains=missing)


def check_python_client():
    """Both TLS versions: small and 1 MiB echoes byte-exact, and a clean close both ways."""
    with tls_server() as server:
        for version in VERSIONS:
            with tls_connect(server.port, version) as tls:
                assert tls.version() == version, tls.version()
                check_echo(tls, b"hello over " + version.encode())
                check_echo(tls, os.urandom(1 << 20))
                close_cleanly(tls)
        status, _, out, err = server.stop(signal.SIGINT)
        assert status == 0 and out == "", f"status {status}, stdout {out!r}, stderr {err!r}"


def check_openssl_s_client():
    with tls_server() as server:
        for version in VERSIONS:
            data = f"hello from s_client over {version}\n".encode()
            line, status, err = s_client(server.port, version, data)
            assert line == data, f"{version}: echoed {line!r}; stderr {err!r}"
            assert status == 0, f"{version}: s_client exit status {status}; stderr {err!r}"
            assert f"Protocol version: {version}" in err, err
            assert "Verification: OK" in err, err


def check_strata_client():
    """echo_client against echo_server, on every selector backend and on several threads,
    checking the IP address (127.0.0.1) or the name given."""
    for loop in ("epoll", "poll", "select"):
        with tls_server("--loop", loop) as server:
            expect_client_ok(server.port, "--cafile", certs.ca, "--loop", loop,
                             "--connections", "4", "--size", "100000", "--count", "3")
    with tls_server("--threads", "2") as server:
        expect_client_ok(server.port, "--cafile", certs.ca, "--server-hostname", "localhost",
                         "--connections", "8", "--size", "3000", "--count", "20")
        status, _, _, err = server.stop(signal.SIGTERM)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def check_client_against_python_server():
    for version in VERSIONS:
        with PythonTlsEchoServer(certs.localhost, version) as peer:
            expect_client_ok(peer.port, "--cafile", certs.ca, "--connections", "3",
                             "--size", "200000", "--count", "3", over=version)
        assert peer.endings == ["close_notify"] * 3, f"{version}: {peer.endings}"


def check_client_against_openssl_s_server():
    for version in VERSIONS:
        with OpensslEchoServer(certs.localhost, version) as peer:
            expect_client_ok(peer.port, "--cafile", certs.ca, "--size", "5000", "--count", "10",
                             over=version)


def check_client_verifies_the_server():
    with PythonTlsEchoServer(certs.wrong) as peer:
        for options in (["--cafile", certs.ca],  # the name does not match
                        ["--cafile", certs.ca, "--server-hostname", "localhost"],
                        ["--tls"]):  # the system's store does not hold our CA
            line = expect_one_line_error(echo_client(peer.port, *options), 1,
                                         "certificate verify failed")
            assert "echo_client: " in line, line
        expect_client_ok(peer.port, "--cafile", certs.ca, "--server-hostname", "wrong.example")
        expect_client_ok(peer.port, "--insecure")


def check_garbage_closes_that_connection_only():
    with tls_server() as server:
        with tls_connect(server.port) as before:
            check_echo(before, b"first")
            with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT) as raw:
                raw.sendall(b"hello\r\n")
                try:
                    while raw.recv(4096):  # an alert may come first
                        pass
                except ConnectionResetError:
                    pass
            check_echo(before, b"still served")
            with tls_connect(server.port) as after:
                check_echo(after, b"a new connection")
                close_cleanly(after)
            close_cleanly(before)
        status, _, _, err = server.stop(signal.SIGINT)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def check_sigint_lets_a_tls_connection_finish():
    """After SIGINT, an open TLS connection is still served until it closes, and then the
    server exits at once."""
    with tls_server() as server:
        with tls_connect(server.port) as tls:
            check_echo(tls, b"before")
            server.proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 3.0
            while True:  # until the listening socket is gone
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
                except OSError:
                    break
                assert time.monotonic() < deadline, "still accepting 3 s after SIGINT"
                time.sleep(0.05)
            check_echo(tls, b"after")
            start = time.monotonic()
            close_cleanly(tls)
        out, err = server.proc.communicate(timeout=EXIT_TIMEOUT)
        assert server.proc.returncode == 0, f"exit status {server.proc.returncode}: {err!r}"
        assert out == "", f"printed after the ready line: {out!r}"
        assert time.monotonic() - start < 2.0, "waited for the grace period anyway"


def check_sigint_closes_idle_tls_with_close_notify():
    """An idle TLS connection is closed with close_notify once the grace period is over."""
    with tls_server() as server:
        with tls_connect(server.port) as tls:
            check_echo(tls, b"x")
            start = time.monotonic()
            server.proc.send_signal(signal.SIGINT)
            tls.settimeout(EXIT_TIMEOUT)
            assert tls.recv(1) == b"", "data instead of close_notify"  # a ragged EOF raises
            tls.unwrap()
        out, err = server.proc.communicate(timeout=EXIT_TIMEOUT)
        seconds = time.monotonic() - start
        assert server.proc.returncode == 0, f"exit status {server.proc.returncode}: {err!r}"
        assert 3.0 < seconds < EXIT_TIMEOUT, f"took {seconds:.1f} s"


def check_make_cert_script():
    """scripts/make_cert.sh: a self-signed EC P-256 pair for localhost and 127.0.0.1, which
    echo_server serves and clients trust as their CA."""
    directory = Path(certs.dir) / "self"
    result = run([str(MAKE_CERT), str(directory)], timeout=30)
    assert result.returncode == 0, result.stderr
    cert, key = result.stdout.split()
    assert (cert, key) == (str(directory / "cert.pem"), str(directory / "key.pem")), result.stdout
    text = openssl("x509", "-in", cert, "-noout", "-text")
    for want in ("prime256v1", "DNS:localhost", "IP Address:127.0.0.1"):
        assert want in text, f"the certificate lacks {want}"
    with tls_server(cert=(cert, key)) as server:
        expect_client_ok(server.port, "--cafile", cert)
        expect_client_ok(server.port, "--cafile", cert, "--server-hostname", "localhost")
        with tls_connect(server.port, cafile=cert) as tls:
            check_echo(tls, b"self-signed")
            close_cleanly(tls)


CHECKS = [
    check_help,
    check_bad_tls_options,
    check_python_client,
    check_openssl_s_client,
    check_strata_client,
    check_client_against_python_server,
    check_client_against_openssl_s_server,
    check_client_verifies_the_server,
    check_garbage_closes_that_connection_only,
    check_sigint_lets_a_tls_connection_finish,
    check_sigint_closes_idle_tls_with_close_notify,
    check_make_cert_script,
]


def main():
    global args, certs
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = echo_test.args = parser.parse_args()
    if shutil.which("openssl") is None:
        print("the openssl command is missing: run scripts/deps.sh")
        return 1
    with tempfile.TemporaryDirectory(prefix="strata-tls-") as directory:
        certs = Certs(directory)
        return run_checks(CHECKS, args.checks)


if __name__ == "__main__":
    sys.exit(main())
