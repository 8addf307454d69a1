#!/usr/bin/env python3
"""Runs the TLS benchmark for bench/run_tls.sh (see bench/README.md, "TLS side by side").

Every server runs pinned to CPU 0 and the load generator (tls_load) to CPU 1; `openssl speed`
runs on CPU 0 too. Servers start once and stay up through the run; repetition r runs every
server once, in an order rotated by r, and ratios are medians of per-repetition ratios.
Progress goes to stderr, the Markdown report to stdout; the raw results go to
<build>/tls.json and the report to <build>/tls.md.
"""
import argparse
import json
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_processes import end, end_all, forget, spawn  # noqa: E402  (bench/ on the path first)

ROOT = Path(__file__).resolve().parents[2]
PY = "/usr/bin/python3"
SERVER_CPU, LOAD_CPU = "0", "1"
STRATA, NGINX, FLOOR, UVLOOP, ASYNCIO = "strata", "nginx", "c_floor", "uvloop", "asyncio"
ALL = [STRATA, NGINX, FLOOR, UVLOOP, ASYNCIO]
ECHO_SERVERS = [STRATA, FLOOR, UVLOOP, ASYNCIO]  # nginx does not echo
LABELS = {
    STRATA: "Strata echo_server (TLS)",
    NGINX: "nginx `return 200`",
    FLOOR: "C epoll + OpenSSL (floor)",
    UVLOOP: "uvloop + ssl",
    ASYNCIO: "asyncio + ssl",
}
# Strata's server on the loops of --loops: {key: loop}; the first loop keeps the key strata.
STRATA_LOOPS = {STRATA: "selector"}
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
SUITE = "TLS_AES_128_GCM_SHA256"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes: everything started here runs in its own session and is ended by its group id

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unavailable(Exception):
    pass


class Running:
    """A started server, pinned to SERVER_CPU; pid is the process that serves."""

    def __init__(self, key, cmd, tmp, ready="line", port=None, ready_timeout=20.0, wrapper=()):
        self.key = key
        self.err_path = Path(tmp) / f"{key}.{len(list(Path(tmp).glob('*.err')))}.err"
        self.err = open(self.err_path, "w")
        # taskset and valgrind exec the command: the pid stays the server's
        self.proc = spawn(["taskset", "-c", SERVER_CPU, *wrapper, *cmd], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.pid = self.proc.pid
        if ready == "line":
            line = self._readline(ready_timeout)
            if not line or not line.startswith("listening on "):
                rc = self.proc.poll()
                tail = self.stderr_tail()
                self.stop()
                raise Unavailable(f"no 'listening on' line (exit status {rc}; got {line!r}; "
                                  f"stderr: {tail!r})", rc)
            self.port = int(line.rsplit(":", 1)[1])
        else:  # a fixed port: wait until it accepts
            self.port = port
            end = time.monotonic() + ready_timeout
            while True:
                if self.proc.poll() is not None:
                    raise Unavailable(f"exited with status {self.proc.returncode} "
                                      f"(stderr: {self.stderr_tail()!r})", self.proc.returncode)
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > end:
                        self.stop()
                        raise Unavailable("did not accept connections in time", None)
                    time.sleep(0.05)

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

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self):
        try:
            if not self.err.closed:
                self.err.flush()
            return self.err_path.read_text()[-300:].strip()
        except (OSError, ValueError):
            return ""

    def stop(self, grace=8.0):
        if grace > 8.0 and self.proc.poll() is None:  # valgrind: a second SIGINT if need be
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(grace / 2)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        rc = end(self.proc, signal.SIGINT, grace)
        self.err.close()
        return rc


def nginx_conf(tmp, port, cert, key):
    d = Path(tmp) / "nginx"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""# generated by bench/tls/run_tls.py
worker_processes 1;
master_process off;  # one process serves, so its pid is the one measured
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {TLS12_CIPHERS};
    ssl_conf_command Ciphersuites {SUITE};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
    return d, conf


