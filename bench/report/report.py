#!/usr/bin/env python3
"""The benchmark report, for bench/run_report.sh (see bench/README.md, "The report").

Runs every benchmark runner of bench/ (core and coordination micro-benchmarks, echo with both
APIs, TLS, HTTP) with its peers, each under a time limit, one after the other in one build
directory; keeps their JSON outputs; then writes <build>/report/report.md (per benchmark, a table
of absolute figures and ratios against the peers measured in the same run, under a header of
machine facts) and PNG charts drawn by gnuplot. `--render-only` redraws the report from the JSON
kept in <build>/report/raw without running anything.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_processes import end, refusal, spawn  # noqa: E402  (bench/ on the path first)

ROOT = Path(__file__).resolve().parents[2]

# The loops Strata is measured on. One entry per loop: its name is what the example servers take
# with --loop and the suffix of the micro-benchmarks' names (call_soon_dispatch/epoll). A loop
# that echo_server refuses (proactor, until its issue lands) is left out of every runner, with a
# note in the report (refused_loops()).
LOOPS = ("epoll", "poll", "select", "proactor")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


_runner = []  # the runner being run, if any


def stop_runner(status):
    """A signal handler: SIGTERM to the runner's session first, so that it stops its driver and
    the driver its servers (in sessions of their own, which a SIGKILL to the runner would
    leave running); SIGKILL after 30 s."""
    def handler(*_):
        for p in list(_runner):
            end(p, signal.SIGTERM, 30.0)
        sys.exit(status)
    return handler


# ---------------------------------------------------------------------------------------------
# the benchmarks: which runner, with which options, and what it leaves behind

class Bench:
    def __init__(self, key, title, script, outputs, args, limits):
        self.key, self.title, self.script = key, title, script
        self.outputs = outputs  # files the runner writes into the build directory
        self.args = args        # (quick, loops) -> the runner's options
        self.limits = limits    # (quick, full) seconds before the runner is stopped

    def limit(self, quick):
        return self.limits[0 if quick else 1]


def micro_args(quick, loops):
    # Only the loops asked for; the timer benchmarks exist on the default backend (epoll) only.
    return [*(["--quick"] if quick else []), "--",
            f"--benchmark_filter=/({'|'.join(loops)})(/|$)"]


BENCHES = [
    Bench("core", "Core micro-benchmarks", "bench/run_core_micro.sh",
          ["core_micro.json", "core_micro_asyncio.json", "core_micro_uvloop.json"],
          micro_args, (300, 1800)),
    Bench("coord", "Coordination micro-benchmarks", "bench/run_coord_micro.sh",
          ["coord_micro.json", "coord_micro_asyncio.json", "coord_micro_uvloop.json"],
          micro_args, (300, 1800)),
    # --quick: one repetition of the ping-pong matrix (64 B, 1 KiB, 16 KiB, 10 connections) and
    # the streaming run; the counted and idle phases only in the full run.
    Bench("echo", "Echo servers (protocols and streams)", "bench/run_echo.sh", ["echo.json"],
          lambda quick, loops: [*(["--quick", "--reps", "1", "--skip", "strace,callgrind,idle"]
                                  if quick else []), "--loops", ",".join(loops)],
          (600, 5400)),
    Bench("tls", "TLS", "bench/run_tls.sh", ["tls.json"],
          lambda quick, loops: [*(["--quick"] if quick else []), "--loops", ",".join(loops)],
          (600, 3600)),
    Bench("http", "HTTP", "bench/run_http.sh", ["http.json"],
          lambda quick, loops: [*(["--quick", "--skip", "callgrind,crawler"] if quick else []),
                                "--loops", ",".join(loops)],
          (900, 3000)),
]


# ---------------------------------------------------------------------------------------------
# machine facts

def run_text(cmd, timeout=20):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        return (r.stdout or r.stderr).strip() if r.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def loadavg():
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def load_text(v):
    """A load average as "1.00, 0.50, 0.25", whichever form a runner kept it in."""
    if isinstance(v, (list, tuple)):
        v = " ".join(str(x) for x in v)
    parts = str(v or "?").replace(",", " ").split()
    return ", ".join(parts) if parts else "?"


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def machine_facts():
    f = {"cpu": platform.machine(), "cpus": os.cpu_count(), "kernel": platform.release(),
         "os": "", "memory_gib": None}
    try:
        models = [ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        if models:
            f["cpu"] = models[0]
    except OSError:
        pass
    try:
        for ln in Path("/etc/os-release").read_text().splitlines():
            if ln.startswith("PRETTY_NAME="):
                f["os"] = ln.split("=", 1)[1].strip('"')
    except OSError:
        pass
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
        f["memory_gib"] = round(kib / 1048576, 1)
    except (OSError, TypeError, ValueError):
        pass
    commit = run_text(["git", "rev-parse", "HEAD"])
    f["commit"] = commit[:12] if commit else "?"
    subject = run_text(["git", "log", "-1", "--format=%s"])
    f["commit_subject"] = subject if len(subject) <= 90 else subject[:88].rsplit(" ", 1)[0] + " …"
    f["dirty"] = bool(run_text(["git", "status", "--porcelain", "--untracked-files=no"]))
    f["compiler"] = run_text(["c++", "--version"]).splitlines()[0:1]
    f["compiler"] = f["compiler"][0] if f["compiler"] else "?"
    f["python"] = platform.python_version()
    versions = {}
    for pkg in ("python3-uvloop", "libuv1-dev", "libasio-dev", "nginx", "wrk", "libssl3",
                "libbenchmark-dev", "gnuplot-nox"):
        v = run_text(["dpkg-query", "-W", "-f", "${Version}", pkg])
        if v:
            versions[pkg] = v
    f["packages"] = versions
    return f


# ---------------------------------------------------------------------------------------------
# running the benchmarks

def refused_loops(build, loops):
    """{loop: why} for the loops Strata's echo_server refuses with --loop (it exits at once, as
    it does for proactor before the proactor loop lands). Without an echo_server in the build
    nothing is probed: the runners then say why Strata is missing."""
    server = Path(build) / "examples" / "echo_server"
    if not server.exists():
        return {}
    refused = {}
    for lp in loops:
        why = refusal([str(server), "--loop", lp])
        if why:
            refused[lp] = why
            log(f"  ! echo_server refuses --loop {lp} ({why}): Strata on {lp} is left out")
    return refused


def run_bench(bench, a, env):
    """Runs one runner in its own session with its stdout (its Markdown tables) and stderr (its
    progress, also echoed here) kept under logs/; stops it after its time limit. Returns a
    status dict."""
    logs = Path(a.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name in bench.outputs:  # a runner that fails must not leave a stale figure behind
        Path(a.build, name).unlink(missing_ok=True)
    args = bench.args(a.quick, a.loops)
    cmd = ["bash", bench.script, *args]
    limit = bench.limit(a.quick)
    log(f"== {bench.key}: {shlex.join(cmd)} (at most {limit // 60} min; "
        f"log {logs / (bench.key + '.log')})")
    t0 = time.monotonic()
    status = {"command": shlex.join(cmd), "limit_s": limit}
    with open(logs / f"{bench.key}.md", "w") as out, open(logs / f"{bench.key}.log", "w") as err:
        p = spawn(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                  stderr=subprocess.PIPE, text=True, bufsize=1)
        _runner.append(p)

        def pump():
            for line in p.stderr:
                err.write(line)
                err.flush()
                sys.stderr.write(f"   {bench.key}| {line}")
                sys.stderr.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = p.wait(limit)
        except subprocess.TimeoutExpired:
            log(f"  ! {bench.key}: stopped after {limit} s")
            status["timed_out"] = True
            rc = end(p, signal.SIGTERM, 30.0)
        reader.join(10)
        end(p)
        _runner.remove(p)
    status["exit"] = rc
    status["elapsed_s"] = round(time.monotonic() - t0, 1)
    raw = Path(a.out) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    status["outputs"] = []
    for name in bench.outputs:
        src = Path(a.build, name)
        (raw / name).unlink(missing_ok=True)
        if src.exists():
            shutil.copyfile(src, raw / name)
            status["outputs"].append(name)
    log(f"== {bench.key}: exit status {rc} in {status['elapsed_s']:.0f} s")
    return status


# ---------------------------------------------------------------------------------------------
# Markdown helpers

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def num(v, digits=None):
    """A figure: thousands separated; digits chosen by magnitude unless given."""
    if v is None:
        return "—"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{digits}f}"


def scaled(v, factor):
    return None if v is None else v * factor


def ratio(v):
    return "—" if v is None else f"{v:.2f}×"


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header, rows, align=None):
    """A Markdown table: the first column left-aligned, the others right-aligned unless told."""
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    out = ["| " + " | ".join(cell(h) for h in header) + " |",
           "|" + "|".join(align) + "|"]
    for r in rows:
        r = list(r) + [""] * (len(header) - len(r))
        out.append("| " + " | ".join(cell(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def size_label(n):
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def per_rep_ratios(runs, key, ref, metric, err=lambda r: r.get("errors")):
    """Median over repetitions of metric(key) / metric(ref), both from the same repetition.
    runs: {server: [{"rep": r, metric: v}, ...]}."""
    by_rep = {r.get("rep"): r.get(metric) for r in runs.get(ref, []) if not err(r)}
    out = []
    for r in runs.get(key, []):
        den, v = by_rep.get(r.get("rep")), r.get(metric)
        if v is not None and den and not err(r):
            out.append(v / den)
    return median(out)


def read_json(raw, name):
    p = Path(raw) / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# charts (gnuplot)

# Strata's series are thick, one colour per loop (protocol solid with circles, streams dash-dot
# with triangles); the peers' are thin and dashed, in colours of their own. Bars cycle COLOURS.
STRATA_COLOURS = ["#0b5ed7", "#e8590c", "#2f9e44", "#c2255c"]
PEER_COLOURS = ["#000000", "#7048e8", "#0c8599", "#a61e4d", "#b08900", "#862e9c", "#868e96",
                "#f06595", "#15aabf", "#5f3dc4"]
COLOURS = STRATA_COLOURS + PEER_COLOURS


def gnuplot_terminal():
    for term in ("pngcairo", "png"):
        try:
            r = subprocess.run(["gnuplot", "-e", f"set terminal {term}"], capture_output=True,
                               text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode == 0 and "unknown or ambiguous terminal" not in r.stderr:
            return term
    return None


def gp_quote(s):
    """A double-quoted gnuplot string (where \\n is a line break)."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + s + '"'


