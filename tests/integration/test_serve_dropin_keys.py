"""PgBouncer keys that tune the pooler's own behaviour: disable_pqexec, log_stats,
sbuf_loopcnt, cancel_wait_timeout, autodb_idle_timeout, conffile and service_name/job_name.
Each is checked on the wire or in the log against a real PostgreSQL (or, for a cancel that
cannot be delivered, a stand-in server that never answers)."""
import hashlib
import http.client
import os
import signal
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from pgfixture import free_port
from serve_helpers import (CancelHoldingProxy, FakeServer, Pooler, be_msg, console_rows, raw_connect, read_messages,
                           startup_packet, wait_for)

ADMIN = {"admin_users": "postgres"}


def _console(p, sql):
    with psycopg.connect(p.dsn("postgres", "pgbouncer"), autocommit=True) as c:
        return c.pgconn.exec_(sql.encode())


# ---- disable_pqexec ----

def _psql(p, sql):
    """psql -c runs sql as one simple Query (PQexec)."""
    return subprocess.run(["psql", p.dsn(), "-X", "-At", "-c", sql], capture_output=True,
                          text=True, timeout=30)


def test_disable_pqexec_refuses_simple_query(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"disable_pqexec": "1", **ADMIN}).start()
    try:
        out = _psql(p, "SELECT 1; SELECT 2")
        assert out.returncode != 0 and "FATAL:  PQexec disallowed" in out.stderr, out
        assert "PQexec disallowed" in p.log()
        # psycopg sends parameterised queries with the extended protocol: they pass.
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
        # The console still speaks simple Query.
        assert _console(p, "SHOW VERSION").status == psycopg.pq.ExecStatus.TUPLES_OK
        # Read at start only, as PgBouncer: a reload keeps it on.
        p.settings["disable_pqexec"] = "0"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "disable_pqexec changes need a restart" in p.log(), what="the warning")
        out = _psql(p, "SELECT 1")
        assert "PQexec disallowed" in out.stderr, out
    finally:
        p.stop()


