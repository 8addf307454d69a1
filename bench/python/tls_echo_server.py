#!/usr/bin/env python3
"""TLS echo server on asyncio.Protocol (stdlib ssl), for bench/run_tls.sh.

    tls_echo_server.py --cert FILE --key FILE [--host 127.0.0.1] [--port P] [--uvloop]

Serves TLS through loop.create_server(ssl=context): asyncio's SSL protocol (memory BIOs)
on Python's selector loop, or uvloop's own with --uvloop. Every data_received() writes the
bytes straight back; when the transport's write buffer passes its high-water mark, reading
pauses until it drains. The context is ssl.SSLContext(PROTOCOL_TLS_SERVER) with the
certificate loaded and nothing else changed (the client pins the version and the suite).
Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM: exit 0.
"""
import argparse
import asyncio
import signal
import ssl
import sys


class Echo(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close (after answering close_notify)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def main(args, context):
    loop = asyncio.get_running_loop()
    # A client that resets right after the TLS shutdown is not worth a traceback each time.
    loop.set_exception_handler(lambda loop, ctx: None)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(Echo, args.host, args.port, ssl=context, backlog=4096)
    real_port = server.sockets[0].getsockname()[1]
    print(f"listening on {args.host}:{real_port}", flush=True)
    await stop
    server.close()


def run():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = ap.parse_args()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as e:
        print(f"tls_echo_server.py: cannot load {args.cert} / {args.key}: {e}", file=sys.stderr)
        sys.exit(1)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("tls_echo_server.py: uvloop is not installed (python3-uvloop)", file=sys.stderr)
            sys.exit(1)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(main(args, context))
    except OSError as e:
        print(f"tls_echo_server.py: cannot listen on {args.host}:{args.port}: {e}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
