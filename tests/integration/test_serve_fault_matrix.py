"""Fault matrix: network faults between pgwarden and PostgreSQL (fault_proxy.FaultProxy),
each in session and transaction pooling, plus a PostgreSQL restart under load, the server's
max_connections, and DNS failure and recovery. For every case: what the affected client sees
(an error with a SQLSTATE within a bound, never a hang past the configured timeout, never
another client's data), what becomes of the server connection (gone from SHOW SERVERS, from
the proxy and from pg_stat_activity, or kept when nothing was wrong with it), that other
clients are unaffected, and that the pool works again once the fault clears.

Set FAULT_MATRIX_RESULTS=/path.json to write the observed outcomes (the table in
docs/TESTING.md, "Fault matrix", comes from such a run)."""
import atexit
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

from fake_dns import FakeDns
from fault_proxy import Fault, FaultProxy
from serve_helpers import (Pooler, console_rows, login_raw, query_msg, read_messages,
                           wait_for)

# pytest-timeout, where installed, is the last resort; the tests bound their own waits
pytestmark = [pytest.mark.timeout(120)] if importlib.util.find_spec("pytest_timeout") else []

POOL_MODES = ("session", "transaction")
CONNECT_TIMEOUT = 2   # server_connect_timeout
LOGIN_RETRY = 1       # server_login_retry
QUERY_TIMEOUT = 3     # query_timeout
WAIT_TIMEOUT = 6      # query_wait_timeout
MARGIN = 2.0          # the janitor runs every 0.5 s; a loaded 2-core machine adds the rest
MARKER = "fault-me"   # the proxy's faults fire on a DataRow holding this, nothing else
HANG = 30             # an operation still running after this is a hang

RESULTS = []
_results_path = os.environ.get("FAULT_MATRIX_RESULTS")


@atexit.register
def _write_results():
    if _results_path and RESULTS:
        with open(_results_path, "w") as f:
            json.dump(RESULTS, f, indent=1)


# -- helpers --------------------------------------------------------------------------------

def run_bounded(fn, timeout=HANG, what="operation"):
    """Runs fn() in a thread; fails the test when it is still running after timeout.
    Returns (result, exception, elapsed seconds)."""
    box = {}

    def body():
        t0 = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: B902 - reported to the caller
            box["error"] = e
        box["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} hung for more than {timeout} s")
    return box.get("result"), box.get("error"), box["elapsed"]


def describe(err):
    """(class name, SQLSTATE or None, first line of the message) of a psycopg error."""
    if err is None:
        return None, None, None
    sqlstate = getattr(err, "sqlstate", None)
    msg = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
    return type(err).__name__, sqlstate, msg


def full_log(pooler):
    """The whole log (Pooler.log() is its tail)."""
    try:
        with open(pooler.logfile, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def pooler_sent_errors(pooler):
    """(SQLSTATE, message) of every error pgwarden logged sending to a client."""
    return re.findall(r"closing with error (\w{5}): (.*)", full_log(pooler))


def query_tagged(conn, tag, rows=1):
    """Runs a query whose every row carries tag; checks the rows are exactly this query's."""
    got = conn.execute("SELECT %s::text || '-' || g FROM generate_series(1, %s) g",
                       (tag, rows)).fetchall()
    want = [(f"{tag}-{g}",) for g in range(1, rows + 1)]
    assert got == want, f"{tag}: got another result: {got[:3]}..."
    return got


class Client:
    """A client loop on one database: SELECT of a value unique to it, checked every time.
    It reconnects every QUERY_TIMEOUT / 2 seconds: pgwarden counts query_timeout from the
    moment a session-mode client got its server (test_query_timeout_counts_from_the_query),
    which would otherwise cut a long-lived bystander's short queries."""

    def __init__(self, pooler, dbname, tag):
        self.pooler = pooler
        self.dbname = dbname
        self.tag = tag
        self.ok = 0
        self.errors = []
        self.wrong = []
        self.max_latency = 0.0
        self._stop = threading.Event()
        self.conn = psycopg.connect(pooler.dsn(dbname=dbname), autocommit=True)
        self.conn.execute("SELECT 1")
        self.born = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        n = 0
        while not self._stop.is_set():
            n += 1
            value = f"{self.tag}-{n}"
            t0 = time.monotonic()
            try:
                if t0 - self.born > QUERY_TIMEOUT / 2:
                    self.conn.close()
                    self.conn = psycopg.connect(self.pooler.dsn(dbname=self.dbname),
                                                autocommit=True)
                    self.born = time.monotonic()
                got = self.conn.execute("SELECT %s::text", (value,)).fetchone()[0]
                if got != value:
                    self.wrong.append((value, got))
                self.ok += 1
            except psycopg.Error as e:
                self.errors.append(describe(e))
                self._stop.wait(0.2)
                try:
                    self.conn.close()
                    self.conn = psycopg.connect(self.pooler.dsn(dbname=self.dbname),
                                                autocommit=True)
                    self.born = time.monotonic()
                except psycopg.Error:
                    pass
            self.max_latency = max(self.max_latency, time.monotonic() - t0)
            self._stop.wait(0.02)

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=HANG)
        assert not self.thread.is_alive(), f"client {self.tag} hung"
        self.conn.close()

    def assert_unaffected(self, max_latency=1.5):
        assert not self.wrong, f"{self.tag} got another client's value: {self.wrong[:3]}"
        assert not self.errors, f"{self.tag} got errors: {self.errors[:3]}"
        assert self.ok > 0, f"{self.tag} ran no query"
        assert self.max_latency < max_latency, \
            f"{self.tag} waited {self.max_latency:.2f} s for a query"


