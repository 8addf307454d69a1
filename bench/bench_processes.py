"""What the benchmark drivers share: child processes, each in a session of its own, tracked so
that the driver ends (and reaps) every one of them whatever happens. A driver under bench/<x>/
imports this module with its parent directory on sys.path."""

import os
import resource
import signal
import subprocess

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


def forget(p):
    """Stops tracking @p, which the caller has reaped itself."""
    _live.discard(p)


def end_all(*_):
    """Kills every tracked process (usable as a signal handler)."""
    for p in list(_live):
        end(p, signal.SIGKILL, 2.0)
