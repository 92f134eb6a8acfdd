"""`pgwarden serve` under faults: clients dying mid-transaction, cancels, a PostgreSQL
restart, and bad bytes from clients. The daemon and other clients must be unaffected."""
import os
import resource
import socket
import struct
import threading
import time

import psycopg
import pytest

from serve_helpers import (Pooler, console_rows, error_fields, login_raw, query_msg, raw_connect,
                           read_messages, rss_kb, startup_packet, wait_for)


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1"}).start()
    yield p
    p.stop()


def assert_healthy(pooler):
    assert pooler.alive(), pooler.log()
    with psycopg.connect(pooler.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_client_killed_mid_transaction(pooler, pg):
    pg.psql("DROP TABLE IF EXISTS serve_kill; CREATE TABLE serve_kill (x int)")
    s = login_raw(pooler)
    s.sendall(query_msg("BEGIN; INSERT INTO serve_kill VALUES (1)"))
    msgs = read_messages(s, until=b"Z")
    assert msgs[-1] == (b"Z", b"T")  # inside a transaction
    s.close()  # gone without COMMIT or Terminate
    time.sleep(0.3)
    # Pool size 1: the next client gets the only server slot. It must not be inside the
    # dead client's transaction.
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT txid_current_if_assigned()").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM serve_kill").fetchone()[0] == 0
    assert pg.psql("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
                   " AND pid <> pg_backend_pid()") == "0"
    assert pg.psql("SELECT count(*) FROM serve_kill") == "0"


def test_cancel_stops_sleep(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        result = {}

        def run():
            t0 = time.time()
            try:
                conn.execute("SELECT pg_sleep(30)")
                result["error"] = None
            except psycopg.errors.QueryCanceled as e:
                result["error"] = e
            result["elapsed"] = time.time() - t0

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        conn.cancel()
        t.join(timeout=10)
        assert not t.is_alive()
        assert isinstance(result["error"], psycopg.errors.QueryCanceled)
        assert result["elapsed"] < 5
        # The connection (and its server) are still usable.
        assert conn.execute("SELECT 5").fetchone()[0] == 5


def test_cancel_without_query_hits_nobody(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as idle, \
         psycopg.connect(pooler.dsn(), autocommit=True) as busy:
        idle.execute("SELECT 1")
        done = {}

        def run():
            done["v"] = busy.execute("SELECT pg_sleep(1), 42").fetchone()[1]

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.2)
        idle.cancel()  # idle holds no server: must not cancel busy's query on the shared server
        t.join(timeout=10)
        assert done.get("v") == 42


def test_cancel_reaches_the_host_the_query_runs_on_after_a_reload(pgwarden_bin, pg):
    """A reload that moves a database elsewhere leaves running queries where they are (their
    servers close once released); a cancel for one must go to the server it runs on, not to
    the new host."""
    from pgfixture import free_port
    p = Pooler(pgwarden_bin, pg, pool_mode="session",
               databases={"postgres": f"host=127.0.0.1 port={pg.port} dbname=postgres"},
               settings={"admin_users": "postgres"}).start()
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as conn:
            result = {}

            def run():
                t0 = time.time()
                try:
                    conn.execute("SELECT pg_sleep(8)")
                except psycopg.errors.QueryCanceled as e:
                    result["error"] = e
                result["elapsed"] = time.time() - t0

            t = threading.Thread(target=run)
            t.start()
            # A session client's server is active from its login on: wait for the query
            # itself, or the cancel may come before it and find nothing to cancel.
            wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE query = 'SELECT pg_sleep(8)' AND state = 'active'")
                     == "1", what="the query running")
            p.databases["postgres"] = f"host=127.0.0.1 port={free_port()} dbname=postgres"
            p.write_config()
            console_rows(p, "SHOW DATABASES")  # a console connection that works
            with psycopg.connect(p.dsn(dbname="pgbouncer"), autocommit=True) as con:
                con.execute("RELOAD")
            conn.cancel()
            t.join(15)
            assert isinstance(result.get("error"), psycopg.errors.QueryCanceled), (result,
                                                                                   p.log())
            assert result["elapsed"] < 6
    finally:
        p.stop()

