"""Protocol-level prepared statements in transaction mode: clients share servers, so
statements are renamed and re-prepared on whichever server a client gets."""
import threading

import psycopg
import pytest

from serve_helpers import Pooler


@pytest.fixture
def pooler(pgwarden_bin, pg):
    p = Pooler(pgwarden_bin, pg, pool_mode="transaction",
               settings={"default_pool_size": "2"}).start()
    yield p
    p.stop()


def test_same_name_different_queries_on_shared_servers(pooler):
    # psycopg names its statements _pg3_0, _pg3_1, ... in every connection: with 4 clients
    # over 2 servers the same name means different queries on the same server.
    def work(k, out):
        with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as c:
            vals = []
            for i in range(30):
                vals.append(c.execute(f"SELECT %s::int * {k}", (i,), prepare=True).fetchone()[0])
                vals.append(c.execute(f"SELECT %s::text || '-{k}'", (str(i),),
                                      prepare=True).fetchone()[0])
            out[k] = vals

    out = {}
    threads = [threading.Thread(target=work, args=(k, out)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k in range(1, 5):
        expected = []
        for i in range(30):
            expected += [i * k, f"{i}-{k}"]
        assert out[k] == expected, (k, pooler.log())


def test_prepared_in_pipeline_with_error(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as c:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with c.pipeline():
                c.execute("SELECT %s::int + 1", (1,), prepare=True)
                c.execute("SELECT 1 / %s::int", (0,), prepare=True)
                c.execute("SELECT %s::int + 2", (1,), prepare=True)
        # statements prepared before the error still work; the one skipped is re-prepared
        for i in range(5):
            assert c.execute("SELECT %s::int + 2", (i,), prepare=True).fetchone()[0] == i + 2
            assert c.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone()[0] == i + 1


def test_deallocate_and_reprepare(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        pgc = c.pgconn
        r = pgc.prepare(b"s1", b"SELECT $1::int * 10")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK
        r = pgc.exec_prepared(b"s1", [b"4"])
        assert r.get_value(0, 0) == b"40"
        r = pgc.describe_prepared(b"s1")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK
        r = pgc.close_prepared(b"s1") if hasattr(pgc, "close_prepared") else None
        # same name, new query
        pgc.exec_(b"DEALLOCATE ALL")  # SQL-level: clears nothing the pooler tracks
        r = pgc.prepare(b"s1", b"SELECT $1::int * 100")
        assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
        r = pgc.exec_prepared(b"s1", [b"4"])
        assert r.get_value(0, 0) == b"400", r.error_message


def test_sql_deallocate_all_then_reuse(pooler):
    with psycopg.connect(pooler.dsn(), autocommit=True) as c:
        pgc = c.pgconn
        assert pgc.prepare(b"q", b"SELECT $1::int + 5").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert pgc.exec_prepared(b"q", [b"1"]).get_value(0, 0) == b"6"
        pgc.exec_(b"DEALLOCATE ALL")
        # PostgreSQL forgot everything; the client re-prepares under the same name
        assert pgc.prepare(b"q", b"SELECT $1::int + 5").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert pgc.exec_prepared(b"q", [b"2"]).get_value(0, 0) == b"7"


def _msg(t, body):
    import struct
    return t + struct.pack("!I", len(body) + 4) + body


def test_prepared_messages_split_at_every_byte(pooler):
    import struct
    from serve_helpers import raw_connect, read_messages, startup_packet
    s = raw_connect(pooler.port)
    s.sendall(startup_packet("postgres", "postgres"))
    assert read_messages(s, until=b"Z")[-1][0] == b"Z"
    parse = _msg(b"P", b"stmt1\0SELECT $1::int * 3\0" + struct.pack("!HI", 1, 23))
    bind = _msg(b"B", b"\0stmt1\0" + struct.pack("!HH", 0, 1) + struct.pack("!I", 2) + b"14" +
                struct.pack("!H", 0))
    execute = _msg(b"E", b"\0" + struct.pack("!I", 0))
    sync = _msg(b"S", b"")
    for round_ in range(3):
        data = (parse if round_ == 0 else b"") + bind + execute + sync
        for b in data:
            s.sendall(bytes([b]))
        msgs = read_messages(s, until=b"Z")
        types = [t for t, _ in msgs]
        assert b"E" not in types, msgs
        rows = [body for t, body in msgs if t == b"D"]
        assert rows and rows[0].endswith(b"42"), msgs
    s.close()


def _long_query(tag, n_bytes):
    """A query of about n_bytes that returns tag: a long IN list, as ORMs build them."""
    items = ", ".join(str(i) for i in range(n_bytes // 7))
    return f"SELECT '{tag}'::text WHERE 1 IN ({items})"


@pytest.mark.parametrize("n_bytes", [9000, 40000, 300000])
def test_named_statement_longer_than_pkt_buf(pooler, n_bytes):
    """A named Parse larger than pkt_buf (8 kB) is held whole for the rewrite, in a buffer of
    its own: 4 clients prepare and run long statements over 2 servers, each gets its own
    result, pipelined and not, and the pooler's memory goes back down."""
    errors, results = [], {}

    def client(tag):
        try:
            with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as c:
                q = _long_query(tag, n_bytes)
                for _ in range(3):
                    results.setdefault(tag, []).append(c.execute(q).fetchone()[0])
                with c.pipeline():
                    curs = [c.execute(q, prepare=True) for _ in range(3)]
                results[tag] += [cur.fetchone()[0] for cur in curs]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{tag}: {e!r}")

    threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == {f"c{i}": [f"c{i}"] * 6 for i in range(4)}, results
    assert pooler.alive()


def test_long_statement_name_and_long_bind(pooler):
    """A 16 kB statement name (Parse, Bind, Describe, Close) and a Bind whose parameters pass
    pkt_buf: renamed and answered like short ones."""
    import struct
    from serve_helpers import raw_connect, read_messages, startup_packet
    s = raw_connect(pooler.port)
    s.sendall(startup_packet("postgres", "postgres"))
    assert read_messages(s, until=b"Z")[-1][0] == b"Z"
    name = b"n" * 16384
    value = b"v" * 20000
    parse = _msg(b"P", name + b"\0SELECT length($1::text)\0" + struct.pack("!HI", 1, 25))
    bind = _msg(b"B", b"\0" + name + b"\0" + struct.pack("!HH", 0, 1) +
                struct.pack("!I", len(value)) + value + struct.pack("!H", 0))
    describe = _msg(b"D", b"S" + name + b"\0")
    execute = _msg(b"E", b"\0" + struct.pack("!I", 0))
    close = _msg(b"C", b"S" + name + b"\0")
    sync = _msg(b"S", b"")
    s.sendall(parse + describe + bind + execute + close + sync)
    msgs = read_messages(s, timeout=20, until=b"Z")
    types = [t for t, _ in msgs]
    assert b"E" not in types, msgs
    assert types == [b"1", b"t", b"T", b"2", b"D", b"C", b"3", b"Z"], types
    assert [body for t, body in msgs if t == b"D"][0].endswith(b"20000")
    s.close()
    assert pooler.alive()


def _cpu_seconds(pid):
    """User plus system CPU time a process has used, in seconds."""
    import os
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_bind_names_arriving_slowly_are_not_rescanned(pooler):
    """A Bind whose names have not arrived yet is looked at again as its bytes come: with a
    long name sent in small pieces, looking through everything received at each piece is
    quadratic, and the one-threaded pooler would spend its time on this client alone. The
    pooler's CPU time over the upload stays a small part of the time the upload takes (a
    quadratic look keeps it busy throughout), and the Bind is answered."""
    import socket
    import struct
    import time
    from serve_helpers import login_raw, read_messages
    s = login_raw(pooler)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n = 64 << 20
    tail = b"\0" + b"nosuchstatement\0" + struct.pack("!HHH", 0, 0, 0)
    body_len = n + len(tail)
    s.sendall(b"B" + struct.pack("!I", body_len + 4))
    pid = pooler.proc.pid
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    piece = b"p" * 4096
    for _ in range(n // len(piece)):
        s.sendall(piece)
        time.sleep(0.0005)
    wall = time.monotonic() - t0
    s.sendall(tail + _msg(b"S", b""))
    msgs = read_messages(s, timeout=60, until=b"Z")
    cpu = _cpu_seconds(pid) - cpu0
    assert [t for t, _ in msgs] == [b"E", b"Z"], msgs
    assert b"nosuchstatement" in msgs[0][1], msgs
    s.close()
    assert pooler.alive()
    assert cpu < wall / 4, f"pooler used {cpu:.2f} s of CPU over a {wall:.2f} s upload"


# ---- pool mode switches: statements prepared under one mode keep working under the other ----

def _switching_pooler(pgwarden_bin, pg, mode, **settings):
    settings.setdefault("admin_users", "postgres")
    settings.setdefault("default_pool_size", "2")
    return Pooler(pgwarden_bin, pg, pool_mode=mode, settings=settings).start()


def _console(p, sql):
    with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""), autocommit=True) as c:
        res = c.pgconn.exec_(sql.encode())
        assert res.status == psycopg.pq.ExecStatus.COMMAND_OK, res.error_message


def _mode_of(p, db="postgres"):
    from serve_helpers import console_rows
    return [r["pool_mode"] for r in console_rows(p, "SHOW POOLS") if r["database"] == db]


def _run_prepared(c, k, rounds=4):
    """Executes the client's two prepared statements (psycopg sends Bind/Execute only, no
    Parse, once they are prepared) and checks each answer is its own."""
    for i in range(rounds):
        assert c.execute("SELECT %s::int * 7", (i,), prepare=True).fetchone()[0] == i * 7
        assert c.execute(f"SELECT %s::text || '-{k}'", (str(i),),
                         prepare=True).fetchone()[0] == f"{i}-{k}"


def _other_client_runs(p):
    """Another client's transactions, so that servers change hands between the first
    client's."""
    with psycopg.connect(p.dsn(), autocommit=True, prepare_threshold=0) as b:
        for i in range(3):
            assert b.execute("SELECT %s::int * 11", (i,), prepare=True).fetchone()[0] == i * 11


def test_statements_survive_reload_from_session_to_transaction(pgwarden_bin, pg):
    """Prepared in session mode, used after a RELOAD turns the pool to transaction mode: the
    server the client held is closed when released (it carries session state), and the
    statements are prepared again on whichever server the client gets next."""
    p = _switching_pooler(pgwarden_bin, pg, "session")
    try:
        a = psycopg.connect(p.dsn(), autocommit=True, prepare_threshold=0)
        _run_prepared(a, "a")
        p.settings["pool_mode"] = "transaction"
        p.write_config()
        _console(p, "RELOAD")
        assert _mode_of(p) == ["transaction"]
        _run_prepared(a, "a")
        _other_client_runs(p)
        _run_prepared(a, "a")
        a.close()
        assert p.alive()
    finally:
        p.stop()


def test_statements_survive_set_pool_mode_from_transaction_to_session(pgwarden_bin, pg):
    """Prepared in transaction mode (under the pooler's names), used after console SET turns
    the pool to session mode: the session server gets them on first use."""
    p = _switching_pooler(pgwarden_bin, pg, "transaction")
    try:
        a = psycopg.connect(p.dsn(), autocommit=True, prepare_threshold=0)
        _run_prepared(a, "a")
        _other_client_runs(p)
        _console(p, "SET pool_mode = session")
        assert _mode_of(p) == ["session"]
        _run_prepared(a, "a")
        # a statement prepared in session mode keeps the client's own name on its server,
        # as PostgreSQL lists it, and runs next to those prepared before
        assert a.execute("SELECT %s::int - 1", (5,), prepare=True).fetchone()[0] == 4
        names = {r[0] for r in a.execute("SELECT name FROM pg_prepared_statements")}
        assert "_pg3_2" in names, names
        # preparing again a name prepared before the switch fails as on PostgreSQL, and the
        # statement stays
        for name in (b"_pg3_0", b"_pg3_2"):
            r = a.pgconn.prepare(name, b"SELECT 'other'::text")
            assert r.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42P05", \
                (name, r.error_message)
        _run_prepared(a, "a")
        assert a.execute("SELECT %s::int - 1", (5,), prepare=True).fetchone()[0] == 4
        a.close()
        assert p.alive()
    finally:
        p.stop()


def test_statements_survive_session_transaction_session(pgwarden_bin, pg):
    """Prepared in session mode on one server, the pool switched to transaction mode (that
    server is closed once released) and back to session mode: the client's new session server
    never saw the statements under the client's names, and gets them on first use."""
    p = _switching_pooler(pgwarden_bin, pg, "session")
    try:
        a = psycopg.connect(p.dsn(), autocommit=True, prepare_threshold=0)
        _run_prepared(a, "a")
        _console(p, "SET pool_mode = transaction")
        _run_prepared(a, "a")
        _console(p, "SET pool_mode = session")
        _run_prepared(a, "a")
        _console(p, "SET pool_mode = statement")
        _run_prepared(a, "a")
        _console(p, "SET pool_mode = session")
        _run_prepared(a, "a")
        a.close()
        assert p.alive()
    finally:
        p.stop()


def test_pgbench_prepared_under_pool_mode_switches(pgwarden_bin, pgbench_db):
    """pgbench -M prepared (each connection prepares its statements once, then only binds
    them) while the console switches the pool between session and transaction mode and
    reloads as fast as it can: no transaction fails."""
    from serve_helpers import console_rows
    pg = pgbench_db
    p = _switching_pooler(pgwarden_bin, pg, "transaction", default_pool_size="4",
                          max_client_conn="100")
    try:
        stop = threading.Event()
        errors, switches = [], [0]

        def steer():
            with psycopg.connect(p.dsn("postgres", "pgbouncer", password=""),
                                 autocommit=True) as c:
                while not stop.is_set():
                    for sql in (b"SET pool_mode = session", b"RELOAD",
                                b"SET pool_mode = transaction", b"RELOAD"):
                        res = c.pgconn.exec_(sql)
                        if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                            errors.append((sql, res.error_message))
                    switches[0] += 1

        t = threading.Thread(target=steer)
        t.start()
        try:
            import subprocess
            cmd = [pg.bin("pgbench"), "-n", "-M", "prepared", "-h", "127.0.0.1", "-p",
                   str(p.port), "-U", "postgres", "-c", "4", "-j", "2", "-T", "4", "postgres"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                 env={"PGSSLMODE": "disable", "PATH": "/usr/bin:/bin"})
        finally:
            stop.set()
            t.join(30)
        assert out.returncode == 0, out.stdout + out.stderr + p.log()[-3000:]
        assert "number of failed transactions: 0" in out.stdout, out.stdout
        assert not errors, errors[:3]
        assert switches[0] > 10, switches
        assert console_rows(p, "SHOW POOLS")
        assert p.alive()
    finally:
        p.stop()


def test_session_mode_statements_keep_postgres_semantics_across_a_switch(pgwarden_bin, pg):
    """In session mode a protocol Parse keeps the client's name on its server (SQL EXECUTE
    finds it, a second Parse of the name gets PostgreSQL's 42P05 and the first stays), and
    what the client dropped or failed to prepare stays gone after a switch: the pooler never
    brings back a statement PostgreSQL no longer had."""
    p = _switching_pooler(pgwarden_bin, pg, "session")
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as a:
            pgc = a.pgconn
            ok = psycopg.pq.ExecStatus.COMMAND_OK
            assert pgc.prepare(b"s1", b"SELECT $1::int * 2").status == ok
            assert pgc.exec_(b"EXECUTE s1(4)").get_value(0, 0) == b"8"
            r = pgc.prepare(b"s1", b"SELECT 99")
            assert r.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42P05", r.error_message
            assert pgc.exec_prepared(b"s1", [b"5"]).get_value(0, 0) == b"10"
            assert pgc.prepare(b"s2", b"SELECT $1::int + 1").status == ok
            assert pgc.exec_(b"DEALLOCATE s2").status == ok
            r = pgc.prepare(b"s3", b"SELEC broken")
            assert r.status == psycopg.pq.ExecStatus.FATAL_ERROR
            _console(p, "SET pool_mode = transaction")
            assert pgc.exec_prepared(b"s1", [b"6"]).get_value(0, 0) == b"12"
            _other_client_runs(p)
            assert pgc.exec_prepared(b"s1", [b"7"]).get_value(0, 0) == b"14"
            for name in (b"s2", b"s3"):
                r = pgc.exec_prepared(name, [b"1"])
                assert r.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000", \
                    (name, r.error_message)
            # the name of the statement PostgreSQL refused is free again, as on PostgreSQL
            assert pgc.prepare(b"s3", b"SELECT $1::int - 3").status == ok
            assert pgc.exec_prepared(b"s3", [b"10"]).get_value(0, 0) == b"7"
        assert p.alive()
    finally:
        p.stop()


def test_pipelined_second_parse_of_a_name_in_session_mode(pgwarden_bin, pg):
    """Two Parses of one name in one pipeline, in session mode: PostgreSQL keeps the first
    and refuses the second. After a switch to transaction mode the name still runs the
    first statement's SQL on every server, never the refused one's."""
    import struct
    from serve_helpers import login_raw, read_messages
    p = _switching_pooler(pgwarden_bin, pg, "session")
    try:
        s = login_raw(p)
        parse1 = _msg(b"P", b"dup\0SELECT 'first'::text\0" + struct.pack("!H", 0))
        parse2 = _msg(b"P", b"dup\0SELECT 'second'::text\0" + struct.pack("!H", 0))
        sync = _msg(b"S", b"")
        s.sendall(parse1 + parse2 + sync)
        types = [t for t, _ in read_messages(s, until=b"Z")]
        assert types == [b"1", b"E", b"Z"], types
        bind = _msg(b"B", b"\0dup\0" + struct.pack("!HHH", 0, 0, 0))
        execute = _msg(b"E", b"\0" + struct.pack("!I", 0))
        for switch in ("SET pool_mode = transaction", None, "SET pool_mode = session", None):
            if switch:
                _console(p, switch)
            else:
                _other_client_runs(p)
            s.sendall(bind + execute + sync)
            msgs = read_messages(s, until=b"Z")
            rows = [body for t, body in msgs if t == b"D"]
            assert rows and rows[0].endswith(b"first"), (switch, msgs)
        s.close()
        assert p.alive()
    finally:
        p.stop()


def _parse_twice_at_the_name_limit(path):
    """Prepares two names that differ only after their 63rd byte, runs the second, closes
    it, runs the first (protocol messages over the unix socket at path): the message types
    of each answer."""
    import socket
    import struct
    from serve_helpers import read_messages, startup_packet
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(startup_packet("postgres", "postgres"))
    assert read_messages(s, until=b"Z")[-1][0] == b"Z"
    n1, n2 = b"n" * 63 + b"_first", b"n" * 63 + b"_second"
    sync = _msg(b"S", b"")

    def run(name):
        return (_msg(b"B", b"\0" + name + b"\0" + struct.pack("!HHH", 0, 0, 0)) +
                _msg(b"E", b"\0" + struct.pack("!I", 0)))

    steps = [_msg(b"P", n1 + b"\0SELECT 'first'::text\0" + struct.pack("!H", 0)),
             _msg(b"P", n2 + b"\0SELECT 'second'::text\0" + struct.pack("!H", 0)),
             run(n2), _msg(b"C", b"S" + n2 + b"\0"), run(n1)]
    out = []
    for step in steps:
        s.sendall(step + sync)
        out.append([t if t != b"D" else body[-6:] for t, body in read_messages(s, until=b"Z")])
    s.close()
    return out


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_statement_names_past_the_limit_are_one_name_as_on_postgres(pgwarden_bin, pg, mode):
    """PostgreSQL keys prepared statements by their first 63 bytes (NAMEDATALEN): two names
    that differ only after that are one statement. Through the pooler they are too, in
    transaction mode as across a switch from session mode."""
    import os
    direct = _parse_twice_at_the_name_limit(os.path.join(pg.socket_dir, f".s.PGSQL.{pg.port}"))
    assert direct == [[b"1", b"Z"], [b"E", b"Z"], [b"2", b"\x05first", b"C", b"Z"], [b"3", b"Z"],
                      [b"E", b"Z"]], direct
    p = _switching_pooler(pgwarden_bin, pg, mode)
    try:
        assert _parse_twice_at_the_name_limit(os.path.join(p.dir, f".s.PGSQL.{p.port}")) == direct
        with psycopg.connect(p.dsn(), autocommit=True) as c:
            pgc = c.pgconn
            n1, n2 = b"m" * 63 + b"_first", b"m" * 63 + b"_second"
            ok = psycopg.pq.ExecStatus.COMMAND_OK
            assert pgc.prepare(n1, b"SELECT 'first'::text").status == ok
            _console(p, "SET pool_mode = transaction")
            assert pgc.exec_(b"SELECT 1").status == psycopg.pq.ExecStatus.TUPLES_OK
            _other_client_runs(p)  # the server the client held was closed: it gets another
            assert pgc.exec_prepared(n2, []).get_value(0, 0) == b"first"
        assert p.alive()
    finally:
        p.stop()


def test_reconnect_in_the_middle_of_a_pipeline(pgwarden_bin, pg):
    """RECONNECT (and a server_lifetime that ends) while a client's pipeline is between
    Syncs: the server it holds finishes that pipeline, then is closed, and the client's
    statements are prepared again on the next server, each running its own SQL."""
    import struct
    from serve_helpers import login_raw, read_messages
    p = _switching_pooler(pgwarden_bin, pg, "transaction")
    try:
        s = login_raw(p)
        parse = [_msg(b"P", f"q{k}\0SELECT 'q{k}'::text\0".encode() + struct.pack("!H", 0))
                 for k in range(3)]
        bind = [_msg(b"B", f"\0q{k}\0".encode() + struct.pack("!HHH", 0, 0, 0))
                for k in range(3)]
        execute = _msg(b"E", b"\0" + struct.pack("!I", 0))
        flush, sync = _msg(b"H", b""), _msg(b"S", b"")
        for round_, change in enumerate(("RECONNECT", "SET server_lifetime = 1")):
            first = (parse[0] if round_ == 0 else b"") + bind[0] + execute + flush
            s.sendall(first)
            msgs = read_messages(s, until=b"C")
            assert [body for t, body in msgs if t == b"D"][0].endswith(b"q0"), msgs
            _console(p, change)
            rest = ((parse[1] + parse[2]) if round_ == 0 else b"") + bind[1] + execute + \
                bind[2] + execute + sync
            s.sendall(rest)
            msgs = read_messages(s, until=b"Z")
            assert [body[-2:] for t, body in msgs if t == b"D"] == [b"q1", b"q2"], msgs
            _other_client_runs(p)
            for k in (2, 0, 1):
                s.sendall(bind[k] + execute + sync)
                msgs = read_messages(s, until=b"Z")
                assert [body[-2:] for t, body in msgs if t == b"D"] == [f"q{k}".encode()], msgs
        s.close()
        assert p.alive()
    finally:
        p.stop()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_statements_one_client_keeps_are_bounded(pgwarden_bin, pg, mode):
    """The pooler keeps the query text of every statement a client has prepared, to prepare
    it on whichever server the client gets: max_client_prepared_statements bounds how many,
    so one client cannot grow the pooler's memory (and the time its Binds take to look names
    up) without bound. Closed statements make room again; one more ends a transaction-mode
    client with 54000, and other clients go on. In session mode the client's own server
    needs nothing remembered: the statement runs, and only a switch of pool mode loses it."""
    import struct
    from serve_helpers import error_fields, login_raw, read_messages
    p = _switching_pooler(pgwarden_bin, pg, mode, max_client_prepared_statements="50")
    try:
        s = login_raw(p)
        sync = _msg(b"S", b"")

        def parse(k):
            return _msg(b"P", f"s{k}\0SELECT {k}\0".encode() + struct.pack("!H", 0))

        s.sendall(b"".join(parse(k) for k in range(50)) + sync)
        assert [t for t, _ in read_messages(s, until=b"Z")] == [b"1"] * 50 + [b"Z"]
        s.sendall(_msg(b"C", b"Ss7\0") + parse(50) + sync)
        assert [t for t, _ in read_messages(s, until=b"Z")] == [b"3", b"1", b"Z"]
        s.sendall(_msg(b"B", b"\0s50\0" + struct.pack("!HHH", 0, 0, 0)) +
                  _msg(b"E", b"\0" + struct.pack("!I", 0)) + sync)
        assert [body for t, body in read_messages(s, until=b"Z") if t == b"D"] == \
            [b"\0\x01\0\0\0\x0250"]
        s.sendall(parse(51) + sync)
        msgs = read_messages(s, until=b"Z")
        if mode == "transaction":
            assert msgs and msgs[-1][0] == b"E", msgs
            fields = error_fields(msgs[-1][1])
            assert fields.get("C") == "54000", fields
            assert "max_client_prepared_statements" in fields.get("M", ""), fields
        else:
            assert [t for t, _ in msgs] == [b"1", b"Z"], msgs
            run = [_msg(b"B", f"\0s{k}\0".encode() + struct.pack("!HHH", 0, 0, 0)) +
                   _msg(b"E", b"\0" + struct.pack("!I", 0)) + sync for k in (51, 50)]
            s.sendall(run[0])
            assert [t for t, _ in read_messages(s, until=b"Z")] == [b"2", b"D", b"C", b"Z"]
            _console(p, "SET pool_mode = transaction")
            s.sendall(run[1])  # its last transaction on its session server, which then goes
            assert [t for t, _ in read_messages(s, until=b"Z")] == [b"2", b"D", b"C", b"Z"]
            _other_client_runs(p)
            s.sendall(run[0])
            msgs = read_messages(s, until=b"Z")
            assert error_fields(msgs[0][1]).get("C") == "26000", msgs
            s.sendall(run[1])
            assert [t for t, _ in read_messages(s, until=b"Z")] == [b"2", b"D", b"C", b"Z"]
        _other_client_runs(p)
        assert p.alive()
    finally:
        p.stop()


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_untracked_named_statements_never_reach_another_client(pgwarden_bin, pg, mode):
    """With max_prepared_statements = 0 named statements are not tracked: a Parse goes to
    the server under the client's own name. When that server passes to another client, a
    Bind of the name must not run the first client's SQL: the statements are deallocated
    before the server goes to another client. The client itself uses its statement (and
    keeps it while it gets the same server back)."""
    import struct
    from serve_helpers import error_fields, login_raw, read_messages
    p = _switching_pooler(pgwarden_bin, pg, mode, default_pool_size="1",
                          max_prepared_statements="0")
    try:
        sync = _msg(b"S", b"")
        bind_x = (_msg(b"B", b"\0x\0" + struct.pack("!HHH", 0, 0, 0)) +
                  _msg(b"E", b"\0" + struct.pack("!I", 0)))
        a = login_raw(p)
        a.sendall(_msg(b"P", b"x\0SELECT 'secret of a'::text\0" + struct.pack("!H", 0)) +
                  bind_x + sync)
        msgs = read_messages(a, until=b"Z")
        assert [body[-11:] for t, body in msgs if t == b"D"] == [b"secret of a"], msgs
        a.sendall(bind_x + sync)  # its next transaction, on the same server
        msgs = read_messages(a, until=b"Z")
        assert [body[-11:] for t, body in msgs if t == b"D"] == [b"secret of a"], msgs
        for _ in range(2):
            b = login_raw(p)
            b.sendall(bind_x + sync)
            msgs = read_messages(b, until=b"Z")
            assert not [body for t, body in msgs if t == b"D"], msgs
            assert error_fields(msgs[0][1]).get("C") == "26000", msgs
            # b's own statement of that name works, and leaves with it too
            b.sendall(_msg(b"P", b"x\0SELECT 'b'::text\0" + struct.pack("!H", 0)) + bind_x +
                      sync)
            msgs = read_messages(b, until=b"Z")
            assert [body[-1:] for t, body in msgs if t == b"D"] == [b"b"], msgs
            b.close()
        a.sendall(_msg(b"Q", b"SELECT name FROM pg_prepared_statements\0"))
        msgs = read_messages(a, until=b"Z")
        assert not [body for t, body in msgs if t == b"D"], msgs
        a.close()
        assert p.alive()
    finally:
        p.stop()
