#!/usr/bin/env python3
"""run_parallel and line_filter as programs: the subprocess examples (issue 9).

run_parallel: output lines tagged `[N]` (stdout) and `[N!]` (stderr), overlong lines in pieces
tagged `[N+]`/`[N!+]`, one report line per command at the end, exit 1 when one fails; --jobs
bounds how many run at once (checked with timestamps the commands write, and a FIFO rendezvous
that only concurrent commands pass); 50 commands; megabytes of output intact; SIGTERM and
SIGINT kill the running commands with their process groups. line_filter: 200k lines sorted as
Python's sorted() (LC_ALL=C), from a pipe, a file and a terminal; empty input; other filters,
streaming ones with big input (no deadlock) and one that exits early; a filter that does not
exist. Both on every --loop value.

No network. Every run is bounded by a timeout. Exits 0 when every check passes, 1 otherwise,
naming each failed check.

    test_subprocess_examples.py --run-parallel build/examples/run_parallel \\
        --line-filter build/examples/line_filter
    test_subprocess_examples.py ... check_line_filter_sorts     the checks named only
"""

import argparse
import fcntl
import os
import pty
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from example_support import run_checks

RUN_TIMEOUT = 60  # seconds for one program run
LOOPS = ("selector", "proactor", "epoll", "poll", "select")
NOT_AVAILABLE = "not available in this build"
REPORT = re.compile(
    r"^\[(\d+)\] (exit -?\d+|killed by signal \d+|not started|could not start: .*)$")
TAGGED = re.compile(r"^\[(\d+)(!?)(\+?)\] (.*)$", re.S)
NUMBERED = re.compile(r"^ *(\d+)\t(.*)$", re.S)

args = None
C_LOCALE = dict(os.environ, LC_ALL="C")  # sort's order is then byte order: Python's sorted()


# ---- Helpers ----------------------------------------------------------------------------------

def run(program, *argv, input=None, timeout=RUN_TIMEOUT, env=None, stdin=None):
    """Runs @program; its output as bytes (stdout may hold any byte a command printed)."""
    return subprocess.run([program, *argv], input=input, stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, env=env)


def run_parallel(*argv, **kw):
    return run(args.run_parallel, *argv, **kw)


def line_filter(*argv, **kw):
    return run(args.line_filter, *argv, env=kw.pop("env", C_LOCALE), **kw)


class Parallel:
    """run_parallel's stdout, parsed: `streams[(n, "out"|"err")]` is the list of lines
    (overlong pieces joined back) of command n, `order` the (n, stream, text) of each output line
    as printed, and `reports[n]` the text of its report line."""

    def __init__(self, result, commands):
        self.result = result
        lines = result.stdout.decode(errors="surrogateescape").split("\n")
        assert lines[-1] == "", f"stdout does not end with a newline: {lines[-1][-200:]!r}"
        lines.pop()
        assert len(lines) >= commands, lines
        output, report = lines[:len(lines) - commands], lines[len(lines) - commands:]
        self.reports = {}
        for i, line in enumerate(report, 1):
            match = REPORT.match(line)
            assert match and int(match.group(1)) == i, f"report line {i}: {line!r}"
            self.reports[i] = match.group(2)
        self.streams = {}
        self.order = []
        for line in output:
            match = TAGGED.match(line)
            assert match, f"untagged output line: {line[:200]!r}"
            n, stream = int(match.group(1)), "err" if match.group(2) else "out"
            assert 1 <= n <= commands, line[:200]
            texts = self.streams.setdefault((n, stream), [])
            if match.group(3):  # a piece of an overlong line: the rest of the last one
                assert texts, f"a continuation with nothing before: {line[:200]!r}"
                texts[-1] += match.group(4)
            else:
                texts.append(match.group(4))
            self.order.append((n, stream, match.group(4)))

    def out(self, n):
        return self.streams.get((n, "out"), [])

    def err(self, n):
        return self.streams.get((n, "err"), [])