def test_postgres_restart_pool_recovers(pooler, pg):
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    pg.restart()
    deadline = time.time() + 20
    last = None
    while time.time() < deadline:
        try:
            with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
                assert conn.execute("SELECT 2").fetchone()[0] == 2
                break
        except psycopg.Error as e:
            last = e
            time.sleep(0.3)
    else:
        pytest.fail(f"pool did not recover: {last}\n{pooler.log()}")
    assert pooler.alive()


@pytest.mark.parametrize("payload", [
    b"GARBAGE!" * 8,                                          # nonsense length
    b"p\x00\x00\x00\x0bsecret\x00",                           # password before startup
    struct.pack("!II", 4, 196608),                            # length below the minimum
    struct.pack("!II", 0x7FFFFFFF, 196608),                   # huge startup length
    struct.pack("!II", 0xFFFFFFFF, 196608),
    struct.pack("!II", 8, 0x00020000),                        # protocol 2.0
    struct.pack("!I", 20) + struct.pack("!I", 196608) + b"user\0x\0",  # no terminator
])
def test_bad_startup_bytes(pooler, payload):
    s = raw_connect(pooler.port)
    s.sendall(payload)
    msgs = read_messages(s, timeout=3)
    s.close()
    # Either a clean ErrorResponse or a close; never a hang or a crash.
    assert all(t == b"E" for t, _ in msgs), msgs
    assert_healthy(pooler)


@pytest.mark.parametrize("payload", [
    b"Q\xff\xff\xff\xff",                     # length 0xFFFFFFFF
    b"Q\x00\x00\x00\x02",                     # length < 4
    startup_packet("postgres", "postgres"),  # second StartupMessage after login
    b"\x01\x00\x00\x00\x05x",                 # unknown message type
])
def test_bad_messages_after_login(pooler, payload):
    s = login_raw(pooler)
    s.sendall(payload)
    msgs = read_messages(s, timeout=3)
    s.close()
    assert msgs and msgs[-1][0] == b"E", msgs
    assert error_fields(msgs[-1][1])["C"] == "08P01"
    assert_healthy(pooler)


def test_oversize_message_with_small_max_packet_size(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"max_packet_size": "65536"}).start()
    try:
        s = login_raw(p)
        s.sendall(b"Q" + struct.pack("!I", 1 << 20))
        msgs = read_messages(s, timeout=3)
        s.close()
        assert msgs and msgs[-1][0] == b"E"
        assert_healthy(p)
    finally:
        p.stop()


def test_ssl_request_answered_no_then_login(pooler):
    s = raw_connect(pooler.port)
    s.sendall(struct.pack("!II", 8, 80877103))
    assert s.recv(1) == b"N"
    s.sendall(startup_packet("postgres", "postgres"))
    msgs = read_messages(s, until=b"Z")
    assert msgs[-1][0] == b"Z"
    s.close()


def test_bytes_after_ssl_request_rejected(pooler):
    s = raw_connect(pooler.port)
    s.sendall(struct.pack("!II", 8, 80877103) + query_msg("SELECT 1"))
    msgs = read_messages(s, timeout=3)
    s.close()
    assert msgs and msgs[0][0] == b"E"
    assert_healthy(pooler)


def test_slow_startup_split_bytes(pooler):
    s = raw_connect(pooler.port)
    for b in startup_packet("postgres", "postgres"):
        s.sendall(bytes([b]))
    msgs = read_messages(s, until=b"Z")
    assert msgs[-1][0] == b"Z"
    for b in query_msg("SELECT 1"):
        s.sendall(bytes([b]))
    msgs = read_messages(s, until=b"Z")
    assert [t for t, _ in msgs] == [b"T", b"D", b"C", b"Z"]
    s.close()


def test_max_client_conn(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"max_client_conn": "3"}).start()
    try:
        conns = [psycopg.connect(p.dsn()) for _ in range(3)]
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn())
        assert "max_client_conn" in str(e.value)
        for c in conns:
            assert c.execute("SELECT 1").fetchone()[0] == 1
            c.close()
        time.sleep(0.2)
        with psycopg.connect(p.dsn()) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    finally:
        p.stop()


