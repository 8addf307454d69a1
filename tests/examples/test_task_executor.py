#!/usr/bin/env python3
"""task_coordinator, task_worker and task_submit as programs: the distributed task executor of
examples/task_executor (README.md), checked as separate processes on 127.0.0.1, with raw
sockets for the wire protocol (the standard library only).

Every wait is bounded and waits for an event (a line of output, an exit, a connection), every
port is ephemeral (from the coordinator's ready line), and every process is killed at the end.
The coordinators run with --verbose: the tests follow the dispatches, retries and workers in
their stderr. Exits 0 when every check passes, 1 otherwise, naming each failed check.

    test_task_executor.py --coordinator build/examples/task_executor/task_coordinator \\
        --worker build/examples/task_executor/task_worker \\
        --submit build/examples/task_executor/task_submit
    test_task_executor.py ... check_worker_killed     the checks named only
"""

import argparse
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from example_support import run_checks, short

READY = re.compile(r"^listening on (.+):(\d+)$")
START_TIMEOUT = 10.0  # for a ready line
WAIT = 10.0  # for an event in a process's output
RUN_TIMEOUT = 30.0  # for a task_submit run

args = None
processes = []  # every process started, killed at the end


# ---- Processes --------------------------------------------------------------------------------

class Proc:
    """A process whose stdout and stderr lines are collected as they come, by two threads."""

    def __init__(self, argv, stdin=False):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
        processes.append(self.proc)
        self.out = []
        self.err = []
        self.ended = 0  # streams at their end
        self.cond = threading.Condition()
        self.pumps = [threading.Thread(target=self._pump, args=(s, l), daemon=True)
                      for s, l in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for pump in self.pumps:
            pump.start()

    def _pump(self, stream, lines):
        for line in stream:
            with self.cond:
                lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.ended += 1
            self.cond.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def wait_for(self, lines, pattern, count=1, timeout=WAIT, start=0):
        """Waits until @count lines of @lines (from index @start) match @pattern; returns the
        matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                matches = [m for m in map(regex.search, lines[start:]) if m]
                if len(matches) >= count:
                    return matches
                left = deadline - time.monotonic()
                if left <= 0 or self.ended == 2:  # or it exited: nothing more will come
                    tail = "\n  ".join(lines[-15:])
                    raise AssertionError(
                        f"{os.path.basename(self.argv[0])}: not {count} line(s) matching "
                        f"{pattern!r} within {timeout} s ({len(matches)} did; "
                        f"{'exited' if self.ended == 2 else 'running'}); last lines:\n  {tail}")
                self.cond.wait(left)

    def log(self, pattern, count=1, timeout=WAIT, start=0):
        return self.wait_for(self.err, pattern, count, timeout, start)

    def lines(self, pattern, count=1, timeout=WAIT):
        return self.wait_for(self.out, pattern, count, timeout)

    def mark(self):
        """The number of stderr lines so far: a start for log()."""
        with self.cond:
            return len(self.err)

    def write(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close_stdin(self):
        self.proc.stdin.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def exit_status(self, timeout=WAIT):
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            name = os.path.basename(self.argv[0])
            raise AssertionError(f"{name}: still running after {timeout} s")
        for pump in self.pumps:
            pump.join(timeout=5)
        return status

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class Coordinator(Proc):
    """A task_coordinator (with --verbose) that has printed its ready line."""

    def __init__(self, *options, port=0):
        super().__init__([args.coordinator, "--port", str(port), "--verbose", *options])
        line = self.lines(r"^listening on ", timeout=START_TIMEOUT)[0].string
        match = READY.match(line)
        assert match, f"bad ready line {line!r}"
        self.port = int(match.group(2))
        self.address = f"127.0.0.1:{self.port}"

    def worker(self, name, slots=2, *options):
        """Starts a task_worker named @name and waits until it joined."""
        mark = self.mark()
        worker = Worker(self.address, name, slots, *options)
        self.log(rf"worker {re.escape(name)} joined", start=mark)
        return worker

    def dispatches(self, count, start=0, timeout=WAIT):
        """The first @count dispatches logged after @start: [(job id, worker)] in order."""
        matches = self.log(r"job \d+ \(submitted as (\S+)\) attempt \d+ -> (\S+)$", count,
                           timeout, start)
        return [(m.group(1), m.group(2)) for m in matches[:count]]

    def stop(self, sig=signal.SIGTERM, timeout=WAIT):
        self.signal(sig)
        return self.exit_status(timeout)


class Worker(Proc):
    def __init__(self, address, name, slots=2, *options):
        super().__init__([args.worker, "--connect", address, "--slots", str(slots), "--name",
                          name, "--backoff", "50ms", "--max-backoff", "200ms", *options])
        self.name = name


def submit(address, jobs, *options, stdin=None, timeout=RUN_TIMEOUT):
    """Runs task_submit --details on @jobs (arguments, or @stdin's text); returns (exit status,
    {id: (status, attempts, worker, output)}, stdout lines, stderr)."""
    argv = [args.submit, "--connect", address, "--details", *options]
    if stdin is None:
        argv += ["--", *jobs]
    result = subprocess.run(argv, input=stdin if stdin is not None else "",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=timeout)
    lines = result.stdout.splitlines()
    return result.returncode, parse_results(lines), lines, result.stderr


def parse_results(lines):
    """{id: (status, attempts, worker, output)} from `ID STATUS ATTEMPTS WORKER OUTPUT` lines;
    fails on a line that does not parse or an id reported twice."""
    results = {}
    for line in lines:
        parts = line.split(" ", 4)
        assert len(parts) >= 4, f"bad result line {line!r}"
        job_id, status, attempts, worker = parts[:4]
        assert job_id not in results, f"job {job_id} reported twice: {line!r}"
        results[job_id] = (status, int(attempts), worker, parts[4] if len(parts) == 5 else "")
    return results


def run(argv, timeout=15, stdin_text=""):
    return subprocess.run(argv, input=stdin_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def wait_until(predicate, what, timeout=WAIT):
    """Polls @predicate (a condition no process reports) until it holds, or fails."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def expected(job):
    """What a job's result line says when it succeeds: (status, output)."""
    kind, _, arg = job.partition(" ")
    if kind == "sleep":
        return "ok", f"slept {arg}ms"
    if kind == "fib":
        return "ok", str(fib(int(arg)))
    if kind == "sha256":
        return "ok", hashlib.sha256(arg.encode()).hexdigest()
    raise ValueError(job)


# ---- Raw connections --------------------------------------------------------------------------

class Raw:
    """A raw TCP connection to the coordinator, read line by line."""

    def __init__(self, port=None, timeout=WAIT, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self):
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {self.timeout} s (have {short(self.buffer, 200)})"
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            assert chunk, f"EOF (have {short(self.buffer, 200)})"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")

    def expect_error_and_close(self, what):
        line = self.line()
        assert line.startswith("ERROR "), f"{what}: want an ERROR frame, got {line!r}"
        self.sock.settimeout(self.timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buffer += data
                assert len(self.buffer) < 1 << 20, f"{what}: no close after ERROR"
        except ConnectionResetError:
            pass
        return line

    def close(self):
        self.sock.close()


# ---- The contract -----------------------------------------------------------------------------

def check_help():
    for program, words in ((args.coordinator, ["--port", "--host", "--loop", "--job-timeout",
                                               "--retries", "--heartbeat-interval", "--grace"]),
                           (args.worker, ["--connect", "--slots", "--backoff", "fib", "run"]),
                           (args.submit, ["--connect", "--details", "ID STATUS"])):
        result = run([program, "--help"])
        assert result.returncode == 0, result
        for word in words:
            assert word in result.stdout, f"{program} --help lacks {word}"


def expect_failure(argv, status=2, contains=None):
    result = run(argv)
    assert result.returncode == status, f"{argv[1:]}: status {result.returncode}, want {status}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{argv[1:]}: want one stderr line, got {result.stderr!r}"
    assert result.stdout == "", f"{argv[1:]}: printed {result.stdout!r}"
    if contains:
        assert contains in lines[0], f"{argv[1:]}: {lines[0]!r} lacks {contains!r}"


def check_bad_options():
    c = args.coordinator
    expect_failure([c, "--bogus"])
    expect_failure([c, "--port", "70000"], contains="--port")
    expect_failure([c, "--threads", "2"], contains="--threads")
    expect_failure([c, "--loop", "kqueue"], contains="selector")
    expect_failure([c, "--job-timeout", "soon"], contains="--job-timeout")
    expect_failure([c, "--heartbeat-interval", "0ms"], contains="--heartbeat-interval")
    expect_failure([c, "--retries", "-1"], contains="--retries")
    expect_failure([c, "--max-frame", "10"], contains="--max-frame")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        expect_failure([c, "--port", str(holder.getsockname()[1])], status=1)
    finally:
        holder.close()
    w = args.worker
    expect_failure([w, "--slots", "2"], contains="--connect")
    expect_failure([w, "--connect", "localhost"], contains="--connect")
    expect_failure([w, "--connect", "127.0.0.1:0"], contains="--connect")
    expect_failure([w, "--connect", "127.0.0.1:1", "--slots", "0"], contains="--slots")
    expect_failure([w, "--connect", "127.0.0.1:1", "--name", "a b"], contains="--name")
    expect_failure([w, "--connect", "127.0.0.1:1", "--backoff", "1s", "--max-backoff", "10ms"])
    s = args.submit
    expect_failure([s, "sleep 1"], contains="--connect")
    expect_failure([s, "--connect", "127.0.0.1:99999", "sleep 1"], contains="--connect")
    expect_failure([s, "--connect", "127.0.0.1:1", ""], contains="empty")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        expect_failure([s, "--connect", f"127.0.0.1:{holder.getsockname()[1]}", "sleep 1"],
                       status=1)
    finally:
        holder.close()


# ---- The scenarios --------------------------------------------------------------------

def check_hundred_jobs():
    """Coordinator, 3 workers and a submitter: 100 jobs of every kind, all correct, each once,
    spread over the 3 workers."""
    rng = random.Random(13)
    c = Coordinator()
    workers = [c.worker(f"w{i}", 4) for i in range(1, 4)]
    jobs = []
    for i in range(100):
        kind = i % 4
        if kind == 0:
            jobs.append(f"sleep {rng.randrange(0, 60)}")
        elif kind == 1:
            jobs.append(f"fib {rng.randrange(0, 28)}")
        elif kind == 2:
            text = "".join(rng.choice("abc xyz\\é!") for _ in range(rng.randrange(0, 40)))
            jobs.append(f"sha256 {text}")
        else:
            jobs.append(f"run printf '%s\\n' word{i + 1}; echo line2")
    status, results, lines, err = submit(c.address, jobs, "--summary",
                                         stdin="".join(j + "\n" for j in jobs))
    assert status == 0, f"task_submit exited {status}: {err}"
    assert len(lines) == 100 and len(results) == 100, f"{len(lines)} lines, {len(results)} ids"
    used = set()
    for i, job in enumerate(jobs, 1):
        got = results.get(str(i))
        assert got, f"job {i} ({job!r}) not reported"
        state, attempts, worker, output = got
        if job.startswith("run"):
            want = ("ok", f"exit 0: word{i}\\nline2")
        else:
            want = expected(job)
        assert (state, output) == want, f"job {i} {job!r}: got {(state, output)}, want {want}"
        assert attempts == 1, f"job {i}: {attempts} attempts"
        used.add(worker)
    assert used == {"w1", "w2", "w3"}, f"workers used: {sorted(used)}"
    assert "100 job(s), 100 ok" in err, f"summary: {err!r}"
    for w in workers:
        assert w.alive(), f"{w.name} died"


def check_slots_bound_concurrency():
    """A worker runs up to --slots jobs at once, and no more: 6 jobs of 500 ms on 3 slots take
    two rounds (at least 1 s), not six (3 s), nor one."""
    c = Coordinator()
    c.worker("solo", 3)
    start = time.monotonic()
    status, results, _, err = submit(c.address, ["sleep 500"] * 6)
    elapsed = time.monotonic() - start
    assert status == 0 and len(results) == 6, (status, results, err)
    assert elapsed >= 0.95, f"6 x 500 ms on 3 slots took {elapsed:.2f} s: over 3 at once"
    assert elapsed < 2.6, f"6 x 500 ms on 3 slots took {elapsed:.2f} s: not concurrent"


def check_cpu_work_off_the_loop():
    """fib runs on the worker's executor: its loop keeps sending heartbeats meanwhile, so a fib
    much longer than the coordinator's dead-worker window (4 x 50 ms) does not get it dropped
    (fib 43 takes about a second)."""
    c = Coordinator("--heartbeat-interval", "50ms", "--heartbeat-misses", "4")
    c.worker("cpu", 1)
    mark = c.mark()
    start = time.monotonic()
    status, results, _, err = submit(c.address, ["fib 43"])
    elapsed = time.monotonic() - start
    assert status == 0, (status, results, err)
    assert results["1"][0] == "ok" and results["1"][3] == str(fib(43)), results
    assert elapsed > 0.4, f"fib 43 took {elapsed:.2f} s: too short to prove anything"
    assert results["1"][1] == 1, f"retried: {results}"
    assert not any("missed" in line or "left" in line for line in c.err[mark:]), c.err[mark:]


def check_worker_killed():
    """A worker killed (SIGKILL) mid-job: its jobs are re-run on the others, and every job is
    reported once."""
    c = Coordinator()
    workers = {name: c.worker(name, 2) for name in ("w1", "w2", "w3")}
    mark = c.mark()
    jobs = ["sleep 1200"] * 6
    sub = Proc([args.submit, "--connect", c.address, "--details", "--", *jobs])
    dispatched = c.dispatches(6, start=mark)
    victims = {job for job, worker in dispatched if worker == "w1"}
    assert len(victims) == 2, f"w1 got {victims} of {dispatched}"
    workers["w1"].signal(signal.SIGKILL)
    c.log(r"worker w1 left", start=mark)
    status = sub.exit_status(timeout=RUN_TIMEOUT)
    results = parse_results(sub.out)
    assert status == 0, f"task_submit exited {status}: {sub.err}"
    assert sorted(results) == [str(i) for i in range(1, 7)], results
    for job_id, (state, attempts, worker, output) in results.items():
        assert state == "ok" and output == "slept 1200ms", (job_id, results[job_id])
        if job_id in victims:
            assert attempts == 2 and worker in ("w2", "w3"), f"job {job_id}: {results[job_id]}"
        else:
            assert attempts == 1, f"job {job_id}: {results[job_id]}"


def check_missed_heartbeats_and_reconnect():
    """A worker that stops (SIGSTOP) misses its heartbeats: it is dropped and its jobs re-run
    elsewhere; resumed (SIGCONT), it connects again and gets jobs again."""
    c = Coordinator("--heartbeat-interval", "100ms", "--heartbeat-misses", "3")
    stuck = c.worker("stuck", 2)
    c.worker("steady", 2)
    mark = c.mark()
    sub = Proc([args.submit, "--connect", c.address, "--details", "--", *["sleep 700"] * 4])
    dispatched = c.dispatches(4, start=mark)
    victims = {job for job, worker in dispatched if worker == "stuck"}
    assert len(victims) == 2, dispatched
    stuck.signal(signal.SIGSTOP)
    try:
        c.log(r"worker stuck missed 3 heartbeats", start=mark)
        assert sub.exit_status(timeout=RUN_TIMEOUT) == 0, sub.err
    finally:
        stuck.signal(signal.SIGCONT)
    results = parse_results(sub.out)
    assert len(results) == 4, results
    for job_id, (state, attempts, worker, _) in results.items():
        assert state == "ok", results
        if job_id in victims:
            assert attempts == 2 and worker == "steady", f"job {job_id}: {results[job_id]}"
    # Resumed, it finds its connection gone, connects again, and is used again: 4 jobs on 2
    # idle workers of 2 slots need both.
    c.log(r"worker stuck joined", count=2)
    status, results, _, err = submit(c.address, ["sleep 300"] * 4)
    assert status == 0, err
    assert {r[2] for r in results.values()} == {"stuck", "steady"}, results


def check_coordinator_restart():
    """The coordinator goes away: the worker connects again, with back-off, to the coordinator
    restarted on the same port, which uses it."""
    first = Coordinator()
    port = first.port
    worker = first.worker("phoenix", 2)
    first.kill()
    worker.log(r"connecting again in \d+ms")
    second = None
    for _ in range(20):  # the port is free again at once (SO_REUSEADDR); retry if not yet
        try:
            second = Coordinator(port=port)
            break
        except AssertionError:
            time.sleep(0.1)
    assert second is not None, f"cannot listen on port {port} again"
    second.log(r"worker phoenix joined")
    status, results, _, err = submit(second.address, ["sha256 again"])
    assert status == 0 and results["1"][2] == "phoenix", (status, results, err)


def check_timeout_retry_then_fail():
    """A job past --job-timeout is cancelled on its worker and retried, --retries times, then
    reported `timeout` (once); the cancelled attempts free their slots, and a cancelled `run`
    kills its command."""
    c = Coordinator("--job-timeout", "300ms", "--retries", "2")
    c.worker("w", 2)
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "ran-to-the-end")
        mark = c.mark()
        status, results, _, err = submit(c.address, ["sleep 5000", "sleep 10",
                                                     f"run sleep 1 && touch {marker}"])
        assert status == 1, f"task_submit exited {status}, want 1 (a job failed): {err}"
        assert results["1"][:3] == ("timeout", 3, "w"), results
        assert "timed out after 300ms" in results["1"][3], results
        assert results["2"][:2] == ("ok", 1), results
        assert results["3"][:2] == ("timeout", 3), results
        retries = c.log(r"job \d+ attempt \d: timed out after 300ms on w; retrying", count=4,
                        start=mark)
        assert len(retries) == 4, retries
        # The slots were given back: two more jobs run at once on the 2 slots.
        status, results, _, err = submit(c.address, ["sleep 10", "sha256 x"])
        assert status == 0 and len(results) == 2, (status, results, err)
        # The command of the cancelled `run` was killed with its shell: it never gets to the
        # touch (it would have at 1 s after its last attempt started).
        time.sleep(1.2)
        assert not os.path.exists(marker), "a timed-out `run` job kept running"


def check_sigterm_drains():
    """SIGTERM: the coordinator stops accepting connections and jobs (a SUBMIT gets
    `rejected`), lets the running jobs finish and report, then closes and exits 0."""
    c = Coordinator()
    c.worker("d1", 2)
    c.worker("d2", 2)
    mark = c.mark()
    sub = Proc([args.submit, "--connect", c.address, "--details"], stdin=True)
    sub.write("sleep 900\nsleep 900\nsleep 900\n")
    c.dispatches(3, start=mark)
    start = time.monotonic()
    c.signal(signal.SIGTERM)
    c.log(r"shutting down: 3 job\(s\) to finish", start=mark)
    try:
        socket.create_connection(("127.0.0.1", c.port), timeout=2).close()
        raise AssertionError("a connection was accepted after SIGTERM")
    except ConnectionRefusedError:
        pass
    sub.write("sha256 too late\n")  # job 4, after the SIGTERM
    sub.close_stdin()
    assert c.exit_status(timeout=5 + WAIT) == 0, f"coordinator: {c.err[-5:]}"
    elapsed = time.monotonic() - start
    status = sub.exit_status()
    results = parse_results(sub.out)
    assert [results.get(str(i), ("none",))[0] for i in range(1, 5)] == \
        ["ok", "ok", "ok", "rejected"], results
    assert status == 1, f"task_submit: {status}, want 1 (a job was rejected)"
    assert elapsed < 5, f"took {elapsed:.1f} s"

    # Jobs still running at the end of --grace are reported cancelled; it still exits 0.
    c = Coordinator("--grace", "300ms")
    c.worker("slow", 1)
    mark = c.mark()
    sub = Proc([args.submit, "--connect", c.address, "--details", "--", "sleep 10000"])
    c.dispatches(1, start=mark)
    start = time.monotonic()
    assert c.stop(signal.SIGTERM) == 0
    assert time.monotonic() - start < 3, "the grace period was not applied"
    assert sub.exit_status() == 1
    assert parse_results(sub.out)["1"][0] == "cancelled", sub.out


def check_worker_quits_gracefully():
    """SIGTERM to a worker: it takes no new job, finishes its running one, reports it and
    exits 0 once the coordinator has closed; the job is not run twice."""
    c = Coordinator()
    quitter = c.worker("quitter", 1)
    with tempfile.TemporaryDirectory() as tmp:
        started = os.path.join(tmp, "started")
        mark = c.mark()
        sub = Proc([args.submit, "--connect", c.address, "--details", "--",
                    f"run touch {started}; sleep 0.6; echo done", "sleep 10"])
        assert c.dispatches(1, start=mark)[0][1] == "quitter"
        wait_until(lambda: os.path.exists(started), "the job to start on the worker")
        quitter.signal(signal.SIGTERM)
        c.log(r"worker quitter is quitting", start=mark)
        assert quitter.exit_status() == 0
        c.log(r"worker quitter left", start=mark)
        c.worker("heir", 1)
        assert sub.exit_status(timeout=RUN_TIMEOUT) == 0, sub.err
    results = parse_results(sub.out)
    assert results["1"] == ("ok", 1, "quitter", "exit 0: done"), results
    assert results["2"][:3] == ("ok", 1, "heir"), results


# ---- Malformed frames and flow control --------------------------------------------------------

def check_malformed_frames_coordinator():
    """Each malformed frame gets an ERROR frame and a close; the coordinator serves on."""
    c = Coordinator("--max-frame", "4096")
    cases = [
        ("a stranger's frame", "GET / HTTP/1.1\r\n"),
        ("a bad HELLO", "HELLO bogus\n"),
        ("a worker with 0 slots", "HELLO worker 0 w\n"),
        ("a worker with a bad name", "HELLO worker 2 a/b\n"),
        ("binary", b"\x00\xff\xfe\n"),
        ("a frame over --max-frame", "HELLO " + "x" * 5000),
        ("a long frame with its newline", "HELLO " + "x" * 5000 + "\n"),
    ]
    for what, data in cases:
        raw = Raw(c.port)
        raw.send(data)
        raw.expect_error_and_close(what)
        raw.close()
    submitter_cases = [
        ("SUBMIT without an id", "SUBMIT\n"),
        ("a bad job id", "SUBMIT a/b sleep 1\n"),
        ("a bad escape", "SUBMIT 1 sha256 a\\q\n"),
        ("a worker's frame", "RESULT 1 1 ok x\n"),
        ("a duplicate id", "SUBMIT 1 sleep 2000\nSUBMIT 1 sleep 2000\n"),
    ]
    for what, data in submitter_cases:
        raw = Raw(c.port)
        raw.send("HELLO submitter\n")
        assert raw.line() == "WELCOME submitter"
        raw.send(data)
        raw.expect_error_and_close(what)
        raw.close()
    worker_cases = [
        ("a RESULT for a job it does not run", "RESULT 99 1 ok x\n"),
        ("a bad status", "RESULT 99 1 fine x\n"),
        ("a submitter's frame", "SUBMIT 1 sleep 1\n"),
    ]
    for what, data in worker_cases:
        raw = Raw(c.port)
        raw.send("HELLO worker 2 raw\n")
        assert raw.line().startswith("WELCOME worker "), what
        raw.send(data)
        raw.expect_error_and_close(what)
        raw.close()
    # A bad job is a result, not a protocol error.
    raw = Raw(c.port)
    raw.send("HELLO submitter\nSUBMIT j1 fib 200\n")
    assert raw.line() == "WELCOME submitter"
    line = raw.line()
    assert line.startswith("RESULT j1 failed 0 - bad job: fib needs"), line
    raw.close()
    assert c.alive()
    c.worker("after", 1)
    status, results, _, err = submit(c.address, ["sha256 still here"])
    assert status == 0, err


class FakeCoordinator:
    """A listening socket standing in for the coordinator, to feed a worker or a submitter
    malformed frames."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(WAIT)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def accept(self):
        conn, _ = self.sock.accept()
        return Raw(sock=conn)

    def close(self):
        self.sock.close()


def check_malformed_frames_worker_and_submitter():
    """The worker answers a malformed frame with ERROR, closes, and connects again; the
    submitter reports a malformed frame in one line and exits 1. Neither crashes."""
    fake = FakeCoordinator()
    try:
        worker = Worker(fake.address, "probe", 1)
        for what, frame in (("a bad JOB", "JOB x\n"), ("an unknown verb", "HELLO?\n"),
                            ("a frame over --max-frame", "HEARTBEAT" + "x" * 300000 + "\n")):
            raw = fake.accept()
            assert raw.line() == "HELLO worker 1 probe"
            raw.send("WELCOME worker 1000 3\n")
            raw.send(frame)
            raw.expect_error_and_close(what)
            raw.close()
        # More jobs than slots is a protocol error too; a bad job spec is a failed result.
        raw = fake.accept()
        assert raw.line() == "HELLO worker 1 probe"
        raw.send("WELCOME worker 1000 3\nJOB 1 1 fib x\n")
        line = raw.line()
        assert line.startswith("RESULT 1 1 failed bad job: fib needs"), line
        raw.send("JOB 2 1 sleep 5000\nJOB 3 1 sleep 5000\n")
        raw.expect_error_and_close("more jobs than slots")
        raw.close()
        assert worker.alive(), "the worker died"
        raw = fake.accept()  # and it still comes back
        assert raw.line() == "HELLO worker 1 probe"
        raw.close()
        worker.kill()

        for frame in ("RESULT\n", "RESULT 1 ok 1 w \\q\n", "ERROR go away\n", "WELCOME x\n"):
            sub = Proc([args.submit, "--connect", fake.address, "sleep 1"])
            raw = fake.accept()
            assert raw.line() == "HELLO submitter"
            if not frame.startswith("WELCOME"):
                raw.send("WELCOME submitter\n")
            raw.send(frame)
            assert sub.exit_status() == 1, frame
            assert len(sub.err) == 1, f"{frame!r}: {sub.err}"
            raw.close()
    finally:
        fake.close()


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def check_flow_control():
    """A submitter that sends faster than jobs are run is no longer read from once it has
    --max-pending jobs unreported: its sends block, and the coordinator's memory stays bounded.
    With a worker, a queue through that window completes."""
    c = Coordinator("--max-pending", "5")
    rss_before = vm_rss_kib(c.pid)
    raw = Raw(c.port)
    raw.send("HELLO submitter\n")
    assert raw.line() == "WELCOME submitter"
    frame = ("SUBMIT {} sha256 " + "z" * 30000 + "\n")
    total = 2000  # 60 MB
    sent = [0]

    def flood():
        try:
            raw.sock.settimeout(3)
            for i in range(total):
                raw.sock.sendall(frame.format(i).encode())
                sent[0] += 1
        except (socket.timeout, OSError):
            pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    flooder.join(timeout=15)
    assert sent[0] < total, "the coordinator read everything: no back-pressure"
    rss = vm_rss_kib(c.pid)
    assert rss - rss_before < 32 * 1024, f"the coordinator grew by {rss - rss_before} KiB"
    # It still serves others meanwhile.
    other = Raw(c.port)
    other.send("HELLO submitter\n")
    assert other.line() == "WELCOME submitter"
    other.close()
    raw.close()
    # A submitter that does read: 60 jobs through a window of 5, on one slot.
    c.worker("one", 1)
    jobs = [f"sha256 {i}" for i in range(60)]
    status, results, _, err = submit(c.address, jobs, stdin="".join(j + "\n" for j in jobs))
    assert status == 0 and len(results) == 60, (status, len(results), err)
    for i, job in enumerate(jobs, 1):
        assert (results[str(i)][0], results[str(i)][3]) == expected(job), results[str(i)]


def check_each_backend():
    """The three programs on the poll and select loops."""
    for loop in ("poll", "select"):
        c = Coordinator("--loop", loop)
        mark = c.mark()
        Worker(c.address, f"w-{loop}", 2, "--loop", loop)
        c.log(rf"worker w-{loop} joined", start=mark)
        status, results, _, err = submit(c.address, ["fib 20", "sha256 abc", "run echo hi"],
                                         "--loop", loop)
        assert status == 0, f"--loop {loop}: {err}"
        assert results["1"][3] == "6765" and results["3"][3] == "exit 0: hi", results
        assert c.stop() == 0


CHECKS = [
    check_help,
    check_bad_options,
    check_hundred_jobs,
    check_slots_bound_concurrency,
    check_cpu_work_off_the_loop,
    check_worker_killed,
    check_missed_heartbeats_and_reconnect,
    check_coordinator_restart,
    check_timeout_retry_then_fail,
    check_sigterm_drains,
    check_worker_quits_gracefully,
    check_malformed_frames_coordinator,
    check_malformed_frames_worker_and_submitter,
    check_flow_control,
    check_each_backend,
]


def kill_all():
    for proc in processes:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            proc.kill()
        try:
            proc.wait(timeout=5)
        except Exception:
            pass
    processes.clear()


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--submit", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = parser.parse_args()
    return run_checks(CHECKS, args.checks, after_each=kill_all)  # each check starts from nothing

if __name__ == "__main__":
    sys.exit(main())