def server_ports(pooler, dbname):
    """pgwarden's local ports of its server connections to dbname (SHOW SERVERS)."""
    return {int(r["local_port"]) for r in console_rows(pooler, "SHOW SERVERS")
            if r["database"] == dbname and r["local_port"]}


def backend_ports(pg):
    """client_port of every backend connected to PostgreSQL over TCP."""
    out = pg.psql("SELECT client_port FROM pg_stat_activity WHERE client_port IS NOT NULL")
    return {int(x) for x in out.split()}


def assert_server_side_consistent(env, what):
    """Every server connection pgwarden lists goes through an open proxy link and has a
    backend, and no closed link left a backend behind: nothing leaked on either side."""
    def check():
        links = env.proxy.links()
        open_down = {lk["down_port"] for lk in links if lk["open"]}
        open_up = {lk["up_port"] for lk in links if lk["open"]}
        closed_up = {lk["up_port"] for lk in links if not lk["open"]}
        backends = backend_ports(env.pg)
        listed = server_ports(env.pooler, "faulty")
        return listed == open_down and open_up <= backends and not (closed_up & backends)
    wait_for(check, timeout=10, what=f"{what}: SHOW SERVERS, proxy links and backends agree "
             f"(SHOW SERVERS {server_ports(env.pooler, 'faulty')}, links {env.proxy.links()})")


class Env:
    """pgwarden with two databases: `faulty` through the fault proxy, `direct` straight to
    PostgreSQL (TCP), both logging in as postgres with SCRAM."""

    def __init__(self, pgwarden_bin, pg, pool_mode, pool_size=3, settings=None):
        self.pg = pg
        self.proxy = FaultProxy(pg.port)
        dbs = {"faulty": f"host=127.0.0.1 port={self.proxy.port} dbname=postgres",
               "direct": f"host=127.0.0.1 port={pg.port} dbname=appdb"}
        self.pooler = Pooler(pgwarden_bin, pg, pool_mode=pool_mode, databases=dbs, settings={
            "server_connect_timeout": str(CONNECT_TIMEOUT),
            "server_login_retry": str(LOGIN_RETRY),
            "query_timeout": str(QUERY_TIMEOUT),
            "query_wait_timeout": str(WAIT_TIMEOUT),
            "default_pool_size": str(pool_size),
            "admin_users": "postgres",
            **(settings or {}),
        })
        try:
            self.pooler.start()
        except BaseException:
            self.proxy.close()
            raise
        self.clients = []

    def client(self, dbname, tag):
        c = Client(self.pooler, dbname, tag)
        self.clients.append(c)
        return c.start()

    def close(self):
        try:
            for c in self.clients:
                if c.thread.is_alive():
                    c.stop()
        finally:
            try:
                self.proxy.close()
            finally:
                self.pooler.stop()
        assert not self.proxy.errors, self.proxy.errors


def attempt(env, tag, rows=1, conn=None, dbname="faulty"):
    """Connects (unless conn is given) and runs a tagged query, bounded by HANG.
    Returns a dict: ok, error class, sqlstate, message, elapsed, phase."""
    phase = {"at": "connect"}

    def go():
        c = conn or psycopg.connect(env.pooler.dsn(dbname=dbname), autocommit=True)
        phase["at"] = "query"
        try:
            return query_tagged(c, tag, rows)
        finally:
            if conn is None:
                c.close()

    logged_before = len(pooler_sent_errors(env.pooler))
    result, err, elapsed = run_bounded(go, what=f"client {tag}")
    if err is not None and not isinstance(err, psycopg.Error):
        raise err
    cls, sqlstate, msg = describe(err)
    sent = []
    if err is not None:
        # psycopg keeps no SQLSTATE when the error comes with the end of the connection
        # ("consuming input failed: ..."); pgwarden logs what it sent (log_pooler_errors).
        deadline = time.monotonic() + 2
        while not sent and time.monotonic() < deadline:
            sent = pooler_sent_errors(env.pooler)[logged_before:]
            time.sleep(0.05)
    return {"ok": err is None, "error": cls, "sqlstate": sqlstate or (sent[0][0] if sent
                                                                       else None),
            "message": msg, "sent": sent, "elapsed": round(elapsed, 2), "phase": phase["at"],
            "rows": len(result) if result else 0}


