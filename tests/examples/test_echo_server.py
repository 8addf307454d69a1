#!/usr/bin/env python3
"""echo_server and echo_client as programs: the example contract of DESIGN.md.

Runs the binaries given on the command line; every wait is bounded. The checks of a running
server run once per API (`--api protocol`, then `--api streams`: the behaviour must be the
same). Exits 0 when every check passes, 1 otherwise, naming each failed check.

    test_echo_server.py --server build/examples/echo_server --client build/examples/echo_client
    test_echo_server.py ... check_udp               one check, for both APIs
    test_echo_server.py ... check_udp:streams       one check, for one API
"""

import argparse
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from example_support import read_line, run_checks

READY = re.compile(r"^listening on (.+):(\d+)$")
START_TIMEOUT = 10.0  # for the ready line
EXIT_TIMEOUT = 5.0 + 1.5  # the contract's 5 s grace, plus process start-up and exit
APIS = ("protocol", "streams")
MAKE_CERT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                         "make_cert.sh")

args = None
api = None  # the --api the Server class passes; None passes none (the default, protocol)


class Server:
    """An echo_server process that has printed its ready line."""

    def __init__(self, *options, preexec_fn=None):
        api_option = ["--api", api] if api else []
        self.proc = subprocess.Popen(
            [args.server, "--port", "0", *api_option, *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        line = read_line(self.proc.stdout, START_TIMEOUT)
        match = READY.match(line.rstrip("\n")) if line else None
        if not match:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
            raise AssertionError(f"no ready line: stdout {line!r}, stderr {err!r}")
        self.host = match.group(1).strip("[]")
        self.port = int(match.group(2))

    def stop(self, sig=signal.SIGINT, timeout=EXIT_TIMEOUT):
        """Sends @sig; returns (exit status, seconds taken, stdout rest, stderr)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            raise AssertionError(f"did not exit within {timeout} s of {sig.name}")
        return self.proc.returncode, time.monotonic() - start, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def run(argv, timeout=30):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def client(server, *options, timeout=60):
    result = run([args.client, "--host", server.host, "--port", str(server.port), *options],
                 timeout=timeout)
    assert result.returncode == 0, f"echo_client {options} failed: {result.stderr!r}"
    assert result.stdout.startswith("echo_client: ok"), result.stdout
    return result


def expect_startup_failure(options, contains=None, status=None):
    result = run([args.server, *options], timeout=10)
    assert result.returncode != 0, f"{options}: exited 0"
    if status is not None:
        assert result.returncode == status, f"{options}: status {result.returncode}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{options}: want one stderr line, got {result.stderr!r}"
    assert result.stdout == "", f"{options}: printed {result.stdout!r} to stdout"
    if contains:
        assert contains in lines[0], f"{options}: {lines[0]!r} lacks {contains!r}"
    return lines[0]


def connect(server):
    return socket.create_connection((server.host, server.port), timeout=5)


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


# ---- Checks -----------------------------------------------------------------------------------

def check_help():
    result = run([args.server, "--help"], timeout=10)
    assert result.returncode == 0
    for option in ("--host", "--port", "--loop", "--threads", "--udp", "--api", "--tls-cert",
                   "proactor/"):
        assert option in result.stdout, f"--help lacks {option}"


def check_bad_options():
    expect_startup_failure(["--bogus"], status=2)
    expect_startup_failure(["--port", "70000"], contains="--port", status=2)
    expect_startup_failure(["--port"], contains="--port", status=2)
    expect_startup_failure(["--threads", "0"], contains="--threads", status=2)
    expect_startup_failure(["--loop", "kqueue"], contains="selector", status=2)
    expect_startup_failure(["--api", "callbacks"], contains="--api", status=2)
    expect_startup_failure(["--api"], contains="--api", status=2)


def check_streams_startup_failures():
    """--api streams fails at start-up as the protocol API does."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        line = expect_startup_failure(["--api", "streams", "--port", str(port)], status=1)
        assert "in use" in line, line
    finally:
        holder.close()
    expect_startup_failure(["--api", "streams", "--tls-cert", "/nonexistent/cert.pem",
                            "--tls-key", "/nonexistent/key.pem"], contains="cert.pem", status=2)


def check_port_in_use():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        line = expect_startup_failure(["--port", str(port)])
        assert "in use" in line, line
    finally:
        holder.close()


def check_tcp_echo_and_sigint():
    with Server() as server:
        client(server, "--connections", "4", "--size", "1000", "--count", "50")
        client(server, "--connections", "2", "--size", "3000000", "--count", "2")
        status, seconds, out, err = server.stop(signal.SIGINT)
        assert status == 0, f"exit status {status}, stderr {err!r}"
        assert out == "", f"printed after the ready line: {out!r}"


def check_sigterm():
    with Server() as server:
        client(server)
        status, _, _, err = server.stop(signal.SIGTERM)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def check_udp():
    with Server("--udp") as server:
        client(server, "--udp", "--connections", "3", "--size", "512", "--count", "20")
        client(server, "--udp", "--size", "65507", "--count", "2")
        client(server, "--connections", "2", "--count", "5")  # TCP still served
        status, _, _, err = server.stop(signal.SIGINT)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def check_threads():
    with Server("--threads", "3", "--udp") as server:
        client(server, "--connections", "16", "--size", "100", "--count", "20")
        client(server, "--udp", "--connections", "8", "--count", "10")
        status, _, _, err = server.stop(signal.SIGTERM)
        assert status == 0, f"exit status {status}, stderr {err!r}"


_certs = None


def make_certs():
    """A self-signed certificate and key for localhost (scripts/make_cert.sh), made once."""
    global _certs
    if _certs is None:
        directory = tempfile.mkdtemp(prefix="strata-echo-test-")
        result = run(["bash", MAKE_CERT, directory], timeout=30)
        assert result.returncode == 0, f"make_cert.sh failed: {result.stderr!r}"
        _certs = result.stdout.split()
    return _certs


def check_tls():
    cert, key = make_certs()
    with Server("--tls-cert", cert, "--tls-key", key) as server:
        result = client(server, "--cafile", cert, "--connections", "3", "--size", "20000",
                        "--count", "5")
        assert " over TLSv1." in result.stdout, result.stdout
        status, _, _, err = server.stop(signal.SIGINT)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def check_each_backend():
    for name in ("selector", "epoll", "poll", "select", "proactor"):
        with Server("--loop", name, *(["--udp"] if name == "proactor" else [])) as server:
            client(server, "--connections", "3", "--size", "10000", "--count", "10")
            if name == "proactor":
                client(server, "--udp", "--count", "10")
            status, _, _, err = server.stop(signal.SIGINT)
            assert status == 0, f"--loop {name}: exit status {status}, stderr {err!r}"


def check_in_flight_work_finishes():
    """After SIGINT, an open connection is still served until it ends, and then the server
    exits at once, without waiting out the grace period."""
    with Server() as server:
        sock = connect(server)
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        server.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 3.0
        while True:  # until the listening socket is gone
            try:
                socket.create_connection((server.host, server.port), timeout=2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting 3 s after SIGINT"
            time.sleep(0.05)
        sock.sendall(b"after")
        assert recv_exactly(sock, 5) == b"after"
        start = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"", "no EOF after our EOF"
        sock.close()
        out, err = server.proc.communicate(timeout=EXIT_TIMEOUT)
        assert server.proc.returncode == 0, f"exit status {server.proc.returncode}: {err!r}"
        assert time.monotonic() - start < 2.0, "waited for the grace period anyway"


def check_idle_connections_closed_after_grace():
    """Connections that never end are closed once the grace period is over, on every loop."""
    with Server("--threads", "2") as server:
        socks = [connect(server) for _ in range(6)]  # SO_REUSEPORT spreads them over the loops
        for sock in socks:
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
        status, seconds, _, err = server.stop(signal.SIGINT)
        assert status == 0, f"exit status {status}, stderr {err!r}"
        assert 3.0 < seconds < EXIT_TIMEOUT, f"took {seconds:.1f} s"
        for sock in socks:
            sock.settimeout(2)
            try:
                assert sock.recv(1) == b"", "open after the server exited"
            except ConnectionResetError:
                pass
            sock.close()


def check_client_detects_mismatch():
    """echo_client fails against a server that changes a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            data = conn.recv(65536)
            if data:
                conn.sendall(bytes([data[0] ^ 1]) + data[1:])
            time.sleep(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = run([args.client, "--port", str(port), "--size", "100", "--timeout", "10"],
                     timeout=20)
        assert result.returncode != 0, "exit 0 on a wrong echo"
        assert "differs" in result.stderr, result.stderr
    finally:
        listener.close()
        thread.join(timeout=5)


def check_client_bad_options():
    result = run([args.client, "--size", "10"], timeout=10)  # no --port
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    result = run([args.client, "--port", "1", "--udp", "--size", "70000"], timeout=10)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr


def check_client_connection_refused():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]  # bound, not listening: connections are refused
    try:
        result = run([args.client, "--port", str(port), "--timeout", "5"], timeout=15)
        assert result.returncode == 1, result
        assert len(result.stderr.splitlines()) == 1, result.stderr
    finally:
        holder.close()


# Checks of the programs' options and of echo_client alone: run once.
def read_stderr_until(proc, done, timeout=10.0):
    """Reads @proc's stderr (raw, not through its buffered file object) until done(text)."""
    fd = proc.stderr.fileno()
    text = ""
    deadline = time.monotonic() + timeout
    while not done(text):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; stderr so far: {text!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"stderr closed; so far: {text!r}"
            text += chunk.decode()
    return text


def check_report_signals():
    """SIGUSR1 writes every loop's pending tasks with their await chains, SIGUSR2 every loop's
    metrics, to stderr; the server goes on serving."""
    with Server("--threads", "2") as server:
        with connect(server) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
            server.proc.send_signal(signal.SIGUSR1)
            dumps = read_stderr_until(server.proc, lambda t: t.count(" loop\n") >= 2)
            assert dumps.count("Strata: ") == 2, dumps
            assert re.search(r"pending tasks? on the \w+ loop", dumps), dumps
            # The main loop's task waits for the shutdown signal.
            assert "awaiting Event::wait" in dumps, dumps
            server.proc.send_signal(signal.SIGUSR2)
            metrics = read_stderr_until(server.proc, lambda t: t.count("bytes written") >= 2)
            assert "Strata: metrics of loop 0" in metrics and "metrics of loop 1" in metrics
            read = sum(int(n) for n in re.findall(r"^bytes read (\d+)$", metrics, re.M))
            assert read >= 4, metrics
            sock.sendall(b"pong")
            assert recv_exactly(sock, 4) == b"pong"
        status, _, _, err = server.stop(signal.SIGINT)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def open_file_limits(pid):
    """(soft, hard) limits on open files of process @pid, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


def check_open_file_limit_raised():
    """The server raises its soft open-file limit to the hard one (but not on select)."""
    soft_hard = (256, min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096))
    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, soft_hard)
    with Server(preexec_fn=lower) as server:
        assert open_file_limits(server.proc.pid) == (soft_hard[1], soft_hard[1])
    with Server("--loop", "select", preexec_fn=lower) as server:
        assert open_file_limits(server.proc.pid) == soft_hard


CHECKS = [
    check_help,
    check_bad_options,
    check_port_in_use,
    check_streams_startup_failures,
    check_client_detects_mismatch,
    check_client_bad_options,
    check_client_connection_refused,
]

# Checks of a running server: run once per API.
SERVER_CHECKS = [
    check_tcp_echo_and_sigint,
    check_sigterm,
    check_udp,
    check_threads,
    check_tls,
    check_each_backend,
    check_in_flight_work_finishes,
    check_idle_connections_closed_after_grace,
    check_open_file_limit_raised,
    check_report_signals,
]


def with_api(check, name):
    """@check run with the server's --api @name."""
    def run():
        global api
        api = name
        check()
    run.__name__ = check.__name__
    return run


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = parser.parse_args()
    runs = list(CHECKS)
    runs += [(f"{check.__name__}:{name}", with_api(check, name))
             for name in APIS for check in SERVER_CHECKS]
    try:
        return run_checks(runs, args.checks)
    finally:
        if _certs:
            shutil.rmtree(os.path.dirname(_certs[0]), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
