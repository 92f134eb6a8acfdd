#!/usr/bin/python3
"""Opens N idle PostgreSQL client connections with raw sockets and holds them open.

Each connection sends a protocol-3.0 StartupMessage (user, database) and waits for
ReadyForQuery; nothing else is sent until the end. With --tls each one first sends an
SSLRequest, expects 'S' and runs a TLS handshake (as libpq's sslmode=require: no certificate
check), then logs in over TLS. Connections are opened in batches (the
pooler's listen backlog is finite). psycopg or libpq per connection would cost far more client
memory and time than this.

Protocol with the caller (bench/run.py), one JSON line on stdout per step:
  {"event": "ready", "opened": N, "failed": F, "errors": {...}, "seconds": S}
then it waits for a line on stdin ("close"), checks how many connections the server still
holds open, sends Terminate on each, closes them and prints
  {"event": "closed", "still_open": K, "seconds": S}
Exits by itself after --hold seconds if stdin says nothing.
"""
import argparse
import asyncio
import json
import resource
import socket
import ssl
import struct
import sys
import time


def startup_packet(user, database):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database), ("application_name", "bench-idle")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1].decode(errors="replace")] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')}: {fields.get('M', '?')}"


SSL_REQUEST = struct.pack("!II", 8, 80877103)


class TlsConn:
    """A logged-in client over TLS: asyncio's stream pair (the loop reads the socket, so
    liveness is asked of the stream, not peeked off the socket)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def recv(self, n):
        return await self.reader.read(n)

    def alive(self):
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self, last):
        try:
            self.writer.write(last)
        except (OSError, RuntimeError):
            pass
        self.writer.close()


class PlainConn:
    def __init__(self, loop, sock):
        self.loop, self.sock = loop, sock

    async def recv(self, n):
        return await self.loop.sock_recv(self.sock, n)

    def alive(self):
        return still_open(self.sock)

    def close(self, last):
        try:
            self.sock.send(last)
        except OSError:
            pass
        self.sock.close()


async def open_one(loop, host, port, packet, timeout, tls_ctx=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    conn = PlainConn(loop, s)
    try:
        await asyncio.wait_for(loop.sock_connect(s, (host, port)), timeout)
        if tls_ctx is not None:
            await asyncio.wait_for(loop.sock_sendall(s, SSL_REQUEST), timeout)
            answer = await asyncio.wait_for(loop.sock_recv(s, 1), timeout)
            if answer != b"S":
                raise ConnectionError(f"SSLRequest answered {answer!r}")
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                sock=s, ssl=tls_ctx, server_hostname=""), timeout)
            conn = TlsConn(reader, writer)
            writer.write(packet)
        else:
            await asyncio.wait_for(loop.sock_sendall(s, packet), timeout)
        buf = b""
        while True:
            chunk = await asyncio.wait_for(conn.recv(65536), timeout)
            if not chunk:
                raise ConnectionError("server closed the connection during startup")
            buf += chunk
            while len(buf) >= 5:
                mtype = buf[:1]
                length = struct.unpack("!i", buf[1:5])[0]
                if len(buf) < 1 + length:
                    break
                body, buf = buf[5:1 + length], buf[1 + length:]
                if mtype == b"E":
                    raise ConnectionError(error_text(body))
                if mtype == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                    raise ConnectionError(f"server asks for authentication "
                                          f"(code {struct.unpack('!i', body[:4])[0]})")
                if mtype == b"Z":
                    return conn
    except BaseException:
        if isinstance(conn, TlsConn):
            conn.writer.close()
        s.close()
        raise


def still_open(sock):
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--dbname", default="postgres")
    ap.add_argument("-n", "--clients", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=10.0, help="per connection, seconds")
    ap.add_argument("--hold", type=float, default=300.0, help="give up waiting for stdin after")
    ap.add_argument("--tls", action="store_true",
                    help="SSLRequest and TLS before the startup (sslmode=require)")
    args = ap.parse_args()
    tls_ctx = None
    if args.tls:
        tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls_ctx.check_hostname = False
        tls_ctx.verify_mode = ssl.CERT_NONE

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.clients + 64
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
        except (ValueError, OSError):
            pass

    loop = asyncio.get_running_loop()
    packet = startup_packet(args.user, args.dbname)
    socks, errors, failed = [], {}, 0
    t0 = time.monotonic()
    remaining = args.clients
    while remaining > 0:
        n = min(args.batch, remaining)
        remaining -= n
        results = await asyncio.gather(
            *[open_one(loop, args.host, args.port, packet, args.timeout, tls_ctx)
              for _ in range(n)],
            return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                failed += 1
                key = f"{type(r).__name__}: {r}"[:200]
                errors[key] = errors.get(key, 0) + 1
            else:
                socks.append(r)
        # Stop early when everything fails (pooler down or out of descriptors).
        if failed > 500 and failed > 2 * len(socks):
            break
    print(json.dumps({"event": "ready", "opened": len(socks), "failed": failed,
                      "errors": errors, "seconds": round(time.monotonic() - t0, 3)}),
          flush=True)

    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    except asyncio.TimeoutError:
        pass
    t1 = time.monotonic()
    await asyncio.sleep(0.2)  # TLS: let the loop read any close that came meanwhile
    alive = sum(1 for s in socks if s.alive())
    terminate = b"X\0\0\0\4"
    for s in socks:
        s.close(terminate)
    await asyncio.sleep(0.2)  # TLS: the streams flush their Terminate
    print(json.dumps({"event": "closed", "still_open": alive,
                      "seconds": round(time.monotonic() - t1, 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
