"""A hostile or broken PostgreSQL server behind `pgwarden serve`: a login that floods
ParameterStatus messages fails with a clear error instead of growing the pooler's memory, and
the pooler keeps serving the pools of healthy servers."""
import os
import signal
import socket
import struct
import threading
import time

import psycopg
import pytest

from serve_helpers import CANCEL_REQUEST_CODE, FakeServer, Pooler, be_msg, rss_kb


class FloodingServer(FakeServer):
    """Accepts a login with AuthenticationOk, then sends ParameterStatus messages (each under
    a new name, 1 kB of value) until the pooler hangs up."""

    def __init__(self):
        self.sent = 0
        super().__init__()

    def serve(self, conn):
        conn.settimeout(5)
        self.read_startup(conn)
        conn.sendall(be_msg(b"R", struct.pack("!I", 0)))
        value = b"v" * 1024
        while not self.stopping and self.sent < 200000:
            batch = b"".join(be_msg(b"S", f"flood_{self.sent + i}".encode() + b"\0" + value + b"\0")
                             for i in range(64))
            conn.sendall(batch)
            self.sent += 64


def test_parameter_status_flood_fails_login_with_bounded_memory(pgwarden_bin, pg):
    evil = FloodingServer()
    dbs = {"evil": f"host=127.0.0.1 port={evil.port} dbname=x",
           "appdb": f"host={pg.socket_dir} port={pg.port} dbname=appdb"}
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=dbs).start()
    try:
        before = rss_kb(p.proc.pid)
        try:
            psycopg.connect(p.dsn("app_user", "evil"), connect_timeout=20).close()
            raise AssertionError("a login flooded with ParameterStatus must fail")
        except psycopg.OperationalError as e:
            assert "ParameterStatus" in str(e), str(e)
        grown = rss_kb(p.proc.pid) - before
        assert grown < 20 * 1024, f"pooler grew {grown} kB during one flooded login"
        assert evil.sent < 200000, "the pooler should hang up long before the flood ends"
        assert "too many ParameterStatus messages from server" in p.log()
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()
        evil.stop()


class ResettingServer(FakeServer):
    """Logs the pooler in, answers its own queries, and meets a client query containing
    'reset-me' with `reply` followed at once by a TCP reset (SO_LINGER 0). The pooler is
    stopped (SIGSTOP) while both leave, so its next epoll report carries the bytes and the
    reset together: the case where a readable edge's short read does not mean the socket is
    drained, and no further edge will ever come."""

    def __init__(self, reply):
        self.reply = reply
        self.pooler_pid = None
        self.queries = []
        super().__init__()

    @staticmethod
    def welcome():
        return (be_msg(b"R", struct.pack("!I", 0)) +
                be_msg(b"S", b"server_version\x0015.0\x00") +
                be_msg(b"S", b"client_encoding\x00UTF8\x00") +
                be_msg(b"K", struct.pack("!II", 4242, 99)) + be_msg(b"Z", b"I"))

    def serve(self, conn):
        conn.settimeout(30)
        self.read_startup(conn)
        conn.sendall(self.welcome())
        pending = b""
        while not self.stopping:
            t, ln = struct.unpack("!cI", self.read_exact(conn, 5))
            body = self.read_exact(conn, ln - 4)
            pending += t + body
            if t == b"X":
                return
            if t not in (b"Q", b"S"):
                continue  # extended protocol: act at the Sync
            request, pending = pending, b""
            self.queries.append(request)
            if b"reset-me" in request:
                os.kill(self.pooler_pid, signal.SIGSTOP)
                try:
                    conn.sendall(self.reply)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    conn.close()
                    time.sleep(0.1)
                finally:
                    os.kill(self.pooler_pid, signal.SIGCONT)
                return
            if request.startswith(b"Q") and b"SET " in request.upper():
                conn.sendall(be_msg(b"C", b"SET\x00") + be_msg(b"Z", b"I"))
            else:
                err = b"SERROR\x00C0A000\x00Mnot supported by this fake server\x00\x00"
                conn.sendall(be_msg(b"E", err) + be_msg(b"Z", b"I"))


FATAL_ADMIN = be_msg(b"E", b"SFATAL\x00C57P01\x00Mterminating connection due to administrator "
                           b"command\x00\x00")
HALF_RESULT = (be_msg(b"T", struct.pack("!H", 1) + b"v\x00" + struct.pack("!IhIhih", 0, 0, 25,
                                                                           -1, -1, 0)) +
               be_msg(b"D", struct.pack("!HI", 1, 2) + b"ok"))


