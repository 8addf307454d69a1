"""What the benchmark drivers share: child processes, each in a session of its own, tracked so
that the driver ends (and reaps) every one of them whatever happens. A driver under bench/<x>/
imports this module with its parent directory on sys.path."""

import os
import resource
import select
import signal
import subprocess
import tempfile
import time

_live = set()


def _preexec(cpu, nofile):
    def fn():
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return fn


def spawn(cmd, cpu=None, nofile=None, **kw):
    """subprocess.Popen(cmd, **kw) in a new session, tracked; pinned to CPU @cpu and with the
    open-file limit @nofile, a (soft, hard) pair, when given."""
    if cpu is not None or nofile is not None:
        kw["preexec_fn"] = _preexec(cpu, nofile)
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    _live.add(p)
    return p


def end(p, sig=signal.SIGINT, grace=10.0):
    """Signals p's process group (its own session), waits @grace seconds, escalates to SIGKILL;
    closes its pipes; returns its exit status."""
    if p.poll() is None:
        for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, s)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    _live.discard(p)
    for f in (p.stdin, p.stdout, p.stderr):
        if f:
            try:
                f.close()
            except OSError:
                pass
    return p.returncode


def callgrind_dump(p, out_file, timeout=120.0):
    """Has the callgrind run of @p (valgrind --callgrind-out-file=@out_file) write its counts
    now, ends it, and returns the path of that dump (@out_file.1).

    Valgrind hands a signal to its program only inside a system call it knows may block, and
    Valgrind 3.19 does not count io_uring_enter(2) among them: a proactor loop that waits there,
    and accepts and reads through io_uring operations, never sees SIGINT under valgrind.
    callgrind_control reaches the program through vgdb, whatever it waits in."""
    subprocess.run(["callgrind_control", "--dump", str(p.pid)], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end(p, signal.SIGKILL, 5.0)
    return f"{out_file}.1"


def forget(p):
    """Stops tracking @p, which the caller has reaped itself."""
    _live.discard(p)


def end_all(*_):
    """Kills every tracked process (usable as a signal handler)."""
    for p in list(_live):
        end(p, signal.SIGKILL, 2.0)


def refusal(cmd, timeout=15.0):
    """Starts a server (@cmd, which must take --port 0 and print "listening on HOST:PORT" once
    ready) and stops it at once. Returns why it refused to start (its exit status and the end of
    its stderr) when it exited before that line, else None: a server that listens, or that is
    merely slow to (the runs will say), is no refusal. For a --loop the server does not know
    yet, such as proactor before its issue lands."""
    with tempfile.TemporaryFile("w+") as err:
        p = spawn([*cmd, "--port", "0"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                  stderr=err, text=True)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if r:
                    line = p.stdout.readline()
                    if line.startswith("listening on "):
                        return None
                    if line:
                        continue
                    p.wait(5)  # end of its output: it exited (or closed stdout)
                if p.poll() is not None:
                    err.seek(0)
                    tail = " ".join(err.read().split())[-240:]
                    return f"exit status {p.returncode}" + (f": {tail}" if tail else "")
            return None
        except subprocess.TimeoutExpired:
            return None
        finally:
            end(p)