class Charts:
    def __init__(self, out, subtitle):
        self.dir = Path(out)
        self.subtitle = subtitle
        self.term = gnuplot_terminal()
        self.made, self.failed = [], []

    def draw(self, name, script, data):
        """Writes name.dat and name.gp and runs gnuplot; returns the PNG's file name or None."""
        if not self.term:
            self.failed.append(f"{name}: gnuplot (or its png terminal) is not available")
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{name}.dat").write_text(data)
        png = self.dir / f"{name}.png"
        png.unlink(missing_ok=True)
        font = "font ',10'" if self.term == "pngcairo" else ""
        head = (f"set terminal {self.term} size 1280,640 {font}\n"
                f"set output {gp_quote(png)}\n"
                "set datafile missing '-'\nset datafile separator tab\n"
                "set grid ytics lc rgb '#dddddd'\nset border 3\nset tics nomirror\n")
        (self.dir / f"{name}.gp").write_text(head + script)
        try:
            r = subprocess.run(["gnuplot", f"{name}.gp"], cwd=self.dir, capture_output=True,
                               text=True, timeout=60)
            ok = r.returncode == 0 and png.exists() and png.stat().st_size > 0
            msg = r.stderr.strip()[-300:]
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, msg = False, str(e)
        if not ok:
            self.failed.append(f"{name}: gnuplot failed: {msg}")
            return None
        self.made.append(png.name)
        return png.name

    def lines_by_size(self, name, title, ylabel, sizes, series):
        """series: [(label, style, {size: value})] with style (kind, n): kind "strata",
        "strata_streams" (n: the loop's index) or "peer" (n: the peer's index); x: message size
        (log scale)."""
        series = [s for s in series if any(v is not None for v in s[2].values())]
        if not series or not sizes:
            return None
        rows = ["# size\t" + "\t".join(label for label, _, _ in series)]
        for size in sizes:
            rows.append(f"{size}\t" + "\t".join(
                "-" if values.get(size) is None else f"{values[size]:.6g}"
                for _, _, values in series))
        plots = []
        for i, (label, (kind, n), _) in enumerate(series):
            if kind == "peer":
                style = f"lw 1.5 dt 2 pt 6 ps 1 lc rgb '{PEER_COLOURS[n % len(PEER_COLOURS)]}'"
            else:
                style = ("lw 3 dt 1 pt 7 ps 1.2" if kind == "strata" else "lw 3 dt 4 pt 9 ps 1.4")
                style += f" lc rgb '{STRATA_COLOURS[n % len(STRATA_COLOURS)]}'"
            plots.append(f"'{name}.dat' using 1:{i + 2} with linespoints {style} "
                         f"title {gp_quote(label)}")
        xtics = ", ".join(f"{gp_quote(size_label(s))} {s}" for s in sizes)
        script = (f"set title {gp_quote(title + chr(10) + self.subtitle)} noenhanced\n"
                  f"set xlabel 'message size (log scale)'\nset ylabel {gp_quote(ylabel)}\n"
                  f"set logscale x 2\nset xtics ({xtics})\n"
                  f"set xrange [{sizes[0] / 1.5}:{sizes[-1] * 1.5}]\nset yrange [0:*]\n"
                  "set key outside right top vertical noenhanced\n"
                  "plot " + ", \\\n     ".join(plots) + "\n")
        return self.draw(name, script, "\n".join(rows) + "\n")

    def bars(self, name, title, panels, servers, groups):
        """Clustered bars: per panel (ylabel, {(server, group): value}), one cluster per server,
        one bar per group."""
        if not servers or not groups:
            return None
        data = []
        for i, (ylabel, values) in enumerate(panels):
            data.append(f"# panel {i}\n# server\t" + "\t".join(g for g, _ in groups))
            for key, label in servers:
                data.append(label + "\t" + "\t".join(
                    "-" if values.get((key, g)) is None else f"{values[(key, g)]:.6g}"
                    for g, _ in groups))
            data.append("\n")
        script = [f"set multiplot layout 1,{len(panels)} title "
                  f"{gp_quote(title + chr(10) + self.subtitle)} noenhanced",
                  "set style data histograms", "set style histogram cluster gap 1",
                  "set style fill solid 0.85 border -1", "set boxwidth 0.9",
                  "set xtics rotate by 20 right noenhanced", "set yrange [0:*]",
                  f"set xrange [-0.6:{len(servers) - 0.4}]",
                  "set key top left noenhanced"]
        for i, (ylabel, _) in enumerate(panels):
            script.append(f"set ylabel {gp_quote(ylabel)}")
            cols = ", ".join(
                (f"'{name}.dat' index {i} using {j + 2}:xtic(1)" if j == 0 else
                 f"'' index {i} using {j + 2}") +
                f" lc rgb '{COLOURS[j % len(COLOURS)]}' title {gp_quote(glabel)}"
                for j, (_, glabel) in enumerate(groups))
            script.append(f"plot {cols}")
        script.append("unset multiplot")
        return self.draw(name, "\n".join(script) + "\n", "\n".join(data) + "\n")


