#!/usr/bin/env python3
"""Runs the echo benchmark matrix for bench/run_echo.sh (see bench/README.md, "Echo servers").

Every server runs pinned to CPU 0 and the load generator (echo_load) to CPU 1. Progress goes
to stderr, the Markdown report to stdout; the raw results go to <build>/echo.json and the
report to <build>/echo.md.
"""
import argparse
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_processes import callgrind_dump, end, end_all, forget, refusal, spawn  # noqa: E402  (bench/ on the path first)

ROOT = Path(__file__).resolve().parents[2]
PY = "/usr/bin/python3"
SERVER_CPU, LOAD_CPU = "0", "1"
FLOOR, UVLOOP = "c_epoll", "uvloop"
# The io_uring floor and the loop it is the floor of: Strata on the proactor loop is compared
# with it (CPU per request ≤ 1.1×) and with Strata on the selector loop (≤ 1.0× at 10-50
# connections, ≤ 0.85× from 300 on).
URING_FLOOR, PROACTOR = "c_uring", "proactor"
# The same floor with receiving and sending kept apart (c_uring_echo --apart), as the proactor
# loop keeps them: a multishot receive, and a send with a completion of its own. No target; it
# shows what the link saves.
URING_APART = "c_uring_apart"
PROACTOR_VS_URING = 1.1
STRATA, STRATA_STREAMS, UVLOOP_STREAMS = "strata", "strata_streams", "uvloop_streams"
ASYNCIO, ASYNCIO_STREAMS = "asyncio", "asyncio_streams"
# --streams: the streams comparison (each streams echo beside its own protocol echo).
STREAMS_SERVERS = [STRATA, STRATA_STREAMS, UVLOOP, UVLOOP_STREAMS, ASYNCIO_STREAMS]
# Strata's echo_server builds: left out together when run_echo.sh found no usable target.
STRATA_KEYS = (STRATA, STRATA_STREAMS)
# The select backend refuses descriptors from FD_SETSIZE (1024) on: no 10,000 idle connections.
NO_IDLE_LOOPS = ("select",)
# The streams targets (the streams issue), checked at these sizes with 10 connections.
STREAMS_TARGET_SIZES = (64, 1024)
STREAMS_VS_PROTOCOL, STREAMS_VS_UVLOOP = 1.15, 0.5
STREAMS_SYSCALLS, STREAMS_INSTRUCTIONS = 2.2, 700


class Server:
    def __init__(self, key, label, cmd, loop=None):
        self.key, self.label, self.cmd, self.loop = key, label, cmd, loop
        self.available = Path(cmd[0]).exists()


def strata_key(api_key, loop, loops):
    """Strata's servers on the first loop of --loops keep the plain keys (strata,
    strata_streams); on the others the loop is appended (strata_poll, strata_streams_poll)."""
    return api_key if loop == loops[0] else f"{api_key}_{loop}"


def is_strata(key):
    return key.startswith(STRATA)


def proactor_vs_selector_target(conns):
    """The proactor issue's target for Strata on proactor ÷ Strata on the selector loop, by
    connection count; None between 50 and 300, where the issue sets none."""
    return 1.0 if conns <= 50 else 0.85 if conns >= 300 else None


def strata_loop_keys(loops):
    """{loop: {"protocol": key, "streams": key}} for Strata's servers on each loop."""
    return {lp: {"protocol": strata_key(STRATA, lp, loops),
                 "streams": strata_key(STRATA_STREAMS, lp, loops)} for lp in loops}


def selector_reference(loops):
    """The loop Strata on proactor is compared with: the first of --loops that is not proactor
    (selector by default, epoll in the report's runs)."""
    return next((lp for lp in loops if lp != PROACTOR), None)