def test_disable_pqexec_refuses_before_waiting_for_a_server(pgwarden_bin, pg):
    """As PgBouncer, a simple Query is refused when it arrives, not once a server is free:
    with the pool busy, the client hears "PQexec disallowed", not query_wait_timeout."""
    p = Pooler(pgwarden_bin, pg, settings={"disable_pqexec": "1", "default_pool_size": "1",
                                           "query_wait_timeout": "2"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as holder:
            # Extended protocol (PQexecParams): the pool's one server stays linked.
            assert holder.pgconn.exec_params(b"BEGIN", []).status == \
                psycopg.pq.ExecStatus.COMMAND_OK
            out = _psql(p, "SELECT 1")
            assert out.returncode != 0, out
            assert "PQexec disallowed" in out.stderr, out
            assert holder.pgconn.exec_params(b"COMMIT", []).status == \
                psycopg.pq.ExecStatus.COMMAND_OK
    finally:
        p.stop()


def test_simple_query_allowed_by_default(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg).start()
    try:
        out = _psql(p, "SELECT 1; SELECT 2")
        assert out.returncode == 0 and out.stdout.split() == ["1", "2"], out
    finally:
        p.stop()


# ---- log_stats ----

def _stats_lines(p):
    return [ln for ln in p.log().splitlines() if " stats: " in ln and "xacts/s" in ln]


def test_log_stats_line_every_period(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"stats_period": "1"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            for _ in range(30):
                c.execute("SELECT 1")
        wait_for(lambda: any(" 0 xacts/s" not in ln for ln in _stats_lines(p)),
                 what="a stats line counting the queries")
        line = next(ln for ln in _stats_lines(p) if " 0 xacts/s" not in ln)
        for word in ("xacts/s", "queries/s", "client parses/s", "server parses/s", "binds/s",
                     "in ", "B/s", "out ", "xact ", "query ", "wait ", " us"):
            assert word in line, line
        # Turned off by a reload: no more lines.
        p.settings["log_stats"] = "0"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in p.log(), what="the reload")
        n = len(_stats_lines(p))
        time.sleep(2.5)
        assert len(_stats_lines(p)) == n, _stats_lines(p)[n:]
    finally:
        p.stop()


# ---- sbuf_loopcnt ----

BIG_ROWS = 60000  # about 4 MB of text: hundreds of pkt_buf reads


def _big_result(p):
    with psycopg.connect(p.dsn()) as c:
        rows = c.execute("SELECT i, md5(i::text) || md5((i * 7)::text) FROM "
                         "generate_series(1, %s) i", (BIG_ROWS,)).fetchall()
    return rows


def _expected_digest():
    h = hashlib.sha256()
    for i in range(1, BIG_ROWS + 1):
        h.update(f"{i}:{hashlib.md5(str(i).encode()).hexdigest()}"
                 f"{hashlib.md5(str(i * 7).encode()).hexdigest()}\n".encode())
    return h.hexdigest()


def _digest(rows):
    h = hashlib.sha256()
    for i, text in rows:
        h.update(f"{i}:{text}\n".encode())
    return h.hexdigest()


@pytest.mark.parametrize("loopcnt", ["1", "0"])
def test_sbuf_loopcnt_yields_between_reads(pgwarden_bin, pg, loopcnt):
    """With sbuf_loopcnt = 1 every read of a big result hands the loop to the other ready
    connections (a trace line each time): two big results and small queries meanwhile all
    arrive whole. 0 never yields."""
    p = Pooler(pgwarden_bin, pg, settings={"sbuf_loopcnt": loopcnt, "verbose": "2"}).start()
    try:
        want = _expected_digest()
        results, errors = {}, []

        def big(k):
            try:
                results[k] = _digest(_big_result(p))
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=big, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        with psycopg.connect(p.dsn()) as c:
            for i in range(50):
                assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert results == {0: want, 1: want}
        yields = p.log().count("reads this turn (sbuf_loopcnt)")
        if loopcnt == "1":
            assert yields > 0, p.log()[-2000:]
        else:
            assert yields == 0
    finally:
        p.stop()


# ---- cancel_wait_timeout ----

class SilentServer(FakeServer):
    """Logs the pooler in and answers its queries, but never a pg_sleep. It serves one
    connection at a time, so a cancel request's connection is accepted by the kernel and
    never read or closed: the cancel is never delivered."""

    def serve(self, conn):
        self.read_startup(conn)
        self.send_login_ok(conn)
        for body in self.queries(conn):
            if b"pg_sleep" in body:
                while not self.stopping:
                    time.sleep(0.1)
                return
            conn.sendall(be_msg(b"E", b"SERROR\0C42704\0Mnot here\0\0") + be_msg(b"Z", b"I"))


@pytest.mark.parametrize("timeout", ["1", "0"])
def test_cancel_wait_timeout_drops_an_undelivered_cancel(pgwarden_bin, pg, timeout):
    srv = SilentServer()
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               databases={"silent": f"host=127.0.0.1 port={srv.port} dbname=x"},
               settings={"cancel_wait_timeout": timeout, "server_check_delay": "100",
                         **ADMIN}).start()
    done = threading.Event()
    try:
        c = psycopg.connect(p.dsn(dbname="silent"), autocommit=True)

        def hang():
            try:
                c.pgconn.exec_(b"SELECT pg_sleep(3600)")
            finally:
                done.set()

        t = threading.Thread(target=hang, daemon=True)
        t.start()
        wait_for(lambda: any(r["state"] == "active" and r["database"] == "silent"
                             for r in console_rows(p, "SHOW SERVERS")),
                 what="the query running on the silent server")
        c.cancel()
        started = time.monotonic()
        line = "cancel request closing because: cancel_wait_timeout"
        if timeout == "1":
            wait_for(lambda: line in p.log(), timeout=10, what="the cancel given up")
            assert time.monotonic() - started >= 0.9
        else:
            time.sleep(3)
            assert line not in p.log()
        assert p.alive()
        c.pgconn.finish()
    finally:
        p.stop()
        srv.stop()


def test_cancel_given_up_after_it_was_sent_never_lands_on_another_client(pgwarden_bin, pg):
    """cancel_wait_timeout gives up a cancel whose packet already left: PostgreSQL may still
    act on it, so the server it was aimed at must not serve another client's query."""
    proxy = CancelHoldingProxy(pg, hold_s=4)
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               databases={"postgres": f"host=127.0.0.1 port={proxy.port} dbname=postgres"},
               settings={"cancel_wait_timeout": "1", "default_pool_size": "1",
                         "query_wait_timeout": "60", **ADMIN}).start()
    try:
        result = {}

        def run(name, sql):
            with psycopg.connect(p.dsn(application_name=name), autocommit=True) as c:
                try:
                    result[name] = c.execute(sql).fetchone()[-1]
                except psycopg.Error as e:
                    result[name] = e

        a = psycopg.connect(p.dsn(application_name="a"), autocommit=True)
        ta = threading.Thread(target=lambda: result.setdefault(
            "a", a.execute("SELECT pg_sleep(2), 1").fetchone()[-1]))
        ta.start()
        wait_for(lambda: any(r["state"] == "active" for r in console_rows(p, "SHOW SERVERS")),
                 what="a's query running")
        a.cancel()  # held by the proxy past cancel_wait_timeout
        tb = threading.Thread(target=run, args=("b", "SELECT pg_sleep(3), 2"))
        tb.start()  # waits for the only server
        ta.join(20)
        tb.join(30)
        assert result.get("a") == 1, result
        assert result.get("b") == 2, f"{result!r}\n{p.log()}"
        assert proxy.delivered, "the held cancel reached PostgreSQL"
        # Its server was closed once a's transaction ended, not handed to b.
        assert "a cancel whose fate is unknown may still reach it" in p.log()
        a.close()
    finally:
        p.stop()
        proxy.close()