# ---------------------------------------------------------------------------------------------
# sections

RATIO_NOTE = ("Every ratio is `A ÷ B` of a cost (time, CPU time or bytes per operation) named by "
              "its column, both measured in this run (for the servers: the median over "
              "repetitions of the ratio within each repetition): below 1.00× means A is the "
              "cheaper one.")


def micro_results(gb):
    """{run name without /real_time: benchmark entry}: the min aggregate over repetitions."""
    results = {}
    for b in gb.get("benchmarks", []):
        if b.get("error_occurred"):
            continue
        run = b.get("run_name", b["name"]).replace("/real_time", "")
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "min":
                results[run] = b
        else:
            results.setdefault(run, b)
    return results


CORE_ROWS = [  # (benchmark, its Python key or None, counter, unit)
    ("call_soon_dispatch", "call_soon_dispatch", "ns_per_op", "ns"),
    ("timer_call_later_cancel_1M", "timer_call_later_cancel_1M", "ns_per_op", "ns"),
    ("timer_call_later_cancel_1M_random_older", None, "ns_per_op", "ns"),
    ("create_task_run", "create_task_run", "ns_per_op", "ns"),
    ("sleep0_roundtrip", "sleep0_roundtrip", "ns_per_op", "ns"),
    ("await_done_future", "await_done_future", "ns_per_op", "ns"),
    # memory: resident-set growth per pending timer, as the Python script measures it
    ("timer_call_later_cancel_1M", "timer_memory_per_pending", "rss_bytes_per_timer", "bytes"),
]
COORD_ROWS = [(b, b, "ns_per_op", "ns") for b in (
    "lock_uncontended", "lock_100_waiters", "queue_put_get_unbounded", "queue_put_get_maxsize1",
    "queue_put_get_maxsize64", "run_in_executor_roundtrip", "call_soon_threadsafe_1thread",
    "call_soon_threadsafe_4threads")]