def servers_for(build, loops):
    b = Path(build)
    echo = b / "bench" / "echo"
    py_echo = str(ROOT / "bench" / "python" / "echo_server.py")
    strata = []
    for loop in loops:
        for api_key, api in ((STRATA, "protocol"), (STRATA_STREAMS, "streams")):
            strata.append(Server(strata_key(api_key, loop, loops),
                                 f"Strata {api} ({loop})",
                                 [str(b / "examples" / "echo_server"), "--api", api,
                                  "--loop", loop], loop=loop))
    return [
        Server(FLOOR, "C epoll (floor)", [str(echo / "c_epoll_echo")]),
        Server(URING_FLOOR, "C io_uring (floor)", [str(echo / "c_uring_echo")]),
        Server(URING_APART, "C io_uring, receive and send apart",
               [str(echo / "c_uring_echo"), "--apart"]),
        *strata,
        Server("libuv", "libuv", [str(echo / "libuv_echo")]),
        Server("asio_cb", "Asio callbacks", [str(echo / "asio_echo_callbacks")]),
        Server("asio_coro", "Asio coroutines", [str(echo / "asio_echo_coro")]),
        Server(UVLOOP, "uvloop protocol", [PY, py_echo, "--loop", "uvloop"]),
        Server(UVLOOP_STREAMS, "uvloop streams",
               [PY, py_echo, "--loop", "uvloop", "--api", "streams"]),
        Server(ASYNCIO, "asyncio protocol", [PY, py_echo, "--loop", "asyncio"]),
        Server(ASYNCIO_STREAMS, "asyncio streams",
               [PY, py_echo, "--loop", "asyncio", "--api", "streams"]),
    ]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes: everything started here is tracked and ended by pid (its own session's group)

class Running:
    """A started server: pid is the server itself (the child of strace when wrapped)."""

    def __init__(self, server, wrapper=(), ready_timeout=15.0):
        self.server = server
        cmd = ["taskset", "-c", SERVER_CPU, *wrapper, *server.cmd, "--port", "0"]
        self.err_path = f"/tmp/strata-echo-{os.getpid()}-{server.key}.err"
        self.err = open(self.err_path, "w")
        self.proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=self.err, text=True)
        self.port = None
        self.pid = self.proc.pid
        line = self._readline(ready_timeout)
        if not line or not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"{server.key}: no 'listening on' line "
                               f"(got {line!r}; stderr: {self.stderr_tail()})")
        self.port = int(line.rsplit(":", 1)[1])
        self.pid = self.proc.pid
        if wrapper and wrapper[0] == "strace":
            self.pid = self._child_of(self.proc.pid)

    def _readline(self, timeout):
        end = time.monotonic() + timeout
        fd = self.proc.stdout
        while time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
            if r:
                return fd.readline().strip()
            if self.proc.poll() is not None:
                return None
        return None

    @staticmethod
    def _child_of(pid):
        for _ in range(100):
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if kids:
                    return int(kids[0])
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no child under pid {pid}")

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stderr_tail(self):
        try:
            self.err.flush()
            return Path(self.err_path).read_text()[-300:].strip()
        except OSError:
            return ""

    def nudge(self):
        """Opens and closes one connection to the server's port (to wake a blocked loop)."""
        if self.port is None:
            return
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2.0).close()
        except OSError:
            pass

    def stop(self, grace=10.0):
        """SIGINT to the server itself; a wrapper (strace, valgrind) then exits on its own."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGINT)
                try:
                    self.proc.wait(min(3.0, grace))
                except subprocess.TimeoutExpired:
                    # Under valgrind, a loop blocked in io_uring_enter (the proactor) may not
                    # see the signal until something completes: a connection wakes it.
                    self.nudge()
                    self.proc.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        rc = end(self.proc, signal.SIGINT, grace)
        self.err.close()
        try:
            os.unlink(self.err_path)
        except OSError:
            pass
        return rc


def load(load_bin, port, pid, args, timeout):
    cmd = ["taskset", "-c", LOAD_CPU, load_bin, "--port", str(port), "--timeout",
           str(int(timeout))] + (["--server-pid", str(pid)] if pid else []) + args
    p = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True)
    try:
        out, err = p.communicate(timeout=timeout + 15)
    except subprocess.TimeoutExpired:
        end(p, signal.SIGKILL)
        raise RuntimeError("echo_load did not finish in time")
    forget(p)
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeError(f"echo_load printed nothing (exit {p.returncode}): {err.strip()}")
    return json.loads(lines[-1])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# measurements

def pingpong_matrix(servers, a, results):
    """Interleaved repetitions: per (size, connections), rep r runs every server once."""
    running = {}
    for s in servers:
        try:
            running[s.key] = Running(s)
        except RuntimeError as e:
            log(f"  ! {e}")
            results["failures"].append(str(e))
    configs = [(size, conns) for size in a.sizes for conns in a.connections]
    pp = results["pingpong"]
    for size, conns in configs:
        cfg = f"{size}x{conns}"
        pp[cfg] = {k: [] for k in running}
        for rep in range(a.reps):
            order = list(running)
            order = order[rep % len(order):] + order[:rep % len(order)]
            for key in order:
                srv = running[key]
                if not srv.alive():
                    continue
                try:
                    r = load(a.load, srv.port, srv.pid,
                             ["--connections", str(conns), "--size", str(size), "--mode",
                              "pingpong", "--duration", str(a.duration), "--warmup",
                              str(a.warmup)], timeout=a.duration + a.warmup + 30)
                except (RuntimeError, ValueError) as e:
                    r = {"errors": 1, "first_error": str(e)}
                if r.get("requests") and r.get("server_cpu_s") is not None:
                    r["cpu_us_per_req"] = r["server_cpu_s"] / r["requests"] * 1e6
                    r["sched_us_per_req"] = r["server_sched_s"] / r["requests"] * 1e6
                r["rep"] = rep
                pp[cfg][key].append(r)
            floor = (pp[cfg].get(FLOOR) or [{}])[-1].get("cpu_us_per_req")
            log(f"  pingpong {size} B x {conns} conns, rep {rep + 1}/{a.reps}: " + ", ".join(
                f"{k} {pp[cfg][k][-1].get('cpu_us_per_req', float('nan')):.2f}"
                for k in running if pp[cfg][k]) + " µs CPU/req" +
                ("" if floor else " (no floor)"))
    # streaming
    st = results["stream"]
    st_cfg = f"{a.stream_size}x{a.stream_conns}"
    if not a.stream_phase:
        stop_all(running, results)
        return
    st[st_cfg] = {k: [] for k in running}
    for rep in range(a.reps):
        order = list(running)
        order = order[rep % len(order):] + order[:rep % len(order)]
        for key in order:
            srv = running[key]
            if not srv.alive():
                continue
            try:
                r = load(a.load, srv.port, srv.pid,
                         ["--connections", str(a.stream_conns), "--size", str(a.stream_size),
                          "--mode", "stream", "--duration", str(a.duration), "--warmup",
                          str(a.warmup)], timeout=a.duration + a.warmup + 30)
            except (RuntimeError, ValueError) as e:
                r = {"errors": 1, "first_error": str(e)}
            if r.get("bytes") and r.get("server_cpu_s") is not None:
                r["cpu_us_per_mib"] = r["server_cpu_s"] / (r["bytes"] / 1048576) * 1e6
            r["rep"] = rep
            st[st_cfg][key].append(r)
        log(f"  stream {a.stream_size} B chunks x {a.stream_conns} conns, rep {rep + 1}/{a.reps}: "
            + ", ".join(f"{k} {st[st_cfg][k][-1].get('mib_s', 0):.0f}" for k in running) + " MiB/s")
    stop_all(running, results)


def stop_all(running, results):
    for key, srv in running.items():
        if not srv.alive():
            results["failures"].append(f"{key}: the server died during the runs "
                                       f"(stderr: {srv.stderr_tail()})")
        srv.stop()


def counted_run(server, wrapper, a, size, n, out_file, parse):
    srv = Running(server, wrapper=wrapper, ready_timeout=120.0)
    counted = Path(out_file)
    try:
        r = load(a.load, srv.port, None,
                 ["--connections", "10", "--size", str(size), "--mode", "pingpong",
                  "--requests", str(n), "--warmup", "0"], timeout=600)
        if wrapper[0] == "valgrind":  # see callgrind_dump(): not every loop sees SIGINT there
            counted = Path(callgrind_dump(srv.proc, out_file))
    finally:
        srv.stop(grace=120.0)
    if r.get("errors") or r.get("requests") != n:
        raise RuntimeError(f"{server.key}: load run failed: {r}")
    return parse(counted)


def parse_strace(path):
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[-1] == "total":
            return int(f[3])
    raise RuntimeError(f"no total line in {path}")


def parse_callgrind(path):
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {path}")


def per_request_counts(servers, a, results, tool):
    """(count(N2) - count(N1)) / (N2 - N1): start-up, connection set-up and shutdown cancel."""
    n1, n2 = (a.strace_n if tool == "strace" else a.callgrind_n)
    out = results[tool]
    tmp = Path(a.out_dir)
    for s in servers:
        if tool == "callgrind" and a.callgrind_servers is not None and \
                s.key not in a.callgrind_servers:
            continue
        out[s.key] = {}
        for size in a.count_sizes:
            counts = []
            try:
                for n in (n1, n2):
                    f = tmp / f"echo.{tool}.{s.key}.{size}.{n}.out"
                    if f.exists():
                        f.unlink()
                    if tool == "strace":
                        wrapper = ["strace", "-f", "-c", "-o", str(f)]
                        counts.append(counted_run(s, wrapper, a, size, n, f, parse_strace))
                    else:
                        wrapper = ["valgrind", "--tool=callgrind", "--quiet",
                                   f"--callgrind-out-file={f}"]
                        counts.append(counted_run(s, wrapper, a, size, n, f, parse_callgrind))
                    f.unlink()
                per = (counts[1] - counts[0]) / (n2 - n1)
                out[s.key][str(size)] = {"n1": n1, "n2": n2, "count_n1": counts[0],
                                         "count_n2": counts[1], "per_request": per}
                log(f"  {tool} {s.key} {size} B: {per:.2f} per request "
                    f"({counts[0]} at {n1}, {counts[1]} at {n2})")
            except (RuntimeError, OSError, ValueError) as e:
                log(f"  ! {tool} {s.key} {size} B: {e}")
                results["failures"].append(f"{tool} {s.key} {size} B: {e}")


def idle_memory(servers, a, results):
    out = results["idle"]
    for s in servers:
        if s.loop in NO_IDLE_LOOPS:
            results.setdefault("idle_skipped", []).append(s.key)
            log(f"  idle {s.key}: skipped (the {s.loop} loop takes descriptors below "
                "FD_SETSIZE only)")
            continue
        try:
            srv = Running(s)
        except RuntimeError as e:
            results["failures"].append(str(e))
            continue
        idle = None
        try:
            # warm the code paths (and the allocator) with a short ping-pong run first
            load(a.load, srv.port, srv.pid, ["--connections", "10", "--size", "1024",
                                             "--duration", "0.2", "--warmup", "0"], timeout=30)
            time.sleep(0.3)
            base_fds, rss0 = srv.fd_count(), srv.rss_kib()
            idle = spawn(["taskset", "-c", LOAD_CPU, a.load, "--port", str(srv.port),
                           "--idle", str(a.idle), "--timeout", "300"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
            r, _, _ = select.select([idle.stdout], [], [], 120)
            line = idle.stdout.readline().strip() if r else ""
            if not line.startswith("ready"):
                raise RuntimeError(f"echo_load --idle did not get ready ({line!r})")
            deadline = time.monotonic() + 60
            while srv.fd_count() < base_fds + a.idle and time.monotonic() < deadline:
                time.sleep(0.1)
            accepted = srv.fd_count() - base_fds
            time.sleep(0.5)
            rss1 = srv.rss_kib()
            out[s.key] = {"connections": a.idle, "accepted": accepted, "rss_before_kib": rss0,
                          "rss_after_kib": rss1,
                          "bytes_per_conn": (rss1 - rss0) * 1024 / a.idle}
            log(f"  idle {s.key}: {accepted} accepted, RSS {rss0} -> {rss1} KiB, "
                f"{out[s.key]['bytes_per_conn']:.0f} B per connection")
            if accepted < a.idle:
                results["failures"].append(f"idle {s.key}: only {accepted} of {a.idle} "
                                           "connections reached the server")
        except (RuntimeError, OSError, ValueError) as e:
            log(f"  ! idle {s.key}: {e}")
            results["failures"].append(f"idle {s.key}: {e}")
        finally:
            if idle is not None:
                try:
                    idle.stdin.close()
                    idle.wait(60)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                end(idle, signal.SIGTERM)
            srv.stop()


# ---------------------------------------------------------------------------------------------
# report

def fmt(v, digits=2, suffix=""):
    if v is None:
        return "—"
    if abs(v) >= 1000 and digits <= 2:
        return f"{v:,.0f}{suffix}"
    return f"{v:.{digits}f}{suffix}"


def fmt_ratio(v):
    return "—" if v is None else f"{fmt(v)}×"


def size_label(n):
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def ratios(runs, key, ref, metric):
    """Per-repetition ratio metric(key) / metric(ref), paired by repetition."""
    by_rep = {r["rep"]: r.get(metric) for r in runs.get(ref, [])}
    out = []
    for r in runs.get(key, []):
        den, num = by_rep.get(r["rep"]), r.get(metric)
        if num is not None and den:
            out.append(num / den)
    return out


def report(results, servers, a):
    lines = []
    p = lines.append
    labels = {s.key: s.label for s in servers}
    keys = [s.key for s in servers if s.key in results["present"]]
    pp = results["pingpong"]
    cfgs = list(pp)

    def cfg_label(cfg):
        size, conns = (int(x) for x in cfg.split("x"))
        return f"{size_label(size)} × {conns}"

    summary = {}
    for cfg in cfgs:
        for k in keys:
            runs = pp[cfg]
            rs = [r for r in runs.get(k, []) if not r.get("errors")]
            summary[(cfg, k)] = {
                "cpu": median([r.get("cpu_us_per_req") for r in rs]),
                "floor": median(ratios(runs, k, FLOOR, "cpu_us_per_req")),
                "uvloop": median(ratios(runs, k, UVLOOP, "cpu_us_per_req")),
                "rps": median([r.get("rps") for r in rs]),
                "p50": median([r.get("p50_us") for r in rs]),
                "p99": median([r.get("p99_us") for r in rs]),
                "errors": sum(r.get("errors", 0) for r in runs.get(k, [])),
                "n": len(rs),
            }
    results["summary"] = {f"{c}/{k}": v for (c, k), v in summary.items()}

    if cfgs:
        p(f"### Ping-pong: server CPU per request, µs (median of {a.reps} interleaved "
          "repetitions; in brackets the median per-repetition ratio to the C floor)")
        p("")
        p("| server | " + " | ".join(cfg_label(c) for c in cfgs) + " |")
        p("|---|" + "---:|" * len(cfgs))
        for k in keys:
            cells = []
            for c in cfgs:
                s = summary[(c, k)]
                cell = fmt(s["cpu"]) if s["cpu"] else "—"
                if s["cpu"] and s["floor"]:
                    cell += f" ({fmt(s['floor'])}×)"
                if s["errors"]:
                    cell += f" ⚠{s['errors']} err"
                cells.append(cell)
            p(f"| {labels[k]} | " + " | ".join(cells) + " |")
        p("")
        if UVLOOP in keys:
            p("### Ping-pong: median per-repetition ratio of server CPU per request to uvloop's "
              "(protocol)")
            p("")
            p("| server | " + " | ".join(cfg_label(c) for c in cfgs) + " |")
            p("|---|" + "---:|" * len(cfgs))
            for k in keys:
                p(f"| {labels[k]} | " + " | ".join(
                    f"{fmt(summary[(c, k)]['uvloop'])}×" if summary[(c, k)]["uvloop"] else "—"
                    for c in cfgs) + " |")
            p("")
        streams_pairs = [(num, den) for num, den in (
            (STRATA_STREAMS, STRATA), (STRATA_STREAMS, UVLOOP_STREAMS),
            (UVLOOP_STREAMS, UVLOOP), (ASYNCIO_STREAMS, ASYNCIO),
            (ASYNCIO_STREAMS, UVLOOP_STREAMS), (STRATA, UVLOOP),
            # what a streams layer that cost nothing would measure against uvloop's streams
            (STRATA, UVLOOP_STREAMS)) if num in keys and den in keys]
        if any(num != STRATA for num, _ in streams_pairs):
            p("### Ping-pong: streams against protocols, median per-repetition ratio of server "
              "CPU per request (both measured in the same repetition)")
            p("")
            p("| ratio | " + " | ".join(cfg_label(c) for c in cfgs) + " |")
            p("|---|" + "---:|" * len(cfgs))
            for num, den in streams_pairs:
                cells = []
                for c in cfgs:
                    r = median(ratios(pp[c], num, den, "cpu_us_per_req"))
                    results.setdefault("ratios", {})[f"{c}/{num}/{den}"] = r
                    cells.append(f"{fmt(r)}×" if r else "—")
                p(f"| {labels[num]} ÷ {labels[den]} | " + " | ".join(cells) + " |")
            p("")
        p("### Ping-pong: requests/s, p50 / p99 latency µs (medians; the load generator, "
          "not the server, caps these on 2 cores)")
        p("")
        p("| server | " + " | ".join(cfg_label(c) for c in cfgs) + " |")
        p("|---|" + "---:|" * len(cfgs))
        for k in keys:
            p(f"| {labels[k]} | " + " | ".join(
                f"{fmt(summary[(c, k)]['rps'], 0)} · {fmt(summary[(c, k)]['p50'], 0)} / "
                f"{fmt(summary[(c, k)]['p99'], 0)}" if summary[(c, k)]["rps"] else "—"
                for c in cfgs) + " |")
        p("")

    for cfg, runs in results["stream"].items():
        size, conns = (int(x) for x in cfg.split("x"))
        p(f"### Streaming: {size_label(size)} writes, {conns} connections, window "
          f"{size_label(max(4 * size, 65536))} per connection (medians)")
        p("")
        p("| server | MiB/s echoed | server CPU µs per MiB | ratio to C floor | ratio to uvloop |")
        p("|---|---:|---:|---:|---:|")
        for k in keys:
            rs = [r for r in runs.get(k, []) if not r.get("errors")]
            p(f"| {labels[k]} | {fmt(median([r.get('mib_s') for r in rs]), 0)} | "
              f"{fmt(median([r.get('cpu_us_per_mib') for r in rs]), 0)} | "
              f"{fmt_ratio(median(ratios(runs, k, FLOOR, 'cpu_us_per_mib')))} | "
              f"{fmt_ratio(median(ratios(runs, k, UVLOOP, 'cpu_us_per_mib')))} |")
        p("")

    # Strata on the proactor loop against the io_uring floor and against Strata on the selector
    # loop (the first other loop of --loops), both APIs; the targets are the protocol API's.
    loop_keys = results.get("strata_loop_keys", {})
    pro = loop_keys.get(PROACTOR, {})
    ref_loop = selector_reference(results.get("loops", []))
    sel = loop_keys.get(ref_loop, {}) if ref_loop else {}
    pro_pairs = []
    for api in ("protocol", "streams"):
        if pro.get(api) in keys:
            pro_pairs += [(pro[api], den) for den in (URING_FLOOR, URING_APART, sel.get(api))
                          if den in keys]
    if pro_pairs and cfgs:
        p("### Strata on the proactor loop: median per-repetition ratio of server CPU per "
          f"request to the io_uring floor and to Strata on {ref_loop}")
        p("")
        p("| ratio | " + " | ".join(cfg_label(c) for c in cfgs) + " |")
        p("|---|" + "---:|" * len(cfgs))
        checks = []
        for num, den in pro_pairs:
            cells = []
            for c in cfgs:
                r = median(ratios(pp[c], num, den, "cpu_us_per_req"))
                results.setdefault("proactor_ratios", {})[f"{c}/{num}/{den}"] = r
                cells.append(fmt_ratio(r))
                if num != pro.get("protocol"):
                    continue
                conns = int(c.split("x")[1])
                if den == URING_APART:
                    continue  # (no target)
                target = PROACTOR_VS_URING if den == URING_FLOOR else \
                    proactor_vs_selector_target(conns)
                if target is not None:
                    checks.append((f"{cfg_label(c)}: CPU/req ≤ {target:.2f} × {labels[den]}", r,
                                   r is not None and r <= target))
            p(f"| {labels[num]} ÷ {labels[den]} | " + " | ".join(cells) + " |")
        p("")
        results["proactor_checks"] = [[name, v, ok] for name, v, ok in checks]
        if checks:
            p("| target (the proactor issue) | measured | met |")
            p("|---|---:|:-:|")
            for name, v, ok in checks:
                p(f"| {name} | {fmt(v, 2)} | {'yes' if ok else '**no**'} |")
            p("")

    if results["strace"] or results["callgrind"]:
        sizes = a.count_sizes
        p("### System calls and user-space instructions per request (ping-pong, 10 connections; "
          "difference of two runs, so start-up cancels)")
        p("")
        p("| server | " + " | ".join(f"syscalls/req {size_label(s)}" for s in sizes) + " | " +
          " | ".join(f"instructions/req {size_label(s)}" for s in sizes) + " |")
        p("|---|" + "---:|" * (2 * len(sizes)))
        for k in keys:
            sc = [results["strace"].get(k, {}).get(str(s), {}).get("per_request") for s in sizes]
            ir = [results["callgrind"].get(k, {}).get(str(s), {}).get("per_request")
                  for s in sizes]
            p(f"| {labels[k]} | " + " | ".join(fmt(x, 2) for x in sc) + " | " +
              " | ".join(fmt(x, 0) for x in ir) + " |")
        if STRATA in keys:
            p("| *target for Strata protocol* | " + " | ".join("≤ 2.1" for _ in sizes) + " | " +
              " | ".join("≤ 300" for _ in sizes) + " |")
        if STRATA_STREAMS in keys:
            p("| *target for Strata streams* | " +
              " | ".join(f"≤ {STREAMS_SYSCALLS}" for _ in sizes) + " | " +
              " | ".join(f"≤ {STREAMS_INSTRUCTIONS}" for _ in sizes) + " |")
        p("")

    if results["idle"]:
        n = a.idle
        p(f"### Memory: {n:,} idle connections (server RSS growth over a warmed-up server)")
        p("")
        p("| server | accepted | RSS before KiB | RSS after KiB | bytes per idle connection |")
        p("|---|---:|---:|---:|---:|")
        for k in keys:
            r = results["idle"].get(k)
            if r:
                p(f"| {labels[k]} | {r['accepted']:,} | {r['rss_before_kib']:,} | "
                  f"{r['rss_after_kib']:,} | {r['bytes_per_conn']:,.0f} |")
        p("| *target for Strata* | | | | ≤ 1,024 |")
        p("")

    if "strata" in keys and cfgs:
        p("### Strata against its targets")
        p("")
        checks = []
        for c in cfgs:
            s = summary[(c, "strata")]
            if FLOOR in keys:
                checks.append((f"{cfg_label(c)}: CPU/req ≤ 1.05 × C floor", s["floor"],
                               s["floor"] is not None and s["floor"] <= 1.05))
            if UVLOOP in keys:
                checks.append((f"{cfg_label(c)}: CPU/req ≤ 0.9 × uvloop", s["uvloop"],
                               s["uvloop"] is not None and s["uvloop"] <= 0.9))
            for other in ("asio_cb", "asio_coro", "libuv"):
                if other in keys:
                    r = median(ratios(pp[c], "strata", other, "cpu_us_per_req"))
                    checks.append((f"{cfg_label(c)}: CPU/req below {labels[other]}", r,
                                   r is not None and r < 1.0))
        for s in a.count_sizes:
            v = results["strace"].get("strata", {}).get(str(s), {}).get("per_request")
            fl = results["strace"].get(FLOOR, {}).get(str(s), {}).get("per_request")
            # at one decimal, as the target and the floor's "2.1" are quoted
            if "strata" in results["strace"]:
                checks.append((f"syscalls/req at {size_label(s)} ≤ 2.1 (at one decimal; C floor "
                               f"{fmt(fl, 2)})", v, v is not None and round(v, 1) <= 2.1))
            v = results["callgrind"].get("strata", {}).get(str(s), {}).get("per_request")
            if "strata" in results["callgrind"]:
                checks.append((f"instructions/req at {size_label(s)} ≤ 300", v,
                               v is not None and v <= 300))
        if "strata" in results["idle"]:
            v = results["idle"]["strata"].get("bytes_per_conn")
            checks.append(("bytes per idle connection ≤ 1024", v, v is not None and v <= 1024))
        p("| target | measured | met |")
        p("|---|---:|:-:|")
        for name, v, ok in checks:
            p(f"| {name} | {fmt(v, 2)} | {'yes' if ok else '**no**'} |")
        p("")

    if STRATA_STREAMS in keys and (cfgs or results["strace"] or results["callgrind"]):
        p("### Strata streams against their targets (the streams issue)")
        p("")
        checks = []
        for c in cfgs:
            size, conns = (int(x) for x in c.split("x"))
            if size not in STREAMS_TARGET_SIZES or conns != 10:
                continue
            if STRATA in keys:
                r = median(ratios(pp[c], STRATA_STREAMS, STRATA, "cpu_us_per_req"))
                checks.append((f"{cfg_label(c)}: CPU/req ≤ {STREAMS_VS_PROTOCOL} × Strata "
                               "protocol", r, r is not None and r <= STREAMS_VS_PROTOCOL))
            if UVLOOP_STREAMS in keys:
                r = median(ratios(pp[c], STRATA_STREAMS, UVLOOP_STREAMS, "cpu_us_per_req"))
                checks.append((f"{cfg_label(c)}: CPU/req ≤ {STREAMS_VS_UVLOOP} × uvloop "
                               "streams", r, r is not None and r <= STREAMS_VS_UVLOOP))
        for s in a.count_sizes:
            if STRATA_STREAMS in results["strace"]:
                v = results["strace"][STRATA_STREAMS].get(str(s), {}).get("per_request")
                uv = results["strace"].get(UVLOOP_STREAMS, {}).get(str(s), {}).get("per_request")
                checks.append((f"syscalls/req at {size_label(s)} ≤ {STREAMS_SYSCALLS} (at one "
                               f"decimal; uvloop streams {fmt(uv, 2)})", v,
                               v is not None and round(v, 1) <= STREAMS_SYSCALLS))
            if STRATA_STREAMS in results["callgrind"]:
                v = results["callgrind"][STRATA_STREAMS].get(str(s), {}).get("per_request")
                uv = results["callgrind"].get(UVLOOP_STREAMS, {}).get(str(s), {}).get(
                    "per_request")
                checks.append((f"instructions/req at {size_label(s)} ≤ {STREAMS_INSTRUCTIONS} "
                               f"(uvloop streams {fmt(uv, 0)})", v,
                               v is not None and v <= STREAMS_INSTRUCTIONS))
        p("| target | measured | met |")
        p("|---|---:|:-:|")
        for name, v, ok in checks:
            p(f"| {name} | {fmt(v, 2)} | {'yes' if ok else '**no**'} |")
        p("")

    notes = []
    for loop, why in results.get("loops_refused", {}).items():
        notes.append(f"Strata on {loop} not measured: echo_server refused `--loop {loop}` "
                     f"({why}).")
    if results.get("idle_skipped"):
        notes.append("Idle memory not measured for " + ", ".join(
            labels[k] for k in results["idle_skipped"]) + ": the select loop takes descriptors "
            "below FD_SETSIZE (1,024) only.")
    if not any(is_strata(k) for k in keys) and not results.get("loops_refused"):
        notes.append("**Strata's echo server is not in these tables**: "
                     f"{results.get('strata_note', 'it was not found')}.")
    if a.callgrind_servers is not None and results["callgrind"]:
        notes.append("Instructions measured for "
                     + ", ".join(k for k in keys if k in a.callgrind_servers)
                     + " only (--streams --quick: the Python servers take about 12 s each "
                     "under callgrind).")
    la0, la1 = results["loadavg_start"], results["loadavg_end"]
    if cfgs:
        notes.append(
            f"Servers pinned to CPU {SERVER_CPU}, echo_load to CPU {LOAD_CPU}; {a.reps} "
            f"repetitions of {a.warmup} s warm-up + {a.duration} s measured per server and "
            "configuration, interleaved. CPU per request = server utime + stime "
            "(/proc/PID/stat) over the measured window / requests completed in it. Ratios are "
            "medians of per-repetition ratios (< 1: cheaper than the reference).")
    if results["strace"] or results["callgrind"]:
        notes.append(f"Syscalls: strace -f -c, (calls at {a.strace_n[1]} requests − calls at "
                     f"{a.strace_n[0]}) / {a.strace_n[1] - a.strace_n[0]}. Instructions: "
                     f"valgrind --tool=callgrind, (Ir at {a.callgrind_n[1]} − Ir at "
                     f"{a.callgrind_n[0]}) / {a.callgrind_n[1] - a.callgrind_n[0]}; user space "
                     "only. Machine load barely moves these (the syscall count only through how many events one epoll_wait returns).")
    notes.append(f"{results['machine']}; load average {la0} at start, {la1} at end"
                 + (" (a busy machine: CPU/request and rps are noisy; syscall and instruction "
                    "counts are not)" if float(la0.split(",")[0]) > 0.5 or
                    float(la1.split(",")[0]) > 0.5 else "") + ".")
    for f in results["failures"]:
        notes.append(f"Failure: {f}")
    for n in notes:
        p(f"- {n}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--servers", default="")
    ap.add_argument("--sizes", default="")
    ap.add_argument("--connections", default="")
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--skip", default="",
                    help="comma list of: pingpong,stream,strace,callgrind,idle")
    ap.add_argument("--streams", action="store_true",
                    help="the streams comparison: servers " + ",".join(STREAMS_SERVERS) +
                    ", 64 B and 1 KiB, 10 connections, no idle-memory phase (and --quick: "
                    "no streaming phase, counts at 64 B, callgrind for Strata's servers only)")
    ap.add_argument("--strata-note", default="")
    ap.add_argument("--loops", default="selector",
                    help="comma list of the loops Strata's servers run on (echo_server --loop; "
                    "default selector); the first keeps the keys strata and strata_streams, "
                    "the others get the loop appended: strata_poll, strata_streams_poll")
    a = ap.parse_args()
    a.load = str(Path(a.build) / "bench" / "echo" / "echo_load")
    a.out_dir = a.build
    q = a.quick
    st = a.streams
    a.sizes = [int(x) for x in a.sizes.split(",") if x] or ([64, 1024] if st else
                                                               [64, 1024, 16384])
    a.connections = [int(x) for x in a.connections.split(",") if x] or (
        [10] if q or st else [10, 50])
    a.reps = a.reps or (3 if q else 5)
    a.duration, a.warmup = (0.5, 0.2) if q else (1.5, 0.5)
    a.stream_size, a.stream_conns = 16384, 10
    a.count_sizes = [64] if q else [64, 1024]
    a.strace_n = (1000, 5000) if q else (2000, 22000)
    a.callgrind_n = (1000, 3000) if q else (2000, 12000)
    a.idle = 2000 if q else 10000
    skip = set(x for x in a.skip.split(",") if x)
    unknown = skip - {"pingpong", "stream", "strace", "callgrind", "idle"}
    if unknown:
        log(f"unknown phase(s) to skip: {', '.join(sorted(unknown))}")
        return 2
    if st:
        skip.add("idle")
        if q:
            skip.add("stream")
    a.stream_phase = "stream" not in skip
    # --streams --quick: the Python servers under callgrind would not fit in a minute
    loops = [x for x in a.loops.split(",") if x]
    if not loops or len(set(loops)) != len(loops):
        log(f"--loops: a comma list of distinct loops, got {a.loops!r}")
        return 2
    all_servers = servers_for(a.build, loops)
    extra_strata = [s.key for s in all_servers if is_strata(s.key) and s.key not in STRATA_KEYS]
    a.callgrind_servers = set(STRATA_KEYS) | set(extra_strata) if st and q else None

    wanted = [x for x in a.servers.split(",") if x] or (
        STREAMS_SERVERS + extra_strata if st else [])
    unknown = set(wanted) - {s.key for s in all_servers}
    if unknown:
        log(f"unknown server(s): {', '.join(sorted(unknown))}; known: "
            + ", ".join(s.key for s in all_servers))
        return 2
    servers = [s for s in all_servers if not wanted or s.key in wanted]
    if a.strata_note:  # run_echo.sh found no usable echo_server target: no stale binary
        for s in servers:
            if is_strata(s.key):
                s.available = False
    for s in servers:
        if not s.available:
            log(f"  ! {s.label}: {s.cmd[0]} not found, skipped")
    present = [s for s in servers if s.available]
    # A loop Strata's server refuses (--loop proactor before the proactor loop lands) leaves that
    # loop's servers out of every phase, with one note, rather than a failure per phase and run.
    loops_refused = {}
    for s in present:
        if is_strata(s.key) and s.loop not in loops_refused:
            why = refusal(["taskset", "-c", SERVER_CPU, *s.cmd])
            if why:
                loops_refused[s.loop] = why
                log(f"  ! Strata on {s.loop}: echo_server refused --loop {s.loop} ({why}); "
                    "that loop's servers are skipped")
            else:
                loops_refused.setdefault(s.loop, None)
    loops_refused = {lp: why for lp, why in loops_refused.items() if why}
    present = [s for s in present if not (is_strata(s.key) and s.loop in loops_refused)]

    signal.signal(signal.SIGTERM, lambda *_: (end_all(), sys.exit(143)))
    signal.signal(signal.SIGINT, lambda *_: (end_all(), sys.exit(130)))
    results = {
        "present": [s.key for s in present],
        "labels": {s.key: s.label for s in servers},
        "loops": loops,
        "loops_refused": loops_refused,
        "strata_loop_keys": strata_loop_keys(loops),
        "pingpong": {}, "stream": {}, "strace": {}, "callgrind": {}, "idle": {},
        "failures": [],
        "strata_note": a.strata_note or "examples/echo_server was not found in the build",
        "loadavg_start": ", ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Linux {platform.release()}",
        "config": {"quick": q, "streams": st, "skip": sorted(skip), "sizes": a.sizes, "connections": a.connections, "reps": a.reps,
                   "duration": a.duration, "warmup": a.warmup, "strace_n": a.strace_n,
                   "callgrind_n": a.callgrind_n, "idle": a.idle},
    }
    try:
        cpu = [l for l in Path("/proc/cpuinfo").read_text().splitlines()
               if l.startswith("model name")]
        if cpu:
            results["machine"] = f"{cpu[0].split(':', 1)[1].strip()}, {os.cpu_count()} CPUs, " \
                                 f"Linux {platform.release()}"
    except OSError:
        pass
    t0 = time.monotonic()
    try:
        if "pingpong" not in skip:
            log("== ping-pong" + (" and streaming" if a.stream_phase else "") +
                " (CPU per request, rps, latency)")
            pingpong_matrix(present, a, results)
        if "strace" not in skip:
            log("== system calls per request (strace -c)")
            per_request_counts(present, a, results, "strace")
        if "callgrind" not in skip:
            log("== user-space instructions per request (callgrind)")
            per_request_counts(present, a, results, "callgrind")
        if "idle" not in skip:
            log(f"== memory per idle connection ({a.idle} connections)")
            idle_memory(present, a, results)
    finally:
        end_all()
    results["loadavg_end"] = ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    md = report(results, servers, a)
    results["present"] = [s.key for s in present]
    Path(a.build, "echo.json").write_text(json.dumps(results, indent=1) + "\n")
    Path(a.build, "echo.md").write_text(md)
    print(md, end="")
    log(f"== done in {results['elapsed_s']} s: {a.build}/echo.md, {a.build}/echo.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