def start_server(key, a, wrapper=(), ready_timeout=20.0):
    kw = {"wrapper": wrapper, "ready_timeout": ready_timeout}
    cert, keyf = a.cert, a.key
    tls_py = str(ROOT / "bench" / "python" / "tls_echo_server.py")
    b = Path(a.build)
    if key in STRATA_LOOPS:
        return Running(key, [str(b / "examples" / "echo_server"), "--host", "127.0.0.1",
                             "--port", "0", "--loop", STRATA_LOOPS[key], "--tls-cert", cert,
                             "--tls-key", keyf], a.tmp, **kw)
    if key == FLOOR:
        return Running(key, [str(b / "c_tls_echo"), "--port", "0", "--cert", cert, "--key", keyf],
                       a.tmp, **kw)
    if key in (UVLOOP, ASYNCIO):
        extra = ["--uvloop"] if key == UVLOOP else []
        return Running(key, [PY, tls_py, "--port", "0", "--cert", cert, "--key", keyf, *extra],
                       a.tmp, **kw)
    if key == NGINX:
        port = free_port()
        d, conf = nginx_conf(a.tmp, port, cert, keyf)
        return Running(key, [a.nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
                       a.tmp, ready="port", port=port, **kw)
    raise ValueError(key)


# ---------------------------------------------------------------------------------------------
# loads

def tls_load(a, srv, mode, extra, warmup, duration, timeout=None):
    timeout = timeout or warmup + duration + 20
    cmd = ["taskset", "-c", LOAD_CPU, str(Path(a.build) / "tls_load"), "--port", str(srv.port),
           "--mode", mode, "--server-pid", str(srv.pid), "--warmup", str(warmup),
           "--duration", str(duration), "--timeout", str(int(timeout)),
           "--tls", a.tls, *extra]
    p = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
               text=True)
    try:
        out, err = p.communicate(timeout=timeout + 20)
    except subprocess.TimeoutExpired:
        end(p, signal.SIGKILL)
        return {"errors": 1, "first_error": "tls_load did not finish in time"}
    forget(p)
    lines = out.strip().splitlines()
    if not lines:
        return {"errors": 1, "first_error": f"tls_load printed nothing (exit {p.returncode}): "
                                            f"{err.strip()[:200]}"}
    return json.loads(lines[-1])