def micro_section(raw, prefix, rows, loops, what):
    gb = read_json(raw, f"{prefix}.json")
    if not gb:
        return None, []
    peers = {p: read_json(raw, f"{prefix}_{p}.json") or {} for p in ("asyncio", "uvloop")}
    res = micro_results(gb)
    ran = [lp for lp in loops if any(r.endswith("/" + lp) for r in res)]
    if not ran:
        return "No benchmark result in the run's JSON.\n", []
    missing = [lp for lp in loops if lp not in ran]
    first = ran[0]
    header = ["benchmark"] + [f"Strata {lp}" for lp in ran] + [
        f"Strata {first}, thread CPU", "asyncio", "uvloop", f"asyncio ÷ Strata {first}",
        f"uvloop ÷ Strata {first}"]
    body = []
    for bench, py_key, counter, unit in rows:
        vals = [res.get(f"{bench}/{lp}", {}).get(counter) for lp in ran]
        if all(v is None for v in vals):
            continue
        label = bench if counter == "ns_per_op" else f"{bench}: {counter} (bytes)"
        ours = vals[0]
        cpu = res.get(f"{bench}/{first}", {}).get("cpu_ns_per_op") if unit == "ns" else None
        a, u = (peers["asyncio"].get(py_key), peers["uvloop"].get(py_key)) if py_key else (None,
                                                                                           None)
        body.append([label, *[num(v) for v in vals], num(cpu), num(a), num(u),
                     ratio(a / ours) if a and ours else "—",
                     ratio(u / ours) if u and ours else "—"])
    ctx = gb.get("context", {})
    text = (f"{what} Nanoseconds per operation (wall clock, the minimum over repetitions; "
            f"Python: its best repetition), one column per loop; *thread CPU* is the same on the "
            f"benchmark thread's CPU clock, which a loaded machine inflates less. The Python "
            f"loops run on epoll, so the ratios compare them with Strata on {first}. Benchmarks "
            f"without a Python counterpart have no ratio.\n\n")
    text += table(header, body)
    if missing:
        text += (f"\nNo benchmark ran on {', '.join(missing)}: the binary registers none for "
                 f"{'that loop' if len(missing) == 1 else 'those loops'}.\n")
    load = ctx.get("load_avg")
    if isinstance(load, list):
        text += (f"\nGoogle Benchmark saw load average "
                 f"{load_text([f'{x:.2f}' for x in load])} at its start; Python "
                 f"{peers['asyncio'].get('python', '?')}.\n")
    return text, []


def echo_style(key, keys, loops):
    """The chart style of an echo server: (kind, index), see Charts.lines_by_size."""
    if not key.startswith("strata"):
        return "peer", [k for k in keys if not k.startswith("strata")].index(key)
    kind = "strata_streams" if key.startswith("strata_streams") else "strata"
    loop = next((lp for i, lp in enumerate(loops) if i and key.endswith("_" + lp)), None)
    return kind, loops.index(loop) if loop else 0