def numbered(result):
    """line_filter's stdout: the texts of its numbered lines, checking that they count 1, 2..."""
    text = result.stdout.decode(errors="surrogateescape")
    if text == "":
        return []
    assert text.endswith("\n"), text[-200:]
    texts = []
    for i, line in enumerate(text[:-1].split("\n"), 1):
        match = NUMBERED.match(line)
        assert match and int(match.group(1)) == i, f"line {i}: {line[:200]!r}"
        texts.append(match.group(2))
    return texts


def random_lines(count, seed):
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-_"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            for _ in range(count)]


def alive(pid):
    """Whether process @pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_dead(pids, within=10):
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if alive(pid)]
        time.sleep(0.02)


def skip(message):
    print(f"  SKIP {message}", flush=True)


def intervals(parallel, commands):
    """The [start, end] that each command printed (`date +%s%N` twice)."""
    spans = []
    for n in range(1, commands + 1):
        stamps = [int(text) for text in parallel.out(n)]
        assert len(stamps) == 2 and stamps[0] <= stamps[1], (n, parallel.out(n))
        spans.append(stamps)
    return spans


def most_at_once(spans):
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, delta in events:  # at equal times the end (-1) sorts first
        running += delta
        most = max(most, running)
    return most


# ---- run_parallel -----------------------------------------------------------------------------

def check_run_parallel_help_and_options():
    result = run_parallel("--help")
    assert result.returncode == 0 and b"usage: run_parallel" in result.stdout, result
    for argv, status, text in [((), 2, "no command given"),
                               (("--jobs", "0", "true"), 2, "--jobs"),
                               (("--jobs", "x", "true"), 2, "--jobs"),
                               (("--bogus", "1", "true"), 2, "unknown option '--bogus'"),
                               (("--loop", "nope", "true"), 2, "nope"),
                               (("true", ""), 2, "command 2 is empty"),
                               (("--jobs",), 2, "--jobs needs a value")]:
        result = run_parallel(*argv)
        errors = result.stderr.decode().splitlines()
        assert result.returncode == status and len(errors) == 1, (argv, result)
        assert errors[0].startswith("run_parallel: ") and text in errors[0], (argv, errors)
        assert result.stdout == b"", (argv, result.stdout)
    # After --, every argument is a command, even one that looks like an option (which
    # /bin/sh -c then reads as its own option and refuses: a failed command, not a bad option).
    result = run_parallel("--jobs", "1", "echo a", "--", "echo b", "--jobs")
    assert result.returncode == 1 and result.stderr == b"", result
    parallel = Parallel(result, 3)
    assert parallel.out(1) == ["a"] and parallel.out(2) == ["b"], parallel.streams
    assert parallel.reports[1] == "exit 0" and parallel.reports[3] != "exit 0", parallel.reports


def check_run_parallel_tags_and_reports():
    commands = ["echo one; echo two >&2; echo three; echo four >&2",
                "printf 'no newline'",
                "printf 'tab\\there, [brackets] and trailing space \\n'; exit 3",
                "kill -9 $$",
                "echo 'x' | tr x y; printf '\\n\\n'",
                "true"]
    result = run_parallel(*commands)
    assert result.returncode == 1, result
    assert result.stderr == b"", result.stderr
    parallel = Parallel(result, len(commands))
    assert parallel.out(1) == ["one", "three"], parallel.streams
    assert parallel.err(1) == ["two", "four"], parallel.streams
    assert parallel.out(2) == ["no newline"], parallel.out(2)
    assert parallel.out(3) == ["tab\there, [brackets] and trailing space "], parallel.out(3)
    assert parallel.out(4) == [] and parallel.err(4) == [], parallel.streams
    assert parallel.out(5) == ["y", "", ""], parallel.out(5)
    assert parallel.out(6) == [] and parallel.err(6) == [], parallel.streams
    assert parallel.reports == {1: "exit 0", 2: "exit 0", 3: "exit 3", 4: "killed by signal 9",
                                5: "exit 0", 6: "exit 0"}, parallel.reports

    result = run_parallel("echo a", "echo b >&2", "exit 0")
    assert result.returncode == 0, result
    parallel = Parallel(result, 3)
    assert parallel.reports == {1: "exit 0", 2: "exit 0", 3: "exit 0"}, parallel.reports
    assert parallel.out(1) == ["a"] and parallel.err(2) == ["b"], parallel.streams

    # The commands' stdin is /dev/null: they do not take run_parallel's.
    result = run_parallel("cat; echo done", input=b"not for them\n")
    parallel = Parallel(result, 1)
    assert parallel.out(1) == ["done"] and parallel.reports[1] == "exit 0", parallel.streams


def check_run_parallel_jobs_1_is_sequential():
    # Each command writes when it starts and when it ends; with --jobs 1 no two overlap, and
    # they run in the order given.
    stamp = "date +%s%N; sleep 0.05; date +%s%N"
    result = run_parallel("--jobs", "1", *[stamp] * 5)
    assert result.returncode == 0, result
    parallel = Parallel(result, 5)
    spans = intervals(parallel, 5)
    for earlier, later in zip(spans, spans[1:]):
        assert earlier[1] < later[0], spans
    # Sequential, the output comes command by command too.
    assert [n for n, _, _ in parallel.order] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], parallel.order


def check_run_parallel_jobs_bound():
    stamp = "date +%s%N; sleep 0.1; date +%s%N"
    result = run_parallel("--jobs", "3", *[stamp] * 9)
    assert result.returncode == 0, result
    spans = intervals(Parallel(result, 9), 9)
    assert most_at_once(spans) <= 3, spans
    # The default is the number of CPUs: at least one at a time, never more than that.
    result = run_parallel(*[stamp] * 4)
    assert result.returncode == 0, result
    assert 1 <= most_at_once(intervals(Parallel(result, 4), 4)) <= os.cpu_count(), result


def check_run_parallel_runs_side_by_side():
    # A FIFO rendezvous: opening a FIFO waits for the other end, so these two commands only
    # finish when they run at the same time (one after the other, the first waits forever).
    with tempfile.TemporaryDirectory(prefix="strata-subex-") as tmp:
        fifo = os.path.join(tmp, "fifo")
        os.mkfifo(fifo)
        commands = [f"read x < {fifo}; echo got $x", f"echo hello > {fifo}; echo sent"]
        for jobs in ("2", "8"):
            result = run_parallel("--jobs", jobs, *commands, timeout=20)
            assert result.returncode == 0, result
            parallel = Parallel(result, 2)
            assert parallel.out(1) == ["got hello"], parallel.streams
            assert parallel.out(2) == ["sent"], parallel.streams


def check_run_parallel_many_commands():
    commands = [f"echo line-{i}; echo err-{i} >&2; exit {i % 3 == 0 and 1 or 0}"
                for i in range(1, 51)]
    result = run_parallel("--jobs", "8", *commands)
    assert result.returncode == 1, result  # every third fails
    parallel = Parallel(result, 50)
    for i in range(1, 51):
        assert parallel.out(i) == [f"line-{i}"] and parallel.err(i) == [f"err-{i}"], i
        assert parallel.reports[i] == ("exit 1" if i % 3 == 0 else "exit 0"), parallel.reports
    result = run_parallel("--jobs", "50", *["echo ok"] * 50)
    assert result.returncode == 0, result
    parallel = Parallel(result, 50)
    assert all(parallel.out(i) == ["ok"] for i in range(1, 51)), parallel.streams


def check_run_parallel_big_output():
    # About 3.9 MB on stdout and 1.3 MB on stderr at once, from each of two commands.
    commands = ["seq 1 500000; seq 1 200000 >&2", "seq 1 200000 >&2; seq 1 500000"]
    start = time.monotonic()
    result = run_parallel(*commands)
    took = time.monotonic() - start
    assert result.returncode == 0, result
    parallel = Parallel(result, 2)
    for n in (1, 2):
        assert parallel.out(n) == [str(i) for i in range(1, 500001)], n
        assert parallel.err(n) == [str(i) for i in range(1, 200001)], n
    assert took < 30, took


def check_run_parallel_overlong_lines():
    # Lines far over the reader's 64 KiB limit, with and without "\n", on both streams: they
    # come in pieces, and the pieces join back into the line.
    commands = ["head -c 200000 /dev/zero | tr '\\0' a; echo; echo after",
                "head -c 100000 /dev/zero | tr '\\0' b >&2; echo; "
                "head -c 70000 /dev/zero | tr '\\0' c",
                "head -c 65536 /dev/zero | tr '\\0' d; echo"]
    result = run_parallel(*commands)
    assert result.returncode == 0, result
    parallel = Parallel(result, 3)
    assert parallel.out(1) == ["a" * 200000, "after"], [len(s) for s in parallel.out(1)]
    assert parallel.err(2) == ["b" * 100000], [len(s) for s in parallel.err(2)]
    assert parallel.out(2) == ["", "c" * 70000], [len(s) for s in parallel.out(2)]
    assert parallel.out(3) == ["d" * 65536], [len(s) for s in parallel.out(3)]
    pieces = [text for n, stream, text in parallel.order if n == 1]
    sizes = [len(p) for p in pieces]
    assert len(pieces) >= 3 and all(0 < size <= 4 * 65536 for size in sizes), sizes


def interrupt_check(sig, status):
    """Commands that print a line and then run on (a background job holding the pipe, and an
    exec'd sleep), a fourth waiting for a slot: the lines arrive while they run; @sig kills them
    all (process groups included), the fourth never starts, and run_parallel exits @status."""
    commands = ["sleep 60 & echo ready $$ $!; wait",
                "echo ready $$; exec sleep 60",
                "echo ready $$ >&2; sleep 60; echo never",
                "echo never"]
    proc = subprocess.Popen([args.run_parallel, "--jobs", "3", *commands],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pids = []
        ready = 0
        deadline = time.monotonic() + 20
        while ready < 3:
            assert time.monotonic() < deadline, "the ready lines did not come"
            line = proc.stdout.readline().decode()
            assert line, "run_parallel ended early"
            fields = line.split()
            assert fields[1] == "ready", line
            pids += [int(pid) for pid in fields[2:]]
            ready += 1
        assert all(alive(pid) for pid in pids), pids
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, (proc.returncode, rest, err)
    assert err == b"", err
    report = rest.decode().splitlines()
    assert report == ["[1] killed by signal 9", "[2] killed by signal 9",
                      "[3] killed by signal 9", "[4] not started"], report
    wait_dead(pids)


def check_run_parallel_sigterm():
    interrupt_check(signal.SIGTERM, 143)


def check_run_parallel_sigint():
    interrupt_check(signal.SIGINT, 130)


# ---- line_filter ------------------------------------------------------------------------------

def check_line_filter_help_and_options():
    result = line_filter("--help")
    assert result.returncode == 0 and b"usage: line_filter" in result.stdout, result
    for argv, text in [(("a", "b"), "one FILE at most"),
                       (("--bogus", "1"), "unknown option '--bogus'"),
                       (("--loop", "nope"), "nope"),
                       (("--filter", ""), "--filter"),
                       (("--filter",), "--filter needs a value")]:
        result = line_filter(*argv, input=b"")
        errors = result.stderr.decode().splitlines()
        assert result.returncode == 2 and len(errors) == 1, (argv, result)
        assert errors[0].startswith("line_filter: ") and text in errors[0], (argv, errors)


def check_line_filter_sorts():
    lines = random_lines(200000, seed=9)
    data = "".join(line + "\n" for line in lines).encode()
    result = line_filter(input=data)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert numbered(result) == sorted(lines)
    # The arguments after -- are sort's.
    result = line_filter("--", "-r", input=data)
    assert result.returncode == 0, result.stderr
    assert numbered(result) == sorted(lines, reverse=True)
    # From a FILE (a regular file: read in place, not watched by the loop).
    with tempfile.NamedTemporaryFile(prefix="strata-subex-") as f:
        f.write(data)
        f.flush()
        result = line_filter(f.name, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert numbered(result) == sorted(lines)
        # stdin redirected from the file, no FILE argument
        with open(f.name, "rb") as stdin:
            result = line_filter(stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert numbered(result) == sorted(lines)
    # Numbers, with sort -n -r.
    numbers = list(range(-5000, 5000))
    random.Random(12).shuffle(numbers)
    result = line_filter("--", "-n", "-r", input="".join(f"{n}\n" for n in numbers).encode())
    assert result.returncode == 0, result.stderr
    assert numbered(result) == [str(n) for n in sorted(numbers, reverse=True)]


def check_line_filter_empty_input():
    result = line_filter(input=b"")
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result
    result = line_filter(stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result
    result = line_filter("/dev/null")
    assert result.returncode == 0 and result.stdout == b"", result
    # A last line without "\n" gets one.
    result = line_filter(input=b"b\na")
    assert result.returncode == 0 and result.stdout == b"     1\ta\n     2\tb\n", result.stdout


def check_line_filter_other_filters():
    # cat answers as it reads: with input larger than every pipe buffer, writing all of it
    # first would deadlock. 8 MB in, the same 8 MB back, numbered.
    lines = random_lines(400000, seed=10)
    data = "".join(line + "\n" for line in lines).encode()
    start = time.monotonic()
    result = line_filter("--filter", "cat", input=data)
    assert result.returncode == 0, result.stderr
    assert numbered(result) == lines
    assert time.monotonic() - start < 30
    result = line_filter("--filter", "tr", "--", "a-z", "A-Z", input=b"Hello\nworld\n")
    assert result.returncode == 0 and numbered(result) == ["HELLO", "WORLD"], result
    result = line_filter("--filter", "grep", "--", "-v", "x", input=b"ax\nb\ncx\nd\n")
    assert result.returncode == 0 and numbered(result) == ["b", "d"], result
    # A filter that stops reading early (head exits after 3 lines): no error.
    result = line_filter("--filter", "head", "--", "-n", "3", input=data)
    assert result.returncode == 0 and result.stderr == b"", result
    assert numbered(result) == lines[:3]
    # A line far over the reader's limit, through cat, stays one numbered line.
    long_line = "z" * 300000
    result = line_filter("--filter", "cat", input=f"a\n{long_line}\nb".encode())
    assert result.returncode == 0, result.stderr
    assert numbered(result) == ["a", long_line, "b"]


def check_line_filter_failures():
    result = line_filter("--filter", "no-such-filter-program", input=b"x\n")
    errors = result.stderr.decode().splitlines()
    assert result.returncode == 1 and result.stdout == b"", result
    assert errors == [
        "line_filter: cannot run 'no-such-filter-program': No such file or directory"], errors
    result = line_filter("--filter", "/etc/passwd", input=b"x\n")  # not executable
    errors = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(errors) == 1, result
    assert errors[0].startswith("line_filter: cannot run '/etc/passwd': "), errors
    # A filter that fails: its own message (its stderr is ours), then line_filter's.
    result = line_filter("--", "--no-such-sort-option", input=b"x\n")
    errors = result.stderr.decode().splitlines()
    assert result.returncode == 1 and errors[-1] == "line_filter: sort exited with status 2", errors
    result = line_filter("--filter", "false", input=b"x\n" * 100000)
    assert result.returncode == 1, result
    errors = result.stderr.decode().splitlines()
    assert errors == ["line_filter: false exited with status 1"], result
    result = line_filter("--filter", "sh", "--", "-c", "kill -9 $$", input=b"x\n")
    assert result.returncode == 1, result
    assert b"line_filter: sh was killed by signal 9" in result.stderr, result.stderr
    result = line_filter("/no/such/file")
    errors = result.stderr.decode().splitlines()
    assert result.returncode == 1 and errors == [
        "line_filter: cannot open '/no/such/file': No such file or directory"], errors


def check_line_filter_from_a_terminal():
    # stdin a terminal: typed lines, then Ctrl-D. line_filter must not leave O_NONBLOCK on
    # the terminal, which it shares with the shell.
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([args.line_filter], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=C_LOCALE)
        os.write(master, b"pear\napple\nfig\n")
        time.sleep(0.2)  # not needed for correctness: the lines are buffered either way
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: the end of the input
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, (out, err)
        assert out == b"     1\tapple\n     2\tfig\n     3\tpear\n", out
        assert fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK == 0

        # Ctrl-C while it waits for more input: exit 130, and the filter is gone.
        proc = subprocess.Popen([args.line_filter], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=C_LOCALE)
        try:
            os.write(master, b"b\na\n")
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            deadline = time.monotonic() + 10
            while not children.read_text().split():
                assert time.monotonic() < deadline, "sort did not start"
                time.sleep(0.01)
            sort_pid = int(children.read_text().split()[0])
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130 and out == b"" and err == b"", (proc.returncode, out, err)
        wait_dead([sort_pid])
        assert fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK == 0
    finally:
        os.close(master)
        os.close(slave)


# ---- Every loop -------------------------------------------------------------------------------

def check_each_loop():
    lines = random_lines(20000, seed=11)
    data = "".join(line + "\n" for line in lines).encode()
    for loop in LOOPS:
        result = run_parallel("--loop", loop, "seq 1 20000", "echo e >&2; exit 4")
        if result.returncode == 2 and NOT_AVAILABLE.encode() in result.stderr:
            skip(f"run_parallel --loop {loop} is {NOT_AVAILABLE}")
        else:
            assert result.returncode == 1, (loop, result)
            parallel = Parallel(result, 2)
            assert parallel.out(1) == [str(i) for i in range(1, 20001)], loop
            assert parallel.err(2) == ["e"], (loop, parallel.err(2))
            assert parallel.reports == {1: "exit 0", 2: "exit 4"}, (loop, parallel.reports)
        result = line_filter("--loop", loop, input=data)
        if result.returncode == 2 and NOT_AVAILABLE.encode() in result.stderr:
            skip(f"line_filter --loop {loop} is {NOT_AVAILABLE}")
            continue
        assert result.returncode == 0, (loop, result.stderr)
        assert numbered(result) == sorted(lines), loop
        result = line_filter("--loop", loop, "--filter", "cat", input=data)
        assert result.returncode == 0 and numbered(result) == lines, (loop, result.stderr)
        result = line_filter("--loop", loop, "--filter", "no-such-filter-program", input=b"")
        assert result.returncode == 1 and b"cannot run" in result.stderr, (loop, result)


CHECKS = [
    check_run_parallel_help_and_options,
    check_run_parallel_tags_and_reports,
    check_run_parallel_jobs_1_is_sequential,
    check_run_parallel_jobs_bound,
    check_run_parallel_runs_side_by_side,
    check_run_parallel_many_commands,
    check_run_parallel_big_output,
    check_run_parallel_overlong_lines,
    check_run_parallel_sigterm,
    check_run_parallel_sigint,
    check_line_filter_help_and_options,
    check_line_filter_sorts,
    check_line_filter_empty_input,
    check_line_filter_other_filters,
    check_line_filter_failures,
    check_line_filter_from_a_terminal,
    check_each_loop,
]


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-parallel", required=True)
    parser.add_argument("--line-filter", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = parser.parse_args()
    return run_checks(CHECKS, args.checks)


if __name__ == "__main__":
    sys.exit(main())
