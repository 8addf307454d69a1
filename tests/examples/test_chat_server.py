#!/usr/bin/env python3
"""chat_server and chat_client as programs: the chat contract and the example-server contract
of DESIGN.md, checked with raw sockets (the standard library only) and with chat_client.

Every wait is bounded, every port is ephemeral on 127.0.0.1, and every process is killed at the
end. Exits 0 when every check passes, 1 otherwise, naming each failed check.

    test_chat_server.py --server build/examples/chat_server --client build/examples/chat_client
    test_chat_server.py ... check_fan_in            the checks named only
"""

import argparse
import re
import select
import signal
import socket
import subprocess
import sys
import time

from example_support import read_line, run_checks, short

READY = re.compile(r"^listening on (.+):(\d+)$")
START_TIMEOUT = 10.0  # for the ready line
EXIT_TIMEOUT = 5.0 + 1.5  # the contract's 5 s grace, plus process start-up and exit
IO_TIMEOUT = 5.0  # for each line awaited
LINE_LIMIT = 64 * 1024  # the server's reader limit

args = None
processes = []  # every process started, killed at the end


# ---- Processes --------------------------------------------------------------------------------


def run(argv, timeout=15, stdin_text=None):
    return subprocess.run(argv, input=stdin_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


class Server:
    """A chat_server process that has printed its ready line."""

    def __init__(self, *options):
        self.proc = subprocess.Popen([args.server, "--port", "0", *options],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(self.proc)
        line = read_line(self.proc.stdout, START_TIMEOUT)
        match = READY.match(line.rstrip("\n")) if line else None
        if not match:
            self.kill()
            raise AssertionError(f"no ready line: stdout {line!r}")
        self.host = match.group(1).strip("[]")
        self.port = int(match.group(2))

    def connect(self, name=None):
        """A Client; registered as @name (checked) if given."""
        client = Client(self)
        if name is not None:
            client.expect(f"register,{name}", "ok")
        return client

    def stop(self, sig=signal.SIGINT, timeout=EXIT_TIMEOUT):
        """Sends @sig; returns (exit status, seconds taken, stdout rest, stderr)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not exit within {timeout} s of {sig.name}")
        return self.proc.returncode, time.monotonic() - start, out, err

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


class Client:
    """A raw TCP connection to the server, read line by line."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)
        self.buffer = b""

    def send(self, line):
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\n")

    def line(self, timeout=IO_TIMEOUT):
        """The next line the server sends, without its "\\n"; fails on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {timeout} s (have {short(self.buffer)})"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no line within {timeout} s (have {short(self.buffer)})")
            assert chunk, f"EOF (have {short(self.buffer)})"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def cmd(self, line):
        """Sends @line, returns the reply line."""
        self.send(line)
        return self.line()

    def expect(self, line, reply):
        got = self.cmd(line)
        assert got == reply, f"{short(line)}: want {short(reply)}, got {short(got)}"

    def lines(self, n):
        """The next @n lines, sorted: for replies and messages whose order is not fixed."""
        return sorted(self.line() for _ in range(n))

    def quiet(self, within=0.2):
        """Checks that nothing arrives within @within seconds."""
        assert not self.buffer, f"unexpected {short(self.buffer)}"
        ready, _, _ = select.select([self.sock], [], [], within)
        if ready:
            data = self.sock.recv(65536)
            assert False, f"unexpected {short(data)}"

    def eof(self, timeout=IO_TIMEOUT):
        """Waits for the server to close (after any lines still to come, which are dropped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self):
        self.sock.close()


def wait_until(predicate, what, timeout=IO_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


# ---- The contract -----------------------------------------------------------------------------

def check_help():
    result = run([args.server, "--help"])
    assert result.returncode == 0, result
    for option in ("--host", "--port", "--loop", "--threads", "register", "list,friends"):
        assert option in result.stdout, f"--help lacks {option}"
    result = run([args.client, "--help"])
    assert result.returncode == 0, result
    for option in ("--host", "--port", "HOST:PORT"):
        assert option in result.stdout, f"chat_client --help lacks {option}"


def expect_startup_failure(options, contains=None, status=None):
    result = run([args.server, *options], timeout=10)
    assert result.returncode != 0, f"{options}: exited 0"
    if status is not None:
        assert result.returncode == status, f"{options}: status {result.returncode}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{options}: want one stderr line, got {result.stderr!r}"
    assert result.stdout == "", f"{options}: printed {result.stdout!r}"
    if contains:
        assert contains in lines[0], f"{options}: {lines[0]!r} lacks {contains!r}"


def check_startup_failures():
    expect_startup_failure(["--bogus"], status=2)
    expect_startup_failure(["--port", "70000"], contains="--port", status=2)
    expect_startup_failure(["--threads", "0"], contains="--threads", status=2)
    expect_startup_failure(["--loop", "kqueue"], contains="selector", status=2)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        expect_startup_failure(["--port", str(holder.getsockname()[1])], contains="in use")
    finally:
        holder.close()


def check_register():
    with Server() as server:
        alice = server.connect("alice")
        other = server.connect()
        other.expect("register,alice", "error,name taken")
        for bad in ("register,", "register,a b", "register,a,b", "register,a\tb",
                    "register, alice", "register,alice ", "register,a\u00a0b",
                    "register,a\u3000b"):
            other.expect(bad, "error,bad name")
        other.expect("register,zo\u00eb", "ok")  # UTF-8 names are names
        other.expect("register,zo\u00eb", "ok")  # its own name again
        other.expect("register,alice", "error,name taken")
        alice.expect("list,friends", "alice,zo\u00eb")
        # Registering again renames: the old name is free.
        other.expect("register,bob", "ok")
        alice.expect("list,friends", "alice,bob")
        server.connect("zo\u00eb")


def check_not_registered():
    with Server() as server:
        c = server.connect()
        c.expect("list,friends", "error,not registered")
        c.expect("chat,alice,hi", "error,not registered")
        c.expect("nonsense", "error,unknown command")  # not a command, registered or not
        c.expect("register,carol", "ok")
        c.expect("list,friends", "carol")


def check_unknown_commands():
    with Server() as server:
        c = server.connect("dave")
        for line in ("", "hello", "list", "list,", "list,enemies", "LIST,friends",
                     "register", "chat", "chat,dave", "list,friends,x", " list,friends"):
            c.expect(line, "error,unknown command")
        c.expect("list,friends", "dave")  # still served


def check_list_sorted():
    with Server() as server:
        names = ["mallory", "Bob", "alice", "zed", "carol", "_x", "b"]
        clients = [server.connect(name) for name in names]
        want = ",".join(sorted(names))
        for c in clients:
            c.expect("list,friends", want)


def check_chat():
    with Server() as server:
        alice = server.connect("alice")
        bob = server.connect("bob")
        alice.expect("chat,bob,hello, world, with commas", "ok")
        assert bob.line() == "from,alice,hello, world, with commas"
        bob.expect("chat,alice,", "ok")  # empty text
        assert alice.line() == "from,bob,"
        alice.send("chat,alice,to me")  # to oneself: the message, and the reply
        assert alice.lines(2) == ["from,alice,to me", "ok"]
        alice.expect("chat,nobody,hi", "error,no such user")
        alice.expect("chat,Bob,hi", "error,no such user")  # names are case-sensitive
        alice.expect("chat,bob,caf\u00e9 \u2615", "ok")
        assert bob.line() == "from,alice,caf\u00e9 \u2615"
        alice.quiet()
        bob.quiet()


def check_line_endings_and_encoding():
    with Server() as server:
        c = server.connect()
        c.send(b"register,erin\r")  # "\r\n"
        assert c.line() == "ok"
        c.expect(b"chat,erin,\xff\xfe", "error,bad encoding")
        c.expect(b"register,\xc0\xaf", "error,bad encoding")  # overlong "/"
        c.expect(b"chat,erin,\xed\xa0\x80", "error,bad encoding")  # a surrogate
        c.expect("list,friends", "erin")


def check_long_line():
    with Server() as server:
        c = server.connect("frank")
        c.send(b"chat,frank," + b"x" * (3 * LINE_LIMIT))
        assert c.line() == "error,line too long"
        c.expect("list,friends", "frank")  # the rest of the long line was skipped
        # In pieces, slower than the server reads: still one reply.
        c.sock.sendall(b"chat,frank," + b"y" * (LINE_LIMIT // 2))
        time.sleep(0.05)
        c.sock.sendall(b"y" * LINE_LIMIT)
        time.sleep(0.05)
        c.sock.sendall(b"y" * LINE_LIMIT + b"\nlist,friends\n")
        assert c.line() == "error,line too long"
        assert c.line() == "frank"
        # Just under the limit: delivered.
        grace = server.connect("grace")
        text = "z" * (LINE_LIMIT - 100)
        c.expect(f"chat,grace,{text}", "ok")
        got = grace.line()
        assert got == f"from,frank,{text}", short(got)
        c.quiet()


def check_names_freed_on_disconnect():
    with Server() as server:
        watcher = server.connect("watcher")
        for i in range(3):
            alice = server.connect("alice")
            alice.close()
            wait_until(lambda: watcher.cmd("list,friends") == "watcher", "alice freed")
        watcher.expect("chat,alice,hi", "error,no such user")
        # Reset rather than closed (SO_LINGER 0): freed as well.
        alice = server.connect("alice")
        alice.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        alice.close()
        wait_until(lambda: watcher.cmd("list,friends") == "watcher", "reset alice freed")
        server.connect("alice")


def check_fan_in(*options):
    """50 clients send 20 messages each to one recipient: each arrives exactly once, in order
    per sender."""
    senders_count, per_sender = 50, 20
    with Server(*options) as server:
        hub = server.connect("hub")
        senders = [server.connect(f"s{i:02}") for i in range(senders_count)]
        for i, s in enumerate(senders):  # all of them at once, pipelined
            s.sock.sendall(b"".join(f"chat,hub,{i}:{k}, a message\n".encode()
                                    for k in range(per_sender)))
        for s in senders:
            for _ in range(per_sender):
                assert s.line() == "ok"
        got = {}
        for _ in range(senders_count * per_sender):
            line = hub.line()
            match = re.fullmatch(r"from,s(\d\d),(\d+):(\d+), a message", line)
            assert match, line
            assert int(match.group(1)) == int(match.group(2)), line
            got.setdefault(int(match.group(2)), []).append(int(match.group(3)))
        hub.quiet(0.3)
        for i in range(senders_count):
            assert got.get(i) == list(range(per_sender)), f"sender {i}: {got.get(i)}"
        hub.expect("list,friends", ",".join(["hub"] + [f"s{i:02}" for i in range(senders_count)]))


def check_fan_in_threads():
    """The same over 4 loops: most messages cross from one loop to another."""
    check_fan_in("--threads", "4")


def check_disconnect_mid_line():
    with Server() as server:
        hub = server.connect("hub")
        for linger in (False, True):
            quitter = server.connect("quitter")
            if linger:  # a reset instead of a FIN
                quitter.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
            quitter.sock.sendall(b"chat,hub,never finished")
            time.sleep(0.05)
            quitter.close()
            wait_until(lambda: hub.cmd("list,friends") == "hub", "quitter freed")
        hub.quiet(0.3)  # the unterminated line was not delivered
        other = server.connect("other")
        other.expect("chat,hub,still here", "ok")
        assert hub.line() == "from,other,still here"
        assert server.alive()


def check_slow_recipient():
    """A recipient that never reads does not hold up its senders; past its backlog it is
    disconnected and its name freed."""
    with Server() as server:
        slow = Client.__new__(Client)
        slow.buffer = b""
        slow.sock = socket.socket()
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sock.settimeout(IO_TIMEOUT)
        slow.sock.connect((server.host, server.port))
        slow.expect("register,slow", "ok")
        sender = server.connect("sender")
        text = "m" * 60000
        start = time.monotonic()
        for n in range(1, 500):  # at most 30 MB
            reply = sender.cmd(f"chat,slow,{text}")
            if reply == "error,no such user":
                break
            assert reply == "ok", reply
        else:
            raise AssertionError("the recipient that does not read was never dropped")
        assert time.monotonic() - start < 10, "the sender was held up"
        sender.expect("list,friends", "sender")
        server.connect("slow")  # the name is free


def check_threads():
    """--threads 3: clients on different loops share one registry."""
    count = 12
    with Server("--threads", "3") as server:
        clients = [server.connect(f"t{i:02}") for i in range(count)]
        names = ",".join(f"t{i:02}" for i in range(count))
        for c in clients:
            c.expect("list,friends", names)
        other = server.connect()
        other.expect("register,t05", "error,name taken")
        for i, c in enumerate(clients):  # a ring
            c.send(f"chat,t{(i + 1) % count:02},hi from {i}")
        for i, c in enumerate(clients):
            want = sorted(["ok", f"from,t{(i - 1) % count:02},hi from {(i - 1) % count}"])
            assert c.lines(2) == want
        clients[3].close()
        wait_until(lambda: other.cmd("register,t03") == "ok", "t03 freed")
        status, _, _, err = server.stop(signal.SIGTERM)
        assert status == 0, f"exit status {status}, stderr {err!r}"


def check_each_backend():
    for name in ("epoll", "poll", "select"):
        with Server("--loop", name) as server:
            a = server.connect("a")
            b = server.connect("b")
            a.expect("chat,b,x", "ok")
            assert b.line() == "from,a,x"
            status, _, _, err = server.stop(signal.SIGINT)
            assert status == 0, f"--loop {name}: exit status {status}, stderr {err!r}"


def check_sigint_and_sigterm():
    for sig in (signal.SIGINT, signal.SIGTERM):
        with Server() as server:
            idle = server.connect("idle")
            partial = server.connect("partial")
            partial.sock.sendall(b"chat,idle,half a li")
            never = server.connect()  # connected, never registered
            status, seconds, out, err = server.stop(sig)
            assert status == 0, f"{sig.name}: exit status {status}, stderr {err!r}"
            assert out == "", f"{sig.name}: printed after the ready line: {out!r}"
            assert seconds < 2.0, f"{sig.name}: took {seconds:.1f} s with idle clients"
            for c in (idle, partial, never):
                assert c.eof(), "still open"
                c.close()
            try:
                socket.create_connection((server.host, server.port), timeout=2).close()
                raise AssertionError("still accepting after exit")
            except OSError:
                pass


# ---- chat_client ------------------------------------------------------------------------------

def finish(proc, close_stdin=True):
    """Closes @proc's stdin (unless told not to), waits for it to exit; returns (stdout rest,
    stderr)."""
    if close_stdin and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(timeout=IO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"chat_client did not exit within {IO_TIMEOUT} s")
    out, err = proc.stdout.read(), proc.stderr.read()
    if not proc.stdin.closed:
        proc.stdin.close()
    return out, err


def check_client_scripted():
    with Server() as server:
        port = str(server.port)
        result = run([args.client, "--port", port], stdin_text="register,alice\nlist,friends\n")
        assert result.returncode == 0, result
        assert result.stdout == "ok\nalice\n", result.stdout
        # HOST:PORT; no final newline; replies to each line, in order.
        bob = server.connect("bob")
        result = run([args.client, f"127.0.0.1:{port}"],
                     stdin_text="register,carol\nchat,bob,hi, bob\nchat,nobody,x\nlist,friends")
        assert result.returncode == 0, result
        assert result.stdout == "ok\nok\nerror,no such user\nbob,carol\n", result.stdout
        assert bob.line() == "from,carol,hi, bob"
        # No input at all: nothing sent, nothing printed.
        result = run([args.client, "--port", port], stdin_text="")
        assert result.returncode == 0 and result.stdout == "", result


def check_client_interactive():
    """chat_client prints what arrives while its stdin is open; EOF ends it."""
    with Server() as server:
        proc = subprocess.Popen([args.client, "--port", str(server.port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        processes.append(proc)
        proc.stdin.write("register,dave\n")
        proc.stdin.flush()
        assert read_line(proc.stdout, IO_TIMEOUT) == "ok\n"
        erin = server.connect("erin")
        erin.expect("chat,dave,are you there?", "ok")
        assert read_line(proc.stdout, IO_TIMEOUT) == "from,erin,are you there?\n"
        proc.stdin.write("chat,erin,yes\n")
        out, err = finish(proc)
        assert proc.returncode == 0, (proc.returncode, err)
        assert out == "ok\n", out
        assert erin.line() == "from,dave,yes"
        wait_until(lambda: erin.cmd("list,friends") == "erin", "dave freed after EOF")

        # The server closes first (SIGINT): chat_client says so and exits 1.
        proc = subprocess.Popen([args.client, "--port", str(server.port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        processes.append(proc)
        proc.stdin.write("register,fred\n")
        proc.stdin.flush()
        assert read_line(proc.stdout, IO_TIMEOUT) == "ok\n"
        status, _, _, _ = server.stop(signal.SIGINT)
        assert status == 0
        out, err = finish(proc, close_stdin=False)
        assert proc.returncode == 1, (proc.returncode, err)
        assert "closed" in err and len(err.splitlines()) == 1, err


def check_client_wait():
    """--wait keeps the session open after stdin's end, printing what arrives."""
    with Server() as server:
        proc = subprocess.Popen([args.client, "--port", str(server.port), "--wait", "2"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        processes.append(proc)
        proc.stdin.write("register,gina\n")
        proc.stdin.close()
        assert read_line(proc.stdout, IO_TIMEOUT) == "ok\n"
        server.connect("hank").expect("chat,gina,late news", "ok")
        out, err = finish(proc)
        assert proc.returncode == 0, (proc.returncode, err)
        assert out == "from,hank,late news\n", out


def check_client_errors():
    result = run([args.client])  # no server named
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result
    result = run([args.client, "localhost"])  # no port
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result
    result = run([args.client, "--port", "1", "--bogus", "x"])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        result = run([args.client, "--port", str(holder.getsockname()[1])], stdin_text="x\n")
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result
    finally:
        holder.close()


CHECKS = [
    check_help,
    check_startup_failures,
    check_register,
    check_not_registered,
    check_unknown_commands,
    check_list_sorted,
    check_chat,
    check_line_endings_and_encoding,
    check_long_line,
    check_names_freed_on_disconnect,
    check_fan_in,
    check_fan_in_threads,
    check_disconnect_mid_line,
    check_slow_recipient,
    check_threads,
    check_each_backend,
    check_sigint_and_sigterm,
    check_client_scripted,
    check_client_interactive,
    check_client_wait,
    check_client_errors,
]


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = parser.parse_args()
    return run_checks(CHECKS, args.checks, processes)


if __name__ == "__main__":
    sys.exit(main())