def echo_section(raw, charts):
    j = read_json(raw, "echo.json")
    if not j:
        return None, []
    labels = j.get("labels", {})
    keys = j.get("present", [])
    label = lambda k: labels.get(k, k)  # noqa: E731
    pp, summary = j.get("pingpong", {}), j.get("summary", {})
    cfg = j.get("config", {})
    strata = "strata" if "strata" in keys else None
    out, pngs = [], []
    out.append(f"Servers pinned to CPU 0, the load generator `echo_load` to CPU 1; "
               f"{cfg.get('reps', '?')} interleaved repetition(s) of {cfg.get('warmup', '?')} s "
               f"warm-up + {cfg.get('duration', '?')} s measured per server and configuration. "
               "Requests/s is capped by the one-core load generator on a 2-core machine; the "
               "server's CPU time per request (`utime + stime`, kernel included) ranks the "
               "servers.\n")
    if not strata:
        out.append(f"**Strata's echo server is not in this run**: "
                   f"{j.get('strata_note', 'not found')}.\n")
    cfgs = list(pp)
    sizes = sorted({int(c.split("x")[0]) for c in cfgs})
    conns = sorted({int(c.split("x")[1]) for c in cfgs})
    floor, uring, uvloop = "c_epoll", "c_uring", "uvloop"
    ours = f"{label(strata)} ÷ this (CPU)" if strata else None
    # charts: per connection count, requests/s and CPU per request by message size
    for c in conns:
        for metric, name, title, ylabel in (
                ("rps", f"echo-rps-{c}", f"Echo, ping-pong, {c} connections: requests/s",
                 "thousand requests/s (median)"),
                ("cpu", f"echo-cpu-{c}",
                 f"Echo, ping-pong, {c} connections: server CPU time per request",
                 "server CPU µs per request (median)")):
            scale = 1e-3 if metric == "rps" else 1.0
            series = [(label(k), echo_style(k, keys, j.get("loops", [])),
                       {s: scaled(summary.get(f"{s}x{c}/{k}", {}).get(metric), scale)
                        for s in sizes})
                      for k in keys]
            png = charts.lines_by_size(name, title, ylabel, sizes, series)
            if png:
                pngs.append(png)
    for c in conns:
        for png in (f"echo-rps-{c}.png", f"echo-cpu-{c}.png"):
            if png in pngs:
                out.append(f"![{png}](charts/{png})\n")
    for c in conns:
        for s in sizes:
            key = f"{s}x{c}"
            if key not in pp:
                continue
            runs = pp[key]
            out.append(f"### Ping-pong, {size_label(s)} messages, {c} connections\n")
            header = ["server", "requests/s", "p50 µs", "p99 µs", "CPU µs/request"]
            if floor in keys:
                header.append("this ÷ C floor (CPU)")
            if uring in keys:
                header.append("this ÷ C io_uring floor (CPU)")
            if uvloop in keys:
                header.append("this ÷ uvloop (CPU)")
            if strata:
                header.append(ours)
            rows = []
            for k in keys:
                sm = summary.get(f"{key}/{k}", {})
                cpu = num(sm.get("cpu"))
                if sm.get("errors"):
                    cpu += f" ({sm['errors']} errors)"
                row = [label(k), num(sm.get("rps"), 0), num(sm.get("p50"), 0),
                       num(sm.get("p99"), 0), cpu]
                if floor in keys:
                    row.append(ratio(per_rep_ratios(runs, k, floor, "cpu_us_per_req")))
                if uring in keys:
                    row.append(ratio(per_rep_ratios(runs, k, uring, "cpu_us_per_req")))
                if uvloop in keys:
                    row.append(ratio(per_rep_ratios(runs, k, uvloop, "cpu_us_per_req")))
                if strata:
                    row.append(ratio(per_rep_ratios(runs, strata, k, "cpu_us_per_req"))
                               if k != strata else "")
                rows.append(row)
            out.append(table(header, rows))
    for key, runs in j.get("stream", {}).items():
        s, c = (int(x) for x in key.split("x"))
        out.append(f"### Streaming, {size_label(s)} writes, {c} connections\n")
        header = ["server", "MiB/s echoed", "CPU µs/MiB"]
        if floor in keys:
            header.append("this ÷ C floor (CPU)")
        if uring in keys:
            header.append("this ÷ C io_uring floor (CPU)")
        if strata:
            header.append(ours)
        rows = []
        for k in keys:
            ok = [r for r in runs.get(k, []) if not r.get("errors")]
            row = [label(k), num(median([r.get("mib_s") for r in ok]), 0),
                   num(median([r.get("cpu_us_per_mib") for r in ok]), 0)]
            if floor in keys:
                row.append(ratio(per_rep_ratios(runs, k, floor, "cpu_us_per_mib")))
            if uring in keys:
                row.append(ratio(per_rep_ratios(runs, k, uring, "cpu_us_per_mib")))
            if strata:
                row.append(ratio(per_rep_ratios(runs, strata, k, "cpu_us_per_mib"))
                           if k != strata else "")
            rows.append(row)
        out.append(table(header, rows))
    pairs = j.get("ratios") or {}
    def ratio_table(ratios):
        # ratios: {"CFG/NUM/DEN": value}; one row per NUM ÷ DEN, one column per configuration.
        names = []
        for name in ratios:
            _, num_key, den_key = name.split("/")
            if (num_key, den_key) not in names:
                names.append((num_key, den_key))
        return table(["ratio"] + [f"{size_label(int(c.split('x')[0]))} × "
                                  f"{c.split('x')[1]}" for c in cfgs],
                     [[f"{label(n)} ÷ {label(d)}"] +
                      [ratio(ratios.get(f"{c}/{n}/{d}")) for c in cfgs] for n, d in names])

    if pairs and cfgs:
        out.append("### Streams against protocols (server CPU per request)\n")
        out.append(ratio_table(pairs))
    pro = j.get("proactor_ratios") or {}
    if pro and cfgs:
        out.append("### Strata on the proactor loop against the io_uring floor and the selector "
                   "loop (server CPU per request)\n")
        out.append(ratio_table(pro))
        checks = j.get("proactor_checks") or []
        if checks:
            out.append("Targets (the proactor issue): CPU per request ≤ 1.10× the io_uring "
                       "floor's; ≤ 1.00× Strata on the selector loop at 10–50 connections, "
                       "≤ 0.85× from 300 on.\n")
            out.append(table(["target", "measured", "met"],
                             [[name, ratio(v), "yes" if ok else "**no**"]
                              for name, v, ok in checks], ["---", "---:", ":-:"]))
    sc, ir = j.get("strace", {}), j.get("callgrind", {})
    if sc or ir:
        csizes = sorted({int(s) for t in (sc, ir) for v in t.values() for s in v})
        out.append("### System calls and user-space instructions per request (ping-pong, 10 "
                   "connections; difference of two runs, so start-up cancels; machine load "
                   "hardly moves these)\n")
        header = (["server"] + [f"syscalls/req {size_label(s)}" for s in csizes] +
                  [f"instructions/req {size_label(s)}" for s in csizes] +
                  ([f"{label(strata)} ÷ this (instructions {size_label(s)})" for s in csizes]
                   if strata in ir else []))
        rows = []
        for k in keys:
            if k not in sc and k not in ir:
                continue
            row = [label(k)]
            row += [num(sc.get(k, {}).get(str(s), {}).get("per_request"), 2) for s in csizes]
            row += [num(ir.get(k, {}).get(str(s), {}).get("per_request"), 0) for s in csizes]
            if strata in ir:
                for s in csizes:
                    ours = ir[strata].get(str(s), {}).get("per_request")
                    theirs = ir.get(k, {}).get(str(s), {}).get("per_request")
                    row.append("" if k == strata else
                               ratio(ours / theirs) if ours and theirs else "—")
            rows.append(row)
        out.append(table(header, rows))
    idle = j.get("idle", {})
    if idle:
        n = next(iter(idle.values())).get("connections", 0)
        out.append(f"### Memory per idle connection ({n:,} connections held; server RSS growth)"
                   "\n")
        mine = idle.get(strata, {}).get("bytes_per_conn") if strata else None
        rows = [[label(k), f"{idle[k].get('accepted', 0):,}", num(idle[k].get("bytes_per_conn"), 0),
                 "" if k == strata else ratio(mine / idle[k]["bytes_per_conn"])
                 if mine and idle[k].get("bytes_per_conn", 0) > 0 else "—"]
                for k in keys if k in idle]
        out.append(table(["server", "accepted", "bytes per connection",
                          f"{label(strata)} ÷ this" if strata else ""], rows))
        if j.get("idle_skipped"):
            out.append("Not measured on the select loop: it takes descriptors below FD_SETSIZE "
                       "(1,024) only.\n")
    notes = list(j.get("failures", []))
    for lp, why in (j.get("loops_refused") or {}).items():
        out.append(f"Strata on {lp} not measured: `echo_server --loop {lp}` refused to start "
                   f"({why}).\n")
    out.append(f"Load average {load_text(j.get('loadavg_start'))} at the start of this "
               f"benchmark, {load_text(j.get('loadavg_end'))} at its end.\n")
    return "\n".join(out), notes


