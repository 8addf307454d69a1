#!/usr/bin/env python3
"""Load clients of the soak and scale scenarios (bench/run_soak.sh, bench/soak/soak.py).

Each subcommand is one client, run as its own process by soak.py; each prints JSON lines on
stdout (the last one is its result) and stops by itself (a duration or a time limit), also
when standard input closes.

  clients.py idle --port P --count N          open N connections, echo one byte on each,
                                              hold them; stdin "check" echoes once more on
                                              each, EOF (or "close") closes them all
  clients.py churn --port P --duration S --workers K
                                              K processes: connect, echo 16 bytes, close, as
                                              fast as they can, for S seconds
  clients.py slowloris --port P --count N --interval S --duration S
                                              hold N connections that send a request head one
                                              byte every S seconds; reconnect when cut
  clients.py download --port P --path /F --clients N --rate B --limit S
                                              N keep-alive connections that GET /F over and over,
                                              each reading at most B bytes/s; a refused connect
                                              ends a client

All timestamps are time.monotonic() (CLOCK_MONOTONIC: the same clock in every process).
"""
import argparse
import asyncio
import errno
import json
import multiprocessing
import random
import resource
import socket
import statistics
import sys
import threading
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def err_name(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def count(d, key):
    d[key] = d.get(key, 0) + 1


def stdin_watcher(loop, on_line):
    """Calls on_line(line) on the loop for each stdin line, and on_line(None) at EOF."""
    def run():
        for line in sys.stdin:
            loop.call_soon_threadsafe(on_line, line.strip())
        loop.call_soon_threadsafe(on_line, None)
    threading.Thread(target=run, daemon=True).start()


# ---- idle ----------------------------------------------------------------------------------------

async def echo_once(loop, s, payload, timeout):
    await asyncio.wait_for(loop.sock_sendall(s, payload), timeout)
    got = b""
    while len(got) < len(payload):
        chunk = await asyncio.wait_for(loop.sock_recv(s, len(payload) - len(got)), timeout)
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "EOF before the echo")
        got += chunk
    if got != payload:
        raise ValueError("echo differs")


async def idle_main(a):
    loop = asyncio.get_running_loop()
    limit = raise_nofile()
    sem = asyncio.Semaphore(a.concurrency)
    socks, errors = [], {}
    t0 = time.monotonic()

    async def open_one(i):
        async with sem:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(s, (a.host, a.port)), a.timeout)
                await echo_once(loop, s, bytes([65 + i % 26]), a.timeout)
                socks.append(s)
            except Exception as e:  # noqa: BLE001 - every failure is counted by name
                count(errors, err_name(e))
                s.close()

    await asyncio.gather(*(open_one(i) for i in range(a.count)))
    emit({"event": "ready", "nofile": limit, "opened": len(socks), "errors": errors,
          "seconds": round(time.monotonic() - t0, 3)})

    commands = asyncio.Queue()
    stdin_watcher(loop, commands.put_nowait)
    deadline = t0 + a.limit
    while True:
        try:
            cmd = await asyncio.wait_for(commands.get(), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            cmd = None
        if cmd == "check":
            t1 = time.monotonic()
            errs = {}

            async def check_one(s):
                async with sem:
                    try:
                        await echo_once(loop, s, b"z", a.timeout)
                        return True
                    except Exception as e:  # noqa: BLE001
                        count(errs, err_name(e))
                        return False

            ok = sum(await asyncio.gather(*(check_one(s) for s in socks)))
            emit({"event": "checked", "echoed": ok, "held": len(socks), "errors": errs,
                  "seconds": round(time.monotonic() - t1, 3)})
            continue
        break  # EOF, "close" or the time limit
    for s in socks:
        s.close()
    emit({"event": "closed", "closed": len(socks)})


# ---- churn ---------------------------------------------------------------------------------------

def churn_worker(host, port, end, payload, queue):
    ok, errors = 0, {}
    addr = (host, port)
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(addr)
            s.sendall(payload)
            got = 0
            while got < len(payload):
                chunk = s.recv(len(payload) - got)
                if not chunk:
                    raise ConnectionResetError(errno.ECONNRESET, "EOF before the echo")
                got += len(chunk)
            ok += 1
        except OSError as e:
            count(errors, err_name(e))
            if len(errors) and sum(errors.values()) > 1000:
                break  # the server is gone: do not spin
            time.sleep(0.01)
        finally:
            s.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    queue.put((ok, errors, ru.ru_utime, ru.ru_stime))


def churn_main(a):
    raise_nofile()
    payload = b"0123456789abcdef"
    t0 = time.monotonic()
    end = t0 + a.duration
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=churn_worker, args=(a.host, a.port, end, payload, q))
             for _ in range(a.workers)]
    for p in procs:
        p.start()
    total, errors, per_worker, user, system = 0, {}, [], 0.0, 0.0
    for _ in procs:
        ok, errs, utime, stime = q.get(timeout=a.duration + 60)
        total += ok
        per_worker.append(ok)
        user += utime
        system += stime
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
    for p in procs:
        p.join(10)
    secs = time.monotonic() - t0
    emit({"event": "done", "connections": total, "per_worker": per_worker, "errors": errors,
          "seconds": round(secs, 3), "per_second": round(total / secs, 1),
          "client_cpu_user_s": round(user, 2), "client_cpu_system_s": round(system, 2)})