def test_unknown_database(pooler):
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(pooler.dsn(dbname="no_such_db"))
    assert "no such database" in str(e.value)
    assert_healthy(pooler)


def test_cancel_racing_release_never_hits_another_client(pgwarden_bin, pg):
    """Pool of one server: client A fires cancels right as its short queries finish, client B
    runs slow queries on the same server. B's queries must never be cancelled."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1"}).start()
    try:
        stop = threading.Event()
        errors = []

        def victim():
            with psycopg.connect(p.dsn(), autocommit=True) as b:
                while not stop.is_set():
                    try:
                        b.execute("SELECT pg_sleep(0.05)")
                    except psycopg.errors.QueryCanceled as e:
                        errors.append(e)

        t = threading.Thread(target=victim)
        t.start()
        with psycopg.connect(p.dsn(), autocommit=True) as a:
            for _ in range(40):
                try:
                    a.execute("SELECT 1")
                except psycopg.errors.QueryCanceled:
                    pass
                a.cancel()
        time.sleep(0.3)
        stop.set()
        t.join(timeout=20)
        assert not errors, f"{len(errors)} of B's queries were cancelled by A's cancels"
        assert p.alive()
    finally:
        p.stop()


def test_unix_socket_listener(pooler, pg):
    with psycopg.connect(f"host={pooler.dir} port={pooler.port} user=postgres dbname=postgres",
                         autocommit=True) as c:
        assert c.execute("SELECT 11").fetchone()[0] == 11


def test_parameter_status_after_rollback(pooler):
    with psycopg.connect(pooler.dsn(application_name="before"), autocommit=False) as c:
        c.execute("SET application_name = 'inside'")
        assert c.pgconn.parameter_status(b"application_name") == b"inside"
        c.rollback()
        assert c.pgconn.parameter_status(b"application_name") == b"before"
        assert c.execute("SHOW application_name").fetchone()[0] == "before"
        c.commit()
        c.execute("SET TimeZone = 'America/New_York'")
        c.commit()
        # the next transaction may run on any server: the setting follows the client
        for _ in range(3):
            assert c.execute("SHOW TimeZone").fetchone()[0] == "America/New_York"
            c.commit()


def test_deep_pipelining_in_one_write(pooler):
    s = login_raw(pooler)
    n = 3000
    s.sendall(query_msg("SELECT 1") * n)
    seen = 0
    deadline = time.time() + 30
    buf = b""
    s.settimeout(5)
    while seen < n and time.time() < deadline:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 5:
            (ln,) = struct.unpack("!I", buf[1:5])
            if len(buf) < 1 + ln:
                break
            if buf[0:1] == b"Z":
                seen += 1
            elif buf[0:1] == b"E":
                pytest.fail(error_fields(buf[5:1 + ln]))
            buf = buf[1 + ln:]
    s.close()
    assert seen == n
    assert_healthy(pooler)


def test_extended_pipeline_thousand_syncs(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        with c.pipeline():
            curs = [c.execute("SELECT %s::int", (i,)) for i in range(1000)]
        assert sum(cur.fetchone()[0] for cur in curs) == sum(range(1000))


def assert_cut_by_login_timeout(sock, timeout):
    """The pooler ends sock's unfinished login with a client_login_timeout error."""
    msgs = read_messages(sock, timeout=timeout)
    sock.close()
    assert msgs and msgs[-1][0] == b"E"
    assert "client_login_timeout" in error_fields(msgs[-1][1])["M"]


def test_slowloris_cut_by_login_timeout(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, settings={"client_login_timeout": "1"}).start()
    try:
        s = raw_connect(p.port)
        s.sendall(b"\x00")
        assert_cut_by_login_timeout(s, timeout=5)
        assert_healthy(p)
    finally:
        p.stop()


@pytest.mark.parametrize("params,code", [
    ({"user": ""}, "28000"),
    ({"user": "postgres", "database": "x" * 64}, "08P01"),
    ({"user": "postgres", "database": "x" * 5000}, "08P01"),
    ({"user": "postgres", "replication": "sometimes"}, "22023"),  # neither database nor bool
    ({"user": "postgres", "search_path; DROP TABLE t": "evil"}, "08P01"),  # not a name
])
def test_bad_startup_parameters(pooler, params, code):
    body = struct.pack("!I", 196608)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    s = raw_connect(pooler.port)
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    msgs = read_messages(s, timeout=3)
    s.close()
    assert msgs and msgs[-1][0] == b"E", msgs
    assert error_fields(msgs[-1][1])["C"] == code
    assert_healthy(pooler)