def tls_section(raw):
    j = read_json(raw, "tls.json")
    if not j:
        return None, []
    res, labels, cfg = j.get("results", {}), j.get("labels", {}), j.get("config", {})
    label = lambda k: labels.get(k, k)  # noqa: E731
    present = j.get("present", [])
    order = [k for k in present + [k for k in labels if k not in present]
             if any(k in rep for ph in ("handshake", "echo", "bulk") for rep in res.get(ph, []))]
    strata = "strata" if "strata" in order else None
    out = [f"TLS {cfg.get('tls', '1.3')}, {cfg.get('key', '?')} certificate, the same for every "
           f"server; server on CPU 0, `tls_load` on CPU 1; {j.get('reps', '?')} interleaved "
           f"repetition(s) of {cfg.get('warmup_s', '?')} s warm-up + "
           f"{cfg.get('duration_s', '?')} s measured. The one-thread client caps the rates: "
           "server CPU per operation ranks the servers.\n"]

    def ok(rep, k):
        return k in rep and not rep[k].get("errors")

    def med(phase, k, field):
        return median([rep[k].get(field) for rep in res.get(phase, []) if ok(rep, k)])

    def rep_ratio(phase, a, b, field):
        rs = [rep[a][field] / rep[b][field] for rep in res.get(phase, [])
              if ok(rep, a) and ok(rep, b) and rep[a].get(field) and rep[b].get(field)]
        return median(rs)

    def first_error(phase, k):
        runs = [rep[k] for rep in res.get(phase, []) if k in rep]
        if runs and all(r.get("errors") for r in runs):
            return str(runs[0].get("first_error") or "errors")[:120]
        return None

    phases = [
        ("handshake", "Full handshakes (8 connections at a time, no resumption)",
         ["handshakes/s", "server CPU µs/handshake"], ["ops_s", "server_us_per_op"],
         "server_us_per_op"),
        ("echo", "Echo, 1 KiB ping-pong, 10 connections",
         ["requests/s", "p50 µs", "p99 µs", "server CPU µs/request"],
         ["ops_s", "p50_us", "p99_us", "server_us_per_op"], "server_us_per_op"),
        ("bulk", "Bulk echo, 64 KiB writes, 1 connection",
         ["MiB/s echoed", "server CPU µs/MiB"], ["mib_s", "server_us_per_mib"],
         "server_us_per_mib"),
    ]
    for phase, title, cols, fields, cost in phases:
        if not res.get(phase):
            continue
        out.append(f"### {title}\n")
        rows = []
        for k in order:
            if not any(k in rep for rep in res[phase]):
                continue
            err = first_error(phase, k)
            if err:
                rows.append([label(k), f"failed: {err}"])
                continue
            row = [label(k)] + [num(med(phase, k, f), 0 if f != cost else None)
                                for f in fields]
            if strata:
                row.append("" if k == strata else ratio(rep_ratio(phase, strata, k, cost)))
            rows.append(row)
        out.append(table(["server", *cols] + ([f"{label(strata)} ÷ this (CPU)"] if strata
                                               else []), rows))
    cg = res.get("callgrind") or {}
    if cg:
        out.append("### User-space instructions per operation (callgrind; machine load does not "
                   "move these)\n")
        rows = []
        for k in order:
            cells = []
            for phase in ("handshake", "echo", "bulk"):
                e = cg.get(f"{k}/{phase}")
                per = 65536 if phase == "bulk" else 1
                if not e:
                    cells.append("—")
                elif "error" in e:
                    cells.append("failed")
                else:
                    cells.append(num(e["ir_per_op"] / per, 2 if phase == "bulk" else 0))
            if any(c != "—" for c in cells):
                rows.append([label(k), *cells])
        out.append(table(["server", "per full handshake", "per 1 KiB echo request",
                          "per byte, 64 KiB bulk"], rows))
    aes = median(res.get("aes_gcm_bytes_s", []))
    if aes:
        out.append(f"`openssl speed -evp aes-128-gcm -bytes 16384` on CPU 0 in the same run: "
                   f"{aes / 1e6:,.0f} MB/s ({1e9 / aes:.3f} ns per byte).\n")
    load = j.get("loadavg") or [[], []]
    out.append(f"Load average {load_text(load[0])} at the start of this benchmark, "
               f"{load_text(load[1])} at its end.\n")
    return "\n".join(out), list(j.get("notes", []))