def recover(env, tag, within):
    """The faulty pool serves new clients again within `within` seconds; returns how long
    it took."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < within:
        out = attempt(env, f"{tag}-{int((time.monotonic() - t0) * 1000)}")
        if out["ok"]:
            return round(time.monotonic() - t0, 2)
        last = out
        time.sleep(0.2)
    pytest.fail(f"the faulty pool did not recover within {within} s: {last}\n"
                f"{env.pooler.log()[-3000:]}")


def record(fault, mode, client, server, recovery, pooler, **extra):
    row = {"fault": fault, "pool_mode": mode, "client": client, "server": server,
           "others_unaffected": True, "recovery_s": recovery,
           "pooler_sent": sorted(set(pooler_sent_errors(pooler))), **extra}
    RESULTS.append(row)
    print(json.dumps(row))


def link_of(env, predicate, what):
    return env.proxy.wait(lambda links: next((lk for lk in links if predicate(lk)), None),
                          timeout=10, what=what)


def assert_link_gone(env, link, closed_by):
    """The link's server connection is closed on every side: the proxy saw who closed it,
    pgwarden no longer lists it, and its backend has exited."""
    lk = env.proxy.wait(lambda links: next((x for x in links if x["id"] == link["id"]
                                            and not x["open"]), None),
                        timeout=QUERY_TIMEOUT + MARGIN, what=f"link {link['id']} closed")
    assert lk["closed_by"] in closed_by, lk
    wait_for(lambda: lk["down_port"] not in server_ports(env.pooler, "faulty"), timeout=5,
             what="pgwarden to drop the server connection from SHOW SERVERS")
    wait_for(lambda: lk["up_port"] not in backend_ports(env.pg), timeout=5,
             what="the backend of the faulted connection to exit")
    return lk


# -- the matrix -----------------------------------------------------------------------------

FAULTS = ["refuse", "refuse_rst", "slow_handshake", "slow_handshake_ok", "trickle", "stall",
          "stall_short", "drop_mid_result", "rst_mid_result", "rst_idle"]


@pytest.fixture(params=POOL_MODES)
def env(request, pgwarden_bin, pg):
    e = Env(pgwarden_bin, pg, request.param)
    try:
        yield e
    finally:
        e.close()


def handshake_fault(env, fault, expect_error, bound):
    """Faults on new server connections: the pool has none yet when the client arrives."""
    mode = env.pooler.settings["pool_mode"]
    bystander = env.client("direct", f"C-{fault.mode}-{mode}")
    env.proxy.set_fault(fault)
    a = attempt(env, f"A-{mode}")
    assert a["elapsed"] < bound, (a, env.pooler.log()[-2000:])
    if expect_error:
        assert not a["ok"], a
        assert isinstance(a["error"], str) and "Error" in a["error"], a
    else:
        assert a["ok"], (a, env.pooler.log()[-2000:])
    # a second client while the fault lasts: also bounded
    b = attempt(env, f"B-{mode}") if expect_error else None
    if b:
        assert not b["ok"] and b["elapsed"] < bound, b
    return a, b, bystander


@pytest.mark.parametrize("fault", FAULTS)
def test_fault(env, fault):
    mode = env.pooler.settings["pool_mode"]
    proxy = env.proxy
    extra = {}

    if fault in ("refuse", "refuse_rst"):
        how = "close" if fault == "refuse" else "rst"
        # A client stays queued through the retries (server_login_retry), as in PgBouncer,
        # until query_timeout ends its wait; one arriving before the retry is due is told at
        # once.
        a, b, bystander = handshake_fault(env, Fault("refuse", how=how), True,
                                          bound=QUERY_TIMEOUT + MARGIN)
        assert not server_ports(env.pooler, "faulty")
        if how == "rst":
            assert proxy.refused >= 1
        else:
            assert not proxy.links()
        server = "never established; none listed"
        proxy.clear()
        recovery = recover(env, f"R-{fault}-{mode}", within=LOGIN_RETRY + 2 * MARGIN)
        extra["second_client"] = b

    elif fault == "slow_handshake":
        # 4 s of silence after the startup packet, server_connect_timeout is 2 s
        a, b, bystander = handshake_fault(env, Fault("slow_handshake", seconds=4), True,
                                          bound=WAIT_TIMEOUT + MARGIN)
        slow = [lk for lk in proxy.links() if lk["accept_mode"] == "slow_handshake"]
        assert slow
        for lk in proxy.wait(lambda links: [x for x in links if not x["open"]] or None,
                             timeout=CONNECT_TIMEOUT + MARGIN, what="a slow link closed"):
            assert lk["closed_by"] == "pooler", lk
            assert lk["closed_at"] - lk["accepted_at"] < CONNECT_TIMEOUT + MARGIN, lk
        server = (f"closed by pgwarden after server_connect_timeout "
                  f"({len(slow)} attempts during the fault)")
        proxy.clear()
        recovery = recover(env, f"R-{fault}-{mode}", within=LOGIN_RETRY + 2 * MARGIN)
        extra["second_client"] = b

    elif fault == "slow_handshake_ok":
        a, _, bystander = handshake_fault(env, Fault("slow_handshake", seconds=0.7), False,
                                          bound=0.7 + MARGIN)
        assert a["elapsed"] >= 0.7, a
        lk = link_of(env, lambda x: x["accept_mode"] == "slow_handshake", "the slow link")
        assert lk["open"] and lk["down_port"] in server_ports(env.pooler, "faulty")
        server = "kept (logged in late, reused)"
        proxy.clear()
        recovery = recover(env, f"R-{fault}-{mode}", within=MARGIN)

    else:
        # Mid-session faults: A and B are logged in and have used the faulty pool.
        bystander = env.client("direct", f"C-{fault}-{mode}")
        conn_a = psycopg.connect(env.pooler.dsn(dbname="faulty"), autocommit=True)
        try:
            query_tagged(conn_a, f"A-warm-{mode}")
            b_client = env.client("faulty", f"B-{fault}-{mode}")
            time.sleep(0.2)
            a, server, recovery = mid_session_fault(env, fault, mode, conn_a, b_client)
        finally:
            conn_a.close()
        b_client.stop()
        b_client.assert_unaffected(max_latency=5.0 if fault == "trickle" else 1.5)
        extra["same_pool_client_ok_queries"] = b_client.ok

    bystander.stop()
    bystander.assert_unaffected()
    assert env.pooler.alive(), env.pooler.log()
    assert_server_side_consistent(env, fault)
    record(fault, mode, a, server, recovery, env.pooler, **extra)


def mid_session_fault(env, fault, mode, conn_a, b_client):
    proxy = env.proxy
    tag = f"A-{fault}-{mode}-{MARKER}"
    if fault == "trickle":
        proxy.set_fault("trickle", delay=0.001)
        a = attempt(env, tag, rows=20, conn=conn_a)
        assert a["ok"], (a, env.pooler.log()[-2000:])
        fresh = attempt(env, f"A2-{fault}-{mode}")  # a login trickled too
        assert fresh["ok"], fresh
        trickled = [lk for lk in proxy.links() if lk["fired_mode"] == "trickle"]
        assert trickled and any(lk["accept_mode"] == "trickle" and lk["s2c_max_send"] == 1
                                for lk in trickled), proxy.links()
        proxy.clear()
        a["fresh_login_s"] = fresh["elapsed"]
        return a, "kept (results complete, reused)", 0.0

    if fault in ("stall", "stall_short"):
        seconds = None if fault == "stall" else 1.0
        proxy.set_fault("stall", seconds=seconds, match=MARKER, shots=1)
        a = attempt(env, tag, rows=50, conn=conn_a)
        lk = link_of(env, lambda x: x["fired_mode"] == "stall", "the stalled link")
        if fault == "stall_short":
            assert a["ok"], (a, env.pooler.log()[-2000:])
            assert 1.0 <= a["elapsed"] < 1.0 + MARGIN, a
            assert lk["open"] and lk["down_port"] in server_ports(env.pooler, "faulty"), lk
            proxy.clear()
            return a, "kept (result late but whole, reused)", 0.0
        assert not a["ok"], a
        assert a["sqlstate"] == "57014" and "query_timeout" in a["message"], a
        assert QUERY_TIMEOUT - 0.6 <= a["elapsed"] < QUERY_TIMEOUT + MARGIN, a
        gone = assert_link_gone(env, lk, ("pooler",))
        proxy.clear()
        recovery = recover(env, f"R-{fault}-{mode}", within=MARGIN)
        return a, (f"closed by pgwarden {gone['closed_at'] - gone['fired_at']:.1f} s into "
                   f"the stall; backend gone"), recovery

    if fault in ("drop_mid_result", "rst_mid_result"):
        how = "drop" if fault == "drop_mid_result" else "rst"
        # The RST comes 0.2 s after the row, once pgwarden has read it: an RST arriving
        # together with the last bytes is test_rst_together_with_the_last_bytes.
        proxy.set_fault(how, match=MARKER, shots=1, cut_delay=0.2 if how == "rst" else 0.0)
        a = attempt(env, tag, rows=2000, conn=conn_a)
        assert not a["ok"], a
        assert a["elapsed"] < MARGIN, (a, env.pooler.log()[-2000:])
        lk = link_of(env, lambda x: x["fired_mode"] == how, "the cut link")
        assert_link_gone(env, lk, ("proxy",))
        proxy.clear()
        recovery = recover(env, f"R-{fault}-{mode}", within=MARGIN)
        return a, "closed (cut by the proxy); pgwarden dropped it, backend gone", recovery

    if fault == "rst_idle":
        # A's server is reset while nobody uses it. Session: A is linked to it, so A's next
        # query fails. Transaction: the server sits idle in the pool; whoever comes next
        # must get a live server, never the dead one.
        if mode == "session":
            pid = conn_a.execute("SELECT pg_backend_pid()").fetchone()[0]
            port = int(env.pg.psql(f"SELECT client_port FROM pg_stat_activity WHERE pid = {pid}"))
            target = [lk["id"] for lk in proxy.links() if lk["up_port"] == port]
        else:
            b_client.stop()  # B stops between queries; every link is idle then
            target = [lk["id"] for lk in proxy.open_links()]
        assert target
        logged_before = len(pooler_sent_errors(env.pooler))
        proxy.arm_links(Fault("rst", at="now"), target)
        for lid in target:
            lk = link_of(env, lambda x, lid=lid: x["id"] == lid and not x["open"], "reset")
            assert lk["closed_by"] == "proxy", lk
        time.sleep(0.2)
        a = attempt(env, tag, conn=conn_a)
        if mode == "session":
            # pgwarden told A when the reset happened; A reads it with its next query
            a["sent"] = pooler_sent_errors(env.pooler)[logged_before:]
            a["sqlstate"] = a["sqlstate"] or (a["sent"][0][0] if a["sent"] else None)
            assert not a["ok"], a
            assert a["elapsed"] < MARGIN and a["sqlstate"] == "08006", a
        else:
            assert a["ok"], (a, env.pooler.log()[-2000:])
            after = attempt(env, f"B-after-{mode}")
            assert after["ok"], after
        for lid in target:
            lk = next(x for x in proxy.links() if x["id"] == lid)
            assert_link_gone(env, lk, ("proxy",))
        recovery = recover(env, f"R-{fault}-{mode}", within=MARGIN)
        return a, "closed (reset while idle); pgwarden dropped it, backend gone", recovery

    raise AssertionError(fault)


# -- a fault inside a message that pgwarden already forwards in part --------------------------



def read_until_closed(sock, timeout):
    sock.settimeout(timeout)
    buf = b""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return buf, True
        if not chunk:
            return buf, True
        buf += chunk
    return buf, False


def split_messages(buf):
    """[(type, declared length, body bytes received)]; the last may be cut short."""
    out, pos = [], 0
    while pos + 5 <= len(buf):
        (length,) = struct.unpack("!I", buf[pos + 1:pos + 5])
        out.append((buf[pos:pos + 1], length, buf[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


@pytest.mark.parametrize("how", ["drop", "stall"])
def test_fault_inside_a_partly_forwarded_row(env, how):
    """A 200 kB row is cut (drop) or stalls (query_timeout) 20 kB in. The client's byte
    stream must stay well-formed: the row's bytes so far, then the end of the connection;
    never an ErrorResponse inside the row."""
    mode = env.pooler.settings["pool_mode"]
    s = login_raw(env.pooler, db="faulty")
    try:
        s.sendall(query_msg("SELECT 1"))
        assert read_messages_until_ready(s)
        env.proxy.set_fault(how, match=MARKER, after_bytes=20000, shots=1)
        s.sendall(query_msg(f"SELECT '{MARKER}' UNION ALL SELECT repeat('x', 200000)"))
        t0 = time.monotonic()
        buf, closed = read_until_closed(s, QUERY_TIMEOUT + 2 * MARGIN)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert closed, f"connection not closed after {elapsed:.1f} s"
    msgs = split_messages(buf)
    rows = [m for m in msgs if m[0] == b"D"]
    assert len(rows) == 2 and len(rows[1][2]) < 200010, msgs
    big = rows[1][2]
    spliced = big.find(b"E\x00\x00\x00")
    RESULTS.append({"fault": f"{how}_inside_row", "pool_mode": mode, "elapsed_s":
                    round(elapsed, 2), "row_bytes_received": len(big),
                    "error_spliced_at": spliced,
                    "pooler_sent": sorted(set(pooler_sent_errors(env.pooler)))})
    # column count, column length, then only the 'x's PostgreSQL sent
    assert big[:6] == struct.pack("!HI", 1, 200000), big[:6]
    assert big[6:] == b"x" * (len(big) - 6), \
        f"bytes other than the row inside the row, at {spliced}: {big[spliced:spliced + 60]!r}"
    assert env.pooler.alive()


def read_messages_until_ready(sock):
    msgs = read_messages(sock, timeout=5, until=b"Z")
    return msgs and msgs[-1][0] == b"Z"


# -- an RST that arrives together with the last bytes ---------------------------------------

def test_rst_together_with_the_last_bytes(env):
    """The server's first rows and its RST are both waiting on pgwarden's socket when
    pgwarden next looks (it is stopped with SIGSTOP meanwhile; without that, an RST sent
    right after the first row, without the matrix's 0.2 s delay, hit this in 20-30 % of
    runs here). The client must get 08006 at once: a FATAL would make pgwarden read on to the
    end, rows do not, so the janitor's sweep for lost hangups (every 0.5 s) finds it."""
    proxy, pooler = env.proxy, env.pooler
    conn = psycopg.connect(pooler.dsn(dbname="faulty"), autocommit=True)
    try:
        query_tagged(conn, "A-warm")
        proxy.set_fault(Fault("stall", at="bytes", after_bytes=0, shots=1))  # hold the answer
        box = {}
        t = threading.Thread(target=lambda: box.update(
            a=attempt(env, f"A-{MARKER}", rows=50, conn=conn)), daemon=True)
        t.start()
        # the whole answer (50 rows and ReadyForQuery, some 900 bytes) is held back
        lk = link_of(env, lambda x: x["fired_mode"] == "stall" and x["held_bytes"] > 800,
                     "the held answer")
        pooler.signal(signal.SIGSTOP)
        try:
            proxy.set_fault(Fault("rst", match=MARKER))  # the held rows, then the RST
            link_of(env, lambda x: x["id"] == lk["id"] and x["closed_by"] == "proxy", "RST")
            time.sleep(0.2)
        finally:
            pooler.signal(signal.SIGCONT)
        t.join(HANG)
        assert not t.is_alive(), "the client hung"
        a = box["a"]
        RESULTS.append({"fault": "rst_with_last_bytes", "pool_mode":
                        pooler.settings["pool_mode"], "client": a})
        assert not a["ok"], a
        assert a["elapsed"] < 0.4 + MARGIN and a["sqlstate"] == "08006", a
        assert_link_gone(env, lk, ("proxy",))
    finally:
        conn.close()


