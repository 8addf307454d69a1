#!/usr/bin/env python3
"""Soak and scale scenarios for bench/run_soak.sh (see bench/README.md and docs/reliability.md).

  idle       15,000 concurrent idle connections held by echo_server: all accepted and echoing,
             server RSS before and after, RSS per connection
  churn      60 s of connect / echo / close at full speed against echo_server: the server's fd
             count and RSS at the end equal those at the start
  slowloris  wrk against http_server alone, then with 1,000 connections sending a request head
             one byte every 2 s: attacked throughput >= 0.8 x unattacked, slow heads cut by
             the header timeout
  shutdown   SIGTERM to http_server while 50 clients download a large static file: every
             started response completes, new connections are refused, exit 0 within the 5 s
             grace period

Servers run pinned to CPU 0, clients to CPU 1, every process in its own session, all on
127.0.0.1, every wait bounded. Progress goes to stderr; each scenario's figures and its
PASS/FAIL to stdout; the raw results to <build>/soak.json and the report to <build>/soak.md.
Exit status 1 if any scenario failed.
"""
import argparse
import json
import os
import platform
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_processes import end, end_all, forget
from bench_processes import spawn as _spawn  # noqa: E402  (bench/ on the path first)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = str(Path(__file__).resolve().parent / "clients.py")
PY = sys.executable or "/usr/bin/python3"
SERVER_CPU, CLIENT_CPU = 0, 1
SCENARIOS = ("idle", "churn", "slowloris", "shutdown")
NOFILE = 20000  # the hard limit the scenarios need (15,000 connections + overhead)

# ---- criteria (also in docs/reliability.md) ----
IDLE_CONNECTIONS = 15000
CHURN_SECONDS = 60
CHURN_WARMUP_SECONDS = 3
# RSS may end above its start by at most this: glibc keeps freed chunks in its arena (it trims
# the top of the heap only past M_TRIM_THRESHOLD, 128 KiB) and the loop's containers (ready
# queue, epoll event array, fd table, small-object pools) keep the capacity of the peak
# concurrency, which is the same few connections throughout. Neither grows with the number of
# connections served: over the ~10^5 connections of a run, a leak of even a few bytes per
# connection exceeds it (the report prints the smallest leak per connection it would catch).
CHURN_RSS_TOLERANCE_KIB = 256
SLOW_CONNECTIONS = 1000
SLOW_INTERVAL = 2.0      # seconds between two head bytes of a slow connection
HEADER_TIMEOUT = 5.0     # http_server --header-timeout (default 10 s)
CUT_SLACK = 2.0          # a slow head must be cut within [timeout, timeout + slack] of its first byte
WRK_SECONDS = 20
RATIO_MIN = 0.8
DOWNLOAD_CLIENTS = 50
DOWNLOAD_BYTES = 24 * 1024 * 1024
DOWNLOAD_RATE = 8 * 1024 * 1024   # bytes/s per client: a download takes about 3 s
TERM_AFTER = 1.5  # seconds after every client is streaming
GRACE = 5.0
EXIT_SLACK = 0.5         # process exit and our 10 ms polling, on top of the grace period


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def out(lines, text=""):
    print(text, flush=True)
    lines.append(text)


# ---- processes: everything started here is tracked and ended by pid -----------------------------

def spawn(cmd, cpu=None, nofile=(NOFILE, NOFILE), **kw):
    """bench_processes.spawn, with the open-file limit raised by default."""
    return _spawn(cmd, cpu=cpu, nofile=nofile, **kw)