def test_startup_without_database_uses_user(pooler):
    body = struct.pack("!I", 196608) + b"user\0postgres\0\0"
    s = raw_connect(pooler.port)
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    msgs = read_messages(s, until=b"Z")
    s.close()
    assert msgs[-1][0] == b"Z"


def test_protocol_3_2_negotiated_down(pooler):
    s = raw_connect(pooler.port)
    s.sendall(startup_packet("postgres", "postgres", {"_pq_.foo": "1"}, version=0x00030002))
    msgs = read_messages(s, until=b"Z")
    s.close()
    types = [t for t, _ in msgs]
    assert types[0] == b"v"  # NegotiateProtocolVersion
    assert struct.unpack("!I", msgs[0][1][:4])[0] == 0x00030000
    assert b"_pq_.foo" in msgs[0][1]
    assert types[-1] == b"Z"


def test_each_encryption_request_is_answered_once(pooler):
    """Without TLS a GSSENCRequest and an SSLRequest are each answered 'N' (libpq asks both
    with gssencmode and sslmode prefer), then the login goes on; a second request of the same
    kind is refused, as PostgreSQL refuses it, instead of being answered for ever."""
    gss, ssl_req = struct.pack("!II", 8, 80877104), struct.pack("!II", 8, 80877103)
    s = raw_connect(pooler.port)
    s.sendall(gss)
    assert s.recv(1) == b"N"
    s.sendall(ssl_req)
    assert s.recv(1) == b"N"
    s.sendall(startup_packet("postgres", "postgres"))
    msgs = read_messages(s, until=b"Z")
    s.close()
    assert msgs[-1][0] == b"Z", msgs
    for first, again in ((ssl_req, ssl_req), (gss, gss)):
        s = raw_connect(pooler.port)
        s.sendall(first)
        assert s.recv(1) == b"N"
        s.sendall(again)
        msgs = read_messages(s, until=b"E")
        s.close()
        assert msgs and msgs[-1][0] == b"E", msgs
        fields = error_fields(msgs[-1][1])
        assert fields["C"] == "08P01" and "twice" in fields["M"], fields


def test_too_many_protocol_options_get_an_error(pooler):
    """Protocol options whose names would not fit in one NegotiateProtocolVersion are refused
    with an error saying so (the connection used to close without a word); a few still
    negotiate, and the pooler serves on."""
    opts = {f"_pq_.option_number_{i:03d}_{'x' * 40}": "1" for i in range(60)}
    s = raw_connect(pooler.port)
    s.sendall(startup_packet("postgres", "postgres", opts, version=0x00030002))
    msgs = read_messages(s, until=b"E")
    s.close()
    assert msgs and msgs[-1][0] == b"E", msgs
    fields = error_fields(msgs[-1][1])
    assert fields["C"] == "08P01" and "protocol options" in fields["M"], fields
    test_protocol_3_2_negotiated_down(pooler)


def test_postgres_restart_under_load(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "4"}).start()
    try:
        stop = threading.Event()
        counts = {"ok": 0, "err": 0}

        def load():
            while not stop.is_set():
                try:
                    with psycopg.connect(p.dsn(), autocommit=True) as c:
                        while not stop.is_set():
                            c.execute("SELECT 1")
                            counts["ok"] += 1
                except psycopg.Error:
                    counts["err"] += 1
                    time.sleep(0.1)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        pg.restart()
        ok_after_restart = counts["ok"]
        deadline = time.time() + 20
        while time.time() < deadline and counts["ok"] < ok_after_restart + 200:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        assert counts["ok"] >= ok_after_restart + 200, (counts, p.log())
        assert p.alive()
    finally:
        p.stop()