# -- query_timeout counts from the query --------------------------------------------------

def test_query_timeout_counts_from_the_query(env):
    """query_timeout = 3 s ("cancel and close a query running longer than this"): a 1.2 s
    query must finish however long the session (session pooling) or the transaction
    (transaction pooling) has been open. Found by the matrix's bystanders."""
    mode = env.pooler.settings["pool_mode"]
    conn = psycopg.connect(env.pooler.dsn(dbname="direct"), autocommit=(mode == "session"))
    try:
        conn.execute("SELECT 1")  # session: the server is linked; transaction: BEGIN ran
        time.sleep(QUERY_TIMEOUT + 0.5)
        _, err, elapsed = run_bounded(lambda: conn.execute("SELECT pg_sleep(1.2)"),
                                      what="a 1.2 s query")
        RESULTS.append({"fault": "query_timeout_after_idle", "pool_mode": mode,
                        "client": describe(err), "elapsed": round(elapsed, 2)})
        assert err is None, f"a 1.2 s query was cut: {describe(err)} after {elapsed:.1f} s"
    finally:
        conn.close()


# -- PostgreSQL restart under load ----------------------------------------------------------

def test_postgres_restart_under_load(pgwarden_bin, pg):
    """8 clients loop through pgwarden (transaction pooling) while the session's PostgreSQL
    restarts (pg.restart(): pg_ctl stop -m fast, start). Errors only while it is down; every
    client then works again on the same pgwarden; nobody ever gets another client's value.
    Python clients rather than pgbench: pgbench ends a client at its first error and cannot
    check values."""
    dbs = {"direct": f"host=127.0.0.1 port={pg.port} dbname=appdb"}
    pooler = Pooler(pgwarden_bin, pg, pool_mode="transaction", databases=dbs, settings={
        "server_connect_timeout": str(CONNECT_TIMEOUT), "server_login_retry": str(LOGIN_RETRY),
        "query_wait_timeout": str(WAIT_TIMEOUT), "default_pool_size": "4",
        "admin_users": "postgres"}).start()
    stop = threading.Event()
    n_workers = 8
    oks = [[] for _ in range(n_workers)]     # completion times of good queries
    errors = [[] for _ in range(n_workers)]  # (time, class, sqlstate, message)
    wrong = []
    slowest = [0.0]

    def worker(i):
        conn = None
        n = 0
        while not stop.is_set():
            n += 1
            value = f"w{i}-{n}"
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(pooler.dsn(dbname="direct"), autocommit=True)
                got = conn.execute("SELECT %s::text", (value,)).fetchone()[0]
                if got != value:
                    wrong.append((value, got))
                oks[i].append(time.monotonic())
            except psycopg.Error as e:
                errors[i].append((time.monotonic(),) + describe(e))
                if conn is not None:
                    conn.close()
                    conn = None
                stop.wait(0.1)
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            stop.wait(0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_workers)]
    try:
        pid = pooler.proc.pid
        for t in threads:
            t.start()
        time.sleep(1.5)
        t_down = time.monotonic()
        pg.restart()
        t_up = time.monotonic()
        deadline = t_up + 20
        while time.monotonic() < deadline and \
                not all(sum(1 for x in o if x > t_up) >= 10 for o in oks):
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=HANG)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert not wrong, f"clients got another client's value: {wrong[:5]}"
        recovered = [sum(1 for x in o if x > t_up) for o in oks]
        assert all(r >= 10 for r in recovered), \
            f"not every client works again: {recovered}\n{pooler.log()[-3000:]}"
        all_errors = [e for errs in errors for e in errs]
        late = [e for e in all_errors if e[0] < t_down or e[0] > t_up + MARGIN]
        assert not late, f"errors outside the restart window: {late[:5]}\n{pooler.log()[-3000:]}"
        assert slowest[0] < WAIT_TIMEOUT + MARGIN, f"a query took {slowest[0]:.1f} s"
        assert pooler.alive() and pooler.proc.pid == pid
        # no server connection of pgwarden's outlived the restart, none is missing
        wait_for(lambda: {int(r["local_port"]) for r in console_rows(pooler, "SHOW SERVERS")}
                 <= backend_ports(pg), timeout=5, what="pgwarden's servers all alive")
        kinds = sorted({(e[2] or "-", e[3]) for e in all_errors})
        RESULTS.append({"fault": "postgres_restart", "pool_mode": "transaction",
                        "restart_s": round(t_up - t_down, 2),
                        "errors": len(all_errors), "clients_with_errors":
                        sum(1 for errs in errors if errs), "error_kinds": kinds,
                        "pooler_sent": sorted(set(pooler_sent_errors(pooler))),
                        "ok_after": recovered, "slowest_query_s": round(slowest[0], 2)})
        print(json.dumps(RESULTS[-1]))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HANG)
        pooler.stop()


