#!/usr/bin/env python3
"""http_server as a program: the http_server contract and the example-server contract of
DESIGN.md, checked end to end with Python's http.client and ssl, raw sockets (for what a real
client would not send), curl and headless Chromium when they are installed (nothing is
installed: a missing tool skips its part with a message).

Every wait is bounded, every port is ephemeral on 127.0.0.1, every server is stopped with
SIGTERM at the end of its check (exit status 0, within the grace period) and killed if a check
fails. Exits 0 when every check passes, 1 otherwise, naming each failed check.

    test_http_server.py --server build/examples/http_server
    test_http_server.py --server ... check_static check_tls     the checks named only
"""

import argparse
import email.utils
import http.client
import json
import os
import re
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

from example_support import read_line, run_checks, short

READY = re.compile(r"^listening on (.+):(\d+)$")
START_TIMEOUT = 10.0  # for the ready line
GRACE = 5.0  # the contract's grace period
EXIT_TIMEOUT = GRACE + 1.5  # plus process exit
IO_TIMEOUT = 5.0  # for each response awaited
NOT_AVAILABLE = "not available in this build"  # what a loop kind not built says
HELLO = b"Hello, World!"
JSON_BODY = b'{"message":"Hello, World!"}'
MAKE_CERT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                         "make_cert.sh")

args = None
processes = []  # every process started, killed at the end
temp_dirs = []  # removed at the end


# ---- Helpers ----------------------------------------------------------------------------------


def skip(message):
    print(f"  SKIP {message}", flush=True)


def run(argv, timeout=15, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          **kwargs)


def make_temp_dir():
    directory = tempfile.mkdtemp(prefix="strata-http-test-")
    temp_dirs.append(directory)
    return directory


def media_type(value):
    """The media type of a Content-Type value, without parameters, lower case."""
    return (value or "").split(";")[0].strip().lower()


def http_date(seconds):
    return email.utils.formatdate(seconds, usegmt=True)


