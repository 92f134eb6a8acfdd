#!/usr/bin/python3
"""Holds hostile client connections open against a pooler while a benchmark runs.

  slowloris      connects and sends its StartupMessage one byte per second, so it stays in
                 the pooler's login phase for the whole run
  never-reading  logs in, asks for a large result and never reads it: its socket fills,
                 the pooler has to hold the rest (and the server it came from)

Protocol with the caller (bench/hostile.py), one JSON line on stdout per step:
  {"event": "ready", "slowloris": N, "never_reading": M, "failed": F, "seconds": S}
then it keeps dripping bytes until a line arrives on stdin ("close"), closes everything and
prints {"event": "closed", "slowloris_still_open": K}.
"""
import argparse
import asyncio
import json
import resource
import struct
import sys
import time


def startup_packet(user, database, app):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database), ("application_name", app)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def query(sql):
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


async def open_slowloris(port, packet):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet[:1])
    await writer.drain()
    return [reader, writer, 1]


async def open_never_reading(port, rows):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4096)
    writer.write(startup_packet("postgres", "postgres", "bench-never-reads"))
    while True:  # up to ReadyForQuery
        header = await reader.readexactly(5)
        body = await reader.readexactly(struct.unpack("!I", header[1:])[0] - 4)
        if header[:1] == b"Z":
            break
        if header[:1] == b"E":
            raise OSError(body[:80])
    writer.write(query(f"SELECT repeat('x', 1000) FROM generate_series(1, {rows})"))
    await writer.drain()
    writer.transport.pause_reading()  # and never read again
    return [reader, writer, 0]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--slowloris", type=int, default=10000)
    ap.add_argument("--never-reading", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=500)
    opts = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t0 = time.monotonic()
    packet = startup_packet("postgres", "postgres", "bench-slowloris")
    failed = 0
    slow, never = [], []
    for i in range(0, opts.slowloris, opts.batch):
        n = min(opts.batch, opts.slowloris - i)
        got = await asyncio.gather(*(open_slowloris(opts.port, packet) for _ in range(n)),
                                   return_exceptions=True)
        slow += [g for g in got if not isinstance(g, BaseException)]
        failed += sum(1 for g in got if isinstance(g, BaseException))
    got = await asyncio.gather(*(open_never_reading(opts.port, opts.rows)
                                 for _ in range(opts.never_reading)), return_exceptions=True)
    never += [g for g in got if not isinstance(g, BaseException)]
    failed += sum(1 for g in got if isinstance(g, BaseException))
    print(json.dumps({"event": "ready", "slowloris": len(slow), "never_reading": len(never),
                      "failed": failed, "seconds": round(time.monotonic() - t0, 1)}), flush=True)

    loop = asyncio.get_running_loop()
    stdin_line = loop.run_in_executor(None, sys.stdin.readline)
    while not stdin_line.done():
        # one more byte of every slowloris' startup packet, once a second
        for conn in slow:
            reader, writer, sent = conn
            if sent < len(packet) - 1 and not writer.is_closing():
                writer.write(packet[sent:sent + 1])
                conn[2] = sent + 1
        await asyncio.wait([stdin_line], timeout=1.0)
    still = sum(1 for _, w, _ in slow if not w.is_closing() and not w.transport.is_closing())
    for _, writer, _ in slow + never:
        writer.close()
    print(json.dumps({"event": "closed", "slowloris_still_open": still}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