# -- max_connections reached on the server --------------------------------------------------

def test_server_max_connections_reached(pgwarden_bin, pg):
    """Direct connections take every slot PostgreSQL has for ordinary roles: a pgwarden
    client needing a new server gets PostgreSQL's 53300 promptly, a pool with an idle server
    keeps working, and new servers log in again once slots are free."""
    dbs = {"full": f"host=127.0.0.1 port={pg.port} dbname=appdb",
           "warm": f"host=127.0.0.1 port={pg.port} dbname=postgres"}
    pooler = Pooler(pgwarden_bin, pg, pool_mode="transaction", databases=dbs, settings={
        "server_connect_timeout": str(CONNECT_TIMEOUT), "server_login_retry": str(LOGIN_RETRY),
        "query_wait_timeout": str(WAIT_TIMEOUT), "default_pool_size": "2",
        "admin_users": "postgres"}).start()
    fillers = []
    try:
        with psycopg.connect(pooler.dsn("app_user", "warm"), autocommit=True) as c:
            query_tagged(c, "warm-before")  # leaves an idle app_user server in pool "warm"
        fill_error = None
        for _ in range(200):
            try:
                fillers.append(psycopg.connect(pg.socket_dsn("app_user", "appdb")))
            except psycopg.OperationalError as e:
                fill_error = str(e)
                break
        assert fill_error and ("too many clients" in fill_error or "reserved" in fill_error), \
            fill_error
        out = run_bounded(lambda: psycopg.connect(pooler.dsn("app_user", "full"),
                                                  autocommit=True).execute("SELECT 1"),
                          what="a client of the full server")
        assert isinstance(out[1], psycopg.OperationalError), out
        cls, sqlstate, msg = describe(out[1])
        sent = pooler_sent_errors(pooler)
        assert ("53300" in [s for s, _ in sent]), (sent, pooler.log()[-2000:])
        assert out[2] < CONNECT_TIMEOUT + MARGIN, out
        # the pool that has an idle server is unaffected
        with psycopg.connect(pooler.dsn("app_user", "warm"), autocommit=True) as c:
            query_tagged(c, "warm-during")
        for f in fillers[:5]:
            f.close()
        del fillers[:5]
        t0 = time.monotonic()
        wait_for(lambda: attempt_direct(pooler, "app_user", "full"),
                 timeout=LOGIN_RETRY + 2 * MARGIN, what="recovery once slots are free")
        RESULTS.append({"fault": "server_max_connections", "pool_mode": "transaction",
                        "fillers": len(fillers) + 5, "client": {"error": cls, "message": msg,
                                                                "elapsed": round(out[2], 2)},
                        "pooler_sent": sorted(set(sent)), "warm_pool_ok": True,
                        "recovery_s": round(time.monotonic() - t0, 2)})
        print(json.dumps(RESULTS[-1]))
        assert pooler.alive()
    finally:
        for f in fillers:
            f.close()
        pooler.stop()


