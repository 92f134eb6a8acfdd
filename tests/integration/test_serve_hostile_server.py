"""A hostile or broken PostgreSQL server behind `pgwarden serve`: a login that floods
ParameterStatus messages fails with a clear error instead of growing the pooler's memory, and
the pooler keeps serving the pools of healthy servers."""
import struct

import psycopg

from serve_helpers import FakeServer, Pooler, rss_kb


def be_msg(t, body):
    return t + struct.pack("!I", len(body) + 4) + body


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
