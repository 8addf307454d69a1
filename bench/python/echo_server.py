#!/usr/bin/env python3
"""TCP echo server on asyncio.Protocol, for bench/run_echo.sh.

    echo_server.py [--host 127.0.0.1] [--port P] [--loop asyncio|uvloop]

Every data_received() writes the bytes straight back with transport.write(); when the
transport's write buffer passes its high-water mark, reading pauses until it drains
(pause_writing/resume_writing), so memory stays bounded. Prints "listening on HOST:PORT"
once ready; SIGINT or SIGTERM: exit 0.
"""
import argparse
import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def main(host, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(Echo, host, port, backlog=4096)
    real_port = server.sockets[0].getsockname()[1]
    print(f"listening on {host}:{real_port}", flush=True)
    await stop
    server.close()


def run():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = ap.parse_args()
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("echo_server.py: uvloop is not installed (python3-uvloop)", file=sys.stderr)
            sys.exit(1)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(main(args.host, args.port))
    except OSError as e:
        print(f"echo_server.py: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