def openssl_speed(seconds):
    """AES-128-GCM bytes/s at 16 KiB blocks, on the servers' CPU."""
    out = subprocess.run(["taskset", "-c", SERVER_CPU, "openssl", "speed", "-evp", "aes-128-gcm",
                          "-bytes", "16384", "-seconds", str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=seconds + 30).stdout
    for line in out.splitlines():
        m = re.match(r"^\s*AES-128-GCM\s+([\d.]+)k\s*$", line, re.I)
        if m:
            return float(m.group(1)) * 1000.0
    raise RuntimeError(f"could not parse openssl speed's output: {out[-300:]!r}")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# report helpers

def fmt(x, digits=1):
    if x is None:
        return "—"
    if abs(x) >= 100 and digits <= 1:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def per_rep_ratio(reps, key_a, key_b, field, invert=False):
    """Median over repetitions of a[field] / b[field] (b / a with invert), same repetition."""
    rs = []
    for rep in reps:
        ra, rb = rep.get(key_a), rep.get(key_b)
        if not ra or not rb or ra.get("errors") or rb.get("errors"):
            continue
        va, vb = ra.get(field), rb.get(field)
        if not va or not vb:
            continue
        rs.append(vb / va if invert else va / vb)
    return median(rs)


def field_median(reps, key, field, ok_only=True):
    return median([rep[key].get(field) for rep in reps
                   if key in rep and (not ok_only or not rep[key].get("errors"))])


def failed(reps, key):
    """The first error of @key when no repetition of it succeeded, else None."""
    runs = [rep[key] for rep in reps if key in rep]
    if runs and all(r.get("errors") for r in runs):
        return str(runs[0].get("first_error") or "errors")[:160]
    return None


def error_row(label, err, columns):
    return f"| {label} | failed: {err} |" + " |" * (columns - 2)


def add_capacity(r):
    """Handshakes (or requests) per second of server CPU: what one server core could do."""
    if r and r.get("server_us_per_op"):
        r["ops_per_cpu_s"] = 1e6 / r["server_us_per_op"]
    return r


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# user-space instructions per operation (callgrind), by the difference of two counts

CG_COUNTS = {"handshake": (40, 200), "echo": (1000, 6000), "bulk": (16, 96)}
CG_COUNTS_QUICK = {"handshake": (10, 50), "echo": (200, 1200), "bulk": (8, 40)}
CG_SERVERS = [STRATA, NGINX, FLOOR]  # the Python peers are too slow under valgrind


def callgrind_total(path):
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_run(a, key, phase, extra, n):
    """Instructions of a fresh server under callgrind that served exactly n operations."""
    out = Path(a.tmp) / f"cg.{key}.{phase}.{n}.out"
    srv = start_server(key, a, wrapper=["valgrind", "--tool=callgrind",
                                         f"--callgrind-out-file={out}"], ready_timeout=120)
    try:
        res = tls_load(a, srv, phase, [*extra, "--count", str(n), "--stall", "15"], 0, 0,
                       timeout=120)
    finally:
        rc = srv.stop(grace=30.0)  # valgrind writes its file at exit
    if res.get("errors"):
        raise RuntimeError(f"{res.get('first_error')}")
    try:
        return callgrind_total(out), out
    except (OSError, RuntimeError):
        raise RuntimeError(f"no callgrind totals (server exit status {rc}; stderr: "
                           f"{srv.stderr_tail()[-120:]!r})")


def callgrind_phase(a, phases, running):
    counts = CG_COUNTS_QUICK if a.quick else CG_COUNTS
    cg = {}
    for phase, keys, extra in phases:
        for key in CG_SERVERS:
            if key not in keys or key not in running:
                continue
            n1, n2 = counts[phase]
            try:
                ir1, _ = callgrind_run(a, key, phase, extra, n1)
                ir2, out2 = callgrind_run(a, key, phase, extra, n2)
            except (RuntimeError, Unavailable) as e:
                cg[f"{key}/{phase}"] = {"error": str(e.args[0])[:160]}
                log(f"   callgrind {phase} {key}: {e.args[0]}")
                continue
            per_op = (ir2 - ir1) / (n2 - n1)
            cg[f"{key}/{phase}"] = {"ir_per_op": per_op, "n": [n1, n2], "ir": [ir1, ir2]}
            log(f"== callgrind {phase} {key}: {per_op:,.0f} instructions per operation")
            if key == STRATA:  # kept for callgrind_annotate
                keep = Path(a.build) / f"callgrind.strata.{phase}.out"
                keep.write_bytes(Path(out2).read_bytes())
                cg[f"{key}/{phase}"]["file"] = str(keep)
    return cg


def callgrind_top(path, top=18):
    """The functions with the most self instructions in a callgrind file."""
    try:
        out = subprocess.run(["callgrind_annotate", "--inclusive=no", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines, started = [], False
    for line in out.splitlines():
        if "file:function" in line:
            started = True
            continue
        if started and line.strip():
            lines.append(line.rstrip())
        if len(lines) >= top:
            break
    return lines



def add_strata_loops(loops):
    """Strata's server on each loop: the first keeps the key strata (the ratio columns and the
    targets use it), the others are strata_LOOP, measured beside it in every phase."""
    STRATA_LOOPS.clear()
    for i, loop in enumerate(loops):
        key = STRATA if i == 0 else f"{STRATA}_{loop}"
        STRATA_LOOPS[key] = loop
        LABELS[key] = f"Strata echo_server (TLS, {loop})"
        if i:
            for table in (ALL, ECHO_SERVERS, CG_SERVERS):
                table.insert(table.index(STRATA) + i, key)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="where tls_load, c_tls_echo and examples/ are")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--key-desc", default="EC P-256")
    ap.add_argument("--tmp", required=True, help="a scratch directory (nginx config, logs)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--servers", default=",".join(ALL))
    ap.add_argument("--skip", default="",
                    help="phases to skip: handshake,echo,bulk,callgrind")
    ap.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    ap.add_argument("--strata-note", default="")
    ap.add_argument("--loops", default="selector",
                    help="comma list of the loops Strata's server runs on (echo_server --loop; "
                    "default selector); the first keeps the key strata, the others get the loop "
                    "appended (strata_poll)")
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--bulk-window", type=int, default=256 * 1024,
                    help="bulk: the most bytes unechoed (default 256 KiB)")
    ap.add_argument("--callgrind", action="store_true",
                    help="count instructions with callgrind in a --quick run too")
    ap.add_argument("--profile", action="store_true",
                    help="after the matrix, perf-record Strata's server under each load")
    a = ap.parse_args()

    loops = [x for x in a.loops.split(",") if x]
    if not loops or len(set(loops)) != len(loops):
        sys.exit(f"--loops: a comma list of distinct loops, got {a.loops!r}")
    add_strata_loops(loops)
    reps = a.reps or (1 if a.quick else 7)
    warmup, duration = (0.2, 1.0) if a.quick else (0.5, 2.0)
    speed_s = 1 if a.quick else 2
    wanted = [s for s in a.servers.split(",") if s]
    for s in wanted:
        if s not in ALL:
            sys.exit(f"unknown server {s!r} (known: {', '.join(ALL)})")
    if STRATA in wanted:  # strata stands for Strata's server on every loop
        wanted = [k for k in ALL if k in wanted or (k in STRATA_LOOPS and k != STRATA)]
    skip = set(x for x in a.skip.split(",") if x)
    notes = []
    if a.strata_note:
        notes.append(f"Strata not measured: {a.strata_note}.")
    load0 = Path("/proc/loadavg").read_text().split()[:3]

    # start every server once
    running = {}
    for key in wanted:
        if key in STRATA_LOOPS and a.strata_note:
            continue
        if key == NGINX and not Path(a.nginx).exists():
            notes.append(f"nginx not measured: {a.nginx} is missing (Debian package nginx).")
            continue
        try:
            running[key] = start_server(key, a)
            log(f"   {key}: port {running[key].port}, pid {running[key].pid}")
        except Unavailable as e:
            rc = e.args[1]
            if key in STRATA_LOOPS and rc == 2:
                msg = ("Strata not measured: `echo_server --tls-cert` is not available in this "
                       f"build (exit status 2: {e.args[0]})")
            else:
                msg = f"{key} not measured: {e.args[0]}"
            notes.append(msg)
            log("warning: " + msg)

    tls_extra = ["--ciphersuites", SUITE, "--ciphers", TLS12_CIPHERS, "--groups", "X25519"]
    phases = [
        ("handshake", [k for k in wanted if k in running],
         ["--connections", "8", *tls_extra]),
        ("echo", [k for k in ECHO_SERVERS if k in running],
         ["--connections", "10", "--size", "1024", *tls_extra]),
        ("bulk", [k for k in ECHO_SERVERS if k in running],
         ["--connections", "1", "--size", "65536", "--window", str(a.bulk_window), *tls_extra]),
    ]
    results = {"handshake": [], "echo": [], "bulk": [], "aes_gcm_bytes_s": []}
    try:
        for r in range(reps):
            for phase, keys, extra in phases:
                if phase in skip or not keys:
                    continue
                order = keys[r % len(keys):] + keys[:r % len(keys)]
                rep = {}
                for key in order:
                    srv = running[key]
                    if not srv.alive():
                        rep[key] = {"errors": 1, "first_error": "the server had exited: "
                                    + srv.stderr_tail()}
                        continue
                    res = tls_load(a, srv, phase, extra, warmup, duration)
                    rep[key] = add_capacity(res)
                    if res.get("errors"):
                        log(f"   {phase} {key}: {res.get('errors')} errors, first: "
                            f"{res.get('first_error')}")
                results[phase].append(rep)
                log(f"== rep {r + 1}/{reps} {phase}: " + ", ".join(
                    f"{k} {fmt(v.get('ops_s') if phase != 'bulk' else v.get('mib_s'))}"
                    for k, v in rep.items()))
            if "bulk" not in skip:
                results["aes_gcm_bytes_s"].append(openssl_speed(speed_s))
        if "callgrind" not in skip and not (a.quick and not a.callgrind):
            results["callgrind"] = callgrind_phase(
                a, [p for p in phases if p[0] not in skip], running)
        profile = None
        if a.profile and STRATA in running:
            profile = run_profile(a, running[STRATA], phases, warmup)
    finally:
        for srv in running.values():
            srv.stop()
        end_all()
    load1 = Path("/proc/loadavg").read_text().split()[:3]

    md = report(a, results, running, notes, reps, warmup, duration, load0, load1)
    if a.profile:
        md += "\n" + (profile or "(no profile: Strata's server is not running)\n")
    Path(a.build, "tls.json").write_text(json.dumps(
        {"results": results, "notes": notes, "reps": reps, "loadavg": [load0, load1],
         "labels": LABELS, "loops": loops, "present": list(running),
         "config": {"quick": a.quick, "tls": a.tls, "key": a.key_desc, "warmup_s": warmup,
                    "duration_s": duration, "bulk_window": a.bulk_window,
                    "skip": sorted(skip)}}, indent=1))
    Path(a.build, "tls.md").write_text(md)
    print(md)


def run_profile(a, srv, phases, warmup):
    """perf record of Strata's server under each load; the top symbols of each."""
    out = ["### Profile of Strata's server (perf, self time, top symbols)\n"]
    for phase, keys, extra in phases:
        if STRATA not in keys:
            continue
        data = Path(a.tmp) / f"perf-{phase}.data"
        rec = spawn(["perf", "record", "-o", str(data), "-p", str(srv.pid)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        tls_load(a, srv, phase, extra, warmup, 3.0)
        end(rec, signal.SIGINT, 15.0)
        for sort, limit, top in (("dso", "1", 12), ("dso,symbol", "0.8", 25)):
            rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                                  "--sort", sort, "--percent-limit", limit],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 timeout=120).stdout
            lines = [re.sub(r"(\s+-)+\s*$", "", l).rstrip() for l in rep.splitlines()
                     if l.strip() and not l.startswith("#")][:top]
            out.append(f"{phase}, by {sort}:\n\n```\n" + "\n".join(lines) + "\n```\n")
    return "\n".join(out)


def report(a, results, running, notes, reps, warmup, duration, load0, load1):
    L = []
    have = lambda phase, k: any(k in rep for rep in results[phase])
    L.append(f"## TLS side by side ({'quick' if a.quick else 'full'} run)\n")
    L.append(f"TLS {a.tls}, {SUITE if a.tls == '1.3' else TLS12_CIPHERS}, X25519, "
             f"{a.key_desc} certificate (the same for every server); server on CPU 0, "
             f"tls_load on CPU 1; {reps} interleaved repetition(s) of {warmup} s warm-up + "
             f"{duration} s measured; medians, ratios are medians of per-repetition ratios.\n")

    # handshakes
    hs = results["handshake"]
    if hs:
        L.append("### Full handshakes (8 connections at a time, no resumption)\n")
        L.append("| server | handshakes/s | server CPU busy | server CPU µs/handshake | "
                 "handshakes per server-CPU-second | Strata ÷ this (per CPU-s) | "
                 "Strata ÷ this (handshakes/s) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for k in ALL:
            if not have("handshake", k):
                continue
            if failed(hs, k):
                L.append(error_row(LABELS[k], failed(hs, k), 7))
                continue
            L.append(f"| {LABELS[k]} | {fmt(field_median(hs, k, 'ops_s'), 0)} | "
                     f"{fmt(100 * (field_median(hs, k, 'server_util') or 0), 0)} % | "
                     f"{fmt(field_median(hs, k, 'server_us_per_op'))} | "
                     f"{fmt(field_median(hs, k, 'ops_per_cpu_s'), 0)} | "
                     f"{ratio(per_rep_ratio(hs, STRATA, k, 'ops_per_cpu_s')) if k != STRATA else ''} | "
                     f"{ratio(per_rep_ratio(hs, STRATA, k, 'ops_s')) if k != STRATA else ''} |")
        L.append("")

    ec = results["echo"]
    if ec:
        L.append("### Echo, 1 KiB ping-pong, 10 connections\n")
        L.append("| server | requests/s | p50 µs | p99 µs | server CPU busy | "
                 "server CPU µs/request | Strata CPU/request ÷ this | Strata req/s ÷ this |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in ECHO_SERVERS:
            if not have("echo", k):
                continue
            if failed(ec, k):
                L.append(error_row(LABELS[k], failed(ec, k), 8))
                continue
            L.append(f"| {LABELS[k]} | {fmt(field_median(ec, k, 'ops_s'), 0)} | "
                     f"{fmt(field_median(ec, k, 'p50_us'), 0)} | "
                     f"{fmt(field_median(ec, k, 'p99_us'), 0)} | "
                     f"{fmt(100 * (field_median(ec, k, 'server_util') or 0), 0)} % | "
                     f"{fmt(field_median(ec, k, 'server_us_per_op'), 2)} | "
                     f"{ratio(per_rep_ratio(ec, STRATA, k, 'server_us_per_op')) if k != STRATA else ''} | "
                     f"{ratio(per_rep_ratio(ec, STRATA, k, 'ops_s')) if k != STRATA else ''} |")
        L.append("")

    bk = results["bulk"]
    aes = median(results["aes_gcm_bytes_s"])
    aes_ns = 1e9 / aes if aes else None
    if bk:
        L.append(f"### Bulk echo, 64 KiB writes, 1 connection (window {a.bulk_window // 1024} KiB)\n")
        if aes_ns:
            L.append(f"`openssl speed -evp aes-128-gcm -bytes 16384` on CPU 0, same run: "
                     f"{aes / 1e6:,.0f} MB/s = **{aes_ns:.3f} ns/byte** (median of "
                     f"{len(results['aes_gcm_bytes_s'])}).\n")
        L.append("| server | MiB/s echoed | server CPU busy | server CPU µs/MiB | "
                 "CPU ns/byte | ÷ AES-GCM ns/byte | user-space ns/byte ÷ (2 × AES-GCM) | "
                 "Strata CPU/byte ÷ this |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in ECHO_SERVERS:
            if not have("bulk", k):
                continue
            if failed(bk, k):
                L.append(error_row(LABELS[k], failed(bk, k), 8))
                continue
            us_mib = field_median(bk, k, "server_us_per_mib")
            user_mib = field_median(bk, k, "server_user_us_per_mib")
            ns_b = us_mib * 1000 / 1048576 if us_mib else None
            user_ns_b = user_mib * 1000 / 1048576 if user_mib else None
            L.append(f"| {LABELS[k]} | {fmt(field_median(bk, k, 'mib_s'), 0)} | "
                     f"{fmt(100 * (field_median(bk, k, 'server_util') or 0), 0)} % | "
                     f"{fmt(us_mib, 0)} | {fmt(ns_b, 2)} | "
                     f"{ratio(ns_b / aes_ns) if ns_b and aes_ns else '—'} | "
                     f"{ratio(user_ns_b / (2 * aes_ns)) if user_ns_b and aes_ns else '—'} | "
                     f"{ratio(per_rep_ratio(bk, STRATA, k, 'server_us_per_mib')) if k != STRATA else ''} |")
        L.append("")

    cg = results.get("callgrind") or {}
    if cg:
        L.append("### User-space instructions per operation (callgrind)\n")
        L.append("A fresh server under `valgrind --tool=callgrind` serves N1 and then (another fresh "
                 "one) N2 operations; (Ir(N2) − Ir(N1)) / (N2 − N1) cancels start-up and shutdown. "
                 "Instructions executed in user space, libraries (OpenSSL) included, kernel "
                 "excluded: this figure does not move with the machine's load.\n")
        L.append("| server | per full handshake | per 1 KiB echo request | per byte, 64 KiB bulk | "
                 "Strata ÷ this (handshake / request / byte) |")
        L.append("|---|---:|---:|---:|---:|")
        per = {"bulk": 65536}
        for k in CG_SERVERS:
            cells, ratios = [], []
            if not any(key.startswith(k + "/") for key in cg):
                continue
            for phase in ("handshake", "echo", "bulk"):
                e, st = cg.get(f"{k}/{phase}"), cg.get(f"{STRATA}/{phase}")
                if not e:
                    cells.append("—")
                    ratios.append("—")
                    continue
                if "error" in e:
                    cells.append(f"failed: {e['error'][:60]}")
                    ratios.append("—")
                    continue
                v = e["ir_per_op"] / per.get(phase, 1)
                cells.append(f"{v:,.2f}" if phase == "bulk" else f"{v:,.0f}")
                ok = st and "ir_per_op" in st and k != STRATA
                ratios.append(f"{st['ir_per_op'] / e['ir_per_op']:.2f}×" if ok else "—")
            L.append(f"| {LABELS[k]} | " + " | ".join(cells) + " | "
                     + (" / ".join(ratios) if k != STRATA else "") + " |")
        L.append("")
        tops = [(ph, cg[f"{STRATA}/{ph}"]["file"]) for ph in ("handshake", "echo", "bulk")
                if "file" in cg.get(f"{STRATA}/{ph}", {})]
        for ph, f in tops:
            lines = callgrind_top(f)
            if lines:
                L.append(f"Strata's server, {ph} (N2 run, self instructions; the whole file: "
                         f"`callgrind_annotate {f}`):\n")
                L.append("```\n" + "\n".join(lines) + "\n```\n")

    # targets
    if STRATA in running:
        L.append("### Targets\n")
        if hs and have("handshake", NGINX):
            cap = per_rep_ratio(hs, STRATA, NGINX, "ops_per_cpu_s")
            meas = per_rep_ratio(hs, STRATA, NGINX, "ops_s")
            ok = cap is not None and cap >= 0.9
            verdict = ("not measured (" + (failed(hs, STRATA) or failed(hs, NGINX) or "no data")
                       + ")") if cap is None else ("met" if ok else "not met")
            L.append(f"- Full handshakes/s ≥ 0.9 × nginx's: per server-CPU-second "
                     f"{ratio(cap)}, measured handshakes/s {ratio(meas)} → "
                     f"**{verdict}** (judged per CPU-second: see the notes).")
        if bk and aes_ns and have("bulk", STRATA):
            def per_byte(k, field, passes):
                v = field_median(bk, k, field) if have("bulk", k) else None
                return v * 1000 / 1048576 / (passes * aes_ns) if v else None
            r_, fr = per_byte(STRATA, "server_us_per_mib", 1), per_byte(FLOOR, "server_us_per_mib", 1)
            u_, fu = (per_byte(STRATA, "server_user_us_per_mib", 2),
                      per_byte(FLOOR, "server_user_us_per_mib", 2))
            strata_err = failed(bk, STRATA)
            verdict = (f"not measured ({strata_err or 'no data'})" if r_ is None
                       else "met" if r_ <= 1.25 else "not met")
            L.append(f"- Bulk server CPU per byte ≤ 1.25 × AES-GCM's, read literally (all of the "
                     f"server's CPU, kernel included, per echoed byte): {ratio(r_)} → "
                     f"**{verdict}**. The C floor: {ratio(fr)}: each echoed byte is decrypted "
                     f"once, encrypted once and crosses loopback TCP twice, and the kernel's TCP "
                     f"work alone costs several AES-GCM passes, so no loopback echo meets it.")
            verdict = (f"not measured ({strata_err or 'no data'})" if u_ is None
                       else "met" if u_ <= 1.25 else "not met")
            L.append(f"- The same per byte through the TLS layer in user space (user CPU per "
                     f"echoed byte ÷ 2 passes; the kernel left out): {ratio(u_)} → "
                     f"**{verdict}** (the C floor: {ratio(fu)}).")
        L.append("")

    L.append("### Notes\n")
    for n in notes:
        L.append(f"- {n}")
    L.append("- tls_load is one thread on one core: when the server's CPU-busy column is well "
             "below 100 %, the rate is capped by the client (a full handshake costs OpenSSL 3.0's "
             "client more CPU than the server), so handshakes/s does not rank the servers; server "
             "CPU per handshake does, and 'handshakes per server-CPU-second' is what one server "
             "core would sustain.")
    L.append("- Server CPU is utime + stime of /proc/PID/stat (10 ms ticks) over the measured "
             "window: it includes the kernel's loopback TCP work for the server.")
    L.append("- Servers keep their own TLS defaults otherwise (e.g. TLS 1.3 session tickets "
             "issued after each handshake: OpenSSL's default of 2 for the C floor and Python, "
             "nginx's `ssl_session_tickets on`); the client never uses them.")
    L.append(f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, kernel "
             f"{platform.release()}; load average at start {' '.join(load0)}, at end "
             f"{' '.join(load1)}.")
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        end_all()
