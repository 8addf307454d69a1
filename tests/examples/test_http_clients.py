#!/usr/bin/env python3
"""http_get and crawler as programs, against Python's http.server: the client contract of
DESIGN.md (http_get prints `URL STATUS BODY_BYTES` per URL, https verified; crawler follows
same-host links and prints a summary).

The servers are ThreadingHTTPServer instances in this process, on 127.0.0.1 and ephemeral
ports, serving a temporary directory of linked HTML pages; each records the paths it was asked
for. The https checks need the openssl command (scripts/make_cert.sh) and are skipped without
it. Every wait is bounded. Exits 0 when every check passes, 1 otherwise, naming each failed
check.

    test_http_clients.py --http-get build/examples/http_get --crawler build/examples/crawler
    test_http_clients.py ... check_crawler_summary     the checks named only
"""

import argparse
import http.server
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from example_support import run_checks

RUN_TIMEOUT = 30  # seconds for one program run
MAKE_CERT = Path(__file__).resolve().parents[2] / "scripts" / "make_cert.sh"
SUMMARY = re.compile(r"^crawler: (\d+) pages fetched, (\d+) errors, (\d+) bytes, "
                     r"([0-9.]+) s, ([0-9.]+) pages/s$")

args = None
site = None  # the Site of the run


# ---- Servers ----------------------------------------------------------------------------------

class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site's directory over HTTP/1.1 (keep-alive), records each path asked for, and
    answers /redirect/... with a 302 to the rest of the path."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.record(self.path)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/redirect"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *_):
        pass  # quiet