class Server:
    """An http_server process that has printed its ready line. As a context manager it is
    stopped with SIGTERM at the end (exit 0 within the grace period checked), or killed when
    the block raised."""

    def __init__(self, *options):
        self.options = options
        self.stderr = tempfile.TemporaryFile()  # never a pipe that could fill up
        self.proc = subprocess.Popen([args.server, "--port", "0", *options],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        processes.append(self.proc)
        self.clients = []
        line = read_line(self.proc.stdout, START_TIMEOUT)
        match = READY.match(line.rstrip("\n")) if line else None
        if not match:
            self.kill()
            raise AssertionError(f"{options}: no ready line: stdout {line!r}, "
                                 f"stderr {self.err()!r}")
        self.host = match.group(1).strip("[]")
        self.port = int(match.group(2))
        assert self.host == "127.0.0.1", f"ready line names {self.host}"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def err(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def raw(self, **kwargs):
        """A Raw connection, closed before the server is stopped."""
        client = Raw(self, **kwargs)
        self.clients.append(client)
        return client

    def http(self, timeout=IO_TIMEOUT):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self.clients.append(conn)
        return conn

    def stop(self, sig=signal.SIGTERM, timeout=EXIT_TIMEOUT):
        """Sends @sig; returns (exit status, seconds taken, stdout rest, stderr)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not exit within {timeout} s of {sig.name}")
        return self.proc.returncode, time.monotonic() - start, out, self.err()

    def stop_checked(self, sig=signal.SIGTERM, within=EXIT_TIMEOUT):
        status, seconds, out, err = self.stop(sig)
        assert status == 0, f"{self.options}: exit status {status} after {sig.name}, stderr {err!r}"
        assert seconds < within, f"{self.options}: took {seconds:.1f} s to exit (limit {within})"
        assert out == "", f"{self.options}: printed after the ready line: {out!r}"
        return seconds

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        for client in self.clients:
            client.close()
        if exc_type is not None or not self.alive():
            self.kill()
            return
        # Nothing in flight: the idle connections close at once, so well within the grace.
        self.stop_checked(within=GRACE)


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version, self.status, self.reason = version, status, reason
        self.fields = headers  # [(name, value)] as received
        self.body = body

    def header(self, name):
        """The value of field @name (the values of a repeated field joined by ", "), or None."""
        values = [v for n, v in self.fields if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def count(self, name):
        return sum(1 for n, _ in self.fields if n.lower() == name.lower())

    def __repr__(self):
        return f"<{self.status} {self.reason} {self.fields} body {short(self.body)}>"


class Raw:
    """A raw TCP (or TLS) connection: sends bytes as given, reads responses as received."""

    def __init__(self, server, timeout=IO_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", server.port))
        self.buffer = b""
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} within {self.timeout} s (have {short(self.buffer)})")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError(f"no {what} within {self.timeout} s (have {short(self.buffer)})")
        except ConnectionResetError:
            raise AssertionError(f"connection reset waiting for {what} (have {short(self.buffer)})")
        assert chunk, f"EOF waiting for {what} (have {short(self.buffer)})"
        self.buffer += chunk

    def _take_line(self, deadline, what):
        while b"\r\n" not in self.buffer:
            self._fill(deadline, what)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _take(self, n, deadline, what):
        while len(self.buffer) < n:
            self._fill(deadline, what)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def response(self, head=False, timeout=None):
        """The next response (a 1xx included); @head: it answers HEAD, so it has no body."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline, "response head")
        head_bytes, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"(HTTP/\d\.\d) (\d\d\d) ?(.*)", lines[0])
        assert match, f"bad status line {lines[0]!r}"
        fields = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            assert colon and name and name == name.strip(), f"bad field line {line!r}"
            fields.append((name, value.strip()))
        response = Response(match.group(1), int(match.group(2)), match.group(3), fields, b"")
        status = response.status
        if head or status < 200 or status in (204, 304):
            return response
        te = response.header("Transfer-Encoding")
        if te is not None:
            assert te.lower() == "chunked", f"Transfer-Encoding {te!r}"
            body = b""
            while True:
                size_line = self._take_line(deadline, "chunk size")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self._take_line(deadline, "trailer"):
                        pass
                    break
                body += self._take(size, deadline, "chunk")
                assert self._take(2, deadline, "chunk end") == b"\r\n"
            response.body = body
        elif response.header("Content-Length") is not None:
            assert response.count("Content-Length") == 1, response
            response.body = self._take(int(response.header("Content-Length")), deadline, "body")
        else:  # until the close
            response.body = self.rest()
        return response

    def request(self, data, head=False):
        self.send(data)
        return self.response(head=head)

    def rest(self, timeout=None):
        """Everything until the server closes (a reset counts as a close)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        data, self.buffer = self.buffer, b""
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"not closed within {timeout or self.timeout} s (have {short(data)})"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise AssertionError(f"not closed within {timeout or self.timeout} s "
                                     f"(have {short(data)})")
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def expect_close(self, timeout=None):
        """Checks that the server closes the connection and sends nothing more."""
        data = self.rest(timeout)
        assert data == b"", f"after the last response: {short(data)}"

    def quiet(self, within=0.2):
        """Checks that nothing arrives (no data, no close) within @within seconds."""
        assert not self.buffer, f"unexpected {short(self.buffer)}"
        ready, _, _ = select.select([self.sock], [], [], within)
        if ready:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b"(reset)"
            raise AssertionError(f"unexpected {short(data) if data else 'EOF'}")

    def close(self):
        self.sock.close()


def get(path, *fields, method="GET", version="1.1", body=b""):
    """The bytes of a request."""
    head = f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{f}\r\n" for f in fields)
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def send_ignoring_errors(conn, data):
    """Sends @data on the Raw @conn, stopping quietly when the server closes or resets."""
    try:
        conn.send(data)
    except OSError:
        pass


def check_date(value):
    assert value, "no Date"
    assert value.endswith(" GMT"), f"Date {value!r}"
    when = email.utils.parsedate_to_datetime(value).timestamp()
    assert abs(when - time.time()) < 120, f"Date {value!r} is not now"


def expect_error(server, request, status, what, closes=True):
    """Sends @request on a fresh connection: the answer is @status, then (with @closes) the
    close."""
    conn = server.raw()
    send_ignoring_errors(conn, request)  # the server may answer and close before it is all sent
    r = conn.response()
    assert r.status == status, f"{what}: want {status}, got {r}"
    if closes:
        assert "close" in (r.header("Connection") or "").lower(), f"{what}: {r}"
        conn.expect_close()
    conn.close()
    return r


# ---- Start-up and options ---------------------------------------------------------------------

def check_help():
    result = run([args.server, "--help"], text=True)
    assert result.returncode == 0, result
    for option in ("--host", "--port", "--loop", "--threads", "--root", "--max-header-bytes",
                   "--max-body-bytes", "--header-timeout", "--keepalive-timeout", "--tls-cert",
                   "--tls-key"):
        assert option in result.stdout, f"--help lacks {option}"
    assert result.stderr == "", result.stderr


def expect_startup_failure(options, contains=None, status=None):
    result = run([args.server, *options], timeout=10, text=True)
    assert result.returncode != 0, f"{options}: exited 0"
    if status is not None:
        assert result.returncode == status, f"{options}: status {result.returncode}, " \
                                            f"stderr {result.stderr!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{options}: want one stderr line, got {result.stderr!r}"
    assert result.stdout == "", f"{options}: printed {result.stdout!r}"
    if contains:
        assert contains in lines[0], f"{options}: {lines[0]!r} lacks {contains!r}"


def check_startup_failures():
    expect_startup_failure(["--bogus"], status=2)
    expect_startup_failure(["--root", "/nonexistent"], contains="/nonexistent", status=2)
    expect_startup_failure(["--root", "/etc/hostname"], status=2)  # not a directory
    expect_startup_failure(["--header-timeout", "0"], contains="--header-timeout", status=2)
    expect_startup_failure(["--keepalive-timeout", "x"], contains="--keepalive-timeout", status=2)
    expect_startup_failure(["--max-body-bytes", "-1"], contains="--max-body-bytes", status=2)
    expect_startup_failure(["--port", "70000"], contains="--port", status=2)
    expect_startup_failure(["--tls-cert", "/nonexistent/cert.pem", "--tls-key",
                            "/nonexistent/key.pem"])
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        expect_startup_failure(["--port", str(holder.getsockname()[1])], contains="in use")
    finally:
        holder.close()


# ---- The routes, with http.client -------------------------------------------------------------

def check_routes():
    with Server() as server:
        conn = server.http()
        conn.request("GET", "/plaintext")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
        assert media_type(r.getheader("Content-Type")) == "text/plain", r.getheaders()
        assert body == HELLO, body
        assert r.getheader("Content-Length") == "13", r.getheaders()
        check_date(r.getheader("Date"))
        assert len(r.headers.get_all("Date")) == 1, r.getheaders()
        assert r.version == 11, r.version

        conn.request("GET", "/plaintext?x=1&y")  # the query is not part of the path
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, HELLO)

        conn.request("GET", "/json")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
        assert media_type(r.getheader("Content-Type")) == "application/json", r.getheaders()
        assert body == JSON_BODY, body
        assert json.loads(body) == {"message": "Hello, World!"}
        assert r.getheader("Content-Length") == str(len(JSON_BODY))

        for content_type, data in (("application/x-test; charset=utf-8", b"echo me, please"),
                                   ("application/octet-stream", bytes(range(256)) * 40),
                                   ("text/plain", b"")):
            conn.request("POST", "/echo", body=data, headers={"Content-Type": content_type})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, (r.status, body)
            assert r.getheader("Content-Type") == content_type, r.getheaders()
            assert body == data, short(body)
            assert r.getheader("Content-Length") == str(len(data))

        conn.request("POST", "/echo", body=b"untyped")  # no Content-Type: none back
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"untyped")
        assert r.getheader("Content-Type") in (None, ""), r.getheaders()

        conn.request("HEAD", "/plaintext")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"", r.status
        assert r.getheader("Content-Length") == "13", r.getheaders()
        assert media_type(r.getheader("Content-Type")) == "text/plain"

        conn.request("POST", "/plaintext", body=b"x")
        r = conn.getresponse()
        r.read()
        assert r.status == 405, r.status
        allow = [m.strip() for m in (r.getheader("Allow") or "").split(",")]
        assert "GET" in allow and "POST" not in allow, f"Allow {r.getheader('Allow')!r}"

        for method in ("GET", "HEAD"):
            conn.request(method, "/echo")
            r = conn.getresponse()
            r.read()
            assert r.status == 405, (method, r.status)
            assert "POST" in (r.getheader("Allow") or ""), f"Allow {r.getheader('Allow')!r}"

        for path in ("/nope", "/plaintext/", "/PLAINTEXT", "/index.html", "/plaintext/x"):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert r.status == 404, f"GET {path}: {r.status}"


def check_keep_alive():
    """Several requests on one http.client connection: one socket throughout."""
    with Server() as server:
        conn = server.http()
        conn.connect()
        sock = conn.sock
        local = sock.getsockname()
        for i in range(20):
            method, path = [("GET", "/plaintext"), ("GET", "/json"), ("HEAD", "/plaintext"),
                            ("POST", "/echo")][i % 4]
            body = f"body {i}".encode() if method == "POST" else None
            conn.request(method, path, body=body)
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, (i, r.status, data)
            assert (r.getheader("Connection") or "").lower() != "close", r.getheaders()
            assert not r.will_close, f"request {i}: the server means to close"
            if method == "POST":
                assert data == body
            assert conn.sock is sock and sock.getsockname() == local, f"reconnected at {i}"


def check_http10_and_connection_close():
    with Server() as server:
        # HTTP/1.0 without keep-alive: answered, then closed.
        conn = server.raw()
        r = conn.request(b"GET /plaintext HTTP/1.0\r\n\r\n")
        assert r.status == 200 and r.body == HELLO, r
        conn.expect_close()

        # HTTP/1.0 with Connection: keep-alive: stays open.
        conn = server.raw()
        for _ in range(3):
            r = conn.request(get("/plaintext", "Connection: keep-alive", version="1.0"))
            assert r.status == 200 and r.body == HELLO, r
            assert (r.header("Connection") or "").lower() == "keep-alive", r
        r = conn.request(get("/json", version="1.0"))  # and the last without it
        assert r.status == 200 and r.body == JSON_BODY, r
        conn.expect_close()

        # HTTP/1.1 with Connection: close: answered with Connection: close, then closed.
        conn = server.raw()
        r = conn.request(get("/plaintext"))
        assert r.status == 200, r
        r = conn.request(get("/json", "Connection: close"))
        assert r.status == 200 and r.body == JSON_BODY, r
        assert "close" in (r.header("Connection") or "").lower(), r
        conn.expect_close()

        # The same through http.client.
        hc = server.http()
        hc.request("GET", "/plaintext", headers={"Connection": "close"})
        r = hc.getresponse()
        assert r.read() == HELLO and r.will_close, r.getheaders()


def check_pipelining():
    """50 requests in one send, answered in order, then a Connection: close ends it."""
    with Server() as server:
        conn = server.raw()
        requests, expected = [], []
        for i in range(50):
            kind = i % 5
            if kind == 0:
                requests.append(get("/plaintext"))
                expected.append(("GET", 200, HELLO))
            elif kind == 1:
                requests.append(get("/json"))
                expected.append(("GET", 200, JSON_BODY))
            elif kind == 2:
                body = f"request {i} ".encode() * (i + 1)
                requests.append(get("/echo", "Content-Type: text/x-n", method="POST", body=body))
                expected.append(("POST", 200, body))
            elif kind == 3:
                requests.append(get("/plaintext", method="HEAD"))
                expected.append(("HEAD", 200, b""))
            else:
                requests.append(get(f"/missing/{i}"))
                expected.append(("GET", 404, None))
        requests.append(get("/echo", "Connection: close", method="POST", body=b"last"))
        expected.append(("POST", 200, b"last"))
        conn.send(b"".join(requests))
        for i, (method, status, body) in enumerate(expected):
            r = conn.response(head=(method == "HEAD"))
            assert r.status == status, f"response {i}: {r}"
            if body is not None:
                assert r.body == body, f"response {i}: body {short(r.body)}, want {short(body)}"
            if method == "HEAD":
                assert r.header("Content-Length") == "13", f"response {i}: {r}"
        conn.expect_close()

        # Byte by byte, two requests: the same answers.
        conn = server.raw()
        for byte in get("/plaintext") + get("/json"):
            conn.send(bytes([byte]))
        assert conn.response().body == HELLO
        assert conn.response().body == JSON_BODY


def check_chunked_request():
    with Server() as server:
        conn = server.raw()
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-chunks\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n7\r\nHello, \r\n")
        time.sleep(0.05)
        conn.send(b"8;ext=1\r\nchunked \r\n")  # with a chunk extension
        time.sleep(0.05)
        conn.send(b"5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n")
        r = conn.response()
        assert r.status == 200, r
        assert r.body == b"Hello, chunked world", r
        assert r.header("Content-Type") == "text/x-chunks", r
        # Still usable; a larger chunked body, hex sizes in upper and lower case.
        parts = [os.urandom(n) for n in (0x1A, 0xff, 0x1000, 3)]
        body = b"".join(f"{len(p):{'X' if i % 2 else 'x'}}\r\n".encode() + p + b"\r\n"
                        for i, p in enumerate(parts))
        r = conn.request(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + body + b"0\r\n\r\n")
        assert r.status == 200 and r.body == b"".join(parts), r
        r = conn.request(get("/plaintext"))
        assert r.body == HELLO


def check_expect_continue():
    with Server() as server:
        conn = server.raw()
        body = b"c" * 5000
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode())
        r = conn.response()
        assert r.status == 100, f"want 100 Continue before the body, got {r}"
        conn.send(body)
        r = conn.response()
        assert r.status == 200 and r.body == body, r


def check_client_errors():
    with Server() as server:
        expect_error(server, b"HELLO\r\n\r\n", 400, "garbage")
        expect_error(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 +
                     b"\r\n\r\n", 400, "a TLS hello on the plain port")
        expect_error(server, b"GET /plaintext HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400,
                     "a field line without a colon")
        expect_error(server, b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX : y\r\n\r\n", 400,
                     "white space before the colon")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                     "Content-Length with Transfer-Encoding")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400,
                     "Transfer-Encoding with Content-Length")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Content-Length: 4\r\n\r\nabcd", 400, "differing Content-Lengths")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
                     "a negative Content-Length")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "a bad chunk size")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n-5\r\nabc\r\n0\r\n\r\n", 400, "a negative chunk size")
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n3\r\nabcdef\r\n0\r\n\r\n", 400, "a chunk longer than its size")
        expect_error(server, b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\x00: y\r\n\r\n", 400,
                     "a NUL in a field name")
        expect_error(server, b"GET /plaintext HTTP/1.1\r\n\r\n", 400, "HTTP/1.1 without Host")
        expect_error(server, b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400,
                     "an obs-fold")
        expect_error(server, b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n", 400, "Transfer-Encoding in HTTP/1.0")

        # A good request, then garbage, pipelined: the first answered, then 400, then the close.
        conn = server.raw()
        conn.send(get("/plaintext") + b"GARBAGE GARBAGE GARBAGE\r\n\r\n" + get("/json"))
        r = conn.response()
        assert r.status == 200 and r.body == HELLO, r
        r = conn.response()
        assert r.status == 400, r
        conn.expect_close()
        assert server.alive()


def check_limits():
    with Server("--max-body-bytes", "1000", "--max-header-bytes", "1024") as server:
        # At the limits: served.
        conn = server.raw()
        r = conn.request(get("/echo", method="POST", body=b"b" * 1000))
        assert r.status == 200 and r.body == b"b" * 1000, r
        r = conn.request(get("/plaintext", "X-Pad: " + "p" * 700))
        assert r.status == 200, r
        # Body over the limit: 413 and the close (with the body sent, and without).
        expect_error(server, get("/echo", method="POST", body=b"b" * 1001), 413,
                     "a 1001-byte body")
        expect_error(server, get("/echo", "Content-Length: 1000000000000", method="POST"),
                     413, "a huge Content-Length, body not sent")
        chunks = b"".join(b"190\r\n" + b"c" * 400 + b"\r\n" for _ in range(3))  # 1200 bytes
        expect_error(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks + b"0\r\n\r\n", 413, "a 1200-byte chunked body")
        # A client still sending its 3 MB body when the server answers gets the 413 (the
        # server must not reset the connection before the client could read it).
        for _ in range(3):
            conn = server.raw()
            sender = threading.Thread(target=send_ignoring_errors,
                                      args=(conn, get("/echo", method="POST", body=b"z" * 3000000)))
            sender.start()
            r = conn.response()
            assert r.status == 413, r
            sender.join(IO_TIMEOUT)
            assert not sender.is_alive(), "the client's send never ended"
        # Header section over the limit: 431 and the close.
        expect_error(server, get("/plaintext", "X-Big: " + "h" * 2000), 431, "a 2000-byte field")
        expect_error(server, get("/plaintext", *[f"X-F{i}: {'v' * 20}" for i in range(60)]),
                     431, "many fields")
    with Server() as server:  # the defaults: 8 KiB of header, 1 MiB of body
        expect_error(server, get("/plaintext", "X-Big: " + "h" * 9000), 431, "a 9000-byte field")
        conn = server.raw()
        r = conn.request(get("/plaintext", "X-Big: " + "h" * 7000))
        assert r.status == 200, r
        r = conn.request(get("/echo", method="POST", body=b"m" * (1 << 20)))
        assert r.status == 200 and len(r.body) == 1 << 20, r
        expect_error(server, get("/echo", method="POST", body=b"m" * ((1 << 20) + 1)), 413,
                     "a body of 1 MiB + 1")


def check_timeouts():
    with Server("--header-timeout", "0.5", "--keepalive-timeout", "0.5") as server:
        # A head that does not finish in time: 408 and the close.
        conn = server.raw()
        start = time.monotonic()
        conn.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")
        r = conn.response()
        took = time.monotonic() - start
        assert r.status == 408, r
        conn.expect_close()
        assert 0.35 < took < 3.0, f"408 after {took:.2f} s, want about 0.5"

        # A head trickling in, a byte every 0.1 s, never done within 0.5 s: 408 as well.
        conn = server.raw()
        start = time.monotonic()
        status = None
        for byte in b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100:
            try:
                conn.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            ready, _, _ = select.select([conn.sock], [], [], 0.1)
            if ready:
                r = conn.response()
                status = r.status
                break
            assert time.monotonic() - start < 3.0, "a trickled head was never cut off"
        assert status == 408, f"trickled head: {status}"

        # An idle keep-alive connection: closed after about 0.5 s, not before.
        conn = server.raw()
        r = conn.request(get("/plaintext"))
        assert r.status == 200
        idle_from = time.monotonic()
        conn.quiet(0.2)
        r = conn.request(get("/json"))  # activity resets the idle time
        assert r.status == 200
        idle_from = time.monotonic()
        conn.expect_close(timeout=3.0)
        took = time.monotonic() - idle_from
        assert 0.35 < took < 3.0, f"closed after {took:.2f} s idle, want about 0.5"

        # A connection that never sends a byte is closed too (no 200 of course).
        conn = server.raw()
        start = time.monotonic()
        data = conn.rest(timeout=3.0)
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), short(data)
        assert time.monotonic() - start > 0.35

        # A request in progress is not idle: a body trickling in over 1 s, and a response
        # read slowly for over 1 s, are not cut off by either timeout.
        conn = server.raw()
        conn.send(get("/echo", "Content-Length: 8", method="POST"))
        for byte in b"trickled":
            time.sleep(0.15)
            conn.send(bytes([byte]))
        r = conn.response()
        assert r.status == 200 and r.body == b"trickled", r
        conn = server.raw(rcvbuf=4096, timeout=10)
        body = bytes(range(256)) * 2048  # 512 KiB, echoed back to a slow reader
        # (The keep-alive timeout may start once the server has written its last response,
        # while the client is still reading it: one more request pipelined keeps it busy.)
        conn.send(get("/echo", method="POST", body=body) + get("/plaintext"))
        start = time.monotonic()
        while time.monotonic() - start < 1.2:
            conn._fill(start + 10, "the echo")
            time.sleep(0.02)
        r = conn.response()
        assert r.status == 200 and r.body == body, f"slow reader: {r.status}, {len(r.body)}"
        r = conn.response()
        assert r.status == 200 and r.body == HELLO, r

        # Requests spaced by less than the keep-alive timeout keep the connection.
        conn = server.raw()
        for _ in range(4):
            r = conn.request(get("/plaintext"))
            assert r.status == 200
            time.sleep(0.15)


def check_builtin_page():
    with Server() as server:
        conn = server.http()
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
        assert media_type(r.getheader("Content-Type")) == "text/html", r.getheaders()
        assert r.getheader("Content-Length") == str(len(body))
        text = body.decode("utf-8")
        assert "<title>Strata http_server</title>" in text, short(text)
        assert "Strata http_server" in text and "/plaintext" in text
        conn.request("HEAD", "/")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"" and r.getheader("Content-Length") == \
            str(len(body)), r.getheaders()
        conn.request("GET", "/?q=1")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == body


# ---- Static files -----------------------------------------------------------------------------

SECRET = b"TOP SECRET: this file is outside the root\n"


class Tree:
    """A --root directory and a secret file beside it."""

    def __init__(self):
        base = make_temp_dir()
        self.root = os.path.join(base, "root")
        os.makedirs(os.path.join(self.root, "sub"))
        self.secret = os.path.join(base, "secret.txt")
        self.files = {
            "index.html": b"<!doctype html><title>index</title><p>the index</p>\n",
            "a.txt": b"Alpha file.\nSecond line.\n",
            "sub/b.css": b"body { color: #123; }\n",
            "data.json": b'{"k": [1, 2, 3]}',
            "noext": b"no extension",
            "sp ace.txt": b"a name with a space",
            "big.bin": os.urandom(3 * 1024 * 1024 + 17),
        }
        for name, data in self.files.items():
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(data)
        with open(self.secret, "wb") as f:
            f.write(SECRET)
        os.symlink("a.txt", os.path.join(self.root, "link.txt"))  # inside: followed
        os.symlink(self.secret, os.path.join(self.root, "outside.txt"))  # absolute, out
        os.symlink("../../secret.txt", os.path.join(self.root, "sub", "up.txt"))  # relative, out
        os.symlink(os.path.dirname(self.root), os.path.join(self.root, "parentdir"))  # a dir, out
        # Last-Modified compares whole seconds: an mtime in the past, on a second boundary.
        self.mtime = int(time.time()) - 3600
        os.utime(os.path.join(self.root, "a.txt"), (self.mtime, self.mtime))

    def data(self, name):
        return self.files[name]


def check_static():
    tree = Tree()
    with Server("--root", tree.root) as server:
        conn = server.raw()
        for path, name, type_ in (("/a.txt", "a.txt", "text/plain"),
                                  ("/sub/b.css", "sub/b.css", "text/css"),
                                  ("/index.html", "index.html", "text/html"),
                                  ("/", "index.html", "text/html"),
                                  ("/data.json", "data.json", "application/json"),
                                  ("/noext", "noext", "application/octet-stream"),
                                  ("/sp%20ace.txt", "sp ace.txt", "text/plain"),
                                  ("/link.txt", "a.txt", "text/plain"),
                                  ("/a.txt?v=2", "a.txt", "text/plain"),
                                  ("//sub//b.css", "sub/b.css", "text/css"),
                                  ("/sub/../a.txt", "a.txt", "text/plain"),
                                  ("/sub/%2e%2e/a.txt", "a.txt", "text/plain")):
            r = conn.request(get(path))
            data = tree.data(name)
            assert r.status == 200, f"GET {path}: {r}"
            assert r.body == data, f"GET {path}: {short(r.body)}"
            assert media_type(r.header("Content-Type")) == type_, f"GET {path}: {r}"
            assert r.header("Content-Length") == str(len(data)), f"GET {path}: {r}"
            modified = email.utils.parsedate_to_datetime(r.header("Last-Modified") or "")
            mtime = os.stat(os.path.join(tree.root, name)).st_mtime
            assert abs(modified.timestamp() - int(mtime)) < 1, f"GET {path}: {r}"
            check_date(r.header("Date"))
        r = conn.request(get("/a.txt"))
        assert r.header("Last-Modified") == http_date(tree.mtime), r

        # HEAD: the same head, no body (the next response on the connection proves it).
        r = conn.request(get("/a.txt", method="HEAD"), head=True)
        assert r.status == 200 and r.header("Content-Length") == str(len(tree.data("a.txt"))), r
        assert r.header("Last-Modified") == http_date(tree.mtime), r
        assert media_type(r.header("Content-Type")) == "text/plain"
        r = conn.request(get("/big.bin", method="HEAD"), head=True)
        assert r.header("Content-Length") == str(len(tree.data("big.bin"))), r
        r = conn.request(get("/plaintext"))
        assert r.status == 200 and r.body == HELLO, r  # the routes still win
        r = conn.request(get("/echo", method="POST", body=b"still"))
        assert r.status == 200 and r.body == b"still", r

        # Missing: 404.
        for path in ("/missing.txt", "/sub/missing.css", "/a.txt/x", "/A.TXT"):
            r = conn.request(get(path))
            assert r.status == 404, f"GET {path}: {r}"
        r = conn.request(get("/missing.txt", method="HEAD"), head=True)
        assert r.status == 404, r
        # A directory without its '/': redirected; with it and no index: 404, no listing.
        r = conn.request(get("/sub"))
        assert r.status in (301, 308) and (r.header("Location") or "").endswith("/sub/"), r
        r = conn.request(get("/sub/"))
        assert r.status == 404 and b"b.css" not in r.body, r
        # Not GET or HEAD: 405.
        r = conn.request(get("/a.txt", method="POST", body=b"x"))
        assert r.status == 405 and "GET" in (r.header("Allow") or ""), r

        # Conditional and ranges.
        last_modified = http_date(tree.mtime)
        r = conn.request(get("/a.txt", f"If-Modified-Since: {last_modified}"))
        assert r.status == 304 and r.body == b"", r
        assert r.header("Last-Modified") == last_modified, r
        r = conn.request(get("/a.txt", f"If-Modified-Since: {last_modified}", method="HEAD"),
                         head=True)
        assert r.status == 304, r
        r = conn.request(get("/a.txt", f"If-Modified-Since: {http_date(time.time())}"))
        assert r.status == 304, r
        r = conn.request(get("/a.txt", f"If-Modified-Since: {http_date(tree.mtime - 10)}"))
        assert r.status == 200 and r.body == tree.data("a.txt"), r
        r = conn.request(get("/a.txt", "If-Modified-Since: not a date"))
        assert r.status == 200, r
        size = len(tree.data("a.txt"))
        r = conn.request(get("/a.txt", "Range: bytes=0-4"))
        assert r.status == 206 and r.body == tree.data("a.txt")[:5], r
        assert r.header("Content-Range") == f"bytes 0-4/{size}", r
        assert r.header("Content-Length") == "5", r
        r = conn.request(get("/a.txt", "Range: bytes=-3"))
        assert r.status == 206 and r.body == tree.data("a.txt")[-3:], r
        assert r.header("Content-Range") == f"bytes {size - 3}-{size - 1}/{size}", r
        r = conn.request(get("/a.txt", "Range: bytes=999999-"))
        assert r.status == 416, r
        assert r.header("Content-Range") == f"bytes */{size}", r
        big = tree.data("big.bin")
        r = conn.request(get("/big.bin", "Range: bytes=1000000-1999999"))
        assert r.status == 206 and r.body == big[1000000:2000000], r
        r = conn.request(get("/big.bin"))
        assert r.status == 200 and r.body == big, f"big.bin: {len(r.body)} bytes"
        r = conn.request(get("/a.txt"))
        assert r.status == 200, r


def check_static_escapes():
    """No path leaves the root: plain, percent-encoded, or through a symbolic link."""
    tree = Tree()
    with Server("--root", tree.root) as server:
        paths = [
            "/../secret.txt", "/../../../../../../etc/passwd", "/sub/../../secret.txt",
            "/%2e%2e/secret.txt", "/%2E%2E/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd", "/sub/%2e%2e/%2e%2e/secret.txt",
            "/sub/..%2f..%2fsecret.txt", "/sub/..%2f..%2f..%2f..%2fetc/passwd",
            "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/.%2e/secret.txt", "/%2e./secret.txt",
            "/..", "/../", "/sub/../..", "/..\\secret.txt", "/%5c..%5csecret.txt",
            "/%252e%252e/secret.txt", "/a.txt%00.html", "/%00", "/.%00./secret.txt",
            "/outside.txt", "/sub/up.txt", "/parentdir/secret.txt", "/parentdir/root/a.txt",
            "/%2fetc/passwd", "/%2Fetc%2Fpasswd",
        ]
        conn = server.raw()
        for path in paths:
            try:
                r = conn.request(get(path))
            except AssertionError:
                # The server may close after a 400; go on with a new connection.
                conn = server.raw()
                r = conn.request(get(path))
            assert r.status in (400, 404), f"GET {path}: {r}"
            assert SECRET not in r.body and b"root:" not in r.body, f"GET {path}: {short(r.body)}"
            if r.status == 400 or (r.header("Connection") or "").lower() == "close":
                conn = server.raw()
        # The same through HEAD.
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/outside.txt"):
            conn = server.raw()
            r = conn.request(get(path, method="HEAD"), head=True)
            assert r.status in (400, 404), f"HEAD {path}: {r}"
        # An absolute-form target cannot escape either.
        conn = server.raw()
        r = conn.request(b"GET http://127.0.0.1/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.status != 200 and SECRET not in r.body, r


def check_static_large_and_slow():
    """The 3 MiB file with http.client, to a slow reader, and several at once."""
    tree = Tree()
    big = tree.data("big.bin")
    with Server("--root", tree.root) as server:
        conn = server.http(timeout=20)
        conn.request("GET", "/big.bin")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and body == big, (r.status, len(body))
        assert media_type(r.getheader("Content-Type")) == "application/octet-stream"
        # A slow reader with a small receive buffer: the loop does not stall meanwhile.
        slow = server.raw(rcvbuf=8192, timeout=20)
        slow.send(get("/big.bin"))
        time.sleep(0.2)
        other = server.raw()
        start = time.monotonic()
        assert other.request(get("/plaintext")).body == HELLO
        assert time.monotonic() - start < 1.0, "the slow reader held up another connection"
        r = slow.response()
        assert r.status == 200 and r.body == big, len(r.body)
        # Several at once.
        results = [None] * 4

        def fetch(i):
            try:
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
                c.request("GET", "/big.bin")
                results[i] = c.getresponse().read() == big
                c.close()
            except Exception as e:
                results[i] = e

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [True] * len(results), results


# ---- curl, TLS, threads, shutdown, Chromium ---------------------------------------------------

def check_curl():
    curl = shutil.which("curl")
    if not curl:
        skip("curl not installed: skipping the curl checks")
        return
    tree = Tree()
    with Server("--root", tree.root) as server:
        url = server.url
        base = [curl, "-sS", "--max-time", "10"]
        result = run(base + ["-D", "-", f"{url}/plaintext"])
        assert result.returncode == 0, result
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), result.stdout
        assert re.search(rb"(?im)^content-length: 13\r?$", head), head
        assert re.search(rb"(?im)^content-type: text/plain", head), head
        assert body == HELLO, body

        # 100-continue: curl waits for it (--expect100-timeout), then sends the body.
        data_file = os.path.join(make_temp_dir(), "body.bin")
        data = b"0123456789abcdef\n" * 300 + bytes(range(256))  # > 1 KiB, binary
        with open(data_file, "wb") as f:
            f.write(data)
        start = time.monotonic()
        result = run(base + ["-v", "--http1.1", "--expect100-timeout", "8", "-H",
                             "Expect: 100-continue", "-H", "Content-Type: application/x-curl",
                             "--data-binary", f"@{data_file}", f"{url}/echo"])
        assert result.returncode == 0, result
        assert result.stdout == data, short(result.stdout)
        assert b"< HTTP/1.1 100" in result.stderr, f"no 100 Continue: {result.stderr[-800:]!r}"
        assert re.search(rb"(?im)^< content-type: application/x-curl", result.stderr)
        assert time.monotonic() - start < 5, "curl waited for its 100 Continue"
        # -d as well, with text (curl strips its newlines and sends it urlencoded-typed).
        text = b"line of text for -d\n" * 100
        with open(data_file, "wb") as f:
            f.write(text)
        result = run(base + ["-D", "-", "--http1.1", "-H", "Expect: 100-continue",
                             "-d", f"@{data_file}", f"{url}/echo"])
        assert result.returncode == 0, result
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 100"), head  # -D - shows the 100 Continue too
        head, _, body = body.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == text.replace(b"\n", b""), short(body)
        assert re.search(rb"(?im)^content-type: application/x-www-form-urlencoded", head), head

        result = run(base + ["-D", "-", "--range", "0-4", f"{url}/a.txt"])
        assert result.returncode == 0, result
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206"), head
        assert re.search(rb"(?im)^content-range: bytes 0-4/%d\r?$" % len(tree.data("a.txt")),
                         head), head
        assert body == tree.data("a.txt")[:5], body

        result = run(base + ["-I", f"{url}/plaintext"])
        assert result.returncode == 0, result
        assert result.stdout.startswith(b"HTTP/1.1 200"), result.stdout
        assert re.search(rb"(?im)^content-length: 13\r?$", result.stdout), result.stdout
        assert result.stdout.endswith(b"\r\n\r\n"), result.stdout  # no body

        # Two URLs on one connection; the big file byte-exact.
        out = os.path.join(make_temp_dir(), "big.out")
        result = run(base + ["-v", "-o", "/dev/null", f"{url}/json", "-o", out,
                             f"{url}/big.bin"], timeout=30)
        assert result.returncode == 0, result
        assert re.search(rb"(?i)re-?using", result.stderr), "curl did not reuse the connection"
        with open(out, "rb") as f:
            assert f.read() == tree.data("big.bin")


_certs = None


def make_certs():
    """A self-signed certificate and key for localhost (scripts/make_cert.sh), made once; None
    without openssl (make_cert.sh would install it: this test installs nothing)."""
    global _certs
    if _certs is None:
        if not shutil.which("openssl"):
            return None
        directory = make_temp_dir()
        result = run(["bash", MAKE_CERT, directory], timeout=30, text=True)
        assert result.returncode == 0, f"make_cert.sh failed: {result.stderr!r}"
        _certs = result.stdout.split()
    return _certs


def https_connection(server, name, context):
    """An HTTPSConnection to @server on 127.0.0.1 that checks the certificate against @name
    (and sends it as SNI and Host), whatever @name resolves to."""
    conn = http.client.HTTPSConnection(name, server.port, timeout=IO_TIMEOUT, context=context)
    conn._create_connection = \
        lambda address, *a, **k: socket.create_connection(("127.0.0.1", address[1]), *a, **k)
    server.clients.append(conn)
    return conn


def check_tls():
    certs = make_certs()
    if certs is None:
        skip("openssl not installed: skipping the TLS checks")
        return
    cert, key = certs
    tree = Tree()
    with Server("--tls-cert", cert, "--tls-key", key, "--root", tree.root) as server:
        context = ssl.create_default_context(cafile=cert)
        assert context.check_hostname
        for name in ("127.0.0.1", "localhost"):  # the IP and the DNS subjectAltName
            conn = https_connection(server, name, context)
            conn.request("GET", "/plaintext")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == HELLO, r.status
            assert media_type(r.getheader("Content-Type")) == "text/plain"
            sock = conn.sock
            assert sock.version().startswith("TLSv1."), sock.version()
            # Keep-alive over TLS, a body both ways, and a file (not by sendfile here).
            data = os.urandom(200000)
            conn.request("POST", "/echo", body=data, headers={"Content-Type": "x/y"})
            r = conn.getresponse()
            assert r.status == 200 and r.read() == data and r.getheader("Content-Type") == "x/y"
            conn.request("GET", "/big.bin")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == tree.data("big.bin")
            conn.request("GET", "/a.txt", headers={"Range": "bytes=2-5"})
            r = conn.getresponse()
            assert r.status == 206 and r.read() == tree.data("a.txt")[2:6]
            assert conn.sock is sock, "reconnected"
        # A wrong name fails verification.
        conn = https_connection(server, "example.com", context)
        try:
            conn.request("GET", "/plaintext")
            raise AssertionError("the certificate was accepted for example.com")
        except ssl.SSLCertVerificationError:
            pass
        finally:
            conn.close()
        # Plain HTTP to the TLS port gets no HTTP answer, and the server lives on.
        plain = server.raw()
        plain.send(get("/plaintext"))
        try:
            data = plain.rest(timeout=3.0)
        except AssertionError:
            data = b""
        assert not data.startswith(b"HTTP/1.1 200"), short(data)
        if shutil.which("curl"):
            result = run(["curl", "-sS", "--max-time", "10", "--cacert", cert,
                          f"https://localhost:{server.port}/json",
                          "--resolve", f"localhost:{server.port}:127.0.0.1"])
            assert result.returncode == 0 and result.stdout == JSON_BODY, result


def task_ids(pid):
    return sorted(os.listdir(f"/proc/{pid}/task"))


def switches(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def check_threads():
    """--threads 2: two loops on two threads; 200 requests over 20 connections all served."""
    with Server("--threads", "2") as server:
        pid = server.proc.pid
        tasks = task_ids(pid)
        # Contract: N loops on N threads (the main thread runs one of them).
        assert len(tasks) >= 2, f"{len(tasks)} threads for --threads 2"
        before = {tid: switches(pid, tid) for tid in tasks}
        failures = []

        def client(k):
            try:
                for c in range(5):
                    conn = http.client.HTTPConnection("127.0.0.1", server.port,
                                                      timeout=IO_TIMEOUT)
                    for i in range(10):
                        if i % 2:
                            body = f"{k}.{c}.{i}".encode()
                            conn.request("POST", "/echo", body=body)
                            r = conn.getresponse()
                            ok = r.status == 200 and r.read() == body
                        else:
                            conn.request("GET", "/plaintext")
                            r = conn.getresponse()
                            ok = r.status == 200 and r.read() == HELLO
                        if not ok:
                            failures.append((k, c, i, r.status))
                    conn.close()
            except Exception as e:
                failures.append((k, repr(e)))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not failures, failures[:5]
        # Each loop's thread woke up for its share of the 20 connections (SO_REUSEPORT spreads
        # them; all 20 on one loop has a chance of 2 ** -19).
        busy = [tid for tid in tasks if switches(pid, tid) - before[tid] >= 3]
        assert len(busy) >= 2, \
            f"only {busy} of {tasks} served: {[switches(pid, t) - before[t] for t in tasks]}"
        server.stop_checked(within=GRACE)


def check_many_connections():
    """300 connections open at once, each with a request in flight; then a client that resets
    its connection in the middle of a response does not disturb the server."""
    with Server() as server:
        # In batches of 50, each awaited: a burst of 300 connects could overflow the listen
        # backlog (the kernel then drops SYNs, and the client retries after 1 s).
        conns, responses = [], {}
        for i in range(300):
            conn = server.raw()
            conn.send(get("/echo", method="POST", body=f"connection {i}".encode()))
            conns.append(conn)
            if i % 50 == 49:
                responses[i] = conn.response()
        for i, conn in enumerate(conns):
            r = responses.get(i) or conn.response()
            assert r.status == 200 and r.body == f"connection {i}".encode(), f"{i}: {r}"
        for conn in conns:
            conn.close()
        server.clients.clear()
        for _ in range(5):
            conn = server.raw(rcvbuf=4096)
            conn.send(get("/echo", method="POST", body=b"r" * 500000))
            time.sleep(0.05)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")  # a reset
            conn.close()
        time.sleep(0.1)
        assert server.alive(), "the server died"
        assert server.raw().request(get("/plaintext")).body == HELLO


def check_each_loop():
    tree = Tree()
    for loop in ("selector", "proactor", "epoll", "poll", "select"):
        try:
            server = Server("--loop", loop, "--root", tree.root)
        except AssertionError as e:
            if NOT_AVAILABLE not in str(e):
                raise
            skip(f"--loop {loop} is {NOT_AVAILABLE}")
            continue
        with server:
            conn = server.raw()
            conn.send(get("/plaintext") + get("/echo", method="POST", body=b"e" * 100000) +
                      get("/big.bin"))
            assert conn.response().body == HELLO, loop
            assert conn.response().body == b"e" * 100000, loop
            assert conn.response().body == tree.data("big.bin"), loop
            server.stop_checked(within=GRACE)


def check_sigterm():
    tree = Tree()
    big = tree.data("big.bin")
    with Server("--root", tree.root) as server:
        idle = server.raw()
        assert idle.request(get("/plaintext")).status == 200
        fresh = server.raw()  # connected, nothing sent
        # A request in flight: its body half sent.
        upload = server.raw()
        upload.send(get("/echo", "Content-Length: 10", method="POST") + b"12345")
        # A response in flight: a big file to a reader with a small buffer.
        download = server.raw(rcvbuf=8192, timeout=10)
        download.send(get("/big.bin"))
        time.sleep(0.2)
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        idle.expect_close(timeout=2.0)  # idle keep-alive connections close at once
        assert time.monotonic() - start < 2.0
        deadline = time.monotonic() + 3.0
        while True:  # until the listening socket is gone
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting 3 s after SIGTERM"
            time.sleep(0.05)
        upload.send(b"67890")
        r = upload.response()
        assert r.status == 200 and r.body == b"1234567890", r
        assert "close" in (r.header("Connection") or "").lower(), r
        upload.expect_close()
        r = download.response()
        assert r.status == 200 and r.body == big, f"{r.status}, {len(r.body)} bytes"
        download.expect_close()
        fresh.rest(timeout=2.0)  # closed, with or without a 408/503
        # Already on its way out: waited for, not signalled again (a second signal is the
        # default action, which kills).
        try:
            status = server.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {EXIT_TIMEOUT} s of SIGTERM")
        assert status == 0, f"exit status {status}, stderr {server.err()!r}"
        assert time.monotonic() - start < 3.0, "the server waited after its work was done"

    # A client that never reads its response: cut off after the grace period, exit 0.
    with Server("--root", tree.root) as server:
        stuck = server.raw(rcvbuf=4096)
        stuck.send(get("/big.bin"))
        time.sleep(0.2)
        seconds = server.stop_checked(within=EXIT_TIMEOUT)
        assert seconds > GRACE - 1.0, f"exited after {seconds:.1f} s, before the grace period"


def check_chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        skip("chromium not installed: skipping the browser check")
        return
    with Server() as server:
        profile = make_temp_dir()
        try:
            result = run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                          "--no-first-run", f"--user-data-dir={profile}",
                          "--virtual-time-budget=5000", "--dump-dom", f"{server.url}/"],
                         timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("chromium did not finish within 60 s")
        dom = result.stdout.decode(errors="replace")
        assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
        assert "Strata http_server" in dom, short(dom, 500)
        assert "<title>Strata http_server (ready)</title>" in dom, short(dom, 500)


CHECKS = [
    check_help,
    check_startup_failures,
    check_routes,
    check_keep_alive,
    check_http10_and_connection_close,
    check_pipelining,
    check_chunked_request,
    check_expect_continue,
    check_client_errors,
    check_limits,
    check_timeouts,
    check_builtin_page,
    check_static,
    check_static_escapes,
    check_static_large_and_slow,
    check_curl,
    check_tls,
    check_threads,
    check_many_connections,
    check_each_loop,
    check_sigterm,
    check_chromium,
]


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = parser.parse_args()
    try:
        return run_checks(CHECKS, args.checks, processes)
    finally:
        for directory in temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