def test_huge_result_streams_in_constant_memory(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "2"}).start()
    try:
        s = login_raw(p)
        # ~64 MB of DataRows; the reader stalls first, then drains slowly
        s.sendall(query_msg("SELECT repeat('x', 1000) FROM generate_series(1, 65000)"))
        time.sleep(1.0)
        stalled_rss = rss_kb(p.proc.pid)
        # another client is unaffected while this one does not read
        with psycopg.connect(p.dsn(), autocommit=True) as other:
            assert other.execute("SELECT 3").fetchone()[0] == 3
        total = 0
        peak = stalled_rss
        s.settimeout(10)
        tail = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            total += len(chunk)
            tail = (tail + chunk)[-16:]
            if total % (8 << 20) < len(chunk):
                peak = max(peak, rss_kb(p.proc.pid))
            if tail.endswith(b"Z\x00\x00\x00\x05I"):
                break
        s.close()
        assert total > 64_000_000
        print(f"pooler RSS: {stalled_rss} kB stalled, {peak} kB peak while streaming {total} B")
        # Constant memory: streaming 64 MB adds little to what the stalled pooler held (a
        # sanitizer build's baseline is higher, so the bound is relative as well).
        assert peak - stalled_rss < 8_000, f"RSS grew {peak - stalled_rss} kB while streaming"
        if "ASAN_OPTIONS" not in os.environ:
            assert peak < 24_000, f"pooler RSS peaked at {peak} kB while streaming"
        assert p.alive()
    finally:
        p.stop()


def test_server_is_released_when_the_end_of_a_result_was_sent_in_pieces(pgwarden_bin, pg):
    """A large result read slowly: the server must be released once the rest is delivered,
    not stay linked to a client that has gone idle (pool of one, so a held server starves the
    next client). The send that carries the final ReadyForQuery may be partial here; this
    run does not force it (a small tcp_socket_buffer makes it likely, not certain), so the
    partial case is covered by reasoning in server_pump."""
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "query_wait_timeout": "4"}).start()
    try:
        for _attempt in range(3):
            s = login_raw(p)
            # ~4 MB, more than the socket buffers hold while the reader stalls, so the
            # pooler's sends to this client are partial until it has drained everything
            s.sendall(query_msg("SELECT repeat('x', 1000) FROM generate_series(1, 4000)"))
            time.sleep(0.5)  # let the pooler's buffer and both sockets fill up
            s.settimeout(10)
            tail = b""
            while not tail.endswith(b"Z\x00\x00\x00\x05I"):
                chunk = s.recv(2048)  # slow reader: small reads with pauses
                assert chunk, "pooler closed the connection mid-result"
                tail = (tail + chunk)[-16:]
                time.sleep(0.0005)
            # s stays connected and idle; the next client must get the only server
            with psycopg.connect(p.dsn(), autocommit=True) as other:
                assert other.execute("SELECT 42").fetchone()[0] == 42
            s.close()
        assert p.alive()
    finally:
        p.stop()


def test_unreachable_server_fails_fast(pgwarden_bin, pg):
    """A server that cannot be reached keeps the waiting client queued for the retry (as
    PgBouncer), up to query_wait_timeout, and its error says why; a client arriving while
    the retry is not due is told the cached error at once."""
    dbs = {"postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres",
           "gone": "host=/nonexistent/dir port=5432 dbname=x",
           "refused": f"host=127.0.0.1 port={pg.port + 1 if pg.port < 32000 else pg.port - 1} "
                      "dbname=x"}
    p = Pooler(pgwarden_bin, pg, databases=dbs, settings={"query_wait_timeout": "2",
                                                         "server_login_retry": "30"}).start()
    try:
        for db in ("gone", "refused"):
            t0 = time.time()
            with pytest.raises(psycopg.OperationalError, match="connect failed"):
                psycopg.connect(p.dsn(dbname=db))
            assert time.time() - t0 < 10, "the client waited past query_wait_timeout"
            t0 = time.time()
            with pytest.raises(psycopg.OperationalError, match="connect failed"):
                psycopg.connect(p.dsn(dbname=db))
            assert time.time() - t0 < 1, "the cached error was not given at once"
        assert_healthy(p)
    finally:
        p.stop()