# ---- slowloris -----------------------------------------------------------------------------------

# A request head that never ends: one byte per interval, it would take hours to reach the
# blank line (and the 8 KiB header limit).
SLOW_HEAD = (b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
             b"X-Padding: " + b"a" * 8192)


async def slowloris_main(a):
    loop = asyncio.get_running_loop()
    raise_nofile()
    t0 = time.monotonic()
    end = t0 + a.duration
    stats = {"connects": 0, "connect_errors": {}, "cut": 0, "cut_408": 0, "cut_eof": 0,
             "cut_reset": 0, "bytes_max": 0, "still_open_at_end": 0}
    cut_after = []     # seconds from the first head byte to the server's close
    first_cut = []     # the same, for each connection's first cut only
    open_now = [0]
    samples = []
    stop = asyncio.Event()
    stdin_watcher(loop, lambda line: stop.set() if line is None else None)
    sem = asyncio.Semaphore(100)

    async def hold(i):
        first = True
        # Spread the first connects over one interval, so that the bytes (and the cuts) are
        # spread over time rather than all at once.
        await asyncio.sleep(random.uniform(0, min(1.0, a.interval)))
        while not stop.is_set() and time.monotonic() < end:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                async with sem:
                    await asyncio.wait_for(loop.sock_connect(s, (a.host, a.port)), 10)
            except Exception as e:  # noqa: BLE001
                count(stats["connect_errors"], err_name(e))
                s.close()
                await asyncio.sleep(0.5)
                continue
            stats["connects"] += 1
            open_now[0] += 1
            sent = 0
            started = time.monotonic()
            how = None
            try:
                while not stop.is_set() and time.monotonic() < end:
                    await loop.sock_sendall(s, SLOW_HEAD[sent:sent + 1])
                    sent += 1
                    wait = a.interval if sent > 1 else random.uniform(0.2, a.interval)
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(s, 4096),
                                                      min(wait, max(0.01, end - time.monotonic())))
                    except asyncio.TimeoutError:
                        continue
                    how = "408" if data.startswith(b"HTTP/1.1 408") else ("eof" if not data
                                                                          else "other")
                    if data:  # read on to the close
                        try:
                            while await asyncio.wait_for(loop.sock_recv(s, 4096), 5):
                                pass
                        except (OSError, asyncio.TimeoutError):
                            pass
                    break
            except OSError:
                how = "reset"
            finally:
                open_now[0] -= 1
                s.close()
            stats["bytes_max"] = max(stats["bytes_max"], sent)
            if how is None:
                stats["still_open_at_end"] += 1
                break
            stats["cut"] += 1
            stats["cut_" + ("408" if how == "408" else "reset" if how == "reset" else "eof")] += 1
            cut_after.append(time.monotonic() - started)
            if first:
                first_cut.append(time.monotonic() - started)
                first = False

    async def sampler():
        ready_sent = False
        while not stop.is_set() and time.monotonic() < end:
            samples.append((round(time.monotonic() - t0, 2), open_now[0]))
            if not ready_sent and open_now[0] >= a.count:
                emit({"event": "ready", "open": open_now[0],
                      "seconds": round(time.monotonic() - t0, 3)})
                ready_sent = True
            await asyncio.sleep(0.25)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(hold(i) for i in range(a.count)))
    stop.set()
    await sampling

    def summary(xs):
        if not xs:
            return None
        xs = sorted(xs)
        return {"n": len(xs), "min": round(xs[0], 3), "median": round(statistics.median(xs), 3),
                "p99": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 3),
                "max": round(xs[-1], 3)}

    ru = resource.getrusage(resource.RUSAGE_SELF)
    emit({"event": "done", **stats, "cut_after_s": summary(cut_after),
          "first_cut_after_s": summary(first_cut), "open_samples": samples,
          "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
          "seconds": round(time.monotonic() - t0, 3)})


# ---- download ------------------------------------------------------------------------------------