class Server(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1, an ephemeral port, serving @directory in a thread;
    with @context, over TLS."""

    daemon_threads = True

    def __init__(self, directory, context=None):
        self.directory = directory
        self.paths = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0),
                         lambda *a, **kw: Handler(*a, directory=directory, **kw))
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def record(self, path):
        with self.lock:
            self.paths.append(path)

    def requested(self):
        with self.lock:
            return list(self.paths)

    def clear(self):
        with self.lock:
            self.paths.clear()

    def url(self, path="/", host="127.0.0.1", scheme="http"):
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self):
        self.shutdown()
        self.server_close()


class Site:
    """A temporary directory of pages and the servers over it: `main` serves the site; `other`
    serves the same files on another port (another origin, never to be crawled)."""

    PAGES = 6  # index.html, p1.html ... p5.html

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="strata-http-")
        self.root = Path(self.tmp.name)
        self.other = Server(self.tmp.name)
        self.main = Server(self.tmp.name)
        self.files = {}
        # index -> p1 -> ... -> p5, every page links back to the index (relative and absolute,
        # with fragments), to the other origin, to another host name for the same server
        # (localhost), to a mailto: and to a file that does not exist only from p5.
        names = ["index.html"] + [f"p{i}.html" for i in range(1, self.PAGES)]
        for i, name in enumerate(names):
            links = ['<a href="/index.html#top">home</a>', "<a HREF='./index.html'>home</a>",
                     f'<a href="{self.other.url("/p1.html")}">elsewhere</a>',
                     f'<a href={self.main.url("/p2.html", host="localhost")}>by name</a>',
                     '<a href="mailto:someone@example.com">mail</a>',
                     '<a data-href="/not-a-link.html">no</a>']
            if i + 1 < len(names):
                links.append(f'<a class="x" href = "{names[i + 1]}#frag">next</a>')
            else:
                links.append('<a href="missing.html">broken</a>')
            text = f"<!doctype html><title>{name}</title><body>\n" + "\n".join(links) + "\n</body>"
            self.write(name, text)
        self.write("data.bin", "x" * 100000)
        self.write("empty.txt", "")

    def write(self, name, text):
        (self.root / name).write_text(text)
        self.files[name] = len(text.encode())

    def close(self):
        self.main.stop()
        self.other.stop()
        self.tmp.cleanup()


# ---- Helpers ----------------------------------------------------------------------------------

def run(program, *argv, timeout=RUN_TIMEOUT):
    return subprocess.run([program, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def http_get(*argv):
    return run(args.http_get, *argv)


def crawler(*argv):
    return run(args.crawler, *argv)


def lines(text):
    return [line for line in text.splitlines() if line]


def summary_of(result):
    """(pages, errors, bytes) from crawler's summary line; fails without one."""
    for line in lines(result.stdout):
        match = SUMMARY.match(line)
        if match:
            return int(match.group(1)), int(match.group(2)), int(match.group(3))
    raise AssertionError(f"no summary line: stdout {result.stdout!r}, stderr {result.stderr!r}")


def closed_port():
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- http_get ---------------------------------------------------------------------------------

def check_http_get_help_and_options():
    result = http_get("--help")
    assert result.returncode == 0 and "usage: http_get URL" in result.stdout, result
    result = http_get()
    assert result.returncode == 2 and "no URL given" in result.stderr, result
    result = http_get(site.main.url(), "--timeout", "0")
    assert result.returncode == 2 and "--timeout" in result.stderr, result
    result = http_get(site.main.url(), "--bogus", "1")
    assert result.returncode == 2 and "unknown option '--bogus'" in result.stderr, result
    result = http_get(site.main.url(), "--loop", "nope")
    assert result.returncode == 2 and "nope" in result.stderr, result


def check_http_get_status_and_sizes():
    names = ["index.html", "p1.html", "data.bin", "empty.txt"]
    urls = [site.main.url("/" + name) for name in names] + [site.main.url("/missing.html")]
    for loop in ("selector", "poll", "select"):
        for concurrency in ("1", "3"):
            result = http_get(*urls, "--loop", loop, "--concurrency", concurrency)
            assert result.returncode == 0, (loop, concurrency, result)
            got = lines(result.stdout)
            assert len(got) == len(urls), got
            for line, url, name in zip(got, urls, names + [None]):
                fields = line.split(" ")
                assert len(fields) == 3 and fields[0] == url, (line, url)
                if name is None:
                    assert fields[1] == "404" and int(fields[2]) > 0, line
                else:
                    assert fields[1] == "200" and int(fields[2]) == site.files[name], line
            assert result.stderr == "", result.stderr


def check_http_get_follows_redirects():
    url = site.main.url("/redirect/p2.html")
    result = http_get(url)
    assert result.returncode == 0, result
    assert lines(result.stdout) == [f"{url} 200 {site.files['p2.html']}"], result.stdout
    result = http_get(url, "--no-redirects")
    assert lines(result.stdout) == [f"{url} 302 0"], result.stdout


def check_http_get_failures():
    refused = f"http://127.0.0.1:{closed_port()}/"
    good = site.main.url("/p1.html")
    result = http_get(refused, good, "ftp://example.com/")
    assert result.returncode == 1, result
    assert lines(result.stdout) == [f"{good} 200 {site.files['p1.html']}"], result.stdout
    errors = lines(result.stderr)
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"http_get: {refused}: ") and "refused" in errors[0], errors
    assert errors[1].startswith("http_get: ftp://example.com/: ") and "scheme" in errors[1], errors

    # A server that accepts and never answers: the timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        result = http_get(url, "--timeout", "1")
        took = time.monotonic() - start
    assert result.returncode == 1, result
    assert f"http_get: {url}: " in result.stderr and "timeout" in result.stderr, result.stderr
    assert took < 10, took


# ---- crawler ----------------------------------------------------------------------------------

def check_crawler_help_and_options():
    result = crawler("--help")
    assert result.returncode == 0 and "usage: crawler URL" in result.stdout, result
    result = crawler()
    assert result.returncode == 2 and "no start URL" in result.stderr, result
    result = crawler("ftp://x/")
    assert result.returncode == 2 and "scheme" in result.stderr, result
    result = crawler(site.main.url(), "--max-pages", "0")
    assert result.returncode == 2 and "--max-pages" in result.stderr, result
    result = crawler(site.main.url(), site.main.url())
    assert result.returncode == 2 and "one start URL" in result.stderr, result