def test_server_host_names_resolve_without_blocking(pgwarden_bin, pg):
    dbs = {"postgres": f"host={pg.socket_dir} port={pg.port} dbname=postgres",
           "byname": f"host=localhost port={pg.port} dbname=appdb user=trust_user",
           "noname": f"host=no-such-host.invalid port={pg.port} dbname=x"}
    p = Pooler(pgwarden_bin, pg, databases=dbs,
               settings={"server_connect_timeout": "3", "query_wait_timeout": "20"}).start()
    try:
        with psycopg.connect(p.dsn("trust_user", "byname"), autocommit=True) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "trust_user"
            c.cancel()  # the cancel path uses the cached address
        errors = []

        def bad():
            try:
                psycopg.connect(p.dsn(dbname="noname"))
            except psycopg.OperationalError as e:
                errors.append(e)

        t = threading.Thread(target=bad)
        t.start()
        time.sleep(0.2)
        # while the bad name is being looked up, everything else keeps working
        t0 = time.time()
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
        assert time.time() - t0 < 2
        t.join(timeout=30)
        assert errors, "connecting to an unresolvable host should fail"
        assert p.alive()
    finally:
        p.stop()


def login_clients(pooler):
    """SHOW LISTS' login_clients: accepted clients that have not finished their startup."""
    with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True) as c:
        res = c.pgconn.exec_(b"SHOW LISTS")
        for r in range(res.ntuples):
            if res.get_value(r, 0) == b"login_clients":
                return int(res.get_value(r, 1))
    raise AssertionError("SHOW LISTS has no login_clients row")


@pytest.mark.parametrize("defer", ["1", "0"])
def test_tcp_defer_accept_waits_for_the_first_packet(pgwarden_bin, pg, defer):
    """With tcp_defer_accept (the default) a connection is accepted only once its first packet
    is there; a client that never speaks is still accepted after the deferral and then cut by
    client_login_timeout like any slow client."""
    p = Pooler(pgwarden_bin, pg, settings={"tcp_defer_accept": defer, "admin_users": "postgres",
                                           "client_login_timeout": "1"}).start()
    try:
        silent = raw_connect(p.port)
        time.sleep(0.3)
        assert login_clients(p) == (0 if defer == "1" else 1)
        speaking = raw_connect(p.port)
        speaking.sendall(b"\x00\x00")  # half a length word: accepted, still logging in
        time.sleep(0.3)
        assert login_clients(p) == (1 if defer == "1" else 2)
        for s in (silent, speaking):
            assert_cut_by_login_timeout(s, timeout=8)
        assert_healthy(p)
    finally:
        p.stop()


def test_a_queue_of_reset_clients_is_handed_out_without_recursion(pgwarden_bin, pg):
    """Clients queued for the only server whose sockets were reset while they waited (the
    reset reaches the pooler as a plain read event, so they stay queued): when the server
    comes back, each in turn gets it, finds its socket dead and gives it back. That chain
    must not nest a call per client: with a 256 kB stack 1500 of them overflowed it (8 MB
    takes some 20,000)."""
    if "ASAN_OPTIONS" in os.environ:
        pytest.skip("AddressSanitizer's frames do not fit the small stack this test sets")
    n = 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * n + 200:
        pytest.skip(f"needs {2 * n + 200} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2 * n + 200), hard))

    def small_stack():
        resource.setrlimit(resource.RLIMIT_STACK, (256 * 1024, resource.RLIM_INFINITY))

    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "1", "max_client_conn": str(n + 50),
                         "query_wait_timeout": "120", "admin_users": "postgres"}
               ).start(preexec_fn=small_stack)
    try:
        holder = psycopg.connect(p.dsn())
        holder.execute("SELECT 1")  # holds the only server in a transaction
        socks = []
        try:
            for _ in range(n):
                s = login_raw(p)
                s.sendall(query_msg("SELECT 1"))
                socks.append(s)
            wait_for(lambda: sum(int(r["cl_waiting"]) for r in console_rows(p, "SHOW POOLS"))
                     >= n, timeout=60, what="every client queued")
        finally:
            for s in socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()  # a reset
        time.sleep(0.5)
        holder.commit()  # the server goes down the queue
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            assert c.execute("SELECT 7").fetchone()[0] == 7
        assert p.alive(), p.log()
        holder.close()
    finally:
        p.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