# ---- autodb_idle_timeout ----

def test_autodb_idle_timeout_frees_unused_pools(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               databases={"*": f"host={pg.socket_dir} port={pg.port}"},
               settings={"autodb_idle_timeout": "2", "server_idle_timeout": "1",
                         **ADMIN}).start()
    try:
        with psycopg.connect(p.dsn(dbname="appdb")) as c:
            assert c.execute("SELECT current_database()").fetchone() == ("appdb",)
            # In use (a client is connected): kept however long that lasts.
            time.sleep(3.5)
            assert any(r["database"] == "appdb" for r in console_rows(p, "SHOW POOLS"))
            assert c.execute("SELECT 1").fetchone() == (1,)
        # Unused: its idle server closes (server_idle_timeout), then the pool goes.
        wait_for(lambda: not any(r["database"] == "appdb"
                                 for r in console_rows(p, "SHOW POOLS")),
                 timeout=15, what="the auto-database pool freed")
        assert "appdb/postgres: auto-database pool freed" in p.log(), p.log()
        # A new client makes it again, as the first time.
        with psycopg.connect(p.dsn(dbname="appdb")) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert p.log().count("registered new auto-database: appdb") == 2, p.log()
    finally:
        p.stop()


def test_configured_databases_are_never_freed(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"autodb_idle_timeout": "1",
                                           "server_idle_timeout": "1", **ADMIN}).start()
    try:
        with psycopg.connect(p.dsn(dbname="appdb")) as c:
            c.execute("SELECT 1")
        time.sleep(4)
        assert any(r["database"] == "appdb" for r in console_rows(p, "SHOW POOLS"))
        assert "auto-database pool freed" not in p.log()
    finally:
        p.stop()


def _scrape_metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _full_log(p):
    with open(p.logfile) as f:
        return f.read()