async def download_main(a):
    loop = asyncio.get_running_loop()
    raise_nofile()
    t0 = time.monotonic()
    deadline = t0 + a.limit
    events = []  # per response: dict
    unanswered = []  # requests whose connection closed before any response byte
    connects_ok, refused, other_connect_errors = [], [], {}
    streaming = set()
    ready = [False]
    request = (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n").encode()
    buf = bytearray(64 * 1024)

    async def read_head(s, pending):
        data = bytes(pending)
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(s, 4096), max(0.1, deadline -
                                                                         time.monotonic()))
            if not chunk:
                return None, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    async def client(i):
        await asyncio.sleep(a.stagger * i / max(1, a.clients))
        while time.monotonic() < deadline:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(s, (a.host, a.port)), 5)
            except ConnectionRefusedError:
                refused.append(time.monotonic())
                s.close()
                return
            except Exception as e:  # noqa: BLE001
                count(other_connect_errors, err_name(e))
                s.close()
                await asyncio.sleep(0.1)
                continue
            connects_ok.append(time.monotonic())
            try:
                rest = b""
                while time.monotonic() < deadline:
                    sent_at = time.monotonic()
                    await loop.sock_sendall(s, request)
                    head, rest = await read_head(s, rest)
                    if head is None:
                        if rest:
                            events.append({"client": i, "requested": sent_at,
                                           "started": time.monotonic(), "length": None,
                                           "received": len(rest), "ended": time.monotonic(),
                                           "complete": False, "why": "EOF inside the head"})
                        else:  # closed before a response began: not started
                            unanswered.append({"client": i, "requested": sent_at,
                                               "closed": time.monotonic()})
                        break
                    started = time.monotonic()
                    lines = head.split(b"\r\n")
                    status = int(lines[0].split()[1])
                    hdrs = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(b":")
                        hdrs[k.strip().lower()] = v.strip()
                    length = int(hdrs.get(b"content-length", b"-1"))
                    close = hdrs.get(b"connection", b"").lower() == b"close"
                    ev = {"client": i, "requested": sent_at, "started": started,
                          "status": status, "length": length, "received": 0,
                          "connection_close": close, "complete": False}
                    events.append(ev)
                    got = len(rest)  # no pipelining: what follows the head is body
                    streaming.add(i)
                    if not ready[0] and len(streaming) == a.clients:
                        ready[0] = True
                        emit({"event": "ready", "seconds": round(time.monotonic() - t0, 3)})
                    why = None
                    while got < length:
                        # Rate limit: never ahead of `rate` bytes per second since `started`.
                        ahead = started + got / a.rate - time.monotonic()
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                        want = min(len(buf), length - got)
                        try:
                            n = await asyncio.wait_for(loop.sock_recv_into(s, memoryview(buf)[:want]),
                                                       max(0.1, deadline - time.monotonic()))
                        except OSError as e:
                            why = err_name(e)
                            break
                        except asyncio.TimeoutError:
                            why = "timeout"
                            break
                        if n == 0:
                            why = "EOF"
                            break
                        got += n
                    ev["received"] = got
                    ev["ended"] = time.monotonic()
                    ev["complete"] = got == length
                    if why:
                        ev["why"] = why
                        break
                    streaming.discard(i)
                    rest = b""
                    if close:
                        break
            except (OSError, asyncio.TimeoutError) as e:
                count(other_connect_errors, "during request: " + err_name(e))
            finally:
                s.close()
        events.append({"client": i, "limit_reached": True})

    await asyncio.gather(*(client(i) for i in range(a.clients)))
    emit({"event": "done", "responses": [e for e in events if "started" in e],
          "limit_reached": sum(1 for e in events if e.get("limit_reached")),
          "unanswered": unanswered, "connects": connects_ok, "refused": refused, "connect_errors": other_connect_errors,
          "seconds": round(time.monotonic() - t0, 3)})


# ---- main ----------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("idle", "churn", "slowloris", "download"):
        sp = sub.add_parser(name)
        sp.add_argument("--host", default="127.0.0.1")
        sp.add_argument("--port", type=int, required=True)
        if name == "idle":
            sp.add_argument("--count", type=int, default=15000)
            sp.add_argument("--concurrency", type=int, default=100)
            sp.add_argument("--timeout", type=float, default=30)
            sp.add_argument("--limit", type=float, default=300, help="hold at most S seconds")
        elif name == "churn":
            sp.add_argument("--duration", type=float, default=60)
            sp.add_argument("--workers", type=int, default=3)
        elif name == "slowloris":
            sp.add_argument("--count", type=int, default=1000)
            sp.add_argument("--interval", type=float, default=2.0)
            sp.add_argument("--duration", type=float, default=60)
        else:
            sp.add_argument("--path", required=True)
            sp.add_argument("--clients", type=int, default=50)
            sp.add_argument("--rate", type=float, default=8 * 1024 * 1024)
            sp.add_argument("--stagger", type=float, default=1.0,
                            help="spread the clients' first requests over S seconds")
            sp.add_argument("--limit", type=float, default=30)
    a = p.parse_args()
    if a.cmd == "churn":
        churn_main(a)
    else:
        asyncio.run({"idle": idle_main, "slowloris": slowloris_main,
                     "download": download_main}[a.cmd](a))


if __name__ == "__main__":
    main()