@pytest.mark.parametrize("reply", [FATAL_ADMIN, HALF_RESULT], ids=["fatal", "half_result"])
def test_reset_right_after_bytes_reaches_the_client(pgwarden_bin, pg, reply):
    """A server that sends bytes and resets the connection in the same instant (PostgreSQL
    shutting down as a query arrives; a backend killed mid-result) must end its client's
    query with an error, not leave it waiting for bytes that will never come."""
    fake = ResettingServer(reply)
    dbs = {"fake": f"host=127.0.0.1 port={fake.port} dbname=x"}
    p = Pooler(pgwarden_bin, pg, auth_type="trust", databases=dbs).start()
    fake.pooler_pid = p.proc.pid
    conn = None
    try:
        conn = psycopg.connect(p.dsn("app_user", "fake"), connect_timeout=20, autocommit=True)
        conn.execute("SET statement_timeout = 0")  # the link works before the reset
        started = time.monotonic()
        outcome = {}

        def query():
            try:
                conn.execute("SELECT 'reset-me'")
                outcome["error"] = None
            except psycopg.Error as e:
                outcome["error"] = e

        t = threading.Thread(target=query, daemon=True)
        t.start()
        t.join(timeout=15)
        assert not t.is_alive(), \
            f"the client still waits after the server reset:\n{p.log()[-2000:]}"
        assert isinstance(outcome["error"], psycopg.OperationalError), outcome
        assert time.monotonic() - started < 5, "the reset was noticed late"
        assert p.alive()
    finally:
        p.stop()  # first: a client thread still waiting on the pooler is released
        if conn is not None:
            conn.close()
        fake.stop()


class ChattyCancelServer(FakeServer):
    """Serves sessions and cancel requests at once (a thread per connection). A query sleeps
    until a cancel request arrives, then fails with 57014; the cancel connection is answered
    with bytes PostgreSQL never sends there, then closed."""

    concurrent = True  # the cancel connection arrives while a query is held

    def __init__(self):
        self.cancelled = threading.Event()
        super().__init__()

    def serve(self, conn):
        body = self.read_startup(conn)
        if struct.unpack("!I", body[:4])[0] == CANCEL_REQUEST_CODE:
            conn.sendall(b"x" * 300)  # more than one read takes
            time.sleep(0.3)
            self.cancelled.set()
            return  # closed
        self.send_login_ok(conn)
        for body in self.queries(conn):
            if b"sleep" in body:
                self.cancelled.wait(30)
                self.cancelled.clear()
                conn.sendall(be_msg(b"E", b"SERROR\0C57014\0Mcanceling statement\0\0") +
                             be_msg(b"Z", b"I"))
                continue
            field = b"x\0" + struct.pack("!IhIhih", 0, 0, 23, 4, -1, 0)  # one int4 column
            conn.sendall(be_msg(b"T", struct.pack("!h", 1) + field) +
                         be_msg(b"D", struct.pack("!hi", 1, 1) + b"1") +
                         be_msg(b"C", b"SELECT 1\0") + be_msg(b"Z", b"I"))


def test_bytes_on_a_cancel_connection_do_not_hold_the_server(pgwarden_bin, pg):
    """A server host that answers a CancelRequest with bytes, then closes: the cancel is over
    there (not at cancel_wait_timeout, never with 0), and since PostgreSQL would not answer so,
    its server is closed rather than reused; the next client gets a new one."""
    evil = ChattyCancelServer()
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               databases={"chatty": f"host=127.0.0.1 port={evil.port} dbname=x"},
               settings={"default_pool_size": "1", "cancel_wait_timeout": "0",
                         "query_wait_timeout": "5"}).start()
    try:
        with psycopg.connect(p.dsn("app_user", "chatty"), autocommit=True) as a:
            result = {}

            def sleep():
                try:
                    a.execute("SELECT sleep")
                except psycopg.Error as e:
                    result["error"] = e

            t = threading.Thread(target=sleep)
            t.start()
            time.sleep(0.5)
            a.cancel()
            t.join(10)
            assert isinstance(result.get("error"), psycopg.errors.QueryCanceled), result
        with psycopg.connect(p.dsn("app_user", "chatty"), autocommit=True) as b:
            assert b.execute("SELECT 1").fetchone()[0] == 1, p.log()
        assert "a cancel whose fate is unknown may still reach it" in p.log()
    finally:
        p.stop()
        evil.stop()