def attempt_direct(pooler, user, dbname):
    try:
        with psycopg.connect(pooler.dsn(user, dbname), autocommit=True) as c:
            query_tagged(c, f"{user}-{dbname}-{time.monotonic()}")
        return True
    except psycopg.Error:
        return False


# -- DNS failure and recovery ---------------------------------------------------------------

FAKE_NAME = "pgwarden-fault-test.invalid-host"


class NamespacedPooler(Pooler):
    """pgwarden in a mount namespace of its own, where /etc/resolv.conf names the FakeDns
    (resolver timeout 1 s, one attempt) and /etc/hosts is a file of the test's: the real
    files are never touched."""

    def __init__(self, binary, pg, dns, hosts_lines, **kw):
        self.ns_dir = tempfile.mkdtemp(prefix="pgwarden-dns-")
        self.resolv = os.path.join(self.ns_dir, "resolv.conf")
        self.hosts = os.path.join(self.ns_dir, "hosts")
        with open(self.resolv, "w") as f:
            f.write(f"nameserver 127.0.0.1:{dns.port}\noptions timeout:1 attempts:1\n")
        self.set_hosts(hosts_lines)
        wrapper = os.path.join(self.ns_dir, "pgwarden-ns")
        with open(wrapper, "w") as f:
            # unshare and both shells exec: the pooler keeps the pid Pooler signals
            f.write("#!/bin/sh\n"
                    "exec unshare -m --propagation private -- /bin/sh -c "
                    "'mount --bind \"$1\" /etc/resolv.conf && mount --bind \"$2\" /etc/hosts "
                    "&& shift 2 && exec \"$@\"' sh "
                    f"'{self.resolv}' '{self.hosts}' '{binary}' \"$@\"\n")
        os.chmod(wrapper, 0o755)
        super().__init__(wrapper, pg, **kw)

    def set_hosts(self, lines):
        """Rewrites the hosts file in place (the bind mount follows the inode)."""
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join(line + "\n" for line in lines))

    def stop(self):
        try:
            super().stop()
        finally:
            shutil.rmtree(self.ns_dir, ignore_errors=True)