def http_section(raw, charts):
    j = read_json(raw, "http.json")
    if not j:
        return None, []
    labels, keys = j.get("labels", {}), j.get("present", [])
    label = lambda k: labels.get(k, k)  # noqa: E731
    summary, load, cfg = j.get("summary", {}), j.get("load", {}), j.get("config", {})
    sc, ir = j.get("strace", {}), j.get("callgrind", {})
    strata = "strata" if "strata" in keys else None
    nginx, floor = "nginx", "c_floor"
    out, pngs = [], []
    out.append(f"`GET /plaintext` (`Hello, World!`, keep-alive): wrk, one thread on CPU 1, "
               f"{cfg.get('connections', '?')} connections; servers on CPU 0, one thread each; "
               f"{cfg.get('reps', '?')} interleaved repetition(s) of {cfg.get('warmup_s', '?')} "
               f"s warm-up + {cfg.get('duration_s', '?')} s measured. wrk caps requests/s: the "
               "server's CPU per request ranks the servers.\n")
    if not strata:
        out.append(f"**Strata's http_server is not in this run**: "
                   f"{j.get('strata_note') or 'not found'}.\n")
    modes = [m for m in load if any(summary.get(f"{m}/{k}", {}).get("n") for k in keys)]
    mode_label = lambda m: "not pipelined" if m == "1" else f"pipelined ×{m}"  # noqa: E731
    if modes:
        servers = [(k, label(k).replace("`", "")) for k in keys]
        groups = [(m, mode_label(m)) for m in modes]
        png = charts.bars(
            "http", "HTTP GET /plaintext, per server: not pipelined and pipelined",
            [("thousand requests/s (median)",
              {(k, m): scaled(summary.get(f"{m}/{k}", {}).get("rps"), 1e-3)
               for k in keys for m in modes}),
             ("server CPU µs per request (median)",
              {(k, m): summary.get(f"{m}/{k}", {}).get("cpu_us_per_req")
               for k in keys for m in modes})],
            servers, groups)
        if png:
            pngs.append(png)
            out.append(f"![{png}](charts/{png})\n")
    for m in modes:
        runs = load[m]
        out.append(f"### {mode_label(m).capitalize()}\n")
        header = ["server", "requests/s", "p50 µs", "p99 µs", "server busy", "CPU µs/request"]
        if nginx in keys:
            header.append("this ÷ nginx (CPU)")
        if floor in keys:
            header.append("this ÷ C floor (CPU)")
        if strata:
            header.append(f"{label(strata)} ÷ this (CPU)")
        header += ["syscalls/request", "instructions/request"]
        rows = []
        for k in keys:
            s = summary.get(f"{m}/{k}", {})
            cpu = num(s.get("cpu_us_per_req"))
            if s.get("errors"):
                cpu += f" ({s['errors']} errors)"
            row = [label(k), num(s.get("rps"), 0), num(s.get("p50_us"), 0),
                   num(s.get("p99_us"), 0),
                   f"{100 * s['server_util']:.0f} %" if s.get("server_util") else "—", cpu]
            if nginx in keys:
                row.append(ratio(s.get("cpu_vs_nginx")))
            if floor in keys:
                row.append(ratio(s.get("cpu_vs_floor")))
            if strata:
                row.append("" if k == strata else
                           ratio(per_rep_ratios(runs, strata, k, "cpu_us_per_req")))
            row.append(num(sc.get(k, {}).get(m, {}).get("per_request"), 3))
            row.append(num(ir.get(k, {}).get(m, {}).get("per_request"), 0))
            rows.append(row)
        out.append(table(header, rows))
    cr = j.get("crawler") or {}
    if cr.get("summary"):
        servers = cr.get("servers", [])
        crawl_labels = {"strata": "Strata http_server --root", "nginx": "nginx static files",
                        **j.get("labels_crawl", {})}
        label = lambda k: crawl_labels.get(k, labels.get(k, k))  # noqa: E731
        files = cr.get("site", {}).get("files")
        out.append(f"### Crawler: `examples/crawler` over a static site"
                   f"{f' ({files:,} files)' if files else ''}, pages/s\n")
        header = ["concurrency"] + [f"{label(k)} pages/s" for k in servers]
        both = strata in servers and nginx in servers
        if both:
            header.append("Strata ÷ nginx (pages/s)")
        header += [f"{label(k)} server CPU µs/page" for k in servers]
        rows = []
        for c in cr.get("concurrency", []):
            row = [str(c)] + [num(cr["summary"].get(f"{c}/{k}", {}).get("pages_per_s"), 0)
                              for k in servers]
            if both:
                row.append(ratio(cr["summary"].get(f"{c}/{strata}", {}).get("vs_nginx")))
            row += [num(cr["summary"].get(f"{c}/{k}", {}).get("server_sched_us_per_page"))
                    for k in servers]
            rows.append(row)
        out.append(table(header, rows))
        out.append("Here a higher pages/s is better: the ratio is one of rates, not costs.\n")
    out.append(f"{j.get('versions', '')}; load average {load_text(j.get('loadavg_start'))} at "
               f"the start of this benchmark, {load_text(j.get('loadavg_end'))} at its end.\n")
    return "\n".join(out), list(j.get("failures", []))


# ---------------------------------------------------------------------------------------------
# the report

