#!/usr/bin/env python3
"""TCP echo server on asyncio.Protocol or asyncio's streams, for bench/run_echo.sh.

    echo_server.py [--host 127.0.0.1] [--port P] [--loop asyncio|uvloop]
                   [--api protocol|streams]

--api protocol (the default): every data_received() writes the bytes straight back with
transport.write(); when the transport's write buffer passes its high-water mark, reading
pauses until it drains (pause_writing/resume_writing), so memory stays bounded.

--api streams: asyncio.start_server() with a handler per connection that loops
`data = await reader.read(65536)`, `writer.write(data)`, `await writer.drain()` until EOF,
then closes the writer (asyncio's streams echo; drain() waits only above the high-water mark).

Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM: exit 0.
"""
import argparse
import asyncio
import signal
import sys

READ_CHUNK = 65536


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


async def echo_stream(reader, writer):
    try:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # reset or lost: no one left to echo to
    finally:
        writer.close()


async def main(host, port, api):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if api == "streams":
        server = await asyncio.start_server(echo_stream, host, port, backlog=4096)
    else:
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
    ap.add_argument("--api", choices=("protocol", "streams"), default="protocol")
    args = ap.parse_args()
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("echo_server.py: uvloop is not installed (python3-uvloop)", file=sys.stderr)
            sys.exit(1)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(main(args.host, args.port, args.api))
    except OSError as e:
        print(f"echo_server.py: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