def namespaces_work():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c",
                            "mount --bind /etc/hosts /etc/hosts"], capture_output=True)
    return probe.returncode == 0


needs_mount_ns = pytest.mark.skipif(not namespaces_work(),
                                    reason="needs root and mount namespaces (unshare -m)")


def dns_env(pgwarden_bin, pg, dns, hosts_lines=()):
    dbs = {"named": f"host={FAKE_NAME} port={pg.port} dbname=appdb",
           "direct": f"host=127.0.0.1 port={pg.port} dbname=appdb"}
    return NamespacedPooler(pgwarden_bin, pg, dns, list(hosts_lines), pool_mode="transaction",
                            databases=dbs, settings={
                                "server_connect_timeout": str(CONNECT_TIMEOUT),
                                "server_login_retry": str(LOGIN_RETRY),
                                # each phase below asks DNS again (a failure is remembered
                                # for dns_nxdomain_ttl: test_serve_dns.py)
                                "dns_nxdomain_ttl": str(LOGIN_RETRY),
                                "query_wait_timeout": str(WAIT_TIMEOUT),
                                "admin_users": "postgres"}).start()


class _PoolerEnv:
    """What attempt() needs from an Env."""

    def __init__(self, pooler):
        self.pooler = pooler


@needs_mount_ns
def test_dns_failure_and_recovery(pgwarden_bin, pg):
    dns = FakeDns(FAKE_NAME)
    pooler = None
    try:
        pooler = dns_env(pgwarden_bin, pg, dns)
        env = _PoolerEnv(pooler)
        bystander = Client(pooler, "direct", "C-dns").start()
        phases = {}
        for mode, bound in (("nxdomain", MARGIN), ("servfail", MARGIN),
                            ("drop", WAIT_TIMEOUT + MARGIN)):
            dns.mode = mode
            time.sleep(LOGIN_RETRY + 0.2)  # past the cached failure of the previous phase
            out = attempt(env, f"A-dns-{mode}", dbname="named")
            assert not out["ok"], out
            assert out["elapsed"] < bound, out
            phases[mode] = out
        assert dns.queries > 0
        dns.mode = "answer"
        t0 = time.monotonic()
        wait_for(lambda: attempt(env, f"A-dns-ok-{time.monotonic()}", dbname="named")["ok"],
                 timeout=LOGIN_RETRY + 2 * MARGIN, what="recovery once the name resolves")
        recovery = round(time.monotonic() - t0, 2)
        # DNS fails again: the pool's server (and the cached address) keep serving
        dns.mode = "nxdomain"
        again = attempt(env, "A-dns-cached", dbname="named")
        assert again["ok"], again
        bystander.stop()
        bystander.assert_unaffected()
        assert pooler.alive()
        RESULTS.append({"fault": "dns", "pool_mode": "transaction", "phases": phases,
                        "recovery_s": recovery, "after_recovery_nxdomain_ok": again["ok"],
                        "pooler_sent": sorted(set(pooler_sent_errors(pooler)))})
        print(json.dumps(RESULTS[-1]))
    finally:
        if pooler:
            pooler.stop()
        dns.close()