def read_json_line(p, timeout, want=None):
    """The next JSON line of p's stdout (of event `want`, skipping others) within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {want or 'output'} within {timeout:.0f} s")
        r, _, _ = select.select([p.stdout], [], [], left)
        if not r:
            continue
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"the client ended (status {p.wait(5)}) before {want or 'output'}")
        try:
            obj = json.loads(line)
        except ValueError:
            log(f"  (client: {line.strip()})")
            continue
        if want is None or obj.get("event") == want:
            return obj


def client(args, **kw):
    return spawn([PY, CLIENTS, *args], cpu=CLIENT_CPU, stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, text=True, bufsize=1, **kw)


class Server:
    def __init__(self, build, program, args, errlog, nofile=(NOFILE, NOFILE)):
        self.cmd = [str(Path(build) / "examples" / program), "--port", "0", *args]
        self.errlog = open(errlog, "a")
        self.errlog.write(f"== {time.strftime('%H:%M:%S')} {' '.join(self.cmd)}\n")
        self.errlog.flush()
        self.p = spawn(self.cmd, cpu=SERVER_CPU, nofile=nofile, stdout=subprocess.PIPE,
                       stderr=self.errlog, text=True)
        r, _, _ = select.select([self.p.stdout], [], [], 15)
        line = self.p.stdout.readline().strip() if r else ""
        m = re.fullmatch(r"listening on (\S+):(\d+)", line)
        if not m:
            end(self.p, signal.SIGKILL)
            raise RuntimeError(f"{program} did not print its ready line (got {line!r})")
        self.port = int(m.group(2))
        self.pid = self.p.pid

    def status(self, key):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return None

    def rss_kib(self):
        return self.status("VmRSS")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile(self):
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
        return None

    def cpu_s(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_fds(self, target, timeout, above=False):
        """Waits until the fd count reaches target (>= target with above); returns it."""
        deadline = time.monotonic() + timeout
        n = self.fds()
        while (n < target if above else n != target) and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.fds()
        return n

    def stop(self, sig=signal.SIGTERM, timeout=GRACE + 5):
        """Signals the server; returns (exit status, seconds until it ended)."""
        t0 = time.monotonic()
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        status = None
        while time.monotonic() - t0 < timeout:
            status = self.p.poll()
            if status is not None:
                break
            time.sleep(0.01)
        took = time.monotonic() - t0
        if status is None:
            end(self.p, signal.SIGKILL)
            status = "killed"
        forget(self.p)
        self.errlog.close()
        return status, took


def verdict(ok):
    return "PASS" if ok else "FAIL"


def kib(n):
    return f"{n:,} KiB"


# ---- idle ----------------------------------------------------------------------------------------

def nofile_finding(build, program, args, errlog):
    """Starts program with a soft RLIMIT_NOFILE of 1024 (hard 20,000): does it raise it?"""
    try:
        s = Server(build, program, args, errlog, nofile=(1024, NOFILE))
    except RuntimeError as e:
        return {"error": str(e)}
    try:
        soft, hard = s.nofile()
    finally:
        s.stop()
    return {"started_with": [1024, NOFILE], "runs_with": [soft, hard], "raises": soft > 1024}


def scenario_idle(a, res, lines):
    n = a.idle_connections
    r = res["idle"] = {"connections": n}
    finding = {p: nofile_finding(a.build, p, [], a.errlog) for p in ("echo_server", "http_server")}
    r["nofile_check"] = finding
    srv = Server(a.build, "echo_server", ["--api", a.echo_api, "--loop", a.loop], a.errlog)
    try:
        r["server_nofile"] = srv.nofile()
        base0 = srv.fds()
        rss_fresh = srv.rss_kib()
        # Warm-up: 100 connections opened, echoed and closed, so that what the first
        # connection allocates once (buffers, pools) is not counted per connection.
        w = client(["idle", "--port", str(srv.port), "--count", "100"])
        read_json_line(w, 30, "ready")
        w.stdin.close()
        read_json_line(w, 30, "closed")
        end(w)
        base = srv.wait_fds(base0, 10)
        rss0 = srv.rss_kib()
        log(f"  echo_server pid {srv.pid} port {srv.port}: {base} fds, RSS {rss0} KiB; "
            f"opening {n} connections")
        c = client(["idle", "--port", str(srv.port), "--count", str(n), "--limit", "240"])
        ready = read_json_line(c, 180, "ready")
        fds1 = srv.wait_fds(base + ready["opened"], 15, above=True)
        time.sleep(0.5)
        rss1 = srv.rss_kib()
        fds1 = srv.fds()
        c.stdin.write("check\n")
        c.stdin.flush()
        check = read_json_line(c, 120, "checked")
        rss2 = srv.rss_kib()
        c.stdin.close()
        read_json_line(c, 60, "closed")
        end(c)
        fds_after_close = srv.wait_fds(base, 15)
        rss_after_close = srv.rss_kib()
        # A second round: the memory the first one freed (kept by the allocator, see the
        # report) is reused, so holding them again must not grow RSS much further.
        log(f"  second round of {n} connections")
        c = client(["idle", "--port", str(srv.port), "--count", str(n), "--limit", "240"])
        ready2 = read_json_line(c, 180, "ready")
        srv.wait_fds(base + ready2["opened"], 15, above=True)
        time.sleep(0.5)
        rss_round2 = srv.rss_kib()
        c.stdin.close()
        read_json_line(c, 60, "closed")
        end(c)
        fds_after_round2 = srv.wait_fds(base, 15)
        status, took = srv.stop()
    except BaseException:
        end(srv.p, signal.SIGKILL)
        raise
    per_conn = (rss1 - rss0) * 1024 / n
    r.update({"client_nofile": ready["nofile"], "opened": ready["opened"],
              "open_errors": ready["errors"], "open_seconds": ready["seconds"],
              "echoed_again": check["echoed"], "check_errors": check["errors"],
              "fds_base": base, "fds_held": fds1, "fds_after_close": fds_after_close,
              "rss_fresh_kib": rss_fresh, "rss_before_kib": rss0, "rss_held_kib": rss1,
              "rss_after_check_kib": rss2, "rss_after_close_kib": rss_after_close,
              "bytes_per_connection": round(per_conn), "round2_opened": ready2["opened"],
              "rss_round2_held_kib": rss_round2, "fds_after_round2": fds_after_round2,
              "exit_status": status,
              "exit_seconds": round(took, 2)})
    ok = (ready["opened"] == n and check["echoed"] == n and fds1 - base == n
          and fds_after_close == base and ready2["opened"] == n and fds_after_round2 == base)
    r["pass"] = ok
    out(lines, f"### idle: {n:,} concurrent idle connections "
               f"(echo_server --api {a.echo_api} --loop {a.loop})")
    out(lines)
    out(lines, "| figure | value |")
    out(lines, "|---|---:|")
    out(lines, f"| connections opened, each echoing one byte | {ready['opened']:,} of {n:,} "
               f"(in {ready['seconds']:.1f} s; errors {ready['errors'] or 'none'}) |")
    out(lines, f"| still open and echoing after the RSS reading | {check['echoed']:,} "
               f"(errors {check['errors'] or 'none'}) |")
    out(lines, f"| server fds: base / held / after the client closed | {base} / {fds1:,} / "
               f"{fds_after_close} |")
    out(lines, f"| server RSS: fresh / warmed up (before) / {n:,} held (after) | "
               f"{kib(rss_fresh)} / {kib(rss0)} / {kib(rss1)} |")
    out(lines, f"| server RSS after all closed | {kib(rss_after_close)} |")
    out(lines, f"| second round: {ready2['opened']:,} held again / RSS / fds after its close | "
               f"{kib(rss_round2)} ({rss_round2 - rss1:+,} KiB on the first round) / "
               f"{fds_after_round2} |")
    out(lines, f"| **RSS per idle connection** | **{per_conn:,.0f} bytes** |")
    out(lines, f"| RLIMIT_NOFILE (soft, hard): server / client | "
               f"{r['server_nofile'][0]}, {r['server_nofile'][1]} / {ready['nofile']} |")
    out(lines)
    for prog, f in finding.items():
        if "error" in f:
            out(lines, f"- {prog} with a soft RLIMIT_NOFILE of 1024: could not start: {f['error']}")
        elif not f["raises"]:
            out(lines, f"- **Finding**: {prog} does not raise its RLIMIT_NOFILE soft limit: "
                       f"started with soft 1024 / hard {NOFILE}, it runs with soft "
                       f"{f['runs_with'][0]} (so it accepts at most ~1,000 connections unless "
                       f"its parent raises the limit). This run starts it with "
                       f"{NOFILE}:{NOFILE} (setrlimit before exec, as `prlimit --nofile`).")
        else:
            out(lines, f"- {prog} raises its RLIMIT_NOFILE soft limit itself (1024 -> "
                       f"{f['runs_with'][0]}).")
    out(lines)
    out(lines, "- RSS stays up after the close: glibc keeps the freed per-connection chunks "
               "in its heap (they lie below live memory, so it cannot trim them) and reuses "
               "them, as the second round shows.")
    out(lines)
    out(lines, f"**idle: {verdict(ok)}** — criterion: all {n:,} accepted and echoing (twice), "
               f"the server holding exactly {n:,} more fds, all released after the close "
               f"(both rounds).")
    out(lines)
    return ok


# ---- churn ---------------------------------------------------------------------------------------

def scenario_churn(a, res, lines):
    r = res["churn"] = {}
    srv = Server(a.build, "echo_server", ["--api", a.echo_api, "--loop", a.loop], a.errlog)
    try:
        fds_fresh, rss_fresh = srv.fds(), srv.rss_kib()
        w = client(["churn", "--port", str(srv.port), "--duration", str(CHURN_WARMUP_SECONDS),
                    "--workers", str(a.churn_workers)])
        warm = read_json_line(w, CHURN_WARMUP_SECONDS + 60, "done")
        end(w)
        fds0 = srv.wait_fds(fds_fresh, 10)
        time.sleep(0.3)
        rss0 = srv.rss_kib()
        log(f"  echo_server pid {srv.pid}: start {fds0} fds, RSS {rss0} KiB; churning for "
            f"{a.churn_seconds} s with {a.churn_workers} client processes")
        cpu0 = srv.cpu_s()
        c = client(["churn", "--port", str(srv.port), "--duration", str(a.churn_seconds),
                    "--workers", str(a.churn_workers)])
        samples = []
        t0 = time.monotonic()
        while c.poll() is None and time.monotonic() - t0 < a.churn_seconds + 60:
            samples.append({"t": round(time.monotonic() - t0, 1), "rss_kib": srv.rss_kib(),
                            "fds": srv.fds()})
            time.sleep(min(5.0, max(0.1, a.churn_seconds / 12)))
        done = read_json_line(c, 60, "done")
        end(c)
        cpu1 = srv.cpu_s()
        fds1 = srv.wait_fds(fds0, 10)
        time.sleep(0.3)
        rss1 = srv.rss_kib()
        status, took = srv.stop()
    except BaseException:
        end(srv.p, signal.SIGKILL)
        raise
    conns = done["connections"]
    growth = rss1 - rss0
    detectable = CHURN_RSS_TOLERANCE_KIB * 1024 / conns if conns else None
    ok = (fds1 == fds0 == fds_fresh and growth <= CHURN_RSS_TOLERANCE_KIB and conns > 0
          and not done["errors"])
    r.update({"seconds": done["seconds"], "workers": a.churn_workers, "connections": conns,
              "per_second": done["per_second"], "errors": done["errors"],
              "warmup_connections": warm["connections"], "fds_fresh": fds_fresh,
              "fds_start": fds0, "fds_end": fds1, "rss_fresh_kib": rss_fresh,
              "rss_start_kib": rss0, "rss_end_kib": rss1, "rss_growth_kib": growth,
              "tolerance_kib": CHURN_RSS_TOLERANCE_KIB, "samples": samples,
              "server_cpu_s": round(cpu1 - cpu0, 2),
              "client_cpu_s": [done["client_cpu_user_s"], done["client_cpu_system_s"]],
              "server_cpu_us_per_conn": round((cpu1 - cpu0) * 1e6 / conns, 1) if conns else None,
              "exit_status": status, "exit_seconds": round(took, 2), "pass": ok})
    rss_series = [s["rss_kib"] for s in samples]
    out(lines, f"### churn: {done['seconds']:.0f} s of connect / echo 16 B / close "
               f"({a.churn_workers} client processes, "
               f"echo_server --api {a.echo_api} --loop {a.loop})")
    out(lines)
    out(lines, "| figure | start | end |")
    out(lines, "|---|---:|---:|")
    out(lines, f"| server fds (fresh: {fds_fresh}) | {fds0} | {fds1} |")
    out(lines, f"| server RSS (fresh: {kib(rss_fresh)}) | {kib(rss0)} | {kib(rss1)} |")
    out(lines)
    out(lines, f"- connections: **{conns:,}** in {done['seconds']:.1f} s = "
               f"**{done['per_second']:,.0f} connections/s** (per client process "
               f"{', '.join(f'{x:,}' for x in done['per_worker'])}); errors: "
               f"{done['errors'] or 'none'}")
    out(lines, f"- server CPU {cpu1 - cpu0:.1f} s = {r['server_cpu_us_per_conn']} µs per "
               f"connection ({(cpu1 - cpu0) / done['seconds']:.0%} of CPU 0); the clients on "
               f"CPU 1: {done['client_cpu_user_s']:.1f} s user + "
               f"{done['client_cpu_system_s']:.1f} s system")
    if rss_series:
        out(lines, f"- RSS during the run (every ~5 s): {min(rss_series):,}–{max(rss_series):,} "
                   f"KiB; fds during the run: {min(s['fds'] for s in samples)}–"
                   f"{max(s['fds'] for s in samples)}")
    out(lines, f"- start = after a {CHURN_WARMUP_SECONDS} s warm-up of the same load "
               f"({warm['connections']:,} connections); RSS growth start → end: {growth:+,} KiB "
               f"(tolerance {CHURN_RSS_TOLERANCE_KIB} KiB: glibc's cached free chunks and the "
               f"loop's containers at peak concurrency, neither growing with the connection "
               f"count; over {conns:,} connections it catches a leak of "
               f"{detectable:.1f} bytes per connection or more)" if detectable else
               f"- RSS growth {growth:+,} KiB")
    out(lines)
    out(lines, f"**churn: {verdict(ok)}** — criterion: fds at the end = at the start, RSS at the "
               f"end ≤ start + {CHURN_RSS_TOLERANCE_KIB} KiB, no client errors.")
    out(lines)
    return ok


# ---- slowloris -----------------------------------------------------------------------------------

def wrk(port, seconds, conns=50):
    url = f"http://127.0.0.1:{port}/plaintext"
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url]
    p = spawn(cmd, cpu=CLIENT_CPU, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text, _ = p.communicate(timeout=seconds + 30)
    finally:
        end(p, signal.SIGKILL)
    res = {"text": text}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    res["socket_errors"] = sum(map(int, m.groups())) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        res[f"p{pct}"] = m.group(1) if m else None
    return res


def slowloris_round(a, srv, label):
    """One unattacked wrk run, then one with the slow connections; returns the figures."""
    fds_idle = srv.fds()
    wrk(srv.port, 1)  # warm-up
    srv.wait_fds(fds_idle, 10)
    cpu0 = srv.cpu_s()
    base = wrk(srv.port, a.wrk_seconds)
    cpu1 = srv.cpu_s()
    fds_before = srv.wait_fds(fds_idle, 10)  # wrk's connections closed
    log(f"  [{label}] unattacked: {base['rps']} req/s; starting {a.slow_connections} slow "
        f"connections")
    s = client(["slowloris", "--port", str(srv.port), "--count", str(a.slow_connections),
                "--interval", str(SLOW_INTERVAL),
                "--duration", str(a.wrk_seconds + 60)])
    try:
        ready = read_json_line(s, 40, "ready")
        fds_attack = srv.fds()
        cpu2 = srv.cpu_s()
        attacked = wrk(srv.port, a.wrk_seconds)
        cpu3 = srv.cpu_s()
        fds_end_attack = srv.fds()
        s.stdin.close()
        done = read_json_line(s, 30, "done")
    finally:
        end(s)
    fds_after = srv.wait_fds(fds_before, 15)
    ratio = attacked["rps"] / base["rps"] if base["rps"] and attacked["rps"] else 0.0
    held = [n for t, n in done["open_samples"] if t >= ready["seconds"]]
    log(f"  [{label}] attacked: {attacked['rps']} req/s, ratio {ratio:.3f}; "
        f"{done['cut']} slow connections cut")
    return {"unattacked": {k: v for k, v in base.items() if k != "text"},
            "attacked": {k: v for k, v in attacked.items() if k != "text"},
            "wrk_text": [base["text"], attacked["text"]],
            "ratio": round(ratio, 3),
            "server_cpu_us_per_req": [
                round((cpu1 - cpu0) * 1e6 / base["requests"], 2) if base["requests"] else None,
                round((cpu3 - cpu2) * 1e6 / attacked["requests"], 2) if attacked["requests"]
                else None],
            "slow_ready_s": ready["seconds"], "slow": done,
            "slow_open_min_max": [min(held), max(held)] if held else None,
            "fds": {"before": fds_before, "attack_start": fds_attack,
                    "attack_end": fds_end_attack, "after": fds_after}}


def scenario_slowloris(a, res, lines):
    r = res["slowloris"] = {"header_timeout_s": HEADER_TIMEOUT, "interval_s": SLOW_INTERVAL,
                            "slow_connections": a.slow_connections, "wrk_seconds": a.wrk_seconds}
    srv = Server(a.build, "http_server",
                 ["--header-timeout", str(HEADER_TIMEOUT), "--loop", a.loop], a.errlog)
    rounds = []
    try:
        rounds.append(slowloris_round(a, srv, "round 1"))
        if rounds[0]["ratio"] < RATIO_MIN:
            log("  ratio below 0.8: repeating once to see whether it is noise")
            rounds.append(slowloris_round(a, srv, "round 2"))
        status, took = srv.stop()
    except BaseException:
        end(srv.p, signal.SIGKILL)
        raise
    r["rounds"] = rounds
    r["exit_status"], r["exit_seconds"] = status, round(took, 2)

    def cut_ok(rd):
        c = rd["slow"]["cut_after_s"]
        return (rd["slow"]["cut"] > 0 and c is not None and c["min"] >= HEADER_TIMEOUT - 0.05
                and c["max"] <= HEADER_TIMEOUT + CUT_SLACK)

    def wrk_ok(rd):
        return all(rd[k]["non2xx"] == 0 and rd[k]["socket_errors"] == 0
                   for k in ("unattacked", "attacked"))

    last = rounds[-1]
    ok = last["ratio"] >= RATIO_MIN and cut_ok(last) and wrk_ok(last)
    r["pass"] = ok
    out(lines, f"### slowloris: http_server --header-timeout {HEADER_TIMEOUT:g}, wrk -t1 -c50 "
               f"-d{a.wrk_seconds}s GET /plaintext, {a.slow_connections:,} slow connections "
               f"sending one head byte every {SLOW_INTERVAL:g} s")
    out(lines)
    out(lines, "| round | unattacked req/s | attacked req/s | ratio | p99 latency unattacked / "
               "attacked | server CPU µs/req unattacked / attacked | slow connections held "
               "during wrk | slow heads cut | cut after (s from first byte): min / median / "
               "max | cut with 408 / EOF / reset |")
    out(lines, "|---|---:|---:|---:|---|---|---|---:|---|---|")
    for i, rd in enumerate(rounds, 1):
        sl = rd["slow"]
        c = sl["cut_after_s"] or {}
        held = rd["slow_open_min_max"]
        out(lines, f"| {i} | {rd['unattacked']['rps']:,.0f} | {rd['attacked']['rps']:,.0f} | "
                   f"**{rd['ratio']:.3f}** | {rd['unattacked']['p99']} / {rd['attacked']['p99']} "
                   f"| {rd['server_cpu_us_per_req'][0]} / {rd['server_cpu_us_per_req'][1]} | "
                   f"{held[0]:,}–{held[1]:,} | {sl['cut']:,} | {c.get('min')} / "
                   f"{c.get('median')} / {c.get('max')} | {sl['cut_408']:,} / {sl['cut_eof']:,} "
                   f"/ {sl['cut_reset']:,} |" if held else f"| {i} | (no samples) |")
    out(lines)
    for i, rd in enumerate(rounds, 1):
        sl = rd["slow"]
        out(lines, f"- round {i}: {sl['connects']:,} slow connections made in "
                   f"{sl['seconds']:.0f} s (the first {a.slow_connections:,} open "
                   f"{rd['slow_ready_s']:.1f} s after the start; connect errors "
                   f"{sl['connect_errors'] or 'none'}), at most {sl['bytes_max']} head bytes "
                   f"sent on one; server fds before / at the start / end of the attacked run / "
                   f"after: {rd['fds']['before']} / {rd['fds']['attack_start']:,} / "
                   f"{rd['fds']['attack_end']:,} / {rd['fds']['after']}; the slow client used "
                   f"{sl['cpu_s']} s of CPU 1 beside wrk; wrk errors (non-2xx, socket): "
                   f"{rd['unattacked']['non2xx']}+{rd['unattacked']['socket_errors']} / "
                   f"{rd['attacked']['non2xx']}+{rd['attacked']['socket_errors']}")
    if len(rounds) > 1:
        out(lines, f"- round 1 missed {RATIO_MIN} ({rounds[0]['ratio']:.3f}): repeated once; "
                   "the verdict is round 2's")
    out(lines)
    out(lines, f"**slowloris: {verdict(ok)}** — criterion: attacked ≥ {RATIO_MIN} × unattacked "
               f"req/s (same run, back to back), no wrk errors, every slow head cut by the "
               f"header timeout: {HEADER_TIMEOUT:g}–{HEADER_TIMEOUT + CUT_SLACK:g} s after its "
               f"first byte.")
    out(lines)
    return ok


# ---- shutdown ------------------------------------------------------------------------------------

def probe_refused(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return "accepted"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()


def scenario_shutdown(a, res, lines):
    r = res["shutdown"] = {"clients": DOWNLOAD_CLIENTS, "file_bytes": DOWNLOAD_BYTES,
                           "rate_per_client": DOWNLOAD_RATE, "grace_s": GRACE}
    www = Path(a.build) / "soak-www"
    www.mkdir(exist_ok=True)
    big = www / "big.bin"
    if not big.exists() or big.stat().st_size != DOWNLOAD_BYTES:
        block = os.urandom(1 << 20)
        with open(big, "wb") as f:
            for _ in range(DOWNLOAD_BYTES >> 20):
                f.write(block)
    srv = Server(a.build, "http_server", ["--root", str(www), "--loop", a.loop], a.errlog)
    try:
        c = client(["download", "--port", str(srv.port), "--path", "/big.bin",
                    "--clients", str(DOWNLOAD_CLIENTS), "--rate", str(DOWNLOAD_RATE),
                    "--stagger", "1.0", "--limit", "40"])
        ready = read_json_line(c, 30, "ready")
        time.sleep(TERM_AFTER)
        conns_at_term = srv.fds()
        exited = []  # the time the server's exit was reaped (a thread blocks in wait())

        def reap():
            try:
                srv.p.wait(GRACE + 5)
            except subprocess.TimeoutExpired:
                return
            exited.append(time.monotonic())

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        t_term = time.monotonic()
        os.kill(srv.pid, signal.SIGTERM)
        probes = []
        for delay in (0.2, 1.0, 2.0):
            time.sleep(max(0.0, t_term + delay - time.monotonic()))
            if exited:
                probes.append((delay, "exited"))
                continue
            probes.append((delay, probe_refused(srv.port)))
        reaper.join(GRACE + 6)
        if exited:
            status, took = srv.p.returncode, exited[0] - t_term
        else:
            end(srv.p, signal.SIGKILL)
            status, took = "killed", time.monotonic() - t_term
        forget(srv.p)
        srv.errlog.close()
        done = read_json_line(c, 45, "done")
        end(c)
    except BaseException:
        end(srv.p, signal.SIGKILL)
        raise
    resp = done["responses"]
    started = [e for e in resp if e.get("status") is not None]
    incomplete = [e for e in started if not e["complete"]]
    head_cut = [e for e in resp if e.get("status") is None]
    in_flight = [e for e in started if e["started"] <= t_term < e.get("ended", 1e18)]
    in_flight_done = [e for e in in_flight if e["complete"]]
    # in flight at SIGTERM counting those requested but not yet begun
    requested_in_flight = [e for e in started if e["requested"] <= t_term < e.get("ended", 1e18)]
    last_end = max((e["ended"] for e in in_flight), default=t_term)
    # What the in-flight responses still had to deliver at SIGTERM (from the clients' rate).
    left = [e["length"] - min(e["length"], int(DOWNLOAD_RATE * (t_term - e["started"])))
            for e in in_flight]
    after_term_connects = [t for t in done["connects"] if t > t_term + 0.05]
    refused = done["refused"]
    non200 = [e for e in started if e["status"] != 200]
    unanswered = done["unanswered"]
    unanswered_before = [u for u in unanswered if u["requested"] <= t_term]
    ok = (not incomplete and not head_cut and len(in_flight) > 0 and status == 0
          and took <= GRACE + EXIT_SLACK and all(p == "refused" or p == "exited"
                                                 for _, p in probes)
          and any(p == "refused" for _, p in probes) and not after_term_connects
          and not non200)
    r.update({"ready_s": ready["seconds"], "server_fds_at_term": conns_at_term,
              "responses_started": len(started), "responses_complete":
              len(started) - len(incomplete), "incomplete": incomplete[:20],
              "head_cut": head_cut[:20], "non200": len(non200),
              "in_flight_at_term": len(in_flight), "in_flight_completed": len(in_flight_done),
              "requested_in_flight_at_term": len(requested_in_flight),
              "last_in_flight_end_s": round(last_end - t_term, 3),
              "left_at_term_bytes": {"sum": sum(left), "max": max(left, default=0)},
              "connects_after_term": len(after_term_connects),
              "client_connects_refused": len(refused),
              "first_refused_after_s": round(min(refused) - t_term, 3) if refused else None,
              "probes": probes, "exit_status": status, "exit_seconds": round(took, 3),
              "connect_errors": done["connect_errors"],
              "unanswered_requests": len(unanswered),
              "unanswered_sent_before_term": len(unanswered_before), "pass": ok})
    out(lines, f"### shutdown: SIGTERM to http_server --root while {DOWNLOAD_CLIENTS} clients "
               f"download a {DOWNLOAD_BYTES >> 20} MiB file (keep-alive, each read at "
               f"{DOWNLOAD_RATE >> 20} MiB/s: ~{DOWNLOAD_BYTES / DOWNLOAD_RATE:.0f} s a download)")
    out(lines)
    out(lines, "| figure | value |")
    out(lines, "|---|---:|")
    out(lines, f"| responses started (status line received) / complete (full Content-Length) | "
               f"{len(started)} / {len(started) - len(incomplete)} |")
    out(lines, f"| in flight at SIGTERM / of those complete | {len(in_flight)} / "
               f"{len(in_flight_done)} |")
    out(lines, f"| bytes the in-flight responses had left at SIGTERM: total / largest | "
               f"{sum(left) / 2**20:,.1f} MiB / {max(left, default=0) / 2**20:.1f} MiB |")
    out(lines, f"| last in-flight response fully received, after SIGTERM | "
               f"{last_end - t_term:.2f} s |")
    out(lines, f"| server exit status / time from SIGTERM to exit | {status} / {took:.2f} s |")
    out(lines, f"| probe connects at +0.2 s / +1 s / +2 s | "
               f"{' / '.join(p for _, p in probes)} |")
    out(lines, f"| clients' reconnects after SIGTERM: refused / accepted | {len(refused)} / "
               f"{len(after_term_connects)} |")
    out(lines, f"| next requests closed unanswered (keep-alive, sent after their download): "
               f"all / sent before SIGTERM | {len(unanswered)} / {len(unanswered_before)} |")
    out(lines)
    if incomplete:
        out(lines, f"- {len(incomplete)} started responses were cut short, e.g. "
                   f"{json.dumps(incomplete[0])}")
    if head_cut:
        out(lines, f"- {len(head_cut)} connections were closed inside a response head")
    out(lines, f"**shutdown: {verdict(ok)}** — criterion: every started response complete, at "
               f"least one in flight at SIGTERM, new connections refused, exit 0 within the "
               f"{GRACE:g} s grace period (+{EXIT_SLACK:g} s for the exit and our polling).")
    out(lines)
    return ok


# ---- main ----------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", required=True)
    p.add_argument("--echo-api", default="protocol", choices=("protocol", "streams"))
    p.add_argument("--loop", default="selector",
                   help="the servers' --loop (selector, epoll, poll, proactor; default selector)")
    p.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS)
    p.add_argument("--churn-seconds", type=float, default=CHURN_SECONDS)
    p.add_argument("--churn-workers", type=int, default=3)
    p.add_argument("--slow-connections", type=int, default=SLOW_CONNECTIONS)
    p.add_argument("--wrk-seconds", type=int, default=WRK_SECONDS)
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    a = p.parse_args()
    for s in a.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r} (idle, churn, slowloris, shutdown)")
    a.build = str(Path(a.build).resolve())
    a.errlog = str(Path(a.build) / "soak.servers.err")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < NOFILE:
        log(f"warning: the hard RLIMIT_NOFILE is {hard}, below {NOFILE}: idle will fail")

    def on_signal(signum, _frame):
        end_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
           "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0],
           "kernel": platform.release(), "scenarios": a.scenarios}
    lines = []
    out(lines, f"## Soak and scale ({res['date']}, {os.cpu_count()} CPUs, Linux "
               f"{platform.release()}, load average {os.getloadavg()[0]:.2f} at the start)")
    out(lines)
    verdicts = {}
    t_all = time.monotonic()
    try:
        for s in a.scenarios:
            log(f"== {s}")
            t0 = time.monotonic()
            try:
                verdicts[s] = globals()[f"scenario_{s}"](a, res, lines)
            except Exception as e:  # noqa: BLE001 - a scenario that breaks is a FAIL, not a crash
                log(f"  ! {s}: {type(e).__name__}: {e}")
                res.setdefault(s, {})["error"] = f"{type(e).__name__}: {e}"
                out(lines, f"**{s}: FAIL** — the scenario did not complete: "
                           f"{type(e).__name__}: {e}")
                out(lines)
                verdicts[s] = False
            res.setdefault(s, {})["seconds"] = round(time.monotonic() - t0, 1)
            log(f"   {s}: {verdict(verdicts[s])} ({time.monotonic() - t0:.0f} s)")
    finally:
        end_all()
    res["verdicts"] = verdicts
    res["seconds"] = round(time.monotonic() - t_all, 1)
    res["loadavg_end"] = os.getloadavg()[0]
    out(lines, "| scenario | verdict | seconds |")
    out(lines, "|---|---|---:|")
    for s in a.scenarios:
        out(lines, f"| {s} | {verdict(verdicts[s])} | {res[s]['seconds']:.0f} |")
    out(lines)
    out(lines, f"Total {res['seconds']:.0f} s; load average {res['loadavg_end']:.2f} at the end.")
    Path(a.build, "soak.json").write_text(json.dumps(res, indent=1) + "\n")
    Path(a.build, "soak.md").write_text("\n".join(lines) + "\n")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