def check_crawler_summary():
    start = site.main.url("/index.html")
    expected = {f"/p{i}.html" for i in range(1, Site.PAGES)} | {"/index.html", "/missing.html"}
    size_404 = len_of_404()
    html = sum(size for name, size in site.files.items() if name.endswith(".html"))
    for loop in ("selector", "poll", "select"):
        for concurrency in ("1", "4"):
            site.main.clear()
            site.other.clear()
            result = crawler(start, "--concurrency", concurrency, "--loop", loop, "--verbose")
            assert result.returncode == 0, result
            pages, errors, size = summary_of(result)
            assert pages == len(expected) and errors == 0, (loop, concurrency, result.stdout)
            assert size == html + size_404, (size, result.stdout)
            asked = site.main.requested()
            assert sorted(asked) == sorted(expected), asked  # each page once, same host only
            assert site.other.requested() == [], site.other.requested()
            verbose = [line for line in lines(result.stdout) if not line.startswith("crawler:")]
            assert sorted(verbose) == sorted(
                f"{404 if p == '/missing.html' else 200} {site.main.url(p)}" for p in expected), verbose


def len_of_404():
    """The size of the server's 404 page for /missing.html."""
    result = http_get(site.main.url("/missing.html"))
    return int(result.stdout.split()[2])


def check_crawler_max_pages():
    site.main.clear()
    result = crawler(site.main.url("/index.html"), "--max-pages", "3", "--concurrency", "2")
    assert result.returncode == 0, result
    pages, errors, _ = summary_of(result)
    assert pages == 3 and errors == 0, result.stdout
    assert len(site.main.requested()) == 3, site.main.requested()


def check_crawler_start_fails():
    result = crawler(f"http://127.0.0.1:{closed_port()}/")
    assert result.returncode == 1, result
    pages, errors, _ = summary_of(result)
    assert pages == 0 and errors == 1, result.stdout
    assert "could not be fetched" in result.stderr, result.stderr


# ---- https ------------------------------------------------------------------------------------

def check_https():
    if shutil.which("openssl") is None:
        print("SKIP check_https: no openssl command", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="strata-certs-") as certs:
        made = subprocess.run([str(MAKE_CERT), certs], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        cert, key = made.stdout.split()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = Server(site.tmp.name, context)
        try:
            for host in ("127.0.0.1", "localhost"):
                url = server.url("/p1.html", host=host, scheme="https")
                result = http_get(url, "--cafile", cert)
                assert result.returncode == 0, (host, result)
                assert lines(result.stdout) == [f"{url} 200 {site.files['p1.html']}"], result.stdout
            url = server.url("/p1.html", scheme="https")
            # The system's CA store does not know the throwaway certificate.
            result = http_get(url)
            assert result.returncode == 1, result
            assert "certificate verify failed" in result.stderr, result.stderr
            result = http_get(url, "--insecure")
            assert result.returncode == 0, result
            # The crawler over https.
            result = crawler(server.url("/index.html", scheme="https"), "--cafile", cert)
            assert result.returncode == 0, result
            pages, errors, _ = summary_of(result)
            assert pages == Site.PAGES + 1 and errors == 0, result.stdout
        finally:
            server.stop()


CHECKS = [
    check_http_get_help_and_options,
    check_http_get_status_and_sizes,
    check_http_get_follows_redirects,
    check_http_get_failures,
    check_crawler_help_and_options,
    check_crawler_summary,
    check_crawler_max_pages,
    check_crawler_start_fails,
    check_https,
]


def main():
    global args, site
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-get", required=True)
    parser.add_argument("--crawler", required=True)
    parser.add_argument("checks", nargs="*", help="names of checks to run (default: all)")
    args = parser.parse_args()
    site = Site()
    try:
        return run_checks(CHECKS, args.checks)
    finally:
        site.close()


if __name__ == "__main__":
    sys.exit(main())