@needs_mount_ns
def test_dns_hosts_file_change_is_seen(pgwarden_bin, pg):
    """The name is missing from /etc/hosts (and DNS says NXDOMAIN), then added to
    /etc/hosts: CONFIG.md says names resolve through /etc/hosts, cached 15 s, so new
    servers must log in once the line is there."""
    dns = FakeDns(FAKE_NAME)
    pooler = None
    try:
        pooler = dns_env(pgwarden_bin, pg, dns)
        env = _PoolerEnv(pooler)
        out = attempt(env, "A-hosts-missing", dbname="named")
        assert not out["ok"] and out["elapsed"] < MARGIN, out
        pooler.set_hosts([f"127.0.0.1 {FAKE_NAME}"])
        with open("/etc/hosts") as f:  # the test's own file, not the machine's
            assert FAKE_NAME not in f.read()
        t0 = time.monotonic()
        recovered = False
        while time.monotonic() - t0 < LOGIN_RETRY + 2 * MARGIN:
            if attempt(env, f"A-hosts-{time.monotonic()}", dbname="named")["ok"]:
                recovered = True
                break
            time.sleep(0.3)
        RESULTS.append({"fault": "dns_hosts_file_added", "pool_mode": "transaction",
                        "client": out, "recovered": recovered,
                        "pooler_sent": sorted(set(pooler_sent_errors(pooler)))})
        assert recovered, f"name added to /etc/hosts is not seen:\n{pooler.log()[-1500:]}"
    finally:
        if pooler:
            pooler.stop()
        dns.close()