def test_autodb_pools_freed_while_metrics_stream(pgwarden_bin, pg):
    """A /metrics exposition of many pools is written a slice per loop turn; the janitor may
    free auto-database pools between two slices. The slices still to come must not read the
    freed pools (the sanitizer build reports a use-after-free; a plain build reads freed
    memory silently)."""
    http_port = free_port()
    # The databases do not exist: each login makes a pool, PostgreSQL refuses it at once, and
    # no backend stays.
    p = Pooler(pgwarden_bin, pg, databases={"*": f"host={pg.socket_dir} port={pg.port}"},
               settings={"autodb_idle_timeout": "2", "http_listen": str(http_port),
                         **ADMIN}).start()
    stop = threading.Event()
    failures, sizes = [], []

    def scrape_loop():
        while not stop.is_set():
            try:
                status, body = _scrape_metrics(http_port)
                sizes.append(len(body))
                if status != 200:
                    failures.append(status)
            except (OSError, http.client.HTTPException) as e:
                failures.append(repr(e))
                return

    # Scrapes overlap, so that one is always in progress when the janitor frees pools.
    threads = [threading.Thread(target=scrape_loop) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        names = [f"no_such_db_{i}" for i in range(200)]
        for name in names:
            with pytest.raises(psycopg.OperationalError, match="does not exist"):
                psycopg.connect(p.dsn(dbname=name)).close()
        wait_for(lambda: _full_log(p).count("auto-database pool freed") >= len(names) or
                 not p.alive(), timeout=30, what="the auto-database pools freed")
        stop.set()
        for t in threads:
            t.join(30)
        assert p.alive(), p.log()
        assert not failures, failures
        # Several slices (256 KiB each) per scrape while the pools were there.
        assert max(sizes) > 3 * 256 * 1024, max(sizes)
        assert _scrape_metrics(http_port)[0] == 200
    finally:
        stop.set()
        p.stop()


# ---- conffile, service_name, job_name ----

def test_conffile_shows_and_redirects_reload(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings=ADMIN).start()
    try:
        cfg = {r["key"]: r for r in console_rows(p, "SHOW CONFIG")}
        assert cfg["conffile"]["value"] == p.ini, cfg["conffile"]
        assert cfg["conffile"]["changeable"] == "yes", cfg["conffile"]
        assert cfg["service_name"]["value"] == "pgbouncer"
        assert cfg["job_name"]["value"] == "pgbouncer"
        # SET conffile: the next RELOAD reads that file.
        other = os.path.join(p.dir, "other.ini")
        with open(p.ini) as f:
            text = f.read().replace("default_pool_size = 5", "default_pool_size = 9")
        with open(other, "w") as f:
            f.write(text)
        assert _console(p, f"SET conffile = '{other}'").status == \
            psycopg.pq.ExecStatus.COMMAND_OK
        assert _console(p, "RELOAD").status == psycopg.pq.ExecStatus.COMMAND_OK
        cfg = {r["key"]: r["value"] for r in console_rows(p, "SHOW CONFIG")}
        assert cfg["default_pool_size"] == "9" and cfg["conffile"] == other, cfg
        assert f"configuration reloaded from {other}" in p.log()
    finally:
        p.stop()


# ---- scram_iterations ----

def _server_first_iterations(p, user):
    """Starts a SCRAM exchange as user and returns the i= of the pooler's server-first."""
    with raw_connect(p.port) as s:
        s.sendall(startup_packet(user, "appdb"))
        t, body = read_messages(s, until=b"R")[-1]
        assert t == b"R" and struct.unpack("!I", body[:4])[0] == 10, body  # AuthenticationSASL
        first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
        s.sendall(b"p" + struct.pack("!I", 4 + 14 + 4 + len(first)) + b"SCRAM-SHA-256\0" +
                  struct.pack("!I", len(first)) + first)
        t, body = read_messages(s, until=b"R")[-1]
        assert t == b"R" and struct.unpack("!I", body[:4])[0] == 11, body  # SASLContinue
        fields = dict(f.split("=", 1) for f in body[4:].decode().split(","))
        return int(fields["i"])


def test_scram_iterations_of_the_pooler_s_own_secrets(pgwarden_bin, pg):
    """auth_file holds plaintext passwords: the SCRAM secret the pooler derives from one, and
    the mock secret of an unknown user, use scram_iterations; a reload changes it."""
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256",
               settings={"scram_iterations": "5000"}).start()
    try:
        assert _server_first_iterations(p, "app_user") == 5000
        assert _server_first_iterations(p, "nobody_here") == 5000
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        p.settings["scram_iterations"] = "4100"
        p.write_config()
        p.signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in p.log(), what="the reload")
        assert _server_first_iterations(p, "app_user") == 4100
        with psycopg.connect(p.dsn("app_user", "appdb")) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        p.stop()
    p = Pooler(pgwarden_bin, pg, auth_type="scram-sha-256")
    try:
        p.start()
        assert _server_first_iterations(p, "app_user") == 4096  # PgBouncer's default
    finally:
        p.stop()