def render(a, run):
    out = Path(a.out)
    raw = out / "raw"
    f = run["facts"]
    date = run["started"][:10]
    commit = f["commit"] + (" + uncommitted changes" if f.get("dirty") else "")
    subtitle = f"{f['cpu']}, {f['cpus']} CPUs, Linux {f['kernel']}; {date}; commit {commit}"
    charts = Charts(out / "charts", subtitle)
    L = []
    p = L.append
    p("# Strata benchmark report\n")
    p(f"{'Quick (smoke) run' if run['quick'] else 'Full run'} of `{run['command']}`, "
      f"{run['started']} to {run.get('ended', '?')} (UTC), {run.get('elapsed_s', 0) / 60:.0f} "
      f"min; Strata on the loops: {', '.join(run['loops'])}.\n")
    for lp, why in run.get("loops_refused", {}).items():
        p(f"**Strata on {lp} is not in this report**: `echo_server --loop {lp}` refused to start "
          f"({why}), so no runner was given that loop.\n")
    rows = [
        ["CPU", f"{f['cpu']}, {f['cpus']} CPUs online"
         + (f", {f['memory_gib']} GiB memory" if f.get("memory_gib") else "")],
        ["system", f"{f.get('os') or 'Linux'}, kernel {f['kernel']}"],
        ["load average (1, 5, 15 min)", f"{load_text(run['load_start'])} at the start, "
                                        f"{load_text(run.get('load_end'))} at the end"],
        ["date", f"{run['started']} (UTC)"],
        ["commit", f"{commit} ({f.get('commit_subject', '')})"],
        ["compiler", f.get("compiler", "?")],
        ["peers", ", ".join(f"{k} {v}" for k, v in f.get("packages", {}).items())
         + f"; Python {f.get('python', '?')}"],
    ]
    p(table(["machine and run", ""], rows, ["---", "---"]))
    busy = any(float(load_text(x).split(",")[0]) > 0.5
               for x in (run["load_start"], run.get("load_end")) if x and x != "?")
    p("How to read it: the servers run pinned to CPU 0 and the load generators to CPU 1. "
      + RATIO_NOTE + " Quote the ratios, not the absolute figures, and only ratios from one run"
      " (bench/README.md, \"Quoting the figures\")."
      + (" The machine was busy during this run (load average above 0.5): CPU times and rates "
         "are noisy, the system-call and instruction counts are not." if busy else "") + "\n")
    p("Contents: " + ", ".join(f"[{b.title}](#{slug(b.title)})" for b in BENCHES
                               if b.key in run["benches"]) + ", [Runs](#runs).\n")
    sections = {
        "core": lambda: micro_section(raw, "core_micro", CORE_ROWS, run["loops"],
                                      "The event loop's primitives (`bench/core_micro.cpp`) "
                                      "against the same operations on Python's asyncio and "
                                      "uvloop."),
        "coord": lambda: micro_section(raw, "coord_micro", COORD_ROWS, run["loops"],
                                       "Locks, queues, executors and `call_soon_threadsafe` "
                                       "(`bench/coord_micro.cpp`) against asyncio and uvloop."),
        "echo": lambda: echo_section(raw, charts),
        "tls": lambda: tls_section(raw),
        "http": lambda: http_section(raw, charts),
    }
    failures = []
    for b in BENCHES:
        if b.key not in run["benches"]:
            continue
        p(f"## {b.title}\n")
        st = run["status"].get(b.key, {})
        try:
            text, notes = sections[b.key]()
        except Exception as e:  # a malformed result must not cost the other sections
            text, notes = None, [f"the report could not read its results: {e!r}"]
        if st.get("timed_out"):
            p(f"**Stopped after its time limit ({st['limit_s']} s)**; what it finished is below "
              "if it wrote its results.\n")
        elif st and st.get("exit") not in (0, None):
            p(f"**`{st.get('command')}` exited with status {st.get('exit')}** (see "
              f"`logs/{b.key}.log`).\n")
        p(text or "No results: the runner left no readable JSON (see its log).\n")
        p(f"The runner's own report, with its targets and notes: [`logs/{b.key}.md`]"
          f"(logs/{b.key}.md).\n")
        failures += [f"{b.key}: {n}" for n in notes]
    p("## Runs\n")
    rows = []
    for b in BENCHES:
        st = run["status"].get(b.key)
        if st:
            rows.append([b.title, f"`{st['command']}`",
                         "stopped (time limit)" if st.get("timed_out") else str(st.get("exit")),
                         f"{st.get('elapsed_s', 0) / 60:.1f}"])
    p(table(["benchmark", "command", "exit status", "minutes"], rows,
            ["---", "---", "---:", "---:"]))
    if failures or charts.failed:
        p("Failures and notes reported by the runners:\n")
        for n in failures + [f"chart {c}" for c in charts.failed]:
            p(f"- {cell(n)}")
        p("")
    p(f"Raw results: `raw/` (each runner's JSON); the charts' data and gnuplot scripts: "
      f"`charts/`. Redraw without running: `bench/run_report.sh --render-only`.\n")
    (out / "report.md").write_text("\n".join(L))
    return charts


def slug(title):
    s = re.sub(r"[^\w\- ]", "", title.lower()).strip()
    return s.replace(" ", "-")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="the build directory the runners share")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--only", default="", help="comma list of: " +
                    ",".join(b.key for b in BENCHES))
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--docs", default="", help="also copy the charts into this directory")
    ap.add_argument("--command", default="bench/run_report.sh")
    a = ap.parse_args()
    a.build = str(Path(a.build).resolve())
    a.out = str(Path(a.build) / "report")
    run_file = Path(a.out) / "run.json"

    if a.render_only:
        try:
            run = json.loads(run_file.read_text())
        except (OSError, ValueError):
            log(f"nothing to render: no {run_file} (run bench/run_report.sh first)")
            return 1
    else:
        a.loops = [x for x in a.loops.split(",") if x]
        unknown = [x for x in a.loops if x not in LOOPS]
        if unknown or not a.loops or len(set(a.loops)) != len(a.loops):
            log(f"--loops: distinct loops among {', '.join(LOOPS)} (got {','.join(a.loops)})")
            return 2
        only = [x for x in a.only.split(",") if x]
        if set(only) - {b.key for b in BENCHES}:
            log(f"--only: among {', '.join(b.key for b in BENCHES)}")
            return 2
        benches = [b for b in BENCHES if not only or b.key in only]
        asked = a.loops
        refused = refused_loops(a.build, asked)
        # Every loop refused: the runners get them all and report the failures themselves.
        a.loops = [lp for lp in asked if lp not in refused] or asked
        refused = {lp: why for lp, why in refused.items() if lp not in a.loops}
        signal.signal(signal.SIGTERM, stop_runner(143))
        signal.signal(signal.SIGINT, stop_runner(130))
        out = Path(a.out)
        for sub in ("raw", "logs", "charts"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "report.md").unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        run = {"command": a.command, "quick": a.quick, "loops": a.loops,
               "loops_asked": asked, "loops_refused": refused,
               "benches": [b.key for b in benches], "started": now().isoformat(),
               "load_start": loadavg(), "facts": machine_facts(), "status": {}}
        env = dict(os.environ, STRATA_BENCH_BUILD=a.build, STRATA_BENCH_TLS_BUILD=a.build,
                   CMAKE_BUILD_PARALLEL_LEVEL="2")
        env.pop("STRATA_DEBUG", None)
        t0 = time.monotonic()
        for b in benches:
            run["status"][b.key] = run_bench(b, a, env)
            run_file.write_text(json.dumps(run, indent=1) + "\n")
        run["ended"] = now().isoformat()
        run["load_end"] = loadavg()
        run["elapsed_s"] = round(time.monotonic() - t0, 1)
        run_file.write_text(json.dumps(run, indent=1) + "\n")

    charts = render(a, run)
    for c in charts.failed:
        log(f"  ! chart {c}")
    if a.docs and charts.made:
        docs = Path(a.docs)
        docs.mkdir(parents=True, exist_ok=True)
        for png in charts.made:
            shutil.copyfile(Path(a.out) / "charts" / png, docs / png)
        log(f"== charts copied to {docs}: {', '.join(charts.made)}")
    failed = [k for k, st in run["status"].items() if st.get("exit") != 0]
    log(f"== report: {Path(a.out) / 'report.md'}"
        + (f" (charts: {Path(a.out) / 'charts'})" if charts.made else "")
        + (f"; runners that failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
